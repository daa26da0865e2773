"""Fixtures for operator unit tests: the examples, parsed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from inferkube.operator.inputs import Observed
from inferkube.operator.names import cache_key
from inferkube.operator.parse import parse_service
from inferkube.operator.render import render_children
from inferkube.operator.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[3]
ALL_EXAMPLES = sorted((REPO / "manifests" / "examples").glob("*.yaml"))
# InferenceService examples render children; the InferenceQuota examples are checked in test_quota_api.py.
EXAMPLES = [p for p in ALL_EXAMPLES if yaml.safe_load(p.read_text()).get("kind") == "InferenceService"]
QUOTA_EXAMPLES = [p for p in ALL_EXAMPLES if yaml.safe_load(p.read_text()).get("kind") == "InferenceQuota"]


def load_example(path: Path) -> dict[str, Any]:
    """The single InferenceService document of an example file."""
    return yaml.safe_load(path.read_text())


def render(obj: dict[str, Any], **observed: Any) -> list[dict[str, Any]]:
    """Children of obj in steady state (cache ready) unless observed says otherwise."""
    spec, meta = parse_service(obj)
    observed.setdefault("serving_cache_key", cache_key(spec))
    return [c.body for c in render_children(spec, meta, OperatorSettings(), Observed(**observed))]


def by_kind(children: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Children keyed by kind (one per kind in our renders)."""
    return {c["kind"]: c for c in children}


@pytest.fixture(params=EXAMPLES, ids=[p.stem for p in EXAMPLES])
def example(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each example InferenceService."""
    return load_example(request.param)
