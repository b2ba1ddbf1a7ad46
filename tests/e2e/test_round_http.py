"""One whole round over HTTP on the embedded local stack, as ``testbuy demo`` runs a programme but smaller: a seeded
simulated marketplace (transient 503s, refusals, lost parcels, signed delivery webhooks), two simulated labs posting
verdicts over the API, and the enforcement subscriber reading the bus's SQS queues."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from chalicelib.domain.custody import verify_chain
from chalicelib.domain.models import OrderStatus
from testbuy.client import ApiClient
from tests.e2e.completed_round import SELLERS, Outcome

# the round itself is the session's shared ``completed_round`` (tests/e2e/completed_round.py)


@pytest.fixture()
def outcome(completed_round: Outcome) -> Outcome:
    return completed_round


def test_round_completes_with_nothing_stuck(outcome: Outcome) -> None:
    view = outcome.view
    assert view["status"] == "completed"
    assert view["population"] == SELLERS
    assert 3 <= view["sampled"] == view["settled"]
    summary = view["summary"]
    assert summary["stuck"] == 0 and summary["placed"] >= 1 and summary["conclusive"] >= 1
    terminal = {s.value for s in (OrderStatus.SETTLED, OrderStatus.DELIVERY_FAILED, OrderStatus.REFUSED)}
    assert set(view["orders_by_status"]) <= terminal | {"skipped_budget", "failed"}
    assert sum(view["orders_by_status"].values()) == view["sampled"]
    assert outcome.market.webhook_failures == 0
    assert [e for lab in outcome.labs for e in lab.errors] == []
    # one verdict per sample, and one more per re-test (an inconclusive verdict sends the sample to the other lab)
    retests = summary["retest"]["retests_requested"]
    assert sum(lab.verdicts for lab in outcome.labs) == summary["verdicts"] + retests
    assert sum(lab.retests for lab in outcome.labs) == retests


def test_ledger_reconciles_and_the_spend_report_matches_the_balances(outcome: Outcome) -> None:
    recon = outcome.fin.call("GET", f"/programs/{outcome.pid}/reconciliation")
    assert recon["reconciled"] is True, recon
    bal = recon["stored"]
    assert bal["reserved"] == 0
    assert bal["available"] + bal["reserved"] + bal["captured"] - bal["recovered"] == bal["funded"]
    assert bal["captured"] > 0
    for group_by in ("program", "round", "category", "seller"):
        spend = outcome.fin.call("GET", f"/programs/{outcome.pid}/spend?group_by={group_by}")
        totals = spend["totals"]
        assert spend["reconciled"] is True
        for key in ("funded", "reserved", "captured", "recovered"):
            assert totals[key] == bal[key], (group_by, key)
            assert sum(row[key] for row in spend["rows"]) == totals[key]
        assert totals["spent"] == bal["captured"] - bal["recovered"]
    by_round = outcome.fin.call("GET", f"/programs/{outcome.pid}/spend?group_by=round")["rows"]
    row = next(r for r in by_round if r["group"] == outcome.rid)
    # the round's net spend is what the round's orders cost (refunds of counterfeits deducted)
    assert row["spent"] == outcome.view["summary"]["spent"]


def test_metrics_report_an_estimate_inside_its_interval(outcome: Outcome) -> None:
    metrics = outcome.pm.call("GET", f"/programs/{outcome.pid}/metrics")
    est = metrics["estimate"]
    assert est is not None
    assert 0.0 <= est["ci_low"] <= est["prevalence"] <= est["ci_high"] <= 1.0
    assert est["n"] == metrics["conclusive"] >= 1
    assert metrics["rounds"] == 1 and metrics["sampled"] == outcome.view["sampled"]
    assert metrics["counterfeit_hits"] == outcome.view["summary"]["counterfeit_hits"]
    # the risk model measured on the round's exploration units (the answer's shape is checked by its declaration)
    model = metrics["risk_model"]
    assert model["rounds"] == 1 and model["population"] == outcome.view["population"]
    assert model["units"] <= metrics["conclusive"] and model["units"] == model["fakes"] + model["genuine"]
    assert model["brier"]["n"] == model["units"]
    assert (model["brier"]["estimate"] is None) == (model["units"] == 0)


def test_events_reach_the_enforcement_subscriber(outcome: Outcome) -> None:
    sub = outcome.subscriber
    assert sub.rejected == 0
    assert sub.all_events["RoundCompleted"] >= 1
    assert sub.all_events["OrderPlaced"] >= outcome.view["summary"]["placed"]
    hits = outcome.view["summary"]["counterfeit_hits"]
    assert sub.detail_types["CounterfeitConfirmed"] >= hits
    if hits:
        assert sub.actions["take_down_listing"] >= hits


def test_custody_chain_of_a_settled_sample_verifies_and_a_tampered_copy_does_not(
    outcome: Outcome, token_for: Any
) -> None:
    from chalicelib.bootstrap import deps

    d = deps()
    settled = [
        o for o in d.orders.list_round_orders(outcome.rid) if o.status is OrderStatus.SETTLED and o.verdict is not None
    ]
    assert settled, "no settled sample with a verdict"
    order = settled[0]
    report = outcome.pm.call("GET", f"/samples/{order.order_id}/custody")
    assert report["valid"] is True and report["length"] >= 2 and report["first_bad_seq"] is None
    assert (report["anchored_length"], report["anchored_head"]) == (report["length"], report["head"])
    assert [e["seq"] for e in report["entries"]] == list(range(report["length"]))
    for prev, entry in zip(report["entries"], report["entries"][1:], strict=False):
        assert entry["prev_mac"] == prev["mac"]
    # who logged each entry: the forwarding task first, then the lab's authenticated principal
    actors = [e["actor"] for e in report["entries"]]
    assert actors[0] == {"subject": "system:forward_to_lab", "role": "system", "lab_id": None}
    assert all(a["role"] == "lab" and a["lab_id"] == order.lab_id for a in actors[1:])
    # another lab may not read it, and learns nothing: the answer of an unknown sample (404)
    other = ApiClient(outcome.pm.base_url, token_for("lab", "lab-e2e-nobody"))
    assert other.request("GET", f"/samples/{order.order_id}/custody")[0] == 404

    key = d.custody_key
    chain, anchor = d.custody.snapshot(order.order_id)
    assert verify_chain(chain, key, anchor).valid and verify_chain(chain, key, anchor).head == report["head"]
    edited = list(chain)
    edited[1] = dataclasses.replace(chain[1], condition="seal broken")
    bad = verify_chain(edited, key, anchor)
    assert not bad.valid and bad.first_bad_seq == 1 and bad.reason == "mac"
    assert verify_chain(chain[:-1], key, anchor).first_bad_seq == len(chain) - 1  # a trimmed tail
    assert verify_chain([chain[1], chain[0], *chain[2:]], key, anchor).first_bad_seq == 0  # a reordering
