"""`build_app(settings)`: the FastAPI application (routes, error handlers, lifespan) around one engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from inferkube.api.contract import HEALTH_PATH, METRICS_PATH, READY_PATH
from inferkube.runtime.admission import AdmissionController
from inferkube.runtime.engine import Engine
from inferkube.runtime.errors import ApiError, error_body, error_response
from inferkube.runtime.metrics import RuntimeMetrics, get_metrics
from inferkube.runtime.serving import CHAT, COMPLETION, request_model, serve_generation
from inferkube.runtime.settings import RuntimeSettings

log = logging.getLogger("inferkube.runtime")

LOADING, WARMING, READY, DRAINING, FAILED = "loading", "warming", "ready", "draining", "failed"


class RuntimeState:
    """Everything one running server shares: settings, engine, tenancy, admission, metrics, phase."""

    def __init__(self, settings: RuntimeSettings, engine: Engine, registry: Any, limiter: Any,
                 metrics: RuntimeMetrics) -> None:
        self.settings = settings
        self.engine = engine
        self.registry = registry
        self.limiter = limiter
        self.metrics = metrics
        self.admission = AdmissionController(settings.max_in_flight, settings.max_queued)
        self.phase = LOADING
        self.on_fatal: Callable[[BaseException], None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        metrics.bind_gauges(settings.model_name, lambda: self.admission.queued,
                            lambda: self.admission.in_flight)

    @property
    def ready(self) -> bool:
        """True when the model is loaded, warmed up, and the server is not draining."""
        return self.phase == READY and not self.admission.draining

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a small background coroutine, keeping a reference until it ends."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def authenticate(self, raw_request: Request) -> Any:
        """The caller's tenant; 401 when keys are configured and the bearer key is missing or wrong."""
        from inferkube.runtime.tenancy import ANONYMOUS

        if not self.registry.enabled:
            return ANONYMOUS
        tenant = self.registry.authenticate(raw_request.headers.get("authorization"))
        if tenant is None:
            raise ApiError(401, "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
                           code="invalid_api_key", reason="auth", headers={"WWW-Authenticate": "Bearer"})
        return tenant

    def require_ready(self) -> None:
        """503 with Retry-After while the model is still loading or warming up."""
        if self.phase in (LOADING, WARMING):
            raise ApiError(503, "The model is still loading; retry shortly.", code="model_loading",
                           reason="admission", headers={"Retry-After": "5"})
        if self.phase == FAILED:
            raise ApiError(503, "The engine failed; this replica is restarting.", code="engine_failed",
                           reason="admission")

    async def load(self) -> None:
        """Start the engine and warm it up; on failure mark the server failed and call on_fatal."""
        try:
            await self.engine.start()
            self.phase = WARMING
            if self.settings.warmup:
                await self.engine.warmup()
            self.phase = READY
            log.info("model %s ready", self.settings.model_name)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - any load failure makes the replica unhealthy
            self.phase = FAILED
            log.error("engine failed to start: %s", exc)
            if self.on_fatal is not None:
                self.on_fatal(exc)

    async def drain(self, timeout: float) -> bool:
        """Stop admitting, flip /ready to 503, and wait up to `timeout` s for in-flight work to end."""
        self.admission.start_draining()
        log.info("draining: %d in flight, %d queued", self.admission.in_flight, self.admission.queued)
        idle = await self.admission.wait_idle(timeout)
        log.info("drain %s", "complete" if idle else "timed out")
        return idle


def _build_tenancy(settings: RuntimeSettings) -> tuple[Any, Any]:
    from inferkube.runtime.tenancy import TenantRegistry, build_rate_limiter

    registry = (TenantRegistry.from_file(settings.tenants_file) if settings.tenants_file
                else TenantRegistry.empty())
    limiter = build_rate_limiter(settings.rate_limit_backend, settings.redis_url,
                                 settings.rate_limit_fail_open, settings.default_requests_per_minute,
                                 settings.default_tokens_per_minute)
    return registry, limiter


def _install_openapi(app: FastAPI) -> None:
    """Describe the generation bodies with vLLM's request schemas (the routes parse bodies themselves)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for kind in (CHAT, COMPLETION):
            cls = request_model(kind)
            js = cls.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(js.pop("$defs", {}))
            components[cls.__name__] = js
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI documents replacing app.openapi to customise the schema


def _body_spec(kind: str) -> dict[str, Any]:
    name = "ChatCompletionRequest" if kind == CHAT else "CompletionRequest"
    err = {"content": {"application/json": {"schema": {"type": "object"}}}}
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{name}"}}}},
        "responses": {str(c): {"description": d, **err} for c, d in (
            (400, "Invalid request"), (401, "Missing or wrong API key"), (404, "Unknown model"),
            (413, "Body too large"), (429, "Rate limited or over capacity"), (503, "Loading or draining"))}}


async def _guarded(call: Awaitable[Response]) -> Response:
    """Run a route; an unexpected error becomes a 500 error object and a log line without its message
    (exception messages can quote request content, which must never reach the logs)."""
    try:
        return await call
    except Exception as exc:  # noqa: BLE001
        log.error("unexpected error: %s", exc.__class__.__name__)
        return JSONResponse(error_body(500, "Internal server error."), status_code=500)


def build_app(settings: RuntimeSettings, engine: Engine | None = None, *, registry: Any = None,
              limiter: Any = None, metrics: RuntimeMetrics | None = None) -> FastAPI:
    """Assemble the runtime app: routes, OpenAI error handlers, and a lifespan that loads the engine."""
    if engine is None:
        from inferkube.runtime.engine import VLLMEngine

        engine = VLLMEngine(settings)
    if registry is None or limiter is None:
        built_registry, built_limiter = _build_tenancy(settings)
        registry = registry if registry is not None else built_registry
        limiter = limiter if limiter is not None else built_limiter
    state = RuntimeState(settings, engine, registry, limiter, metrics or get_metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        load = asyncio.create_task(state.load())
        try:
            yield
        finally:
            if not load.done():
                load.cancel()
            await asyncio.gather(load, return_exceptions=True)
            await state.engine.stop()
            close: Callable[[], Awaitable[None]] | None = getattr(state.limiter, "close", None)
            if close is not None:
                await close()

    app = FastAPI(title="inferkube runtime", version="0.1.0", lifespan=lifespan)
    app.state.runtime = state
    _install_openapi(app)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return JSONResponse(error_body(400, f"Invalid request: {first.get('msg', 'bad input')}.", param),
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))


    @app.get(HEALTH_PATH, include_in_schema=True)
    async def health() -> JSONResponse:
        """Liveness: answers at once; 503 only when the engine has failed."""
        if state.phase == FAILED or (state.phase in (READY, DRAINING) and not state.engine.is_healthy()):
            return JSONResponse({"status": "failed"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get(READY_PATH)
    async def ready() -> JSONResponse:
        """Readiness: 200 only when loaded, warmed up and not draining."""
        if state.ready:
            return JSONResponse({"status": READY})
        phase = DRAINING if state.admission.draining else state.phase
        return JSONResponse({"status": phase}, status_code=503)

    @app.get(METRICS_PATH)
    async def metrics_page() -> Response:
        """Prometheus text format: the runtime's metrics and vLLM's engine metrics."""
        state.metrics.sync_backend_errors(int(getattr(state.limiter, "backend_errors", 0)))
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models(raw_request: Request) -> JSONResponse:
        """The served model (OpenAI list format)."""
        try:
            state.authenticate(raw_request)
            state.require_ready()
        except ApiError as err:
            state.metrics.rejections.labels(settings.model_name, err.reason).inc()
            return error_response(err)
        return JSONResponse(await state.engine.models())

    @app.post("/v1/chat/completions", openapi_extra=_body_spec(CHAT))
    async def chat_completions(raw_request: Request) -> Response:
        """OpenAI chat completions (JSON, or SSE when stream=true)."""
        return await _guarded(serve_generation(CHAT, raw_request))

    @app.post("/v1/completions", openapi_extra=_body_spec(COMPLETION))
    async def completions(raw_request: Request) -> Response:
        """OpenAI text completions (JSON, or SSE when stream=true)."""
        return await _guarded(serve_generation(COMPLETION, raw_request))

    return app
