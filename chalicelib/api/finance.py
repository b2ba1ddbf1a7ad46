"""Finance routes: spend reports (JSON or CSV) and reconciliation."""

from __future__ import annotations

from typing import Any, cast

from chalice.app import Blueprint, Response

from chalicelib.api.auth import Role
from chalicelib.api.common import require
from chalicelib.api.errors import ApiError, handles_errors, respond
from chalicelib.bootstrap import deps
from chalicelib.services import finance

bp = Blueprint(__name__)
_GROUPS = ("program", "round", "category", "seller", "month")


def _wants_csv(fmt: str | None, accept: str) -> bool:
    """``format=csv`` wins; without ``format``, an ``Accept`` naming ``text/csv`` asks for CSV."""
    if fmt is not None:
        return fmt == "csv"
    return "text/csv" in accept.lower()


@bp.route("/programs/{program_id}/spend", methods=["GET"])
@handles_errors
def spend(program_id: str) -> Any:
    req: Any = bp.current_request
    require(req, Role.FINANCE, Role.PROGRAM_MANAGER)
    params: dict[str, str] = dict(req.query_params or {})
    unknown = set(params) - {"group_by", "format"}
    if unknown:
        raise ApiError(400, "invalid_input", "unknown query parameters", [{"field": f} for f in sorted(unknown)])
    group_by = params.get("group_by", "program")
    if group_by not in _GROUPS:
        raise ApiError(400, "invalid_input", f"group_by must be one of {list(_GROUPS)}", [{"field": "group_by"}])
    fmt = params.get("format")
    if fmt not in (None, "json", "csv"):
        raise ApiError(400, "invalid_input", "format must be json or csv", [{"field": "format"}])
    accept = str((req.headers or {}).get("accept", ""))
    report = finance.spend_report(deps(), program_id, cast(finance.GroupBy, group_by))
    if _wants_csv(fmt, accept):
        filename = f"spend-{program_id}-{group_by}.csv"
        return Response(
            body=finance.report_csv(report),
            status_code=200,
            headers={"Content-Type": "text/csv", "Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return respond(200, report)


@bp.route("/programs/{program_id}/reconciliation", methods=["GET"])
@handles_errors
def reconciliation(program_id: str) -> Any:
    require(bp.current_request, Role.FINANCE, Role.PROGRAM_MANAGER)
    return respond(200, finance.reconcile(deps(), program_id))
