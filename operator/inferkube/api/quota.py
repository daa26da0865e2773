"""The InferenceQuota API (serving.inferkube.dev/v1alpha1, cluster-scoped), defined once as pydantic models.

Platform teams own InferenceQuotas; application teams own InferenceServices. A quota selects services
(namespaces, namespace labels, service labels, model globs), caps their GPUs and replicas (the operator
enforces it) and pushes tenant defaults, ceilings, overrides and a model-wide token budget to their
runtimes (the runtime enforces it). The CRD in ``crds/`` is generated from these models.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from inferkube.api.spec import ApiModel
from inferkube.api.status import Condition

TENANT_NAME_PATTERN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$"
PRIORITY_NAMES = ("high", "normal", "low")
# Higher is more important (like a PriorityClass value); the names are fixed points on that scale.
PRIORITY_VALUES: dict[str, int] = {"high": 100, "normal": 0, "low": -100}
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
# At most this many entries in an InferenceQuota's status.services. A quota may select thousands of services,
# but the whole object goes to etcd (objects are limited to ~1.5 MiB) and to every watcher on each status write,
# and people read the list with kubectl: 100 entries are ~15 KB. The counts beside it say what is left out.
STATUS_SERVICES_MAX = 100

Priority = Annotated[
    Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)] | Literal["high", "normal", "low"],
    Field(
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "pattern": r"^(high|normal|low)$",
            "x-kubernetes-validations": [
                {
                    "rule": f"type(self) == string || (self >= {PRIORITY_MIN} && self <= {PRIORITY_MAX})",
                    "message": f"priority must be high, normal, low or an integer from {PRIORITY_MIN} to {PRIORITY_MAX}",
                }
            ],
        }
    ),
]


def priority_value(priority: int | str | None) -> int:
    """A priority as a number (higher is more important); None is normal."""
    if priority is None:
        return PRIORITY_VALUES["normal"]
    if isinstance(priority, str):
        return PRIORITY_VALUES[priority]
    return int(priority)


class LabelSelectorRequirement(ApiModel):
    """One metav1.LabelSelectorRequirement: key, operator and values."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": {
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : "
                        "(!has(self.values) || size(self.values) == 0)"
                    ),
                    "message": "In and NotIn need values; Exists and DoesNotExist take none",
                }
            ]
        }
    }

    key: str = Field(description="The label key the requirement applies to.", min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[str] = Field(default_factory=list, description="Values for In and NotIn; empty otherwise.")


class LabelSelector(ApiModel):
    """A metav1.LabelSelector: every matchLabels pair and every matchExpressions entry must hold."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels that must all be present with these values.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Requirements that must all hold."
    )


class QuotaSelector(ApiModel):
    """Which InferenceServices count against the quota: every part given must match; empty selects all."""

    namespaces: list[str] | None = Field(
        default=None,
        description="Namespaces whose InferenceServices count. Unset: every namespace.",
        max_length=256,
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Labels the InferenceService's Namespace must carry."
    )
    service_selector: LabelSelector | None = Field(
        default=None, description="Labels the InferenceService itself must carry."
    )
    models: list[str] = Field(
        default_factory=list,
        description="Globs on spec.model.source (e.g. 'hf://meta-llama/*'). Empty: any model.",
        max_length=64,
    )


class QuotaLimits(ApiModel):
    """Caps on what the selected InferenceServices may run together, counted at their worst case."""

    gpus: int | None = Field(
        default=None,
        ge=0,
        description=(
            "Accelerators of all selected services together: GPUs per replica x replicas (fixed replicas, or "
            "autoscaling.maxReplicas). Unset: no cap."
        ),
    )
    replicas: int | None = Field(
        default=None, ge=0, description="Replicas of all selected services together, counted the same way. Unset: no cap."
    )
    gpus_per_accelerator: dict[str, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict,
        description="GPU caps per accelerator profile name (resources.accelerator), e.g. {nvidia-h100-80gb: 8}.",
    )


class TenantLimits(ApiModel):
    """Per-tenant limits the runtime enforces (unset: no opinion)."""

    requests_per_minute: int | None = Field(default=None, ge=1, description="Requests per minute.")
    tokens_per_minute: int | None = Field(default=None, ge=1, description="Prompt + completion tokens per minute.")
    max_concurrent: int | None = Field(default=None, ge=1, description="Requests in flight at once.")


class TenantDefaults(TenantLimits):
    """Limits and scheduling for tenants the tenants file says nothing about."""

    priority: Priority | None = Field(
        default=None,
        description=(
            "high, normal, low or an integer from -1000 to 1000 (higher is served first when the runtime is "
            "saturated; high=100, normal=0, low=-100). Default: normal."
        ),
    )
    weight: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Fair-share weight among tenants of equal priority (twice the weight, twice the tokens). Default: 1.",
    )


class TenantOverride(TenantDefaults):
    """The platform's word for one tenant: its values replace the tenant's own and are not capped by the ceiling."""

    tenant: str = Field(description="Tenant name as in the tenants file.", pattern=TENANT_NAME_PATTERN)


class QuotaTenants(ApiModel):
    """Tenant policy pushed to the runtime of every selected service (reloaded live)."""

    defaults: TenantDefaults | None = Field(
        default=None, description="Used where the tenants file sets no value for a tenant."
    )
    ceiling: TenantLimits | None = Field(
        default=None, description="No tenant's limit may exceed these (a tenant without a limit gets the ceiling)."
    )
    model_tokens_per_minute: int | None = Field(
        default=None,
        ge=1,
        description="Tokens per minute of all tenants of one service together, across replicas (shared with the Redis backend).",
    )
    overrides: list[TenantOverride] = Field(
        default_factory=list,
        description="Per-tenant values set by the platform team.",
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["tenant"]},
    )


class InferenceQuotaSpec(ApiModel):
    """Desired state of an InferenceQuota: what it selects, its caps and the tenant policy it pushes."""

    selector: QuotaSelector = Field(default_factory=QuotaSelector, description="Which InferenceServices count.")
    limits: QuotaLimits = Field(default_factory=QuotaLimits, description="GPU and replica caps.")
    tenants: QuotaTenants | None = Field(default=None, description="Tenant ceilings, defaults and overrides for the runtimes.")


class QuotaUsage(ApiModel):
    """What the selected services may run together at their admitted worst case."""

    model_config = ApiModel.model_config | {"frozen": False}

    gpus: int = Field(default=0, description="GPUs counted against spec.limits.gpus.")
    replicas: int = Field(default=0, description="Replicas counted against spec.limits.replicas.")
    gpus_per_accelerator: dict[str, int] = Field(default_factory=dict, description="GPUs per accelerator profile.")


class QuotaServiceStatus(ApiModel):
    """One selected InferenceService and the quota's decision about it."""

    model_config = ApiModel.model_config | {"frozen": False}

    namespace: str = Field(description="Namespace of the InferenceService.")
    name: str = Field(description="Name of the InferenceService.")
    gpus: int = Field(description="GPUs counted for it (GPUs per replica x admitted replicas).")
    replicas: int = Field(description="Replicas counted for it.")
    admitted: bool = Field(description="False: it runs no replicas because it does not fit.")
    reason: str = Field(description="Admitted, MaxReplicasClamped, ScaleUpBlocked or QuotaExceeded.")


class InferenceQuotaStatus(ApiModel):
    """Observed state of an InferenceQuota, written by the operator only when it changes."""

    model_config = ApiModel.model_config | {"frozen": False}

    observed_generation: int | None = Field(default=None, description="metadata.generation the operator last acted on.")
    used: QuotaUsage = Field(default_factory=QuotaUsage, description="Resources counted against the limits.")
    service_count: int = Field(default=0, description="InferenceServices the quota selects, listed in services or not.")
    refused_count: int = Field(default=0, description="Selected InferenceServices refused (no replicas).")
    limited_count: int = Field(
        default=0,
        description="Selected InferenceServices that run below their spec: maxReplicas clamped or a scale-up blocked.",
    )
    omitted_count: int = Field(
        default=0,
        description=(
            f"Selected InferenceServices not listed in services (it holds at most {STATUS_SERVICES_MAX}); "
            "admitted ones are left out first."
        ),
    )
    services: list[QuotaServiceStatus] = Field(
        default_factory=list,
        max_length=STATUS_SERVICES_MAX,
        description=(
            f"At most {STATUS_SERVICES_MAX} selected InferenceServices and the decision about each: first those the "
            "quota holds back (refused, then clamped or blocked), then admitted ones, each group oldest first (the "
            "order quota is handed out in). serviceCount and omittedCount count the rest."
        ),
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready (the quota is enforced) and OverBudget (use exceeds a limit after it was lowered).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
