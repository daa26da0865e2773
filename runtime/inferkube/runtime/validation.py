"""The rules a request must meet before the engine: body size, JSON, schema, model name, caps, context length.

Pure functions over the parsed request; `checks.py` runs them in order on a request's context.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError

from inferkube.runtime.context import CHAT
from inferkube.runtime.errors import ApiError
from inferkube.runtime.settings import RuntimeSettings

PER_MESSAGE_OVERHEAD = 4  # role markers and separators a chat template adds per message


def request_model(kind: str) -> type[BaseModel]:
    """vLLM's own request model for `kind` (chat or completion)."""
    if kind == CHAT:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        return ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    return CompletionRequest


async def read_body(request: Request, max_bytes: int) -> bytes:
    """Read the body, refusing (413) anything over `max_bytes` without buffering it all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"Request body is larger than {max_bytes} bytes.", code="request_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"Request body is larger than {max_bytes} bytes.", code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


def _loc_to_param(loc: tuple[Any, ...]) -> str | None:
    """The top-level request field an error is about (union branch names are dropped)."""
    return str(loc[0]) if loc else None


def parse_request(body: bytes, model_cls: type[BaseModel]) -> BaseModel:
    """Parse JSON into vLLM's request model; malformed JSON or wrong types -> 400 naming the field."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc.__class__.__name__}.",
                       code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "Request body is not valid JSON: nested too deeply.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Request body must be a JSON object.", code="invalid_json")
    if "messages" in model_cls.model_fields:
        # vLLM's before-validators iterate `messages` and raise TypeError on other shapes.
        messages = data.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ApiError(400, "'messages' must be a list of message objects.", param="messages",
                           code="invalid_value")
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


def check_model(request: Any, served_name: str) -> None:
    """Unknown model -> 404 (an empty/absent model means the served one, as in vLLM)."""
    if request.model and request.model != served_name:
        raise ApiError(404, f"The model '{request.model}' does not exist; this server serves "
                       f"'{served_name}'.",
                       param="model", code="model_not_found")


def requested_max_tokens(request: Any) -> int | None:
    """max_completion_tokens (chat) or max_tokens, whichever the client set."""
    fields = vars(request)  # plain reads: vLLM marks max_tokens deprecated and warns on attribute access
    value = fields.get("max_completion_tokens")
    return value if value is not None else fields.get("max_tokens")


def requested_n(request: Any) -> int:
    """Choices asked for per prompt (`n`; 1 when unset)."""
    return getattr(request, "n", None) or 1


def check_caps(request: Any, n: int, settings: RuntimeSettings) -> None:
    """n, max_tokens and the stop list within the configured caps -> else 400 naming the parameter."""
    if n > settings.max_n:
        raise ApiError(400, f"'n' is {n}; this server allows at most {settings.max_n}.", param="n",
                       code="invalid_value")
    max_tokens = requested_max_tokens(request)
    param = "max_completion_tokens" if vars(request).get("max_completion_tokens") else "max_tokens"
    if max_tokens is not None and max_tokens > settings.max_tokens_cap:
        raise ApiError(400, f"'{param}' is {max_tokens}; this server allows at most "
                       f"{settings.max_tokens_cap}.",
                       param=param, code="invalid_value")
    if max_tokens is not None and max_tokens < 1 and param == "max_completion_tokens":
        raise ApiError(400, f"'{param}' must be at least 1.", param=param, code="invalid_value")
    stop = getattr(request, "stop", None)
    n_stop = len(stop) if isinstance(stop, list) else (1 if stop else 0)
    if n_stop > settings.max_stop_sequences:
        raise ApiError(400, f"'stop' has {n_stop} sequences; this server allows at most "
                       f"{settings.max_stop_sequences}.", param="stop", code="invalid_value")


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


def check_context(prompt_tokens: int, max_tokens: int | None, max_model_len: int, prompt_param: str) -> int:
    """Prompt (+ max_tokens) must fit the context: else 400. Returns the completion-token budget used."""
    if prompt_tokens >= max_model_len:
        raise ApiError(400, f"The prompt is {prompt_tokens} tokens; this model's context is {max_model_len}.",
                       param=prompt_param, code="context_length_exceeded")
    if max_tokens is not None and prompt_tokens + max_tokens > max_model_len:
        raise ApiError(400, f"'max_tokens' ({max_tokens}) plus the prompt ({prompt_tokens} tokens) exceeds "
                       f"this model's context of {max_model_len} tokens.", param="max_tokens",
                       code="context_length_exceeded")
    return max_tokens if max_tokens is not None else max_model_len - prompt_tokens


def estimate_tokens(prompt_tokens: list[int], max_tokens: int | None, n: int, max_model_len: int,
                    cap: int, prompt_param: str) -> int:
    """Estimated prompt + completion tokens of a request (for rate limits); checks the context too."""
    total = 0
    for p in prompt_tokens:
        budget = check_context(p, max_tokens, max_model_len, prompt_param)
        total += p + n * min(budget, cap)
    return total
