"""Errors as OpenAI shapes them: `{"error": {"message", "type", "param", "code"}}`.

Every handler raises `APIError`; the app turns it (and Starlette's HTTP errors, and
anything unexpected) into that body with the right status, so a bad request never
takes the server down and every client library can read the reason.
"""
from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

# status -> OpenAI error "type"
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    501: "not_implemented_error",
    503: "server_error",
}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPES.get(status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


def shutting_down() -> APIError:
    """What a request gets when the server stops before it is answered."""
    return APIError(503, "the server is shutting down", code="unavailable")
