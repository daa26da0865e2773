"""The checks a request passes before the engine, in the order they run (each may refuse it).

Every check takes the server state and the request's context, fills in what it learns and raises an
`ApiError` to refuse. The order is the tuples below: cheap checks first, the tokenizer late, the rate
limit last (it reserves budget, which `run_checks` gives back if a later check refuses). Admission
(the in-flight bound and its queue) follows in `serving.py`, where a client that goes away cancels it.
A check relies only on what earlier checks filled in: `ctx.tenant` after `authenticate`, `ctx.parsed`,
`ctx.n` and `ctx.streaming` after `read_request`, `ctx.estimated_tokens` after `estimate_tokens`,
`ctx.cache` after `look_up_response_cache`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from inferkube.runtime import refusals, validation
from inferkube.runtime.context import CHAT, RequestContext
from inferkube.runtime.state import FAILED, LOADING, WARMING, RuntimeState

Check = Callable[[RuntimeState, RequestContext], Awaitable[None]]

LARGE_BODY_BYTES = 32_768  # tokenize bodies larger than this in a thread, off the event loop


async def authenticate(state: RuntimeState, ctx: RequestContext) -> None:
    """401 unless keys are off or the bearer key is a tenant's; sets the tenant and its metric label."""
    if not state.registry.enabled:
        ctx.tenant_label = state.metrics.tenant_label(ctx.tenant.name)
        return
    tenant = state.registry.authenticate(ctx.http.headers.get("authorization"))
    if tenant is None:
        raise refusals.unauthenticated()
    ctx.tenant = tenant
    ctx.tenant_label = state.metrics.tenant_label(tenant.name)


async def refuse_while_draining(state: RuntimeState, ctx: RequestContext) -> None:
    """503 once SIGTERM has started the drain."""
    state.admission.check_open()


async def refuse_until_ready(state: RuntimeState, ctx: RequestContext) -> None:
    """503 while the model is loading or warming up, or after the engine failed."""
    if state.phase in (LOADING, WARMING):
        raise refusals.model_loading()
    if state.phase == FAILED:
        raise refusals.engine_failed()


async def read_request(state: RuntimeState, ctx: RequestContext) -> None:
    """413 for a body over the limit, 400 for bad JSON or schema; sets the parsed request, `n`, streaming."""
    assert ctx.kind is not None
    ctx.body = await validation.read_body(ctx.http, state.settings.max_body_bytes)
    ctx.request = validation.parse_request(ctx.body, validation.request_model(ctx.kind))
    ctx.n = validation.requested_n(ctx.request)
    ctx.streaming = bool(getattr(ctx.request, "stream", False))


async def check_model(state: RuntimeState, ctx: RequestContext) -> None:
    """404 for a model this server does not serve."""
    validation.check_model(ctx.parsed, state.settings.model_name)


async def check_caps(state: RuntimeState, ctx: RequestContext) -> None:
    """400 when n, max_tokens or the stop list exceed the configured caps."""
    validation.check_caps(ctx.parsed, ctx.n, state.settings)


async def estimate_tokens(state: RuntimeState, ctx: RequestContext) -> None:
    """Tokenize the prompt(s): 400 over the context length; sets the token estimate the rate limit charges."""
    request, engine = ctx.parsed, state.engine
    if ctx.kind == CHAT:
        prompt_param = "messages"

        def count() -> list[int]:
            return [validation.chat_prompt_tokens(request, engine.count_tokens)]
    else:
        prompt_param = "prompt"

        def count() -> list[int]:
            return validation.completion_prompt_tokens(request, engine.count_tokens)
    # Tokenizing a big body takes a while: keep the event loop (and /health) free meanwhile.
    prompts = await asyncio.to_thread(count) if len(ctx.body) > LARGE_BODY_BYTES else count()
    ctx.estimated_tokens = validation.estimate_tokens(
        prompts, validation.requested_max_tokens(request), ctx.n, engine.max_model_len,
        state.settings.max_tokens_cap, prompt_param)


async def take_rate_limit(state: RuntimeState, ctx: RequestContext) -> None:
    """429 (or 503 when its backend is down and it fails closed) unless the tenant's limits allow it."""
    decision = await state.limiter.acquire(ctx.tenant, ctx.estimated_tokens)
    ctx.rate_limit_headers = dict(decision.headers)
    if not decision.allowed:
        raise refusals.rate_limited(decision)
    ctx.reservation = decision


async def look_up_response_cache(state: RuntimeState, ctx: RequestContext) -> None:
    """Ask the response cache (when on); a hit is charged one request and no tokens by the rate limit."""
    if state.response_cache is None:
        return
    assert ctx.kind is not None
    ctx.cache = await state.response_cache.lookup(ctx.kind, ctx.parsed, ctx.tenant.name,
                                                  ctx.http.headers.get("cache-control"), ctx.tracker.started)
    if ctx.cache.hit:
        ctx.estimated_tokens = 0


def settle_rate_limit(state: RuntimeState, ctx: RequestContext, actual_tokens: int) -> None:
    """Charge the tokens the request really used (0 if it never ran) and free its slot; once, in the background."""
    decision, ctx.reservation = ctx.reservation, None
    if decision is not None:
        state.spawn(state.limiter.complete(ctx.tenant, ctx.estimated_tokens, actual_tokens, decision.ticket))


GENERATION_CHECKS: tuple[Check, ...] = (
    authenticate,           # 401
    refuse_while_draining,  # 503
    refuse_until_ready,     # 503
    read_request,           # 413, 400
    check_model,            # 404
    check_caps,             # 400
    estimate_tokens,        # 400 (context length); the tokenizer runs here
    look_up_response_cache,  # a hit is answered after the rate limit, without the engine
    take_rate_limit,        # 429 / 503; reserves budget
)
MODELS_CHECKS: tuple[Check, ...] = (authenticate, refuse_until_ready)


async def run_checks(checks: tuple[Check, ...], state: RuntimeState, ctx: RequestContext) -> None:
    """Run `checks` in order; when one refuses (or the request is cancelled), give back any reservation."""
    try:
        for check in checks:
            await check(state, ctx)
    except BaseException:
        settle_rate_limit(state, ctx, 0)
        raise
