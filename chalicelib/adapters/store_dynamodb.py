"""Repositories on one DynamoDB table (single-table design; keys documented per method), one class per port:
``DynamoPrograms``, ``DynamoRounds``, ``DynamoOrders``, ``DynamoCustody``, ``DynamoPersonas`` (sharing the table
plumbing of ``DynamoTable``). Order status changes are the lifecycle's intents, each one conditional write on the
from-statuses of ``chalicelib.domain.lifecycle``; the index keys (``gsi1`` round listing, ``gsi2`` lab queue) are
set and cleared here, never by the services.

- ``PROGRAM#<p> / META``: the programme; ``PROGRAM#<p> / ROUND#<r>``: its rounds.
- ``SELLERS#<p> / <seller>``: the sampling frame.
- ``ORDER#<o> / META``: a sampled unit and its test buy (GSI1 ``ROUND#<r>`` lists a round's orders, GSI2
  ``LABQ#<lab>`` is the lab's queue while the sample waits for a verdict); task tokens live on this item and are
  never returned by the API. ``ORDER#<o> / VERDICT`` (the first lab attempt's verdict; a re-test's attempt n >= 2
  is ``ORDER#<o> / VERDICT#<nnn>``); ``ORDER#<o> / CUSTODY#<seq>`` belongs to ``custody_dynamodb``.
- ``SELLERHIST#<seller> / CONFIRMED#<at>#<o>``: confirmed counterfeits, for the repeat-offender rule.
- ``PERSONAS#<p> / <persona>`` and ``PERSONAUSE#<persona> / SELLER#<seller>``: stealth personas and their exposure.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo_codec import av, cancellation_codes, error_code, from_item, to_item
from chalicelib.domain import lifecycle
from chalicelib.domain.errors import InvalidState, NotFound
from chalicelib.domain.lifecycle import OrderEvent
from chalicelib.domain.models import Order, Program, Round, Seller, Verdict, VerdictKind
from chalicelib.domain.personas import PersonaPolicy, PersonaState, iso_week


class DynamoTable:
    """Plumbing shared by the repositories (one client, one table)."""

    def __init__(self, client: Any, table: str) -> None:
        self._db = client
        self._table = table

    # ---------------------------------------------------------------------------------------------- plumbing
    def _key(self, pk: str, sk: str) -> dict[str, Any]:
        return {"pk": av(pk), "sk": av(sk)}

    def _get(self, pk: str, sk: str) -> dict[str, Any] | None:
        resp = self._db.get_item(TableName=self._table, Key=self._key(pk, sk), ConsistentRead=True)
        return from_item(resp["Item"]) if "Item" in resp else None

    def _query(self, **kwargs: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs["TableName"] = self._table
        while True:
            resp = self._db.query(**kwargs)
            out.extend(from_item(i) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return out
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def _query_pk(self, pk: str, prefix: str = "") -> list[dict[str, Any]]:
        if prefix:
            return self._query(
                KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
                ExpressionAttributeValues={":pk": av(pk), ":p": av(prefix)},
                ConsistentRead=True,
            )
        return self._query(
            KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": av(pk)}, ConsistentRead=True
        )

    def _put(self, item: Mapping[str, Any], *, new_only: bool = False) -> bool:
        kwargs: dict[str, Any] = {"TableName": self._table, "Item": to_item(item)}
        if new_only:
            kwargs["ConditionExpression"] = "attribute_not_exists(pk)"
        try:
            self._db.put_item(**kwargs)
        except ClientError as exc:
            if new_only and error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _batch_put(self, items: Sequence[Mapping[str, Any]]) -> None:
        for start in range(0, len(items), 25):
            requests = [{"PutRequest": {"Item": to_item(i)}} for i in items[start : start + 25]]
            pending: dict[str, Any] = {self._table: requests}
            for _ in range(8):
                resp = self._db.batch_write_item(RequestItems=pending)
                pending = resp.get("UnprocessedItems") or {}
                if not pending:
                    break
            if pending:
                raise RuntimeError("DynamoDB kept items unprocessed after 8 attempts")

    def _update(
        self,
        pk: str,
        sk: str,
        sets: Mapping[str, Any],
        *,
        removes: Iterable[str] = (),
        condition: str | None = None,
        cond_values: Mapping[str, Any] | None = None,
        cond_names: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        names: dict[str, str] = dict(cond_names or {})
        values: dict[str, Any] = {k: av(v) for k, v in (cond_values or {}).items()}
        parts = []
        for i, (k, v) in enumerate(sets.items()):
            names[f"#u{i}"] = k
            values[f":u{i}"] = av(v)
            parts.append(f"#u{i} = :u{i}")
        expr = "SET " + ", ".join(parts) if parts else ""
        rem = []
        for i, k in enumerate(removes):
            names[f"#r{i}"] = k
            rem.append(f"#r{i}")
        if rem:
            expr += " REMOVE " + ", ".join(rem)
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._key(pk, sk),
            "UpdateExpression": expr.strip(),
            "ExpressionAttributeNames": names,
            "ReturnValues": "ALL_NEW",
        }
        if values:
            kwargs["ExpressionAttributeValues"] = values
        if condition:
            kwargs["ConditionExpression"] = condition
        resp = self._db.update_item(**kwargs)
        return from_item(resp["Attributes"])


class DynamoPrograms(DynamoTable):
    """``ProgramRepository``: ``PROGRAM#<p> / META``, ``SELLERS#<p> / <seller>``, ``PROGRAM#<p> / REFUNDFEED#<m>``."""

    def put_program(self, program: Program) -> None:
        self._put({"pk": f"PROGRAM#{program.program_id}", "sk": "META", **program.model_dump(mode="json")})

    def get_program(self, program_id: str) -> Program:
        item = self._get(f"PROGRAM#{program_id}", "META")
        if item is None:
            raise NotFound(f"no programme {program_id}", details=[{"field": "program_id"}])
        return Program.model_validate(item)

    def put_sellers(self, program_id: str, sellers: Sequence[Seller]) -> None:
        self._batch_put(
            [{"pk": f"SELLERS#{program_id}", "sk": s.seller_id, **s.model_dump(mode="json")} for s in sellers]
        )

    def list_sellers(self, program_id: str) -> list[Seller]:
        return [Seller.model_validate(i) for i in self._query_pk(f"SELLERS#{program_id}")]

    def get_seller(self, program_id: str, seller_id: str) -> Seller | None:
        item = self._get(f"SELLERS#{program_id}", seller_id)
        return None if item is None else Seller.model_validate(item)

    def put_refund_feed(self, program_id: str, period: str, orders: int, suspect_refunds: int) -> None:
        self._put(
            {
                "pk": f"PROGRAM#{program_id}",
                "sk": f"REFUNDFEED#{period}",
                "period": period,
                "orders": orders,
                "suspect_refunds": suspect_refunds,
            }
        )

    def refund_feed(self, program_id: str) -> list[dict[str, Any]]:
        return [
            {"period": i["period"], "orders": int(i["orders"]), "suspect_refunds": int(i["suspect_refunds"])}
            for i in self._query_pk(f"PROGRAM#{program_id}", "REFUNDFEED#")
        ]


class DynamoRounds(DynamoTable):
    """``RoundRepository``: ``PROGRAM#<p> / ROUND#<r>``."""

    def put_round(self, rnd: Round) -> None:
        self._put({"pk": f"PROGRAM#{rnd.program_id}", "sk": f"ROUND#{rnd.round_id}", **rnd.model_dump(mode="json")})

    def get_round(self, program_id: str, round_id: str) -> Round:
        item = self._get(f"PROGRAM#{program_id}", f"ROUND#{round_id}")
        if item is None:
            raise NotFound(f"no round {round_id} in programme {program_id}", details=[{"field": "round_id"}])
        return Round.model_validate(item)

    def list_rounds(self, program_id: str) -> list[Round]:
        return [Round.model_validate(i) for i in self._query_pk(f"PROGRAM#{program_id}", "ROUND#")]

    def update_round(self, program_id: str, round_id: str, fields: Mapping[str, Any]) -> None:
        self._update(f"PROGRAM#{program_id}", f"ROUND#{round_id}", _jsonable(fields), condition="attribute_exists(pk)")

    def arm_round(self, program_id: str, round_id: str, token: str) -> Round:
        item = self._update(
            f"PROGRAM#{program_id}",
            f"ROUND#{round_id}",
            {"orders_token": token},
            condition="attribute_exists(pk)",
        )
        return Round.model_validate(item)

    def round_token(self, program_id: str, round_id: str) -> str | None:
        item = self._get(f"PROGRAM#{program_id}", f"ROUND#{round_id}")
        return None if item is None else item.get("orders_token")


class DynamoOrders(DynamoTable):
    """``OrderRepository``: ``ORDER#<o> / META`` (GSI1 ``ROUND#<r>`` lists a round's orders, GSI2 ``LABQ#<lab>`` is
    the lab's queue while the sample waits for a verdict; task tokens and arrivals live on this item and are never
    returned by the API), ``ORDER#<o> / VERDICT`` and ``SELLERHIST#<seller> / CONFIRMED#<o>``."""

    @staticmethod
    def _order_item(order: Order) -> dict[str, Any]:
        return {
            "pk": f"ORDER#{order.order_id}",
            "sk": "META",
            "gsi1pk": f"ROUND#{order.round_id}",
            "gsi1sk": order.order_id,
            **order.model_dump(mode="json"),
        }

    def put_orders(self, orders: Sequence[Order]) -> None:
        for order in orders:
            self._put(self._order_item(order), new_only=True)

    def get_order(self, order_id: str) -> Order:
        item = self._get(f"ORDER#{order_id}", "META")
        if item is None:
            raise NotFound(f"no order {order_id}", details=[{"field": "order_id"}])
        return Order.model_validate(item)

    def order_record(self, order_id: str) -> dict[str, Any]:
        """The raw order item including server-side fields (task tokens); never for API output."""
        item = self._get(f"ORDER#{order_id}", "META")
        if item is None:
            raise NotFound(f"no order {order_id}", details=[{"field": "order_id"}])
        return item

    def list_round_orders(self, round_id: str) -> list[Order]:
        items = self._query(
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :p",
            ExpressionAttributeValues={":p": av(f"ROUND#{round_id}")},
        )
        return [Order.model_validate(i) for i in items]

    def lab_queue(self, lab_id: str) -> list[Order]:
        items = self._query(
            IndexName="gsi2",
            KeyConditionExpression="gsi2pk = :p",
            ExpressionAttributeValues={":p": av(f"LABQ#{lab_id}")},
        )
        return [Order.model_validate(i) for i in items]

    # ------------------------------------------------------------------------------------------ lifecycle intents
    def _write(
        self,
        order_id: str,
        fields: Mapping[str, Any],
        *,
        statuses: Iterable[str] = (),
        removes: Iterable[str] = (),
        extra: tuple[str, Mapping[str, Any]] | None = None,
    ) -> Order:
        """One conditional update of the order item (only from ``statuses`` when given, and only where the ``extra``
        condition holds); ``InvalidState`` if the condition fails, ``NotFound`` for an unknown order."""
        expected = list(statuses)
        cond = "attribute_exists(pk)"
        values: dict[str, Any] = {}
        names: dict[str, str] = {}
        if extra is not None:
            cond += f" AND {extra[0]}"
            values.update(extra[1])
        if expected:
            names["#st"] = "status"
            placeholders = []
            for i, s in enumerate(expected):
                values[f":st{i}"] = s
                placeholders.append(f":st{i}")
            cond += f" AND #st IN ({', '.join(placeholders)})"
        sets = _jsonable(fields)
        removes = [*removes, *(k for k, v in sets.items() if v is None)]
        sets = {k: v for k, v in sets.items() if v is not None}
        try:
            item = self._update(
                f"ORDER#{order_id}",
                "META",
                sets,
                removes=removes,
                condition=cond,
                cond_values=values,
                cond_names=names,
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            current = self.get_order(order_id)  # raises NotFound for an unknown id
            raise InvalidState(
                f"order {order_id} is {current.status.value}; expected one of {expected}",
                details=[{"field": "status", "status": current.status.value}],
            ) from None
        return Order.model_validate(item)

    def _apply(
        self, order_id: str, event: OrderEvent, at: datetime, fields: Mapping[str, Any] | None = None, **kw: Any
    ) -> Order:
        """Apply a lifecycle event: conditional on its from-statuses; already in its target status is a no-op."""
        to = lifecycle.target(event)
        try:
            return self._write(
                order_id,
                {**(fields or {}), "status": to, "updated_at": at},
                statuses=[s.value for s in lifecycle.sources(event)],
                **kw,
            )
        except InvalidState:
            current = self.get_order(order_id)
            if current.status is to:
                return current  # a retried intent
            lifecycle.transition(current.status, event)  # raises InvalidState naming the event
            raise

    def mark_reserved(self, order_id: str, at: datetime) -> Order:
        return self._apply(order_id, E.RESERVE, at)

    def mark_skipped_budget(self, order_id: str, at: datetime) -> Order:
        return self._apply(order_id, E.SKIP_BUDGET, at, {"failure": "budget exhausted"})

    def record_place_intent(self, order_id: str, at: datetime) -> Order:
        return self._apply(order_id, E.PLACE_INTENT, at, {"place_intent_at": at})

    def mark_placed(self, order_id: str, marketplace_order_id: str, price: int, at: datetime) -> Order:
        return self._apply(order_id, E.PLACED, at, {"marketplace_order_id": marketplace_order_id, "price": price})

    def mark_refused(self, order_id: str, at: datetime) -> Order:
        return self._apply(order_id, E.REFUSED, at, {"failure": "seller refused the order"})

    def mark_delivered(self, order_id: str, delivered_at: datetime, at: datetime) -> Order:
        return self._apply(order_id, E.DELIVERED, at, {"delivered_at": delivered_at})

    def mark_at_lab(self, order_id: str, lab_id: str, at: datetime) -> Order:
        fields: dict[str, Any] = {"lab_id": lab_id, "gsi2pk": f"LABQ#{lab_id}", "gsi2sk": at.isoformat()}
        fields |= {"lab_attempt": 1, "labs_tried": [lab_id], "labs_assigned_at": [at.isoformat()]}  # retest
        return self._apply(order_id, E.FORWARDED, at, fields)

    def mark_verdict(self, order_id: str, verdict: VerdictKind, at: datetime, *, attempt: int | None = None) -> Order:
        if attempt is None:
            return self._apply(order_id, E.VERDICT, at, {"verdict": verdict}, removes=_LAB_QUEUE)
        # --- retest: only while the sample is at this lab attempt (orders forwarded before re-tests have none: 1)
        fields = {"verdict": verdict, "status": lifecycle.target(E.VERDICT), "updated_at": at}
        extra = "(lab_attempt = :att" + (" OR attribute_not_exists(lab_attempt))" if attempt == 1 else ")")
        try:
            return self._write(
                order_id,
                fields,
                statuses=[s.value for s in lifecycle.sources(E.VERDICT)],
                removes=_LAB_QUEUE,
                extra=(extra, {":att": attempt}),
            )
        except InvalidState:
            current = self.get_order(order_id)
            if current.status is lifecycle.target(E.VERDICT) and current.lab_attempt == attempt:
                return current  # a retried intent
            if current.lab_attempt != attempt:
                raise InvalidState(
                    f"sample {order_id} is at lab attempt {current.lab_attempt}, not {attempt}",
                    details=[{"field": "attempt", "attempt": current.lab_attempt}],
                ) from None
            lifecycle.transition(current.status, E.VERDICT)
            raise

    # --- retest (issue 10 item 1)
    def reassign_lab(
        self, order_id: str, event: OrderEvent, from_attempt: int, to_lab: str, reason: str, at: datetime
    ) -> Order:
        if event not in lifecycle.LAB_REASSIGNMENTS:
            raise ValueError(f"{event.value} does not start a lab attempt")
        current = self.get_order(order_id)
        if current.lab_attempt == from_attempt + 1 and current.lab_id == to_lab:
            return current  # a retried re-assignment
        fields = {
            "status": lifecycle.target(event),
            "updated_at": at,
            "lab_id": to_lab,
            "lab_attempt": from_attempt + 1,
            "labs_tried": [*current.labs_tried, to_lab],
            "labs_assigned_at": [*(t.isoformat() for t in current.labs_assigned_at), at.isoformat()],
            "retest_reasons": [*current.retest_reasons, reason],
            "gsi2pk": f"LABQ#{to_lab}",
            "gsi2sk": at.isoformat(),
        }
        extra = "(lab_attempt = :att" + (" OR attribute_not_exists(lab_attempt))" if from_attempt == 1 else ")")
        statuses = [s.value for s in lifecycle.sources(event)]
        try:
            # the attempt guards the whole read-modify-write: a concurrent re-assignment makes this one fail
            if event is E.REASSIGN:
                return self._reassign_unless_verdict(order_id, fields, statuses, extra, from_attempt)
            return self._write(order_id, fields, statuses=statuses, extra=(extra, {":att": from_attempt}))
        except InvalidState:
            current = self.get_order(order_id)
            if current.lab_attempt == from_attempt + 1 and current.lab_id == to_lab:
                return current
            if current.lab_attempt != from_attempt:
                raise InvalidState(
                    f"sample {order_id} is at lab attempt {current.lab_attempt}, not {from_attempt}",
                    details=[{"field": "attempt", "attempt": current.lab_attempt}],
                ) from None
            lifecycle.transition(current.status, event)
            raise

    def _reassign_unless_verdict(
        self, order_id: str, fields: Mapping[str, Any], statuses: list[str], extra: str, from_attempt: int
    ) -> Order:
        """One transaction: the attempt has no verdict (a lab that answered as its deadline passed keeps its
        answer) and the order is still at it; ``InvalidState`` otherwise."""
        pk = f"ORDER#{order_id}"
        names: dict[str, str] = {"#st": "status"}
        values: dict[str, Any] = {":att": av(from_attempt)}
        parts = []
        for i, (k, v) in enumerate(_jsonable(fields).items()):
            names[f"#u{i}"] = k
            values[f":u{i}"] = av(v)
            parts.append(f"#u{i} = :u{i}")
        placeholders = []
        for i, st in enumerate(statuses):
            values[f":st{i}"] = av(st)
            placeholders.append(f":st{i}")
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self._table,
                            "Key": self._key(pk, _verdict_sk(from_attempt)),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": self._key(pk, "META"),
                            "UpdateExpression": "SET " + ", ".join(parts),
                            "ConditionExpression": f"attribute_exists(pk) AND {extra} AND #st IN "
                            f"({', '.join(placeholders)})",
                            "ExpressionAttributeNames": names,
                            "ExpressionAttributeValues": values,
                        }
                    },
                ]
            )
        except ClientError as exc:
            codes = cancellation_codes(exc)
            if not codes or "ConditionalCheckFailed" not in codes:
                raise
            if codes[0] == "ConditionalCheckFailed":
                raise InvalidState(
                    f"sample {order_id}: lab attempt {from_attempt} has a verdict; it is not re-assigned",
                    details=[{"field": "attempt", "attempt": from_attempt}],
                ) from None
            raise InvalidState(f"order {order_id} is not at lab attempt {from_attempt} in {statuses}") from None
        return self.get_order(order_id)

    def record_lab_overdue(self, order_id: str, attempt: int, at: datetime) -> Order:
        extra = "(lab_attempt = :att" + (" OR attribute_not_exists(lab_attempt))" if attempt == 1 else ")")
        return self._write(order_id, {"last_lab_overdue": True, "updated_at": at}, extra=(extra, {":att": attempt}))

    def list_verdicts(self, order_id: str) -> list[Verdict]:
        items = self._query_pk(f"ORDER#{order_id}", "VERDICT")
        verdicts = [Verdict.model_validate(i) for i in items if i["sk"] == "VERDICT" or i["sk"].startswith("VERDICT#")]
        return sorted(verdicts, key=lambda v: v.attempt)

    # --- end retest

    # --- second unit (issue 10 item 1)
    def create_second_unit(self, parent_order_id: str, unit: Order) -> tuple[Order, bool]:
        """One transaction: the new order (put only if absent), the parent's ``second_unit_order_id`` (only unset or
        already this unit) and the round's ``second_units`` counter (+1), so the round waits for the unit exactly
        once. The unit already there (a retry): returns it, created False."""
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": to_item(self._order_item(unit)),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": self._key(f"ORDER#{parent_order_id}", "META"),
                            "UpdateExpression": "SET second_unit_order_id = :u",
                            "ConditionExpression": "attribute_exists(pk) AND "
                            "(attribute_not_exists(second_unit_order_id) OR second_unit_order_id = :u)",
                            "ExpressionAttributeValues": {":u": av(unit.order_id)},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": self._key(f"PROGRAM#{unit.program_id}", f"ROUND#{unit.round_id}"),
                            "UpdateExpression": "ADD second_units :one",
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": {":one": av(1)},
                        }
                    },
                ]
            )
        except ClientError as exc:
            codes = cancellation_codes(exc)
            if not codes or codes[0] != "ConditionalCheckFailed":
                if codes and "TransactionConflict" not in codes:
                    raise InvalidState(
                        f"order {parent_order_id} already has another second unit, or its round is gone",
                        details=[{"field": "second_unit_order_id", "reasons": codes}],
                    ) from None
                raise
            return self.get_order(unit.order_id), False
        return unit, True

    # --- end second unit

    def mark_settled(self, order_id: str, at: datetime) -> Order:
        return self._apply(order_id, E.CAPTURED, at, removes=_LAB_QUEUE)

    def record_cancel_intent(self, order_id: str, failure: str, at: datetime) -> Order:
        current = self.get_order(order_id)
        return self._apply(
            order_id, E.CANCEL_INTENT, at, {"failure": current.failure or failure, "cancel_intent_at": at}
        )

    def mark_failed(self, order_id: str, failure: str, at: datetime, *, delivery: bool = False) -> Order:
        event = E.FAIL_DELIVERY if delivery else E.FAIL
        return self._apply(order_id, event, at, {"failure": failure}, removes=_LAB_QUEUE)

    def mark_needs_reconciliation(self, order_id: str, reason: str, at: datetime) -> Order:
        current = self.get_order(order_id)
        fields = {"failure": current.failure or reason, "stuck_reason": reason}
        return self._apply(order_id, E.STUCK, at, fields, removes=_LAB_QUEUE)

    # ------------------------------------------------------------------------------------------ facts
    def set_persona(self, order_id: str, persona_id: str, at: datetime) -> Order:
        try:
            item = self._update(
                f"ORDER#{order_id}",
                "META",
                {"persona_id": persona_id, "updated_at": at.isoformat()},
                condition="attribute_exists(pk) AND (attribute_not_exists(persona_id) OR persona_id = :p)",
                cond_values={":p": persona_id},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            self.get_order(order_id)
            raise InvalidState(f"order {order_id} already has another persona") from None
        return Order.model_validate(item)

    def record_marketplace_order(self, order_id: str, marketplace_order_id: str, price: int, at: datetime) -> Order:
        return self._write(order_id, {"marketplace_order_id": marketplace_order_id, "price": price, "updated_at": at})

    def record_refund(self, order_id: str, refunded: int, at: datetime) -> Order:
        return self._write(order_id, {"refunded": refunded, "updated_at": at})

    def record_recommendations(self, order_id: str, recommendations: list[dict[str, Any]], at: datetime) -> Order:
        return self._write(order_id, {"recommendations": recommendations, "updated_at": at})

    def record_service_quality(self, order_id: str, score: float, detail: Mapping[str, Any], at: datetime) -> Order:
        return self._write(
            order_id, {"service_quality": score, "service_quality_detail": dict(detail), "updated_at": at}
        )

    # ------------------------------------------------------------------------------------------ wait points
    def arm(self, order_id: str, point: str, token: str) -> Mapping[str, Any] | None:
        item = self._update(f"ORDER#{order_id}", "META", {f"{point}_token": token}, condition="attribute_exists(pk)")
        arrival = item.get(f"{point}_arrival")
        return arrival if isinstance(arrival, dict) else None

    def arrive(self, order_id: str, point: str, payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
        names = {"#a": f"{point}_arrival"}
        resp = self._db.update_item(
            TableName=self._table,
            Key=self._key(f"ORDER#{order_id}", "META"),
            UpdateExpression="SET #a = if_not_exists(#a, :p)",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues={":p": av(dict(payload))},
            ReturnValues="ALL_NEW",
        )
        item = from_item(resp["Attributes"])
        token = item.get(f"{point}_token")
        stored = item.get(f"{point}_arrival")
        return (stored if isinstance(stored, dict) else dict(payload)), (str(token) if token else None)

    def finalize(self, order_id: str, program_id: str, round_id: str) -> Round:
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": self._key(f"ORDER#{order_id}", "META"),
                            "UpdateExpression": "SET finalized = :t",
                            "ConditionExpression": "attribute_exists(pk) AND attribute_not_exists(finalized)",
                            "ExpressionAttributeValues": {":t": av(True)},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table,
                            "Key": self._key(f"PROGRAM#{program_id}", f"ROUND#{round_id}"),
                            "UpdateExpression": "ADD settled :one",
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": {":one": av(1)},
                        }
                    },
                ]
            )
        except ClientError as exc:
            codes = cancellation_codes(exc)
            if not (codes and codes[0] == "ConditionalCheckFailed" and codes[1:] == ["None"]):
                raise
        item = self._get(f"PROGRAM#{program_id}", f"ROUND#{round_id}")
        if item is None:
            raise NotFound(f"no round {round_id} in programme {program_id}", details=[{"field": "round_id"}])
        return Round.model_validate(item)

    def put_verdict(self, verdict: Verdict) -> tuple[Verdict, bool]:
        """One transaction: the verdict of its lab attempt, put only if absent, and only while the order is still at
        that attempt (a lab the sample was taken from cannot record one after the re-assignment)."""
        existing = self.get_verdict(verdict.order_id, verdict.attempt)
        if existing is not None:
            return existing, False
        pk = f"ORDER#{verdict.order_id}"
        item = {"pk": pk, "sk": _verdict_sk(verdict.attempt), **verdict.model_dump(mode="json")}
        at_attempt = "attribute_exists(pk) AND (lab_attempt = :att" + (
            " OR attribute_not_exists(lab_attempt))" if verdict.attempt == 1 else ")"
        )
        try:
            self._db.transact_write_items(
                TransactItems=[
                    {
                        "ConditionCheck": {
                            "TableName": self._table,
                            "Key": self._key(pk, "META"),
                            "ConditionExpression": at_attempt,
                            "ExpressionAttributeValues": {":att": av(verdict.attempt)},
                        }
                    },
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": to_item(item),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
        except ClientError as exc:
            codes = cancellation_codes(exc)
            if not codes or "ConditionalCheckFailed" not in codes:
                raise
            existing = self.get_verdict(verdict.order_id, verdict.attempt)
            if existing is not None:
                return existing, False  # a concurrent post won
            current = self.get_order(verdict.order_id)
            raise InvalidState(
                f"sample {verdict.order_id} is no longer at lab attempt {verdict.attempt}",
                details=[{"field": "attempt", "attempt": current.lab_attempt}],
            ) from None
        return verdict, True

    def get_verdict(self, order_id: str, attempt: int | None = None) -> Verdict | None:
        if attempt is None:  # the order's verdict: the latest lab attempt's
            verdicts = self.list_verdicts(order_id)
            return verdicts[-1] if verdicts else None
        item = self._get(f"ORDER#{order_id}", _verdict_sk(attempt))
        return None if item is None else Verdict.model_validate(item)

    def record_confirmed(self, seller_id: str, order_id: str, at: datetime) -> None:
        self._put(
            {
                "pk": f"SELLERHIST#{seller_id}",
                "sk": f"CONFIRMED#{order_id}",
                "at": at.isoformat(),
                "order_id": order_id,
            }
        )

    def confirmed_history(self, seller_id: str) -> list[datetime]:
        # appeals (issue 10 item 2): an entry rescinded by an overturned appeal is kept but no longer counted
        items = self._query_pk(f"SELLERHIST#{seller_id}", "CONFIRMED#")
        return sorted(datetime.fromisoformat(i["at"]) for i in items if not i.get("rescinded_by"))


class DynamoPersonas(DynamoTable):
    """``PersonaRepository``: ``PERSONAS#<p> / <persona>`` and ``PERSONAUSE#<persona> / SELLER#<seller>``."""

    def ensure_pool(self, program_id: str, size: int) -> None:
        for i in range(size):
            self._put(
                {
                    "pk": f"PERSONAS#{program_id}",
                    "sk": f"{program_id}-p{i:03d}",
                    "week": "",
                    "week_count": 0,
                    "refusals": 0,
                    "retired": False,
                    # Sensitive details: visible to the admin role only, never in events or logs.
                    "secret": {
                        "account": f"buyer-{i:03d}",
                        "drop_point": f"locker-{i % 17:02d}",
                        "payment_ref": f"card-{i:03d}",
                    },
                },
                new_only=True,
            )

    def states(self, program_id: str, seller_id: str) -> list[PersonaState]:
        pool = self._query_pk(f"PERSONAS#{program_id}")
        keys = [self._key(f"PERSONAUSE#{p['sk']}", f"SELLER#{seller_id}") for p in pool]
        last: dict[str, datetime] = {}
        for start in range(0, len(keys), 100):
            resp = self._db.batch_get_item(
                RequestItems={self._table: {"Keys": keys[start : start + 100], "ConsistentRead": True}}
            )
            for raw in resp.get("Responses", {}).get(self._table, []):
                it = from_item(raw)
                last[it["pk"].removeprefix("PERSONAUSE#")] = datetime.fromisoformat(it["last_at"])
        return [
            PersonaState(
                persona_id=p["sk"],
                week=p.get("week", ""),
                week_count=int(p.get("week_count", 0)),
                refusals=int(p.get("refusals", 0)),
                retired=bool(p.get("retired", False)),
                last_bought_from_seller=last.get(p["sk"]),
            )
            for p in pool
        ]

    def claim(
        self,
        program_id: str,
        persona_id: str,
        seller_id: str,
        order_id: str,
        now: datetime,
        policy: PersonaPolicy,
    ) -> bool:
        week = iso_week(now)
        current = self._get(f"PERSONAS#{program_id}", persona_id)
        if current is None:
            raise NotFound(f"no persona {persona_id}")
        values: dict[str, Any] = {":w": av(week), ":one": av(1), ":f": av(False)}
        if current.get("week") == week:
            # Same week: the count is guarded by the cap.
            update = "SET week_count = week_count + :one"
            condition = "retired = :f AND #w = :w AND week_count < :cap"
            values[":cap"] = av(policy.weekly_cap)
        else:
            # A new week restarts the count, guarded against a concurrent restart by the old week value.
            update = "SET #w = :w, week_count = :one"
            condition = "retired = :f AND #w = :old"
            values[":old"] = av(current.get("week", ""))
        persona_update = {
            "TableName": self._table,
            "Key": self._key(f"PERSONAS#{program_id}", persona_id),
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#w": "week"},
            "ExpressionAttributeValues": values,
        }
        cutoff = (now - policy.cooldown).isoformat()
        use_put = {
            "TableName": self._table,
            "Item": to_item(
                {
                    "pk": f"PERSONAUSE#{persona_id}",
                    "sk": f"SELLER#{seller_id}",
                    "last_at": now.isoformat(),
                    "order_id": order_id,
                }
            ),
            "ConditionExpression": "attribute_not_exists(pk) OR last_at < :cut",
            "ExpressionAttributeValues": {":cut": av(cutoff)},
        }
        try:
            self._db.transact_write_items(TransactItems=[{"Update": persona_update}, {"Put": use_put}])
        except ClientError as exc:
            if error_code(exc) == "TransactionCanceledException":
                return False
            raise
        return True

    def account_ref(self, program_id: str, persona_id: str) -> str:
        """A random opaque reference, created on first use and stored with the persona (one conditional update):
        the marketplace never sees the persona id ``<program>-pNNN``, which would link a programme's buys."""
        resp = self._db.update_item(
            TableName=self._table,
            Key=self._key(f"PERSONAS#{program_id}", persona_id),
            UpdateExpression="SET account_ref = if_not_exists(account_ref, :r)",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeValues={":r": av("acct-" + secrets.token_hex(12))},
            ReturnValues="ALL_NEW",
        )
        return str(from_item(resp["Attributes"])["account_ref"])

    def persona_secret(self, program_id: str, persona_id: str) -> dict[str, Any]:
        """Account, drop point and payment reference: for the admin role only."""
        item = self._get(f"PERSONAS#{program_id}", persona_id)
        if item is None:
            raise NotFound(f"no persona {persona_id}", details=[{"field": "persona_id"}])
        return {
            "persona_id": persona_id,
            **item.get("secret", {}),
            "retired": item.get("retired", False),
            "refusals": item.get("refusals", 0),
            "week": item.get("week"),
            "week_count": item.get("week_count"),
        }

    def record_refusal(self, program_id: str, persona_id: str, retire_after: int) -> None:
        resp = self._db.update_item(
            TableName=self._table,
            Key=self._key(f"PERSONAS#{program_id}", persona_id),
            UpdateExpression="ADD refusals :one",
            ExpressionAttributeValues={":one": av(1)},
            ReturnValues="ALL_NEW",
        )
        if int(from_item(resp["Attributes"]).get("refusals", 0)) >= retire_after:
            self._db.update_item(
                TableName=self._table,
                Key=self._key(f"PERSONAS#{program_id}", persona_id),
                UpdateExpression="SET retired = :t",
                ExpressionAttributeValues={":t": av(True)},
            )


E = OrderEvent
_LAB_QUEUE = ("gsi2pk", "gsi2sk")


def _verdict_sk(attempt: int) -> str:
    """The first lab attempt's verdict keeps the key it always had; a re-test's is ``VERDICT#<nnn>``."""
    return "VERDICT" if attempt == 1 else f"VERDICT#{attempt:03d}"


def _jsonable(fields: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if isinstance(v, datetime):
            out[k] = v.isoformat()
        elif hasattr(v, "value") and isinstance(getattr(v, "value", None), str):
            out[k] = v.value
        else:
            out[k] = v
    return out
