"""The quota's tenant policy in the HTTP layer: ceilings cap limits, reloads apply live, priority reaches the engine,
the model budget is refused before the body once spent and split between replicas without Redis."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from inferkube.runtime.app import build_app
from inferkube.runtime.context import COMPLETION
from inferkube.runtime.metrics import RuntimeMetrics
from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.state import READY
from inferkube.runtime.tenancy import ANONYMOUS
from inferkube.runtime.validation import request_model
from tests.unit.runtime.engine_double import EngineDouble

TENANTS = ("tenants:\n  - {name: greedy, key: sk-greedy, tokensPerMinute: 100000, priority: high}\n"
           "  - {name: other, key: sk-other}\n")
BODY = {"model": "tiny", "prompt": "one two three", "max_tokens": 4}


def files(tmp_path: Path, policy: str) -> tuple[Path, Path]:
    (tmp_path / "tenants.yaml").write_text(TENANTS)
    (tmp_path / "policy.yaml").write_text(policy)
    return tmp_path / "tenants.yaml", tmp_path / "policy.yaml"


def app(tmp_path: Path, policy: str, engine: EngineDouble | None = None, **kw: object) -> TestClient:
    tenants, policy_file = files(tmp_path, policy)
    settings = RuntimeSettings(model="builtin:tiny", served_model_name="tiny", tenants_file=tenants,
                               tenant_policy_file=policy_file, reload_interval=3600, **kw)  # checks driven by the test
    return TestClient(build_app(settings, engine or EngineDouble(), metrics=RuntimeMetrics(CollectorRegistry())))


def ready(client: TestClient) -> TestClient:
    deadline = time.monotonic() + 5
    while client.get("/ready").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.01)
    return client


def post(client: TestClient, key: str) -> object:
    return client.post("/v1/completions", json=BODY, headers={"Authorization": f"Bearer {key}"})


def rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = time.time() + 5
    os.utime(path, (stamp, stamp))  # a new version even within the same mtime tick


def test_the_ceiling_caps_a_tenants_own_limit(tmp_path: Path) -> None:
    with app(tmp_path, "ceiling: {tokensPerMinute: 500}\n") as c:
        r = post(ready(c), "sk-greedy")
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-tokens"] == "500"


def test_a_policy_change_applies_without_a_restart_and_a_broken_one_keeps_the_old(tmp_path: Path) -> None:
    with app(tmp_path, "defaults: {tokensPerMinute: 900}\n") as c:
        ready(c)
        assert post(c, "sk-other").headers["x-ratelimit-limit-tokens"] == "900"
        state = c.app.state.runtime
        policy = next(w for w in state.watchers if w.name == "policy")
        rewrite(policy.path, "defaults: {tokensPerMinute: 700}\n")
        assert policy.check()
        assert post(c, "sk-other").headers["x-ratelimit-limit-tokens"] == "700"
        rewrite(policy.path, "defaults: {tokensPerMinute: [broken\n")
        assert not policy.check()
        r = post(c, "sk-other")
        assert r.status_code == 200 and r.headers["x-ratelimit-limit-tokens"] == "700"
        text = c.get("/metrics").text
        assert 'inferkube_config_reloads_total{file="policy",result="error"} 1.0' in text
        assert 'inferkube_config_reloads_total{file="policy",result="ok"} 1.0' in text


def test_a_tenants_file_change_applies_without_a_restart(tmp_path: Path) -> None:
    with app(tmp_path, "") as c:
        ready(c)
        assert post(c, "sk-new").status_code == 401
        tenants = next(w for w in c.app.state.runtime.watchers if w.name == "tenants")
        rewrite(tenants.path, TENANTS + "  - {name: new, key: sk-new}\n")
        assert tenants.check()
        assert post(c, "sk-new").status_code == 200


def test_priority_reaches_the_engine_and_the_quota_default_caps_it(tmp_path: Path) -> None:
    engine = EngineDouble()
    with app(tmp_path, "overrides: [{tenant: other, priority: low}]\n", engine, scheduling_policy="priority") as c:
        ready(c)
        assert post(c, "sk-greedy").status_code == 200 and post(c, "sk-other").status_code == 200
    assert engine.priorities[-2:] == [-100, 100], "vLLM serves lower numbers first"


def test_a_client_cannot_choose_its_own_engine_priority(tmp_path: Path) -> None:
    engine = EngineDouble()
    with app(tmp_path, "overrides: [{tenant: other, priority: low}]\n", engine, scheduling_policy="priority") as c:
        ready(c)
        r = c.post("/v1/completions", json={**BODY, "priority": -1000000},
                   headers={"Authorization": "Bearer sk-other", "X-Vllm-Priority": "-1000000"})
        assert r.status_code == 200
    assert engine.priorities[-1] == 100 and engine.priority_headers[-1] is None


def test_fcfs_sends_no_priority(tmp_path: Path) -> None:
    engine = EngineDouble()
    with app(tmp_path, "", engine) as c:
        assert post(ready(c), "sk-greedy").status_code == 200
    assert engine.priorities[-1] in (None, 0)


def test_the_model_budget_is_shared_by_all_tenants(tmp_path: Path) -> None:
    with app(tmp_path, "modelTokensPerMinute: 10\n") as c:
        ready(c)
        assert post(c, "sk-greedy").status_code == 200  # 3 prompt + 4 max_tokens = 7 of 10 (5 after the refund)
        r = post(c, "sk-other")
        assert r.status_code == 429 and r.json()["error"]["code"] == "model_budget_exceeded"
        assert "Retry-After" in r.headers


def test_with_the_memory_backend_two_replicas_halve_the_model_budget_and_a_scale_event_reloads_it(
        tmp_path: Path) -> None:
    big = {"model": "tiny", "prompt": "x", "max_tokens": 25}  # at least 26 tokens: fits 40 per minute, not 20
    with app(tmp_path, "modelTokensPerMinute: 40\nreplicas: 1\n") as c:
        ready(c)
        headers = {"Authorization": "Bearer sk-greedy"}
        assert c.post("/v1/completions", json=big, headers=headers).status_code == 200
        policy = next(w for w in c.app.state.runtime.watchers if w.name == "policy")
        rewrite(policy.path, "modelTokensPerMinute: 40\nreplicas: 2\n")  # the operator saw a second replica
        assert policy.check()
        r = c.post("/v1/completions", json=big, headers=headers)
        assert r.status_code == 429 and r.json()["error"]["code"] == "model_budget_exceeded"
        assert "40 tokens per minute for all tenants together; 20 on each of its 2 replicas" in r.json()["error"]["message"]


def test_the_server_default_requests_per_minute_is_each_tenants_not_the_model_budgets(tmp_path: Path) -> None:
    with app(tmp_path, "modelTokensPerMinute: 100000\n", default_requests_per_minute=1) as c:
        ready(c)
        assert post(c, "sk-greedy").status_code == 200
        assert post(c, "sk-other").status_code == 200, "the model budget is tokens only: one request each"
        r = post(c, "sk-other")
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded"


def ready_app(tmp_path: Path, policy: str) -> FastAPI:
    """The app with the engine double, marked ready, for raw ASGI calls (no lifespan)."""
    request_model(COMPLETION)  # import vLLM's request models now (slow the first time), not inside a timed call
    tenants, policy_file = files(tmp_path, policy)
    settings = RuntimeSettings(model="builtin:tiny", served_model_name="tiny", tenants_file=tenants,
                               tenant_policy_file=policy_file, reload_interval=3600)
    application = build_app(settings, EngineDouble(), metrics=RuntimeMetrics(CollectorRegistry()))
    application.state.runtime.phase = READY
    return application


async def raw_post(application: FastAPI, key: str, chunks: list[bytes]) -> tuple[int, dict[str, str], dict, int]:
    """POST /v1/completions over raw ASGI, the body offered in `chunks`: status, headers, JSON answer and how
    many chunks the app read."""
    read, sent = 0, []
    length = str(sum(len(c) for c in chunks)).encode()

    async def receive() -> dict:
        nonlocal read
        if read < len(chunks):
            read += 1
            return {"type": "http.request", "body": chunks[read - 1], "more_body": read < len(chunks)}
        await asyncio.Event().wait()  # the client is still there, sending nothing more
        return {}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/completions", "raw_path": b"/v1/completions", "query_string": b"", "root_path": "",
             "headers": [(b"content-type", b"application/json"), (b"content-length", length),
                         (b"authorization", f"Bearer {key}".encode())],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    await asyncio.wait_for(application(scope, receive, send), 5)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, json.loads(body), read


async def test_a_spent_model_budget_is_refused_before_the_body_is_read(tmp_path: Path) -> None:
    application = ready_app(tmp_path, "modelTokensPerMinute: 5\n")
    state = application.state.runtime
    large = [b" " * 65536] * 4  # 256 KB of whitespace: not JSON, so reading it costs no budget (400)
    status, _, _, read = await raw_post(application, "sk-other", large)
    assert (status, read) == (400, 4), "with budget left the body is read"
    small = json.dumps({"model": "tiny", "prompt": "x", "max_tokens": 3}).encode()
    status, _, _, _ = await raw_post(application, "sk-greedy", [small])
    assert status == 200  # reserves its lower bound (4 of 5), then is charged the 5 it used
    budget = state.tenancy.model_budget()
    for _ in range(100):  # the charge is settled in the background once the answer is out
        if not (await state.limiter.precheck(ANONYMOUS, budget.tenant, 1)).budget.allowed:
            break
        await asyncio.sleep(0.01)
    status, headers, answer, read = await raw_post(application, "sk-other", large)
    assert (status, answer["error"]["code"], read) == (429, "model_budget_exceeded", 0)
    assert int(headers["retry-after"]) >= 1
    registry = state.metrics.registry
    assert registry.get_sample_value("inferkube_rejections_total", {"model": "tiny", "reason": "rate_limit"}) == 1
    assert registry.get_sample_value("inferkube_requests_total", {"model": "tiny", "tenant": "other", "status": "429"}) == 1
