"""Every refusal the runtime answers before the engine, built here and counted the same way on every route.

A refusal is an `ApiError` whose `reason` is the `inferkube_rejections_total` label it counts under:
401 (no or wrong key), 503 (loading, engine failed, draining, rate-limit backend down when failing
closed) and 429 (rate limit, admission queue full). Invalid input (400/404/413) is built where it is
checked, in `validation.py`, and answered through `refusal_response` too.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from fastapi.responses import JSONResponse

from inferkube.api.contract import (
    REJECTION_ADMISSION,
    REJECTION_AUTH,
    REJECTION_DRAINING,
    REJECTION_RATE_LIMIT,
)
from inferkube.runtime.errors import ApiError, error_response
from inferkube.runtime.logs import log_request
from inferkube.runtime.tenancy import REASON_BACKEND_UNAVAILABLE, RateLimitDecision

if TYPE_CHECKING:
    from inferkube.runtime.context import RequestContext
    from inferkube.runtime.state import RuntimeState
    from inferkube.runtime.tenancy.policy import ModelBudget

LOADING_RETRY_AFTER = "5"


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, round(seconds)))}


def unauthenticated() -> ApiError:
    """401: keys are configured and the bearer key is missing or wrong."""
    return ApiError(401, "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
                    code="invalid_api_key", reason=REJECTION_AUTH, headers={"WWW-Authenticate": "Bearer"})


def model_loading() -> ApiError:
    """503 with Retry-After while the model is still loading or warming up."""
    return ApiError(503, "The model is still loading; retry shortly.", code="model_loading",
                    reason=REJECTION_ADMISSION, headers={"Retry-After": LOADING_RETRY_AFTER})


def engine_failed() -> ApiError:
    """503 once the engine has failed (the replica is about to restart)."""
    return ApiError(503, "The engine failed; this replica is restarting.", code="engine_failed",
                    reason=REJECTION_ADMISSION)


def server_draining(retry_after: float) -> ApiError:
    """503 after SIGTERM: new requests go to another replica."""
    return ApiError(503, "The server is shutting down; retry on another replica.",
                    code="server_draining", reason=REJECTION_DRAINING, headers=_retry_after(retry_after))


def server_overloaded(retry_after: float) -> ApiError:
    """429: every in-flight slot is taken and the admission queue is full."""
    return ApiError(429, "The server is at capacity; retry later.", code="server_overloaded",
                    reason=REJECTION_ADMISSION, headers=_retry_after(retry_after))


def too_many_sequences(weight: int, bound: int, param: str = "n") -> ApiError:
    """400: the request alone puts more sequences into the engine than the whole in-flight bound."""
    return ApiError(400, f"The request asks for {weight} sequences (prompts x n x best_of); this server runs "
                    f"at most {bound} at once. Send fewer prompts or a smaller n.", param=param,
                    code="request_too_large")


def shed(retry_after: float) -> ApiError:
    """429: the queue is full and this waiting request gave its place to a more important one."""
    return ApiError(429, "The server is at capacity and serves more important requests first; retry later.",
                    code="server_overloaded", reason=REJECTION_ADMISSION, headers=_retry_after(retry_after))


def model_budget_spent(budget: ModelBudget, decision: RateLimitDecision) -> ApiError:
    """429: the model-wide token budget (all tenants, all replicas) has no room for this request now."""
    retry = str(max(1, math.ceil(decision.retry_after)))
    share = f"; {budget.per_replica} on each of its {budget.replicas} replicas" if budget.replicas > 1 else ""
    return ApiError(429, f"The model's token budget ({budget.total} tokens per minute for all tenants together{share}) "
                    "is spent; retry later.", code="model_budget_exceeded", reason=REJECTION_RATE_LIMIT,
                    headers={"Retry-After": retry})


def rate_limited(decision: RateLimitDecision) -> ApiError:
    """The refusal for a limiter decision: 429 to wait out, 429 without Retry-After for a request that can
    never fit the tenant's budget, 503 when the limiter's backend is down and it fails closed."""
    message = decision.message or f"Rate limit reached ({decision.reason})."
    if decision.reason == REASON_BACKEND_UNAVAILABLE:
        return ApiError(503, message, code="rate_limit_backend_unavailable", reason=REJECTION_RATE_LIMIT,
                        headers={"Retry-After": "1", **decision.headers})
    if decision.exceeds_budget:
        return ApiError(429, message, param="max_tokens", code="request_exceeds_token_budget",
                        reason=REJECTION_RATE_LIMIT, headers=dict(decision.headers))
    retry = str(max(1, math.ceil(decision.retry_after)))
    return ApiError(429, message, code="rate_limit_exceeded", reason=REJECTION_RATE_LIMIT,
                    headers={"Retry-After": retry, **decision.headers})


def refusal_response(state: RuntimeState, ctx: RequestContext, err: ApiError) -> JSONResponse:
    """Count a refusal (a rejection by reason, a request by tenant and status) and render it."""
    state.metrics.count_refusal(state.settings.model_name, ctx.tenant_label, err.reason, err.status)
    if ctx.kind is not None:  # a generation request: one log record each (JSON mode)
        log_request(state.settings.model_name, ctx, str(err.status), err.reason)
    return error_response(err)
