"""Rings and leads over HTTP on the local stack: sellers imported with fingerprints (in two batches) form one ring;
counterfeit verdicts on two of its storefronts (recorded through the order tasks with the stack's real adapters)
ban the ring and raise its lead; the marketplace's sales feed, arriving after the verdicts, raises the seller's
sales lead; enforcement walks a lead through its lifecycle (409 naming the allowed moves); the metrics show the
funnel. Roles are checked on each new route."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

from chalicelib.domain.models import OrderStatus, Verdict, VerdictKind
from chalicelib.services import orders
from chalicelib.services.deps import Deps
from chalicelib.services.orders import OrderTaskInput
from tests import builders


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def counterfeit(deps: Deps, pid: str, seller: str, at: datetime) -> None:
    oid = f"ord-{uuid.uuid4().hex[:16]}"
    deps.orders.put_orders(
        [
            builders.order(
                at=at, order_id=oid, program_id=pid, seller_id=seller, status=OrderStatus.SAMPLED, currency="EUR"
            )
        ]
    )
    # past the lifecycle: a settled order with a counterfeit verdict (the order machine's own tests cover the path)
    builders.force_order_fields(deps.orders, oid, {"status": "settled", "verdict": "counterfeit", "price": 1000})
    deps.orders.put_verdict(
        Verdict(order_id=oid, lab_id="lab-1", verdict=VerdictKind.COUNTERFEIT, evidence=[h(oid)], recorded_at=at,
                recorded_by="lab")
    )  # fmt: skip
    inp = OrderTaskInput(order_id=oid, program_id=pid, round_id="rnd-test", correlation_id="it")
    orders.enforce(deps, inp)
    orders.publish_outcome(deps, inp)


def test_rings_sales_feed_and_a_lead_walked_by_enforcement(api: Any, deps: Deps) -> None:
    pm, enf, mkt = api("program_manager"), api("enforcement"), api("marketplace")
    tag = uuid.uuid4().hex[:8]
    pid = pm.call(
        "POST",
        "/programs",
        {
            "name": f"rings-{tag}",
            "currency": "EUR",
            "budget": 1_000_000,
            "period_start": "2025-01-01T00:00:00Z",
            "period_end": "2030-01-01T00:00:00Z",
            "round_size": 10,
        },
    )["program_id"]
    iban, device = h(f"iban-{tag}"), h(f"device-{tag}")

    def seller(sid: str, **fps: list[str]) -> dict[str, Any]:
        return {"seller_id": sid, "category": "bags", "expected_cost": 1000, "risk": 0.2, "fingerprints": fps}

    # a raw value is refused, naming the field, and nothing is imported
    status, body, _ = pm.request(
        "POST", f"/programs/{pid}/sellers", {"sellers": [seller("x", payment_account=["DE89370400440532013000"])]}
    )
    assert status == 400 and "fingerprints.payment_account" in str(body["error"]["details"])
    # two batches: the second seller joins the first's ring through the index, not through its batch
    first = pm.call("POST", f"/programs/{pid}/sellers", {"sellers": [seller("a", payment_account=[iban])]})
    assert first == {"imported": 1}
    assert enf.call("GET", f"/programs/{pid}/rings")["rings"] == []
    second = pm.call(
        "POST",
        f"/programs/{pid}/sellers",
        {"sellers": [seller("b", payment_account=[iban], device=[device]), seller("c", device=[device])]},
    )
    assert second == {"imported": 2}
    [ring] = enf.call("GET", f"/programs/{pid}/rings")["rings"]
    assert ring["members"] == ["a", "b", "c"] and ring["shared_fingerprint_kinds"] == ["device", "payment_account"]
    assert iban not in str(ring)

    now = datetime.now(UTC)
    counterfeit(deps, pid, "a", now)
    counterfeit(deps, pid, "c", now)
    leads = enf.call("GET", f"/programs/{pid}/leads")["leads"]
    assert [(x["rule"], x["ring_id"]) for x in leads] == [("ring-counterfeiters", ring["ring_id"])]

    # the sales feed after the verdicts: a's estimate (all its test buys counterfeit) crosses the seller threshold
    month = now.strftime("%Y-%m")
    feed = {
        "currency": "EUR",
        "rows": [{"seller_id": "a", "period": month, "units": 900, "orders": 800, "gross_sales": 20_000_000}],
    }
    assert mkt.request("POST", f"/programs/{pid}/sales-feed", {**feed, "currency": "USD"})[0] == 400
    assert enf.request("POST", f"/programs/{pid}/sales-feed", feed)[0] == 403
    stored = mkt.call("POST", f"/programs/{pid}/sales-feed", feed)
    # the seller's estimate and the ring's (the sum of its members') both cross their thresholds
    raised = [enf.call("GET", f"/programs/{pid}/leads/{lid}") for lid in stored["leads_raised"]]
    assert stored["new"] == 1 and sorted(x["rule"] for x in raised) == [
        "large-counterfeit-sales",
        "large-ring-counterfeit-sales",
    ]
    again = pm.call("POST", f"/programs/{pid}/sales-feed", feed)
    assert again["unchanged"] == 1 and again["leads_raised"] == []
    assert again["leads_due"] == sorted(stored["leads_raised"])  # the same leads, not new ones
    assert len(enf.call("GET", f"/programs/{pid}/leads")["leads"]) == 3
    [seller_lead] = [x for x in raised if x["seller_id"]]
    assert seller_lead["seller_id"] == "a" and seller_lead["estimated_counterfeit_sales"] == 20_000_000
    assert seller_lead["rule"] == "large-counterfeit-sales" and seller_lead["status"] == "submitted"

    # enforcement walks the lead
    path = f"/programs/{pid}/leads/{seller_lead['lead_id']}/status"
    assert pm.request("POST", path, {"status": "case_opened"})[0] == 403
    moved = enf.call("POST", path, {"status": "case_opened", "note": "case 2026/17"})
    assert moved["changed"] is True and moved["lead"]["status"] == "case_opened"
    assert enf.call("POST", path, {"status": "case_opened"})["changed"] is False
    status, body, _ = enf.request("POST", path, {"status": "conviction"})
    assert status == 409 and body["error"]["details"][0]["allowed"] == ["arrests", "closed_without_action"]
    assert enf.request("POST", path, {"status": "escalated"})[0] == 400
    assert enf.call("GET", f"/programs/{pid}/leads?status=case_opened")["leads"][0]["lead_id"] == seller_lead["lead_id"]

    funnel = pm.call("GET", f"/programs/{pid}/metrics")["leads"]
    assert (funnel["leads"], funnel["cases"], funnel["convictions"]) == (3, 1, 0)
    assert funnel["case_rate"] == 1 / 3 and funnel["time_in_stage"]["submitted"]["count"] == 1
