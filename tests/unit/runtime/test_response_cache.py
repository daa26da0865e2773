"""The response cache over its in-process store: LRU bounds, TTL, hits with fresh ids, stream replay that
the official openai client parses, stored streams, corrupt entries, semantic matching."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from prometheus_client import CollectorRegistry

from inferkube.runtime.context import CHAT, COMPLETION
from inferkube.runtime.metrics import ResponseCacheMetrics
from inferkube.runtime.response_cache import BYPASS, HIT, MISS, SEMANTIC_HIT, MemoryStore, ResponseCache
from inferkube.runtime.response_cache.replay import StreamAssembler, fresh_body, sse_events
from inferkube.runtime.response_cache.semantic import SemanticMatcher, unit
from inferkube.runtime.validation import request_model

CHAT_BODY = {"object": "chat.completion", "model": "tiny", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "Paris."}, "logprobs": None,
     "finish_reason": "stop", "stop_reason": None}],
    "usage": {"prompt_tokens": 7, "total_tokens": 9, "completion_tokens": 2}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Result:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = {"id": "chatcmpl-engine", "created": 1, **body}

    def model_dump(self) -> dict[str, Any]:
        return dict(self.body)


def chat(content: str = "capital of France?", **kw: Any) -> Any:
    return request_model(CHAT).model_validate({"model": "tiny", "temperature": 0,
                                               "messages": [{"role": "user", "content": content}], **kw})


def make_cache(store: Any = None, **kw: Any) -> ResponseCache:
    metrics = ResponseCacheMetrics(CollectorRegistry())
    return ResponseCache(store if store is not None else MemoryStore(100, 1_000_000), model="tiny", revision="r1", ttl=60,
                         scope=kw.pop("scope", "tenant"), metrics=metrics, **kw)


def counter(cache: ResponseCache, name: str, **labels: str) -> float:
    metric = getattr(cache.metrics, name)
    return metric.labels(model="tiny", **labels)._value.get()


async def miss_then_store(cache: ResponseCache, request: Any, tenant: str = "a", body: dict | None = None) -> None:
    look = await cache.lookup(CHAT, request, tenant, None)
    assert look.status == MISS
    cache.record(look, Result(body or CHAT_BODY), usage=lambda: (0, 0))
    await cache.drain()


async def test_memory_store_evicts_least_recently_used_by_entries_and_bytes() -> None:
    store = MemoryStore(max_entries=2, max_bytes=10)
    await store.set("a", b"1234", 60)
    await store.set("b", b"1234", 60)
    assert await store.get("a") == b"1234"  # a is now the most recently used
    await store.set("c", b"1234", 60)
    assert await store.get("b") is None and await store.get("a") and await store.get("c")
    await store.set("d", b"12345678", 60)  # 8 bytes: only d fits next to nothing else
    assert len(store) == 1 and store.size_bytes == 8
    assert await store.set("huge", b"x" * 11, 60) == 0 and await store.get("huge") is None


async def test_memory_store_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    store = MemoryStore(10, 1000, clock=clock)
    await store.set("k", b"v", 5)
    clock.now += 4.9
    assert await store.get("k") == b"v"
    clock.now += 0.2
    assert await store.get("k") is None and store.size_bytes == 0


async def test_second_identical_request_hits_with_the_same_body_and_a_fresh_id() -> None:
    cache = make_cache()
    await miss_then_store(cache, chat())
    look = await cache.lookup(CHAT, chat(max_tokens=None), "a", None)
    assert look.status == HIT and look.headers() == {"x-inferkube-cache": "hit"}
    response = cache.respond(look, chat())
    body = json.loads(bytes(response.body))
    assert body["choices"] == CHAT_BODY["choices"] and body["usage"] == CHAT_BODY["usage"]
    assert body["id"].startswith("chatcmpl-") and body["id"] != "chatcmpl-engine"
    assert body["created"] > 1 and list(body)[:3] == ["id", "object", "created"]
    assert response.headers["x-inferkube-cache"] == "hit"
    assert counter(cache, "hits", match="exact") == 1 and counter(cache, "misses") == 1
    assert cache.metrics.stored_bytes.labels("tiny")._value.get() > 0


async def test_other_tenant_misses_unless_scope_is_shared() -> None:
    cache = make_cache()
    await miss_then_store(cache, chat())
    assert (await cache.lookup(CHAT, chat(), "b", None)).status == MISS
    shared = make_cache(scope="shared")
    await miss_then_store(shared, chat(), tenant="a")
    assert (await shared.lookup(CHAT, chat(), "b", None)).status == HIT


async def test_sampled_requests_and_errors_are_never_stored() -> None:
    cache = make_cache()
    sampled = request_model(CHAT).model_validate({"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
    look = await cache.lookup(CHAT, sampled, "a", None)
    assert (look.status, look.reason) == (BYPASS, "sampled")
    assert cache.record(look, Result(CHAT_BODY), usage=lambda: (0, 0)) is not None
    failed = await cache.lookup(CHAT, chat(), "a", None)

    class Error:
        error = {"message": "boom"}

        def model_dump(self) -> dict:
            return {"error": self.error}

    cache.record(failed, Error(), usage=lambda: (0, 0))
    await cache.drain()
    assert (await cache.lookup(CHAT, chat(), "a", None)).status == MISS
    assert counter(cache, "bypasses", reason="sampled") == 1


async def test_no_cache_refreshes_and_no_store_keeps_nothing() -> None:
    cache = make_cache()
    look = await cache.lookup(CHAT, chat(), "a", "no-store")
    assert (look.status, look.store) == (BYPASS, False)
    look = await cache.lookup(CHAT, chat(), "a", "no-cache")
    assert (look.status, look.reason, look.store) == (BYPASS, "no_cache", True)
    cache.record(look, Result(CHAT_BODY), usage=lambda: (0, 0))
    await cache.drain()
    assert (await cache.lookup(CHAT, chat(), "a", None)).status == HIT


async def test_a_corrupt_entry_is_a_miss_and_is_deleted() -> None:
    store = MemoryStore(10, 10_000)
    cache = make_cache(store)
    look = await cache.lookup(CHAT, chat(), "a", None)
    assert look.key is not None
    await store.set(look.key, b"{not json", 60)
    assert (await cache.lookup(CHAT, chat(), "a", None)).status == MISS
    assert await store.get(look.key) is None


def parse_with_openai(events: list[str], route: str) -> list[Any]:
    """Feed SSE events to the official openai client through a mock transport; return its chunks."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content="".join(events).encode())

    client = openai.OpenAI(base_url="http://127.0.0.1:1/v1", api_key="x",
                           http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    if route == CHAT:
        return list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "x"}],
                                                   stream=True, stream_options={"include_usage": True}))
    return list(client.completions.create(model="tiny", prompt="x", stream=True))


def test_replayed_chat_stream_parses_with_the_openai_client_and_ends_with_usage() -> None:
    body = fresh_body(CHAT, CHAT_BODY)
    events = sse_events(CHAT, body, include_usage=True, continuous_usage=False)
    assert events[-1] == "data: [DONE]\n\n"
    chunks = parse_with_openai(events, CHAT)
    assert {c.id for c in chunks} == {body["id"]}
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Paris."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2
    no_usage = sse_events(CHAT, body, include_usage=False, continuous_usage=False)
    assert all('"usage"' not in e for e in no_usage)


def test_replayed_completion_stream_parses_with_the_openai_client() -> None:
    stored = {"object": "text_completion", "model": "tiny", "usage": CHAT_BODY["usage"],
              "choices": [{"index": 0, "text": "abc", "logprobs": None, "finish_reason": "length"}]}
    chunks = parse_with_openai(sse_events(COMPLETION, fresh_body(COMPLETION, stored), False, False), COMPLETION)
    assert "".join(c.choices[0].text for c in chunks) == "abc" and chunks[-1].choices[0].finish_reason == "length"


async def _stream(events: list[str]) -> AsyncIterator[str]:
    for event in events:
        yield event


async def test_a_streamed_miss_is_stored_once_sent_to_its_end_and_replays_as_json() -> None:
    cache = make_cache()
    look = await cache.lookup(CHAT, chat(stream=True), "a", None)
    upstream = sse_events(CHAT, fresh_body(CHAT, CHAT_BODY), include_usage=False, continuous_usage=False)
    sent = [piece async for piece in cache.record(look, _stream(upstream), usage=lambda: (7, 2))]
    assert sent == upstream
    await cache.drain()
    hit = await cache.lookup(CHAT, chat(), "a", None)
    assert hit.status == HIT and hit.body is not None
    assert hit.body["choices"][0]["message"]["content"] == "Paris."
    assert hit.body["usage"]["prompt_tokens"] == 7 and hit.body["object"] == "chat.completion"


async def test_a_stream_cut_short_or_ending_in_an_error_is_not_stored() -> None:
    cache = make_cache()
    upstream = sse_events(CHAT, fresh_body(CHAT, CHAT_BODY), False, False)
    look = await cache.lookup(CHAT, chat(), "a", None)
    gen = cache.record(look, _stream(upstream), usage=lambda: (7, 2))
    await gen.__anext__()
    await gen.aclose()  # the client went away
    errored = upstream[:2] + ['data: {"error": {"message": "x", "code": 500}}\n\n', "data: [DONE]\n\n"]
    _ = [p async for p in cache.record(look, _stream(errored), usage=lambda: (7, 2))]
    await cache.drain()
    assert (await cache.lookup(CHAT, chat(), "a", None)).status == MISS
    closed: list[bool] = []

    async def upstream_gen() -> AsyncIterator[str]:
        try:
            for event in upstream:
                yield event
        finally:
            closed.append(True)

    source = upstream_gen()
    await source.__anext__()  # the engine stream has started; our wrapper has not
    await cache.record(look, source, usage=lambda: (7, 2)).aclose()
    assert closed == [True]  # closing the unstarted wrapper still closes (aborts) the engine stream
    assembler = StreamAssembler(CHAT)
    assembler.feed(upstream[0])
    assert assembler.body((1, 1)) is None  # no [DONE], no finish reason


class WordEmbedder:
    """A bag-of-words embedder: the same text gives the same vector; overlap gives similarity."""

    def embed(self, text: str) -> np.ndarray:
        vec = np.zeros(64, dtype=np.float32)
        for word in text.lower().split():
            vec[hash(word) % 64] += 1
        return unit(vec)


async def test_semantic_hit_within_the_threshold_for_the_same_conversation_and_tenant_only() -> None:
    cache = make_cache(semantic=SemanticMatcher(WordEmbedder(), threshold=0.8))
    await miss_then_store(cache, chat("what is the capital of france"))
    look = await cache.lookup(CHAT, chat("what is the capital of france please"), "a", None)
    assert look.status == SEMANTIC_HIT and look.similarity is not None and 0.8 <= look.similarity < 1
    assert look.headers()["x-inferkube-cache"] == "semantic-hit"
    assert float(look.headers()["x-inferkube-cache-similarity"]) == pytest.approx(look.similarity, abs=1e-4)
    cache.respond(look, chat("what is the capital of france please"))
    assert (await cache.lookup(CHAT, chat("tell me a joke about cats"), "a", None)).status == MISS
    assert (await cache.lookup(CHAT, chat("what is the capital of france please"), "b", None)).status == MISS
    other = chat("what is the capital of france please", max_tokens=3)
    assert (await cache.lookup(CHAT, other, "a", None)).status == MISS
    assert counter(cache, "hits", match="semantic") == 1


class BrokenEmbedder:
    def embed(self, text: str) -> np.ndarray:
        raise RuntimeError("encoder gone")


async def test_a_failing_encoder_is_a_plain_miss_and_exact_matching_goes_on() -> None:
    cache = make_cache(semantic=SemanticMatcher(BrokenEmbedder(), threshold=0.9))
    await miss_then_store(cache, chat("hello"))
    assert (await cache.lookup(CHAT, chat("hello"), "a", None)).status == HIT
    assert (await cache.lookup(CHAT, chat("hello there"), "a", None)).status == MISS
