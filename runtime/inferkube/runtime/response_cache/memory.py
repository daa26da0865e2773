"""The in-process response cache: an LRU bounded by entries and bytes, entries expiring after their TTL."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable


class MemoryStore:
    """LRU of byte values; the least recently used entries go first when a bound is reached."""

    name = "memory"

    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._index: dict[str, deque[tuple[float, bytes]]] = {}

    @property
    def size_bytes(self) -> int:
        """Bytes of the values held now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= len(value)

    async def get(self, key: str) -> bytes | None:
        """The value (and mark it recently used), or None when absent or expired."""
        item = self._entries.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self._clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> int:
        """Store `value`, evicting least recently used entries; refuse a value larger than max_bytes."""
        if len(value) > self.max_bytes:
            return 0
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + ttl, value)
        self._bytes += len(value)
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))
        return len(value)

    async def delete(self, key: str) -> None:
        """Remove `key` if present."""
        if key in self._entries:
            self._drop(key)

    async def index_add(self, partition: str, member: bytes, ttl: float, cap: int) -> None:
        """Append to the partition's list (newest `cap` kept); members expire after `ttl`."""
        members = self._index.setdefault(partition, deque(maxlen=cap))
        members.append((self._clock() + ttl, member))
        while len(self._index) > self.max_entries:  # partitions are bounded like entries
            del self._index[next(iter(self._index))]

    async def index_members(self, partition: str) -> list[bytes]:
        """Unexpired members of the partition, oldest first."""
        members = self._index.get(partition)
        if not members:
            return []
        now = self._clock()
        while members and members[0][0] <= now:
            members.popleft()
        if not members:
            del self._index[partition]
        return [member for _, member in members]

    async def close(self) -> None:
        """Nothing to release."""
