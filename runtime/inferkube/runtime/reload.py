"""Reload a mounted file (tenants Secret, tenant-policy ConfigMap) when Kubernetes swaps it, without a restart.

Secret and ConfigMap volumes are updated atomically: the kubelet writes a new timestamped directory and
renames the ``..data`` symlink to point at it, so the file's path stays the same while the file it
resolves to changes. inotify on the path itself misses that swap (the watched inode is not modified),
so the watcher polls what the path resolves to (real path, inode, mtime, size): one ``stat`` a second.
A new file that does not parse keeps the old value in force; the reason is logged once per version
and counted, and the next good version is picked up as usual.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger("inferkube.runtime.reload")
T = TypeVar("T")
Signature = tuple[str, int, int, int] | None


def file_signature(path: Path) -> Signature:
    """What identifies the file version behind `path` (following symlinks); None when it is absent."""
    try:
        real = os.path.realpath(path)
        st = os.stat(real)
    except OSError:
        return None
    return (real, st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass
class ReloadCounts:
    """How often a watched file was reloaded, and how often a new version was refused."""

    reloads: int = 0
    errors: int = 0


class FileWatcher(Generic[T]):
    """Calls `load(path)` whenever the file behind `path` changes; `apply` gets each good result.

    `load` raises (any Exception) for a broken file: the old value stays, `on_error(message)` is
    called and the error is counted. It may also decide what an absent file means.
    """

    def __init__(self, path: Path, load: Callable[[Path], T], apply: Callable[[T], None], *,
                 name: str, interval: float = 1.0, on_error: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        self.name = name
        self.interval = interval
        self.counts = ReloadCounts()
        self._load = load
        self._apply = apply
        self._on_error = on_error
        self._seen: Signature = file_signature(self.path)

    def check(self) -> bool:
        """Reload if the file changed since the last check; True when a new value was applied."""
        signature = file_signature(self.path)
        if signature == self._seen:
            return False
        self._seen = signature
        try:
            value = self._load(self.path)
        except Exception as exc:  # noqa: BLE001 - any parse failure keeps the old policy in force
            self.counts.errors += 1
            message = f"{self.name}: new version of {self.path} refused, keeping the previous one: {exc}"
            log.error("%s", message)
            if self._on_error is not None:
                self._on_error(message)
            return False
        self._apply(value)
        self.counts.reloads += 1
        log.info("%s: reloaded %s", self.name, self.path)
        return True

    async def run(self) -> None:
        """Check every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.check()
