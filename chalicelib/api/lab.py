"""Lab routes: a lab sees and acts on its own samples only."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.api.auth import Forbidden, Principal, Role
from chalicelib.api.common import correlation_id, require
from chalicelib.api.errors import handles_errors, parse_body, raw_body, respond
from chalicelib.bootstrap import deps
from chalicelib.domain.custody import Actor
from chalicelib.domain.models import CustodyIn, EvidenceIn, ServiceQualityIn, VerdictIn
from chalicelib.services import lab

bp = Blueprint(__name__)


def _scope(who: Principal) -> str | None:
    """The lab a caller is confined to (None for admin, who sees every lab)."""
    return who.lab_id if who.role is Role.LAB else None


def _actor(who: Principal) -> Actor:
    """The authenticated principal as recorded on custody entries (issue 8 item 5)."""
    return Actor(subject=who.subject, role=who.role.value, lab_id=who.lab_id)


@bp.route("/labs/{lab_id}/queue", methods=["GET"])
@handles_errors
def queue(lab_id: str) -> Any:
    who = require(bp.current_request, Role.LAB)
    if who.role is Role.LAB and who.lab_id != lab_id:
        raise Forbidden(f"this token is for lab {who.lab_id}, not {lab_id}")
    return respond(200, {"lab_id": lab_id, "samples": lab.queue(deps(), lab_id)})


@bp.route("/samples/{order_id}/verdict", methods=["POST"])
@handles_errors
def verdict(order_id: str) -> Any:
    req = bp.current_request
    who = require(req, Role.LAB)
    body = parse_body(raw_body(req), VerdictIn)
    stored, created = lab.post_verdict(deps(), order_id, _scope(who), _actor(who), body, correlation_id(req))
    return respond(201 if created else 200, stored.model_dump(mode="json"))


@bp.route("/samples/{order_id}/service-quality", methods=["POST"])
@handles_errors
def service_quality(order_id: str) -> Any:
    req = bp.current_request
    who = require(req, Role.LAB)
    body = parse_body(raw_body(req), ServiceQualityIn)
    return respond(200, lab.post_service_quality(deps(), order_id, _scope(who), body, correlation_id(req)))


@bp.route("/samples/{order_id}/custody", methods=["POST"])
@handles_errors
def add_custody(order_id: str) -> Any:
    req = bp.current_request
    who = require(req, Role.LAB)
    return respond(
        201, lab.add_custody(deps(), order_id, _scope(who), _actor(who), parse_body(raw_body(req), CustodyIn))
    )


@bp.route("/samples/{order_id}/custody", methods=["GET"])
@handles_errors
def custody(order_id: str) -> Any:
    who = require(bp.current_request, Role.LAB, Role.ENFORCEMENT, Role.PROGRAM_MANAGER)
    return respond(200, lab.custody_report(deps(), order_id, _scope(who)))


@bp.route("/samples/{order_id}/evidence", methods=["POST"])
@handles_errors
def evidence(order_id: str) -> Any:
    req = bp.current_request
    who = require(req, Role.LAB)
    return respond(201, lab.upload_evidence(deps(), order_id, _scope(who), parse_body(raw_body(req), EvidenceIn)))
