"""The coalescing scheduler: transient API errors and bugs are retried alike but counted and logged apart;
a problem (a refused spec, a crash loop) raises one Warning Event per generation and reason."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from inferkube.operator import scheduler
from inferkube.operator.apply import TransientApiError
from inferkube.operator.reconcile import Outcome, Problem, Refusal
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


class EventWriter:
    """Records the Events posted through the writer."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def post_event(self, body: dict[str, Any]) -> None:
        self.events.append(body)


def _body(generation: int) -> dict[str, Any]:
    return {"apiVersion": "serving.inferkube.dev/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": generation}}


async def test_a_problem_raises_one_event_per_generation_and_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    refusal = Refusal("InvalidSpec", "unknown accelerator profile 'tpu'")
    outcomes = iter([
        Outcome(refused=refusal, problem=Problem("InvalidSpec", refusal.message, "Reconcile"), status_written=True),
        Outcome(refused=refusal, problem=Problem("InvalidSpec", refusal.message, "Reconcile")),
        Outcome(problem=Problem("CrashLoopBackOff", "restarted 7 times", "Reconcile")),
        Outcome(problem=Problem("CrashLoopBackOff", "restarted 8 times", "Reconcile")),  # same reason: no Event
        Outcome(),                                                                      # healthy again
        Outcome(problem=Problem("CrashLoopBackOff", "restarted 9 times", "Reconcile")),  # news again
    ])

    async def next_outcome(*_: Any, **__: Any) -> Outcome:
        return next(outcomes)

    monkeypatch.setattr(scheduler, "reconcile", next_outcome)
    writer = EventWriter()
    world = World()
    world.observe_service("ADDED", _body(1))
    reconciler = Reconciler(world, OperatorSettings(), writer, instance="inferkube-operator-7d9f-x2")
    for _ in range(6):
        await _settle(reconciler)
    assert [(e["reason"], e["message"]) for e in writer.events] == [
        ("InvalidSpec", refusal.message), ("CrashLoopBackOff", "restarted 7 times"),
        ("CrashLoopBackOff", "restarted 9 times")]
    event = writer.events[0]
    assert (event["type"], event["action"], event["reportingComponent"], event["reportingInstance"],
            event["source"]) == ("Warning", "Reconcile", "inferkube-operator", "inferkube-operator-7d9f-x2",
                                 {"component": "inferkube-operator"})
    assert event["involvedObject"] == {"apiVersion": "serving.inferkube.dev/v1alpha1", "kind": "InferenceService",
                                       "name": "m", "namespace": "ns", "uid": "u"}
    assert reconciler.stats.bugs == 0


def _configmap(text: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "data": {"settings.yaml": text},
            "metadata": {"name": "inferkube-operator-settings", "namespace": "inferkube-system", "uid": "c"}}


async def test_new_settings_apply_at_once_and_invalid_ones_keep_the_old(caplog: pytest.LogCaptureFixture) -> None:
    writer = EventWriter()
    world = World()
    world.observe_service("ADDED", _body(1))
    reconciler = Reconciler(world, OperatorSettings(), writer, instance="op-1")
    scheduled: list[Any] = []
    reconciler.schedule = scheduled.append  # type: ignore[method-assign]  # record instead of reconciling
    profile = "acceleratorProfiles:\n  tpu-v9:\n    resourceName: google.com/tpu\n"
    assert await reconciler.settings_changed("MODIFIED", _configmap(profile)) is True
    assert set(reconciler.settings.accelerator_profiles) == {"tpu-v9"} and scheduled == [KEY]
    assert await reconciler.settings_changed("MODIFIED", _configmap(profile)) is False, "unchanged: no reconciles"
    with caplog.at_level(logging.ERROR, logger="inferkube.operator"):
        for _ in range(2):  # the same invalid ConfigMap seen twice: one Event
            assert await reconciler.settings_changed("MODIFIED", _configmap("acceleratorProfiles: 7\n")) is False
        assert await reconciler.settings_changed("DELETED", _configmap(profile)) is False
    assert set(reconciler.settings.accelerator_profiles) == {"tpu-v9"}, "the old settings stay"
    assert scheduled == [KEY], "nothing is reconciled (or torn down) with invalid settings"
    [event] = writer.events
    assert (event["reason"], event["action"], event["involvedObject"]["kind"]) == (
        "InvalidSettings", "LoadSettings", "ConfigMap")
    assert "acceleratorProfiles" in event["message"] and "keeps the settings in use" in event["message"]
    assert any("keeping the settings in use" in r.getMessage() for r in caplog.records)
