"""Rings, the marketplace sales feed and law-enforcement leads (issue 10 items 3 and 4)."""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint
from pydantic import Field

from chalicelib.api.auth import Role
from chalicelib.api.common import ENF, PM, correlation_id
from chalicelib.api.declare import Call, Ok, QueryParam, Refusal, Reply, endpoint
from chalicelib.api.schemas import Open, Out
from chalicelib.bootstrap import deps
from chalicelib.domain.leads import LeadStatus, LeadUpdateIn, SalesFeedIn

bp = Blueprint(__name__)
MKT = Role.MARKETPLACE


class SalesFeedStored(Out):
    program_id: str
    new: int = Field(ge=0)
    replaced: int = Field(ge=0)
    unchanged: int = Field(ge=0)
    leads_raised: list[str] = Field(description="leads this feed raised (a seller's or a ring's estimate crossed)")
    leads_due: list[str] = Field(description="every lead over threshold for the sellers named, raised now or before")


class LeadOut(Open):
    """A lead: who (seller or ring), the rule, the estimate, the evidence (orders and hashes, the package's manifest
    hash once built) and its status with history."""

    lead_id: str
    seller_id: str | None
    ring_id: str | None
    rule: str
    estimated_counterfeit_sales: int
    currency: str
    order_ids: list[str]
    evidence_hashes: list[str]
    package_sha256: str | None
    status: str
    history: list[dict[str, Any]]
    created_at: str
    updated_at: str


class LeadList(Out):
    leads: list[LeadOut]


class LeadStatusChanged(Out):
    changed: bool = Field(description="False: the lead already had this status (a repeated update)")
    lead: LeadOut


class RingOut(Open):
    ring_id: str
    members: list[str]
    shared_fingerprint_kinds: list[str]
    detected_at: str
    updated_at: str


class RingList(Out):
    rings: list[RingOut]


@endpoint(
    bp,
    "POST",
    "/programs/{program_id}/sales-feed",
    summary="Ingest marketplace sales per seller and month (idempotent on seller and period); re-checks leads",
    tag="leads",
    roles=(MKT, PM),
    request=SalesFeedIn,
    ok=(Ok(200, "stored; rows new, replaced or unchanged, and the leads raised", SalesFeedStored),),
    errors=(404,),
    refusals=(
        Refusal(400, "currency_mismatch", "^currency$", "currency is the programme's currency"),
        Refusal(400, "invalid_input", r"^rows\[\d+\]$", "one row per seller and period in a feed"),
        Refusal(400, "invalid_input", r"^rows\[\d+\]\.orders$", "orders <= units"),
    ),
)
def sales_feed(call: Call) -> Reply:
    from chalicelib.services import leads

    return Reply(200, leads.ingest_sales(deps(), call.params["program_id"], call.body, correlation_id(call.request)))


@endpoint(
    bp,
    "GET",
    "/programs/{program_id}/leads",
    summary="The programme's law-enforcement leads (filterable by status)",
    tag="leads",
    roles=(PM, ENF),
    ok=(Ok(200, "the leads, by lead id", LeadList),),
    errors=(404,),
    query=(QueryParam("status", "only leads in this status", tuple(s.value for s in LeadStatus)),),
)
def list_leads(call: Call) -> Reply:
    from chalicelib.services import leads

    found = leads.list_leads(deps(), call.params["program_id"], call.query.get("status"))
    return Reply(200, {"leads": [x.model_dump(mode="json") for x in found]})


@endpoint(
    bp,
    "GET",
    "/programs/{program_id}/leads/{lead_id}",
    summary="One lead with its status history",
    tag="leads",
    roles=(PM, ENF),
    ok=(Ok(200, "the lead", LeadOut),),
    errors=(404,),
)
def get_lead(call: Call) -> Reply:
    from chalicelib.services import leads

    return Reply(200, leads.get_lead(deps(), call.params["program_id"], call.params["lead_id"]).model_dump(mode="json"))


@endpoint(
    bp,
    "POST",
    "/programs/{program_id}/leads/{lead_id}/status",
    summary="Enforcement moves a lead: submitted -> case_opened -> arrests -> conviction, or closed_without_action",
    tag="leads",
    roles=(ENF,),
    request=LeadUpdateIn,
    ok=(Ok(200, "the lead after the update (changed False: it already had this status)", LeadStatusChanged),),
    errors=(404, 409),
    description="409 invalid_state when the lead's status does not allow the move; details name the allowed "
    "statuses. Repeating the current status is accepted and changes nothing.",
)
def update_lead(call: Call) -> Reply:
    from chalicelib.services import leads

    lead, changed = leads.update_status(
        deps(),
        call.params["program_id"],
        call.params["lead_id"],
        call.body,
        f"{call.who.role.value}:{call.who.subject}",
        correlation_id(call.request),
    )
    return Reply(200, {"changed": changed, "lead": lead.model_dump(mode="json")})


@endpoint(
    bp,
    "GET",
    "/programs/{program_id}/rings",
    summary="The programme's seller rings (members and the fingerprint kinds they share, never the values)",
    tag="leads",
    roles=(PM, ENF),
    ok=(Ok(200, "the rings, by ring id", RingList),),
    errors=(404,),
)
def list_rings(call: Call) -> Reply:
    from chalicelib.services import rings

    found = rings.list_rings(deps(), call.params["program_id"])
    return Reply(200, {"rings": [r.model_dump(mode="json", exclude={"version", "merged_into"}) for r in found]})
