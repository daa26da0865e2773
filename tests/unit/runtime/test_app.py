"""The HTTP layer over an in-process engine double: probes, auth, validation, admission, metrics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from inferkube.runtime.app import build_app
from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.tenancy import TenantRegistry
from tests.unit.runtime.engine_double import EngineDouble

KEY = "sk-unit-test-key"
TENANTS = f"tenants:\n  - name: alpha\n    key: {KEY}\n  - name: slow\n    key: sk-rpm1\n    requestsPerMinute: 1\n"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 4}


def _settings(**kw) -> RuntimeSettings:
    return RuntimeSettings(model="builtin:tiny", served_model_name="tiny", **kw)


def _wait_ready(client: TestClient, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/ready").status_code == 200:
            return
        time.sleep(0.01)
    raise AssertionError("never ready")


@pytest.fixture
def client() -> Iterator[TestClient]:
    app = build_app(_settings(max_tokens_cap=64, max_n=2, max_stop_sequences=2, max_body_bytes=2048),
                    EngineDouble(), registry=TenantRegistry.from_yaml(TENANTS))
    with TestClient(app) as c:
        _wait_ready(c)
        yield c


def test_ready_is_503_until_the_engine_has_loaded_and_health_answers_meanwhile() -> None:
    engine = EngineDouble(start_delay=0.5)
    with TestClient(build_app(_settings(), engine)) as c:
        assert c.get("/health").status_code == 200
        r = c.get("/ready")
        assert r.status_code == 503 and r.json()["status"] == "loading"
        assert c.post("/v1/completions", json={"model": "tiny", "prompt": "x"}).status_code == 503
        _wait_ready(c)
    assert engine.stopped


def test_failed_engine_makes_health_fail() -> None:
    with TestClient(build_app(_settings(), EngineDouble(fail_start=True))) as c:
        deadline = time.monotonic() + 5
        while c.get("/health").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c.get("/health").status_code == 503
        assert c.get("/ready").status_code == 503


def test_chat_and_completion_round_trip(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 4 - 1  # the double always answers 3 tokens
    s = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "stream": True}, headers=AUTH)
    assert s.status_code == 200 and s.text.rstrip().endswith("data: [DONE]")
    assert client.get("/v1/models", headers=AUTH).json()["data"][0]["id"] == "tiny"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({**CHAT, "model": "other"}, 404, "model"),
        ({**CHAT, "n": 3}, 400, "n"),
        ({**CHAT, "max_tokens": 65}, 400, "max_tokens"),
        ({**CHAT, "max_completion_tokens": 65}, 400, "max_completion_tokens"),
        ({**CHAT, "stop": ["a", "b", "c"]}, 400, "stop"),
        ({**CHAT, "messages": 5}, 400, "messages"),
        ({**CHAT, "max_tokens": 250, "messages": [{"role": "user", "content": "w " * 10}]}, 400, "max_tokens"),
        ({**CHAT, "max_tokens": 4, "messages": [{"role": "user", "content": "w " * 300}]}, 400, "messages"),
    ],
)
def test_bad_input_never_reaches_the_engine(client: TestClient, body: dict, status: int, param: str) -> None:
    engine = client.app.state.runtime.engine
    r = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param
    assert engine.calls == 0


def test_malformed_json_and_oversized_body(client: TestClient) -> None:
    r = client.post("/v1/completions", content=b"{nope", headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "x" * 5000}, headers=AUTH)
    assert r.status_code == 413
    assert client.post("/v1/completions", content=b"[1]", headers=AUTH).status_code == 400


def test_auth_required_except_probes(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        r = client.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert client.get("/v1/models", headers=headers).status_code == 401
    for path in ("/health", "/ready", "/metrics"):
        assert client.get(path).status_code == 200


def test_rate_limit_429_has_retry_after_and_headers(client: TestClient) -> None:
    headers = {"Authorization": "Bearer sk-rpm1"}
    assert client.post("/v1/completions", json={"model": "tiny", "prompt": "x"}, headers=headers).status_code == 200
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "x"}, headers=headers)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-limit-requests"] == "1"
    assert client.app.state.runtime.engine.calls == 1


def test_admission_bound_refuses_fast_when_full() -> None:
    engine = EngineDouble(delay=1.0)
    app = build_app(_settings(max_in_flight=1, max_queued=1), engine, registry=TenantRegistry.empty())
    with TestClient(app) as c:
        _wait_ready(c)
        results: list[int] = []

        def call() -> None:
            results.append(c.post("/v1/completions", json={"model": "tiny", "prompt": "x"}).status_code)

        threads = [threading.Thread(target=call) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        start = time.monotonic()
        r = c.post("/v1/completions", json={"model": "tiny", "prompt": "x"})
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert r.json()["error"]["code"] == "server_overloaded"
        assert time.monotonic() - start < 0.5
        for t in threads:
            t.join()
        assert sorted(results) == [200, 200]


def test_draining_flips_ready_and_refuses_with_503(client: TestClient) -> None:
    client.app.state.runtime.admission.start_draining()
    assert client.get("/ready").status_code == 503
    r = client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    assert r.status_code == 503 and "retry-after" in r.headers
    assert client.get("/health").status_code == 200


def test_metrics_count_requests_and_rejections(client: TestClient) -> None:
    client.post("/v1/chat/completions", json=CHAT, headers=AUTH)
    client.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=AUTH)  # TTFT: streams only
    client.post("/v1/chat/completions", json=CHAT)
    text = client.get("/metrics").text
    assert 'inferkube_requests_total{model="tiny",status="200",tenant="alpha"}' in text
    assert 'inferkube_rejections_total{model="tiny",reason="auth"}' in text
    for name in ("inferkube_queue_depth", "inferkube_requests_in_flight", "inferkube_kv_cache_usage_ratio",
                 "inferkube_time_to_first_token_seconds_bucket", "inferkube_completion_tokens_total"):
        assert name in text


def _sample(client: TestClient, name: str, **labels: str) -> float:
    value = client.app.state.runtime.metrics.registry.get_sample_value(name, {"model": "tiny", **labels})
    return value or 0.0


def test_a_refusal_is_counted_the_same_on_every_route(client: TestClient) -> None:
    """401 from /v1/models and from a generation route: one rejection and one answered request each."""
    for call in (lambda: client.get("/v1/models"), lambda: client.post("/v1/completions", json=CHAT)):
        rejections = _sample(client, "inferkube_rejections_total", reason="auth")
        requests = _sample(client, "inferkube_requests_total", tenant="anonymous", status="401")
        assert call().status_code == 401
        assert _sample(client, "inferkube_rejections_total", reason="auth") == rejections + 1
        assert _sample(client, "inferkube_requests_total", tenant="anonymous", status="401") == requests + 1


def test_every_rejection_reason_is_exported_from_the_start(client: TestClient) -> None:
    """The first refusal of a kind is an increase a `rate()` can see, not a series appearing from nowhere."""
    text = client.get("/metrics").text
    for reason in ("auth", "rate_limit", "admission", "validation", "draining"):
        assert f'inferkube_rejections_total{{model="tiny",reason="{reason}"}}' in text


def test_openapi_describes_request_bodies(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "messages" in doc["components"]["schemas"][ref]["properties"]


def test_large_prompt_is_counted_off_the_event_loop_and_refused_over_context() -> None:
    engine = EngineDouble()
    with TestClient(build_app(_settings(), engine, registry=TenantRegistry.empty())) as c:
        _wait_ready(c)
        r = c.post("/v1/completions", json={"model": "tiny", "prompt": "word " * 10_000, "max_tokens": 1})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        assert r.json()["error"]["code"] == "context_length_exceeded"
    assert engine.calls == 0


def test_a_request_over_the_whole_token_budget_is_refused_without_retry_after() -> None:
    tenants = f"tenants:\n  - name: small\n    key: {KEY}\n    tokensPerMinute: 50\n"
    with TestClient(build_app(_settings(), EngineDouble(), registry=TenantRegistry.from_yaml(tenants))) as c:
        _wait_ready(c)
        r = c.post("/v1/chat/completions", headers=AUTH, json={**CHAT, "max_tokens": 200})
        assert r.status_code == 429
        assert "Retry-After" not in r.headers, "retrying can never succeed"
        assert r.json()["error"]["code"] == "request_exceeds_token_budget"
        assert r.json()["error"]["param"] == "max_tokens"
        ok = c.post("/v1/chat/completions", headers=AUTH, json=CHAT)
        assert ok.status_code == 200, "a request that fits still passes"


def test_fail_closed_limiter_without_its_backend_answers_503() -> None:
    from inferkube.runtime.tenancy import build_rate_limiter

    limiter = build_rate_limiter("redis", "redis://127.0.0.1:1/0", False, 100, None)  # nothing listens on port 1
    app = build_app(_settings(), EngineDouble(), registry=TenantRegistry.from_yaml(TENANTS), limiter=limiter)
    with TestClient(app) as c:
        _wait_ready(c)
        r = c.post("/v1/chat/completions", headers=AUTH, json=CHAT)
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "rate_limit_backend_unavailable"


def _ttft_count(client: TestClient) -> float:
    ttft = client.app.state.runtime.metrics.ttft
    return sum(s.value for metric in ttft.collect() for s in metric.samples if s.name.endswith("_count"))


def test_ttft_is_recorded_for_streams_only(client: TestClient) -> None:
    before = _ttft_count(client)
    r = client.post("/v1/completions", json={"model": "tiny", "prompt": "x"}, headers=AUTH)
    assert r.status_code == 200
    assert _ttft_count(client) == before  # the whole answer arrives at once: no meaningful first token
    s = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "stream": True}, headers=AUTH)
    assert s.status_code == 200
    assert _ttft_count(client) == before + 1


def test_deeply_nested_json_is_a_400_not_a_500() -> None:
    app = build_app(_settings(max_body_bytes=1_000_000), EngineDouble())
    with TestClient(app) as c:
        _wait_ready(c)
        r = c.post("/v1/completions", content=b"[" * 200_000, headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_json"


def test_fail_closed_help_names_the_status_it_answers() -> None:
    from inferkube.runtime.cli import build_serve_parser

    help_text = build_serve_parser().format_help()
    assert "refuse (503)" in help_text and "(429)" not in help_text
