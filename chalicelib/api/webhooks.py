"""Marketplace webhooks, authenticated by an HMAC signature over the raw body; and admin-only routes."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.api.auth import Role, verify_webhook
from chalicelib.api.common import require
from chalicelib.api.errors import handles_errors, parse_body, raw_body, respond
from chalicelib.bootstrap import deps
from chalicelib.config import settings
from chalicelib.domain.models import DeliveryNotice
from chalicelib.services import orders

bp = Blueprint(__name__)


@bp.route("/webhooks/delivery", methods=["POST"])
@handles_errors
def delivery() -> Any:
    req = bp.current_request
    raw = raw_body(req)
    headers: dict[str, str] = dict(req.headers or {})
    verify_webhook(settings().webhook_secret, raw, headers.get("x-testbuy-signature"))
    return respond(202, orders.record_delivery(deps(), parse_body(raw, DeliveryNotice)))


@bp.route("/orders/{order_id}", methods=["GET"])
@handles_errors
def get_order(order_id: str) -> Any:
    who = require(bp.current_request, Role.PROGRAM_MANAGER, Role.FINANCE, Role.ENFORCEMENT)
    order = deps().orders.get_order(order_id).model_dump(mode="json")
    if who.role is not Role.ADMIN:
        order.pop("persona_id", None)  # persona data is for the admin role only
    return respond(200, order)


@bp.route("/programs/{program_id}/personas/{persona_id}", methods=["GET"])
@handles_errors
def persona(program_id: str, persona_id: str) -> Any:
    require(bp.current_request)  # admin only: require() with no roles admits admin alone
    return respond(200, deps().personas.persona_secret(program_id, persona_id))
