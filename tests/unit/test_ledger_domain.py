"""Pure ledger rules: amount validation, journal replay, fingerprints, threshold events, CSV output, settings."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest

from chalicelib.domain.errors import InvalidInput
from chalicelib.domain.events import Envelope
from chalicelib.domain.ledger import (
    Balance,
    JournalEntry,
    Op,
    check_amount,
    check_currency,
    check_subject,
    fingerprint,
    op_key,
    replay,
    total,
)
from chalicelib.domain.models import Program, Timeouts
from chalicelib.services.deps import Deps
from chalicelib.services.finance import report_csv
from chalicelib.services.programs import check_thresholds


def line(op: Op, subject: str, at: str, **d: int) -> JournalEntry:
    return JournalEntry(
        program_id="p",
        key=op_key(subject, op),
        op=op,
        subject=subject,
        d_available=d.get("available", 0),
        d_reserved=d.get("reserved", 0),
        d_captured=d.get("captured", 0),
        d_recovered=d.get("recovered", 0),
        d_funded=d.get("funded", 0),
        at=at,
        attributes={},
    )


@pytest.mark.parametrize("bad", [0, -1, -(2**63), 10**15 + 1, 2**53 + 1, 2**63, 2**64, True, False, 1.5, "5", None])
def test_check_amount_refuses_what_no_ledger_should_book(bad: object) -> None:
    with pytest.raises(InvalidInput) as info:
        check_amount("amount", bad)
    assert info.value.details[0]["field"] == "amount"


@pytest.mark.parametrize("good", [1, 99, 10**15])
def test_check_amount_accepts_positive_integers_up_to_the_maximum(good: int) -> None:
    assert check_amount("amount", good) == good


@pytest.mark.parametrize("bad", ["cny", "CN", "CNYY", "", 156, None])
def test_check_currency(bad: object) -> None:
    with pytest.raises(InvalidInput):
        check_currency(bad)
    assert check_currency("CNY") == "CNY"


@pytest.mark.parametrize("bad", ["", "x" * 201, 5, None])
def test_check_subject(bad: object) -> None:
    with pytest.raises(InvalidInput):
        check_subject("order_id", bad)


def test_replay_sums_the_journal_and_checks_the_result() -> None:
    lines = [
        line(Op.FUND, "f1", "2025-01-01T00:00:00", funded=100, available=100),
        line(Op.RESERVE, "o1", "2025-01-01T00:00:01", available=-60, reserved=60),
        line(Op.CAPTURE, "o1", "2025-01-01T00:00:02", available=10, reserved=-60, captured=50),
        line(Op.RECOVER, "o1", "2025-01-01T00:00:03", available=20, recovered=20),
    ]
    assert replay(lines) == Balance(funded=100, available=70, reserved=0, captured=50, recovered=20)
    assert replay(lines).spent == 30


def test_replay_tolerates_clock_order_that_differs_from_commit_order() -> None:
    # The reservation's writer stamped it before the release it needed had committed: out of order, but sound.
    lines = [
        line(Op.FUND, "f1", "2025-01-01T00:00:00", funded=10, available=10),
        line(Op.RESERVE, "o1", "2025-01-01T00:00:01", available=-10, reserved=10),
        line(Op.RESERVE, "o2", "2025-01-01T00:00:02", available=-10, reserved=10),
        line(Op.RELEASE, "o1", "2025-01-01T00:00:03", available=10, reserved=-10),
    ]
    assert replay(lines) == Balance(funded=10, available=0, reserved=10)


def test_replay_rejects_an_unbalanced_line_and_a_negative_result() -> None:
    with pytest.raises(AssertionError, match="unbalanced"):
        replay([line(Op.FUND, "f", "t", funded=10, available=11)])
    with pytest.raises(AssertionError):
        replay([line(Op.RESERVE, "o", "t", available=-5, reserved=5)])
    assert total([line(Op.RESERVE, "o", "t", available=-5, reserved=5)]).available == -5


def test_balance_check_catches_a_broken_invariant() -> None:
    Balance(funded=10, available=4, reserved=3, captured=5, recovered=2).check()
    with pytest.raises(AssertionError):
        Balance(funded=10, available=4, reserved=3, captured=5, recovered=1).check()


def test_fingerprints_separate_arguments_and_ignore_key_order() -> None:
    a = fingerprint(Op.RESERVE, "o1", {"amount": 5, "currency": "CNY"})
    assert a == fingerprint(Op.RESERVE, "o1", {"currency": "CNY", "amount": 5})
    assert a != fingerprint(Op.RESERVE, "o1", {"amount": 6, "currency": "CNY"})
    assert a != fingerprint(Op.CAPTURE, "o1", {"amount": 5, "currency": "CNY"})
    assert a != fingerprint(Op.RESERVE, "o2", {"amount": 5, "currency": "CNY"})


# ------------------------------------------------------------------------------------------------ thresholds


class _Marks:
    def __init__(self) -> None:
        self.marked: set[float] = set()

    def threshold_marked(self, program_id: str, threshold: float) -> bool:
        return threshold in self.marked

    def mark_threshold(self, program_id: str, threshold: float) -> bool:
        if threshold in self.marked:
            return False
        self.marked.add(threshold)
        return True


class _Events:
    def __init__(self) -> None:
        self.published: list[Envelope] = []

    def publish(self, events: Any) -> None:
        self.published.extend(events)


class _Clock:
    def now(self) -> datetime:
        return datetime(2025, 3, 1, tzinfo=UTC)


def _deps(thresholds: tuple[float, ...]) -> tuple[Deps, _Events]:
    events = _Events()
    d = Deps(
        clock=_Clock(),
        ids=cast(Any, None),
        programs=cast(Any, None),
        rounds=cast(Any, None),
        orders=cast(Any, None),
        custody=cast(Any, None),
        personas=cast(Any, None),
        ledger=cast(Any, _Marks()),
        events=events,
        workflow=cast(Any, None),
        marketplace=cast(Any, None),
        evidence=cast(Any, None),
        metrics=cast(Any, None),
        budget_thresholds=thresholds,
    )
    return d, events


PROGRAM = Program(
    program_id="prg-1",
    name="p",
    currency="CNY",
    budget=1000,
    period_start=datetime(2025, 1, 1, tzinfo=UTC),
    period_end=datetime(2025, 12, 31, tzinfo=UTC),
    round_size=10,
    exploration_share=0.1,
    blend=0.5,
    labs=["lab-1"],
    timeouts=Timeouts(),
    created_at=datetime(2025, 1, 1, tzinfo=UTC),
)


def _committed(c: int) -> Balance:
    return Balance(funded=1000, available=1000 - c, reserved=c)


def test_each_threshold_is_published_once_when_first_crossed() -> None:
    d, events = _deps((0.5, 0.8, 1.0))
    assert check_thresholds(d, PROGRAM, _committed(499), "c") == []
    assert check_thresholds(d, PROGRAM, _committed(500), "c") == [0.5]
    assert check_thresholds(d, PROGRAM, _committed(700), "c") == []
    assert check_thresholds(d, PROGRAM, _committed(1000), "c") == [0.8, 1.0]
    assert check_thresholds(d, PROGRAM, _committed(1000), "c") == []
    published = [(e.detail_type, e.detail["data"]["threshold"]) for e in events.published]
    assert published == [
        ("BudgetThresholdCrossed", 0.5),
        ("BudgetThresholdCrossed", 0.8),
        ("BudgetThresholdCrossed", 1.0),
    ]
    assert len({e.detail["metadata"]["event_id"] for e in events.published}) == 3


def test_configured_thresholds_are_the_ones_used() -> None:
    d, events = _deps((0.25,))
    assert check_thresholds(d, PROGRAM, _committed(300), "c") == [0.25]
    assert check_thresholds(d, PROGRAM, _committed(1000), "c") == []
    assert len(events.published) == 1


def test_no_threshold_event_without_funds() -> None:
    d, events = _deps((0.5,))
    assert check_thresholds(d, PROGRAM, Balance(), "c") == []
    assert events.published == []


# ------------------------------------------------------------------------------------------------ CSV


def test_csv_has_a_total_row_and_neutralises_formulas() -> None:
    report = {
        "group_by": "seller",
        "currency": "CNY",
        "rows": [
            {"group": "=HYPERLINK(1)", "funded": 0, "reserved": 1, "captured": 2, "recovered": 0, "spent": 2},
            {"group": "s-2", "funded": 0, "reserved": 0, "captured": 3, "recovered": 1, "spent": 2},
        ],
        "totals": {"funded": 0, "reserved": 1, "captured": 5, "recovered": 1, "spent": 4},
    }
    lines = report_csv(report).splitlines()
    assert lines[0] == "seller,funded,reserved,captured,recovered,spent,currency"
    assert lines[1].startswith("'=HYPERLINK(1),")
    assert lines[-1] == "TOTAL,0,1,5,1,4,CNY"
