"""Law-enforcement leads with a life (issue 10 item 4): the sales feed's input, the counterfeit-sales estimator, the
lead's lifecycle table, and the funnel metrics. Pure: no storage, no clock.

Lifecycle (the only moves; ``tests/unit/test_leads_domain.py`` walks the table)::

    submitted -> case_opened -> arrests -> conviction
        \\____________\\______________\\____-> closed_without_action

``conviction`` and ``closed_without_action`` are terminal. Asking for the status a lead already has is a no-op
(a repeated update); any other move not in the table is refused, naming the allowed ones.
"""

from __future__ import annotations

import hashlib
import statistics
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field, StrictInt

from chalicelib.domain.errors import InvalidState
from chalicelib.domain.models import Identifier, Lenient, Strict, VerdictKind

PERIOD_PATTERN = r"^20[0-9]{2}-(0[1-9]|1[0-2])$"
MAX_SALES_ROWS = 500


class LeadStatus(StrEnum):
    SUBMITTED = "submitted"
    CASE_OPENED = "case_opened"
    ARRESTS = "arrests"
    CONVICTION = "conviction"
    CLOSED_WITHOUT_ACTION = "closed_without_action"


L = LeadStatus
TRANSITIONS: dict[LeadStatus, frozenset[LeadStatus]] = {
    L.SUBMITTED: frozenset({L.CASE_OPENED, L.CLOSED_WITHOUT_ACTION}),
    L.CASE_OPENED: frozenset({L.ARRESTS, L.CLOSED_WITHOUT_ACTION}),
    L.ARRESTS: frozenset({L.CONVICTION, L.CLOSED_WITHOUT_ACTION}),
    L.CONVICTION: frozenset(),
    L.CLOSED_WITHOUT_ACTION: frozenset(),
}
TERMINAL = frozenset(s for s, targets in TRANSITIONS.items() if not targets)
# the funnel's stages, in order: a lead "reached" a stage when its history holds it
FUNNEL = (L.SUBMITTED, L.CASE_OPENED, L.ARRESTS, L.CONVICTION)


def allowed(current: LeadStatus) -> list[str]:
    return sorted(s.value for s in TRANSITIONS[current])


def check_transition(current: LeadStatus, target: LeadStatus) -> bool:
    """True when the lead must move; False when it is already there (idempotent repeat); ``InvalidState`` naming the
    allowed statuses otherwise."""
    if target is current:
        return False
    if target not in TRANSITIONS[current]:
        names = allowed(current)
        raise InvalidState(
            f"a lead in status {current.value} cannot move to {target.value}; allowed: {names or 'none (final)'}",
            details=[{"field": "status", "current": current.value, "allowed": names}],
        )
    return True


# ------------------------------------------------------------------------------------------------ inputs


class SalesRowIn(Strict):
    seller_id: Identifier
    period: str = Field(pattern=PERIOD_PATTERN, description="calendar month, YYYY-MM")
    units: StrictInt = Field(ge=0, le=10**12)
    orders: StrictInt = Field(ge=0, le=10**12, description="at most units")
    gross_sales: StrictInt = Field(ge=0, le=10**15, description="minor units of the programme's currency")


class SalesFeedIn(Strict):
    """Marketplace sales per seller and month. Idempotent on (seller, period): a resend of the same figures changes
    nothing, different figures replace the month (a correction) and the estimates are recomputed."""

    currency: str = Field(pattern=r"^[A-Z]{3}$")
    rows: list[SalesRowIn] = Field(min_length=1, max_length=MAX_SALES_ROWS)


class LeadUpdateIn(Strict):
    status: LeadStatus = Field(strict=False)
    note: str = Field(default="", max_length=2000)


# ------------------------------------------------------------------------------------------------ records


class Lead(Lenient):
    program_id: str
    lead_id: str
    seller_id: str | None = None
    ring_id: str | None = None
    rule: str
    estimated_counterfeit_sales: int = 0
    currency: str
    order_ids: list[str] = Field(default_factory=list)
    evidence_hashes: list[str] = Field(default_factory=list)
    # the evidence package's manifest hash (chalicelib.services.leads.attach_package); None: none could be built
    package_sha256: str | None = None
    status: LeadStatus = LeadStatus.SUBMITTED
    history: list[dict[str, Any]] = Field(default_factory=list)  # {status, at, by, note}
    created_at: datetime
    updated_at: datetime
    version: int = 1


def lead_id(program_id: str, subject: str, rule: str) -> str:
    """One lead per (programme, seller or ring, rule): ``subject`` is ``seller:<id>`` or ``ring:<id>``."""
    return "lead-" + hashlib.sha256(f"{program_id}|{subject}|{rule}".encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------------------------ the estimator


def month_of(t: datetime) -> str:
    return f"{t.year:04d}-{t.month:02d}"


def _shift(period: str, months: int) -> str:
    y, m = int(period[:4]), int(period[5:7])
    k = y * 12 + (m - 1) + months
    return f"{k // 12:04d}-{k % 12 + 1:02d}"


def estimate_counterfeit_sales(
    gross_by_period: Mapping[str, int], testbuys: Sequence[tuple[VerdictKind, datetime]], around: int = 1
) -> int:
    """A seller's estimated counterfeit sales, minor units (docs/decisions.md "Rings and leads"):

    the gross sales of the months within ``around`` months of each confirmed counterfeit (each month counted once),
    times the share of the seller's conclusive test buys found counterfeit, rounded down. Zero without a confirmed
    counterfeit or without sales in those months. Integer arithmetic only."""
    conclusive = [(v, t) for v, t in testbuys if v.conclusive]
    fakes = [t for v, t in conclusive if v is VerdictKind.COUNTERFEIT]
    if not fakes:
        return 0
    months = {_shift(month_of(t), k) for t in fakes for k in range(-around, around + 1)}
    gross = sum(gross_by_period.get(m, 0) for m in months)
    return gross * len(fakes) // len(conclusive)


# ------------------------------------------------------------------------------------------------ the funnel


def _stats(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "median_days": None, "mean_days": None, "median_seconds": None, "mean_seconds": None}
    med, mean = statistics.median(values), statistics.fmean(values)
    return {
        "count": len(values),
        "median_seconds": med,
        "mean_seconds": mean,
        "median_days": med / 86400,
        "mean_days": mean / 86400,
    }


def funnel(leads: Iterable[Lead]) -> dict[str, Any]:
    """Leads -> cases -> arrests -> convictions (a lead counts in every stage its history reached), the rates
    between them, how many are in each status now, and the time spent in each stage (completed stays only: from
    entering a status to leaving it)."""
    leads = list(leads)
    reached = {s.value: 0 for s in FUNNEL}
    now_in = {s.value: 0 for s in LeadStatus}
    stays: dict[str, list[float]] = {s.value: [] for s in FUNNEL}
    for lead in leads:
        now_in[lead.status.value] += 1
        seen = {str(h["status"]) for h in lead.history}
        for s in FUNNEL:
            if s.value in seen:
                reached[s.value] += 1
        for cur, nxt in zip(lead.history, lead.history[1:], strict=False):
            if str(cur["status"]) in stays:
                a, b = datetime.fromisoformat(str(cur["at"])), datetime.fromisoformat(str(nxt["at"]))
                stays[str(cur["status"])].append((b - a).total_seconds())

    def rate(a: int, b: int) -> float | None:
        return a / b if b else None

    leads_n, cases, convictions = reached["submitted"], reached["case_opened"], reached["conviction"]
    return {
        "leads": leads_n,
        "cases": cases,
        "arrests": reached["arrests"],
        "convictions": convictions,
        "case_rate": rate(cases, leads_n),
        "conviction_rate_of_cases": rate(convictions, cases),
        "conviction_rate_of_leads": rate(convictions, leads_n),
        "by_status": now_in,
        "time_in_stage": {k: _stats(v) for k, v in stays.items()},
    }
