"""The PodDisruptionBudget: voluntary evictions (node drains) take at most one replica at a time."""

from __future__ import annotations

from typing import Any

from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator import kinds, names
from inferkube.operator.builders import common
from inferkube.operator.inputs import Observed, ServiceMeta
from inferkube.operator.settings import OperatorSettings


def build_pdb(
    spec: InferenceServiceSpec, meta: ServiceMeta, settings: OperatorSettings, observed: Observed
) -> dict[str, Any]:
    """maxUnavailable 1: drains proceed one replica at a time and never block forever on one replica."""
    return {
        "apiVersion": kinds.POD_DISRUPTION_BUDGET.api_version,
        "kind": kinds.POD_DISRUPTION_BUDGET.kind,
        "metadata": common.object_meta(meta, meta.name, names.COMPONENT_RUNTIME),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": names.selector_labels(meta)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
