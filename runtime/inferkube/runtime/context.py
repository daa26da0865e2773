"""`RequestContext`: what the runtime knows about one API request, carried along its whole path.

Created by the route, filled in by the checks (tenant, parsed request, `n`, token estimate, rate-limit
reservation and headers), read by admission, the engine call (its tracker) and the metrics at the end.
No other channel (context variables, loose parameter lists) carries request state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request
from pydantic import BaseModel

from inferkube.runtime.engine import RequestTracker
from inferkube.runtime.logs import request_id
from inferkube.runtime.response_cache.cache import CacheLookup
from inferkube.runtime.tenancy import ANONYMOUS, RateLimitDecision, Tenant

if TYPE_CHECKING:
    from inferkube.runtime.shape import RequestShape

CHAT = "chat"
COMPLETION = "completion"


@dataclass
class RequestContext:
    """One request on its way: HTTP -> checks -> rate limit -> admission -> engine -> metrics."""

    http: Request
    kind: str | None = None  # CHAT or COMPLETION for a generation request; None for /v1/models
    tenant: Tenant = ANONYMOUS
    tenant_label: str = ANONYMOUS.name  # the bounded `tenant` metric label
    body: bytes = b""
    shape: RequestShape | None = None  # what the cheap checks read from the raw JSON (shape.py)
    sequences: int = 1  # admission slots: prompts x n (x best_of)
    needs_exact_count: bool = False  # the byte bounds could not decide the context check
    request: BaseModel | None = None  # vLLM's ChatCompletionRequest / CompletionRequest, once parsed
    n: int = 1  # choices asked for per prompt
    streaming: bool = False
    estimated_tokens: int = 0  # upper bound of prompt + n x max_tokens, what the rate limit reserves up front
    rate_limit_headers: dict[str, str] = field(default_factory=dict)
    # The allowed rate-limit decision until it is settled with the real token count (then None).
    reservation: RateLimitDecision | None = None
    tracker: RequestTracker = field(default_factory=RequestTracker)
    cache: CacheLookup | None = None  # the response cache's decision (None: the cache is off)
    cut: bool = False  # ended by the drain deadline (answered 503)
    request_id: str = ""  # the caller's X-Request-Id when it is a plain token, else a random one
    priority: int = 0  # the tenant's priority under the quota policy (higher is served first)
    weight: int = 1    # its fair-share weight among tenants of equal priority
    budget: Tenant | None = None  # the model-wide token budget, when the quota policy sets one
    budget_reservation: RateLimitDecision | None = None
    budget_tokens: int = 0  # the tokens reserved against the model budget (its own byte-bound estimate)

    def __post_init__(self) -> None:
        if not self.request_id:
            self.request_id = request_id(self.http.headers)

    @property
    def response_headers(self) -> dict[str, str]:
        """Headers of the answer: the rate-limit headers, plus `x-inferkube-cache` when the cache is on."""
        if self.cache is None:
            return self.rate_limit_headers
        return {**self.rate_limit_headers, **self.cache.headers()}

    @property
    def peeked(self) -> RequestShape:
        """The request's shape (only after the check that decodes the body)."""
        if self.shape is None:
            raise RuntimeError("the request body has not been decoded yet")
        return self.shape

    @property
    def parsed(self) -> BaseModel:
        """The parsed request (only after the check that parses the body)."""
        if self.request is None:
            raise RuntimeError("the request body has not been parsed yet")
        return self.request
