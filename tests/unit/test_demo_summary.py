"""The demo summary's risk-model part: figures with intervals (or why not), and the rendered table shows them."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.console import Console

from chalicelib.domain import model_quality
from testbuy import demo


def _section(y: list[int], s: list[float]) -> dict[str, Any]:
    q = np.full(len(y), 0.2)
    out = model_quality.assess(np.array(y), np.array(s), q, 0.3, population=100, flagged=10).as_dict()
    return {"rounds": 1, "population": 100, "flagged": 10, **out}


def _summary(risk_model: dict[str, Any]) -> dict[str, Any]:
    return {
        "currency": "CNY",
        "ledger": {"funded": 1, "reserved": 0, "spent": 1, "recovered": 0, "available": 0, "reconciled": True},
        "orders": {"placed": 1, "delivered": 1, "verdicts": 1, "stuck": 0, "delivery_failures": 0, "skipped_budget": 0},
        "counterfeit_hits": 1,
        "hit_rate": 0.5,
        "estimate": {"prevalence": 0.05, "ci_low": 0.01, "ci_high": 0.1, "true_prevalence": 0.04},
        "lift_over_uniform": 2.0,
        "refund_rate": 0.1,
        "enforcement_actions": {},
        "events_received": 3,
        "wall_seconds": 1.0,
        "orders_per_second": 1.0,
        "risk_model": demo._risk_model(risk_model),
    }


def test_the_summary_shows_the_model_figures_with_intervals() -> None:
    part = demo._risk_model(_section([1, 0, 0, 1, 0], [0.6, 0.1, 0.35, 0.4, 0.05]))
    assert part["exploration_units"] == 5 and part["fakes"] == 2
    assert part["auc"]["estimate"] == 1.0 and part["auc"]["ci_low"] < 1.0
    assert part["top_decile_precision"]["n"] == 3  # 0.6, 0.35, 0.4 at or above 0.3
    assert all(b["n"] > 0 for b in part["reliability"])  # empty bins are left out of the summary
    con = Console(record=True, width=200)
    demo._render(con, _summary(_section([1, 0, 0, 1, 0], [0.6, 0.1, 0.35, 0.4, 0.05])))
    text = con.export_text()
    assert "risk model AUC" in text and "1.0000" in text and "precision of the top risk decile" in text


def test_the_summary_says_why_a_figure_is_missing() -> None:
    con = Console(record=True, width=200)
    demo._render(con, _summary(_section([0, 0], [0.1, 0.4])))
    assert "no counterfeit among the exploration units" in con.export_text()


def test_the_table_shows_the_consequences_when_the_summary_has_them() -> None:
    s = _summary(_section([1, 0, 0, 1, 0], [0.6, 0.1, 0.35, 0.4, 0.05]))
    s["retest"] = {
        "retests_requested": 7,
        "overdue_escalations": 11,
        "concluded_after_retest": 15,
        "stayed_inconclusive": 3,
    }
    s["rings"] = {"count": 2, "sizes": [4, 2], "ring_bans": 5}
    s["leads"] = {
        "funnel": {"leads": 4, "cases": 3, "arrests": 2, "convictions": 1},
        "by_status": {"submitted": 0, "case_opened": 1, "arrests": 1, "conviction": 1, "closed_without_action": 1},
    }
    s["appeals"] = {"filed": 2, "overturned": 1, "upheld": 1, "rescinds_received": 6}
    s["evidence_package"] = {"path": "/tmp/p.zip", "verified": "yes"}
    con = Console(record=True, width=200)
    demo._render(con, s)
    text = con.export_text()
    for row in (
        "re-tests requested (inconclusive)                  │ 7 ",
        "overdue labs: missed deadlines (re-assigned)       │ 11 ",
        "re-tested samples concluded / stayed inconclusive  │ 15 / 3 ",
        "rings (sizes) / ring bans                          │ 2 (4, 2) / 5 ",
        "leads -> cases -> arrests -> convictions           │ 4 -> 3 -> 2 -> 1 ",
        "appeals filed / overturned / upheld                │ 2 / 1 / 1 ",
        "rescinds received by the subscriber                │ 6 ",
        "evidence package (verified)                        │ /tmp/p.zip (verified: yes)",
    ):
        assert row in text, row
    assert "case_opened=1, arrests=1, conviction=1, closed_without_action=1" in text
    assert "submitted=0" not in text  # empty stages are left out of the status line
