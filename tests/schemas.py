"""Validate objects the way the real API server would: official Kubernetes schemas and upstream CRDs."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

OLDEST_K8S = "1.29.0"
NEWEST_K8S = kubernetes_validate.latest_version()
SHARED_SCHEMAS = Path(__file__).resolve().parents[2] / "shared" / "schemas"
UPSTREAM_CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
}


def is_upstream_custom(obj: dict[str, Any]) -> bool:
    """True for kinds whose schema comes from ../shared/schemas rather than Kubernetes itself."""
    return (obj["apiVersion"], obj["kind"]) in UPSTREAM_CRDS


def _openapi_to_jsonschema(node: Any) -> Any:
    """CRD openAPIV3Schema -> JSON schema: int-or-string and nullable made explicit."""
    if isinstance(node, list):
        return [_openapi_to_jsonschema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes")}
    pattern = out.get("pattern")
    if isinstance(pattern, str) and pattern.startswith("^(?i)"):
        out["pattern"] = "(?i)^" + pattern[len("^(?i)"):]  # Go allows inline flags anywhere; Python wants them first
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in node:
        out["additionalProperties"] = False  # strict: unknown fields are errors
    return out


@cache
def upstream_schema(api_version: str, kind: str) -> dict[str, Any]:
    """JSON schema of an upstream CRD version from ../shared/schemas."""
    crd = yaml.safe_load((SHARED_SCHEMAS / UPSTREAM_CRDS[(api_version, kind)]).read_text())
    version = api_version.split("/")[1]
    for v in crd["spec"]["versions"]:
        if v["name"] == version:
            return _openapi_to_jsonschema(v["schema"]["openAPIV3Schema"])
    raise KeyError(f"{api_version} {kind} not in {UPSTREAM_CRDS[(api_version, kind)]}")


def validate_k8s(obj: dict[str, Any], version: str) -> None:
    """Raise when the official schema (strict: unknown fields fail) or an upstream CRD rejects obj."""
    if is_upstream_custom(obj):
        jsonschema.validate(obj, upstream_schema(obj["apiVersion"], obj["kind"]))
        return
    kubernetes_validate.validate(obj, version, strict=True)
