"""Custody on the local stack: the real DynamoDB repository and the per-stack key, tampered with directly through
boto3 as someone with write access to the table (but not the key) would, and seen through the API and the service."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.adapters.dynamo_codec import av, from_item
from chalicelib.domain.custody import GENESIS, Actor, Anchor, CustodyEntry, next_entry
from chalicelib.domain.errors import Conflict
from chalicelib.domain.events import Envelope
from chalicelib.domain.models import OrderStatus
from chalicelib.services import custody, lab
from tests import builders

RUN = uuid.uuid4().hex[:8]
LAB = f"lab-custody-{RUN}"
LAB_ACTOR = Actor(subject="carol@lab", role="lab", lab_id=LAB)


def make_order(d: Any, entries: int) -> str:
    """An order at ``LAB`` with ``entries`` custody entries appended through the service (anchor moved each time)."""
    now = datetime.now(UTC)
    oid = f"ord-custody-{uuid.uuid4().hex[:12]}"
    d.orders.put_orders(
        [
            builders.order(
                at=now,
                order_id=oid,
                program_id=f"prg-custody-{RUN}",
                round_id=f"rnd-custody-{RUN}",
                seller_id="s-0001",
                pi=0.5,
                currency="USD",
                status=OrderStatus.AT_LAB,
                lab_id=LAB,
            )
        ]
    )
    for i in range(entries):
        custody.append(
            d,
            oid,
            Actor.system("forward_to_lab") if i == 0 else LAB_ACTOR,
            from_party=f"p{i}",
            to_party=f"p{i + 1}",
            location="bench",
            condition="seal intact",
        )
    return oid


@pytest.fixture()
def table(stack_info: Any) -> str:
    return str(stack_info.env["TESTBUY_DATA_TABLE"])


@pytest.fixture()
def ddb(local_stack: Any) -> Any:
    return local_stack.client("dynamodb")


def key(oid: str, seq: int) -> dict[str, Any]:
    return {"pk": av(f"ORDER#{oid}"), "sk": av(f"CUSTODY#{seq:08d}")}


def lab_report(api: Any, oid: str) -> dict[str, Any]:
    status, body, _ = api("lab", LAB).request("GET", f"/samples/{oid}/custody")
    assert status == 200, body
    return dict(body)


def test_a_chain_written_through_the_service_verifies_and_records_its_actors(deps: Any, api: Any) -> None:
    oid = make_order(deps, 3)
    body = lab_report(api, oid)
    assert body["valid"] is True and body["first_bad_seq"] is None and body["reason"] is None
    assert (body["length"], body["anchored_length"]) == (3, 3) and body["head"] == body["anchored_head"]
    assert [e["actor"]["subject"] for e in body["entries"]] == ["system:forward_to_lab", "carol@lab", "carol@lab"]
    assert {e["key_id"] for e in body["entries"]} == {deps.custody_key.current_key_id()}


def test_deleting_the_tail_item_is_named_at_the_deleted_entry(deps: Any, api: Any, ddb: Any, table: str) -> None:
    oid = make_order(deps, 4)
    ddb.delete_item(TableName=table, Key=key(oid, 3))
    body = lab_report(api, oid)
    assert (body["valid"], body["first_bad_seq"], body["reason"]) == (False, 3, "tail_missing")


def test_deleting_a_middle_item_is_named(deps: Any, api: Any, ddb: Any, table: str) -> None:
    oid = make_order(deps, 4)
    ddb.delete_item(TableName=table, Key=key(oid, 1))
    body = lab_report(api, oid)
    assert (body["valid"], body["first_bad_seq"], body["reason"]) == (False, 1, "sequence")


def test_editing_a_middle_item_is_named_at_that_entry(deps: Any, api: Any, ddb: Any, table: str) -> None:
    oid = make_order(deps, 4)
    ddb.update_item(
        TableName=table,
        Key=key(oid, 2),
        UpdateExpression="SET #c = :c",
        ExpressionAttributeNames={"#c": "condition"},
        ExpressionAttributeValues={":c": av("seal broken on arrival")},
    )
    body = lab_report(api, oid)
    assert (body["valid"], body["first_bad_seq"], body["reason"]) == (False, 2, "mac")
    assert body["entries"][2]["condition"] == "seal broken on arrival"  # shown as stored, flagged as bad


def test_re_hashing_every_item_with_plain_sha256_and_moving_the_anchor_is_named_at_entry_0(
    deps: Any, api: Any, ddb: Any, table: str
) -> None:
    oid = make_order(deps, 3)
    prev = GENESIS
    for entry in deps.custody.chain(oid):
        forged = dataclasses.replace(entry, prev_mac=prev, condition="re-written")
        mac = hashlib.sha256(forged.canonical()).hexdigest()
        ddb.update_item(
            TableName=table,
            Key=key(oid, entry.seq),
            UpdateExpression="SET #c = :c, prev_mac = :p, mac = :m",
            ExpressionAttributeNames={"#c": "condition"},
            ExpressionAttributeValues={":c": av("re-written"), ":p": av(prev), ":m": av(mac)},
        )
        prev = mac
    ddb.update_item(  # the forger also moves the order's anchor to the forged head
        TableName=table,
        Key={"pk": av(f"ORDER#{oid}"), "sk": av("META")},
        UpdateExpression="SET custody_head = :h",
        ExpressionAttributeValues={":h": av(prev)},
    )
    body = lab_report(api, oid)
    assert (body["valid"], body["first_bad_seq"], body["reason"]) == (False, 0, "mac")


class Recorder:
    def __init__(self) -> None:
        self.published: list[Envelope] = []

    def publish(self, events: Sequence[Envelope]) -> None:
        self.published.extend(events)


def test_the_verdict_event_carries_the_anchor_which_exposes_a_trim_with_the_order_anchor_rolled_back(
    deps: Any, ddb: Any, table: str
) -> None:
    oid = make_order(deps, 2)
    events = Recorder()
    d = dataclasses.replace(deps, events=events)
    req = builders.court_verdict(deps.evidence, "authentic")
    lab.post_verdict(d, oid, LAB, LAB_ACTOR, req, f"corr-{RUN}")
    (event,) = [e for e in events.published if e.detail_type == "VerdictRecorded"]
    data = event.detail["data"]
    entries, anchor = deps.custody.snapshot(oid)
    assert anchor == Anchor(3, entries[-1].mac) and (data["custody_length"], data["custody_head"]) == (3, anchor.head)
    assert entries[-1].actor == LAB_ACTOR and entries[-1].to_party == f"lab:{LAB}:archive"
    # a second arrival of the same verdict appends nothing
    lab.post_verdict(d, oid, LAB, LAB_ACTOR, req, f"corr-{RUN}")
    assert len(deps.custody.chain(oid)) == 3

    # a table writer drops the archive entry and rolls the order's anchor back to the (genuine) earlier state
    ddb.delete_item(TableName=table, Key=key(oid, 2))
    ddb.update_item(
        TableName=table,
        Key={"pk": av(f"ORDER#{oid}"), "sk": av("META")},
        UpdateExpression="SET custody_length = :n, custody_head = :h",
        ExpressionAttributeValues={":n": av(2), ":h": av(entries[1].mac)},
    )
    assert custody.report(deps, oid)["valid"] is True  # the table alone is consistent again
    checkpoint = Anchor(int(data["custody_length"]), str(data["custody_head"]))
    held = custody.report(deps, oid, [checkpoint])
    assert (held["valid"], held["first_bad_seq"], held["reason"]) == (False, 2, "tail_missing")


def test_two_appends_at_the_same_head_cannot_both_succeed(deps: Any, ddb: Any, table: str) -> None:
    oid = make_order(deps, 2)
    tail = deps.custody.chain(oid)[-1]
    rivals = [
        next_entry(
            tail,
            key=deps.custody_key,
            order_id=oid,
            actor=LAB_ACTOR,
            from_party="bench",
            to_party=f"shelf-{n}",
            at=datetime.now(UTC),
            location="bench",
            condition="ok",
        )
        for n in range(2)
    ]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt(entry: CustodyEntry) -> None:
        barrier.wait()
        try:
            deps.custody.append(entry)
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt, args=(e,)) for e in rivals]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict", "ok"]
    entries, anchor = deps.custody.snapshot(oid)
    assert len(entries) == 3 and anchor == Anchor(3, entries[-1].mac)
    assert entries[-1].to_party in {"shelf-0", "shelf-1"}
    # the loser's entry cannot be forced in after the winner either: its previous MAC is no longer the head
    loser = next(e for e in rivals if e.mac != entries[-1].mac)
    with pytest.raises(Conflict):
        deps.custody.append(loser)
    item = ddb.get_item(TableName=table, Key=key(oid, 2), ConsistentRead=True)["Item"]
    assert from_item(item)["mac"] == entries[-1].mac
    assert custody.report(deps, oid)["valid"] is True

    # through the service, concurrent appends are serialized by re-sealing on the new head: both land, in order
    done: list[int] = []

    def service_append(n: int) -> None:
        barrier.wait()
        entry, _ = custody.append(
            deps, oid, LAB_ACTOR, from_party="shelf", to_party=f"vault-{n}", location="vault", condition="ok"
        )
        done.append(entry.seq)

    threads = [threading.Thread(target=service_append, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(done) == [3, 4]
    final = custody.report(deps, oid)
    assert final["valid"] is True and final["length"] == 5


def test_a_follow_up_redone_on_retry_appends_its_entry_once(deps: Any) -> None:
    oid = make_order(deps, 1)

    def archive() -> tuple[CustodyEntry, Anchor]:
        return custody.append(
            deps,
            oid,
            LAB_ACTOR,
            from_party=f"lab:{LAB}",
            to_party=f"lab:{LAB}:archive",
            location="lab",
            condition="examined: authentic",
            once=lambda e: e.to_party == f"lab:{LAB}:archive",
        )

    first, anchor1 = archive()
    again, anchor2 = archive()
    assert again == first and anchor1 == anchor2 == Anchor(2, first.mac)
    assert len(deps.custody.chain(oid)) == 2


def test_a_malformed_item_is_named_not_a_server_error(deps: Any, api: Any, ddb: Any, table: str) -> None:
    oid = make_order(deps, 3)
    ddb.update_item(
        TableName=table,
        Key=key(oid, 1),
        UpdateExpression="SET #a = :a, evidence = :e REMOVE actor_subject",
        ExpressionAttributeNames={"#a": "at"},
        ExpressionAttributeValues={":a": av("not a date"), ":e": av("not a list")},
    )
    body = lab_report(api, oid)
    assert (body["valid"], body["first_bad_seq"], body["reason"]) == (False, 1, "mac")
