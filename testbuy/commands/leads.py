"""Law-enforcement leads (issue 10 item 4): list them, and move one along its lifecycle (role enforcement)."""

from __future__ import annotations

import typer
from rich.table import Table

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

STATUSES = ("submitted", "case_opened", "arrests", "conviction", "closed_without_action")
leads = typer.Typer(
    no_args_is_help=True,
    help="Law-enforcement leads: list (program_manager or enforcement), update the status (enforcement).",
)


@leads.command("list")
def leads_list(
    program_id: str = PROGRAM_OPT,
    status: str | None = typer.Option(None, help=f"only leads in this status: {', '.join(STATUSES)}"),
    role: str = typer.Option("enforcement", help="the role to act as: enforcement or program_manager"),
    as_json: bool = JSON_OPT,
    profile: str | None = PROFILE_OPT,
    api_url: str | None = API_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """The programme's leads: who (seller or ring), the rule, the estimated counterfeit sales, the status."""
    if status is not None and status not in STATUSES:
        fail(USAGE, f"--status must be one of {', '.join(STATUSES)}; got {status!r}", as_json=as_json)
    if role not in ("enforcement", "program_manager"):
        fail(USAGE, f"--role must be enforcement or program_manager; got {role!r}", as_json=as_json)
    api = connect(api_url=api_url, token=token, profile=profile, as_json=as_json, role=role)
    path = f"/programs/{q(program_id)}/leads" + (f"?status={q(status)}" if status else "")
    body = api.call("GET", path)
    if as_json:
        emit_json(body)
        return
    table = Table(title=f"leads of {program_id}" + (f" ({status})" if status else ""))
    for col in ("lead", "seller / ring", "rule", "estimate (minor units)", "status", "updated"):
        table.add_column(col, overflow="fold")
    for lead in body["leads"]:
        who = f"seller {lead['seller_id']}" if lead.get("seller_id") else f"ring {lead.get('ring_id')}"
        table.add_row(
            lead["lead_id"],
            who,
            lead["rule"],
            f"{lead['estimated_counterfeit_sales']:,} {lead['currency']}",
            lead["status"],
            str(lead["updated_at"]),
        )
    out.print(table)
    if not body["leads"]:
        out.print("no leads" + (f" in status {status}" if status else ""))


@leads.command("update")
def leads_update(
    lead_id: str = typer.Argument(..., help="the lead's id (from `testbuy leads list`)"),
    status: str = typer.Option(..., help=f"the new status: {', '.join(STATUSES[1:])}"),
    note: str = typer.Option("", help="free text kept in the lead's history (at most 2,000 characters)"),
    program_id: str = PROGRAM_OPT,
    as_json: bool = JSON_OPT,
    profile: str | None = PROFILE_OPT,
    api_url: str | None = API_OPT,
    token: str | None = TOKEN_OPT,
) -> None:
    """Move a lead: submitted -> case_opened -> arrests -> conviction, or closed_without_action from any open
    stage. Repeating the current status changes nothing; a move the lifecycle forbids is refused (exit 2) with the
    allowed statuses named."""
    if status not in STATUSES:
        fail(USAGE, f"--status must be one of {', '.join(STATUSES)}; got {status!r}", as_json=as_json)
    api = connect(api_url=api_url, token=token, profile=profile, as_json=as_json, role="enforcement")
    path = f"/programs/{q(program_id)}/leads/{q(lead_id)}/status"
    body = api.call("POST", path, {"status": status, "note": note}, expect=(200, 409))
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        allowed = next((d.get("allowed") for d in error.get("details") or [] if isinstance(d, dict)), None)
        hint = f"allowed from here: {', '.join(allowed)}" if allowed else "the lead is closed; no move is allowed"
        fail(USAGE, f"HTTP 409 {error.get('code')}: {error.get('message')}; {hint}", as_json=as_json, http_status=409)
    if as_json:
        emit_json(body)
        return
    lead = body["lead"]
    if body["changed"]:
        out.print(f"lead {lead['lead_id']} is now {lead['status']}", soft_wrap=True)
    else:
        out.print(f"lead {lead['lead_id']} was already {lead['status']}; nothing changed", soft_wrap=True)
