"""QuotaLoop: passes are coalesced, held until settled, reschedule what changed or waited, and write quota status once."""

from __future__ import annotations

import asyncio
from typing import Any

from inferkube.operator.quotaloop import QuotaLoop

Key = tuple[str, str]


class FakeWriter:
    """Records quota status patches and answers like the API server (the patched object)."""

    def __init__(self) -> None:
        self.patches: list[tuple[str, dict[str, Any]]] = []

    async def patch_quota_status(self, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.patches.append((name, status))
        return {"metadata": {"name": name, "generation": 1}, "spec": {"limits": {"gpus": 1}}, "status": status}


def service(name: str, age: int) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": name, "generation": 1,
                         "creationTimestamp": f"2026-01-01T00:00:{age:02d}Z"},
            "spec": {"model": {"source": "hf://o/m"}, "resources": {"accelerator": "nvidia-l4", "gpus": 1}}}


QUOTA = {"metadata": {"name": "team", "generation": 1}, "spec": {"limits": {"gpus": 1}}}


async def settle(loop: QuotaLoop) -> None:
    for _ in range(50):
        await asyncio.sleep(0.01)
        if loop._timer is None and (loop._writing is None or loop._writing.done()):  # noqa: SLF001 - test looks inside
            return


async def test_a_pass_schedules_changed_and_deferred_services_and_writes_status_once() -> None:
    services: dict[Key, dict[str, Any]] = {("ns", "a"): service("a", 1), ("ns", "b"): service("b", 2)}
    scheduled: list[Key] = []
    writer = FakeWriter()
    loop = QuotaLoop(services, lambda _: 0, writer, scheduled.append, min_interval=0.0, status_interval=0.0)
    assert loop.book.observe_quota("ADDED", QUOTA)
    assert loop.pending(("ns", "a"), services[("ns", "a")]), "selected and undecided: wait for the pass"
    await settle(loop)
    assert sorted(scheduled) == [("ns", "a"), ("ns", "b")]
    assert loop.book.decision(("ns", "b")).reason == "QuotaExceeded"
    assert [name for name, _ in writer.patches] == ["team"]
    assert writer.patches[0][1]["refusedCount"] == 1

    scheduled.clear()
    assert not loop.pending(("ns", "b"), services[("ns", "b")]), "decided as it is: no wait for other changes"
    relabelled = {**services[("ns", "a")], "metadata": {**services[("ns", "a")]["metadata"], "labels": {"x": "y"}}}
    services[("ns", "a")] = relabelled
    assert loop.pending(("ns", "a"), relabelled), "changed since the last pass: wait for the next"
    await settle(loop)
    assert scheduled == [("ns", "a")], "a waiting reconcile runs again even when its decision did not change"
    assert len(writer.patches) == 1, "same status: no second write"


async def test_status_only_events_and_same_signatures_cause_no_pass() -> None:
    services: dict[Key, dict[str, Any]] = {("ns", "a"): service("a", 1)}
    loop = QuotaLoop(services, lambda _: 0, FakeWriter(), lambda _: None, min_interval=0.0)
    loop.book.observe_quota("ADDED", QUOTA)
    loop.request_pass()
    await settle(loop)
    passes = loop.book.passes
    body = services[("ns", "a")]
    loop.service_event(body, {**body, "status": {"phase": "Ready"}})
    loop.deployment_event({"spec": {"replicas": 1}}, {"spec": {"replicas": 1}, "status": {"readyReplicas": 1}})
    await settle(loop)
    assert loop.book.passes == passes
    loop.deployment_event({"spec": {"replicas": 1}}, {"spec": {"replicas": 2}})
    await settle(loop)
    assert loop.book.passes == passes + 1
