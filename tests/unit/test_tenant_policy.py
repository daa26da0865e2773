"""The effective tenant policy: own limits capped by the ceiling, quota defaults where silent, overrides, priorities."""

from __future__ import annotations

import pytest

from inferkube.api.quota import QuotaTenants, TenantLimits
from inferkube.api.tenantpolicy import (
    PolicyFileError,
    TenantPolicy,
    effective_tenant,
    merge_policies,
    model_budget_share,
    parse_policy,
    render_policy,
)

POLICY = TenantPolicy.model_validate({
    "service": "search/llama",
    "quotas": ["team-search"],
    "defaults": {"requestsPerMinute": 600, "tokensPerMinute": 200000, "maxConcurrent": 16, "priority": "normal"},
    "ceiling": {"requestsPerMinute": 6000, "tokensPerMinute": 2000000, "maxConcurrent": 64},
    "modelTokensPerMinute": 5000000,
    "overrides": [{"tenant": "batch-jobs", "priority": "low", "tokensPerMinute": 3000000},
                  {"tenant": "ui", "priority": "high", "weight": 4}],
})


def limits(rpm: int | None = None, tpm: int | None = None, maxc: int | None = None) -> TenantLimits:
    return TenantLimits(requests_per_minute=rpm, tokens_per_minute=tpm, max_concurrent=maxc)


def test_own_limits_are_capped_by_the_ceiling() -> None:
    eff = effective_tenant("greedy", limits(rpm=100000, tpm=10, maxc=1000), None, POLICY)
    assert (eff.requests_per_minute, eff.tokens_per_minute, eff.max_concurrent) == (6000, 10, 64)


def test_quota_defaults_fill_what_the_tenants_file_leaves_out() -> None:
    eff = effective_tenant("quiet", limits(rpm=50), None, POLICY)
    assert (eff.requests_per_minute, eff.tokens_per_minute, eff.max_concurrent) == (50, 200000, 16)
    assert eff.priority == 0 and eff.weight == 1


def test_server_defaults_come_after_quota_defaults_and_the_ceiling_caps_unlimited() -> None:
    policy = TenantPolicy.model_validate({"ceiling": {"tokensPerMinute": 1000}})
    eff = effective_tenant("t", limits(), None, policy, server_defaults=limits(rpm=30))
    assert (eff.requests_per_minute, eff.tokens_per_minute, eff.max_concurrent) == (30, 1000, None)


def test_an_override_wins_even_over_the_ceiling() -> None:
    eff = effective_tenant("batch-jobs", limits(tpm=5), "high", POLICY)
    assert eff.tokens_per_minute == 3000000 and eff.priority == -100
    assert eff.requests_per_minute == 600, "fields the override leaves out follow the normal rules"
    ui = effective_tenant("ui", limits(), None, POLICY)
    assert ui.priority == 100 and ui.weight == 4


def test_the_tenants_file_may_lower_but_not_raise_a_quota_priority() -> None:
    assert effective_tenant("t", limits(), "low", POLICY).priority == -100
    assert effective_tenant("t", limits(), "high", POLICY).priority == 0
    assert effective_tenant("t", limits(), "high", None).priority == 100, "without a quota the file decides"
    assert effective_tenant("t", limits(), 42, TenantPolicy()).priority == 42


def test_no_policy_means_own_limits_then_server_defaults() -> None:
    eff = effective_tenant("t", limits(tpm=7), None, None, server_defaults=limits(rpm=3, tpm=9))
    assert (eff.requests_per_minute, eff.tokens_per_minute, eff.max_concurrent, eff.priority) == (3, 7, None, 0)


def test_several_quotas_merge_to_the_most_restrictive() -> None:
    a = QuotaTenants.model_validate({"ceiling": {"tokensPerMinute": 100, "maxConcurrent": 8}, "modelTokensPerMinute": 9000,
                                     "defaults": {"priority": "high", "requestsPerMinute": 60},
                                     "overrides": [{"tenant": "x", "tokensPerMinute": 50, "priority": 10}]})
    b = QuotaTenants.model_validate({"ceiling": {"tokensPerMinute": 300}, "modelTokensPerMinute": 5000,
                                     "defaults": {"priority": "low", "weight": 3},
                                     "overrides": [{"tenant": "x", "tokensPerMinute": 80, "priority": "low"}]})
    merged = merge_policies([("b", b), ("a", a)], "ns/svc")
    assert merged is not None and merged.quotas == ["a", "b"] and merged.service == "ns/svc"
    assert merged.ceiling is not None and (merged.ceiling.tokens_per_minute, merged.ceiling.max_concurrent) == (100, 8)
    assert merged.model_tokens_per_minute == 5000
    assert merged.defaults is not None and (merged.defaults.priority, merged.defaults.requests_per_minute, merged.defaults.weight) == ("low", 60, 3)
    assert [(o.tenant, o.tokens_per_minute, o.priority) for o in merged.overrides] == [("x", 50, "low")]
    assert merge_policies([]) is None


def test_policy_file_round_trip_and_errors() -> None:
    assert parse_policy(render_policy(POLICY)) == POLICY
    assert parse_policy("") == TenantPolicy()
    with pytest.raises(PolicyFileError, match="not valid YAML"):
        parse_policy("defaults: [unclosed")
    with pytest.raises(PolicyFileError, match="ceiling.tokensPerMinute"):
        parse_policy("ceiling: {tokensPerMinute: -3}")
    with pytest.raises(PolicyFileError, match="Extra inputs"):
        parse_policy("unknown: 1")


def test_without_a_shared_limiter_each_replica_gets_its_share_of_the_model_budget_rounded_up() -> None:
    merged = merge_policies([("a", QuotaTenants.model_validate({"modelTokensPerMinute": 9000})),
                             ("b", QuotaTenants.model_validate({"modelTokensPerMinute": 10000}))], "ns/svc")
    assert merged is not None and merged.replicas is None, "the replica count is the service's, not the quotas'"
    assert model_budget_share(merged, shared=False) == 9000, "no replica count: one replica holds it all"
    four = merged.model_copy(update={"replicas": 4})
    assert model_budget_share(four, shared=False) == 2250
    assert model_budget_share(merged.model_copy(update={"replicas": 7}), shared=False) == 1286  # 7 x 1286 = 9002
    assert model_budget_share(four, shared=True) == 9000, "Redis: every replica draws from the whole budget"
    assert model_budget_share(TenantPolicy(replicas=3), shared=False) is None
    assert parse_policy(render_policy(four)).replicas == 4
    with pytest.raises(PolicyFileError, match="replicas"):
        parse_policy("modelTokensPerMinute: 10\nreplicas: 0\n")
