"""The response cache on the real engine (CPU) with a real Redis, two replicas sharing it.

Replica A: Redis backend, TTL 120 s, semantic matching with the tiny local encoder. Replica B: same
Redis, TTL 2 s. Both have two tenants. The engine's own request counter (`vllm:request_success_total`
on /metrics) tells whether a request reached the engine. Replica B is restarted with another model
revision near the end, and Redis is stopped last.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from tests.integration.runtime.conftest import SERVED_NAME, RuntimeServer, start_runtime_server
from tests.redis_server import RedisServer, needs_redis_server

pytestmark = [pytest.mark.engine, needs_redis_server]
KEY_A, KEY_B = "sk-cache-tenant-a", "sk-cache-tenant-b"
TENANTS = f"tenants:\n  - name: a\n    key: {KEY_A}\n  - name: b\n    key: {KEY_B}\n"
ENGINE_REQUESTS = "vllm:request_success_total"
CACHE_HEADER = "x-inferkube-cache"


@dataclass
class Cluster:
    a: RuntimeServer
    b: RuntimeServer
    redis: RedisServer
    model_dir: Path
    work: Path
    tenants: Path


def _common_args(redis_url: str, tenants: Path) -> list[str]:
    return ["--tenants-file", str(tenants), "--response-cache", "--response-cache-backend", "redis",
            "--redis-url", redis_url, "--max-tokens-cap", "64", "--drain-timeout", "5"]


def _start_b(cluster_model: Path, work: Path, redis_url: str, tenants: Path, revision: str) -> RuntimeServer:
    return start_runtime_server(cluster_model, [*_common_args(redis_url, tenants), "--response-cache-ttl", "2",
                                                "--model-revision", revision, "--", "--enforce-eager"],
                                log_path=work / f"b-{revision}.log")


@pytest.fixture(scope="module")
def cluster(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("response-cache")
    tenants = work / "tenants.yaml"
    tenants.write_text(TENANTS)
    with RedisServer(work) as server:
        a = start_runtime_server(tiny_model_dir, [
            *_common_args(server.url, tenants), "--response-cache-ttl", "120", "--model-revision", "r1",
            "--response-cache-semantic-model", "builtin:tiny-embed", "--response-cache-similarity-threshold", "0.95",
            "--", "--enforce-eager"], log_path=work / "a.log", env={"INFERKUBE_TINY_MODEL_DIR": str(work / "tiny")})
        b = _start_b(tiny_model_dir, work, server.url, tenants, "r1")
        cluster = Cluster(a, b, server, tiny_model_dir, work, tenants)
        yield cluster
        for replica in (cluster.a, cluster.b):
            replica.stop()


def chat(server: RuntimeServer, text: str, key: str = KEY_A, headers: dict[str, str] | None = None,
         **body: Any) -> httpx.Response:
    payload = {"model": SERVED_NAME, "messages": [{"role": "user", "content": text}], "max_tokens": 8,
               "temperature": 0, **body}
    return httpx.post(server.base_url + "/v1/chat/completions", json=payload, timeout=120,
                      headers={"Authorization": f"Bearer {key}", **(headers or {})})


def engine_requests(server: RuntimeServer) -> float:
    return server.metric(ENGINE_REQUESTS)


def settle(server: RuntimeServer, expected: float, timeout: float = 30) -> float:
    """The engine counter once it reaches `expected` (vLLM updates it after the response is sent)."""
    deadline = time.monotonic() + timeout
    value = engine_requests(server)
    while value < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        value = engine_requests(server)
    return value


def unique(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:6]}"


def wait_stored(cluster: Cluster, before: int, timeout: float = 30) -> None:
    """Stores run in the background after the answer: wait until Redis has one more entry."""
    client = redis.Redis(host="127.0.0.1", port=cluster.redis.port)
    deadline = time.monotonic() + timeout
    while len(client.keys("inferkube:rc:x:*")) <= before:
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.05)


def entries(cluster: Cluster) -> int:
    return len(redis.Redis(host="127.0.0.1", port=cluster.redis.port).keys("inferkube:rc:x:*"))


def test_identical_greedy_request_never_reaches_the_engine_twice(cluster: Cluster) -> None:
    text, before = unique("tell me about kubernetes"), entries(cluster)
    first = chat(cluster.a, text)
    assert first.status_code == 200 and first.headers[CACHE_HEADER] == "miss"
    engine = settle(cluster.a, engine_requests(cluster.a))
    wait_stored(cluster, before)
    second = chat(cluster.a, text)
    assert second.status_code == 200 and second.headers[CACHE_HEADER] == "hit"
    assert second.json()["choices"] == first.json()["choices"] and second.json()["usage"] == first.json()["usage"]
    assert second.json()["id"] != first.json()["id"] and set(second.json()) == set(first.json())
    time.sleep(0.5)
    assert engine_requests(cluster.a) == engine
    assert cluster.a.metric("inferkube_response_cache_hits_total", match="exact") >= 1


def test_sampled_request_is_never_cached(cluster: Cluster) -> None:
    text = unique("write a poem")
    before = engine_requests(cluster.a)
    for _ in range(2):
        r = chat(cluster.a, text, temperature=None)
        assert r.status_code == 200 and r.headers[CACHE_HEADER] == "bypass"
    assert settle(cluster.a, before + 2) == before + 2
    assert cluster.a.metric("inferkube_response_cache_bypasses_total", reason="sampled") >= 2


def test_other_tenant_and_cache_control_miss(cluster: Cluster) -> None:
    text, before = unique("what is an operator"), entries(cluster)
    assert chat(cluster.a, text).headers[CACHE_HEADER] == "miss"
    wait_stored(cluster, before)
    assert chat(cluster.a, text, key=KEY_B).headers[CACHE_HEADER] == "miss"
    assert chat(cluster.a, text, headers={"Cache-Control": "no-cache"}).headers[CACHE_HEADER] == "bypass"
    assert chat(cluster.a, text).headers[CACHE_HEADER] == "hit"


def test_streaming_hit_replays_sse_the_openai_client_parses(cluster: Cluster) -> None:
    text, before = unique("stream me a story"), entries(cluster)
    client = openai.OpenAI(base_url=cluster.a.base_url + "/v1", api_key=KEY_A, max_retries=0)
    messages = [{"role": "user", "content": text}]
    fresh = list(client.chat.completions.create(model=SERVED_NAME, messages=messages, max_tokens=8, temperature=0,
                                                stream=True, stream_options={"include_usage": True}))
    wait_stored(cluster, before)
    engine = settle(cluster.a, engine_requests(cluster.a))
    raw = client.chat.completions.with_raw_response.create(
        model=SERVED_NAME, messages=messages, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True})
    assert raw.headers[CACHE_HEADER] == "hit"
    replayed = list(raw.parse())

    def text_of(chunks: list[Any]) -> str:
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert text_of(replayed) == text_of(fresh) != ""
    assert replayed[-1].usage is not None and replayed[-1].usage.completion_tokens == fresh[-1].usage.completion_tokens
    assert [c.choices[0].finish_reason for c in replayed if c.choices][-1] == "length"
    plain = chat(cluster.a, text)  # the stored stream also answers the non-streaming request
    assert plain.headers[CACHE_HEADER] == "hit" and plain.json()["choices"][0]["message"]["content"] == text_of(fresh)
    assert engine_requests(cluster.a) == engine


def test_two_replicas_share_hits_through_redis(cluster: Cluster) -> None:
    text, before = unique("explain rate limits"), entries(cluster)
    first = chat(cluster.a, text)
    wait_stored(cluster, before)
    engine_b = settle(cluster.b, engine_requests(cluster.b))
    second = chat(cluster.b, text)
    assert second.headers[CACHE_HEADER] == "hit"
    assert second.json()["choices"] == first.json()["choices"]
    time.sleep(0.5)
    assert engine_requests(cluster.b) == engine_b


def test_an_entry_expires_after_its_ttl(cluster: Cluster) -> None:
    text, before = unique("short lived"), entries(cluster)
    assert chat(cluster.b, text).headers[CACHE_HEADER] == "miss"  # B stores with a 2 s TTL
    wait_stored(cluster, before)
    time.sleep(2.5)
    assert chat(cluster.b, text).headers[CACHE_HEADER] == "miss"


def test_semantic_match_same_words_hit_other_question_and_other_tenant_miss(cluster: Cluster) -> None:
    tag = uuid.uuid4().hex[:6]
    before = entries(cluster)
    first = chat(cluster.a, f"{tag} what is the capital of france")
    assert first.headers[CACHE_HEADER] == "miss"
    wait_stored(cluster, before)
    close = chat(cluster.a, f"{tag} what the capital of france is")  # same words, other order
    assert close.headers[CACHE_HEADER] == "semantic-hit"
    assert float(close.headers["x-inferkube-cache-similarity"]) >= 0.95
    assert close.json()["choices"] == first.json()["choices"]
    assert chat(cluster.a, f"{tag} what is the capital of spain").headers[CACHE_HEADER] == "miss"
    assert chat(cluster.a, f"{tag} what the capital of france is", key=KEY_B).headers[CACHE_HEADER] == "miss"


def test_a_new_model_revision_never_serves_old_answers(cluster: Cluster) -> None:
    text, before = unique("revision check"), entries(cluster)
    assert chat(cluster.a, text).headers[CACHE_HEADER] == "miss"
    wait_stored(cluster, before)
    assert chat(cluster.b, text).headers[CACHE_HEADER] == "hit"
    cluster.b.stop()
    cluster.b = _start_b(cluster.model_dir, cluster.work, cluster.redis.url, cluster.tenants, "r2")
    assert chat(cluster.b, text).headers[CACHE_HEADER] == "miss"


def test_redis_stopped_requests_still_succeed_and_bypasses_are_counted(cluster: Cluster) -> None:
    before = cluster.a.metric("inferkube_response_cache_bypasses_total", reason="backend_unavailable")
    cluster.redis.stop()
    for i in range(3):
        r = chat(cluster.a, unique(f"redis is gone {i}"))
        assert r.status_code == 200 and r.headers[CACHE_HEADER] == "bypass"
        assert r.json()["choices"][0]["message"]["content"] is not None
    after = cluster.a.metric("inferkube_response_cache_bypasses_total", reason="backend_unavailable")
    assert after >= before + 3
