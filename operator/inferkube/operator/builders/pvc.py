"""The model cache PersistentVolumeClaim."""

from __future__ import annotations

from typing import Any

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator import kinds, names
from inferkube.operator.builders import common
from inferkube.operator.inputs import Observed, ServiceMeta
from inferkube.operator.settings import OperatorSettings


def access_mode(spec: InferenceServiceSpec) -> str:
    """The claim's access mode: as asked, else ReadWriteMany when several replicas may share it."""
    if spec.cache.access_mode:
        return spec.cache.access_mode
    return "ReadWriteMany" if spec.max_possible_replicas > 1 else "ReadWriteOnce"


def build_pvc(
    spec: InferenceServiceSpec, meta: ServiceMeta, settings: OperatorSettings, observed: Observed
) -> dict[str, Any]:
    """The claim the download Job fills and the replicas mount read-only."""
    pvc_spec: dict[str, Any] = {
        "accessModes": [access_mode(spec)],
        "resources": {"requests": {"storage": str(spec.cache.size)}},
    }
    if spec.cache.storage_class_name:
        pvc_spec["storageClassName"] = spec.cache.storage_class_name
    metadata = common.object_meta(meta, names.cache_claim_name(spec, meta), names.COMPONENT_CACHE)
    metadata["annotations"] = {contract.ANNOTATION_PREFIX + "reclaim-policy": spec.cache.reclaim_policy}
    return {"apiVersion": kinds.PERSISTENT_VOLUME_CLAIM.api_version, "kind": kinds.PERSISTENT_VOLUME_CLAIM.kind,
            "metadata": metadata, "spec": pvc_spec}
