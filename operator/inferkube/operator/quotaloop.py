"""Drives the quota passes: when to recompute decisions, whom to reconcile after, and quota status writes.

Watch events (quotas, namespaces, services, Deployment replica counts) mark the ``QuotaBook`` dirty and
request a pass. Passes are coalesced (at most one per ``min_interval``; the first at once) and held until
the operator's start-up settle time, so a pass never decides on a half-listed world. After a pass every
service whose decision changed is scheduled for reconcile, and every quota whose computed status differs
from its stored one gets one status patch: this loop is the only writer of InferenceQuota status.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Callable, Mapping
from typing import Any

from inferkube.api.quota import InferenceQuotaStatus
from inferkube.api.status import Condition
from inferkube.operator.apply import KubeWriter, TransientApiError
from inferkube.operator.quota import Key
from inferkube.operator.quotabook import QuotaBook, service_signature
from inferkube.operator.status import status_patch
from inferkube.operator.world import live_replicas

log = logging.getLogger("inferkube.operator.quota")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class QuotaLoop:
    """Owns the QuotaBook and runs its passes; the reconciler asks it for decisions."""

    def __init__(self, services: Mapping[Key, dict[str, Any]], running: Callable[[Key], int], writer: KubeWriter,
                 schedule: Callable[[Key], None], min_interval: float = 0.1, status_interval: float = 1.0) -> None:
        self.book = QuotaBook()
        self._services = services
        self._running = running
        self._writer = writer
        self._schedule = schedule
        self._min_interval = min_interval
        self._timer: asyncio.TimerHandle | None = None
        self._deferred: set[Key] = set()  # reconciles that waited for a pass: rescheduled after it, changed or not
        self._last = -1e9
        self._ready_at = 0.0
        self._writing: asyncio.Task[None] | None = None
        self._rewrite = False
        self._status_interval = status_interval  # a burst of changes becomes one status write per quota
        self._last_write = -1e9
        self.status_writes = 0

    def hold_until_settled(self, seconds: float) -> None:
        """No pass before the watches have listed the world (a pass on half a world could refuse what runs)."""
        self._ready_at = asyncio.get_running_loop().time() + seconds

    def changed(self) -> None:
        """Something decisions depend on changed: mark dirty and request a pass."""
        if self.book.active:
            self.book.dirty = True
            self.request_pass()

    def service_event(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """An InferenceService event: a pass only when what decisions read changed (not for status writes)."""
        if service_signature(old) != service_signature(new):
            self.changed()

    def deployment_event(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """A Deployment event: a pass only when the replicas it runs changed."""
        if live_replicas(old) != live_replicas(new):
            self.changed()

    def request_pass(self) -> None:
        """Run a pass soon (coalesced)."""
        if self._timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, self._ready_at - loop.time(), self._last + self._min_interval - loop.time())
        self._timer = loop.call_later(delay, self._pass)

    def _pass(self) -> None:
        """One pass: recompute, schedule services whose decision changed, write changed quota statuses."""
        self._timer = None
        self._last = asyncio.get_running_loop().time()
        deferred, self._deferred = self._deferred, set()
        for key in sorted(self.book.recompute(self._services, self._running) | deferred):
            if key in self._services:
                self._schedule(key)
        self.write_statuses()

    def pending(self, key: Key, body: dict[str, Any]) -> bool:
        """True when the service must wait for a pass (which will schedule it)."""
        if self.book.pending(key, body, self._running(key)):
            self._deferred.add(key)
            self.request_pass()
            return True
        return False

    def write_statuses(self) -> None:
        """Start (or re-run once after) the single status writer."""
        if self._writing is not None and not self._writing.done():
            self._rewrite = True
            return
        self._writing = asyncio.ensure_future(self._write_all())

    def desired_status(self, name: str) -> InferenceQuotaStatus | None:
        """What a quota's status should be now (invalid quotas say why, with Ready=False)."""
        if name in self.book.invalid:
            return InferenceQuotaStatus(conditions=[Condition(type="Ready", status="False", reason="InvalidSpec",
                                                              message=self.book.invalid[name])])
        return self.book.quota_status(name)

    async def _write_all(self) -> None:
        """Patch every quota whose status differs from what the watch last showed; retry transient failures."""
        while True:
            loop = asyncio.get_running_loop()
            await asyncio.sleep(max(0.0, self._last_write + self._status_interval - loop.time()))
            self._last_write = loop.time()
            self._rewrite = False
            for name in sorted(set(self.book.quotas) | set(self.book.invalid)):
                status = self.desired_status(name)
                if status is None:
                    continue
                patch = status_patch(status, self.book.statuses.get(name), _now())  # type: ignore[arg-type]  # status_patch only dumps the model and reads its conditions
                if patch is None:
                    continue
                try:
                    written = await self._writer.patch_quota_status(name, patch)
                except TransientApiError as exc:
                    log.warning("InferenceQuota %s: status write failed (%s); retrying", name, exc)
                    self._rewrite = True
                    await asyncio.sleep(1.0)
                    continue
                self.status_writes += 1
                if written.get("metadata"):
                    self.book.observe_quota("MODIFIED", written)
            if not self._rewrite:
                return

    async def close(self) -> None:
        """Stop pending passes and the writer."""
        if self._timer is not None:
            self._timer.cancel()
        if self._writing is not None:
            self._writing.cancel()
            await asyncio.gather(self._writing, return_exceptions=True)
