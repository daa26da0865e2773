"""The operator reconciles an InferenceService into live children with truthful status."""

from __future__ import annotations

import time

from kopf.testing import KopfRunner

from inferkube.api import contract
from tests.integration.operator.conftest import (
    NS,
    condition,
    isvc,
    require_upstream,
    start_operator,
    upstream_crd,
    wait_for,
)
from tests.kube_emulator import KubeEmulator

CHILD_KINDS = ["PersistentVolumeClaim", "Job", "Service", "PodDisruptionBudget"]


def complete_job(kube: KubeEmulator, name: str) -> None:
    """Play the Job controller: the download finished."""
    kube.patch_status("Job", NS, name, {
        "succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:01:00Z",
        "conditions": [{"type": "Complete", "status": "True"}],
    })


def the_job(kube: KubeEmulator, name: str = "demo") -> dict | None:
    """The one download Job of an InferenceService (None while there is none)."""
    jobs = [j for j in kube.list("Job", NS) if j["metadata"]["labels"].get(contract.LABEL_ISVC) == name]
    assert len(jobs) <= 1, "one download Job per source and revision"
    return jobs[0] if jobs else None


def test_create_caches_then_serves_then_ready(kube: KubeEmulator, operator: KopfRunner) -> None:
    kube.create(isvc())
    for kind in CHILD_KINDS:
        wait_for(lambda kind=kind: kube.get(kind, NS, "demo-model-cache" if kind == "PersistentVolumeClaim" else
                                            (the_job(kube)["metadata"]["name"] if kind == "Job" else "demo")))
    obj = wait_for(lambda: (kube.get("InferenceService", NS, "demo") or {}).get("status", {}).get("phase") and
                   kube.get("InferenceService", NS, "demo"))
    assert obj["status"]["phase"] == "CachingModel"
    assert kube.get("Deployment", NS, "demo") is None, "held back until the cache is filled"
    assert condition(obj, "ModelCached")["status"] == "False"
    complete_job(kube, the_job(kube)["metadata"]["name"])
    dep = wait_for(lambda: kube.get("Deployment", NS, "demo"))
    assert dep["spec"]["replicas"] == 2
    assert dep["metadata"]["ownerReferences"][0]["name"] == "demo"
    assert "app.kubernetes.io/instance" not in dep["metadata"]["labels"]
    kube.mark_deployment_available(NS, "demo")
    ready = wait_for(lambda: condition(kube.get("InferenceService", NS, "demo"), "Ready")["status"] == "True"
                     and kube.get("InferenceService", NS, "demo"))
    status = ready["status"]
    assert status["phase"] == "Ready"
    assert status["observedGeneration"] == ready["metadata"]["generation"]
    assert status["url"] == "http://demo.llm.svc.cluster.local/v1"
    assert status["readyReplicas"] == 2
    assert condition(ready, "ModelCached")["status"] == "True"
    assert condition(ready, "MonitoringReady")["reason"] == "PrometheusOperatorMissing"
    assert "finalizers" not in ready["metadata"] or not ready["metadata"]["finalizers"]


def get(kube: KubeEmulator, name: str = "demo") -> dict:
    return kube.get("InferenceService", NS, name) or {}


def ready_service(kube: KubeEmulator, name: str = "demo", **spec) -> dict:
    """Create an InferenceService and play the controllers until it is Ready."""
    kube.create(isvc(name, **spec))
    job = wait_for(lambda: the_job(kube, name))
    complete_job(kube, job["metadata"]["name"])
    wait_for(lambda: kube.get("Deployment", NS, name))
    kube.mark_deployment_available(NS, name)
    return wait_for(lambda: (condition(get(kube, name), "Ready") or {}).get("status") == "True" and get(kube, name))


def writes_by_us(kube: KubeEmulator) -> list:
    return [w for w in kube.writes if w.verb != "GET" and "/events" not in w.path]


def test_steady_state_makes_no_writes(kube: KubeEmulator, operator: KopfRunner) -> None:
    ready_service(kube)
    time.sleep(1.0)  # let the last watch events settle
    kube.reset_counters()
    time.sleep(3.0)
    assert writes_by_us(kube) == []


def test_update_changes_children_and_leaves_replicas_to_the_hpa(kube: KubeEmulator, operator: KopfRunner) -> None:
    ready_service(kube)
    kube.patch("InferenceService", NS, "demo", {"spec": {"runtime": {"image": "registry.local/rt:2",
                                                                     "engineArgs": ["--enforce-eager"]}}})
    dep = wait_for(lambda: (d := kube.get("Deployment", NS, "demo"))["spec"]["template"]["spec"]["containers"][0]
                   ["image"] == "registry.local/rt:2" and d)
    assert dep["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == ["--", "--enforce-eager"]
    # switch to autoscaling: an HPA appears and the operator stops sending replicas
    kube.patch("InferenceService", NS, "demo", {"spec": {"replicas": None, "autoscaling": {
        "minReplicas": 1, "maxReplicas": 5, "targetQueueDepth": 4}}})
    hpa = wait_for(lambda: kube.get("HorizontalPodAutoscaler", NS, "demo"))
    assert hpa["spec"]["maxReplicas"] == 5
    kube.patch("Deployment", NS, "demo", {"spec": {"replicas": 4}})  # the HPA scales
    kube.patch("InferenceService", NS, "demo", {"spec": {"runtime": {"image": "registry.local/rt:3"}}})
    wait_for(lambda: kube.get("Deployment", NS, "demo")["spec"]["template"]["spec"]["containers"][0]["image"]
             == "registry.local/rt:3")
    time.sleep(0.5)
    assert kube.get("Deployment", NS, "demo")["spec"]["replicas"] == 4, "the operator must not fight the HPA"
    applies = [w for w in kube.writes if "deployments/demo" in w.path]
    assert all(w.field_manager == contract.FIELD_MANAGER for w in applies if w.verb == "PATCH" and w.field_manager)
    assert kube.get("InferenceService", NS, "demo")["spec"]["runtime"]["image"] == "registry.local/rt:3"


def test_deleted_and_edited_children_are_repaired(kube: KubeEmulator, operator: KopfRunner) -> None:
    ready_service(kube)
    kube.delete("Service", NS, "demo")
    svc = wait_for(lambda: kube.get("Service", NS, "demo"), timeout=10)
    assert svc["spec"]["ports"][0]["port"] == 80
    kube.patch("Deployment", NS, "demo", {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 1}}}})
    wait_for(lambda: kube.get("Deployment", NS, "demo")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
             > 100, timeout=10)
    kube.patch("PodDisruptionBudget", NS, "demo", {"spec": {"maxUnavailable": 0}})
    wait_for(lambda: kube.get("PodDisruptionBudget", NS, "demo")["spec"]["maxUnavailable"] == 1, timeout=10)


def test_delete_garbage_collects_children_but_retained_cache_survives(kube: KubeEmulator, operator: KopfRunner) -> None:
    ready_service(kube, "keep", cache={"reclaimPolicy": "Retain", "name": "shared-cache"})
    ready_service(kube, "drop")
    assert get(kube, "keep")["status"]["cache"]["retained"] is True
    kube.delete("InferenceService", NS, "keep")
    kube.delete("InferenceService", NS, "drop")
    wait_for(lambda: kube.get("Deployment", NS, "keep") is None and kube.get("Deployment", NS, "drop") is None)
    wait_for(lambda: kube.get("PersistentVolumeClaim", NS, "drop-model-cache") is None)
    assert kube.get("PersistentVolumeClaim", NS, "shared-cache") is not None, "Retain keeps the claim"
    # a new InferenceService naming the retained claim reuses it (its Job finds the copy: 0 bytes)
    kube.create(isvc("again", cache={"reclaimPolicy": "Retain", "name": "shared-cache"}))
    wait_for(lambda: the_job(kube, "again"))
    pvc = kube.get("PersistentVolumeClaim", NS, "shared-cache")
    assert "ownerReferences" not in pvc["metadata"] or not pvc["metadata"]["ownerReferences"]


def test_quota_denied_deployment_is_not_ready_with_reason(kube: KubeEmulator, operator: KopfRunner) -> None:
    kube.create(isvc())
    complete_job(kube, wait_for(lambda: the_job(kube))["metadata"]["name"])
    wait_for(lambda: kube.get("Deployment", NS, "demo"))
    message = 'pods "demo-abc" is forbidden: exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1'
    kube.patch_status("Deployment", NS, "demo", {"replicas": 0, "readyReplicas": 0, "conditions": [
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable", "message": "no pods"},
        {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message},
    ]})
    obj = wait_for(lambda: (condition(get(kube), "Degraded") or {}).get("status") == "True" and get(kube))
    ready = condition(obj, "Ready")
    assert ready["status"] == "False" and ready["reason"] == "ReplicaFailure"
    assert "exceeded quota" in ready["message"]
    assert obj["status"]["phase"] == "Failed"


def test_download_failure_and_revision_change(kube: KubeEmulator, operator: KopfRunner) -> None:
    ready_service(kube)
    old_job = the_job(kube)["metadata"]["name"]
    kube.patch("InferenceService", NS, "demo", {"spec": {"model": {"revision": "r2"}}})
    new_job = wait_for(lambda: [j for j in kube.list("Job", NS) if j["metadata"]["name"] != old_job])[0]
    # the running replicas keep serving the old revision while the new one downloads
    obj = wait_for(lambda: get(kube)["status"]["observedGeneration"] == get(kube)["metadata"]["generation"] and get(kube))
    assert condition(obj, "Ready")["status"] == "True"
    dep = kube.get("Deployment", NS, "demo")
    old_key = old_job.rsplit("-", 1)[1]
    assert dep["metadata"]["annotations"][contract.ANNOTATION_CACHE_KEY].startswith(old_key)
    kube.patch_status("Job", NS, new_job["metadata"]["name"], {"failed": 4, "conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}]})
    obj = wait_for(lambda: (condition(get(kube), "ModelCached") or {}).get("reason") == "DownloadFailed" and get(kube))
    assert "BackoffLimitExceeded" in condition(obj, "ModelCached")["message"]
    assert condition(obj, "Degraded")["status"] == "True"
    # the user retries by deleting the failed Job; this time it completes and the rollout happens
    kube.delete("Job", NS, new_job["metadata"]["name"])
    again = wait_for(lambda: kube.get("Job", NS, new_job["metadata"]["name"]))
    assert again["metadata"]["uid"] != new_job["metadata"]["uid"]
    complete_job(kube, new_job["metadata"]["name"])
    new_key = new_job["metadata"]["name"].rsplit("-", 1)[1]
    wait_for(lambda: kube.get("Deployment", NS, "demo")["spec"]["template"]["metadata"]["annotations"]
             [contract.ANNOTATION_CACHE_KEY].startswith(new_key))


def test_unknown_accelerator_profile_is_a_permanent_error(kube: KubeEmulator, operator: KopfRunner) -> None:
    kube.create(isvc(resources={"accelerator": "tpu-v9", "gpus": 1}))
    obj = wait_for(lambda: (condition(get(kube), "Ready") or {}).get("reason") == "InvalidSpec" and get(kube))
    assert "unknown accelerator profile 'tpu-v9'" in condition(obj, "Ready")["message"]
    assert obj["status"]["phase"] == "Failed"
    events = wait_for(lambda: [e for e in kube.list("Event", NS) if e.get("reason") == "InvalidSpec"])
    assert len(events) == 1
    kube.reset_counters()
    time.sleep(1.5)
    assert writes_by_us(kube) == [], "no retry storm on a permanent error"
    assert kube.list("Job", NS) == []


def test_invalid_object_is_rejected_by_the_crd_schema(kube: KubeEmulator) -> None:
    bad = isvc(autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetQueueDepth": 2})  # with replicas: 2
    with start_operator() as runner:
        try:
            kube.create(bad)
        except Exception as exc:  # noqa: BLE001 - the emulator raises its ApiError
            assert "either replicas or autoscaling" in str(exc)
        else:
            raise AssertionError("the CRD's CEL rule must reject replicas + autoscaling")
        bad["spec"]["model"]["source"] = "s3://bucket/model"
        del bad["spec"]["autoscaling"]
        try:
            kube.create(bad)
        except Exception as exc:  # noqa: BLE001
            assert "spec.model.source" in str(exc)
        else:
            raise AssertionError("the CRD's pattern must reject an unknown source scheme")
        time.sleep(0.5)
    assert runner.exception is None
    assert get(kube) == {}
    assert [r.verb for r in kube.validation_errors] == ["create", "create"], "only the user's two creates failed"


def test_api_faults_are_retried_and_converge(kube: KubeEmulator, operator: KopfRunner) -> None:
    kube.inject(method="PATCH", path_regex="/services/", status=500, times=3)
    kube.inject(method="PATCH", path_regex="/poddisruptionbudgets/", status=409, times=2)
    kube.inject(method="PATCH", path_regex="/inferenceservices/demo/status", status=None, delay=2.0, times=1)
    kube.create(isvc())
    wait_for(lambda: kube.get("Service", NS, "demo") and kube.get("PodDisruptionBudget", NS, "demo"), timeout=15)
    wait_for(lambda: get(kube).get("status", {}).get("phase") == "CachingModel", timeout=15)


def test_restart_mid_reconcile_neither_duplicates_nor_loses(kube: KubeEmulator) -> None:
    kube.inject(method="PATCH", path_regex="/poddisruptionbudgets/", status=None, delay=3.0, times=1)
    with start_operator() as runner:
        kube.create(isvc())
        wait_for(lambda: kube.get("Service", NS, "demo"))
    assert runner.exception is None
    assert kube.get("Deployment", NS, "demo") is None
    with start_operator() as runner:
        job = wait_for(lambda: the_job(kube))
        complete_job(kube, job["metadata"]["name"])
        wait_for(lambda: kube.get("Deployment", NS, "demo") and kube.get("PodDisruptionBudget", NS, "demo"))
        kube.mark_deployment_available(NS, "demo")
        wait_for(lambda: (condition(get(kube), "Ready") or {}).get("status") == "True")
    assert runner.exception is None
    assert len(kube.list("Job", NS)) == 1
    assert len(kube.list("Service", NS)) == 1
    assert kube.validation_errors == []


def test_servicemonitor_appears_when_its_crd_is_installed(kube: KubeEmulator, operator: KopfRunner) -> None:
    require_upstream("monitoring.coreos.com_servicemonitors.yaml", "monitoring.coreos.com_prometheusrules.yaml")
    ready_service(kube)
    assert kube.get("ServiceMonitor", NS, "demo") is None if _served(kube, "ServiceMonitor") else True
    assert condition(get(kube), "MonitoringReady")["reason"] == "PrometheusOperatorMissing"
    kube.create(upstream_crd("monitoring.coreos.com_servicemonitors.yaml"))
    sm = wait_for(lambda: _served(kube, "ServiceMonitor") and kube.get("ServiceMonitor", NS, "demo"), timeout=20)
    assert sm["spec"]["endpoints"][0]["path"] == contract.METRICS_PATH
    obj = wait_for(lambda: (condition(get(kube), "MonitoringReady") or {}).get("status") == "True" and get(kube))
    assert condition(obj, "Ready")["status"] == "True"
    kube.create(upstream_crd("monitoring.coreos.com_prometheusrules.yaml"))
    rule = wait_for(lambda: _served(kube, "PrometheusRule") and kube.get("PrometheusRule", NS, "demo"), timeout=20)
    assert {r["alert"] for r in rule["spec"]["groups"][0]["rules"]} >= {"InferkubeReplicaDown", "InferkubeHighErrorRate"}


def _served(kube: KubeEmulator, kind: str) -> bool:
    try:
        kube.resource(kind)
    except Exception:  # noqa: BLE001 - not served yet
        return False
    return True


def test_download_progress_and_result_show_in_status(kube: KubeEmulator, monkeypatch) -> None:
    monkeypatch.setenv("INFERKUBE_OPERATOR_PROGRESS_INTERVAL_SECONDS", "0.3")
    with start_operator() as runner:
        kube.create(isvc())
        job = wait_for(lambda: the_job(kube))
        name = job["metadata"]["name"]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"{name}-x1", "namespace": NS,
                            "labels": {**job["spec"]["template"]["metadata"]["labels"], "job-name": name}},
               "spec": {"restartPolicy": "Never", "containers": [{"name": "download", "image": "rt"}]}}
        kube.create(pod)
        kube.patch_status("Pod", NS, pod["metadata"]["name"], {"phase": "Running"})
        progress = '{"event":"progress","bytesDone":%d,"bytesTotal":1000,"filesDone":1,"filesTotal":4}'
        kube.set_pod_log(NS, pod["metadata"]["name"], "starting\n" + progress % 250)
        kube.patch_status("Job", NS, name, {"active": 1, "startTime": "2026-01-01T00:00:00Z"})
        obj = wait_for(lambda: get(kube).get("status", {}).get("phaseDetail") == "25%" and get(kube))
        assert obj["status"]["phase"] == "CachingModel"
        assert obj["status"]["cache"]["phase"] == "Downloading"
        assert (obj["status"]["cache"]["bytesDone"], obj["status"]["cache"]["filesTotal"]) == (250, 4)
        assert "(25%)" in condition(obj, "ModelCached")["message"]
        kube.set_pod_log(NS, pod["metadata"]["name"], progress % 900)  # no event: read on the progress timer
        wait_for(lambda: get(kube)["status"]["phaseDetail"] == "90%")
        done = '{"event":"done","revision":"abc123","bytes":1000,"files":4,"bytesDownloaded":1000}'
        kube.patch_status("Pod", NS, pod["metadata"]["name"], {"phase": "Succeeded", "containerStatuses": [
            {"name": "download", "ready": False, "restartCount": 0, "image": "rt", "imageID": "", "started": False,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": done}}}]})
        complete_job(kube, name)
        obj = wait_for(lambda: get(kube).get("status", {}).get("cache", {}).get("phase") == "Ready" and get(kube))
        assert obj["status"]["cache"]["revision"] == "abc123"
        assert obj["status"]["cache"]["bytesDone"] == 1000
        wait_for(lambda: kube.get("Deployment", NS, "demo"))
    assert runner.exception is None
    assert kube.validation_errors == []


def test_children_the_spec_no_longer_wants_are_removed(kube: KubeEmulator, monkeypatch) -> None:
    kube.create(upstream_crd("monitoring.coreos.com_servicemonitors.yaml"))
    with start_operator() as runner:
        body = isvc(autoscaling={"maxReplicas": 3, "targetQueueDepth": 4})
        del body["spec"]["replicas"]
        kube.create(body)
        complete_job(kube, wait_for(lambda: the_job(kube))["metadata"]["name"])
        wait_for(lambda: kube.get("Deployment", NS, "demo"))
        wait_for(lambda: kube.get("HorizontalPodAutoscaler", NS, "demo") and kube.get("ServiceMonitor", NS, "demo"))
        kube.patch("InferenceService", NS, "demo", {"spec": {"autoscaling": None, "replicas": 3,
                                                             "monitoring": {"serviceMonitor": False}}})
        wait_for(lambda: kube.get("HorizontalPodAutoscaler", NS, "demo") is None)
        wait_for(lambda: kube.get("ServiceMonitor", NS, "demo") is None)
        assert wait_for(lambda: kube.get("Deployment", NS, "demo")["spec"]["replicas"] == 3)
        obj = wait_for(lambda: (condition(get(kube), "MonitoringReady") or {}).get("reason") == "Disabled" and get(kube))
        assert "AutoscalerReady" not in {c["type"] for c in obj["status"]["conditions"]}
        # an old revision's finished download Job goes once the new revision serves
        old_job = the_job(kube)["metadata"]["name"]
        kube.patch("InferenceService", NS, "demo", {"spec": {"model": {"revision": "r2"}}})
        new_job = wait_for(lambda: [j for j in kube.list("Job", NS) if j["metadata"]["name"] != old_job])[0]
        complete_job(kube, new_job["metadata"]["name"])
        wait_for(lambda: kube.get("Job", NS, old_job) is None)
        assert kube.get("PersistentVolumeClaim", NS, "demo-model-cache") is not None
    assert runner.exception is None
    assert kube.validation_errors == []


def test_status_settles_after_a_revision_change_and_survives_resyncs(kube: KubeEmulator, monkeypatch) -> None:
    monkeypatch.setenv("INFERKUBE_OPERATOR_RESYNC_INTERVAL_SECONDS", "0.5")
    with start_operator() as runner:
        ready_service(kube)
        kube.patch("InferenceService", NS, "demo", {"spec": {"model": {"revision": "r2"}}})
        obj = wait_for(lambda: get(kube)["status"].get("cache", {}).get("phase") == "Pending" and get(kube))
        assert "finishedAt" not in obj["status"]["cache"], "the old Job's times are not the new download's"
        time.sleep(1.0)
        kube.reset_counters()
        time.sleep(2.0)  # four resyncs
        assert writes_by_us(kube) == []
    assert runner.exception is None


def test_restart_keeps_a_ready_service_ready(kube: KubeEmulator) -> None:
    with start_operator():
        ready_service(kube)
    seen = []
    with start_operator() as runner:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            seen.append(condition(get(kube), "Ready")["status"])
            time.sleep(0.05)
    assert runner.exception is None
    assert set(seen) == {"True"}, "a restart must not flap Ready"


def test_keda_scaledobject_appears_when_keda_is_installed(kube: KubeEmulator, operator: KopfRunner) -> None:
    require_upstream("keda.sh_scaledobjects.yaml")
    body = isvc(autoscaling={"engine": "keda", "maxReplicas": 4, "targetQueueDepth": 10})
    del body["spec"]["replicas"]
    kube.create(body)
    complete_job(kube, wait_for(lambda: the_job(kube))["metadata"]["name"])
    wait_for(lambda: kube.get("Deployment", NS, "demo"))
    kube.mark_deployment_available(NS, "demo")
    # serving does not wait for an optional autoscaler: Ready while KEDA is missing
    wait_for(lambda: (condition(get(kube), "AutoscalerReady") or {}).get("reason") == "KedaMissing"
             and condition(get(kube), "Ready")["status"] == "True")
    kube.create(upstream_crd("keda.sh_scaledobjects.yaml"))
    so = wait_for(lambda: _served(kube, "ScaledObject") and kube.get("ScaledObject", NS, "demo"), timeout=20)
    assert so["spec"]["scaleTargetRef"]["name"] == "demo" and so["spec"]["maxReplicaCount"] == 4
    wait_for(lambda: (condition(get(kube), "AutoscalerReady") or {}).get("status") == "True")
