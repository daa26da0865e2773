"""The ClusterIP Service in front of the runtime pods."""

from __future__ import annotations

from typing import Any

from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator import kinds, names
from inferkube.operator.builders import common
from inferkube.operator.inputs import Observed, ServiceMeta
from inferkube.operator.settings import OperatorSettings


def build_service(
    spec: InferenceServiceSpec, meta: ServiceMeta, settings: OperatorSettings, observed: Observed
) -> dict[str, Any]:
    """Port 80 (named http) to the runtime's port; ready pods only."""
    return {
        "apiVersion": kinds.SERVICE.api_version,
        "kind": kinds.SERVICE.kind,
        "metadata": common.object_meta(meta, meta.name, names.COMPONENT_RUNTIME),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector_labels(meta),
            "ports": [
                {
                    "name": common.PORT_NAME,
                    "port": common.SERVICE_PORT,
                    "targetPort": common.PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }
