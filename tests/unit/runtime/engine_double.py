"""A small in-process engine double for fast unit tests of the HTTP layer (no vLLM engine)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator
from typing import Any

from inferkube.runtime.engine import EngineRequestStats, RequestTracker
from inferkube.runtime.shape import TokenBounds


class _Result:
    def __init__(self, body: dict) -> None:
        self.body = body

    def model_dump(self) -> dict:
        return self.body


class EngineDouble:
    """Answers every request with `tokens` fake tokens after `delay` seconds; counts calls."""

    def __init__(self, model_name: str = "tiny", max_model_len: int = 256, tokens: int = 3,
                 delay: float = 0.0, start_delay: float = 0.0, fail_start: bool = False) -> None:
        self.model_name = model_name
        self.max_model_len = max_model_len
        self.vocab_size = 1000
        self.max_stop_sequences = 4
        self.token_bounds = TokenBounds(max_token_bytes=8, special_tokens=1)
        self.tokens = tokens
        self.delay = delay
        self.start_delay = start_delay
        self.fail_start = fail_start
        self.calls = 0
        self.tokenized = 0  # count_tokens calls (the runtime's own tokenizer use)
        self.priorities: list[int | None] = []  # the engine priority each request carried
        self.priority_headers: list[str | None] = []  # vLLM's priority header as the engine would see it
        self.cancelled = 0
        self.streamed = 0  # stream tokens handed out
        self.stream_aborted = 0  # streams closed or cancelled before their end
        self.started = asyncio.Event()
        self.stopped = False

    async def start(self) -> None:
        await asyncio.sleep(self.start_delay)
        if self.fail_start:
            raise RuntimeError("no such model")
        self.started.set()

    async def warmup(self) -> None:
        return None

    def settle(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    def count_tokens(self, text: str) -> int:
        self.tokenized += 1
        return len(text.split())

    def is_healthy(self) -> bool:
        return True

    async def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model"}]}

    @staticmethod
    def _attach(tracker: RequestTracker | None, prompt_tokens: int) -> EngineRequestStats:
        """Register one engine request with the tracker, as vLLM's output processor hook does."""
        stats = EngineRequestStats()
        if tracker is not None:
            tracker.attach(prompt_tokens, stats)
        return stats

    @staticmethod
    def _generated(stats: EngineRequestStats, n_new: int) -> None:
        """What vLLM's output processor records for new tokens."""
        if not stats.num_generation_tokens:
            stats.first_token_latency = max(1e-6, time.time() - stats.arrival_time)
        stats.num_generation_tokens += n_new

    async def _serve(self, request: Any, kind: str, tracker: RequestTracker) -> Any:
        self.calls += 1
        self.priorities.append(getattr(request, "priority", None))
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if getattr(request, "stream", False):
            return self._stream(kind, tracker)
        self._generated(self._attach(tracker, 2), self.tokens)
        return _Result({"id": "x", "object": kind, "model": self.model_name,
                        "choices": [{"index": 0, "text": "tok " * self.tokens}],
                        "usage": {"prompt_tokens": 2, "completion_tokens": self.tokens}})

    async def _stream(self, kind: str, tracker: RequestTracker | None) -> AsyncGenerator[str, None]:
        completed = False
        stats = self._attach(tracker, 2)  # vLLM adds a stream's engine request when the stream starts
        try:
            for _ in range(self.tokens):
                self._generated(stats, 1)
                self.streamed += 1
                yield "data: " + json.dumps({"object": kind, "choices": [{"index": 0, "text": "tok"}]}) + "\n\n"
                await asyncio.sleep(0)
            yield "data: [DONE]\n\n"
            completed = True
        finally:
            if not completed:
                self.stream_aborted += 1  # what vLLM does here: abort the engine request

    async def chat(self, request: Any, raw_request: Any, tracker: RequestTracker) -> Any:
        return await self._serve(request, "chat.completion", tracker)

    async def completion(self, request: Any, raw_request: Any, tracker: RequestTracker) -> Any:
        self.priority_headers.append(raw_request.headers.get("x-vllm-priority"))
        return await self._serve(request, "text_completion", tracker)
