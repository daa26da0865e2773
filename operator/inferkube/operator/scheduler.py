"""The coalescing reconcile scheduler: at most one reconcile per InferenceService at a time.

Watch events only mark an InferenceService dirty; a run picks up everything that changed meanwhile in
one rerun. API errors back off (0.2 s doubling to 30 s); anything else that escapes a reconcile is a
bug: logged with its traceback, counted apart, and retried the same way.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from dataclasses import dataclass
from typing import Any

from inferkube.api import contract
from inferkube.operator import kinds
from inferkube.operator.apply import ApiError, KubeWriter
from inferkube.operator.events import ACTION_ADMIT, ACTION_LOAD_SETTINGS, event_body, reporting_instance
from inferkube.operator.quota import REFUSED, ServiceDecision
from inferkube.operator.quotaloop import QuotaLoop
from inferkube.operator.reconcile import Problem, reconcile
from inferkube.operator.settings import OperatorSettings, SettingsError, settings_from_configmap
from inferkube.operator.world import Key, World

log = logging.getLogger("inferkube.operator")
INVALID_SETTINGS = "InvalidSettings"  # the Event reason when the settings ConfigMap cannot be used


@dataclass
class Stats:
    """Counters the benchmark and tests read."""

    reconciles: int = 0
    applies: int = 0
    status_writes: int = 0
    # The API server failed (5xx, 409, 429, unreachable) or refused the status write (e.g. 404: deleted meanwhile);
    # refused children never get here (they become ApplyRejected).
    transient_errors: int = 0
    bugs: int = 0              # anything else escaping a reconcile: logged with its traceback


class Reconciler:
    """Runs at most one reconcile per InferenceService at a time; events during a run coalesce into one rerun."""

    def __init__(self, world: World, settings: OperatorSettings, writer: KubeWriter,
                 instance: str | None = None) -> None:
        self.world = world
        self.settings = settings
        self.writer = writer
        self.instance = instance or reporting_instance()  # the Events' reportingInstance
        self.stats = Stats()
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._dirty: set[Key] = set()
        self._warned: dict[Key, set[tuple[Any, str]]] = {}  # (generation, reason) posted per service
        self._settings_problem: str | None = None  # the invalid settings ConfigMap's problem, once posted
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._ready_at = 0.0
        self._quota_warned: dict[Key, str] = {}
        self.quotas = QuotaLoop(world.services, world.replicas_running, writer, self.schedule)

    def hold_until_settled(self, seconds: float) -> None:
        """Defer reconciles for a moment after start-up, so the watches list the children first
        (otherwise a restart would briefly report a Ready service as CachingModel, or a quota pass
        could refuse a service whose running Deployment it has not seen yet)."""
        self._ready_at = asyncio.get_running_loop().time() + seconds
        self.quotas.hold_until_settled(seconds)

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

    async def resync_forever(self) -> None:
        """Periodic level-based resync: catches anything the watches missed (the period is read each round,
        so a settings reload changes it)."""
        while True:
            await asyncio.sleep(self.settings.resync_interval_seconds)
            self.schedule_all()

    async def settings_changed(self, event_type: str | None, configmap: dict[str, Any]) -> bool:
        """The settings ConfigMap changed: valid new settings take effect and every InferenceService is
        reconciled with them; invalid ones (or a deleted ConfigMap) keep the settings in use, and say why
        in the log and in one Warning Event on the ConfigMap. True when the settings changed."""
        meta = configmap.get("metadata") or {}
        where = f"{meta.get('namespace')}/{meta.get('name')}"
        if event_type == "DELETED":
            log.warning("settings ConfigMap %s was deleted; keeping the settings in use", where)
            return False
        try:
            new = settings_from_configmap(configmap)
        except SettingsError as exc:
            log.error("%s; keeping the settings in use", exc)
            if self._settings_problem != str(exc):
                self._settings_problem = str(exc)
                await self.post_warning(configmap, INVALID_SETTINGS, f"{exc}; the operator keeps the settings in use",
                                        ACTION_LOAD_SETTINGS)
            return False
        self._settings_problem = None
        if new == self.settings:
            return False
        self.settings = new
        log.info("settings reloaded from ConfigMap %s; reconciling every InferenceService", where)
        self.schedule_all()
        return True

    async def close(self) -> None:
        """Cancel running reconciles and quota passes."""
        await self.quotas.close()
        for timer in self._timers.values():
            timer.cancel()
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _run(self, key: Key) -> None:
        """Reconcile key until no event arrived during the last run; back off after failures."""
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
                except Exception as exc:  # a failed reconcile must never stop the scheduler
                    failures += 1
                    delay = min(30.0, 0.2 * 2 ** (failures - 1))
                    self._count_failure(key, exc, delay)
                    await asyncio.sleep(delay)
                    self._dirty.add(key)
                if key not in self._dirty:
                    return
        finally:
            self._tasks.pop(key, None)

    def _count_failure(self, key: Key, exc: Exception, delay: float) -> None:
        """An API error is a warning; anything else is a bug, logged with its traceback."""
        if isinstance(exc, ApiError):
            self.stats.transient_errors += 1
            log.warning("reconcile %s/%s: %s; retrying in %.1fs", *key, exc, delay)
        else:
            self.stats.bugs += 1
            log.error("reconcile %s/%s failed unexpectedly (a bug); retrying in %.1fs", *key, delay, exc_info=exc)

    async def _once(self, key: Key, body: dict[str, Any]) -> None:
        """One reconcile; a problem gets one Warning Event per generation and reason; a refusal is not retried."""
        self.stats.reconciles += 1
        if self.quotas.pending(key, body):
            return  # a quota selects it and the next pass decides it (and schedules it again)
        quota = self.quotas.book.decision(key)
        outcome = await reconcile(body, self.world.children_of(key), set(self.world.apis), self.settings,
                                  self.writer, self._remember, quota, self._forget)
        self.stats.status_writes += int(outcome.status_written)
        self.stats.applies += len(outcome.applied) + len(outcome.deleted)
        if outcome.problem is None:
            self._warned.pop(key, None)  # healthy again: the next problem is news
        else:
            await self._warn_once(key, body, outcome.problem)
        await self._warn_quota(key, body, quota)
        if outcome.refused is not None:
            return
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if outcome.requeue_after is not None:
            self._timers[key] = asyncio.get_running_loop().call_later(outcome.requeue_after, self.schedule, key)

    async def _warn_once(self, key: Key, body: dict[str, Any], problem: Problem) -> None:
        """One log line and one Warning Event per (generation, reason): no Event per resync or restart count."""
        seen = self._warned.setdefault(key, set())
        mark = (body["metadata"].get("generation"), problem.reason)
        if mark in seen:
            return
        seen.add(mark)
        log.warning("InferenceService %s/%s: %s: %s", *key, problem.reason, problem.message)
        if not await self.post_warning(body, problem.reason, problem.message, problem.action):
            seen.discard(mark)  # try again on the next reconcile

    async def post_warning(self, involved: dict[str, Any], reason: str, message: str, action: str) -> bool:
        """Post a Warning Event about involved, reported by this operator pod; False when the API refused it."""
        body = event_body(involved, "Warning", reason, message, action, self.instance,
                          datetime.datetime.now(datetime.UTC))
        try:
            await self.writer.post_event(body)
        except ApiError as exc:
            log.warning("could not post the %s Event about %s: %s", reason, involved["metadata"]["name"], exc)
            return False
        return True

    async def _warn_quota(self, key: Key, body: dict[str, Any], quota: ServiceDecision | None) -> None:
        """One Warning Event per quota refusal message (not per reconcile)."""
        if quota is None or quota.reason != REFUSED:
            self._quota_warned.pop(key, None)
        elif self._quota_warned.get(key) != quota.message:
            self._quota_warned[key] = quota.message
            if not await self.post_warning(body, contract.CONDITION_QUOTA_EXCEEDED, quota.message, ACTION_ADMIT):
                self._quota_warned.pop(key, None)  # try again on the next reconcile

    def _forget(self, deleted: dict[str, Any]) -> None:
        """A child of an unwatched kind we deleted: no watch event will tell the world."""
        self.world.observe_child("DELETED", deleted)

    def _remember(self, written: dict[str, Any]) -> None:
        """Feed our own write's response into the world, so the next reconcile does not write it again."""
        if written.get("kind") == contract.KIND:
            self.world.observe_service("MODIFIED", written)
        elif written.get("kind"):
            before = self.world.known_child(written) if written["kind"] == kinds.DEPLOYMENT.kind else None
            self.world.observe_child("MODIFIED", written)
            if written["kind"] == kinds.DEPLOYMENT.kind:  # its watch event will find the world already updated
                self.quotas.deployment_event(before, written)
