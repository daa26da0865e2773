"""The quota's tenant policy with the real engine: two replicas, one real Redis, the policy mounted the kubelet way.

A ceiling caps a tenant's own limit; a policy change is picked up without a restart and without one
failed request meanwhile; the model-wide token budget is shared by both replicas through Redis, and once
one replica has spent it the other refuses before reading a body; every request carries its tenant's
priority into vLLM's priority scheduler.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from inferkube.runtime.tenancy.redis_limiter import tenant_keys
from tests.integration.runtime.conftest import (
    SERVED_NAME,
    RuntimeServer,
    start_runtime_server,
    wait_until_ready,
)
from tests.redis_server import RedisServer, needs_redis_server
from tests.unit.runtime.test_reload import KubeletVolume

pytestmark = [pytest.mark.engine, needs_redis_server]
KEY = "sk-quota-tenant-0123"
HEADERS = {"Authorization": f"Bearer {KEY}"}
TENANTS = f"tenants:\n  - name: team\n    key: {KEY}\n    tokensPerMinute: 1000000\n    priority: high\n"
BODY = {"model": SERVED_NAME, "prompt": "hello", "max_tokens": 4}


@dataclass
class Cluster:
    a: RuntimeServer
    b: RuntimeServer
    policy: KubeletVolume
    redis: RedisServer


@pytest.fixture(scope="module")
def cluster(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("quota-policy")
    redis_server = RedisServer(work).start()
    (work / "tenants.yaml").write_text(TENANTS)
    (work / "policy").mkdir()
    policy = KubeletVolume(work / "policy", "policy.yaml")
    path = policy.publish("service: llm/tiny\nceiling: {tokensPerMinute: 50000}\n")
    flags = ["--tenants-file", str(work / "tenants.yaml"), "--tenant-policy-file", str(path),
             "--reload-interval", "0.2", "--scheduling-policy", "priority", "--rate-limit-backend", "redis",
             "--redis-url", redis_server.url, "--", "--enforce-eager"]
    a = start_runtime_server(tiny_model_dir, flags, log_path=work / "a.log", wait_ready=False)
    b = start_runtime_server(tiny_model_dir, flags, log_path=work / "b.log", wait_ready=False)
    try:
        wait_until_ready(a)
        wait_until_ready(b)
        yield Cluster(a, b, policy, redis_server)
    finally:
        a.stop()
        b.stop()
        redis_server.stop()


def post(server: RuntimeServer) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/completions", json=BODY, headers=HEADERS, timeout=60)


def wait_for_limit(server: RuntimeServer, value: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if post(server).headers.get("x-ratelimit-limit-tokens") == value:
            return
        time.sleep(0.2)
    raise AssertionError(f"limit never became {value}")


def test_the_ceiling_caps_the_tenants_own_limit_and_priority_reaches_vllm(cluster: Cluster) -> None:
    r = post(cluster.a)
    assert r.status_code == 200, r.text
    assert r.headers["x-ratelimit-limit-tokens"] == "50000", "own 1,000,000 capped by the quota's ceiling"
    assert cluster.a.metric("inferkube_admitted_total", tenant="team", priority="high") >= 1


def test_a_policy_change_reloads_without_a_restart_or_a_failed_request(cluster: Cluster) -> None:
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set() and len(statuses) < 500:
            statuses.append(post(cluster.a).status_code)

    pid = cluster.a.proc.pid
    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        time.sleep(1.0)
        cluster.policy.publish("service: llm/tiny\nceiling: {tokensPerMinute: 40000}\n")
        wait_for_limit(cluster.a, "40000")
        cluster.policy.publish("ceiling: {tokensPerMinute: [broken\n")  # a broken version keeps the old one
        time.sleep(1.0)
    finally:
        stop.set()
        thread.join(60)
    assert statuses and set(statuses) == {200}, f"failed during the reload: {sorted(set(statuses))}"
    assert post(cluster.a).headers["x-ratelimit-limit-tokens"] == "40000"
    assert cluster.a.proc.poll() is None and cluster.a.proc.pid == pid
    assert cluster.a.metric("inferkube_config_reloads_total", file="policy", result="ok") >= 1
    assert cluster.a.metric("inferkube_config_reloads_total", file="policy", result="error") >= 1


def publish_and_wait(cluster: Cluster, text: str) -> None:
    """Publish a policy the kubelet way and wait until both replicas loaded it (without spending any budget)."""
    replicas = (cluster.a, cluster.b)
    before = {s.port: s.metric("inferkube_config_reloads_total", file="policy", result="ok") for s in replicas}
    cluster.policy.publish(text)
    for server in replicas:
        deadline = time.monotonic() + 30
        while server.metric("inferkube_config_reloads_total", file="policy", result="ok") <= before[server.port]:
            assert time.monotonic() < deadline, "the new policy was never loaded"
            time.sleep(0.2)


def test_the_model_budget_is_shared_by_two_replicas_through_redis(cluster: Cluster) -> None:
    # each request is estimated at prompt + 4 tokens; a budget of 60 admits a handful across both replicas
    publish_and_wait(cluster, "service: llm/tiny\nmodelTokensPerMinute: 60\n")
    answers = []
    for i in range(20):
        r = post(cluster.a if i % 2 == 0 else cluster.b)
        answers.append((i % 2, r.status_code, r.json().get("error", {}).get("code") if r.status_code != 200 else None))
        if r.status_code == 429:
            break
    refused = [a for a in answers if a[1] == 429]
    assert refused and refused[0][2] == "model_budget_exceeded", answers
    assert len(answers) < 20, "one budget for both replicas: it runs out well before 20 requests"
    ok_per_replica = {replica for replica, status, _ in answers if status == 200}
    assert ok_per_replica == {0, 1}, "both replicas drew from the same budget"


def _announce_body_and_wait(server: RuntimeServer, size: int, timeout: float = 20) -> bytes:
    """Send only the head of a POST announcing a `size`-byte body that never comes; what the server answers."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: " + str(size).encode()
                     + b"\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_a_model_budget_spent_on_one_replica_is_refused_on_the_other_before_the_body(cluster: Cluster) -> None:
    """Replica a spends the whole budget (one request whose real use is the budget); replica b then answers a
    request announcing 200 KB with 429 before one byte of the body is sent (else it would wait for it)."""
    probe = {**BODY, "max_tokens": 8, "ignore_eos": True}
    publish_and_wait(cluster, "service: llm/prebody\n")  # no budget yet: learn what the request really uses
    usage = httpx.post(cluster.a.base_url + "/v1/completions", json=probe, headers=HEADERS, timeout=60).json()["usage"]
    exact = usage["prompt_tokens"] + usage["completion_tokens"]
    publish_and_wait(cluster, f"service: llm/prebody\nmodelTokensPerMinute: {exact}\n")
    spend = httpx.post(cluster.a.base_url + "/v1/completions", json=probe, headers=HEADERS, timeout=60)
    assert spend.status_code == 200, spend.text  # reserved at most its lower bound, then charged what it used
    bucket = tenant_keys("model:llm/prebody")[1]
    deadline = time.monotonic() + 10  # the charge is settled in the background once the answer is out
    while float(cluster.redis.client().hget(bucket, "level") or exact) >= 1:
        assert time.monotonic() < deadline, "the spending request was never charged"
        time.sleep(0.02)
    refusals = cluster.b.metric("inferkube_rejections_total", reason="rate_limit")
    head, _, body = _announce_body_and_wait(cluster.b, 200_000).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429"), head
    assert int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"retry-after:"))) >= 1
    assert json.loads(body)["error"]["code"] == "model_budget_exceeded"
    assert cluster.b.metric("inferkube_rejections_total", reason="rate_limit") == refusals + 1
