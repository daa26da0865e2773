"""The HTTP routes, thin: probes and metrics, and the OpenAI API (its work is in checks.py and serving.py)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inferkube.api.contract import HEALTH_PATH, METRICS_PATH, READY_PATH
from inferkube.runtime.checks import MODELS_CHECKS, run_checks
from inferkube.runtime.context import CHAT, COMPLETION, RequestContext
from inferkube.runtime.errors import ApiError
from inferkube.runtime.refusals import refusal_response
from inferkube.runtime.serving import internal_error, serve_generation
from inferkube.runtime.state import DRAINING, FAILED, READY, runtime_state
from inferkube.runtime.validation import request_model

log = logging.getLogger("inferkube.runtime")

probes = APIRouter()
openai_api = APIRouter()


@probes.get(HEALTH_PATH, include_in_schema=True)
async def health(http: Request) -> JSONResponse:
    """Liveness: answers at once; 503 only when the engine has failed."""
    state = runtime_state(http.app)
    if state.phase == FAILED or (state.phase in (READY, DRAINING) and not state.engine.is_healthy()):
        return JSONResponse({"status": "failed"}, status_code=503)
    return JSONResponse({"status": "ok"})


@probes.get(READY_PATH)
async def ready(http: Request) -> JSONResponse:
    """Readiness: 200 only when loaded, warmed up and not draining."""
    state = runtime_state(http.app)
    if state.ready:
        return JSONResponse({"status": READY})
    phase = DRAINING if state.admission.draining else state.phase
    return JSONResponse({"status": phase}, status_code=503)


@probes.get(METRICS_PATH)
async def metrics_page(http: Request) -> Response:
    """Prometheus text format: the runtime's metrics and vLLM's engine metrics."""
    state = runtime_state(http.app)
    state.metrics.sync_backend_errors(state.limiter.backend_errors)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _body_spec(kind: str) -> dict[str, Any]:
    name = "ChatCompletionRequest" if kind == CHAT else "CompletionRequest"
    err = {"content": {"application/json": {"schema": {"type": "object"}}}}
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{name}"}}}},
        "responses": {str(c): {"description": d, **err} for c, d in (
            (400, "Invalid request"), (401, "Missing or wrong API key"), (404, "Unknown model"),
            (413, "Body too large"), (429, "Rate limited or over capacity"), (503, "Loading or draining"))}}


@openai_api.get("/v1/models")
async def list_models(http: Request) -> Response:
    """The served model (OpenAI list format)."""
    state = runtime_state(http.app)
    ctx = RequestContext(http)
    try:
        await run_checks(MODELS_CHECKS, state, ctx)
        return JSONResponse(await state.engine.models())
    except ApiError as err:
        return refusal_response(state, ctx, err)
    except Exception as exc:  # noqa: BLE001 - answered and counted like every other 500
        return internal_error(state, ctx, exc)


@openai_api.post("/v1/chat/completions", openapi_extra=_body_spec(CHAT))
async def chat_completions(http: Request) -> Response:
    """OpenAI chat completions (JSON, or SSE when stream=true)."""
    return await serve_generation(CHAT, http)


@openai_api.post("/v1/completions", openapi_extra=_body_spec(COMPLETION))
async def completions(http: Request) -> Response:
    """OpenAI text completions (JSON, or SSE when stream=true)."""
    return await serve_generation(COMPLETION, http)


def install_openapi(app: FastAPI) -> None:
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
