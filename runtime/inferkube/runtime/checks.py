"""The checks a request passes before the engine, in the order they run (each may refuse it).

Every check takes the server state and the request's context, fills in what it learns and raises an
`ApiError` to refuse. The order is the tuples below: cheap checks first, so a refused request costs
about the same whatever its size. Everything up to the context bound works on the raw JSON and byte
sizes (`shape.py`); only then come vLLM's request model and, when the byte bounds cannot decide the
context check, the tokenizer. The rate limit reserves budget, which `run_checks` gives back if a later
check refuses. Taking the admission slot (or a place in its queue) follows in `serving.py`, where a
client that goes away cancels it; `check_admission_room` only refuses early what it would refuse.
A check relies only on what earlier checks filled in: `ctx.tenant`, `ctx.priority` and `ctx.weight` after
`authenticate`, `ctx.body` after `read_body`, `ctx.shape` and `ctx.sequences` after `peek_request`,
`ctx.budget_tokens` after `take_model_budget`, `ctx.estimated_tokens` after `take_rate_limit`, `ctx.parsed`, `ctx.n` and `ctx.streaming` after `parse_request`,
`ctx.cache` after `look_up_response_cache`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from inferkube.runtime import refusals, shape, validation
from inferkube.runtime.context import CHAT, RequestContext
from inferkube.runtime.state import FAILED, LOADING, WARMING, RuntimeState
from inferkube.runtime.tenancy import REASON_BACKEND_UNAVAILABLE, RateLimitDecision, Tenant

Check = Callable[[RuntimeState, RequestContext], Awaitable[None]]

LARGE_BODY_BYTES = 32_768  # tokenize bodies larger than this in a thread, off the event loop


async def authenticate(state: RuntimeState, ctx: RequestContext) -> None:
    """401 unless keys are off or the bearer key is a tenant's; sets the tenant (with its effective limits
    under the quota policy), its priority and weight, and its metric label."""
    registry = state.tenancy.registry
    if registry.enabled:
        tenant = registry.authenticate(ctx.http.headers.get("authorization"))
        if tenant is None:
            raise refusals.unauthenticated()
        ctx.tenant = tenant
    resolved = state.tenancy.resolve(ctx.tenant)
    ctx.tenant, ctx.priority, ctx.weight = resolved.tenant, resolved.priority, resolved.weight
    ctx.tenant_label = state.metrics.tenant_label(ctx.tenant.name)


async def refuse_while_draining(state: RuntimeState, ctx: RequestContext) -> None:
    """503 once SIGTERM has started the drain."""
    state.admission.check_open()


async def refuse_until_ready(state: RuntimeState, ctx: RequestContext) -> None:
    """503 while the model is loading or warming up, or after the engine failed."""
    if state.phase in (LOADING, WARMING):
        raise refusals.model_loading()
    if state.phase == FAILED:
        raise refusals.engine_failed()


async def precheck_admission(state: RuntimeState, ctx: RequestContext) -> None:
    """429 before the body is read when not even one sequence has a slot or a place in the queue (with the
    response cache on this waits for the lookup: a hit needs no slot)."""
    if state.response_cache is None:
        state.admission.check_room(1, priority=ctx.priority)


async def precheck_rate_limit(state: RuntimeState, ctx: RequestContext) -> None:
    """429 before the body is read when the model budget is spent (not one token left; with the response
    cache on, only a budget in debt: a hit costs no tokens) or the tenant could send no request at all now
    (request bucket empty, token debt, every concurrency slot taken). One look at both (one Redis round
    trip), in the order the checks after the body take them; nothing is reserved here."""
    budget = state.tenancy.model_budget()
    least = 0 if state.response_cache is not None else 1  # every request without a cache hit costs a token
    answer = await state.limiter.precheck(ctx.tenant, budget.tenant if budget is not None else None, least)
    if budget is not None and answer.budget is not None and not answer.budget.allowed:
        raise refusals.model_budget_spent(budget, answer.budget)
    decision = answer.tenant
    if not decision.allowed and decision.reason != REASON_BACKEND_UNAVAILABLE:
        ctx.rate_limit_headers = dict(decision.headers)
        raise refusals.rate_limited(decision)


async def read_body(state: RuntimeState, ctx: RequestContext) -> None:
    """415 unless the body is JSON, 413 over the size limit; a client gone mid-body ends the request (499)."""
    validation.check_content_type(ctx.http)
    settings = state.settings
    ctx.body = await validation.read_body(ctx.http, settings.max_body_bytes, settings.body_timeout)


async def peek_request(state: RuntimeState, ctx: RequestContext) -> None:
    """400 for bad JSON or a lone surrogate; reads the request's shape (n, max_tokens, prompts, byte bounds)."""
    assert ctx.kind is not None
    ctx.shape = shape.peek_request(ctx.body, ctx.kind == CHAT, state.engine.token_bounds)
    ctx.sequences = ctx.shape.sequences


async def check_model(state: RuntimeState, ctx: RequestContext) -> None:
    """404 for a model this server does not serve."""
    validation.check_model(ctx.peeked.model, state.settings.model_name)


async def check_caps(state: RuntimeState, ctx: RequestContext) -> None:
    """400 when n, max_tokens, stop or token ids exceed the caps or what the engine accepts."""
    engine = state.engine
    validation.check_caps(ctx.peeked, state.settings, min(state.settings.max_stop_sequences,
                                                          engine.max_stop_sequences), engine.vocab_size)


async def check_admission_room(state: RuntimeState, ctx: RequestContext) -> None:
    """400 for more sequences than the whole in-flight bound, 429 when neither a slot nor the queue has room
    (a response-cache hit needs no slot)."""
    if ctx.cache is not None and ctx.cache.hit:
        return
    state.admission.check_room(ctx.sequences, ctx.peeked.prompt_param if len(ctx.peeked.prompts) > 1 else "n",
                               priority=ctx.priority)


async def _reserve(state: RuntimeState, ctx: RequestContext, tenant: Tenant) -> tuple[RateLimitDecision, int]:
    """Reserve the byte-bound upper estimate of the request's tokens against `tenant`'s limits.

    Only "can never fit the budget" is re-asked with the lower bound, so that verdict is never a guess.
    A response-cache hit is one request and no tokens. Returns the decision and the tokens it reserved.
    """
    limit_len, cap = state.engine.max_model_len, state.settings.max_tokens_cap
    hit = ctx.cache is not None and ctx.cache.hit
    tokens = 0 if hit else shape.estimate_tokens(ctx.peeked, limit_len, cap)
    decision = await state.limiter.acquire(tenant, tokens)
    if decision.exceeds_budget:
        lower = shape.estimate_tokens(ctx.peeked, limit_len, cap, upper=False)
        if lower < tokens:
            tokens = lower
            decision = await state.limiter.acquire(tenant, lower)
    return decision, tokens


async def take_model_budget(state: RuntimeState, ctx: RequestContext) -> None:
    """429 when the model-wide token budget of the quota policy (all tenants, all replicas) has no room."""
    budget = state.tenancy.model_budget()
    if budget is None:
        return
    decision, ctx.budget_tokens = await _reserve(state, ctx, budget.tenant)
    if not decision.allowed:
        raise refusals.model_budget_spent(budget, decision)
    ctx.budget, ctx.budget_reservation = budget.tenant, decision


async def take_rate_limit(state: RuntimeState, ctx: RequestContext) -> None:
    """429 (or 503 when its backend is down and it fails closed) unless the tenant's limits allow it.

    Reserves the byte-bound upper estimate (reconciled with the engine's count when the request ends).
    """
    decision, ctx.estimated_tokens = await _reserve(state, ctx, ctx.tenant)
    ctx.rate_limit_headers = dict(decision.headers)
    if not decision.allowed:
        raise refusals.rate_limited(decision)
    ctx.reservation = decision


async def check_context_bounds(state: RuntimeState, ctx: RequestContext) -> None:
    """400 `context_length_exceeded` when the byte bounds prove a prompt too long; else note if unsure."""
    ctx.needs_exact_count = validation.check_context_bounds(ctx.peeked, state.engine.max_model_len)


async def parse_request(state: RuntimeState, ctx: RequestContext) -> None:
    """400 for wrong types or values (vLLM's own request model); sets the parsed request, `n`, streaming."""
    assert ctx.kind is not None
    if ctx.request is not None:  # already parsed for the response cache
        return
    ctx.request = validation.parse_request(ctx.peeked.data, validation.request_model(ctx.kind))
    ctx.n = validation.requested_n(ctx.request)
    ctx.streaming = bool(getattr(ctx.request, "stream", False))


async def check_context_exact(state: RuntimeState, ctx: RequestContext) -> None:
    """Only when the byte bounds could not decide: tokenize the prompt(s) and check the context exactly."""
    if not ctx.needs_exact_count:
        return
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
    validation.check_context_exact(prompts, validation.requested_max_tokens(request), engine.max_model_len,
                                   prompt_param)


async def look_up_response_cache(state: RuntimeState, ctx: RequestContext) -> None:
    """Ask the response cache (when on; it needs the parsed request, so then the full parse comes here, before
    admission and the rate limit): a hit takes no admission slot and is charged one request and no tokens."""
    if state.response_cache is None:
        return
    await parse_request(state, ctx)
    assert ctx.kind is not None
    ctx.cache = await state.response_cache.lookup(ctx.kind, ctx.parsed, ctx.tenant.name,
                                                  ctx.http.headers.get("cache-control"), ctx.tracker.started)


def settle_rate_limit(state: RuntimeState, ctx: RequestContext, actual_tokens: int) -> None:
    """Charge the tokens the request really used (0 if it never ran) and free its slot; once, in the background."""
    decision, ctx.reservation = ctx.reservation, None
    if decision is not None:
        state.spawn(state.limiter.complete(ctx.tenant, ctx.estimated_tokens, actual_tokens, decision.ticket))
    budget, ctx.budget_reservation = ctx.budget_reservation, None
    if budget is not None and ctx.budget is not None:
        state.spawn(state.limiter.complete(ctx.budget, ctx.budget_tokens, actual_tokens, budget.ticket))


GENERATION_CHECKS: tuple[Check, ...] = (
    authenticate,           # 401
    refuse_while_draining,  # 503
    refuse_until_ready,     # 503
    precheck_admission,     # 429 when not even one sequence has room (before the body is read)
    precheck_rate_limit,    # 429 when the model budget is spent or the tenant can send nothing now (before the body)
    read_body,              # 415, 413
    peek_request,           # 400 (JSON, surrogates); no request model, template or tokenizer yet
    check_model,            # 404
    check_caps,             # 400 (n, max_tokens, stop, token ids)
    look_up_response_cache,  # only when the cache is on: the full parse, then the lookup; a hit skips admission
    check_admission_room,   # 400 (more sequences than the bound), 429
    take_model_budget,      # 429; reserves the model-wide budget of the quota policy (byte-bound estimate)
    take_rate_limit,        # 429 / 503; reserves the byte-bound estimate (a cache hit: no tokens)
    check_context_bounds,   # 400 (context length, certain from the byte bounds)
    parse_request,          # 400 (vLLM's request model)
    check_context_exact,    # 400 (context length); the tokenizer runs here, only when the bounds cannot decide
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
