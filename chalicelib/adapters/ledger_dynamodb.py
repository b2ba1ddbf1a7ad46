"""The budget ledger on DynamoDB: every operation is one conditional ``TransactWriteItems``.

Items, all under ``pk = ACCOUNT#<program>``:
- ``BALANCE``: funded, available, reserved, captured, recovered, currency, per_order_cap. Guarded by
  ``available >= :need`` so no interleaving of concurrent transactions can overdraw.
- ``HOLD#<order>``: the order's reservation and its state (reserved -> captured | released), with reporting attributes.
- ``J#<subject>#<op>``: the journal line, written with ``attribute_not_exists`` in the same transaction. It is the
  durable idempotency record (it stores the argument fingerprint and the result) and the immutable journal from which
  every balance can be recomputed (``chalicelib.domain.ledger.replay``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo_codec import av, cancellation_codes, error_code, from_item, to_item
from chalicelib.domain.errors import (
    IdempotencyConflict,
    InsufficientFunds,
    InvalidInput,
    InvalidState,
    NotFound,
)
from chalicelib.domain.ledger import Balance, JournalEntry, Op, fingerprint, op_key
from chalicelib.domain.money import require_currency
from chalicelib.ports import Clock, LedgerResult

_BALANCE = "BALANCE"


class DynamoLedger:
    def __init__(self, client: Any, table: str, clock: Clock) -> None:
        self._db = client
        self._table = table
        self._clock = clock

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
                details=[{"field": "amount", "key": op_key(subject, op)}],
            )
        return LedgerResult(op_key(subject, op), op.value, int(existing["amount"]), self.balance(program_id), True)

    def _transact(
        self,
        program_id: str,
        op: Op,
        subject: str,
        fp: str,
        items: list[dict[str, Any]],
        on_balance_fail: Exception,
    ) -> None:
        try:
            self._db.transact_write_items(TransactItems=items)
        except ClientError as exc:
            if error_code(exc) != "TransactionCanceledException":
                raise
            codes = cancellation_codes(exc)
            # The journal put is always the last item: its failure means this key was used before.
            if codes and codes[-1] == "ConditionalCheckFailed":
                replay = self._replay_or_raise(program_id, op, subject, fp)
                if replay is not None:
                    raise _Replayed(replay) from None
            if codes and codes[0] == "ConditionalCheckFailed":
                raise on_balance_fail from None
            if "ConditionalCheckFailed" in codes:
                raise InvalidState(f"{op.value} for {subject} conflicts with a concurrent change; retry") from None
            raise

    def _balance_update(
        self, program_id: str, deltas: Mapping[str, int], need: int, currency: str | None
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

    # ------------------------------------------------------------------------------------------------ operations
    def open_account(self, program_id: str, currency: str, per_order_cap: int | None) -> None:
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
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    def fund(self, program_id: str, reference: str, amount: int, currency: str) -> LedgerResult:
        acct = self._account(program_id)
        require_currency(acct["currency"], currency)
        fp = fingerprint(Op.FUND, reference, {"amount": amount, "currency": currency})
        deltas = {"funded": amount, "available": amount}
        items = [
            self._balance_update(program_id, deltas, 0, currency),
            self._put_new(self._journal_item(program_id, Op.FUND, reference, fp, amount, deltas, {})),
        ]
        try:
            self._transact(program_id, Op.FUND, reference, fp, items, NotFound(f"no ledger account for {program_id}"))
        except _Replayed as r:
            return r.result
        return self._result(program_id, Op.FUND, reference, amount)

    def reserve(
        self, program_id: str, order_id: str, amount: int, currency: str, attributes: Mapping[str, Any]
    ) -> LedgerResult:
        fp = fingerprint(Op.RESERVE, order_id, {"amount": amount, "currency": currency})
        replay = self._replay_or_raise(program_id, Op.RESERVE, order_id, fp)
        if replay is not None:
            return replay
        acct = self._account(program_id)
        require_currency(acct["currency"], currency)
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
        funds = InsufficientFunds(
            f"reserving {amount} would overdraw programme {program_id} (available {acct['available']})",
            details=[{"field": "amount", "available": acct["available"]}],
        )
        try:
            self._transact(program_id, Op.RESERVE, order_id, fp, items, funds)
        except _Replayed as r:
            return r.result
        return self._result(program_id, Op.RESERVE, order_id, amount)

    def _hold(self, program_id: str, order_id: str) -> dict[str, Any]:
        hold = self._get(program_id, f"HOLD#{order_id}")
        if hold is None:
            raise NotFound(f"order {order_id} has no reservation", details=[{"field": "order_id"}])
        return hold

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

    def capture(self, program_id: str, order_id: str, actual: int, currency: str) -> LedgerResult:
        fp = fingerprint(Op.CAPTURE, order_id, {"actual": actual, "currency": currency})
        replay = self._replay_or_raise(program_id, Op.CAPTURE, order_id, fp)
        if replay is not None:
            return replay
        acct = self._account(program_id)
        require_currency(acct["currency"], currency)
        hold = self._hold(program_id, order_id)
        if hold["state"] != "reserved":
            raise InvalidState(f"cannot capture order {order_id}: its reservation is {hold['state']}")
        reserved = int(hold["amount"])
        if actual > reserved:
            cap = acct.get("per_order_cap")
            if cap is None or actual > int(cap):
                raise InvalidInput(
                    f"actual {actual} exceeds the reservation {reserved} and the per-order cap {cap}",
                    details=[{"field": "actual", "reserved": reserved, "per_order_cap": cap}],
                )
        deltas = {"available": reserved - actual, "reserved": -reserved, "captured": actual}
        need = max(0, actual - reserved)
        items = [
            self._balance_update(program_id, deltas, need, currency),
            self._hold_transition(
                program_id,
                order_id,
                "reserved",
                {"state": "captured", "captured": actual},
                {"amount": reserved},
            ),
            self._put_new(self._journal_item(program_id, Op.CAPTURE, order_id, fp, actual, deltas, hold["attrs"])),
        ]
        funds = InsufficientFunds(
            f"capturing {actual} needs {need} more than was reserved and the budget cannot cover it",
            details=[{"field": "actual"}],
        )
        try:
            self._transact(program_id, Op.CAPTURE, order_id, fp, items, funds)
        except _Replayed as r:
            return r.result
        return self._result(program_id, Op.CAPTURE, order_id, actual)

    def release(self, program_id: str, order_id: str) -> LedgerResult:
        fp = fingerprint(Op.RELEASE, order_id, {})
        replay = self._replay_or_raise(program_id, Op.RELEASE, order_id, fp)
        if replay is not None:
            return replay
        hold = self._hold(program_id, order_id)
        if hold["state"] != "reserved":
            raise InvalidState(f"cannot release order {order_id}: its reservation is {hold['state']}")
        reserved = int(hold["amount"])
        deltas = {"available": reserved, "reserved": -reserved}
        items = [
            self._balance_update(program_id, deltas, 0, None),
            self._hold_transition(program_id, order_id, "reserved", {"state": "released"}, {"amount": reserved}),
            self._put_new(self._journal_item(program_id, Op.RELEASE, order_id, fp, reserved, deltas, hold["attrs"])),
        ]
        try:
            self._transact(program_id, Op.RELEASE, order_id, fp, items, NotFound(f"no account {program_id}"))
        except _Replayed as r:
            return r.result
        return self._result(program_id, Op.RELEASE, order_id, reserved)

    def recover(self, program_id: str, order_id: str, amount: int, currency: str) -> LedgerResult:
        fp = fingerprint(Op.RECOVER, order_id, {"amount": amount, "currency": currency})
        replay = self._replay_or_raise(program_id, Op.RECOVER, order_id, fp)
        if replay is not None:
            return replay
        acct = self._account(program_id)
        require_currency(acct["currency"], currency)
        hold = self._hold(program_id, order_id)
        if hold["state"] != "captured":
            raise InvalidState(f"cannot recover on order {order_id}: its reservation is {hold['state']}")
        captured, already = int(hold["captured"]), int(hold["recovered"])
        if already + amount > captured:
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
        try:
            self._transact(program_id, Op.RECOVER, order_id, fp, items, NotFound(f"no account {program_id}"))
        except _Replayed as r:
            return r.result
        return self._result(program_id, Op.RECOVER, order_id, amount)

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
        except ClientError as exc:
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

    def journal(self, program_id: str) -> list[JournalEntry]:
        out: list[JournalEntry] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :j)",
            "ExpressionAttributeValues": {":pk": av(self._pk(program_id)), ":j": av("J#")},
            "ConsistentRead": True,
        }
        while True:
            resp = self._db.query(**kwargs)
            for raw in resp.get("Items", []):
                it = from_item(raw)
                out.append(
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
                )
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        out.sort(key=lambda e: (e.at, e.key))
        return out

    def holds(self, program_id: str, state: str | None = None) -> list[dict[str, Any]]:
        """Reservation records (for the sweeper and reports)."""
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :h)",
            "ExpressionAttributeValues": {":pk": av(self._pk(program_id)), ":h": av("HOLD#")},
            "ConsistentRead": True,
        }
        while True:
            resp = self._db.query(**kwargs)
            for raw in resp.get("Items", []):
                it = from_item(raw)
                if state is None or it["state"] == state:
                    out.append({**it, "order_id": it["sk"][5:]})
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return out


class _Replayed(Exception):
    def __init__(self, result: LedgerResult) -> None:
        super().__init__(result.key)
        self.result = result
