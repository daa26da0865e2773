"""The response cache's Redis store against a real `redis-server` on 127.0.0.1 (no engine needed):
shared entries, compressed values with Redis TTLs under their own prefix, corrupt entries deleted,
and an outage that turns into counted bypasses instead of errors."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry

from inferkube.runtime.context import CHAT
from inferkube.runtime.metrics import ResponseCacheMetrics
from inferkube.runtime.response_cache import BYPASS, HIT, MISS, ResponseCache
from inferkube.runtime.response_cache.keys import KEY_PREFIX
from inferkube.runtime.response_cache.redis_store import RedisStore, decompress
from inferkube.runtime.tenancy.redis_limiter import KEY_PREFIX as RATE_LIMIT_PREFIX
from inferkube.runtime.validation import request_model
from tests.redis_server import RedisServer, needs_redis_server

pytestmark = needs_redis_server
BODY = {"object": "chat.completion", "model": "tiny", "usage": {"prompt_tokens": 3, "completion_tokens": 4},
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello " * 50},
                     "finish_reason": "stop"}]}


class Result:
    def model_dump(self) -> dict[str, Any]:
        return {"id": "chatcmpl-1", "created": 1, **BODY}


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer(tmp_path) as server:
        yield server


def replica(url: str, ttl: float = 60) -> ResponseCache:
    return ResponseCache(RedisStore(url, timeout_seconds=0.25, down_for_seconds=0.2), model="tiny",
                         revision="r1", ttl=ttl, scope="tenant", metrics=ResponseCacheMetrics(CollectorRegistry()))


def chat(text: str = "hi") -> Any:
    return request_model(CHAT).model_validate({"model": "tiny", "temperature": 0,
                                               "messages": [{"role": "user", "content": text}]})


async def store_one(cache: ResponseCache, text: str = "hi") -> str:
    look = await cache.lookup(CHAT, chat(text), "a", None)
    assert look.status == MISS and look.key
    cache.record(look, Result(), usage=lambda: (0, 0))
    await cache.drain()
    return look.key


async def test_two_replicas_share_entries_compressed_with_a_redis_ttl(redis_server: RedisServer) -> None:
    a, b = replica(redis_server.url), replica(redis_server.url)
    key = await store_one(a)
    hit = await b.lookup(CHAT, chat(), "a", None)
    assert hit.status == HIT and hit.body is not None and hit.body["choices"] == BODY["choices"]
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    stored = client.get(key)
    assert key.startswith(KEY_PREFIX + ":") and not key.startswith(RATE_LIMIT_PREFIX)
    assert stored is not None and len(stored) < len(decompress(stored)) / 3  # compressed
    assert 0 < client.pttl(key) <= 60_000
    await a.close()
    await b.close()


async def test_entries_expire_by_redis_ttl(redis_server: RedisServer) -> None:
    cache = replica(redis_server.url, ttl=0.3)
    await store_one(cache)
    assert (await cache.lookup(CHAT, chat(), "a", None)).status == HIT
    await asyncio.sleep(0.5)
    assert (await cache.lookup(CHAT, chat(), "a", None)).status == MISS
    await cache.close()


async def test_a_corrupt_entry_is_a_miss_and_is_deleted(redis_server: RedisServer) -> None:
    cache = replica(redis_server.url)
    key = await store_one(cache)
    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    client.set(key, b"garbage")
    assert (await cache.lookup(CHAT, chat(), "a", None)).status == MISS
    assert client.exists(key) == 0
    client.set(key, b"z" + b"\x00not zlib")
    assert (await cache.lookup(CHAT, chat(), "a", None)).status == MISS and client.exists(key) == 0
    await cache.close()


async def test_redis_down_is_a_counted_bypass_then_recovers(redis_server: RedisServer) -> None:
    cache = replica(redis_server.url)
    await store_one(cache)
    redis_server.stop()
    for _ in range(3):
        look = await cache.lookup(CHAT, chat(), "a", None)
        assert (look.status, look.reason, look.store) == (BYPASS, "backend_unavailable", False)
    assert cache.metrics.bypasses.labels("tiny", "backend_unavailable")._value.get() == 3
    redis_server.start()
    deadline = asyncio.get_running_loop().time() + 5
    while (await cache.lookup(CHAT, chat(), "a", None)).status == BYPASS:
        assert asyncio.get_running_loop().time() < deadline, "never recovered"
        await asyncio.sleep(0.1)
    await cache.close()


async def test_semantic_index_lives_in_capped_redis_lists(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url)
    for i in range(5):
        await store.index_add(KEY_PREFIX + ":s:p", f"m{i}".encode(), ttl=60, cap=3)
    assert await store.index_members(KEY_PREFIX + ":s:p") == [b"m2", b"m3", b"m4"]
    await store.close()
