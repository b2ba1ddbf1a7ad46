"""Finance routes: spend reports (JSON or CSV) and reconciliation."""

from __future__ import annotations

from typing import cast

from chalice.app import Blueprint, Response

from chalicelib.api.common import FIN, PM
from chalicelib.api.declare import Call, Ok, QueryParam, Reply, endpoint
from chalicelib.api.schemas import Reconciliation, SpendReport
from chalicelib.bootstrap import deps
from chalicelib.services import finance

bp = Blueprint(__name__)
_GROUPS = ("program", "round", "category", "seller", "month")


def _wants_csv(fmt: str | None, accept: str) -> bool:
    """``format=csv`` wins; without ``format``, an ``Accept`` naming ``text/csv`` asks for CSV."""
    if fmt is not None:
        return fmt == "csv"
    return "text/csv" in accept.lower()


@endpoint(
    bp,
    "GET",
    "/programs/{program_id}/spend",
    summary="Spend report from the ledger journal (JSON or CSV)",
    tag="finance",
    roles=(FIN, PM),
    ok=(Ok(200, "the report", SpendReport, csv=True),),
    errors=(404,),
    query=(
        QueryParam("group_by", "how rows are grouped", _GROUPS, "program"),
        QueryParam("format", "json or csv; without it, an Accept header naming text/csv asks for CSV", ("json", "csv")),
    ),
)
def spend(call: Call) -> Reply | Response:
    program_id, group_by = call.params["program_id"], call.query["group_by"]
    accept = str((call.request.headers or {}).get("accept", ""))
    report = finance.spend_report(deps(), program_id, cast(finance.GroupBy, group_by))
    if _wants_csv(call.query.get("format"), accept):
        filename = f"spend-{program_id}-{group_by}.csv"
        return Response(
            body=finance.report_csv(report),
            status_code=200,
            headers={"Content-Type": "text/csv", "Content-Disposition": f'attachment; filename="{filename}"'},
        )
    return Reply(200, report)


@endpoint(
    bp,
    "GET",
    "/programs/{program_id}/reconciliation",
    summary="Reconcile the journal against the balance",
    tag="finance",
    roles=(FIN, PM),
    ok=(Ok(200, "the reconciliation", Reconciliation),),
    errors=(404,),
)
def reconciliation(call: Call) -> Reply:
    return Reply(200, finance.reconcile(deps(), call.params["program_id"]))
