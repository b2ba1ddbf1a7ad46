"""Helpers shared by the blueprints: who is calling, and which roles may."""

from __future__ import annotations

from typing import Any

from chalicelib.api.auth import Forbidden, Principal, Role, Unauthorized, principal_from_cognito, verify_token
from chalicelib.config import settings


def principal(request: Any) -> Principal:
    cfg = settings()
    if cfg.auth_mode == "cognito":
        return principal_from_cognito(request.context or {})
    header = (request.headers or {}).get("authorization", "")
    if not header.lower().startswith("bearer "):
        raise Unauthorized("send 'Authorization: Bearer <token>'; get a local token with `testbuy token --role ...`")
    return verify_token(cfg.token_secret, header[7:].strip())


def require(request: Any, *roles: Role) -> Principal:
    who = principal(request)
    if who.role not in roles and who.role is not Role.ADMIN:
        raise Forbidden(f"role {who.role.value} may not do this; needs one of {[r.value for r in roles]}")
    return who


def correlation_id(request: Any) -> str:
    headers = request.headers or {}
    given = headers.get("x-correlation-id")
    if given and len(given) <= 128:
        return str(given)
    ctx = request.context or {}
    return str(ctx.get("requestId") or ctx.get("extendedRequestId") or "local")
