"""The in-process rate limiter: token buckets per tenant, reconciliation, concurrency, headers."""

from __future__ import annotations

import asyncio

import pytest

from inferkube.runtime.tenancy import (
    MemoryRateLimiter,
    Tenant,
    build_rate_limiter,
    format_reset,
)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def limiter(clock: FakeClock, rpm: int | None = None, tpm: int | None = None) -> MemoryRateLimiter:
    return MemoryRateLimiter(rpm, tpm, window_seconds=60.0, clock=clock)


async def test_requests_per_minute_refuses_then_refills(clock: FakeClock) -> None:
    lim = limiter(clock)
    tenant = Tenant("alice", requests_per_minute=3)
    remaining = []
    for _ in range(3):
        decision = await lim.acquire(tenant, 10)
        assert decision.allowed and decision.reason == "ok"
        remaining.append(decision.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    refused = await lim.acquire(tenant, 10)
    assert not refused.allowed
    assert refused.reason == "requests"
    assert refused.retry_after == pytest.approx(20.0)  # 3 per minute = one every 20 s
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-reset-requests"] == "1m0s"  # 3 requests to refill
    assert "alice" in refused.message and "requests per minute" in refused.message
    clock.advance(19.9)
    assert not (await lim.acquire(tenant, 10)).allowed
    clock.advance(0.1)
    assert (await lim.acquire(tenant, 10)).allowed


async def test_refused_request_consumes_nothing(clock: FakeClock) -> None:
    lim = limiter(clock)
    tenant = Tenant("t", requests_per_minute=1, tokens_per_minute=100)
    assert (await lim.acquire(tenant, 60)).allowed
    for _ in range(5):
        assert not (await lim.acquire(tenant, 60)).allowed
    clock.advance(60)
    decision = await lim.acquire(tenant, 60)
    assert decision.allowed
    assert decision.headers["x-ratelimit-remaining-tokens"] == "40"


async def test_tokens_per_minute_with_refund_on_completion(clock: FakeClock) -> None:
    lim = limiter(clock)
    tenant = Tenant("t", tokens_per_minute=1000)
    first = await lim.acquire(tenant, 600)
    assert first.allowed
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert first.headers["x-ratelimit-remaining-tokens"] == "400"
    assert first.headers["x-ratelimit-reset-tokens"] == "36s"  # 600 tokens at 1000/60 per s
    refused = await lim.acquire(tenant, 600)
    assert not refused.allowed and refused.reason == "tokens" and not refused.exceeds_budget
    assert refused.retry_after == pytest.approx(12.0)  # 200 missing tokens at 1000/60 per s
    # The first request used only 100 of its 600 estimated tokens: 500 come back.
    await lim.complete(tenant, 600, 100)
    second = await lim.acquire(tenant, 600)
    assert second.allowed
    assert second.headers["x-ratelimit-remaining-tokens"] == "300"


async def test_actual_usage_above_estimate_is_charged(clock: FakeClock) -> None:
    lim = limiter(clock)
    tenant = Tenant("t", tokens_per_minute=1000)
    assert (await lim.acquire(tenant, 100)).allowed
    await lim.complete(tenant, 100, 700)  # 600 more than estimated
    decision = await lim.acquire(tenant, 200)
    assert decision.allowed
    assert decision.headers["x-ratelimit-remaining-tokens"] == "100"


async def test_charge_can_go_into_debt_but_at_most_one_window(clock: FakeClock) -> None:
    lim = limiter(clock)
    tenant = Tenant("t", tokens_per_minute=600)
    assert (await lim.acquire(tenant, 600)).allowed
    await lim.complete(tenant, 600, 100_000)
    refused = await lim.acquire(tenant, 1)
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"
    assert refused.retry_after == pytest.approx(60.1)  # from -600 up to 1 at 10 tokens/s
    clock.advance(60.1)
    assert (await lim.acquire(tenant, 1)).allowed


async def test_request_larger_than_whole_budget_is_distinguished(clock: FakeClock) -> None:
    lim = limiter(clock)
    tenant = Tenant("small", tokens_per_minute=500)
    decision = await lim.acquire(tenant, 501)
    assert not decision.allowed
    assert decision.reason == "tokens"
    assert decision.exceeds_budget
    assert "can never be admitted" in decision.message and "501" in decision.message
    assert decision.headers["x-ratelimit-limit-tokens"] == "500"
    # It did not consume anything: a request that fits still passes with the full budget.
    ok = await lim.acquire(tenant, 500)
    assert ok.allowed and not ok.exceeds_budget


async def test_both_limits_exhausted_reports_first_and_waits_for_both(clock: FakeClock) -> None:
    lim = limiter(clock)
    tenant = Tenant("t", requests_per_minute=60, tokens_per_minute=60)
    assert (await lim.acquire(tenant, 60)).allowed
    for _ in range(59):
        clock.advance(0)
        await lim.acquire(tenant, 0)
    refused = await lim.acquire(tenant, 30)
    assert refused.reason == "requests"
    assert refused.retry_after == pytest.approx(30.0)  # the token wait (30 s) is the longer one


async def test_max_concurrent_and_release_on_complete(clock: FakeClock) -> None:
    lim = limiter(clock)
    tenant = Tenant("t", max_concurrent=2)
    assert (await lim.acquire(tenant, 1)).allowed
    assert (await lim.acquire(tenant, 1)).allowed
    refused = await lim.acquire(tenant, 1)
    assert not refused.allowed and refused.reason == "concurrency"
    assert refused.retry_after == pytest.approx(1.0)
    assert lim.in_flight(tenant) == 2
    await lim.complete(tenant, 1, 1)
    assert (await lim.acquire(tenant, 1)).allowed
    for _ in range(5):  # extra completions never push the count below zero
        await lim.complete(tenant, 1, 1)
    assert lim.in_flight(tenant) == 0


async def test_tenants_have_separate_budgets(clock: FakeClock) -> None:
    lim = limiter(clock)
    alice, bob = Tenant("alice", requests_per_minute=1), Tenant("bob", requests_per_minute=1)
    assert (await lim.acquire(alice, 0)).allowed
    assert not (await lim.acquire(alice, 0)).allowed
    assert (await lim.acquire(bob, 0)).allowed


async def test_defaults_apply_when_tenant_sets_no_limit(clock: FakeClock) -> None:
    lim = MemoryRateLimiter(default_rpm=2, default_tpm=None, clock=clock)
    anonymous = Tenant("anonymous")
    first = await lim.acquire(anonymous, 10_000)
    assert first.headers == {
        "x-ratelimit-limit-requests": "2",
        "x-ratelimit-remaining-requests": "1",
        "x-ratelimit-reset-requests": "30s",
    }
    assert (await lim.acquire(anonymous, 10_000)).allowed
    assert not (await lim.acquire(anonymous, 10_000)).allowed
    # A tenant's own limit wins over the default.
    generous = Tenant("generous", requests_per_minute=100)
    assert all([(await lim.acquire(generous, 0)).allowed for _ in range(100)])


async def test_unlimited_tenant_has_no_headers(clock: FakeClock) -> None:
    lim = limiter(clock)
    for _ in range(1000):
        decision = await lim.acquire(Tenant("free"), 10**9)
        assert decision.allowed and decision.headers == {}


async def test_concurrent_acquires_never_overshoot(clock: FakeClock) -> None:
    lim = limiter(clock)
    tenant = Tenant("t", requests_per_minute=10, max_concurrent=50)
    decisions = await asyncio.gather(*(lim.acquire(tenant, 1) for _ in range(200)))
    assert sum(d.allowed for d in decisions) == 10


def test_real_clock_refills_with_a_short_window() -> None:
    lim = MemoryRateLimiter(default_rpm=2, window_seconds=0.2)
    tenant = Tenant("t")
    assert lim.acquire_now(tenant, 0).allowed and lim.acquire_now(tenant, 0).allowed
    assert not lim.acquire_now(tenant, 0).allowed
    import time

    time.sleep(0.12)
    assert lim.acquire_now(tenant, 0).allowed


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (-3, "0s"), (0.0004, "1ms"), (0.25, "250ms"), (1, "1s"), (1.5, "1.5s"), (59.9991, "1m0s"),
     (60, "1m0s"), (360, "6m0s"), (90.25, "1m30.25s")],
)
def test_reset_durations_look_like_openai(seconds: float, text: str) -> None:
    assert format_reset(seconds) == text


async def test_redis_limiter_does_not_call_redis_for_unlimited_tenants() -> None:
    # Port 1 on loopback refuses connections: any round trip would count a backend error.
    lim = build_rate_limiter("redis", "redis://127.0.0.1:1/0", False, None, None)
    try:
        decision = await lim.acquire(Tenant("free"), 10_000)
        await lim.complete(Tenant("free"), 10_000, 5)
        assert decision.allowed and decision.headers == {}
        assert lim.backend_errors == 0
    finally:
        await lim.close()


def test_build_rate_limiter_validates_backend() -> None:
    assert isinstance(build_rate_limiter("memory", None, True, 10, None), MemoryRateLimiter)
    with pytest.raises(ValueError, match="needs a Redis URL"):
        build_rate_limiter("redis", None, True, None, None)
    with pytest.raises(ValueError, match="unknown rate-limit backend"):
        build_rate_limiter("memcached", None, True, None, None)


async def test_precheck_answers_without_taking_anything(clock: FakeClock) -> None:
    """The check before the body is read: refuses exactly when any request would be refused, takes nothing."""
    lim = limiter(clock)
    tenant = Tenant("p", requests_per_minute=2, max_concurrent=1)
    for _ in range(3):
        assert (await lim.precheck(tenant)).tenant.allowed
    first = await lim.acquire(tenant, 1)
    assert first.allowed and first.headers["x-ratelimit-remaining-requests"] == "1"  # the prechecks took none
    busy = (await lim.precheck(tenant)).tenant
    assert not busy.allowed and busy.reason == "concurrency"
    await lim.complete(tenant, 1, 1)
    assert (await lim.acquire(tenant, 1)).allowed
    await lim.complete(tenant, 1, 1)
    empty = (await lim.precheck(tenant)).tenant
    assert not empty.allowed and empty.reason == "requests" and empty.retry_after == pytest.approx(30.0)
    assert lim.in_flight(tenant) == 0
    assert (await lim.precheck(Tenant("unlimited"))).tenant.allowed


async def test_precheck_asks_the_model_budget_for_its_least_cost_too(clock: FakeClock) -> None:
    lim = limiter(clock)
    tenant, budget = Tenant("t", requests_per_minute=10), Tenant("model:ns/svc", tokens_per_minute=60)
    assert (await lim.precheck(tenant)).budget is None, "no budget asked, none answered"
    assert (await lim.acquire(budget, 59)).allowed
    left = (await lim.precheck(tenant, budget, 1)).budget
    assert left is not None and left.allowed, "one token left: not spent"
    assert (await lim.acquire(budget, 1)).allowed
    spent = await lim.precheck(tenant, budget, 1)
    assert spent.tenant.allowed and spent.budget is not None and not spent.budget.allowed
    assert spent.budget.retry_after == pytest.approx(1.0), "one token drips back in a second"
    hit = (await lim.precheck(tenant, budget, 0)).budget
    assert hit is not None and hit.allowed, "a cache hit costs no tokens: only a budget in debt refuses it"
    assert (await lim.acquire(tenant, 0)).headers["x-ratelimit-remaining-requests"] == "9", "the prechecks took none"


async def test_a_changed_limit_keeps_what_is_spent(clock: FakeClock) -> None:
    """A reload (or a replica share of the model budget after a scale event) does not hand out a fresh bucket."""
    lim = limiter(clock)
    assert (await lim.acquire(Tenant("t", tokens_per_minute=100), 90)).allowed
    lowered = await lim.acquire(Tenant("t", tokens_per_minute=50), 11)
    assert not lowered.allowed and lowered.headers["x-ratelimit-remaining-tokens"] == "10"
    raised = await lim.acquire(Tenant("t", tokens_per_minute=200), 11)
    assert not raised.allowed and raised.headers["x-ratelimit-remaining-tokens"] == "10", "refills from there"
    clock.advance(3)  # 200 per minute: 10 more
    assert (await lim.acquire(Tenant("t", tokens_per_minute=200), 11)).allowed
