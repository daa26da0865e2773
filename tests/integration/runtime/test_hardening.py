"""Hostile and heavy input on the real runtime: no 5xx, cheap refusals first, admission in sequences, slow clients."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from tests.integration.runtime.conftest import MAIN_KEY, OVERLIMIT_KEY, SERVED_NAME, RuntimeServer

pytestmark = pytest.mark.engine
AUTH = {"Authorization": f"Bearer {MAIN_KEY}", "Content-Type": "application/json"}
LONE = "a\ud800b"  # json.dumps writes it as the escape \ud800, which json.loads accepts


def _post(server: RuntimeServer, path: str, body: dict, headers: dict | None = None, stream: bool = False
          ) -> httpx.Response:
    content = json.dumps(body).encode()
    return httpx.post(server.base_url + path, content=content, headers=headers or AUTH, timeout=60)


def _error(r: httpx.Response, status: int, param: str | None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    return err


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": LONE}]}, "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "text", "text": LONE}]}]},
     "messages"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "model": LONE}, "model"),
    ("/v1/completions", {"prompt": LONE}, "prompt"),
    ("/v1/completions", {"prompt": LONE, "stream": True}, "prompt"),
    ("/v1/completions", {"prompt": "x", "stop": LONE}, "stop"),
])
def test_lone_surrogate_is_400_naming_the_param(runtime_server: RuntimeServer, path: str, body: dict,
                                                param: str) -> None:
    _error(_post(runtime_server, path, {"model": SERVED_NAME, "max_tokens": 4, **body}), 400, param)


def test_server_errors_are_counted_like_every_answer(runtime_server: RuntimeServer) -> None:
    """Every answer the server gave is in inferkube_requests_total, whatever its status."""
    before = runtime_server.metric("inferkube_requests_total", tenant="main")
    answers = [
        _post(runtime_server, "/v1/completions", {"model": SERVED_NAME, "prompt": LONE}).status_code,
        _post(runtime_server, "/v1/completions", {"model": SERVED_NAME, "prompt": "x", "max_tokens": 2}).status_code,
        _post(runtime_server, "/v1/completions", {"model": "nope", "prompt": "x"}).status_code,
    ]
    assert answers == [400, 200, 404]
    assert runtime_server.metric("inferkube_requests_total", tenant="main") == before + 3


def test_stop_list_limit_is_the_engines_with_our_message(runtime_server: RuntimeServer) -> None:
    r = _post(runtime_server, "/v1/chat/completions", {"model": SERVED_NAME, "stop": list("abcde"),
                                                       "messages": [{"role": "user", "content": "hi"}]})
    assert "at most 4" in _error(r, 400, "stop")["message"]
    r = _post(runtime_server, "/v1/completions", {"model": SERVED_NAME, "prompt": "x", "stop": ["x" * 5000]})
    _error(r, 400, "stop")


@pytest.mark.parametrize("ids", [[10**9], [-1], [1, True]])
def test_bad_token_ids_are_400(runtime_server: RuntimeServer, ids: list) -> None:
    _error(_post(runtime_server, "/v1/completions", {"model": SERVED_NAME, "prompt": ids, "max_tokens": 2}),
           400, "prompt")


def test_prompt_list_larger_than_the_bound_is_400(runtime_server: RuntimeServer) -> None:
    r = _post(runtime_server, "/v1/completions", {"model": SERVED_NAME, "prompt": ["x"] * 1024, "max_tokens": 64})
    assert "1024 sequences" in _error(r, 400, "prompt")["message"]
    r = _post(runtime_server, "/v1/completions", {"model": SERVED_NAME, "prompt": ["x"] * 3, "n": 2})
    _error(r, 400, "prompt")


def test_engine_never_holds_more_sequences_than_the_bound(runtime_server: RuntimeServer) -> None:
    """max-in-flight 4: three requests of two prompts each run as 4 + 2 queued, checked on vLLM's own gauges."""
    body = {"model": SERVED_NAME, "prompt": ["a", "b"], "max_tokens": 150, "ignore_eos": True}
    held: list[float] = []

    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=runtime_server.base_url, timeout=120) as client:
            tasks = [asyncio.create_task(client.post("/v1/completions", json=body, headers=AUTH)) for _ in range(3)]
            while not all(t.done() for t in tasks):
                page = (await client.get("/metrics")).text
                held.append(sum(float(line.rpartition(" ")[2]) for line in page.splitlines()
                                if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting"))))
                await asyncio.sleep(0.05)
            return [t.result().status_code for t in tasks]

    assert asyncio.run(run()) == [200, 200, 200]
    assert max(held) == 4, held


def test_tenant_over_its_limit_gets_429_not_the_tokenizers_answer(runtime_server: RuntimeServer) -> None:
    """A tenant whose request bucket is empty is refused 429 even for a prompt far over the context."""
    headers = {"Authorization": f"Bearer {OVERLIMIT_KEY}", "Content-Type": "application/json"}
    statuses = [_post(runtime_server, "/v1/completions", {"model": SERVED_NAME, "prompt": "x", "max_tokens": 1},
                      headers).status_code for _ in range(2)]
    assert statuses[-1] == 429
    r = _post(runtime_server, "/v1/completions", {"model": SERVED_NAME, "prompt": "word " * 12000}, headers)
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded", r.text


def test_tenant_over_its_limit_is_refused_before_its_body_is_read(runtime_server: RuntimeServer) -> None:
    """The 429 comes from the headers alone: a 200 KB body that is announced but never sent is not waited for
    (reading it would end in the 3 s body timeout's 408 instead)."""
    headers = {"Authorization": f"Bearer {OVERLIMIT_KEY}", "Content-Type": "application/json"}
    for _ in range(2):  # empty the tenant's bucket (1 request per minute), whatever earlier tests left
        _post(runtime_server, "/v1/completions", {"model": SERVED_NAME, "prompt": "x", "max_tokens": 1}, headers)
    answer, _ = _raw(runtime_server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + OVERLIMIT_KEY.encode() + b"\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 200000\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429"), head
    assert b"retry-after" in head.lower() and json.loads(body)["error"]["code"] == "rate_limit_exceeded"


def test_long_unknown_model_name_is_not_echoed_whole(runtime_server: RuntimeServer) -> None:
    r = _post(runtime_server, "/v1/completions", {"model": "m" * 50_000, "prompt": "x"})
    assert len(_error(r, 404, "model")["message"]) < 300


def test_non_json_content_type_is_415(runtime_server: RuntimeServer) -> None:
    r = _post(runtime_server, "/v1/completions", {"model": SERVED_NAME, "prompt": "x"},
              {"Authorization": f"Bearer {MAIN_KEY}", "Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"


def _raw(server: RuntimeServer, data: bytes, timeout: float = 30) -> tuple[bytes, float]:
    """Send `data` on a raw connection; return what the server sent until it closed, and how long that took."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        start, received = time.monotonic(), b""
        while chunk := sock.recv(65536):
            received += chunk
        return received, time.monotonic() - start


def test_crlf_in_a_header_gets_an_openai_error(runtime_server: RuntimeServer) -> None:
    answer, _ = _raw(runtime_server, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: a\rb\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert json.loads(body)["error"]["type"] == "invalid_request_error"


def test_half_sent_head_and_body_are_closed_by_the_server(runtime_server: RuntimeServer) -> None:
    """--header-timeout 3 / --body-timeout 3: a slow client's connection is closed, not held open."""
    answer, _ = _raw(runtime_server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    assert answer == b""  # closed without an answer (the socket timeout of 30 s would raise instead)
    answer, _ = _raw(runtime_server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                     + MAIN_KEY.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"m")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and json.loads(body)["error"]["code"] == "request_timeout"


def test_client_gone_mid_body_is_not_an_error_in_the_log(runtime_server: RuntimeServer) -> None:
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", runtime_server.port)) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + MAIN_KEY.encode()
                         + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"m")
            time.sleep(0.2)
    assert httpx.get(runtime_server.base_url + "/health").status_code == 200
    assert "ClientDisconnect" not in runtime_server.log_text()
