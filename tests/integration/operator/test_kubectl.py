"""The real kubectl against the API emulator and the real operator, as a platform engineer drives it.

Install with `kubectl apply -f crds/` and `kubectl apply -k manifests/`, apply an example, play the Job and
Deployment controllers with `kubectl patch --subresource=status`, then read everything back through kubectl:
printer columns, `explain`, `scale`, `wait`, `diff`, a CEL rejection, `describe` with Events, deletion and
garbage collection.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from inferkube.api import contract
from tests.integration.operator.conftest import REPO, start_operator, wait_for
from tests.kube_emulator import KubeEmulator

KUBECTL = shutil.which("kubectl")
NS = "default"  # the examples name it
EXAMPLE = REPO / "manifests" / "examples" / "cpu-tiny-kind.yaml"
REJECTED = {"cel-rejected"}  # services whose invalid writes the tests send on purpose

pytestmark = [pytest.mark.slow, pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH")]


@dataclass
class Kubectl:
    """The kubectl binary bound to the emulator's kubeconfig and a private discovery cache."""

    kubeconfig: str
    cache_dir: str

    def __call__(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run kubectl; with check, a non-zero exit fails the test with kubectl's stderr."""
        assert KUBECTL is not None
        result = subprocess.run([KUBECTL, f"--kubeconfig={self.kubeconfig}", f"--cache-dir={self.cache_dir}", *args],
                                input=stdin, capture_output=True, text=True, timeout=60)
        if check:
            assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
        return result

    def jsonpath(self, resource: str, expr: str, namespace: str = NS) -> str:
        """`kubectl get RESOURCE -o jsonpath=EXPR` (what scripts and runbooks read)."""
        return self("get", "-n", namespace, *resource.split(), "-o", f"jsonpath={expr}").stdout

    def json(self, resource: str, namespace: str = NS) -> dict[str, Any]:
        """`kubectl get RESOURCE -o json`, decoded."""
        return dict(json.loads(self("get", "-n", namespace, resource, "-o", "json").stdout))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeEmulator, Kubectl]]:
    """An emulator installed with kubectl (CRDs, then the kustomization) and the real operator running."""
    with KubeEmulator(namespaces=("default",)) as kube, pytest.MonkeyPatch.context() as patch:
        kubectl = Kubectl(kube.kubeconfig(), str(tmp_path_factory.mktemp("kubectl-cache")))
        patch.setenv("KUBECONFIG", kubectl.kubeconfig)
        crds = kubectl("apply", "-f", str(REPO / "crds"))
        assert "customresourcedefinition.apiextensions.k8s.io/inferenceservices.serving.inferkube.dev created" in crds.stdout
        install = kubectl("apply", "-k", str(REPO / "manifests"))
        for line in ("namespace/inferkube-system created", "deployment.apps/inferkube-operator created",
                     "clusterrole.rbac.authorization.k8s.io/inferkube-operator created"):
            assert line in install.stdout, install.stdout
        with start_operator() as runner:
            yield kube, kubectl
        assert runner.exception is None, runner.output[-3000:]
        assert "Traceback" not in runner.output, runner.output[-5000:]
        assert [e for e in kube.validation_errors if e.name not in REJECTED] == [], kube.validation_errors


# ---------------------------------------------------------------- playing the controllers through kubectl


def example(name: str, **spec: Any) -> str:
    """manifests/examples/cpu-tiny-kind.yaml renamed (and with spec overrides), as YAML for `kubectl apply -f -`."""
    obj = yaml.safe_load(EXAMPLE.read_text())
    obj["metadata"]["name"] = name
    obj["spec"].update(spec)
    return yaml.safe_dump(obj)


def play_job_complete(kubectl: Kubectl, service: str) -> None:
    """Play the Job controller: the service's download Job succeeded."""
    job = wait_for(lambda: kubectl.jsonpath(f"jobs -l {contract.LABEL_ISVC}={service}", "{.items[*].metadata.name}"))
    status = {"succeeded": 1, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:01:00Z",
              "conditions": [{"type": "Complete", "status": "True"}]}
    kubectl("patch", "-n", NS, "job", job, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


def play_rollout(kubectl: Kubectl, name: str, ready: int, updated: int | None = None) -> None:
    """Play the Deployment controller: `ready` replicas ready, `updated` (default: all) on the new template."""
    dep = kubectl.json(f"deployment/{name}")
    replicas = dep["spec"].get("replicas", 1)
    updated = replicas if updated is None else updated
    done = ready >= replicas and updated >= replicas
    status = {
        "observedGeneration": dep["metadata"]["generation"], "replicas": replicas, "updatedReplicas": updated,
        "readyReplicas": ready, "availableReplicas": ready,
        "conditions": [
            {"type": "Available", "status": "True" if ready else "False",
             "reason": "MinimumReplicasAvailable" if ready else "MinimumReplicasUnavailable"},
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable" if done else "ReplicaSetUpdated"},
        ],
    }
    kubectl("patch", "-n", NS, "deployment", name, "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": status}))


def play_pod(kubectl: Kubectl, service: str, pod: str, status: dict[str, Any]) -> None:
    """Play the kubelet and scheduler: a runtime pod of the service's Deployment with the given status."""
    labels = json.loads(kubectl.jsonpath(f"deployment/{service}", "{.spec.template.metadata.labels}"))
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": NS, "labels": labels},
            "spec": {"containers": [{"name": "runtime", "image": "runtime"}]}}
    kubectl("apply", "-f", "-", stdin=json.dumps(body))
    kubectl("patch", "-n", NS, "pod", pod, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


def serve_until_ready(kubectl: Kubectl, name: str, **spec: Any) -> None:
    """Apply the example, finish its download, make its Deployment available and wait for Ready (kubectl wait)."""
    kubectl("apply", "-f", "-", stdin=example(name, **spec))
    play_job_complete(kubectl, name)
    wait_for(lambda: kubectl("get", "-n", NS, "deployment", name, check=False).returncode == 0, timeout=20)
    play_rollout(kubectl, name, ready=kubectl.json(f"deployment/{name}")["spec"].get("replicas", 1))
    kubectl("wait", "-n", NS, "--for=condition=Ready", f"inferenceservice/{name}", "--timeout=30s")


def argocd_health(kubectl: Kubectl, name: str) -> dict[str, str]:
    """What Argo CD's health check (manifests/argocd/health.lua) says about the live object."""
    from tests.unit.operator.test_argocd_health import run_health

    return run_health(kubectl.json(f"inferenceservice/{name}"))


def play_download_pod(kubectl: Kubectl, service: str, pod: str, status: dict[str, Any]) -> None:
    """Play the Job controller and kubelet: the service's download Job is active with one pod in this status."""
    job = wait_for(lambda: kubectl.jsonpath(f"jobs -l {contract.LABEL_ISVC}={service}", "{.items[*].metadata.name}"))
    labels = {**json.loads(kubectl.jsonpath(f"job/{job}", "{.spec.template.metadata.labels}")), "job-name": job}
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": NS, "labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "download", "image": "runtime"}]}}
    kubectl("apply", "-f", "-", stdin=json.dumps(body))
    kubectl("patch", "-n", NS, "job", job, "--subresource=status", "--type=merge", "-p",
            json.dumps({"status": {"active": 1, "startTime": "2026-01-01T00:00:00Z"}}))
    kubectl("patch", "-n", NS, "pod", pod, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


def condition_field(kubectl: Kubectl, service: str, ctype: str, field: str) -> str:
    """One field of one status condition, as a runbook reads it with kubectl's jsonpath."""
    return kubectl.jsonpath(f"infsvc/{service}", f'{{.status.conditions[?(@.type=="{ctype}")].{field}}}')


# ---------------------------------------------------------------- the tests


def test_install_objects_are_listed_with_their_columns(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    _, kubectl = cluster
    deployments = kubectl("get", "-n", "inferkube-system", "deployments").stdout.splitlines()
    assert deployments[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert deployments[1].split()[:2] == ["inferkube-operator", "0/1"], "no controllers: nothing runs it"
    again = kubectl("apply", "-f", str(REPO / "crds"))
    assert "inferenceservices.serving.inferkube.dev unchanged" in again.stdout


def test_get_shows_ready_phase_model_replicas_url(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    _, kubectl = cluster
    kubectl("apply", "-f", "-", stdin=example("columns"))
    assert kubectl.jsonpath("inferenceservice/columns", "{.status.phase}") in ("", "Pending", "CachingModel")
    play_job_complete(kubectl, "columns")
    wait_for(lambda: kubectl("get", "-n", NS, "deployment", "columns", check=False).returncode == 0, timeout=20)
    play_rollout(kubectl, "columns", ready=1)
    kubectl("wait", "-n", NS, "--for=condition=Ready", "infsvc/columns", "--timeout=30s")
    lines = kubectl("get", "-n", NS, "infsvc", "columns").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "PHASE", "MODEL", "REPLICAS", "URL", "AGE"]
    cells = lines[1].split()
    assert cells[:6] == ["columns", "True", "Ready", "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "1/1",
                         f"http://columns.{NS}.svc.cluster.local/v1"], lines
    wide = kubectl("get", "-n", NS, "infsvc", "columns", "-o", "wide").stdout
    assert "DETAIL" in wide and "1/1 replicas ready" in wide
    assert argocd_health(kubectl, "columns")["status"] == "Healthy"


def test_explain_documents_every_field(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    _, kubectl = cluster
    out = kubectl("explain", "inferenceservice.spec.autoscaling").stdout
    assert "KIND:       InferenceService" in out and "FIELD: autoscaling <Object>" in out
    assert "maxReplicas\t<integer> -required-" in out and "targetQueueDepth" in out
    assert "Scale-down behaviour" in kubectl("explain", "infsvc.spec.autoscaling.scaleDown").stdout
    assert "ObjectMeta" in kubectl("explain", "infsvc.metadata").stdout
    assert "maxSurge" in kubectl("explain", "deployment.spec.strategy.rollingUpdate").stdout


def test_scale_a_fixed_replica_service(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    _, kubectl = cluster
    serve_until_ready(kubectl, "scaled")
    assert "scaled" in kubectl("scale", "-n", NS, "infsvc/scaled", "--replicas=2").stdout
    wait_for(lambda: kubectl.jsonpath("deployment/scaled", "{.spec.replicas}") == "2", timeout=20)
    play_rollout(kubectl, "scaled", ready=1)
    wait_for(lambda: kubectl.jsonpath("infsvc/scaled", "{.status.replicasSummary}") == "1/2", timeout=20)
    assert kubectl("get", "-n", NS, "infsvc", "scaled").stdout.splitlines()[1].split()[4] == "1/2"


def test_diff_shows_an_edit_before_it_is_applied(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    _, kubectl = cluster
    kubectl("apply", "-f", "-", stdin=example("edited"))
    assert kubectl("diff", "-f", "-", stdin=example("edited")).stdout == "", "no change, no diff"
    runtime = {**yaml.safe_load(EXAMPLE.read_text())["spec"]["runtime"], "maxModelLen": 4096}
    diff = kubectl("diff", "-f", "-", stdin=example("edited", runtime=runtime), check=False)
    assert diff.returncode == 1, diff.stderr
    assert "-    maxModelLen: 2048" in diff.stdout and "+    maxModelLen: 4096" in diff.stdout
    assert kubectl.jsonpath("infsvc/edited", "{.spec.runtime.maxModelLen}") == "2048", "diff changed nothing"


def test_cel_rule_rejects_a_patch_with_its_message(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    _, kubectl = cluster
    kubectl("apply", "-f", "-", stdin=example("cel-rejected"))
    patch = json.dumps({"spec": {"autoscaling": {"maxReplicas": 3, "targetQueueDepth": 4}}})
    rejected = kubectl("patch", "-n", NS, "infsvc", "cel-rejected", "--type=merge", "-p", patch, check=False)
    assert rejected.returncode == 1
    assert 'The InferenceService "cel-rejected" is invalid' in rejected.stderr
    assert "set either replicas or autoscaling, not both" in rejected.stderr
    typo = kubectl("apply", "-f", "-", stdin=example("cel-rejected").replace("maxModelLen", "maxModelLenn"), check=False)
    assert typo.returncode == 1 and "maxModelLenn" in typo.stderr, "client-side apply validates strictly"


def test_describe_lists_the_operators_events(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    _, kubectl = cluster
    resources = {"cpu": "2", "memory": "4Gi", "accelerator": "tpu-v9"}
    kubectl("apply", "-f", "-", stdin=example("bad-profile", resources=resources))
    wait_for(lambda: kubectl.jsonpath("infsvc/bad-profile", "{.status.phase}") == "Failed", timeout=20)
    described = wait_for(lambda: (out := kubectl("describe", "-n", NS, "infsvc", "bad-profile").stdout)
                         and "InvalidSpec" in out.split("Events:")[-1] and out, timeout=20)
    assert "tpu-v9" in described.split("Events:")[-1]


def test_delete_garbage_collects_the_children(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    _, kubectl = cluster
    serve_until_ready(kubectl, "deleted")
    selector = f"{contract.LABEL_ISVC}=deleted"
    kinds = "deployments,services,poddisruptionbudgets,jobs"
    assert len(kubectl("get", "-n", NS, kinds, "-l", selector, "-o", "name").stdout.split()) == 4
    kubectl("delete", "-n", NS, "infsvc", "deleted", "--timeout=30s")
    wait_for(lambda: kubectl("get", "-n", NS, kinds, "-l", selector, "-o", "name").stdout.strip() == "", timeout=20)
    assert "NotFound" in kubectl("get", "-n", NS, "infsvc", "deleted", check=False).stderr


def test_a_pending_pod_reads_as_scheduling(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    _, kubectl = cluster
    kubectl("apply", "-f", "-", stdin=example("unplaced"))
    play_job_complete(kubectl, "unplaced")
    wait_for(lambda: kubectl("get", "-n", NS, "deployment", "unplaced", check=False).returncode == 0, timeout=20)
    message = "0/3 nodes are available: 3 Insufficient cpu."
    play_pod(kubectl, "unplaced", "unplaced-abc12", {"phase": "Pending", "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}]})
    wait_for(lambda: kubectl.jsonpath("infsvc/unplaced", "{.status.phase}") == "Scheduling", timeout=20)
    assert kubectl.jsonpath("infsvc/unplaced", "{.status.phaseDetail}") == message
    assert argocd_health(kubectl, "unplaced")["status"] == "Progressing"
    pods = kubectl("get", "-n", NS, "pods", "-l", f"{contract.LABEL_ISVC}=unplaced").stdout.splitlines()
    assert pods[0].split()[:4] == ["NAME", "READY", "STATUS", "RESTARTS"] and pods[1].split()[1:3] == ["0/1", "Pending"]


def test_quickstart_imperative_commands(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    """README's quickstart: kubectl 1.32 sends these bodies as protobuf."""
    _, kubectl = cluster
    assert "namespace/quickstart created" in kubectl("create", "namespace", "quickstart").stdout
    kubectl("-n", "quickstart", "create", "secret", "generic", "hf-token", "--from-literal=token=hf_xxx")
    token = kubectl.jsonpath("secret/hf-token", "{.data.token}", namespace="quickstart")
    assert base64.b64decode(token) == b"hf_xxx"
    assert kubectl.jsonpath("secret/hf-token", "{.type}", namespace="quickstart") == "Opaque"
    kubectl("apply", "-f", "-", stdin=example("by-category"))
    assert "by-category" in kubectl("get", "-n", NS, "inferkube").stdout, "the CRD's category lists it"


# ---------------------------------------------------------------- failures named in status (issue 9)


def test_a_missing_secret_is_named_and_clears_once_the_secret_exists(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    _, kubectl = cluster
    kubectl("apply", "-f", "-", stdin=example("no-secret"))
    message = 'secret "hf-token" not found'
    play_download_pod(kubectl, "no-secret", "no-secret-dl-x1", {"phase": "Pending", "containerStatuses": [
        {"name": "download", "ready": False, "restartCount": 0, "image": "runtime", "imageID": "",
         "state": {"waiting": {"reason": "CreateContainerConfigError", "message": message}}}]})
    wait_for(lambda: condition_field(kubectl, "no-secret", "ModelCached", "reason") == "CreateContainerConfigError",
             timeout=20)
    assert message in condition_field(kubectl, "no-secret", "ModelCached", "message")
    assert condition_field(kubectl, "no-secret", "Degraded", "status") == "True"
    assert kubectl.jsonpath("infsvc/no-secret", "{.status.phase}") == "Failed"
    health = argocd_health(kubectl, "no-secret")
    assert health["status"] == "Degraded" and message in health["message"]
    events = wait_for(lambda: kubectl("get", "-n", NS, "events", "--field-selector",
                                      "involvedObject.name=no-secret,type=Warning", "-o", "json").stdout, timeout=20)
    [event] = [e for e in json.loads(events)["items"] if e["reason"] == "CreateContainerConfigError"]
    assert (event["reportingComponent"], event["action"]) == ("inferkube-operator", "Download")
    # the user creates the Secret (as the README says); the container starts and the status recovers
    kubectl("-n", NS, "create", "secret", "generic", "hf-token", "--from-literal=token=hf_xxx")
    kubectl("patch", "-n", NS, "pod", "no-secret-dl-x1", "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"phase": "Running", "containerStatuses": [
            {"name": "download", "ready": True, "restartCount": 0, "image": "runtime", "imageID": "",
             "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}}}]}}))
    wait_for(lambda: kubectl.jsonpath("infsvc/no-secret", "{.status.phase}") == "CachingModel", timeout=20)
    assert condition_field(kubectl, "no-secret", "Degraded", "status") == "False"
    assert argocd_health(kubectl, "no-secret")["status"] == "Progressing"


def test_a_crash_loop_is_named_with_its_restarts(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    _, kubectl = cluster
    kubectl("apply", "-f", "-", stdin=example("crashing"))
    play_job_complete(kubectl, "crashing")
    wait_for(lambda: kubectl("get", "-n", NS, "deployment", "crashing", check=False).returncode == 0, timeout=20)
    play_pod(kubectl, "crashing", "crashing-7f9c-a1", {"phase": "Running", "containerStatuses": [
        {"name": "runtime", "ready": False, "restartCount": 7, "image": "runtime", "imageID": "",
         "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}},
         "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "message": "ValueError: bad --dtype"}}}]})
    wait_for(lambda: condition_field(kubectl, "crashing", "Degraded", "reason") == "CrashLoopBackOff", timeout=20)
    message = condition_field(kubectl, "crashing", "Degraded", "message")
    assert "restarted 7 times" in message and "ValueError: bad --dtype" in message
    assert kubectl.jsonpath("infsvc/crashing", "{.status.phase}") == "Failed"
    assert condition_field(kubectl, "crashing", "Ready", "reason") == "CrashLoopBackOff"
    assert argocd_health(kubectl, "crashing")["status"] == "Degraded"


def test_a_half_done_rollout_is_progressing_but_still_ready(cluster: tuple[KubeEmulator, Kubectl]) -> None:
    _, kubectl = cluster
    serve_until_ready(kubectl, "rolling", replicas=2)
    assert argocd_health(kubectl, "rolling")["status"] == "Healthy"
    kubectl("patch", "-n", NS, "infsvc", "rolling", "--type=merge", "-p", json.dumps(
        {"spec": {"runtime": {"maxModelLen": 4096}}}))
    wait_for(lambda: kubectl.jsonpath("deployment/rolling", "{.metadata.generation}") != "1", timeout=20)
    play_rollout(kubectl, "rolling", ready=2, updated=1)
    wait_for(lambda: kubectl.jsonpath("infsvc/rolling", "{.status.phase}") == "RollingOut", timeout=20)
    assert kubectl.jsonpath("infsvc/rolling", "{.status.phaseDetail}") == "1/2 updated"
    assert (condition_field(kubectl, "rolling", "Progressing", "status"),
            condition_field(kubectl, "rolling", "Progressing", "reason")) == ("True", "RollingOut")
    kubectl("wait", "-n", NS, "--for=condition=Ready", "infsvc/rolling", "--timeout=5s")  # still serving
    assert argocd_health(kubectl, "rolling") == {"status": "Progressing", "message": "Rolling out: 1/2 updated"}
    play_rollout(kubectl, "rolling", ready=2)
    wait_for(lambda: kubectl.jsonpath("infsvc/rolling", "{.status.phase}") == "Ready", timeout=20)
    assert argocd_health(kubectl, "rolling")["status"] == "Healthy"
