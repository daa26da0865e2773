"""The tenant-policy ConfigMap: the merged tenant section of every InferenceQuota selecting the service.

Mounted (optional) beside the tenants Secret; the runtime reloads it when the kubelet swaps it. The
Deployment carries its digest (``contract.ANNOTATION_TENANT_POLICY``): the operator watches no ConfigMap
but its settings, and reads from the watched Deployment what it last applied.
"""

from __future__ import annotations

import hashlib
from typing import Any

from inferkube.api import contract
from inferkube.api.tenantpolicy import TenantPolicy, render_policy
from inferkube.operator import kinds, names
from inferkube.operator.builders import common
from inferkube.operator.inputs import ServiceMeta


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
