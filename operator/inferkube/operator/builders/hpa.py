"""The HorizontalPodAutoscaler (autoscaling/v2) on the runtime's own per-pod metrics."""

from __future__ import annotations

from typing import Any

from inferkube.api.spec import InferenceServiceSpec, ScalingBehavior
from inferkube.operator import kinds, names
from inferkube.operator.builders import common
from inferkube.operator.inputs import Observed, ServiceMeta
from inferkube.operator.monitoring.signals import active_signals, quantity
from inferkube.operator.settings import OperatorSettings

DEFAULT_SCALE_DOWN = ScalingBehavior(stabilization_window_seconds=300, pods_per_period=1, period_seconds=60)


def _rules(behavior: ScalingBehavior | None) -> dict[str, Any] | None:
    """One direction of HPA behavior, or None to keep Kubernetes' default."""
    if behavior is None:
        return None
    rules: dict[str, Any] = {}
    if behavior.stabilization_window_seconds is not None:
        rules["stabilizationWindowSeconds"] = behavior.stabilization_window_seconds
    if behavior.pods_per_period is not None:
        rules["policies"] = [
            {"type": "Pods", "value": behavior.pods_per_period, "periodSeconds": behavior.period_seconds}
        ]
    return rules or None


def pod_metric(name: str, average_value: str) -> dict[str, Any]:
    """A Pods metric target (served by a custom metrics adapter such as prometheus-adapter)."""
    return {
        "type": "Pods",
        "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": average_value}},
    }


def build_hpa(
    spec: InferenceServiceSpec, meta: ServiceMeta, settings: OperatorSettings, observed: Observed
) -> dict[str, Any]:
    """HPA scaling the Deployment on each targeted per-pod signal (queue, KV cache, in flight, GPU)."""
    auto = spec.autoscaling
    assert auto is not None, "build_hpa needs spec.autoscaling"
    metrics = [pod_metric(signal.metric, quantity(target)) for signal, target in active_signals(auto)]
    hpa_spec: dict[str, Any] = {
        "scaleTargetRef": common.scale_target(meta),
        "minReplicas": common.autoscaling_bounds(spec, observed)[0],
        "maxReplicas": common.autoscaling_bounds(spec, observed)[1],
        "metrics": metrics,
    }
    behavior = {
        key: rules
        for key, rules in (("scaleUp", _rules(auto.scale_up)), ("scaleDown", _rules(auto.scale_down or DEFAULT_SCALE_DOWN)))
        if rules
    }
    if behavior:
        hpa_spec["behavior"] = behavior
    return {
        "apiVersion": kinds.HORIZONTAL_POD_AUTOSCALER.api_version,
        "kind": kinds.HORIZONTAL_POD_AUTOSCALER.kind,
        "metadata": common.object_meta(meta, meta.name, names.COMPONENT_RUNTIME),
        "spec": hpa_spec,
    }
