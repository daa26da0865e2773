"""The Job that downloads the model once into the cache claim."""

from __future__ import annotations

from typing import Any

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator import kinds, names
from inferkube.operator.builders import common
from inferkube.operator.builders.pvc import access_mode
from inferkube.operator.inputs import Observed, ServiceMeta
from inferkube.operator.settings import OperatorSettings


def build_cache_job(
    spec: InferenceServiceSpec, meta: ServiceMeta, settings: OperatorSettings, observed: Observed
) -> dict[str, Any]:
    """Download source@revision into CACHE/<key>; the Job name carries the key, so a new revision is a new Job."""
    key = names.cache_key(spec)
    resources = {
        "requests": {"cpu": settings.download_job_cpu, "memory": settings.download_job_memory},
        "limits": {"memory": settings.download_job_memory},
    }
    # The Job's pod reports its result through the termination message (the operator reads it).
    container = common.download_container(spec, settings, key, "download", resources, "/dev/termination-log")
    labels = {**names.labels(meta, names.COMPONENT_CACHE), contract.ANNOTATION_CACHE_KEY: key}
    # Run where the replicas run: the claim binds in their zone (WaitForFirstConsumer), and a
    # ReadWriteOnce claim already attached to a serving replica can only be mounted on that node.
    placement = {k: v for k, v in common.pod_scheduling(spec, settings).items()
                 if k in ("nodeSelector", "tolerations", "affinity")}
    if access_mode(spec) == "ReadWriteOnce" and observed.serving_cache_key is not None:
        placement["affinity"] = {**placement.get("affinity", {}), "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": names.selector_labels(meta)},
                "topologyKey": "kubernetes.io/hostname",
            }]}}
    return {
        "apiVersion": kinds.JOB.api_version,
        "kind": kinds.JOB.kind,
        "metadata": {
            "name": names.download_job_name(meta, key),
            "namespace": meta.namespace,
            "labels": labels,
            "annotations": {
                contract.ANNOTATION_CACHE_KEY: key,
                contract.ANNOTATION_MODEL_REVISION: spec.model.revision or "",
            },
        },
        "spec": {
            "backoffLimit": spec.cache.download_retries,
            "activeDeadlineSeconds": spec.cache.download_timeout_seconds,
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": dict(common.RESTRICTED_POD_SECURITY),
                    "containers": [container],
                    **placement,
                    "volumes": [
                        {"name": common.CACHE_VOLUME,
                         "persistentVolumeClaim": {"claimName": names.cache_claim_name(spec, meta)}},
                        {"name": common.TMP_VOLUME, "emptyDir": {}},
                    ],
                },
            },
        },
    }
