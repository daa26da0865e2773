"""The tenancy the runtime enforces right now: the tenants file and the quota's tenant policy, both reloadable.

``TenancyState`` holds the current ``TenantRegistry`` (API keys, each tenant's own limits) and the current
``TenantPolicy`` (what the InferenceQuotas selecting this service push: defaults, ceilings, overrides,
priorities, a model-wide token budget), and resolves each tenant to its effective limits, priority and
weight (``inferkube.api.tenantpolicy.effective_tenant``). A reload swaps one reference; a request that
already resolved its tenant keeps that immutable answer, so in-flight requests are never affected.
The model budget is one pseudo-tenant: the whole budget when the limiter is shared (Redis), else this
replica's share of it (``model_budget_share``: the policy names the replica count).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from inferkube.api.quota import TenantLimits
from inferkube.api.tenantpolicy import TenantPolicy, effective_tenant, model_budget_share, parse_policy
from inferkube.runtime.tenancy.tenants import Tenant, TenantRegistry

MODEL_BUDGET_PREFIX = "model:"  # tenant names cannot contain ':', so a model budget never collides with one


@dataclass(frozen=True, slots=True)
class ResolvedTenant:
    """A tenant with its effective limits, and where it stands in the admission queue."""

    tenant: Tenant
    priority: int
    weight: int


@dataclass(frozen=True, slots=True)
class ModelBudget:
    """The model-wide token budget as this replica enforces it: a pseudo-tenant in the limiter whose
    `tokens_per_minute` is the whole budget (`total`) or, when `replicas` share it without Redis, this
    replica's share."""

    tenant: Tenant
    total: int
    replicas: int = 1

    @property
    def per_replica(self) -> int:
        """Tokens per minute this replica lets through."""
        return self.tenant.tokens_per_minute or self.total


def load_policy_file(path: Path) -> TenantPolicy | None:
    """The policy at path; None when the file is absent (no quota selects the service); raises when broken."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    return parse_policy(text, source=f"tenant policy {str(path)!r}")


class TenancyState:
    """The current registry and policy, and each tenant's effective limits under them."""

    def __init__(self, registry: TenantRegistry, policy: TenantPolicy | None = None,
                 server_defaults: TenantLimits | None = None, model_name: str = "model", *,
                 shared_limiter: bool = False) -> None:
        self._registry = registry
        self._defaults = server_defaults or TenantLimits()
        self._model_name = model_name
        self._shared = shared_limiter  # every replica draws from one limiter (Redis): no share to split
        self._resolved: dict[str, ResolvedTenant] = {}
        self.set_policy(policy)

    @property
    def registry(self) -> TenantRegistry:
        """The tenants file in force."""
        return self._registry

    @property
    def policy(self) -> TenantPolicy | None:
        """The quota policy in force (None: no quota selects this service)."""
        return self._policy

    def set_registry(self, registry: TenantRegistry) -> None:
        """Swap in a reloaded tenants file."""
        self._registry, self._resolved = registry, {}

    def set_policy(self, policy: TenantPolicy | None) -> None:
        """Swap in a reloaded policy."""
        self._policy, self._resolved = policy, {}
        self._budget = self._model_budget(policy)

    def resolve(self, tenant: Tenant) -> ResolvedTenant:
        """The tenant with its effective limits (override, own, quota default, server default; ceiling caps)."""
        cached = self._resolved.get(tenant.name)
        if cached is not None and cached.tenant.name == tenant.name:
            return cached
        own = TenantLimits(requests_per_minute=tenant.requests_per_minute, tokens_per_minute=tenant.tokens_per_minute,
                           max_concurrent=tenant.max_concurrent)
        eff = effective_tenant(tenant.name, own, tenant.priority, self._policy, self._defaults)
        limited = replace(tenant, requests_per_minute=eff.requests_per_minute, tokens_per_minute=eff.tokens_per_minute,
                          max_concurrent=eff.max_concurrent)
        resolved = ResolvedTenant(limited, eff.priority, eff.weight)
        self._resolved[tenant.name] = resolved
        return resolved

    def model_budget(self) -> ModelBudget | None:
        """The model-wide token budget in force (None: the policy sets none)."""
        return self._budget

    def _model_budget(self, policy: TenantPolicy | None) -> ModelBudget | None:
        """The budget's pseudo-tenant: shared by every replica through Redis, else this replica's share."""
        if policy is None or policy.model_tokens_per_minute is None:
            return None
        share = model_budget_share(policy, self._shared)
        tenant = Tenant(name=MODEL_BUDGET_PREFIX + (policy.service or self._model_name), tokens_per_minute=share)
        return ModelBudget(tenant, policy.model_tokens_per_minute, 1 if self._shared else (policy.replicas or 1))
