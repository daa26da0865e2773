"""What keeps a pod from running, named: container states and the scheduler's verdict, read from watched pods.

Runtime pods (the Deployment's) and download pods (the cache Job's) are both watched (label
``app.kubernetes.io/managed-by``); status reads their problems through ``pod_problem``. A problem is
*blocking* when the pod cannot run until someone changes something (a missing Secret, a bad image, a crash
loop); an unschedulable pod is not blocking: a node may still come (e.g. from a cluster autoscaler).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from inferkube.api import contract
from inferkube.operator import kinds, names
from inferkube.operator.world import Children, condition_of

# Waiting reasons of a container that cannot start until its configuration or image changes.
START_FAILURES = frozenset({
    "CreateContainerConfigError",  # e.g. secret "hf-token" not found
    "CreateContainerError",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "RunContainerError",
})
CRASH_LOOP = "CrashLoopBackOff"
OOM_KILLED = "OOMKilled"
CONTAINER_FAILED = "ContainerFailed"  # terminated with a non-zero exit code (not OOM)
UNSCHEDULABLE = "Unschedulable"


@dataclass(frozen=True)
class PodProblem:
    """Why one pod does not run: a CamelCase reason, a message naming the pod and container, and whether
    only a change by someone (not time) can fix it."""

    reason: str
    message: str
    blocking: bool = True

    @property
    def is_start_failure(self) -> bool:
        """The container never started: its configuration or image is wrong."""
        return self.reason in START_FAILURES


def _last_exit(terminated: dict[str, Any]) -> str:
    """'exit code 1 (Error): <termination message>' of a terminated container state."""
    text = f"exit code {terminated.get('exitCode', '?')} ({terminated.get('reason') or 'Error'})"
    message = (terminated.get("message") or "").strip()
    return f"{text}: {message[-300:]}" if message else text


def container_problem(status: dict[str, Any]) -> PodProblem | None:
    """The problem one containerStatuses entry shows, if any."""
    name = status.get("name", "?")
    state = status.get("state") or {}
    waiting = state.get("waiting") or {}
    terminated = state.get("terminated") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    restarts = int(status.get("restartCount") or 0)
    if waiting.get("reason") in START_FAILURES:
        return PodProblem(waiting["reason"], f"container {name}: {waiting.get('message') or waiting['reason']}")
    if waiting.get("reason") == CRASH_LOOP:
        reason = OOM_KILLED if last.get("reason") == OOM_KILLED else CRASH_LOOP
        detail = f"; last {_last_exit(last)}" if last else ""
        return PodProblem(reason, f"container {name} restarted {restarts} times{detail}")
    if terminated.get("reason") == OOM_KILLED:
        return PodProblem(OOM_KILLED, f"container {name} was OOMKilled (restarted {restarts} times)")
    if terminated and terminated.get("exitCode", 0) != 0:
        return PodProblem(CONTAINER_FAILED, f"container {name} ended with {_last_exit(terminated)}")
    return None


def pod_problem(pod: dict[str, Any]) -> PodProblem | None:
    """The first problem of a pod (init containers first), prefixed with the pod's name; None when it is fine."""
    status = pod.get("status") or {}
    name = pod["metadata"]["name"]
    for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        problem = container_problem(cs)
        if problem is not None:
            return PodProblem(problem.reason, f"pod {name}: {problem.message}", problem.blocking)
    scheduled = condition_of(pod, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False" and scheduled.get("reason") == UNSCHEDULABLE:
        return PodProblem(UNSCHEDULABLE, f"pod {name}: {scheduled.get('message') or 'no node fits'}", blocking=False)
    return None


def first_problem(pods: Iterable[dict[str, Any]]) -> PodProblem | None:
    """The problem to report for a set of pods: blocking ones first, then by pod name (stable across resyncs)."""
    problems = [p for p in map(pod_problem, sorted(pods, key=lambda p: p["metadata"]["name"])) if p is not None]
    return next((p for p in problems if p.blocking), problems[0] if problems else None)


def _live(pod: dict[str, Any]) -> bool:
    """Not being deleted and not finished."""
    return not pod["metadata"].get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in (
        "Succeeded", "Failed")


def runtime_pods(children: Children) -> list[dict[str, Any]]:
    """The live runtime pods (every ReplicaSet of the Deployment)."""
    return [p for p in children.all(kinds.POD.kind) if _live(p)
            and (p["metadata"].get("labels") or {}).get(contract.LABEL_COMPONENT) == names.COMPONENT_RUNTIME]


def download_pods(children: Children, job_name: str) -> list[dict[str, Any]]:
    """The live pods of one download Job."""
    return [p for p in children.all(kinds.POD.kind) if _live(p)
            and (p["metadata"].get("labels") or {}).get("job-name") == job_name]
