"""``testbuy appeals file|list|show|evidence`` (role marketplace or enforcement; list/show also program_manager) and
the re-test lab's ``testbuy lab appeals`` / ``testbuy lab appeal-verdict`` (role lab), over the HTTP API (issue 10
item 2). ``--json`` prints the API's JSON on stdout, plain."""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

import typer

from testbuy.commands.common import (
    API_OPT,
    JSON_OPT,
    PROFILE_OPT,
    PROGRAM_OPT,
    TOKEN_OPT,
    USAGE,
    connect,
    emit_json,
    fail,
    out,
    q,
)
from testbuy.commands.roles import (
    ACCREDITATION_OPT,
    ANALYST_OPT,
    CONFIDENCE_OPT,
    LAB_OPT,
    METHOD_OPT,
    REPORT_OPT,
    REPORT_SHA_OPT,
    _kv,
    _lab,
    _rows,
    lab,
    verdict_payload,
)

appeals = typer.Typer(
    no_args_is_help=True,
    help="A seller's appeals against verdicts: file, follow (role marketplace or enforcement).",
)
ROLE_OPT = typer.Option("marketplace", "--role", help="marketplace or enforcement (who files for the seller)")
STATUSES = ("filed", "retest_assigned", "upheld", "overturned", "expired")


def _api(api_url: str | None, token: str | None, profile: str | None, as_json: bool, role: str) -> Any:
    if role not in ("marketplace", "enforcement", "program_manager", "admin"):
        fail(USAGE, f"--role must be marketplace or enforcement; got {role!r}", as_json=as_json)
    return connect(api_url=api_url, token=token, profile=profile, as_json=as_json, role=role)


def _show(body: dict[str, Any]) -> None:
    keys = (
        "appeal_id",
        "order_id",
        "seller_id",
        "status",
        "original_verdict",
        "original_lab",
        "retest_lab",
        "retest_verdict",
        "outcome",
        "effective_verdict",
        "filed_by",
        "filed_at",
        "deadline",
        "decided_at",
    )
    _kv(f"appeal {body['appeal_id']}", [(k, body.get(k)) for k in keys])


@appeals.command("file")
def file_appeal(
    order_id: str = typer.Argument(..., help="the order whose verdict is appealed"),
    statement: str = typer.Option(..., help="the seller's statement (at most 4,000 characters)"),
    evidence: list[str] = typer.Option([], help="sha256 from `testbuy appeals evidence FILE` (repeat)"),
    role: str = ROLE_OPT,
    as_json: bool = JSON_OPT,
    profile: str | None = PROFILE_OPT,
    api_url: str | None = API_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """File a seller's appeal (once per order; the same filing again returns the same appeal)."""
    api = _api(api_url, token, profile, as_json, role)
    body = api.call(
        "POST", "/appeals", {"order_id": order_id, "statement": statement, "evidence": evidence}, expect=(200, 201)
    )
    if as_json:
        emit_json(body)
        return
    _show(body)
    print(body["appeal_id"])  # plain, on its own line, for scripts


@appeals.command("evidence")
def upload_evidence(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="a file of the seller's"),
    media_type: str | None = typer.Option(None, help="e.g. image/jpeg (default: guessed from the name)"),
    role: str = ROLE_OPT,
    as_json: bool = JSON_OPT,
    profile: str | None = PROFILE_OPT,
    api_url: str | None = API_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """Store a file of the seller's evidence; prints its sha256 (cite it with `appeals file --evidence`)."""
    api = _api(api_url, token, profile, as_json, role)
    kind = media_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    content = base64.b64encode(path.read_bytes()).decode()
    body = api.call("POST", "/appeals/evidence", {"content_base64": content, "media_type": kind}, expect=(201,))
    if as_json:
        emit_json(body)
        return
    print(body["sha256"])


@appeals.command("list")
def list_appeals(
    program_id: str = PROGRAM_OPT,
    status: str | None = typer.Option(None, help="only this status: " + ", ".join(STATUSES)),
    role: str = ROLE_OPT,
    as_json: bool = JSON_OPT,
    profile: str | None = PROFILE_OPT,
    api_url: str | None = API_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """The programme's appeals, oldest first."""
    if status is not None and status not in STATUSES:
        fail(USAGE, f"--status must be one of {', '.join(STATUSES)}; got {status!r}", as_json=as_json)
    api = _api(api_url, token, profile, as_json, role)
    path = f"/programs/{q(program_id)}/appeals" + (f"?status={q(status)}" if status else "")
    body = api.call("GET", path)
    if as_json:
        emit_json(body)
        return
    cols = ("appeal_id", "order_id", "status", "original_verdict", "retest_lab", "retest_verdict", "deadline")
    rows = [[str(a.get(c) or "-") for c in cols] for a in body["appeals"]]
    _rows(f"programme {program_id}: {len(rows)} appeals", cols, rows)


@appeals.command("show")
def show_appeal(
    appeal_id: str = typer.Argument(...),
    role: str = ROLE_OPT,
    as_json: bool = JSON_OPT,
    profile: str | None = PROFILE_OPT,
    api_url: str | None = API_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """One appeal: status, deadline, re-test lab and verdict, outcome."""
    api = _api(api_url, token, profile, as_json, role)
    body = api.call("GET", f"/appeals/{q(appeal_id)}")
    if as_json:
        emit_json(body)
        return
    _show(body)


# ------------------------------------------------------------------------------------------------ the re-test lab


def _lab_id(api: Any, lab_id: str | None, as_json: bool) -> str:
    found = lab_id or api.settings.lab_id
    if not found:
        fail(USAGE, "which lab? pass --lab-id (or set TESTBUY_LAB_ID)", as_json=as_json)
    return str(found)


@lab.command("appeals")
def lab_appeals(
    lab_id: str | None = LAB_OPT,
    as_json: bool = JSON_OPT,
    profile: str | None = PROFILE_OPT,
    api_url: str | None = API_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """Appeals whose sample your lab re-tests (blind: the first verdict is not shown), nearest deadline first."""
    api = _lab(api_url, token, profile, as_json, lab_id)
    lab_id = _lab_id(api, lab_id, as_json)
    body = api.call("GET", f"/labs/{q(lab_id)}/appeals")
    if as_json:
        emit_json(body)
        return
    cols = ("appeal_id", "order_id", "seller_id", "deadline")
    _rows(f"lab {lab_id}: {len(body['appeals'])} appeals", cols, [[str(a[c]) for c in cols] for a in body["appeals"]])


@lab.command("appeal-verdict")
def lab_appeal_verdict(
    appeal_id: str = typer.Argument(..., help="the appeal id (from `testbuy lab appeals`)"),
    verdict: str = typer.Option(..., help="authentic, counterfeit, not_as_described or inconclusive"),
    notes: str = typer.Option("", help="free text (at most 4,000 characters)"),
    evidence: list[str] = typer.Option([], help="sha256 of an uploaded evidence file (repeat)"),
    method: str | None = METHOD_OPT,
    analyst: str | None = ANALYST_OPT,
    accreditation: str | None = ACCREDITATION_OPT,
    confidence: float | None = CONFIDENCE_OPT,
    report: Path | None = REPORT_OPT,
    report_sha256: str | None = REPORT_SHA_OPT,
    lab_id: str | None = LAB_OPT,
    as_json: bool = JSON_OPT,
    profile: str | None = PROFILE_OPT,
    api_url: str | None = API_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """Record your lab's re-test verdict of an appeal (once; the same verdict again changes nothing). A conclusive
    verdict names the method, analyst, accreditation, confidence and the lab report (--report FILE uploads it)."""
    api = _lab(api_url, token, profile, as_json, lab_id)
    lab_id = _lab_id(api, lab_id, as_json)
    base = f"/labs/{q(lab_id)}/appeals/{q(appeal_id)}"
    court = (method, analyst, accreditation, confidence, report, report_sha256)
    payload = verdict_payload(api, f"{base}/evidence", verdict, notes, evidence, court, as_json)
    body = api.call("POST", f"{base}/verdict", payload, expect=(200, 201))
    if as_json:
        emit_json(body)
        return
    out.print(f"re-test verdict of {appeal_id}: {body['verdict']}", soft_wrap=True, markup=False)
