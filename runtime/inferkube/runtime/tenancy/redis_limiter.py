"""Rate limiter shared by all replicas through Redis: one atomic Lua script per decision."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Coroutine
from importlib import resources
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from inferkube.runtime.tenancy.decision import (
    BACKEND_RETRY_AFTER,
    CONCURRENCY_RETRY_AFTER,
    REASON_BACKEND_UNAVAILABLE,
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

log = logging.getLogger(__name__)

KEY_PREFIX = "inferkube:rl"
_REASONS = {0: REASON_OK, 1: REASON_REQUESTS, 2: REASON_TOKENS, 3: REASON_CONCURRENCY}
_T = TypeVar("_T")
# What a Redis outage looks like (ConnectionError is an OSError; asyncio.timeout raises TimeoutError).
_BACKEND_ERRORS = (RedisError, OSError, TimeoutError)
_WARN_EVERY_SECONDS = 10.0


class _MarkedDown(ConnectionError):
    """Redis was skipped: it failed repeatedly a moment ago (nothing was sent)."""


def tenant_keys(tenant_name: str, prefix: str = KEY_PREFIX) -> list[str]:
    """The three Redis keys of one tenant; the `{tenant}` hash tag keeps them in one Cluster slot."""
    base = f"{prefix}:{{{tenant_name}}}"
    return [f"{base}:requests", f"{base}:tokens", f"{base}:concurrency"]


class RedisRateLimiter:
    """Token buckets and concurrency leases in Redis, so several replicas share one budget.

    Concurrency slots are leases in a sorted set scored by expiry; this replica renews its live
    leases in the background, so a replica that dies leaks its slots for at most `lease_ttl`.
    """

    def __init__(
        self,
        redis_url: str,
        *,
        fail_open: bool,
        default_rpm: int | None = None,
        default_tpm: int | None = None,
        default_max_concurrent: int | None = None,
        window_seconds: float = 60.0,
        timeout_seconds: float = 0.5,
        lease_ttl_seconds: float = 30.0,
        reconnect_backoff_seconds: float = 0.5,
        down_after_failures: int = 3,
        key_prefix: str = KEY_PREFIX,
        client: aioredis.Redis | None = None,
    ) -> None:
        if window_seconds <= 0 or lease_ttl_seconds <= 0 or timeout_seconds <= 0:
            raise ValueError("window_seconds, lease_ttl_seconds and timeout_seconds must be positive")
        self._client = client or aioredis.Redis.from_url(
            redis_url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._script = self._client.register_script(
            resources.files("inferkube.runtime.tenancy").joinpath("ratelimit.lua").read_text()
        )
        self.fail_open = fail_open
        self._defaults = (default_rpm, default_tpm, default_max_concurrent)
        self._window_ms = int(window_seconds * 1000)
        self._timeout = timeout_seconds
        self._lease_ttl_ms = int(lease_ttl_seconds * 1000)
        self._backoff = reconnect_backoff_seconds
        self._prefix = key_prefix
        self._replica = uuid.uuid4().hex[:12]
        self._counter = 0
        self._inflight: dict[str, list[Ticket]] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._down_after = max(1, down_after_failures)
        self._failures_in_a_row = 0
        self._down_until = 0.0
        self._errors = 0
        self._last_warning = -_WARN_EVERY_SECONDS

    @property
    def backend_errors(self) -> int:
        """Operations that could not use Redis (failed, timed out, or skipped while it is down)."""
        return self._errors

    @property
    def script_sha(self) -> str:
        """SHA1 of the Lua script (what EVALSHA runs)."""
        return str(self._script.sha)

    def limits_for(self, tenant: Tenant) -> EffectiveLimits:
        """The limits in force for `tenant`."""
        return effective_limits(tenant, *self._defaults)

    def leases_held(self, tenant: Tenant) -> int:
        """Concurrency leases this replica holds for `tenant`."""
        return sum(1 for t in self._inflight.get(tenant.name, ()) if t.lease)

    def _leases(self) -> dict[str, list[str]]:
        return {name: [t.lease for t in tickets if t.lease] for name, tickets in self._inflight.items()}

    async def _call(self, awaitable: Awaitable[_T]) -> _T:
        """Run one Redis call under the time bound; raise `RedisError` (or timeout) on failure.

        Redis is skipped for `reconnect_backoff_seconds` only after `down_after_failures` failures in
        a row, so one slow answer on a busy process does not turn away the requests behind it.
        """
        if time.monotonic() < self._down_until:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise _MarkedDown("redis marked down after repeated failures")
        try:
            async with asyncio.timeout(self._timeout):
                result = await awaitable
        except _BACKEND_ERRORS:
            self._failures_in_a_row += 1
            if self._failures_in_a_row >= self._down_after:
                self._down_until = time.monotonic() + self._backoff
            raise
        self._failures_in_a_row = 0
        return result

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _forget_lease(self, tenant_name: str, lease: str) -> None:
        """Remove `lease` after a call that failed midway: Redis may still apply it late.

        Without this a late-applied acquire holds a slot nobody renews or frees for `lease_ttl`.
        Runs twice (the late script may land after the first removal), bounded, never raises.
        """
        keys = tenant_keys(tenant_name, self._prefix)
        args: list[Any] = ["complete", 0, 0, self._window_ms, lease]
        removed = 0
        for delay in (self._timeout, 2 * self._timeout, 4 * self._timeout, 8 * self._timeout):
            await asyncio.sleep(delay)
            try:
                async with asyncio.timeout(self._timeout):
                    await self._script(keys=keys, args=args)
            except _BACKEND_ERRORS:
                continue
            removed += 1
            if removed == 2:
                return

    def _claim(self, tenant_name: str, ticket: Ticket | None) -> Ticket | None:
        """Take the completing request's ticket: the one it hands back, else (unknown caller) any."""
        tickets = self._inflight.get(tenant_name)
        if not tickets:
            return None
        if ticket is None or ticket.done or ticket.tenant != tenant_name or ticket not in tickets:
            # No way to tell which request ends: free a slot-less one first (never under-enforce).
            ticket = next((t for t in reversed(tickets) if t.lease is None), tickets[-1])
        tickets.remove(ticket)
        if not tickets:
            self._inflight.pop(tenant_name, None)
        ticket.done = True
        return ticket

    def _admit(self, tenant_name: str, lease: str | None) -> Ticket:
        ticket = Ticket(tenant_name, lease)
        self._inflight.setdefault(tenant_name, []).append(ticket)
        return ticket

    def _backend_failed(self, what: str, exc: BaseException) -> None:
        self._errors += 1
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_SECONDS:  # one line per outage burst, not per request
            self._last_warning = now
            log.warning(
                "rate-limit backend unavailable during %s (%s); failing %s; %d backend errors so far",
                what, type(exc).__name__, "open" if self.fail_open else "closed", self._errors,
            )

    async def acquire(self, tenant: Tenant, estimated_tokens: int) -> RateLimitDecision:
        """Take one request, `estimated_tokens` tokens and a concurrency slot, or say why not."""
        limits = self.limits_for(tenant)
        if limits.unlimited:
            return RateLimitDecision(allowed=True)
        cost = max(0, int(estimated_tokens))
        rpm = limits.requests_per_minute or 0
        tpm = limits.tokens_per_minute or 0
        maxc = limits.max_concurrent or 0
        self._counter += 1
        lease = f"{self._replica}:{self._counter}"
        args: list[Any] = ["acquire", rpm, tpm, maxc, cost, self._window_ms, lease, self._lease_ttl_ms]
        try:
            reply = await self._call(self._script(keys=tenant_keys(tenant.name, self._prefix), args=args))
        except _BACKEND_ERRORS as exc:
            self._backend_failed("acquire", exc)
            if maxc and not isinstance(exc, _MarkedDown):
                self._spawn(self._forget_lease(tenant.name, lease))
            if self.fail_open:
                # Let in without a slot: its complete frees none.
                ticket = self._admit(tenant.name, None) if maxc else None
                return RateLimitDecision(
                    allowed=True,
                    reason=REASON_BACKEND_UNAVAILABLE,
                    message="rate-limit backend unavailable; request allowed (fail open)",
                    ticket=ticket,
                )
            return RateLimitDecision(
                allowed=False,
                reason=REASON_BACKEND_UNAVAILABLE,
                retry_after=BACKEND_RETRY_AFTER,
                message="rate-limit backend unavailable; request refused (fail closed)",
            )
        return self._decision(tenant, limits, reply, cost, lease)

    async def precheck(self, tenant: Tenant, budget: Tenant | None = None, budget_tokens: int = 0) -> Precheck:
        """What `acquire` would answer now for a request of no tokens of `tenant` and `budget_tokens` of the model
        budget `budget`, taking nothing: one read-only script call for both. A backend failure says "allowed":
        the `acquire` that follows applies fail open/closed."""
        limits = self.limits_for(tenant)
        budget_tpm = (budget.tokens_per_minute or 0) if budget is not None else 0
        allowed = RateLimitDecision(allowed=True)
        unasked = None if budget is None else allowed  # no budget, or one without a token limit
        if limits.unlimited and not budget_tpm:
            return Precheck(allowed, unasked)
        keys = tenant_keys(tenant.name, self._prefix)
        args: list[Any] = ["precheck", limits.requests_per_minute or 0, limits.tokens_per_minute or 0,
                           limits.max_concurrent or 0, self._window_ms]
        if budget is not None and budget_tpm:
            keys.append(tenant_keys(budget.name, self._prefix)[1])
            args += [budget_tpm, max(0, int(budget_tokens))]
        try:
            reply = await self._call(self._script(keys=keys, args=args))
        except _BACKEND_ERRORS:
            return Precheck(allowed, unasked)
        own = self._decision(tenant, limits, reply[:7], 0, None)
        if budget is None or not budget_tpm:
            return Precheck(own, unasked)
        budget_limits = EffectiveLimits(None, budget_tpm, None)
        return Precheck(own, self._decision(budget, budget_limits, reply[7:14], max(0, int(budget_tokens)), None))

    def _decision(self, tenant: Tenant, limits: EffectiveLimits, reply: Any, cost: int,
                  lease: str | None) -> RateLimitDecision:
        """The script's reply as a decision; an allowed one with a lease holds that slot (a ticket)."""
        rpm, tpm, maxc = limits.requests_per_minute or 0, limits.tokens_per_minute or 0, limits.max_concurrent or 0
        allowed, code, retry_ms, r_milli, r_reset, t_milli, t_reset = (int(x) for x in reply)
        headers = ratelimit_headers(
            limits,
            r_milli / 1000 if rpm else None,
            r_reset / 1000,
            t_milli / 1000 if tpm else None,
            t_reset / 1000,
        )
        if allowed:
            ticket = None
            if maxc and lease is not None:
                ticket = self._admit(tenant.name, lease)
                self._ensure_renewer()
            return RateLimitDecision(allowed=True, headers=headers, ticket=ticket)
        if code == 4:
            return budget_exceeded(tenant, cost, tpm, headers)
        reason = _REASONS[code]
        retry_after = CONCURRENCY_RETRY_AFTER if code == 3 else retry_ms / 1000
        return RateLimitDecision(
            allowed=False,
            reason=reason,
            retry_after=retry_after,
            headers=headers,
            message=rejection_message(tenant, reason, retry_after),
        )

    async def complete(self, tenant: Tenant, estimated_tokens: int, actual_tokens: int,
                       ticket: Ticket | None = None) -> None:
        """Refund or charge the difference between estimated and actual tokens; free the slot.

        `ticket` is the allowed decision's: its slot is freed (none for a request let in without one).
        Without it (an unknown caller) a slot-less request of the tenant is assumed to end first.
        """
        limits = self.limits_for(tenant)
        claimed = self._claim(tenant.name, ticket)
        lease = claimed.lease if claimed is not None and claimed.lease else ""
        tpm = limits.tokens_per_minute or 0
        delta = max(0, int(estimated_tokens)) - max(0, int(actual_tokens)) if tpm else 0
        if not lease and not delta:
            return
        args: list[Any] = ["complete", tpm, delta, self._window_ms, lease]
        try:
            await self._call(self._script(keys=tenant_keys(tenant.name, self._prefix), args=args))
        except _BACKEND_ERRORS as exc:
            # The lease (if any) is no longer renewed; it expires after lease_ttl unless removed sooner.
            self._backend_failed("complete", exc)
            if lease:
                self._spawn(self._forget_lease(tenant.name, lease))

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_forever(), name="inferkube-ratelimit-lease-renewer"
            )

    async def renew_leases(self) -> int:
        """Extend every lease this replica still holds; returns how many were extended."""
        renewed = 0
        for name, leases in self._leases().items():
            if not leases:
                continue
            args: list[Any] = ["renew", self._lease_ttl_ms, *leases]
            try:
                keys = tenant_keys(name, self._prefix)
                renewed += int(await self._call(self._script(keys=keys, args=args)))
            except _BACKEND_ERRORS as exc:
                self._backend_failed("lease renewal", exc)
        return renewed

    async def _renew_forever(self) -> None:
        interval = self._lease_ttl_ms / 1000 / 3
        while any(t.lease for tickets in self._inflight.values() for t in tickets):
            await asyncio.sleep(interval)
            await self.renew_leases()

    async def close(self) -> None:
        """Stop renewing leases and close the connection pool."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        for task in list(self._background):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()
