"""What the builders share: pod security, ports, volumes, environment, scheduling and the model's location.

Names and labels of children live in ``inferkube.operator.names`` (status and reconcile look them up too).
"""

from __future__ import annotations

from typing import Any

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator import kinds, names
from inferkube.operator.inputs import Observed, ServiceMeta, SpecError
from inferkube.operator.settings import AcceleratorProfile, OperatorSettings

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

# Volumes the runtime and download containers share by name (the root filesystem is read-only).
CACHE_VOLUME = "model-cache"   # the cache claim, a pvc:// source, or (no cache) an emptyDir
TMP_VOLUME = "tmp"             # writable scratch, also HOME
TMP_PATH = "/tmp"


def home_env() -> list[dict[str, Any]]:
    """HOME and the Hugging Face home in the writable scratch volume (the root filesystem is read-only)."""
    return [{"name": "HOME", "value": TMP_PATH}, {"name": "HF_HOME", "value": f"{TMP_PATH}/hf"}]


def promql_selector(meta: ServiceMeta) -> str:
    """The PromQL label matchers of one InferenceService's runtime series (as the ServiceMonitor labels them)."""
    return f'namespace="{meta.namespace}",{contract.METRIC_LABEL_ISVC}="{meta.name}"'


def autoscaling_bounds(spec: InferenceServiceSpec, observed: Observed) -> tuple[int, int]:
    """(min, max) replicas of the autoscaler: the spec's, clamped to what the quotas admit."""
    auto = spec.autoscaling
    assert auto is not None, "autoscaling_bounds needs spec.autoscaling"
    low, high = auto.min_replicas, auto.max_replicas
    if observed.quota is not None:
        high = min(high, max(1, observed.quota.replicas))
        low = min(low, high)
    return low, high


def fixed_replicas(spec: InferenceServiceSpec, observed: Observed) -> int | None:
    """The Deployment's ``spec.replicas`` as rendered: what the quotas admit (0 when refused), else the spec's;
    None when an autoscaler owns it (the field is then left out)."""
    if observed.quota is not None and (spec.autoscaling is None or observed.quota_refused):
        return observed.quota.replicas  # what the quotas admit (never below what runs)
    if spec.autoscaling is None:
        return 1 if spec.replicas is None else spec.replicas
    return None


def serving_replicas(spec: InferenceServiceSpec, observed: Observed) -> int:
    """Replicas the Deployment is set to run, at least 1: as rendered, or (autoscaled) what the live Deployment
    says now (an HPA or KEDA changes it; 1, Kubernetes' default, before there is one)."""
    fixed = fixed_replicas(spec, observed)
    if fixed is None:
        fixed = observed.deployment_replicas if observed.deployment_replicas is not None else 1
    return max(1, fixed)


def object_meta(meta: ServiceMeta, name: str, component: str, extra_labels: dict[str, str] | None = None) -> dict[str, Any]:
    """metadata of a child."""
    return {"name": name, "namespace": meta.namespace, "labels": {**(extra_labels or {}), **names.labels(meta, component)}}


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


def download_container(spec: InferenceServiceSpec, settings: OperatorSettings, key: str, name: str,
                       resources: dict[str, Any] | None = None,
                       termination_message_path: str | None = None) -> dict[str, Any]:
    """The ``inferkube-runtime download`` container (cache Job and the no-cache init container share it)."""
    img, policy = image(spec, settings)
    container: dict[str, Any] = {
        "name": name,
        "image": img,
        "imagePullPolicy": policy,
        "args": download_args(spec, key),
        "env": [*home_env(), *hf_token_env(spec)],
        "volumeMounts": [
            {"name": CACHE_VOLUME, "mountPath": contract.CACHE_MOUNT_PATH},
            {"name": TMP_VOLUME, "mountPath": TMP_PATH},
        ],
    }
    if resources is not None:
        container["resources"] = resources
    container["securityContext"] = dict(RESTRICTED_CONTAINER_SECURITY)
    if termination_message_path is not None:
        container["terminationMessagePath"] = termination_message_path
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


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


def scale_target(meta: ServiceMeta) -> dict[str, Any]:
    """The autoscaler's scaleTargetRef: the runtime Deployment."""
    return {"apiVersion": kinds.DEPLOYMENT.api_version, "kind": kinds.DEPLOYMENT.kind, "name": meta.name}
