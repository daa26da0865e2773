"""Every object rendered from every example passes the official Kubernetes schemas (strict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.schemas import NEWEST_K8S, OLDEST_K8S, UPSTREAM_CRDS, is_upstream_custom, require_upstream, validate_k8s
from tests.unit.operator.conftest import EXAMPLES, load_example, render


def _renders(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Steady state, cache pending, and without optional APIs: every shape the operator writes."""
    return render(obj) + render(obj, serving_cache_key=None) + render(obj, monitoring_api=False, keda_api=False)


@pytest.mark.parametrize("version", [OLDEST_K8S, NEWEST_K8S])
@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_builtin_kinds_pass_strict_schema(path: Path, version: str) -> None:
    for child in _renders(load_example(path)):
        if not is_upstream_custom(child):
            validate_k8s(child, version)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_servicemonitor_and_scaledobject_pass_upstream_crds(path: Path) -> None:
    customs = [c for c in _renders(load_example(path)) if is_upstream_custom(c)]
    require_upstream(*sorted({UPSTREAM_CRDS[(c["apiVersion"], c["kind"])] for c in customs}))
    for child in customs:
        validate_k8s(child, NEWEST_K8S)


def test_every_custom_kind_is_covered() -> None:
    kinds = {c["kind"] for p in EXAMPLES for c in render(load_example(p)) if is_upstream_custom(c)}
    assert kinds == {"ServiceMonitor", "PrometheusRule", "ScaledObject"}


def test_a_wrong_field_is_caught() -> None:
    """The check itself can fail: a typo the API server would reject is rejected here too."""
    deployment = next(c for c in render(load_example(EXAMPLES[0])) if c["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(Exception, match="imagePullPolicyy"):
        validate_k8s(deployment, NEWEST_K8S)
