"""Authentication and roles. Access fails closed.

Two sources of identity, one set of rules: in AWS the API's Cognito authorizer puts the user's groups (roles) and
``custom:lab_id`` in the request context; locally, the CLI issues HS256 JWTs (PyJWT) signed with a per-stack secret,
with issuer, audience, expiry and not-before, all checked. Either way the result is a ``Principal``:

- exactly one testbuy role. A Cognito user in two or more testbuy groups is refused (401): there is no precedence
  to get wrong and the answer never depends on the order Cognito lists the groups in. Groups that are not testbuy
  roles are ignored.
- a ``lab`` principal always carries a valid lab id; a lab principal without one is refused (401) at authentication,
  never passed on with "no lab" (which used to mean "every lab").

Marketplace webhooks are authenticated the Standard Webhooks way (``chalicelib/api/webhooks.py``); this module holds the
signing half (used by the simulated marketplace and the tests) next to the verifying half.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt


class Role(StrEnum):
    PROGRAM_MANAGER = "program_manager"
    LAB = "lab"
    FINANCE = "finance"
    ENFORCEMENT = "enforcement"
    MARKETPLACE = "marketplace"
    ADMIN = "admin"


class Unauthorized(Exception):
    """No or invalid credentials, or a principal that cannot be established unambiguously (401)."""


class Forbidden(Exception):
    """Valid credentials, wrong role or wrong lab (403)."""


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    lab_id: str | None = None


LAB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")  # the Identifier of chalicelib.domain.models
ISSUER = "testbuy-local"
AUDIENCE = "testbuy-api"
_LEEWAY_SECONDS = 5


def _principal(subject: Any, role: Role, lab_id: Any) -> Principal:
    """The one rule for every identity source: a lab has a valid lab id, other roles carry none."""
    if role is Role.LAB:
        if not isinstance(lab_id, str) or not LAB_ID.fullmatch(lab_id):
            raise Unauthorized("a lab principal must carry a valid lab id; ask an administrator to set it")
        return Principal(subject=str(subject or ""), role=role, lab_id=lab_id)
    return Principal(subject=str(subject or ""), role=role, lab_id=None)


def issue_token(
    secret: str,
    role: Role,
    subject: str,
    lab_id: str | None = None,
    ttl_seconds: int = 86400,
    now: float | None = None,
) -> str:
    """A compact HS256 JWT for the local stack (issuer ``testbuy-local``, audience ``testbuy-api``)."""
    if role is Role.LAB and not lab_id:
        raise ValueError("a lab token needs a lab id")
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject,
        "role": role.value,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
    }
    if lab_id:
        claims["lab_id"] = lab_id
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(secret: str, token: str, now: float | None = None) -> Principal:
    """Signature, ``alg`` (HS256 only), issuer, audience, ``exp``, ``nbf``; every failure is ``Unauthorized``."""
    options: Any = {"require": ["exp", "nbf", "iat", "iss", "aud", "sub"]}
    try:
        if now is not None:  # PyJWT checks times against the wall clock; tests pin it by checking them here
            options.update(verify_exp=False, verify_nbf=False, verify_iat=False)
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            options=options,
            leeway=_LEEWAY_SECONDS,
        )
        if now is not None:
            if not isinstance(claims["exp"], int) or not isinstance(claims["nbf"], int):
                raise jwt.DecodeError("exp and nbf must be integers")
            if claims["exp"] < now - _LEEWAY_SECONDS:
                raise jwt.ExpiredSignatureError("Signature has expired")
            if claims["nbf"] > now + _LEEWAY_SECONDS:
                raise jwt.ImmatureSignatureError("The token is not yet valid (nbf)")
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token has expired; issue a new one with `testbuy token`") from exc
    except Exception as exc:  # noqa: BLE001 - any malformed claim (a float exp of 1e400, a list...) is a 401, never a 500
        raise Unauthorized("token is invalid or malformed") from exc
    try:
        role = Role(claims["role"])
    except (KeyError, ValueError, TypeError) as exc:
        raise Unauthorized("token carries no valid role") from exc
    return _principal(claims.get("sub"), role, claims.get("lab_id"))


def principal_from_cognito(context: Mapping[str, Any]) -> Principal:
    """The principal of a request that API Gateway's Cognito authorizer let through.

    ``cognito:groups`` arrives as a list, or as a string (comma- or space-separated, sometimes bracketed). Exactly one
    testbuy group is required: none or several is a 401, whatever their order.
    """
    claims = (context.get("authorizer") or {}).get("claims") or {}
    groups = claims.get("cognito:groups", "")
    if isinstance(groups, list):
        names = [str(g) for g in groups]
    else:
        names = [g for g in re.split(r"[\s,\[\]]+", str(groups)) if g]
    roles = sorted({Role(g) for g in names if g in Role._value2member_map_})
    if not roles:
        raise Unauthorized("the signed-in user belongs to no testbuy group")
    if len(roles) > 1:
        raise Unauthorized(
            "the signed-in user belongs to several testbuy groups "
            f"({', '.join(r.value for r in roles)}); a user must be in exactly one"
        )
    return _principal(claims.get("sub"), roles[0], claims.get("custom:lab_id"))


# ------------------------------------------------------------------------------------------------ Standard Webhooks

SECRET_PREFIX = "whsec_"


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: ``whsec_<base64>`` decodes to the key bytes."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret has the form whsec_<base64>")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a webhook secret has the form whsec_<base64>") from None
    if len(key) < 16:
        raise ValueError("a webhook secret must hold at least 16 bytes")
    return key


def webhook_signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 over "<id>.<timestamp>." + raw body>``."""
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def sign_webhook(
    secrets: str | Sequence[str], body: bytes, msg_id: str = "msg_test", timestamp: int | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body``; several secrets sign it with each (rotation)."""
    ts = str(int(timestamp if timestamp is not None else time.time()))
    keys = [webhook_key(s) for s in ([secrets] if isinstance(secrets, str) else secrets)]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": ts,
        "webhook-signature": " ".join(webhook_signature(k, msg_id, ts, body) for k in keys),
    }
