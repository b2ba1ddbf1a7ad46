"""Evidence packages (issue 10 item 5): a sample's, a seller's, or any subject's (a lead's) evidence, zipped with a
signed manifest (``chalicelib.domain.evidence_package``), stored in the evidence bucket under the manifest's SHA-256
and handed out as a pre-signed URL.

What a sample contributes (``samples/<order_id>/...``):

- ``order.json``: the order record on an allow-list: never the persona, the account, the drop address or payment
  data; the marketplace's order id only as its SHA-256 (the marketplace can confirm it, a reader learns nothing);
- ``listing.json``: the listing reference (seller, category, price paid, the hashed marketplace order reference);
  testbuy keeps no listing snapshot of its own, and the file says so;
- ``verdict.json``: the lab's verdict with method, analyst, accreditation, confidence and the report's SHA-256;
- ``custody/chain.json``: the custody entries and the order's anchor, verified with the custody key at export;
- ``recommendations.json``: the enforcement recommendations the verdict led to, each with its policy version;

and every evidence file any of them cites (the lab report included) once, as ``evidence/<sha256>``. ``policy.json``
names the policy version in force at export and those the recommendations were made under.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from chalicelib.domain.appeals import appeal_id_for
from chalicelib.domain.enforcement import POLICY_VERSION
from chalicelib.domain.errors import InvalidInput, InvalidState, NotFound
from chalicelib.domain.evidence_package import CUSTODY_PATH, Package, assemble, public_key_pem
from chalicelib.domain.leads import Lead
from chalicelib.domain.models import Order
from chalicelib.ports import ManifestSigner
from chalicelib.services import custody
from chalicelib.services.deps import Deps

URL_SECONDS = 900  # the pre-signed GET URL's lifetime
MAX_SAMPLES = 200  # a seller package's samples (each with its evidence): keeps the zip within the function's memory
# What of an order goes into a package: nothing that identifies the buying persona, its account or its address.
ORDER_FIELDS = (
    "order_id",
    "program_id",
    "round_id",
    "seller_id",
    "category",
    "stratum",
    "status",
    "lab_id",
    "price",
    "currency",
    "delivered_at",
    "verdict",
    "refunded",
    "created_at",
    "updated_at",
    # second unit (issue 10 item 1): which sampled unit this purchase re-tests, and the unit bought after it
    "parent_order_id",
    "unit_number",
    "second_unit_order_id",
)


def signer(d: Deps) -> ManifestSigner:
    s = d.manifest_signer
    if s is None:
        raise RuntimeError("no evidence signing key is configured (TESTBUY_EVIDENCE_SIGNING_KEY_ARN)")
    return s


def _json(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n").encode()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sample_records(d: Deps, order: Order) -> tuple[dict[str, bytes], set[str]]:
    """One sample's files (paths relative to its folder) and the evidence hashes they cite."""
    oid = order.order_id
    record = order.model_dump(mode="json")
    redacted = {k: record.get(k) for k in ORDER_FIELDS}
    redacted["marketplace_order_ref_sha256"] = _sha(order.marketplace_order_id) if order.marketplace_order_id else None
    files: dict[str, bytes] = {"order.json": _json(redacted)}
    files["listing.json"] = _json(
        {
            "seller_id": order.seller_id,
            "category": order.category,
            "price_paid": order.price,
            "currency": order.currency,
            "marketplace_order_ref_sha256": redacted["marketplace_order_ref_sha256"],
            "snapshot": None,
            "note": "testbuy stores no listing snapshot; the marketplace identifies the listing from its order "
            "reference (compare the SHA-256 of its order id)",
        }
    )
    cited: set[str] = set()
    verdict = d.orders.get_verdict(oid)
    if verdict is not None:
        files["verdict.json"] = _json(verdict.model_dump(mode="json"))
    # every lab attempt's verdict (an inconclusive one re-tested elsewhere, a lab that was re-assigned), in order
    attempts = d.orders.list_verdicts(oid)
    if len(attempts) > 1:
        files["verdicts.json"] = _json([v.model_dump(mode="json") for v in attempts])
    for v in [*attempts, *([verdict] if verdict else [])]:
        cited |= set(v.evidence) | ({v.report_sha256} if v.report_sha256 else set())
    # an appeal against the verdict: the filing (the seller's statement and evidence), the re-test lab's verdict
    # and the outcome; the order's effective verdict is the appeal's when it was overturned
    if d.appeals is not None:
        try:
            appeal = d.appeals.get(appeal_id_for(oid))
        except NotFound:
            appeal = None
        if appeal is not None:
            files["appeal.json"] = _json(appeal.model_dump(mode="json"))
            cited |= set(appeal.evidence)
            retest = d.appeals.get_retest_verdict(appeal.appeal_id)
            if retest is not None:
                files["appeal_retest_verdict.json"] = _json(retest.model_dump(mode="json"))
                cited |= set(retest.evidence) | ({retest.report_sha256} if retest.report_sha256 else set())
    entries, anchor = d.custody.snapshot(oid)
    check = custody.report(d, oid)
    if not check["valid"]:
        raise InvalidState(
            f"the custody chain of {oid} does not verify ({check['reason']}: {check['detail']}); no package is "
            "exported from a broken chain",
            details=[{"field": "custody", "reason": check["reason"], "first_bad_seq": check["first_bad_seq"]}],
        )
    files[CUSTODY_PATH] = _json(
        {
            "order_id": oid,
            "entries": check["entries"],
            "anchor": {"length": anchor.length, "head": anchor.head} if anchor else None,
            "custody_verified_at_export": {"valid": True, "key_ids": sorted({e.key_id for e in entries})},
        }
    )
    for e in entries:
        cited |= set(e.evidence)
    files["recommendations.json"] = _json(order.recommendations)
    for rec in order.recommendations:
        cited |= {str(h) for h in rec.get("evidence", ())}
    return files, cited


def build_package(
    d: Deps,
    *,
    kind: str,
    subject_id: str,
    orders: Sequence[Order],
    extra_records: Mapping[str, Any] | None = None,
) -> Package:
    """The generic builder (a lead's package uses it with ``kind="lead"`` and the lead as an extra record): every
    sample's files under ``samples/<order_id>/``, the evidence they cite under ``evidence/<sha256>``, ``policy.json``,
    and each extra record as ``records/<name>`` (JSON unless given as bytes)."""
    files: dict[str, bytes] = {}
    cited: set[str] = set()
    versions: set[str] = set()
    for order in sorted(orders, key=lambda o: o.order_id):
        sample, hashes = sample_records(d, order)
        files |= {f"samples/{order.order_id}/{path}": body for path, body in sample.items()}
        cited |= hashes
        versions |= {str(r["policy_version"]) for r in order.recommendations if r.get("policy_version")}
    not_stored: list[str] = []
    for digest in sorted(cited):
        body = d.evidence.get_bytes(digest)
        if body is None:
            not_stored.append(digest)
            continue
        if hashlib.sha256(body).hexdigest() != digest:  # the store is content-addressed: never sign a swapped file
            raise InvalidState(
                f"the stored evidence file {digest} does not hash to its name; it was replaced in the bucket",
                details=[{"field": "evidence", "sha256": digest}],
            )
        files[f"evidence/{digest}"] = body
    files["policy.json"] = _json(
        {"policy_version_at_export": POLICY_VERSION, "policy_versions_of_recommendations": sorted(versions)}
    )
    for name, value in (extra_records or {}).items():
        path = f"records/{name}" if isinstance(value, bytes) or name.endswith(".json") else f"records/{name}.json"
        files[path] = value if isinstance(value, bytes) else _json(value)
    meta = {
        "samples": sorted(o.order_id for o in orders),
        # cited by a verdict, a custody entry or a recommendation but never uploaded (e.g. a photo hash typed in)
        "evidence_not_stored": not_stored,
    }
    return assemble(files, kind=kind, subject_id=subject_id, created_at=d.clock.now(), signer=signer(d), meta=meta)


def store(d: Deps, pkg: Package, kind: str, subject_id: str) -> dict[str, Any]:
    """Store the zip under its manifest's hash; return where to fetch it (a pre-signed GET URL)."""
    key = d.evidence.put_package(pkg.manifest_sha256, pkg.data)
    return {
        "kind": kind,
        "subject_id": subject_id,
        "manifest_sha256": pkg.manifest_sha256,
        "key_id": pkg.key_id,
        "object_key": key,
        "url": d.evidence.package_url(key, URL_SECONDS),
        "expires_in": URL_SECONDS,
        "files": pkg.files,
        "bytes": len(pkg.data),
    }


def export_sample(d: Deps, order_id: str) -> dict[str, Any]:
    order = d.orders.get_order(order_id)
    if d.orders.get_verdict(order_id) is None:
        raise InvalidState(
            f"sample {order_id} has no verdict yet; its package is exported once the lab has decided",
            details=[{"field": "order_id", "status": order.status.value}],
        )
    pkg = build_package(d, kind="sample", subject_id=order_id, orders=[order])
    return store(d, pkg, "sample", order_id)


def export_seller(d: Deps, program_id: str, seller_id: str) -> dict[str, Any]:
    """Every sample of the seller in the programme that has a verdict."""
    d.programs.get_program(program_id)  # NotFound for an unknown programme
    orders = [
        o
        for rnd in d.rounds.list_rounds(program_id)
        for o in d.orders.list_round_orders(rnd.round_id)
        if o.seller_id == seller_id and o.verdict is not None
    ]
    if not orders:
        raise NotFound(
            f"seller {seller_id} has no sample with a verdict in programme {program_id}",
            details=[{"field": "seller_id"}],
        )
    if len(orders) > MAX_SAMPLES:
        raise InvalidInput(
            f"seller {seller_id} has {len(orders)} samples with verdicts; a package holds at most {MAX_SAMPLES}",
            details=[{"field": "seller_id"}],
        )
    subject = f"{program_id}/{seller_id}"
    pkg = build_package(
        d, kind="seller", subject_id=subject, orders=orders, extra_records={"seller": {"seller_id": seller_id}}
    )
    return store(d, pkg, "seller", subject)


def _lead_package(d: Deps, lead: Lead) -> Package:
    orders = [o for o in (d.orders.get_order(oid) for oid in lead.order_ids[:MAX_SAMPLES]) if o.verdict is not None]
    extra: dict[str, Any] = {"lead": lead.model_dump(mode="json")}
    if lead.ring_id and d.rings is not None:
        ring = d.rings.get_ring(lead.program_id, lead.ring_id)
        if ring is not None:
            extra["ring"] = ring.model_dump(mode="json")
    return build_package(d, kind="lead", subject_id=lead.lead_id, orders=orders, extra_records=extra)


def export_lead(d: Deps, lead: Lead) -> str:
    """A lead's package (every sample behind it with a verdict, the lead and its ring), stored; returns the manifest's
    SHA-256, which the lead records and ``LeadRaised`` carries (``chalicelib.services.leads.attach_package``)."""
    pkg = _lead_package(d, lead)
    store(d, pkg, "lead", lead.lead_id)
    return pkg.manifest_sha256


def export_lead_package(d: Deps, lead: Lead) -> dict[str, Any]:
    """A current package of the lead (its status history included), stored; where to download it."""
    pkg = _lead_package(d, lead)
    return store(d, pkg, "lead", lead.lead_id)


def public_key(d: Deps) -> dict[str, Any]:
    s = signer(d)
    return {"key_id": s.key_id(), "algorithm": s.algorithm(), "public_key_pem": public_key_pem(s.public_key_der())}
