"""OpenAPI v3 for kubectl: the `/openapi/v3` index and one document per group-version.

Built-in kinds get the official schemas that kubernetes-validate ships (turned back into OpenAPI 3 components);
custom resources get their CRD version's openAPIV3Schema with `metadata` pointing at ObjectMeta, as on a real
API server. kubectl reads these for `explain` and to learn that PATCH accepts `fieldValidation` (so `apply`
sends `fieldValidation=Strict` and the emulator rejects unknown fields, as a real server does).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from importlib import resources as importlib_resources
from typing import Any

from .resources import Registry, Resource
from .validation import KUBERNETES_VERSION

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_REF_PREFIX = "#/components/schemas/"
_WRITE_PARAMS = ("dryRun", "fieldManager", "fieldValidation")


@functools.cache
def _builtin_components() -> dict[str, Any]:
    """Every definition of the official (non-strict) schemas as an OpenAPI 3 component."""
    path = f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local/_definitions.json"
    with importlib_resources.files("kubernetes_validate").joinpath(path).open() as fh:
        defs = json.load(fh)["$defs"]
    return {name: _to_openapi(node) for name, node in defs.items()}


def _to_openapi(node: Any) -> Any:
    """JSON Schema (kubernetes-json-schema flavour) -> OpenAPI 3.0 schema as kube-openapi writes it."""
    if isinstance(node, list):
        return [_to_openapi(n) for n in node]
    if not isinstance(node, dict):
        return node
    is_ref = isinstance(node.get("$ref"), str)  # (a properties map may hold a field named $ref)
    out = {k: _to_openapi(v) for k, v in node.items() if not (is_ref and k == "$ref")}
    if isinstance(out.get("type"), list):
        kinds = [t for t in out["type"] if t != "null"]
        out.pop("type")
        if len(kinds) == 1:
            out["type"] = kinds[0]
    if isinstance(out.get("oneOf"), list) and all(set(b) <= {"type"} for b in out["oneOf"]):  # int-or-string, quantity
        kinds = [b.get("type") for b in out.pop("oneOf")]
        out["type"] = "string"
        if "integer" in kinds:
            out["format"] = "int-or-string"
    if is_ref:
        ref = {"$ref": _REF_PREFIX + node["$ref"].rsplit("/", 1)[-1]}
        if not out:
            return ref
        out["allOf"] = [ref]  # a $ref with siblings, the way kube-openapi writes v3
    return out


@functools.cache
def _builtin_by_gvk() -> dict[tuple[str, str, str], str]:
    """(group, version, kind) -> component name, for definitions that describe exactly one kind."""
    out: dict[tuple[str, str, str], str] = {}
    for name, node in _builtin_components().items():
        gvks = node.get("x-kubernetes-group-version-kind") or []
        if len(gvks) == 1:
            out[(gvks[0]["group"], gvks[0]["version"], gvks[0]["kind"])] = name
    return out


def _referenced(node: Any, found: set[str]) -> None:
    """Collect every component name referenced below a node."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
            found.add(ref[len(_REF_PREFIX):])
        for value in node.values():
            _referenced(value, found)
    elif isinstance(node, list):
        for value in node:
            _referenced(value, found)


def _closure(roots: dict[str, Any]) -> dict[str, Any]:
    """The roots plus every built-in component they reference, transitively."""
    out = dict(roots)
    todo: set[str] = set()
    for node in roots.values():
        _referenced(node, todo)
    builtins = _builtin_components()
    while todo:
        name = todo.pop()
        if name in out or name not in builtins:
            continue
        out[name] = builtins[name]
        _referenced(out[name], todo)
    return out


def component_name(res: Resource) -> str:
    """The component name of a kind: reversed group, version, kind (as apiextensions-apiserver names it)."""
    if not res.crd_name:
        return _builtin_by_gvk().get((res.group, res.version, res.kind), "")
    return ".".join([*reversed(res.group.split(".")), res.version, res.kind])


def _crd_component(res: Resource) -> dict[str, Any]:
    """A CRD version's schema as a component: metadata is ObjectMeta, the kind is tagged with its GVK."""
    schema = copy.deepcopy(res.schema) or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    props = schema.setdefault("properties", {})
    props["metadata"] = {
        "description": "Standard object's metadata. More info: "
        "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
        "allOf": [{"$ref": _REF_PREFIX + OBJECT_META}],
    }
    for key, what in (("apiVersion", "versioned schema of this representation"), ("kind", "REST resource")):
        props.setdefault(key, {"type": "string", "description": f"{key}: the {what} of this object."})
    schema["x-kubernetes-group-version-kind"] = [{"group": res.group, "version": res.version, "kind": res.kind}]
    return schema


def _operation(res: Resource, action: str, ref: str, params: tuple[str, ...] = ()) -> dict[str, Any]:
    """One operation, tagged with the kind's GVK the way kubectl's query-param verifier looks for it."""
    return {
        "operationId": f"{action}{res.kind}",
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": res.group, "version": res.version, "kind": res.kind},
        "parameters": [{"name": p, "in": "query", "schema": {"type": "string"}} for p in params],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ref}}}}},
    }


def _paths(res: Resource) -> dict[str, Any]:
    """The collection, object and subresource paths of one resource."""
    prefix = f"/apis/{res.group}/{res.version}" if res.group else "/api/v1"
    base = f"{prefix}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else f"{prefix}/{res.plural}"
    ref = _REF_PREFIX + component_name(res)
    obj = {
        "get": _operation(res, "get", ref),
        "put": _operation(res, "put", ref, _WRITE_PARAMS),
        "patch": _operation(res, "patch", ref, (*_WRITE_PARAMS, "force")),
        "delete": _operation(res, "delete", ref, ("dryRun",)),
    }
    paths = {base: {"get": _operation(res, "list", ref), "post": _operation(res, "post", ref, _WRITE_PARAMS)},
             f"{base}/{{name}}": obj}
    if res.status:
        paths[f"{base}/{{name}}/status"] = {k: obj[k] for k in ("get", "put", "patch")}
    return paths


def gv_document(registry: Registry, group: str, version: str) -> tuple[dict[str, Any], str] | None:
    """The OpenAPI 3 document of one group-version and its content hash, or None when nothing is served there."""
    items = tuple(sorted((r for r in registry.by_gvp.values() if r.group == group and r.version == version),
                         key=lambda r: r.plural))
    if not items:
        return None
    if any(r.crd_name for r in items):
        doc = _document(items)
        return doc, _hash(doc)
    return _builtin_document(items)  # built-in group-versions never change: build each once


@functools.lru_cache(maxsize=64)
def _builtin_document(items: tuple[Resource, ...]) -> tuple[dict[str, Any], str]:
    doc = _document(items)
    return doc, _hash(doc)


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:32].upper()


def _document(items: tuple[Resource, ...]) -> dict[str, Any]:
    roots: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for res in items:
        name = component_name(res)
        if not name:
            continue
        roots[name] = _crd_component(res) if res.crd_name else _builtin_components()[name]
        paths.update(_paths(res))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kube-emulator)", "version": f"v{KUBERNETES_VERSION}.0"},
        "paths": paths,
        "components": {"schemas": _closure(roots)},
    }


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def index(registry: Registry) -> dict[str, Any]:
    """The /openapi/v3 discovery document: one URL per served group-version, with a content hash."""
    paths: dict[str, Any] = {}
    for group, versions in sorted(registry.groups().items()):
        for version in versions:
            found = gv_document(registry, group, version)
            if found is not None:
                path = _gv_path(group, version)
                paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={found[1]}"}
    return {"paths": paths}

