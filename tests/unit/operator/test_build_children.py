"""Builders produce production-grade children a user would expect from one InferenceService."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferkube.api import contract
from inferkube.operator.inputs import Observed, SpecError
from inferkube.operator.names import cache_key
from inferkube.operator.parse import parse_service
from inferkube.operator.render import render_children
from inferkube.operator.settings import OperatorSettings
from tests.schemas import NEWEST_K8S, validate_k8s
from tests.unit.operator.conftest import EXAMPLES, REPO, by_kind, load_example, render

GOLDEN = Path(__file__).parent / "golden"


def example(name: str) -> dict[str, Any]:
    return load_example(REPO / "manifests" / "examples" / f"{name}.yaml")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_render_matches_golden_file(path: Path) -> None:
    """Golden files show reviewers every rendered byte; UPDATE_GOLDEN=1 rewrites them."""
    text = yaml.safe_dump_all(render(load_example(path)), sort_keys=False, width=1000)
    golden = GOLDEN / f"{path.stem}.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()


def test_builders_are_pure(example: dict[str, Any]) -> None:
    before = copy.deepcopy(example)
    assert render(example) == render(example)
    assert example == before


def test_gpu_deployment_is_gpu_affine() -> None:
    dep = by_kind(render(example("llama-70b-tp4-h100")))["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    runtime = pod["containers"][0]
    assert runtime["resources"]["limits"]["nvidia.com/gpu"] == "4"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["priorityClassName"] == "inference-critical"
    args = runtime["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "4"
    assert args[args.index("--") + 1 :] == ["--kv-cache-dtype", "fp8"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
    assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_cache_is_mounted_read_only_and_hub_is_offline() -> None:
    obj = example("llama-8b-single-gpu")
    spec, _ = parse_service(obj)
    dep = by_kind(render(obj))["Deployment"]
    runtime = dep["spec"]["template"]["spec"]["containers"][0]
    mount = next(m for m in runtime["volumeMounts"] if m["mountPath"] == contract.CACHE_MOUNT_PATH)
    assert mount["readOnly"] is True
    assert runtime["args"][runtime["args"].index("--model") + 1] == f"/models/{cache_key(spec)}"
    assert {"name": "HF_HUB_OFFLINE", "value": "1"} in runtime["env"]


def test_probes_drain_and_grace_period() -> None:
    dep = by_kind(render(example("llama-70b-tp4-h100")))["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    runtime = pod["containers"][0]
    assert runtime["readinessProbe"]["httpGet"]["path"] == contract.READY_PATH
    assert runtime["livenessProbe"]["httpGet"]["path"] == contract.HEALTH_PATH
    startup = runtime["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 3600  # the example's startup budget
    pre_stop = runtime["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = int(runtime["args"][runtime["args"].index("--drain-timeout") + 1])
    assert drain == 300
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain


def test_restricted_pod_security(example: dict[str, Any]) -> None:
    for child in render(example):
        if child["kind"] not in ("Deployment", "Job"):
            continue
        pod = child["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}


def test_parent_labels_are_never_copied(example: dict[str, Any]) -> None:
    example = copy.deepcopy(example)
    example["metadata"]["labels"] = {"app.kubernetes.io/instance": "argo-app", "team": "x"}
    for child in render(example):
        labels = child["metadata"]["labels"]
        assert "app.kubernetes.io/instance" not in labels and "team" not in labels
        assert labels[contract.LABEL_MANAGED_BY] == contract.MANAGED_BY
        assert labels[contract.LABEL_ISVC] == example["metadata"]["name"]


def test_autoscaled_deployment_leaves_replicas_to_the_hpa() -> None:
    children = by_kind(render(example("qwen-autoscaled-queue-depth")))
    assert "replicas" not in children["Deployment"]["spec"]
    hpa = children["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 6)
    names = {m["pods"]["metric"]["name"]: m["pods"]["target"]["averageValue"] for m in hpa["metrics"]}
    assert names == {contract.METRIC_QUEUE_DEPTH: "8", contract.METRIC_KV_CACHE_USAGE: "800m"}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 600
    assert children["ServiceMonitor"]["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_keda_scaledobject_only_where_keda_is_served() -> None:
    obj = example("keda-autoscaled")
    assert by_kind(render(obj))["ScaledObject"]["spec"]["maxReplicaCount"] == 4
    kinds = {c["kind"] for c in render(obj, keda_api=False)}
    assert "ScaledObject" not in kinds and "HorizontalPodAutoscaler" not in kinds and "Deployment" in kinds


def test_deployment_is_held_until_the_cache_is_ready() -> None:
    kinds = [c["kind"] for c in render(example("llama-8b-single-gpu"), serving_cache_key=None)]
    assert kinds == ["PersistentVolumeClaim", "Job", "Service", "PodDisruptionBudget", "ServiceMonitor",
                     "PrometheusRule"]


def test_new_revision_keeps_serving_the_cached_one_until_its_download_finishes() -> None:
    obj = example("llama-8b-single-gpu")
    spec, _ = parse_service(obj)
    old_key = cache_key(spec)
    obj["spec"]["model"]["revision"] = "v2"
    children = by_kind(render(obj, serving_cache_key=old_key))
    runtime = children["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert runtime["args"][runtime["args"].index("--model") + 1] == f"/models/{old_key}"
    new_key = cache_key(parse_service(obj)[0])
    assert new_key != old_key and new_key[:8] in children["Job"]["metadata"]["name"]


def test_retained_cache_claim_is_not_owned() -> None:
    spec, meta = parse_service(example("llama-70b-tp4-h100"))
    pvc = next(c for c in render_children(spec, meta, OperatorSettings(), Observed()) if c.kind == "PersistentVolumeClaim")
    assert pvc.owned is False
    spec, meta = parse_service(example("llama-8b-single-gpu"))
    pvc = next(c for c in render_children(spec, meta, OperatorSettings(), Observed()) if c.kind == "PersistentVolumeClaim")
    assert pvc.owned is True
    job = next(c for c in render_children(spec, meta, OperatorSettings(), Observed()) if c.kind == "Job")
    assert job.create_only is True


def test_cache_access_mode_follows_replica_count() -> None:
    assert by_kind(render(example("qwen-autoscaled-queue-depth")))["PersistentVolumeClaim"]["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]
    assert by_kind(render(example("llama-8b-single-gpu")))["PersistentVolumeClaim"]["spec"]["accessModes"] == [
        "ReadWriteOnce"
    ]


def test_no_servicemonitor_without_the_prometheus_operator_api() -> None:
    kinds = {c["kind"] for c in render(example("llama-8b-single-gpu"), monitoring_api=False)}
    assert "ServiceMonitor" not in kinds and "PrometheusRule" not in kinds


def test_alert_rules_select_this_service_and_scale_with_its_target() -> None:
    rule = by_kind(render(example("qwen-autoscaled-queue-depth")))["PrometheusRule"]
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {"InferkubeReplicaDown", "InferkubeHighErrorRate", "InferkubeQueueBackingUp",
                           "InferkubeKVCacheSaturated", "InferkubeRateLimitBackendErrors"}
    assert 'serving_inferkube_dev_inferenceservice="qwen-7b"' in alerts["InferkubeQueueBackingUp"]["expr"]
    assert alerts["InferkubeQueueBackingUp"]["expr"].endswith("> 16")  # twice the HPA's target of 8
    assert contract.METRIC_KV_CACHE_USAGE in alerts["InferkubeKVCacheSaturated"]["expr"]
    obj = example("qwen-autoscaled-queue-depth")
    obj["spec"]["monitoring"]["alertRules"] = False
    assert "PrometheusRule" not in {c["kind"] for c in render(obj)}


def test_api_keys_mount_the_tenants_secret() -> None:
    dep = by_kind(render(example("api-keys-rate-limits")))["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    runtime = pod["containers"][0]
    args = runtime["args"]
    assert args[args.index("--tenants-file") + 1] == f"{contract.TENANTS_MOUNT_DIR}/{contract.TENANTS_FILE_KEY}"
    assert args[args.index("--rate-limit-backend") + 1] == "redis"
    assert args[args.index("--max-in-flight") + 1] == "256"
    secret = next(v for v in pod["volumes"] if v["name"] == "tenants")
    assert secret["secret"]["secretName"] == "mistral-tenants"
    redis = next(e for e in runtime["env"] if e["name"] == "INFERKUBE_REDIS_URL")
    assert redis["valueFrom"]["secretKeyRef"] == {"name": "ratelimit-redis", "key": "url"}


def test_cache_disabled_downloads_in_an_init_container() -> None:
    obj = example("cpu-tiny-kind")
    obj["spec"]["cache"] = {"enabled": False}
    children = by_kind(render(obj, serving_cache_key=None))
    assert "PersistentVolumeClaim" not in children and "Job" not in children
    init = children["Deployment"]["spec"]["template"]["spec"]["initContainers"][0]
    assert init["args"][0] == "download"


def test_pvc_source_mounts_the_claim_and_downloads_nothing() -> None:
    obj = example("cpu-tiny-kind")
    obj["spec"]["model"] = {"source": "pvc://shared-models/tiny/v1"}
    children = by_kind(render(obj, serving_cache_key=None))
    assert "Job" not in children and "PersistentVolumeClaim" not in children
    pod = children["Deployment"]["spec"]["template"]["spec"]
    claim = next(v for v in pod["volumes"] if v["name"] == "model-cache")["persistentVolumeClaim"]
    assert claim == {"claimName": "shared-models", "readOnly": True}
    args = pod["containers"][0]["args"]
    assert args[args.index("--model") + 1] == "/models/tiny/v1"


def test_unknown_accelerator_profile_is_a_spec_error() -> None:
    obj = example("llama-8b-single-gpu")
    obj["spec"]["resources"]["accelerator"] = "tpu-v5"
    with pytest.raises(SpecError, match="unknown accelerator profile 'tpu-v5'"):
        render(obj)


def test_response_cache_flags_and_encoder_fetched_by_the_downloader() -> None:
    obj = example("response-cache")
    obj["spec"]["responseCache"]["semantic"] = {"model": "hf://sentence-transformers/all-MiniLM-L6-v2",
                                                "revision": "abc", "similarityThreshold": 0.97}
    pod = by_kind(render(obj))["Deployment"]["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    encoder = {c["name"]: c for c in pod.get("initContainers", [])}["download-encoder"]
    assert encoder["args"][:5] == ["download", "--source", "hf://sentence-transformers/all-MiniLM-L6-v2",
                                   "--dest", args[args.index("--response-cache-semantic-model") + 1]]
    assert "--revision" in encoder["args"] and args[args.index("--response-cache-similarity-threshold") + 1] == "0.97"
    assert args[args.index("--response-cache-max-bytes") + 1] == str(1024 * 1024)
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert "INFERKUBE_REDIS_URL" in env  # the cache's Redis is the rate limiter's
    validate_k8s(by_kind(render(obj))["Deployment"], NEWEST_K8S)  # the init container is a valid Container
    off = example("cpu-tiny-kind")
    assert "--response-cache" not in by_kind(render(off))["Deployment"]["spec"]["template"]["spec"]["containers"][0]["args"]


def _budget_decision(replicas: int, tenants: dict[str, Any] | None = None) -> Any:
    """What a quota (by default with a model budget) decides for a service it admits, its tenant policy included."""
    from inferkube.api.quota import QuotaTenants
    from inferkube.api.tenantpolicy import merge_policies
    from inferkube.operator.quota import ServiceDecision

    section = QuotaTenants.model_validate(tenants if tenants is not None else {"modelTokensPerMinute": 9000})
    return ServiceDecision(("team",), "Admitted", replicas, policy=merge_policies([("team", section)]))


def test_tenant_policy_configmap_matches_golden_file() -> None:
    """The ConfigMap of an autoscaled memory-backend service whose HPA runs 3 replicas (UPDATE_GOLDEN=1 rewrites)."""
    cm = by_kind(render(example("qwen-autoscaled-queue-depth"), quota=_budget_decision(6), deployment_replicas=3))
    text = yaml.safe_dump(cm["ConfigMap"], sort_keys=False, width=1000)
    golden = GOLDEN / "tenant-policy-configmap.yaml"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text()


def _policy_of(children: list[dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(by_kind(children)["ConfigMap"]["data"][contract.POLICY_FILE_KEY])


def test_the_memory_backend_policy_names_the_replicas_its_model_budget_is_split_between() -> None:
    auto = example("qwen-autoscaled-queue-depth")
    assert _policy_of(render(auto, quota=_budget_decision(6), deployment_replicas=4))["replicas"] == 4, "as the HPA set it"
    assert _policy_of(render(auto, quota=_budget_decision(6)))["replicas"] == 1, "no Deployment yet: Kubernetes' default"
    assert _policy_of(render(auto, quota=_budget_decision(6), deployment_replicas=0))["replicas"] == 1, "scaled to zero"
    fixed = example("llama-70b-tp4-h100")
    assert _policy_of(render(fixed, quota=_budget_decision(2), deployment_replicas=5))["replicas"] == 2, "as rendered"
    # Redis shares the whole budget, and without a budget there is nothing to split: no count, no write per scale event.
    assert "replicas" not in _policy_of(render(example("api-keys-rate-limits"), quota=_budget_decision(2)))
    ceiling_only = _budget_decision(6, {"ceiling": {"tokensPerMinute": 10}})
    assert "replicas" not in _policy_of(render(auto, quota=ceiling_only, deployment_replicas=4))


def test_a_scale_event_changes_the_policy_digest_but_never_the_pod_template() -> None:
    from inferkube.operator.builders.tenant_policy import policy_digest, service_policy

    auto = example("qwen-autoscaled-queue-depth")
    three = by_kind(render(auto, quota=_budget_decision(6), deployment_replicas=3))
    spec, meta = parse_service(auto)
    policy = service_policy(spec, Observed(quota=_budget_decision(6), deployment_replicas=3))
    assert policy is not None and policy.replicas == 3
    digest = policy_digest(meta, policy)
    assert three["Deployment"]["metadata"]["annotations"][contract.ANNOTATION_TENANT_POLICY] == digest
    assert three["ConfigMap"]["metadata"]["annotations"][contract.ANNOTATION_TENANT_POLICY] == digest
    four = by_kind(render(auto, quota=_budget_decision(6), deployment_replicas=4))
    assert four["Deployment"]["metadata"]["annotations"][contract.ANNOTATION_TENANT_POLICY] != digest
    assert four["Deployment"]["spec"] == three["Deployment"]["spec"], "no replicas written, no rollout"
