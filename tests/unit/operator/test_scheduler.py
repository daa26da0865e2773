"""The coalescing scheduler: transient API errors and bugs are retried alike but counted and logged apart;
a refused spec raises one Warning Event per generation and message."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from inferkube.operator import scheduler
from inferkube.operator.apply import TransientApiError
from inferkube.operator.reconcile import Outcome, Refusal
from inferkube.operator.scheduler import Reconciler
from inferkube.operator.settings import OperatorSettings
from inferkube.operator.world import World

KEY = ("ns", "m")


def _reconciler(generation: int = 1) -> Reconciler:
    world = World()
    world.observe_service("ADDED", {"metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": generation}})
    return Reconciler(world, OperatorSettings(), writer=None)  # reconcile is replaced by the tests


def _reconcile_raising(monkeypatch: pytest.MonkeyPatch, error: Exception) -> list[int]:
    calls: list[int] = []

    async def fake(*_: Any, **__: Any) -> Outcome:
        calls.append(1)
        if len(calls) == 1:
            raise error
        return Outcome()

    monkeypatch.setattr(scheduler, "reconcile", fake)
    return calls


async def _settle(reconciler: Reconciler) -> None:
    reconciler.schedule(KEY)
    await asyncio.wait_for(reconciler._tasks[KEY], timeout=10)


async def test_a_bug_is_counted_as_a_bug_and_logged_with_its_traceback(monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    calls = _reconcile_raising(monkeypatch, KeyError("metadata"))
    reconciler = _reconciler()
    with caplog.at_level(logging.WARNING, logger="inferkube.operator"):
        await _settle(reconciler)
    assert (reconciler.stats.bugs, reconciler.stats.transient_errors, len(calls)) == (1, 0, 2), "retried once"
    [record] = [r for r in caplog.records if "unexpectedly" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is KeyError


async def test_a_transient_api_error_is_a_warning_without_traceback(monkeypatch: pytest.MonkeyPatch,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    calls = _reconcile_raising(monkeypatch, TransientApiError(503, "503 Service Unavailable: etcd"))
    reconciler = _reconciler()
    with caplog.at_level(logging.WARNING, logger="inferkube.operator"):
        await _settle(reconciler)
    assert (reconciler.stats.bugs, reconciler.stats.transient_errors, len(calls)) == (0, 1, 2)
    [record] = [r for r in caplog.records if "503" in r.getMessage()]
    assert record.levelno == logging.WARNING and not record.exc_info


async def test_a_refusal_raises_one_event_per_generation_and_message(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = Refusal("InvalidSpec", "unknown accelerator profile 'tpu'")

    async def refused(*_: Any, **__: Any) -> Outcome:
        return Outcome(refused=refusal, status_written=True)

    events: list[dict[str, Any]] = []
    monkeypatch.setattr(scheduler, "reconcile", refused)
    monkeypatch.setattr(scheduler.kopf, "event", lambda body, **kw: events.append(kw))
    reconciler = _reconciler()
    await _settle(reconciler)
    await _settle(reconciler)
    assert events == [{"type": "Warning", "reason": "InvalidSpec", "message": refusal.message}]
    assert reconciler.stats.status_writes == 2 and reconciler.stats.bugs == 0
