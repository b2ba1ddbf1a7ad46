"""The one place where errors become HTTP responses: ``{"error": {"code", "message", "details"}}``."""

from __future__ import annotations

import json
import sys
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from chalice.app import Response
from pydantic import BaseModel, ValidationError

from chalicelib.api.auth import Forbidden, Unauthorized
from chalicelib.domain import errors as de
from chalicelib.observability import logger

MAX_BODY_BYTES = 1_000_000

# Most specific first: the first matching class wins.
_STATUS: list[tuple[type[BaseException], int]] = [
    (Unauthorized, 401),
    (Forbidden, 403),
    (de.NotFound, 404),
    (de.CurrencyMismatch, 400),
    (de.InvalidInput, 400),
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


def _lazy(module: str, name: str) -> type[BaseException] | None:
    """An exception class of a module that the API does not import eagerly (the statistics, the lab service): if the
    module is not loaded, no exception of that class can have been raised."""
    loaded = sys.modules.get(module)
    cls = getattr(loaded, name, None) if loaded is not None else None
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


def to_response(exc: BaseException) -> Response:
    wrong_lab = _lazy("chalicelib.services.lab", "WrongLab")
    if wrong_lab is not None and isinstance(exc, wrong_lab):
        return respond(404, error_body("not_found", "no such sample for this lab", [{"field": "order_id"}]))
    sampling_error = _lazy("chalicelib.domain.sampling", "SamplingError")
    if sampling_error is not None and isinstance(exc, sampling_error):
        return respond(400, error_body("invalid_input", str(exc), [{"field": getattr(exc, "field", "(body)")}]))
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
            code = {401: "unauthorized", 403: "forbidden"}.get(status, "error")
            return respond(status, error_body(code, str(exc)))
    logger().exception("unhandled error", extra={"error_type": type(exc).__name__})
    return respond(500, error_body("internal", "unexpected error; it was logged, retry later"))


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
        parsed = json.loads(raw, parse_float=_json_number)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "malformed_json", "the request body is not valid JSON", [{"field": "(body)"}]) from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "invalid_input", "the request body must be a JSON object", [{"field": "(body)"}])
    # strict=True at call time as well: it also overrides fields declared ``strict=False`` (e.g. the float shares of
    # ProgramCreate), so "0.5" or true is never coerced to a number; JSON ints are still accepted for floats.
    # The body is re-encoded after _json_number turned integral numbers (5.0, 1e3) into integers: JSON Schema counts
    # them as integers, so the server does too (the OpenAPI document and the server agree); 5.5 stays a float.
    return model.model_validate_json(json.dumps(parsed, allow_nan=True), strict=True)


def _json_number(text: str) -> int | float:
    """A JSON number with a fraction or exponent: an exact integer when its value is integral (``5.0``, ``1e3``),
    else a float. Exponents beyond 1e30 stay floats (an integer of 1e999999 digits would be a denial of service);
    magnitudes below 1e-100 are 0."""
    try:
        value = Decimal(text)
    except InvalidOperation:  # pragma: no cover - the JSON grammar has already been checked
        return float(text)
    if value.is_finite() and abs(value.adjusted()) <= 30 and value == value.to_integral_value():
        return int(value)
    if value.is_finite() and value != 0 and value.adjusted() < -100:
        return 0.0  # below DynamoDB's smallest number (1e-130): read as 0, as the OpenAPI document says
    return float(text)
