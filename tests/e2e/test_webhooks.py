"""The delivery webhook on the real HTTP API, the Standard Webhooks way: bad, non-ASCII, stale and future signatures
are 401s; a replayed webhook-id answers 202 ``replay: true``; a second, different arrival is accepted and changes
nothing; an id being processed is a 409; the secret rotates through Secrets Manager without a deployment. After
each refusal the order's stored item (read raw from DynamoDB) and the receipts are exactly as before."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.api.auth import sign_webhook
from chalicelib.domain.models import OrderStatus
from testbuy.client import ApiClient
from tests import builders

RUN = uuid.uuid4().hex[:8]


def _whsec(seed: bytes) -> str:
    return "whsec_" + base64.b64encode(seed * 3).decode()


@pytest.fixture(scope="module")
def d(local_stack: Any) -> Any:
    from chalicelib.bootstrap import deps

    return deps()


def placed_order(d: Any) -> str:
    now = d.clock.now()
    oid = f"ord-wh-{uuid.uuid4().hex[:16]}"
    d.orders.put_orders(
        [
            builders.order(
                at=now,
                order_id=oid,
                program_id=f"prg-wh-{RUN}",
                round_id=f"rnd-wh-{RUN}",
                seller_id="s-0001",
                pi=0.5,
                currency="USD",
                status=OrderStatus.PLACED,
                marketplace_order_id=f"mk-{oid}",
            )
        ]
    )
    return oid


def raw_item(pk: str, sk: str) -> Any:
    import boto3

    from chalicelib.config import settings

    resp = boto3.client("dynamodb", region_name=settings().region).get_item(
        TableName=settings().data_table, Key={"pk": {"S": pk}, "sk": {"S": sk}}, ConsistentRead=True
    )
    return resp.get("Item")


def state(oid: str, *msg_ids: str) -> dict[str, Any]:
    return {
        "order": raw_item(f"ORDER#{oid}", "META"),
        "receipts": {m: raw_item(f"WEBHOOK#{m}", "RECEIPT") for m in msg_ids},
    }


def notice(oid: str, status: str = "delivered", at: datetime | None = None) -> bytes:
    return json.dumps(
        {
            "order_id": oid,
            "marketplace_order_id": f"mk-{oid}",
            "status": status,
            "occurred_at": (at or datetime.now(UTC)).isoformat(),
        }
    ).encode()


def post(stack_info: Any, raw: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    status, payload, _ = ApiClient(stack_info.api_url).request("POST", "/webhooks/delivery", raw=raw, headers=headers)
    return status, payload


def _sig(stack_info: Any, raw: bytes, msg_id: str, **change: Any) -> dict[str, str]:
    timestamp = change.pop("timestamp", None)
    headers = sign_webhook(stack_info.webhook_secret, raw, msg_id, timestamp=timestamp)
    headers.update(change)
    return headers


REFUSALS = {
    "bad signature": lambda info, raw, m: _sig(info, raw + b" ", m),
    "wrong secret": lambda info, raw, m: sign_webhook(_whsec(b"wrong-secret"), raw, m),
    "non-ASCII signature": lambda info, raw, m: _sig(info, raw, m, **{"webhook-signature": "v1,\u00e9\u00e9=="}),
    "non-ASCII in a valid-looking entry": lambda info, raw, m: {
        **_sig(info, raw, m),
        "webhook-signature": "v1,\u00ff" + _sig(info, raw, m)["webhook-signature"][4:],
    },
    "bad base64": lambda info, raw, m: _sig(info, raw, m, **{"webhook-signature": "v1,***"}),
    "no v1 entry": lambda info, raw, m: _sig(info, raw, m, **{"webhook-signature": "v0,abc"}),
    "stale timestamp": lambda info, raw, m: _sig(info, raw, m, timestamp=int(time.time()) - 301 - 5),
    "future timestamp": lambda info, raw, m: _sig(info, raw, m, timestamp=int(time.time()) + 301 + 5),
    "timestamp not digits": lambda info, raw, m: _sig(info, raw, m, **{"webhook-timestamp": "17e8"}),
    "no webhook-id": lambda info, raw, m: {k: v for k, v in _sig(info, raw, m).items() if k != "webhook-id"},
    "webhook-id not an id": lambda info, raw, m: _sig(info, raw, m, **{"webhook-id": "a b"}),
    "old-style header only": lambda info, raw, m: {"X-Testbuy-Signature": "t=1,v1=00"},
}


@pytest.mark.parametrize("label", sorted(REFUSALS))
def test_a_bad_signature_is_401_and_changes_nothing(d: Any, stack_info: Any, label: str) -> None:
    oid = placed_order(d)
    msg_id = f"msg_bad_{uuid.uuid4().hex[:12]}"
    raw = notice(oid)
    before = state(oid, msg_id)
    status, payload = post(stack_info, raw, REFUSALS[label](stack_info, raw, msg_id))
    assert status == 401, payload
    assert payload["error"]["code"] == "unauthorized"
    assert state(oid, msg_id) == before
    assert before["receipts"][msg_id] is None


def test_first_arrival_changes_the_order_a_replay_answers_the_same_and_changes_nothing(d: Any, stack_info: Any) -> None:
    oid = placed_order(d)
    msg_id = f"msg_first_{uuid.uuid4().hex[:12]}"
    raw = notice(oid)
    status, first = post(stack_info, raw, _sig(stack_info, raw, msg_id))
    assert status == 202, first
    assert first == {"order_id": oid, "accepted": True, "replay": False}
    after_first = state(oid, msg_id)
    assert d.orders.get_order(oid).status is OrderStatus.DELIVERED
    receipt = after_first["receipts"][msg_id]
    assert receipt["state"] == {"S": "done"}
    assert int(receipt["expires_at"]["N"]) > time.time() + 6 * 86400  # kept for DynamoDB's TTL, days ahead

    # the sender retries the same notice (a lost reply): same id, re-signed, even a re-rendered body
    later = notice(oid, at=datetime.now(UTC) + timedelta(minutes=1))
    status, again = post(stack_info, later, _sig(stack_info, later, msg_id))
    assert status == 202, again
    assert again == {"order_id": oid, "accepted": True, "replay": True}
    assert state(oid, msg_id) == after_first


def test_a_second_different_arrival_is_accepted_but_only_the_first_changed_the_order(d: Any, stack_info: Any) -> None:
    oid = placed_order(d)
    first_id, second_id = f"msg_a_{uuid.uuid4().hex[:12]}", f"msg_b_{uuid.uuid4().hex[:12]}"
    raw = notice(oid, "delivered")
    assert post(stack_info, raw, _sig(stack_info, raw, first_id))[0] == 202
    before = state(oid)
    failed = notice(oid, "failed")
    status, payload = post(stack_info, failed, _sig(stack_info, failed, second_id))
    assert status == 202, payload
    assert payload["replay"] is False
    assert state(oid) == before  # status, delivered_at and the stored arrival are the first one's
    assert d.orders.get_order(oid).status is OrderStatus.DELIVERED


def test_an_id_being_processed_is_a_409_and_a_dead_claim_is_taken_over(d: Any, stack_info: Any) -> None:
    oid = placed_order(d)
    msg_id = f"msg_busy_{uuid.uuid4().hex[:12]}"
    assert d.webhook_receipts.claim(msg_id, d.clock.now(), 60, 86400) == "claimed"  # another arrival is at work
    raw = notice(oid)
    before = state(oid, msg_id)
    status, payload = post(stack_info, raw, _sig(stack_info, raw, msg_id))
    assert status == 409 and payload["error"]["code"] == "webhook_in_progress", payload
    assert state(oid, msg_id) == before
    # that arrival died (its lease ran out): the retry takes the claim over and is processed
    assert d.webhook_receipts.claim(msg_id, d.clock.now() - timedelta(hours=1), 60, 86400) == "busy"
    d.webhook_receipts.release(msg_id)  # that arrival failed and gave its claim up: its lease ends at once
    assert raw_item(f"WEBHOOK#{msg_id}", "RECEIPT")["lease_until"] == {"N": "0"}
    assert d.webhook_receipts.claim(msg_id, d.clock.now() - timedelta(hours=1), 60, 86400) == "claimed"
    status, payload = post(stack_info, raw, _sig(stack_info, raw, msg_id))
    assert status == 202 and payload["replay"] is False, payload
    assert d.orders.get_order(oid).status is OrderStatus.DELIVERED


@pytest.fixture()
def rotated(local_stack: Any, stack_info: Any) -> Iterator[tuple[str, str]]:
    """The secret rotated in Secrets Manager to (new current, old previous); restored afterwards."""
    from aws_lambda_powertools.utilities import parameters

    from chalicelib.config import settings

    sm = local_stack.client("secretsmanager")
    name = settings().webhook_secret_arn
    new = _whsec(f"rotated-{RUN}".encode())
    sm.put_secret_value(SecretId=name, SecretString=json.dumps({"current": new, "previous": stack_info.webhook_secret}))
    parameters.clear_caches()  # what SECRET_MAX_AGE does in production, at once
    try:
        yield new, stack_info.webhook_secret
    finally:
        sm.put_secret_value(
            SecretId=name, SecretString=json.dumps({"current": stack_info.webhook_secret, "previous": None})
        )
        parameters.clear_caches()


def test_two_active_secrets_during_a_rotation_without_a_deployment(
    d: Any, stack_info: Any, rotated: tuple[str, str]
) -> None:
    new, old = rotated
    for secret in (old, new):
        oid = placed_order(d)
        raw = notice(oid)
        status, payload = post(stack_info, raw, sign_webhook(secret, raw, f"msg_rot_{uuid.uuid4().hex[:12]}"))
        assert status == 202, payload
    oid = placed_order(d)
    raw = notice(oid)
    status, _ = post(stack_info, raw, sign_webhook(_whsec(b"neither-secret"), raw, f"msg_rot_{uuid.uuid4().hex}"))
    assert status == 401
    assert d.orders.get_order(oid).status is OrderStatus.PLACED


def test_a_notice_refused_after_its_claim_does_not_block_the_retry(d: Any, stack_info: Any) -> None:
    """A notice refused (here: an unknown order, 404) leaves no receipt: the corrected retry is processed."""
    msg_id = f"msg_retry_{uuid.uuid4().hex[:12]}"
    missing = f"ord-wh-missing-{uuid.uuid4().hex[:8]}"
    raw = notice(missing)
    status, payload = post(stack_info, raw, _sig(stack_info, raw, msg_id))
    assert status == 404, payload
    assert raw_item(f"WEBHOOK#{msg_id}", "RECEIPT") is None  # refused before its id was claimed
    oid = placed_order(d)
    raw = notice(oid)
    status, payload = post(stack_info, raw, _sig(stack_info, raw, msg_id))
    assert status == 202 and payload["replay"] is False, payload
    assert d.orders.get_order(oid).status is OrderStatus.DELIVERED
