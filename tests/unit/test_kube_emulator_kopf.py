"""The emulator is good enough for kopf: a throwaway operator creates, updates and deletes through it."""

from __future__ import annotations

import os
import pathlib
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the emulator is a test-side package importable from the repo root
    sys.path.insert(0, str(ROOT))

from tests.kube_emulator import KubeEmulator  # noqa: E402
from tests.unit.test_kube_emulator import widget_crd  # noqa: E402

OPERATOR = textwrap.dedent("""
    import os

    import kopf
    import kubernetes

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_):
        settings.watching.server_timeout = 10
        settings.persistence.finalizer = "example.com/throwaway"

    @kopf.on.login()
    def login(**kwargs):
        return kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.create("example.com", "v1", "widgets")
    @kopf.on.update("example.com", "v1", "widgets")
    def make_configmap(spec, name, namespace, body, **_):
        cm = {"apiVersion": "v1", "kind": "ConfigMap",
              "metadata": {"name": f"{name}-cm", "namespace": namespace},
              "data": {"size": str(spec["size"])}}
        kopf.adopt(cm, owner=body)
        api = kubernetes.client.CoreV1Api(kubernetes.config.new_client_from_config(os.environ["KUBECONFIG"]))
        try:
            api.create_namespaced_config_map(namespace, cm)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
            api.patch_namespaced_config_map(f"{name}-cm", namespace, {"data": cm["data"]})
        kopf.info(body, reason="Configured", message="configmap written")
        return {"configmap": f"{name}-cm"}

    @kopf.on.delete("example.com", "v1", "widgets")
    def cleanup(**_):
        pass
""")


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll until check() is truthy (bounded); return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def fresh_kopf_registry() -> Iterator[None]:
    """kopf's handler registry is process-global: run the throwaway operator in a fresh one, so handlers
    other tests imported (inferkube's own) do not run here too."""
    import kopf

    previous = kopf.get_default_registry()
    kopf.set_default_registry(kopf.OperatorRegistry())
    yield
    kopf.set_default_registry(previous)


def test_kopf_operator_creates_updates_and_deletes_through_the_emulator(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, fresh_kopf_registry: None
) -> None:
    from kopf.testing import KopfRunner

    script = tmp_path / "operator.py"
    script.write_text(OPERATOR)
    with KubeEmulator() as kube:
        monkeypatch.setenv("KUBECONFIG", kube.kubeconfig())
        kube.create(widget_crd())
        started = time.monotonic()
        with KopfRunner(["run", "--standalone", "-A", "--verbose", str(script)], timeout=60) as runner:
            kube.create(
                {
                    "apiVersion": "example.com/v1",
                    "kind": "Widget",
                    "metadata": {"name": "w1", "namespace": "default"},
                    "spec": {"size": 1},
                }
            )
            cm = wait_for(lambda: kube.get("ConfigMap", "default", "w1-cm"))
            assert cm["data"] == {"size": "1"}
            owner = kube.get("Widget", "default", "w1")
            assert cm["metadata"]["ownerReferences"][0]["uid"] == owner["metadata"]["uid"]
            assert "example.com/throwaway" in owner["metadata"]["finalizers"]
            wait_for(lambda: (kube.get("Widget", "default", "w1") or {}).get("status", {}).get("make_configmap"))

            kube.patch("Widget", "default", "w1", {"spec": {"size": 2}})
            wait_for(lambda: kube.get("ConfigMap", "default", "w1-cm")["data"]["size"] == "2")

            kube.delete("Widget", "default", "w1")  # held by kopf's finalizer until the delete handler ran
            wait_for(lambda: kube.get("Widget", "default", "w1") is None)
            wait_for(lambda: kube.get("ConfigMap", "default", "w1-cm") is None)  # garbage-collected
            elapsed = time.monotonic() - started
            events = [e for e in kube.list("Event", "default") if e["reason"] == "Configured"]
        assert runner.exit_code == 0 and runner.exception is None
    assert elapsed < 10
    assert len(events) >= 1
    assert kube.validation_errors == []
    assert "Traceback" not in runner.output
    assert os.environ.get("KUBECONFIG")  # still set until monkeypatch undoes it
