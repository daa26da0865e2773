"""Argo CD health check (manifests/argocd/health.lua) run with a real Lua interpreter (lupa).

Argo CD hands the live object to the script as the global `obj` and reads `status`/`message`
from the table the script returns; these tests do the same with status fixtures shaped like
what the inferkube operator writes.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from inferkube.api.status import Phase
from inferkube.operator.inputs import ServiceMeta
from inferkube.operator.names import cache_key, download_job_name
from inferkube.operator.parse import parse_spec
from inferkube.operator.settings import OperatorSettings
from inferkube.operator.status import compute_status
from inferkube.operator.world import Children, observe

lupa = pytest.importorskip("lupa")

REPO = Path(__file__).resolve().parents[3]
HEALTH_LUA = REPO / "manifests" / "argocd" / "health.lua"
CM_PATCH = REPO / "manifests" / "argocd" / "argocd-cm-patch.yaml"
APPLICATION = REPO / "manifests" / "argocd" / "application.yaml"
HEALTH_KEY = "resource.customizations.health.serving.inferkube.dev_InferenceService"
ARGO_STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
NOW = "2026-11-21T05:00:00Z"


def to_lua(runtime: Any, value: Any) -> Any:
    """Convert nested dicts/lists to Lua tables (lists become 1-based arrays), like Argo CD does."""
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


def run_health(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """Run the health script against one object and return its {status, message} table."""
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = to_lua(runtime, obj)
    result = runtime.execute(script if script is not None else HEALTH_LUA.read_text())
    assert result is not None, "health.lua must `return hs`"
    return {"status": result["status"], "message": result["message"]}


def condition(ctype: str, status: str, reason: str = "", message: str = "", gen: int = 3) -> dict[str, Any]:
    """One status condition as the operator writes it."""
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": NOW,
        "observedGeneration": gen,
    }


def isvc(status: dict[str, Any] | None, generation: int = 3) -> dict[str, Any]:
    """An InferenceService as Argo CD sees it live, optionally with a status."""
    obj: dict[str, Any] = {
        "apiVersion": "serving.inferkube.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "llama-8b", "namespace": "models", "generation": generation},
        "spec": {"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct"}},
    }
    if status is not None:
        obj["status"] = status
    return obj


READY_STATUS: dict[str, Any] = {
    "observedGeneration": 3,
    "phase": "Ready",
    "replicas": 2,
    "readyReplicas": 2,
    "url": "http://llama-8b.models.svc.cluster.local:8000",
    "selector": "app.kubernetes.io/instance=llama-8b",
    "conditions": [
        condition("Ready", "True", "Ready", "2/2 replicas serving llama-8b"),
        condition("ModelCached", "True", "CacheJobSucceeded", "model cached on PVC llama-8b-cache"),
        condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability"),
        condition("Progressing", "False", "NewReplicaSetAvailable", "rollout complete"),
        condition("Degraded", "False", "AsExpected", ""),
        condition("MonitoringReady", "False", "CRDMissing", "monitoring.coreos.com is not served"),
    ],
}


def with_conditions(base: dict[str, Any], phase: str, *replacements: dict[str, Any]) -> dict[str, Any]:
    """Copy a status, set its phase and replace the conditions of the given types."""
    status = copy.deepcopy(base)
    status["phase"] = phase
    by_type = {c["type"]: c for c in replacements}
    status["conditions"] = [by_type.pop(c["type"], c) for c in status["conditions"]] + list(by_type.values())
    return status


def test_no_status_yet_is_progressing() -> None:
    """A freshly applied object the operator has not seen yet shows as Progressing, not Healthy."""
    hs = run_health(isvc(None))
    assert hs["status"] == "Progressing"
    assert "operator" in hs["message"]


def test_empty_status_is_progressing() -> None:
    """An empty status (no observedGeneration) is not taken as current."""
    hs = run_health(isvc({}))
    assert hs["status"] == "Progressing"
    assert "generation 3" in hs["message"]


def test_stale_generation_is_progressing_even_if_old_status_was_ready() -> None:
    """After a spec change (generation 4) an old Ready=True status (generation 3) is not Healthy."""
    hs = run_health(isvc(READY_STATUS, generation=4))
    assert hs["status"] == "Progressing"
    assert "generation 4" in hs["message"] and "generation 3" in hs["message"]


def test_stale_generation_hides_old_failure() -> None:
    """A fix pushed through Git shows as Progressing, not as the old failure, until observed."""
    failed = with_conditions(READY_STATUS, "Failed", condition("Degraded", "True", "InvalidSpec", "bad"))
    hs = run_health(isvc(failed, generation=5))
    assert hs["status"] == "Progressing"


def test_ready_and_current_is_healthy() -> None:
    """Ready=True with observedGeneration == generation is Healthy, with the Ready message."""
    hs = run_health(isvc(READY_STATUS))
    assert hs == {"status": "Healthy", "message": "Ready: 2/2 replicas serving llama-8b"}


def test_observed_generation_as_float_still_current() -> None:
    """Argo CD may hand JSON numbers to Lua as floats; 3.0 == 3 is still current."""
    status = copy.deepcopy(READY_STATUS)
    status["observedGeneration"] = 3.0
    assert run_health(isvc(status))["status"] == "Healthy"


@pytest.mark.parametrize(
    ("phase", "reason", "message"),
    [
        ("CachingModel", "CachingModel", "download job llama-8b-cache running (1/1 active)"),
        ("Scheduling", "PodsPending", "0/2 pods scheduled: Insufficient nvidia.com/gpu"),
        ("LoadingModel", "LoadingModel", "0/2 replicas ready: waiting for /ready"),
    ],
)
def test_cold_start_stages_are_progressing_and_named(phase: str, reason: str, message: str) -> None:
    """While not yet Ready the message names the phase and the Ready condition's reason and message."""
    status = with_conditions(READY_STATUS, phase, condition("Ready", "False", reason, message))
    hs = run_health(isvc(status))
    assert hs["status"] == "Progressing"
    assert hs["message"] == f"Phase {phase}: {reason}: {message}"


def test_ready_condition_missing_is_progressing() -> None:
    """A current status without a Ready condition yet is Progressing and names the phase."""
    hs = run_health(isvc({"observedGeneration": 3, "phase": "Pending", "conditions": []}))
    assert hs == {"status": "Progressing", "message": "Phase Pending"}


def test_degraded_condition_is_degraded_with_reason_and_message() -> None:
    """Degraded=True wins over Ready=True and its reason: message is shown in Argo CD."""
    status = with_conditions(
        READY_STATUS,
        "Degraded",
        condition("Degraded", "True", "ProgressDeadlineExceeded", "ReplicaSet llama-8b-7c9 has timed out"),
    )
    hs = run_health(isvc(status))
    assert hs == {
        "status": "Degraded",
        "message": "ProgressDeadlineExceeded: ReplicaSet llama-8b-7c9 has timed out",
    }


def test_failed_phase_is_degraded_even_without_degraded_condition() -> None:
    """phase Failed (e.g. a permanent spec error) is Degraded; the Ready condition explains it."""
    status = {
        "observedGeneration": 3,
        "phase": "Failed",
        "conditions": [
            condition("Ready", "False", "UnknownAcceleratorProfile", "profile 'tpu-v9' is not configured"),
        ],
    }
    hs = run_health(isvc(status))
    assert hs == {
        "status": "Degraded",
        "message": "UnknownAcceleratorProfile: profile 'tpu-v9' is not configured",
    }


JOB_FAILED = "job llama-8b-cache failed: BackoffLimitExceeded"


def test_failed_cache_job_is_degraded() -> None:
    """A failed model download (Degraded=True, ModelCached=False) is Degraded with the job's reason."""
    status = with_conditions(
        READY_STATUS,
        "Failed",
        condition("Ready", "False", "CacheJobFailed", "model download failed"),
        condition("ModelCached", "False", "CacheJobFailed", JOB_FAILED),
        condition("Degraded", "True", "CacheJobFailed", JOB_FAILED),
    )
    hs = run_health(isvc(status))
    assert hs["status"] == "Degraded"
    assert hs["message"] == f"CacheJobFailed: {JOB_FAILED}"


QUOTA_MESSAGE = (
    'pods "llama-8b-5d8f-abcde" is forbidden: exceeded quota: gpu-quota, '
    "requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=4, "
    "limited: requests.nvidia.com/gpu=4"
)


def test_quota_denied_replica_failure_is_degraded_with_quota_message() -> None:
    """A ResourceQuota that denies GPUs (Deployment ReplicaFailure) shows Degraded with the quota text."""
    status = with_conditions(
        READY_STATUS,
        "Degraded",
        condition("Ready", "False", "ReplicaFailure", QUOTA_MESSAGE),
        condition("Available", "False", "MinimumReplicasUnavailable", "0/2 available"),
        condition("Degraded", "True", "ReplicaFailure", QUOTA_MESSAGE),
    )
    status["readyReplicas"] = 0
    hs = run_health(isvc(status))
    assert hs["status"] == "Degraded"
    assert hs["message"] == f"ReplicaFailure: {QUOTA_MESSAGE}"


def test_quota_denied_without_degraded_condition_still_surfaces_reason() -> None:
    """If only Ready=False/ReplicaFailure is set, Argo CD shows Progressing with the quota reason."""
    status = with_conditions(
        READY_STATUS, "Scheduling", condition("Ready", "False", "ReplicaFailure", QUOTA_MESSAGE)
    )
    hs = run_health(isvc(status))
    assert hs["status"] == "Progressing"
    assert hs["message"] == f"Phase Scheduling: ReplicaFailure: {QUOTA_MESSAGE}"


@pytest.mark.parametrize("phase", get_args(Phase))
def test_every_phase_maps_to_an_argo_status(phase: str) -> None:
    """Every phase the operator can write yields a valid Argo CD health status and a message."""
    hs = run_health(isvc({"observedGeneration": 3, "phase": phase, "conditions": []}))
    assert hs["status"] in ARGO_STATUSES
    assert hs["message"]


def operator_status(deployment_status: dict[str, Any]) -> dict[str, Any]:
    """The status the operator computes for a Deployment reporting deployment_status (model cached)."""
    spec, meta = parse_spec({"model": {"source": "hf://o/m"}, "replicas": 2}), ServiceMeta(name="m", namespace="ns")
    job = {"kind": "Job", "metadata": {"name": download_job_name(meta, cache_key(spec))},
           "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}}
    dep = {"kind": "Deployment", "metadata": {"name": "m", "generation": 2}, "spec": {"replicas": 2},
           "status": {"conditions": [{"type": "Available", "status": "True"}], **deployment_status}}
    kids = Children({"Job": [job], "Deployment": [dep]})
    status = compute_status(spec, meta, 3, OperatorSettings(), kids, observe(spec, meta, kids, set()))
    return status.model_dump(by_alias=True, exclude_none=True)


def test_a_half_done_rollout_is_progressing_like_argo_cds_deployment_check() -> None:
    """1 of 2 replicas updated: the old replica serves (Ready=True) but the rollout is not done."""
    half = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 2, "availableReplicas": 2}
    assert run_health(isvc(operator_status(half))) == {"status": "Progressing", "message": "Rolling out: 1/2 updated"}
    terminating = {**half, "replicas": 3, "updatedReplicas": 2}
    assert run_health(isvc(operator_status(terminating)))["status"] == "Progressing", "an old replica is left"
    done = {**half, "updatedReplicas": 2}
    assert run_health(isvc(operator_status(done)))["status"] == "Healthy"
    broken = {**half, "conditions": [{"type": "Available", "status": "True"},
                                     {"type": "ReplicaFailure", "status": "True", "message": "exceeded quota"}]}
    assert run_health(isvc(operator_status(broken)))["status"] == "Degraded", "a problem wins over the rollout"


def test_argocd_cm_embeds_health_lua_verbatim() -> None:
    """The argocd-cm snippet carries exactly health.lua, so the two can never drift."""
    cm = yaml.safe_load(CM_PATCH.read_text())
    assert cm["kind"] == "ConfigMap"
    assert cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"][HEALTH_KEY] == HEALTH_LUA.read_text()


def test_argocd_cm_lua_behaves_like_health_lua() -> None:
    """The embedded copy runs and gives the same verdict (guards against YAML quoting surprises)."""
    embedded = yaml.safe_load(CM_PATCH.read_text())["data"][HEALTH_KEY]
    assert run_health(isvc(READY_STATUS), embedded)["status"] == "Healthy"


def test_application_example_is_a_valid_argo_application() -> None:
    """The Application example syncs manifests/ and an example from Git with automated sync."""
    docs = [d for d in yaml.safe_load_all(APPLICATION.read_text()) if d]
    assert docs
    assert all(d["apiVersion"] == "argoproj.io/v1alpha1" and d["kind"] == "Application" for d in docs)
    paths = set()
    for app in docs:
        sources = app["spec"].get("sources") or [app["spec"]["source"]]
        paths.update(s["path"] for s in sources)
        assert app["spec"]["destination"]["server"]
        assert "ignoreDifferences" not in app["spec"], "replicas are left to the HPA; nothing to ignore"
    assert "manifests" in paths
    for path in paths:
        assert (REPO / path).is_dir(), f"Application points at missing folder {path}"
