"""Cache keys: served model, model revision, route, scope and the canonical request, hashed.

The canonical request is vLLM's own parsed request model dumped with every default filled in, minus the
fields that cannot change the output, as JSON with sorted keys: two bodies that vLLM would serve the
same way get the same key, whatever their key order or omitted defaults.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

KEY_PREFIX = "inferkube:rc"
SCOPE_TENANT = "tenant"
SCOPE_SHARED = "shared"
# Fields that do not change the generated text: transport (stream, stream_options), bookkeeping
# (user, request_id, session_id) and scheduling order (priority).
OUTPUT_NEUTRAL_FIELDS = frozenset({"stream", "stream_options", "user", "request_id", "session_id", "priority"})
_FINGERPRINT_JSON_MAX_BYTES = 1_048_576


def canonical_request(request: BaseModel) -> dict[str, Any]:
    """The request as vLLM parsed it, defaults filled, without the output-neutral fields."""
    return request.model_dump(mode="json", exclude=set(OUTPUT_NEUTRAL_FIELDS))


def _digest(parts: list[Any]) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def scope_of(scope: str, tenant_name: str) -> str:
    """The partition an entry lives in: the tenant's own, or one shared by every caller."""
    return SCOPE_SHARED if scope == SCOPE_SHARED else f"tenant:{tenant_name}"


def exact_key(model: str, revision: str, route: str, scope: str, canonical: dict[str, Any]) -> str:
    """The store key of one exact request (a new model revision or another scope never collides)."""
    return f"{KEY_PREFIX}:x:{_digest([model, revision, route, scope, canonical])}"


def semantic_partition(model: str, revision: str, route: str, scope: str, canonical: dict[str, Any],
                       last_user_index: int) -> str:
    """The key of the group whose answers a semantic match may reuse: everything equal but the text
    of the last user message (system prompt, history, sampling parameters, scope, revision)."""
    rest = json.loads(json.dumps(canonical))
    rest["messages"][last_user_index] = {"role": "user", "content": None}
    return f"{KEY_PREFIX}:s:{_digest([model, revision, route, scope, rest])}"


def model_revision(model_ref: str, explicit: str | None) -> str:
    """The revision identity of the served weights: the explicit revision when given, plus a
    fingerprint of a local model directory (file names and sizes, the content of its JSON files)."""
    parts: list[Any] = [model_ref, explicit or ""]
    path = Path(model_ref)
    if path.is_dir():
        for item in sorted(path.iterdir()):
            if not item.is_file():
                continue
            size = item.stat().st_size
            parts.append([item.name, size])
            if item.suffix == ".json" and size <= _FINGERPRINT_JSON_MAX_BYTES:
                parts.append(hashlib.sha256(item.read_bytes()).hexdigest())
    return _digest(parts)[:16]
