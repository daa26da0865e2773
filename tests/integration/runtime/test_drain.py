"""Start-up readiness and SIGTERM drain on a real runtime of its own (it exits during the test)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.runtime.conftest import SERVED_NAME, start_runtime_server, wait_until_ready

pytestmark = pytest.mark.engine


def test_ready_tells_the_truth_and_sigterm_drains(tiny_model_dir: Path, tmp_path: Path) -> None:
    server = start_runtime_server(tiny_model_dir, ["--drain-timeout", "60", "--", "--enforce-eager"],
                                  log_path=tmp_path / "server.log", wait_ready=False)
    try:
        # While the engine loads: liveness answers, readiness and the API refuse with 503.
        seen_loading = False
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not seen_loading:
            try:
                health = httpx.get(server.base_url + "/health", timeout=2)
                ready = httpx.get(server.base_url + "/ready", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            if health.status_code == 200 and ready.status_code == 503:
                seen_loading = True
                r = httpx.post(server.base_url + "/v1/completions", json={"model": SERVED_NAME, "prompt": "x"})
                assert r.status_code == 503 and "retry-after" in r.headers
                assert r.json()["error"]["code"] == "model_loading"
        assert seen_loading
        wait_until_ready(server)

        # An in-flight stream, then SIGTERM.
        lines: list[str] = []
        first_chunk = threading.Event()

        def stream() -> None:
            with httpx.stream("POST", server.base_url + "/v1/completions", timeout=120, json={
                    "model": SERVED_NAME, "prompt": "drain me", "max_tokens": 400, "ignore_eos": True,
                    "stream": True}) as r:
                for line in r.iter_lines():
                    if line:
                        lines.append(line)
                        first_chunk.set()

        reader = threading.Thread(target=stream)
        reader.start()
        assert first_chunk.wait(60)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert httpx.get(server.base_url + "/ready").status_code == 503
        assert httpx.get(server.base_url + "/health").status_code == 200
        refused = httpx.post(server.base_url + "/v1/completions", json={"model": SERVED_NAME, "prompt": "x"})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "server_draining"
        assert "retry-after" in refused.headers
        reader.join(120)
        assert lines[-1] == "data: [DONE]"
        assert sum(1 for line in lines if '"text"' in line) >= 400 - 5  # the whole stream arrived
        assert server.proc.wait(60) == 0
    finally:
        server.stop()
