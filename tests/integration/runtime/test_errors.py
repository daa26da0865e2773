"""Every refusal path on the real runtime: an OpenAI error object, the right status, never the engine."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.integration.runtime.conftest import (
    LIMITED_KEY,
    MAIN_KEY,
    SERVED_NAME,
    TINY_TPM_KEY,
    RuntimeServer,
)

pytestmark = pytest.mark.engine
AUTH = {"Authorization": f"Bearer {MAIN_KEY}"}
CHAT = [{"role": "user", "content": "hi"}]


def _post(server: RuntimeServer, path: str, **kwargs) -> httpx.Response:
    headers = {**AUTH, **kwargs.pop("headers", {})}
    return httpx.post(server.base_url + path, headers=headers, timeout=30, **kwargs)


def _assert_error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param
    return err


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "nope", "messages": CHAT}, 404, "model"),
        ({"model": SERVED_NAME, "messages": "not a list"}, 400, "messages"),
        ({"model": SERVED_NAME, "messages": CHAT, "max_tokens": "ten"}, 400, "max_tokens"),
        ({"model": SERVED_NAME, "messages": CHAT, "temperature": "hot"}, 400, "temperature"),
        ({"model": SERVED_NAME, "messages": CHAT, "n": 5}, 400, "n"),
        ({"model": SERVED_NAME, "messages": CHAT, "max_tokens": 2001}, 400, "max_tokens"),
        ({"model": SERVED_NAME, "messages": CHAT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"model": SERVED_NAME, "messages": [{"role": "user", "content": "hello " * 100}], "max_tokens": 2000},
         400, "max_tokens"),
    ],
)
def test_bad_chat_input_is_refused_with_param(runtime_server: RuntimeServer, body: dict, status: int,
                                              param: str) -> None:
    _assert_error(_post(runtime_server, "/v1/chat/completions", json=body), status, param)


def test_prompt_longer_than_context_is_400(runtime_server: RuntimeServer) -> None:
    r = _post(runtime_server, "/v1/completions", json={"model": SERVED_NAME, "prompt": [1] * 3000, "max_tokens": 1})
    _assert_error(r, 400, "prompt")


def test_malformed_json_is_400(runtime_server: RuntimeServer) -> None:
    r = _post(runtime_server, "/v1/completions", content=b'{"model": "tiny", "prompt": ',
              headers={"content-type": "application/json"})
    assert _assert_error(r, 400)["code"] == "invalid_json"


def test_body_over_cap_is_413(runtime_server: RuntimeServer) -> None:
    r = _post(runtime_server, "/v1/completions", json={"model": SERVED_NAME, "prompt": "x" * 70000})
    _assert_error(r, 413)


def test_openai_client_sees_typed_errors(runtime_server: RuntimeServer) -> None:
    client = openai.OpenAI(base_url=runtime_server.base_url + "/v1", api_key=MAIN_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=CHAT, max_tokens=1)
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=SERVED_NAME, messages=CHAT, max_tokens=5000)
    assert exc.value.body["param"] == "max_tokens"


@pytest.mark.parametrize("header", [None, "Bearer wrong-key", "Basic abc", f"Bearer {MAIN_KEY}x"])
def test_missing_or_wrong_key_is_401(runtime_server: RuntimeServer, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for path, body in (("/v1/chat/completions", {"model": SERVED_NAME, "messages": CHAT}),
                       ("/v1/completions", {"model": SERVED_NAME, "prompt": "x"})):
        r = httpx.post(runtime_server.base_url + path, json=body, headers=headers, timeout=10)
        assert _assert_error(r, 401)["type"] == "authentication_error"
    assert httpx.get(runtime_server.base_url + "/v1/models", headers=headers).status_code == 401


def test_probes_and_metrics_need_no_key(runtime_server: RuntimeServer) -> None:
    for path in ("/health", "/ready", "/metrics"):
        assert httpx.get(runtime_server.base_url + path).status_code == 200


def test_openai_client_with_wrong_key_raises_authentication_error(runtime_server: RuntimeServer) -> None:
    client = openai.OpenAI(base_url=runtime_server.base_url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_requests_per_minute_limit_gives_429_with_headers(runtime_server: RuntimeServer) -> None:
    before = runtime_server.metric("inferkube_rejections_total", reason="rate_limit")
    statuses = []
    last = None
    for _ in range(4):
        last = _post(runtime_server, "/v1/completions", headers={"Authorization": f"Bearer {LIMITED_KEY}"},
                     json={"model": SERVED_NAME, "prompt": "x", "max_tokens": 1})
        statuses.append(last.status_code)
    assert statuses[:2] == [200, 200]
    assert statuses[2:] == [429, 429]
    _assert_error(last, 429)
    assert int(last.headers["retry-after"]) >= 1
    assert last.headers["x-ratelimit-limit-requests"] == "2"
    assert last.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-ratelimit-reset-requests" in last.headers
    assert runtime_server.metric("inferkube_rejections_total", reason="rate_limit") >= before + 2


def test_token_budget_counts_prompt_plus_max_tokens(runtime_server: RuntimeServer) -> None:
    headers = {"Authorization": f"Bearer {TINY_TPM_KEY}"}
    r = _post(runtime_server, "/v1/completions", headers=headers,
              json={"model": SERVED_NAME, "prompt": "x", "max_tokens": 500})
    _assert_error(r, 429)
    assert "x-ratelimit-limit-tokens" in r.headers
    ok = _post(runtime_server, "/v1/completions", headers=headers,
               json={"model": SERVED_NAME, "prompt": "x", "max_tokens": 5})
    assert ok.status_code == 200, ok.text
