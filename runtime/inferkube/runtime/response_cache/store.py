"""What the response cache needs from a backend (in-process LRU or Redis), and the errors it raises."""

from __future__ import annotations

from typing import Protocol


class BackendUnavailable(Exception):
    """The backend could not be used for this request (the request is served without the cache)."""


class CorruptEntry(Exception):
    """A stored value could not be decoded; the backend has deleted it."""


class CacheStore(Protocol):
    """Bytes by key with a TTL, plus small per-partition lists for the semantic index."""

    name: str

    @property
    def size_bytes(self) -> int:
        """Bytes held in this process (0 for a remote backend)."""

    async def get(self, key: str) -> bytes | None:
        """The value, or None when absent or expired; BackendUnavailable / CorruptEntry on failure."""

    async def set(self, key: str, value: bytes, ttl: float) -> int:
        """Store `value` for `ttl` seconds; returns the bytes it occupies (0 when refused as too large)."""

    async def delete(self, key: str) -> None:
        """Remove `key` (absent is fine)."""

    async def index_add(self, partition: str, member: bytes, ttl: float, cap: int) -> None:
        """Append `member` to the partition's list, keep the newest `cap`, expire after `ttl`."""

    async def index_members(self, partition: str) -> list[bytes]:
        """The partition's members, oldest first."""

    async def close(self) -> None:
        """Release connections."""
