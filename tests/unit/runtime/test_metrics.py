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


async def test_several_prompts_are_counted_in_full() -> None:
    """2 prompts of 10 and 20 tokens, 16 tokens each, non-streaming (cumulative outputs): 30 in, 32 out."""
    from types import SimpleNamespace

    from vllm.sampling_params import RequestOutputKind

    from inferkube.runtime.engine import RequestTracker, _wrap_generate, observing

    closed: list[int] = []

    async def generate(prompt: list[int], sampling_params: object, request_id: str):
        try:
            for done in range(4, 17, 4):
                yield SimpleNamespace(prompt_token_ids=prompt, finished=done == 16,
                                      outputs=[SimpleNamespace(index=0, token_ids=[7] * done)])
        finally:
            closed.append(len(prompt))

    params = SimpleNamespace(output_kind=RequestOutputKind.FINAL_ONLY)
    tracker = RequestTracker()
    with observing(tracker):
        observed = _wrap_generate(generate)
        gens = [observed(list(range(p)), params, f"r{i}") for i, p in enumerate((10, 20))]
    # vLLM interleaves the generators of one request.
    for _ in range(4):
        for gen in gens:
            await gen.__anext__()
    assert tracker.prompt_tokens == 30
    assert tracker.completion_tokens == 32
    assert tracker.finished
    for gen in gens:
        await gen.aclose()
    assert sorted(closed) == [10, 20]  # closing the observer closes vLLM's generator under it
