"""Log output of the runtime: text (default) or one JSON object per line for log pipelines (ELK, Loki).

In JSON mode every answered or refused generation request is one `inferkube.runtime.requests` record:
time, request id, tenant, model, status, prompt/completion tokens, TTFT and duration. Prompts,
completions and API keys are never part of a record.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from inferkube.runtime.context import RequestContext

LogFormat = Literal["text", "json"]
REQUEST_LOGGER = "inferkube.runtime.requests"
REQUEST_ID_HEADER = "x-request-id"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_request_log = logging.getLogger(REQUEST_LOGGER)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            out["exception"] = record.exc_info[0].__name__  # the class only: messages can quote input
        return json.dumps(out, separators=(",", ":"), default=str)


def configure_logging(level: str, fmt: LogFormat = "text") -> None:
    """Install the root handler; per-request records only in JSON mode (text keeps the access log)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    _request_log.setLevel(logging.INFO if fmt == "json" else logging.WARNING)


def request_id(headers: Any) -> str:
    """The caller's X-Request-Id when it is a plain token, else a new random id."""
    given = headers.get(REQUEST_ID_HEADER) if headers is not None else None
    return given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex


def log_request(model: str, ctx: RequestContext, status: str, reason: str | None = None) -> None:
    """Emit the request record (JSON mode only): ids, outcome, token counts and timings in milliseconds."""
    if not _request_log.isEnabledFor(logging.INFO):
        return
    tracker = ctx.tracker
    end = time.perf_counter()
    ttft = None if tracker.first_token_at is None else round((tracker.first_token_at - tracker.started) * 1000, 1)
    fields = {"request_id": ctx.request_id, "tenant": ctx.tenant_label, "model": model,
              "status": int(status), "prompt_tokens": tracker.prompt_tokens,
              "completion_tokens": tracker.completion_tokens, "ttft_ms": ttft,
              "duration_ms": round((end - tracker.started) * 1000, 1)}
    if reason:
        fields["rejected"] = reason
    _request_log.info("request", extra={"fields": fields})
