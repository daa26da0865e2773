"""InferenceQuotas under the real operator: admission oldest first, refusal with numbers, never killing replicas."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml
from kopf.testing import KopfRunner

from inferkube.api import contract
from tests.integration.operator.conftest import NS, condition, isvc, wait_for
from tests.kube_emulator import KubeEmulator

GPU = {"accelerator": "nvidia-l4", "gpus": 1}


def gpu_service(name: str, replicas: int = 1, **spec: Any) -> dict[str, Any]:
    """An InferenceService on one L4 per replica, without a model cache (its Deployment comes at once)."""
    body = isvc(name, resources=GPU, cache={"enabled": False}, **spec)
    if "autoscaling" in spec:
        del body["spec"]["replicas"]
    else:
        body["spec"]["replicas"] = replicas
    return body


def quota(name: str = "team", selector: dict[str, Any] | None = None, **limits: Any) -> dict[str, Any]:
    """A cluster-scoped InferenceQuota over the test namespace."""
    return {"apiVersion": "serving.inferkube.dev/v1alpha1", "kind": "InferenceQuota", "metadata": {"name": name},
            "spec": {"selector": selector if selector is not None else {"namespaces": [NS]}, "limits": limits}}


def svc(kube: KubeEmulator, name: str) -> dict[str, Any]:
    return kube.get("InferenceService", NS, name) or {}


def quota_condition(kube: KubeEmulator, name: str, ctype: str = contract.CONDITION_QUOTA_EXCEEDED) -> dict[str, Any]:
    return condition(svc(kube, name), ctype) or {}


def replicas(kube: KubeEmulator, name: str) -> int | None:
    dep = kube.get("Deployment", NS, name)
    return None if dep is None else dep["spec"].get("replicas")


def refused_events(kube: KubeEmulator, name: str) -> list[dict[str, Any]]:
    return [e for e in kube.list("Event", NS) if e.get("reason") == "QuotaExceeded"
            and (e.get("involvedObject") or e.get("regarding") or {}).get("name") == name]


def create_in_order(kube: KubeEmulator, *bodies: dict[str, Any]) -> None:
    """Create services one second apart, so creationTimestamp orders them."""
    for i, body in enumerate(bodies):
        if i:
            time.sleep(1.05)
        kube.create(body)


def test_two_share_a_two_gpu_quota_the_third_is_refused_and_admitted_when_one_goes(
        kube: KubeEmulator, operator: KopfRunner) -> None:
    kube.create(quota(gpus=2))
    create_in_order(kube, gpu_service("a"), gpu_service("b"), gpu_service("c"))
    refused = wait_for(lambda: quota_condition(kube, "c").get("status") == "True" and quota_condition(kube, "c"))
    assert refused["reason"] == "QuotaExceeded"
    assert refused["message"] == "needs 1 GPUs, 0 of 2 left under InferenceQuota team"
    ready = condition(svc(kube, "c"), "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "QuotaExceeded"
    assert wait_for(lambda: replicas(kube, "a") == 1 and replicas(kube, "b") == 1)
    assert replicas(kube, "c") == 0, "a refused service runs no replicas"
    assert quota_condition(kube, "a")["status"] == "False"
    status = wait_for(lambda: (q := kube.get("InferenceQuota", None, "team") or {}).get("status", {}).get("refusedCount") == 1
                      and q["status"])
    assert status["used"] == {"gpus": 2, "replicas": 2, "gpusPerAccelerator": {"nvidia-l4": 2}}
    assert (status["serviceCount"], status["limitedCount"], status["omittedCount"]) == (3, 0, 0)
    assert [(s["name"], s["admitted"]) for s in status["services"]] == [("c", False), ("a", True), ("b", True)]
    wait_for(lambda: refused_events(kube, "c"))
    time.sleep(1.0)
    assert len(refused_events(kube, "c")) == 1, "one Warning Event, not one per reconcile"

    kube.delete("InferenceService", NS, "a")
    wait_for(lambda: replicas(kube, "c") == 1, timeout=10)
    assert wait_for(lambda: quota_condition(kube, "c").get("status") == "False")
    assert (condition(svc(kube, "c"), "Ready") or {}).get("reason") != "QuotaExceeded"
    assert replicas(kube, "b") == 1


def test_a_lowered_quota_blocks_scale_up_and_new_services_but_kills_nothing(kube: KubeEmulator, operator: KopfRunner) -> None:
    kube.create(quota(gpus=4))
    create_in_order(kube, gpu_service("a", replicas=2), gpu_service("b", replicas=2))
    wait_for(lambda: replicas(kube, "a") == 2 and replicas(kube, "b") == 2)
    kube.patch("InferenceQuota", None, "team", {"spec": {"limits": {"gpus": 2}}})
    over = wait_for(lambda: condition(kube.get("InferenceQuota", None, "team"), "OverBudget")["status"] == "True"
                    and condition(kube.get("InferenceQuota", None, "team"), "OverBudget"))
    assert "4 of 2 GPUs" in over["message"]
    kube.patch("InferenceService", NS, "a", {"spec": {"replicas": 3}})
    blocked = wait_for(lambda: quota_condition(kube, "a").get("reason") == "ScaleUpBlocked" and quota_condition(kube, "a"))
    assert blocked["status"] == "True" and "scale-up from 2 to 3 replicas" in blocked["message"]
    kube.create(gpu_service("c"))
    wait_for(lambda: quota_condition(kube, "c").get("reason") == "QuotaExceeded")
    time.sleep(0.5)
    assert (replicas(kube, "a"), replicas(kube, "b"), replicas(kube, "c")) == (2, 2, 0), "nothing that ran was stopped"


def test_an_autoscaled_service_gets_a_clamped_max(kube: KubeEmulator, operator: KopfRunner) -> None:
    kube.create(quota(gpus=3))
    create_in_order(kube, gpu_service("fixed"),
                    gpu_service("auto", autoscaling={"minReplicas": 1, "maxReplicas": 5, "targetQueueDepth": 4}))
    hpa = wait_for(lambda: kube.get("HorizontalPodAutoscaler", NS, "auto"))
    assert wait_for(lambda: kube.get("HorizontalPodAutoscaler", NS, "auto")["spec"]["maxReplicas"] == 2)
    assert hpa["spec"]["minReplicas"] == 1
    clamped = wait_for(lambda: quota_condition(kube, "auto").get("reason") == "MaxReplicasClamped" and quota_condition(kube, "auto"))
    assert clamped["message"].startswith("maxReplicas 5 clamped to 2: needs 5 GPUs, 2 of 3 left under InferenceQuota team")
    kube.delete("InferenceService", NS, "fixed")
    assert wait_for(lambda: kube.get("HorizontalPodAutoscaler", NS, "auto")["spec"]["maxReplicas"] == 3)


def test_two_quotas_on_one_service_must_both_admit(kube: KubeEmulator, operator: KopfRunner) -> None:
    kube.create(quota("gpus", gpus=10))
    kube.create(quota("replicas", replicas=1))
    create_in_order(kube, gpu_service("a"), gpu_service("b"))
    refused = wait_for(lambda: quota_condition(kube, "b").get("status") == "True" and quota_condition(kube, "b"))
    assert refused["message"] == "needs 1 replicas, 0 of 1 left under InferenceQuota replicas"
    assert wait_for(lambda: replicas(kube, "a") == 1) and replicas(kube, "b") == 0
    gpus = wait_for(lambda: (kube.get("InferenceQuota", None, "gpus") or {}).get("status", {}).get("serviceCount") == 2
                    and kube.get("InferenceQuota", None, "gpus")["status"])
    assert gpus["used"]["gpus"] == 1, "a refused service counts against no quota"


def test_deleting_the_quota_admits_everything_and_removes_the_tenant_policy(kube: KubeEmulator, operator: KopfRunner) -> None:
    body = quota(gpus=1)
    body["spec"]["tenants"] = {"ceiling": {"tokensPerMinute": 1000}, "defaults": {"priority": "low"},
                               "modelTokensPerMinute": 5000}
    kube.create(body)
    create_in_order(kube, gpu_service("a"), gpu_service("b"))
    wait_for(lambda: quota_condition(kube, "b").get("status") == "True")
    cm = wait_for(lambda: kube.get("ConfigMap", NS, "b-tenant-policy"))
    policy = yaml.safe_load(cm["data"][contract.POLICY_FILE_KEY])
    assert policy["service"] == f"{NS}/b" and policy["ceiling"] == {"tokensPerMinute": 1000}
    assert policy["modelTokensPerMinute"] == 5000 and policy["quotas"] == ["team"]
    volumes = kube.get("Deployment", NS, "a")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tenant-policy", "configMap": {"name": "a-tenant-policy", "optional": True}} in volumes
    kube.delete("InferenceQuota", None, "team")
    wait_for(lambda: replicas(kube, "b") == 1)
    wait_for(lambda: kube.get("ConfigMap", NS, "a-tenant-policy") is None and kube.get("ConfigMap", NS, "b-tenant-policy") is None)
    assert wait_for(lambda: condition(svc(kube, "b"), contract.CONDITION_QUOTA_EXCEEDED) is None
                    and condition(svc(kube, "b"), "Ready") is not None)


def test_quotas_settle_without_writes(kube: KubeEmulator, operator: KopfRunner) -> None:
    kube.create(quota(gpus=1))
    create_in_order(kube, gpu_service("a"), gpu_service("b"))
    wait_for(lambda: quota_condition(kube, "b").get("status") == "True")
    wait_for(lambda: (kube.get("InferenceQuota", None, "team") or {}).get("status", {}).get("serviceCount") == 2)
    time.sleep(1.5)
    kube.reset_counters()
    time.sleep(2.5)
    assert [w for w in kube.writes if "/events" not in w.path] == []


def test_a_long_status_list_is_cut_refused_first_counted_and_settles(
        kube: KubeEmulator, operator: KopfRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cap (100 in production, 2 here so three services show it) holds through the real status writer."""
    from inferkube.operator import quota as decisions

    monkeypatch.setattr(decisions, "STATUS_SERVICES_MAX", 2)  # read by every pass; the operator runs in this process
    kube.create(quota(gpus=1))
    create_in_order(kube, gpu_service("a"), gpu_service("b"), gpu_service("c"))
    status = wait_for(lambda: (q := kube.get("InferenceQuota", None, "team") or {}).get("status", {}).get("refusedCount") == 2
                      and q["status"])
    assert [(s["name"], s["reason"]) for s in status["services"]] == [("b", "QuotaExceeded"), ("c", "QuotaExceeded")]
    assert (status["serviceCount"], status["omittedCount"]) == (3, 1), "the admitted one is left out, and counted"
    time.sleep(1.5)
    kube.reset_counters()
    time.sleep(2.5)
    assert [w for w in kube.writes if "/events" not in w.path] == [], "a cut list is written once, not on every pass"


def test_a_policy_whose_quota_went_while_the_operator_was_down_is_removed(kube: KubeEmulator) -> None:
    from tests.integration.operator.conftest import start_operator

    body = quota(gpus=4)
    body["spec"]["tenants"] = {"ceiling": {"tokensPerMinute": 1000}}
    kube.create(body)
    with start_operator():
        kube.create(gpu_service("a"))
        wait_for(lambda: kube.get("ConfigMap", NS, "a-tenant-policy"))
        dep = wait_for(lambda: kube.get("Deployment", NS, "a"))
        assert contract.ANNOTATION_TENANT_POLICY in dep["metadata"]["annotations"]
    kube.delete("InferenceQuota", None, "team")
    with start_operator():
        wait_for(lambda: kube.get("ConfigMap", NS, "a-tenant-policy") is None, timeout=15)
        wait_for(lambda: contract.ANNOTATION_TENANT_POLICY not in kube.get("Deployment", NS, "a")["metadata"]["annotations"])
        time.sleep(1.0)
        kube.reset_counters()
        time.sleep(2.0)
        assert [w for w in kube.writes if "/events" not in w.path] == [], "settled: no delete per reconcile"
    assert kube.validation_errors == []


def test_an_autoscaler_scale_event_reaches_the_memory_budget_split_then_settles(kube: KubeEmulator, operator: KopfRunner) -> None:
    body = quota(gpus=8)
    body["spec"]["tenants"] = {"modelTokensPerMinute": 9000}
    kube.create(body)
    kube.create(gpu_service("auto", autoscaling={"minReplicas": 1, "maxReplicas": 4, "targetQueueDepth": 4}))

    def split() -> int | None:
        cm = kube.get("ConfigMap", NS, "auto-tenant-policy")
        return None if cm is None else yaml.safe_load(cm["data"][contract.POLICY_FILE_KEY]).get("replicas")

    assert wait_for(lambda: split() == 1)
    kube.patch("Deployment", NS, "auto", {"spec": {"replicas": 3}})  # what the HPA does
    assert wait_for(lambda: split() == 3), "each replica now enforces a third of the budget"
    cm = kube.get("ConfigMap", NS, "auto-tenant-policy")
    digest = cm["metadata"]["annotations"][contract.ANNOTATION_TENANT_POLICY]
    assert wait_for(lambda: kube.get("Deployment", NS, "auto")["metadata"]["annotations"][contract.ANNOTATION_TENANT_POLICY] == digest)
    assert replicas(kube, "auto") == 3, "the operator never writes the autoscaler's replicas"
    time.sleep(1.5)
    kube.reset_counters()
    time.sleep(2.5)
    assert [w for w in kube.writes if "/events" not in w.path] == [], "settled: no write until the next scale event"
    assert kube.validation_errors == []
