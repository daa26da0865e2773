"""A real Prometheus scrapes the real runtime under load, as a ServiceMonitor would; every query we ship runs on it.

Prometheus (Debian's package) scrapes the session's runtime as two pods of one InferenceService (relabelling
adds the namespace/pod/service labels and the InferenceService target label a ServiceMonitor produces), a
DCGM exporter stand-in serving recorded dcgm-exporter lines (scraped with honor_labels, as GPU monitoring
stacks do) and kube-state-metrics lines. Then, through Prometheus' HTTP API: every prometheus-adapter rule
templated like the adapter does returns one value per pod, every KEDA query returns one number equal to the
sum of those per-pod values, every dashboard query returns data, and every alert rule evaluates.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from inferkube.api import contract
from inferkube.operator.inputs import Observed
from inferkube.operator.monitoring.adapter import adapter_rules
from inferkube.operator.monitoring.dashboard import build_dashboard, panel_queries
from inferkube.operator.parse import parse_service
from inferkube.operator.render import render_children
from inferkube.operator.settings import OperatorSettings
from tests.integration.runtime.conftest import LIMITED_KEY, MAIN_KEY, SERVED_NAME, RuntimeServer
from tests.prometheus import PrometheusServer, free_port, require_tool

pytestmark = pytest.mark.engine

NS, NAME = "llm", "tiny"
PODS = ("tiny-6b7f9c5d4-x2k8p", "tiny-6b7f9c5d4-q9m4z")
# GPU utilization per pod in the recorded DCGM lines: pod 0 has two GPUs, pod 1 one.
GPU_UTIL = {PODS[0]: (83.0, 71.0), PODS[1]: (42.0,)}
DCGM_FIELDS = ((contract.METRIC_DCGM_GPU_UTIL, "GPU utilization (in %)."),
               (contract.METRIC_DCGM_FB_USED, "Framebuffer memory used (in MiB)."),
               (contract.METRIC_DCGM_FB_FREE, "Framebuffer memory free (in MiB)."),
               (contract.METRIC_DCGM_GPU_TEMP, "GPU temperature (in C)."))
ISVC = {"apiVersion": f"{contract.GROUP}/{contract.VERSION}", "kind": contract.KIND,
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {"model": {"source": "hf://org/tiny"},
                 "autoscaling": {"engine": "keda", "minReplicas": 1, "maxReplicas": 4, "targetQueueDepth": 2,
                                 "targetKvCacheUsage": 80, "targetRequestsInFlight": 4, "targetGpuUtilization": 90}}}


def _dcgm_lines() -> str:
    """What dcgm-exporter prints in Kubernetes mode: one series per GPU, the using pod in pod/namespace."""
    gpus = [(pod, util) for pod, utils in GPU_UTIL.items() for util in utils]
    gpus += [("llama-other-5f5c7-abcde", 99.0)]  # a GPU of a pod of another namespace: never joined
    out = []
    for name, help_text in DCGM_FIELDS:
        out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for index, (pod, util) in enumerate(gpus):
            ns = "other" if pod.startswith("llama-other") else NS
            labels = (f'gpu="{index}",UUID="GPU-3f6d2c1e-0000-4000-8000-00000000000{index}",device="nvidia{index}",'
                      f'modelName="NVIDIA L4",Hostname="gpu-node-1",DCGM_FI_DRIVER_VERSION="550.54.15",'
                      f'container="runtime",namespace="{ns}",pod="{pod}"')
            value = {contract.METRIC_DCGM_GPU_UTIL: util, contract.METRIC_DCGM_FB_USED: 20000 + index,
                     contract.METRIC_DCGM_FB_FREE: 2000 - index, contract.METRIC_DCGM_GPU_TEMP: 60 + index}[name]
            out.append(f"{name}{{{labels}}} {value:g}")
        # an idle GPU: dcgm-exporter leaves out pod/namespace
        out.append(f'{name}{{gpu="7",UUID="GPU-idle",device="nvidia7",modelName="NVIDIA L4",Hostname="gpu-node-1"}} 0')
    return "\n".join(out) + "\n"


def _ksm_lines() -> str:
    """kube-state-metrics' replica series for the InferenceService's HPA and Deployment."""
    return (f"# TYPE {contract.METRIC_KSM_HPA_DESIRED} gauge\n"
            f'{contract.METRIC_KSM_HPA_DESIRED}{{namespace="{NS}",horizontalpodautoscaler="{NAME}"}} 2\n'
            f"# TYPE {contract.METRIC_KSM_DEPLOYMENT_READY} gauge\n"
            f'{contract.METRIC_KSM_DEPLOYMENT_READY}{{namespace="{NS}",deployment="{NAME}"}} 2\n')


@pytest.fixture(scope="module")
def exporter() -> Iterator[str]:
    """A stand-in for dcgm-exporter (/dcgm) and kube-state-metrics (/ksm) on 127.0.0.1; its host:port."""
    pages = {"/dcgm": _dcgm_lines(), "/ksm": _ksm_lines()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _children() -> dict[str, dict[str, Any]]:
    spec, meta = parse_service(ISVC)
    observed = Observed(serving_cache_key="k", monitoring_api=True, alerting_api=True, keda_api=True)
    return {c.kind: c.body for c in render_children(spec, meta, OperatorSettings(), observed)}


def _runtime_job(address: str) -> dict[str, Any]:
    """A scrape job shaped like the one the Prometheus Operator generates from our ServiceMonitor."""
    groups = [{"targets": [address],
               "labels": {"__meta_kubernetes_namespace": NS, "__meta_kubernetes_pod_name": pod,
                          "__meta_kubernetes_service_name": NAME,
                          f"__meta_kubernetes_service_label_{contract.METRIC_LABEL_ISVC}": NAME}} for pod in PODS]
    relabel = [{"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
               {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
               {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
               {"source_labels": [f"__meta_kubernetes_service_label_{contract.METRIC_LABEL_ISVC}"],
                "target_label": contract.METRIC_LABEL_ISVC}]
    return {"job_name": "serviceMonitor/llm/tiny/0", "metrics_path": contract.METRICS_PATH,
            "static_configs": groups, "relabel_configs": relabel}


def _exporter_job(name: str, path: str, address: str) -> dict[str, Any]:
    """An exporter scraped with honor_labels: its series' own pod/namespace win over the target's."""
    return {"job_name": name, "metrics_path": path, "honor_labels": True,
            "static_configs": [{"targets": [address], "labels": {"namespace": "gpu-operator", "pod": f"{name}-0"}}]}


async def _load(base_url: str, rounds: int = 2, streams: int = 10) -> None:
    """A short burst: streaming and plain requests beyond the admission bound, bad keys, a tight tenant."""
    main = {"Authorization": f"Bearer {MAIN_KEY}"}
    body = {"model": SERVED_NAME, "messages": [{"role": "user", "content": "count"}], "max_tokens": 48,
            "ignore_eos": True}

    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        async def stream() -> None:
            async with client.stream("POST", "/v1/chat/completions", headers=main,
                                     json={**body, "stream": True}) as r:
                async for _ in r.aiter_lines():
                    pass

        for _round in range(rounds):
            calls = [stream() for _ in range(streams)]
            calls += [client.post("/v1/chat/completions", headers=main, json=body) for _ in range(2)]
            calls += [client.post("/v1/chat/completions", headers={"Authorization": "Bearer wrong"}, json=body)]
            calls += [client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {LIMITED_KEY}"},
                                  json=body) for _ in range(2)]
            await asyncio.gather(*calls)


@pytest.fixture(scope="module")
def prometheus(runtime_server: RuntimeServer, exporter: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """Prometheus scraping runtime and stand-ins every second, with the rendered alert rules loaded."""
    require_tool("prometheus")
    work = tmp_path_factory.mktemp("prometheus")
    rules = work / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _children()["PrometheusRule"]["spec"]["groups"]}))
    address = runtime_server.base_url.removeprefix("http://")
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(rules)],
              "scrape_configs": [_runtime_job(address), _exporter_job("dcgm-exporter", "/dcgm", exporter),
                                 _exporter_job("kube-state-metrics", "/ksm", exporter)]}
    with PrometheusServer(config, work) as prom:
        prom.wait_for("count(up == 1)", lambda r: bool(r) and float(r[0]["value"][1]) == len(PODS) + 2)
        yield prom


@pytest.fixture(scope="module")
def loaded_at(prometheus: PrometheusServer, runtime_server: RuntimeServer) -> float:
    """Run the load, wait until Prometheus has scraped its last request; the evaluation time for queries.

    A first request creates the histogram series and Prometheus scrapes them before the burst, as in a
    running cluster (a series born inside a rate window shows no increase for what its first sample holds).
    """
    sel = f'namespace="{NS}",{contract.METRIC_LABEL_ISVC}="{NAME}"'
    asyncio.run(_load(runtime_server.base_url, rounds=1, streams=1))
    prometheus.wait_for(f"count({contract.METRIC_TPOT_SECONDS}_count{{{sel}}})", lambda r: bool(r))
    time.sleep(2)
    asyncio.run(_load(runtime_server.base_url))
    total = runtime_server.metric(contract.METRIC_REQUESTS_TOTAL)
    prometheus.wait_for(f"min(sum by (pod) ({contract.METRIC_REQUESTS_TOTAL}{{{sel}}}))",
                        lambda r: bool(r) and float(r[0]["value"][1]) >= total)
    time.sleep(2)  # two more scrapes, so rates over the last minute see the whole burst
    return time.time()


def _values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def _adapter_query(rule: dict[str, Any], pods: tuple[str, ...]) -> str:
    """The query prometheus-adapter sends for the HPA's Pods metric of these pods."""
    series = rule["seriesQuery"].split("{", 1)[0]
    matchers = f'namespace="{NS}",pod=~"{"|".join(pods)}"'
    return (rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", "pod"))


def _per_pod(prometheus: PrometheusServer, rule: dict[str, Any], at: float) -> dict[str, float]:
    result = prometheus.query(_adapter_query(rule, PODS), at)
    return {sample["metric"]["pod"]: float(sample["value"][1]) for sample in result}


def test_every_adapter_rule_returns_one_value_per_pod(prometheus: PrometheusServer, loaded_at: float) -> None:
    for rule in adapter_rules():
        series = prometheus.query(rule["seriesQuery"], loaded_at)
        assert series, f"{rule['seriesQuery']}: the adapter would discover no series"
        result = prometheus.query(_adapter_query(rule, PODS), loaded_at)
        assert sorted(s["metric"].get("pod") for s in result) == sorted(PODS), (rule["name"]["as"], result)
        assert all(set(s["metric"]) == {"pod"} for s in result)
        assert all(math.isfinite(v) for v in _values(result))
    gpu = next(r for r in adapter_rules() if r["name"]["as"] == contract.METRIC_DCGM_GPU_UTIL)
    assert _per_pod(prometheus, gpu, loaded_at) == {pod: sum(u) / len(u) for pod, u in GPU_UTIL.items()}


def test_the_adapter_serves_what_the_runtime_reports(prometheus: PrometheusServer, loaded_at: float,
                                                     runtime_server: RuntimeServer) -> None:
    prometheus.wait_for(f'{contract.METRIC_REQUESTS_IN_FLIGHT}{{pod="{PODS[0]}"}}', lambda r: _values(r) == [0.0])
    rule = next(r for r in adapter_rules() if r["name"]["as"] == contract.METRIC_REQUESTS_IN_FLIGHT)
    assert _per_pod(prometheus, rule, time.time()) == dict.fromkeys(PODS, 0.0)
    assert runtime_server.metric(contract.METRIC_REQUESTS_IN_FLIGHT) == 0


def test_every_keda_query_returns_the_sum_of_the_per_pod_values(prometheus: PrometheusServer,
                                                                 loaded_at: float) -> None:
    triggers = _children()["ScaledObject"]["spec"]["triggers"]
    rules = {r["name"]["as"]: r for r in adapter_rules()}
    assert len(triggers) == len(rules)
    for trigger, (_name, rule) in zip(triggers, rules.items(), strict=True):
        result = prometheus.query(trigger["metadata"]["query"], loaded_at)
        assert len(result) == 1 and result[0]["metric"] == {}, (trigger["metadata"]["query"], result)
        value = float(result[0]["value"][1])
        assert math.isfinite(value)
        # KEDA's AverageValue: the HPA divides by the replica count, so sum / pods == the adapter's per-pod mean
        per_pod = _per_pod(prometheus, rule, loaded_at)
        assert value == pytest.approx(sum(per_pod.values())), trigger["metadata"]["query"]


def _substitute(expr: str) -> str:
    """Fill the dashboard's template variables the way Grafana would for this service."""
    return (expr.replace("$namespace", NS).replace("$service", NAME).replace("$tenant", ".*")
            .replace("$__rate_interval", "1m"))


def test_every_dashboard_panel_query_returns_data(prometheus: PrometheusServer, loaded_at: float) -> None:
    empty = []
    for title, expr in panel_queries(build_dashboard()):
        values = _values(prometheus.query(_substitute(expr), loaded_at))
        if not values or (not all(math.isfinite(v) for v in values) and "histogram_quantile" in expr):
            empty.append((title, expr, values))
    assert empty == []
    statuses = {s["metric"]["status"] for s in prometheus.query(
        _substitute(dict(panel_queries(build_dashboard()))["Requests by status"]), loaded_at)}
    assert {"200", "401", "429"} <= statuses
    reasons = {s["metric"]["reason"] for s in prometheus.query(
        _substitute(dict(panel_queries(build_dashboard()))["Rejections by reason"]), loaded_at)}
    assert {"auth", "rate_limit"} <= reasons


def test_dashboard_variables_list_the_namespace_service_and_tenants(prometheus: PrometheusServer,
                                                                      loaded_at: float) -> None:
    anchor = contract.METRIC_REQUESTS_IN_FLIGHT
    assert NS in prometheus.api("label/namespace/values", **{"match[]": anchor})
    assert NAME in prometheus.api(f"label/{contract.METRIC_LABEL_ISVC}/values", **{"match[]": anchor})
    assert "main" in prometheus.api("label/tenant/values", **{"match[]": contract.METRIC_REQUESTS_TOTAL})


def test_every_alert_rule_parses_and_evaluates(prometheus: PrometheusServer, loaded_at: float) -> None:
    rules = [r for g in _children()["PrometheusRule"]["spec"]["groups"] for r in g["rules"]]
    for rule in rules:
        prometheus.query(rule["expr"], loaded_at)  # raises with Prometheus' parse/eval error
        for name in set(re.findall(r"\b([A-Za-z_:][A-Za-z0-9_:]*)\{", rule["expr"])):
            assert prometheus.query(f"count({name})", loaded_at), f"{rule['alert']}: no series {name}"

    def all_ok(_: list[dict[str, Any]]) -> bool:
        loaded = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        return len(loaded) == len(rules) and all(r["health"] == "ok" and r["lastEvaluation"] > "2000"
                                                 for r in loaded)

    prometheus.wait_for("vector(1)", all_ok, timeout=30)


def test_prometheus_log_has_no_errors(prometheus: PrometheusServer, loaded_at: float) -> None:
    log = Path(prometheus.log_path).read_text()
    assert "level=error" not in log, log[-3000:]
