"""Evidence files go to S3 under their SHA-256, over the real HTTP API."""

from __future__ import annotations

import base64
import hashlib
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3

from chalicelib.domain.models import OrderStatus
from tests import builders


def _order_at_lab(deps: Any, lab: str) -> str:
    now = datetime.now(UTC)
    oid = f"ord-evidence-{uuid.uuid4().hex[:12]}"
    deps.orders.put_orders(
        [
            builders.order(
                at=now,
                order_id=oid,
                program_id="prg-evidence",
                round_id="rnd-evidence",
                seller_id="s1",
                pi=0.5,
                amount=100,
                currency="USD",
                status=OrderStatus.AT_LAB,
                lab_id=lab,
            )
        ]
    )
    return oid


def test_upload_stores_by_content_hash_and_is_lab_scoped(api: Any, deps: Any) -> None:
    oid = _order_at_lab(deps, "lab-ev")
    content = b"\x89PNG fake photo of a counterfeit logo " + uuid.uuid4().bytes
    body = {"content_base64": base64.b64encode(content).decode(), "media_type": "image/png"}

    status, payload, _ = api("lab", "lab-ev").request("POST", f"/samples/{oid}/evidence", body)
    assert status == 201
    digest = hashlib.sha256(content).hexdigest()
    assert payload == {"sha256": digest, "bytes": len(content), "media_type": "image/png"}
    obj = boto3.client("s3").get_object(Bucket=os.environ["TESTBUY_EVIDENCE_BUCKET"], Key=f"evidence/sha256/{digest}")
    assert obj["Body"].read() == content

    status, payload, _ = api("lab", "lab-other").request("POST", f"/samples/{oid}/evidence", body)
    assert status == 404 and payload["error"]["code"] == "not_found"  # the answer of an unknown sample


def test_bad_base64_is_a_400_naming_the_field(api: Any, deps: Any) -> None:
    oid = _order_at_lab(deps, "lab-ev")
    status, payload, _ = api("lab", "lab-ev").request(
        "POST", f"/samples/{oid}/evidence", {"content_base64": "not*base64!", "media_type": "image/png"}
    )
    assert status == 400
    assert payload["error"]["details"][0]["field"] == "content_base64"
