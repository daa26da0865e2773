"""Status is computed from the children's real state and written only when it changes."""

from __future__ import annotations

import dataclasses
from typing import Any

from inferkube.operator.inputs import ServiceMeta
from inferkube.operator.names import cache_key, download_job_name
from inferkube.operator.parse import parse_spec
from inferkube.operator.quota import ADMITTED, CLAMPED, REFUSED, ServiceDecision
from inferkube.operator.settings import OperatorSettings
from inferkube.operator.status import (
    APPLY_REJECTED,
    CONDITIONS,
    INVALID_SPEC,
    PHASES,
    Facts,
    autoscaler_ready,
    available,
    compute_status,
    degraded,
    model_cached,
    monitoring_ready,
    phase_of,
    progressing,
    quota_exceeded,
    read_facts,
    ready,
    refused_status,
    status_patch,
)
from inferkube.operator.world import Children, observe

META = ServiceMeta(name="m", namespace="ns")
SPEC = parse_spec({"model": {"source": "hf://o/m", "revision": "r1"}, "replicas": 2})


def deployment(ready: int, conditions: list[dict[str, Any]], key: str | None = None) -> dict[str, Any]:
    return {"kind": "Deployment", "metadata": {"name": "m", "generation": 1,
                                               "annotations": {"serving.inferkube.dev/cache-key": key or cache_key(SPEC)}},
            "spec": {"replicas": 2},
            "status": {"replicas": 2, "readyReplicas": ready, "availableReplicas": ready, "updatedReplicas": 2,
                       "observedGeneration": 1, "conditions": conditions}}


RUNTIME_LABELS = {"app.kubernetes.io/component": "runtime", "serving.inferkube.dev/inferenceservice": "m"}


def pod(name: str, *containers: dict[str, Any], conditions: list[dict[str, Any]] | None = None,
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    """A runtime pod (or, with labels, another one) with the given containerStatuses."""
    return {"kind": "Pod", "metadata": {"name": name, "labels": labels or RUNTIME_LABELS},
            "status": {"phase": "Pending", "conditions": conditions or [], "containerStatuses": list(containers)}}


def waiting(reason: str, message: str = "", restarts: int = 0, last: dict[str, Any] | None = None,
            name: str = "runtime") -> dict[str, Any]:
    """A containerStatuses entry waiting for reason."""
    return {"name": name, "restartCount": restarts, "state": {"waiting": {"reason": reason, "message": message}},
            "lastState": {"terminated": last} if last else {}}


def download_pod(*containers: dict[str, Any]) -> dict[str, Any]:
    """A pod of the wanted download Job."""
    return pod("m-dl-x", *containers, labels={"app.kubernetes.io/component": "model-cache",
                                               "job-name": download_job_name(META, cache_key(SPEC))})


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
    pending = pod("p", conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                    "message": "0/3 nodes have nvidia.com/gpu"}])
    status = status_of(job("Complete"), deployment(0, []), pending)
    assert status["phase"] == "Scheduling" and "nvidia.com/gpu" in status["phaseDetail"]
    assert (cond(status, "Ready")["reason"], cond(status, "Ready")["message"]) == (
        "Unschedulable", "pod p: 0/3 nodes have nvidia.com/gpu")
    assert cond(status, "Degraded")["status"] == "False", "a node may still come (cluster autoscaler)"
    running = pod("p", conditions=[{"type": "PodScheduled", "status": "True"}])
    assert status_of(job("Complete"), deployment(0, []), running)["phase"] == "LoadingModel"
    download = download_pod()
    assert status_of(job("Complete"), deployment(0, []), download)["phase"] == "Scheduling", "not a runtime pod"


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


# --- One test per condition function and per phase row ---------------------------------------------

def facts(*children: dict[str, Any], spec: Any = SPEC, apis: set[str] | None = None,
          report: dict[str, Any] | None = None, quota: ServiceDecision | None = None) -> Facts:
    kids = Children()
    for child in children:
        kids.by_kind.setdefault(child["kind"], []).append(child)
    observed = dataclasses.replace(observe(spec, META, kids, apis or set()), quota=quota)
    return read_facts(spec, META, 3, kids, observed, report)


NEEDS = "needs 2 GPUs, 0 of 4 left under InferenceQuota team"
REFUSAL = ServiceDecision(("team",), REFUSED, 0, message=NEEDS)


def reason(condition: Any) -> str:
    assert condition is not None
    return str(condition.reason)


def spec_with(**fields: Any) -> Any:
    return parse_spec({"model": {"source": "hf://o/m", "revision": "r1"}, "replicas": 2, **fields})


def test_model_cached_names_where_the_model_comes_from() -> None:
    pvc = parse_spec({"model": {"source": "pvc://weights/llama"}, "replicas": 1})
    assert (model_cached(facts(spec=pvc)).status, model_cached(facts(spec=pvc)).reason) == ("True", "SourceIsVolume")
    no_cache = spec_with(cache={"enabled": False})
    assert model_cached(facts(spec=no_cache)).reason == "CacheDisabled"
    assert model_cached(facts(job("Complete"))).reason == "Downloaded"
    assert model_cached(facts()).reason == "DownloadPending"
    progress = {"event": "progress", "bytesDone": 250, "bytesTotal": 1000}
    downloading = model_cached(facts(job("Active"), report=progress))
    assert (downloading.reason, downloading.message) == ("Downloading", "downloading hf://o/m (25%)")
    failed = model_cached(facts(job("Failed"), report={"event": "failed", "reason": "NotFound", "message": "no repo"}))
    assert (failed.status, failed.reason, failed.message) == ("False", "DownloadFailed", "NotFound: no repo")


def test_available_follows_the_deployment_and_needs_a_ready_replica() -> None:
    assert available(facts()).reason == "NoDeployment"
    assert available(facts(job("Complete"), deployment(0, []))).reason == "Pending"
    no_ready_yet = available(facts(job("Complete"), deployment(0, AVAILABLE)))
    assert (no_ready_yet.status, no_ready_yet.reason) == ("False", "MinimumReplicasAvailable")
    assert available(facts(job("Complete"), deployment(2, AVAILABLE))).status == "True"


def test_progressing_while_caching_or_rolling_out_but_not_past_the_deadline() -> None:
    caching = progressing(facts(job("Active")))
    assert (caching.status, caching.reason) == ("True", "CachingModel")
    done = progressing(facts(job("Complete"), deployment(2, AVAILABLE)))
    assert (done.status, done.reason, done.message) == ("False", "RolloutComplete", "2/2 replicas updated")
    starting = progressing(facts(job("Complete"), deployment(1, [])))
    assert (starting.status, starting.message) == ("True", "1/2 updated replicas available")
    stuck = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "slow"}]
    assert progressing(facts(job("Complete"), deployment(0, stuck))).status == "False"


def rolling(updated: int, replicas: int = 2, observed: int = 1) -> dict[str, Any]:
    """A serving Deployment (2 ready) in the middle of a rollout."""
    dep = deployment(2, [*AVAILABLE, {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}])
    dep["status"].update(updatedReplicas=updated, replicas=replicas, observedGeneration=observed)
    return dep


def test_a_half_done_rollout_is_rolling_out_and_stays_ready() -> None:
    cases = {"1/2 updated": rolling(1), "1 old replicas terminating": rolling(2, replicas=3),
             "waiting for the Deployment controller to see generation 2": {**rolling(2, observed=1), "metadata": {
                 **rolling(2)["metadata"], "generation": 2}}}
    for detail, dep in cases.items():
        status = status_of(job("Complete"), dep)
        assert (status["phase"], status["phaseDetail"]) == ("RollingOut", detail)
        assert (cond(status, "Progressing")["status"], cond(status, "Progressing")["reason"]) == ("True", "RollingOut")
        assert cond(status, "Progressing")["message"] == detail
        assert cond(status, "Ready")["status"] == "True", "old replicas still serve: traffic is not dropped"
        assert cond(status, "Degraded")["status"] == "False"
    done = status_of(job("Complete"), rolling(2))
    assert done["phase"] == "Ready" and cond(done, "Progressing")["status"] == "False"


MISSING_SECRET = waiting("CreateContainerConfigError", 'secret "hf-token" not found', name="download")


def test_a_download_pod_that_cannot_start_fails_the_cache_step_now() -> None:
    status = status_of(job("Active"), download_pod(MISSING_SECRET))
    assert status["phase"] == "Failed"
    assert status["cache"]["phase"] == "Failed"
    for ctype in ("ModelCached", "Degraded"):
        c = cond(status, ctype)
        assert c["reason"] == "CreateContainerConfigError"
        assert c["message"] == 'pod m-dl-x: container download: secret "hf-token" not found'
    assert cond(status, "ModelCached")["status"] == "False" and cond(status, "Degraded")["status"] == "True"
    assert cond(status, "Progressing")["status"] == "False"
    # the Secret is created: the container starts and the status recovers by itself
    started = download_pod({"name": "download", "restartCount": 0, "state": {"running": {}}})
    recovered = status_of(job("Active"), started)
    assert recovered["phase"] == "CachingModel" and cond(recovered, "Degraded")["status"] == "False"
    # a download pod waiting for a node is not a failure, but ModelCached says what it waits for
    unplaced = download_pod()
    unplaced["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                         "message": "0/3 nodes are available: 3 Insufficient memory."}]
    waiting_for_node = status_of(job("Active"), unplaced)
    assert waiting_for_node["phase"] == "CachingModel" and cond(waiting_for_node, "Degraded")["status"] == "False"
    assert cond(waiting_for_node, "ModelCached")["message"] == (
        "downloading hf://o/m; waiting: pod m-dl-x: 0/3 nodes are available: 3 Insufficient memory.")


def test_a_crash_looping_runtime_pod_is_degraded_with_restarts_and_last_message() -> None:
    last = {"exitCode": 1, "reason": "Error", "message": "ValueError: unknown quantization 'fp3'"}
    crashing = pod("m-abc", waiting("CrashLoopBackOff", "back-off 5m0s", restarts=7, last=last))
    status = status_of(job("Complete"), deployment(0, []), crashing)
    expected = ("pod m-abc: container runtime restarted 7 times; last exit code 1 (Error): "
                "ValueError: unknown quantization 'fp3'")
    assert (cond(status, "Degraded")["reason"], cond(status, "Degraded")["message"]) == ("CrashLoopBackOff", expected)
    assert status["phase"] == "Failed", "nothing serves"
    assert (cond(status, "Ready")["reason"], cond(status, "Ready")["status"]) == ("CrashLoopBackOff", "False")
    # during a rollout the old replicas still serve: Degraded, not Failed, and still Ready
    serving = status_of(job("Complete"), rolling(1), crashing)
    assert serving["phase"] == "Degraded" and cond(serving, "Ready")["status"] == "True"
    assert cond(serving, "Degraded")["reason"] == "CrashLoopBackOff"


def test_every_container_problem_is_named() -> None:
    oom = {"exitCode": 137, "reason": "OOMKilled"}
    cases = {
        "ImagePullBackOff": waiting("ImagePullBackOff", 'Back-off pulling image "rt:nope"'),
        "ErrImagePull": waiting("ErrImagePull", "manifest unknown"),
        "InvalidImageName": waiting("InvalidImageName", 'couldn\'t parse image name "RT:"'),
        "CreateContainerError": waiting("CreateContainerError", "no command specified"),
        "OOMKilled": waiting("CrashLoopBackOff", restarts=3, last=oom),
        "ContainerFailed": {"name": "runtime", "restartCount": 0,
                            "state": {"terminated": {"exitCode": 2, "message": "bad flag --tp"}}},
    }
    for expected, container in cases.items():
        got = degraded(facts(job("Complete"), deployment(0, []), pod("m-1", container)))
        assert (got.status, got.reason) == ("True", expected), container
        assert got.message.startswith("pod m-1: container runtime")
    assert "bad flag --tp" in degraded(facts(job("Complete"), deployment(0, []),
                                             pod("m-1", cases["ContainerFailed"]))).message
    being_deleted = pod("m-1", cases["ErrImagePull"])
    being_deleted["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert degraded(facts(job("Complete"), deployment(2, AVAILABLE), being_deleted)).status == "False"


def test_degraded_names_the_first_problem() -> None:
    assert degraded(facts(job("Failed"))).reason == "DownloadFailed"
    quota = [{"type": "ReplicaFailure", "status": "True", "message": "exceeded quota: gpu"}]
    got = degraded(facts(job("Complete"), deployment(0, quota)))
    assert (got.status, got.reason, got.message) == ("True", "ReplicaFailure", "exceeded quota: gpu")
    ok = degraded(facts(job("Complete"), deployment(2, AVAILABLE)))
    assert (ok.status, ok.reason, ok.message) == ("False", "AsExpected", "no problem observed")


def test_monitoring_ready_says_why_there_is_no_servicemonitor() -> None:
    assert monitoring_ready(facts(spec=spec_with(monitoring={"serviceMonitor": False}))).reason == "Disabled"
    assert monitoring_ready(facts()).reason == "PrometheusOperatorMissing"
    assert monitoring_ready(facts(apis={"ServiceMonitor"})).reason == "Creating"
    sm = {"kind": "ServiceMonitor", "metadata": {"name": "m"}}
    created = monitoring_ready(facts(sm, apis={"ServiceMonitor"}))
    assert (created.status, created.reason) == ("True", "ServiceMonitorCreated")


def test_autoscaler_ready_only_with_autoscaling() -> None:
    hpa_spec = parse_spec({"model": {"source": "hf://o/m"}, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}})
    keda_spec = parse_spec({"model": {"source": "hf://o/m"},
                            "autoscaling": {"engine": "keda", "minReplicas": 1, "maxReplicas": 3}})
    assert autoscaler_ready(facts()) is None
    assert reason(autoscaler_ready(facts(spec=hpa_spec))) == "Pending"
    hpa = {"kind": "HorizontalPodAutoscaler", "metadata": {"name": "m"}}
    assert reason(autoscaler_ready(facts(hpa, spec=hpa_spec))) == "HorizontalPodAutoscalerCreated"
    assert reason(autoscaler_ready(facts(spec=keda_spec))) == "KedaMissing"


def test_every_row_of_the_phase_table_is_reachable() -> None:
    quota = [{"type": "ReplicaFailure", "status": "True", "message": "exceeded quota"}]
    scaled_to_zero = {**deployment(0, []), "spec": {"replicas": 0}}
    cases = {
        "download failed": facts(job("Failed")),
        "degraded and not serving": facts(job("Complete"), deployment(0, quota)),
        "refused by a quota": facts(job("Complete"), {**deployment(0, []), "spec": {"replicas": 0}}, quota=REFUSAL),
        "downloading": facts(job("Active")),
        "no deployment yet": facts(job("Complete")),
        "rolling out": facts(job("Complete"), rolling(1)),
        "serving": facts(job("Complete"), deployment(2, AVAILABLE)),
        "scaled to zero": facts(job("Complete"), scaled_to_zero),
        "pods not ready": facts(job("Complete"), deployment(0, [])),
    }
    assert list(cases) == [rule.name for rule in PHASES]
    got = {name: phase_of(f, degraded(f)) for name, f in cases.items()}
    assert got == {
        "download failed": ("Failed", "BackoffLimitExceeded:"),
        "degraded and not serving": ("Failed", "ReplicaFailure: exceeded quota"),
        "refused by a quota": ("Pending", f"QuotaExceeded: {NEEDS}"),
        "downloading": ("CachingModel", "downloading"),
        "no deployment yet": ("Pending", "creating children"),
        "rolling out": ("RollingOut", "1/2 updated"),
        "serving": ("Ready", "2/2 replicas ready"),
        "scaled to zero": ("Ready", "scaled to zero"),
        "pods not ready": ("Scheduling", "waiting for pods"),
    }
    for name, f in cases.items():
        empty = [c.type for c in (rule(f) for rule in CONDITIONS) if c is not None and not c.message]
        assert empty == [], f"{name}: every condition says why"
    serving_with_problem = facts(job("Complete"), deployment(2, [*AVAILABLE, *quota]))
    assert phase_of(serving_with_problem, degraded(serving_with_problem)) == ("Degraded", "2/2 replicas ready")
    new_revision_failed = facts(job("Failed"), deployment(2, AVAILABLE))
    assert phase_of(new_revision_failed, degraded(new_revision_failed)) == ("Degraded", "2/2 replicas ready")


def test_quota_exceeded_only_where_a_quota_selects_the_service() -> None:
    assert quota_exceeded(facts()) is None
    within = quota_exceeded(facts(quota=ServiceDecision(("a", "b"), ADMITTED, 2)))
    assert within is not None and (within.status, within.reason, within.message) == \
        ("False", "WithinQuota", "admitted by InferenceQuota a, b")
    clamped = quota_exceeded(facts(quota=ServiceDecision(("a",), CLAMPED, 2, 1, "maxReplicas 5 clamped to 2: ...")))
    assert clamped is not None and (clamped.status, clamped.reason) == ("True", CLAMPED)
    refused = quota_exceeded(facts(quota=REFUSAL))
    assert refused is not None and (refused.status, refused.reason, refused.message) == ("True", REFUSED, NEEDS)


def test_a_refused_service_is_not_ready_even_at_zero_replicas() -> None:
    f = facts(job("Complete"), {**deployment(0, []), "spec": {"replicas": 0}}, quota=REFUSAL)
    got = ready(f, degraded(f), *phase_of(f, degraded(f)))
    assert (got.status, got.reason, got.message) == ("False", "QuotaExceeded", NEEDS)
    hpa_spec = parse_spec({"model": {"source": "hf://o/m"}, "autoscaling": {"minReplicas": 1, "maxReplicas": 3}})
    assert reason(autoscaler_ready(facts(spec=hpa_spec, quota=REFUSAL))) == "QuotaExceeded"


def test_ready_says_what_is_served_or_why_not() -> None:
    f = facts(job("Complete"), deployment(2, AVAILABLE))
    assert ready(f, degraded(f), "Ready", "2/2 replicas ready").message == "2/2 replicas ready; serving m"
    quota = [{"type": "ReplicaFailure", "status": "True", "message": "exceeded quota"}]
    f = facts(job("Complete"), deployment(0, quota))
    assert ready(f, degraded(f), "Failed", "x").reason == "ReplicaFailure"
    f = facts(job("Active"))
    assert (ready(f, degraded(f), "CachingModel", "40%").reason, ready(f, degraded(f), "CachingModel", "40%").message) \
        == ("CachingModel", "40%")


# --- Refused: InvalidSpec and ApplyRejected take the same patch path --------------------------------

def test_a_refused_spec_keeps_the_rest_of_the_status_and_the_transition_rule() -> None:
    kids = Children({"Job": [job("Complete")], "Deployment": [deployment(2, AVAILABLE)]})
    serving = status_patch(compute_status(SPEC, META, 3, OperatorSettings(), kids, observe(SPEC, META, kids, set())),
                           None, "2026-01-01T00:00:00Z")
    assert serving is not None
    refused = refused_status(serving, 4, INVALID_SPEC, "unknown accelerator profile 'tpu'")
    patch = status_patch(refused, serving, "2026-01-01T00:05:00Z")
    assert patch is not None
    assert (patch["phase"], patch["phaseDetail"], patch["observedGeneration"]) == ("Failed", "InvalidSpec", 4)
    assert [c["type"] for c in patch["conditions"]][:2] == ["Ready", "Degraded"]
    assert cond(patch, "Ready")["reason"] == cond(patch, "Degraded")["reason"] == "InvalidSpec"
    assert cond(patch, "Ready")["observedGeneration"] == 4 and cond(patch, "ModelCached")["observedGeneration"] == 3
    assert cond(patch, "Ready")["lastTransitionTime"] == "2026-01-01T00:05:00Z", "True -> False is a transition"
    assert cond(patch, "ModelCached")["lastTransitionTime"] == "2026-01-01T00:00:00Z", "other conditions kept"
    assert patch["url"] == serving["url"] and patch["cache"] == serving["cache"]
    # the same refusal again writes nothing; a new message is written, keeping the transition time
    assert status_patch(refused_status(patch, 4, INVALID_SPEC, "unknown accelerator profile 'tpu'"), patch, "t") is None
    again = status_patch(refused_status(patch, 4, APPLY_REJECTED, "422"), patch, "2026-01-01T00:09:00Z")
    assert again is not None and cond(again, "Ready")["reason"] == "ApplyRejected"
    assert cond(again, "Ready")["lastTransitionTime"] == "2026-01-01T00:05:00Z", "still False: no transition"


def test_a_refusal_on_a_fresh_object_writes_a_whole_status() -> None:
    patch = status_patch(refused_status(None, 1, INVALID_SPEC, "bad"), {"kopf": {"x": 1}}, "now")
    assert patch is not None and "kopf" not in patch
    assert [(c["type"], c["status"]) for c in patch["conditions"]] == [("Ready", "False"), ("Degraded", "True")]
    assert patch["phase"] == "Failed"
