"""The operator's own settings: images, accelerator profiles, cluster facts.

One pydantic-settings object, read from ``INFERKUBE_OPERATOR_*`` environment variables and an optional
YAML file (the ConfigMap mounted by ``manifests/operator``); built at start-up, never at import, and
rebuilt from the ConfigMap itself whenever it changes (``settings_from_configmap``; the operator watches it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic_settings import BaseSettings, SettingsConfigDict


class AcceleratorProfile(BaseModel):
    """What a named accelerator means on this cluster: the resource to request and where it lives."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    resource_name: str = Field(description="Extended resource of one device, e.g. nvidia.com/gpu.")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels of nodes that have it.")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="Taints those nodes carry.")
    runtime_class_name: str | None = Field(default=None, description="RuntimeClass that exposes the device.")
    shm_size: str = Field(default="8Gi", description="Default /dev/shm size on this accelerator.")


def _gpu_toleration(resource_name: str) -> dict[str, Any]:
    """The toleration GPU node pools conventionally carry for a device resource."""
    return {"key": resource_name, "operator": "Exists", "effect": "NoSchedule"}


def default_accelerator_profiles() -> dict[str, AcceleratorProfile]:
    """Profiles for common GPUs, keyed by the labels NVIDIA GPU feature discovery and AMD's labeller set."""
    nvidia = "nvidia.com/gpu"
    amd = "amd.com/gpu"

    def nv(product: str) -> AcceleratorProfile:
        return AcceleratorProfile(
            resource_name=nvidia,
            node_selector={"nvidia.com/gpu.product": product},
            tolerations=[_gpu_toleration(nvidia)],
            runtime_class_name="nvidia",
        )

    return {
        "nvidia-h100-80gb": nv("NVIDIA-H100-80GB-HBM3"),
        "nvidia-a100-80gb": nv("NVIDIA-A100-SXM4-80GB"),
        "nvidia-l40s": nv("NVIDIA-L40S"),
        "nvidia-l4": nv("NVIDIA-L4"),
        "amd-mi300x": AcceleratorProfile(
            resource_name=amd,
            node_selector={"amd.com/gpu.product-name": "AMD_Instinct_MI300X_OAM"},
            tolerations=[_gpu_toleration(amd)],
        ),
    }


class OperatorSettings(BaseSettings):
    """Settings of the inferkube operator."""

    model_config = SettingsConfigDict(env_prefix="INFERKUBE_OPERATOR_", extra="forbid", frozen=True)

    runtime_image: str = Field(
        default="ghcr.io/inferkube/runtime:0.1.0", description="Runtime image when a spec names none."
    )
    image_pull_policy: str = Field(default="IfNotPresent", description="Pull policy when a spec names none.")
    cluster_domain: str = Field(default="cluster.local", description="DNS domain used in status.url.")
    accelerator_profiles: dict[str, AcceleratorProfile] = Field(
        default_factory=default_accelerator_profiles, description="Accelerator profiles by name."
    )
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        description="Prometheus that KEDA ScaledObjects query.",
    )
    pre_stop_sleep_seconds: int = Field(
        default=5, ge=0, description="Pause before SIGTERM so endpoints stop routing to a terminating pod."
    )
    resync_interval_seconds: float = Field(
        default=60.0, gt=0,
        description="Full level-based resync period; drift is repaired from watch events long before this.",
    )
    startup_settle_seconds: float = Field(
        default=1.0, ge=0, description="Pause after start-up before the first reconciles, while watches list children."
    )
    progress_interval_seconds: float = Field(
        default=10.0, gt=0, description="How often download progress is read into status while a Job runs."
    )
    download_job_cpu: str = Field(default="1", description="CPU request of cache download Jobs.")
    download_job_memory: str = Field(default="2Gi", description="Memory request and limit of cache download Jobs.")


class SettingsError(ValueError):
    """The operator's settings file cannot be used."""


SETTINGS_KEY = "settings.yaml"  # the ConfigMap's data key; mounted as /etc/inferkube/settings.yaml
CONFIGMAP_ENV = "INFERKUBE_OPERATOR_SETTINGS_CONFIGMAP"  # the ConfigMap's name
NAMESPACE_ENV = "POD_NAMESPACE"  # the operator's namespace (downward API), where the ConfigMap lives
DEFAULT_CONFIGMAP = "inferkube-operator-settings"


def settings_configmap() -> tuple[str | None, str]:
    """(namespace, name) of the settings ConfigMap the operator watches (namespace None: any)."""
    return os.environ.get(NAMESPACE_ENV) or None, os.environ.get(CONFIGMAP_ENV) or DEFAULT_CONFIGMAP


def settings_from_text(text: str, origin: str) -> OperatorSettings:
    """Build the settings from environment variables, overlaid by a settings YAML text (origin names it)."""
    try:
        loaded = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise SettingsError(f"cannot read operator settings {origin}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise SettingsError(f"operator settings {origin} must be a YAML mapping")
    try:
        return OperatorSettings(**{_snake(key): value for key, value in loaded.items()})
    except ValidationError as exc:
        # the top-level field as the file spells it (camelCase); below it, profile names and their aliases as given
        problems = "; ".join(_where(e["loc"]) + f": {e['msg']}" for e in exc.errors())
        raise SettingsError(f"invalid operator settings {origin}: {problems}") from exc


def load_settings(path: Path | None = None) -> OperatorSettings:
    """Build the settings from environment variables, overlaid by a YAML file when given."""
    if path is None:
        return settings_from_text("", "(environment)")
    try:
        text = path.read_text()
    except OSError as exc:
        raise SettingsError(f"cannot read operator settings {path}: {exc}") from exc
    return settings_from_text(text, str(path))


def settings_from_configmap(body: dict[str, Any]) -> OperatorSettings:
    """The settings a ConfigMap holds under SETTINGS_KEY (environment variables underneath, as at start-up)."""
    meta = body.get("metadata") or {}
    origin = f"ConfigMap {meta.get('namespace')}/{meta.get('name')}"
    text = (body.get("data") or {}).get(SETTINGS_KEY)
    if text is None:
        raise SettingsError(f"{origin} has no key {SETTINGS_KEY}")
    return settings_from_text(text, origin)


def _where(loc: tuple[int | str, ...]) -> str:
    """A settings error's location as the file spells it: the top-level key in camelCase, then the keys below."""
    if not loc:
        return "settings"
    return ".".join([to_camel(str(loc[0])), *map(str, loc[1:])])


def _snake(name: str) -> str:
    """camelCase -> snake_case for settings file keys."""
    return "".join("_" + c.lower() if c.isupper() else c for c in name)
