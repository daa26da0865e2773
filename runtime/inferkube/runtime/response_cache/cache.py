"""The response cache as the request path sees it: `lookup` on the way in, `respond` for a hit,
`record` on the way out (stores a complete, successful answer in the background)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.responses import JSONResponse, Response, StreamingResponse

from inferkube.api.contract import HEADER_RESPONSE_CACHE, HEADER_RESPONSE_CACHE_SIMILARITY
from inferkube.runtime.metrics import ResponseCacheMetrics
from inferkube.runtime.response_cache.keys import canonical_request, exact_key, scope_of, semantic_partition
from inferkube.runtime.response_cache.policy import REASON_BACKEND, REASON_TOO_LARGE, classify
from inferkube.runtime.response_cache.replay import (
    RecordedStream,
    StreamAssembler,
    fresh_body,
    sse_events,
    storable_body,
    stream_usage_wanted,
)
from inferkube.runtime.response_cache.semantic import SemanticMatcher, encode_member, last_user_text
from inferkube.runtime.response_cache.store import BackendUnavailable, CacheStore, CorruptEntry

log = logging.getLogger(__name__)

HIT, SEMANTIC_HIT, MISS, BYPASS = "hit", "semantic-hit", "miss", "bypass"
ENTRY_VERSION = 1


@dataclass
class CacheLookup:
    """What the cache decided for one request, and what it needs to store the answer later."""

    kind: str
    status: str
    started: float
    reason: str | None = None
    key: str | None = None
    store: bool = False
    body: dict[str, Any] | None = None
    similarity: float | None = None
    partition: str | None = None
    text: str | None = None
    vector: np.ndarray | None = None

    @property
    def hit(self) -> bool:
        """True when the answer comes from the cache."""
        return self.status in (HIT, SEMANTIC_HIT)

    def headers(self) -> dict[str, str]:
        """`x-inferkube-cache` (and the similarity of a semantic hit)."""
        headers = {HEADER_RESPONSE_CACHE: self.status}
        if self.similarity is not None:
            headers[HEADER_RESPONSE_CACHE_SIMILARITY] = f"{self.similarity:.4f}"
        return headers


async def _replay(events: list[str]) -> AsyncIterator[str]:
    for event in events:
        yield event


class ResponseCache:
    """Exact-match (and optionally semantic) cache of deterministic answers in one CacheStore."""

    def __init__(self, store: CacheStore, *, model: str, revision: str, ttl: float, scope: str,
                 metrics: ResponseCacheMetrics, semantic: SemanticMatcher | None = None) -> None:
        self.store = store
        self.model = model
        self.revision = revision
        self.ttl = ttl
        self.scope = scope
        self.metrics = metrics
        self.semantic = semantic
        self._tasks: set[asyncio.Task[Any]] = set()
        metrics.size_bytes.labels(model).set_function(lambda: float(store.size_bytes))

    def _bypass(self, look: CacheLookup, reason: str) -> CacheLookup:
        look.status, look.reason = BYPASS, reason
        self.metrics.bypasses.labels(self.model, reason).inc()
        return look

    async def lookup(self, kind: str, request: Any, tenant_name: str, cache_control: str | None,
                     started: float | None = None) -> CacheLookup:
        """Decide hit, miss or bypass for a parsed request (never raises for a backend failure)."""
        look = CacheLookup(kind=kind, status=MISS, started=started or time.perf_counter())
        rules = classify(request, cache_control)
        if not rules.lookup and not rules.store:
            return self._bypass(look, rules.reason or "")
        canonical = canonical_request(request)
        scope = scope_of(self.scope, tenant_name)
        look.key = exact_key(self.model, self.revision, kind, scope, canonical)
        look.store = rules.store
        if self.semantic is not None and kind == "chat":
            target = last_user_text(canonical)
            if target is not None:
                look.partition = semantic_partition(self.model, self.revision, kind, scope, canonical, target[0])
                look.text = target[1]
        if not rules.lookup:
            return self._bypass(look, rules.reason or "")
        try:
            look.body = await self._read(look.key, kind)
            if look.body is not None:
                look.status = HIT
            elif look.partition is not None:
                await self._semantic_lookup(look)
        except BackendUnavailable:
            look.store = False
            return self._bypass(look, REASON_BACKEND)
        if not look.hit:  # a hit is counted when it is answered (`respond`), not if a later check refuses it
            self.metrics.misses.labels(self.model).inc()
        return look

    async def _read(self, key: str, kind: str) -> dict[str, Any] | None:
        """The stored body under `key`; a value that does not decode is deleted and is a miss."""
        try:
            raw = await self.store.get(key)
        except CorruptEntry:
            log.warning("response cache: dropped a corrupt entry")
            return None
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            if entry["v"] == ENTRY_VERSION and entry["kind"] == kind and isinstance(entry["body"], dict):
                return dict(entry["body"])
        except (ValueError, KeyError, TypeError):
            pass
        log.warning("response cache: dropped a corrupt entry")
        await self.store.delete(key)
        return None

    async def _semantic_lookup(self, look: CacheLookup) -> None:
        assert self.semantic is not None and look.partition is not None and look.text is not None
        try:
            look.vector = await self.semantic.vector(look.text)
        except Exception as exc:  # noqa: BLE001 - a failing encoder makes this a plain miss, never an error
            log.warning("response cache: embedding failed: %s", type(exc).__name__)
            look.partition = None
            return
        members = await self.store.index_members(look.partition)
        best = self.semantic.best(look.vector, members)
        if best is None:
            return
        body = await self._read(best[0], look.kind)
        if body is not None:
            look.status, look.body, look.similarity = SEMANTIC_HIT, body, best[1]

    def respond(self, look: CacheLookup, request: Any, headers: dict[str, str] | None = None) -> Response:
        """The answer to a hit: the stored body with a fresh id and created, as JSON or as SSE."""
        assert look.body is not None
        body = fresh_body(look.kind, look.body)
        all_headers = {**(headers or {}), **look.headers()}
        if getattr(request, "stream", False):
            include_usage, continuous = stream_usage_wanted(request)
            events = sse_events(look.kind, body, include_usage, continuous)
            response: Response = StreamingResponse(_replay(events), media_type="text/event-stream",
                                                   headers=all_headers)
        else:
            response = JSONResponse(body, headers=all_headers)
        self.metrics.hits.labels(self.model, "semantic" if look.status == SEMANTIC_HIT else "exact").inc()
        self.metrics.hit_seconds.labels(self.model).observe(time.perf_counter() - look.started)
        return response

    def record(self, look: CacheLookup, result: Any, usage: Callable[[], tuple[int, int]]) -> Any:
        """On the way out of a miss: store a successful JSON answer, or pass a stream through and store
        it once it has been sent to its end. Returns what the caller should send."""
        if not look.store or look.key is None or getattr(result, "error", None) is not None:
            return result
        if hasattr(result, "model_dump"):
            self._spawn(self._store(look, result.model_dump()))
            return result
        if hasattr(result, "__aiter__"):
            def done(assembler: StreamAssembler) -> None:
                body = assembler.body(usage())
                if body is not None:
                    self._spawn(self._store(look, body))

            return RecordedStream(result, StreamAssembler(look.kind), done)
        return result

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _store(self, look: CacheLookup, body: dict[str, Any]) -> None:
        assert look.key is not None
        value = json.dumps({"v": ENTRY_VERSION, "kind": look.kind, "body": storable_body(body)},
                           separators=(",", ":"), ensure_ascii=False).encode()
        try:
            stored = await self.store.set(look.key, value, self.ttl)
            if not stored:
                self.metrics.bypasses.labels(self.model, REASON_TOO_LARGE).inc()
                return
            self.metrics.stored_bytes.labels(self.model).inc(stored)
            if self.semantic is not None and look.partition is not None and look.text is not None:
                vector = look.vector if look.vector is not None else await self.semantic.vector(look.text)
                await self.store.index_add(look.partition, encode_member(vector, look.key), self.ttl,
                                           self.semantic.cap)
        except BackendUnavailable:
            pass  # counted by the store; the answer was sent, it just is not kept
        except Exception as exc:  # noqa: BLE001 - storing is best effort and must never surface
            log.warning("response cache: storing failed: %s", type(exc).__name__)

    async def warm(self) -> None:
        """Load the semantic encoder before the server reports ready (a no-op for exact matching)."""
        if self.semantic is not None:
            await self.semantic.vector("warm up")

    async def drain(self) -> None:
        """Wait for pending stores (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Finish pending stores and release the backend."""
        await self.drain()
        await self.store.close()
