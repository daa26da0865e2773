"""The InferenceService API (serving.inferkube.dev/v1alpha1), defined once as pydantic models.

The CRD in ``crds/`` is generated from these models (descriptions become ``kubectl explain``), and the
operator and the CLI parse ``spec`` with the same models. CEL rules (``x-kubernetes-validations``) sit
next to the fields they guard, in ``json_schema_extra``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator
from pydantic.alias_generators import to_camel

IntOrString = Annotated[int | str, Field(json_schema_extra={"x-kubernetes-int-or-string": True})]
Quantity = Annotated[
    int | str,
    Field(
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        }
    ),
]
# Kubernetes objects we pass through untouched (tolerations, affinity, env entries): the API server
# validates them again when the operator writes the Deployment.
KubeObject = Annotated[
    dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
]

SEMANTIC_MODEL_PATTERN = r"^(hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*|https?://[^\s]+|builtin:tiny-embed)$"
MODEL_SOURCE_PATTERN = r"^(hf://[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*|pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?(/[^/].*)?|https?://[^\s]+)$"


class ApiModel(BaseModel):
    """Base for API models: camelCase on the wire, unknown fields rejected, same shape as the CRD."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class SecretKeyRef(ApiModel):
    """A key in a Secret in the InferenceService's namespace."""

    name: str = Field(description="Name of the Secret.", min_length=1, max_length=253)
    key: str = Field(default="token", description="Key inside the Secret. Default: token.")


class ModelSpec(ApiModel):
    """Which model to serve and where its weights come from."""

    source: str = Field(
        description=(
            "Where the weights come from: hf://ORG/NAME (Hugging Face Hub), pvc://CLAIM/PATH (a "
            "PersistentVolumeClaim in this namespace that already holds the model; nothing is "
            "downloaded) or https://HOST/PATH (a tar, tar.gz or zip archive)."
        ),
        pattern=MODEL_SOURCE_PATTERN,
        max_length=2048,
    )
    revision: str | None = Field(
        default=None,
        description=(
            "Hub revision to serve (branch, tag or commit). Pin a commit in production so every "
            "replica and every re-download serves the same weights. Default: main."
        ),
        max_length=255,
    )
    served_name: str | None = Field(
        default=None,
        description=(
            "Model name clients pass in the OpenAI 'model' field and see in /v1/models. "
            "Default: the InferenceService's name."
        ),
        max_length=255,
    )
    sha256: str | None = Field(
        default=None,
        description="Expected SHA-256 of an https:// archive; the download fails when it differs.",
        pattern=r"^[a-f0-9]{64}$",
    )
    allow_patterns: list[str] = Field(
        default_factory=list,
        description="Glob patterns of Hub files to download (e.g. '*.safetensors'). Empty: all files.",
        max_length=64,
    )
    ignore_patterns: list[str] = Field(
        default_factory=list,
        description="Glob patterns of Hub files to skip (e.g. '*.pth', 'original/*').",
        max_length=64,
    )


class RuntimeSpec(ApiModel):
    """The runtime container: image, vLLM engine settings and environment."""

    image: str | None = Field(
        default=None,
        description="Runtime image. Default: the operator's configured runtime image.",
        max_length=1024,
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Image pull policy of the runtime and download containers."
    )
    tensor_parallel_size: int = Field(
        default=1,
        ge=1,
        le=64,
        description="vLLM tensor-parallel size: GPUs one model replica is split across. Default: 1.",
    )
    dtype: Literal["auto", "half", "float16", "bfloat16", "float", "float32"] | None = Field(
        default=None, description="Weight and activation dtype passed to vLLM. Default: auto."
    )
    max_model_len: int | None = Field(
        default=None, ge=16, description="Context length (prompt + output tokens). Default: the model's."
    )
    gpu_memory_utilization: float | None = Field(
        default=None, ge=0.05, le=1, description="Fraction of GPU memory vLLM may use. Default: 0.9."
    )
    enable_prefix_caching: bool | None = Field(
        default=None, description="Reuse the KV cache of shared prompt prefixes."
    )
    max_num_seqs: int | None = Field(
        default=None, ge=1, description=(
            "Maximum sequences the engine schedules at once. Default: vLLM's, raised to at least "
            "api.maxInFlight plus 1/8 (the runtime runs with priority scheduling) so a high-priority request "
            "always finds a batch slot.")
    )
    engine_args: list[str] = Field(
        default_factory=list,
        description=(
            "Extra vLLM engine arguments, passed verbatim after '--' "
            "(e.g. ['--kv-cache-dtype', 'fp8', '--enforce-eager'])."
        ),
        max_length=128,
    )
    env: list[KubeObject] = Field(
        default_factory=list,
        description="Extra environment variables (core/v1 EnvVar) for the runtime container.",
    )

    env_from: list[KubeObject] = Field(
        default_factory=list,
        description="Extra environment sources (core/v1 EnvFromSource) for the runtime container.",
    )
    hf_token_secret: SecretKeyRef | None = Field(
        default=None,
        description="Secret holding a Hugging Face token for gated or private models (key default: token).",
    )
    drain_timeout_seconds: int = Field(
        default=120,
        ge=0,
        le=3600,
        description=(
            "On shutdown the runtime stops admitting requests and lets in-flight ones finish for up "
            "to this long. terminationGracePeriodSeconds is derived from it. Default: 120."
        ),
    )

    @field_validator("engine_args")
    @classmethod
    def _engine_stats_stay_on(cls, value: list[str]) -> list[str]:
        # The runtime would refuse to start (exit 2): say it here instead (vLLM also reads '_' for '-').
        if any(a.split("=", 1)[0].replace("_", "-") == "--disable-log-stats" for a in value):
            raise ValueError("'--disable-log-stats' is not allowed: the runtime counts each request's tokens "
                             "from vLLM's request statistics")
        return value


class ResourcesSpec(ApiModel):
    """Compute per replica."""

    accelerator: str | None = Field(
        default=None,
        description=(
            "Accelerator profile name from the operator's settings (e.g. nvidia-h100-80gb). It sets "
            "nodeSelector, tolerations, runtimeClassName and the extended resource name "
            "(nvidia.com/gpu, amd.com/gpu). Unset: CPU only."
        ),
        max_length=63,
    )
    gpus: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Accelerators per replica. Must be a multiple of runtime.tensorParallelSize.",
    )
    cpu: Quantity | None = Field(default=None, description="CPU request per replica (e.g. '8').")
    memory: Quantity | None = Field(
        default=None, description="Memory request and limit per replica (e.g. '64Gi')."
    )
    shm_size: Quantity | None = Field(
        default=None,
        description="Size of the in-memory /dev/shm volume (tensor-parallel workers use it). Default: 8Gi with GPUs, 1Gi without.",
    )


class SchedulingSpec(ApiModel):
    """Where replicas may run, on top of the accelerator profile."""

    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Extra node labels replicas require (merged over the profile's)."
    )
    tolerations: list[KubeObject] = Field(
        default_factory=list, description="Extra tolerations (core/v1 Toleration), added to the profile's."
    )
    affinity: KubeObject | None = Field(default=None, description="Pod affinity (core/v1 Affinity).")
    priority_class_name: str | None = Field(default=None, description="PriorityClass of the replicas.")
    runtime_class_name: str | None = Field(
        default=None, description="RuntimeClass of the replicas. Default: the accelerator profile's."
    )


class ScalingBehavior(ApiModel):
    """How fast the autoscaler may move in one direction."""

    stabilization_window_seconds: int | None = Field(
        default=None, ge=0, le=3600, description="Window over which the autoscaler takes the most cautious recommendation."
    )
    pods_per_period: int | None = Field(
        default=None, ge=1, description="At most this many pods added or removed per period."
    )
    period_seconds: int = Field(default=60, ge=1, le=1800, description="Length of a period. Default: 60.")


class AutoscalingSpec(ApiModel):
    """Scale replicas on the runtime's own metrics (queue depth, KV-cache use, requests in flight) or GPU use."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": "!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",
                    "message": "autoscaling.minReplicas must be <= autoscaling.maxReplicas",
                    "fieldPath": ".minReplicas",
                },
                {
                    "rule": (
                        "has(self.targetQueueDepth) || has(self.targetKvCacheUsage) || "
                        "has(self.targetRequestsInFlight) || has(self.targetGpuUtilization)"
                    ),
                    "message": (
                        "autoscaling needs at least one target: targetQueueDepth, targetKvCacheUsage, "
                        "targetRequestsInFlight or targetGpuUtilization"
                    ),
                },
            ]
        }
    )

    engine: Literal["hpa", "keda"] = Field(
        default="hpa",
        description=(
            "hpa: an autoscaling/v2 HorizontalPodAutoscaler on Pods metrics (needs a custom metrics adapter: "
            "manifests/monitoring ships the prometheus-adapter rules). keda: a KEDA ScaledObject querying "
            "Prometheus directly. Default: hpa."
        ),
    )
    min_replicas: int = Field(
        default=1,
        ge=1,
        le=1000,
        description=(
            "Fewest replicas. Default: 1. 0 (scale to zero) is not allowed: nothing holds requests while "
            "a replica loads its model, so the first requests after idling would fail."
        ),
    )
    max_replicas: int = Field(ge=1, le=1000, description="Most replicas.")
    target_queue_depth: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Target requests waiting per replica (metric inferkube_queue_depth). The best first signal for "
            "LLMs: a queue means requests already wait for a batch slot, so latency grows with it."
        ),
    )
    target_kv_cache_usage: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description=(
            "Target KV-cache use per replica in percent (metric inferkube_kv_cache_usage_ratio). Use with "
            "long prompts or outputs: a full KV cache makes vLLM preempt and recompute sequences."
        ),
    )
    target_requests_in_flight: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Target requests running per replica (metric inferkube_requests_in_flight). Use when the "
            "batch size one replica serves well is known (e.g. from a load test); it reacts before a queue forms."
        ),
    )
    target_gpu_utilization: int | None = Field(
        default=None,
        ge=1,
        le=100,
        description=(
            "Target GPU utilization per replica in percent (DCGM_FI_DEV_GPU_UTIL from NVIDIA's DCGM "
            "exporter, averaged over the pod's GPUs; needs the exporter scraped with its pod/namespace "
            "labels). A weak signal for LLMs: a decoding GPU reads near 100% with one request or with "
            "a full batch; prefer queue depth or KV-cache use and use this only as a ceiling."
        ),
    )
    scale_up: ScalingBehavior | None = Field(default=None, description="Scale-up behaviour.")
    scale_down: ScalingBehavior | None = Field(
        default=None, description="Scale-down behaviour. Default: 300 s stabilization, one pod per minute."
    )


class CacheSpec(ApiModel):
    """A PersistentVolumeClaim filled once by a download Job; replicas load from disk."""

    enabled: bool = Field(
        default=True,
        description=(
            "Download the model once into a PVC before replicas start. false: every pod downloads "
            "into an emptyDir at start (slow path). Ignored for pvc:// sources. Default: true."
        ),
    )
    name: str | None = Field(
        default=None,
        description="Name of the claim. A new InferenceService naming a retained claim reuses it. Default: NAME-model-cache.",
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
    )
    storage_class_name: str | None = Field(default=None, description="StorageClass of the claim. Default: the cluster default.")
    size: Quantity = Field(default="100Gi", description="Size of the claim. Default: 100Gi.")
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod"] | None = Field(
        default=None,
        description="Access mode of the claim. Default: ReadWriteMany when more than one replica may run, else ReadWriteOnce.",
    )
    reclaim_policy: Literal["Retain", "Delete"] = Field(
        default="Delete",
        description=(
            "Delete: the claim is owned by the InferenceService and garbage-collected with it. "
            "Retain: the claim has no owner and survives deletion. Default: Delete."
        ),
    )
    download_retries: int = Field(default=3, ge=0, le=20, description="Retries of the download Job (backoffLimit). Default: 3.")
    download_timeout_seconds: int = Field(
        default=21600, ge=60, description="Deadline of one download Job (activeDeadlineSeconds). Default: 21600 (6 h)."
    )


class MonitoringSpec(ApiModel):
    """Prometheus Operator integration."""

    service_monitor: bool = Field(
        default=True,
        description="Create a ServiceMonitor when the monitoring.coreos.com API is served. Default: true.",
    )
    alert_rules: bool = Field(
        default=True,
        description=(
            "Create a PrometheusRule with alerts (replica down, error rate, queue backing up, KV cache "
            "saturated, rate-limit backend errors) when the monitoring.coreos.com API is served. Default: true."
        ),
    )
    interval: str = Field(default="30s", pattern=r"^([0-9]+(ms|s|m|h))+$", description="Scrape interval. Default: 30s.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Extra labels on the ServiceMonitor (e.g. release: prometheus)."
    )


class ApiSpec(ApiModel):
    """API keys and per-key limits enforced by the runtime."""

    keys_secret: str | None = Field(
        default=None,
        description=(
            "Secret whose 'tenants.yaml' key lists tenants: name, key or keySha256, requestsPerMinute, "
            "tokensPerMinute, maxConcurrent. Set: every API route needs 'Authorization: Bearer KEY'."
        ),
        max_length=253,
    )
    default_requests_per_minute: int | None = Field(
        default=None, ge=1, description="Requests per minute for tenants that set none."
    )
    default_tokens_per_minute: int | None = Field(
        default=None, ge=1, description="Prompt + completion tokens per minute for tenants that set none."
    )
    rate_limit_backend: Literal["memory", "redis"] = Field(
        default="memory",
        description="memory: each replica counts alone. redis: replicas share one budget. Default: memory.",
    )
    redis_url_secret: SecretKeyRef | None = Field(
        default=None, description="Secret key holding the Redis URL (needed with rateLimitBackend redis)."
    )
    max_in_flight: int | None = Field(
        default=None, ge=1, description="Admission bound per replica: requests in flight before 429."
    )


class SemanticCacheSpec(ApiModel):
    """Opt-in semantic matching: reuse the answer to a differently worded but close last user message."""

    model: str = Field(
        description=(
            "Sentence-embedding encoder run on the CPU inside the runtime: hf://ORG/NAME (e.g. "
            "hf://sentence-transformers/all-MiniLM-L6-v2) or https://HOST/PATH (a tar, tar.gz or zip), "
            "fetched at pod start by the runtime's downloader (same token, checks and retries as the model) "
            "into the pod's scratch volume; or builtin:tiny-embed (random weights, for tests and demos)."
        ),
        pattern=SEMANTIC_MODEL_PATTERN,
        max_length=2048,
    )
    revision: str | None = Field(
        default=None, description="Hub revision of the encoder (branch, tag or commit). Default: main.", max_length=255
    )
    similarity_threshold: float = Field(
        default=0.95,
        ge=0.5,
        le=1,
        description=(
            "Cosine similarity (0.5-1) the last user message must reach to reuse an answer. Higher is "
            "safer; below ~0.9 differently meant questions start to match. Default: 0.95."
        ),
    )


class ResponseCacheSpec(ApiModel):
    """Answers of deterministic requests (temperature 0 or an explicit seed) served again without the engine."""

    enabled: bool = Field(default=False, description="Cache answers of deterministic requests. Default: false.")
    backend: Literal["memory", "redis"] = Field(
        default="memory",
        description=(
            "memory: an LRU in each replica. redis: shared by all replicas, in the Redis of "
            "api.redisUrlSecret (its own key prefix; TTLs kept by Redis). Default: memory."
        ),
    )
    ttl_seconds: int = Field(
        default=600, ge=1, le=2592000, description="Seconds an answer stays reusable. Default: 600."
    )
    max_entries: int = Field(
        default=10000, ge=1, le=10000000, description="Answers kept per replica (memory backend, LRU). Default: 10000."
    )
    max_bytes: Quantity = Field(
        default="256Mi",
        description=(
            "Memory for answers per replica (memory backend, LRU; counts against the container's memory); "
            "with redis the largest single compressed answer. At least 1Ki. Default: 256Mi."
        ),
    )
    scope: Literal["tenant", "shared"] = Field(
        default="tenant",
        description=(
            "tenant: each API-key tenant only ever sees answers to its own requests. shared: every caller "
            "may receive an answer first given to another tenant. Default: tenant."
        ),
    )
    semantic: SemanticCacheSpec | None = Field(
        default=None, description="Semantic matching of the last user message (off when unset)."
    )


class RolloutSpec(ApiModel):
    """Rolling-update budget. The default never needs a spare GPU node."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": (
                        "!(has(self.maxUnavailable) && string(self.maxUnavailable) in ['0', '0%'] && "
                        "(!has(self.maxSurge) || string(self.maxSurge) in ['0', '0%']))"
                    ),
                    "message": "rollout.maxSurge and rollout.maxUnavailable cannot both be 0: the rollout could never progress",
                    "fieldPath": ".maxUnavailable",
                }
            ]
        }
    )

    max_surge: IntOrString = Field(default=0, description="Extra replicas during a rollout. Default: 0 (GPU-safe).")
    max_unavailable: IntOrString = Field(default=1, description="Replicas that may be down during a rollout. Default: 1.")


class ProbesSpec(ApiModel):
    """Probe budgets of the runtime container."""

    startup_timeout_seconds: int = Field(
        default=1800,
        ge=60,
        le=86400,
        description="How long a replica may take to load the model before it is restarted. Default: 1800.",
    )


def _spec_rules() -> list[JsonValue]:
    """CEL rules across spec fields."""
    return [
        {
            "rule": "!has(self.replicas) || !has(self.autoscaling)",
            "message": "set either replicas or autoscaling, not both (remove autoscaling to scale by hand)",
        },
        {
            "rule": (
                "!has(self.runtime) || !has(self.runtime.tensorParallelSize) || self.runtime.tensorParallelSize <= 1 || "
                "(has(self.resources) && has(self.resources.gpus) && self.resources.gpus > 0 && "
                "self.resources.gpus % self.runtime.tensorParallelSize == 0)"
            ),
            "message": "resources.gpus must be a positive multiple of runtime.tensorParallelSize",
            "fieldPath": ".resources.gpus",
        },
        {
            "rule": "!has(self.resources) || !has(self.resources.gpus) || self.resources.gpus == 0 || has(self.resources.accelerator)",
            "message": "resources.gpus needs resources.accelerator (the profile names the GPU resource and nodes)",
            "fieldPath": ".resources.accelerator",
        },
        {
            "rule": (
                "!has(self.api) || !has(self.api.rateLimitBackend) || self.api.rateLimitBackend != 'redis' || "
                "has(self.api.redisUrlSecret)"
            ),
            "message": "api.rateLimitBackend redis needs api.redisUrlSecret",
            "fieldPath": ".api.redisUrlSecret",
        },
        {
            "rule": (
                "!has(self.responseCache) || !has(self.responseCache.backend) || "
                "self.responseCache.backend != 'redis' || (has(self.api) && has(self.api.redisUrlSecret))"
            ),
            "message": "responseCache.backend redis needs api.redisUrlSecret (the cache uses the rate limiter's Redis)",
            "fieldPath": ".responseCache.backend",
        },
        {
            "rule": (
                "!has(self.responseCache) || !has(self.responseCache.semantic) || "
                "(has(self.responseCache.enabled) && self.responseCache.enabled)"
            ),
            "message": "responseCache.semantic needs responseCache.enabled: true",
            "fieldPath": ".responseCache.semantic",
        },
    ]


class InferenceServiceSpec(ApiModel):
    """Desired state of an InferenceService: one model served by the inferkube runtime."""

    model_config = ConfigDict(json_schema_extra={"x-kubernetes-validations": _spec_rules()})

    model: ModelSpec = Field(description="The model to serve.")
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec, description="Runtime container and vLLM engine settings.")
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec, description="Compute per replica.")
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec, description="Placement of replicas.")
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=1000,
        description="Fixed number of replicas (also what 'kubectl scale' sets). Exclusive with autoscaling. Default: 1.",
    )
    autoscaling: AutoscalingSpec | None = Field(default=None, description="Autoscale on the runtime's metrics. Exclusive with replicas.")
    cache: CacheSpec = Field(default_factory=CacheSpec, description="Model cache on a PersistentVolumeClaim.")
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec, description="Prometheus Operator integration.")
    api: ApiSpec = Field(default_factory=ApiSpec, description="API keys and rate limits.")
    response_cache: ResponseCacheSpec = Field(
        default_factory=ResponseCacheSpec,
        description="Cache of answers to deterministic requests (off by default; see docs/response-cache.md).",
    )
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="Rolling-update budget.")
    probes: ProbesSpec = Field(default_factory=ProbesSpec, description="Probe budgets.")

    @property
    def max_possible_replicas(self) -> int:
        """The most replicas this spec can run at once."""
        if self.autoscaling is not None:
            return self.autoscaling.max_replicas
        return 1 if self.replicas is None else self.replicas

    @property
    def starting_replicas(self) -> int:
        """Replicas wanted before the Deployment exists: the fixed count, else the autoscaler's minimum."""
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas
        return 1 if self.replicas is None else self.replicas

    @property
    def source_scheme(self) -> str:
        """The scheme of model.source: hf, pvc, https or http."""
        return self.model.source.split("://", 1)[0]
