"""Rings and leads on the data table (issue 10 items 3 and 4). Keys:

- ``SELLERFP#<p>#<seller> / <kind>#<hash>``: a seller's fingerprints; ``FP#<p>#<kind>#<hash> / <seller>``: the
  fingerprint index (who holds it). One item per (seller, fingerprint) each way: an import of n fingerprints writes
  2n items, a ring traversal reads one partition per seller and per fingerprint reached.
- ``RINGOF#<p> / <seller>``: the seller's ring id; ``RING#<p> / <ring>``: the ring (members, shared kinds, version;
  ``merged_into`` on a ring absorbed by another). Ring writes are conditional on the version read.
- ``SALES#<p>#<seller> / <period>``: the marketplace's sales feed; ``TESTBUYS#<p>#<seller> / <order>``: the seller's
  verdicts in this programme (the estimator's share).
- ``LEAD#<p> / <lead>``: a lead with its status history; status changes are conditional on the from-status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo_codec import av, error_code, from_item
from chalicelib.adapters.store_dynamodb import DynamoTable
from chalicelib.domain.errors import InvalidState, NotFound
from chalicelib.domain.leads import Lead
from chalicelib.domain.rings import Ring


class DynamoRings(DynamoTable):
    """``RingRepository``."""

    def add_fingerprints(self, program_id: str, seller_id: str, fingerprints: Sequence[tuple[str, str]]) -> None:
        items: list[dict[str, Any]] = []
        for kind, digest in sorted(set(fingerprints)):
            items.append({"pk": f"SELLERFP#{program_id}#{seller_id}", "sk": f"{kind}#{digest}"})
            items.append({"pk": f"FP#{program_id}#{kind}#{digest}", "sk": seller_id})
        self._batch_put(items)

    def fingerprints_of(self, program_id: str, seller_id: str) -> list[tuple[str, str]]:
        out = []
        for i in self._query_pk(f"SELLERFP#{program_id}#{seller_id}"):
            kind, _, digest = str(i["sk"]).partition("#")
            out.append((kind, digest))
        return sorted(out)

    def holders(self, program_id: str, kind: str, digest: str, limit: int) -> list[str]:
        out: list[str] = []
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": av(f"FP#{program_id}#{kind}#{digest}")},
            "ConsistentRead": True,
            "ProjectionExpression": "sk",
        }
        while len(out) < limit:
            kwargs["Limit"] = limit - len(out)
            resp = self._db.query(**kwargs)
            out.extend(str(from_item(i)["sk"]) for i in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return sorted(out)

    def ring_of(self, program_id: str, seller_id: str) -> str | None:
        item = self._get(f"RINGOF#{program_id}", seller_id)
        return None if item is None else str(item["ring_id"])

    def set_ring_of(self, program_id: str, seller_ids: Sequence[str], ring_id: str) -> None:
        self._batch_put([{"pk": f"RINGOF#{program_id}", "sk": s, "ring_id": ring_id} for s in sorted(set(seller_ids))])

    def get_ring(self, program_id: str, ring_id: str) -> Ring | None:
        item = self._get(f"RING#{program_id}", ring_id)
        return None if item is None else Ring.model_validate(item)

    def save_ring(self, ring: Any, expected_version: int | None) -> bool:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Item": {k: av(v) for k, v in _item(f"RING#{ring.program_id}", ring.ring_id, ring).items()},
        }
        if expected_version is None:
            kwargs["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            kwargs["ConditionExpression"] = "version = :v"
            kwargs["ExpressionAttributeValues"] = {":v": av(expected_version)}
        try:
            self._db.put_item(**kwargs)
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def list_rings(self, program_id: str) -> list[Ring]:
        return [Ring.model_validate(i) for i in self._query_pk(f"RING#{program_id}")]


def _item(pk: str, sk: str, model: Any) -> dict[str, Any]:
    return {"pk": pk, "sk": sk, **{k: v for k, v in model.model_dump(mode="json").items() if v is not None}}


class DynamoLeads(DynamoTable):
    """``LeadRepository``."""

    def put_sales(self, program_id: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        outcome: dict[str, str] = {}
        for row in rows:
            key = (f"SALES#{program_id}#{row['seller_id']}", str(row["period"]))
            fields = {k: row[k] for k in ("seller_id", "period", "units", "orders", "gross_sales")}
            old = self._get(*key)
            if old is not None and all(old.get(k) == v for k, v in fields.items()):
                outcome[f"{row['seller_id']}|{row['period']}"] = "unchanged"
                continue
            self._put({"pk": key[0], "sk": key[1], **fields})
            outcome[f"{row['seller_id']}|{row['period']}"] = "new" if old is None else "replaced"
        return outcome

    def sales_of(self, program_id: str, seller_id: str) -> dict[str, int]:
        return {str(i["period"]): int(i["gross_sales"]) for i in self._query_pk(f"SALES#{program_id}#{seller_id}")}

    def record_testbuy(self, program_id: str, seller_id: str, order_id: str, verdict: str, at: datetime) -> None:
        self._put(
            {
                "pk": f"TESTBUYS#{program_id}#{seller_id}",
                "sk": order_id,
                "order_id": order_id,
                "verdict": verdict,
                "at": at.isoformat(),
            }
        )

    def testbuys_of(self, program_id: str, seller_id: str) -> list[dict[str, Any]]:
        return [
            {"order_id": str(i["order_id"]), "verdict": str(i["verdict"]), "at": datetime.fromisoformat(str(i["at"]))}
            for i in self._query_pk(f"TESTBUYS#{program_id}#{seller_id}")
        ]

    def create_lead(self, lead: Any) -> tuple[Lead, bool]:
        if self._put(_item(f"LEAD#{lead.program_id}", lead.lead_id, lead), new_only=True):
            return lead, True
        return self.get_lead(lead.program_id, lead.lead_id), False

    def get_lead(self, program_id: str, lead_id: str) -> Lead:
        item = self._get(f"LEAD#{program_id}", lead_id)
        if item is None:
            raise NotFound(f"no lead {lead_id} in programme {program_id}", details=[{"field": "lead_id"}])
        return Lead.model_validate(item)

    def list_leads(self, program_id: str) -> list[Lead]:
        return [Lead.model_validate(i) for i in self._query_pk(f"LEAD#{program_id}")]

    def update_lead_status(
        self, program_id: str, lead_id: str, from_status: str, to_status: str, entry: Mapping[str, Any], at: datetime
    ) -> Lead:
        try:
            item = self._db.update_item(
                TableName=self._table,
                Key=self._key(f"LEAD#{program_id}", lead_id),
                UpdateExpression="SET #s = :to, #h = list_append(#h, :e), updated_at = :at, version = version + :one",
                ConditionExpression="#s = :from",
                ExpressionAttributeNames={"#s": "status", "#h": "history"},
                ExpressionAttributeValues={
                    ":to": av(to_status),
                    ":from": av(from_status),
                    ":e": av([dict(entry)]),
                    ":at": av(at.isoformat()),
                    ":one": av(1),
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise InvalidState(f"lead {lead_id} is no longer {from_status}", details=[{"field": "status"}]) from exc
            raise
        return Lead.model_validate(from_item(item["Attributes"]))

    def set_package(self, program_id: str, lead_id: str, package_sha256: str) -> Lead:
        try:
            item = self._update(
                f"LEAD#{program_id}",
                lead_id,
                {"package_sha256": package_sha256},
                condition="attribute_exists(pk)",
            )
        except ClientError as exc:
            if error_code(exc) == "ConditionalCheckFailedException":
                raise NotFound(f"no lead {lead_id}", details=[{"field": "lead_id"}]) from exc
            raise
        return Lead.model_validate(item)
