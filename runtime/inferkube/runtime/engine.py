"""The narrow engine boundary: what the HTTP layer needs from a model server, and the vLLM implementation.

`VLLMEngine` runs vLLM's `AsyncLLM` and reuses vLLM's own OpenAI serving classes (chat templates,
sampling parameters, stop, n, logprobs, response_format, tools, streaming usage) by letting vLLM's
`init_app_state` build them. The route hands each call a `RequestTracker`; every engine request vLLM's
serving class adds for that call is attached to it once (exact token counts and TTFT from vLLM's own
per-request stats; no per-output work of ours).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import Request

from inferkube.runtime.fairqueue import engine_batch_for
from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.shape import TokenBounds
from inferkube.runtime.tinymodel import resolve_model

log = logging.getLogger("inferkube.runtime.engine")

# What a serving call returns: an error object, a full response object, or an SSE text stream.
ServingResult = Any


@dataclass(slots=True)
class _GeneratorCounts:
    """What one reported generator (one prompt of a request) has produced so far (see `record_output`)."""

    prompt_tokens: int = 0
    per_index: dict[int, int] = field(default_factory=dict)  # cumulative outputs only
    finished: bool = False


@dataclass(slots=True)
class RequestTracker:
    """Token counts and timings of one HTTP request's engine work, summed over all its engine requests.

    Two ways in, both once per engine request rather than once per output: vLLM's engine requests are
    attached by `attach` when vLLM adds them (their live per-request stats: prompt length, generated
    tokens, first-token latency; read only when asked), and an engine without such stats reports its
    outputs with `record_output` (one counter per generator: a request may carry several prompts,
    each numbering its outputs from 0). Streams report deltas; a non-streaming answer reports
    cumulative outputs, usually once at the end.
    """

    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)  # vLLM's request stats use wall-clock arrival times
    finished_at: float | None = None  # when the last recorded output came (unset: the answer's end is used)
    finished: bool = False  # every recorded generator has finished
    client_gone: bool = False
    _prompt: int = 0
    _completion: int = 0
    _first: float | None = None
    _generators: list[_GeneratorCounts] = field(default_factory=list)
    _unfinished: int = 0
    _engine_requests: list[Any] = field(default_factory=list)  # vLLM RequestState objects

    def attach(self, engine_request: Any) -> None:
        """Count one vLLM engine request (its `RequestState`: `prompt_len`, `parent_req`, `request_index`
        and `stats`, which vLLM keeps up to date as outputs arrive)."""
        self._engine_requests.append(engine_request)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens: each prompt once (the `n` children of one prompt share it)."""
        return self._prompt + sum(r.prompt_len for r in self._engine_requests
                                  if r.parent_req is None or r.request_index == 0)

    @property
    def completion_tokens(self) -> int:
        """Generated tokens so far, over all prompts and choices."""
        return self._completion + sum(r.stats.num_generation_tokens for r in self._engine_requests)

    @property
    def first_token_at(self) -> float | None:
        """perf_counter time of the request's first generated token, None before it."""
        first = self._first
        for r in self._engine_requests:
            latency = r.stats.first_token_latency
            if latency > 0:  # seconds from vLLM's (wall-clock) arrival time; 0 until the first token
                at = self.started + (r.stats.arrival_time + latency - self.started_wall)
                first = at if first is None else min(first, at)
        return first

    def token_counts(self) -> tuple[int, int]:
        """(prompt tokens, completion tokens) the engine has reported so far."""
        return self.prompt_tokens, self.completion_tokens

    def new_generator(self) -> int:
        """A fresh id for one more reported generator of this request."""
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
                self._prompt += counts.prompt_tokens
        new = 0
        for completion in output.outputs or ():
            n = len(completion.token_ids or ())
            if delta:
                new += n
            else:
                new += n - counts.per_index.get(completion.index, 0)
                counts.per_index[completion.index] = n
        self._completion += new
        if self._first is None and self._completion:
            self._first = time.perf_counter()
        if output.finished and not counts.finished:
            counts.finished = True
            self._unfinished -= 1
            if self._unfinished == 0:
                self.finished = True
                self.finished_at = time.perf_counter()


# The tracker of the serving call running in this task. vLLM adds its engine requests deep inside its
# own serving classes, with nothing of ours in the arguments; this variable is set only while one
# `VLLMEngine.chat`/`completion` call runs and while a stream's body is sent (vLLM starts a stream's
# engine requests then; see `observing`), and read once per engine request by `attach_engine_requests`.
# The tracker itself reaches the engine as an explicit argument.
_SERVING_TRACKER: contextvars.ContextVar[RequestTracker | None] = contextvars.ContextVar(
    "inferkube_serving_tracker", default=None)


@contextlib.contextmanager
def observing(tracker: RequestTracker) -> Iterator[None]:
    """Attach every engine request vLLM adds inside this block (and in tasks started from it) to `tracker`."""
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


def attach_engine_requests(llm: Any) -> None:
    """Hand each request vLLM adds (`AsyncLLM._add_request`, once per prompt and choice) to the tracker of the
    serving call adding it. Nothing of ours runs per output: the counts are read from vLLM's own per-request
    stats when the request ends (they need vLLM's stats on: `RuntimeSettings` refuses --disable-log-stats)."""
    add = llm._add_request

    async def add_request(request: Any, *args: Any, **kwargs: Any) -> Any:
        result = await add(request, *args, **kwargs)
        tracker = _SERVING_TRACKER.get()
        if tracker is not None:
            state = llm.output_processor.request_states.get(request.request_id)
            if state is not None:
                tracker.attach(state)
        return result

    llm._add_request = add_request


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


def engine_batch_floor(settings: RuntimeSettings) -> int | None:
    """The smallest engine batch (vLLM `max_num_seqs`) priority scheduling needs when none is set: every admitted
    sequence plus the priority headroom. vLLM preempts for a more important request only when KV-cache blocks
    run out, not when its batch is full, so with a smaller batch a request that jumped our queue would still
    wait for a running sequence to finish. vLLM's own default stays when it is larger (e.g. 1024 on an H100);
    a batch set explicitly (flag or raw engine argument) is kept, with a warning when it is too small."""
    if settings.scheduling_policy != "priority":
        return None
    needed = engine_batch_for(settings.max_in_flight)
    if settings.max_num_seqs is not None:
        if settings.max_num_seqs < needed:
            log.warning("--max-num-seqs %d is below --max-in-flight %d plus the priority headroom (%d): important "
                        "requests may wait for a batch slot", settings.max_num_seqs, settings.max_in_flight, needed)
        return None
    return None if "--max-num-seqs" in settings.engine_args else needed


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
            floor = engine_batch_floor(self.settings)
            if floor is not None and vllm_config.scheduler_config.max_num_seqs < floor:
                engine_args.max_num_seqs = floor  # vLLM's default batch is too small for priority scheduling
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
        attach_engine_requests(self._llm)  # needs vLLM's request stats: settings refuse --disable-log-stats
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
