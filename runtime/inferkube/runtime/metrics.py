"""Every Prometheus metric the runtime exports, declared once (names come from inferkube.api.contract).

vLLM's engine registers its own `vllm:*` metrics in the same default registry, so one /metrics page
shows both. Tenant labels are bounded: at most MAX_TENANT_LABELS distinct names, the rest are "other".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from inferkube.api.contract import (
    METRIC_ADMISSION_WAIT_SECONDS,
    METRIC_ADMITTED_TOTAL,
    METRIC_CLIENT_DISCONNECTS_TOTAL,
    METRIC_COMPLETION_TOKENS_TOTAL,
    METRIC_CONFIG_RELOADS_TOTAL,
    METRIC_E2E_SECONDS,
    METRIC_KV_CACHE_USAGE,
    METRIC_PROMPT_TOKENS_TOTAL,
    METRIC_QUEUE_DEPTH,
    METRIC_RATELIMIT_BACKEND_ERRORS_TOTAL,
    METRIC_REJECTIONS_TOTAL,
    METRIC_REQUESTS_IN_FLIGHT,
    METRIC_REQUESTS_TOTAL,
    METRIC_RESPONSE_CACHE_BYPASSES_TOTAL,
    METRIC_RESPONSE_CACHE_HIT_SECONDS,
    METRIC_RESPONSE_CACHE_HITS_TOTAL,
    METRIC_RESPONSE_CACHE_MISSES_TOTAL,
    METRIC_RESPONSE_CACHE_SIZE_BYTES,
    METRIC_RESPONSE_CACHE_STORED_BYTES_TOTAL,
    METRIC_SHED_TOTAL,
    METRIC_TPOT_SECONDS,
    METRIC_TTFT_SECONDS,
    REJECTION_REASONS,
)
from inferkube.runtime.tenancy import ANONYMOUS

if TYPE_CHECKING:
    from inferkube.runtime.context import RequestContext

MAX_TENANT_LABELS = 100
OTHER = "other"

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_E2E_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_CACHE_HIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


def _counter_name(name: str) -> str:
    # prometheus-client appends `_total` to counters itself.
    return name[: -len("_total")] if name.endswith("_total") else name


class ResponseCacheMetrics:
    """The response cache's metric objects (hits, misses, bypasses by reason, bytes, hit latency)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.hits = Counter(_counter_name(METRIC_RESPONSE_CACHE_HITS_TOTAL),
                            "Requests answered from the response cache, by match (exact or semantic).",
                            ["model", "match"], registry=registry)
        self.misses = Counter(_counter_name(METRIC_RESPONSE_CACHE_MISSES_TOTAL),
                              "Cacheable requests not found in the response cache.", ["model"],
                              registry=registry)
        self.bypasses = Counter(_counter_name(METRIC_RESPONSE_CACHE_BYPASSES_TOTAL),
                                "Requests that did not use the response cache, by reason.",
                                ["model", "reason"], registry=registry)
        self.stored_bytes = Counter(_counter_name(METRIC_RESPONSE_CACHE_STORED_BYTES_TOTAL),
                                    "Bytes written to the response cache (compressed for Redis).",
                                    ["model"], registry=registry)
        self.size_bytes = Gauge(METRIC_RESPONSE_CACHE_SIZE_BYTES,
                                "Bytes held by the in-process response cache (0 with Redis).", ["model"],
                                registry=registry)
        self.hit_seconds = Histogram(METRIC_RESPONSE_CACHE_HIT_SECONDS,
                                     "Time from arrival to a response served from the cache.", ["model"],
                                     buckets=_CACHE_HIT_BUCKETS, registry=registry)


class RuntimeMetrics:
    """The runtime's metric objects, registered once in one registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.requests = Counter(_counter_name(METRIC_REQUESTS_TOTAL), "Requests answered, by HTTP status.",
                                ["model", "tenant", "status"], registry=registry)
        self.rejections = Counter(_counter_name(METRIC_REJECTIONS_TOTAL),
                                  "Requests refused before the engine, by reason.", ["model", "reason"],
                                  registry=registry)
        self.ttft = Histogram(METRIC_TTFT_SECONDS, "Time from admission to the first output token.",
                              ["model"], buckets=_TTFT_BUCKETS, registry=registry)
        self.tpot = Histogram(METRIC_TPOT_SECONDS, "Mean time per output token after the first.",
                              ["model"], buckets=_TPOT_BUCKETS, registry=registry)
        self.e2e = Histogram(METRIC_E2E_SECONDS, "End-to-end request latency (admitted requests).",
                             ["model"], buckets=_E2E_BUCKETS, registry=registry)
        self.prompt_tokens = Counter(_counter_name(METRIC_PROMPT_TOKENS_TOTAL), "Prompt tokens processed.",
                                     ["model", "tenant"], registry=registry)
        self.completion_tokens = Counter(_counter_name(METRIC_COMPLETION_TOKENS_TOTAL),
                                         "Completion tokens generated.", ["model", "tenant"],
                                         registry=registry)
        self.in_flight = Gauge(METRIC_REQUESTS_IN_FLIGHT, "Requests admitted and handed to the engine.",
                               ["model"], registry=registry)
        self.queue_depth = Gauge(METRIC_QUEUE_DEPTH,
                                 "Requests admitted but not yet running: the admission queue plus the "
                                 "engine's waiting queue.", ["model"], registry=registry)
        self.kv_cache_usage = Gauge(METRIC_KV_CACHE_USAGE, "KV-cache use 0..1 (mirrors vLLM's gauge).",
                                    ["model"], registry=registry)
        self.disconnects = Counter(_counter_name(METRIC_CLIENT_DISCONNECTS_TOTAL),
                                   "Requests whose client went away before the answer was complete.",
                                   ["model"], registry=registry)
        self.backend_errors = Counter(_counter_name(METRIC_RATELIMIT_BACKEND_ERRORS_TOTAL),
                                      "Rate-limit backend (e.g. Redis) failures.", registry=registry)
        self.cache = ResponseCacheMetrics(registry)
        self.admission_wait = Histogram(METRIC_ADMISSION_WAIT_SECONDS, "Time a request waited for an in-flight slot.",
                                        ["model", "priority"], buckets=_TTFT_BUCKETS, registry=registry)
        self.admitted = Counter(_counter_name(METRIC_ADMITTED_TOTAL), "Requests handed to the engine, by tenant and priority.",
                                ["model", "tenant", "priority"], registry=registry)
        self.shed = Counter(_counter_name(METRIC_SHED_TOTAL),
                            "Queued requests refused (429) to make room for more important ones.",
                            ["model", "tenant", "priority"], registry=registry)
        self.config_reloads = Counter(_counter_name(METRIC_CONFIG_RELOADS_TOTAL),
                                      "Reloads of the tenants file and the tenant policy; result=error kept the old one.",
                                      ["file", "result"], registry=registry)
        self._backend_errors_seen = 0
        self._tenants: set[str] = set()
        self._lock = threading.Lock()
        # Children by label values: `.labels()` takes a lock and builds a key on every call; the label
        # sets are bounded (one model, <= MAX_TENANT_LABELS + 2 tenants, a few statuses).
        self._children: dict[tuple[object, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def tenant_label(self, name: str | None) -> str:
        """Map a tenant name to a bounded label value."""
        if not name:
            return ANONYMOUS.name
        if name in self._tenants:  # the common case, without the lock
            return name
        with self._lock:
            if name in self._tenants:
                return name
            if len(self._tenants) < MAX_TENANT_LABELS:
                self._tenants.add(name)
                return name
        return OTHER

    def declare_model(self, model: str) -> None:
        """Start every `reason` series of the rejection counter at 0, so the first refusal is an increase."""
        for reason in REJECTION_REASONS:
            self.rejections.labels(model, reason)

    def count_refusal(self, model: str, tenant_label: str, reason: str, status: int) -> None:
        """A request refused before the engine: one rejection by reason, one answered request by status."""
        self.count_rejection(model, reason)
        self.count_answer(model, tenant_label, str(status))

    def count_rejection(self, model: str, reason: str) -> None:
        """One refusal by reason."""
        self._child(self.rejections, model, reason).inc()

    def count_answer(self, model: str, tenant_label: str, status: str) -> None:
        """One answered request by tenant and HTTP status (every answer goes through here)."""
        self._child(self.requests, model, tenant_label, status).inc()

    def observe_admitted(self, model: str, tenant_label: str, priority: str, waited: float) -> None:
        """A request got its in-flight slot after `waited` seconds in the admission queue."""
        self.admission_wait.labels(model, priority).observe(waited)
        self.admitted.labels(model, tenant_label, priority).inc()

    def observe_finished(self, model: str, ctx: RequestContext, status: str, disconnected: bool) -> None:
        """An admitted request has ended: its status, latencies and the tokens the engine counted."""
        t = ctx.tracker
        end = time.perf_counter()  # the answer has been sent (streams: its last byte)
        self.count_answer(model, ctx.tenant_label, status)
        self._child(self.e2e, model).observe(end - t.started)
        # A non-streaming answer arrives all at once at the end: its TTFT/TPOT would be meaningless.
        if ctx.streaming and t.first_token_at is not None:
            self._child(self.ttft, model).observe(t.first_token_at - t.started)
            per_seq = t.completion_tokens / max(1, ctx.n)
            if per_seq > 1:
                self._child(self.tpot, model).observe((end - t.first_token_at) / (per_seq - 1))
        if t.prompt_tokens:
            self._child(self.prompt_tokens, model, ctx.tenant_label).inc(t.prompt_tokens)
        if t.completion_tokens:
            self._child(self.completion_tokens, model, ctx.tenant_label).inc(t.completion_tokens)
        if disconnected:
            self._child(self.disconnects, model).inc()

    def bind_gauges(self, model: str, queued: Callable[[], int], in_flight: Callable[[], int]) -> None:
        """Wire the gauges that are read at scrape time (queue depth, in flight, KV-cache use)."""
        self.in_flight.labels(model).set_function(lambda: float(in_flight()))
        self.queue_depth.labels(model).set_function(
            lambda: float(queued()) + engine_gauge_sum("vllm:num_requests_waiting", self.registry))
        self.kv_cache_usage.labels(model).set_function(
            lambda: engine_gauge_mean("vllm:kv_cache_usage_perc", self.registry))

    def sync_backend_errors(self, total: int) -> None:
        """Advance the backend-error counter to the limiter's running total."""
        with self._lock:
            delta = total - self._backend_errors_seen
            if delta > 0:
                self.backend_errors.inc(delta)
                self._backend_errors_seen = total


def priority_label(priority: int) -> str:
    """high, normal, low for the named priorities, else the number."""
    return {100: "high", 0: "normal", -100: "low"}.get(priority, str(priority))


def _engine_samples(name: str, registry: CollectorRegistry) -> list[float]:
    collector = getattr(registry, "_names_to_collectors", {}).get(name)
    if collector is None:
        return []
    return [s.value for family in collector.collect() for s in family.samples if s.name == name]


def engine_gauge_sum(name: str, registry: CollectorRegistry = REGISTRY) -> float:
    """Sum of one of vLLM's gauges over its engines (0 when the engine has not registered it)."""
    return float(sum(_engine_samples(name, registry)))


def engine_gauge_mean(name: str, registry: CollectorRegistry = REGISTRY) -> float:
    """Mean of one of vLLM's gauges over its engines (0 when absent)."""
    values = _engine_samples(name, registry)
    return float(sum(values) / len(values)) if values else 0.0


_metrics: RuntimeMetrics | None = None


def get_metrics() -> RuntimeMetrics:
    """Return the process-wide RuntimeMetrics (created on first use, in the default registry)."""
    global _metrics
    if _metrics is None:
        _metrics = RuntimeMetrics()
    return _metrics
