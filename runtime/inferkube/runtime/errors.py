"""OpenAI-style error objects: every error the runtime answers has this one shape."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from inferkube.api.contract import REJECTION_VALIDATION

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error a client caused or must wait out; rendered as an OpenAI error object.

    `reason` is the `inferkube_rejections_total` label it is counted under (a contract REJECTION_* value).
    """

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 reason: str = REJECTION_VALIDATION, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.reason = reason
        self.headers = headers or {}


def error_body(status: int, message: str, param: str | None = None, code: str | int | None = None,
               err_type: str | None = None) -> dict:
    """Return the OpenAI error object {"error": {message, type, param, code}}."""
    return {"error": {"message": message, "type": err_type or _TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(err: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    """Render an ApiError as a JSON response with its headers (and any extra `headers`)."""
    return JSONResponse(error_body(err.status, err.message, err.param, err.code), status_code=err.status,
                        headers={**(headers or {}), **err.headers})


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return JSONResponse(error_body(400, f"Invalid request: {first.get('msg', 'bad input')}.", param),
                        status_code=400)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(error_body(exc.status_code, str(exc.detail)), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


def install_exception_handlers(app: FastAPI) -> None:
    """Answer ApiError, FastAPI's request validation and Starlette's HTTP errors (404, 405) as error objects."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
