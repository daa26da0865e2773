"""One table of kinds: every child the builders render is in it, with the apiVersion it names."""

from __future__ import annotations

from typing import Any

from inferkube.operator import kinds
from tests.unit.operator.conftest import render


def test_every_rendered_child_is_a_known_kind_with_its_api_version(example: dict[str, Any]) -> None:
    for child in render(example):
        known = kinds.KINDS[child["kind"]]
        assert child["apiVersion"] == known.api_version, child["kind"]
        if child["kind"] in ("HorizontalPodAutoscaler", "ScaledObject"):
            target = child["spec"]["scaleTargetRef"]
            assert (target["apiVersion"], target["kind"]) == (kinds.DEPLOYMENT.api_version, "Deployment")


def test_the_table_answers_what_is_watched_pruned_and_optional() -> None:
    assert [k.kind for k in kinds.PRUNABLE] == ["HorizontalPodAutoscaler", "ScaledObject", "ServiceMonitor",
                                                "PrometheusRule", "Job", "ConfigMap"]
    assert {k.plural for k in kinds.WATCHED} == {
        "deployments", "services", "persistentvolumeclaims", "jobs", "poddisruptionbudgets",
        "horizontalpodautoscalers", "pods", "servicemonitors", "prometheusrules", "scaledobjects"}
    assert kinds.OPTIONAL_APIS == {"servicemonitors.monitoring.coreos.com": "ServiceMonitor",
                                   "prometheusrules.monitoring.coreos.com": "PrometheusRule",
                                   "scaledobjects.keda.sh": "ScaledObject"}
    assert kinds.SERVICE.api_version == "v1" and kinds.SCALED_OBJECT.api_version == "keda.sh/v1alpha1"
