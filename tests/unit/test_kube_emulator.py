"""Tests of the local Kubernetes API emulator (tests/kube_emulator) through raw HTTP and the official client."""

from __future__ import annotations

import json
import pathlib
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the emulator is a test-side package importable from the repo root
    sys.path.insert(0, str(ROOT))

from tests.kube_emulator import KubeEmulator  # noqa: E402

WIDGETS = "/apis/example.com/v1/namespaces/default/widgets"


def widget_crd(scope: str = "Namespaced", plural: str = "widgets", kind: str = "Widget") -> dict[str, Any]:
    """A small CRD with status+scale subresources, defaults, int-or-string and CEL rules."""
    spec_schema = {
        "type": "object",
        "required": ["size"],
        "properties": {
            "size": {"type": "integer", "minimum": 0},
            "mode": {"type": "string", "default": "fast", "enum": ["fast", "slow"]},
            "port": {"x-kubernetes-int-or-string": True},
            "note": {"type": "string", "nullable": True},
            "replicas": {"type": "integer"},
            "gpus": {"type": "integer"},
            "tp": {"type": "integer"},
            "storage": {
                "type": "string",
                "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "storage is immutable"}],
            },
        },
        "x-kubernetes-validations": [
            {
                "rule": "!has(self.gpus) || !has(self.tp) || self.gpus % self.tp == 0",
                "message": "gpus must be a multiple of tp",
            },
        ],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.example.com"},
        "spec": {
            "group": "example.com",
            "scope": scope,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"},
                    },
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": spec_schema,
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
    }


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    """A fresh emulator with the Widget CRD installed."""
    with KubeEmulator() as emulator:
        emulator.create(widget_crd())
        yield emulator


def call(
    kube: KubeEmulator, method: str, path: str, body: Any = None, ctype: str = "application/json"
) -> tuple[int, Any]:
    """One raw HTTP request; returns (status, decoded JSON body)."""
    data = None
    if body is not None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    req = urllib.request.Request(kube.url + path, method=method, data=data, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def widget(name: str = "w1", **spec: Any) -> dict[str, Any]:
    """A Widget body."""
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": 1, **spec}}


def deployment(name: str = "web", replicas: int | None = 2, image: str = "nginx:1") -> dict[str, Any]:
    """A minimal valid Deployment."""
    spec: dict[str, Any] = {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "main", "image": image}]}},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def watch_lines(kube: KubeEmulator, path: str, timeout: float = 10) -> list[dict[str, Any]]:
    """Read a watch stream to its end (the server closes it after timeoutSeconds)."""
    with urllib.request.urlopen(kube.url + path, timeout=timeout) as resp:
        return [json.loads(line) for line in resp.read().splitlines() if line.strip()]


# ---------------------------------------------------------------- discovery and CRDs


def test_discovery_serves_builtin_groups_and_the_official_client_lists_namespaces(kube: KubeEmulator) -> None:
    groups = {g["name"] for g in call(kube, "GET", "/apis")[1]["groups"]}
    assert {
        "apps",
        "batch",
        "autoscaling",
        "policy",
        "apiextensions.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
        "example.com",
    } <= groups
    assert call(kube, "GET", "/api")[1]["versions"] == ["v1"]
    names = {r["name"] for r in call(kube, "GET", "/apis/apps/v1")[1]["resources"]}
    assert {"deployments", "deployments/status", "deployments/scale"} <= names
    core = {r["name"] for r in call(kube, "GET", "/api/v1")[1]["resources"]}
    assert {"namespaces", "configmaps", "events", "services"} <= core
    client = kubernetes.config.new_client_from_config(config_file=kube.kubeconfig())
    namespaces = kubernetes.client.CoreV1Api(client).list_namespace()
    assert [ns.metadata.name for ns in namespaces.items] == ["default"]


def test_posted_crd_is_served_then_unserved_when_deleted(kube: KubeEmulator) -> None:
    kube.create(widget_crd(scope="Cluster", plural="gadgets", kind="Gadget"))
    resources = {r["name"]: r for r in call(kube, "GET", "/apis/example.com/v1")[1]["resources"]}
    assert resources["gadgets"]["namespaced"] is False and resources["widgets"]["namespaced"] is True
    assert "widgets/status" in resources and "widgets/scale" in resources
    status, obj = call(kube, "POST", "/apis/example.com/v1/gadgets", {**widget("g1"), "kind": "Gadget"})
    assert status == 201 and "namespace" not in obj["metadata"]
    crd = kube.get("CustomResourceDefinition", None, "gadgets.example.com")
    assert (
        crd is not None and {"type": "Established", "status": "True"}.items() <= crd["status"]["conditions"][1].items()
    )
    assert call(kube, "DELETE", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/gadgets.example.com")[0] == 200
    assert call(kube, "GET", "/apis/example.com/v1/gadgets")[0] == 404
    assert call(kube, "GET", WIDGETS)[0] == 200


# ---------------------------------------------------------------- metadata, generation, concurrency


def test_metadata_generation_and_generate_name(kube: KubeEmulator) -> None:
    status, obj = call(kube, "POST", WIDGETS, {**widget(), "metadata": {"generateName": "w-"}})
    assert status == 201 and obj["metadata"]["name"].startswith("w-") and len(obj["metadata"]["name"]) > 2
    meta = obj["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    path = f"{WIDGETS}/{meta['name']}"
    _, labelled = call(kube, "PATCH", path, {"metadata": {"labels": {"a": "b"}}}, "application/merge-patch+json")
    assert labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    _, with_status = call(
        kube, "PATCH", f"{path}/status", {"status": {"phase": "Ready"}}, "application/merge-patch+json"
    )
    assert with_status["metadata"]["generation"] == 1
    _, changed = call(kube, "PATCH", path, {"spec": {"size": 5}}, "application/merge-patch+json")
    assert changed["metadata"]["generation"] == 2 and changed["metadata"]["uid"] == meta["uid"]
    rv = changed["metadata"]["resourceVersion"]
    _, same = call(kube, "PATCH", path, {"spec": {"size": 5}}, "application/merge-patch+json")
    assert same["metadata"]["resourceVersion"] == rv  # a no-op write changes nothing


def test_stale_resource_version_is_a_409_conflict(kube: KubeEmulator) -> None:
    _, obj = call(kube, "POST", WIDGETS, widget())
    stale = obj["metadata"]["resourceVersion"]
    call(kube, "PATCH", f"{WIDGETS}/w1", {"spec": {"size": 2}}, "application/merge-patch+json")
    obj["spec"]["size"] = 3
    assert call(kube, "PUT", f"{WIDGETS}/w1", obj)[0] == 409
    patch = {"metadata": {"resourceVersion": stale}, "spec": {"size": 4}}
    assert call(kube, "PATCH", f"{WIDGETS}/w1", patch, "application/merge-patch+json")[0] == 409
    assert call(kube, "DELETE", f"{WIDGETS}/w1", {"preconditions": {"resourceVersion": stale}})[0] == 409
    assert call(kube, "POST", WIDGETS, widget())[1]["reason"] == "AlreadyExists"
    assert kube.get("Widget", "default", "w1")["spec"]["size"] == 2


def test_json_patch_failed_test_op_is_422_not_500(kube: KubeEmulator) -> None:
    _, obj = call(kube, "POST", WIDGETS, widget())
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "nope"},
        {"op": "replace", "path": "/spec/size", "value": 9},
    ]
    assert call(kube, "PATCH", f"{WIDGETS}/w1", ops, "application/json-patch+json")[0] == 422
    ops[0]["value"] = obj["metadata"]["resourceVersion"]
    status, patched = call(kube, "PATCH", f"{WIDGETS}/w1", ops, "application/json-patch+json")
    assert status == 200 and patched["spec"]["size"] == 9
    assert kube.validation_errors == []  # a failed precondition is not an invalid body


# ---------------------------------------------------------------- subresources


def test_status_subresource_is_isolated_from_spec(kube: KubeEmulator) -> None:
    apps = kubernetes.client.AppsV1Api(kubernetes.config.new_client_from_config(config_file=kube.kubeconfig()))
    created = apps.create_namespaced_deployment("default", {**deployment(), "status": {"replicas": 7}})
    assert created.status is None  # status is ignored on create
    apps.patch_namespaced_deployment_status("web", "default", {"status": {"readyReplicas": 2}, "spec": {"replicas": 9}})
    dep = kube.get("Deployment", "default", "web")
    assert dep["status"] == {"readyReplicas": 2} and dep["spec"]["replicas"] == 2
    apps.patch_namespaced_deployment("web", "default", {"spec": {"replicas": 3}, "status": {"readyReplicas": 0}})
    dep = kube.get("Deployment", "default", "web")
    assert dep["status"] == {"readyReplicas": 2} and dep["spec"]["replicas"] == 3
    available = kube.mark_deployment_available("default", "web")
    assert available["status"]["availableReplicas"] == 3
    assert {c["type"]: c["status"] for c in available["status"]["conditions"]}["Available"] == "True"


def test_scale_subresource_for_deployments_and_crds(kube: KubeEmulator) -> None:
    kube.create(deployment())
    _, scale = call(kube, "GET", "/apis/apps/v1/namespaces/default/deployments/web/scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2 and scale["status"]["selector"] == "app=web"
    _, scaled = call(
        kube,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/web/scale",
        {"spec": {"replicas": 5}},
        "application/merge-patch+json",
    )
    assert scaled["spec"]["replicas"] == 5 and kube.get("Deployment", "default", "web")["spec"]["replicas"] == 5
    call(kube, "POST", WIDGETS, widget(replicas=1))
    _, wscale = call(kube, "PATCH", f"{WIDGETS}/w1/scale", {"spec": {"replicas": 4}}, "application/merge-patch+json")
    assert wscale["spec"]["replicas"] == 4 and kube.get("Widget", "default", "w1")["spec"]["replicas"] == 4


# ---------------------------------------------------------------- server-side apply


def apply(
    kube: KubeEmulator, path: str, body: dict[str, Any], manager: str = "op", force: bool = True
) -> tuple[int, Any]:
    """Server-side apply through raw HTTP."""
    query = f"?fieldManager={manager}" + ("&force=true" if force else "")
    return call(kube, "PATCH", path + query, json.dumps(body), "application/apply-patch+yaml")


def test_server_side_apply_creates_then_removes_fields_no_longer_applied(kube: KubeEmulator) -> None:
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    body = deployment()
    body["metadata"]["labels"] = {"team": "a", "tier": "web"}
    status, created = apply(kube, path, body)
    assert status == 201 and created["spec"]["replicas"] == 2
    kube.patch("Deployment", "default", "web", {"metadata": {"annotations": {"note": "by a human"}}})
    body["metadata"]["labels"] = {"team": "a"}
    status, updated = apply(kube, path, body)
    assert status == 200 and updated["metadata"]["labels"] == {"team": "a"}
    assert updated["metadata"]["annotations"] == {"note": "by a human"}  # others' fields are kept
    without_replicas = deployment(replicas=None)
    _, dropped = apply(kube, path, without_replicas)
    assert dropped["spec"]["replicas"] == 1  # nobody else owned it: removed, then defaulted like the API server


def test_server_side_apply_leaves_replicas_owned_by_the_autoscaler(kube: KubeEmulator) -> None:
    path = "/apis/apps/v1/namespaces/default/deployments/web"
    apply(kube, path, deployment(replicas=2))
    hpa_scale = f"{path}/scale?fieldManager=horizontal-pod-autoscaler"
    call(kube, "PATCH", hpa_scale, {"spec": {"replicas": 6}}, "application/merge-patch+json")
    _, after = apply(kube, path, deployment(replicas=None, image="nginx:2"))
    assert after["spec"]["replicas"] == 6
    assert after["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
    status, conflict = apply(kube, path, deployment(replicas=3), manager="other", force=False)
    assert status == 409 and "horizontal-pod-autoscaler" in conflict["message"]
    status, forced = apply(kube, path, deployment(replicas=3), manager="other", force=True)
    assert status == 200 and forced["spec"]["replicas"] == 3
    assert apply(kube, path, deployment(), manager="")[0] == 400  # fieldManager is required


# ---------------------------------------------------------------- watches


def test_watch_resumes_from_resource_version_without_replay(kube: KubeEmulator) -> None:
    call(kube, "POST", WIDGETS, widget("old"))
    _, listing = call(kube, "GET", WIDGETS)
    list_rv = listing["metadata"]["resourceVersion"]
    call(kube, "POST", WIDGETS, widget("new"))  # happens between the list and the watch: must not be lost
    call(kube, "PATCH", f"{WIDGETS}/old", {"spec": {"size": 3}}, "application/merge-patch+json")
    started = time.monotonic()
    events = watch_lines(
        kube, f"{WIDGETS}?watch=true&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion={list_rv}"
    )
    assert 0.9 <= time.monotonic() - started < 5
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in events if e["type"] != "BOOKMARK"]
    assert seen == [("ADDED", "new"), ("MODIFIED", "old")]
    last_rv = events[-1]["object"]["metadata"]["resourceVersion"]
    assert watch_lines(kube, f"{WIDGETS}?watch=true&timeoutSeconds=1&resourceVersion={last_rv}") == []
    fresh = watch_lines(kube, f"{WIDGETS}?watch=true&timeoutSeconds=1")
    assert sorted((e["type"], e["object"]["metadata"]["name"]) for e in fresh) == [("ADDED", "new"), ("ADDED", "old")]


def test_list_and_watch_selectors(kube: KubeEmulator) -> None:
    for name, labels in [("a", {"app": "x", "tier": "web"}), ("b", {"app": "y"}), ("c", {})]:
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default", "labels": labels},
            }
        )

    def names(query: str) -> list[str]:
        return [
            o["metadata"]["name"]
            for o in call(kube, "GET", f"/api/v1/namespaces/default/configmaps?{query}")[1]["items"]
        ]

    assert names("labelSelector=app%3Dx") == ["a"]
    assert names("labelSelector=app") == ["a", "b"]
    assert names("labelSelector=!app") == ["c"]
    assert names("labelSelector=app%20in%20(x,y),tier!%3Dweb") == ["b"]
    assert names("fieldSelector=metadata.name%3Db") == ["b"]
    events = watch_lines(kube, "/api/v1/configmaps?watch=true&timeoutSeconds=1&labelSelector=app%3Dy")
    assert [e["object"]["metadata"]["name"] for e in events] == ["b"]


# ---------------------------------------------------------------- deletion


def test_owner_deletion_garbage_collects_dependents(kube: KubeEmulator) -> None:
    _, owner = call(kube, "POST", WIDGETS, widget())
    ref = {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "name": "w1",
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "child", "namespace": "default", "ownerReferences": [ref]},
        }
    )
    kube.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bystander", "namespace": "default"}})
    assert call(kube, "DELETE", f"{WIDGETS}/w1")[0] == 200
    deadline = time.monotonic() + 5
    while kube.get("ConfigMap", "default", "child") is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert kube.get("ConfigMap", "default", "child") is None
    assert kube.get("ConfigMap", "default", "bystander") is not None


def test_finalizers_hold_deletion_until_removed(kube: KubeEmulator) -> None:
    call(kube, "POST", WIDGETS, {**widget(), "metadata": {"name": "w1", "finalizers": ["example.com/hold"]}})
    status, marked = call(kube, "DELETE", f"{WIDGETS}/w1")
    assert status == 200 and marked["metadata"]["deletionTimestamp"]
    assert kube.get("Widget", "default", "w1") is not None
    add = {"metadata": {"finalizers": ["example.com/hold", "other"]}}
    assert call(kube, "PATCH", f"{WIDGETS}/w1", add, "application/merge-patch+json")[0] == 422
    kube.patch("Widget", "default", "w1", {"metadata": {"finalizers": None}})
    assert kube.get("Widget", "default", "w1") is None


# ---------------------------------------------------------------- validation


def test_invalid_builtin_body_is_422_and_recorded(kube: KubeEmulator) -> None:
    body = deployment()
    body["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"  # a typo
    status, error = call(kube, "POST", "/apis/apps/v1/namespaces/default/deployments", body)
    assert status == 422 and "imagePullPolcy" in error["message"]
    assert len(kube.validation_errors) == 1
    record = kube.validation_errors[0]
    assert (record.verb, record.kind, record.name) == ("create", "Deployment", "web")
    assert (
        call(
            kube,
            "POST",
            "/api/v1/namespaces/default/services",
            {"metadata": {"name": "s"}, "spec": {"ports": [{"port": "http"}]}},
        )[0]
        == 422
    )


def test_custom_resource_schema_defaults_pruning_and_cel(kube: KubeEmulator) -> None:
    status, obj = call(kube, "POST", WIDGETS, widget(port="http", note=None, extra=1))
    assert status == 201 and obj["spec"]["mode"] == "fast" and "extra" not in obj["spec"]
    assert kube.pruned_fields == [("Widget", "default", "w1", ["spec.extra"])]
    assert call(kube, "POST", WIDGETS + "?fieldValidation=Strict", widget("w2", extra=1))[0] == 422
    assert call(kube, "POST", WIDGETS, widget("w3", size=-1))[0] == 422
    assert call(kube, "POST", WIDGETS, widget("w4", mode="medium"))[0] == 422
    status, error = call(kube, "POST", WIDGETS, widget("w5", gpus=3, tp=2))
    assert status == 422 and "gpus must be a multiple of tp" in error["message"]
    assert call(kube, "POST", WIDGETS, widget("w6", gpus=4, tp=2, storage="10Gi"))[0] == 201
    status, error = call(kube, "PATCH", f"{WIDGETS}/w6", {"spec": {"storage": "20Gi"}}, "application/merge-patch+json")
    assert status == 422 and "storage is immutable" in error["message"]
    assert call(kube, "PATCH", f"{WIDGETS}/w6", {"spec": {"size": 2}}, "application/merge-patch+json")[0] == 200
    assert [r.name for r in kube.validation_errors] == ["w2", "w3", "w4", "w5", "w6"]


# ---------------------------------------------------------------- namespaces, events, hooks


def test_missing_namespaces_are_accepted_and_events_are_posted(kube: KubeEmulator) -> None:
    status, cm = call(kube, "POST", "/api/v1/namespaces/elsewhere/configmaps", {"metadata": {"name": "x"}})
    assert status == 201 and cm["metadata"]["namespace"] == "elsewhere"
    event = {
        "metadata": {"generateName": "kopf-event-"},
        "type": "Normal",
        "reason": "Logging",
        "message": "hello",
        "involvedObject": {"kind": "Widget", "name": "w1", "namespace": "default"},
        "source": {"component": "kopf"},
        "firstTimestamp": "2026-01-01T00:00:00Z",
    }
    assert call(kube, "POST", "/api/v1/namespaces/default/events", event)[0] == 201
    new_event = {
        "metadata": {"generateName": "e-"},
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "x",
        "reportingInstance": "y",
        "action": "Made",
        "reason": "Made",
        "type": "Normal",
        "regarding": {"kind": "Widget", "name": "w1"},
    }
    assert call(kube, "POST", "/apis/events.k8s.io/v1/namespaces/default/events", new_event)[0] == 201
    assert kube.validation_errors == []


def test_fault_injection_write_log_and_reset(kube: KubeEmulator) -> None:
    fault = kube.inject(method="POST", path_regex=r"/widgets$", status=500, times=2)
    assert call(kube, "POST", WIDGETS, widget())[0] == 500
    assert call(kube, "POST", WIDGETS, widget())[0] == 500
    assert call(kube, "POST", WIDGETS, widget())[0] == 201
    assert fault.hits == 2
    kube.inject(method="PATCH", status=409, times=1)
    assert (
        call(kube, "PATCH", f"{WIDGETS}/w1?fieldManager=me", {"spec": {"size": 2}}, "application/merge-patch+json")[0]
        == 409
    )
    slow = kube.inject(method="GET", path_regex="widgets/w1$", status=None, delay=0.5)
    started = time.monotonic()
    assert call(kube, "GET", f"{WIDGETS}/w1")[0] == 200 and time.monotonic() - started >= 0.5 and slow.hits == 1
    assert [w.verb for w in kube.writes] == ["POST", "POST", "POST", "PATCH"]
    assert kube.writes[-1] == ("PATCH", f"{WIDGETS}/w1", "me")
    kube.reset_counters()
    assert kube.writes == [] and kube.requests == 0


def test_many_writes_are_fast_enough_for_the_benchmark(kube: KubeEmulator) -> None:
    started = time.monotonic()
    for n in range(200):
        body = deployment(f"web-{n}")
        apply(kube, f"/apis/apps/v1/namespaces/default/deployments/web-{n}", body)
        apply(kube, f"/apis/apps/v1/namespaces/default/deployments/web-{n}", body)  # no-op re-apply
    per_request = (time.monotonic() - started) / 400
    assert per_request < 0.02, f"{per_request * 1000:.1f} ms per apply"
    assert len(kube.list("Deployment")) == 200


async def test_usable_from_async_tests_and_put_replaces_the_object() -> None:
    import aiohttp

    async with KubeEmulator() as kube:
        kube.create(deployment())
        path = "/apis/apps/v1/namespaces/default/deployments/web"
        async with aiohttp.ClientSession() as session:
            async with session.get(kube.url + path) as resp:
                current = await resp.json()
            current["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
            current["metadata"]["labels"] = {"put": "yes"}
            async with session.put(kube.url + path, json=current) as resp:
                assert resp.status == 200
                replaced = await resp.json()
        assert replaced["metadata"]["generation"] == 2 and replaced["metadata"]["labels"] == {"put": "yes"}
        assert kube.get(path)["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:2"
        assert [w.verb for w in kube.writes] == ["PUT"]
