"""Start the real runtime (real vLLM on the CPU, tiny model built at test time) as a subprocess.

Reusable by other test packages:
    from tests.integration.runtime.conftest import start_runtime_server   (or the fixtures below)
    server = start_runtime_server(model_dir, ["--max-in-flight", "4"], log_path=tmp / "server.log")
    ... server.base_url ...   server.stop()  # SIGTERM by PID, returns the exit code
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from inferkube.runtime.tinymodel import build_tiny_model

SERVED_NAME = "tiny"
MAIN_KEY = "sk-main-CANARYKEY-0123456789"
LIMITED_KEY = "sk-limited-4567"
TINY_TPM_KEY = "sk-tinytpm-8901"
OVERLIMIT_KEY = "sk-overlimit-2345"
PROMPT_CANARY = "PROMPTCANARY-7f3a9"
ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RuntimeServer:
    """A running `inferkube-runtime serve` subprocess."""

    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        """Everything the server wrote to stdout/stderr so far."""
        return self.log_path.read_text(errors="replace")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` on /metrics that carry all of `labels`."""
        text = httpx.get(self.base_url + "/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(name):
                continue
            head, _, value = line.rpartition(" ")
            metric_name = head.split("{", 1)[0]
            if metric_name != name or any(f'{k}="{v}"' not in head for k, v in labels.items()):
                continue
            total += float(value)
        return total

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 120) -> int:
        """Send `sig` to the server's PID (only), wait for it to exit, and return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # Hung: kill it and the engine processes it started (by PID), so none are left behind.
                children = psutil.Process(self.proc.pid).children(recursive=True)
                self.proc.kill()
                self.proc.wait(30)
                for child in children:
                    with contextlib.suppress(psutil.Error):
                        child.kill()
        return int(self.proc.returncode)


def start_runtime_server(model_dir: Path, extra_args: list[str], *, log_path: Path,
                         env: dict[str, str] | None = None, ready_timeout: float = 300,
                         wait_ready: bool = True) -> RuntimeServer:
    """Start the runtime on a free 127.0.0.1 port with `extra_args`; wait until /ready answers 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "inferkube.runtime.cli", "serve", "--model", str(model_dir),
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port), *extra_args]
    full_env = {**os.environ, **ENGINE_ENV, **(env or {})}
    log = open(log_path, "wb")  # noqa: SIM115 - the child keeps writing to it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    server = RuntimeServer(proc, port, log_path)
    if not wait_ready:
        return server
    wait_until_ready(server, ready_timeout)
    return server


def wait_until_ready(server: RuntimeServer, ready_timeout: float = 300) -> None:
    """Poll /ready until 200 (raise with the log tail if the server exits or the time runs out)."""
    proc = server.proc
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"runtime exited with {proc.returncode}:\n{server.log_text()[-4000:]}")
        try:
            if httpx.get(server.base_url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop(timeout=30)
    raise RuntimeError(f"runtime not ready within {ready_timeout}s:\n{server.log_text()[-4000:]}")


def write_tenants_file(path: Path) -> Path:
    """A tenants file: a generous main tenant, one with 2 requests/minute, one with a tiny token budget, and one
    with 1 request/minute (for the over-the-limit tests)."""
    path.write_text(
        "tenants:\n"
        f"  - name: main\n    key: {MAIN_KEY}\n"
        f"  - name: limited\n    key: {LIMITED_KEY}\n    requestsPerMinute: 2\n"
        f"  - name: tinytpm\n    key: {TINY_TPM_KEY}\n    tokensPerMinute: 100\n"
        f"  - name: overlimit\n    key: {OVERLIMIT_KEY}\n    requestsPerMinute: 1\n"
    )
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Llama, built once per session."""
    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-model")


@pytest.fixture(scope="session")
def runtime_server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    """One real runtime for the session: auth on (tenants file), small admission bounds, in-memory limits."""
    work = tmp_path_factory.mktemp("runtime")
    tenants = write_tenants_file(work / "tenants.yaml")
    server = start_runtime_server(
        tiny_model_dir,
        ["--tenants-file", str(tenants), "--max-in-flight", "4", "--max-queued", "4", "--max-tokens-cap", "2000",
         "--max-n", "4", "--max-stop-sequences", "4", "--max-body-bytes", "65536", "--drain-timeout", "5",
         "--header-timeout", "3", "--body-timeout", "3", "--", "--enforce-eager"],
        log_path=work / "server.log")
    yield server
    server.stop()
