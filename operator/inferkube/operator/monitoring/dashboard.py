"""The Grafana dashboard of InferenceServices, built with Grafana's own grafana-foundation-sdk.

One dashboard for every InferenceService: template variables pick the namespace, the service and the
tenants. Every query uses metric names from the shared contract; the integration tests run each of them
on a real Prometheus scraping the real runtime.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as gdash
from grafana_foundation_sdk.builders import prometheus as gprom
from grafana_foundation_sdk.builders import timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as gmodel

from inferkube.api import contract

DASHBOARD_UID = "inferkube-inferenceservice"
DASHBOARD_FILE = "inferkube-inferenceservice.json"
DATASOURCE = gmodel.DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = f'namespace="$namespace",{contract.METRIC_LABEL_ISVC}="$service"'
TENANT = 'tenant=~"$tenant"'
RATE = "$__rate_interval"
QUANTILES = (0.5, 0.9, 0.99)


def _query(expr: str, legend: str, ref: str) -> gprom.Dataquery:
    return gprom.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def _panel(title: str, unit: str, description: str, targets: list[tuple[str, str]]) -> timeseries.Panel:
    """A time series panel with one query per (expr, legend)."""
    panel = timeseries.Panel().title(title).unit(unit).description(description).datasource(DATASOURCE)
    panel = panel.height(8).span(12)
    for index, (expr, legend) in enumerate(targets):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + index)))
    return panel


def _percentiles(metric: str) -> list[tuple[str, str]]:
    bucket = f"sum by (le) (rate({metric}_bucket{{{SEL}}}[{RATE}]))"
    return [(f"histogram_quantile({q}, {bucket})", f"p{round(q * 100)}") for q in QUANTILES]


def _gpu(metric: str, agg: str) -> str:
    """A DCGM series per serving pod: joined to the service's pods by the exporter's namespace/pod labels."""
    anchor = f"{contract.METRIC_REQUESTS_IN_FLIGHT}{{{SEL}}}"
    return f'{agg} by (pod) ({metric}{{namespace="$namespace"}} and on (namespace, pod) {anchor})'


def _hit_ratio() -> str:
    """hits / (hits + misses) of the response cache; 0 (not "no data") for a service without the cache."""
    def rate_of(metric: str) -> str:
        return f"(sum(rate({metric}{{{SEL}}}[{RATE}])) or vector(0))"

    hits = rate_of(contract.METRIC_RESPONSE_CACHE_HITS_TOTAL)
    misses = rate_of(contract.METRIC_RESPONSE_CACHE_MISSES_TOTAL)
    return f"{hits} / clamp_min({hits} + {misses}, 1e-9)"


def _latency_row() -> list[timeseries.Panel]:
    return [
        _panel("Time to first token", "s", "Streaming requests: arrival to first token.",
               _percentiles(contract.METRIC_TTFT_SECONDS)),
        _panel("Time per output token", "s", "Streaming requests: mean time per token after the first.",
               _percentiles(contract.METRIC_TPOT_SECONDS)),
        _panel("End-to-end latency", "s", "Admitted requests, arrival to last byte.",
               _percentiles(contract.METRIC_E2E_SECONDS)),
        _panel("Output tokens/s by tenant", "short", "Completion tokens generated per second.",
               [(f"sum by (tenant) (rate({contract.METRIC_COMPLETION_TOKENS_TOTAL}{{{SEL},{TENANT}}}[{RATE}]))",
                 "{{tenant}}")]),
    ]


def _traffic_row() -> list[timeseries.Panel]:
    return [
        _panel("Requests by status", "reqps", "Answered requests per second by HTTP status (499: client left).",
               [(f"sum by (status) (rate({contract.METRIC_REQUESTS_TOTAL}{{{SEL},{TENANT}}}[{RATE}]))",
                 "{{status}}")]),
        _panel("Rejections by reason", "reqps", "Requests refused before the engine, per second.",
               [(f"sum by (reason) (rate({contract.METRIC_REJECTIONS_TOTAL}{{{SEL}}}[{RATE}]))", "{{reason}}")]),
        _panel("Response cache hit ratio", "percentunit", "Cacheable requests answered from the response cache "
               "(hits / (hits + misses)); 0 when the cache is off (spec.responseCache).", [(_hit_ratio(), "hit ratio")]),
        _panel("Queue depth per replica", "short", "Admitted requests waiting for the engine (an HPA signal).",
               [(f"sum by (pod) ({contract.METRIC_QUEUE_DEPTH}{{{SEL}}})", "{{pod}}")]),
        _panel("KV-cache use per replica", "percentunit", "vLLM's KV cache in use (an HPA signal).",
               [(f"max by (pod) ({contract.METRIC_KV_CACHE_USAGE}{{{SEL}}})", "{{pod}}")]),
        _panel("Requests in flight per replica", "short", "Requests running in the engine (an HPA signal).",
               [(f"sum by (pod) ({contract.METRIC_REQUESTS_IN_FLIGHT}{{{SEL}}})", "{{pod}}")]),
        _panel("Replicas desired / ready", "short", "The autoscaler's wish and the Deployment's ready pods "
               "(kube-state-metrics).",
               [(f'max({contract.METRIC_KSM_HPA_DESIRED}{{namespace="$namespace",horizontalpodautoscaler="$service"}})',
                 "desired"),
                (f'max({contract.METRIC_KSM_DEPLOYMENT_READY}{{namespace="$namespace",deployment="$service"}})',
                 "ready")]),
    ]


def _gpu_row() -> list[timeseries.Panel]:
    return [
        _panel("GPU utilization", "percent", "NVIDIA DCGM exporter, averaged over each replica's GPUs.",
               [(_gpu(contract.METRIC_DCGM_GPU_UTIL, "avg"), "{{pod}}")]),
        _panel("GPU memory used", "decmbytes", "Framebuffer memory in use per replica (DCGM).",
               [(_gpu(contract.METRIC_DCGM_FB_USED, "sum"), "{{pod}}")]),
        _panel("GPU temperature", "celsius", "Hottest GPU of each replica (DCGM).",
               [(_gpu(contract.METRIC_DCGM_GPU_TEMP, "max"), "{{pod}}")]),
    ]


def _variable(name: str, label: str, query: str, *, multi: bool = False) -> gdash.QueryVariable:
    variable = gdash.QueryVariable(name).label(label).query(query).datasource(DATASOURCE)
    variable = variable.refresh(gmodel.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(gmodel.VariableSort.ALPHABETICAL_ASC)
    if multi:
        variable = variable.multi(True).include_all(True).all_value(".*")
    return variable


def build_dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (a plain dict)."""
    anchor = contract.METRIC_REQUESTS_IN_FLIGHT
    builder = (
        gdash.Dashboard("inferkube / InferenceService").uid(DASHBOARD_UID).tags([contract.APP_NAME])
        .refresh("30s").time("now-1h", "now").timezone("browser")
        .with_variable(gdash.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(_variable("namespace", "Namespace", f"label_values({anchor}, namespace)"))
        .with_variable(_variable("service", "InferenceService",
                                 f'label_values({anchor}{{namespace="$namespace"}}, {contract.METRIC_LABEL_ISVC})'))
        .with_variable(_variable("tenant", "Tenant",
                                 f"label_values({contract.METRIC_REQUESTS_TOTAL}{{{SEL}}}, tenant)", multi=True))
    )
    for title, panels in (("Latency and throughput", _latency_row()), ("Traffic and scaling signals", _traffic_row()),
                          ("GPUs (NVIDIA DCGM exporter)", _gpu_row())):
        builder = builder.with_row(gdash.Row(title))
        for panel in panels:
            builder = builder.with_panel(panel)
    return dict(json.loads(json.dumps(builder.build(), cls=JSONEncoder)))


def panel_queries(model: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query in a dashboard model."""
    return [(panel["title"], target["expr"]) for panel in model["panels"] if panel.get("type") != "row"
            for target in panel.get("targets", [])]


def render_dashboard_json() -> str:
    """The dashboard JSON text, stable across runs (sorted keys)."""
    return json.dumps(build_dashboard(), indent=2, sort_keys=True) + "\n"
