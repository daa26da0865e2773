"""API keys (tenants file) and per-tenant rate limits for the runtime.

```python
registry = TenantRegistry.from_file(path)            # or TenantRegistry.empty()
tenant = registry.authenticate(request.headers.get("authorization"))
limiter = build_rate_limiter("memory", None, fail_open=True, default_rpm=None, default_tpm=None)
ahead = await limiter.precheck(tenant, budget, 1)   # before the body: .tenant and .budget decisions, nothing taken
decision = await limiter.acquire(tenant, estimated_tokens)
...
await limiter.complete(tenant, estimated_tokens, actual_tokens, decision.ticket)   # once per allowed acquire
```
"""

from __future__ import annotations

from typing import Any

from inferkube.runtime.tenancy.decision import (
    REASON_BACKEND_UNAVAILABLE,
    REASON_CONCURRENCY,
    REASON_OK,
    REASON_REQUESTS,
    REASON_TOKENS,
    REASONS,
    EffectiveLimits,
    Precheck,
    RateLimitDecision,
    RateLimiter,
    Ticket,
    format_reset,
)
from inferkube.runtime.tenancy.memory import MemoryRateLimiter, TokenBucket
from inferkube.runtime.tenancy.tenants import (
    ANONYMOUS,
    Tenant,
    TenantRegistry,
    TenantsFile,
    TenantsFileError,
    TenantSpec,
    bearer_token,
    sha256_hex,
)

BACKENDS = ("memory", "redis")

__all__ = [
    "ANONYMOUS",
    "BACKENDS",
    "REASONS",
    "REASON_BACKEND_UNAVAILABLE",
    "REASON_CONCURRENCY",
    "REASON_OK",
    "REASON_REQUESTS",
    "REASON_TOKENS",
    "EffectiveLimits",
    "MemoryRateLimiter",
    "Precheck",
    "RateLimitDecision",
    "RateLimiter",
    "Tenant",
    "TenantRegistry",
    "TenantSpec",
    "TenantsFile",
    "TenantsFileError",
    "Ticket",
    "TokenBucket",
    "bearer_token",
    "build_rate_limiter",
    "format_reset",
    "sha256_hex",
]


def build_rate_limiter(
    settings_backend: str,
    redis_url: str | None,
    fail_open: bool,
    default_rpm: int | None,
    default_tpm: int | None,
    *,
    default_max_concurrent: int | None = None,
    **options: Any,
) -> RateLimiter:
    """The limiter for `settings_backend` ("memory" or "redis"); `options` go to its constructor."""
    backend = (settings_backend or "memory").strip().lower()
    if backend == "memory":
        return MemoryRateLimiter(default_rpm, default_tpm, default_max_concurrent, **options)
    if backend == "redis":
        if not redis_url:
            raise ValueError("rate-limit backend 'redis' needs a Redis URL (e.g. redis://host:6379/0)")
        from inferkube.runtime.tenancy.redis_limiter import RedisRateLimiter

        return RedisRateLimiter(
            redis_url,
            fail_open=fail_open,
            default_rpm=default_rpm,
            default_tpm=default_tpm,
            default_max_concurrent=default_max_concurrent,
            **options,
        )
    raise ValueError(f"unknown rate-limit backend {settings_backend!r}; expected one of {BACKENDS}")
