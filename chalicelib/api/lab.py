"""Lab routes: a lab sees and acts on its own samples only.

Lab scoping is part of each route's declaration: ``lab_scope="lab_id"`` (a lab names its own lab, else 403) or
``lab_scope="order_id"`` (a sample of another lab and a sample that does not exist get the same 404 and body). The
service functions still receive the caller's lab and check it again (defence in depth)."""

from __future__ import annotations

from chalice.app import Blueprint

from chalicelib.api.auth import Principal
from chalicelib.api.common import ENF, LAB, PM, correlation_id
from chalicelib.api.declare import Call, Ok, Refusal, Reply, endpoint
from chalicelib.api.schemas import (
    CustodyAppended,
    CustodyReport,
    EvidenceStored,
    LabQueue,
    ServiceQualityStored,
    Verdict,
)
from chalicelib.bootstrap import deps
from chalicelib.domain.custody import Actor
from chalicelib.domain.models import CustodyIn, EvidenceIn, ServiceQualityIn, VerdictIn
from chalicelib.services import lab

bp = Blueprint(__name__)


@endpoint(
    bp,
    "GET",
    "/labs/{lab_id}/queue",
    summary="Samples waiting for this lab's verdict (a lab token sees its own lab only)",
    tag="lab",
    roles=(LAB,),
    lab_scope="lab_id",
    ok=(Ok(200, "the queue, oldest first", LabQueue),),
)
def queue(call: Call) -> Reply:
    lab_id = call.params["lab_id"]
    return Reply(200, {"lab_id": lab_id, "samples": lab.queue(deps(), lab_id)})


def _actor(who: Principal) -> Actor:
    """The authenticated principal as recorded on custody entries (issue 8 item 5)."""
    return Actor(subject=who.subject, role=who.role.value, lab_id=who.lab_id)


@endpoint(
    bp,
    "POST",
    "/samples/{order_id}/verdict",
    summary="Record the lab verdict of a sample (once; the same verdict again is idempotent)",
    tag="lab",
    roles=(LAB,),
    lab_scope="order_id",
    former_labs=True,
    request=VerdictIn,
    ok=(Ok(201, "the verdict was recorded", Verdict), Ok(200, "the same verdict was already recorded", Verdict)),
    errors=(404, 409),
    description="404 when the sample does not exist or is not assigned to the caller's lab (one answer for both); "
    "409 conflict when a different verdict is already recorded (any recorded field differs; details name each), "
    "invalid_state when the sample is not at the lab. "
    "Re-tests: a lab the sample was taken from (its verdict was inconclusive, or it missed its deadline and the "
    "sample was re-assigned) may repeat the verdict it gave (200); any other verdict from it is a 409 conflict that "
    "changes nothing.",
    refusals=(  # evidence (issue 10 item 0)
        Refusal(
            400,
            "invalid_input",
            "^(method|analyst|accreditation|confidence|report_sha256)$",
            "a conclusive verdict (not inconclusive) names method, analyst, accreditation, confidence and "
            "report_sha256",
        ),
        Refusal(400, "invalid_input", "^report_sha256$", "report_sha256 is an evidence file uploaded before"),
    ),
)
def verdict(call: Call) -> Reply:
    who = call.who
    stored, created = lab.post_verdict(
        deps(), call.params["order_id"], call.lab_scope, _actor(who), call.body, correlation_id(call.request)
    )
    return Reply(201 if created else 200, stored.model_dump(mode="json"))


@endpoint(
    bp,
    "POST",
    "/samples/{order_id}/service-quality",
    summary="Rate the seller's service for a delivered sample",
    tag="lab",
    roles=(LAB,),
    lab_scope="order_id",
    request=ServiceQualityIn,
    ok=(Ok(200, "the score was recorded", ServiceQualityStored),),
    errors=(404, 409),
)
def service_quality(call: Call) -> Reply:
    order_id = call.params["order_id"]
    return Reply(
        200, lab.post_service_quality(deps(), order_id, call.lab_scope, call.body, correlation_id(call.request))
    )


@endpoint(
    bp,
    "POST",
    "/samples/{order_id}/custody",
    summary="Append a hand-over to the sample's hash-chained custody log",
    tag="lab",
    roles=(LAB,),
    lab_scope="order_id",
    request=CustodyIn,
    ok=(Ok(201, "the entry was appended", CustodyAppended),),
    errors=(404,),
)
def add_custody(call: Call) -> Reply:
    return Reply(201, lab.add_custody(deps(), call.params["order_id"], call.lab_scope, _actor(call.who), call.body))


@endpoint(
    bp,
    "GET",
    "/samples/{order_id}/custody",
    summary="The sample's custody chain and whether it verifies",
    tag="lab",
    roles=(LAB, ENF, PM),
    lab_scope="order_id",
    ok=(Ok(200, "the chain and its verification", CustodyReport),),
    errors=(404,),
)
def custody(call: Call) -> Reply:
    return Reply(200, lab.custody_report(deps(), call.params["order_id"], call.lab_scope))


@endpoint(
    bp,
    "POST",
    "/samples/{order_id}/evidence",
    summary="Store an evidence file in S3 under its SHA-256 (cited by custody entries and verdicts)",
    tag="lab",
    roles=(LAB,),
    lab_scope="order_id",
    request=EvidenceIn,
    ok=(Ok(201, "stored; the body gives its sha256", EvidenceStored),),
    errors=(404,),
)
def evidence(call: Call) -> Reply:
    return Reply(201, lab.upload_evidence(deps(), call.params["order_id"], call.lab_scope, call.body))
