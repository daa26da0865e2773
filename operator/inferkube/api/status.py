"""The InferenceService status: what the operator observed, in the shape users and Argo CD read."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inferkube.api.spec import ApiModel

ConditionStatus = Literal["True", "False", "Unknown"]
Phase = Literal["Pending", "CachingModel", "Scheduling", "LoadingModel", "RollingOut", "Ready", "Degraded", "Failed"]
CachePhase = Literal["Pending", "Downloading", "Ready", "Failed", "NotUsed"]


class Condition(ApiModel):
    """One observation about the InferenceService, in the Kubernetes condition convention."""

    model_config = ApiModel.model_config | {"frozen": False}

    type: str = Field(description="Condition type: Ready, ModelCached, Available, Progressing, Degraded, MonitoringReady, "
                      "AutoscalerReady.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="One CamelCase word for machines (e.g. ReplicaFailure, Downloading).")
    message: str = Field(default="", description="What happened, for humans.")
    last_transition_time: str | None = Field(
        default=None, description="When status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(default=None, description="metadata.generation this condition describes.")


class CacheStatus(ApiModel):
    """Progress of the model cache."""

    model_config = ApiModel.model_config | {"frozen": False}

    phase: CachePhase = Field(
        description="Pending, Downloading, Ready, Failed, or NotUsed (cache off or pvc:// source)."
    )
    claim_name: str | None = Field(default=None, description="The PersistentVolumeClaim holding the cache.")
    retained: bool | None = Field(default=None, description="True when the claim survives deletion (reclaimPolicy Retain).")
    key: str | None = Field(default=None, description="Directory in the claim holding the wanted source and revision.")
    serving_key: str | None = Field(default=None, description="Directory replicas serve from now.")
    revision: str | None = Field(default=None, description="Revision actually cached (as reported by the downloader).")
    bytes_done: int | None = Field(default=None, description="Bytes downloaded so far.")
    bytes_total: int | None = Field(default=None, description="Bytes to download, when known.")
    files_done: int | None = Field(default=None, description="Files downloaded so far.")
    files_total: int | None = Field(default=None, description="Files to download, when known.")
    started_at: str | None = Field(default=None, description="When the download Job started (RFC 3339).")
    finished_at: str | None = Field(default=None, description="When the download Job finished (RFC 3339).")
    message: str | None = Field(default=None, description="Why the cache is not ready, when it is not.")


class InferenceServiceStatus(ApiModel):
    """Observed state of an InferenceService, computed from its children's real state."""

    model_config = ApiModel.model_config | {"frozen": False}

    observed_generation: int | None = Field(default=None, description="metadata.generation the operator last acted on.")
    phase: Phase | None = Field(
        default=None,
        description="Stage for printer columns: Pending, CachingModel, Scheduling, LoadingModel, RollingOut (serving "
        "while a rollout completes), Ready, Degraded, Failed.",
    )
    phase_detail: str | None = Field(default=None, description="A few words beside the phase (e.g. download percentage).")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Latest observations, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    replicas: int | None = Field(default=None, description="Replicas that exist (scale subresource statusReplicasPath).")
    ready_replicas: int | None = Field(default=None, description="Replicas that pass readiness.")
    replicas_summary: str | None = Field(
        default=None, description="Ready/desired replicas, e.g. 1/2 (the Replicas printer column)."
    )
    selector: str | None = Field(default=None, description="Label selector of the replicas (scale subresource).")
    url: str | None = Field(default=None, description="In-cluster base URL of the OpenAI-compatible API.")
    served_model_name: str | None = Field(default=None, description="The model name clients pass.")
    cache: CacheStatus | None = Field(default=None, description="Model cache progress.")
