"""The Redis rate limiter against a real `redis-server` on 127.0.0.1 (started by these tests).

Needs Debian's `redis-server` binary (`apt-get install -y redis-server`).
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from inferkube.runtime.tenancy import Tenant, build_rate_limiter
from inferkube.runtime.tenancy.redis_limiter import RedisRateLimiter, tenant_keys
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server this test may stop and restart."""
    with RedisServer(tmp_path) as server:
        yield server


Factory = Callable[..., RedisRateLimiter]


@pytest.fixture
async def make_limiter() -> AsyncIterator[Factory]:
    made: list[RedisRateLimiter] = []

    def make(url: str, fail_open: bool = False, **options: object) -> RedisRateLimiter:
        limiter = build_rate_limiter("redis", url, fail_open, None, None, **options)
        assert isinstance(limiter, RedisRateLimiter)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


@pytest.fixture
def name() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def test_two_replicas_share_one_request_budget(
    redis_server: RedisServer, make_limiter: Factory, name: str
) -> None:
    a, b = make_limiter(redis_server.url), make_limiter(redis_server.url)
    tenant = Tenant(name, requests_per_minute=5)
    results = [await a.acquire(tenant, 1) for _ in range(3)] + [await b.acquire(tenant, 1) for _ in range(2)]
    assert all(d.allowed for d in results)
    assert [d.headers["x-ratelimit-remaining-requests"] for d in results] == ["4", "3", "2", "1", "0"]
    for limiter in (a, b):
        refused = await limiter.acquire(tenant, 1)
        assert not refused.allowed and refused.reason == "requests"
        assert 11.5 <= refused.retry_after <= 12.0  # 5 per minute = one every 12 s
        assert refused.headers["x-ratelimit-limit-requests"] == "5"
    # Another tenant is untouched.
    assert (await a.acquire(Tenant(name + "-other", requests_per_minute=5), 1)).allowed


async def test_token_budget_is_shared_and_reconciled(
    redis_server: RedisServer, make_limiter: Factory, name: str
) -> None:
    a, b = make_limiter(redis_server.url), make_limiter(redis_server.url)
    tenant = Tenant(name, tokens_per_minute=1000)
    first = await a.acquire(tenant, 700)
    assert first.allowed and first.headers["x-ratelimit-remaining-tokens"] == "300"
    refused = await b.acquire(tenant, 700)
    assert not refused.allowed and refused.reason == "tokens" and not refused.exceeds_budget
    assert 23.5 <= refused.retry_after <= 24.0  # 400 missing tokens at 1000/60 per s
    await a.complete(tenant, 700, 200)  # refund 500 on replica a, visible to replica b
    second = await b.acquire(tenant, 700)
    assert second.allowed
    assert 100 <= int(second.headers["x-ratelimit-remaining-tokens"]) <= 110
    await b.complete(tenant, 700, 1500)  # charged 800 more: the budget goes into debt
    assert not (await a.acquire(tenant, 1)).allowed


async def test_request_over_whole_budget_is_distinguished(
    redis_server: RedisServer, make_limiter: Factory, name: str
) -> None:
    lim = make_limiter(redis_server.url)
    decision = await lim.acquire(Tenant(name, tokens_per_minute=100), 101)
    assert not decision.allowed and decision.reason == "tokens" and decision.exceeds_budget
    assert decision.headers["x-ratelimit-remaining-tokens"] == "100"


async def test_keys_are_namespaced_and_expire(
    redis_server: RedisServer, make_limiter: Factory, name: str
) -> None:
    lim = make_limiter(redis_server.url, window_seconds=0.5)
    tenant = Tenant(name, requests_per_minute=2, tokens_per_minute=100, max_concurrent=3)
    assert (await lim.acquire(tenant, 50)).allowed
    await lim.complete(tenant, 50, 50)
    sync = redis_server.client()
    keys = sorted(sync.keys(f"inferkube:rl:{{{name}}}:*"))
    assert keys == sorted(tenant_keys(name)[:2])  # the released lease left no concurrency key
    for key in keys:
        assert 0 < sync.pttl(key) <= 1500  # expires once the bucket would be full again (+1 s)
    # The scripts ran with EVALSHA from the server's script cache.
    assert sync.script_exists(lim.script_sha) == [True]
    deadline = time.monotonic() + 5
    while sync.exists(*keys) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert sync.exists(*keys) == 0
    fresh = await lim.acquire(tenant, 0)
    assert fresh.headers["x-ratelimit-remaining-requests"] == "1"
    assert fresh.headers["x-ratelimit-remaining-tokens"] == "100"
    sync.close()


async def test_concurrency_is_shared_and_released(
    redis_server: RedisServer, make_limiter: Factory, name: str
) -> None:
    a, b = make_limiter(redis_server.url), make_limiter(redis_server.url)
    tenant = Tenant(name, max_concurrent=2)
    assert (await a.acquire(tenant, 1)).allowed
    assert (await b.acquire(tenant, 1)).allowed
    refused = await a.acquire(tenant, 1)
    assert not refused.allowed and refused.reason == "concurrency" and refused.retry_after == 1.0
    await b.complete(tenant, 1, 1)
    assert (await a.acquire(tenant, 1)).allowed
    await a.complete(tenant, 1, 1)
    await a.complete(tenant, 1, 1)
    sync = redis_server.client()
    assert sync.zcard(tenant_keys(name)[2]) == 0
    sync.close()


async def test_precheck_is_shared_and_takes_nothing(
    redis_server: RedisServer, make_limiter: Factory, name: str
) -> None:
    """One replica's precheck sees what the other took; it never takes a request or a slot itself."""
    a, b = make_limiter(redis_server.url), make_limiter(redis_server.url)
    tenant = Tenant(name, requests_per_minute=2, max_concurrent=1)
    for _ in range(3):
        assert (await a.precheck(tenant)).tenant.allowed
    assert (await b.acquire(tenant, 1)).headers["x-ratelimit-remaining-requests"] == "1"
    busy = (await a.precheck(tenant)).tenant
    assert not busy.allowed and busy.reason == "concurrency"
    await b.complete(tenant, 1, 1)
    assert (await a.acquire(tenant, 1)).allowed
    await a.complete(tenant, 1, 1)
    empty = (await b.precheck(tenant)).tenant
    assert not empty.allowed and empty.reason == "requests" and 29 <= empty.retry_after <= 30
    sync = redis_server.client()
    assert sync.zcard(tenant_keys(name)[2]) == 0
    sync.close()


async def test_dead_replica_does_not_leak_its_slot(
    redis_server: RedisServer, make_limiter: Factory, name: str
) -> None:
    doomed = make_limiter(redis_server.url, lease_ttl_seconds=0.6)
    survivor = make_limiter(redis_server.url, lease_ttl_seconds=0.6)
    tenant = Tenant(name, max_concurrent=1)
    assert (await doomed.acquire(tenant, 1)).allowed
    await doomed.close()  # the replica dies mid-request: no complete, no more lease renewals
    assert (await survivor.acquire(tenant, 1)).reason == "concurrency"
    started = time.monotonic()
    while not (await survivor.acquire(tenant, 1)).allowed:
        assert time.monotonic() - started < 3, "the dead replica's slot never came back"
        await asyncio.sleep(0.05)
    assert time.monotonic() - started < 1.0


async def test_precheck_asks_the_tenant_and_the_model_budget_in_one_round_trip(
    redis_server: RedisServer, make_limiter: Factory, name: str
) -> None:
    """The model budget another replica spent refuses before the body, from the same script call as the
    tenant's own precheck; nothing is taken."""
    spender = make_limiter(redis_server.url)
    asker, client = flaky_limiter(redis_server, fail_open=True)
    tenant, budget = Tenant(name, requests_per_minute=5), Tenant(f"model:{name}", tokens_per_minute=60)
    try:
        await asker.precheck(tenant, budget, 1)  # the first call also loads the script
        assert (await spender.acquire(budget, 59)).allowed
        calls = client.calls
        left = await asker.precheck(tenant, budget, 1)
        assert client.calls == calls + 1, "one EVALSHA for the tenant and the budget"
        assert left.tenant.allowed and left.budget is not None and left.budget.allowed, "one token left"
        assert (await spender.acquire(budget, 1)).allowed
        spent = await asker.precheck(tenant, budget, 1)
        assert spent.tenant.allowed and spent.budget is not None and not spent.budget.allowed
        assert 0.9 <= spent.budget.retry_after <= 1.0, "one token drips back in a second"
        own = await asker.acquire(tenant, 0)
        assert own.headers["x-ratelimit-remaining-requests"] == "4", "the prechecks took no request"
        client.fail_next = 1
        down = await asker.precheck(tenant, budget, 1)
        assert down.tenant.allowed and down.budget is not None and down.budget.allowed, "the acquire decides then"
    finally:
        await asker.close()


async def test_live_lease_is_renewed_past_its_ttl(
    redis_server: RedisServer, make_limiter: Factory, name: str
) -> None:
    holder = make_limiter(redis_server.url, lease_ttl_seconds=0.6)
    other = make_limiter(redis_server.url, lease_ttl_seconds=0.6)
    tenant = Tenant(name, max_concurrent=1)
    assert (await holder.acquire(tenant, 1)).allowed
    for _ in range(6):  # a long request: 1.5 s, more than twice the lease TTL (renewed every 0.2 s)
        await asyncio.sleep(0.25)
        assert (await other.acquire(tenant, 1)).reason == "concurrency"
    await holder.complete(tenant, 1, 1)
    assert (await other.acquire(tenant, 1)).allowed


async def test_fail_open_and_fail_closed_when_redis_stops(
    own_redis: RedisServer, make_limiter: Factory
) -> None:
    tenant = Tenant("t", requests_per_minute=100, max_concurrent=10)
    open_lim = make_limiter(own_redis.url, fail_open=True, reconnect_backoff_seconds=0.2)
    closed_lim = make_limiter(own_redis.url, fail_open=False, reconnect_backoff_seconds=0.2)
    assert (await open_lim.acquire(tenant, 1)).allowed
    assert (await closed_lim.acquire(tenant, 1)).allowed
    own_redis.stop()

    for _ in range(3):
        started = time.monotonic()
        opened = await open_lim.acquire(tenant, 1)
        closed = await closed_lim.acquire(tenant, 1)
        assert time.monotonic() - started < 0.3  # two calls, each bounded by 0.1 s (refused: ~ms)
        assert opened.allowed and opened.reason == "backend_unavailable"
        assert not closed.allowed and closed.reason == "backend_unavailable" and closed.retry_after == 1.0
    assert open_lim.backend_errors == 3 and closed_lim.backend_errors == 3
    for _ in range(3):  # let in without a slot: their ends free nothing and need no Redis
        await open_lim.complete(tenant, 1, 1)
    assert open_lim.backend_errors == 3
    await open_lim.complete(tenant, 1, 1)  # the first request's slot: a failed release is counted, never raised
    assert open_lim.backend_errors == 4

    own_redis.start()  # same port: both limiters recover once the back-off has passed
    await asyncio.sleep(0.25)
    assert (await open_lim.acquire(tenant, 1)).reason == "ok"
    assert (await closed_lim.acquire(tenant, 1)).allowed


async def test_unresponsive_redis_never_stalls_a_request(make_limiter: Factory) -> None:
    # A peer that accepts connections and never answers (a hung or black-holed Redis).
    accepted: list[socket.socket] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    port = listener.getsockname()[1]

    async def accept_forever() -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(listener)
            accepted.append(conn)

    acceptor = asyncio.create_task(accept_forever())
    try:
        lim = make_limiter(f"redis://127.0.0.1:{port}/0", fail_open=False, reconnect_backoff_seconds=0.0,
                           timeout_seconds=0.1)
        tenant = Tenant("t", requests_per_minute=10)
        for _ in range(3):
            started = time.monotonic()
            decision = await lim.acquire(tenant, 1)
            elapsed = time.monotonic() - started
            assert decision.reason == "backend_unavailable" and not decision.allowed
            # The bound is 0.1 s; the rest is slack for a busy CI machine.
            assert elapsed < 0.3, f"acquire took {elapsed:.3f}s against a hung Redis"
        assert lim.backend_errors == 3
    finally:
        acceptor.cancel()
        for conn in accepted:
            conn.close()
        listener.close()


_BUSY_LUA = """
local t0 = redis.call('TIME')
local start = tonumber(t0[1]) * 1000 + tonumber(t0[2]) / 1000
while true do
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 - start >= tonumber(ARGV[1]) then return 1 end
end
"""


class FlakyRedis(aioredis.Redis):
    """A real client whose next `fail_next` script calls fail before reaching Redis, or answer `delay` late."""

    fail_next = 0
    delay = 0.0
    calls = 0

    async def evalsha(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            raise redis.ConnectionError("injected: connection dropped")
        if self.delay:
            await asyncio.sleep(self.delay)
        return await super().evalsha(*args, **kwargs)


def flaky_limiter(server: RedisServer, fail_open: bool, **options: Any) -> tuple[RedisRateLimiter, FlakyRedis]:
    client = FlakyRedis.from_url(server.url)
    return RedisRateLimiter(server.url, fail_open=fail_open, client=client, **options), client


async def _one_request(lim: RedisRateLimiter, tenant: Tenant, admitted: asyncio.Event,
                       finish: asyncio.Event) -> bool:
    """What serving does per request, in its own task: acquire, run until `finish`, complete its ticket."""
    decision = await lim.acquire(tenant, 1)
    if not decision.allowed:
        return False
    admitted.set()
    await finish.wait()
    await lim.complete(tenant, 1, 1, decision.ticket)
    return True


async def test_request_let_in_without_a_slot_does_not_free_another_requests_slot(
    redis_server: RedisServer, name: str
) -> None:
    lim, client = flaky_limiter(redis_server, fail_open=True)
    tenant = Tenant(name, max_concurrent=1)
    try:
        a_in, a_done = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(_one_request(lim, tenant, a_in, a_done))
        await a_in.wait()
        client.fail_next = 1  # Redis hiccups for request B only: fail open, B runs without a slot
        b_in, b_done = asyncio.Event(), asyncio.Event()
        b_done.set()
        assert await asyncio.create_task(_one_request(lim, tenant, b_in, b_done))
        # B has ended; A is still running and still holds the tenant's only slot.
        refused = await lim.acquire(tenant, 1)
        assert not refused.allowed and refused.reason == "concurrency"
        a_done.set()
        assert await a
        assert (await lim.acquire(tenant, 1)).allowed
        await lim.complete(tenant, 1, 1)
        sync = redis_server.client()
        assert sync.zcard(tenant_keys(name)[2]) == 0 and lim.leases_held(tenant) == 0
        sync.close()
    finally:
        await lim.close()


async def test_one_failed_call_does_not_mark_redis_down(redis_server: RedisServer, name: str) -> None:
    lim, client = flaky_limiter(redis_server, fail_open=False)
    tenant = Tenant(name, requests_per_minute=100)
    try:
        client.fail_next = 1
        assert (await lim.acquire(tenant, 1)).reason == "backend_unavailable"
        assert (await lim.acquire(tenant, 1)).allowed  # the next request goes straight to Redis again
        client.fail_next = 3
        for _ in range(3):
            assert (await lim.acquire(tenant, 1)).reason == "backend_unavailable"
        calls = client.calls
        # Three failures in a row: Redis is skipped for the back-off, without a round trip.
        assert (await lim.acquire(tenant, 1)).reason == "backend_unavailable"
        assert client.calls == calls
    finally:
        await lim.close()


async def test_default_bound_tolerates_a_slow_answer(redis_server: RedisServer, name: str) -> None:
    lim, client = flaky_limiter(redis_server, fail_open=False)
    client.delay = 0.3  # a busy API process answers late, yet well within the default 0.5 s
    try:
        assert (await lim.acquire(Tenant(name, requests_per_minute=100), 1)).allowed
        assert lim.backend_errors == 0
    finally:
        await lim.close()


async def test_timed_out_acquire_applied_late_does_not_lock_the_tenant_out(
    redis_server: RedisServer, make_limiter: Factory, name: str
) -> None:
    lim = make_limiter(redis_server.url, fail_open=False, timeout_seconds=0.1)
    tenant = Tenant(name, requests_per_minute=1000, max_concurrent=1)
    assert (await lim.acquire(Tenant(name + "-warm", max_concurrent=1), 1)).allowed  # connection is open
    sync = redis_server.client()
    # Another client's slow script blocks Redis for 0.4 s: our acquire gives up after 0.1 s, but
    # Redis already holds it and runs it once the slow script ends.
    busy = asyncio.create_task(asyncio.to_thread(sync.eval, _BUSY_LUA, 0, 400))
    await asyncio.sleep(0.1)
    started = time.monotonic()
    assert (await lim.acquire(tenant, 1)).reason == "backend_unavailable"
    assert time.monotonic() - started < 0.3
    await busy
    # The late script did run: it took one request from the bucket (the limiter's clean-up of its slot may
    # already have run, so the slot itself is no evidence either way) ...
    # Redis runs it some moment after the slow script ends: poll for its trace.
    deadline = time.monotonic() + 5
    while (level := sync.hget(tenant_keys(name)[0], "level")) is None:
        assert time.monotonic() < deadline, "the timed-out acquire never reached Redis"
        await asyncio.sleep(0.02)
    assert float(level) < 1000
    # ... and the slot it took is removed by the limiter instead of being left for the 30 s TTL.
    deadline = time.monotonic() + 5
    while not (decision := await lim.acquire(tenant, 1)).allowed:
        assert decision.reason in ("concurrency", "backend_unavailable")
        assert time.monotonic() < deadline, "the timed-out request's slot was never freed"
        await asyncio.sleep(0.1)
    await lim.complete(tenant, 1, 1)
    sync.close()


async def test_the_ticket_handed_back_frees_that_requests_slot(redis_server: RedisServer, name: str) -> None:
    """Two requests of one task end in either order: each `complete` frees what its own acquire took."""
    lim, client = flaky_limiter(redis_server, fail_open=True)
    tenant = Tenant(name, max_concurrent=1)
    try:
        with_slot = await lim.acquire(tenant, 1)
        client.fail_next = 1  # the second request is let in without a slot (fail open)
        without_slot = await lim.acquire(tenant, 1)
        assert with_slot.allowed and without_slot.allowed and without_slot.reason == "backend_unavailable"
        await lim.complete(tenant, 1, 1, with_slot.ticket)  # the request holding the slot ends first
        assert lim.leases_held(tenant) == 0
        assert (await lim.acquire(tenant, 1)).allowed, "the slot came back"
    finally:
        await lim.close()
