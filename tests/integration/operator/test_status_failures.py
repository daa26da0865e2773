"""Failures are named in status, rollouts are Progressing, settings reload live, Events name the operator.

The real operator (KopfRunner) against the API emulator; the tests play the kubelet, the Job and the
Deployment controllers by writing pod, Job and Deployment status.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from inferkube.api import contract
from tests.integration.operator.conftest import NS, REPO, condition, isvc, start_operator, wait_for
from tests.integration.operator.test_reconcile import complete_job, get, ready_service, the_job
from tests.kube_emulator import KubeEmulator
from tests.unit.operator.test_argocd_health import run_health

POD_NAME = "inferkube-operator-5c7d9-x2k4q"  # what the downward API would set
MISSING_SECRET = 'secret "hf-token" not found'


@pytest.fixture(autouse=True)
def _operator_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator pod's downward-API variables, and a fast resync (so 'one Event, not one per resync' is tested)."""
    monkeypatch.setenv("POD_NAME", POD_NAME)
    monkeypatch.setenv("POD_NAMESPACE", "default")
    monkeypatch.setenv("INFERKUBE_OPERATOR_RESYNC_INTERVAL_SECONDS", "0.3")


def play_pod(kube: KubeEmulator, name: str, labels: dict[str, str], status: dict[str, Any]) -> None:
    """Play the scheduler and kubelet: a pod with these labels reporting this status."""
    if kube.get("Pod", NS, name) is None:
        kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS, "labels": labels},
                     "spec": {"containers": [{"name": "main", "image": "rt"}]}})
    kube.patch_status("Pod", NS, name, status)


def container(name: str, state: dict[str, Any], restarts: int = 0, last: dict[str, Any] | None = None,
              ready: bool = False) -> dict[str, Any]:
    """One containerStatuses entry."""
    return {"name": name, "ready": ready, "restartCount": restarts, "image": "rt", "imageID": "",
            "started": "running" in state, "state": state, "lastState": {"terminated": last} if last else {}}


def warnings(kube: KubeEmulator, reason: str, namespace: str = NS) -> list[dict[str, Any]]:
    """The Warning Events of one reason."""
    return [e for e in kube.list("Event", namespace) if e.get("type") == "Warning" and e.get("reason") == reason]


def assert_names_the_operator(event: dict[str, Any], action: str) -> None:
    """An Event reported by this operator pod, doing action."""
    assert (event["reportingComponent"], event["reportingInstance"], event["source"]["component"],
            event["action"]) == ("inferkube-operator", POD_NAME, "inferkube-operator", action)


def test_a_missing_secret_fails_the_download_at_once_with_one_event_and_recovers(kube: KubeEmulator) -> None:
    with start_operator() as runner:
        kube.create(isvc())
        job = wait_for(lambda: the_job(kube))
        name = job["metadata"]["name"]
        labels = {**job["spec"]["template"]["metadata"]["labels"], "job-name": name}
        kube.patch_status("Job", NS, name, {"active": 1, "startTime": "2026-01-01T00:00:00Z"})
        waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": MISSING_SECRET}}
        play_pod(kube, f"{name}-x1", labels, {"phase": "Pending", "containerStatuses": [container("download", waiting)]})
        obj = wait_for(lambda: (condition(get(kube), "ModelCached") or {}).get("reason") == "CreateContainerConfigError"
                       and get(kube))
        assert MISSING_SECRET in condition(obj, "ModelCached")["message"]
        assert (condition(obj, "Degraded")["status"], condition(obj, "Degraded")["reason"]) == (
            "True", "CreateContainerConfigError")
        assert obj["status"]["phase"] == "Failed" and MISSING_SECRET in obj["status"]["phaseDetail"]
        assert obj["status"]["cache"]["phase"] == "Failed"
        [event] = wait_for(lambda: warnings(kube, "CreateContainerConfigError"))
        assert MISSING_SECRET in event["message"] and event["involvedObject"]["name"] == "demo"
        assert_names_the_operator(event, "Download")
        time.sleep(1.5)  # five resyncs
        assert len(warnings(kube, "CreateContainerConfigError")) == 1, "one Event per reason, not one per resync"
        # the user creates the Secret; the kubelet starts the container and the status recovers by itself
        kube.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf-token", "namespace": NS},
                     "stringData": {"token": "hf_x"}})
        play_pod(kube, f"{name}-x1", labels, {"phase": "Running", "containerStatuses": [
            container("download", {"running": {"startedAt": "2026-01-01T00:00:05Z"}})]})
        obj = wait_for(lambda: get(kube)["status"]["phase"] == "CachingModel" and get(kube))
        assert condition(obj, "Degraded")["status"] == "False"
        complete_job(kube, name)
        wait_for(lambda: kube.get("Deployment", NS, "demo"))
    assert runner.exception is None and "Traceback" not in runner.output
    assert kube.validation_errors == []


def test_a_crash_looping_runtime_pod_is_degraded_with_its_restarts_and_last_words(kube: KubeEmulator) -> None:
    with start_operator() as runner:
        kube.create(isvc())
        complete_job(kube, wait_for(lambda: the_job(kube))["metadata"]["name"])
        dep = wait_for(lambda: kube.get("Deployment", NS, "demo"))
        labels = dep["spec"]["template"]["metadata"]["labels"]
        last = {"exitCode": 1, "reason": "Error", "message": "RuntimeError: CUDA out of memory in warm-up"}
        crash = container("runtime", {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
                          restarts=7, last=last)
        play_pod(kube, "demo-7f9c-a1", labels, {"phase": "Running", "containerStatuses": [crash]})
        obj = wait_for(lambda: (condition(get(kube), "Degraded") or {}).get("reason") == "CrashLoopBackOff"
                       and get(kube))
        message = condition(obj, "Degraded")["message"]
        assert "restarted 7 times" in message and "CUDA out of memory in warm-up" in message and "demo-7f9c-a1" in message
        assert obj["status"]["phase"] == "Failed", "nothing serves"
        assert condition(obj, "Ready")["reason"] == "CrashLoopBackOff"
        assert run_health(obj)["status"] == "Degraded"
        [event] = wait_for(lambda: warnings(kube, "CrashLoopBackOff"))
        assert_names_the_operator(event, "Reconcile")
        # more restarts change the message, not the reason: still one Event
        play_pod(kube, "demo-7f9c-a1", labels, {"containerStatuses": [{**crash, "restartCount": 8}]})
        wait_for(lambda: "restarted 8 times" in condition(get(kube), "Degraded")["message"])
        assert len(warnings(kube, "CrashLoopBackOff")) == 1
        # the image is fixed: the pods run and become ready; the status recovers by itself
        play_pod(kube, "demo-7f9c-a1", labels, {"containerStatuses": [
            container("runtime", {"running": {"startedAt": "2026-01-01T00:10:00Z"}}, restarts=8, ready=True)]})
        kube.mark_deployment_available(NS, "demo")
        obj = wait_for(lambda: get(kube)["status"]["phase"] == "Ready" and get(kube))
        assert condition(obj, "Degraded")["status"] == "False"
    assert runner.exception is None and "Traceback" not in runner.output
    assert kube.validation_errors == []


def test_a_half_done_rollout_is_progressing_while_the_old_replicas_serve(kube: KubeEmulator) -> None:
    with start_operator() as runner:
        ready_service(kube)
        kube.patch("InferenceService", NS, "demo", {"spec": {"runtime": {"image": "registry.local/rt:2"}}})
        dep = wait_for(lambda: (d := kube.get("Deployment", NS, "demo"))["metadata"]["generation"] > 1 and d)
        # the Deployment controller replaced one of the two replicas so far (maxSurge 0)
        kube.patch_status("Deployment", NS, "demo", {"observedGeneration": dep["metadata"]["generation"],
                                                      "replicas": 2, "updatedReplicas": 1, "readyReplicas": 2,
                                                      "availableReplicas": 2})
        obj = wait_for(lambda: get(kube)["status"].get("phaseDetail") == "1/2 updated" and get(kube))
        assert obj["status"]["phase"] == "RollingOut"
        assert (condition(obj, "Progressing")["status"], condition(obj, "Progressing")["reason"]) == (
            "True", "RollingOut")
        assert condition(obj, "Ready")["status"] == "True", "the old replicas keep serving"
        assert run_health(obj) == {"status": "Progressing", "message": "Rolling out: 1/2 updated"}
        kube.mark_deployment_available(NS, "demo")
        obj = wait_for(lambda: get(kube)["status"]["phase"] == "Ready" and get(kube))
        assert condition(obj, "Progressing")["status"] == "False" and run_health(obj)["status"] == "Healthy"
    assert runner.exception is None and "Traceback" not in runner.output


def settings_configmap(text: str) -> dict[str, Any]:
    """The operator's settings ConfigMap (manifests/operator/settings.yaml) holding text."""
    cm = yaml.safe_load((REPO / "manifests" / "operator" / "settings.yaml").read_text())
    cm["metadata"]["namespace"] = "default"
    cm["data"]["settings.yaml"] = text
    return dict(cm)


TPU_PROFILE = {"tpu-v9": {"resourceName": "google.com/tpu", "nodeSelector": {"cloud.google.com/gke-tpu": "v9"}}}


def test_settings_changes_apply_without_a_restart_and_invalid_ones_are_refused(kube: KubeEmulator) -> None:
    shipped = yaml.safe_load(yaml.safe_load((REPO / "manifests" / "operator" / "settings.yaml").read_text())
                             ["data"]["settings.yaml"])
    kube.create(settings_configmap(yaml.safe_dump(shipped)))
    with start_operator() as runner:
        kube.create(isvc(resources={"accelerator": "tpu-v9", "gpus": 1}))
        wait_for(lambda: (condition(get(kube), "Ready") or {}).get("reason") == "InvalidSpec")
        # the platform team syncs a new profile; no restart
        shipped["acceleratorProfiles"].update(TPU_PROFILE)
        kube.patch("ConfigMap", "default", "inferkube-operator-settings",
                   {"data": {"settings.yaml": yaml.safe_dump(shipped)}})
        complete_job(kube, wait_for(lambda: the_job(kube))["metadata"]["name"])
        dep = wait_for(lambda: kube.get("Deployment", NS, "demo"))
        pod = dep["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"cloud.google.com/gke-tpu": "v9"}
        assert pod["containers"][0]["resources"]["limits"]["google.com/tpu"] in (1, "1")
        wait_for(lambda: (condition(get(kube), "Ready") or {}).get("reason") != "InvalidSpec")
        # an invalid edit is refused: old settings kept, a Warning Event on the ConfigMap, nothing torn down
        kube.patch("ConfigMap", "default", "inferkube-operator-settings",
                   {"data": {"settings.yaml": "acceleratorProfiles: [tpu-v9]\n"}})
        [event] = wait_for(lambda: warnings(kube, "InvalidSettings", "default"))
        assert event["involvedObject"]["kind"] == "ConfigMap" and "acceleratorProfiles" in event["message"]
        assert_names_the_operator(event, "LoadSettings")
        time.sleep(1.0)  # resyncs run with the settings in use
        assert kube.get("Deployment", NS, "demo")["spec"]["template"]["spec"]["nodeSelector"] == {
            "cloud.google.com/gke-tpu": "v9"}
        assert (condition(get(kube), "Ready") or {}).get("reason") != "InvalidSpec"
        assert len(warnings(kube, "InvalidSettings", "default")) == 1
    assert runner.exception is None and "Traceback" not in runner.output
    assert "keeping the settings in use" in runner.output, "the log says why"
    assert kube.validation_errors == []
    assert all(e["source"]["component"] == contract.MANAGED_BY for e in kube.list("Event"))
