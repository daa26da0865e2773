"""The committed CRD is exactly what the API models generate, and it teaches the API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from jsonpath_ng.ext import parse as jsonpath

from inferkube.operator.crd import CRD_FILENAME, build_crd, render_crd_yaml
from inferkube.operator.inputs import ServiceMeta
from inferkube.operator.parse import parse_spec
from inferkube.operator.settings import OperatorSettings
from inferkube.operator.status import compute_status
from inferkube.operator.world import Children, observe

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


def test_crd_fits_client_side_apply() -> None:
    """`kubectl apply` (client-side) stores the object as JSON in an annotation; annotations may hold 256 kB."""
    assert len(json.dumps(build_crd(), separators=(",", ":"))) < 256 * 1024 // 2, "keep a wide margin"


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


def _column(obj: dict[str, Any], name: str) -> Any:
    """What `kubectl get` shows in a printer column for obj (the first JSONPath match, as the API server)."""
    column = next(c for c in build_crd()["spec"]["versions"][0]["additionalPrinterColumns"] if c["name"] == name)
    found = jsonpath("$" + column["jsonPath"]).find(obj)
    return found[0].value if found else None


def _status(spec: dict[str, Any], *children: dict[str, Any]) -> dict[str, Any]:
    meta, kids = ServiceMeta(name="m", namespace="ns"), Children()
    for child in children:
        kids.put(child)
    parsed = parse_spec(spec)
    status = compute_status(parsed, meta, 1, OperatorSettings(), kids, observe(parsed, meta, kids, set()))
    return {"status": status.model_dump(by_alias=True, exclude_none=True)}


def test_replicas_column_shows_ready_of_desired() -> None:
    spec = {"model": {"source": "pvc://models/m"}, "replicas": 2}
    assert _column(_status(spec), "Replicas") == "0/2", "before the Deployment exists: the wanted count"
    half = {"kind": "Deployment", "metadata": {"name": "m", "generation": 1}, "spec": {"replicas": 2},
            "status": {"replicas": 2, "readyReplicas": 1, "observedGeneration": 1}}
    assert _column(_status(spec, half), "Replicas") == "1/2"
    autoscaled = {"model": {"source": "pvc://models/m"}, "autoscaling": {"minReplicas": 3, "maxReplicas": 5}}
    assert _column(_status(autoscaled), "Replicas") == "0/3"
