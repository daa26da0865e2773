"""The path of one generation request: auth -> checks -> rate limit -> admission -> engine -> JSON or SSE.

Everything before the engine answers in milliseconds with an OpenAI error object. A client that goes
away cancels the engine request (vLLM aborts it when its generator is cancelled).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

from inferkube.runtime.engine import CURRENT_TRACKER, RequestTracker
from inferkube.runtime.errors import ApiError, error_body, error_response
from inferkube.runtime.tenancy import RateLimitDecision
from inferkube.runtime.validation import (
    chat_prompt_tokens,
    check_caps,
    check_model,
    completion_prompt_tokens,
    estimate_tokens,
    parse_request,
    read_body,
    requested_max_tokens,
)

if TYPE_CHECKING:
    from inferkube.runtime.app import RuntimeState

log = logging.getLogger("inferkube.runtime.serving")

CHAT = "chat"
LARGE_BODY_BYTES = 32_768
COMPLETION = "completion"


def request_model(kind: str) -> type[BaseModel]:
    """vLLM's own request model for `kind` (chat or completion)."""
    if kind == CHAT:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        return ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    return CompletionRequest


async def _listen_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@dataclass
class Admitted:
    """A request that holds an admission slot (and a rate-limit reservation) until `finish`."""

    state: RuntimeState
    tenant: Any
    tenant_label: str
    estimated: int
    tracker: RequestTracker
    n: int
    streaming: bool = False
    done: bool = False

    def finish(self, status: str, disconnected: bool = False) -> None:
        """Release the slot, record metrics, and reconcile the rate limit with the real token count."""
        if self.done:
            return
        self.done = True
        st, m, model = self.state, self.state.metrics, self.state.settings.model_name
        st.admission.release()
        t = self.tracker
        end = t.finished_at or time.perf_counter()
        m.requests.labels(model, self.tenant_label, status).inc()
        m.e2e.labels(model).observe(end - t.started)
        # A non-streaming answer arrives all at once at the end: its TTFT/TPOT would be meaningless.
        if self.streaming and t.first_token_at is not None:
            m.ttft.labels(model).observe(t.first_token_at - t.started)
            per_seq = t.completion_tokens / max(1, self.n)
            if per_seq > 1:
                m.tpot.labels(model).observe((end - t.first_token_at) / (per_seq - 1))
        if t.prompt_tokens:
            m.prompt_tokens.labels(model, self.tenant_label).inc(t.prompt_tokens)
        if t.completion_tokens:
            m.completion_tokens.labels(model, self.tenant_label).inc(t.completion_tokens)
        if disconnected:
            m.disconnects.labels(model).inc()
        actual = t.prompt_tokens + t.completion_tokens
        st.spawn(st.limiter.complete(self.tenant, self.estimated, actual))


async def _aclose(gen: Any) -> None:
    """Close an async generator now (closing vLLM's stream aborts its engine request at once)."""
    aclose = getattr(gen, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception as exc:  # noqa: BLE001 - a stream that fails while closing must not hide the release
        log.warning("closing a response stream failed: %s", type(exc).__name__)


async def _guarded_stream(gen: AsyncIterator[str], admitted: Admitted) -> AsyncGenerator[str, None]:
    completed = False
    try:
        async for chunk in gen:
            yield chunk
        completed = True
    finally:
        try:
            await _aclose(gen)
        finally:
            admitted.finish("200" if completed else "499", disconnected=not completed)


class _AdmittedStreamingResponse(StreamingResponse):
    """An SSE response that always gives its admission slot back, even if the body never starts."""

    def __init__(self, content: AsyncIterator[str], admitted: Admitted, headers: dict[str, str]) -> None:
        super().__init__(_guarded_stream(content, admitted), media_type="text/event-stream", headers=headers)
        self.admitted = admitted
        self.content = content

    async def close(self) -> None:
        """Close the body (and the engine stream under it, even if the body never started); free the slot."""
        try:
            await _aclose(self.body_iterator)
            await _aclose(self.content)  # an unstarted body's close does not reach the engine stream
        finally:
            self.admitted.finish("499", disconnected=True)  # no-op when the stream already finished

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.close()


def _merge_headers(*parts: dict[str, str] | None) -> dict[str, str]:
    merged: dict[str, str] = {}
    for part in parts:
        if part:
            merged.update(part)
    return merged


async def _check(kind: str, raw_request: Request, state: RuntimeState, tenant: Any) -> tuple[Any, int]:
    """Body, schema, model, caps and context checks; returns (parsed request, estimated tokens)."""
    settings, engine = state.settings, state.engine
    body = await read_body(raw_request, settings.max_body_bytes)
    request = parse_request(body, request_model(kind))
    check_model(request, settings.model_name)
    check_caps(request, settings)
    if kind == CHAT:
        prompt_param = "messages"

        def count() -> list[int]:
            return [chat_prompt_tokens(request, engine.count_tokens)]
    else:
        prompt_param = "prompt"

        def count() -> list[int]:
            return completion_prompt_tokens(request, engine.count_tokens)
    # Tokenizing a big body takes a while: keep the event loop (and /health) free meanwhile.
    prompts = await asyncio.to_thread(count) if len(body) > LARGE_BODY_BYTES else count()
    n = getattr(request, "n", None) or 1
    estimated = estimate_tokens(prompts, requested_max_tokens(request), n, engine.max_model_len,
                                settings.max_tokens_cap, prompt_param)
    return request, estimated


def rate_limit_error(decision: RateLimitDecision, rl_headers: dict[str, str]) -> ApiError:
    """The refusal for a limiter decision: 429 to wait out, 429 without Retry-After for a request that can
    never fit the tenant's budget, 503 when the limiter's backend is down and it fails closed."""
    message = decision.message or f"Rate limit reached ({decision.reason})."
    if decision.reason == "backend_unavailable":
        return ApiError(503, message, code="rate_limit_backend_unavailable", reason="rate_limit",
                        headers=_merge_headers({"Retry-After": "1"}, rl_headers))
    if decision.exceeds_budget:
        return ApiError(429, message, param="max_tokens", code="request_exceeds_token_budget",
                        reason="rate_limit", headers=dict(rl_headers))
    retry = str(max(1, math.ceil(decision.retry_after)))
    return ApiError(429, message, code="rate_limit_exceeded", reason="rate_limit",
                    headers=_merge_headers({"Retry-After": retry}, rl_headers))


async def serve_generation(kind: str, raw_request: Request) -> Response:
    """Handle POST /v1/chat/completions or /v1/completions end to end."""
    state: RuntimeState = raw_request.app.state.runtime
    model = state.settings.model_name
    tracker = RequestTracker()
    tenant_label = state.metrics.tenant_label(None)
    rl_headers: dict[str, str] = {}
    try:
        tenant = state.authenticate(raw_request)
        tenant_label = state.metrics.tenant_label(tenant.name)
        state.admission.check_open()
        state.require_ready()
        request, estimated = await _check(kind, raw_request, state, tenant)
        decision = await state.limiter.acquire(tenant, estimated)
        rl_headers = dict(decision.headers)
        if not decision.allowed:
            raise rate_limit_error(decision, rl_headers)
    except ApiError as err:
        state.metrics.rejections.labels(model, err.reason).inc()
        state.metrics.requests.labels(model, tenant_label, str(err.status)).inc()
        return error_response(err)

    work = asyncio.create_task(_admit_and_run(kind, request, raw_request, state, tenant, tenant_label,
                                              estimated, tracker, rl_headers))
    watch = asyncio.create_task(_listen_for_disconnect(raw_request))
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this handler was cancelled (shutdown): the work must not run on unseen
        watch.cancel()
        work.cancel()
        work.add_done_callback(partial(_drop_unsent, state))
        raise
    if work in done:
        watch.cancel()
        return work.result()
    tracker.client_gone = True
    work.cancel()
    try:
        await work
    except (asyncio.CancelledError, Exception):
        pass
    return Response(status_code=499)


def _drop_unsent(state: RuntimeState, work: asyncio.Task) -> None:
    """A response that will never be sent: close its stream and give its slot back."""
    if work.cancelled() or work.exception() is not None:
        return
    result = work.result()
    if isinstance(result, _AdmittedStreamingResponse):
        state.spawn(result.close())


async def _admit_and_run(kind: str, request: Any, raw_request: Request, state: RuntimeState, tenant: Any,
                         tenant_label: str, estimated: int, tracker: RequestTracker,
                         rl_headers: dict[str, str]) -> Response:
    model = state.settings.model_name
    try:
        await state.admission.acquire()
    except ApiError as err:
        state.spawn(state.limiter.complete(tenant, estimated, 0))
        state.metrics.rejections.labels(model, err.reason).inc()
        state.metrics.requests.labels(model, tenant_label, str(err.status)).inc()
        return error_response(err)
    except BaseException:
        state.spawn(state.limiter.complete(tenant, estimated, 0))
        raise
    n = getattr(request, "n", None) or 1
    admitted = Admitted(state, tenant, tenant_label, estimated, tracker, n,
                        streaming=bool(getattr(request, "stream", False)))
    CURRENT_TRACKER.set(tracker)
    try:
        if kind == CHAT:
            result = await state.engine.chat(request, raw_request)
        else:
            result = await state.engine.completion(request, raw_request)
    except asyncio.CancelledError:
        admitted.finish("499", disconnected=True)
        raise
    except Exception as exc:  # noqa: BLE001 - an engine failure must still answer with an error object
        log.error("engine call failed: %s", type(exc).__name__)
        admitted.finish("500")
        return JSONResponse(error_body(500, "The engine failed to serve the request."), status_code=500)
    if tracker.client_gone:
        admitted.finish("499", disconnected=True)
        return Response(status_code=499)
    error = getattr(result, "error", None)
    if error is not None and hasattr(result, "model_dump"):
        status = int(getattr(error, "code", 500) or 500)
        if 400 <= status < 500:
            state.metrics.rejections.labels(model, "validation").inc()
        admitted.finish(str(status))
        return JSONResponse(result.model_dump(), status_code=status, headers=rl_headers)
    if hasattr(result, "model_dump"):
        admitted.finish("200")
        return JSONResponse(result.model_dump(), headers=rl_headers)
    return _AdmittedStreamingResponse(result, admitted, rl_headers)
