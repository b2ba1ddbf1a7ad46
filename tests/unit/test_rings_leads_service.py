"""Rings and leads, service level on the in-memory fakes: import -> ring -> enforce (ring ban, ring lead, events
naming the ring) -> a sales feed after the verdict raises the sales lead -> enforcement walks the lead -> funnel."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.errors import CurrencyMismatch, InvalidInput, InvalidState
from chalicelib.domain.leads import LeadStatus, LeadUpdateIn, SalesFeedIn
from chalicelib.domain.models import (
    OrderStatus,
    ProgramCreate,
    SellerImport,
    Verdict,
    VerdictKind,
)
from chalicelib.services import leads, orders, programs
from chalicelib.services.orders import OrderTaskInput
from tests import builders
from tests.fakes import World, world

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def start(**policy: int) -> tuple[World, str]:
    w = world()
    if policy:
        from dataclasses import replace

        w.deps.enforcement_policy = replace(w.deps.enforcement_policy, **policy)
    p = programs.create_program(
        w.deps,
        ProgramCreate(
            name="p",
            currency="EUR",
            budget=10**9,
            period_start=T0 - timedelta(days=30),
            period_end=T0 + timedelta(days=300),
            round_size=10,
        ),
    )
    rows = [
        {"seller_id": "a", "fingerprints": {"payment_account": [h("iban-1")]}},
        {"seller_id": "b", "fingerprints": {"payment_account": [h("iban-1")], "device": [h("dev-9")]}},
        {"seller_id": "c", "fingerprints": {"device": [h("dev-9")]}},
        {"seller_id": "big"},
        {"seller_id": "solo", "fingerprints": {"address": [h("somewhere")]}},
    ]
    req = SellerImport.model_validate(
        {"sellers": [{"category": "bags", "expected_cost": 1000, "risk": 0.2, **r} for r in rows]}
    )
    out = programs.import_sellers(w.deps, p.program_id, req, "corr")
    assert out == {"imported": 5}
    return w, p.program_id


def verdict(w: World, pid: str, seller: str, kind: VerdictKind, at: datetime, n: int) -> OrderTaskInput:
    oid = f"ord-{seller}-{n}"
    w.orders.put_orders(
        [
            builders.order(
                at=at, order_id=oid, program_id=pid, seller_id=seller, status=OrderStatus.SETTLED, verdict=kind,
                price=1000, currency="EUR",
            )
        ]
    )  # fmt: skip
    w.orders.put_verdict(
        Verdict(order_id=oid, lab_id="lab-1", verdict=kind, evidence=[h(oid)], recorded_at=at, recorded_by="t")
    )
    w.clock.t = at
    inp = OrderTaskInput(order_id=oid, program_id=pid, round_id="rnd-test", correlation_id="corr")
    orders.enforce(w.deps, inp)
    orders.publish_outcome(w.deps, inp)
    return inp


def events(w: World, kind: str) -> list[dict]:
    return [e.detail["data"] for e in w.events.unique(kind).values()]


def test_import_finds_the_ring_by_kinds_never_values() -> None:
    w, _pid = start()
    [ring] = events(w, "RingDetected")
    assert ring["sellers"] == ["a", "b", "c"]
    assert ring["shared_fingerprint_kinds"] == ["device", "payment_account"]
    assert h("iban-1") not in str(w.events.published)


def test_strikes_across_the_ring_ban_it_and_raise_one_ring_lead() -> None:
    w, pid = start()
    verdict(w, pid, "a", VerdictKind.COUNTERFEIT, T0, 1)
    assert not [r for r in w.orders.get_order("ord-a-1").recommendations if r.get("ring_id")]  # one strike: no
    inp = verdict(w, pid, "c", VerdictKind.COUNTERFEIT, T0 + timedelta(days=10), 1)
    recs = w.orders.get_order("ord-c-1").recommendations
    ring_level = {(r["action"], r["rule"]) for r in recs if r.get("ring_id")}
    assert ring_level == {("ban_ring", "ring-repeat-offender"), ("law_enforcement_lead", "ring-counterfeiters")}
    published = [e for e in events(w, "EnforcementActionRecommended") if e["order_id"] == "ord-c-1" and e["ring_id"]]
    assert {e["action"] for e in published} == {"ban_ring", "law_enforcement_lead"}
    assert all(e["shared_fingerprint_kinds"] == ["device", "payment_account"] for e in published)
    [lead] = leads.list_leads(w.deps, pid)
    assert lead.ring_id == published[0]["ring_id"] and lead.seller_id is None
    assert lead.order_ids == ["ord-a-1", "ord-c-1"] and lead.evidence_hashes == sorted([h("ord-a-1"), h("ord-c-1")])
    # a retry of enforce and publish changes nothing: same lead, same events
    before = len(w.events.unique())
    orders.enforce(w.deps, inp)
    orders.publish_outcome(w.deps, inp)
    assert len(w.events.unique()) == before and len(leads.list_leads(w.deps, pid)) == 1
    assert len(events(w, "LeadRaised")) == 1


def test_a_sales_feed_after_the_verdict_raises_the_seller_lead_once() -> None:
    w, pid = start()
    verdict(w, pid, "big", VerdictKind.COUNTERFEIT, T0, 1)
    verdict(w, pid, "big", VerdictKind.AUTHENTIC, T0, 2)
    assert leads.list_leads(w.deps, pid) == []  # no sales known yet: the estimate is 0
    threshold = w.deps.enforcement_policy.lead_sales_threshold
    feed = SalesFeedIn.model_validate(
        {
            "currency": "EUR",
            "rows": [
                {"seller_id": "big", "period": "2026-03", "units": 10, "orders": 9, "gross_sales": threshold},
                {"seller_id": "big", "period": "2026-04", "units": 10, "orders": 9, "gross_sales": threshold},
                {"seller_id": "big", "period": "2026-09", "units": 10, "orders": 9, "gross_sales": 10**12},
            ],
        }
    )
    out = leads.ingest_sales(w.deps, pid, feed, "corr")
    [lead] = leads.list_leads(w.deps, pid)
    assert out["new"] == 3 and out["leads_raised"] == [lead.lead_id]
    # half of the conclusive buys were counterfeit; March and April are within a month of the verdict, September not
    assert lead.estimated_counterfeit_sales == threshold and lead.seller_id == "big" and lead.ring_id is None
    assert lead.rule == "large-counterfeit-sales" and lead.status is LeadStatus.SUBMITTED
    again = leads.ingest_sales(w.deps, pid, feed, "corr2")
    assert again["leads_raised"] == [] and again["leads_due"] == [lead.lead_id]
    assert again["unchanged"] == 3 and len(leads.list_leads(w.deps, pid)) == 1 and len(events(w, "LeadRaised")) == 1


def test_a_ring_lead_from_the_sum_of_its_members_sales() -> None:
    w, pid = start(ring_lead_sales_threshold=1_500, lead_sales_threshold=10**9)
    verdict(w, pid, "a", VerdictKind.COUNTERFEIT, T0, 1)
    rows = [{"seller_id": s, "period": "2026-03", "units": 1, "orders": 1, "gross_sales": 1_000} for s in ("a", "b")]
    out = leads.ingest_sales(w.deps, pid, SalesFeedIn.model_validate({"currency": "EUR", "rows": rows}), "c")
    assert out["leads_raised"] == []  # b never sold a counterfeit: only a's 1,000 counts
    verdict(w, pid, "b", VerdictKind.COUNTERFEIT, T0, 1)
    [lead] = [x for x in leads.list_leads(w.deps, pid) if x.rule == "large-ring-counterfeit-sales"]
    assert lead.estimated_counterfeit_sales == 2_000 and lead.ring_id is not None


def test_the_feed_is_validated_and_changes_nothing_when_refused() -> None:
    w, pid = start()
    row = {"seller_id": "a", "period": "2026-03", "units": 1, "orders": 1, "gross_sales": 5}
    with pytest.raises(CurrencyMismatch):
        leads.ingest_sales(w.deps, pid, SalesFeedIn.model_validate({"currency": "USD", "rows": [row]}), "c")
    with pytest.raises(InvalidInput) as exc:
        leads.ingest_sales(w.deps, pid, SalesFeedIn.model_validate({"currency": "EUR", "rows": [row, row]}), "c")
    assert exc.value.details[0]["field"] == "rows[1]"
    with pytest.raises(InvalidInput):
        bad = {**row, "orders": 2}
        leads.ingest_sales(w.deps, pid, SalesFeedIn.model_validate({"currency": "EUR", "rows": [bad]}), "c")
    assert w.leads.sales == {}
    for bad_period in ("2026-13", "26-03", "2026-3"):
        with pytest.raises(ValueError):
            SalesFeedIn.model_validate({"currency": "EUR", "rows": [{**row, "period": bad_period}]})


def test_enforcement_walks_a_lead_and_the_funnel_follows() -> None:
    w, pid = start()
    verdict(w, pid, "a", VerdictKind.COUNTERFEIT, T0, 1)
    verdict(w, pid, "b", VerdictKind.COUNTERFEIT, T0, 1)
    [lead] = leads.list_leads(w.deps, pid)
    lid = lead.lead_id

    def move(status: str, days: float) -> tuple[str, bool]:
        w.clock.t = T0 + timedelta(days=days)
        got, changed = leads.update_status(w.deps, pid, lid, LeadUpdateIn(status=status), "enforcement:x", "c")
        return got.status.value, changed

    assert move("case_opened", 2) == ("case_opened", True)
    assert move("case_opened", 3) == ("case_opened", False)  # repeated: idempotent, history unchanged
    with pytest.raises(InvalidState) as exc:
        move("conviction", 4)
    assert exc.value.details[0]["allowed"] == ["arrests", "closed_without_action"]
    assert move("arrests", 12) == ("arrests", True)
    assert move("conviction", 42) == ("conviction", True)
    with pytest.raises(InvalidState):
        move("closed_without_action", 50)
    final = leads.get_lead(w.deps, pid, lid)
    assert [x["status"] for x in final.history] == ["submitted", "case_opened", "arrests", "conviction"]
    updated = events(w, "LeadUpdated")
    assert [(e["previous_status"], e["status"]) for e in updated] == [
        ("submitted", "case_opened"),
        ("case_opened", "arrests"),
        ("arrests", "conviction"),
    ]
    assert leads.list_leads(w.deps, pid, "conviction") == [final]
    assert leads.list_leads(w.deps, pid, "submitted") == []
    m = leads.metrics_section(w.deps, pid)
    assert m is not None
    assert (m["leads"], m["cases"], m["convictions"], m["conviction_rate_of_leads"]) == (1, 1, 1, 1.0)
    assert m["time_in_stage"]["submitted"]["median_days"] == 2
    assert m["time_in_stage"]["arrests"]["mean_days"] == 30


def test_the_lead_package_is_built_once_and_its_hash_carried_by_the_event(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.services import evidence_packages

    w, pid = start()
    calls: list[str] = []

    def packager(d: object, lead: object) -> str:
        calls.append(lead.lead_id)  # type: ignore[attr-defined]
        return h("package")

    monkeypatch.setattr(evidence_packages, "export_lead", packager)
    verdict(w, pid, "a", VerdictKind.COUNTERFEIT, T0, 1)
    inp = verdict(w, pid, "b", VerdictKind.COUNTERFEIT, T0, 1)
    orders.enforce(w.deps, inp)  # retry
    [lead] = leads.list_leads(w.deps, pid)
    assert lead.package_sha256 == h("package") and calls == [lead.lead_id]
    assert events(w, "LeadRaised")[0]["package_sha256"] == h("package")


def test_a_rival_update_of_the_same_move_is_a_repeat_and_another_move_a_conflict() -> None:
    w, pid = start()
    verdict(w, pid, "a", VerdictKind.COUNTERFEIT, T0, 1)
    verdict(w, pid, "b", VerdictKind.COUNTERFEIT, T0, 1)
    [lead] = leads.list_leads(w.deps, pid)
    real = w.leads.update_lead_status

    def rival_first(program_id: str, lid: str, frm: str, to: str, entry: dict, at: datetime) -> object:
        real(program_id, lid, frm, rival["to"], {**entry, "status": rival["to"]}, at)  # the rival lands first
        return real(program_id, lid, frm, to, entry, at)

    rival = {"to": "case_opened"}
    w.leads.update_lead_status = rival_first  # type: ignore[method-assign]
    got, changed = leads.update_status(w.deps, pid, lead.lead_id, LeadUpdateIn(status="case_opened"), "e", "c")
    assert (got.status, changed) == (LeadStatus.CASE_OPENED, False)
    assert [x["status"] for x in got.history] == ["submitted", "case_opened"]
    rival["to"] = "closed_without_action"
    with pytest.raises(InvalidState) as exc:
        leads.update_status(w.deps, pid, lead.lead_id, LeadUpdateIn(status="arrests"), "e", "c")
    assert exc.value.details[0]["allowed"] == []


def test_a_ring_ban_whatever_order_the_members_enforcements_run_in() -> None:
    """Two ring members' counterfeits, the later one's execution enforced first (executions race): the strike of the
    earlier verdict is recorded with the verdict itself, so the later member's enforcement sees it and bans the ring.
    (Recorded only by enforce(), the later member saw nothing and the earlier one did not count a later strike.)"""
    from chalicelib.domain.custody import Actor
    from chalicelib.services import lab

    w, pid = start()
    tech = Actor(subject="tech", role="lab", lab_id="lab-1")
    inputs = {}
    for n, seller in enumerate(("a", "c")):
        oid = f"ord-{seller}-race"
        at = T0 + timedelta(hours=n)
        w.orders.put_orders(
            [
                builders.order(
                    at=at, order_id=oid, program_id=pid, seller_id=seller, status=OrderStatus.AT_LAB, lab_id="lab-1",
                    price=1000, currency="EUR",
                )
            ]
        )  # fmt: skip
        w.clock.t = at
        lab.post_verdict(w.deps, oid, "lab-1", tech, builders.court_verdict(w.evidence, VerdictKind.COUNTERFEIT), "c")
        inputs[seller] = OrderTaskInput(order_id=oid, program_id=pid, round_id="rnd-test", correlation_id="corr")
    for seller in ("c", "a"):  # the later verdict's enforcement runs first
        orders.enforce(w.deps, inputs[seller])
    later = {(r["action"], r["rule"]) for r in w.orders.get_order("ord-c-race").recommendations if r.get("ring_id")}
    earlier = [r for r in w.orders.get_order("ord-a-race").recommendations if r.get("ring_id")]
    assert ("ban_ring", "ring-repeat-offender") in later and earlier == []  # strikes before its verdict only


def test_a_lead_whose_package_cannot_be_built_is_still_raised_without_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.domain.errors import InvalidState
    from chalicelib.services import evidence_packages

    def broken(d: object, lead: object) -> str:
        raise InvalidState("the custody chain of a sample does not verify")

    monkeypatch.setattr(evidence_packages, "export_lead", broken)
    w, pid = start()
    verdict(w, pid, "a", VerdictKind.COUNTERFEIT, T0, 1)
    verdict(w, pid, "b", VerdictKind.COUNTERFEIT, T0, 1)
    [lead] = leads.list_leads(w.deps, pid)
    assert lead.package_sha256 is None
    assert events(w, "LeadRaised")[0]["package_sha256"] is None  # the news is not held back


def test_a_transient_packaging_failure_is_retried_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from chalicelib.services import evidence_packages

    def flaky(d: object, lead: object) -> str:
        raise ConnectionError("S3 unreachable")

    monkeypatch.setattr(evidence_packages, "export_lead", flaky)
    w, pid = start()
    verdict(w, pid, "a", VerdictKind.COUNTERFEIT, T0, 1)
    with pytest.raises(ConnectionError):
        verdict(w, pid, "b", VerdictKind.COUNTERFEIT, T0, 1)
    assert events(w, "LeadRaised") == []
    monkeypatch.setattr(evidence_packages, "export_lead", lambda d, lead: h("package"))
    inp = OrderTaskInput(order_id="ord-b-1", program_id=pid, round_id="rnd-test", correlation_id="corr")
    orders.enforce(w.deps, inp)  # the task's retry finishes the job
    [lead] = leads.list_leads(w.deps, pid)
    assert lead.package_sha256 == h("package") and events(w, "LeadRaised")[0]["package_sha256"] == h("package")
