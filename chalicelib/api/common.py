"""Helpers shared by the blueprints."""

from __future__ import annotations

from typing import Any

from chalicelib.api.auth import Role

PM, LAB, FIN, ENF = Role.PROGRAM_MANAGER, Role.LAB, Role.FINANCE, Role.ENFORCEMENT


def correlation_id(request: Any) -> str:
    headers = request.headers or {}
    given = headers.get("x-correlation-id")
    if given and len(given) <= 128 and str(given).isascii() and str(given).isprintable():
        return str(given)
    ctx = request.context or {}
    return str(ctx.get("requestId") or ctx.get("extendedRequestId") or "local")
