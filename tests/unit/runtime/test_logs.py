"""`--log-format json`: one JSON object per generation request, never a prompt or a key."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from inferkube.runtime.app import build_app
from inferkube.runtime.cli import parse_serve_args
from inferkube.runtime.logs import REQUEST_LOGGER, JsonFormatter, configure_logging
from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.tenancy import TenantRegistry
from tests.unit.runtime.engine_double import EngineDouble
from tests.unit.runtime.test_app import _wait_ready

KEY = "sk-CANARYKEY-logs-1234"
PROMPT = "PROMPTCANARY-logs-5678"
TENANTS = f"tenants:\n  - name: alpha\n    key: {KEY}\n"


@pytest.fixture
def records() -> Iterator[io.StringIO]:
    """JSON mode on; the request records, formatted as they would be printed."""
    root, requests = logging.getLogger(), logging.getLogger(REQUEST_LOGGER)
    saved = (list(root.handlers), root.level, requests.level)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    configure_logging("info", "json")
    requests.addHandler(handler)
    yield stream
    requests.removeHandler(handler)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    requests.setLevel(saved[2])


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_record_per_request_with_ids_tokens_and_timings(records: io.StringIO) -> None:
    settings = RuntimeSettings(model="builtin:tiny", served_model_name="tiny", log_format="json")
    app = build_app(settings, EngineDouble(), registry=TenantRegistry.from_yaml(TENANTS))
    body = {"model": "tiny", "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 4}
    with TestClient(app) as client:
        _wait_ready(client)
        ok = client.post("/v1/chat/completions", json=body,
                         headers={"Authorization": f"Bearer {KEY}", "X-Request-Id": "req-42"})
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True},
                               headers={"Authorization": f"Bearer {KEY}"})
        denied = client.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer CANARYKEY-no"})
    assert (ok.status_code, streamed.status_code, denied.status_code) == (200, 200, 401)
    first, second, third = _lines(records)
    assert first["request_id"] == "req-42" and first["tenant"] == "alpha" and first["model"] == "tiny"
    assert first["status"] == 200 and first["prompt_tokens"] > 0 and first["completion_tokens"] > 0
    assert first["duration_ms"] >= 0 and {"time", "level", "logger", "ttft_ms"} <= set(first)
    assert second["ttft_ms"] is not None and second["ttft_ms"] <= second["duration_ms"]
    assert len(second["request_id"]) == 32 and second["request_id"] != first["request_id"]
    assert third["status"] == 401 and third["tenant"] == "anonymous" and third["rejected"] == "auth"
    text = records.getvalue()
    assert "CANARYKEY" not in text and PROMPT not in text


def test_text_mode_writes_no_request_records(records: io.StringIO) -> None:
    configure_logging("info", "text")
    app = build_app(RuntimeSettings(model="builtin:tiny", served_model_name="tiny"), EngineDouble(),
                    registry=TenantRegistry.empty())
    with TestClient(app) as client:
        _wait_ready(client)
        client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2})
    assert records.getvalue() == ""


def test_a_request_id_that_is_not_a_plain_token_is_replaced(records: io.StringIO) -> None:
    app = build_app(RuntimeSettings(model="builtin:tiny", served_model_name="tiny"), EngineDouble(),
                    registry=TenantRegistry.empty())
    with TestClient(app) as client:
        _wait_ready(client)
        client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2},
                    headers={"X-Request-Id": "bad id\twith spaces"})
    (record,) = _lines(records)
    assert record["request_id"] != "bad id\twith spaces" and len(record["request_id"]) == 32


def test_the_flag_and_its_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RuntimeSettings(**parse_serve_args(["--log-format", "json"])).log_format == "json"
    monkeypatch.setenv("INFERKUBE_LOG_FORMAT", "json")
    assert RuntimeSettings().log_format == "json"
    with pytest.raises(SystemExit):
        parse_serve_args(["--log-format", "xml"])
