"""Authentication and roles.

Two sources of identity, one set of rules: in AWS the API's Cognito authorizer puts the user's groups (roles) and
``custom:lab_id`` in the request context; locally, the CLI issues HS256 tokens signed with a local secret. Either way
the result is a ``Principal`` and the routes check roles the same way. The marketplace authenticates its webhooks by
an HMAC signature over the raw body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    PROGRAM_MANAGER = "program_manager"
    LAB = "lab"
    FINANCE = "finance"
    ENFORCEMENT = "enforcement"
    MARKETPLACE = "marketplace"
    ADMIN = "admin"


class Unauthorized(Exception):
    """No or invalid credentials (401)."""


class Forbidden(Exception):
    """Valid credentials, wrong role or wrong lab (403)."""


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    lab_id: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(
    secret: str,
    role: Role,
    subject: str,
    lab_id: str | None = None,
    ttl_seconds: int = 86400,
    now: float | None = None,
) -> str:
    """A compact HS256 JWT for the local stack."""
    if role is Role.LAB and not lab_id:
        raise ValueError("a lab token needs a lab id")
    issued = int(now if now is not None else time.time())
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims: dict[str, Any] = {"sub": subject, "role": role.value, "iat": issued, "exp": issued + ttl_seconds}
    if lab_id:
        claims["lab_id"] = lab_id
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = _b64(hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest())
    return f"{header}.{body}.{sig}"


def verify_token(secret: str, token: str, now: float | None = None) -> Principal:
    try:
        header, body, sig = token.split(".")
        expected = _b64(hmac.new(secret.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, sig):
            raise Unauthorized("token signature is invalid")
        if json.loads(_unb64(header)).get("alg") != "HS256":
            raise Unauthorized("unsupported token algorithm")
        claims = json.loads(_unb64(body))
    except Unauthorized:
        raise
    except Exception as exc:
        raise Unauthorized("token is malformed") from exc
    if int(claims.get("exp", 0)) < (now if now is not None else time.time()):
        raise Unauthorized("token has expired; issue a new one with `testbuy token`")
    try:
        role = Role(claims["role"])
    except (KeyError, ValueError) as exc:
        raise Unauthorized("token carries no valid role") from exc
    return Principal(subject=str(claims.get("sub", "")), role=role, lab_id=claims.get("lab_id"))


def principal_from_cognito(context: dict[str, Any]) -> Principal:
    claims = (context.get("authorizer") or {}).get("claims") or {}
    groups = claims.get("cognito:groups", "")
    names = groups if isinstance(groups, list) else [g for g in str(groups).replace(",", " ").split() if g]
    roles = [Role(g) for g in names if g in Role._value2member_map_]
    if not roles:
        raise Unauthorized("the signed-in user belongs to no testbuy group")
    return Principal(subject=str(claims.get("sub", "")), role=roles[0], lab_id=claims.get("custom:lab_id"))


def sign_webhook(secret: str, body: bytes, timestamp: int | None = None) -> str:
    t = int(timestamp if timestamp is not None else time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_webhook(
    secret: str, body: bytes, header: str | None, tolerance: int = 300, now: float | None = None
) -> Principal:
    if not header:
        raise Unauthorized("missing X-Testbuy-Signature header")
    try:
        parts = dict(p.split("=", 1) for p in header.split(","))
        t = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError) as exc:
        raise Unauthorized("malformed X-Testbuy-Signature header") from exc
    if abs((now if now is not None else time.time()) - t) > tolerance:
        raise Unauthorized("webhook signature timestamp is outside the tolerance; resend")
    expected = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, given):
        raise Unauthorized("webhook signature does not match the body")
    return Principal(subject="marketplace", role=Role.MARKETPLACE)
