"""In-memory fakes of every port (``chalicelib/ports.py``), so each service is unit-tested in milliseconds.

They keep the ports' contracts, not their storage: the order repository applies ``chalicelib.domain.lifecycle`` the
way the DynamoDB adapter does (conditional on the from-status, idempotent on the target), the ledger keeps the
two-phase semantics and its journal, the marketplace keeps ground truth. Each fake can be told to fail (``fail_next``
or a ``fail`` hook) to exercise the retry paths. Nothing here talks to AWS.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from chalicelib.adapters.custody_hmac import LocalHmacKey
from chalicelib.domain import appeals as appeal_rules
from chalicelib.domain import lifecycle
from chalicelib.domain.appeals import Appeal, AppealEvent, AppealStatus, RetestVerdict
from chalicelib.domain.custody import Anchor, CustodyEntry
from chalicelib.domain.errors import (
    Conflict,
    CurrencyMismatch,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    InvalidState,
    MarketplaceUnavailable,
    NotFound,
    OrderRefused,
)
from chalicelib.domain.events import Envelope
from chalicelib.domain.ledger import Balance, JournalEntry, Op, fingerprint, op_key
from chalicelib.domain.lifecycle import OrderEvent
from chalicelib.domain.models import Order, OrderStatus, Program, Round, Seller, Verdict, VerdictKind
from chalicelib.domain.personas import PersonaPolicy, PersonaState, iso_week
from chalicelib.ports import LedgerResult, MarketOrder, PlacedOrder
from chalicelib.services.deps import Deps
from tests.custody_fake import AnchoredFakeCustody

E = OrderEvent


class Boom(Exception):
    """A failure injected by a test (a crash, a lost reply)."""


class Failures:
    """``fail_next(name, exc, times)``: the next ``times`` calls of method ``name`` raise ``exc`` (before the call
    has any effect, unless the fake says otherwise)."""

    def __init__(self) -> None:
        self._pending: dict[str, list[BaseException]] = {}
        self.calls: dict[str, int] = {}

    def fail_next(self, name: str, exc: BaseException | None = None, times: int = 1) -> None:
        self._pending.setdefault(name, []).extend([exc or Boom(name)] * times)

    def check(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        pending = self._pending.get(name)
        if pending:
            raise pending.pop(0)


class FakeClock:
    def __init__(self, start: datetime | None = None) -> None:
        self.t = start or datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.t

    def advance(self, **kw: float) -> None:
        self.t += timedelta(**kw)


class FakeIds:
    def __init__(self) -> None:
        self._n = itertools.count(1)

    def new(self, prefix: str) -> str:
        return f"{prefix}-{next(self._n):06d}"


class FakePrograms(Failures):
    def __init__(self) -> None:
        super().__init__()
        self.programs: dict[str, Program] = {}
        self.sellers: dict[str, dict[str, Seller]] = {}
        self.feed: dict[str, dict[str, dict[str, Any]]] = {}

    def put_program(self, program: Program) -> None:
        self.programs[program.program_id] = program

    def get_program(self, program_id: str) -> Program:
        try:
            return self.programs[program_id]
        except KeyError:
            raise NotFound(f"no programme {program_id}", details=[{"field": "program_id"}]) from None

    def put_sellers(self, program_id: str, sellers: Sequence[Seller]) -> None:
        self.sellers.setdefault(program_id, {}).update({s.seller_id: s for s in sellers})

    def list_sellers(self, program_id: str) -> list[Seller]:
        return sorted(self.sellers.get(program_id, {}).values(), key=lambda s: s.seller_id)

    def get_seller(self, program_id: str, seller_id: str) -> Seller | None:
        return self.sellers.get(program_id, {}).get(seller_id)

    def put_refund_feed(self, program_id: str, period: str, orders: int, suspect_refunds: int) -> None:
        self.feed.setdefault(program_id, {})[period] = {
            "period": period,
            "orders": orders,
            "suspect_refunds": suspect_refunds,
        }

    def refund_feed(self, program_id: str) -> list[dict[str, Any]]:
        return list(self.feed.get(program_id, {}).values())


class FakeRounds(Failures):
    def __init__(self) -> None:
        super().__init__()
        self.rounds: dict[tuple[str, str], Round] = {}
        self.tokens: dict[tuple[str, str], str] = {}
        self.extra: dict[tuple[str, str], dict[str, Any]] = {}

    def put_round(self, rnd: Round) -> None:
        self.rounds[(rnd.program_id, rnd.round_id)] = rnd

    def get_round(self, program_id: str, round_id: str) -> Round:
        try:
            return self.rounds[(program_id, round_id)]
        except KeyError:
            raise NotFound(f"no round {round_id}", details=[{"field": "round_id"}]) from None

    def list_rounds(self, program_id: str) -> list[Round]:
        return [r for (p, _), r in sorted(self.rounds.items()) if p == program_id]

    def update_round(self, program_id: str, round_id: str, fields: Mapping[str, Any]) -> None:
        rnd = self.get_round(program_id, round_id)
        known = {k: v for k, v in fields.items() if k in Round.model_fields}
        self.rounds[(program_id, round_id)] = rnd.model_copy(update=known)
        self.extra.setdefault((program_id, round_id), {}).update(fields)

    def arm_round(self, program_id: str, round_id: str, token: str) -> Round:
        rnd = self.get_round(program_id, round_id)
        self.tokens[(program_id, round_id)] = token
        return rnd

    def round_token(self, program_id: str, round_id: str) -> str | None:
        return self.tokens.get((program_id, round_id))

    def add_second_unit(self, program_id: str, round_id: str) -> Round:  # second unit (issue 10 item 1)
        rnd = self.get_round(program_id, round_id)
        rnd = rnd.model_copy(update={"second_units": rnd.second_units + 1})
        self.rounds[(program_id, round_id)] = rnd
        return rnd

    def add_settled(self, program_id: str, round_id: str) -> Round:
        rnd = self.get_round(program_id, round_id)
        rnd = rnd.model_copy(update={"settled": rnd.settled + 1})
        self.rounds[(program_id, round_id)] = rnd
        return rnd


class FakeOrders(Failures):
    """Orders, verdicts, wait points and seller history, applying the lifecycle table like the DynamoDB adapter."""

    def __init__(self, rounds: FakeRounds) -> None:
        super().__init__()
        self._rounds = rounds
        self._lock = threading.RLock()  # re-entrant: the retest intents check and apply under one hold
        self.orders: dict[str, Order] = {}
        self.lab: dict[str, str | None] = {}  # order id -> lab whose queue holds it
        self.tokens: dict[tuple[str, str], str] = {}
        self.arrivals: dict[tuple[str, str], dict[str, Any]] = {}
        self.finalized: set[str] = set()
        self.verdicts: dict[tuple[str, int], Verdict] = {}  # (order, lab attempt)
        self.confirmed: dict[str, dict[str, datetime]] = {}
        self.rescinded_confirmed: dict[str, dict[str, str]] = {}  # appeals: seller -> order -> appeal id
        self.history: list[tuple[str, OrderEvent, OrderStatus]] = []

    def put_orders(self, orders: Sequence[Order]) -> None:
        for o in orders:
            self.orders.setdefault(o.order_id, o)

    def get_order(self, order_id: str) -> Order:
        self.check("get_order")
        try:
            return self.orders[order_id]
        except KeyError:
            raise NotFound(f"no order {order_id}", details=[{"field": "order_id"}]) from None

    def list_round_orders(self, round_id: str) -> list[Order]:
        return [o for o in self.orders.values() if o.round_id == round_id]

    def lab_queue(self, lab_id: str) -> list[Order]:
        return [self.orders[o] for o, lab in self.lab.items() if lab == lab_id]

    def _fields(self, order_id: str, at: datetime, **fields: Any) -> Order:
        with self._lock:
            order = self.get_order(order_id)
            order = order.model_copy(update={**fields, "updated_at": at})
            self.orders[order_id] = order
            return order

    def _apply(self, order_id: str, event: OrderEvent, at: datetime, **fields: Any) -> Order:
        self.check(event.value)
        with self._lock:
            order = self.get_order(order_id)
            to = lifecycle.target(event)
            if order.status not in lifecycle.sources(event):
                if order.status is to:
                    return order  # a retried intent: already applied
                lifecycle.transition(order.status, event)  # raises InvalidState
            order = order.model_copy(update={**fields, "status": to, "updated_at": at})
            self.orders[order_id] = order
            self.history.append((order_id, event, to))
            return order

    def mark_reserved(self, order_id: str, at: datetime) -> Order:
        return self._apply(order_id, E.RESERVE, at)

    def mark_skipped_budget(self, order_id: str, at: datetime) -> Order:
        return self._apply(order_id, E.SKIP_BUDGET, at, failure="budget exhausted")

    def record_place_intent(self, order_id: str, at: datetime) -> Order:
        return self._apply(order_id, E.PLACE_INTENT, at, place_intent_at=at)

    def mark_placed(self, order_id: str, marketplace_order_id: str, price: int, at: datetime) -> Order:
        return self._apply(order_id, E.PLACED, at, marketplace_order_id=marketplace_order_id, price=price)

    def mark_refused(self, order_id: str, at: datetime) -> Order:
        return self._apply(order_id, E.REFUSED, at, failure="seller refused the order")

    def mark_delivered(self, order_id: str, delivered_at: datetime, at: datetime) -> Order:
        return self._apply(order_id, E.DELIVERED, at, delivered_at=delivered_at)

    def mark_at_lab(self, order_id: str, lab_id: str, at: datetime) -> Order:
        order = self._apply(
            order_id, E.FORWARDED, at, lab_id=lab_id, lab_attempt=1, labs_tried=[lab_id], labs_assigned_at=[at]
        )
        self.lab[order_id] = lab_id
        return order

    def mark_verdict(self, order_id: str, verdict: VerdictKind, at: datetime, *, attempt: int | None = None) -> Order:
        if attempt is not None:
            with self._lock:
                current = self.get_order(order_id)
                if current.lab_attempt != attempt:
                    self.check(E.VERDICT.value)
                    raise InvalidState(f"sample {order_id} is at lab attempt {current.lab_attempt}, not {attempt}")
                order = self._apply(order_id, E.VERDICT, at, verdict=verdict)
        else:
            order = self._apply(order_id, E.VERDICT, at, verdict=verdict)
        self.lab.pop(order_id, None)
        return order

    # --- retest (issue 10 item 1)
    def reassign_lab(
        self, order_id: str, event: OrderEvent, from_attempt: int, to_lab: str, reason: str, at: datetime
    ) -> Order:
        assert event in lifecycle.LAB_REASSIGNMENTS  # nosec B101
        with self._lock:
            current = self.get_order(order_id)
            if current.lab_attempt == from_attempt + 1 and current.lab_id == to_lab:
                return current  # a retried re-assignment
            if current.lab_attempt != from_attempt:
                self.check(event.value)
                raise InvalidState(f"sample {order_id} is at lab attempt {current.lab_attempt}, not {from_attempt}")
            if event is E.REASSIGN and (order_id, from_attempt) in self.verdicts:
                self.check(event.value)
                raise InvalidState(f"sample {order_id}: lab attempt {from_attempt} has a verdict; not re-assigned")
            if current.status not in lifecycle.sources(event):
                self.check(event.value)
                lifecycle.transition(current.status, event)  # raises InvalidState
            order = self._apply(
                order_id,
                event,
                at,
                lab_id=to_lab,
                lab_attempt=from_attempt + 1,
                labs_tried=[*current.labs_tried, to_lab],
                labs_assigned_at=[*current.labs_assigned_at, at],
                retest_reasons=[*current.retest_reasons, reason],
            )
            self.lab[order_id] = to_lab
            return order

    def record_lab_overdue(self, order_id: str, attempt: int, at: datetime) -> Order:
        self.check("record_lab_overdue")
        if self.get_order(order_id).lab_attempt != attempt:
            raise InvalidState(f"sample {order_id} is not at lab attempt {attempt}")
        return self._fields(order_id, at, last_lab_overdue=True)

    def list_verdicts(self, order_id: str) -> list[Verdict]:
        return [v for (o, _), v in sorted(self.verdicts.items()) if o == order_id]

    # --- end retest

    def mark_settled(self, order_id: str, at: datetime) -> Order:
        order = self._apply(order_id, E.CAPTURED, at)
        self.lab.pop(order_id, None)
        return order

    def record_cancel_intent(self, order_id: str, failure: str, at: datetime) -> Order:
        order = self.get_order(order_id)
        return self._apply(order_id, E.CANCEL_INTENT, at, failure=order.failure or failure)

    def mark_failed(self, order_id: str, failure: str, at: datetime, *, delivery: bool = False) -> Order:
        order = self._apply(order_id, E.FAIL_DELIVERY if delivery else E.FAIL, at, failure=failure)
        self.lab.pop(order_id, None)
        return order

    def mark_needs_reconciliation(self, order_id: str, reason: str, at: datetime) -> Order:
        order = self._apply(order_id, E.STUCK, at, failure=self.get_order(order_id).failure or reason)
        self.lab.pop(order_id, None)
        return order

    def set_persona(self, order_id: str, persona_id: str, at: datetime) -> Order:
        order = self.get_order(order_id)
        if order.persona_id not in (None, persona_id):
            raise InvalidState(f"order {order_id} already has a persona")
        return self._fields(order_id, at, persona_id=persona_id)

    def record_marketplace_order(self, order_id: str, marketplace_order_id: str, price: int, at: datetime) -> Order:
        return self._fields(order_id, at, marketplace_order_id=marketplace_order_id, price=price)

    def record_refund(self, order_id: str, refunded: int, at: datetime) -> Order:
        return self._fields(order_id, at, refunded=refunded)

    def record_recommendations(self, order_id: str, recommendations: list[dict[str, Any]], at: datetime) -> Order:
        return self._fields(order_id, at, recommendations=recommendations)

    def record_service_quality(self, order_id: str, score: float, detail: Mapping[str, Any], at: datetime) -> Order:
        return self._fields(order_id, at, service_quality=score)

    def arm(self, order_id: str, point: str, token: str) -> Mapping[str, Any] | None:
        self.check("arm")
        self.get_order(order_id)
        self.tokens[(order_id, point)] = token
        return self.arrivals.get((order_id, point))

    def arrive(self, order_id: str, point: str, payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
        self.check("arrive")
        self.get_order(order_id)
        with self._lock:
            stored = self.arrivals.setdefault((order_id, point), dict(payload))
        return stored, self.tokens.get((order_id, point))

    # --- second unit (issue 10 item 1)
    def create_second_unit(self, parent_order_id: str, unit: Order) -> tuple[Order, bool]:
        self.check("create_second_unit")
        with self._lock:
            parent = self.get_order(parent_order_id)
            if unit.order_id in self.orders:
                return self.orders[unit.order_id], False
            if parent.second_unit_order_id not in (None, unit.order_id):
                raise InvalidState(f"order {parent_order_id} already has second unit {parent.second_unit_order_id}")
            self._rounds.get_round(unit.program_id, unit.round_id)
            self.orders[unit.order_id] = unit
            self.orders[parent_order_id] = parent.model_copy(update={"second_unit_order_id": unit.order_id})
            self._rounds.add_second_unit(unit.program_id, unit.round_id)
            return unit, True

    # --- end second unit

    def finalize(self, order_id: str, program_id: str, round_id: str) -> Round:
        self.check("finalize")
        with self._lock:
            if order_id in self.finalized:
                return self._rounds.get_round(program_id, round_id)
            self.finalized.add(order_id)
            return self._rounds.add_settled(program_id, round_id)

    def put_verdict(self, verdict: Verdict) -> tuple[Verdict, bool]:
        self.check("put_verdict")
        with self._lock:
            key = (verdict.order_id, verdict.attempt)
            if key in self.verdicts:
                return self.verdicts[key], False
            if self.get_order(verdict.order_id).lab_attempt != verdict.attempt:
                raise InvalidState(f"sample {verdict.order_id} is no longer at lab attempt {verdict.attempt}")
            self.verdicts[key] = verdict
            return verdict, True

    def get_verdict(self, order_id: str, attempt: int | None = None) -> Verdict | None:
        if attempt is None:
            verdicts = self.list_verdicts(order_id)
            return verdicts[-1] if verdicts else None
        return self.verdicts.get((order_id, attempt))

    def record_confirmed(self, seller_id: str, order_id: str, at: datetime) -> None:
        self.confirmed.setdefault(seller_id, {})[order_id] = at

    def confirmed_history(self, seller_id: str) -> list[datetime]:
        # appeals (issue 10 item 2): an entry rescinded by an overturned appeal is kept but not counted
        rescinded = self.rescinded_confirmed.get(seller_id, {})
        return sorted(at for o, at in self.confirmed.get(seller_id, {}).items() if o not in rescinded)


class FakeCustody(Failures, AnchoredFakeCustody):
    """The anchored in-memory custody repository (tests/custody_fake.py) with injectable failures."""

    def __init__(self) -> None:
        Failures.__init__(self)
        AnchoredFakeCustody.__init__(self)

    def append(self, entry: CustodyEntry) -> Anchor:
        self.check("append")
        return AnchoredFakeCustody.append(self, entry)


class FakePersonas(Failures):
    def __init__(self) -> None:
        super().__init__()
        self.pool: dict[str, dict[str, dict[str, Any]]] = {}
        self.uses: dict[tuple[str, str], datetime] = {}
        self.refs: dict[tuple[str, str], str] = {}

    def ensure_pool(self, program_id: str, size: int) -> None:
        pool = self.pool.setdefault(program_id, {})
        for i in range(size):
            pool.setdefault(f"{program_id}-p{i:03d}", {"week": "", "week_count": 0, "refusals": 0, "retired": False})

    def states(self, program_id: str, seller_id: str) -> list[PersonaState]:
        return [
            PersonaState(
                persona_id=pid,
                week=p["week"],
                week_count=p["week_count"],
                refusals=p["refusals"],
                retired=p["retired"],
                last_bought_from_seller=self.uses.get((pid, seller_id)),
            )
            for pid, p in sorted(self.pool.get(program_id, {}).items())
        ]

    def claim(
        self, program_id: str, persona_id: str, seller_id: str, order_id: str, now: datetime, policy: PersonaPolicy
    ) -> bool:
        p = self.pool[program_id][persona_id]
        week = iso_week(now)
        if p["retired"]:
            return False
        count = p["week_count"] if p["week"] == week else 0
        last = self.uses.get((persona_id, seller_id))
        if count >= policy.weekly_cap or (last is not None and last >= now - policy.cooldown):
            return False
        p["week"], p["week_count"] = week, count + 1
        self.uses[(persona_id, seller_id)] = now
        return True

    def record_refusal(self, program_id: str, persona_id: str, retire_after: int) -> None:
        p = self.pool[program_id][persona_id]
        p["refusals"] += 1
        if p["refusals"] >= retire_after:
            p["retired"] = True

    def account_ref(self, program_id: str, persona_id: str) -> str:
        key = (program_id, persona_id)
        if key not in self.refs:
            self.refs[key] = "acct-" + hashlib.sha256(f"fake|{program_id}|{persona_id}".encode()).hexdigest()[:20]
        return self.refs[key]

    def persona_secret(self, program_id: str, persona_id: str) -> dict[str, Any]:
        return {"persona_id": persona_id, **self.pool[program_id][persona_id]}


@dataclass
class _Hold:
    amount: int
    state: str = "reserved"
    captured: int = 0
    recovered: int = 0
    reserved_at: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)


class FakeLedger(Failures):
    """The two-phase ledger's semantics in memory (keyed, idempotent, journalled)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._clock = clock
        self._lock = threading.Lock()
        self.accounts: dict[str, dict[str, Any]] = {}
        self.balances: dict[str, Balance] = {}
        self.hold_of: dict[tuple[str, str], _Hold] = {}
        self.lines: dict[str, list[JournalEntry]] = {}
        self.done: dict[tuple[str, str], tuple[str, int]] = {}
        self.thresholds: set[tuple[str, float]] = set()

    def _acct(self, program_id: str) -> dict[str, Any]:
        try:
            return self.accounts[program_id]
        except KeyError:
            raise NotFound(f"no ledger account for {program_id}", details=[{"field": "program_id"}]) from None

    def _replay(self, program_id: str, key: str, fp: str) -> LedgerResult | None:
        done = self.done.get((program_id, key))
        if done is None:
            return None
        if done[0] != fp:
            raise IdempotencyConflict(f"{key} was booked with other arguments")
        return LedgerResult(key, key.split("#")[-1], done[1], self.balances[program_id], replayed=True)

    def _book(self, program_id: str, op: Op, subject: str, fp: str, amount: int, **d: int) -> LedgerResult:
        b = self.balances[program_id]
        b = replace(
            b,
            funded=b.funded + d.get("funded", 0),
            available=b.available + d.get("available", 0),
            reserved=b.reserved + d.get("reserved", 0),
            captured=b.captured + d.get("captured", 0),
            recovered=b.recovered + d.get("recovered", 0),
        )
        b.check()
        self.balances[program_id] = b
        key = op_key(subject, op)
        self.done[(program_id, key)] = (fp, amount)
        hold = self.hold_of.get((program_id, subject))
        self.lines.setdefault(program_id, []).append(
            JournalEntry(
                program_id=program_id,
                key=key,
                op=op,
                subject=subject,
                d_available=d.get("available", 0),
                d_reserved=d.get("reserved", 0),
                d_captured=d.get("captured", 0),
                d_recovered=d.get("recovered", 0),
                d_funded=d.get("funded", 0),
                at=self._clock.now().isoformat(),
                attributes=dict(hold.attrs) if hold else {},
            )
        )
        return LedgerResult(key, op.value, amount, b)

    def open_account(self, program_id: str, currency: str, per_order_cap: int | None) -> None:
        acct = self.accounts.setdefault(program_id, {"currency": currency, "cap": per_order_cap})
        if acct != {"currency": currency, "cap": per_order_cap}:
            raise Conflict("account exists with other terms")
        self.balances.setdefault(program_id, Balance())

    def fund(self, program_id: str, reference: str, amount: int, currency: str) -> LedgerResult:
        with self._lock:
            self._currency(program_id, currency)
            fp = fingerprint(Op.FUND, reference, {"amount": amount, "currency": currency})
            return self._replay(program_id, op_key(reference, Op.FUND), fp) or self._book(
                program_id, Op.FUND, reference, fp, amount, funded=amount, available=amount
            )

    def _currency(self, program_id: str, currency: str) -> None:
        if self._acct(program_id)["currency"] != currency:
            raise CurrencyMismatch(f"the programme's currency is not {currency}")

    def reserve(
        self, program_id: str, order_id: str, amount: int, currency: str, attributes: Mapping[str, Any]
    ) -> LedgerResult:
        self.check("reserve")
        with self._lock:
            self._currency(program_id, currency)
            fp = fingerprint(Op.RESERVE, order_id, {"amount": amount, "currency": currency})
            replayed = self._replay(program_id, op_key(order_id, Op.RESERVE), fp)
            if replayed:
                return replayed
            if self.balances[program_id].available < amount:
                raise InsufficientFunds(f"cannot reserve {amount}")
            self.hold_of[(program_id, order_id)] = _Hold(
                amount, reserved_at=self._clock.now().isoformat(), attrs=dict(attributes)
            )
            return self._book(program_id, Op.RESERVE, order_id, fp, amount, available=-amount, reserved=amount)

    def _hold(self, program_id: str, order_id: str) -> _Hold:
        self._acct(program_id)
        try:
            return self.hold_of[(program_id, order_id)]
        except KeyError:
            raise NotFound(f"order {order_id} has no reservation", details=[{"field": "order_id"}]) from None

    def capture(self, program_id: str, order_id: str, actual: int, currency: str) -> LedgerResult:
        self.check("capture")
        with self._lock:
            self._currency(program_id, currency)
            fp = fingerprint(Op.CAPTURE, order_id, {"actual": actual, "currency": currency})
            replayed = self._replay(program_id, op_key(order_id, Op.CAPTURE), fp)
            if replayed:
                return replayed
            hold = self._hold(program_id, order_id)
            if hold.state != "reserved":
                raise InvalidState(f"cannot capture order {order_id}: its reservation is {hold.state}")
            cap = self.accounts[program_id]["cap"]
            if actual > hold.amount and (cap is None or actual > cap):
                raise InvalidInput(f"actual {actual} exceeds the reservation {hold.amount} and the per-order cap {cap}")
            if actual - hold.amount > self.balances[program_id].available:
                raise InsufficientFunds("cannot cover the difference")
            hold.state, hold.captured = "captured", actual
            return self._book(
                program_id,
                Op.CAPTURE,
                order_id,
                fp,
                actual,
                available=hold.amount - actual,
                reserved=-hold.amount,
                captured=actual,
            )

    def release(self, program_id: str, order_id: str) -> LedgerResult:
        self.check("release")
        with self._lock:
            fp = fingerprint(Op.RELEASE, order_id, {})
            replayed = self._replay(program_id, op_key(order_id, Op.RELEASE), fp)
            if replayed:
                return replayed
            hold = self._hold(program_id, order_id)
            if hold.state != "reserved":
                raise InvalidState(f"cannot release order {order_id}: its reservation is {hold.state}")
            hold.state = "released"
            return self._book(
                program_id, Op.RELEASE, order_id, fp, hold.amount, available=hold.amount, reserved=-hold.amount
            )

    def recover(self, program_id: str, order_id: str, amount: int, currency: str) -> LedgerResult:
        self.check("recover")
        with self._lock:
            fp = fingerprint(Op.RECOVER, order_id, {"amount": amount, "currency": currency})
            replayed = self._replay(program_id, op_key(order_id, Op.RECOVER), fp)
            if replayed:
                return replayed
            hold = self._hold(program_id, order_id)
            if hold.state != "captured" or amount > hold.captured:
                raise InvalidState(f"cannot recover {amount} for order {order_id}")
            hold.recovered = amount
            return self._book(program_id, Op.RECOVER, order_id, fp, amount, available=amount, recovered=amount)

    def balance(self, program_id: str) -> Balance:
        self._acct(program_id)
        return self.balances[program_id]

    def journal(self, program_id: str) -> list[JournalEntry]:
        return list(self.lines.get(program_id, []))

    def threshold_marked(self, program_id: str, threshold: float) -> bool:
        return (program_id, threshold) in self.thresholds

    def mark_threshold(self, program_id: str, threshold: float) -> bool:
        self.check("mark_threshold")
        if (program_id, threshold) in self.thresholds:
            return False
        self.thresholds.add((program_id, threshold))
        return True

    def holds(self, program_id: str, state: str | None = None) -> list[dict[str, Any]]:
        return [
            {
                "order_id": oid,
                "state": h.state,
                "amount": h.amount,
                "captured": h.captured,
                "recovered": h.recovered,
                "reserved_at": h.reserved_at,
            }
            for (pid, oid), h in self.hold_of.items()
            if pid == program_id and (state is None or h.state == state)
        ]

    def list_accounts(self) -> list[str]:
        return sorted(self.accounts)


class FakeEvents(Failures):
    """The bus: keeps every published envelope; ``unique`` dedupes by event id, as subscribers must."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[Envelope] = []

    def publish(self, events: Sequence[Envelope]) -> None:
        self.check("publish")
        self.published.extend(events)

    def unique(self, detail_type: str | None = None) -> dict[str, Envelope]:
        return {
            e.detail["metadata"]["event_id"]: e
            for e in self.published
            if detail_type is None or e.detail_type == detail_type
        }

    def types(self) -> list[str]:
        return sorted(e.detail_type for e in self.unique().values())


class FakeWorkflow(Failures):
    def __init__(self) -> None:
        super().__init__()
        self.started: dict[tuple[str, str], dict[str, Any]] = {}
        self.resumed: dict[str, dict[str, Any]] = {}
        self.failed: dict[str, tuple[str, str]] = {}
        self.running: set[tuple[str, str]] = set()
        self.succeed_calls = 0

    def start(self, machine: str, name: str, payload: Mapping[str, Any]) -> str:
        self.started.setdefault((machine, name), dict(payload))
        self.running.add((machine, name))
        return f"arn:fake:{machine}:{name}"

    def succeed(self, token: str, output: Mapping[str, Any]) -> None:
        self.check("succeed")
        self.succeed_calls += 1
        self.resumed.setdefault(token, dict(output))

    def fail(self, token: str, error: str, cause: str) -> None:
        self.check("fail")
        self.failed.setdefault(token, (error, cause))

    def is_running(self, machine: str, name: str) -> bool:
        return (machine, name) in self.running


@dataclass
class TruthOrder:
    marketplace_order_id: str
    order_id: str
    seller_id: str
    account_ref: str
    price: int
    status: str = "placed"
    refunded: int = 0


class FakeMarketplace(Failures):
    """The marketplace with its ground truth (``orders`` by our order id). ``commit_then_fail`` makes the next
    placement commit and then lose its reply (the caller sees ``MarketplaceUnavailable``)."""

    def __init__(self) -> None:
        super().__init__()
        self.orders: dict[str, TruthOrder] = {}
        self.refuse: set[str] = set()  # seller ids that refuse
        self.price_of: Callable[[str, int], int] = lambda seller_id, max_price: max_price - 1
        self.lose_reply: int = 0
        self.cancel_fails: int = 0
        self.seen_buyers: list[str] = []

    def place_order(
        self, order_id: str, seller_id: str, account_ref: str, max_price: int, currency: str
    ) -> PlacedOrder:
        self.check("place_order")
        self.seen_buyers.append(account_ref)
        if order_id not in self.orders:
            if seller_id in self.refuse:
                raise OrderRefused("seller refused")
            price = self.price_of(seller_id, max_price)
            mid = "mo-" + hashlib.sha256(order_id.encode()).hexdigest()[:12]
            self.orders[order_id] = TruthOrder(mid, order_id, seller_id, account_ref, price)
        if self.lose_reply > 0:
            self.lose_reply -= 1
            raise MarketplaceUnavailable("the reply was lost")
        t = self.orders[order_id]
        return PlacedOrder(t.marketplace_order_id, t.price)

    def find_order(self, order_id: str) -> MarketOrder | None:
        self.check("find_order")
        t = self.orders.get(order_id)
        return None if t is None else MarketOrder(t.marketplace_order_id, t.price, t.status)

    def _by_mid(self, marketplace_order_id: str) -> TruthOrder:
        t = next((o for o in self.orders.values() if o.marketplace_order_id == marketplace_order_id), None)
        if t is None:
            raise NotFound(f"unknown marketplace order {marketplace_order_id}")
        return t

    def cancel_order(self, marketplace_order_id: str) -> None:
        self.check("cancel_order")
        if self.cancel_fails > 0:
            self.cancel_fails -= 1
            raise MarketplaceUnavailable("cancel failed")
        t = self._by_mid(marketplace_order_id)
        if t.status == "delivered":
            raise OrderRefused("already delivered")
        t.status = "cancelled"

    def deliver(self, order_id: str) -> None:
        t = self.orders[order_id]
        if t.status == "placed":
            t.status = "delivered"

    def request_refund(self, marketplace_order_id: str, amount: int, reason: str) -> int:
        self.check("request_refund")
        t = self._by_mid(marketplace_order_id)
        if t.refunded == 0:
            t.refunded = min(amount, t.price)
        return t.refunded


class FakeEvidence:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.docs: dict[str, Any] = {}
        self.packages: dict[str, bytes] = {}  # evidence (issue 10 item 5)

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self.blobs[digest] = data
        return digest

    def put_json(self, key: str, payload: Any) -> tuple[str, str]:
        self.docs[key] = copy.deepcopy(payload)
        return "fake-bucket", key

    # --- evidence (issue 10 items 0 and 5)
    def exists(self, digest: str) -> bool:
        return digest in self.blobs

    def get_bytes(self, digest: str) -> bytes | None:
        return self.blobs.get(digest)

    def put_package(self, manifest_sha256: str, data: bytes) -> str:
        key = f"packages/sha256/{manifest_sha256}.zip"
        self.packages[key] = data
        return key

    def package_url(self, key: str, expires_seconds: int) -> str:
        return f"https://fake-bucket.example/{key}?expires={expires_seconds}"

    # --- end evidence


class FakeMetrics:
    def __init__(self) -> None:
        self.points: list[tuple[str, float, str, dict[str, str]]] = []

    def add(self, name: str, value: float, unit: str, dimensions: Mapping[str, str] | None = None) -> None:
        self.points.append((name, value, unit, dict(dimensions or {})))

    def flush(self) -> None:
        return None


# ------------------------------------------------------------------ rings and leads (issue 10 items 3 and 4)


class FakeRings(Failures):
    def __init__(self) -> None:
        super().__init__()
        self.fps: dict[tuple[str, str], set[tuple[str, str]]] = {}
        self.index: dict[tuple[str, str, str], set[str]] = {}
        self.ring_ptr: dict[tuple[str, str], str] = {}
        self.rings: dict[tuple[str, str], Any] = {}

    def add_fingerprints(self, program_id: str, seller_id: str, fingerprints: Sequence[tuple[str, str]]) -> None:
        self.check("add_fingerprints")
        for kind, digest in fingerprints:
            self.fps.setdefault((program_id, seller_id), set()).add((kind, digest))
            self.index.setdefault((program_id, kind, digest), set()).add(seller_id)

    def fingerprints_of(self, program_id: str, seller_id: str) -> list[tuple[str, str]]:
        return sorted(self.fps.get((program_id, seller_id), set()))

    def holders(self, program_id: str, kind: str, digest: str, limit: int) -> list[str]:
        return sorted(self.index.get((program_id, kind, digest), set()))[:limit]

    def ring_of(self, program_id: str, seller_id: str) -> str | None:
        return self.ring_ptr.get((program_id, seller_id))

    def set_ring_of(self, program_id: str, seller_ids: Sequence[str], ring_id: str) -> None:
        self.check("set_ring_of")
        for s in seller_ids:
            self.ring_ptr[(program_id, s)] = ring_id

    def get_ring(self, program_id: str, ring_id: str) -> Any:
        return self.rings.get((program_id, ring_id))

    def save_ring(self, ring: Any, expected_version: int | None) -> bool:
        self.check("save_ring")
        old = self.rings.get((ring.program_id, ring.ring_id))
        if (old is None) != (expected_version is None) or (old is not None and old.version != expected_version):
            return False
        self.rings[(ring.program_id, ring.ring_id)] = ring
        return True

    def list_rings(self, program_id: str) -> list[Any]:
        return sorted((r for (p, _), r in self.rings.items() if p == program_id), key=lambda r: r.ring_id)


class FakeLeads(Failures):
    def __init__(self) -> None:
        super().__init__()
        self.sales: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.testbuys: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.leads: dict[tuple[str, str], Any] = {}

    def put_sales(self, program_id: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        self.check("put_sales")
        out: dict[str, str] = {}
        for row in rows:
            fields = {k: row[k] for k in ("seller_id", "period", "units", "orders", "gross_sales")}
            months = self.sales.setdefault((program_id, str(row["seller_id"])), {})
            old = months.get(str(row["period"]))
            key = f"{row['seller_id']}|{row['period']}"
            out[key] = "unchanged" if old == fields else "new" if old is None else "replaced"
            months[str(row["period"])] = fields
        return out

    def sales_of(self, program_id: str, seller_id: str) -> dict[str, int]:
        return {p: int(r["gross_sales"]) for p, r in self.sales.get((program_id, seller_id), {}).items()}

    def record_testbuy(self, program_id: str, seller_id: str, order_id: str, verdict: str, at: datetime) -> None:
        self.check("record_testbuy")
        self.testbuys.setdefault((program_id, seller_id), {})[order_id] = {
            "order_id": order_id,
            "verdict": verdict,
            "at": at,
        }

    def testbuys_of(self, program_id: str, seller_id: str) -> list[dict[str, Any]]:
        return [dict(v) for _, v in sorted(self.testbuys.get((program_id, seller_id), {}).items())]

    def create_lead(self, lead: Any) -> tuple[Any, bool]:
        self.check("create_lead")
        key = (lead.program_id, lead.lead_id)
        if key in self.leads:
            return self.leads[key], False
        self.leads[key] = lead
        return lead, True

    def get_lead(self, program_id: str, lead_id: str) -> Any:
        try:
            return self.leads[(program_id, lead_id)]
        except KeyError:
            raise NotFound(f"no lead {lead_id}", details=[{"field": "lead_id"}]) from None

    def list_leads(self, program_id: str) -> list[Any]:
        return sorted((v for (p, _), v in self.leads.items() if p == program_id), key=lambda x: x.lead_id)

    def update_lead_status(
        self, program_id: str, lead_id: str, from_status: str, to_status: str, entry: Mapping[str, Any], at: datetime
    ) -> Any:
        self.check("update_lead_status")
        lead = self.get_lead(program_id, lead_id)
        if lead.status.value != from_status:
            raise InvalidState(f"lead {lead_id} is no longer {from_status}", details=[{"field": "status"}])
        new = lead.model_copy(
            update={
                "status": type(lead.status)(to_status),
                "history": [*lead.history, dict(entry)],
                "updated_at": at,
                "version": lead.version + 1,
            }
        )
        self.leads[(program_id, lead_id)] = new
        return new

    def set_package(self, program_id: str, lead_id: str, package_sha256: str) -> Any:
        lead = self.get_lead(program_id, lead_id)
        new = lead.model_copy(update={"package_sha256": package_sha256})
        self.leads[(program_id, lead_id)] = new
        return new


# --- appeals (issue 10 item 2) -------------------------------------------------------------------------------------
class FakeAppeals(Failures):
    """``AppealRepository``: the appeal table applied like the DynamoDB adapter (conditional on the from-status,
    idempotent on the target); the order corrections write to the ``FakeOrders`` it is given."""

    def __init__(self, orders: FakeOrders) -> None:
        super().__init__()
        self._orders = orders
        self._lock = threading.Lock()
        self.appeals: dict[str, Appeal] = {}
        self.retests: dict[str, RetestVerdict] = {}
        self.tokens: dict[str, str] = {}
        self.arrivals: dict[str, dict[str, Any]] = {}

    def create(self, appeal: Appeal) -> tuple[Appeal, bool]:
        self.check("create")
        with self._lock:
            if appeal.appeal_id in self.appeals:
                return self.appeals[appeal.appeal_id], False
            self.appeals[appeal.appeal_id] = appeal
            return appeal, True

    def get(self, appeal_id: str) -> Appeal:
        self.check("get")
        try:
            return self.appeals[appeal_id]
        except KeyError:
            raise NotFound(f"no appeal {appeal_id}", details=[{"field": "appeal_id"}]) from None

    def list_program(self, program_id: str) -> list[Appeal]:
        return [a for a in self.appeals.values() if a.program_id == program_id]

    def lab_queue(self, lab_id: str) -> list[Appeal]:
        return [a for a in self.appeals.values() if a.status is AppealStatus.RETEST_ASSIGNED and a.retest_lab == lab_id]

    def apply(
        self, appeal_id: str, event: AppealEvent, at: datetime, fields: Mapping[str, Any] | None = None
    ) -> Appeal:
        self.check(f"apply:{event.value}")
        with self._lock:
            appeal = self.get(appeal_id)
            to = appeal_rules.target(event)
            if appeal.status not in appeal_rules.sources(event):
                if appeal.status is to:
                    return appeal
                appeal_rules.transition(appeal.status, event)  # raises InvalidState
            appeal = Appeal.model_validate(
                {**appeal.model_dump(), **dict(fields or {}), "status": to, "updated_at": at}
            )
            self.appeals[appeal_id] = appeal
            return appeal

    def arm(self, appeal_id: str, token: str) -> Mapping[str, Any] | None:
        self.get(appeal_id)
        self.tokens[appeal_id] = token
        return self.arrivals.get(appeal_id)

    def arrive(self, appeal_id: str, payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
        self.check("arrive")
        self.get(appeal_id)
        stored = self.arrivals.setdefault(appeal_id, dict(payload))
        return stored, self.tokens.get(appeal_id)

    def put_retest_verdict(self, verdict: RetestVerdict) -> tuple[RetestVerdict, bool]:
        self.check("put_retest_verdict")
        with self._lock:
            if verdict.appeal_id in self.retests:
                return self.retests[verdict.appeal_id], False
            self.retests[verdict.appeal_id] = verdict
            return verdict, True

    def get_retest_verdict(self, appeal_id: str) -> RetestVerdict | None:
        return self.retests.get(appeal_id)

    def overturn_order(
        self, order_id: str, appeal_id: str, original: VerdictKind, effective: VerdictKind, at: datetime
    ) -> Order:
        self.check("overturn_order")
        order = self._orders.get_order(order_id)
        if order.verdict_overturned_by == appeal_id:
            return order
        if order.verdict is not original or order.verdict_overturned_by is not None:
            raise InvalidState(f"order {order_id} no longer has verdict {original.value}")
        return self._orders._fields(
            order_id, at, verdict=effective, original_verdict=original, verdict_overturned_by=appeal_id
        )

    def rescind_confirmed(self, seller_id: str, order_id: str, appeal_id: str, at: datetime) -> None:
        self.check("rescind_confirmed")
        if order_id in self._orders.confirmed.get(seller_id, {}):
            self._orders.rescinded_confirmed.setdefault(seller_id, {})[order_id] = appeal_id


# --- end appeals ---------------------------------------------------------------------------------------------------


@dataclass
class World:
    """All fakes wired together (``w.deps`` is what a service receives)."""

    clock: FakeClock
    programs: FakePrograms
    rounds: FakeRounds
    orders: FakeOrders
    custody: FakeCustody
    personas: FakePersonas
    ledger: FakeLedger
    events: FakeEvents
    workflow: FakeWorkflow
    marketplace: FakeMarketplace
    evidence: FakeEvidence
    metrics: FakeMetrics
    rings: FakeRings
    leads: FakeLeads
    deps: Deps
    appeals: FakeAppeals | None = None  # appeals (issue 10 item 2)


def world(**overrides: Any) -> World:
    clock = FakeClock()
    rounds = FakeRounds()
    parts: dict[str, Any] = {
        "clock": clock,
        "programs": FakePrograms(),
        "rounds": rounds,
        "orders": FakeOrders(rounds),
        "custody": FakeCustody(),
        "personas": FakePersonas(),
        "ledger": FakeLedger(clock),
        "events": FakeEvents(),
        "workflow": FakeWorkflow(),
        "marketplace": FakeMarketplace(),
        "evidence": FakeEvidence(),
        "metrics": FakeMetrics(),
        "rings": FakeRings(),  # issue 10 items 3 and 4
        "leads": FakeLeads(),
    }
    parts.update(overrides)
    appeals = FakeAppeals(parts["orders"])  # appeals (issue 10 item 2)
    d = Deps(
        ids=FakeIds(),
        persona_pool_size=8,
        custody_key=LocalHmacKey("k" * 40),
        appeals=appeals,
        manifest_signer=FakeSigner(),  # evidence (issue 10 item 5)
        **parts,
    )
    return World(deps=d, appeals=appeals, **parts)


# --- evidence (issue 10 item 5)
class FakeSigner:
    """An in-memory ECDSA P-256 signer (the KMS adapter's stand-in): deterministic key from ``secret``."""

    def __init__(self, secret: int = 0xC0FFEE, key_id: str = "fake-signing-key") -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        self._key = ec.derive_private_key(secret, ec.SECP256R1())
        self._id = key_id
        self.signed: list[bytes] = []

    def key_id(self) -> str:
        return self._id

    def algorithm(self) -> str:
        return "ECDSA_SHA_256"

    def sign(self, message: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        assert len(message) <= 4096, "KMS signs at most 4,096 bytes (RAW)"
        self.signed.append(message)
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))

    def public_key_der(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )


# --- end evidence
