"""Validation of written objects: built-ins with kubernetes-validate's strict schemas, custom resources
with the CRD's openAPIV3Schema (jsonschema), structural pruning/defaulting, and CEL rules (cel-python)."""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
from importlib import resources as importlib_resources
from typing import Any

import celpy
import jsonschema
from referencing import Registry, Resource

try:  # the Rust validator is ~1000x faster; the pure-Python one is the fallback
    import jsonschema_rs
except ImportError:  # pragma: no cover - depends on the environment
    jsonschema_rs = None

KUBERNETES_VERSION = "1.32"  # also what /version reports (a version-matching kubectl picks its client by it)
_SCHEMA_DIR = f"kubernetes-json-schema/v{KUBERNETES_VERSION}.0-local-strict"


class Invalid(Exception):
    """An object the real API server would reject (HTTP 422)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _load(name: str) -> Any:
    ref = importlib_resources.files("kubernetes_validate").joinpath(f"{_SCHEMA_DIR}/{name}")
    with ref.open() as fh:
        return json.load(fh)


@functools.cache
def _registry() -> Registry:
    return Resource.from_contents(_load("_definitions.json")) @ Registry()


class _Checker:
    """A compiled schema: `first_error(obj)` returns (path, message) of one violation, or None."""

    def __init__(self, schema: dict[str, Any], registry: Registry | None = None) -> None:
        self.fast = None
        if jsonschema_rs is not None:
            self.fast = jsonschema_rs.Draft202012Validator(schema)
        else:
            self.slow = jsonschema.validators.Draft202012Validator(schema, registry=registry or Registry())

    def first_error(self, obj: Any) -> tuple[str, str] | None:
        """One violation of the schema (the best match), or None when the object is valid."""
        if self.fast is not None:
            if self.fast.is_valid(obj):
                return None
            err = next(iter(self.fast.iter_errors(obj)))
            return ".".join(str(p) for p in err.instance_path) or "<root>", err.message
        best = jsonschema.exceptions.best_match(self.slow.iter_errors(obj))
        if best is None:
            return None
        return ".".join(str(p) for p in best.absolute_path) or "<root>", best.message


@functools.cache
def _definitions() -> dict[str, Any]:
    return _load("_definitions.json")


@functools.cache
def _builtin_validator(api_version: str, kind: str) -> _Checker | None:
    api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    try:
        schema = _load(f"{kind.lower()}-{api}.json")
    except FileNotFoundError:
        return None
    if jsonschema_rs is not None:  # inline the shared definitions so the Rust validator needs no registry
        schema = json.loads(json.dumps(schema).replace('"/api/_definitions.json#', '"#'))
        schema["$defs"] = _definitions()["$defs"]
        return _Checker(schema)
    return _Checker(schema, Resource.from_contents(schema) @ _registry())


def validate_builtin(obj: dict[str, Any]) -> None:
    """Validate a built-in object in strict mode (unknown fields rejected); raise Invalid."""
    checker = _builtin_validator(obj.get("apiVersion", ""), obj.get("kind", ""))
    if checker is None:
        return
    err = checker.first_error(obj)
    if err is not None:
        raise Invalid(
            f"{obj.get('kind')} {obj.get('metadata', {}).get('name')!r} is invalid: "
            f"{err[0]}: {err[1]} (kubernetes {KUBERNETES_VERSION}, strict)"
        )


# ---------------------------------------------------------------- custom resources

_DROP = {
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-embedded-resource",
    "nullable",
    "default",
}


def to_json_schema(node: Any) -> Any:
    """Convert an openAPIV3Schema node to plain JSON Schema (int-or-string, nullable; extensions dropped)."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if k not in _DROP}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def prune_and_default(obj: Any, schema: dict[str, Any], path: str, pruned: list[str]) -> Any:
    """Drop fields the structural schema does not know (recording their paths) and apply defaults."""
    if obj is None or not isinstance(schema, dict):
        return obj
    if isinstance(obj, dict):
        props = schema.get("properties")
        addl = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        if props is not None:
            for key, sub in props.items():
                if key not in obj and isinstance(sub, dict) and "default" in sub:
                    obj[key] = copy.deepcopy(sub["default"])
        for key in list(obj):
            if props is not None and key in props:
                obj[key] = prune_and_default(obj[key], props[key], f"{path}.{key}", pruned)
            elif isinstance(addl, dict):
                obj[key] = prune_and_default(obj[key], addl, f"{path}.{key}", pruned)
            elif preserve or addl is True or (props is None and addl is None and schema.get("type") != "object"):
                continue
            elif schema.get("x-kubernetes-embedded-resource") and key in ("apiVersion", "kind", "metadata"):
                continue
            else:
                pruned.append(f"{path}.{key}")
                del obj[key]
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        return [prune_and_default(i, schema["items"], f"{path}[{n}]", pruned) for n, i in enumerate(obj)]
    return obj


_CEL_ENV = celpy.Environment()
# cel-python logs every evaluation step at DEBUG; under `kopf --verbose` that costs more than the evaluation.
logging.getLogger("celpy").setLevel(logging.WARNING)


@functools.cache
def _cel_program(rule: str) -> Any:
    return _CEL_ENV.program(_CEL_ENV.compile(rule))


_SELF_KEY = re.compile(r"\bself\.(\w+)\b(?!\s*\()")
_SELF_WHOLE = re.compile(r"\bself\b(?!\.\w)|\bself\.\w+\s*\(")
_OLD_KEY = re.compile(r"\boldSelf\.(\w+)\b(?!\s*\()")
_OLD_WHOLE = re.compile(r"\boldSelf\b(?!\.\w)|\boldSelf\.\w+\s*\(")


def _visible(value: Any, expr: str, key_re: re.Pattern[str], whole_re: re.Pattern[str]) -> Any:
    """Only the top-level keys a rule can read (CEL is pure, so this changes no result, only cost)."""
    if isinstance(value, dict) and not whole_re.search(expr):
        keys = set(key_re.findall(expr))
        return {k: v for k, v in value.items() if k in keys}
    return value


@functools.lru_cache(maxsize=20000)
def _evaluate(expr: str, self_json: str, old_json: str | None) -> str | None:
    """Evaluate one rule on JSON-encoded values: None when it holds, else why not ('' for plain false)."""
    act: dict[str, Any] = {"self": celpy.json_to_cel(json.loads(self_json))}
    if old_json is not None:
        act["oldSelf"] = celpy.json_to_cel(json.loads(old_json))
    try:
        ok = _cel_program(expr).evaluate(act)
    except Exception as exc:  # noqa: BLE001 - any evaluation failure is a rejection, like the API server
        return f"rule evaluation error: {expr}: {exc}"
    if isinstance(ok, celpy.CELEvalError):
        return f"rule evaluation error: {expr}: {ok.args[0] if ok.args else ok}"
    return None if bool(ok) else ""


def _cel_rules(obj: Any, old: Any, has_old: bool, schema: Any, path: str, errors: list[str]) -> None:
    if not isinstance(schema, dict) or obj is None:
        return
    if has_old and obj == old:
        return  # validation ratcheting (Kubernetes >= 1.30): an unchanged value is not re-validated
    for rule in schema.get("x-kubernetes-validations", ()):
        expr = rule["rule"]
        uses_old = "oldSelf" in expr
        if uses_old and not has_old:
            continue  # transition rules run on updates only, where the old value exists
        self_json = json.dumps(_visible(obj, expr, _SELF_KEY, _SELF_WHOLE), sort_keys=True)
        old_json = json.dumps(_visible(old, expr, _OLD_KEY, _OLD_WHOLE), sort_keys=True) if uses_old else None
        why = _evaluate(expr, self_json, old_json)
        if why is not None:
            where = path + (rule.get("fieldPath") or "")
            message = why or rule.get("message") or f"failed rule: {expr}"
            errors.append(f"{where}: Invalid value: {message}")
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        addl = schema.get("additionalProperties")
        for key, value in obj.items():
            sub = props.get(key, addl if isinstance(addl, dict) else None)
            if sub is not None:
                old_has = has_old and isinstance(old, dict) and key in old
                _cel_rules(value, old.get(key) if old_has else None, old_has, sub, f"{path}.{key}", errors)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for n, item in enumerate(obj):
            _cel_rules(item, None, False, schema["items"], f"{path}[{n}]", errors)


_CRD_CHECKERS: dict[int, tuple[dict[str, Any], _Checker]] = {}


def _crd_validator(schema: dict[str, Any]) -> _Checker:
    """The compiled checker of a CRD version's schema (cached per schema object)."""
    hit = _CRD_CHECKERS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    converted = to_json_schema(schema)
    props = converted.setdefault("properties", {})
    for key in ("apiVersion", "kind", "metadata"):
        props[key] = {}
    checker = _Checker(converted)
    _CRD_CHECKERS[id(schema)] = (schema, checker)
    return checker


def validate_custom(
    obj: dict[str, Any], old: dict[str, Any] | None, schema: dict[str, Any] | None, strict_fields: bool
) -> list[str]:
    """Prune/default `obj` in place, then validate schema and CEL rules; return pruned field paths.

    Raises Invalid on a schema or CEL failure, or on unknown fields when `strict_fields`
    (the request's `fieldValidation=Strict`).
    """
    if not schema:
        return []
    pruned: list[str] = []
    meta = obj.get("metadata")
    body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    sch = {
        **schema,
        "properties": {
            k: v for k, v in (schema.get("properties") or {}).items() if k not in ("apiVersion", "kind", "metadata")
        },
    }
    body = prune_and_default(body, sch, "", pruned)
    if pruned and strict_fields:
        raise Invalid(
            f"{obj.get('kind')} {meta.get('name') if meta else ''!r}: unknown field(s): "
            + ", ".join(p.lstrip(".") for p in pruned)
        )
    for key in list(obj):
        if key not in ("apiVersion", "kind", "metadata"):
            del obj[key]
    obj.update(body)
    err = _crd_validator(schema).first_error(obj)
    if err is not None:
        raise Invalid(f"{obj.get('kind')} {obj.get('metadata', {}).get('name')!r} is invalid: {err[0]}: {err[1]}")
    errors: list[str] = []
    old_body = {k: v for k, v in (old or {}).items() if k not in ("apiVersion", "kind", "metadata")}
    # Root-level rules may read metadata.name and metadata.generateName (as on a real API server).
    visible_meta = {k: v for k, v in (meta or {}).items() if k in ("name", "generateName")}
    old_meta = {k: v for k, v in ((old or {}).get("metadata") or {}).items() if k in ("name", "generateName")}
    _cel_rules({**body, "metadata": visible_meta}, {**old_body, "metadata": old_meta}, old is not None, sch, "", errors)
    if errors:
        raise Invalid(
            f"{obj.get('kind')} {obj.get('metadata', {}).get('name')!r} is invalid: "
            + "; ".join(e.lstrip(".") for e in errors)
        )
    return [p.lstrip(".") for p in pruned]
