"""Leads with a life (issue 10 item 4) and the ring facts of the enforcement policy (item 3).

- ``enforcement_facts``: called by ``enforce()``: records the test buy's verdict for the estimator, and returns the
  seller's ring facts and estimated counterfeit sales (the seller's and its ring's);
- ``raise_leads``: called by ``enforce()`` with the policy's ``law_enforcement_lead`` recommendations: one lead per
  (programme, seller or ring, rule), deterministic id, ``LeadRaised`` once (deterministic event id);
- ``ingest_sales``: the marketplace sales feed; it re-checks the sales thresholds of the sellers it names and of
  their rings, so a feed that arrives after the verdict still raises the lead;
- ``update_status``: enforcement moves a lead along ``chalicelib.domain.leads.TRANSITIONS`` (``LeadUpdated``);
- ``metrics_section``: the funnel and time in each stage, for the programme metrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from chalicelib.domain.enforcement import Action, PolicyConfig, Recommendation, RingFacts, sales_leads
from chalicelib.domain.errors import CurrencyMismatch, InvalidInput, InvalidState, NotFound
from chalicelib.domain.events import LeadRaised, LeadUpdated, deterministic_event_id, envelope
from chalicelib.domain.leads import (
    Lead,
    LeadStatus,
    LeadUpdateIn,
    SalesFeedIn,
    check_transition,
    estimate_counterfeit_sales,
    funnel,
    lead_id,
)
from chalicelib.domain.models import Order, Program, VerdictKind
from chalicelib.services import evidence_packages
from chalicelib.services.deps import Deps

MAX_RING_FOR_FACTS = 200  # members read for one enforcement decision (rings are capped far below by COMMON_ABOVE)


def _verdicts(d: Deps, program_id: str, seller_id: str) -> list[dict[str, Any]]:
    assert d.leads is not None  # nosec B101 # callers check
    out = []
    for t in d.leads.testbuys_of(program_id, seller_id):
        try:
            out.append({**t, "verdict": VerdictKind(t["verdict"])})
        except ValueError:
            continue
    return out


def seller_estimate(d: Deps, program_id: str, seller_id: str) -> int:
    """The seller's estimated counterfeit sales (minor units; ``estimate_counterfeit_sales``); 0 without leads store."""
    if d.leads is None:
        return 0
    tbs = _verdicts(d, program_id, seller_id)
    return estimate_counterfeit_sales(d.leads.sales_of(program_id, seller_id), [(t["verdict"], t["at"]) for t in tbs])


def _ring(d: Deps, program_id: str, seller_id: str) -> Any:
    if d.rings is None:
        return None
    rid = d.rings.ring_of(program_id, seller_id)
    ring = d.rings.get_ring(program_id, rid) if rid else None
    while ring is not None and ring.merged_into:  # a pointer not yet moved by an interrupted import
        ring = d.rings.get_ring(program_id, ring.merged_into)
    return ring


def enforcement_facts(
    d: Deps, order: Order, decided_at: datetime, prior: Sequence[datetime]
) -> tuple[RingFacts | None, int]:
    """Record this test buy's verdict (idempotent on the order id), then the seller's ring facts (members' confirmed
    counterfeits from the order repository's history, this seller's ``prior`` without this verdict) and its
    estimated counterfeit sales."""
    if d.leads is not None and order.verdict is not None:
        d.leads.record_testbuy(order.program_id, order.seller_id, order.order_id, order.verdict.value, decided_at)
    est = seller_estimate(d, order.program_id, order.seller_id)
    ring = _ring(d, order.program_id, order.seller_id)
    if ring is None or len(ring.members) < 2:
        return None, est
    members = sorted(ring.members)[:MAX_RING_FOR_FACTS]
    confirmed = {
        m: (list(prior) if m == order.seller_id else [t for t in d.orders.confirmed_history(m) if t <= decided_at])
        for m in members
    }
    ring_est = sum(est if m == order.seller_id else seller_estimate(d, order.program_id, m) for m in members)
    return RingFacts(ring.ring_id, members, confirmed, ring.shared_fingerprint_kinds, ring_est), est


def _evidence(d: Deps, program_id: str, sellers: Iterable[str]) -> tuple[list[str], list[str]]:
    orders: list[str] = []
    hashes: set[str] = set()
    if d.leads is None:
        return orders, []
    for s in sorted(set(sellers)):
        for t in _verdicts(d, program_id, s):
            if t["verdict"] is VerdictKind.COUNTERFEIT:
                orders.append(t["order_id"])
                v = d.orders.get_verdict(t["order_id"])
                hashes.update(v.evidence if v else [])
    return sorted(orders), sorted(hashes)


def raise_lead(
    d: Deps,
    program: Program,
    *,
    seller_id: str | None,
    ring: Any,
    rule: str,
    estimate: int,
    correlation_id: str,
    created: list[str] | None = None,
) -> Lead | None:
    """Create the lead once (deterministic id per programme, subject and rule), attach its evidence package when a
    packager is wired, and publish ``LeadRaised`` (deterministic id: a retry republishes the same event)."""
    if d.leads is None:
        return None
    now = d.clock.now()
    subject = f"ring:{ring.ring_id}" if ring is not None else f"seller:{seller_id}"
    lid = lead_id(program.program_id, subject, rule)
    orders, hashes = _evidence(d, program.program_id, ring.members if ring is not None else [seller_id or ""])
    lead = Lead(
        program_id=program.program_id,
        lead_id=lid,
        seller_id=None if ring is not None else seller_id,
        ring_id=ring.ring_id if ring is not None else None,
        rule=rule,
        estimated_counterfeit_sales=estimate,
        currency=program.currency,
        order_ids=orders,
        evidence_hashes=hashes,
        status=LeadStatus.SUBMITTED,
        history=[{"status": LeadStatus.SUBMITTED.value, "at": now.isoformat(), "by": "policy", "note": rule}],
        created_at=now,
        updated_at=now,
    )
    lead, new = d.leads.create_lead(lead)
    if new and created is not None:
        created.append(lid)
    if lead.package_sha256 is None and d.manifest_signer is not None:
        lead = attach_package(d, lead)
    d.events.publish(
        [
            envelope(
                LeadRaised(
                    lead_id=lid,
                    seller_id=lead.seller_id,
                    ring_id=lead.ring_id,
                    rule=lead.rule,
                    estimated_counterfeit_sales=lead.estimated_counterfeit_sales,
                    currency=lead.currency,
                    package_sha256=lead.package_sha256,
                ),
                event_id=deterministic_event_id(program.program_id, lid, "LeadRaised"),
                correlation_id=correlation_id,
                occurred_at=now,
                program_id=program.program_id,
            )
        ]
    )
    return Lead.model_validate(lead)


def raise_leads(
    d: Deps,
    order: Order,
    recs: Sequence[Recommendation],
    ring: RingFacts | None,
    seller_est: int,
    correlation_id: str,
) -> list[Lead]:
    """A lead for every ``law_enforcement_lead`` recommendation (ring-level ones for the ring)."""
    if d.leads is None:
        return []
    program = d.programs.get_program(order.program_id)
    stored_ring = _ring(d, order.program_id, order.seller_id) if ring is not None else None
    out = []
    for r in recs:
        if r.action is not Action.LAW_ENFORCEMENT_LEAD:
            continue
        ring_level = r.ring_id is not None and stored_ring is not None
        lead = raise_lead(
            d,
            program,
            seller_id=order.seller_id,
            ring=stored_ring if ring_level else None,
            rule=r.rule,
            estimate=(ring.estimated_counterfeit_sales if ring_level and ring else seller_est),
            correlation_id=correlation_id,
        )
        if lead is not None:
            out.append(lead)
    return out


# ------------------------------------------------------------------------------------------------ sales feed


def ingest_sales(d: Deps, program_id: str, req: SalesFeedIn, correlation_id: str) -> dict[str, Any]:
    """Store the rows (idempotent on seller and period), then re-check the sales thresholds of the sellers named and
    of their rings: a feed arriving after the verdict raises the lead the verdict could not."""
    program = d.programs.get_program(program_id)
    if req.currency != program.currency:
        raise CurrencyMismatch(f"the programme's currency is {program.currency}", details=[{"field": "currency"}])
    seen: dict[tuple[str, str], int] = {}
    problems = []
    for i, row in enumerate(req.rows):
        key = (row.seller_id, row.period)
        if key in seen:
            problems.append({"field": f"rows[{i}]", "message": f"repeats row {seen[key]} (same seller and period)"})
        seen.setdefault(key, i)
        if row.orders > row.units:
            problems.append({"field": f"rows[{i}].orders", "message": "orders cannot exceed units"})
    if problems:
        raise InvalidInput("the feed was rejected; nothing was stored", details=problems)
    if d.leads is None:
        raise InvalidInput("this deployment keeps no sales feed", details=[{"field": "(body)"}])
    outcome = d.leads.put_sales(program_id, [r.model_dump() for r in req.rows])
    created: list[str] = []
    due = recheck(d, program, sorted({r.seller_id for r in req.rows}), correlation_id, created)
    counts = {k: sum(1 for v in outcome.values() if v == k) for k in ("new", "replaced", "unchanged")}
    return {
        "program_id": program_id,
        **counts,
        "leads_raised": sorted(created),
        "leads_due": sorted({lead.lead_id for lead in due}),
    }


def recheck(
    d: Deps, program: Program, seller_ids: Sequence[str], correlation_id: str, created: list[str] | None = None
) -> list[Lead]:
    """The leads due for these sellers and their rings (created once; ``created`` collects the new ids)."""
    cfg: PolicyConfig = d.enforcement_policy
    raised: list[Lead] = []
    rings_done: set[str] = set()
    for s in seller_ids:
        tbs = _verdicts(d, program.program_id, s)
        ring = _ring(d, program.program_id, s)
        if any(t["verdict"] is VerdictKind.COUNTERFEIT for t in tbs):
            for rule, ring_level in sales_leads(seller_estimate(d, program.program_id, s), None, False, cfg):
                if not ring_level:
                    lead = raise_lead(
                        d,
                        program,
                        seller_id=s,
                        ring=None,
                        rule=rule,
                        estimate=seller_estimate(d, program.program_id, s),
                        correlation_id=correlation_id,
                        created=created,
                    )
                    raised.extend([lead] if lead else [])
        if ring is None or ring.ring_id in rings_done or len(ring.members) < 2:
            continue
        rings_done.add(ring.ring_id)
        members = sorted(ring.members)[:MAX_RING_FOR_FACTS]
        if not any(
            t["verdict"] is VerdictKind.COUNTERFEIT for m in members for t in _verdicts(d, program.program_id, m)
        ):
            continue
        ring_est = sum(seller_estimate(d, program.program_id, m) for m in members)
        for rule, ring_level in sales_leads(0, ring_est, True, cfg):
            if ring_level:
                lead = raise_lead(
                    d,
                    program,
                    seller_id=None,
                    ring=ring,
                    rule=rule,
                    estimate=ring_est,
                    correlation_id=correlation_id,
                    created=created,
                )
                raised.extend([lead] if lead else [])
    return raised


# ------------------------------------------------------------------------------------------------ lifecycle


def update_status(
    d: Deps, program_id: str, lid: str, req: LeadUpdateIn, by: str, correlation_id: str
) -> tuple[Lead, bool]:
    """Move the lead (``InvalidState`` naming the allowed statuses when the table forbids it); a repeat of the
    current status changes nothing. Publishes ``LeadUpdated`` (deterministic id per lead and target status)."""
    if d.leads is None:
        raise InvalidInput("this deployment keeps no leads", details=[{"field": "lead_id"}])
    d.programs.get_program(program_id)
    lead = d.leads.get_lead(program_id, lid)
    previous = lead.status
    changed = check_transition(previous, req.status)
    if changed:
        now = d.clock.now()
        entry = {"status": req.status.value, "at": now.isoformat(), "by": by, "note": req.note}
        try:
            lead = d.leads.update_lead_status(program_id, lid, previous.value, req.status.value, entry, now)
        except InvalidState:
            # a rival update won the race: the same move is a repeat (idempotent), another one is a conflict
            lead = d.leads.get_lead(program_id, lid)
            if lead.status is not req.status:
                check_transition(lead.status, req.status)
                raise
            return Lead.model_validate(lead), False
    else:
        # a repeat: republish the event of the move that brought the lead here (same id), in case it was lost
        entered = [h for h in lead.history if h.get("status") == previous.value]
        prior = lead.history[lead.history.index(entered[-1]) - 1] if entered and len(lead.history) > 1 else None
        if prior is None:
            return lead, False
        previous = LeadStatus(str(prior["status"]))
    d.events.publish(
        [
            envelope(
                LeadUpdated(lead_id=lid, status=lead.status.value, previous_status=previous.value),
                event_id=deterministic_event_id(program_id, lid, "LeadUpdated", lead.status.value),
                correlation_id=correlation_id,
                occurred_at=datetime.fromisoformat(str(lead.history[-1]["at"])),
                program_id=program_id,
            )
        ]
    )
    return lead, changed


def list_leads(d: Deps, program_id: str, status: str | None = None) -> list[Lead]:
    d.programs.get_program(program_id)
    if d.leads is None:
        return []
    leads = d.leads.list_leads(program_id)
    return sorted((x for x in leads if status is None or x.status.value == status), key=lambda x: x.lead_id)


def get_lead(d: Deps, program_id: str, lid: str) -> Lead:
    d.programs.get_program(program_id)
    if d.leads is None:
        raise InvalidInput("this deployment keeps no leads", details=[{"field": "lead_id"}])
    return Lead.model_validate(d.leads.get_lead(program_id, lid))


def metrics_section(d: Deps, program_id: str) -> dict[str, Any] | None:
    """The lead funnel for the programme metrics (None without a leads store)."""
    return None if d.leads is None else funnel(d.leads.list_leads(program_id))


def lead_view(lead: Lead) -> dict[str, Any]:
    return lead.model_dump(mode="json")


def attach_package(d: Deps, lead: Lead) -> Lead:
    """Build, sign and store the lead's evidence package (issue 10 item 5) and record its manifest hash, which
    ``LeadRaised`` carries. A package that cannot be built from what is stored (a sample's custody chain does not
    verify, a sample gone) does not hold the lead back: it is raised without one, and ``POST .../evidence-package``
    tells why when asked; a transient failure (S3, KMS) propagates, so the task or request is retried."""
    try:
        digest = evidence_packages.export_lead(d, lead)
    except (InvalidState, NotFound):
        return lead
    assert d.leads is not None  # nosec B101 # the caller holds a lead from this repository
    updated: Lead = d.leads.set_package(lead.program_id, lead.lead_id, digest)
    return updated
