"""Two real replicas sharing one Redis budget: truthful readiness at start-up, a shared per-tenant limit,
fail-open (and counted) when Redis goes away, and a SIGTERM drain. The replicas exit during the module."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.runtime.conftest import (
    SERVED_NAME,
    RuntimeServer,
    start_runtime_server,
    wait_until_ready,
)
from tests.redis_server import RedisServer, needs_redis_server

pytestmark = [pytest.mark.engine, needs_redis_server]
SHARED_KEY = "sk-shared-3rpm"
TENANTS = f"tenants:\n  - name: shared\n    key: {SHARED_KEY}\n    requestsPerMinute: 3\n"
HEADERS = {"Authorization": f"Bearer {SHARED_KEY}"}
BODY = {"model": SERVED_NAME, "prompt": "x", "max_tokens": 2}


@dataclass
class Replicas:
    a: RuntimeServer
    b: RuntimeServer
    redis: RedisServer
    startup: dict[str, object]


def _wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        time.sleep(0.05)


def _observe_startup(server: RuntimeServer, timeout: float = 240) -> dict[str, object]:
    """While the engine loads: /health 200, /ready 503, the API 503 model_loading."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            health = httpx.get(server.base_url + "/health", timeout=2)
            ready = httpx.get(server.base_url + "/ready", timeout=2)
        except httpx.HTTPError:
            time.sleep(0.2)
            continue
        if ready.status_code == 200:
            return {"seen_loading": False}
        if health.status_code == 200 and ready.status_code == 503:
            r = httpx.post(server.base_url + "/v1/completions", json=BODY, headers=HEADERS, timeout=5)
            return {"seen_loading": True, "api_status": r.status_code, "api_code": r.json()["error"]["code"],
                    "retry_after": r.headers.get("retry-after")}
    raise AssertionError("server neither loading nor ready")


@pytest.fixture(scope="module")
def replicas(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    work = tmp_path_factory.mktemp("replicas")
    redis_server = RedisServer(work).start()
    tenants = work / "tenants.yaml"
    tenants.write_text(TENANTS)
    flags = ["--tenants-file", str(tenants), "--rate-limit-backend", "redis",
             "--redis-url", redis_server.url, "--rate-limit-fail-open"]
    engine = ["--", "--enforce-eager"]
    a = start_runtime_server(tiny_model_dir, [*flags, "--drain-timeout", "60", *engine], log_path=work / "a.log",
                             wait_ready=False)
    # b's drain times out: 2 sequences in flight, 2 queued, 1 s to finish (1,900 tokens take several).
    b = start_runtime_server(tiny_model_dir, [*flags, "--drain-timeout", "1", "--max-in-flight", "2",
                                              "--max-queued", "2", *engine], log_path=work / "b.log",
                             wait_ready=False)
    try:
        startup = _observe_startup(a)
        wait_until_ready(a)
        wait_until_ready(b)
        yield Replicas(a, b, redis_server, startup)
    finally:
        a.stop()
        b.stop()
        redis_server.stop()


def test_ready_is_503_while_loading_and_health_answers(replicas: Replicas) -> None:
    s = replicas.startup
    assert s["seen_loading"], "never observed the loading phase"
    assert (s["api_status"], s["api_code"]) == (503, "model_loading")
    assert s["retry_after"]


def test_two_replicas_share_one_redis_budget(replicas: Replicas) -> None:
    statuses = [httpx.post(server.base_url + "/v1/completions", json=BODY, headers=HEADERS, timeout=60).status_code
                for server in (replicas.a, replicas.b, replicas.a)]
    assert statuses == [200, 200, 200]
    for server in (replicas.b, replicas.a):
        r = httpx.post(server.base_url + "/v1/completions", json=BODY, headers=HEADERS, timeout=60)
        assert r.status_code == 429
        assert r.headers["x-ratelimit-limit-requests"] == "3"
        assert int(r.headers["retry-after"]) >= 1


def test_redis_outage_fails_open_and_is_counted(replicas: Replicas) -> None:
    before = replicas.b.metric("inferkube_ratelimit_backend_errors_total")
    replicas.redis.stop()
    r = httpx.post(replicas.b.base_url + "/v1/completions", json=BODY, headers=HEADERS, timeout=60)
    assert r.status_code == 200, r.text  # the tenant's budget was spent, but the backend is gone: fail open
    assert replicas.b.metric("inferkube_ratelimit_backend_errors_total") > before


def test_sigterm_drains_in_flight_stream_then_exits_0(replicas: Replicas) -> None:
    server = replicas.a
    lines: list[str] = []
    first_chunk = threading.Event()

    def stream() -> None:
        with httpx.stream("POST", server.base_url + "/v1/completions", headers=HEADERS, timeout=120, json={
                **BODY, "max_tokens": 1500, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}) as r:
            for line in r.iter_lines():
                if line:
                    lines.append(line)
                    first_chunk.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert first_chunk.wait(60)
    server.proc.send_signal(signal.SIGTERM)
    # Poll for the drain (no fixed sleep): the stream of 1,500 tokens keeps the server up meanwhile.
    _wait_for(lambda: httpx.get(server.base_url + "/ready").status_code == 503, 30)
    assert reader.is_alive(), "the stream ended before the drain could be observed"
    assert httpx.get(server.base_url + "/health").status_code == 200
    refused = httpx.post(server.base_url + "/v1/completions", json=BODY, headers=HEADERS)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_draining"
    assert "retry-after" in refused.headers
    reader.join(120)
    assert lines[-1] == "data: [DONE]"
    # The whole stream arrived: the engine's own count in the final usage chunk (chunks may hold several tokens).
    assert json.loads(lines[-2][len("data: "):])["usage"]["completion_tokens"] == 1500
    assert server.proc.wait(60) == 0


def test_drain_that_times_out_cuts_cleanly_and_exits_3(replicas: Replicas) -> None:
    """--drain-timeout 1 with long requests: queued ones get 503 server_draining + Retry-After, running streams
    end with an error event and [DONE], running non-streaming ones a 503 error object; no traceback; exit 3."""
    server = replicas.b
    long = {**BODY, "max_tokens": 1900, "ignore_eos": True}
    results: dict[int, object] = {}

    def call(i: int, stream: bool) -> None:
        with httpx.stream("POST", server.base_url + "/v1/completions", headers=HEADERS, timeout=120,
                          json={**long, "stream": stream}) as r:
            text = "".join(r.iter_text())
            results[i] = (r.status_code, r.headers.get("retry-after"), text)

    threads = [threading.Thread(target=call, args=(0, True)), threading.Thread(target=call, args=(1, False))]
    threads += [threading.Thread(target=call, args=(i, True)) for i in (2, 3)]  # these two wait in the queue
    for t in threads:
        t.start()
        time.sleep(0.2)  # admission order: stream, non-streaming, then the queued ones
    _wait_for(lambda: server.metric("vllm:num_requests_running") == 2 and server.metric("inferkube_queue_depth") == 2,
              60)
    server.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(120)
    status, _, text = results[0]
    events = [line for line in text.splitlines() if line.startswith("data: ")]
    assert status == 200 and events[-1] == "data: [DONE]"
    assert json.loads(events[-2][len("data: "):])["error"]["code"] == "server_draining"
    status, _, text = results[1]
    assert status == 503 and json.loads(text)["error"]["code"] == "server_draining"
    for i in (2, 3):
        status, retry_after, text = results[i]
        assert status == 503 and retry_after and json.loads(text)["error"]["code"] == "server_draining"
    assert server.proc.wait(60) == 3
    assert "Traceback" not in server.log_text()
    assert "[shutdown] MPClient: complete" in server.log_text()  # vLLM's own shutdown path ran to its end
