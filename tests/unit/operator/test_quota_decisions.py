"""Quota decisions: worst-case counting, oldest first, never taking running replicas away, all quotas must admit."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from inferkube.api.quota import STATUS_SERVICES_MAX, InferenceQuotaSpec
from inferkube.operator.quota import (
    ADMITTED,
    BLOCKED,
    CLAMPED,
    REFUSED,
    QuotaFacts,
    ServiceFacts,
    decide,
    label_selector_matches,
    selects,
    service_facts,
)


def svc(name: str, *, ns: str = "search", age: int = 0, gpus: int = 1, replicas: int = 1, auto: tuple[int, int] | None = None,
        running: int = 0, labels: dict[str, str] | None = None, ns_labels: dict[str, str] | None = None,
        source: str = "hf://meta-llama/Llama-3-8B", accelerator: str | None = "nvidia-h100-80gb") -> ServiceFacts:
    return ServiceFacts(namespace=ns, name=name, created=f"2026-01-01T00:00:{age:02d}Z", labels=labels or {},
                        namespace_labels=ns_labels if ns_labels is not None else {}, model_source=source,
                        accelerator=accelerator if gpus else None, gpus_per_replica=gpus,
                        replicas=auto[1] if auto else replicas, min_replicas=auto[0] if auto else None, running=running)


def quota(name: str = "team", **spec: Any) -> QuotaFacts:
    return QuotaFacts(name, InferenceQuotaSpec.model_validate(spec), generation=1)


def test_two_services_fit_a_two_gpu_quota_and_the_third_is_refused_with_the_numbers() -> None:
    out = decide([svc("a", age=1), svc("b", age=2), svc("c", age=3, gpus=2)], [quota("team-search", limits={"gpus": 2})])
    assert [out.services[("search", n)].reason for n in "abc"] == [ADMITTED, ADMITTED, REFUSED]
    refused = out.services[("search", "c")]
    assert not refused.admitted and refused.replicas == 0
    assert refused.message == "needs 2 GPUs, 0 of 2 left under InferenceQuota team-search"
    status = out.quotas["team-search"]
    assert (status.used.gpus, status.used.replicas, status.service_count, status.refused_count) == (2, 2, 3, 1)
    assert [(s.name, s.admitted, s.gpus) for s in status.services] == [("c", False, 0), ("a", True, 1), ("b", True, 1)], \
        "what the quota holds back is listed first"
    assert (status.limited_count, status.omitted_count) == (0, 0)


def test_oldest_first_then_namespace_and_name() -> None:
    q = [quota(limits={"gpus": 1})]
    assert decide([svc("new", age=5), svc("old", age=1)], q).services[("search", "old")].admitted
    tie = decide([svc("b", age=1), svc("a", age=1)], q)
    assert tie.services[("search", "a")].admitted and not tie.services[("search", "b")].admitted
    other_ns = decide([svc("a", ns="zeta", age=1), svc("z", ns="alpha", age=1)], q)
    assert other_ns.services[("alpha", "z")].admitted


def test_worst_case_counts_fixed_replicas_and_autoscaling_max() -> None:
    out = decide([svc("fixed", gpus=2, replicas=3, age=1), svc("auto", gpus=1, auto=(1, 4), age=2)],
                 [quota(limits={"gpus": 100})])
    status = out.quotas["team"]
    assert (status.used.gpus, status.used.replicas) == (2 * 3 + 4, 7)


def test_deleting_a_service_admits_the_next_waiting_one() -> None:
    q = [quota(limits={"gpus": 2})]
    before = decide([svc("a", age=1, running=1), svc("b", age=2, running=1), svc("c", age=3)], q)
    assert not before.services[("search", "c")].admitted
    after = decide([svc("a", age=1, running=1), svc("c", age=3)], q)
    assert after.services[("search", "c")].admitted


def test_lowering_a_quota_keeps_running_replicas_blocks_scale_up_and_new_services() -> None:
    q = [quota(limits={"gpus": 1})]
    out = decide([svc("a", age=1, replicas=2, running=2), svc("b", age=2, replicas=3, running=1), svc("c", age=3)], q)
    a, b, c = (out.services[("search", n)] for n in "abc")
    assert a.reason == ADMITTED and a.replicas == 2, "running replicas are never taken away"
    assert b.reason == BLOCKED and b.replicas == 1 and b.admitted
    assert b.message == "scale-up from 1 to 3 replicas needs 2 GPUs, 0 of 1 left under InferenceQuota team; the 1 running replicas stay"
    assert c.reason == REFUSED
    status = out.quotas["team"]
    over = next(x for x in status.conditions if x.type == "OverBudget")
    assert status.used.gpus == 3 and over.status == "True" and "3 of 1 GPUs" in over.message


def test_within_limits_is_not_over_budget() -> None:
    status = decide([svc("a")], [quota(limits={"gpus": 4})]).quotas["team"]
    assert {c.type: c.status for c in status.conditions} == {"Ready": "True", "OverBudget": "False"}


def test_autoscaled_service_that_fits_partly_gets_a_clamped_max() -> None:
    out = decide([svc("a", age=1, gpus=2), svc("auto", age=2, gpus=2, auto=(1, 5))], [quota(limits={"gpus": 8})])
    d = out.services[("search", "auto")]
    assert d.reason == CLAMPED and d.admitted and d.replicas == 3 and d.min_replicas == 1
    assert d.message == "maxReplicas 5 clamped to 3: needs 10 GPUs, 6 of 8 left under InferenceQuota team"
    assert out.quotas["team"].used.gpus == 8


def test_clamp_below_min_replicas_lowers_min_too() -> None:
    d = decide([svc("auto", auto=(3, 5))], [quota(limits={"replicas": 2})]).services[("search", "auto")]
    assert (d.reason, d.replicas, d.min_replicas) == (CLAMPED, 2, 2)


def test_autoscaled_that_fits_not_even_one_replica_is_refused() -> None:
    d = decide([svc("a", gpus=4), svc("auto", age=2, gpus=2, auto=(1, 3))], [quota(limits={"gpus": 5})])
    assert d.services[("search", "auto")].reason == REFUSED


def test_an_autoscaled_running_service_keeps_what_it_runs_when_the_quota_drops() -> None:
    d = decide([svc("auto", gpus=1, auto=(1, 6), running=4)], [quota(limits={"gpus": 2})]).services[("search", "auto")]
    assert (d.reason, d.replicas) == (CLAMPED, 4)


def test_several_quotas_must_all_admit() -> None:
    quotas = [quota("gpus", limits={"gpus": 10}), quota("replicas", limits={"replicas": 1})]
    out = decide([svc("a", age=1), svc("b", age=2)], quotas)
    b = out.services[("search", "b")]
    assert b.reason == REFUSED and b.quotas == ("gpus", "replicas")
    assert b.message == "needs 1 replicas, 0 of 1 left under InferenceQuota replicas"
    assert out.quotas["gpus"].used.gpus == 1, "a refused service charges no quota"


def test_the_smaller_of_two_quotas_clamps() -> None:
    out = decide([svc("auto", auto=(1, 10))], [quota("big", limits={"gpus": 8}), quota("small", limits={"gpus": 3})])
    d = out.services[("search", "auto")]
    assert d.replicas == 3 and "InferenceQuota small" in d.message
    assert out.quotas["big"].used.gpus == 3 and out.quotas["small"].used.gpus == 3


def test_gpus_per_accelerator() -> None:
    q = [quota(limits={"gpusPerAccelerator": {"nvidia-h100-80gb": 4}})]
    out = decide([svc("h100", gpus=4, age=1), svc("more", gpus=1, age=2), svc("l4", gpus=8, age=3, accelerator="nvidia-l4")], q)
    assert [out.services[("search", n)].reason for n in ("h100", "more", "l4")] == [ADMITTED, REFUSED, ADMITTED]
    assert out.services[("search", "more")].message == "needs 1 nvidia-h100-80gb GPUs, 0 of 4 left under InferenceQuota team"
    assert out.quotas["team"].used.gpus_per_accelerator == {"nvidia-h100-80gb": 4, "nvidia-l4": 8}


def test_cpu_services_count_replicas_only() -> None:
    out = decide([svc("cpu", gpus=0, replicas=3)], [quota(limits={"gpus": 0, "replicas": 3})])
    assert out.services[("search", "cpu")].reason == ADMITTED


def test_zero_replicas_fit_anywhere() -> None:
    assert decide([svc("off", replicas=0)], [quota(limits={"gpus": 0})]).services[("search", "off")].reason == ADMITTED


def test_services_no_quota_selects_are_not_decided() -> None:
    out = decide([svc("a", ns="other")], [quota(selector={"namespaces": ["search"]}, limits={"gpus": 0})])
    assert out.services == {} and out.quotas["team"].service_count == 0


@pytest.mark.parametrize(("selector", "expected"), [
    ({}, True),
    ({"namespaces": ["search", "staging"]}, True),
    ({"namespaces": ["other"]}, False),
    ({"models": ["hf://meta-llama/*"]}, True),
    ({"models": ["hf://mistralai/*"]}, False),
    ({"namespaceSelector": {"matchLabels": {"team": "search"}}}, True),
    ({"namespaceSelector": {"matchLabels": {"team": "ads"}}}, False),
    ({"serviceSelector": {"matchLabels": {"tier": "prod"}}}, True),
    ({"serviceSelector": {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["prod"]}]}}, False),
    ({"namespaces": ["search"], "serviceSelector": {"matchLabels": {"tier": "dev"}}}, False),
])
def test_every_selector_part_must_match(selector: dict[str, Any], expected: bool) -> None:
    facts = svc("a", labels={"tier": "prod"}, ns_labels={"team": "search"})
    assert selects(InferenceQuotaSpec.model_validate({"selector": selector}), facts) is expected


def test_namespace_selector_never_matches_an_unknown_namespace() -> None:
    facts = ServiceFacts("x", "a", "t", {}, None, "hf://o/m", None, 0, 1, None)
    assert not selects(InferenceQuotaSpec.model_validate({"selector": {"namespaceSelector": {}}}), facts)
    assert selects(InferenceQuotaSpec.model_validate({"selector": {}}), facts)


@pytest.mark.parametrize(("expr", "labels", "expected"), [
    ({"key": "a", "operator": "In", "values": ["1", "2"]}, {"a": "2"}, True),
    ({"key": "a", "operator": "In", "values": ["1"]}, {}, False),
    ({"key": "a", "operator": "NotIn", "values": ["1"]}, {}, True),
    ({"key": "a", "operator": "Exists"}, {"a": ""}, True),
    ({"key": "a", "operator": "DoesNotExist"}, {"a": "x"}, False),
])
def test_label_selector_expressions(expr: dict[str, Any], labels: dict[str, str], expected: bool) -> None:
    from inferkube.api.quota import LabelSelector
    assert label_selector_matches(LabelSelector.model_validate({"matchExpressions": [expr]}), labels) is expected


def test_decisions_do_not_depend_on_input_order() -> None:
    services = [svc(f"s{i}", age=i % 4, gpus=1 + i % 3, auto=(1, 3) if i % 2 else None, running=i % 2) for i in range(8)]
    quotas = [quota("a", limits={"gpus": 7}), quota("b", limits={"replicas": 6}, selector={"models": ["hf://meta-llama/*"]})]
    first = decide(services, quotas)
    for perm in itertools.islice(itertools.permutations(services), 0, 200, 17):
        again = decide(list(perm), list(reversed(quotas)))
        assert again.services == first.services and again.quotas == first.quotas


def test_no_flapping_when_replaying_the_decisions_as_running_replicas() -> None:
    """Feed each round's admitted replicas back as what runs: decisions settle and then stay put."""
    rng = random.Random(7)
    services = [svc(f"s{i}", age=rng.randrange(5), gpus=rng.choice([1, 2]), auto=(1, rng.randrange(2, 5)) if i % 3 == 0 else None,
                    replicas=rng.randrange(1, 4)) for i in range(10)]
    quotas = [quota("a", limits={"gpus": 9}), quota("b", limits={"replicas": 8})]
    history = []
    for _ in range(5):
        out = decide(services, quotas)
        history.append({k: (d.reason, d.replicas) for k, d in out.services.items()})
        services = [ServiceFacts(**{**s.__dict__, "running": min(out.services[s.key].replicas, s.replicas)}) for s in services]
    assert history[1] == history[2] == history[3] == history[4]
    assert all(q.used.gpus <= 9 and q.used.replicas <= 8 for q in decide(services, quotas).quotas.values())


def test_a_newer_service_never_takes_quota_from_an_older_waiting_one() -> None:
    q = [quota(limits={"gpus": 2})]
    out = decide([svc("old", age=1, gpus=2), svc("new", age=2, gpus=1)], q)
    assert out.services[("search", "old")].admitted and not out.services[("search", "new")].admitted


def test_service_facts_from_an_object() -> None:
    body = {"metadata": {"name": "x", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"a": "b"}},
            "spec": {"model": {"source": "hf://o/m"}, "resources": {"accelerator": "nvidia-l4", "gpus": 2},
                     "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetQueueDepth": 3}}}
    facts = service_facts(body, {"team": "t"}, running=3)
    assert facts is not None and (facts.replicas, facts.min_replicas, facts.gpus_per_replica, facts.running) == (6, 2, 2, 3)
    assert service_facts({"metadata": {"name": "bad"}, "spec": {"model": {}}}, None, 0) is None
    fixed = service_facts({"metadata": {"name": "f"}, "spec": {"model": {"source": "hf://o/m"}}}, None, 0)
    assert fixed is not None and (fixed.replicas, fixed.min_replicas, fixed.namespace) == (1, None, "default")


def test_tenant_policy_is_merged_from_every_selecting_quota() -> None:
    quotas = [quota("a", tenants={"ceiling": {"tokensPerMinute": 1000}, "modelTokensPerMinute": 50}),
              quota("b", tenants={"ceiling": {"tokensPerMinute": 500}, "defaults": {"priority": "low"}}),
              quota("c", limits={"gpus": 9})]
    policy = decide([svc("x")], quotas).services[("search", "x")].policy
    assert policy is not None and policy.quotas == ["a", "b"] and policy.service is None, "the builder names the service"
    assert policy.ceiling is not None and policy.ceiling.tokens_per_minute == 500
    assert policy.model_tokens_per_minute == 50 and policy.defaults is not None and policy.defaults.priority == "low"
    assert decide([svc("x")], [quota("c")]).services[("search", "x")].policy is None


def test_status_lists_what_is_held_back_first_and_counts_what_it_leaves_out() -> None:
    """260 services on a 200-GPU quota: 199 fixed ones fit, one autoscaled one is clamped, the last 60 are refused."""
    services = [svc(f"s{i:03d}", auto=(1, 5) if i == 199 else None) for i in range(260)]
    status = decide(services, [quota(limits={"gpus": 200})]).quotas["team"]
    listed = [(s.name, s.reason) for s in status.services]
    assert len(listed) == STATUS_SERVICES_MAX == 100
    assert listed[:60] == [(f"s{i:03d}", REFUSED) for i in range(200, 260)], "refused first, oldest (next in line) first"
    assert listed[60] == ("s199", CLAMPED)
    assert listed[61:] == [(f"s{i:03d}", ADMITTED) for i in range(39)], "then admitted ones, oldest first"
    assert (status.service_count, status.refused_count, status.limited_count, status.omitted_count) == (260, 60, 1, 160)
    assert status.used.gpus == 200, "counting is over every service, listed or not"


def test_status_size_is_bounded_whatever_the_number_of_services() -> None:
    """An InferenceQuota over 5000 services stays far below etcd's object size limit (~1.5 MiB)."""
    services = [svc(f"service-with-a-long-name-{i:05d}", ns=f"namespace-{i % 50:02d}", age=i % 60) for i in range(5000)]
    status = decide(services, [quota(limits={"gpus": 2500})]).quotas["team"]
    assert (status.service_count, status.refused_count, status.omitted_count) == (5000, 2500, 4900)
    assert len(json.dumps(status.model_dump(by_alias=True, mode="json"))) < 30_000
