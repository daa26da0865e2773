"""The quota's tenant policy with the real engine: two replicas, one real Redis, the policy mounted the kubelet way.

A ceiling caps a tenant's own limit; a policy change is picked up without a restart and without one
failed request meanwhile; the model-wide token budget is shared by both replicas through Redis; every
request carries its tenant's priority into vLLM's priority scheduler.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.runtime.conftest import (
    SERVED_NAME,
    RuntimeServer,
    free_port,
    start_runtime_server,
    wait_until_ready,
)
from tests.integration.runtime.test_lifecycle import _start_redis
from tests.unit.runtime.test_reload import KubeletVolume

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(shutil.which("redis-server") is None,
                       reason="redis-server is not installed (apt-get install -y redis-server)"),
]
KEY = "sk-quota-tenant-0123"
HEADERS = {"Authorization": f"Bearer {KEY}"}
TENANTS = f"tenants:\n  - name: team\n    key: {KEY}\n    tokensPerMinute: 1000000\n    priority: high\n"
BODY = {"model": SERVED_NAME, "prompt": "hello", "max_tokens": 4}


@dataclass
class Cluster:
    a: RuntimeServer
    b: RuntimeServer
    policy: KubeletVolume


@pytest.fixture(scope="module")
def cluster(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("quota-policy")
    redis_port = free_port()
    redis_proc = _start_redis(redis_port, work)
    (work / "tenants.yaml").write_text(TENANTS)
    (work / "policy").mkdir()
    policy = KubeletVolume(work / "policy", "policy.yaml")
    path = policy.publish("service: llm/tiny\nceiling: {tokensPerMinute: 50000}\n")
    flags = ["--tenants-file", str(work / "tenants.yaml"), "--tenant-policy-file", str(path),
             "--reload-interval", "0.2", "--scheduling-policy", "priority", "--rate-limit-backend", "redis",
             "--redis-url", f"redis://127.0.0.1:{redis_port}/0", "--", "--enforce-eager"]
    a = start_runtime_server(tiny_model_dir, flags, log_path=work / "a.log", wait_ready=False)
    b = start_runtime_server(tiny_model_dir, flags, log_path=work / "b.log", wait_ready=False)
    try:
        wait_until_ready(a)
        wait_until_ready(b)
        yield Cluster(a, b, policy)
    finally:
        a.stop()
        b.stop()
        redis_proc.terminate()
        redis_proc.wait(10)


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


def test_the_model_budget_is_shared_by_two_replicas_through_redis(cluster: Cluster) -> None:
    # each request is estimated at prompt + 4 tokens; a budget of 60 admits a handful across both replicas
    reloads = {s.port: s.metric("inferkube_config_reloads_total", file="policy", result="ok") for s in (cluster.a, cluster.b)}
    cluster.policy.publish("service: llm/tiny\nmodelTokensPerMinute: 60\n")
    for server in (cluster.a, cluster.b):  # wait for the reload without spending the budget
        deadline = time.monotonic() + 30
        while server.metric("inferkube_config_reloads_total", file="policy", result="ok") <= reloads[server.port]:
            assert time.monotonic() < deadline, "the new policy was never loaded"
            time.sleep(0.2)
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
