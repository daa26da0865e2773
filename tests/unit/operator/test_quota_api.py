"""The InferenceQuota API: generated CRD (cluster-scoped, printer columns), CEL rules, and the example."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from inferkube.api.quota import STATUS_SERVICES_MAX, InferenceQuotaSpec, priority_value
from inferkube.operator.crd import QUOTA_CRD_FILENAME, build_quota_crd, render_quota_crd_yaml
from inferkube.operator.validation import validate_object
from tests.unit.operator.conftest import QUOTA_EXAMPLES, REPO

BASE: dict[str, Any] = {
    "apiVersion": "serving.inferkube.dev/v1alpha1",
    "kind": "InferenceQuota",
    "metadata": {"name": "team-search"},
    "spec": {"selector": {"namespaces": ["search"]}, "limits": {"gpus": 16, "replicas": 10}},
}


def quota(**spec: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE)
    out["spec"].update(spec)
    return out


def messages(obj: dict[str, Any]) -> list[str]:
    return [str(p) for p in validate_object(obj)]


def test_committed_quota_crd_matches_the_models() -> None:
    committed = (REPO / "crds" / QUOTA_CRD_FILENAME).read_text()
    assert committed == render_quota_crd_yaml(), "crds/ drifted from inferkube.api.quota: run `inferkube crd -o crds`"


def test_quota_crd_names_scope_and_columns() -> None:
    crd = yaml.safe_load(render_quota_crd_yaml())
    assert crd["metadata"]["name"] == "inferencequotas.serving.inferkube.dev"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["plural"] == "inferencequotas"
    assert crd["spec"]["names"]["shortNames"] == ["iquota"]
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["GPUs"] == ".status.used.gpus" and columns["GPU Limit"] == ".spec.limits.gpus"
    assert columns["Replicas"] == ".status.used.replicas" and columns["Replica Limit"] == ".spec.limits.replicas"
    assert columns["Services"] == ".status.serviceCount" and columns["Age"] == ".metadata.creationTimestamp"
    assert columns["Refused"] == ".status.refusedCount" and columns["Limited"] == ".status.limitedCount"


def test_the_api_server_refuses_a_status_list_longer_than_the_cap() -> None:
    entry = {"namespace": "search", "name": "s", "gpus": 1, "replicas": 1, "admitted": True, "reason": "Admitted"}
    obj = quota()
    obj["status"] = {"serviceCount": 101, "omittedCount": 0, "services": [entry] * (STATUS_SERVICES_MAX + 1)}
    assert [m for m in messages(obj) if m.startswith(".status.services: ") and m.endswith("is too long")]
    obj["status"] = {"serviceCount": 101, "omittedCount": 1, "services": [entry] * STATUS_SERVICES_MAX}
    assert messages(obj) == []


def test_every_quota_field_has_a_description() -> None:
    schema = build_quota_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

    def walk(node: dict[str, Any], path: str) -> list[str]:
        missing = [] if node.get("description") or path.endswith("[]") or path.endswith("{}") else [path]
        for key, sub in node.get("properties", {}).items():
            missing += walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            missing += walk(node["items"], f"{path}[]")
        return missing

    assert walk(schema["properties"]["spec"], "spec") + walk(schema["properties"]["status"], "status") == []


@pytest.mark.parametrize("path", QUOTA_EXAMPLES, ids=[p.stem for p in QUOTA_EXAMPLES])
def test_quota_examples_are_valid(path: Path) -> None:
    obj = yaml.safe_load(path.read_text())
    assert messages(obj) == []
    spec = InferenceQuotaSpec.model_validate(obj["spec"])
    assert spec.limits.gpus is not None


def test_there_is_a_quota_example() -> None:
    assert [p.name for p in QUOTA_EXAMPLES] == ["inferencequota-team.yaml"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"tenants": {"defaults": {"priority": "urgent"}}}, "priority"),
        ({"tenants": {"defaults": {"priority": 5000}}}, "priority must be high, normal, low or an integer"),
        ({"selector": {"serviceSelector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}}},
         "In and NotIn need values"),
        ({"selector": {"serviceSelector": {"matchExpressions": [{"key": "t", "operator": "Exists", "values": ["x"]}]}}},
         "Exists and DoesNotExist take none"),
        ({"limits": {"gpus": -1}}, "gpus"),
        ({"tenants": {"overrides": [{"tenant": "bad name!"}]}}, "tenant"),
        ({"limits": {"cpus": 3}}, "unknown field"),
    ],
)
def test_invalid_quotas_are_refused_with_a_reason(spec: dict[str, Any], expected: str) -> None:
    found = messages(quota(**spec))
    assert any(expected in m for m in found), found


@pytest.mark.parametrize("priority", ["high", "normal", "low", 0, -1000, 1000, 7])
def test_priorities_are_names_or_integers(priority: Any) -> None:
    assert messages(quota(tenants={"defaults": {"priority": priority}})) == []


def test_priority_values_order_high_over_normal_over_low() -> None:
    assert priority_value("high") > priority_value("normal") == priority_value(None) == 0 > priority_value("low")
    assert priority_value(250) == 250
