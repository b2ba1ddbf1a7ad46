"""The DynamoDB ledger, operation by operation, against the local stack's ledger table.

Every refusal is checked twice: the right error, and nothing changed (balance and journal as before)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from chalicelib.adapters.ledger_dynamodb import DynamoLedger
from chalicelib.adapters.system import SystemClock
from chalicelib.domain.errors import (
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    InvalidState,
    NotFound,
)
from chalicelib.domain.ledger import Balance, replay
from chalicelib.domain.money import MAX_MINOR_UNITS

ATTRS = {"round_id": "rnd-1", "category": "bags", "seller_id": "s-1"}


@pytest.fixture()
def ledger(local_stack: Any) -> DynamoLedger:
    return DynamoLedger(boto3.client("dynamodb"), os.environ["TESTBUY_LEDGER_TABLE"], SystemClock())


@pytest.fixture()
def program(ledger: DynamoLedger) -> Callable[..., str]:
    def make(funds: int = 1000, cap: int | None = None, currency: str = "CNY") -> str:
        pid = f"prg-{uuid.uuid4().hex[:12]}"
        ledger.open_account(pid, currency, cap)
        if funds:
            ledger.fund(pid, "initial", funds, currency)
        return pid

    return make


def state(ledger: DynamoLedger, pid: str) -> tuple[Balance, list[tuple[str, str]]]:
    return ledger.balance(pid), [(e.key, e.at) for e in ledger.journal(pid)]


def consistent(ledger: DynamoLedger, pid: str) -> Balance:
    b = ledger.balance(pid)
    b.check()
    assert replay(ledger.journal(pid)) == b
    return b


def refused(ledger: DynamoLedger, pid: str, error: type[Exception], call: Callable[[], Any]) -> Any:
    before = state(ledger, pid)
    with pytest.raises(error) as info:
        call()
    assert state(ledger, pid) == before, "a refused operation changed the ledger"
    return info.value


def test_full_lifecycle_keeps_the_invariant(ledger: DynamoLedger, program: Callable[..., str]) -> None:
    pid = program(1000)
    r = ledger.reserve(pid, "o1", 300, "CNY", ATTRS)
    assert (r.key, r.op, r.amount, r.replayed) == ("o1#reserve", "reserve", 300, False)
    assert r.balance == Balance(funded=1000, available=700, reserved=300)
    c = ledger.capture(pid, "o1", 250, "CNY")  # the unused 50 comes back
    assert c.balance == Balance(funded=1000, available=750, reserved=0, captured=250)
    v = ledger.recover(pid, "o1", 100, "CNY")
    assert v.balance == Balance(funded=1000, available=850, captured=250, recovered=100)
    ledger.reserve(pid, "o2", 200, "CNY", ATTRS)
    rel = ledger.release(pid, "o2")
    assert rel.amount == 200
    assert consistent(ledger, pid) == Balance(funded=1000, available=850, captured=250, recovered=100)
    assert [e.op.value for e in ledger.journal(pid)] == ["fund", "reserve", "capture", "recover", "reserve", "release"]
    hold = {h["order_id"]: h for h in ledger.holds(pid)}
    assert hold["o1"]["state"] == "captured" and hold["o1"]["recovered"] == 100
    assert hold["o2"]["state"] == "released"
    assert [h["order_id"] for h in ledger.holds(pid, "reserved")] == []


def test_reserve_fails_rather_than_overdraw(ledger: DynamoLedger, program: Callable[..., str]) -> None:
    pid = program(100)
    ledger.reserve(pid, "o1", 60, "CNY", ATTRS)
    err = refused(ledger, pid, InsufficientFunds, lambda: ledger.reserve(pid, "o2", 41, "CNY", ATTRS))
    assert err.details[0]["available"] == 40
    # The refused call booked no key (else this would be an idempotency conflict); exactly what is left is fine.
    assert ledger.reserve(pid, "o2", 40, "CNY", ATTRS).replayed is False
    assert consistent(ledger, pid).available == 0
    refused(ledger, pid, InsufficientFunds, lambda: ledger.reserve(pid, "o3", 1, "CNY", ATTRS))
    ledger.release(pid, "o1")
    assert ledger.reserve(pid, "o3", 41, "CNY", ATTRS).balance.available == 19


def test_capture_above_the_reservation_needs_the_cap_and_the_funds(
    ledger: DynamoLedger, program: Callable[..., str]
) -> None:
    no_cap = program(1000)
    ledger.reserve(no_cap, "o1", 100, "CNY", ATTRS)
    refused(ledger, no_cap, InvalidInput, lambda: ledger.capture(no_cap, "o1", 101, "CNY"))

    capped = program(150, cap=200)
    ledger.reserve(capped, "o1", 100, "CNY", ATTRS)
    refused(ledger, capped, InvalidInput, lambda: ledger.capture(capped, "o1", 201, "CNY"))  # beyond the cap
    ledger.reserve(capped, "o2", 30, "CNY", ATTRS)  # leaves 20 available
    refused(ledger, capped, InsufficientFunds, lambda: ledger.capture(capped, "o1", 130, "CNY"))  # needs 30
    c = ledger.capture(capped, "o1", 120, "CNY")  # the extra 20 is reserved and posted in the same transaction
    assert c.balance == Balance(funded=150, available=0, reserved=30, captured=120)
    consistent(ledger, capped)


def test_idempotent_replays_and_conflicts(ledger: DynamoLedger, program: Callable[..., str]) -> None:
    pid = program(0)
    first = ledger.fund(pid, "ticket-1", 500, "CNY")
    again = ledger.fund(pid, "ticket-1", 500, "CNY")
    assert again.replayed and again.amount == 500 and again.balance.funded == 500
    refused(ledger, pid, IdempotencyConflict, lambda: ledger.fund(pid, "ticket-1", 501, "CNY"))
    assert first.balance.funded == 500

    ledger.reserve(pid, "o1", 200, "CNY", ATTRS)
    assert ledger.reserve(pid, "o1", 200, "CNY", ATTRS).replayed
    refused(ledger, pid, IdempotencyConflict, lambda: ledger.reserve(pid, "o1", 201, "CNY", ATTRS))
    ledger.capture(pid, "o1", 150, "CNY")
    replayed = ledger.capture(pid, "o1", 150, "CNY")
    assert replayed.replayed and replayed.amount == 150
    refused(ledger, pid, IdempotencyConflict, lambda: ledger.capture(pid, "o1", 149, "CNY"))
    # A reservation replayed after its capture still returns the first result and moves nothing.
    assert ledger.reserve(pid, "o1", 200, "CNY", ATTRS).replayed
    ledger.recover(pid, "o1", 50, "CNY")
    assert ledger.recover(pid, "o1", 50, "CNY").replayed
    refused(ledger, pid, IdempotencyConflict, lambda: ledger.recover(pid, "o1", 40, "CNY"))

    ledger.reserve(pid, "o2", 10, "CNY", ATTRS)
    ledger.release(pid, "o2")
    assert ledger.release(pid, "o2").replayed
    assert consistent(ledger, pid) == Balance(funded=500, available=400, captured=150, recovered=50)
    assert len(ledger.journal(pid)) == 6


def test_state_errors(ledger: DynamoLedger, program: Callable[..., str]) -> None:
    pid = program(1000)
    ledger.reserve(pid, "released", 100, "CNY", ATTRS)
    ledger.release(pid, "released")
    refused(ledger, pid, InvalidState, lambda: ledger.capture(pid, "released", 100, "CNY"))
    refused(ledger, pid, InvalidState, lambda: ledger.recover(pid, "released", 1, "CNY"))
    ledger.reserve(pid, "captured", 100, "CNY", ATTRS)
    ledger.capture(pid, "captured", 80, "CNY")
    refused(ledger, pid, InvalidState, lambda: ledger.release(pid, "captured"))
    ledger.reserve(pid, "held", 100, "CNY", ATTRS)
    refused(ledger, pid, InvalidState, lambda: ledger.recover(pid, "held", 1, "CNY"))
    err = refused(ledger, pid, InvalidInput, lambda: ledger.recover(pid, "captured", 81, "CNY"))
    assert err.details[0]["captured"] == 80
    consistent(ledger, pid)


def test_unknown_programme_and_order(ledger: DynamoLedger, program: Callable[..., str]) -> None:
    ghost = f"prg-{uuid.uuid4().hex}"
    for call in (
        lambda: ledger.fund(ghost, "f", 1, "CNY"),
        lambda: ledger.reserve(ghost, "o", 1, "CNY", {}),
        lambda: ledger.capture(ghost, "o", 1, "CNY"),
        lambda: ledger.release(ghost, "o"),
        lambda: ledger.recover(ghost, "o", 1, "CNY"),
        lambda: ledger.balance(ghost),
    ):
        with pytest.raises(NotFound) as info:
            call()
        assert info.value.details[0]["field"] == "program_id"
    pid = program(10)
    for call in (
        lambda: ledger.capture(pid, "nope", 1, "CNY"),
        lambda: ledger.release(pid, "nope"),
        lambda: ledger.recover(pid, "nope", 1, "CNY"),
    ):
        err = refused(ledger, pid, NotFound, call)
        assert err.details[0]["field"] == "order_id"


def test_one_currency_per_programme(ledger: DynamoLedger, program: Callable[..., str]) -> None:
    pid = program(1000)
    ledger.reserve(pid, "o1", 100, "CNY", ATTRS)
    for call in (
        lambda: ledger.fund(pid, "f2", 10, "USD"),
        lambda: ledger.reserve(pid, "o2", 10, "USD", ATTRS),
        lambda: ledger.capture(pid, "o1", 10, "USD"),
    ):
        err = refused(ledger, pid, CurrencyMismatch, call)
        assert err.details[0] == {"field": "currency", "expected": "CNY", "given": "USD"}
    ledger.capture(pid, "o1", 100, "CNY")
    refused(ledger, pid, CurrencyMismatch, lambda: ledger.recover(pid, "o1", 10, "EUR"))
    refused(ledger, pid, InvalidInput, lambda: ledger.fund(pid, "f3", 10, "cny"))
    # Reopening the account is idempotent, but not in another currency or with another cap.
    ledger.open_account(pid, "CNY", None)
    refused(ledger, pid, CurrencyMismatch, lambda: ledger.open_account(pid, "USD", None))
    refused(ledger, pid, IdempotencyConflict, lambda: ledger.open_account(pid, "CNY", 500))


BAD_AMOUNTS = [0, -1, -(2**63), 2**53 + 1, 2**63, 2**63 + 1, MAX_MINOR_UNITS + 1, True, 12.5]


@pytest.mark.parametrize("bad", BAD_AMOUNTS, ids=repr)
def test_the_adapter_itself_refuses_bad_amounts(ledger: DynamoLedger, program: Callable[..., str], bad: Any) -> None:
    pid = program(1000)
    ledger.reserve(pid, "held", 100, "CNY", ATTRS)
    ledger.reserve(pid, "spent", 100, "CNY", ATTRS)
    ledger.capture(pid, "spent", 100, "CNY")
    calls = {
        "amount": [
            lambda: ledger.fund(pid, "f-bad", bad, "CNY"),
            lambda: ledger.reserve(pid, "o-bad", bad, "CNY", ATTRS),
            lambda: ledger.recover(pid, "spent", bad, "CNY"),
        ],
        "actual": [lambda: ledger.capture(pid, "held", bad, "CNY")],
    }
    for field, fns in calls.items():
        for call in fns:
            err = refused(ledger, pid, InvalidInput, call)
            assert err.details[0]["field"] == field
    # Nothing was keyed either: the same keys with good amounts go through afterwards.
    assert not ledger.reserve(pid, "o-bad", 5, "CNY", ATTRS).replayed
    assert not ledger.capture(pid, "held", 100, "CNY").replayed
    consistent(ledger, pid)


def test_total_funding_is_capped_too(ledger: DynamoLedger, program: Callable[..., str]) -> None:
    pid = program(MAX_MINOR_UNITS)
    refused(ledger, pid, InvalidInput, lambda: ledger.fund(pid, "one-more", 1, "CNY"))
    assert ledger.fund(pid, "initial", MAX_MINOR_UNITS, "CNY").replayed  # a replay is still a replay
    assert consistent(ledger, pid).funded == MAX_MINOR_UNITS


def test_threshold_marks_are_durable_and_single(ledger: DynamoLedger, program: Callable[..., str]) -> None:
    pid = program(10)
    assert ledger.mark_threshold(pid, 0.5) is True
    assert ledger.mark_threshold(pid, 0.5) is False
    assert ledger.mark_threshold(pid, 0.8) is True
    # Threshold marks are not journal lines and do not disturb the balance.
    assert consistent(ledger, pid) == Balance(funded=10, available=10)


def test_list_accounts_finds_programmes(ledger: DynamoLedger, program: Callable[..., str]) -> None:
    a, b = program(0), program(5)
    accounts = ledger.list_accounts()
    assert {a, b} <= set(accounts)
    assert all(not x.startswith("ACCOUNT#") for x in accounts)
