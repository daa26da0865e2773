"""Cheap checks first: refusals before the tokenizer, one tokenization (the engine's), every answer counted."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from inferkube.runtime.app import build_app
from inferkube.runtime.server import EXIT_BAD_SETTINGS, serve
from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.tenancy import TenantRegistry
from tests.unit.runtime.engine_double import EngineDouble

TENANTS = ("tenants:\n  - name: alpha\n    key: sk-a\n  - name: slow\n    key: sk-slow\n    requestsPerMinute: 1\n"
           "  - name: tiny\n    key: sk-tiny\n    tokensPerMinute: 50\n")


def _client(engine: EngineDouble, **kw) -> TestClient:
    settings = RuntimeSettings(model="builtin:tiny", served_model_name="tiny", max_body_bytes=1 << 20, **kw)
    return TestClient(build_app(settings, engine, registry=TenantRegistry.from_yaml(TENANTS)))


def _ready(c: TestClient) -> None:
    deadline = time.monotonic() + 5
    while c.get("/ready").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_served_requests_are_not_tokenized_by_the_runtime() -> None:
    engine = EngineDouble(max_model_len=4096)
    with _client(engine) as c:
        _ready(c)
        for path, body in (("/v1/completions", {"prompt": "hello there", "max_tokens": 8}),
                           ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})):
            r = c.post(path, json={"model": "tiny", **body}, headers={"Authorization": "Bearer sk-a"})
            assert r.status_code == 200, r.text
    assert engine.calls == 2 and engine.tokenized == 0


def test_refusals_come_before_the_tokenizer_whatever_the_size() -> None:
    engine = EngineDouble(max_model_len=256)
    with _client(engine) as c:
        _ready(c)
        slow = {"Authorization": "Bearer sk-slow"}
        assert c.post("/v1/completions", json={"model": "tiny", "prompt": "x"}, headers=slow).status_code == 200
        huge = {"model": "tiny", "prompt": "word " * 100_000}  # 500 KB, far over the context
        r = c.post("/v1/completions", json=huge, headers=slow)
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"
        # Over the context for sure (even at the longest token per byte): 400 without the tokenizer.
        r = c.post("/v1/completions", json=huge, headers={"Authorization": "Bearer sk-a"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        assert r.json()["error"]["param"] == "prompt"
    assert engine.tokenized == 0 and engine.calls == 1


def test_token_budget_verdict_uses_the_lower_bound_when_unsure() -> None:
    """50 tokens/minute: 120 bytes may be up to ~120 tokens, but are at least 15: tried, not refused outright."""
    engine = EngineDouble(max_model_len=4096)
    with _client(engine) as c:
        _ready(c)
        tiny = {"Authorization": "Bearer sk-tiny"}
        r = c.post("/v1/completions", json={"model": "tiny", "prompt": "abcdefgh " * 13, "max_tokens": 2},
                   headers=tiny)
        assert r.status_code == 200, r.text
        r = c.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 60}, headers=tiny)
        assert r.status_code == 429 and r.json()["error"]["code"] == "request_exceeds_token_budget"


def test_an_unexpected_error_is_a_counted_500() -> None:
    engine = EngineDouble()
    with _client(engine) as c:
        _ready(c)
        engine.token_bounds = None  # type: ignore[assignment]  # a bug inside the checks
        r = c.post("/v1/completions", json={"model": "tiny", "prompt": "x"}, headers={"Authorization": "Bearer sk-a"})
        assert r.status_code == 500 and set(r.json()["error"]) >= {"message", "type", "param", "code"}
        value = c.app.state.runtime.metrics.registry.get_sample_value(
            "inferkube_requests_total", {"model": "tiny", "tenant": "alpha", "status": "500"})
        assert value == 1


def test_a_stop_limit_above_the_engines_is_refused_at_start() -> None:
    settings = RuntimeSettings(model="builtin:tiny", max_stop_sequences=16)
    assert serve(settings) == EXIT_BAD_SETTINGS
