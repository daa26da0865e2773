"""A client that goes away cancels the engine call and frees its admission slot (engine double, raw ASGI)."""

from __future__ import annotations

import asyncio
import contextlib
import json

from inferkube.runtime.app import build_app
from inferkube.runtime.context import COMPLETION
from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.state import READY
from inferkube.runtime.tenancy import TenantRegistry
from inferkube.runtime.validation import request_model
from tests.unit.runtime.engine_double import EngineDouble

request_model(COMPLETION)  # import vLLM's request models up front (slow the first time)


def _scope(spec_version: str = "2.3") -> dict:
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": spec_version}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": "/v1/completions", "raw_path": b"/v1/completions",
            "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json")],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}


def _ready_app(engine: EngineDouble):
    app = build_app(RuntimeSettings(model="m", served_model_name="tiny"), engine, registry=TenantRegistry.empty())
    app.state.runtime.phase = READY
    return app


async def _call_then_disconnect(app, body: dict, after: float) -> list[dict]:
    raw = json.dumps(body).encode()
    sent: list[dict] = []
    messages = [{"type": "http.request", "body": raw, "more_body": False}]

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(after)
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(_scope(), receive, send)
    return sent


async def test_non_streaming_disconnect_cancels_the_engine_call() -> None:
    engine = EngineDouble(delay=30)
    app = build_app(RuntimeSettings(model="m", served_model_name="tiny"), engine, registry=TenantRegistry.empty())
    state = app.state.runtime
    state.phase = READY
    before = state.metrics.disconnects.labels("tiny")._value.get()
    await asyncio.wait_for(_call_then_disconnect(app, {"model": "tiny", "prompt": "x"}, after=0.1), 5)
    assert engine.calls == 1 and engine.cancelled == 1
    assert state.admission.in_flight == 0
    assert state.metrics.disconnects.labels("tiny")._value.get() == before + 1


async def test_streaming_disconnect_frees_the_slot() -> None:
    engine = EngineDouble(delay=0, tokens=10_000)
    app = build_app(RuntimeSettings(model="m", served_model_name="tiny"), engine, registry=TenantRegistry.empty())
    state = app.state.runtime
    state.phase = READY
    sent = await asyncio.wait_for(
        _call_then_disconnect(app, {"model": "tiny", "prompt": "x", "stream": True}, after=0.05), 5)
    assert sent[0]["status"] == 200
    assert engine.stream_aborted == 1 and engine.streamed < 10_000  # the engine saw the stream cut short
    assert state.admission.in_flight == 0


async def test_stream_whose_client_is_gone_before_the_first_byte_frees_the_slot() -> None:
    engine = EngineDouble(delay=0, tokens=5)
    app = build_app(RuntimeSettings(model="m", served_model_name="tiny"), engine, registry=TenantRegistry.empty())
    state = app.state.runtime
    state.phase = READY
    for _ in range(5):
        await asyncio.wait_for(
            _call_then_disconnect(app, {"model": "tiny", "prompt": "x", "stream": True}, after=0), 5)
    assert state.admission.in_flight == 0


async def test_connection_lost_mid_send_closes_the_engine_stream_at_once() -> None:
    engine = EngineDouble(delay=0, tokens=10_000)
    app = _ready_app(engine)
    state = app.state.runtime
    messages = [{"type": "http.request", "body": json.dumps(
        {"model": "tiny", "prompt": "x", "stream": True}).encode(), "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the peer never says goodbye: the socket just breaks
        return {}

    async def send(message: dict) -> None:
        if len(sent) >= 4:
            raise OSError("connection reset by peer")
        sent.append(message)

    with contextlib.suppress(Exception):
        await asyncio.wait_for(app(_scope("2.4"), receive, send), 5)
    # No await since the app returned: the engine stream was closed by the response, not by a later GC.
    assert engine.stream_aborted == 1 and engine.streamed < 10_000
    assert state.admission.in_flight == 0


async def test_cancelled_handler_does_not_leave_its_engine_call_running() -> None:
    engine = EngineDouble(delay=30)
    app = _ready_app(engine)
    state = app.state.runtime
    body = {"type": "http.request", "body": json.dumps({"model": "tiny", "prompt": "x"}).encode(),
            "more_body": False}
    messages = [body]

    async def receive() -> dict:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()
        return {}

    async def send(message: dict) -> None:
        return None

    call = asyncio.create_task(app(_scope(), receive, send))
    for _ in range(500):
        if engine.calls:
            break
        await asyncio.sleep(0.01)
    assert engine.calls == 1 and state.admission.in_flight == 1
    call.cancel()  # what server shutdown does to a handler
    with contextlib.suppress(asyncio.CancelledError):
        await call
    for _ in range(100):
        if engine.cancelled and not state.admission.in_flight:
            break
        await asyncio.sleep(0.01)
    assert engine.cancelled == 1
    assert state.admission.in_flight == 0
