"""Alert rules for one InferenceService (Prometheus Operator PrometheusRule), on the runtime's own metrics."""

from __future__ import annotations

from typing import Any

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator import kinds, names
from inferkube.operator.builders import common
from inferkube.operator.inputs import Observed, ServiceMeta
from inferkube.operator.settings import OperatorSettings


def _alert(name: str, expr: str, duration: str, severity: str, summary: str, meta: ServiceMeta) -> dict[str, Any]:
    """One alerting rule labelled with the InferenceService it is about."""
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": severity, "namespace": meta.namespace, "inferenceservice": meta.name},
        "annotations": {"summary": summary, "description": f"InferenceService {meta.namespace}/{meta.name}: {summary}"},
    }


def build_prometheusrule(
    spec: InferenceServiceSpec, meta: ServiceMeta, settings: OperatorSettings, observed: Observed
) -> dict[str, Any]:
    """Alerts: replicas down, error rate, queue backing up, KV cache saturated, rate-limit backend failing."""
    sel = common.promql_selector(meta)
    queue_limit = 2 * (spec.autoscaling.target_queue_depth if spec.autoscaling and spec.autoscaling.target_queue_depth
                       else 8)
    requests = contract.METRIC_REQUESTS_TOTAL
    rules = [
        _alert("InferkubeReplicaDown", f"up{{{sel}}} == 0", "5m", "critical",
               "a runtime replica is not scraped (down or not ready for 5 minutes)", meta),
        _alert("InferkubeHighErrorRate",
               f'sum(rate({requests}{{{sel},status=~"5.."}}[5m])) / sum(rate({requests}{{{sel}}}[5m])) > 0.05',
               "10m", "warning", "more than 5% of requests fail with a server error", meta),
        _alert("InferkubeQueueBackingUp", f"avg({contract.METRIC_QUEUE_DEPTH}{{{sel}}}) > {queue_limit}", "10m",
               "warning", f"more than {queue_limit} requests wait per replica: add capacity or raise maxReplicas",
               meta),
        _alert("InferkubeKVCacheSaturated", f"max({contract.METRIC_KV_CACHE_USAGE}{{{sel}}}) > 0.95", "15m",
               "warning", "the KV cache is over 95% full: requests are being preempted", meta),
        _alert("InferkubeRateLimitBackendErrors",
               f"sum(increase({contract.METRIC_RATELIMIT_BACKEND_ERRORS_TOTAL}{{{sel}}}[5m])) > 0", "5m", "warning",
               "the rate-limit backend (Redis) is failing; limits fail open or closed as configured", meta),
    ]
    return {
        "apiVersion": kinds.PROMETHEUS_RULE.api_version,
        "kind": kinds.PROMETHEUS_RULE.kind,
        "metadata": common.object_meta(meta, meta.name, names.COMPONENT_RUNTIME, spec.monitoring.labels),
        "spec": {"groups": [{"name": f"inferkube.{meta.namespace}.{meta.name}", "rules": rules}]},
    }
