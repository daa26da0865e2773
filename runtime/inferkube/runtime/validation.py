"""The rules a request must meet before the engine: media type, body size, schema, model name, caps, context.

Pure functions over the request's shape (`shape.py`) or the parsed request; `checks.py` runs them in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from inferkube.runtime.context import CHAT
from inferkube.runtime.errors import ApiError
from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.shape import RequestShape

PER_MESSAGE_OVERHEAD = 4  # role markers and separators a chat template adds per message


def request_model(kind: str) -> type[BaseModel]:
    """vLLM's own request model for `kind` (chat or completion)."""
    if kind == CHAT:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        return ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    return CompletionRequest


MAX_MODEL_NAME_IN_ERRORS = 64  # characters of an unknown model name echoed back
MAX_STOP_CHARS = 1024  # longest single stop sequence (each is searched for after every token)
JSON_TYPES = ("application/json",)


class ClientGone(Exception):
    """The client disconnected before its body arrived (answered 499 and logged at debug)."""


def check_content_type(request: Request) -> None:
    """415 unless the body is declared JSON (`application/json` or `application/*+json`; absent is taken as JSON)."""
    declared = request.headers.get("content-type")
    if declared is None:
        return
    media = declared.split(";", 1)[0].strip().lower()
    if media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return
    raise ApiError(415, "Request body must be JSON: send 'Content-Type: application/json'.",
                   code="unsupported_media_type")


async def read_body(request: Request, max_bytes: int, timeout: float) -> bytes:
    """Read the body, refusing (413) anything over `max_bytes` without buffering it all, and (408, closing
    the connection) a body that has not arrived within `timeout` seconds."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"Request body is larger than {max_bytes} bytes.", code="request_too_large")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError(413, f"Request body is larger than {max_bytes} bytes.",
                                   code="request_too_large")
                chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone() from None
    except TimeoutError:
        raise ApiError(408, f"The request body did not arrive within {timeout:.0f} seconds.",
                       code="request_timeout", headers={"Connection": "close"}) from None
    return b"".join(chunks)


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    """The top-level request field an error is about (union branch names are dropped)."""
    return str(loc[0]) if loc else None


def parse_request(data: dict[str, Any], model_cls: type[BaseModel]) -> BaseModel:
    """Validate the decoded JSON with vLLM's request model; wrong types or values -> 400 naming the field."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        param = _loc_to_param(tuple(first.get("loc", ())))
        msg = first.get("msg", "invalid value")
        raise ApiError(400, f"Invalid value for '{param}': {msg}." if param else f"Invalid request: {msg}.",
                       param=param, code="invalid_value") from None
    except Exception as exc:  # noqa: BLE001 - vLLM's validators raise their own error types on bad input
        param = getattr(exc, "parameter", None)
        raise ApiError(400, f"Invalid request: {exc}", param=param, code="invalid_value") from None


def check_model(model: Any, served_name: str) -> None:
    """Unknown model -> 404 (an empty/absent model means the served one, as in vLLM; a non-string is the
    full parse's 400). The echoed name is cut to MAX_MODEL_NAME_IN_ERRORS characters."""
    if not isinstance(model, str) or not model or model == served_name:
        return
    shown = model if len(model) <= MAX_MODEL_NAME_IN_ERRORS else model[:MAX_MODEL_NAME_IN_ERRORS] + "..."
    raise ApiError(404, f"The model '{shown}' does not exist; this server serves '{served_name}'.",
                   param="model", code="model_not_found")


def requested_max_tokens(request: Any) -> int | None:
    """max_completion_tokens (chat) or max_tokens, whichever the client set."""
    fields = vars(request)  # plain reads: vLLM marks max_tokens deprecated and warns on attribute access
    value = fields.get("max_completion_tokens")
    return value if value is not None else fields.get("max_tokens")


def requested_n(request: Any) -> int:
    """Choices asked for per prompt (`n`; 1 when unset)."""
    return getattr(request, "n", None) or 1


def check_caps(shape: RequestShape, settings: RuntimeSettings, max_stop: int, vocab_size: int) -> None:
    """n, max_tokens, the stop list and token ids within the caps (and the engine's limits) -> else 400."""
    if shape.n > settings.max_n:
        raise ApiError(400, f"'n' is {shape.n}; this server allows at most {settings.max_n}.", param="n",
                       code="invalid_value")
    max_tokens, param = shape.max_tokens, shape.max_tokens_param
    if max_tokens is not None and max_tokens > settings.max_tokens_cap:
        raise ApiError(400, f"'{param}' is {max_tokens}; this server allows at most "
                       f"{settings.max_tokens_cap}.", param=param, code="invalid_value")
    if max_tokens is not None and max_tokens < 1 and param == "max_completion_tokens":
        raise ApiError(400, f"'{param}' must be at least 1.", param=param, code="invalid_value")
    if len(shape.stop) > max_stop:
        raise ApiError(400, f"'stop' has {len(shape.stop)} sequences; this server allows at most {max_stop}.",
                       param="stop", code="invalid_value")
    if any(isinstance(s, str) and len(s) > MAX_STOP_CHARS for s in shape.stop):
        raise ApiError(400, f"A 'stop' sequence is longer than {MAX_STOP_CHARS} characters.", param="stop",
                       code="invalid_value")
    for prompt in shape.prompts:
        ids = prompt.token_ids
        if ids and not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < vocab_size for t in ids):
            raise ApiError(400, f"'prompt' holds a token id outside this model's vocabulary (0..{vocab_size - 1}).",
                           param="prompt", code="invalid_value")


def check_context_bounds(shape: RequestShape, max_model_len: int) -> bool:
    """400 when a prompt is surely too long (its lower bound); True when only the tokenizer can tell."""
    uncertain = False
    for p in shape.prompts:
        check_context(p.lower, shape.max_tokens, max_model_len, shape.prompt_param, at_least=p.lower < p.upper)
        room = max_model_len - p.upper
        uncertain |= room <= 0 or (shape.max_tokens is not None and shape.max_tokens > room)
    return uncertain


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict):
                parts.append(str(part.get("text", "")))
            else:
                parts.append(str(getattr(part, "text", "") or ""))
        return "".join(parts)
    return str(content)


def chat_prompt_tokens(request: Any, count_tokens: Any) -> int:
    """Estimated prompt tokens of a chat request (message texts plus a small per-message overhead)."""
    total = 0
    for message in request.messages:
        content = message.get("content") if isinstance(message, dict) else getattr(message, "content", None)
        total += count_tokens(_content_text(content)) + PER_MESSAGE_OVERHEAD
    return total


def completion_prompt_tokens(request: Any, count_tokens: Any) -> list[int]:
    """Prompt tokens of each prompt of a completion request."""
    prompt = request.prompt
    if prompt is None:
        return [0]
    if isinstance(prompt, str):
        return [count_tokens(prompt)]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [len(prompt)]
    if isinstance(prompt, list):
        return [count_tokens(p) if isinstance(p, str) else len(p) for p in prompt] or [0]
    return [0]


def context_exceeded(prompt_param: str, max_model_len: int, size: str | None = None) -> ApiError:
    """400 `context_length_exceeded` for a prompt that does not fit (`size`: its token count, if known)."""
    what = f"The prompt is {size} tokens" if size else "The prompt is too long"
    return ApiError(400, f"{what}; this model's context is {max_model_len}.", param=prompt_param,
                    code="context_length_exceeded")


def check_context(prompt_tokens: int, max_tokens: int | None, max_model_len: int, prompt_param: str, *,
                  at_least: bool = False) -> None:
    """Prompt (+ max_tokens) must fit the context: else 400 `context_length_exceeded`."""
    size = f"at least {prompt_tokens}" if at_least else str(prompt_tokens)
    if prompt_tokens >= max_model_len:
        raise context_exceeded(prompt_param, max_model_len, size)
    if max_tokens is not None and prompt_tokens + max_tokens > max_model_len:
        raise ApiError(400, f"'max_tokens' ({max_tokens}) plus the prompt ({size} tokens) exceeds "
                       f"this model's context of {max_model_len} tokens.", param="max_tokens",
                       code="context_length_exceeded")


def check_context_exact(prompt_tokens: list[int], max_tokens: int | None, max_model_len: int,
                        prompt_param: str) -> None:
    """The exact context check with the tokenizer's counts (only when the byte bounds cannot decide)."""
    for p in prompt_tokens:
        check_context(p, max_tokens, max_model_len, prompt_param)
