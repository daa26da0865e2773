"""The committed CRD is exactly what the API models generate, and it teaches the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from inferkube.operator.crd import CRD_FILENAME, build_crd, render_crd_yaml

REPO = Path(__file__).resolve().parents[3]


def _walk(node: dict[str, Any], path: str = ""):
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def _schema() -> dict[str, Any]:
    return build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_committed_crd_matches_the_models() -> None:
    committed = (REPO / "crds" / CRD_FILENAME).read_text()
    assert committed == render_crd_yaml(), "crds/ drifted from inferkube.api: run `inferkube crd -o crds`"


def test_every_spec_and_status_field_has_a_description() -> None:
    schema = _schema()
    missing = [
        path
        for top in ("spec", "status")
        for path, node in _walk(schema["properties"][top], top)
        if not node.get("description") and not path.endswith("{}") and not path.endswith("[]")
    ]
    assert missing == []


def test_schema_is_structural() -> None:
    for path, node in _walk(_schema()):
        assert "$ref" not in node and "allOf" not in node and "oneOf" not in node, path
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string"), f"{path}: anyOf only for int-or-string"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path}: no type"
        assert "default" not in node, f"{path}: defaults live in the models"


def test_subresources_printer_columns_and_names() -> None:
    crd = yaml.safe_load(render_crd_yaml())
    version = crd["spec"]["versions"][0]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    assert version["subresources"]["status"] == {}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Model", "Replicas", "URL", "Age"} <= columns
    short = crd["spec"]["names"]["shortNames"]
    assert "isvc" not in short and short, "must not clash with KServe's isvc"


def test_cel_rules_sit_next_to_their_fields() -> None:
    schema = _schema()
    spec_rules = [r["rule"] for r in schema["properties"]["spec"]["x-kubernetes-validations"]]
    auto_rules = schema["properties"]["spec"]["properties"]["autoscaling"]["x-kubernetes-validations"]
    assert any("replicas" in r and "autoscaling" in r for r in spec_rules)
    assert any("minReplicas <= self.maxReplicas" in r["rule"] for r in auto_rules)
    rollout_rules = schema["properties"]["spec"]["properties"]["rollout"]["x-kubernetes-validations"]
    assert any("maxUnavailable" in r["rule"] for r in rollout_rules)
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == ["type"]
