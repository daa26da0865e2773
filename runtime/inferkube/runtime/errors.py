"""OpenAI-style error objects: every error the runtime answers has this one shape."""

from __future__ import annotations

from fastapi.responses import JSONResponse

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An error a client caused or must wait out; rendered as an OpenAI error object."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 reason: str = "validation", headers: dict[str, str] | None = None) -> None:
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


def error_response(err: ApiError) -> JSONResponse:
    """Render an ApiError as a JSON response with its headers."""
    return JSONResponse(error_body(err.status, err.message, err.param, err.code), status_code=err.status,
                        headers=err.headers)
