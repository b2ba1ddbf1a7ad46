"""Appeals against a lab verdict (issue 10 item 2): the status table, the decision table and the rules of filing.

Pure: no I/O, no boto3. The service (``chalicelib.services.appeals``) names an *event*; the repository asks
:func:`transition` for the target and writes conditionally on the from-statuses (like ``lifecycle`` for orders), so
a retried task or a late lab can never move an appeal along a path this table does not allow.

Status table::

    filed --assign_retest--> retest_assigned --uphold--> upheld
                                              --overturn--> overturned
    filed | retest_assigned --expire--> expired          (the decision deadline passed: the original verdict stands)

Decision table (:func:`decide`), original verdict x re-test verdict (the re-test is at another lab):

- re-test ``authentic``: **overturned**, the effective verdict becomes ``authentic``;
- re-test ``inconclusive``: **upheld**: a conclusive verdict is only displaced by another conclusive one (no third
  lab is asked; the seller may not appeal twice);
- re-test the same suspect kind: **upheld**;
- original ``counterfeit``, re-test ``not_as_described``: **overturned**, the effective verdict becomes
  ``not_as_described`` (the counterfeit actions and the strike go; the item stays suspect, the refund stays);
- original ``not_as_described``, re-test ``counterfeit``: **upheld**: an appeal never worsens the appellant's
  position (the re-test's verdict is kept on the appeal, nothing else changes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import Field

from chalicelib.domain.errors import InvalidState
from chalicelib.domain.models import Identifier, Lenient, Sha256Hex, Strict, VerdictIn, VerdictKind


class AppealStatus(StrEnum):
    FILED = "filed"
    RETEST_ASSIGNED = "retest_assigned"
    UPHELD = "upheld"
    OVERTURNED = "overturned"
    EXPIRED = "expired"


class AppealEvent(StrEnum):
    ASSIGN_RETEST = "assign_retest"
    UPHOLD = "uphold"
    OVERTURN = "overturn"
    EXPIRE = "expire"


A = AppealStatus
AE = AppealEvent

RULES: dict[AppealEvent, tuple[frozenset[AppealStatus], AppealStatus]] = {
    AE.ASSIGN_RETEST: (frozenset({A.FILED}), A.RETEST_ASSIGNED),
    AE.UPHOLD: (frozenset({A.RETEST_ASSIGNED}), A.UPHELD),
    AE.OVERTURN: (frozenset({A.RETEST_ASSIGNED}), A.OVERTURNED),
    AE.EXPIRE: (frozenset({A.FILED, A.RETEST_ASSIGNED}), A.EXPIRED),
}
TRANSITIONS: dict[tuple[AppealStatus, AppealEvent], AppealStatus] = {
    (source, event): target for event, (sources_, target) in RULES.items() for source in sources_
}
#: No event applies any more: the appeal is decided (or expired).
TERMINAL = frozenset(s for s in A if not any(src == s for src, _ in TRANSITIONS))
DECIDED = frozenset({A.UPHELD, A.OVERTURNED})


def sources(event: AppealEvent) -> frozenset[AppealStatus]:
    return RULES[event][0]


def target(event: AppealEvent) -> AppealStatus:
    return RULES[event][1]


def transition(status: AppealStatus, event: AppealEvent) -> AppealStatus:
    """The status after ``event``; ``InvalidState`` if the table does not allow it."""
    try:
        return TRANSITIONS[(status, event)]
    except KeyError:
        raise InvalidState(
            f"an appeal that is {status.value} cannot take event {event.value}",
            details=[{"field": "status", "status": status.value, "event": event.value}],
        ) from None


def allows(status: AppealStatus, event: AppealEvent) -> bool:
    return (status, event) in TRANSITIONS


# ------------------------------------------------------------------------------------------------ decision


class Outcome(StrEnum):
    UPHELD = "upheld"
    OVERTURNED = "overturned"


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    #: the order's verdict from now on (the original one when upheld)
    effective: VerdictKind

    @property
    def event(self) -> AppealEvent:
        return AE.OVERTURN if self.outcome is Outcome.OVERTURNED else AE.UPHOLD


def appealable(verdict: VerdictKind) -> bool:
    """Only a conclusive suspect verdict can be appealed: ``authentic`` caused no action, ``inconclusive`` none either
    (and is the re-test workflow's business, not the seller's)."""
    return verdict.suspect


def decide(original: VerdictKind, retest: VerdictKind) -> Decision:
    """The decision table of the module docstring."""
    if not appealable(original):
        raise InvalidState(f"a {original.value} verdict is not appealable", details=[{"field": "verdict"}])
    if retest is VerdictKind.AUTHENTIC:
        return Decision(Outcome.OVERTURNED, VerdictKind.AUTHENTIC)
    if original is VerdictKind.COUNTERFEIT and retest is VerdictKind.NOT_AS_DESCRIBED:
        return Decision(Outcome.OVERTURNED, VerdictKind.NOT_AS_DESCRIBED)
    return Decision(Outcome.UPHELD, original)


# ------------------------------------------------------------------------------------------------ filing rules

#: Programme defaults (``Timeouts.appeal_window_seconds`` / ``appeal_decision_seconds`` override them).
DEFAULT_WINDOW = timedelta(days=30)
DEFAULT_DECISION = timedelta(days=30)
MAX_STATEMENT = 4000


def appeal_id_for(order_id: str) -> str:
    """One appeal per order: the id is derived from the order id, so a second filing finds the first (and the
    appeal's execution, named by this id, is started once)."""
    return "apl-" + hashlib.sha256(f"appeal|{order_id}".encode()).hexdigest()[:24]


def window_closes(verdict_at: datetime, window: timedelta) -> datetime:
    return verdict_at + window


def retest_lab(labs: list[str], first_lab: str, appeal_id: str, tried: Sequence[str] = ()) -> str | None:
    """A lab of the programme that did NOT give the appealed verdict, chosen reproducibly from the appeal id (spreads
    appeals across the remaining labs): one that never examined the sample (``tried``: the labs of earlier re-tests)
    if any is left, else any other; None when the programme has no other lab."""
    others = sorted({lab for lab in labs if lab != first_lab})
    fresh = [lab for lab in others if lab not in set(tried)]
    others = fresh or others
    if not others:
        return None
    return others[int(hashlib.sha256(appeal_id.encode()).hexdigest()[:8], 16) % len(others)]


# ------------------------------------------------------------------------------------------------ records


class AppealIn(Strict):
    """A seller's appeal, filed by the marketplace or enforcement."""

    order_id: Identifier
    statement: str = Field(min_length=1, max_length=MAX_STATEMENT, description="the seller's statement")
    evidence: list[Sha256Hex] = Field(
        default_factory=list, max_length=20, description="SHA-256 of files stored with POST /appeals/evidence"
    )


class RetestVerdictIn(VerdictIn):
    """The re-test lab's verdict on an appeal's sample: the same court-grade record as any lab verdict (a conclusive
    one names method, analyst, accreditation, confidence and the uploaded lab report)."""


class RetestVerdict(Lenient):
    appeal_id: str
    lab_id: str
    verdict: VerdictKind
    notes: str = ""
    evidence: list[str] = Field(default_factory=list)
    recorded_at: datetime
    recorded_by: str
    method: str | None = None
    analyst: str | None = None
    accreditation: str | None = None
    confidence: float | None = None
    report_sha256: str | None = None


class Appeal(Lenient):
    """An appeal as stored (the task token of its waiting execution is stored beside it and never part of this)."""

    appeal_id: str
    program_id: str
    order_id: str
    round_id: str
    seller_id: str
    filed_by: str
    filed_by_subject: str
    statement: str
    evidence: list[str] = Field(default_factory=list)
    original_verdict: VerdictKind
    original_lab: str
    verdict_at: datetime
    retest_lab: str
    status: AppealStatus
    filed_at: datetime
    deadline: datetime
    retest_verdict: VerdictKind | None = None
    outcome: str | None = None
    effective_verdict: VerdictKind | None = None
    decided_at: datetime | None = None
    updated_at: datetime

    def same_filing(self, req: AppealIn) -> bool:
        return (self.order_id, self.statement, tuple(self.evidence)) == (
            req.order_id,
            req.statement,
            tuple(req.evidence),
        )
