"""The operator reconciles an InferenceService into live children with truthful status."""

from __future__ import annotations

from inferkube.api import contract
from kopf.testing import KopfRunner

from tests.integration.operator.conftest import NS, condition, isvc, wait_for
from tests.kube_emulator import KubeEmulator

CHILD_KINDS = ["PersistentVolumeClaim", "Job", "Service", "PodDisruptionBudget"]


def complete_job(kube: KubeEmulator, name: str) -> None:
    """Play the Job controller: the download finished."""
    kube.patch_status("Job", NS, name, {
        "succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:01:00Z",
        "conditions": [{"type": "Complete", "status": "True"}],
    })


def the_job(kube: KubeEmulator, name: str = "demo") -> dict:
    jobs = [j for j in kube.list("Job", NS) if j["metadata"]["labels"].get(contract.LABEL_ISVC) == name]
    assert len(jobs) == 1
    return jobs[0]


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
