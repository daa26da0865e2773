"""The path of one generation request: checks -> admission -> engine -> JSON or SSE -> metrics.

Everything before the engine answers in milliseconds with an OpenAI error object (see `checks.py`
for the order). A client that goes away cancels the engine request (vLLM aborts it when its
generator is cancelled).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from inferkube.api.contract import REJECTION_VALIDATION
from inferkube.runtime import refusals
from inferkube.runtime.checks import GENERATION_CHECKS, run_checks, settle_rate_limit
from inferkube.runtime.context import CHAT, RequestContext
from inferkube.runtime.engine import ServingResult, observing
from inferkube.runtime.errors import ApiError, error_body, error_response
from inferkube.runtime.logs import log_request
from inferkube.runtime.metrics import priority_label
from inferkube.runtime.refusals import refusal_response
from inferkube.runtime.state import RuntimeState, runtime_state
from inferkube.runtime.validation import ClientGone, context_exceeded

# The `param` of vLLM's own context-length errors (its renderer's token and character checks).
ENGINE_CONTEXT_PARAMS = ("input_tokens", "input_text")

ENGINE_PRIORITY_HEADER = b"x-vllm-priority"  # vLLM's serving layer would take a request's priority from it
log = logging.getLogger("inferkube.runtime.serving")


async def _listen_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@dataclass
class Admitted:
    """A request that holds an admission slot (and a rate-limit reservation) until `finish`."""

    state: RuntimeState
    ctx: RequestContext
    done: bool = False

    def finish(self, status: str, disconnected: bool = False) -> None:
        """Release the slots, record metrics, and reconcile the rate limit with the real token count."""
        if self.done:
            return
        self.done = True
        state, t = self.state, self.ctx.tracker
        state.admission.release(self.ctx.sequences, priority=self.ctx.priority)
        state.metrics.observe_finished(state.settings.model_name, self.ctx, status, disconnected)
        log_request(state.settings.model_name, self.ctx, status)
        settle_rate_limit(state, self.ctx, t.prompt_tokens + t.completion_tokens)


async def _aclose(gen: Any) -> None:
    """Close an async generator now (closing vLLM's stream aborts its engine request at once)."""
    aclose = getattr(gen, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception as exc:  # noqa: BLE001 - a stream that fails while closing must not hide the release
        log.warning("closing a response stream failed: %s", type(exc).__name__)


def draining_event() -> str:
    """The last SSE event of a stream cut at the drain deadline (followed by `[DONE]`)."""
    err = refusals.server_draining(1)
    return f"data: {json.dumps(error_body(err.status, err.message, code=err.code))}\n\ndata: [DONE]\n\n"


class _AdmittedStreamingResponse(StreamingResponse):
    """vLLM's SSE stream sent as Starlette sends it, plus: the drain deadline ends it with an error event, the
    engine requests it starts are counted for this request, and its admission slot is always given back with
    the outcome (even if the body never starts). No wrapper generator: nothing extra per chunk but one check."""

    def __init__(self, content: AsyncIterator[str], admitted: Admitted, headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self.admitted = admitted

    async def stream_response(self, send: Any) -> None:
        """Starlette's `stream_response` with the drain cut and the outcome (200, 503 cut, 499 client gone)."""
        status = "499"
        cut = self.admitted.state.cut
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_iterator:
                if cut.done():  # the drain deadline has passed: end the stream with an error event
                    self.admitted.ctx.cut = True
                    status = "503"
                    await _aclose(self.body_iterator)
                    await send({"type": "http.response.body", "body": draining_event().encode(), "more_body": True})
                    break
                await send({"type": "http.response.body", "more_body": True,
                            "body": chunk.encode() if isinstance(chunk, str) else chunk})
            else:
                status = "200"
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            try:
                await _aclose(self.body_iterator)
            finally:
                self.admitted.finish(status, disconnected=status == "499")

    async def close(self) -> None:
        """Close the engine stream (aborting its engine requests) and free the slot."""
        try:
            await _aclose(self.body_iterator)
        finally:
            self.admitted.finish("499", disconnected=True)  # no-op when the stream already finished

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            with observing(self.admitted.ctx.tracker):  # vLLM adds a stream's engine requests once it starts
                await super().__call__(scope, receive, send)
        finally:
            await self.close()


async def serve_generation(kind: str, http: Request) -> Response:
    """Handle POST /v1/chat/completions or /v1/completions end to end; every answer is counted once."""
    state = runtime_state(http.app)
    ctx = RequestContext(http, kind)
    try:
        await run_checks(GENERATION_CHECKS, state, ctx)
    except ApiError as err:
        return refusal_response(state, ctx, err)
    except ClientGone:
        log.debug("client disconnected while sending its body")
        state.metrics.count_answer(state.settings.model_name, ctx.tenant_label, "499")
        log_request(state.settings.model_name, ctx, "499")
        return Response(status_code=499)
    except Exception as exc:  # noqa: BLE001 - a bug must still answer an error object and be counted
        return internal_error(state, ctx, exc)
    try:
        if ctx.cache is not None and ctx.cache.hit and state.response_cache is not None:
            return _answer_from_cache(state, ctx)
        return await _run_until_disconnect(state, ctx)
    except Exception as exc:  # noqa: BLE001 - as above; the slot and reservation are released on the way
        return internal_error(state, ctx, exc)


def internal_error(state: RuntimeState, ctx: RequestContext, exc: Exception) -> Response:
    """An unexpected error: a 500 error object, counted like every answer, logged without its message
    (exception messages can quote request content, which must never reach the logs)."""
    log.error("unexpected error: %s", exc.__class__.__name__)
    settle_rate_limit(state, ctx, 0)
    state.metrics.count_answer(state.settings.model_name, ctx.tenant_label, "500")
    log_request(state.settings.model_name, ctx, "500")
    return JSONResponse(error_body(500, "Internal server error."), status_code=500)


def _answer_from_cache(state: RuntimeState, ctx: RequestContext) -> Response:
    """A cache hit: one answered request, its rate-limit reservation settled with no tokens, no engine."""
    assert state.response_cache is not None and ctx.cache is not None
    settle_rate_limit(state, ctx, 0)
    state.metrics.requests.labels(state.settings.model_name, ctx.tenant_label, "200").inc()
    return state.response_cache.respond(ctx.cache, ctx.parsed, ctx.rate_limit_headers)


async def _run_until_disconnect(state: RuntimeState, ctx: RequestContext) -> Response:
    """Admit and run the request, cancelling it when the client goes away first (answered 499)."""
    work = asyncio.create_task(_admit_and_run(state, ctx))
    watch = asyncio.create_task(_listen_for_disconnect(ctx.http))
    cut: asyncio.Future[Any] = state.cut
    try:
        done, _ = await asyncio.wait({work, watch, cut}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler was cancelled (shutdown): the work must not run on unseen
        watch.cancel()
        work.cancel()
        work.add_done_callback(partial(_drop_unsent, state))
        raise
    if work in done:
        watch.cancel()
        return work.result()
    if watch in done:
        ctx.tracker.client_gone = True
    else:  # the drain deadline passed before the answer was ready
        watch.cancel()
        ctx.cut = True
    work.cancel()
    try:
        await work
    except (asyncio.CancelledError, Exception):
        pass
    if ctx.cut:
        return error_response(refusals.server_draining(state.admission.retry_after))
    return Response(status_code=499)


def _drop_unsent(state: RuntimeState, work: asyncio.Task) -> None:
    """A response that will never be sent: close its stream and give its slot back."""
    if work.cancelled() or work.exception() is not None:
        return
    result = work.result()
    if isinstance(result, _AdmittedStreamingResponse):
        state.spawn(result.close())


async def _admit_and_run(state: RuntimeState, ctx: RequestContext) -> Response:
    waited = time.perf_counter()
    try:
        await state.admission.acquire(ctx.sequences, tenant=ctx.tenant.name, priority=ctx.priority,
                                      cost=ctx.estimated_tokens, share=ctx.weight)
    except ApiError as err:
        settle_rate_limit(state, ctx, 0)
        return refusal_response(state, ctx, err)
    except BaseException:
        settle_rate_limit(state, ctx, 0)
        raise
    admitted = Admitted(state, ctx)
    state.metrics.observe_admitted(state.settings.model_name, ctx.tenant_label, priority_label(ctx.priority),
                                   time.perf_counter() - waited)
    set_engine_priority(state, ctx)
    try:
        result = await _call_engine(state, ctx)
    except asyncio.CancelledError:
        admitted.finish("503" if ctx.cut else "499", disconnected=not ctx.cut)
        raise
    except Exception as exc:  # noqa: BLE001 - an engine failure must still answer with an error object
        log.error("engine call failed: %s", type(exc).__name__)
        admitted.finish("500")
        return JSONResponse(error_body(500, "The engine failed to serve the request."), status_code=500)
    return _answer(state, ctx, admitted, result)


def set_engine_priority(state: RuntimeState, ctx: RequestContext) -> None:
    """The engine schedules by the tenant's priority, never by one the client sends (body field or header)."""
    ctx.http.scope["headers"] = [(k, v) for k, v in ctx.http.scope.get("headers", []) if k.lower() != ENGINE_PRIORITY_HEADER]
    ctx.http.__dict__.pop("_headers", None)  # Starlette caches the parsed headers on first use: re-read the scope
    engine_priority = -ctx.priority if state.settings.scheduling_policy == "priority" else 0  # vLLM: lower goes first
    setattr(ctx.parsed, "priority", engine_priority)  # noqa: B010 - vLLM's request models carry `priority`


async def _call_engine(state: RuntimeState, ctx: RequestContext) -> ServingResult:
    if ctx.kind == CHAT:
        return await state.engine.chat(ctx.parsed, ctx.http, ctx.tracker)
    return await state.engine.completion(ctx.parsed, ctx.http, ctx.tracker)


def _answer(state: RuntimeState, ctx: RequestContext, admitted: Admitted, result: ServingResult) -> Response:
    """The engine's result as the HTTP answer: 499 if the client left, vLLM's error, JSON, or SSE."""
    if ctx.tracker.client_gone:
        admitted.finish("499", disconnected=True)
        return Response(status_code=499)
    if ctx.cache is not None and state.response_cache is not None:  # keep a complete, successful answer
        result = state.response_cache.record(ctx.cache, result, ctx.tracker.token_counts)
    error = getattr(result, "error", None)
    if error is not None and hasattr(result, "model_dump"):
        status = int(getattr(error, "code", 500) or 500)
        if 400 <= status < 500:
            state.metrics.count_rejection(state.settings.model_name, REJECTION_VALIDATION)
        admitted.finish(str(status))
        if getattr(error, "param", None) in ENGINE_CONTEXT_PARAMS:  # vLLM's exact context check
            err = context_exceeded(ctx.peeked.prompt_param, state.engine.max_model_len)
            return error_response(err, ctx.response_headers)
        return JSONResponse(result.model_dump(), status_code=status, headers=ctx.response_headers)
    if hasattr(result, "model_dump"):
        admitted.finish("200")
        return JSONResponse(result.model_dump(), headers=ctx.response_headers)
    return _AdmittedStreamingResponse(result, admitted, ctx.response_headers)
