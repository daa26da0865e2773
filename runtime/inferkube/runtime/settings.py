"""The runtime's settings: one pydantic-settings object, filled from flags and INFERKUBE_* variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inferkube.api.contract import ENV_PREFIX, RUNTIME_PORT


class RuntimeSettings(BaseSettings):
    """Everything `inferkube-runtime serve` can be told; flags win over environment variables."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", protected_namespaces=())

    # --- model and engine ---------------------------------------------------------------------
    model: str = Field("builtin:tiny", description="Model directory, Hugging Face name, or builtin:tiny.")
    served_model_name: str | None = Field(None, description="Name clients send as `model`.")
    dtype: str = Field("auto", description="Weight/activation dtype passed to vLLM.")
    max_model_len: int | None = Field(None, ge=1, description="Context length (default: the model's).")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs per replica (vLLM tensor parallelism).")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="GPU memory fraction.")
    enable_prefix_caching: bool | None = Field(None, description="vLLM automatic prefix caching.")
    max_num_seqs: int | None = Field(None, ge=1, description="Max sequences the engine batches at once.")
    engine_args: list[str] = Field(default_factory=list, description="Raw extra vLLM engine arguments.")
    warmup: bool = Field(True, description="Send one warm-up request before /ready turns 200.")

    # --- HTTP -------------------------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = Field(RUNTIME_PORT, ge=0, le=65535)
    log_level: str = "info"
    log_format: Literal["text", "json"] = Field("text", description="text, or one JSON object per line.")
    max_connections: int = Field(1024, ge=1, description="Open connections at most; beyond: 503 (uvicorn).")
    header_timeout: float = Field(10.0, gt=0, description="Seconds a client has to send a request head.")
    body_timeout: float = Field(30.0, gt=0, description="Seconds a client has to send a request body.")
    keep_alive_timeout: float = Field(5.0, ge=1, description="Seconds an idle keep-alive connection stays open.")

    # --- admission and drain ----------------------------------------------------------------
    max_in_flight: int = Field(256, ge=1, description="Requests handed to the engine at once.")
    max_queued: int = Field(256, ge=0, description="Admitted requests waiting for an in-flight slot.")
    drain_timeout: float = Field(120.0, ge=0, description="Seconds in-flight requests get after SIGTERM.")

    # --- tenancy and rate limits ------------------------------------------------------------
    tenants_file: Path | None = None
    tenant_policy_file: Path | None = Field(
        None, description="The quota's tenant policy (a ConfigMap the operator writes); absent file: no policy.")
    reload_interval: float = Field(1.0, gt=0, description="Seconds between checks of the tenants and policy files.")
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        "fcfs", description="fcfs: FIFO admission. priority: priority + fair-share admission and vLLM priority scheduling.")
    rate_limit_backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    rate_limit_fail_open: bool = True
    default_requests_per_minute: int | None = Field(None, ge=1)
    default_tokens_per_minute: int | None = Field(None, ge=1)

    # --- response cache (see docs/response-cache.md) -------------------------------------------
    model_revision: str | None = Field(None, max_length=255, description=(
        "Revision of the served weights; cached answers of another revision are never served."))
    response_cache: bool = Field(False, description="Cache answers of deterministic requests.")
    response_cache_backend: Literal["memory", "redis"] = Field(
        "memory", description="memory: per replica (LRU). redis: shared by replicas (needs --redis-url).")
    response_cache_ttl: float = Field(600.0, gt=0, le=2_592_000, description="Seconds an answer is kept.")
    response_cache_max_entries: int = Field(10_000, ge=1, description="Entries kept in memory (LRU).")
    response_cache_max_bytes: int = Field(268_435_456, ge=1024, description=(
        "Bytes kept in memory (LRU); with Redis the largest single entry (compressed)."))
    response_cache_scope: Literal["tenant", "shared"] = Field(
        "tenant", description="tenant: each tenant sees only its own entries. shared: all callers share.")
    response_cache_semantic_model: str | None = Field(None, description=(
        "Encoder for semantic matching (model directory, Hugging Face name, builtin:tiny-embed). "
        "Unset: exact match only."))
    response_cache_similarity_threshold: float = Field(
        0.95, gt=0, le=1, description="Cosine similarity a semantic match needs.")

    # --- input caps -------------------------------------------------------------------------
    max_tokens_cap: int = Field(4096, ge=1, description="Largest max_tokens a request may ask for.")
    max_n: int = Field(16, ge=1, description="Largest n (choices per request).")
    max_stop_sequences: int = Field(4, ge=0, description="Longest stop list (at most the engine's limit).")
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body in bytes.")

    @model_validator(mode="after")
    def _redis_url_for_redis_backends(self) -> RuntimeSettings:
        if self.response_cache and self.response_cache_backend == "redis" and not self.redis_url:
            raise ValueError("--response-cache-backend redis needs --redis-url")
        return self

    @property
    def model_name(self) -> str:
        """The name clients use in the `model` field."""
        return self.served_model_name or self.model
