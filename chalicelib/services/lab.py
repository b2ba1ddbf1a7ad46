"""Lab use cases: queue, custody hand-overs, verdicts (which resume the waiting order), service quality."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from chalicelib.domain.custody import Actor, Anchor
from chalicelib.domain.errors import Conflict, InvalidInput, InvalidState, NotFound
from chalicelib.domain.events import ServiceQualityRecorded, VerdictRecorded, deterministic_event_id, envelope
from chalicelib.domain.models import (
    COURT_FIELDS,
    CustodyIn,
    EvidenceIn,
    Order,
    OrderStatus,
    ServiceQualityIn,
    Verdict,
    VerdictIn,
    VerdictKind,
)
from chalicelib.services import custody
from chalicelib.services.deps import Deps

S = OrderStatus


def verdict_point(attempt: int) -> str:
    """The wait point of a lab attempt (the first keeps the name it always had; re-tests: ``verdict<n>``)."""
    return "verdict" if attempt <= 1 else f"verdict{attempt}"


class WrongLab(Exception):
    """The caller's lab is not the lab this sample was sent to (mapped to 403)."""


def _order_for_lab(d: Deps, order_id: str, lab_id: str | None) -> Order:
    order = d.orders.get_order(order_id)
    if lab_id is not None and order.lab_id != lab_id:
        # Same answer whether the sample belongs to another lab or is not at a lab: no information leaks.
        raise WrongLab(f"sample {order_id} is not assigned to lab {lab_id}")
    return order


def queue(d: Deps, lab_id: str) -> list[dict[str, Any]]:
    """Samples waiting for this lab's verdict, oldest first (no persona, address or payment data)."""
    return [
        {
            "order_id": o.order_id,
            "seller_id": o.seller_id,
            "category": o.category,
            "status": o.status.value,
            "delivered_at": o.delivered_at.isoformat() if o.delivered_at else None,
            "attempt": o.lab_attempt,  # retest: >= 2 when the sample came from another lab
        }
        for o in d.orders.lab_queue(lab_id)
    ]


def post_verdict(
    d: Deps, order_id: str, lab_id: str | None, actor: Actor, req: VerdictIn, correlation_id: str
) -> tuple[Verdict, bool]:
    """Record the verdict of the sample's current lab attempt once (one conditional write decides between concurrent
    posts). Same verdict again: returns it (created=False). A different one: ``Conflict``.

    Whoever gets here, first call or retry, then makes sure of every follow-up, each idempotent: the custody entry
    (looked up before it is appended), the order's status, the stored arrival and the resume of the waiting
    execution, and ``VerdictRecorded`` (deterministic id). A retry after any of them failed finishes the job instead
    of answering early and leaving the execution to wait for its timeout.

    Re-tests (issue 10 item 1): each lab attempt has its own verdict. A lab the sample was taken from (re-tested
    elsewhere, or re-assigned after it missed its deadline) may repeat the verdict it gave (idempotent), but a new or
    late one is refused (``Conflict``) and changes nothing."""
    order, attempt = _attempt_for_lab(d, order_id, lab_id)
    # --- evidence (issue 10 item 0): a conclusive verdict names method, analyst, accreditation, confidence and the
    # uploaded lab report; checked before anything is written (a refused verdict changes nothing)
    stored = d.orders.get_verdict(order_id, attempt)
    if stored is None and attempt != order.lab_attempt:  # before the body's checks: nothing from it is taken
        raise Conflict(
            f"sample {order_id} was re-assigned from lab {lab_id} to another lab after lab {lab_id} missed its "
            "verdict deadline; a late verdict is not accepted and changes nothing",
            details=[{"field": "order_id", "attempt": attempt, "current_attempt": order.lab_attempt}],
        )
    check_court_fields(d, req, first=stored is None, upload_route=f"POST /samples/{order_id}/evidence")
    # --- end evidence
    created = False
    if stored is None:
        if order.status not in (S.AT_LAB, S.VERDICT):
            raise InvalidState(
                f"sample {order_id} is {order.status.value}; verdicts are taken while it is at the lab",
                details=[{"field": "status", "status": order.status.value}],
            )
        verdict = Verdict(
            order_id=order_id,
            lab_id=order.lab_id or "",
            verdict=req.verdict,
            notes=req.notes,
            evidence=req.evidence,
            recorded_at=d.clock.now(),
            recorded_by=actor.subject,
            attempt=attempt,
            method=req.method,
            analyst=req.analyst,
            accreditation=req.accreditation,
            confidence=req.confidence,
            report_sha256=req.report_sha256,
        )
        try:
            stored, created = d.orders.put_verdict(verdict)
        except InvalidState:
            raise Conflict(
                f"sample {order_id} was re-assigned to another lab while this verdict was posted; it is not accepted "
                "and changes nothing",
                details=[{"field": "order_id", "attempt": attempt}],
            ) from None
    # "The same verdict" (a retry, a lost reply) is the same request in every recorded field; any difference, even
    # in the notes or the report's hash, would silently change what a court reads, so it is a conflict.
    differ = differing_fields(stored, req)
    if differ:
        raise Conflict(
            f"sample {order_id} already has a different verdict ({stored.verdict.value}); it differs in "
            f"{', '.join(differ)}",
            details=[{"field": f, "recorded": recorded_value(getattr(stored, f))} for f in differ],
        )
    _verdict_follow_ups(d, order, stored, actor, correlation_id)
    return stored, created


def check_court_fields(d: Deps, req: VerdictIn, *, first: bool, upload_route: str) -> None:
    """A conclusive verdict names method, analyst, accreditation, confidence and the lab report, which must be an
    uploaded evidence file when the verdict is first recorded (a replay is compared field by field instead)."""
    missing = req.missing_court_fields()
    if missing:
        raise InvalidInput(
            f"a {req.verdict.value} verdict must name {', '.join(missing)}",
            details=[{"field": f, "message": "required for a conclusive verdict"} for f in missing],
        )
    if first and req.report_sha256 is not None and not d.evidence.exists(req.report_sha256):
        raise InvalidInput(
            f"no evidence file {req.report_sha256} was uploaded; upload the lab report first ({upload_route}) "
            "and cite the sha256 it returns",
            details=[{"field": "report_sha256", "message": "not an uploaded evidence file"}],
        )


def differing_fields(stored: Any, req: VerdictIn) -> list[str]:
    """The recorded fields (of a lab verdict or an appeal's re-test verdict) a replayed request changes; empty: the
    same verdict, a retry. Any difference, even in the notes or the report's hash, would silently change what a court
    reads, so the caller answers it with a conflict."""
    fields = ("verdict", "notes", "evidence", *COURT_FIELDS)
    return [f for f in fields if getattr(req, f) != getattr(stored, f)]


def recorded_value(value: Any) -> Any:
    return value.value if isinstance(value, VerdictKind) else value


def _attempt_for_lab(d: Deps, order_id: str, lab_id: str | None) -> tuple[Order, int]:
    """The order and the lab attempt the caller's verdict is for: the current one for its current lab (or a caller
    without a lab), the attempt a former lab had (its verdict may only be repeated); any other lab: ``WrongLab``."""
    order = d.orders.get_order(order_id)
    if lab_id is None or order.lab_id == lab_id:
        return order, order.lab_attempt
    tried = order.labs_tried
    if lab_id in tried:
        return order, len(tried) - tried[::-1].index(lab_id)  # its (last) attempt, 1-based
    # Same answer whether the sample belongs to another lab or is not at a lab: no information leaks.
    raise WrongLab(f"sample {order_id} is not assigned to lab {lab_id}")


def _verdict_follow_ups(d: Deps, order: Order, verdict: Verdict, actor: Actor, correlation_id: str) -> None:
    order_id = order.order_id
    lab_of_attempt = verdict.lab_id or order.lab_id
    # --- custody (issue 8 item 5): the archive entry, logged by the lab principal, once (a retry finds it);
    # its position and MAC are the checkpoint carried in VerdictRecorded, the same on every retry.
    archive = f"lab:{lab_of_attempt}:archive"
    condition = f"examined: {verdict.verdict.value}"
    entry, _ = custody.append(
        d,
        order_id,
        actor,
        from_party=f"lab:{lab_of_attempt}",
        to_party=archive,
        at=verdict.recorded_at,
        location=f"lab {lab_of_attempt}",
        condition=condition,
        evidence=verdict.evidence,
        once=lambda e: (
            (e.from_party, e.to_party, e.condition, e.evidence)
            == (f"lab:{lab_of_attempt}", archive, condition, tuple(verdict.evidence))
        ),
    )
    anchor = Anchor(entry.seq + 1, entry.mac)
    # --- end custody
    current = d.orders.get_order(order_id)
    if current.status is S.AT_LAB and current.lab_attempt == verdict.attempt:
        try:
            d.orders.mark_verdict(order_id, verdict.verdict, d.clock.now(), attempt=verdict.attempt)
        except InvalidState:
            pass  # re-assigned meanwhile: the verdict of a former attempt moves nothing
    # --- a confirmed counterfeit counts for its seller (and the seller's ring) from the moment it is recorded, before
    # the execution resumes: a ring member's enforcement, whatever the order the executions run in, then sees every
    # member's counterfeit recorded before its own (enforce() records it again: idempotent on the order id). Not
    # after an overturn: a replayed verdict must not restore a rescinded strike. After mark_verdict, so the sample
    # leaves the lab's queue as soon as before.
    if verdict.verdict is VerdictKind.COUNTERFEIT and current.verdict_overturned_by is None:
        d.orders.record_confirmed(order.seller_id, order_id, verdict.recorded_at)
    arrival, token = d.orders.arrive(order_id, verdict_point(verdict.attempt), {"verdict": verdict.verdict.value})
    if token:
        d.workflow.succeed(token, dict(arrival))
    key = () if verdict.attempt == 1 else (str(verdict.attempt),)
    d.events.publish(
        [
            envelope(
                VerdictRecorded(
                    order_id=order_id,
                    round_id=order.round_id,
                    seller_id=order.seller_id,
                    lab_id=lab_of_attempt or "",
                    verdict=verdict.verdict.value,
                    custody_length=anchor.length,
                    custody_head=anchor.head,
                ),
                event_id=deterministic_event_id(order_id, "VerdictRecorded", *key),
                correlation_id=correlation_id,
                occurred_at=verdict.recorded_at,
                program_id=order.program_id,
            )
        ]
    )


def post_service_quality(
    d: Deps, order_id: str, lab_id: str | None, req: ServiceQualityIn, correlation_id: str
) -> dict[str, Any]:
    order = _order_for_lab(d, order_id, lab_id)
    if order.delivered_at is None:
        raise InvalidState(
            f"sample {order_id} was not delivered; nothing to rate",
            details=[{"field": "status", "status": order.status.value}],
        )
    score = req.score()
    d.orders.record_service_quality(order_id, score, req.model_dump(), d.clock.now())
    d.events.publish(
        [
            envelope(
                ServiceQualityRecorded(order_id=order_id, seller_id=order.seller_id, score=score),
                event_id=deterministic_event_id(order_id, "ServiceQualityRecorded", str(score)),
                correlation_id=correlation_id,
                occurred_at=d.clock.now(),
                program_id=order.program_id,
            )
        ]
    )
    return {"order_id": order_id, "score": score}


def add_custody(d: Deps, order_id: str, lab_id: str | None, actor: Actor, req: CustodyIn) -> dict[str, Any]:
    # --- custody (issue 8 item 5): the entry records the authenticated actor and moves the order's anchor
    _order_for_lab(d, order_id, lab_id)
    if not d.custody.chain(order_id):
        raise NotFound(f"sample {order_id} has no custody chain yet", details=[{"field": "order_id"}])
    entry, anchor = custody.append(
        d,
        order_id,
        actor,
        from_party=req.from_party,
        to_party=req.to_party,
        location=req.location,
        condition=req.condition,
        evidence=req.evidence,
    )
    return {
        "seq": entry.seq,
        "mac": entry.mac,
        "prev_mac": entry.prev_mac,
        "key_id": entry.key_id,
        "custody_length": anchor.length,
        "custody_head": anchor.head,
    }
    # --- end custody


def upload_evidence(d: Deps, order_id: str, lab_id: str | None, req: EvidenceIn) -> dict[str, Any]:
    """Store an evidence file by content hash; its SHA-256 is what custody entries and verdicts cite."""
    _order_for_lab(d, order_id, lab_id)
    return store_evidence_file(d, req)


def store_evidence_file(d: Deps, req: EvidenceIn) -> dict[str, Any]:
    """Decode and store one evidence file under its SHA-256 (the caller has checked who may)."""
    try:
        data = base64.b64decode(req.content_base64, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("content_base64 is not valid base64", details=[{"field": "content_base64"}]) from None
    if not data:
        raise InvalidInput("the evidence file is empty", details=[{"field": "content_base64"}])
    digest = d.evidence.put_bytes(data)
    return {"sha256": digest, "bytes": len(data), "media_type": req.media_type}


def custody_report(d: Deps, order_id: str, lab_id: str | None, checkpoints: Sequence[Anchor] = ()) -> dict[str, Any]:
    """The chain, verified against the order's anchor and any checkpoints the caller holds (issue 8 item 5)."""
    _order_for_lab(d, order_id, lab_id)
    out = custody.report(d, order_id, checkpoints)
    verdict = d.orders.get_verdict(order_id)  # evidence (issue 10 item 0): shown beside the chain
    out["verdict"] = verdict.model_dump(mode="json") if verdict is not None else None
    return out
