"""Leads: the lifecycle table walked whole, the estimator, the funnel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from chalicelib.domain.errors import InvalidState
from chalicelib.domain.leads import (
    TERMINAL,
    TRANSITIONS,
    Lead,
    LeadStatus,
    check_transition,
    estimate_counterfeit_sales,
    funnel,
    lead_id,
)
from chalicelib.domain.models import VerdictKind

L = LeadStatus
T0 = datetime(2026, 3, 1, tzinfo=UTC)
EXPECTED = {
    (L.SUBMITTED, L.CASE_OPENED),
    (L.SUBMITTED, L.CLOSED_WITHOUT_ACTION),
    (L.CASE_OPENED, L.ARRESTS),
    (L.CASE_OPENED, L.CLOSED_WITHOUT_ACTION),
    (L.ARRESTS, L.CONVICTION),
    (L.ARRESTS, L.CLOSED_WITHOUT_ACTION),
}


@pytest.mark.parametrize("current", list(L))
@pytest.mark.parametrize("target", list(L))
def test_the_whole_table(current: LeadStatus, target: LeadStatus) -> None:
    if current is target:
        assert check_transition(current, target) is False  # a repeat: idempotent
    elif (current, target) in EXPECTED:
        assert check_transition(current, target) is True
    else:
        with pytest.raises(InvalidState) as exc:
            check_transition(current, target)
        allowed = sorted(t.value for t in TRANSITIONS[current])
        assert exc.value.details[0]["allowed"] == allowed
        assert (str(allowed) if allowed else "none (final)") in exc.value.message


def test_terminal_and_open_stages() -> None:
    assert {L.CONVICTION, L.CLOSED_WITHOUT_ACTION} == TERMINAL
    # closed_without_action from every open stage, and from nowhere else
    assert {c for c, t in EXPECTED if t is L.CLOSED_WITHOUT_ACTION} == set(L) - TERMINAL
    assert {(c, t) for c, ts in TRANSITIONS.items() for t in ts} == EXPECTED


def test_lead_ids_are_deterministic_per_subject_and_rule() -> None:
    a = lead_id("p", "seller:s1", "large-counterfeit-sales")
    assert a == lead_id("p", "seller:s1", "large-counterfeit-sales")
    assert len({a, lead_id("p", "ring:s1", "large-counterfeit-sales"), lead_id("p", "seller:s1", "x")}) == 3


def at(y: int, m: int, d: int = 15) -> datetime:
    return datetime(y, m, d, tzinfo=UTC)


C, A, INC = VerdictKind.COUNTERFEIT, VerdictKind.AUTHENTIC, VerdictKind.INCONCLUSIVE


@pytest.mark.parametrize(
    ("sales", "buys", "expected"),
    [
        ({"2026-03": 1000}, [], 0),
        ({"2026-03": 1000}, [(A, at(2026, 3))], 0),
        # one counterfeit of one conclusive buy: the months around it, in full
        ({"2026-02": 100, "2026-03": 1000, "2026-04": 10, "2026-06": 99999}, [(C, at(2026, 3))], 1110),
        # inconclusive buys do not dilute the share
        ({"2026-03": 1000}, [(C, at(2026, 3)), (INC, at(2026, 3))], 1000),
        # one of three conclusive: a third, rounded down
        ({"2026-03": 1000}, [(C, at(2026, 3)), (A, at(2026, 3)), (A, at(2026, 3))], 333),
        # two counterfeits with overlapping windows: each month once; across a year end
        ({"2025-12": 7, "2026-01": 11, "2026-02": 13}, [(C, at(2026, 1)), (C, at(2025, 12))], 31),
        # sales far from any counterfeit count for nothing
        ({"2027-01": 10**9}, [(C, at(2026, 1))], 0),
    ],
)
def test_estimator(sales: dict[str, int], buys: list[tuple[VerdictKind, datetime]], expected: int) -> None:
    assert estimate_counterfeit_sales(sales, buys) == expected


def lead(status: LeadStatus, *steps: tuple[LeadStatus, float]) -> Lead:
    history = [{"status": "submitted", "at": T0.isoformat()}]
    history += [{"status": s.value, "at": (T0 + timedelta(days=d)).isoformat()} for s, d in steps]
    return Lead(
        program_id="p", lead_id=f"l{len(steps)}{status}", rule="r", currency="EUR", status=status,
        history=history, created_at=T0, updated_at=T0,
    )  # fmt: skip


def test_funnel_counts_rates_and_time_in_stage() -> None:
    leads = [
        lead(L.SUBMITTED),
        lead(L.CLOSED_WITHOUT_ACTION, (L.CLOSED_WITHOUT_ACTION, 5)),
        lead(L.CASE_OPENED, (L.CASE_OPENED, 2)),
        lead(L.CONVICTION, (L.CASE_OPENED, 4), (L.ARRESTS, 10), (L.CONVICTION, 40)),
    ]
    f = funnel(leads)
    assert (f["leads"], f["cases"], f["arrests"], f["convictions"]) == (4, 2, 1, 1)
    assert f["case_rate"] == 0.5 and f["conviction_rate_of_cases"] == 0.5 and f["conviction_rate_of_leads"] == 0.25
    assert f["by_status"]["submitted"] == 1 and f["by_status"]["conviction"] == 1
    sub = f["time_in_stage"]["submitted"]  # left after 5, 2 and 4 days; the open one does not count
    assert sub["count"] == 3 and sub["median_days"] == 4 and sub["mean_days"] == pytest.approx(11 / 3)
    assert f["time_in_stage"]["case_opened"]["median_days"] == 6
    assert f["time_in_stage"]["arrests"]["mean_seconds"] == 30 * 86400
    assert f["time_in_stage"]["conviction"]["count"] == 0
    empty = funnel([])
    assert empty["leads"] == 0 and empty["case_rate"] is None
