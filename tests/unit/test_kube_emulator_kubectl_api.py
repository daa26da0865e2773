"""The parts of the API kubectl needs beyond CRUD: OpenAPI v3, Table responses, field selectors on Events."""

from __future__ import annotations

import copy
import datetime
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kube_emulator import KubeEmulator
from tests.kube_emulator.tables import human_age
from tests.unit.test_kube_emulator import call, deployment, widget, widget_crd

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
COLUMNS = [
    {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Mode", "type": "string", "jsonPath": ".spec.mode", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    """An emulator with the Widget CRD, which declares printer columns."""
    crd = copy.deepcopy(widget_crd())
    crd["spec"]["versions"][0]["additionalPrinterColumns"] = COLUMNS
    with KubeEmulator() as emulator:
        emulator.create(crd)
        yield emulator


def get(kube: KubeEmulator, path: str, accept: str = "application/json") -> Any:
    req = urllib.request.Request(kube.url + path, headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        found = {ref.rsplit("/", 1)[-1]} if isinstance(ref, str) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def test_openapi_v3_describes_builtins_and_crds_for_explain_and_field_validation(kube: KubeEmulator) -> None:
    index = get(kube, "/openapi/v3")["paths"]
    assert {"api/v1", "apis/apps/v1", "apis/example.com/v1"} <= set(index)
    doc = get(kube, index["apis/example.com/v1"]["serverRelativeURL"])
    widget_schema = doc["components"]["schemas"]["com.example.v1.Widget"]
    assert widget_schema["x-kubernetes-group-version-kind"] == [{"group": "example.com", "version": "v1", "kind": "Widget"}]
    assert widget_schema["properties"]["spec"]["properties"]["mode"]["enum"] == ["fast", "slow"]
    assert widget_schema["properties"]["metadata"]["allOf"][0]["$ref"].endswith("meta.v1.ObjectMeta")
    patch = doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"]["kind"] == "Widget"
    assert "fieldValidation" in {p["name"] for p in patch["parameters"]}, "kubectl then sends fieldValidation=Strict"
    apps = get(kube, index["apis/apps/v1"]["serverRelativeURL"])
    schemas = apps["components"]["schemas"]
    spec = schemas["io.k8s.api.apps.v1.Deployment"]["properties"]["spec"]
    assert spec["allOf"][0]["$ref"] == "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
    assert schemas["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["replicas"]["type"] == "integer"
    assert _refs(apps) <= set(schemas) and _refs(doc) <= set(doc["components"]["schemas"]), "every $ref resolves"
    assert call(kube, "GET", "/openapi/v3/apis/nothing.example/v9")[0] == 404


def test_tables_use_the_crds_printer_columns(kube: KubeEmulator) -> None:
    kube.create(widget("w1", size=3))
    kube.patch_status("Widget", "default", "w1", {"conditions": [{"type": "Ready", "status": "True"}]})
    kube.create(widget("w2", size=5))
    table = get(kube, "/apis/example.com/v1/namespaces/default/widgets", TABLE)
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Size", "Ready", "Mode", "Age"]
    assert table["columnDefinitions"][3]["priority"] == 1
    cells = {row["cells"][0]: row["cells"] for row in table["rows"]}
    assert cells["w1"][:4] == ["w1", 3, "True", "fast"] and cells["w2"][2] is None
    assert cells["w1"][4].endswith("s"), "Age is computed by the server, as kubectl expects"
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    one = get(kube, "/apis/example.com/v1/namespaces/default/widgets/w1?includeObject=Object", TABLE)
    assert len(one["rows"]) == 1 and one["rows"][0]["object"]["spec"]["size"] == 3
    assert get(kube, "/apis/example.com/v1/namespaces/default/widgets/w1")["kind"] == "Widget", "JSON without as=Table"


def test_builtin_tables_show_the_usual_columns(kube: KubeEmulator) -> None:
    kube.create(deployment("web", replicas=2))
    kube.patch_status("Deployment", "default", "web", {"readyReplicas": 1, "updatedReplicas": 2, "availableReplicas": 1})
    table = get(kube, "/apis/apps/v1/namespaces/default/deployments", TABLE)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Ready", "Up-to-date", "Available", "Age"]
    assert table["rows"][0]["cells"][:4] == ["web", "1/2", 2, 1]


def _event(name: str, involved: str, uid: str, reason: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": "default"},
            "involvedObject": {"kind": "Widget", "name": involved, "namespace": "default", "uid": uid},
            "reason": reason, "message": f"{reason} happened", "type": "Normal"}


def test_event_field_selectors_as_kubectl_describe_sends_them(kube: KubeEmulator) -> None:
    kube.create(_event("a.1", "w1", "u1", "Created"))
    kube.create(_event("b.1", "w2", "u2", "Scaled"))
    selector = "involvedObject.name%3Dw1%2CinvolvedObject.namespace%3Ddefault%2CinvolvedObject.kind%3DWidget%2CinvolvedObject.uid%3Du1"
    events = get(kube, f"/api/v1/namespaces/default/events?fieldSelector={selector}&limit=500")["items"]
    assert [e["reason"] for e in events] == ["Created"]
    assert [e["reason"] for e in get(kube, "/api/v1/events?fieldSelector=reason!%3DCreated")["items"]] == ["Scaled"]
    table = get(kube, "/api/v1/namespaces/default/events", TABLE)
    assert [c["name"] for c in table["columnDefinitions"]] == ["Last Seen", "Type", "Reason", "Object", "Message", "Name"]
    assert table["rows"][0]["cells"][1:5] == ["Normal", "Created", "Widget/w1", "Created happened"]
    status, body = call(kube, "GET", "/api/v1/namespaces/default/configmaps?fieldSelector=data.x%3D1")
    assert status == 400 and "field label not supported" in body["message"]


def test_human_age_matches_kubectl() -> None:
    now = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    ago = lambda **kw: (now - datetime.timedelta(**kw)).isoformat().replace("+00:00", "Z")  # noqa: E731
    assert [human_age(ago(seconds=45), now), human_age(ago(seconds=200), now), human_age(ago(minutes=90), now),
            human_age(ago(hours=5, minutes=3), now), human_age(ago(days=3), now)] == ["45s", "3m20s", "90m", "5h3m", "3d"]


def _pb(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


def test_protobuf_bodies_of_other_kinds_are_415_with_advice(kube: KubeEmulator) -> None:
    """kubectl 1.32 sends protobuf for `kubectl create deployment` too; the emulator says what to do instead."""
    body = b"k8s\x00" + _pb(1, _pb(1, b"apps/v1") + _pb(2, b"Deployment"))
    req = urllib.request.Request(kube.url + "/apis/apps/v1/namespaces/default/deployments", data=body, method="POST",
                                 headers={"Content-Type": "application/vnd.kubernetes.protobuf"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 415 and "kubectl apply -f" in json.loads(err.value.read())["message"]
