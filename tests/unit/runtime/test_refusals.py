"""Refusals: the status, code, headers and metric reason a client and a dashboard see for each."""

from __future__ import annotations

from inferkube.runtime import refusals
from inferkube.runtime.tenancy import RateLimitDecision

HEADERS = {"x-ratelimit-limit-requests": "1", "x-ratelimit-remaining-requests": "0"}


def test_a_rate_limit_to_wait_out_is_429_with_retry_after_rounded_up_and_the_limit_headers() -> None:
    err = refusals.rate_limited(RateLimitDecision(allowed=False, reason="requests", retry_after=1.2,
                                                  headers=HEADERS, message="slow down"))
    assert (err.status, err.code, err.reason, err.message) == (429, "rate_limit_exceeded", "rate_limit", "slow down")
    assert err.headers == {"Retry-After": "2", **HEADERS}


def test_a_request_over_the_whole_budget_is_429_without_retry_after() -> None:
    err = refusals.rate_limited(RateLimitDecision(allowed=False, reason="tokens", headers=HEADERS,
                                                  exceeds_budget=True))
    assert (err.status, err.code, err.param) == (429, "request_exceeds_token_budget", "max_tokens")
    assert "Retry-After" not in err.headers and err.message == "Rate limit reached (tokens)."


def test_a_limiter_backend_down_failing_closed_is_503() -> None:
    err = refusals.rate_limited(RateLimitDecision(allowed=False, reason="backend_unavailable", retry_after=1.0))
    assert (err.status, err.code, err.reason, err.headers) == (
        503, "rate_limit_backend_unavailable", "rate_limit", {"Retry-After": "1"})


def test_admission_and_lifecycle_refusals() -> None:
    assert (refusals.server_overloaded(1.0).status, refusals.server_overloaded(1.0).reason) == (429, "admission")
    draining = refusals.server_draining(0.2)
    assert (draining.status, draining.code, draining.reason, draining.headers) == (
        503, "server_draining", "draining", {"Retry-After": "1"})
    loading = refusals.model_loading()
    assert (loading.status, loading.code, loading.headers["Retry-After"]) == (503, "model_loading", "5")
    assert (refusals.engine_failed().status, refusals.engine_failed().headers) == (503, {})
    auth = refusals.unauthenticated()
    assert (auth.status, auth.reason, auth.headers) == (401, "auth", {"WWW-Authenticate": "Bearer"})
