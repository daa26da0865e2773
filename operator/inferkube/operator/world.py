"""The operator's view of the cluster (fed by watches) and the coalescing reconcile scheduler."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

import kopf

from inferkube.api import contract
from inferkube.operator.apply import KubeWriter, PermanentApiError, TransientApiError
from inferkube.operator.builders import SpecError
from inferkube.operator.reconcile import reconcile, report_invalid
from inferkube.operator.settings import OperatorSettings
from inferkube.operator.status import Children

log = logging.getLogger("inferkube.operator")
Key = tuple[str, str]  # (namespace, InferenceService name)
OPTIONAL_APIS = {
    "servicemonitors.monitoring.coreos.com": "ServiceMonitor",
    "prometheusrules.monitoring.coreos.com": "PrometheusRule",
    "scaledobjects.keda.sh": "ScaledObject",
}


def _rv(body: dict[str, Any]) -> int:
    """resourceVersion as a number for ordering watch events (0 when not numeric)."""
    try:
        return int(body.get("metadata", {}).get("resourceVersion") or 0)
    except ValueError:
        return 0


@dataclass
class World:
    """InferenceServices, their children and the served optional APIs, as the watches report them."""

    services: dict[Key, dict[str, Any]] = field(default_factory=dict)
    children: dict[Key, dict[str, dict[str, dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(dict))
    )
    apis: set[str] = field(default_factory=set)

    def observe_service(self, event_type: str | None, body: dict[str, Any]) -> Key | None:
        """Record an InferenceService event; the key to reconcile, or None."""
        meta = body["metadata"]
        key = (meta.get("namespace", "default"), meta["name"])
        if event_type == "DELETED":
            self.services.pop(key, None)
            return None
        current = self.services.get(key)
        if current is not None and _rv(body) and _rv(body) < _rv(current):
            return None  # an older copy than one we already hold (e.g. our own write's response)
        self.services[key] = body
        return key

    def observe_child(self, event_type: str | None, body: dict[str, Any]) -> Key | None:
        """Record a child (or pod) event; the owning InferenceService's key, or None."""
        meta = body["metadata"]
        owner = (meta.get("labels") or {}).get(contract.LABEL_ISVC)
        if not owner:
            return None
        key = (meta.get("namespace", "default"), owner)
        if event_type == "DELETED":
            kinds = self.children.get(key)
            if kinds is not None:
                kinds.get(body["kind"], {}).pop(meta["name"], None)
                if not any(kinds.values()):
                    del self.children[key]
        else:
            kind_map = self.children[key][body["kind"]]
            current = kind_map.get(meta["name"])
            if current is not None and _rv(body) and _rv(body) < _rv(current):
                return None
            kind_map[meta["name"]] = body
        return key if key in self.services else None

    def observe_crd(self, event_type: str | None, name: str, body: dict[str, Any]) -> bool:
        """Record an optional CRD; True when the set of served optional APIs changed."""
        kind = OPTIONAL_APIS.get(name)
        if kind is None:
            return False
        conditions = (body.get("status") or {}).get("conditions") or []
        established = any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)
        served = event_type != "DELETED" and (established or not conditions)
        before = set(self.apis)
        (self.apis.add if served else self.apis.discard)(kind)
        return before != self.apis

    def children_of(self, key: Key) -> Children:
        """A snapshot of one InferenceService's live children."""
        return Children({kind: list(objs.values()) for kind, objs in self.children.get(key, {}).items()})


@dataclass
class Stats:
    """Counters the benchmark and tests read."""

    reconciles: int = 0
    applies: int = 0
    status_writes: int = 0
    transient_errors: int = 0


class Reconciler:
    """Runs at most one reconcile per InferenceService at a time; events during a run coalesce into one rerun."""

    def __init__(self, world: World, settings: OperatorSettings, writer: KubeWriter) -> None:
        self.world = world
        self.settings = settings
        self.writer = writer
        self.stats = Stats()
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._dirty: set[Key] = set()
        self._invalid: dict[Key, tuple[Any, str]] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._ready_at = 0.0

    def hold_until_settled(self, seconds: float) -> None:
        """Defer reconciles for a moment after start-up, so the watches list the children first
        (otherwise a restart would briefly report a Ready service as CachingModel)."""
        self._ready_at = asyncio.get_running_loop().time() + seconds

    def schedule(self, key: Key) -> None:
        """Reconcile key soon; if a reconcile of key is running, run once more after it."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._ready_at:
            if key not in self._timers:
                self._timers[key] = loop.call_later(self._ready_at - loop.time(), self._release, key)
            return
        if key in self._tasks:
            self._dirty.add(key)
            return
        self._tasks[key] = asyncio.create_task(self._run(key), name=f"reconcile {key[0]}/{key[1]}")

    def _release(self, key: Key) -> None:
        """The start-up hold of key is over."""
        self._timers.pop(key, None)
        self.schedule(key)

    def schedule_all(self) -> None:
        """Reconcile every known InferenceService."""
        for key in list(self.world.services):
            self.schedule(key)

    async def resync_forever(self, interval: float) -> None:
        """Periodic level-based resync: catches anything the watches missed."""
        while True:
            await asyncio.sleep(interval)
            self.schedule_all()

    async def close(self) -> None:
        """Cancel running reconciles."""
        for timer in self._timers.values():
            timer.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _run(self, key: Key) -> None:
        failures = 0
        try:
            while True:
                self._dirty.discard(key)
                body = self.world.services.get(key)
                if body is None or body["metadata"].get("deletionTimestamp"):
                    return
                try:
                    await self._once(key, body)
                    failures = 0
                except Exception as exc:  # transient API failures and bugs alike: back off and retry
                    failures += 1
                    self.stats.transient_errors += 1
                    delay = min(30.0, 0.2 * 2 ** (failures - 1))
                    if isinstance(exc, TransientApiError):
                        log.warning("reconcile %s/%s: %s; retrying in %.1fs", *key, exc, delay)
                    else:
                        log.exception("reconcile %s/%s failed unexpectedly; retrying in %.1fs", *key, delay)
                    await asyncio.sleep(delay)
                    self._dirty.add(key)
                if key not in self._dirty:
                    return
        finally:
            self._tasks.pop(key, None)

    async def _once(self, key: Key, body: dict[str, Any]) -> None:
        """One reconcile; spec errors and rejected writes become conditions and one Event each, not retries."""
        self.stats.reconciles += 1
        try:
            outcome = await reconcile(body, self.world.children_of(key), set(self.world.apis), self.settings,
                                      self.writer, self._remember)
        except SpecError as exc:
            await self._report(key, body, "InvalidSpec", str(exc))
            return
        except PermanentApiError as exc:
            await self._report(key, body, "ApplyRejected", f"the API server rejected a child: {exc}"[:1000])
            return
        self._invalid.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if outcome.requeue_after is not None:
            self._timers[key] = asyncio.get_running_loop().call_later(outcome.requeue_after, self.schedule, key)
        self.stats.applies += len(outcome.applied) + len(outcome.deleted)
        self.stats.status_writes += int(outcome.status_written)

    async def _report(self, key: Key, body: dict[str, Any], reason: str, message: str) -> None:
        """Ready=False with reason, and one Warning Event per (generation, message): no retry storm."""
        if await report_invalid(body, reason, message, self.writer):
            self.stats.status_writes += 1
        generation = body["metadata"].get("generation")
        if self._invalid.get(key) != (generation, message):
            self._invalid[key] = (generation, message)
            log.error("InferenceService %s/%s: %s: %s", *key, reason, message)
            kopf.event(kopf.Body(cast(kopf.RawBody, body)), type="Warning", reason=reason, message=message)

    def _remember(self, written: dict[str, Any]) -> None:
        """Feed our own write's response into the world, so the next reconcile does not write it again."""
        if written.get("kind") == contract.KIND:
            self.world.observe_service("MODIFIED", written)
        elif written.get("kind"):
            self.world.observe_child("MODIFIED", written)
