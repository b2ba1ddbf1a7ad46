"""``AppealRepository`` on the single data table (issue 10 item 2).

- ``APPEAL#<a> / META``: the appeal (GSI1 ``APPEALS#<programme>`` lists a programme's appeals; GSI2
  ``APPEALQ#<lab>`` is the re-test lab's queue while the appeal is ``retest_assigned``); the task token of the waiting
  execution (``retest_token``) and the re-test arrival live on this item and are never returned by the API.
- ``APPEAL#<a> / RETEST``: the re-test lab's verdict, written once.
- An overturn writes ``verdict``, ``original_verdict`` and ``verdict_overturned_by`` on ``ORDER#<o> / META`` (the lab's
  ``ORDER#<o> / VERDICT`` record is never rewritten) and marks ``SELLERHIST#<seller> / CONFIRMED#<o>`` with
  ``rescinded_by`` (nothing is deleted: no role may delete from the data table).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo_codec import av, error_code, from_item
from chalicelib.adapters.store_dynamodb import DynamoTable
from chalicelib.domain import appeals as rules
from chalicelib.domain.appeals import Appeal, AppealEvent, AppealStatus, RetestVerdict
from chalicelib.domain.errors import InvalidState, NotFound
from chalicelib.domain.models import Order, VerdictKind

_QUEUE = ("gsi2pk", "gsi2sk")


def _plain(fields: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in fields.items():
        out[k] = v.isoformat() if isinstance(v, datetime) else v.value if isinstance(v, AppealStatus) else v
    return out


class DynamoAppeals(DynamoTable):
    def create(self, appeal: Appeal) -> tuple[Appeal, bool]:
        item = {
            "pk": f"APPEAL#{appeal.appeal_id}",
            "sk": "META",
            **appeal.model_dump(mode="json"),
            "gsi1pk": f"APPEALS#{appeal.program_id}",
            "gsi1sk": f"{appeal.filed_at.isoformat()}#{appeal.appeal_id}",
        }
        if self._put(item, new_only=True):
            return appeal, True
        return self.get(appeal.appeal_id), False

    def get(self, appeal_id: str) -> Appeal:
        item = self._get(f"APPEAL#{appeal_id}", "META")
        if item is None:
            raise NotFound(f"no appeal {appeal_id}", details=[{"field": "appeal_id"}])
        return Appeal.model_validate(item)

    def list_program(self, program_id: str) -> list[Appeal]:
        items = self._query(
            IndexName="gsi1",
            KeyConditionExpression="gsi1pk = :p",
            ExpressionAttributeValues={":p": av(f"APPEALS#{program_id}")},
        )
        return [Appeal.model_validate(i) for i in items]

    def lab_queue(self, lab_id: str) -> list[Appeal]:
        items = self._query(
            IndexName="gsi2",
            KeyConditionExpression="gsi2pk = :p",
            ExpressionAttributeValues={":p": av(f"APPEALQ#{lab_id}")},
        )
        return [Appeal.model_validate(i) for i in items]

    def apply(
        self, appeal_id: str, event: AppealEvent, at: datetime, fields: Mapping[str, Any] | None = None
    ) -> Appeal:
        to = rules.target(event)
        sets = _plain({**(fields or {}), "status": to, "updated_at": at})
        removes: tuple[str, ...] = _QUEUE
        if event is AppealEvent.ASSIGN_RETEST:
            current = self.get(appeal_id)
            sets |= {"gsi2pk": f"APPEALQ#{current.retest_lab}", "gsi2sk": current.deadline.isoformat()}
            removes = ()
        expected = sorted(s.value for s in rules.sources(event))
        values = {f":s{i}": s for i, s in enumerate(expected)}
        try:
            item = self._update(
                f"APPEAL#{appeal_id}",
                "META",
                sets,
                removes=removes,
                condition=f"attribute_exists(pk) AND #st IN ({', '.join(values)})",
                cond_values=values,
                cond_names={"#st": "status"},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            current = self.get(appeal_id)  # NotFound for an unknown id
            if current.status is to:
                return current  # a retried event
            rules.transition(current.status, event)  # raises InvalidState naming the event
            raise InvalidState(f"appeal {appeal_id} changed while {event.value} was applied; retry") from None
        return Appeal.model_validate(item)

    def arm(self, appeal_id: str, token: str) -> Mapping[str, Any] | None:
        item = self._update(f"APPEAL#{appeal_id}", "META", {"retest_token": token}, condition="attribute_exists(pk)")
        arrival = item.get("retest_arrival")
        return arrival if isinstance(arrival, dict) else None

    def arrive(self, appeal_id: str, payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
        resp = self._db.update_item(
            TableName=self._table,
            Key=self._key(f"APPEAL#{appeal_id}", "META"),
            UpdateExpression="SET #a = if_not_exists(#a, :p)",
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames={"#a": "retest_arrival"},
            ExpressionAttributeValues={":p": av(dict(payload))},
            ReturnValues="ALL_NEW",
        )
        item = from_item(resp["Attributes"])
        token = item.get("retest_token")
        stored = item.get("retest_arrival")
        return (stored if isinstance(stored, dict) else dict(payload)), (str(token) if token else None)

    def put_retest_verdict(self, verdict: RetestVerdict) -> tuple[RetestVerdict, bool]:
        item = {"pk": f"APPEAL#{verdict.appeal_id}", "sk": "RETEST", **verdict.model_dump(mode="json")}
        if self._put(item, new_only=True):
            return verdict, True
        existing = self.get_retest_verdict(verdict.appeal_id)
        if existing is None:  # pragma: no cover - the put just failed on this key
            raise InvalidState(f"appeal {verdict.appeal_id}: re-test verdict vanished")
        return existing, False

    def get_retest_verdict(self, appeal_id: str) -> RetestVerdict | None:
        item = self._get(f"APPEAL#{appeal_id}", "RETEST")
        return None if item is None else RetestVerdict.model_validate(item)

    def overturn_order(
        self, order_id: str, appeal_id: str, original: VerdictKind, effective: VerdictKind, at: datetime
    ) -> Order:
        try:
            item = self._update(
                f"ORDER#{order_id}",
                "META",
                {
                    "verdict": effective.value,
                    "original_verdict": original.value,
                    "verdict_overturned_by": appeal_id,
                    "updated_at": at.isoformat(),
                },
                condition="attribute_exists(pk) AND ((#v = :orig AND attribute_not_exists(#by)) OR #by = :a)",
                cond_values={":orig": original.value, ":a": appeal_id},
                cond_names={"#v": "verdict", "#by": "verdict_overturned_by"},
            )
        except ClientError as exc:
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
            raise InvalidState(
                f"order {order_id} no longer has verdict {original.value} (or is unknown)",
                details=[{"field": "order_id"}],
            ) from None
        return Order.model_validate(item)

    def rescind_confirmed(self, seller_id: str, order_id: str, appeal_id: str, at: datetime) -> None:
        try:
            self._update(
                f"SELLERHIST#{seller_id}",
                f"CONFIRMED#{order_id}",
                {"rescinded_by": appeal_id, "rescinded_at": at.isoformat()},
                condition="attribute_exists(pk)",
            )
        except ClientError as exc:
            # a failed condition: no entry (nothing was counted, so nothing to rescind)
            if error_code(exc) != "ConditionalCheckFailedException":
                raise
