"""The dashboard's data (chalicelib/services/dashboard.py) on in-memory fakes, and the report's HTML
(testbuy/report.py): each figure checked against what it is computed from, by hand."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.api.schemas import Dashboard
from chalicelib.domain.models import (
    FundRequest,
    OrderStatus,
    ProgramCreate,
    RefundFeedIn,
    Round,
    RoundStatus,
    Timeouts,
    Verdict,
    VerdictKind,
)
from chalicelib.services import dashboard, programs
from tests.builders import order
from tests.fakes import world

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _setup() -> tuple[Any, str]:
    w = world()
    req = ProgramCreate(
        name="Bags & <shoes>",
        currency="CNY",
        budget=1_000_000,
        period_start=T0 - timedelta(days=10),
        period_end=T0 + timedelta(days=20),
        round_size=5,
        timeouts=Timeouts(delivery_seconds=3600, verdict_seconds=7200, round_seconds=86400, max_jitter_seconds=60),
    )
    pid = programs.create_program(w.deps, req).program_id
    programs.fund_program(w.deps, pid, FundRequest(amount=1_000_000, currency="CNY", reference="f-1"))
    return w, pid


def _round(w: Any, pid: str, rid: str, population: int = 100) -> None:
    w.rounds.put_round(
        Round(
            program_id=pid,
            round_id=rid,
            status=RoundStatus.COMPLETED,
            seed=1,
            budget=10_000,
            started_at=w.clock.now(),
            execution_name=rid,
            population=population,
            population_by_stratum={"bags": 60, "shoes": 40},
        )
    )


def _settled(w: Any, pid: str, rid: str, cat: str, verdict: VerdictKind, price: int, lab: str, hours: float) -> str:
    now = w.clock.now()
    o = order(
        program_id=pid,
        round_id=rid,
        category=cat,
        pi=0.5,
        risk=0.2,
        seller_id=f"s-{cat}-{price}",
        at=now - timedelta(hours=hours + 1),
    )
    w.orders.put_orders([o])
    delivered = now - timedelta(hours=hours)
    w.ledger.reserve(pid, o.order_id, price, "CNY", {"round_id": rid, "category": cat, "seller_id": o.seller_id})
    w.ledger.capture(pid, o.order_id, price, "CNY")
    refunded = 0
    if verdict is VerdictKind.COUNTERFEIT:
        refunded = price // 2
        w.ledger.recover(pid, o.order_id, refunded, "CNY")
    w.orders.orders[o.order_id] = o.model_copy(
        update={
            "status": OrderStatus.SETTLED,
            "lab_id": lab,
            "verdict": verdict,
            "price": price,
            "refunded": refunded,
            "delivered_at": delivered,
            "marketplace_order_id": "m-" + o.order_id,
            "recommendations": [{"rule": "counterfeit_confirmed", "action": "take_down_listing"}]
            if verdict is VerdictKind.COUNTERFEIT
            else [],
        }
    )
    w.orders.put_verdict(Verdict(order_id=o.order_id, lab_id=lab, verdict=verdict, recorded_at=now, recorded_by="tech"))
    return o.order_id


def test_the_dashboard_document_holds_each_figure_from_its_source() -> None:
    w, pid = _setup()
    _round(w, pid, "rnd-a")
    hits = [
        _settled(w, pid, "rnd-a", "bags", VerdictKind.COUNTERFEIT, 1000, "lab-1", hours=2.0),
        _settled(w, pid, "rnd-a", "bags", VerdictKind.COUNTERFEIT, 3000, "lab-1", hours=4.0),
    ]
    _settled(w, pid, "rnd-a", "bags", VerdictKind.AUTHENTIC, 2000, "lab-1", hours=6.0)
    _settled(w, pid, "rnd-a", "shoes", VerdictKind.AUTHENTIC, 500, "lab-2", hours=1.0)
    _settled(w, pid, "rnd-a", "shoes", VerdictKind.INCONCLUSIVE, 700, "lab-2", hours=3.0)
    for period, n, k in (("2026-01", 100_000, 31), ("2026-02", 100_000, 21)):
        programs.ingest_refund_feed(w.deps, pid, RefundFeedIn(period=period, orders=n, suspect_refunds=k))
    w.clock.advance(days=1)
    doc = dashboard.program_dashboard(w.deps, pid)
    Dashboard.model_validate_json(json.dumps(doc), strict=True)  # what the route's declaration checks

    spent = 1000 + 3000 + 2000 + 500 + 700 - 500 - 1500
    assert doc["balance"]["spent"] == spent and doc["balance"]["funded"] == 1_000_000
    last = doc["burn_down"][-1]
    assert (last["funded"], last["spent"], last["reserved"], last["recovered"]) == (1_000_000, spent, 0, 2000)
    assert doc["reconciliation"]["reconciled"] is True

    cats = {c["category"]: c for c in doc["categories"]}
    assert cats["bags"] == {
        "category": "bags",
        "orders": 3,
        "conclusive": 3,
        "hits": 2,
        "spent": 1000 + 3000 + 2000 - 2000,
        "cost_per_hit": (1000 + 3000 + 2000 - 2000) // 2,
    }
    assert cats["shoes"]["hits"] == 0 and cats["shoes"]["cost_per_hit"] is None and cats["shoes"]["conclusive"] == 1
    assert doc["cost_per_hit"] == spent // 2
    assert doc["enforcement"] == [{"rule": "counterfeit_confirmed", "action": "take_down_listing", "count": 2}]

    combined = doc["estimates"]["combined"]
    assert combined["hits"] == 2 and combined["conclusive"] == 4 and combined["hit_rate"] == 0.5
    assert combined["ci_low"] <= combined["prevalence"] <= combined["ci_high"] and combined["method"]
    assert [r["label"] for r in doc["estimates"]["rounds"]] == ["rnd-a"]
    assert doc["estimates"]["rounds"][0]["prevalence"] == pytest.approx(combined["prevalence"])  # one round

    refunds = doc["refund_rate"]
    assert [m["rate"] for m in refunds["months"]] == [31 / 100_000, 21 / 100_000]
    assert refunds["months"][0]["change_pp"] is None
    assert refunds["months"][1]["change_pp"] == pytest.approx(-0.01)
    assert refunds["change_pp"] == pytest.approx(-0.01) and refunds["relative_change"] == pytest.approx(-10 / 31)

    labs = {lab["lab_id"]: lab for lab in doc["labs"]}
    # lab-1: 2, 4, 6 hours from delivery to verdict -> median 4, p90 = 4 + 0.8 * 2 (linear interpolation)
    assert labs["lab-1"] == {"lab_id": "lab-1", "samples": 3, "median_hours": 4.0, "p90_hours": 5.6}
    assert labs["lab-2"]["samples"] == 2 and labs["lab-2"]["median_hours"] == 2.0
    assert doc["orders"]["by_status"] == {"settled": 5} and doc["orders"]["overdue"] == []
    assert doc["policy_version"] and doc["program"]["name"] == "Bags & <shoes>"
    assert set(hits) <= set(w.orders.orders)


def test_overdue_follows_the_programme_timeouts_stage_by_stage() -> None:
    w, pid = _setup()
    _round(w, pid, "rnd-b")
    now = w.clock.now()
    # limits: delivery 60 + 3600 s since the order intent; verdict 7200 s since delivery; else 60 + 3600 + 7200
    cases = {
        "late-delivery": dict(status=OrderStatus.PLACED, place_intent_at=now - timedelta(seconds=3661)),
        "in-time-delivery": dict(status=OrderStatus.PLACED, place_intent_at=now - timedelta(seconds=3659)),
        "late-verdict": dict(status=OrderStatus.AT_LAB, delivered_at=now - timedelta(seconds=7300)),
        "in-time-verdict": dict(status=OrderStatus.AT_LAB, delivered_at=now - timedelta(seconds=7100)),
        "stuck": dict(status=OrderStatus.NEEDS_RECONCILIATION),
        "old-but-settled": dict(status=OrderStatus.SETTLED, delivered_at=now - timedelta(days=9)),
    }
    for name, fields in cases.items():
        at = now - timedelta(seconds=10_900) if name == "stuck" else now - timedelta(hours=1)
        w.orders.put_orders([order(order_id=f"ord-{name}", program_id=pid, round_id="rnd-b", at=at, **fields)])
    doc = dashboard.program_dashboard(w.deps, pid)
    overdue = {o["order_id"]: o for o in doc["orders"]["overdue"]}
    assert set(overdue) == {"ord-late-delivery", "ord-late-verdict", "ord-stuck"}
    assert (
        overdue["ord-late-delivery"]["overdue_seconds"] == 1
        and overdue["ord-late-delivery"]["stage"] == "awaiting_delivery"
    )
    assert overdue["ord-late-verdict"]["overdue_seconds"] == 100
    assert overdue["ord-stuck"]["overdue_seconds"] == 10_900 - 10_860
    assert doc["orders"]["overdue"][0]["order_id"] == "ord-late-verdict"  # most overdue first
    assert doc["orders"]["overdue_rule_seconds"] == {
        "awaiting_delivery": 3660,
        "awaiting_verdict": 7200,
        "other_open": 10_860,
    }


def test_forecast_is_linear_on_the_spend_rate_and_says_when_funds_run_out() -> None:
    w, pid = _setup()  # funded at T0 (the first ledger line); the period ends at T0 + 20 days
    first, second = order(program_id=pid, round_id="r"), order(program_id=pid, round_id="r")
    w.orders.put_orders([first, second])
    w.ledger.reserve(pid, first.order_id, 40_000, "CNY", {})
    w.ledger.capture(pid, first.order_id, 40_000, "CNY")
    w.clock.advance(days=2)  # 40,000 spent in the 2 days since the first ledger line: 20,000 a day
    f = dashboard.program_dashboard(w.deps, pid)["forecast"]
    assert "linear" in f["method"]
    assert f["rate_per_day"] == pytest.approx(20_000)
    assert f["projected_spent_at_end"] == 40_000 + 18 * 20_000
    assert f["projected_exhausted_at"] is None  # 960,000 more lasts 48 days at this rate: beyond the period
    w.ledger.reserve(pid, second.order_id, 60_000, "CNY", {})
    w.ledger.capture(pid, second.order_id, 60_000, "CNY")
    w.clock.advance(days=-1)  # seen at T0 + 1 day: 100,000 a day, the other 900,000 run out 9 days later
    f = dashboard.program_dashboard(w.deps, pid)["forecast"]
    assert f["rate_per_day"] == pytest.approx(100_000)
    assert datetime.fromisoformat(f["projected_exhausted_at"]) == T0 + timedelta(days=1 + 9)


def test_burn_down_keeps_at_most_max_points_and_ends_on_the_exact_balance() -> None:
    w, pid = _setup()
    for i in range(300):
        o = order(program_id=pid, round_id="r")
        w.orders.put_orders([o])
        w.ledger.reserve(pid, o.order_id, 100 + i, "CNY", {})
        w.clock.advance(seconds=1)
    pts = dashboard.burn_down(w.ledger.journal(pid), max_points=50)
    assert len(pts) == 50
    assert pts[-1]["reserved"] == sum(100 + i for i in range(300))
    assert [p["reserved"] for p in pts] == sorted(p["reserved"] for p in pts)


def test_the_report_is_one_self_contained_file_with_the_reconciliation_and_the_estimate(tmp_path: Any) -> None:
    from testbuy.report import SVG_NAMESPACE, external_references, write_report

    w, pid = _setup()
    _round(w, pid, "rnd-a")
    _settled(w, pid, "rnd-a", "bags", VerdictKind.COUNTERFEIT, 1234, "lab-1", hours=2.0)
    _settled(w, pid, "rnd-a", "bags", VerdictKind.AUTHENTIC, 999, "lab-1", hours=2.0)
    doc = dashboard.program_dashboard(w.deps, pid)
    # a hostile programme name must not end the data's <script> element
    doc["program"]["name"] = "</script><script>alert(1)</script>"
    path = write_report(doc, tmp_path / "r.html")
    html = path.read_text()
    assert external_references(html) == []
    assert re.findall(r"https?://[^\s\"'<>)]*", html) == [SVG_NAMESPACE]  # a namespace name, never fetched
    assert "<script>alert(1)" not in html
    embedded = re.search(r'<script id="embedded-data" type="application/json">(.*?)</script>', html, re.S)
    assert embedded is not None
    data = json.loads(embedded.group(1))
    assert data == json.loads(json.dumps(doc))
    assert (
        data["reconciliation"]["reconciled"] is True and data["reconciliation"]["stored"]["spent"] == 1234 + 999 - 617
    )
    assert data["estimates"]["combined"]["method"] and data["estimates"]["combined"]["ci_high"] is not None
    assert data["policy_version"] == doc["policy_version"]
    # the drawing code is the page's own, inline
    from chalicelib.web import asset

    assert asset("dashboard.js") in html and asset("dashboard.css") in html
    assert external_references("<img src=x>") and external_references("see https://example.org")
    assert external_references("a { background: url(x.png) }") and not external_references('<link href="data:,">')


def test_an_answer_is_json_with_a_model_or_a_media_type_without_one() -> None:
    from chalicelib.api.declare import Ok
    from chalicelib.api.schemas import Health

    assert Ok(200, "page", None, media_type="text/html").model is None
    with pytest.raises(TypeError):
        Ok(200, "neither", None)
    with pytest.raises(TypeError):
        Ok(200, "both", Health, media_type="text/html")


def test_the_page_offers_the_hosted_ui_only_when_one_is_configured_and_escapes_it() -> None:
    from chalicelib.web import page

    assert 'data-signin=""' in page()
    html = page(signin_url='https://d.auth.example/login?a=1&b="><script>x</script>')
    assert 'data-signin="https://d.auth.example/login?a=1&amp;b=&quot;&gt;&lt;script&gt;x&lt;/script&gt;"' in html


def test_the_template_wires_the_hosted_ui_once_the_dashboard_url_is_known() -> None:
    from testbuy.infra import StackDescription
    from testbuy.packaging import HAS_DASHBOARD_URL, WEB_CLIENT_ID, render_fragment

    fragment = render_fragment(StackDescription.load("prod"))
    client = fragment["Resources"][WEB_CLIENT_ID]
    assert client["Condition"] == HAS_DASHBOARD_URL
    assert client["Properties"]["CallbackURLs"] == [{"Ref": "DashboardUrl"}]
    assert client["Properties"]["AllowedOAuthFlows"] == ["implicit"]
    assert fragment["Parameters"]["DashboardUrl"]["Default"] == ""
    assert fragment["Conditions"][HAS_DASHBOARD_URL] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "DashboardUrl"}, ""]}]}
    env = fragment["Globals"]["Function"]["Environment"]["Variables"]["TESTBUY_SIGNIN_URL"]
    assert env["Fn::If"][0] == HAS_DASHBOARD_URL and env["Fn::If"][2] == ""
    assert "response_type=token" in env["Fn::If"][1]["Fn::Sub"]
    # no cycle: neither the client nor the environment names the API (only the output does)
    assert "RestAPI" not in json.dumps(client) + json.dumps(env)
    assert "RestAPI" in json.dumps(fragment["Outputs"]["DashboardUrl"])
