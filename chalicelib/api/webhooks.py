"""Marketplace webhooks, the Standard Webhooks way; and the order/persona read routes.

Verification (``verify_webhook``), every failure a 401 and never a 500:
- ``webhook-id``: 1-128 ASCII characters ``[A-Za-z0-9_.:=-]``; it is the idempotency key of the notice;
- ``webhook-timestamp``: ASCII digits only, within ``TOLERANCE_SECONDS`` of now, in the past or the future;
- ``webhook-signature``: space-separated ``v1,<base64>`` entries; entries of another version, without a comma,
  with non-ASCII text or bad base64 are skipped; the notice is accepted when any entry matches the HMAC-SHA256 of
  ``"<id>.<timestamp>." + raw body`` under the current or the previous secret (rotation), compared in constant time.

The secrets are read at run time from Secrets Manager (``TESTBUY_WEBHOOK_SECRET_ARN``; value
``{"current": "whsec_...", "previous": "whsec_..." | null}``) through powertools parameters, cached for
``SECRET_MAX_AGE`` seconds: a rotation needs no deployment and the secret is never in the function's environment.

Deduplication: the ``webhook-id`` is claimed durably (``WebhookReceipts``, kept ``KEEP_SECONDS`` with a DynamoDB
time to live) before the notice is processed; a replay of a processed id answers 202 with ``replay: true`` and
changes nothing; an id being processed right now answers 409 (the sender retries); a failed processing releases
the claim so the retry is processed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from chalice.app import Blueprint

from chalicelib.api.auth import Principal, Role, Unauthorized, webhook_key, webhook_signature
from chalicelib.api.common import ENF, FIN, PM
from chalicelib.api.declare import Call, Ok, PathParam, Reply, endpoint
from chalicelib.api.errors import ApiError
from chalicelib.api.schemas import DeliveryAccepted, OrderView, PersonaView
from chalicelib.bootstrap import deps
from chalicelib.domain.errors import TransientError
from chalicelib.domain.models import DeliveryNotice

bp = Blueprint(__name__)

TOLERANCE_SECONDS = 300
SECRET_MAX_AGE = 300
LEASE_SECONDS = 60
KEEP_SECONDS = 7 * 86400  # longer than any sender's retry schedule (Standard Webhooks senders retry for days)
WEBHOOK_ID = re.compile(r"^[A-Za-z0-9_.:=-]{1,128}$")
_MAX_SIGNATURE_HEADER = 4096


def verify_webhook(keys: Sequence[bytes], headers: Mapping[str, Any], body: bytes, now: float | None = None) -> str:
    """The verified ``webhook-id``; ``Unauthorized`` for anything else (see the module docstring)."""
    msg_id, stamp, signatures = (headers.get(h) for h in ("webhook-id", "webhook-timestamp", "webhook-signature"))
    if not isinstance(msg_id, str) or not isinstance(stamp, str) or not isinstance(signatures, str):
        raise Unauthorized("send the webhook-id, webhook-timestamp and webhook-signature headers")
    if not WEBHOOK_ID.fullmatch(msg_id):
        raise Unauthorized("webhook-id must be 1-128 characters of [A-Za-z0-9_.:=-]")
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        raise Unauthorized("webhook-timestamp must be integer seconds since the epoch")
    current = time.time() if now is None else now
    if abs(current - int(stamp)) > TOLERANCE_SECONDS:
        raise Unauthorized(f"webhook-timestamp is more than {TOLERANCE_SECONDS} s from now; resend")
    if len(signatures) > _MAX_SIGNATURE_HEADER:
        raise Unauthorized("webhook-signature is too long")
    expected = [base64.b64decode(webhook_signature(k, msg_id, stamp, body)[3:]) for k in keys]
    for entry in signatures.split(" "):
        version, comma, value = entry.partition(",")
        if version != "v1" or not comma or not value.isascii():
            continue  # another version, or a malformed entry: skipped, never an error
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(given, e) for e in expected):
            return msg_id
    raise Unauthorized("no webhook-signature entry matches the body")


def webhook_keys() -> list[bytes]:
    """The current and (during a rotation) previous signing keys, from Secrets Manager, cached."""
    from aws_lambda_powertools.utilities import parameters

    from chalicelib.config import settings

    try:
        value = parameters.get_secret(settings().webhook_secret_arn, max_age=SECRET_MAX_AGE)
    except Exception as exc:  # noqa: BLE001 - Secrets Manager unavailable: the sender retries
        raise TransientError("the webhook secret cannot be read right now; retry") from exc
    try:
        doc = json.loads(value if isinstance(value, str | bytes) else "")
        secrets = [doc["current"]] + ([doc["previous"]] if doc.get("previous") else [])
        return [webhook_key(str(s)) for s in secrets]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise RuntimeError('the webhook secret must be {"current": "whsec_...", "previous": ... | null}') from exc


def authenticate_webhook(request: Any, raw: bytes) -> tuple[Principal, dict[str, Any]]:
    """The declaration's authentication of ``auth="webhook"`` routes."""
    msg_id = verify_webhook(webhook_keys(), request.headers or {}, raw)
    return Principal(subject="marketplace", role=Role.MARKETPLACE), {"webhook_id": msg_id}


@endpoint(
    bp,
    "POST",
    "/webhooks/delivery",
    summary="Marketplace delivery notice (Standard Webhooks signature)",
    tag="webhooks",
    roles=(Role.MARKETPLACE,),
    auth="webhook",
    request=DeliveryNotice,
    ok=(Ok(202, "the notice was received (or this webhook-id was already processed: replay true)", DeliveryAccepted),),
    errors=(404, 409),
    description="401 for a missing or bad signature, a timestamp outside 300 s, a malformed header; 409 "
    "webhook_in_progress while an earlier arrival of the same webhook-id is being processed (retry). Only the first "
    "stored arrival of an order's delivery news changes it and resumes its workflow.",
)
def delivery(call: Call) -> Reply:
    from chalicelib.services import orders

    d = deps()
    receipts = d.webhook_receipts
    if receipts is None:  # pragma: no cover - bootstrap always wires it
        raise RuntimeError("webhook receipts are not wired")
    notice: DeliveryNotice = call.body
    webhook_id = str(call.context["webhook_id"])
    orders.check_delivery(d, notice)  # a notice that can never apply is refused before its id is claimed
    state = receipts.claim(webhook_id, d.clock.now(), LEASE_SECONDS, KEEP_SECONDS)
    if state == "done":
        return Reply(202, {"order_id": notice.order_id, "accepted": True, "replay": True})
    if state == "busy":
        raise ApiError(409, "webhook_in_progress", "this webhook-id is being processed; retry later")
    try:
        result = orders.record_delivery(d, notice)
    except BaseException:
        receipts.release(webhook_id)
        raise
    receipts.complete(webhook_id)
    return Reply(202, {"order_id": str(result["order_id"]), "accepted": bool(result["accepted"]), "replay": False})


@endpoint(
    bp,
    "GET",
    "/orders/{order_id}",
    summary="An order (persona id shown to admin only)",
    tag="orders",
    roles=(PM, FIN, ENF),
    ok=(Ok(200, "the order", OrderView),),
    errors=(404,),
)
def get_order(call: Call) -> Reply:
    order = deps().orders.get_order(call.params["order_id"]).model_dump(mode="json")
    if call.who.role is not Role.ADMIN:
        order.pop("persona_id", None)  # persona data is for the admin role only
    return Reply(200, order)


@endpoint(
    bp,
    "GET",
    "/programs/{program_id}/personas/{persona_id}",
    summary="A persona's account, drop point and payment reference (admin only)",
    tag="admin",
    params={"persona_id": PathParam("a persona id")},
    ok=(Ok(200, "the persona", PersonaView),),
    errors=(404,),
)
def persona(call: Call) -> Reply:
    return Reply(200, deps().personas.persona_secret(call.params["program_id"], call.params["persona_id"]))
