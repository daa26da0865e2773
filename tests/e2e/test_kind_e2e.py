"""End to end on a real kind cluster: install the operator, serve the CPU example, query it, delete it.

Runs only where `docker`, `kind` and `kubectl` exist and the Docker engine answers; skips with
the reason otherwise. The flow is the README's, scripted:

    kind create cluster --name inferkube-e2e
    docker build ... && kind load docker-image ...        (operator + a CPU runtime image)
    kubectl apply -k manifests/                           (with the locally built operator image)
    kubectl apply -f manifests/examples/cpu-tiny-kind.yaml
    kubectl wait --for=condition=Ready inferenceservice/NAME
    kubectl port-forward svc/NAME 127.0.0.1:PORT:8000  ->  GET /v1/models
    kubectl delete inferenceservice/NAME                  (children go by garbage collection)
    kind delete cluster --name inferkube-e2e

Knobs (environment): INFERKUBE_E2E_RUNTIME_IMAGE=<image already loadable into kind> skips the
CPU runtime build; INFERKUBE_E2E_KEEP_CLUSTER=1 keeps the cluster for debugging;
INFERKUBE_E2E_READY_TIMEOUT=<seconds> (default 900) bounds the wait for Ready.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from inferkube.api import contract

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CLUSTER = "inferkube-e2e"
EXAMPLE = REPO / "manifests" / "examples" / "cpu-tiny-kind.yaml"
HEALTH_LUA = REPO / "manifests" / "argocd" / "health.lua"
OPERATOR_IMAGE = "inferkube-operator:e2e"
RUNTIME_CPU_IMAGE = "inferkube-runtime:e2e-cpu"
ARGO_LABEL = "argocd.argoproj.io/instance"
ARGO_TRACKING = "argocd.argoproj.io/tracking-id"
SKIP_REASON = "needs docker + kind (a real cluster); not available on this machine"
READY_TIMEOUT = int(os.environ.get("INFERKUBE_E2E_READY_TIMEOUT", "900"))


def missing_cluster_tools() -> str | None:
    """Why a kind cluster cannot be made here, or None when docker, kind and kubectl all work."""
    missing = [tool for tool in ("docker", "kind", "kubectl") if shutil.which(tool) is None]
    if missing:
        return f"missing: {', '.join(missing)}"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return "`docker info` timed out"
    if info.returncode != 0:
        return "`docker info` failed: no Docker engine"
    return None


def run(args: list[str], env: dict[str, str] | None = None, timeout: float = 300,
        stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command with a time limit; on failure raise with its output."""
    result = subprocess.run(
        args, input=stdin, capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def kubectl(env: dict[str, str], *args: str, timeout: float = 120, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """kubectl against the e2e cluster's own kubeconfig."""
    return run(["kubectl", *args], env=env, timeout=timeout, stdin=stdin, check=check)


def dump_yaml(docs: list[dict[str, Any]]) -> str:
    """Serialise objects as a multi-document YAML stream for `kubectl apply -f -`."""
    return yaml.safe_dump_all(docs, sort_keys=False)


def free_local_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def argo_health(obj: dict[str, Any]) -> dict[str, str]:
    """Evaluate manifests/argocd/health.lua on a live object, as Argo CD would."""
    lupa = pytest.importorskip("lupa")
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)

    def to_lua(value: Any) -> Any:
        if isinstance(value, dict):
            return runtime.table_from({k: to_lua(v) for k, v in value.items()})
        if isinstance(value, list):
            return runtime.table_from([to_lua(v) for v in value])
        return value

    runtime.globals().obj = to_lua(obj)
    hs = runtime.execute(HEALTH_LUA.read_text())
    return {"status": hs["status"], "message": hs["message"]}


def diagnostics(env: dict[str, str], namespace: str, operator_namespace: str) -> str:
    """What a person debugging a failed run would look at first."""
    parts = []
    for args in (
        ["get", "inferenceservices,deployments,pods,jobs,pvc,svc,hpa", "-n", namespace, "-o", "wide"],
        ["describe", "inferenceservices", "-n", namespace],
        ["get", "events", "-n", namespace, "--sort-by=.lastTimestamp"],
        ["logs", "-n", operator_namespace, "-l", f"{contract.LABEL_NAME}", "--tail=200", "--all-containers"],
    ):
        result = kubectl(env, *args, check=False)
        parts.append(f"$ kubectl {' '.join(args)}\n{result.stdout}{result.stderr}")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A fresh kind cluster with its own kubeconfig; deleted afterwards."""
    reason = missing_cluster_tools()
    if reason is not None:
        pytest.skip(f"{SKIP_REASON} ({reason})")
    kubeconfig = tmp_path_factory.mktemp("kind") / "kubeconfig"
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    run(["kind", "delete", "cluster", "--name", CLUSTER], env=env, check=False)  # leftover of an aborted run
    run(["kind", "create", "cluster", "--name", CLUSTER, "--kubeconfig", str(kubeconfig), "--wait", "180s"],
        env=env, timeout=600)
    try:
        yield env
    finally:
        if os.environ.get("INFERKUBE_E2E_KEEP_CLUSTER") != "1":
            run(["kind", "delete", "cluster", "--name", CLUSTER], env=env, timeout=300, check=False)


@pytest.fixture(scope="module")
def images(cluster: dict[str, str]) -> dict[str, str]:
    """Build the operator image and a CPU runtime image and load both into the kind nodes."""
    runtime_image = os.environ.get("INFERKUBE_E2E_RUNTIME_IMAGE")
    builds = [(OPERATOR_IMAGE, REPO / "Dockerfile.operator")]
    if not runtime_image:
        runtime_image = RUNTIME_CPU_IMAGE
        builds.append((RUNTIME_CPU_IMAGE, REPO / "tests" / "e2e" / "Dockerfile.runtime-cpu"))
    for tag, dockerfile in builds:
        run(["docker", "build", "-f", str(dockerfile), "-t", tag, str(REPO)], env=cluster, timeout=3600)
    for tag in (OPERATOR_IMAGE, runtime_image):
        run(["kind", "load", "docker-image", tag, "--name", CLUSTER], env=cluster, timeout=1200)
    return {"operator": OPERATOR_IMAGE, "runtime": runtime_image}


@pytest.fixture(scope="module")
def operator_namespace(cluster: dict[str, str], images: dict[str, str]) -> str:
    """`kubectl apply -k manifests/` with the local operator image; waits until the operator runs."""
    rendered = kubectl(cluster, "kustomize", str(REPO / "manifests")).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    namespaces = set()
    for doc in docs:
        if doc.get("kind") == "Deployment":
            namespaces.add(doc["metadata"].get("namespace", "default"))
            for container in doc["spec"]["template"]["spec"]["containers"]:
                container["image"] = images["operator"]
                container["imagePullPolicy"] = "IfNotPresent"
    assert len(namespaces) == 1, f"expected one operator Deployment namespace, got {namespaces}"
    kubectl(cluster, "apply", "--server-side", "-f", "-", stdin=dump_yaml(docs))
    crd = f"crd/{contract.PLURAL}.{contract.GROUP}"
    kubectl(cluster, "wait", "--for=condition=Established", crd, "--timeout=60s", timeout=90)
    namespace = namespaces.pop()
    kubectl(cluster, "wait", "--for=condition=Available", "deployment", "--all", "-n", namespace,
            "--timeout=300s", timeout=330)
    return namespace


def test_cpu_example_becomes_ready_serves_models_and_deletes_cleanly(
    cluster: dict[str, str], images: dict[str, str], operator_namespace: str
) -> None:
    """The CPU example goes Ready, Argo CD would call it Healthy, /v1/models answers, delete cleans up."""
    docs = [d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d]
    services = [d for d in docs if d.get("kind") == contract.KIND]
    assert len(services) == 1, f"{EXAMPLE.name} should hold one {contract.KIND}"
    isvc = services[0]
    runtime = isvc["spec"].setdefault("runtime", {})
    runtime["image"] = images["runtime"]
    runtime["imagePullPolicy"] = "IfNotPresent"
    name = isvc["metadata"]["name"]
    namespace = isvc["metadata"].get("namespace", "default")
    # What Argo CD puts on what it syncs; children must never inherit it (or Argo CD prunes them).
    isvc["metadata"].setdefault("labels", {})[ARGO_LABEL] = "e2e-app"
    isvc["metadata"].setdefault("annotations", {})[ARGO_TRACKING] = (
        f"e2e-app:{contract.GROUP}/{contract.KIND}:{namespace}/{name}"
    )
    resource = f"{contract.SINGULAR}/{name}"

    kubectl(cluster, "apply", "-f", "-", stdin=dump_yaml(docs))
    waited = kubectl(cluster, "wait", "--for=condition=Ready", resource, "-n", namespace,
                     f"--timeout={READY_TIMEOUT}s", timeout=READY_TIMEOUT + 60, check=False)
    assert waited.returncode == 0, diagnostics(cluster, namespace, operator_namespace)

    live = json.loads(kubectl(cluster, "get", resource, "-n", namespace, "-o", "json").stdout)
    status = live["status"]
    assert status["observedGeneration"] == live["metadata"]["generation"]
    assert status["phase"] == "Ready"
    assert status.get("readyReplicas", 0) >= 1
    assert argo_health(live)["status"] == "Healthy"
    children = json.loads(kubectl(cluster, "get", "deployments,services", "-n", namespace, "-l",
                                  status["selector"], "-o", "json").stdout)["items"]
    assert children, "no Deployment/Service matched status.selector"
    for child in children:
        meta = child["metadata"]
        assert ARGO_LABEL not in meta.get("labels", {}), f"{child['kind']} inherited {ARGO_LABEL}"
        assert ARGO_TRACKING not in meta.get("annotations", {}), f"{child['kind']} inherited {ARGO_TRACKING}"
        owners = [o for o in meta.get("ownerReferences", []) if o.get("controller")]
        assert owners and owners[0]["kind"] == contract.KIND and owners[0]["name"] == name

    url = urlsplit(status["url"])
    service = (url.hostname or "").split(".")[0]
    remote_port = url.port or contract.RUNTIME_PORT
    local_port = free_local_port()
    forward = subprocess.Popen(
        ["kubectl", "port-forward", "-n", namespace, f"svc/{service}", f"{local_port}:{remote_port}",
         "--address", "127.0.0.1"],
        env=cluster, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        body = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{local_port}/v1/models", timeout=10) as resp:
                    assert resp.status == 200
                    body = json.load(resp)
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        assert body is not None, "GET /v1/models did not answer through port-forward within 60 s"
        model_ids = [m["id"] for m in body["data"]]
        assert model_ids, body
        if status.get("servedModelName"):
            assert status["servedModelName"] in model_ids
    finally:
        forward.terminate()
        try:
            forward.wait(timeout=10)
        except subprocess.TimeoutExpired:
            forward.kill()

    selector = status["selector"]
    kubectl(cluster, "delete", resource, "-n", namespace, "--wait=true", "--timeout=180s", timeout=210)
    deadline = time.monotonic() + 180
    leftovers = "?"
    while time.monotonic() < deadline:
        leftovers = kubectl(cluster, "get", "deployments,services,pods", "-n", namespace, "-l", selector,
                            "-o", "name").stdout.strip()
        if not leftovers:
            break
        time.sleep(3)
    assert not leftovers, f"children left after delete (garbage collection): {leftovers}"
