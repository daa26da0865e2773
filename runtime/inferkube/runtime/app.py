"""`build_app(settings)`: the FastAPI application (state, routes, error handlers, lifespan) around one engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from inferkube.runtime.engine import Engine
from inferkube.runtime.errors import install_exception_handlers
from inferkube.runtime.metrics import RuntimeMetrics
from inferkube.runtime.routes import install_openapi, openai_api, probes
from inferkube.runtime.settings import RuntimeSettings
from inferkube.runtime.state import RuntimeState
from inferkube.runtime.tenancy import RateLimiter, TenantRegistry


def _lifespan(state: RuntimeState) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Load the engine in the background while the server already answers; release everything at the end."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        load = asyncio.create_task(state.load())
        watching = [asyncio.create_task(w.run(), name=f"watch {w.name}") for w in state.watchers]
        try:
            yield
        finally:
            for task in watching:
                task.cancel()
            if not load.done():
                load.cancel()
            await asyncio.gather(load, return_exceptions=True)
            await state.close()

    return lifespan


def build_app(settings: RuntimeSettings, engine: Engine | None = None, *, registry: TenantRegistry | None = None,
              limiter: RateLimiter | None = None, metrics: RuntimeMetrics | None = None) -> FastAPI:
    """Assemble the runtime app: routes, OpenAI error handlers, and a lifespan that loads the engine."""
    state = RuntimeState.create(settings, engine, registry=registry, limiter=limiter, metrics=metrics)
    app = FastAPI(title="inferkube runtime", version="0.1.0", lifespan=_lifespan(state))
    app.state.runtime = state
    install_exception_handlers(app)
    app.include_router(probes)
    app.include_router(openai_api)
    install_openapi(app)
    return app
