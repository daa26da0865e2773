"""Parse an InferenceService object into the API models, with messages a user can act on."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from inferkube.api.spec import InferenceServiceSpec
from inferkube.operator.inputs import ServiceMeta, SpecError


def format_validation_error(exc: ValidationError, prefix: str = "spec") -> str:
    """A pydantic error as 'spec.field.path: message; ...'."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]))
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def parse_spec(spec: Any) -> InferenceServiceSpec:
    """The spec as API models; SpecError naming every bad field."""
    try:
        return InferenceServiceSpec.model_validate(spec)
    except ValidationError as exc:
        raise SpecError(format_validation_error(exc)) from None


def parse_service(obj: dict[str, Any], default_namespace: str = "default") -> tuple[InferenceServiceSpec, ServiceMeta]:
    """(spec, meta) of a whole InferenceService object."""
    metadata = obj.get("metadata") or {}
    name = metadata.get("name")
    if not name:
        raise SpecError("metadata.name: required")
    meta = ServiceMeta(name=name, namespace=metadata.get("namespace") or default_namespace)
    return parse_spec(obj.get("spec")), meta
