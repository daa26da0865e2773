"""TenancyState: each tenant's effective limits under the tenants file and the quota policy, swapped on reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferkube.api.quota import TenantLimits
from inferkube.api.tenantpolicy import PolicyFileError, TenantPolicy, parse_policy
from inferkube.runtime.tenancy import TenantRegistry
from inferkube.runtime.tenancy.policy import TenancyState, load_policy_file

TENANTS = """
tenants:
  - {name: greedy, key: k1, tokensPerMinute: 99999999, priority: high}
  - {name: quiet, key: k2}
  - {name: batch-jobs, key: k3, requestsPerMinute: 5}
"""
POLICY = parse_policy("""
service: search/llama
defaults: {tokensPerMinute: 1000, maxConcurrent: 4, priority: normal}
ceiling: {tokensPerMinute: 5000}
modelTokensPerMinute: 20000
overrides:
  - {tenant: batch-jobs, priority: low, weight: 2}
""")


def state(policy: TenantPolicy | None = POLICY) -> TenancyState:
    return TenancyState(TenantRegistry.from_yaml(TENANTS), policy, TenantLimits(requests_per_minute=60))


def tenant(st: TenancyState, name: str):  # noqa: ANN201 - returns the registry's Tenant
    found = st.registry.get(name)
    assert found is not None
    return found


def test_own_limit_is_capped_by_the_ceiling_and_priority_by_the_quota_default() -> None:
    st = state()
    r = st.resolve(tenant(st, "greedy"))
    assert (r.tenant.tokens_per_minute, r.tenant.requests_per_minute, r.tenant.max_concurrent) == (5000, 60, 4)
    assert r.priority == 0, "the tenants file cannot raise its priority above the quota's default"


def test_quota_defaults_fill_silent_fields_and_overrides_set_priority() -> None:
    st = state()
    assert st.resolve(tenant(st, "quiet")).tenant.tokens_per_minute == 1000
    batch = st.resolve(tenant(st, "batch-jobs"))
    assert (batch.priority, batch.weight, batch.tenant.requests_per_minute) == (-100, 2, 5)


def test_without_a_policy_the_tenants_file_decides() -> None:
    st = state(None)
    r = st.resolve(tenant(st, "greedy"))
    assert (r.tenant.tokens_per_minute, r.priority) == (99999999, 100)
    assert st.model_budget() is None


def test_a_reload_changes_new_resolutions_but_not_answers_already_given() -> None:
    st = state()
    before = st.resolve(tenant(st, "quiet"))
    st.set_policy(parse_policy("defaults: {tokensPerMinute: 10}"))
    after = st.resolve(tenant(st, "quiet"))
    assert before.tenant.tokens_per_minute == 1000 and after.tenant.tokens_per_minute == 10
    st.set_registry(TenantRegistry.from_yaml("tenants: [{name: quiet, key: k2, tokensPerMinute: 3}]"))
    assert st.resolve(tenant(st, "quiet")).tenant.tokens_per_minute == 3


def test_model_budget_is_one_pseudo_tenant_per_service() -> None:
    budget = state().model_budget()
    assert budget is not None and budget.tenant.name == "model:search/llama" and budget.tenant.tokens_per_minute == 20000
    unnamed = state(parse_policy("modelTokensPerMinute: 7")).model_budget()
    assert unnamed is not None and unnamed.tenant.name == "model:model"


def test_without_redis_each_replica_enforces_its_share_of_the_model_budget_and_a_reload_changes_it() -> None:
    three = parse_policy("service: search/llama\nmodelTokensPerMinute: 20000\nreplicas: 3\n")
    alone = TenancyState(TenantRegistry.from_yaml(TENANTS), three)
    budget = alone.model_budget()
    assert budget is not None and (budget.tenant.tokens_per_minute, budget.total, budget.replicas) == (6667, 20000, 3)
    alone.set_policy(parse_policy("service: search/llama\nmodelTokensPerMinute: 20000\nreplicas: 4\n"))  # scaled up
    scaled = alone.model_budget()
    assert scaled is not None and scaled.tenant.tokens_per_minute == 5000
    shared = TenancyState(TenantRegistry.from_yaml(TENANTS), three, shared_limiter=True)
    budget = shared.model_budget()
    assert budget is not None and (budget.tenant.tokens_per_minute, budget.replicas) == (20000, 1), "Redis: one budget"


def test_policy_file_absent_is_no_policy_and_broken_raises(tmp_path: Path) -> None:
    assert load_policy_file(tmp_path / "missing.yaml") is None
    (tmp_path / "p.yaml").write_text("ceiling: {tokensPerMinute: zero}")
    with pytest.raises(PolicyFileError, match="ceiling.tokensPerMinute"):
        load_policy_file(tmp_path / "p.yaml")
