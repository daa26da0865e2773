"""The tenancy the runtime enforces right now: the tenants file and the quota's tenant policy, both reloadable.

``TenancyState`` holds the current ``TenantRegistry`` (API keys, each tenant's own limits) and the current
``TenantPolicy`` (what the InferenceQuotas selecting this service push: defaults, ceilings, overrides,
priorities, a model-wide token budget), and resolves each tenant to its effective limits, priority and
weight (``inferkube.api.tenantpolicy.effective_tenant``). A reload swaps one reference; a request that
already resolved its tenant keeps that immutable answer, so in-flight requests are never affected.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from inferkube.api.quota import TenantLimits
from inferkube.api.tenantpolicy import TenantPolicy, effective_tenant, parse_policy
from inferkube.runtime.tenancy.tenants import Tenant, TenantRegistry

MODEL_BUDGET_PREFIX = "model:"  # tenant names cannot contain ':', so a model budget never collides with one


@dataclass(frozen=True, slots=True)
class ResolvedTenant:
    """A tenant with its effective limits, and where it stands in the admission queue."""

    tenant: Tenant
    priority: int
    weight: int


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
                 server_defaults: TenantLimits | None = None, model_name: str = "model") -> None:
        self._registry = registry
        self._policy = policy
        self._defaults = server_defaults or TenantLimits()
        self._model_name = model_name
        self._resolved: dict[str, ResolvedTenant] = {}

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

    def model_budget(self) -> Tenant | None:
        """The pseudo-tenant holding the model-wide token budget (shared by every replica through Redis)."""
        policy = self._policy
        if policy is None or policy.model_tokens_per_minute is None:
            return None
        return Tenant(name=MODEL_BUDGET_PREFIX + (policy.service or self._model_name),
                      tokens_per_minute=policy.model_tokens_per_minute)
