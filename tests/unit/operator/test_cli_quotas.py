"""`inferkube render` and `validate` with InferenceQuotas in the input: the operator's decisions, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from inferkube.api import contract
from tests.schemas import NEWEST_K8S, OLDEST_K8S, UPSTREAM_CRDS, is_upstream_custom, missing_upstream, validate_k8s
from tests.unit.operator.test_cli import assert_clean_failure, run

NS = "search"


def isvc(name: str, gpus: int = 1, replicas: int = 1, auto: tuple[int, int] | None = None, engine: str = "hpa",
         created: str | None = None) -> dict[str, Any]:
    """An InferenceService in `search` on L4 GPUs: fixed replicas, or autoscaled (min, max) by engine."""
    spec: dict[str, Any] = {"model": {"source": "hf://meta-llama/Llama-3.1-8B-Instruct", "revision": "r1"},
                            "resources": {"accelerator": "nvidia-l4", "gpus": gpus}}
    if auto is None:
        spec["replicas"] = replicas
    else:
        spec["autoscaling"] = {"engine": engine, "minReplicas": auto[0], "maxReplicas": auto[1], "targetQueueDepth": 4}
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if created:
        meta["creationTimestamp"] = created
    return {"apiVersion": "serving.inferkube.dev/v1alpha1", "kind": "InferenceService", "metadata": meta, "spec": spec}


def iquota(name: str = "team-search", selector: dict[str, Any] | None = None, tenants: dict[str, Any] | None = None,
           **limits: Any) -> dict[str, Any]:
    """A cluster-scoped InferenceQuota (default: over the namespace `search`)."""
    spec: dict[str, Any] = {"selector": {"namespaces": [NS]} if selector is None else selector, "limits": limits}
    if tenants:
        spec["tenants"] = tenants
    return {"apiVersion": "serving.inferkube.dev/v1alpha1", "kind": "InferenceQuota", "metadata": {"name": name}, "spec": spec}


def write(tmp_path: Path, name: str, *docs: dict[str, Any]) -> str:
    """A multi-document YAML file."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return str(path)


def render(*files: str) -> tuple[list[dict[str, Any]], list[str]]:
    """(children from stdout, which must be pure YAML; summary lines from stderr) of a successful render."""
    result = run("render", *[arg for f in files for arg in ("-f", f)])
    assert result.returncode == 0, result.stderr
    docs = list(yaml.safe_load_all(result.stdout))
    assert docs and all(isinstance(d, dict) and d.get("kind") and d.get("metadata") for d in docs), "stdout: only children"
    return docs, result.stderr.splitlines()


def child(children: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one child of that kind and name (the test fails when it is missing)."""
    found = [c for c in children if c["kind"] == kind and c["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
    return found[0]


def kinds_of(children: list[dict[str, Any]], service: str) -> list[str]:
    """The kinds of one service's children, in output order."""
    return [c["kind"] for c in children if c["metadata"]["labels"].get(contract.LABEL_ISVC) == service]


def test_a_refused_service_renders_with_no_serving_replicas_and_says_why(tmp_path: Path) -> None:
    """14 of 16 GPUs go to the older service; the autoscaled one needs 4 more and is refused."""
    children, summary = render(write(tmp_path, "all.yaml", iquota(gpus=16), isvc("llama-70b", gpus=2, replicas=7),
                                     isvc("big", gpus=4, auto=(1, 1))))
    assert summary == ["InferenceQuota team-search: search/llama-70b admitted (7 replicas, 14 GPUs), "
                       "search/big refused: needs 4 GPUs, 2 of 16 left under InferenceQuota team-search"]
    big = child(children, "Deployment", "big")
    assert big["spec"]["replicas"] == 0, "refused: the Deployment runs no replicas"
    assert kinds_of(children, "big") == ["PersistentVolumeClaim", "Job", "Service", "PodDisruptionBudget", "Deployment",
                                         "ServiceMonitor", "PrometheusRule"], \
        "no autoscaler to scale it up; its model cache is still filled, so admission later starts fast"
    admitted = child(children, "Deployment", "llama-70b")
    assert admitted["spec"]["replicas"] == 7


@pytest.mark.parametrize(("engine", "kind", "field"), [("hpa", "HorizontalPodAutoscaler", "maxReplicas"),
                                                        ("keda", "ScaledObject", "maxReplicaCount")])
def test_an_autoscaled_service_that_fits_partly_gets_a_clamped_max(tmp_path: Path, engine: str, kind: str, field: str) -> None:
    children, summary = render(write(tmp_path, "all.yaml", iquota(gpus=3), isvc("llama-8b"),
                                     isvc("chat", auto=(1, 5), engine=engine)))
    autoscaler = child(children, kind, "chat")
    assert autoscaler["spec"][field] == 2
    deployment = child(children, "Deployment", "chat")
    assert "replicas" not in deployment["spec"], "the autoscaler owns replicas"
    assert summary == ["InferenceQuota team-search: search/llama-8b admitted (1 replica, 1 GPU), "
                       "search/chat maxReplicas 5 clamped to 2: needs 5 GPUs, 2 of 3 left under InferenceQuota team-search"]


def test_two_quotas_on_one_service_both_decide_and_their_policies_merge(tmp_path: Path) -> None:
    quotas = write(tmp_path, "quotas.yaml",
                   iquota("replicas", replicas=1, tenants={"ceiling": {"tokensPerMinute": 500}, "defaults": {"priority": "low"}}),
                   iquota("gpus", gpus=10, tenants={"ceiling": {"tokensPerMinute": 1000}, "modelTokensPerMinute": 5000}))
    children, summary = render(quotas, write(tmp_path, "services.yaml", isvc("a"), isvc("b")))
    why = "search/b refused: needs 1 replicas, 0 of 1 left under InferenceQuota replicas"
    assert summary == [f"InferenceQuota gpus: search/a admitted (1 replica, 1 GPU), {why}",
                       f"InferenceQuota replicas: search/a admitted (1 replica, 1 GPU), {why}"]
    refused = child(children, "Deployment", "b")
    assert refused["spec"]["replicas"] == 0
    configmap = child(children, "ConfigMap", "a-tenant-policy")
    policy = yaml.safe_load(configmap["data"][contract.POLICY_FILE_KEY])
    assert policy["service"] == "search/a" and policy["quotas"] == ["gpus", "replicas"]
    assert policy["ceiling"] == {"tokensPerMinute": 500}, "several quotas: the most restrictive wins"
    assert policy["modelTokensPerMinute"] == 5000 and policy["defaults"]["priority"] == "low"
    deployment = child(children, "Deployment", "a")
    digest = contract.ANNOTATION_TENANT_POLICY
    assert deployment["metadata"]["annotations"][digest] == configmap["metadata"]["annotations"][digest], \
        "the Deployment records the policy it runs with, as the operator writes it"


def test_oldest_first_by_creation_timestamp_else_file_order_and_namespace_labels_count(tmp_path: Path) -> None:
    quota = iquota("team", selector={"namespaceSelector": {"matchLabels": {"team": "search"}}}, gpus=1)
    services = write(tmp_path, "services.yaml", isvc("a"), isvc("b"), isvc("c", created="2026-01-01T00:00:00Z"))
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"team": "search"}}}
    children, summary = render(write(tmp_path, "quota.yaml", quota, namespace), services)
    assert summary == ["InferenceQuota team: search/c admitted (1 replica, 1 GPU), "
                       "search/a refused: needs 1 GPUs, 0 of 1 left under InferenceQuota team, "
                       "search/b refused: needs 1 GPUs, 0 of 1 left under InferenceQuota team"]
    assert [c["metadata"]["name"] for c in children if c["kind"] == "Deployment"] == ["a", "b", "c"], "output in input order"
    _, unseen = render(write(tmp_path, "quota-only.yaml", quota), services)
    assert unseen == ["InferenceQuota team: selects no InferenceService"], "an unknown namespace matches no namespaceSelector"


def test_a_quota_selecting_by_the_namespace_name_label_works_without_namespace_objects(tmp_path: Path) -> None:
    # The API server gives every namespace the label kubernetes.io/metadata.name=<name>.
    quota = iquota("team", selector={"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}}}, gpus=1)
    _, summary = render(write(tmp_path, "all.yaml", quota, isvc("a"), isvc("b")))
    assert summary == ["InferenceQuota team: search/a admitted (1 replica, 1 GPU), "
                       "search/b refused: needs 1 GPUs, 0 of 1 left under InferenceQuota team"]


def test_an_invalid_quota_is_a_clear_error(tmp_path: Path) -> None:
    bad = iquota("broken", gpus=-1, selector={"serviceSelector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}})
    bad["spec"]["limits"]["gpu"] = 4
    path = write(tmp_path, "bad.yaml", isvc("a"), bad)
    result = run("validate", "-f", path)
    assert_clean_failure(result, f"{path}: broken: .spec.limits.gpus: -1 is less than the minimum of 0",
                         f"{path}: broken: .spec.limits.gpu: unknown field",
                         f"{path}: broken: .spec.selector.serviceSelector.matchExpressions[0]: In and NotIn need values")
    assert f"{path}: a: valid" in result.stdout
    assert_clean_failure(run("render", "-f", path), f"{path}: broken: .spec.limits.gpus: -1 is less than the minimum of 0")


def test_a_service_given_twice_is_refused(tmp_path: Path) -> None:
    first, second = write(tmp_path, "one.yaml", iquota(gpus=1), isvc("a")), write(tmp_path, "two.yaml", isvc("a"))
    assert_clean_failure(run("render", "-f", first, "-f", second),
                         f"{second}: InferenceService search/a is given twice (first in {first})")


@pytest.mark.parametrize("version", [OLDEST_K8S, NEWEST_K8S])
def test_rendered_objects_under_quotas_pass_the_kubernetes_schemas(tmp_path: Path, version: str) -> None:
    """Admitted, HPA-admitted, KEDA-clamped and refused services with a tenant policy: strict official schemas."""
    children, _ = render(write(tmp_path, "mix.yaml", iquota(gpus=4, tenants={"ceiling": {"maxConcurrent": 8}}),
                               isvc("llama-8b"), isvc("chat", auto=(1, 2)), isvc("gemma", auto=(1, 5), engine="keda"),
                               isvc("big", gpus=2)))
    assert {"ConfigMap", "HorizontalPodAutoscaler", "ScaledObject"} <= {c["kind"] for c in children}
    assert child(children, "ScaledObject", "gemma")["spec"]["maxReplicaCount"] == 1
    assert child(children, "Deployment", "big")["spec"]["replicas"] == 0
    available = set(UPSTREAM_CRDS.values()) - set(missing_upstream(*UPSTREAM_CRDS.values()))
    for obj in children:
        if not is_upstream_custom(obj) or UPSTREAM_CRDS[(obj["apiVersion"], obj["kind"])] in available:
            validate_k8s(obj, version)  # upstream CRDs (KEDA, Prometheus Operator) where their files are present


def test_validate_reads_several_files_and_namespaces(tmp_path: Path) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS, "labels": {"team": 1}}}
    result = run("validate", "-f", write(tmp_path, "q.yaml", iquota(gpus=2)), "-f", write(tmp_path, "ns.yaml", namespace))
    assert_clean_failure(result, "ns.yaml: search: .metadata.labels: must map strings to strings")
    assert "q.yaml: team-search: valid" in result.stdout
    fine = run("validate", "-f", write(tmp_path, "both.yaml", iquota(gpus=2), isvc("a")))
    assert fine.returncode == 0 and fine.stdout.count(": valid") == 2, fine.stderr
