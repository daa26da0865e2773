"""What an InferenceService's children are called and labelled: written by the builders, looked up by
status, the watched view and the reconcile (so none of those imports the builders to find a child)."""

from __future__ import annotations

import hashlib

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator.inputs import ServiceMeta
from inferkube.operator.settings import OperatorSettings

COMPONENT_RUNTIME = "runtime"
COMPONENT_CACHE = "model-cache"
COMPONENT_POLICY = "tenant-policy"


def uses_cache(spec: InferenceServiceSpec) -> bool:
    """True when the model is downloaded once into a cache claim (not for pvc:// sources)."""
    return spec.cache.enabled and spec.source_scheme != "pvc"


def cache_key(spec: InferenceServiceSpec) -> str:
    """Directory in the cache claim for this source, revision and file selection (stable, 12 hex)."""
    model = spec.model
    identity = "|".join(
        [model.source, model.revision or "", model.sha256 or "", ",".join(model.allow_patterns),
         ",".join(model.ignore_patterns)]
    )
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def cache_claim_name(spec: InferenceServiceSpec, meta: ServiceMeta) -> str:
    """Name of the model cache PersistentVolumeClaim."""
    return spec.cache.name or f"{meta.name}-model-cache"


def download_job_name(meta: ServiceMeta, key: str) -> str:
    """Name of the Job that downloads one source and revision into the cache."""
    return f"{meta.name}-dl-{key[:8]}"


def tenant_policy_name(meta: ServiceMeta) -> str:
    """Name of the tenant-policy ConfigMap of an InferenceService (mounted whether or not it exists)."""
    return f"{meta.name}-tenant-policy"


def served_model_name(spec: InferenceServiceSpec, meta: ServiceMeta) -> str:
    """The model name clients pass."""
    return spec.model.served_name or meta.name


def service_url(meta: ServiceMeta, settings: OperatorSettings) -> str:
    """In-cluster base URL of the OpenAI-compatible API."""
    return f"http://{meta.name}.{meta.namespace}.svc.{settings.cluster_domain}/v1"


def labels(meta: ServiceMeta, component: str) -> dict[str, str]:
    """Standard labels of a child (never the InferenceService's own labels)."""
    return {
        contract.LABEL_NAME: contract.APP_NAME,
        contract.LABEL_COMPONENT: component,
        contract.LABEL_PART_OF: contract.APP_NAME,
        contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
        contract.LABEL_ISVC: meta.name,
    }


def selector_labels(meta: ServiceMeta) -> dict[str, str]:
    """Labels that select the runtime pods of one InferenceService (immutable once created)."""
    return {
        contract.LABEL_NAME: contract.APP_NAME,
        contract.LABEL_COMPONENT: COMPONENT_RUNTIME,
        contract.LABEL_ISVC: meta.name,
    }


def selector_string(meta: ServiceMeta) -> str:
    """The runtime pods' selector as a string, for status.selector and the scale subresource."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(meta).items()))
