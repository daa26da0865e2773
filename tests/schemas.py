"""Validate objects the way the real API server would: official Kubernetes schemas and upstream CRDs.

The upstream CRDs (Prometheus Operator, KEDA, LeaderWorkerSet) are other projects' files: they are not
copied into this repository but read from the folder named by $INFERKUBE_UPSTREAM_SCHEMAS (default:
``../shared/schemas`` beside this checkout, where it exists). Tests that need a missing file skip and
say which file it is and where to get it (docs/testing.md lists them too).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

OLDEST_K8S = "1.29.0"
NEWEST_K8S = kubernetes_validate.latest_version()
REPO = Path(__file__).resolve().parents[1]
UPSTREAM_SCHEMAS_ENV = "INFERKUBE_UPSTREAM_SCHEMAS"
_PROMETHEUS_OPERATOR = "prometheus-operator/prometheus-operator v0.93.0, example/prometheus-operator-crd/"
# file name -> where to get it: upstream repository, version, path in that repository
UPSTREAM_SOURCES = {
    "monitoring.coreos.com_servicemonitors.yaml": _PROMETHEUS_OPERATOR + "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.coreos.com_podmonitors.yaml": _PROMETHEUS_OPERATOR + "monitoring.coreos.com_podmonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml": _PROMETHEUS_OPERATOR + "monitoring.coreos.com_prometheusrules.yaml",
    "keda.sh_scaledobjects.yaml":
        "kedacore/keda commit 64d83610d69d0cf97f7c09501f7afe8e812add2f, config/crd/bases/keda.sh_scaledobjects.yaml",
    "leaderworkerset.x-k8s.io_leaderworkersets.yaml":
        "kubernetes-sigs/lws commit 87cf4a98fa30c92b5ced16f29b775ec4b93d4013, "
        "config/crd/bases/leaderworkerset.x-k8s.io_leaderworkersets.yaml",
}
UPSTREAM_CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
}


def upstream_dir() -> Path:
    """Where the upstream CRD files are read from: $INFERKUBE_UPSTREAM_SCHEMAS, else ../shared/schemas."""
    configured = os.environ.get(UPSTREAM_SCHEMAS_ENV)
    return Path(configured) if configured else REPO.parent / "shared" / "schemas"


def missing_upstream(*filenames: str) -> list[str]:
    """The upstream CRD files (of those named) that are not in upstream_dir()."""
    return [name for name in filenames if not (upstream_dir() / name).is_file()]


def require_upstream(*filenames: str) -> None:
    """Skip the calling test, naming each missing upstream file and where to get it."""
    missing = missing_upstream(*filenames)
    if missing:
        where = "; ".join(f"{name} from {UPSTREAM_SOURCES[name]}" for name in missing)
        pytest.skip(f"upstream CRD schema not in {upstream_dir()} (set ${UPSTREAM_SCHEMAS_ENV}): {where}")


def upstream_crd(filename: str) -> dict[str, Any]:
    """An upstream CustomResourceDefinition as a dict (the calling test skips when the file is missing)."""
    require_upstream(filename)
    return yaml.safe_load((upstream_dir() / filename).read_text())


def is_upstream_custom(obj: dict[str, Any]) -> bool:
    """True for kinds whose schema comes from an upstream CRD rather than Kubernetes itself."""
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
    """JSON schema of an upstream CRD version (the calling test skips when its file is missing)."""
    crd = upstream_crd(UPSTREAM_CRDS[(api_version, kind)])
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
