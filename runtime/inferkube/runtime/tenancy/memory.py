"""In-process rate limiter: token buckets per tenant, for one replica."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from inferkube.runtime.tenancy.decision import (
    CONCURRENCY_RETRY_AFTER,
    REASON_CONCURRENCY,
    REASON_OK,
    REASON_REQUESTS,
    REASON_TOKENS,
    EffectiveLimits,
    Precheck,
    RateLimitDecision,
    Ticket,
    budget_exceeded,
    effective_limits,
    ratelimit_headers,
    rejection_message,
)
from inferkube.runtime.tenancy.tenants import Tenant

# Float refills land a hair below whole numbers (0.9999999); a missing sliver is not a refusal.
_EPSILON = 1e-6


class TokenBucket:
    """A bucket of `capacity` tokens refilled continuously at `capacity / window` per second.

    The level may go below zero when actual usage is charged after the fact (debt), but never
    below `-capacity`, so one bad estimate costs at most one extra window.
    """

    __slots__ = ("capacity", "window", "level", "updated")

    def __init__(self, capacity: int, window: float, now: float) -> None:
        self.capacity = capacity
        self.window = window
        self.level = float(capacity)
        self.updated = now

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self.capacity / self.window

    def refill(self, now: float) -> None:
        """Add what has dripped in since the last update."""
        elapsed = max(0.0, now - self.updated)
        self.level = min(float(self.capacity), self.level + elapsed * self.rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until the level reaches `amount` (0 if already there)."""
        return max(0.0, (amount - self.level) / self.rate)

    def time_to_full(self) -> float:
        """Seconds until the bucket is full again (the `reset` header)."""
        return max(0.0, (self.capacity - self.level) / self.rate)

    def adjust(self, delta: float) -> None:
        """Add (refund) or remove (charge) tokens, keeping the level in [-capacity, capacity]."""
        self.level = max(-float(self.capacity), min(float(self.capacity), self.level + delta))


@dataclass(slots=True)
class _TenantState:
    requests: TokenBucket | None = None
    tokens: TokenBucket | None = None
    in_flight: int = 0


class MemoryRateLimiter:
    """Per-tenant requests/tokens per minute and concurrency, kept in this process."""

    def __init__(
        self,
        default_rpm: int | None = None,
        default_tpm: int | None = None,
        default_max_concurrent: int | None = None,
        *,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self._defaults = (default_rpm, default_tpm, default_max_concurrent)
        self._window = window_seconds
        self._clock = clock
        self._states: dict[str, _TenantState] = {}
        # acquire/complete never await while holding state, so they are atomic for asyncio; the
        # lock also makes them safe if a thread (e.g. a sync test or a threadpool route) calls in.
        self._lock = threading.Lock()

    @property
    def backend_errors(self) -> int:
        """Always 0: memory cannot be unreachable."""
        return 0

    def limits_for(self, tenant: Tenant) -> EffectiveLimits:
        """The limits in force for `tenant`."""
        return effective_limits(tenant, *self._defaults)

    def _bucket(self, current: TokenBucket | None, capacity: int | None, now: float) -> TokenBucket | None:
        if capacity is None:
            return None
        if current is None:
            return TokenBucket(capacity, self._window, now)
        current.refill(now)
        if current.capacity != capacity:
            # A reloaded limit (or a new replica share of the model budget) keeps what is spent: a lower
            # one caps the level, a higher one refills from there, as the Redis script does. A fresh full
            # bucket would hand out a whole extra minute at every reload or scale event.
            bucket = TokenBucket(capacity, self._window, now)
            bucket.level = max(-float(capacity), min(float(capacity), current.level))
            return bucket
        return current

    def _state(self, tenant: Tenant, limits: EffectiveLimits, now: float) -> _TenantState:
        state = self._states.get(tenant.name)
        if state is None:
            state = self._states[tenant.name] = _TenantState()
        state.requests = self._bucket(state.requests, limits.requests_per_minute, now)
        state.tokens = self._bucket(state.tokens, limits.tokens_per_minute, now)
        return state

    @staticmethod
    def _headers(limits: EffectiveLimits, state: _TenantState) -> dict[str, str]:
        req, tok = state.requests, state.tokens
        return ratelimit_headers(
            limits,
            req.level if req else None,
            req.time_to_full() if req else 0.0,
            tok.level if tok else None,
            tok.time_to_full() if tok else 0.0,
        )

    async def acquire(self, tenant: Tenant, estimated_tokens: int) -> RateLimitDecision:
        """Take one request, `estimated_tokens` tokens and a concurrency slot, or say why not."""
        return self.acquire_now(tenant, estimated_tokens)

    async def precheck(self, tenant: Tenant, budget: Tenant | None = None, budget_tokens: int = 0) -> Precheck:
        """What `acquire` would answer now for a request of no tokens of `tenant` and `budget_tokens` of the
        model budget `budget`, taking nothing (both under one hold of the lock)."""
        with self._lock:
            shared = self._decide(budget, max(0, int(budget_tokens)), take=False) if budget is not None else None
            return Precheck(self._decide(tenant, 0, take=False), shared)

    def acquire_now(self, tenant: Tenant, estimated_tokens: int, take: bool = True) -> RateLimitDecision:
        """Synchronous `acquire` (the memory backend never waits); `take=False` only asks."""
        with self._lock:
            return self._decide(tenant, max(0, int(estimated_tokens)), take)

    def _decide(self, tenant: Tenant, cost: int, take: bool) -> RateLimitDecision:
        """The decision for `cost` tokens of `tenant` (taken when allowed and `take`); the caller holds the lock."""
        limits = self.limits_for(tenant)
        if limits.unlimited:
            if take:
                self._states.setdefault(tenant.name, _TenantState()).in_flight += 1
            return RateLimitDecision(allowed=True)
        state = self._state(tenant, limits, self._clock())
        req, tok = state.requests, state.tokens
        if tok is not None and cost > tok.capacity:
            return budget_exceeded(tenant, cost, tok.capacity, self._headers(limits, state))
        reason, retry_after = REASON_OK, 0.0
        if req is not None and req.level < 1 - _EPSILON:
            reason, retry_after = REASON_REQUESTS, req.wait_for(1)
        if tok is not None and tok.level < cost - _EPSILON:
            reason = reason if reason != REASON_OK else REASON_TOKENS
            retry_after = max(retry_after, tok.wait_for(cost))
        if reason == REASON_OK and limits.max_concurrent is not None:
            if state.in_flight >= limits.max_concurrent:
                reason, retry_after = REASON_CONCURRENCY, CONCURRENCY_RETRY_AFTER
        if reason != REASON_OK:
            return RateLimitDecision(
                allowed=False,
                reason=reason,
                retry_after=retry_after,
                headers=self._headers(limits, state),
                message=rejection_message(tenant, reason, retry_after),
            )
        if take:
            if req is not None:
                req.adjust(-1)
            if tok is not None:
                tok.adjust(-cost)
            state.in_flight += 1
        return RateLimitDecision(allowed=True, headers=self._headers(limits, state))

    async def complete(self, tenant: Tenant, estimated_tokens: int, actual_tokens: int,
                       ticket: Ticket | None = None) -> None:
        """Refund or charge the difference between estimated and actual tokens; free the slot.

        Every slot of a tenant is alike here, so `ticket` is not needed (the Redis limiter uses it).
        """
        self.complete_now(tenant, estimated_tokens, actual_tokens)

    def complete_now(self, tenant: Tenant, estimated_tokens: int, actual_tokens: int) -> None:
        """Synchronous `complete`."""
        limits = self.limits_for(tenant)
        with self._lock:
            state = self._states.get(tenant.name)
            if state is None:
                return
            state.in_flight = max(0, state.in_flight - 1)
            if state.tokens is not None and limits.tokens_per_minute is not None:
                state.tokens.refill(self._clock())
                state.tokens.adjust(max(0, int(estimated_tokens)) - max(0, int(actual_tokens)))

    def in_flight(self, tenant: Tenant) -> int:
        """Requests of `tenant` acquired and not yet completed."""
        state = self._states.get(tenant.name)
        return state.in_flight if state else 0

    async def close(self) -> None:
        """Nothing to release."""
        self._states.clear()
