"""Concurrency: many threads, each with its own boto3 client, hammering one programme through the moto server over
HTTP. No overspend, no lost cent, idempotency holds under races, and the journal replays to the stored balance.

The local stack makes the moto server behave like DynamoDB (``testbuy.moto_fidelity``): unpatched, moto itself
oversells and loses writes under concurrency (see ``test_ledger_moto``), whatever the client does."""

from __future__ import annotations

import os
import random
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from chalicelib.adapters.ledger_dynamodb import DynamoLedger
from chalicelib.adapters.system import SystemClock
from chalicelib.domain.errors import InsufficientFunds
from chalicelib.domain.ledger import Balance, replay
from chalicelib.ports import LedgerResult

THREADS = 12


@pytest.fixture(scope="module", autouse=True)
def _faithful(local_stack: Any) -> Iterator[None]:
    from testbuy import moto_fidelity

    assert moto_fidelity.installed()
    yield


def new_ledger() -> DynamoLedger:
    """One boto3 client per thread, as separate Lambdas would have."""
    return DynamoLedger(boto3.client("dynamodb"), os.environ["TESTBUY_LEDGER_TABLE"], SystemClock())


def run_threads(target: Any) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def wrapped(i: int) -> None:
        try:
            start.wait()
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return errors


def test_racing_reservations_spend_every_cent_and_not_one_more() -> None:
    funds = 2500
    pid = f"prg-race-{uuid.uuid4().hex[:10]}"
    setup = new_ledger()
    setup.open_account(pid, "CNY", None)
    setup.fund(pid, "initial", funds, "CNY")
    successes: list[int] = []
    refusals: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        ledger, rng = new_ledger(), random.Random(i)
        amount, n = rng.randint(10, 60), 0
        while True:
            n += 1
            try:
                r = ledger.reserve(pid, f"t{i}-{n}", amount, "CNY", {"seller_id": f"s{i}"})
            except InsufficientFunds:
                with lock:
                    refusals.append(amount)
                if amount == 1:
                    return  # not even one minor unit is left
                amount = 1  # drain what is left, one unit at a time
                continue
            assert not r.replayed and r.balance.available >= 0
            with lock:
                successes.append(amount)
            if amount > 1:
                amount = rng.randint(10, 60)

    assert run_threads(worker) == []
    final = setup.balance(pid)
    assert sum(successes) == funds, "reserved more (overspend) or less (lost money) than was funded"
    assert final == Balance(funded=funds, available=0, reserved=funds)
    assert len(refusals) >= THREADS
    journal = setup.journal(pid)
    assert len(journal) == 1 + len(successes)
    assert replay(journal) == final
    assert len(setup.holds(pid, "reserved")) == len(successes)


def test_mixed_operations_and_duplicate_deliveries_under_contention() -> None:
    funds = 4000
    pid = f"prg-mix-{uuid.uuid4().hex[:10]}"
    setup = new_ledger()
    setup.open_account(pid, "CNY", 120)
    setup.fund(pid, "initial", funds, "CNY")
    booked: list[LedgerResult] = []
    shared: dict[str, list[LedgerResult]] = {}
    lock = threading.Lock()

    def worker(i: int) -> None:
        ledger, rng = new_ledger(), random.Random(100 + i)
        for n in range(18):
            # Every thread also tries the same "shared" orders with the same arguments, as a retried Lambda would.
            order = f"shared-{n % 6}" if n % 3 == 0 else f"m{i}-{n}"
            amount = 50 if order.startswith("shared") else rng.randint(20, 100)
            try:
                r = ledger.reserve(pid, order, amount, "CNY", {"seller_id": f"s{i % 3}"})
            except InsufficientFunds:
                continue
            with lock:
                (shared.setdefault(order, []) if order.startswith("shared") else booked).append(r)
            if order.startswith("shared"):
                continue
            roll = rng.random()
            if roll < 0.35:
                result = ledger.release(pid, order)
            elif roll < 0.8:
                actual = rng.randint(1, 120)  # above the reservation is allowed up to the cap of 120
                try:
                    result = ledger.capture(pid, order, actual, "CNY")
                except InsufficientFunds:
                    continue
                if rng.random() < 0.5:
                    with lock:
                        booked.append(result)
                    result = ledger.recover(pid, order, rng.randint(1, actual), "CNY")
            else:
                continue
            with lock:
                booked.append(result)

    assert run_threads(worker) == []
    # Exactly one of the racing duplicates booked each shared order; the others got its result back.
    for order, results in shared.items():
        assert sum(not r.replayed for r in results) == 1, order
        assert {r.amount for r in results} == {50}
    final = setup.balance(pid)
    final.check()
    journal = setup.journal(pid)
    assert replay(journal) == final
    assert len(journal) == 1 + len(booked) + len(shared)
    by_op: dict[str, int] = {}
    for r in booked:
        by_op[r.op] = by_op.get(r.op, 0) + r.amount
    assert final.captured == by_op.get("capture", 0)
    assert final.recovered == by_op.get("recover", 0)
    held = {h["order_id"]: int(h["amount"]) for h in setup.holds(pid, "reserved")}
    assert final.reserved == sum(held.values())
    assert final.available == funds - final.reserved - final.captured + final.recovered
