"""The response cache in Redis, shared by every replica: compressed values, TTLs kept by Redis.

It uses the same Redis as the rate limiter under its own key prefix. A Redis that fails or is slow
never fails a request: the call raises BackendUnavailable (the request bypasses the cache), and
Redis is then skipped for `down_for_seconds` so an outage costs nothing per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from inferkube.runtime.response_cache.store import BackendUnavailable, CorruptEntry

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_BACKEND_ERRORS = (RedisError, OSError, TimeoutError)
_ZLIB = b"z"  # format tag of a stored value: zlib-compressed bytes follow
_WARN_EVERY_SECONDS = 10.0


def compress(value: bytes) -> bytes:
    """The stored form of a value (tagged, zlib level 1: fast, ~3x on JSON text)."""
    return _ZLIB + zlib.compress(value, 1)


def decompress(stored: bytes) -> bytes:
    """The value from its stored form; CorruptEntry when it is not one of ours."""
    if not stored.startswith(_ZLIB):
        raise CorruptEntry("unknown format")
    try:
        return zlib.decompress(stored[1:])
    except zlib.error as exc:
        raise CorruptEntry("bad compression") from exc


class RedisStore:
    """Values in Redis strings (SET ... PX ttl), semantic index members in capped Redis lists."""

    name = "redis"

    def __init__(self, redis_url: str, *, timeout_seconds: float = 0.25, down_for_seconds: float = 1.0,
                 max_value_bytes: int = 1_048_576, client: aioredis.Redis | None = None) -> None:
        self._client = client or aioredis.Redis.from_url(
            redis_url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0), health_check_interval=0)
        self._timeout = timeout_seconds
        self._down_for = down_for_seconds
        self._down_until = 0.0
        self.max_value_bytes = max_value_bytes
        self.errors = 0
        self._last_warning = -_WARN_EVERY_SECONDS

    @property
    def size_bytes(self) -> int:
        """Redis holds the bytes, not this process."""
        return 0

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        if time.monotonic() < self._down_until:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise BackendUnavailable("redis marked down")
        try:
            async with asyncio.timeout(self._timeout):
                return await awaitable
        except _BACKEND_ERRORS as exc:
            self.errors += 1
            self._down_until = time.monotonic() + self._down_for
            now = time.monotonic()
            if now - self._last_warning >= _WARN_EVERY_SECONDS:
                self._last_warning = now
                log.warning("response cache: Redis unavailable (%s); serving without the cache",
                            type(exc).__name__)
            raise BackendUnavailable(type(exc).__name__) from exc

    async def get(self, key: str) -> bytes | None:
        """The value; a value that does not decode is deleted and reported as CorruptEntry."""
        stored: Any = await self._call(self._client.get(key))
        if stored is None:
            return None
        try:
            return decompress(bytes(stored))
        except CorruptEntry:
            await self.delete(key)
            raise

    async def set(self, key: str, value: bytes, ttl: float) -> int:
        """SET with a millisecond TTL; refuse values over max_value_bytes once compressed."""
        stored = compress(value)
        if len(stored) > self.max_value_bytes:
            return 0
        await self._call(self._client.set(key, stored, px=max(1, int(ttl * 1000))))
        return len(stored)

    async def delete(self, key: str) -> None:
        """DEL (errors are swallowed: a failed delete leaves an entry that expires by its TTL)."""
        try:
            await self._call(self._client.delete(key))
        except BackendUnavailable:
            pass

    async def index_add(self, partition: str, member: bytes, ttl: float, cap: int) -> None:
        """RPUSH + LTRIM to the newest `cap` + PEXPIRE, in one round trip."""
        pipe = self._client.pipeline(transaction=True)
        pipe.rpush(partition, compress(member))
        pipe.ltrim(partition, -cap, -1)
        pipe.pexpire(partition, max(1, int(ttl * 1000)))
        await self._call(pipe.execute())

    async def index_members(self, partition: str) -> list[bytes]:
        """LRANGE of the partition; members that do not decode are skipped."""
        raw: Any = await self._call(self._client.lrange(partition, 0, -1))
        members = []
        for item in raw or ():
            try:
                members.append(decompress(bytes(item)))
            except CorruptEntry:
                continue
        return members

    async def close(self) -> None:
        """Close the connection pool."""
        try:
            await self._client.aclose()
        except _BACKEND_ERRORS:
            pass
