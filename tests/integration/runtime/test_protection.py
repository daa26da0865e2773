"""Admission under a burst, disconnect aborts, metrics that move, and no secrets in the logs."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.integration.runtime.conftest import MAIN_KEY, PROMPT_CANARY, SERVED_NAME, RuntimeServer

pytestmark = pytest.mark.engine
AUTH = {"Authorization": f"Bearer {MAIN_KEY}"}
LONG = {"model": SERVED_NAME, "prompt": "tell me a long story", "max_tokens": 1500, "ignore_eos": True}


def _wait_for(predicate, timeout: float, interval: float = 0.05) -> float:
    """Poll `predicate` until true; return the seconds it took (fail after `timeout`)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def _running(server: RuntimeServer) -> float:
    return server.metric("vllm:num_requests_running")


def _generated(server: RuntimeServer) -> float:
    return server.metric("vllm:generation_tokens_total")


def test_streaming_disconnect_aborts_engine_request(runtime_server: RuntimeServer) -> None:
    disconnects = runtime_server.metric("inferkube_client_disconnects_total")
    with httpx.stream("POST", runtime_server.base_url + "/v1/completions", headers=AUTH,
                      json={**LONG, "stream": True}, timeout=30) as r:
        lines = r.iter_lines()
        next(lines)
        assert _running(runtime_server) == 1
    took = _wait_for(lambda: _running(runtime_server) == 0, timeout=1.0)
    assert took < 1.0
    generated = _generated(runtime_server)
    time.sleep(0.5)
    assert _generated(runtime_server) == generated
    _wait_for(lambda: runtime_server.metric("inferkube_client_disconnects_total") == disconnects + 1, 2.0)
    assert runtime_server.metric("inferkube_requests_in_flight") == 0


def test_non_streaming_disconnect_aborts_engine_request(runtime_server: RuntimeServer) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(runtime_server.base_url + "/v1/completions", headers=AUTH, json=LONG, timeout=1.5)
    _wait_for(lambda: _running(runtime_server) == 0, timeout=1.0)
    # 1500 tokens take far longer than this: the engine stopped because the request was aborted.
    generated = _generated(runtime_server)
    time.sleep(0.5)
    assert _generated(runtime_server) == generated


def test_burst_beyond_admission_bound_gets_fast_429(runtime_server: RuntimeServer) -> None:
    """max-in-flight 4 + max-queued 4: of 16 simultaneous requests 8 are served and 8 refused at once."""
    body = {"model": SERVED_NAME, "prompt": "burst", "max_tokens": 200, "ignore_eos": True}
    before = runtime_server.metric("inferkube_rejections_total", reason="admission")

    async def one(client: httpx.AsyncClient) -> tuple[int, float, httpx.Headers]:
        start = time.monotonic()
        r = await client.post("/v1/completions", json=body, headers=AUTH)
        return r.status_code, time.monotonic() - start, r.headers

    async def burst() -> list[tuple[int, float, httpx.Headers]]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=runtime_server.base_url, timeout=120, limits=limits) as client:
            return await asyncio.gather(*(one(client) for _ in range(16)))

    results = asyncio.run(burst())
    ok = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    assert len(ok) == 8 and len(refused) == 8, [r[0] for r in results]
    assert all(int(h["retry-after"]) >= 1 for _, _, h in refused)
    assert max(t for _, t, _ in refused) < 1.0
    assert runtime_server.metric("inferkube_rejections_total", reason="admission") == before + 8


def test_metrics_move_with_traffic(runtime_server: RuntimeServer) -> None:
    m = runtime_server.metric
    before = {name: m(name, tenant="main") for name in (
        "inferkube_requests_total", "inferkube_prompt_tokens_total", "inferkube_completion_tokens_total")}
    ttft = m("inferkube_time_to_first_token_seconds_count")
    r = httpx.post(runtime_server.base_url + "/v1/completions", headers=AUTH, timeout=60,
                   json={"model": SERVED_NAME, "prompt": "count me", "max_tokens": 5, "ignore_eos": True})
    usage = r.json()["usage"]
    assert m("inferkube_requests_total", tenant="main", status="200") >= 1
    assert m("inferkube_requests_total", tenant="main") == before["inferkube_requests_total"] + 1
    assert m("inferkube_prompt_tokens_total", tenant="main") == (
        before["inferkube_prompt_tokens_total"] + usage["prompt_tokens"])
    assert m("inferkube_completion_tokens_total", tenant="main") == before["inferkube_completion_tokens_total"] + 5
    assert m("inferkube_time_to_first_token_seconds_count") == ttft  # non-streaming: no first-token time
    with httpx.stream("POST", runtime_server.base_url + "/v1/completions", headers=AUTH, timeout=60,
                      json={"model": SERVED_NAME, "prompt": "count me", "max_tokens": 5, "ignore_eos": True,
                            "stream": True}) as s:
        assert s.status_code == 200 and "".join(s.iter_text()).rstrip().endswith("data: [DONE]")
    assert m("inferkube_time_to_first_token_seconds_count") == ttft + 1
    # Several prompts in one request: every prompt's tokens count (vLLM runs one generator per prompt).
    before = {name: m(name, tenant="main") for name in (
        "inferkube_prompt_tokens_total", "inferkube_completion_tokens_total")}
    r = httpx.post(runtime_server.base_url + "/v1/completions", headers=AUTH, timeout=60,
                   json={"model": SERVED_NAME, "prompt": ["count me", "and count me too please"], "max_tokens": 5,
                         "ignore_eos": True})
    usage = r.json()["usage"]
    assert usage["completion_tokens"] == 10
    assert m("inferkube_prompt_tokens_total", tenant="main") == (
        before["inferkube_prompt_tokens_total"] + usage["prompt_tokens"])
    assert m("inferkube_completion_tokens_total", tenant="main") == before["inferkube_completion_tokens_total"] + 10
    text = httpx.get(runtime_server.base_url + "/metrics").text
    for name in ("inferkube_kv_cache_usage_ratio", "inferkube_queue_depth", "inferkube_requests_in_flight",
                 "inferkube_time_per_output_token_seconds_bucket", "inferkube_request_duration_seconds_bucket",
                 "vllm:kv_cache_usage_perc", "vllm:num_requests_running", "vllm:num_requests_waiting"):
        assert name in text, name


def _usage_of_stream(response: httpx.Response) -> dict:
    """The `usage` of the last data event that has one (stream_options.include_usage)."""
    import json

    usage: dict = {}
    for line in response.iter_lines():
        if line.startswith("data: {") and '"usage"' in line:
            usage = json.loads(line[6:]).get("usage") or usage
    return usage


@pytest.mark.parametrize("case", ["completion n=2", "completion stream n=2", "chat stream", "chat n=3"])
def test_token_metrics_equal_the_usage_the_client_sees(runtime_server: RuntimeServer, case: str) -> None:
    """Rate limits and metrics charge what vLLM reports as usage: choices (vLLM runs one engine request per
    choice, sharing the prompt), streams and chat count in full."""
    m = runtime_server.metric
    names = ("inferkube_prompt_tokens_total", "inferkube_completion_tokens_total")
    before = {name: m(name, tenant="main") for name in names}
    chat = case.startswith("chat")
    n = 3 if "n=3" in case else 2 if "n=2" in case else 1
    body: dict = {"model": SERVED_NAME, "max_tokens": 6, "ignore_eos": True, "n": n, "temperature": 1.0}
    body.update({"messages": [{"role": "user", "content": "count my tokens"}]} if chat else {"prompt": "count me"})
    url = runtime_server.base_url + ("/v1/chat/completions" if chat else "/v1/completions")
    if "stream" in case:
        body.update(stream=True, stream_options={"include_usage": True})
        with httpx.stream("POST", url, headers=AUTH, json=body, timeout=60) as r:
            assert r.status_code == 200
            usage = _usage_of_stream(r)
    else:
        r = httpx.post(url, headers=AUTH, json=body, timeout=60)
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
    assert usage["completion_tokens"] == 6 * n
    assert m("inferkube_prompt_tokens_total", tenant="main") == before[names[0]] + usage["prompt_tokens"]
    assert m("inferkube_completion_tokens_total", tenant="main") == before[names[1]] + usage["completion_tokens"]


def test_kv_cache_gauge_mirrors_vllm_while_busy(runtime_server: RuntimeServer) -> None:
    with httpx.stream("POST", runtime_server.base_url + "/v1/completions", headers=AUTH,
                      json={**LONG, "stream": True}, timeout=30) as r:
        lines = r.iter_lines()
        for _ in range(20):
            next(lines)
        ours = runtime_server.metric("inferkube_kv_cache_usage_ratio")
        theirs = runtime_server.metric("vllm:kv_cache_usage_perc")
    assert ours > 0
    assert ours == pytest.approx(theirs, rel=0.5)


def test_keys_and_prompts_never_logged(runtime_server: RuntimeServer) -> None:
    url = runtime_server.base_url
    httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=60, json={
        "model": SERVED_NAME, "max_tokens": 2, "messages": [{"role": "user", "content": PROMPT_CANARY}]})
    httpx.post(url + "/v1/completions", headers={"Authorization": "Bearer CANARYKEY-wrong"},
               json={"model": SERVED_NAME, "prompt": PROMPT_CANARY})
    httpx.post(url + "/v1/completions", headers=AUTH, json={"model": SERVED_NAME, "prompt": PROMPT_CANARY,
                                                            "max_tokens": "x", "bogus_field": PROMPT_CANARY})
    httpx.post(url + "/v1/completions", headers=AUTH, content=f'{{"prompt": "{PROMPT_CANARY}'.encode())
    time.sleep(0.5)
    log = runtime_server.log_text()
    assert "POST /v1/completions" in log  # the log is really being captured
    assert "CANARYKEY" not in log
    assert PROMPT_CANARY not in log


def test_health_answers_under_load(runtime_server: RuntimeServer) -> None:
    with httpx.stream("POST", runtime_server.base_url + "/v1/completions", headers=AUTH,
                      json={**LONG, "max_tokens": 300, "stream": True}, timeout=30) as r:
        next(r.iter_lines())
        start = time.monotonic()
        assert httpx.get(runtime_server.base_url + "/health").status_code == 200
        assert time.monotonic() - start < 0.5
