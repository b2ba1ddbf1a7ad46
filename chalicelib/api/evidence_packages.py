"""Evidence-package routes (issue 10 item 5): export a sample's or a seller's package, and fetch the public key
that verifies them. Labs are not admitted: a package carries the enforcement recommendations and the policy, which
are not a lab's to see (a lab reads its own samples' custody through the lab routes)."""

from __future__ import annotations

from chalice.app import Blueprint

from chalicelib.api.common import ENF, PM
from chalicelib.api.declare import Call, Ok, Reply, endpoint
from chalicelib.api.schemas import EvidencePackageOut, SigningKeyOut
from chalicelib.bootstrap import deps
from chalicelib.services import evidence_packages, leads

bp = Blueprint(__name__)


@endpoint(
    bp,
    "POST",
    "/samples/{order_id}/evidence-package",
    summary="Export the sample's signed evidence package (zip); answers where to download it",
    tag="evidence",
    roles=(ENF, PM),
    ok=(Ok(201, "the package was built and stored; fetch it from url", EvidencePackageOut),),
    errors=(404, 409),
    description="409 invalid_state when the sample has no verdict yet or its custody chain does not verify. The zip "
    "holds the redacted order, the listing reference, the verdict with its lab report, the custody chain with its "
    "anchor, the evidence files, the recommendations and the policy version; its manifest is signed with the key of "
    "GET /evidence/public-key. Verify offline with `testbuy evidence verify`.",
)
def sample_package(call: Call) -> Reply:
    return Reply(201, evidence_packages.export_sample(deps(), call.params["order_id"]))


@endpoint(
    bp,
    "POST",
    "/programs/{program_id}/sellers/{seller_id}/evidence-package",
    summary="Export a seller's signed evidence package: every sample of the seller in the programme with a verdict",
    tag="evidence",
    roles=(ENF, PM),
    ok=(Ok(201, "the package was built and stored; fetch it from url", EvidencePackageOut),),
    errors=(404, 409),
    description="404 when the programme is unknown or the seller has no sample with a verdict in it.",
)
def seller_package(call: Call) -> Reply:
    return Reply(201, evidence_packages.export_seller(deps(), call.params["program_id"], call.params["seller_id"]))


@endpoint(
    bp,
    "POST",
    "/programs/{program_id}/leads/{lead_id}/evidence-package",
    summary="Export a law-enforcement lead's signed evidence package: the lead, its ring and every sample behind it",
    tag="evidence",
    roles=(ENF, PM),
    ok=(Ok(201, "the package was built and stored; fetch it from url", EvidencePackageOut),),
    errors=(404, 409),
    description="404 when the programme or the lead is unknown; 409 invalid_state when a sample's custody chain does "
    "not verify. The package named by LeadRaised (package_sha256) stays stored; this builds a current one, with the "
    "lead's status history.",
)
def lead_package(call: Call) -> Reply:
    d = deps()
    lead = leads.get_lead(d, call.params["program_id"], call.params["lead_id"])
    if lead.package_sha256 is None:  # none could be built when it was raised: record this one
        leads.attach_package(d, lead)
    return Reply(201, evidence_packages.export_lead_package(d, lead))


@endpoint(
    bp,
    "GET",
    "/evidence/public-key",
    summary="The public key (PEM) that verifies evidence packages; public, so that anyone can verify",
    tag="evidence",
    auth="none",
    ok=(Ok(200, "the key id, its algorithm and the PEM", SigningKeyOut),),
)
def public_key(call: Call) -> Reply:
    return Reply(200, evidence_packages.public_key(deps()))
