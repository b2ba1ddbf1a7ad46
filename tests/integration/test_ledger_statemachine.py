"""Stateful property test: random sequences of ledger operations against the real DynamoDB adapter, checked after
every step against a pure model (balances, hold states, which keys were booked with which arguments).

Sequences mix valid operations with replays of earlier ones (same arguments: the first result comes back), conflicting
replays (different arguments: ``IdempotencyConflict``), overdrafts, wrong states, a foreign currency and absurd
amounts (refused by the adapter itself). After every step: stored balance == model, the invariant holds, every booked
key has its journal line and those lines add up to the stored balance, and the holds match the model. At the end of
each example the whole journal is read back: exactly the booked keys, replaying to the stored balance. Each example
runs on a fresh programme id.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from chalicelib.adapters.dynamo_codec import from_item
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
from chalicelib.ports import LedgerResult

ORDERS = [f"o{i}" for i in range(6)]
REFS = ["f0", "f1", "f2"]
BAD = [0, -1, -500, 2**53 + 1, 2**63, 10**15 + 1, True]
BUCKETS = ("funded", "available", "reserved", "captured", "recovered")


@dataclass
class Hold:
    amount: int
    state: str = "reserved"
    captured: int = 0
    recovered: int = 0


@dataclass
class Model:
    cap: int | None
    funded: int = 0
    available: int = 0
    reserved: int = 0
    captured: int = 0
    recovered: int = 0
    holds: dict[str, Hold] = field(default_factory=dict)
    booked: dict[tuple[str, str], tuple[tuple[Any, ...], int]] = field(default_factory=dict)

    def balance(self) -> Balance:
        return Balance(self.funded, self.available, self.reserved, self.captured, self.recovered)


_LEDGER: dict[str, DynamoLedger] = {}


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger = _LEDGER["ledger"]
        self.pid = f"prg-sm-{uuid.uuid4().hex[:12]}"
        self.m = Model(cap=None)
        self.steps: list[str] = []

    # --------------------------------------------------------------------------------------------- plumbing
    def _expect(self, key: tuple[str, str], args: tuple[Any, ...], call: Callable[[], LedgerResult]) -> bool:
        """If ``key`` was booked: assert a replay (same args) or a conflict (other args) and return True."""
        if key not in self.m.booked:
            return False
        first_args, first_amount = self.m.booked[key]
        if first_args == args:
            r = call()
            assert r.replayed and r.amount == first_amount, (key, r)
        else:
            with pytest.raises(IdempotencyConflict):
                call()
        return True

    def _book(self, key: tuple[str, str], args: tuple[Any, ...], r: LedgerResult, amount: int) -> None:
        assert not r.replayed and r.amount == amount, (key, r)
        self.m.booked[key] = (args, amount)

    # --------------------------------------------------------------------------------------------- rules
    @initialize(cap=st.none() | st.integers(50, 600), funds=st.integers(0, 1500))
    def open(self, cap: int | None, funds: int) -> None:
        self.m.cap = cap
        self.ledger.open_account(self.pid, "CNY", cap)
        if funds:
            self.fund("f-initial", funds)

    @rule(ref=st.sampled_from(REFS), amount=st.integers(1, 800))
    def fund(self, ref: str, amount: int) -> None:
        key, args = (ref, "fund"), (amount,)
        if self._expect(key, args, lambda: self.ledger.fund(self.pid, ref, amount, "CNY")):
            return
        r = self.ledger.fund(self.pid, ref, amount, "CNY")
        self.m.funded += amount
        self.m.available += amount
        self._book(key, args, r, amount)

    @rule(order=st.sampled_from(ORDERS), amount=st.integers(1, 500))
    def reserve(self, order: str, amount: int) -> None:
        key, args = (order, "reserve"), (amount,)
        call = lambda: self.ledger.reserve(self.pid, order, amount, "CNY", {"seller_id": order})  # noqa: E731
        if self._expect(key, args, call):
            return
        if amount > self.m.available:
            with pytest.raises(InsufficientFunds):
                call()
            return
        r = call()
        self.m.available -= amount
        self.m.reserved += amount
        self.m.holds[order] = Hold(amount)
        self._book(key, args, r, amount)

    @rule(order=st.sampled_from(ORDERS), actual=st.integers(1, 700))
    def capture(self, order: str, actual: int) -> None:
        key, args = (order, "capture"), (actual,)
        call = lambda: self.ledger.capture(self.pid, order, actual, "CNY")  # noqa: E731
        hold = self.m.holds.get(order)
        if hold is None:
            with pytest.raises(NotFound):
                call()
            return
        if hold.state != "reserved":
            if not self._expect(key, args, call):
                with pytest.raises(InvalidState):
                    call()
            return
        if actual > hold.amount and (self.m.cap is None or actual > self.m.cap):
            with pytest.raises(InvalidInput):
                call()
            return
        if actual - hold.amount > self.m.available:
            with pytest.raises(InsufficientFunds):
                call()
            return
        r = call()
        self.m.available += hold.amount - actual
        self.m.reserved -= hold.amount
        self.m.captured += actual
        hold.state, hold.captured = "captured", actual
        self._book(key, args, r, actual)

    @rule(order=st.sampled_from(ORDERS))
    def release(self, order: str) -> None:
        key = (order, "release")
        call = lambda: self.ledger.release(self.pid, order)  # noqa: E731
        hold = self.m.holds.get(order)
        if hold is None:
            with pytest.raises(NotFound):
                call()
            return
        if hold.state != "reserved":
            if not self._expect(key, (), call):
                with pytest.raises(InvalidState):
                    call()
            return
        r = call()
        self.m.available += hold.amount
        self.m.reserved -= hold.amount
        hold.state = "released"
        self._book(key, (), r, hold.amount)

    @rule(order=st.sampled_from(ORDERS), amount=st.integers(1, 700))
    def recover(self, order: str, amount: int) -> None:
        key, args = (order, "recover"), (amount,)
        call = lambda: self.ledger.recover(self.pid, order, amount, "CNY")  # noqa: E731
        hold = self.m.holds.get(order)
        if hold is None:
            with pytest.raises(NotFound):
                call()
            return
        if hold.state != "captured":
            with pytest.raises(InvalidState):
                call()
            return
        if self._expect(key, args, call):
            return
        if hold.recovered + amount > hold.captured:
            with pytest.raises(InvalidInput):
                call()
            return
        r = call()
        self.m.available += amount
        self.m.recovered += amount
        hold.recovered += amount
        self._book(key, args, r, amount)

    @rule(data=st.data())
    def replay_earlier(self, data: st.DataObject) -> None:
        """Repeat a booked operation exactly: the first result, nothing moves."""
        if not self.m.booked:
            return
        key = data.draw(st.sampled_from(sorted(self.m.booked)))
        self._redo(key, self.m.booked[key][0])

    @rule(data=st.data(), bump=st.integers(1, 50))
    def conflicting_replay(self, data: st.DataObject, bump: int) -> None:
        """Repeat a booked operation with another amount: a conflict, nothing moves."""
        keys = sorted(k for k in self.m.booked if k[1] != "release")
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        self._redo(key, (self.m.booked[key][0][0] + bump,))

    def _redo(self, key: tuple[str, str], args: tuple[Any, ...]) -> None:
        subject, op = key
        if op == "fund":
            self.fund(subject, args[0])
        elif op == "reserve":
            self.reserve(subject, args[0])
        elif op == "capture":
            self.capture(subject, args[0])
        elif op == "release":
            self.release(subject)
        else:
            self.recover(subject, args[0])

    @rule(op=st.sampled_from(["fund", "reserve", "capture", "recover"]), order=st.sampled_from(ORDERS))
    def foreign_currency(self, op: str, order: str) -> None:
        calls: dict[str, Callable[[], Any]] = {
            "fund": lambda: self.ledger.fund(self.pid, "f-usd", 10, "USD"),
            "reserve": lambda: self.ledger.reserve(self.pid, order, 10, "USD", {}),
            "capture": lambda: self.ledger.capture(self.pid, order, 10, "USD"),
            "recover": lambda: self.ledger.recover(self.pid, order, 10, "USD"),
        }
        with pytest.raises(CurrencyMismatch):
            calls[op]()

    @rule(
        op=st.sampled_from(["fund", "reserve", "capture", "recover"]),
        order=st.sampled_from(ORDERS),
        bad=st.sampled_from(BAD),
    )
    def absurd_amount(self, op: str, order: str, bad: int) -> None:
        calls: dict[str, Callable[[], Any]] = {
            "fund": lambda: self.ledger.fund(self.pid, "f-bad", bad, "CNY"),
            "reserve": lambda: self.ledger.reserve(self.pid, order, bad, "CNY", {}),
            "capture": lambda: self.ledger.capture(self.pid, order, bad, "CNY"),
            "recover": lambda: self.ledger.recover(self.pid, order, bad, "CNY"),
        }
        with pytest.raises(InvalidInput):
            calls[op]()

    # --------------------------------------------------------------------------------------------- invariants
    def _items(self, sks: list[str]) -> list[dict[str, Any]]:
        """Consistent reads of known items in one request (moto's Query costs O(table), BatchGetItem does not)."""
        if not sks:
            return []
        keys = [{"pk": {"S": f"ACCOUNT#{self.pid}"}, "sk": {"S": sk}} for sk in sks]
        client, table = self.ledger._db, self.ledger._table
        resp = client.batch_get_item(RequestItems={table: {"Keys": keys, "ConsistentRead": True}})
        assert not resp.get("UnprocessedKeys")
        return [from_item(raw) for raw in resp["Responses"][table]]

    @invariant()
    def matches_the_model(self) -> None:
        stored = self.ledger.balance(self.pid)
        assert stored == self.m.balance()
        stored.check()
        # Every booked key has its journal line, and those lines alone add up to the stored balance.
        lines = self._items([f"J#{subject}#{op}" for subject, op in self.m.booked])
        assert len(lines) == len(self.m.booked)
        summed = Balance(*(sum(int(x.get(f"d_{k}", 0)) for x in lines) for k in BUCKETS))
        assert summed == stored
        holds = {x["sk"][5:]: (x["state"], int(x["amount"])) for x in self._items([f"HOLD#{o}" for o in self.m.holds])}
        assert holds == {o: (h.state, h.amount) for o, h in self.m.holds.items()}

    def teardown(self) -> None:
        # The whole journal: nothing beyond the booked keys, and it replays to the stored balance.
        journal = self.ledger.journal(self.pid)
        assert sorted((e.subject, e.op.value) for e in journal) == sorted(self.m.booked)
        assert replay(journal) == self.ledger.balance(self.pid) == self.m.balance()
        assert {h["order_id"] for h in self.ledger.holds(self.pid)} == set(self.m.holds)


@pytest.fixture(scope="module", autouse=True)
def _ledger(local_stack: Any) -> Iterator[None]:
    _LEDGER["ledger"] = DynamoLedger(boto3.client("dynamodb"), os.environ["TESTBUY_LEDGER_TABLE"], SystemClock())
    yield
    _LEDGER.clear()


TestLedgerMachine = LedgerMachine.TestCase
TestLedgerMachine.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
