"""The quota's tenant policy in the HTTP layer: ceilings cap limits, reloads apply live, priority reaches the engine."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastapi.testclient import TestClient

from inferkube.runtime.app import build_app
from inferkube.runtime.metrics import RuntimeMetrics
from inferkube.runtime.settings import RuntimeSettings
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
    from prometheus_client import CollectorRegistry
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
