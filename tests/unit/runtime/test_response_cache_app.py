"""The response cache in the request path (engine double, in-process cache): a hit never reaches the
engine, says so in its header, counts one request and no tokens against the tenant's limits."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from inferkube.runtime.app import build_app
from inferkube.runtime.metrics import RuntimeMetrics
from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.tenancy import TenantRegistry
from tests.unit.runtime.engine_double import EngineDouble

TENANTS = ("tenants:\n  - name: a\n    key: sk-a\n  - name: rpm2\n    key: sk-rpm2\n    requestsPerMinute: 2\n"
           "  - name: tpm6\n    key: sk-tpm6\n    tokensPerMinute: 6\n")


def body(prompt: str = "a b", **kw: object) -> dict:
    return {"model": "tiny", "prompt": prompt, "max_tokens": 4, "temperature": 0, **kw}


def auth(key: str = "sk-a") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def served() -> Iterator[tuple[TestClient, EngineDouble, RuntimeMetrics]]:
    engine, metrics = EngineDouble(), RuntimeMetrics(CollectorRegistry())
    settings = RuntimeSettings(model="builtin:tiny", served_model_name="tiny", response_cache=True)
    app = build_app(settings, engine, registry=TenantRegistry.from_yaml(TENANTS), metrics=metrics)
    with TestClient(app) as client:
        deadline = time.monotonic() + 5
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield client, engine, metrics


def test_second_identical_request_is_a_hit_that_never_reaches_the_engine(served) -> None:
    client, engine, metrics = served
    first = client.post("/v1/completions", json=body(), headers=auth())
    assert first.status_code == 200 and first.headers["x-inferkube-cache"] == "miss"
    second = client.post("/v1/completions", json=body(), headers=auth())
    assert second.status_code == 200 and second.headers["x-inferkube-cache"] == "hit"
    assert engine.calls == 1
    assert second.json()["choices"] == first.json()["choices"] and second.json()["id"] != first.json()["id"]
    assert metrics.requests.labels("tiny", "a", "200")._value.get() == 2
    assert metrics.completion_tokens.labels("tiny", "a")._value.get() == 3  # the hit generated nothing


def test_sampled_and_opted_out_requests_reach_the_engine(served) -> None:
    client, engine, _ = served
    for _ in range(2):
        r = client.post("/v1/completions", json=body(temperature=None), headers=auth())
        assert r.headers["x-inferkube-cache"] == "bypass"
    client.post("/v1/completions", json=body(), headers=auth())
    r = client.post("/v1/completions", json=body(), headers={**auth(), "Cache-Control": "no-store"})
    assert r.headers["x-inferkube-cache"] == "bypass" and engine.calls == 4


def test_a_hit_counts_one_request_against_the_limit(served) -> None:
    client, engine, _ = served
    assert client.post("/v1/completions", json=body(), headers=auth("sk-rpm2")).status_code == 200
    assert client.post("/v1/completions", json=body(), headers=auth("sk-rpm2")).headers["x-inferkube-cache"] == "hit"
    third = client.post("/v1/completions", json=body(), headers=auth("sk-rpm2"))
    assert third.status_code == 429 and engine.calls == 1


def test_a_hit_charges_no_tokens(served) -> None:
    client, engine, _ = served
    assert client.post("/v1/completions", json=body(), headers=auth("sk-tpm6")).status_code == 200  # 5 of 6 used
    assert client.post("/v1/completions", json=body("c d"), headers=auth("sk-tpm6")).status_code == 429
    hit = client.post("/v1/completions", json=body(), headers=auth("sk-tpm6"))
    assert hit.status_code == 200 and hit.headers["x-inferkube-cache"] == "hit" and engine.calls == 1


def test_each_tenant_has_its_own_entries(served) -> None:
    client, engine, _ = served
    client.post("/v1/completions", json=body(), headers=auth())
    assert client.post("/v1/completions", json=body(), headers=auth("sk-rpm2")).headers["x-inferkube-cache"] == "miss"
    assert engine.calls == 2
