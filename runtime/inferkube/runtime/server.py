"""Run the app under uvicorn with a Kubernetes-friendly SIGTERM: drain first, then exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Generator
from types import FrameType

import uvicorn

from inferkube.runtime.app import build_app
from inferkube.runtime.logs import configure_logging
from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.state import RuntimeState, runtime_state

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
        self.exit_code = 1
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
            await self.state.drain(self.drain_timeout)
        finally:
            self.should_exit = True


def serve(settings: RuntimeSettings) -> int:
    """Build the app from `settings`, serve until drained, and return the process exit code."""
    configure_logging(settings.log_level, settings.log_format)
    app = build_app(settings)
    # JSON: uvicorn's loggers go through our handler, and the request record replaces the access log.
    as_json = settings.log_format == "json"
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
                            timeout_graceful_shutdown=5, lifespan="on", access_log=not as_json,
                            log_config=None if as_json else uvicorn.config.LOGGING_CONFIG)
    server = DrainingServer(config, runtime_state(app), settings.drain_timeout)
    server.run()
    return server.exit_code
