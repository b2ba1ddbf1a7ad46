"""System routes and the one HTTP middleware: every error answer, ours or Chalice's own, has the documented body."""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.api.declare import Call, Ok, Reply, endpoint
from chalicelib.api.errors import error_body, respond
from chalicelib.api.schemas import Health

bp = Blueprint(__name__)

# Chalice answers some requests itself, before or around our views, with {"Code": ..., "Message": ...}.
_CHALICE_CODES = {
    400: "invalid_input",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    500: "internal",
}


@endpoint(
    bp, "GET", "/health", summary="Liveness check", tag="system", auth="none", ok=(Ok(200, "the API is up", Health),)
)
def health(call: Call) -> Reply:
    return Reply(200, {"status": "ok"})


def _snake(text: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", text).lower().removesuffix("_error") or "error"


def in_our_shape(response: Response) -> Response:
    """Chalice's own error answers (405 with Allow, 415, its 500) rewritten to ``{"error": {...}}``."""
    body = response.body
    if response.status_code < 400 or not isinstance(body, dict) or "error" in body or "Code" not in body:
        return response
    status = response.status_code
    code = _CHALICE_CODES.get(status) or _snake(str(body.get("Code", "error")))
    message = str(body.get("Message") or "request refused")
    if status >= 500:
        message = "unexpected error; it was logged, retry later"
    headers = {k: str(v) for k, v in (response.headers or {}).items() if k.lower() != "content-type"}
    return respond(status, error_body(code, message), headers)


@bp.middleware("http")
def documented_errors(event: Any, get_response: Callable[[Any], Response]) -> Response:
    return in_our_shape(get_response(event))


class LazyModule:
    """A module imported on first attribute access (keeps heavy imports out of a function's cold start)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)
