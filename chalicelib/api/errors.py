"""The one place where errors become HTTP responses: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

from chalice.app import Response
from pydantic import BaseModel, ValidationError

from chalicelib.api.auth import Forbidden, Unauthorized
from chalicelib.domain import errors as de
from chalicelib.domain.sampling import SamplingError
from chalicelib.observability import logger
from chalicelib.services.lab import WrongLab

MAX_BODY_BYTES = 1_000_000

# Most specific first: the first matching class wins.
_STATUS: list[tuple[type[BaseException], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (WrongLab, 403),
    (de.NotFound, 404),
    (de.CurrencyMismatch, 400),
    (de.InvalidInput, 400),
    (SamplingError, 400),
    (de.Conflict, 409),
    (de.NoPersonaAvailable, 409),
    (de.TransientError, 503),
]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def respond(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json", **(headers or {})})


def _validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "(body)", "message": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def to_response(exc: BaseException) -> Response:
    if isinstance(exc, ApiError):
        return respond(exc.status, error_body(exc.code, exc.message, exc.details))
    if isinstance(exc, ValidationError):
        details = _validation_details(exc)
        if any(d["type"] == "json_invalid" for d in details):
            return respond(400, error_body("malformed_json", "the request body is not valid JSON", details))
        return respond(400, error_body("invalid_input", "the request failed validation", details))
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            if isinstance(exc, de.DomainError):
                return respond(status, error_body(exc.code, exc.message, exc.details))
            if isinstance(exc, SamplingError):
                return respond(status, error_body("invalid_input", str(exc), [{"field": exc.field}]))
            code = {401: "unauthorized", 403: "forbidden"}.get(status, "error")
            return respond(status, error_body(code, str(exc)))
    logger().exception("unhandled error", extra={"error_type": type(exc).__name__})
    return respond(500, error_body("internal", "unexpected error; it was logged, retry later"))


F = TypeVar("F", bound=Callable[..., Any])


def handles_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            return to_response(exc)

    return wrapper  # type: ignore[return-value]


M = TypeVar("M", bound=BaseModel)


def raw_body(request: Any) -> bytes:
    """The request body as bytes (Chalice may hand over str or bytes)."""
    raw = request.raw_body
    if raw is None:
        return b""
    return raw.encode() if isinstance(raw, str) else bytes(raw)


def parse_body(raw: bytes | None, model: type[M]) -> M:
    """Strictly parse a JSON body into ``model``; malformed, missing, extra or mistyped fields are 400s."""
    if raw is None or raw == b"":
        raise ApiError(400, "invalid_input", "a JSON body is required", [{"field": "(body)"}])
    if len(raw) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes; send smaller batches")
    try:
        parsed = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed_json", "the request body is not valid JSON", [{"field": "(body)"}]) from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "invalid_input", "the request body must be a JSON object", [{"field": "(body)"}])
    # strict=True at call time as well: it also overrides fields declared ``strict=False`` (e.g. the float shares of
    # ProgramCreate), so "0.5" or true is never coerced to a number; JSON ints are still accepted for floats.
    return model.model_validate_json(raw, strict=True)
