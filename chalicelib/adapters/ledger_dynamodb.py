"""The budget ledger on DynamoDB: every operation is one conditional ``TransactWriteItems``.

Items, all under ``pk = ACCOUNT#<program>``:
- ``BALANCE``: funded, available, reserved, captured, recovered, currency, per_order_cap. Guarded by
  ``available >= :need`` so no interleaving of concurrent transactions can overdraw.
- ``HOLD#<order>``: the order's reservation and its state (reserved -> captured | released), with reporting attributes.
- ``J#<subject>#<op>``: the journal line, written with ``attribute_not_exists`` in the same transaction. It is the
  durable idempotency record (it stores the argument fingerprint and the result) and the immutable journal from which
  every balance can be recomputed (``chalicelib.domain.ledger.replay``).
- ``THRESHOLD#<fraction>``: written once when a budget threshold is first crossed (its event is published once).

Every argument is validated here as well as in the API models, so the ledger itself never books zero, a negative
amount or a figure beyond ``MAX_MINOR_UNITS``; totals are capped the same way so balances stay exact in any JSON
client. A rejected call changes nothing.

Happy-path cost (DynamoDB requests): reserve 3, capture 4, release 3, recover 4, whatever the number of orders.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.adapters.dynamo_codec import av, cancellation_codes, error_code, from_item, to_item
from chalicelib.domain.errors import (
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    InvalidState,
    NotFound,
    TransientError,
)
from chalicelib.domain.ledger import (
    Balance,
    JournalEntry,
    Op,
    check_amount,
    check_currency,
    check_subject,
    fingerprint,
    op_key,
)
from chalicelib.domain.money import MAX_MINOR_UNITS, require_currency
from chalicelib.ports import Clock, LedgerResult

_BALANCE = "BALANCE"
_CCF = "ConditionalCheckFailed"
# Cancellation reasons after which the transaction did not apply and may simply be sent again.
_RETRYABLE = frozenset({"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"})
_ATTEMPTS = 6


class DynamoLedger:
    def __init__(self, client: Any, table: str, clock: Clock) -> None:
        self._db = client
        self._table = table
        self._clock = clock
        # botocore's ClientError, taken from the client so this module imports neither boto3 nor botocore.
        self._client_error: type[Exception] = client.exceptions.ClientError

    # ------------------------------------------------------------------------------------------------ helpers
    @staticmethod
    def _pk(program_id: str) -> str:
        return f"ACCOUNT#{program_id}"

    def _key(self, program_id: str, sk: str) -> dict[str, Any]:
        return {"pk": av(self._pk(program_id)), "sk": av(sk)}

    def _get(self, program_id: str, sk: str) -> dict[str, Any] | None:
        resp = self._db.get_item(TableName=self._table, Key=self._key(program_id, sk), ConsistentRead=True)
        return from_item(resp["Item"]) if "Item" in resp else None

    def _account(self, program_id: str) -> dict[str, Any]:
        check_subject("program_id", program_id)
        acct = self._get(program_id, _BALANCE)
        if acct is None:
            raise NotFound(f"no ledger account for programme {program_id}", details=[{"field": "program_id"}])
        return acct

    def _journal_item(
        self,
        program_id: str,
        op: Op,
        subject: str,
        fp: str,
        amount: int,
        deltas: Mapping[str, int],
        attrs: Mapping[str, Any],
    ) -> dict[str, Any]:
        now = self._clock.now()
        return to_item(
            {
                "pk": self._pk(program_id),
                "sk": f"J#{op_key(subject, op)}",
                "op": op.value,
                "subject": subject,
                "fp": fp,
                "amount": amount,
                "at": now.isoformat(),
                "attrs": {**attrs, "month": now.strftime("%Y-%m")},
                **{f"d_{k}": v for k, v in deltas.items()},
            }
        )

    def _replay_or_raise(self, program_id: str, op: Op, subject: str, fp: str) -> LedgerResult | None:
        """If the journal already holds this key: same fingerprint -> the first result; else a conflict."""
        existing = self._get(program_id, f"J#{op_key(subject, op)}")
        if existing is None:
            return None
        if existing["fp"] != fp:
            raise IdempotencyConflict(
                f"{op.value} for {subject} was already made with different arguments",
                details=[{"field": "amount", "key": op_key(subject, op), "first_amount": int(existing["amount"])}],
            )
        return LedgerResult(op_key(subject, op), op.value, int(existing["amount"]), self.balance(program_id), True)

    def _transact(
        self,
        program_id: str,
        op: Op,
        subject: str,
        fp: str,
        items: list[dict[str, Any]],
        failures: Mapping[int, Callable[[], Exception]],
    ) -> LedgerResult | None:
        """Write ``items`` atomically. Returns the first result if this key was already booked (a replay), else None.

        The journal put is always the last item: its condition failing means this key was used before, which wins
        over every other reason (a replay must not report, say, insufficient funds that the first call did not
        meet). ``failures`` maps the index of any other item to the error its failed condition means.
        """
        for attempt in range(_ATTEMPTS):
            try:
                self._db.transact_write_items(TransactItems=items)
                return None
            except self._client_error as exc:
                if error_code(exc) != "TransactionCanceledException":
                    raise
                codes = cancellation_codes(exc)
                if codes and codes[-1] == _CCF:
                    replay = self._replay_or_raise(program_id, op, subject, fp)
                    if replay is not None:
                        return replay
                for i, code in enumerate(codes):
                    if code == _CCF and i in failures:
                        raise failures[i]() from None
                if _CCF in codes:
                    raise InvalidState(f"{op.value} for {subject} conflicts with a concurrent change; retry") from None
                reasons = set(codes) - {"None"}
                if not reasons or not reasons <= _RETRYABLE:
                    raise  # a validation error or an unknown reason: not ours to paper over
            # Another transaction held one of our items: nothing applied, so sending it again is safe.
            time.sleep(random.uniform(0, 0.01 * 2**attempt))  # nosec B311 # backoff jitter between retries, not a secret
        raise TransientError(f"{op.value} for {subject} kept conflicting with concurrent transactions; retry")

    def _balance_update(
        self,
        program_id: str,
        deltas: Mapping[str, int],
        need: int,
        currency: str | None,
        funded_room: int | None = None,
    ) -> dict[str, Any]:
        sets = ", ".join(f"{k} = {k} + :d_{k}" for k in deltas)
        values = {f":d_{k}": av(v) for k, v in deltas.items()}
        cond = ["attribute_exists(pk)"]
        if need > 0:
            cond.append("available >= :need")
            values[":need"] = av(need)
        if currency is not None:
            cond.append("currency = :cur")
            values[":cur"] = av(currency)
        if funded_room is not None:
            cond.append("funded <= :room")
            values[":room"] = av(funded_room)
        return {
            "Update": {
                "TableName": self._table,
                "Key": self._key(program_id, _BALANCE),
                "UpdateExpression": f"SET {sets}",
                "ConditionExpression": " AND ".join(cond),
                "ExpressionAttributeValues": values,
            }
        }

    def _put_new(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"Put": {"TableName": self._table, "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}}

    def _result(self, program_id: str, op: Op, subject: str, amount: int) -> LedgerResult:
        return LedgerResult(op_key(subject, op), op.value, amount, self.balance(program_id))

    def _hold(self, program_id: str, order_id: str) -> dict[str, Any]:
        hold = self._get(program_id, f"HOLD#{order_id}")
        if hold is None:
            self._account(program_id)  # an unknown programme is reported as such, not as an unknown order
            raise NotFound(f"order {order_id} has no reservation", details=[{"field": "order_id"}])
        return hold

    def _hold_changed(self, program_id: str, order_id: str, op: Op) -> Callable[[], Exception]:
        def make() -> Exception:
            hold = self._get(program_id, f"HOLD#{order_id}") or {"state": "missing"}
            return InvalidState(
                f"cannot {op.value} order {order_id}: its reservation changed concurrently and is now {hold['state']}",
                details=[{"field": "order_id", "state": hold["state"]}],
            )

        return make

    def _wrong_state(self, program_id: str, op: Op, order_id: str, fp: str, hold: Mapping[str, Any]) -> LedgerResult:
        """The hold is not in the state ``op`` needs: a replay of this very call, a conflict, or an invalid state."""
        replay = self._replay_or_raise(program_id, op, order_id, fp)
        if replay is not None:
            return replay
        raise InvalidState(
            f"cannot {op.value} order {order_id}: its reservation is {hold['state']}",
            details=[{"field": "order_id", "state": hold["state"]}],
        )

    def _hold_transition(
        self,
        program_id: str,
        order_id: str,
        from_state: str,
        sets: Mapping[str, Any],
        expect: Mapping[str, Any],
    ) -> dict[str, Any]:
        names = {"#state": "state"}
        values: dict[str, Any] = {":from": av(from_state)}
        set_parts = []
        for i, (k, v) in enumerate(sets.items()):
            names[f"#s{i}"] = k
            values[f":s{i}"] = av(v)
            set_parts.append(f"#s{i} = :s{i}")
        cond = ["#state = :from"]
        for i, (k, v) in enumerate(expect.items()):
            names[f"#e{i}"] = k
            values[f":e{i}"] = av(v)
            cond.append(f"#e{i} = :e{i}")
        return {
            "Update": {
                "TableName": self._table,
                "Key": self._key(program_id, f"HOLD#{order_id}"),
                "UpdateExpression": "SET " + ", ".join(set_parts),
                "ConditionExpression": " AND ".join(cond),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    # ------------------------------------------------------------------------------------------------ operations
    def open_account(self, program_id: str, currency: str, per_order_cap: int | None) -> None:
        """Open the programme's account (idempotent); reopening with another currency or cap is refused."""
        check_subject("program_id", program_id)
        check_currency(currency)
        if per_order_cap is not None:
            check_amount("per_order_cap", per_order_cap)
        item = to_item(
            {
                "pk": self._pk(program_id),
                "sk": _BALANCE,
                "currency": currency,
                "per_order_cap": per_order_cap,
                "funded": 0,
                "available": 0,
                "reserved": 0,
                "captured": 0,
                "recovered": 0,
            }
        )
        try:
            self._db.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except self._client_error as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            acct = self._account(program_id)
            require_currency(acct["currency"], currency)
            if acct.get("per_order_cap") != per_order_cap:
                raise IdempotencyConflict(
                    f"the account of {program_id} was opened with per-order cap {acct.get('per_order_cap')}",
                    details=[{"field": "per_order_cap"}],
                ) from None

    def fund(self, program_id: str, reference: str, amount: int, currency: str) -> LedgerResult:
        check_subject("reference", reference)
        check_amount("amount", amount)
        check_currency(currency)
        acct = self._account(program_id)
        require_currency(acct["currency"], currency)
        fp = fingerprint(Op.FUND, reference, {"amount": amount, "currency": currency})
        deltas = {"funded": amount, "available": amount}
        items = [
            self._balance_update(program_id, deltas, 0, currency, funded_room=MAX_MINOR_UNITS - amount),
            self._put_new(self._journal_item(program_id, Op.FUND, reference, fp, amount, deltas, {})),
        ]

        def too_much() -> Exception:
            return InvalidInput(
                f"funding {amount} would take the programme's total funding above {MAX_MINOR_UNITS} minor units",
                details=[{"field": "amount", "message": "total funding would exceed the maximum"}],
            )

        replay = self._transact(program_id, Op.FUND, reference, fp, items, {0: too_much})
        return replay or self._result(program_id, Op.FUND, reference, amount)

    def reserve(
        self, program_id: str, order_id: str, amount: int, currency: str, attributes: Mapping[str, Any]
    ) -> LedgerResult:
        check_subject("order_id", order_id)
        check_amount("amount", amount)
        check_currency(currency)
        acct = self._account(program_id)
        require_currency(acct["currency"], currency)
        fp = fingerprint(Op.RESERVE, order_id, {"amount": amount, "currency": currency})
        deltas = {"available": -amount, "reserved": amount}
        hold = to_item(
            {
                "pk": self._pk(program_id),
                "sk": f"HOLD#{order_id}",
                "state": "reserved",
                "amount": amount,
                "captured": 0,
                "recovered": 0,
                "attrs": dict(attributes),
                "reserved_at": self._clock.now().isoformat(),
            }
        )
        items = [
            self._balance_update(program_id, deltas, amount, currency),
            self._put_new(hold),
            self._put_new(self._journal_item(program_id, Op.RESERVE, order_id, fp, amount, deltas, attributes)),
        ]

        def no_funds() -> Exception:
            available = int(self.balance(program_id).available)
            return InsufficientFunds(
                f"reserving {amount} would overdraw programme {program_id} (available {available})",
                details=[{"field": "amount", "available": available}],
            )

        replay = self._transact(program_id, Op.RESERVE, order_id, fp, items, {0: no_funds})
        return replay or self._result(program_id, Op.RESERVE, order_id, amount)

    def capture(self, program_id: str, order_id: str, actual: int, currency: str) -> LedgerResult:
        """Post ``actual`` and return the rest of the reservation; above it only within the per-order cap."""
        check_subject("order_id", order_id)
        check_amount("actual", actual)
        check_currency(currency)
        acct = self._account(program_id)
        require_currency(acct["currency"], currency)
        fp = fingerprint(Op.CAPTURE, order_id, {"actual": actual, "currency": currency})
        hold = self._hold(program_id, order_id)
        if hold["state"] != "reserved":
            return self._wrong_state(program_id, Op.CAPTURE, order_id, fp, hold)
        reserved = int(hold["amount"])
        cap = acct.get("per_order_cap")
        if actual > reserved and (cap is None or actual > int(cap)):
            raise InvalidInput(
                f"actual {actual} exceeds the reservation {reserved} and the per-order cap {cap}",
                details=[{"field": "actual", "reserved": reserved, "per_order_cap": cap}],
            )
        deltas = {"available": reserved - actual, "reserved": -reserved, "captured": actual}
        need = max(0, actual - reserved)  # the difference above the reservation is reserved in the same transaction
        items = [
            self._balance_update(program_id, deltas, need, currency),
            self._hold_transition(
                program_id, order_id, "reserved", {"state": "captured", "captured": actual}, {"amount": reserved}
            ),
            self._put_new(self._journal_item(program_id, Op.CAPTURE, order_id, fp, actual, deltas, hold["attrs"])),
        ]

        def no_funds() -> Exception:
            return InsufficientFunds(
                f"capturing {actual} needs {need} more than was reserved and the budget cannot cover it",
                details=[{"field": "actual", "reserved": reserved}],
            )

        failures = {0: no_funds, 1: self._hold_changed(program_id, order_id, Op.CAPTURE)}
        replay = self._transact(program_id, Op.CAPTURE, order_id, fp, items, failures)
        return replay or self._result(program_id, Op.CAPTURE, order_id, actual)

    def release(self, program_id: str, order_id: str) -> LedgerResult:
        check_subject("order_id", order_id)
        fp = fingerprint(Op.RELEASE, order_id, {})
        hold = self._hold(program_id, order_id)
        if hold["state"] != "reserved":
            return self._wrong_state(program_id, Op.RELEASE, order_id, fp, hold)
        reserved = int(hold["amount"])
        deltas = {"available": reserved, "reserved": -reserved}
        items = [
            self._balance_update(program_id, deltas, 0, None),
            self._hold_transition(program_id, order_id, "reserved", {"state": "released"}, {"amount": reserved}),
            self._put_new(self._journal_item(program_id, Op.RELEASE, order_id, fp, reserved, deltas, hold["attrs"])),
        ]
        failures = {1: self._hold_changed(program_id, order_id, Op.RELEASE)}
        replay = self._transact(program_id, Op.RELEASE, order_id, fp, items, failures)
        return replay or self._result(program_id, Op.RELEASE, order_id, reserved)

    def recover(self, program_id: str, order_id: str, amount: int, currency: str) -> LedgerResult:
        """Book a refund of ``amount`` (at most what was captured); once per order, like every operation."""
        check_subject("order_id", order_id)
        check_amount("amount", amount)
        check_currency(currency)
        acct = self._account(program_id)
        require_currency(acct["currency"], currency)
        fp = fingerprint(Op.RECOVER, order_id, {"amount": amount, "currency": currency})
        hold = self._hold(program_id, order_id)
        if hold["state"] != "captured":
            return self._wrong_state(program_id, Op.RECOVER, order_id, fp, hold)
        captured, already = int(hold["captured"]), int(hold["recovered"])
        if already + amount > captured:
            replay = self._replay_or_raise(program_id, Op.RECOVER, order_id, fp)
            if replay is not None:
                return replay
            raise InvalidInput(
                f"recovering {amount} would exceed the captured {captured} (already recovered {already})",
                details=[{"field": "amount", "captured": captured, "recovered": already}],
            )
        deltas = {"available": amount, "recovered": amount}
        items = [
            self._balance_update(program_id, deltas, 0, currency),
            self._hold_transition(
                program_id, order_id, "captured", {"recovered": already + amount}, {"recovered": already}
            ),
            self._put_new(self._journal_item(program_id, Op.RECOVER, order_id, fp, amount, deltas, hold["attrs"])),
        ]
        failures = {1: self._hold_changed(program_id, order_id, Op.RECOVER)}
        replay = self._transact(program_id, Op.RECOVER, order_id, fp, items, failures)
        return replay or self._result(program_id, Op.RECOVER, order_id, amount)

    def threshold_marked(self, program_id: str, threshold: float) -> bool:
        return self._get(program_id, f"THRESHOLD#{threshold:.4f}") is not None

    def mark_threshold(self, program_id: str, threshold: float) -> bool:
        item = to_item(
            {
                "pk": self._pk(program_id),
                "sk": f"THRESHOLD#{threshold:.4f}",
                "at": self._clock.now().isoformat(),
            }
        )
        try:
            self._db.put_item(TableName=self._table, Item=item, ConditionExpression="attribute_not_exists(pk)")
        except self._client_error as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    # ------------------------------------------------------------------------------------------------ reads
    def balance(self, program_id: str) -> Balance:
        acct = self._account(program_id)
        return Balance(
            funded=int(acct["funded"]),
            available=int(acct["available"]),
            reserved=int(acct["reserved"]),
            captured=int(acct["captured"]),
            recovered=int(acct["recovered"]),
        )

    def _query(self, program_id: str, prefix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :p)",
            "ExpressionAttributeValues": {":pk": av(self._pk(program_id)), ":p": av(prefix)},
            "ConsistentRead": True,
        }
        while True:
            resp = self._db.query(**kwargs)
            out.extend(from_item(raw) for raw in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def journal(self, program_id: str) -> list[JournalEntry]:
        """Every journal line of the programme, in (writer's clock, key) order."""
        out = [
            JournalEntry(
                program_id=program_id,
                key=it["sk"][2:],
                op=Op(it["op"]),
                subject=it["subject"],
                d_available=int(it.get("d_available", 0)),
                d_reserved=int(it.get("d_reserved", 0)),
                d_captured=int(it.get("d_captured", 0)),
                d_recovered=int(it.get("d_recovered", 0)),
                d_funded=int(it.get("d_funded", 0)),
                at=it["at"],
                attributes=it.get("attrs", {}),
            )
            for it in self._query(program_id, "J#")
        ]
        out.sort(key=lambda e: (e.at, e.key))
        return out

    def holds(self, program_id: str, state: str | None = None) -> list[dict[str, Any]]:
        """Reservation records (for the sweeper and reports), each with its ``order_id``."""
        return [
            {**it, "order_id": it["sk"][5:]}
            for it in self._query(program_id, "HOLD#")
            if state is None or it["state"] == state
        ]

    def list_accounts(self) -> list[str]:
        """Every programme with a ledger account (a scan: for the scheduled sweeper, not for request paths)."""
        out: list[str] = []
        prefix = len(self._pk(""))
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "sk = :b",
            "ProjectionExpression": "pk",
            "ExpressionAttributeValues": {":b": av(_BALANCE)},
            "ConsistentRead": True,
        }
        while True:
            resp = self._db.scan(**kwargs)
            out.extend(str(from_item(raw)["pk"])[prefix:] for raw in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return sorted(out)
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
