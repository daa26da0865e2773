"""The narrow engine boundary: what the HTTP layer needs from a model server, and the vLLM implementation.

`VLLMEngine` runs vLLM's `AsyncLLM` and reuses vLLM's own OpenAI serving classes (chat templates,
sampling parameters, stop, n, logprobs, response_format, tools, streaming usage) by letting vLLM's
`init_app_state` build them. The route hands each call a `RequestTracker`; every engine generator
vLLM's serving class starts for that call reports its outputs to it (exact token counts and TTFT).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import Request

from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.shape import TokenBounds
from inferkube.runtime.tinymodel import resolve_model

log = logging.getLogger("inferkube.runtime.engine")

# What a serving call returns: an error object, a full response object, or an SSE text stream.
ServingResult = Any


@dataclass(slots=True)
class _GeneratorCounts:
    """What one engine generator (one prompt of a request) has produced so far."""

    prompt_tokens: int = 0
    per_index: dict[int, int] = field(default_factory=dict)  # cumulative outputs only
    finished: bool = False


@dataclass(slots=True)
class RequestTracker:
    """Token counts and timings of one HTTP request's engine work, summed over all its generators.

    vLLM makes one generator per prompt (a completion request may carry several prompts) and each
    numbers its outputs from 0, so every generator gets its own counters (see `new_generator`).
    Streams report deltas (each output holds only its new tokens: a sum, no per-index state); a
    non-streaming answer reports cumulative outputs, usually once at the end.
    """

    started: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    finished_at: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finished: bool = False
    client_gone: bool = False
    _generators: list[_GeneratorCounts] = field(default_factory=list)
    _unfinished: int = 0

    def token_counts(self) -> tuple[int, int]:
        """(prompt tokens, completion tokens) the engine has reported so far."""
        return self.prompt_tokens, self.completion_tokens

    def new_generator(self) -> int:
        """A fresh id for one more engine generator of this request."""
        self._generators.append(_GeneratorCounts())
        self._unfinished += 1
        return len(self._generators) - 1

    def record_output(self, output: Any, delta: bool, generator: int = 0) -> None:
        """Record one engine output (a vLLM RequestOutput or anything with the same fields)."""
        while generator >= len(self._generators):
            self.new_generator()
        counts = self._generators[generator]
        if not counts.prompt_tokens:
            prompt_ids = output.prompt_token_ids
            if prompt_ids:
                counts.prompt_tokens = len(prompt_ids)
                self.prompt_tokens += counts.prompt_tokens
        if delta:
            new = 0
            for completion in output.outputs or ():
                new += len(completion.token_ids or ())
        else:
            new = 0
            per_index = counts.per_index
            for completion in output.outputs or ():
                n = len(completion.token_ids or ())
                new += n - per_index.get(completion.index, 0)
                per_index[completion.index] = n
        self.completion_tokens += new
        if self.first_token_at is None and self.completion_tokens:
            self.first_token_at = time.perf_counter()
        if output.finished and not counts.finished:
            counts.finished = True
            self._unfinished -= 1
            if self._unfinished == 0:
                self.finished = True
                self.finished_at = time.perf_counter()


# The tracker of the serving call running in this task. vLLM's serving classes call `generate` deep
# inside their own code, with nothing of ours in the arguments; this variable is set only for the
# duration of one `VLLMEngine.chat`/`completion` call (see `observing`) and read by the wrapped
# `generate`. The tracker itself reaches the engine as an explicit argument.
_SERVING_TRACKER: contextvars.ContextVar[RequestTracker | None] = contextvars.ContextVar(
    "inferkube_serving_tracker", default=None)


@contextlib.contextmanager
def observing(tracker: RequestTracker) -> Iterator[None]:
    """Report every engine generator started inside this block to `tracker`."""
    token = _SERVING_TRACKER.set(tracker)
    try:
        yield
    finally:
        _SERVING_TRACKER.reset(token)


class Engine(Protocol):
    """What the HTTP layer needs from an engine (the real one is VLLMEngine; tests use a double)."""

    model_name: str
    max_model_len: int
    vocab_size: int  # token ids a prompt may hold: 0 .. vocab_size - 1
    max_stop_sequences: int  # the longest `stop` list the engine accepts
    token_bounds: TokenBounds  # byte bounds on token counts, from the tokenizer (set by start)

    async def start(self) -> None:
        """Load the model; returns when requests can be served."""

    async def warmup(self) -> None:
        """Run one tiny real request end to end; raise if it fails."""

    async def stop(self) -> None:
        """Release the engine."""

    def count_tokens(self, text: str) -> int:
        """Number of tokens the engine's tokenizer makes of `text`."""

    def is_healthy(self) -> bool:
        """False once the engine has died."""

    async def chat(self, request: Any, raw_request: Request, tracker: RequestTracker) -> ServingResult:
        """Serve a parsed ChatCompletionRequest, reporting its outputs to `tracker`."""

    async def completion(self, request: Any, raw_request: Request, tracker: RequestTracker) -> ServingResult:
        """Serve a parsed CompletionRequest, reporting its outputs to `tracker`."""

    async def models(self) -> dict:
        """The /v1/models body."""


async def _observe(agen: AsyncIterator[Any], tracker: RequestTracker,
                   delta: bool) -> AsyncGenerator[Any, None]:
    generator = tracker.new_generator()
    record = tracker.record_output
    fast = False  # a stream past its first token: only its new tokens need adding up
    try:
        async for output in agen:
            if fast and not output.finished:
                for completion in output.outputs or ():
                    tracker.completion_tokens += len(completion.token_ids or ())
            else:
                record(output, delta, generator)
                fast = delta and tracker.first_token_at is not None and tracker.prompt_tokens > 0
            yield output
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            await aclose()  # closing our wrapper aborts vLLM's request at once


def _wrap_generate(generate: Any) -> Any:
    from vllm.sampling_params import RequestOutputKind

    def observed_generate(*args: Any, **kwargs: Any) -> Any:
        agen = generate(*args, **kwargs)
        tracker = _SERVING_TRACKER.get()
        if tracker is None:
            return agen
        params = kwargs.get("sampling_params", args[1] if len(args) > 1 else None)
        delta = getattr(params, "output_kind", None) == RequestOutputKind.DELTA
        return _observe(agen, tracker, delta)

    return observed_generate


def vllm_cli_args(settings: RuntimeSettings, model_path: str) -> list[str]:
    """The vLLM server arguments our settings stand for, followed by the raw extra engine arguments."""
    argv = ["--model", model_path, "--served-model-name", settings.model_name, "--dtype", settings.dtype,
            "--tensor-parallel-size", str(settings.tensor_parallel_size)]
    if settings.max_model_len is not None:
        argv += ["--max-model-len", str(settings.max_model_len)]
    if settings.gpu_memory_utilization is not None:
        argv += ["--gpu-memory-utilization", str(settings.gpu_memory_utilization)]
    if settings.enable_prefix_caching is not None:
        flag = "--enable-prefix-caching" if settings.enable_prefix_caching else "--no-enable-prefix-caching"
        argv.append(flag)
    if settings.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(settings.max_num_seqs)]
    if settings.scheduling_policy == "priority":
        argv += ["--scheduling-policy", "priority"]  # each request then carries its tenant's priority
    return argv + list(settings.engine_args)


def error_from_exception(exc: Exception) -> Any:
    """vLLM's exception -> ErrorResponse mapping; a feature the model lacks (501) becomes a 400."""
    from http import HTTPStatus

    from vllm.entrypoints.serve.exception_handling.error_response import create_error_response

    if isinstance(exc, NotImplementedError):
        return create_error_response(str(exc) or "Not supported by this model.", "BadRequestError",
                                     HTTPStatus.BAD_REQUEST)
    err = create_error_response(exc)
    if err.error.code >= 500:
        log.error("serving failed: %s", type(exc).__name__)
    return err


def token_bounds_of(tokenizer: Any) -> TokenBounds:
    """Longest vocabulary entry in bytes and the special tokens added to a prompt (once, at start-up)."""
    vocab = tokenizer.get_vocab()
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if "ByteLevel" in repr(decoder):  # one character of a byte-level entry stands for one byte
        longest = max((len(t) for t in vocab), default=1)
    else:
        longest = max((len(t.encode("utf-8", "surrogatepass")) for t in vocab), default=1)
    return TokenBounds(max_token_bytes=max(1, longest),
                       special_tokens=len(tokenizer.encode("", add_special_tokens=True)))


def engine_stop_limit() -> int:
    """The longest `stop` list vLLM's request models accept (`VLLM_MAX_STOP_STRINGS`)."""
    from vllm import envs

    return int(envs.VLLM_MAX_STOP_STRINGS)


class VLLMEngine:
    """vLLM's AsyncLLM plus vLLM's own OpenAI serving classes."""

    def __init__(self, settings: RuntimeSettings) -> None:
        self.settings = settings
        self.model_name = settings.model_name
        self.max_model_len = 0
        self.vocab_size = 0
        self.max_stop_sequences = engine_stop_limit()
        self.token_bounds = TokenBounds()
        self._llm: Any = None
        self._state: Any = None
        self._tokenizer: Any = None
        self._stopping = False
        self._shutdown_timeout: float | None = 0  # vLLM's `--shutdown-timeout` (its server's default: 0)

    async def start(self) -> None:
        """Build the engine from our settings (and extra args) with vLLM's own argument parser."""
        from starlette.datastructures import State
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.entrypoints.launchers.api_server.app_state import init_app_state
        from vllm.entrypoints.launchers.cli_args import make_arg_parser
        from vllm.usage.usage_lib import UsageContext
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        from vllm.v1.engine.async_llm import AsyncLLM

        def build() -> tuple[Any, Any]:
            # Blocking (model build, engine process start-up): runs in a thread so /health answers meanwhile.
            model_path = resolve_model(self.settings.model)
            parser = make_arg_parser(FlexibleArgumentParser(prog="inferkube-runtime"))
            args = parser.parse_args(vllm_cli_args(self.settings, model_path))
            engine_args = AsyncEngineArgs.from_cli_args(args)
            vllm_config = engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
            llm = AsyncLLM.from_vllm_config(
                vllm_config=vllm_config, usage_context=UsageContext.OPENAI_API_SERVER,
                enable_log_requests=False, disable_log_stats=engine_args.disable_log_stats)
            self._shutdown_timeout = vllm_config.shutdown_timeout
            if self._stopping:  # shut down while loading: do not leave an engine process behind
                llm.shutdown(timeout=self._shutdown_timeout)
                raise RuntimeError("engine start abandoned: server is shutting down")
            return args, llm

        args, self._llm = await asyncio.to_thread(build)
        self._llm.generate = _wrap_generate(self._llm.generate)
        supported = await self._llm.get_supported_tasks()
        self._state = State()
        await init_app_state(self._llm, self._state, args, supported)
        self.max_model_len = int(self._llm.model_config.max_model_len)
        self.vocab_size = int(self._llm.model_config.get_vocab_size())
        self._tokenizer = self._llm.get_tokenizer()
        self.token_bounds = await asyncio.to_thread(token_bounds_of, self._tokenizer)

    async def warmup(self) -> None:
        """One real one-token completion through the serving layer."""
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse

        req = CompletionRequest(model=self.model_name, prompt="warm up", max_tokens=1, seed=None)
        result = await self._state.openai_serving_completion.create_completion(req, None)
        if isinstance(result, ErrorResponse):
            raise RuntimeError(f"warm-up failed: {result.error.message}")

    async def stop(self) -> None:
        """Shut the engine down the way vLLM's own server does, `AsyncLLM.shutdown(timeout=shutdown_timeout)`
        (our drain has already ended every request; without the timeout vLLM waits 5 s before it kills
        its engine core). An engine still being built shuts itself down when done."""
        self._stopping = True
        if self._llm is not None:
            self._llm.shutdown(timeout=self._shutdown_timeout)
            self._llm = None

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` by the served model's tokenizer (no special tokens)."""
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def is_healthy(self) -> bool:
        """False once vLLM reports its engine dead."""
        return self._llm is not None and not self._llm.errored

    async def chat(self, request: Any, raw_request: Request, tracker: RequestTracker) -> ServingResult:
        """vLLM's OpenAIServingChat."""
        try:
            with observing(tracker):
                return await self._state.openai_serving_chat.create_chat_completion(request, raw_request)
        except Exception as exc:  # noqa: BLE001 - mapped to an error object like vLLM's own server does
            return error_from_exception(exc)

    async def completion(self, request: Any, raw_request: Request, tracker: RequestTracker) -> ServingResult:
        """vLLM's OpenAIServingCompletion."""
        try:
            with observing(tracker):
                return await self._state.openai_serving_completion.create_completion(request, raw_request)
        except Exception as exc:  # noqa: BLE001 - mapped to an error object like vLLM's own server does
            return error_from_exception(exc)

    async def models(self) -> dict:
        """vLLM's model list."""
        return (await self._state.openai_serving_models.show_available_models()).model_dump()
