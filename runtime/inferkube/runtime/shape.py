"""What the cheap checks know of a request before the full parse: its shape and byte bounds on its tokens.

`peek_request` decodes the JSON body (strict UTF-8, no lone surrogates) and reads the few fields the
cheap checks need (model, n, max_tokens, stop, the prompts and their sizes) without vLLM's request
model, chat template or tokenizer. A field of the wrong type is left at its default here: the full
parse refuses it later with a 400 naming it.

Token bounds without the tokenizer (`TokenBounds`, computed once from the tokenizer at start-up): a
byte-level BPE (or byte-fallback) tokenizer makes at most one token per UTF-8 byte, plus the special
tokens it adds; and at least one token per `max_token_bytes` bytes, the longest vocabulary entry.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from inferkube.runtime.errors import ApiError

# A \uD800-\uDFFF escape: only then can the decoded JSON hold a lone surrogate (pairs are joined).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
CHAT_MESSAGE_OVERHEAD = 8  # tokens a chat template may add per message (role markers, separators)
COMPLETION_DEFAULT_MAX_TOKENS = 16  # vLLM's CompletionRequest default


@dataclass(frozen=True)
class TokenBounds:
    """Bounds on a text's token count from its UTF-8 size (valid for byte-level tokenizers)."""

    max_token_bytes: int = 1  # bytes of the longest vocabulary entry
    special_tokens: int = 0  # tokens the tokenizer adds to every prompt (BOS, ...)

    def lower(self, nbytes: int) -> int:
        """At least this many tokens."""
        return math.ceil(nbytes / max(1, self.max_token_bytes))

    def upper(self, nbytes: int) -> int:
        """At most this many tokens (one per byte, the special tokens, one spare for a prefix piece)."""
        return nbytes + self.special_tokens + 1


@dataclass
class Prompt:
    """One prompt of a request: bounds on its tokens (exact for a list of token ids)."""

    lower: int
    upper: int
    token_ids: list[Any] | None = None


@dataclass
class RequestShape:
    """The fields of a generation request the cheap checks use, read from the raw JSON."""

    data: dict[str, Any]
    model: Any = None
    n: int = 1
    best_of: int = 1
    max_tokens: int | None = None
    max_tokens_param: str = "max_tokens"
    stop: list[Any] = field(default_factory=list)
    prompts: list[Prompt] = field(default_factory=list)
    prompt_param: str = "prompt"

    @property
    def sequences(self) -> int:
        """Sequences this request puts into the engine: prompts x n (x best_of)."""
        return max(1, len(self.prompts)) * max(self.n, self.best_of)


def _positive_int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else default


def decode_json(body: bytes) -> dict[str, Any]:
    """Strict UTF-8 JSON object; malformed JSON, invalid UTF-8 or a lone surrogate -> 400."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc.__class__.__name__}.",
                       code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "Request body is not valid JSON: nested too deeply.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "Request body must be a JSON object.", code="invalid_json")
    if _SURROGATE_ESCAPE.search(body):
        for key, value in data.items():
            if _has_lone_surrogate(value):
                raise ApiError(400, f"'{key}' contains a lone UTF-16 surrogate, which is not valid Unicode.",
                               param=str(key), code="invalid_value")
    return data


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8")) if not text.isascii() else len(text)


def _message_bytes(message: Any) -> tuple[int, int]:
    """(content bytes, bytes of every string in the message): the lower and upper bases of a message."""
    if not isinstance(message, dict):
        return 0, 0
    content = message.get("content")
    if isinstance(content, str):
        text = _utf8_len(content)
    elif isinstance(content, list):
        text = sum(_utf8_len(p["text"]) for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    else:
        text = 0
    rest = sum(_utf8_len(v) for k, v in message.items() if k != "content" and isinstance(v, str))
    return text, text + rest


def _chat_prompts(data: dict[str, Any], bounds: TokenBounds) -> list[Prompt]:
    messages = data.get("messages")
    if not isinstance(messages, list):
        return [Prompt(0, bounds.upper(0))]
    lower = upper = 0
    for message in messages:
        text, everything = _message_bytes(message)
        lower += text
        upper += everything
    overhead = CHAT_MESSAGE_OVERHEAD * len(messages)
    return [Prompt(bounds.lower(lower), bounds.upper(upper) + overhead)]


def _completion_prompts(data: dict[str, Any], bounds: TokenBounds) -> list[Prompt]:
    prompt = data.get("prompt")
    if isinstance(prompt, str):
        size = _utf8_len(prompt)
        return [Prompt(bounds.lower(size), bounds.upper(size))]
    if isinstance(prompt, list) and prompt and not any(isinstance(p, (str, list)) for p in prompt):
        return [Prompt(len(prompt), len(prompt), prompt)]  # one prompt of token ids: exact
    if isinstance(prompt, list) and prompt:
        out = []
        for p in prompt:
            if isinstance(p, str):
                size = _utf8_len(p)
                out.append(Prompt(bounds.lower(size), bounds.upper(size)))
            elif isinstance(p, list):
                out.append(Prompt(len(p), len(p), p))
            else:
                out.append(Prompt(0, 0))
        return out
    return [Prompt(0, bounds.upper(0))]


def peek_request(body: bytes, chat: bool, bounds: TokenBounds) -> RequestShape:
    """Decode the body and read its shape (400 for JSON the full parse could not even start on)."""
    data = decode_json(body)
    shape = RequestShape(data=data, model=data.get("model"))
    shape.n = _positive_int(data.get("n"), 1)
    shape.best_of = _positive_int(data.get("best_of"), 1)
    stop = data.get("stop")
    shape.stop = stop if isinstance(stop, list) else ([stop] if isinstance(stop, str) and stop else [])
    if chat:
        shape.prompt_param = "messages"
        if "messages" in data and not (isinstance(data["messages"], list)
                                       and all(isinstance(m, dict) for m in data["messages"])):
            raise ApiError(400, "'messages' must be a list of message objects.", param="messages",
                           code="invalid_value")
        shape.prompts = _chat_prompts(data, bounds)
        for param in ("max_completion_tokens", "max_tokens"):
            value = data.get(param)
            if isinstance(value, int) and not isinstance(value, bool):
                shape.max_tokens, shape.max_tokens_param = value, param
                break
    else:
        shape.prompts = _completion_prompts(data, bounds)
        value = data.get("max_tokens", COMPLETION_DEFAULT_MAX_TOKENS)
        shape.max_tokens = value if isinstance(value, int) and not isinstance(value, bool) else None
    return shape


def estimate_tokens(shape: RequestShape, max_model_len: int, cap: int, *, upper: bool = True) -> int:
    """Prompt + completion tokens the request can use at most (`upper`) or at least, for the rate limit.

    A prompt longer than the context never runs, so no prompt counts for more than the context holds.
    """
    total = 0
    seqs = max(shape.n, shape.best_of)
    for p in shape.prompts:
        prompt = min(p.upper if upper else p.lower, max(0, max_model_len - 1))
        room = max(0, max_model_len - (p.lower if upper else p.upper))
        budget = shape.max_tokens if shape.max_tokens is not None else room
        total += prompt + seqs * max(0, min(budget, cap, room) if upper else min(budget, cap))
    return total
