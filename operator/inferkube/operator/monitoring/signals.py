"""The scaling signals an InferenceService can target, defined once for the HPA, KEDA and the metrics adapter.

Each signal is one per-pod number. The HPA reads it through the custom metrics API (prometheus-adapter
serves it with the rule generated from the same signal); KEDA asks Prometheus for the sum over the
service's pods and lets the HPA divide by the replica count (metricType AverageValue), so both engines
compare the same per-replica value with the same target.
"""

from __future__ import annotations

from dataclasses import dataclass

from inferkube.api import contract
from inferkube.api.spec import AutoscalingSpec

POD_LABELS = ("namespace", "pod")


@dataclass(frozen=True)
class ScalingSignal:
    """One metric an `autoscaling.target*` field scales on."""

    field: str        # AutoscalingSpec attribute holding the target
    metric: str       # series name, and the custom metric name the HPA asks for
    per_pod: str      # PromQL aggregation of a pod's series into one number: sum, max or avg
    unit_scale: float  # spec value * unit_scale = metric value (percent of a 0..1 ratio: 0.01)
    from_runtime: bool = True  # exported by the runtime (else by another exporter, joined on pod labels)


SIGNALS: tuple[ScalingSignal, ...] = (
    ScalingSignal("target_queue_depth", contract.METRIC_QUEUE_DEPTH, "sum", 1),
    ScalingSignal("target_kv_cache_usage", contract.METRIC_KV_CACHE_USAGE, "max", 0.01),
    ScalingSignal("target_requests_in_flight", contract.METRIC_REQUESTS_IN_FLIGHT, "sum", 1),
    ScalingSignal("target_gpu_utilization", contract.METRIC_DCGM_GPU_UTIL, "avg", 1, from_runtime=False),
)


def active_signals(auto: AutoscalingSpec) -> list[tuple[ScalingSignal, float]]:
    """The signals `auto` targets, each with its target in the metric's own unit."""
    out = []
    for signal in SIGNALS:
        target = getattr(auto, signal.field)
        if target is not None:
            out.append((signal, target * signal.unit_scale))
    return out


def quantity(value: float) -> str:
    """A Kubernetes quantity for a target: whole numbers as they are, else in thousandths ('800m')."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value * 1000)}m"


def threshold(value: float) -> str:
    """A KEDA threshold string (KEDA parses a float)."""
    return quantity(value) if float(value).is_integer() else f"{value:g}"


def per_pod_query(signal: ScalingSignal, matchers: str, group_by: str = ",".join(POD_LABELS)) -> str:
    """One number per pod of the series selected by `matchers` (PromQL label matchers, no braces)."""
    return f"{signal.per_pod}({signal.metric}{{{matchers}}}) by ({group_by})"


def service_query(signal: ScalingSignal, namespace: str, where: str) -> str:
    """The sum over one service's pods of their per-pod values (KEDA divides by the replica count).

    `where` selects the service's runtime series; another exporter's series are joined to those pods by
    their namespace/pod labels.
    """
    by = ",".join(POD_LABELS)
    if signal.from_runtime:
        return f"sum({per_pod_query(signal, where, by)})"
    anchor = f"{contract.METRIC_REQUESTS_IN_FLIGHT}{{{where}}}"
    gpus = per_pod_query(signal, f'namespace="{namespace}"', by)
    return f"sum({gpus} and on ({by}) {anchor})"
