"""The KEDA ScaledObject alternative to the HPA: Prometheus queries instead of a metrics adapter."""

from __future__ import annotations

from typing import Any

from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator import kinds, names
from inferkube.operator.builders import common
from inferkube.operator.inputs import Observed, ServiceMeta
from inferkube.operator.monitoring import signals
from inferkube.operator.settings import OperatorSettings


def _trigger(settings: OperatorSettings, query: str, threshold: str) -> dict[str, Any]:
    """A KEDA prometheus trigger."""
    return {
        "type": "prometheus",
        "metricType": "AverageValue",  # the HPA divides the service-wide sum by the replica count
        "metadata": {"serverAddress": settings.prometheus_url, "query": query, "threshold": threshold},
    }


def build_scaledobject(
    spec: InferenceServiceSpec, meta: ServiceMeta, settings: OperatorSettings, observed: Observed
) -> dict[str, Any]:
    """ScaledObject scaling the Deployment; thresholds are per replica, like the HPA's targets."""
    auto = spec.autoscaling
    assert auto is not None, "build_scaledobject needs spec.autoscaling"
    where = common.promql_selector(meta)
    triggers = [_trigger(settings, signals.service_query(signal, meta.namespace, where), signals.threshold(target))
                for signal, target in signals.active_signals(auto)]
    so_spec: dict[str, Any] = {
        "scaleTargetRef": common.scale_target(meta),
        "minReplicaCount": common.autoscaling_bounds(spec, observed)[0],
        "maxReplicaCount": common.autoscaling_bounds(spec, observed)[1],
        "triggers": triggers,
    }
    return {
        "apiVersion": kinds.SCALED_OBJECT.api_version,
        "kind": kinds.SCALED_OBJECT.kind,
        "metadata": common.object_meta(meta, meta.name, names.COMPONENT_RUNTIME),
        "spec": so_spec,
    }
