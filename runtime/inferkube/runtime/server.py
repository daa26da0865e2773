"""Run the app under uvicorn with a Kubernetes-friendly SIGTERM (drain first) and limits on slow clients.

Exit codes: 0 the drain completed (every request answered in full), 1 the engine failed, 2 bad settings,
3 the drain timed out (queued requests refused, running ones cut with a 503 / a last SSE error event).

Slow clients: uvicorn has no header read timeout (its keep-alive timer stops at the first byte), so
`GuardedHttpToolsProtocol` closes a connection whose request head is not complete within
`header_timeout` seconds; `read_body` gives the body `body_timeout` seconds (408, connection closed);
uvicorn's `limit_concurrency` caps connections (503 beyond it) and `timeout_keep_alive` closes idle ones.
A malformed request head (e.g. a CR/LF inside a header) gets an OpenAI error object instead of
uvicorn's plain-text 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Generator
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from inferkube.runtime.app import build_app
from inferkube.runtime.errors import error_body
from inferkube.runtime.logs import configure_logging
from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.state import RuntimeState, runtime_state

EXIT_DRAINED, EXIT_ENGINE_FAILED, EXIT_BAD_SETTINGS, EXIT_DRAIN_TIMED_OUT = 0, 1, 2, 3

log = logging.getLogger("inferkube.runtime.server")


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first SIGTERM/SIGINT drains in-flight requests before shutting down."""

    def __init__(self, config: uvicorn.Config, state: RuntimeState, drain_timeout: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout = drain_timeout
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_started = False
        self._drain_task: asyncio.Task[None] | None = None

    async def serve(self, sockets: list | None = None) -> None:
        """Remember the loop (signal handlers schedule the drain on it), then serve."""
        self._loop = asyncio.get_running_loop()
        self.state.on_fatal = self._fatal
        await super().serve(sockets)

    def _fatal(self, exc: BaseException) -> None:
        self.exit_code = EXIT_ENGINE_FAILED
        self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """Install our handlers; unlike uvicorn, do not re-raise the signal afterwards (exit code 0)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        sigs = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """First signal: drain then exit; a second one: exit now."""
        if self._drain_started or self._loop is None:
            self.should_exit = True
            if sig == signal.SIGINT and self._drain_started:
                self.force_exit = True
            return
        self._drain_started = True
        log.info("received signal %s: draining (timeout %.0fs)", signal.Signals(sig).name, self.drain_timeout)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            if not await self.state.drain(self.drain_timeout) and self.exit_code == EXIT_DRAINED:
                self.exit_code = EXIT_DRAIN_TIMED_OUT
        finally:
            self.should_exit = True


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for the request head and an OpenAI-shaped 400."""

    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.debug("closing a connection whose request head did not arrive in %.0fs", self.header_timeout)
            self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # uvicorn's own signature
        """Start the head deadline as soon as the connection opens."""
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        """Between requests, the next head must also arrive within the deadline."""
        if self.cycle is None or self.cycle.response_complete:
            self._arm_head_timer()
        super().data_received(data)

    def on_headers_complete(self) -> None:
        """The head is complete: stop its deadline (the body has its own, in `read_body`)."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Drop the head deadline with the connection."""
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A malformed request head: answer an OpenAI error object and close."""
        body = json.dumps(error_body(400, "Invalid HTTP request: the request line or a header is malformed.",
                                     code="invalid_request")).encode()
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
                             + body)
        self.transport.close()


def serve(settings: RuntimeSettings) -> int:
    """Build the app from `settings`, serve until drained, and return the process exit code."""
    configure_logging(settings.log_level, settings.log_format)
    from inferkube.runtime.engine import engine_stop_limit

    if settings.max_stop_sequences > engine_stop_limit():
        log.error("--max-stop-sequences %d is more than the engine accepts (%d, VLLM_MAX_STOP_STRINGS)",
                  settings.max_stop_sequences, engine_stop_limit())
        return EXIT_BAD_SETTINGS
    app = build_app(settings)
    # JSON: uvicorn's loggers go through our handler, and the request record replaces the access log.
    as_json = settings.log_format == "json"
    protocol = type("GuardedHttp", (GuardedHttpToolsProtocol,), {"header_timeout": settings.header_timeout})
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                            timeout_graceful_shutdown=5, lifespan="on", access_log=not as_json,
                            log_config=None if as_json else uvicorn.config.LOGGING_CONFIG, http=protocol,
                            limit_concurrency=settings.max_connections,
                            timeout_keep_alive=int(settings.keep_alive_timeout))
    state = runtime_state(app)
    state.freeze_heap_when_ready = True
    server = DrainingServer(config, state, settings.drain_timeout)
    server.run()
    return server.exit_code


def exit_now(code: int) -> None:
    """End the process once the server has shut down: flush, then skip the interpreter's teardown (a last
    full garbage collection of the model-sized heap took ~5 s; the engine processes are already gone)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
