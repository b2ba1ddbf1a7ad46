"""Program manager routes."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint

from chalicelib.api.auth import Role
from chalicelib.api.common import require
from chalicelib.api.errors import handles_errors, parse_body, raw_body, respond
from chalicelib.bootstrap import deps
from chalicelib.domain.models import FundRequest, ProgramCreate, RefundFeedIn, RoundStart, SellerImport
from chalicelib.services import programs, rounds

bp = Blueprint(__name__)
PM = Role.PROGRAM_MANAGER


@bp.route("/programs", methods=["POST"])
@handles_errors
def create_program() -> Any:
    req = bp.current_request
    require(req, PM)
    program = programs.create_program(deps(), parse_body(raw_body(req), ProgramCreate))
    return respond(201, program.model_dump(mode="json"))


@bp.route("/programs/{program_id}", methods=["GET"])
@handles_errors
def get_program(program_id: str) -> Any:
    require(bp.current_request, PM, Role.FINANCE)
    d = deps()
    program = d.programs.get_program(program_id)
    balance = d.ledger.balance(program_id)
    return respond(200, {**program.model_dump(mode="json"), "balance": balance.__dict__})


@bp.route("/programs/{program_id}/funding", methods=["POST"])
@handles_errors
def fund(program_id: str) -> Any:
    req = bp.current_request
    require(req, PM, Role.FINANCE)
    balance = programs.fund_program(deps(), program_id, parse_body(raw_body(req), FundRequest))
    return respond(200, {"program_id": program_id, "balance": balance.__dict__})


@bp.route("/programs/{program_id}/sellers", methods=["POST"])
@handles_errors
def import_sellers(program_id: str) -> Any:
    req = bp.current_request
    require(req, PM)
    return respond(200, programs.import_sellers(deps(), program_id, parse_body(raw_body(req), SellerImport)))


@bp.route("/programs/{program_id}/rounds", methods=["POST"])
@handles_errors
def start_round(program_id: str) -> Any:
    req = bp.current_request
    require(req, PM)
    rnd = rounds.start_round(deps(), program_id, parse_body(raw_body(req) or b"{}", RoundStart))
    return respond(202, rnd.model_dump(mode="json"))


@bp.route("/programs/{program_id}/rounds/{round_id}", methods=["GET"])
@handles_errors
def get_round(program_id: str, round_id: str) -> Any:
    require(bp.current_request, PM, Role.FINANCE)
    return respond(200, rounds.round_view(deps(), program_id, round_id))


@bp.route("/programs/{program_id}/metrics", methods=["GET"])
@handles_errors
def metrics(program_id: str) -> Any:
    require(bp.current_request, PM, Role.FINANCE, Role.ENFORCEMENT)
    d = deps()
    return respond(200, rounds.program_metrics(d, d.programs.get_program(program_id)))


@bp.route("/programs/{program_id}/marketplace-refunds", methods=["POST"])
@handles_errors
def marketplace_refunds(program_id: str) -> Any:
    req = bp.current_request
    require(req, PM, Role.FINANCE)
    return respond(200, programs.ingest_refund_feed(deps(), program_id, parse_body(raw_body(req), RefundFeedIn)))
