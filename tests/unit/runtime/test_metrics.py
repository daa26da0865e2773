"""Runtime metrics: bounded tenant labels, gauges read at scrape time, vLLM's KV-cache gauge mirrored."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from inferkube.api import contract
from inferkube.runtime.metrics import MAX_TENANT_LABELS, RuntimeMetrics


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_contract_names_are_exported() -> None:
    registry = CollectorRegistry()
    m = RuntimeMetrics(registry)
    m.requests.labels("tiny", "a", "200").inc()
    m.rejections.labels("tiny", "auth").inc()
    m.bind_gauges("tiny", lambda: 0, lambda: 0)
    text = generate_latest(registry).decode()
    for name in (contract.METRIC_REQUESTS_TOTAL, contract.METRIC_REJECTIONS_TOTAL, contract.METRIC_QUEUE_DEPTH,
                 contract.METRIC_KV_CACHE_USAGE, contract.METRIC_REQUESTS_IN_FLIGHT):
        assert name in text, name


def test_tenant_labels_are_bounded() -> None:
    m = RuntimeMetrics(CollectorRegistry())
    labels = {m.tenant_label(f"t{i}") for i in range(MAX_TENANT_LABELS + 50)}
    assert len(labels) == MAX_TENANT_LABELS + 1 and "other" in labels
    assert m.tenant_label(None) == "anonymous"
    assert m.tenant_label("t0") == "t0"


def test_queue_depth_adds_engine_waiting_and_kv_mirrors_vllm() -> None:
    registry = CollectorRegistry()
    m = RuntimeMetrics(registry)
    waiting = Gauge("vllm:num_requests_waiting", "engine queue", ["engine"], registry=registry)
    kv = Gauge("vllm:kv_cache_usage_perc", "kv", ["engine"], registry=registry)
    queued = [2]
    m.bind_gauges("tiny", lambda: queued[0], lambda: 5)
    waiting.labels("0").set(3)
    kv.labels("0").set(0.25)
    assert _value(registry, contract.METRIC_QUEUE_DEPTH, model="tiny") == 5
    assert _value(registry, contract.METRIC_KV_CACHE_USAGE, model="tiny") == 0.25
    assert _value(registry, contract.METRIC_REQUESTS_IN_FLIGHT, model="tiny") == 5
    queued[0] = 0
    waiting.labels("0").set(0)
    assert _value(registry, contract.METRIC_QUEUE_DEPTH, model="tiny") == 0


def test_backend_errors_follow_the_limiter_total() -> None:
    registry = CollectorRegistry()
    m = RuntimeMetrics(registry)
    m.sync_backend_errors(3)
    m.sync_backend_errors(3)
    m.sync_backend_errors(5)
    assert _value(registry, contract.METRIC_RATELIMIT_BACKEND_ERRORS_TOTAL) == 5


async def test_engine_requests_are_counted_in_full_from_vllms_own_stats() -> None:
    """A completion with 2 prompts of 10 and 20 tokens, the second with n=2 (vLLM registers one child request
    per choice, all sharing the prompt): 30 prompt tokens, every generated token, TTFT from the earliest first
    token; nothing is read per output; a request registered outside a serving call is nobody's, and a
    streaming-input update of a known request is not a new one."""
    import asyncio
    import time
    from types import SimpleNamespace

    from inferkube.runtime.engine import EngineRequestStats, RequestTracker, attach_engine_requests, observing

    states: dict[str, SimpleNamespace] = {}
    registered: list[str] = []

    def add_request(request: SimpleNamespace, prompt: object, parent_req: object = None, request_index: int = 0,
                    queue: object = None) -> None:  # vLLM's OutputProcessor.add_request, reduced
        registered.append(request.request_id)
        states.setdefault(request.request_id, SimpleNamespace(prompt_len=request.prompt_len,
                                                              stats=EngineRequestStats(arrival_time=time.time())))

    processor = SimpleNamespace(add_request=add_request, request_states=states)
    attach_engine_requests(SimpleNamespace(output_processor=processor))
    parent = object()

    async def engine_adds(rid: str, prompt_len: int, parent_req: object = None, index: int = 0) -> None:
        processor.add_request(SimpleNamespace(request_id=rid, prompt_len=prompt_len), None, parent_req, index, None)

    tracker = RequestTracker()
    with observing(tracker):
        # vLLM adds a stream's requests from tasks started inside the block: they count too.
        await asyncio.gather(*(asyncio.ensure_future(engine_adds(*a))
                               for a in (("a", 10), ("b0", 20, parent, 0), ("b1", 20, parent, 1))))
        await engine_adds("a", 10)  # the same request again (streaming input): not counted twice
    await engine_adds("stray", 99)
    assert registered == ["a", "b0", "b1", "a", "stray"]  # vLLM's own method still runs every time
    assert tracker.token_counts() == (30, 0) and tracker.first_token_at is None
    states["a"].stats.num_generation_tokens = 16
    states["b0"].stats.num_generation_tokens = 7
    states["b1"].stats.num_generation_tokens = 9
    states["b1"].stats.first_token_latency = 0.25
    states["stray"].stats.num_generation_tokens = 1000
    assert tracker.token_counts() == (30, 32)
    assert tracker.first_token_at is not None
    assert abs((tracker.first_token_at - tracker.started) - 0.25) < 0.05
