"""Faults between the steps of an operation, then a retry: the invariant holds and nothing is booked twice.

The boto3 client is wrapped so one call fails *before* reaching DynamoDB (nothing written), *after* it (written, but
the caller sees an error, as when a Lambda times out or the response is lost), or is *delivered twice* (an HTTP-level
retry of a request that had already been applied). The caller then retries with a healthy client."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from chalicelib.adapters.ledger_dynamodb import DynamoLedger
from chalicelib.adapters.system import SystemClock
from chalicelib.domain.ledger import Balance, replay
from chalicelib.ports import LedgerResult


class Injected(ConnectionError):
    """Stands for a network error or a Lambda timeout."""


class FaultyClient:
    """Delegates to a real client, except for the ``nth`` call of ``method``."""

    def __init__(self, real: Any, method: str, mode: str, nth: int = 1) -> None:
        self._real, self._method, self._mode, self._nth = real, method, mode, nth
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if name != self._method:
            return attr

        def call(**kwargs: Any) -> Any:
            self.calls += 1
            if self.calls != self._nth:
                return attr(**kwargs)
            assert self._mode in ("before", "after", "twice"), self._mode
            if self._mode == "before":
                raise Injected(f"{name} failed before reaching DynamoDB")
            if self._mode == "after":
                attr(**kwargs)
                raise Injected(f"{name} was applied but the response was lost")
            attr(**kwargs)  # "twice": the first delivery is applied, the caller sees the second
            return attr(**kwargs)

        return call


TABLE = "TESTBUY_LEDGER_TABLE"


def healthy() -> DynamoLedger:
    return DynamoLedger(boto3.client("dynamodb"), os.environ[TABLE], SystemClock())


def faulty(method: str, mode: str, nth: int = 1) -> tuple[DynamoLedger, FaultyClient]:
    client = FaultyClient(boto3.client("dynamodb"), method, mode, nth)
    return DynamoLedger(client, os.environ[TABLE], SystemClock()), client


def fresh_programme() -> str:
    pid = f"prg-fault-{uuid.uuid4().hex[:10]}"
    ledger = healthy()
    ledger.open_account(pid, "CNY", 500)
    ledger.fund(pid, "initial", 1000, "CNY")
    ledger.reserve(pid, "to-capture", 200, "CNY", {"seller_id": "s"})
    ledger.reserve(pid, "to-release", 100, "CNY", {"seller_id": "s"})
    ledger.reserve(pid, "captured", 300, "CNY", {"seller_id": "s"})
    ledger.capture(pid, "captured", 250, "CNY")
    return pid


START = Balance(funded=1000, available=450, reserved=300, captured=250, recovered=0)

# op name -> (call, balance after it succeeded exactly once)
OPS: dict[str, tuple[Callable[[DynamoLedger, str], LedgerResult], Balance]] = {
    "fund": (
        lambda lg, p: lg.fund(p, "top-up", 70, "CNY"),
        Balance(funded=1070, available=520, reserved=300, captured=250),
    ),
    "reserve": (
        lambda lg, p: lg.reserve(p, "new", 40, "CNY", {"seller_id": "s"}),
        Balance(funded=1000, available=410, reserved=340, captured=250),
    ),
    "capture": (
        lambda lg, p: lg.capture(p, "to-capture", 230, "CNY"),  # 30 above the reservation, within the cap
        Balance(funded=1000, available=420, reserved=100, captured=480),
    ),
    "release": (
        lambda lg, p: lg.release(p, "to-release"),
        Balance(funded=1000, available=550, reserved=200, captured=250),
    ),
    "recover": (
        lambda lg, p: lg.recover(p, "captured", 90, "CNY"),
        Balance(funded=1000, available=540, reserved=300, captured=250, recovered=90),
    ),
}


def check(pid: str, expected: Balance, journal_lines: int) -> None:
    ledger = healthy()
    stored = ledger.balance(pid)
    assert stored == expected
    stored.check()
    journal = ledger.journal(pid)
    assert len(journal) == journal_lines, "an operation was booked twice or not at all"
    assert replay(journal) == stored


def test_fixture_state_is_what_the_table_assumes(local_stack: Any) -> None:
    check(fresh_programme(), START, 5)


@pytest.mark.parametrize("op", sorted(OPS))
def test_failure_before_the_write_then_retry(local_stack: Any, op: str) -> None:
    pid = fresh_programme()
    call, after = OPS[op]
    ledger, _ = faulty("transact_write_items", "before")
    with pytest.raises(Injected):
        call(ledger, pid)
    check(pid, START, 5)  # nothing happened
    result = call(healthy(), pid)
    assert not result.replayed
    check(pid, after, 6)


@pytest.mark.parametrize("op", sorted(OPS))
def test_failure_after_the_write_then_retry(local_stack: Any, op: str) -> None:
    pid = fresh_programme()
    call, after = OPS[op]
    ledger, _ = faulty("transact_write_items", "after")
    with pytest.raises(Injected):
        call(ledger, pid)
    check(pid, after, 6)  # it happened, once
    result = call(healthy(), pid)
    assert result.replayed
    check(pid, after, 6)  # and the retry booked nothing more
    again = call(ledger, pid)  # the same (now healthy) caller retrying once more
    assert again.replayed and again.amount == result.amount


@pytest.mark.parametrize("op", sorted(OPS))
def test_request_delivered_twice(local_stack: Any, op: str) -> None:
    pid = fresh_programme()
    call, after = OPS[op]
    ledger, client = faulty("transact_write_items", "twice")
    result = call(ledger, pid)
    assert client.calls == 1
    assert result.replayed  # the caller sees the duplicate's answer: the first booking, not a second one
    check(pid, after, 6)


@pytest.mark.parametrize("op", sorted(OPS))
def test_failure_reading_the_result_then_retry(local_stack: Any, op: str) -> None:
    """The write is durable; reading the new balance fails (the last get_item of the operation)."""
    pid = fresh_programme()
    call, after = OPS[op]
    probe, counter = faulty("get_item", "count only", nth=0)
    call(probe, fresh_programme())  # count the reads one operation makes on a twin programme
    ledger, _ = faulty("get_item", "after", nth=counter.calls)
    with pytest.raises(Injected):
        call(ledger, pid)
    check(pid, after, 6)
    assert call(healthy(), pid).replayed
    check(pid, after, 6)
