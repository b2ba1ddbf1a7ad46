"""Appeal routes (issue 10 item 2): the marketplace or enforcement files a seller's appeal and follows it; the
re-test lab sees the appeals assigned to it and posts its verdict.

Lab routes are scoped by ``lab_id`` in the path: a lab naming another lab gets 403 (the declaration), and an appeal
not assigned to the caller's lab gets the same 404 and body as an appeal that does not exist (no existence oracle).
The task token of the waiting execution is stored server-side and never part of any answer."""

from __future__ import annotations

from chalice.app import Blueprint
from pydantic import Field

from chalicelib.api.auth import Role
from chalicelib.api.common import ENF, LAB, PM, correlation_id
from chalicelib.api.declare import Call, Ok, QueryParam, Refusal, Reply, endpoint
from chalicelib.api.schemas import EvidenceStored, Out
from chalicelib.bootstrap import deps
from chalicelib.domain.appeals import Appeal, AppealIn, AppealStatus, RetestVerdict, RetestVerdictIn
from chalicelib.domain.custody import Actor
from chalicelib.domain.models import EvidenceIn
from chalicelib.services import appeals, lab

bp = Blueprint(__name__)
MKT = Role.MARKETPLACE


class AppealList(Out):
    program_id: str
    status: str | None
    appeals: list[Appeal]


class AppealQueueItem(Out):
    appeal_id: str
    order_id: str
    seller_id: str
    deadline: str


class AppealQueue(Out):
    """A blind re-test: the lab is told neither the first verdict, nor the first lab, nor the seller's statement."""

    lab_id: str
    appeals: list[AppealQueueItem] = Field(default_factory=list)


@endpoint(
    bp,
    "POST",
    "/appeals",
    summary="File a seller's appeal against a verdict (once per order; the same filing again is idempotent)",
    tag="appeals",
    roles=(MKT, ENF),
    request=AppealIn,
    ok=(Ok(201, "the appeal was filed", Appeal), Ok(200, "the same appeal was already filed", Appeal)),
    errors=(404, 409),
    refusals=(Refusal(400, "invalid_input", "^evidence$", "every evidence hash names a file stored before"),),
    description="404 for an unknown order. 409 invalid_state when the order is not settled, its verdict is not "
    "counterfeit or not_as_described, or the appeal window (Timeouts.appeal_window_seconds after the verdict, default "
    "30 days) has closed; 409 conflict when the order was already appealed with another statement or evidence, or "
    "when the programme has no lab other than the one that gave the verdict.",
)
def file_appeal(call: Call) -> Reply:
    who = call.who
    stored, created = appeals.file_appeal(deps(), call.body, who.role.value, who.subject, correlation_id(call.request))
    return Reply(201 if created else 200, stored.model_dump(mode="json"))


@endpoint(
    bp,
    "POST",
    "/appeals/evidence",
    summary="Store a file of the seller's evidence under its SHA-256 (cite it in the appeal's evidence)",
    tag="appeals",
    roles=(MKT, ENF),
    request=EvidenceIn,
    ok=(Ok(201, "stored; the body gives its sha256", EvidenceStored),),
    refusals=(Refusal(400, "invalid_input", "^content_base64$", "content_base64 is valid, non-empty base64"),),
)
def appeal_evidence(call: Call) -> Reply:
    return Reply(201, lab.store_evidence_file(deps(), call.body))


@endpoint(
    bp,
    "POST",
    "/labs/{lab_id}/appeals/{appeal_id}/evidence",
    summary="Store an evidence file of an appeal's re-test (its lab report, photos) under its SHA-256",
    tag="lab",
    roles=(LAB,),
    lab_scope="lab_id",
    request=EvidenceIn,
    ok=(Ok(201, "stored; the body gives its sha256 (cite it as report_sha256 or in evidence)", EvidenceStored),),
    errors=(404,),
    refusals=(Refusal(400, "invalid_input", "^content_base64$", "content_base64 is valid, non-empty base64"),),
    description="403 when a lab names another lab; 404 when the appeal does not exist or is not assigned to this lab.",
)
def appeal_lab_evidence(call: Call) -> Reply:
    d = deps()
    appeals.check_retest_lab(d, call.params["appeal_id"], call.params["lab_id"])
    return Reply(201, lab.store_evidence_file(d, call.body))


@endpoint(
    bp,
    "GET",
    "/appeals/{appeal_id}",
    summary="One appeal: status, deadline, re-test lab and verdict, outcome",
    tag="appeals",
    roles=(MKT, ENF, PM),
    ok=(Ok(200, "the appeal", Appeal),),
    errors=(404,),
)
def show_appeal(call: Call) -> Reply:
    return Reply(200, appeals.get_appeal(deps(), call.params["appeal_id"]).model_dump(mode="json"))


@endpoint(
    bp,
    "GET",
    "/programs/{program_id}/appeals",
    summary="The programme's appeals, oldest first, optionally of one status",
    tag="appeals",
    roles=(MKT, ENF, PM),
    query=(QueryParam("status", "only appeals of this status", enum=tuple(s.value for s in AppealStatus)),),
    ok=(Ok(200, "the appeals", AppealList),),
    errors=(404,),
)
def list_appeals(call: Call) -> Reply:
    status = call.query.get("status")
    found = appeals.list_appeals(deps(), call.params["program_id"], status)
    return Reply(
        200,
        {
            "program_id": call.params["program_id"],
            "status": status,
            "appeals": [a.model_dump(mode="json") for a in found],
        },
    )


@endpoint(
    bp,
    "GET",
    "/labs/{lab_id}/appeals",
    summary="Appeals whose sample this lab re-tests (a lab token sees its own lab only)",
    tag="lab",
    roles=(LAB,),
    lab_scope="lab_id",
    ok=(Ok(200, "the appeal queue, nearest deadline first", AppealQueue),),
)
def lab_appeal_queue(call: Call) -> Reply:
    lab_id = call.params["lab_id"]
    return Reply(200, {"lab_id": lab_id, "appeals": appeals.lab_queue(deps(), lab_id)})


@endpoint(
    bp,
    "POST",
    "/labs/{lab_id}/appeals/{appeal_id}/verdict",
    summary="Record the re-test verdict of an appeal (once; the same verdict again is idempotent)",
    tag="lab",
    roles=(LAB,),
    lab_scope="lab_id",
    request=RetestVerdictIn,
    ok=(
        Ok(201, "the re-test verdict was recorded", RetestVerdict),
        Ok(200, "the same re-test verdict was already recorded", RetestVerdict),
    ),
    errors=(404, 409),
    description="403 when a lab names another lab; 404 when the appeal does not exist or is not assigned to this lab "
    "(one answer for both); 409 conflict when a different re-test verdict is already recorded, invalid_state when the "
    "appeal takes no verdict (e.g. it expired: the original verdict stands).",
)
def appeal_retest_verdict(call: Call) -> Reply:
    who = call.who
    lab_id = call.params["lab_id"]
    actor = Actor(subject=who.subject, role=who.role.value, lab_id=who.lab_id or lab_id)
    stored, created = appeals.post_retest_verdict(deps(), call.params["appeal_id"], lab_id, actor, call.body)
    return Reply(201 if created else 200, stored.model_dump(mode="json"))
