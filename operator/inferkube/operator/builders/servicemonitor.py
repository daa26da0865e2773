"""The Prometheus Operator ServiceMonitor scraping the runtime's /metrics."""

from __future__ import annotations

from typing import Any

from inferkube.api import contract
from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator import kinds, names
from inferkube.operator.builders import common
from inferkube.operator.inputs import Observed, ServiceMeta
from inferkube.operator.settings import OperatorSettings


def build_servicemonitor(
    spec: InferenceServiceSpec, meta: ServiceMeta, settings: OperatorSettings, observed: Observed
) -> dict[str, Any]:
    """ServiceMonitor on the Service's http port; the InferenceService label becomes a target label."""
    return {
        "apiVersion": kinds.SERVICE_MONITOR.api_version,
        "kind": kinds.SERVICE_MONITOR.kind,
        "metadata": common.object_meta(meta, meta.name, names.COMPONENT_RUNTIME, spec.monitoring.labels),
        "spec": {
            "selector": {"matchLabels": names.selector_labels(meta)},
            "namespaceSelector": {"matchNames": [meta.namespace]},
            "targetLabels": [contract.LABEL_ISVC],
            "endpoints": [
                {"port": common.PORT_NAME, "path": contract.METRICS_PATH, "interval": spec.monitoring.interval}
            ],
        },
    }
