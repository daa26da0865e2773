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
class EngineRequestStats:
    """What the tracker reads of one engine request: vLLM's `RequestStateStats` has these fields and vLLM's
    output processor keeps them up to date as outputs arrive (an engine double fills them itself)."""

    num_generation_tokens: int = 0
    arrival_time: float = field(default_factory=time.time)  # wall clock
    first_token_latency: float = 0.0  # seconds from arrival to the first token; 0 before it


@dataclass(slots=True)
class RequestTracker:
    """Token counts and time to first token of one HTTP request's engine work, over all its engine requests.

    The engine attaches each engine request once, when it adds it (a request may carry several prompts,
    and `n` choices of one prompt are `n` engine requests sharing that prompt): its prompt tokens and its
    live statistics. Nothing runs per output; the counts are read when asked (at the end of the request,
    also when the client left mid-stream: then they are the tokens generated until the abort).
    """

    started: float = field(default_factory=time.perf_counter)
    started_wall: float = field(default_factory=time.time)  # engine statistics use wall-clock arrival times
    client_gone: bool = False
    _prompts: int = 0
    _stats: list[Any] = field(default_factory=list)  # EngineRequestStats or vLLM's RequestStateStats

    def attach(self, prompt_tokens: int, stats: Any) -> None:
        """Count one engine request: `prompt_tokens` it adds to the request (0 for the second and later
        choices of a prompt) and its statistics object, read later."""
        self._prompts += prompt_tokens
        self._stats.append(stats)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens, each prompt once."""
        return self._prompts

    @property
    def completion_tokens(self) -> int:
        """Generated tokens so far, over all prompts and choices."""
        return sum(s.num_generation_tokens for s in self._stats)

    @property
    def first_token_at(self) -> float | None:
        """perf_counter time of the request's first generated token, None before it."""
        first: float | None = None
        for s in self._stats:
            if s.first_token_latency > 0:
                at = self.started + (s.arrival_time + s.first_token_latency - self.started_wall)
                first = at if first is None else min(first, at)
        return first

    def token_counts(self) -> tuple[int, int]:
        """(prompt tokens, completion tokens) the engine has reported so far."""
        return self.prompt_tokens, self.completion_tokens


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

    def settle(self) -> None:
        """Ready, in the server process: fix what no longer changes (values read on every request)."""

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
    """Hand every engine request vLLM registers (`OutputProcessor.add_request`: each prompt, and each child of
    an `n > 1` fan-out) to the tracker of the serving call adding it, with its prompt tokens (a prompt once:
    only a request without a parent, or a fan-out's first child, counts it) and vLLM's live statistics.
    Nothing of ours runs per output. Needs vLLM's statistics on (`engine_cli` refuses them off)."""
    processor = llm.output_processor
    add = processor.add_request

    def add_request(request: Any, prompt: Any, parent_req: Any = None, request_index: int = 0,
                    queue: Any = None) -> None:
        known = request.request_id in processor.request_states  # a streaming-input update, not a new request
        add(request, prompt, parent_req, request_index, queue)
        tracker = _SERVING_TRACKER.get()
        if tracker is None or known:
            return
        state = processor.request_states.get(request.request_id)
        if state is not None:
            shared = parent_req is not None and request_index > 0  # a later child of an n > 1 fan-out
            tracker.attach(0 if shared else state.prompt_len, state.stats)

    processor.add_request = add_request


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


def engine_cli(settings: RuntimeSettings, model_path: str) -> Any:
    """vLLM's own argument parser over our settings and the raw engine arguments (every spelling and `--config`
    file vLLM's server accepts), refusing what the runtime cannot serve with: vLLM's statistics turned off
    (the token accounting reads them). Raises ValueError with the reason."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser(prog="inferkube-runtime")).parse_args(
        vllm_cli_args(settings, model_path))
    if args.disable_log_stats:
        raise ValueError("the engine arguments turn off vLLM's statistics (--disable-log-stats): the runtime counts "
                         "each request's tokens from them (docs/runtime.md)")
    return args


def engine_batch_floor(settings: RuntimeSettings, configured: int | None) -> int | None:
    """The engine batch (vLLM `max_num_seqs`) to raise vLLM's default to, None to leave it. `configured` is the
    batch the parsed engine arguments set (None: vLLM's default). Priority scheduling needs every admitted
    sequence plus the priority headroom in the batch: vLLM preempts for a more important request only when
    KV-cache blocks run out, not when its batch is full, so with a smaller batch a request that jumped our
    queue would still wait for a running sequence to finish. vLLM's default stays when it is larger (e.g.
    1024 on an H100); a batch set explicitly is kept, with a warning when it is too small."""
    if settings.scheduling_policy != "priority":
        return None
    needed = engine_batch_for(settings.max_in_flight)
    if configured is None:
        return needed
    if configured < needed:
        log.warning("the engine batch (max_num_seqs %d) is below --max-in-flight %d plus the priority headroom "
                    "(%d): important requests may wait for a batch slot", configured, settings.max_in_flight, needed)
    return None


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
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        def build() -> tuple[Any, Any]:
            # Blocking (model build, engine process start-up): runs in a thread so /health answers meanwhile.
            model_path = resolve_model(self.settings.model)
            args = engine_cli(self.settings, model_path)
            floor = engine_batch_floor(self.settings, args.max_num_seqs)
            engine_args = AsyncEngineArgs.from_cli_args(args)
            vllm_config = engine_args.create_engine_config(usage_context=UsageContext.OPENAI_API_SERVER)
            if floor is not None and vllm_config.scheduler_config.max_num_seqs < floor:
                args.max_num_seqs = floor  # vLLM's default batch is too small for priority scheduling
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
        attach_engine_requests(self._llm)  # needs vLLM's request statistics: `engine_cli` refuses them off
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

    def settle(self) -> None:
        """Cache vLLM's environment variables, as vLLM does in its engine processes (`enable_envs_cache`):
        vLLM's output processor reads one (`VLLM_COMPUTE_NANS_IN_LOGITS`) per request and step through
        `os.getenv`, ~3 % of the API process's CPU at concurrency 128; vLLM's own API server does not cache
        them. The environment does not change after start-up."""
        from vllm import envs

        envs.enable_envs_cache()

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
