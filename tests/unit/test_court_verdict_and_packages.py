"""Court-grade verdicts (issue 10 item 0) and evidence packages built by the service (item 5), on the fakes."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from chalicelib.domain import evidence_package as ep
from chalicelib.domain.errors import Conflict, InvalidInput, InvalidState, NotFound
from chalicelib.domain.models import VerdictIn, VerdictKind
from chalicelib.services import evidence_packages, lab, orders
from chalicelib.services.custody import CustodyReport
from tests import builders
from tests.fakes import FakeSigner, World, world
from tests.unit.test_order_tasks import OID, PID, SELLER, TECH, at_lab


def pem(w: World) -> bytes:
    signer = w.deps.manifest_signer
    assert isinstance(signer, FakeSigner)
    return ep.public_key_pem(signer.public_key_der()).encode()


# ------------------------------------------------------------------------------------------ item 0: the verdict


@pytest.mark.parametrize("missing", ["method", "analyst", "accreditation", "confidence", "report_sha256"])
def test_a_conclusive_verdict_without_a_court_field_is_refused_naming_it_and_changes_nothing(missing: str) -> None:
    w = world()
    at_lab(w)
    full = builders.court_verdict(w.evidence, VerdictKind.COUNTERFEIT)
    req = VerdictIn(**{**full.model_dump(), missing: None})
    with pytest.raises(InvalidInput) as err:
        lab.post_verdict(w.deps, OID, "lab-1", TECH, req, "c")
    assert err.value.details == [{"field": missing, "message": "required for a conclusive verdict"}]
    assert w.orders.get_verdict(OID) is None and w.events.types() == ["OrderPlaced"]


def test_an_inconclusive_verdict_may_leave_the_court_fields_out() -> None:
    w = world()
    at_lab(w)
    stored, created = lab.post_verdict(w.deps, OID, "lab-1", TECH, VerdictIn(verdict="inconclusive"), "c")
    assert created and stored.method is None and stored.report_sha256 is None


def test_a_report_that_was_never_uploaded_is_a_400_naming_report_sha256() -> None:
    w = world()
    at_lab(w)
    req = builders.court_verdict(w.evidence, VerdictKind.AUTHENTIC, report_sha256="ab" * 32)
    with pytest.raises(InvalidInput) as err:
        lab.post_verdict(w.deps, OID, "lab-1", TECH, req, "c")
    assert err.value.details[0]["field"] == "report_sha256" and w.orders.get_verdict(OID) is None


@pytest.mark.parametrize("confidence", [-0.01, 1.01, float("nan")])
def test_confidence_outside_0_1_is_invalid(confidence: float) -> None:
    with pytest.raises(ValueError):
        VerdictIn(verdict="authentic", confidence=confidence)


def test_the_court_fields_are_stored_and_the_same_verdict_again_is_the_stored_one() -> None:
    w = world()
    at_lab(w)
    req = builders.court_verdict(w.evidence, VerdictKind.COUNTERFEIT, confidence=0.87)
    first, created = lab.post_verdict(w.deps, OID, "lab-1", TECH, req, "c")
    again, created_again = lab.post_verdict(w.deps, OID, "lab-1", TECH, req, "c")
    assert (created, created_again) == (True, False) and again == first
    assert (first.method, first.analyst, first.accreditation, first.confidence, first.report_sha256) == (
        "XRF",
        "analyst-7",
        "ISO/IEC 17025 cert 1234-01",
        0.87,
        req.report_sha256,
    )
    # the custody view shows the verdict with its court fields, as the API answers it
    view = lab.custody_report(w.deps, OID, "lab-1")
    assert view["verdict"] == first.model_dump(mode="json") and view["verdict"]["analyst"] == "analyst-7"
    CustodyReport.model_validate_json(json.dumps(view), strict=True)


@pytest.mark.parametrize(
    "change",
    [
        {"verdict": VerdictKind.AUTHENTIC},
        {"method": "visual"},
        {"analyst": "someone else"},
        {"accreditation": "other cert"},
        {"confidence": 0.5},
        {"notes": "changed my mind"},
    ],
)
def test_a_verdict_differing_in_any_recorded_field_is_a_conflict_naming_it(change: dict[str, object]) -> None:
    w = world()
    at_lab(w)
    req = builders.court_verdict(w.evidence, VerdictKind.COUNTERFEIT)
    stored, _ = lab.post_verdict(w.deps, OID, "lab-1", TECH, req, "c")
    with pytest.raises(Conflict) as err:
        lab.post_verdict(w.deps, OID, "lab-1", TECH, VerdictIn(**{**req.model_dump(), **change}), "c")
    assert [d["field"] for d in err.value.details] == list(change)
    assert w.orders.get_verdict(OID) == stored


def test_a_different_uploaded_report_is_a_conflict_too() -> None:
    w = world()
    at_lab(w)
    req = builders.court_verdict(w.evidence, VerdictKind.COUNTERFEIT)
    lab.post_verdict(w.deps, OID, "lab-1", TECH, req, "c")
    other = builders.court_verdict(w.evidence, VerdictKind.COUNTERFEIT)
    with pytest.raises(Conflict) as err:
        lab.post_verdict(w.deps, OID, "lab-1", TECH, other, "c")
    assert [d["field"] for d in err.value.details] == ["report_sha256"]


# -------------------------------------------------------------------------------------- item 5: the packages


def decided(w: World, kind: VerdictKind = VerdictKind.COUNTERFEIT) -> VerdictIn:
    inp = at_lab(w)
    photo = w.evidence.put_bytes(b"photo of the logo")
    req = builders.court_verdict(w.evidence, kind, evidence=[photo])
    lab.post_verdict(w.deps, OID, "lab-1", TECH, req, "c")
    orders.capture_spend(w.deps, inp)
    orders.request_refund(w.deps, inp)
    orders.enforce(w.deps, inp)
    return req


def unzip(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def test_a_sample_package_holds_the_records_and_evidence_and_verifies() -> None:
    w = world()
    req = decided(w)
    out = evidence_packages.export_sample(w.deps, OID)
    data = w.evidence.packages[out["object_key"]]
    assert out["object_key"] == f"packages/sha256/{out['manifest_sha256']}.zip" and out["bytes"] == len(data)
    report = ep.verify_bundle(data, pem(w))
    assert report.valid, report.problems
    files = unzip(data)
    base = f"samples/{OID}/"
    assert {
        base + p for p in ("order.json", "listing.json", "verdict.json", "custody/chain.json", "recommendations.json")
    } <= set(files)
    assert f"evidence/{req.report_sha256}" in files and f"evidence/{req.evidence[0]}" in files
    verdict = json.loads(files[base + "verdict.json"])
    assert (verdict["method"], verdict["report_sha256"], verdict["confidence"]) == ("XRF", req.report_sha256, 0.9)
    recs = json.loads(files[base + "recommendations.json"])
    assert recs and all(r["policy_version"] for r in recs)
    policy = json.loads(files["policy.json"])
    assert policy["policy_versions_of_recommendations"] == sorted({r["policy_version"] for r in recs})
    chain = json.loads(files[base + "custody/chain.json"])
    assert chain["anchor"]["length"] == len(chain["entries"]) >= 2 and not ep.custody_problems(
        files[base + "custody/chain.json"]
    )


def test_the_order_record_carries_no_persona_account_or_address() -> None:
    w = world()
    decided(w)
    order = w.orders.get_order(OID)
    assert order.persona_id and order.marketplace_order_id
    files = unzip(w.evidence.packages[evidence_packages.export_sample(w.deps, OID)["object_key"]])
    text = b"".join(files.values()).decode("latin-1")
    assert order.persona_id not in text and order.marketplace_order_id not in text
    record = json.loads(files[f"samples/{OID}/order.json"])
    assert set(record) == {*evidence_packages.ORDER_FIELDS, "marketplace_order_ref_sha256"}


def test_no_package_before_the_verdict_or_from_a_broken_chain() -> None:
    w = world()
    at_lab(w)
    with pytest.raises(InvalidState):
        evidence_packages.export_sample(w.deps, OID)
    w2 = world()
    decided(w2)
    entry = w2.custody.chain(OID)[0]
    w2.custody.entries[OID][0] = entry.__class__(**{**entry.__dict__, "condition": "opened"})
    with pytest.raises(InvalidState) as err:
        evidence_packages.export_sample(w2.deps, OID)
    assert err.value.details[0]["field"] == "custody"


def test_a_seller_package_holds_its_samples_and_an_unknown_seller_is_not_found() -> None:
    w = world()
    decided(w)
    out = evidence_packages.export_seller(w.deps, PID, SELLER)
    files = unzip(w.evidence.packages[out["object_key"]])
    assert out["subject_id"] == f"{PID}/{SELLER}" and f"samples/{OID}/verdict.json" in files
    assert "records/seller.json" in files and ep.verify_bundle(w.evidence.packages[out["object_key"]], pem(w)).valid
    with pytest.raises(NotFound):
        evidence_packages.export_seller(w.deps, PID, "nobody")


def test_the_generic_builder_takes_extra_records_for_a_lead() -> None:
    w = world()
    decided(w)
    pkg = evidence_packages.build_package(
        w.deps,
        kind="lead",
        subject_id="lead-1",
        orders=[w.orders.get_order(OID)],
        extra_records={"lead": {"lead_id": "lead-1", "estimated_counterfeit_sales": 12}},
    )
    files = unzip(pkg.data)
    assert json.loads(files["records/lead.json"])["lead_id"] == "lead-1"
    assert json.loads(files[ep.MANIFEST])["kind"] == "lead" and ep.verify_bundle(pkg.data, pem(w)).valid


def test_no_signer_fails_closed() -> None:
    w = world()
    decided(w)
    w.deps.manifest_signer = None
    with pytest.raises(RuntimeError, match="TESTBUY_EVIDENCE_SIGNING_KEY_ARN"):
        evidence_packages.export_sample(w.deps, OID)


def test_an_evidence_file_swapped_in_the_store_is_never_signed() -> None:
    w = world()
    req = decided(w)
    w.evidence.blobs[req.report_sha256 or ""] = b"a different report"
    with pytest.raises(InvalidState) as err:
        evidence_packages.export_sample(w.deps, OID)
    assert err.value.details == [{"field": "evidence", "sha256": req.report_sha256}]
    assert not w.evidence.packages


def test_the_public_key_answer_is_the_signers_key_in_pem() -> None:
    w = world()
    out = evidence_packages.public_key(w.deps)
    assert out["algorithm"] == "ECDSA_SHA_256" and out["public_key_pem"].encode() == pem(w)
