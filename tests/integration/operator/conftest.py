"""Run the real operator (kopf's KopfRunner) against the local Kubernetes API emulator."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kopf.testing import KopfRunner

from inferkube.operator.crd import build_crd, build_quota_crd
from tests.kube_emulator import KubeEmulator
from tests.schemas import require_upstream, upstream_crd

__all__ = ["require_upstream", "upstream_crd"]  # tests import them from here with the other helpers

REPO = Path(__file__).resolve().parents[3]
T = TypeVar("T")
NS = "llm"


def wait_for(fn: Callable[[], T], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll fn until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except (KeyError, TypeError, IndexError):
            last = None
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s; last value {last!r}")


def isvc(name: str = "demo", **spec: Any) -> dict[str, Any]:
    """A small InferenceService in the test namespace."""
    body = {
        "apiVersion": "serving.inferkube.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS, "labels": {"app.kubernetes.io/instance": "argo-app"}},
        "spec": {"model": {"source": "hf://org/tiny", "revision": "r1"}, "replicas": 2, **spec},
    }
    return copy.deepcopy(body)


def condition(obj: dict[str, Any] | None, ctype: str) -> dict[str, Any] | None:
    """A status condition by type."""
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c
    return None


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> Iterator[KubeEmulator]:
    """An emulator with our CRD and the test namespace; KUBECONFIG points at it."""
    with KubeEmulator(namespaces=("default", NS)) as emulator:
        monkeypatch.setenv("KUBECONFIG", emulator.kubeconfig())
        emulator.create(build_crd())
        emulator.create(build_quota_crd())
        yield emulator


def start_operator(extra: list[str] | None = None) -> KopfRunner:
    """The real operator, as `inferkube-operator` runs it (standalone, all namespaces)."""
    return KopfRunner(
        ["run", "--standalone", "-A", "-m", "inferkube.operator.handlers", *(extra or [])], timeout=60
    )


@pytest.fixture
def operator(kube: KubeEmulator) -> Iterator[KopfRunner]:
    """A running operator; asserts a clean exit and no invalid body sent to the API."""
    with start_operator() as runner:
        yield runner
    assert runner.exception is None, runner.output[-3000:]
    assert "Traceback" not in runner.output, runner.output[-5000:]
    assert kube.validation_errors == [], kube.validation_errors
