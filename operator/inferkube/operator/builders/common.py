"""What every builder shares: the render inputs, child names, labels and the model's location."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator.settings import AcceleratorProfile, OperatorSettings

COMPONENT_RUNTIME = "runtime"
COMPONENT_CACHE = "model-cache"
PORT_NAME = contract.RUNTIME_PORT_NAME
SERVICE_PORT = 80
RESTRICTED_CONTAINER_SECURITY: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "readOnlyRootFilesystem": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
NONROOT_UID = 65532
RESTRICTED_POD_SECURITY: dict[str, Any] = {
    "runAsNonRoot": True,
    "runAsUser": NONROOT_UID,
    "runAsGroup": NONROOT_UID,
    "fsGroup": NONROOT_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}


class SpecError(ValueError):
    """A spec that passed admission but cannot work on this cluster (e.g. unknown accelerator profile)."""


@dataclass(frozen=True)
class ServiceMeta:
    """The parts of the InferenceService's metadata builders may use (never its labels)."""

    name: str
    namespace: str


@dataclass(frozen=True)
class Observed:
    """Facts about the cluster the desired state depends on, read by the handler before rendering.

    ``serving_cache_key`` is the cache directory replicas may serve from (a finished download); None
    while nothing is cached yet, which holds the Deployment back so N pods never fetch N copies.
    """

    serving_cache_key: str | None = None
    monitoring_api: bool = True
    keda_api: bool = True
    alerting_api: bool = True


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


def uses_cache(spec: InferenceServiceSpec) -> bool:
    """True when the model is downloaded once into a cache claim (not for pvc:// sources)."""
    return spec.cache.enabled and spec.source_scheme != "pvc"


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


def object_meta(meta: ServiceMeta, name: str, component: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """metadata of a child."""
    return {"name": name, "namespace": meta.namespace, "labels": {**(extra_labels or {}), **labels(meta, component)}}


def accelerator_profile(spec: InferenceServiceSpec, settings: OperatorSettings) -> AcceleratorProfile | None:
    """The accelerator profile a spec names, or None for CPU; SpecError when the name is unknown."""
    name = spec.resources.accelerator
    if name is None:
        return None
    try:
        return settings.accelerator_profiles[name]
    except KeyError:
        known = ", ".join(sorted(settings.accelerator_profiles)) or "none"
        raise SpecError(f"unknown accelerator profile {name!r} (this operator knows: {known})") from None


def model_path(spec: InferenceServiceSpec, key: str) -> str:
    """Path of the model inside the runtime container."""
    if spec.source_scheme == "pvc":
        sub = spec.model.source.removeprefix("pvc://").partition("/")[2].strip("/")
        return f"{contract.CACHE_MOUNT_PATH}/{sub}" if sub else contract.CACHE_MOUNT_PATH
    return f"{contract.CACHE_MOUNT_PATH}/{key}"


def pvc_source_claim(spec: InferenceServiceSpec) -> str:
    """Claim name of a pvc:// source."""
    return spec.model.source.removeprefix("pvc://").partition("/")[0]


def download_args(spec: InferenceServiceSpec, key: str) -> list[str]:
    """Arguments of ``inferkube-runtime download`` for this spec into its cache directory."""
    args = ["download", "--source", spec.model.source, "--dest", f"{contract.CACHE_MOUNT_PATH}/{key}"]
    if spec.model.revision:
        args += ["--revision", spec.model.revision]
    if spec.model.sha256:
        args += ["--sha256", spec.model.sha256]
    for pattern in spec.model.allow_patterns:
        args += ["--allow-pattern", pattern]
    for pattern in spec.model.ignore_patterns:
        args += ["--ignore-pattern", pattern]
    return args


def hf_token_env(spec: InferenceServiceSpec) -> list[dict[str, Any]]:
    """HF_TOKEN from the spec's Secret, when it names one."""
    ref = spec.runtime.hf_token_secret
    if ref is None:
        return []
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}]


def image(spec: InferenceServiceSpec, settings: OperatorSettings) -> tuple[str, str]:
    """(image, pull policy) of runtime and download containers."""
    return (spec.runtime.image or settings.runtime_image, spec.runtime.image_pull_policy or settings.image_pull_policy)


def pod_scheduling(spec: InferenceServiceSpec, settings: OperatorSettings) -> dict[str, Any]:
    """nodeSelector, tolerations, runtimeClass, affinity, priority: the profile's, then the user's."""
    profile = accelerator_profile(spec, settings)
    sched = spec.scheduling
    out: dict[str, Any] = {}
    node_selector = {**(profile.node_selector if profile else {}), **sched.node_selector}
    tolerations = [*(profile.tolerations if profile else []), *sched.tolerations]
    runtime_class = sched.runtime_class_name or (profile.runtime_class_name if profile else None)
    if node_selector:
        out["nodeSelector"] = node_selector
    if tolerations:
        out["tolerations"] = [dict(t) for t in tolerations]
    if runtime_class:
        out["runtimeClassName"] = runtime_class
    if sched.affinity:
        out["affinity"] = dict(sched.affinity)
    if sched.priority_class_name:
        out["priorityClassName"] = sched.priority_class_name
    return out
