"""manifests/monitoring/ is exactly what the contract generates, and serves every metric an HPA can name."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferkube.api import contract
from inferkube.operator.cli import main as cli_main
from inferkube.operator.monitoring.adapter import adapter_rules
from inferkube.operator.monitoring.bundle import render_monitoring_files
from inferkube.operator.monitoring.dashboard import DASHBOARD_FILE, build_dashboard, panel_queries
from inferkube.operator.monitoring.signals import SIGNALS
from tests.schemas import NEWEST_K8S, validate_k8s
from tests.unit.operator.conftest import by_kind, render

REPO = Path(__file__).resolve().parents[3]
MONITORING = REPO / "manifests" / "monitoring"
CONTRACT_METRICS = {v for k, v in vars(contract).items() if k.startswith("METRIC_") and k != "METRIC_LABEL_ISVC"}
ALL_TARGETS = {"minReplicas": 1, "maxReplicas": 4, "targetQueueDepth": 8, "targetKvCacheUsage": 75,
               "targetRequestsInFlight": 16, "targetGpuUtilization": 90}


def _service(**autoscaling: Any) -> dict[str, Any]:
    return {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.KIND,
            "metadata": {"name": "m", "namespace": "llm"},
            "spec": {"model": {"source": "hf://org/m"}, "autoscaling": autoscaling}}


def test_committed_monitoring_files_match_the_generator() -> None:
    files = render_monitoring_files()
    assert sorted(p.name for p in MONITORING.iterdir()) == sorted(files)
    for name, text in files.items():
        assert (MONITORING / name).read_text() == text, (
            f"manifests/monitoring/{name} drifted: run `inferkube monitoring -o manifests/monitoring`")


def test_cli_writes_the_same_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["monitoring", "-o", str(tmp_path)]) == 0
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == render_monitoring_files()


def test_the_adapter_serves_every_metric_an_hpa_can_name() -> None:
    hpa = by_kind(render(_service(**ALL_TARGETS)))["HorizontalPodAutoscaler"]
    named = [m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    served = [r["name"]["as"] for r in adapter_rules()]
    assert named == served == [s.metric for s in SIGNALS]
    values = yaml.safe_load((MONITORING / "prometheus-adapter-values.yaml").read_text())
    assert [r["name"]["as"] for r in values["rules"]["custom"]] == served
    config = yaml.safe_load((MONITORING / "prometheus-adapter-config.yaml").read_text())
    assert config["rules"] == values["rules"]["custom"]
    for rule in adapter_rules():
        assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
        assert "<<.Series>>{<<.LabelMatchers>>}" in rule["metricsQuery"] and "by (<<.GroupBy>>)" in rule["metricsQuery"]


def test_hpa_targets_are_per_replica_quantities() -> None:
    hpa = by_kind(render(_service(**ALL_TARGETS)))["HorizontalPodAutoscaler"]
    targets = {m["pods"]["metric"]["name"]: m["pods"]["target"] for m in hpa["spec"]["metrics"]}
    assert targets == {
        contract.METRIC_QUEUE_DEPTH: {"type": "AverageValue", "averageValue": "8"},
        contract.METRIC_KV_CACHE_USAGE: {"type": "AverageValue", "averageValue": "750m"},
        contract.METRIC_REQUESTS_IN_FLIGHT: {"type": "AverageValue", "averageValue": "16"},
        contract.METRIC_DCGM_GPU_UTIL: {"type": "AverageValue", "averageValue": "90"},
    }


def test_keda_has_one_average_value_trigger_per_target() -> None:
    so = by_kind(render(_service(engine="keda", **ALL_TARGETS), keda_api=True))["ScaledObject"]
    triggers = so["spec"]["triggers"]
    assert [t["metadata"]["threshold"] for t in triggers] == ["8", "0.75", "16", "90"]
    assert all(t["metricType"] == "AverageValue" for t in triggers)
    gpu = triggers[3]["metadata"]["query"]
    assert contract.METRIC_DCGM_GPU_UTIL in gpu and "and on (namespace,pod)" in gpu


def test_dashboard_configmap_is_what_the_grafana_sidecar_loads() -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (with built-in kustomize) is part of this machine image"
    out = subprocess.run([kubectl, "kustomize", str(MONITORING)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    (cm,) = [d for d in yaml.safe_load_all(out) if d]
    validate_k8s(cm, NEWEST_K8S)
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"][DASHBOARD_FILE]) == build_dashboard()


def test_dashboard_has_the_variables_and_only_contract_metrics() -> None:
    model = build_dashboard()
    assert [v["name"] for v in model["templating"]["list"]] == ["datasource", "namespace", "service", "tenant"]
    titles = {t for t, _ in panel_queries(model)}
    for wanted in ("Time to first token", "Time per output token", "End-to-end latency", "Output tokens/s by tenant",
                   "Requests by status", "Rejections by reason", "Queue depth per replica", "KV-cache use per replica",
                   "Replicas desired / ready", "GPU utilization", "GPU memory used", "GPU temperature"):
        assert wanted in titles
    for title, expr in panel_queries(model):
        names = set(re.findall(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\{", expr))
        names = {n.removesuffix("_bucket") for n in names}
        assert names and names <= CONTRACT_METRICS, (title, names - CONTRACT_METRICS)
