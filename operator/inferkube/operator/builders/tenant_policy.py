"""The tenant-policy ConfigMap: the merged tenant section of every InferenceQuota selecting the service.

Mounted (optional) beside the tenants Secret; the runtime reloads it when the kubelet swaps it. The
Deployment carries its digest (``contract.ANNOTATION_TENANT_POLICY``): the operator watches no ConfigMap
but its settings, and reads from the watched Deployment what it last applied.

With a model budget and the memory rate-limit backend the policy also names the replica count, so each
replica enforces its share; an autoscaler's scale event then changes the policy (one ConfigMap and one
Deployment-annotation write per event). Otherwise the replica count is left out and scaling writes nothing.
"""

from __future__ import annotations

import hashlib
from typing import Any

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.api.tenantpolicy import TenantPolicy, render_policy
from inferkube.operator import kinds, names
from inferkube.operator.builders import common
from inferkube.operator.inputs import Observed, ServiceMeta


def service_policy(spec: InferenceServiceSpec, observed: Observed) -> TenantPolicy | None:
    """The policy this service's runtimes get (None: no quota pushes one): the quotas' merged policy and, when
    its model budget is split between replicas that do not share a limiter (memory backend), their count."""
    policy = observed.quota.policy if observed.quota is not None else None
    if policy is None or policy.model_tokens_per_minute is None or spec.api.rate_limit_backend != "memory":
        return policy
    return policy.model_copy(update={"replicas": common.serving_replicas(spec, observed)})


def policy_text(meta: ServiceMeta, policy: TenantPolicy) -> str:
    """policy.yaml of a service: the merged policy, naming the service (its model budget key)."""
    return render_policy(policy.model_copy(update={"service": f"{meta.namespace}/{meta.name}"}))


def policy_digest(meta: ServiceMeta, policy: TenantPolicy) -> str:
    """A short digest of policy.yaml (what the Deployment's tenant-policy annotation records)."""
    return hashlib.sha256(policy_text(meta, policy).encode()).hexdigest()[:16]


def build_tenant_policy(meta: ServiceMeta, policy: TenantPolicy) -> dict[str, Any]:
    """The ConfigMap carrying policy.yaml."""
    metadata = common.object_meta(meta, names.tenant_policy_name(meta), names.COMPONENT_POLICY)
    metadata["annotations"] = {contract.ANNOTATION_TENANT_POLICY: policy_digest(meta, policy)}
    return {
        "apiVersion": kinds.CONFIG_MAP.api_version,
        "kind": kinds.CONFIG_MAP.kind,
        "metadata": metadata,
        "data": {contract.POLICY_FILE_KEY: policy_text(meta, policy)},
    }
