"""Which requests the response cache may answer and which answers it may keep.

A wrong hit is a correctness bug nobody sees, so the rules are strict:

- only deterministic requests: `temperature: 0` (greedy; an unset temperature means the model's default,
  which samples) or an explicit `seed`; `n` must be 1 unless seeded (greedy choices would all be equal);
- never with `logprobs` / `top_logprobs` / `prompt_logprobs` / `logprob_token_ids`: callers ask for them to
  score the model as it runs now, and their float values shift with batch composition;
- never with tools the model may call (`tools` with `tool_choice` other than "none"): a replayed tool call
  would repeat its `call_...` id, which clients use to match tool results, and agents resend a prompt to
  act again;
- never with `return_token_ids` / `return_prompt_text` (streamed details the replay does not keep);
- `Cache-Control: no-cache` skips the lookup but stores the fresh answer (it refreshes the entry, like an
  HTTP cache revalidating); `no-store` skips the lookup and stores nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REASON_SAMPLED = "sampled"
REASON_N = "n"
REASON_LOGPROBS = "logprobs"
REASON_TOOLS = "tools"
REASON_TOKEN_DETAILS = "token_details"
REASON_NO_CACHE = "no_cache"
REASON_NO_STORE = "no_store"
REASON_BACKEND = "backend_unavailable"
REASON_TOO_LARGE = "too_large"
BYPASS_REASONS = (REASON_SAMPLED, REASON_N, REASON_LOGPROBS, REASON_TOOLS, REASON_TOKEN_DETAILS,
                  REASON_NO_CACHE, REASON_NO_STORE, REASON_BACKEND)


@dataclass(frozen=True, slots=True)
class Cacheability:
    """What the cache may do for one request: look up an answer, store the fresh one, and why not."""

    lookup: bool
    store: bool
    reason: str | None = None


ALLOWED = Cacheability(lookup=True, store=True)


def cache_control_directives(header: str | None) -> set[str]:
    """Directive names of a Cache-Control header, lower-cased (`max-age=0` -> `max-age`)."""
    if not header:
        return set()
    return {part.split("=", 1)[0].strip().lower() for part in header.split(",") if part.strip()}


def _unsafe_output_reason(request: Any) -> str | None:
    if (getattr(request, "logprobs", None) or getattr(request, "top_logprobs", None)
            or getattr(request, "prompt_logprobs", None) is not None
            or getattr(request, "logprob_token_ids", None)):
        return REASON_LOGPROBS
    if getattr(request, "tools", None) and getattr(request, "tool_choice", None) != "none":
        return REASON_TOOLS
    if getattr(request, "return_token_ids", None) or getattr(request, "return_prompt_text", None):
        return REASON_TOKEN_DETAILS
    return None


def deterministic_reason(request: Any) -> str | None:
    """None when the request's output is deterministic, else the bypass reason."""
    seeded = getattr(request, "seed", None) is not None
    if not seeded and getattr(request, "temperature", None) != 0:
        return REASON_SAMPLED
    if not seeded and (getattr(request, "n", None) or 1) != 1:
        return REASON_N
    return None


def classify(request: Any, cache_control: str | None) -> Cacheability:
    """Apply the rules above to a parsed vLLM request and the request's Cache-Control header."""
    reason = deterministic_reason(request) or _unsafe_output_reason(request)
    if reason is not None:
        return Cacheability(lookup=False, store=False, reason=reason)
    directives = cache_control_directives(cache_control)
    if "no-store" in directives:
        return Cacheability(lookup=False, store=False, reason=REASON_NO_STORE)
    if "no-cache" in directives:
        return Cacheability(lookup=False, store=True, reason=REASON_NO_CACHE)
    return ALLOWED
