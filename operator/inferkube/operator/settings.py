"""The operator's own settings: images, accelerator profiles, cluster facts.

One pydantic-settings object, read from ``INFERKUBE_OPERATOR_*`` environment variables and an optional
YAML file (the ConfigMap mounted by ``manifests/operator``); built at start-up, never at import.
"""

from __future__ import annotations

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


def load_settings(path: Path | None = None) -> OperatorSettings:
    """Build the settings from environment variables, overlaid by a YAML file when given."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise SettingsError(f"cannot read operator settings {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise SettingsError(f"operator settings {path} must be a YAML mapping")
        data = {_snake(key): value for key, value in loaded.items()}
    try:
        return OperatorSettings(**data)
    except ValidationError as exc:
        raise SettingsError(f"invalid operator settings: {exc}") from exc


def _snake(name: str) -> str:
    """camelCase -> snake_case for settings file keys."""
    return "".join("_" + c.lower() if c.isupper() else c for c in name)
