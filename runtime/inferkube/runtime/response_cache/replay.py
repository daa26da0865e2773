"""Cached answers out (a fresh JSON body, or OpenAI SSE chunks) and streamed answers in (the body a
stream stands for, assembled from its chunks so a streaming miss can be stored too)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

CHAT = "chat"
COMPLETION = "completion"
DONE = "data: [DONE]\n\n"
# Per-request details that belong to the run that produced them, not to the answer.
_RUN_FIELDS = ("metrics", "kv_transfer_params", "ec_transfer_params")


def storable_body(body: dict[str, Any]) -> dict[str, Any]:
    """The part of a response body worth keeping: no id, no timestamp, no per-run details."""
    kept = {k: v for k, v in body.items() if k not in ("id", "created")}
    for name in _RUN_FIELDS:
        if name in kept:
            kept[name] = None
    return kept


def fresh_body(kind: str, stored: dict[str, Any]) -> dict[str, Any]:
    """The stored body with a new `id` and `created`, in the key order vLLM uses."""
    prefix = "chatcmpl-" if kind == CHAT else "cmpl-"
    return {"id": prefix + uuid.uuid4().hex, "object": stored.get("object"), "created": int(time.time()),
            **{k: v for k, v in stored.items() if k != "object"}}


def _usage(body: dict[str, Any]) -> dict[str, Any]:
    usage = body.get("usage") or {}
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return {"prompt_tokens": prompt, "total_tokens": prompt + completion, "completion_tokens": completion}


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False, separators=(',', ':'))}\n\n"


def _choice_chunks(kind: str, choice: dict[str, Any]) -> list[dict[str, Any]]:
    index = choice.get("index", 0)
    finish = {"finish_reason": choice.get("finish_reason"), "stop_reason": choice.get("stop_reason")}
    if kind == CHAT:
        message = choice.get("message") or {}
        return [
            {"index": index, "delta": {"role": message.get("role") or "assistant", "content": ""},
             "logprobs": None, "finish_reason": None},
            {"index": index, "delta": {"content": message.get("content") or ""}, "logprobs": None,
             "finish_reason": None},
            {"index": index, "delta": {}, "logprobs": None, **finish},
        ]
    return [{"index": index, "text": choice.get("text") or "", "logprobs": None, "finish_reason": None,
             "stop_reason": None},
            {"index": index, "text": "", "logprobs": None, **finish}]


def sse_events(kind: str, body: dict[str, Any], include_usage: bool, continuous_usage: bool) -> list[str]:
    """A (fresh) body as OpenAI SSE events: per choice a role, a content and a finish chunk, then the
    usage chunk when the client asked for it, then `[DONE]`."""
    head = {"id": body["id"], "object": "chat.completion.chunk" if kind == CHAT else "text_completion",
            "created": body["created"], "model": body.get("model")}
    usage = _usage(body)
    events = []
    for choice in body.get("choices") or ():
        for chunk in _choice_chunks(kind, choice):
            payload: dict[str, Any] = {**head, "choices": [chunk]}
            if continuous_usage:
                payload["usage"] = usage
            events.append(_event(payload))
    if include_usage:
        events.append(_event({**head, "choices": [], "usage": usage}))
    events.append(DONE)
    return events


def stream_usage_wanted(request: Any) -> tuple[bool, bool]:
    """(include_usage, continuous_usage_stats) as the request's stream_options ask."""
    options = getattr(request, "stream_options", None)
    include = bool(options and getattr(options, "include_usage", False))
    return include, include and bool(getattr(options, "continuous_usage_stats", False))


@dataclass
class _Choice:
    role: str = "assistant"
    text: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    stop_reason: Any = None


@dataclass
class StreamAssembler:
    """Reads the SSE events of one streamed answer and rebuilds the JSON body it stands for.

    `body()` is None unless the stream ended with `[DONE]`, carried no error and nothing the replay
    would lose (tool calls, reasoning, logprobs), and every choice has a finish reason.
    """

    kind: str
    model: str | None = None
    usage: dict[str, Any] | None = None
    complete: bool = False
    unusable: bool = False
    choices: dict[int, _Choice] = field(default_factory=dict)

    def feed(self, text: str) -> None:
        """Take one piece of the stream (one or more `data: ...` events)."""
        for line in text.splitlines():
            if not line.startswith("data: ") or self.unusable:
                continue
            data = line[len("data: "):].strip()
            if data == "[DONE]":
                self.complete = True
                continue
            try:
                self._chunk(json.loads(data))
            except (ValueError, TypeError, AttributeError):
                self.unusable = True

    def _chunk(self, chunk: dict[str, Any]) -> None:
        if "error" in chunk or "choices" not in chunk:
            self.unusable = True
            return
        self.model = chunk.get("model", self.model)
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for raw in chunk["choices"]:
            choice = self.choices.setdefault(int(raw.get("index", 0)), _Choice())
            if raw.get("logprobs"):
                self.unusable = True
            if self.kind == CHAT:
                delta = raw.get("delta") or {}
                if delta.get("tool_calls") or delta.get("reasoning") or delta.get("reasoning_content"):
                    self.unusable = True
                choice.role = delta.get("role") or choice.role
                choice.text.append(delta.get("content") or "")
            else:
                choice.text.append(raw.get("text") or "")
            if raw.get("finish_reason") is not None:
                choice.finish_reason = raw["finish_reason"]
                choice.stop_reason = raw.get("stop_reason")

    def body(self, usage_fallback: tuple[int, int]) -> dict[str, Any] | None:
        """The non-streaming body of this answer, or None when it must not be stored."""
        if self.unusable or not self.complete or not self.choices:
            return None
        if any(c.finish_reason is None for c in self.choices.values()):
            return None
        return _build_body(self.kind, self.model or "", self.choices, self.usage, usage_fallback)


def _build_body(kind: str, model: str, choices: dict[int, _Choice], usage: dict[str, Any] | None,
                usage_fallback: tuple[int, int]) -> dict[str, Any]:
    """vLLM's own response model, so a stored stream has exactly the shape of a JSON answer."""
    from vllm.entrypoints.serve.engine.protocol import UsageInfo

    prompt, completion = ((int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
                          if usage else usage_fallback)
    info = UsageInfo(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)
    ordered = sorted(choices.items())
    if kind == CHAT:
        from vllm.entrypoints.openai.chat_completion.protocol import (
            ChatCompletionResponse,
            ChatCompletionResponseChoice,
            ChatMessage,
        )

        chat = ChatCompletionResponse(model=model, usage=info, choices=[
            ChatCompletionResponseChoice(index=i, message=ChatMessage(role=c.role, content="".join(c.text)),
                                         finish_reason=c.finish_reason, stop_reason=c.stop_reason)
            for i, c in ordered])
        return storable_body(chat.model_dump())
    from vllm.entrypoints.openai.completion.protocol import CompletionResponse, CompletionResponseChoice

    text = CompletionResponse(model=model, usage=info, choices=[
        CompletionResponseChoice(index=i, text="".join(c.text), finish_reason=c.finish_reason,
                                 stop_reason=c.stop_reason) for i, c in ordered])
    return storable_body(text.model_dump())


class RecordedStream:
    """Passes a stream through unchanged and calls `on_complete` once it has been sent to its end.

    `aclose()` closes the upstream stream at once, even when this one was never started (closing an
    unstarted async generator would not reach it): that is what aborts the engine request.
    """

    def __init__(self, stream: AsyncIterator[str], assembler: StreamAssembler,
                 on_complete: Callable[[StreamAssembler], None]) -> None:
        self._stream = stream
        self._assembler = assembler
        self._on_complete: Callable[[StreamAssembler], None] | None = on_complete

    def __aiter__(self) -> RecordedStream:
        return self

    async def __anext__(self) -> str:
        try:
            piece = await self._stream.__anext__()
        except StopAsyncIteration:
            done, self._on_complete = self._on_complete, None
            if done is not None:
                done(self._assembler)
            raise
        self._assembler.feed(piece)
        return piece

    async def aclose(self) -> None:
        """Close the upstream stream; a stream closed before its end is never stored."""
        self._on_complete = None
        aclose = getattr(self._stream, "aclose", None)
        if aclose is not None:
            await aclose()
