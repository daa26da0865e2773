"""Status is computed from the children's real state and written only when it changes."""

from __future__ import annotations

from typing import Any

from inferkube.operator.inputs import ServiceMeta
from inferkube.operator.names import cache_key, download_job_name
from inferkube.operator.parse import parse_spec
from inferkube.operator.reconcile import is_subset
from inferkube.operator.settings import OperatorSettings
from inferkube.operator.status import compute_status, status_patch
from inferkube.operator.world import Children, World, observe

META = ServiceMeta(name="m", namespace="ns")
SPEC = parse_spec({"model": {"source": "hf://o/m", "revision": "r1"}, "replicas": 2})


def deployment(ready: int, conditions: list[dict[str, Any]], key: str | None = None) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"name": "m", "generation": 1,
                                               "annotations": {"serving.inferkube.dev/cache-key": key or cache_key(SPEC)}},
            "spec": {"replicas": 2},
            "status": {"replicas": 2, "readyReplicas": ready, "updatedReplicas": 2, "observedGeneration": 1,
                       "conditions": conditions}}


def job(state: str) -> dict[str, Any]:
    status = {"Complete": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
              "Failed": {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
              "Active": {"active": 1}}[state]
    return {"kind": "Job", "metadata": {"name": download_job_name(META, cache_key(SPEC))}, "status": status}


def status_of(*children: dict[str, Any], apis: set[str] | None = None) -> dict[str, Any]:
    kids = Children()
    for child in children:
        kids.by_kind.setdefault(child["kind"], []).append(child)
    observed = observe(SPEC, META, kids, apis or set())
    return compute_status(SPEC, META, 3, OperatorSettings(), kids, observed).model_dump(by_alias=True, exclude_none=True)


def cond(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == ctype)


AVAILABLE = [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"}]


def test_caching_phase_before_the_download_finishes() -> None:
    status = status_of(job("Active"))
    assert status["phase"] == "CachingModel" and cond(status, "Ready")["status"] == "False"
    assert cond(status, "ModelCached")["reason"] == "Downloading"
    assert status["observedGeneration"] == 3 and all(c["observedGeneration"] == 3 for c in status["conditions"])


def test_ready_when_the_deployment_is_available() -> None:
    status = status_of(job("Complete"), deployment(2, AVAILABLE))
    assert status["phase"] == "Ready" and cond(status, "Ready")["status"] == "True"
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert status["selector"] == ("app.kubernetes.io/component=runtime,app.kubernetes.io/name=inferkube,"
                                  "serving.inferkube.dev/inferenceservice=m")


def test_progress_deadline_exceeded_is_degraded() -> None:
    stuck = [{"type": "Available", "status": "False"},
             {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "too slow"}]
    status = status_of(job("Complete"), deployment(0, stuck))
    assert cond(status, "Degraded")["reason"] == "ProgressDeadlineExceeded"
    assert cond(status, "Ready")["status"] == "False" and status["phase"] == "Failed"


def test_failed_download_is_failed_with_reason() -> None:
    status = status_of(job("Failed"))
    assert status["phase"] == "Failed"
    assert "BackoffLimitExceeded" in cond(status, "ModelCached")["message"]


def test_scheduling_vs_loading_from_pods() -> None:
    pending = {"kind": "Pod", "metadata": {"name": "p"}, "status": {"conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes have nvidia.com/gpu"}]}}
    status = status_of(job("Complete"), deployment(0, []), pending)
    assert status["phase"] == "Scheduling" and "nvidia.com/gpu" in status["phaseDetail"]
    running = {"kind": "Pod", "metadata": {"name": "p"}, "status": {"conditions": [{"type": "PodScheduled", "status": "True"}]}}
    assert status_of(job("Complete"), deployment(0, []), running)["phase"] == "LoadingModel"


def test_status_is_not_rewritten_when_nothing_changed() -> None:
    kids = Children({"Job": [job("Complete")], "Deployment": [deployment(2, AVAILABLE)]})
    new = compute_status(SPEC, META, 3, OperatorSettings(), kids, observe(SPEC, META, kids, set()))
    first = status_patch(new, None, "2026-01-01T00:00:00Z")
    assert first is not None
    assert status_patch(new, first, "2026-01-01T00:05:00Z") is None
    # a changed condition gets a new transition time; unchanged ones keep theirs
    kids.by_kind["Deployment"] = [deployment(0, [{"type": "Available", "status": "False"}])]
    changed = compute_status(SPEC, META, 3, OperatorSettings(), kids, observe(SPEC, META, kids, set()))
    patch = status_patch(changed, first, "2026-01-01T00:09:00Z")
    assert cond(patch, "Ready")["lastTransitionTime"] == "2026-01-01T00:09:00Z"
    assert cond(patch, "ModelCached")["lastTransitionTime"] == "2026-01-01T00:00:00Z"


def test_live_defaults_do_not_count_as_drift() -> None:
    desired = {"spec": {"ports": [{"port": 80, "name": "http"}], "replicas": 2}}
    live = {"spec": {"ports": [{"port": 80, "name": "http", "protocol": "TCP"}], "replicas": 2, "clusterIP": "10.0.0.1"}}
    assert is_subset(desired, live)
    assert not is_subset({"spec": {"replicas": 3}}, live)
    assert not is_subset({"spec": {"ports": [{"port": 80}, {"port": 81}]}}, live)


def test_world_ignores_stale_events_and_forgets_deleted_children() -> None:
    world = World()
    isvc = {"metadata": {"name": "m", "namespace": "ns", "resourceVersion": "5"}}
    assert world.observe_service("ADDED", isvc) == ("ns", "m")
    assert world.observe_service("MODIFIED", {"metadata": {**isvc["metadata"], "resourceVersion": "4"}}) is None
    child = {"kind": "Service", "metadata": {"name": "m", "namespace": "ns", "resourceVersion": "7",
                                             "labels": {"serving.inferkube.dev/inferenceservice": "m"}}}
    assert world.observe_child("ADDED", child) == ("ns", "m")
    assert world.children_of(("ns", "m")).get("Service", "m") is child
    world.observe_service("DELETED", isvc)
    world.observe_child("DELETED", child)
    assert world.children == {}


def test_replicas_are_handed_over_before_an_autoscaler_takes_them() -> None:
    from inferkube.operator.reconcile import replicas_to_hand_over

    desired = {"kind": "Deployment", "spec": {"template": {}}}  # autoscaled: no replicas sent
    ours = {"manager": "inferkube-operator", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    live = {"metadata": {"managedFields": [ours]}, "spec": {"replicas": 4}}
    assert replicas_to_hand_over(desired, live) == 4
    hpa_owns = {"manager": "kube-controller-manager", "operation": "Update", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
    assert replicas_to_hand_over(desired, {"metadata": {"managedFields": [hpa_owns]}, "spec": {"replicas": 4}}) is None
    assert replicas_to_hand_over({"kind": "Deployment", "spec": {"replicas": 2}}, live) is None
    assert replicas_to_hand_over(desired, None) is None
