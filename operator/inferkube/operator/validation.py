"""Check an InferenceService the way the API server would: structural schema, unknown fields, CEL rules.

Used by ``inferkube validate`` and by the tests. Every problem is reported with its field path, not
only the first.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import celpy
import jsonschema
from pydantic import BaseModel, ValidationError

from inferkube.api import contract
from inferkube.api.quota import InferenceQuotaSpec
from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator.crd import build_crd, build_quota_crd

SPEC_MODELS: dict[str, type[BaseModel]] = {contract.KIND: InferenceServiceSpec, contract.QUOTA_KIND: InferenceQuotaSpec}


@dataclass(frozen=True)
class Problem:
    """One reason the API server would reject the object."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@lru_cache(maxsize=2)
def crd_schema(kind: str = contract.KIND) -> dict[str, Any]:
    """The openAPIV3Schema of a generated CRD (one source with crds/)."""
    crd = build_quota_crd() if kind == contract.QUOTA_KIND else build_crd()
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@lru_cache(maxsize=256)
def _program(rule: str) -> Any:
    """A compiled CEL program (compiling is the slow part)."""
    env = celpy.Environment()
    return env.program(env.compile(rule))


def _path(parts: Any) -> str:
    """jsonschema's deque path as a dotted field path."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out or "."


def _unknown_fields(value: Any, schema: dict[str, Any], path: str) -> Iterator[Problem]:
    """Fields the structural schema does not know (the API server would prune or, strict, reject them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return
    if isinstance(value, dict) and "properties" in schema:
        for key, item in value.items():
            if key not in schema["properties"]:
                yield Problem(f"{path}.{key}", "unknown field")
            else:
                yield from _unknown_fields(item, schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _unknown_fields(item, schema["items"], f"{path}[{index}]")


def _cel(value: Any, old: Any, schema: dict[str, Any], path: str) -> Iterator[Problem]:
    """Evaluate every x-kubernetes-validations rule that applies to value (and old, for transition rules)."""
    for rule in schema.get("x-kubernetes-validations", []):
        expression = rule["rule"]
        if "oldSelf" in expression and old is None:
            continue  # transition rules only run on updates
        activation = {"self": celpy.json_to_cel(value)}
        if old is not None:
            activation["oldSelf"] = celpy.json_to_cel(old)
        try:
            ok = bool(_program(expression).evaluate(activation))
        except celpy.CELEvalError as exc:
            ok, detail = False, f" (rule error: {exc.args[0] if exc.args else exc})"
        else:
            detail = ""
        if not ok:
            where = path + rule.get("fieldPath", "")
            yield Problem(where or ".", rule.get("message", f"failed rule {expression}") + detail)
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                old_sub = old.get(key) if isinstance(old, dict) else None
                yield from _cel(value[key], old_sub, sub, f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _cel(item, None, schema["items"], f"{path}[{index}]")


def validate_object(obj: Any, old: dict[str, Any] | None = None) -> list[Problem]:
    """Every problem the API server (and the operator's parser) would find in an InferenceService or InferenceQuota."""
    if not isinstance(obj, dict):
        return [Problem(".", "an InferenceService must be a YAML mapping")]
    expected = f"{contract.GROUP}/{contract.VERSION}"
    problems: list[Problem] = []
    if obj.get("apiVersion") != expected:
        problems.append(Problem(".apiVersion", f"must be {expected}, got {obj.get('apiVersion')!r}"))
    kind = obj.get("kind")
    if kind not in SPEC_MODELS:
        problems.append(Problem(".kind", f"must be {' or '.join(SPEC_MODELS)}, got {kind!r}"))
    if problems:
        return problems
    schema = crd_schema(str(kind))
    validator = jsonschema.Draft4Validator(schema)
    problems += [Problem(_path(e.absolute_path), e.message) for e in validator.iter_errors(obj)]
    problems += list(_unknown_fields(obj, schema, ""))
    name = (obj.get("metadata") or {}).get("name")
    if not name:
        problems.append(Problem(".metadata.name", "required"))
    problems += list(_cel(obj, old, schema, ""))
    if not problems:
        try:
            SPEC_MODELS[str(kind)].model_validate(obj.get("spec") or {})
        except ValidationError as exc:
            for err in exc.errors():
                problems.append(Problem(".spec" + _path(err["loc"]), err["msg"]))
    return problems
