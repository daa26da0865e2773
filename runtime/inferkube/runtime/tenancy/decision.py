"""What a rate-limit check answers: `RateLimitDecision`, the limits in force, and the OpenAI-style headers."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from inferkube.runtime.tenancy.tenants import Tenant

REASON_OK = "ok"
REASON_REQUESTS = "requests"
REASON_TOKENS = "tokens"
REASON_CONCURRENCY = "concurrency"
REASON_BACKEND_UNAVAILABLE = "backend_unavailable"
REASONS = (REASON_OK, REASON_REQUESTS, REASON_TOKENS, REASON_CONCURRENCY, REASON_BACKEND_UNAVAILABLE)

# A concurrency slot frees when another request of the tenant ends; we cannot know when, so we
# suggest a short, fixed wait.
CONCURRENCY_RETRY_AFTER = 1.0
# When the shared backend is down and the limiter fails closed.
BACKEND_RETRY_AFTER = 1.0


@dataclass(eq=False, slots=True)
class Ticket:
    """What one allowed `acquire` holds until its `complete`: the tenant and its concurrency lease, if any.

    The caller hands it back to `complete`, so the limiter frees exactly this request's slot.
    """

    tenant: str
    lease: str | None = None
    done: bool = False


@dataclass(frozen=True, slots=True)
class RateLimitDecision:
    """The answer to `acquire`: allowed or not, why, when to retry and the headers to send back."""

    allowed: bool
    reason: str = REASON_OK
    retry_after: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    message: str = ""
    # True when the request alone needs more tokens than the tenant's whole per-minute budget:
    # it can never succeed, retrying is pointless (reason is still "tokens").
    exceeds_budget: bool = False
    # Set on an allowed decision of a limiter that tracks requests one by one: pass it to `complete`.
    ticket: Ticket | None = None


@dataclass(frozen=True, slots=True)
class Precheck:
    """The answer to `precheck`: the tenant's own limits and, when asked, the model budget's, from one look."""

    tenant: RateLimitDecision
    budget: RateLimitDecision | None = None


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """A tenant's limits after falling back to the server defaults; None = unlimited."""

    requests_per_minute: int | None
    tokens_per_minute: int | None
    max_concurrent: int | None

    @property
    def unlimited(self) -> bool:
        """True when no limit of any kind applies."""
        return (
            self.requests_per_minute is None
            and self.tokens_per_minute is None
            and self.max_concurrent is None
        )


def effective_limits(
    tenant: Tenant, default_rpm: int | None, default_tpm: int | None, default_max_concurrent: int | None
) -> EffectiveLimits:
    """The tenant's own limits where set, else the defaults."""
    return EffectiveLimits(
        requests_per_minute=tenant.requests_per_minute
        if tenant.requests_per_minute is not None
        else default_rpm,
        tokens_per_minute=tenant.tokens_per_minute if tenant.tokens_per_minute is not None else default_tpm,
        max_concurrent=tenant.max_concurrent if tenant.max_concurrent is not None else default_max_concurrent,
    )


def format_reset(seconds: float) -> str:
    """A duration as OpenAI writes it in `x-ratelimit-reset-*`: "0s", "250ms", "1.5s", "6m0s"."""
    millis = max(0, math.ceil(seconds * 1000 - 1e-6))
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    minutes, rest = divmod(millis, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def ratelimit_headers(
    limits: EffectiveLimits,
    requests_level: float | None,
    requests_reset: float,
    tokens_level: float | None,
    tokens_reset: float,
) -> dict[str, str]:
    """`x-ratelimit-*` headers for the limits that apply (levels are what is left in each bucket)."""
    headers: dict[str, str] = {}
    if limits.requests_per_minute is not None and requests_level is not None:
        headers["x-ratelimit-limit-requests"] = str(limits.requests_per_minute)
        headers["x-ratelimit-remaining-requests"] = str(max(0, math.floor(requests_level + 1e-9)))
        headers["x-ratelimit-reset-requests"] = format_reset(requests_reset)
    if limits.tokens_per_minute is not None and tokens_level is not None:
        headers["x-ratelimit-limit-tokens"] = str(limits.tokens_per_minute)
        headers["x-ratelimit-remaining-tokens"] = str(max(0, math.floor(tokens_level + 1e-9)))
        headers["x-ratelimit-reset-tokens"] = format_reset(tokens_reset)
    return headers


def budget_exceeded(
    tenant: Tenant, estimated_tokens: int, tokens_per_minute: int, headers: dict[str, str]
) -> RateLimitDecision:
    """The rejection for a request larger than the tenant's whole token budget."""
    return RateLimitDecision(
        allowed=False,
        reason=REASON_TOKENS,
        retry_after=0.0,
        headers=headers,
        message=(
            f"request needs about {estimated_tokens} tokens (prompt + max_tokens) but tenant "
            f"{tenant.name!r} may use only {tokens_per_minute} tokens per minute; it can never be "
            "admitted: lower max_tokens or shorten the prompt"
        ),
        exceeds_budget=True,
    )


def rejection_message(tenant: Tenant, reason: str, retry_after: float) -> str:
    """A readable sentence for a retryable rejection."""
    what = {
        REASON_REQUESTS: "requests per minute",
        REASON_TOKENS: "tokens per minute",
        REASON_CONCURRENCY: "concurrent requests",
    }.get(reason, reason)
    return f"rate limit reached for tenant {tenant.name!r} on {what}; retry after {retry_after:.2f}s"


class RateLimiter(Protocol):
    """What the server calls; implemented by the memory and the Redis limiter."""

    @property
    def backend_errors(self) -> int:
        """How many limiter operations could not use the backend so far."""
        ...

    async def acquire(self, tenant: Tenant, estimated_tokens: int) -> RateLimitDecision:
        """Take one request, `estimated_tokens` tokens and a concurrency slot, or say why not."""
        ...

    async def precheck(self, tenant: Tenant, budget: Tenant | None = None, budget_tokens: int = 0) -> Precheck:
        """What `acquire` would answer now, taking nothing, for a request of no tokens of `tenant` and (when
        given) of `budget_tokens` of the model budget `budget`, both in one look: a refusal here (request
        bucket empty, token debt, every slot taken; a budget with fewer than `budget_tokens` left) refuses
        any request of the tenant."""
        ...

    async def complete(self, tenant: Tenant, estimated_tokens: int, actual_tokens: int,
                       ticket: Ticket | None = None) -> None:
        """Reconcile tokens with the actual usage and free the concurrency slot (`ticket`: the decision's)."""
        ...

    async def close(self) -> None:
        """Release connections and background tasks."""
        ...
