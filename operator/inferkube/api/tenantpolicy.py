"""The effective tenant policy of one InferenceService: what its quotas push to its runtime, and how it merges.

The operator merges the ``spec.tenants`` of every InferenceQuota selecting a service into one
``TenantPolicy`` and writes it as a ConfigMap mounted beside the tenants Secret; the runtime reads it
(and reloads it when it changes) and computes each tenant's effective limits with ``effective_tenant``.
Both sides import only this module, so the file format and the merge rules have one home.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import Field, ValidationError

from inferkube.api.quota import (
    PRIORITY_VALUES,
    QuotaTenants,
    TenantDefaults,
    TenantLimits,
    TenantOverride,
    priority_value,
)
from inferkube.api.spec import ApiModel

LIMIT_FIELDS = ("requests_per_minute", "tokens_per_minute", "max_concurrent")
DEFAULT_WEIGHT = 1


class TenantPolicy(ApiModel):
    """The merged tenant policy of one InferenceService (the ConfigMap's policy.yaml)."""

    service: str | None = Field(default=None, description="namespace/name of the InferenceService (names the shared model budget).")
    quotas: list[str] = Field(default_factory=list, description="The InferenceQuotas this policy was merged from.")
    defaults: TenantDefaults | None = Field(default=None, description="Used where a tenant's own entry is silent.")
    ceiling: TenantLimits | None = Field(default=None, description="No tenant's limit may exceed these.")
    model_tokens_per_minute: int | None = Field(default=None, ge=1, description="Tokens per minute of all tenants together.")
    replicas: int | None = Field(default=None, ge=1, description=(
        "Replicas of the service as the operator last saw its Deployment (spec.replicas). Written only with "
        "modelTokensPerMinute and the memory rate-limit backend: each replica then enforces "
        "ceil(modelTokensPerMinute / replicas); with Redis every replica draws from the whole budget."))
    overrides: list[TenantOverride] = Field(default_factory=list, description="Per-tenant values of the platform team.")

    def override_for(self, tenant: str) -> TenantOverride | None:
        """The override naming tenant, if any."""
        return next((o for o in self.overrides if o.tenant == tenant), None)


class PolicyFileError(ValueError):
    """The policy file is not YAML or does not match the schema."""


def _min(values: Iterable[int | None]) -> int | None:
    """The smallest value given, None when none is."""
    present = [v for v in values if v is not None]
    return min(present) if present else None


def _lowest_priority(values: Iterable[int | str | None]) -> int | str | None:
    """The least important priority given (several quotas: the most restrictive wins)."""
    present = [v for v in values if v is not None]
    return min(present, key=priority_value) if present else None


def _merge_defaults(parts: list[TenantDefaults]) -> TenantDefaults | None:
    """Several quotas' defaults (or one tenant's overrides) merged field by field, most restrictive first."""
    if not parts:
        return None
    values: dict[str, Any] = {f: _min(getattr(p, f) for p in parts) for f in (*LIMIT_FIELDS, "weight")}
    values["priority"] = _lowest_priority(p.priority for p in parts)
    return TenantDefaults(**values)


def merge_policies(tenants: Iterable[tuple[str, QuotaTenants]], service: str | None = None) -> TenantPolicy | None:
    """One policy from the tenant sections of every quota selecting a service (by quota name); None when none has one."""
    parts = sorted(tenants, key=lambda item: item[0])
    if not parts:
        return None
    ceilings = [t.ceiling for _, t in parts if t.ceiling is not None]
    ceiling = TenantLimits(**{f: _min(getattr(c, f) for c in ceilings) for f in LIMIT_FIELDS}) if ceilings else None
    by_tenant: dict[str, list[TenantOverride]] = {}
    for _, section in parts:
        for override in section.overrides:
            by_tenant.setdefault(override.tenant, []).append(override)
    overrides = []
    for name in sorted(by_tenant):
        merged = _merge_defaults(list(by_tenant[name]))
        assert merged is not None
        overrides.append(TenantOverride(tenant=name, **merged.model_dump()))
    return TenantPolicy(
        service=service,
        quotas=[name for name, _ in parts],
        defaults=_merge_defaults([t.defaults for _, t in parts if t.defaults is not None]),
        ceiling=ceiling,
        model_tokens_per_minute=_min(t.model_tokens_per_minute for _, t in parts),
        overrides=overrides,
    )


@dataclass(frozen=True, slots=True)
class EffectiveTenant:
    """A tenant's limits and scheduling after the policy: None limits are unlimited."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None
    priority: int = PRIORITY_VALUES["normal"]
    weight: int = DEFAULT_WEIGHT


def effective_tenant(
    name: str,
    own: TenantLimits,
    own_priority: int | str | None,
    policy: TenantPolicy | None,
    server_defaults: TenantLimits | None = None,
) -> EffectiveTenant:
    """A tenant's effective limits: an override wins; else its own value, else the quota default, else the
    server default, capped by the ceiling. Its own priority may lower, never raise, the quota's default."""
    server = server_defaults or TenantLimits()
    override = policy.override_for(name) if policy else None
    defaults = (policy.defaults if policy else None) or TenantDefaults()
    ceiling = (policy.ceiling if policy else None) or TenantLimits()
    limits: dict[str, int | None] = {}
    for field in LIMIT_FIELDS:
        forced = getattr(override, field) if override is not None else None
        if forced is not None:
            limits[field] = forced
            continue
        value = _first(getattr(own, field), getattr(defaults, field), getattr(server, field))
        cap = getattr(ceiling, field)
        limits[field] = cap if value is None else (value if cap is None else min(value, cap))
    if override is not None and override.priority is not None:
        priority = priority_value(override.priority)
    elif defaults.priority is not None:
        priority = min(priority_value(defaults.priority), priority_value(own_priority if own_priority is not None else defaults.priority))
    else:
        priority = priority_value(own_priority)
    weight = _first(override.weight if override is not None else None, defaults.weight) or DEFAULT_WEIGHT
    return EffectiveTenant(priority=priority, weight=weight, **limits)


def _first(*values: int | None) -> int | None:
    """The first value that is set."""
    return next((v for v in values if v is not None), None)


def model_budget_share(policy: TenantPolicy, shared: bool) -> int | None:
    """Tokens per minute of the model budget one replica enforces (None: no budget): all of it when every replica
    draws from one shared limiter (Redis), else its share ceil(budget / replicas) (all replicas together: the
    budget, plus at most replicas - 1 tokens of rounding)."""
    budget = policy.model_tokens_per_minute
    if budget is None or shared or not policy.replicas:
        return budget
    return math.ceil(budget / policy.replicas)


def render_policy(policy: TenantPolicy) -> str:
    """The policy as the YAML the ConfigMap carries."""
    return yaml.safe_dump(policy.model_dump(by_alias=True, exclude_none=True, mode="json"), sort_keys=False)


def parse_policy(text: str, source: str = "tenant policy") -> TenantPolicy:
    """Parse policy YAML; PolicyFileError says what is wrong (an empty file is the empty policy)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise PolicyFileError(f"{source} is not valid YAML{where}") from None
    try:
        return TenantPolicy.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '.'}: {e['msg']}" for e in exc.errors())
        raise PolicyFileError(f"{source} is invalid: {problems}") from None
