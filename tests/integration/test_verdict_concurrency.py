"""Concurrent identical verdict posts, decided atomically by one conditional write, at the service layer with real
threads against the real DynamoDB adapters on the local stack (the local HTTP API serves one request at a time, so
the race has to be run here). The bus and the workflow are recording fakes so the follow-ups can be counted."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.domain.custody import Actor
from chalicelib.domain.errors import Conflict
from chalicelib.domain.models import OrderStatus, Verdict, VerdictKind
from chalicelib.services import custody, lab
from chalicelib.services.deps import Deps
from tests import builders
from tests.fakes import FakeEvents, FakeWorkflow

THREADS = 8


def at_lab(d: Deps) -> tuple[str, str]:
    """An order at the lab, its custody chain started and its execution waiting for the verdict."""
    oid, lab_id = f"ord-vc-{uuid.uuid4().hex[:12]}", f"lab-vc-{uuid.uuid4().hex[:6]}"
    now = datetime.now(UTC)
    d.orders.put_orders(
        [
            builders.order(
                at=now,
                order_id=oid,
                program_id="prg-vc",
                round_id="rnd-vc",
                seller_id="s-vc",
                category="c",
                amount=100,
                status=OrderStatus.DELIVERED,
                marketplace_order_id="mo-vc",
                price=90,
                delivered_at=now,
            )
        ]
    )
    d.orders.mark_at_lab(oid, lab_id, now)
    custody.append(
        d,
        oid,
        Actor.system("test"),
        from_party="seller:s-vc",
        to_party=f"lab:{lab_id}",
        at=now,
        location="x",
        condition="y",
    )
    d.orders.arm(oid, "verdict", f"token-{oid}")
    return oid, lab_id


def race(d: Deps, oid: str, lab_id: str, kinds: list[VerdictKind]) -> list[Any]:
    barrier = threading.Barrier(len(kinds))
    results: list[Any] = [None] * len(kinds)
    report = builders.court_verdict(d.evidence, VerdictKind.AUTHENTIC).report_sha256  # one report: same = same
    reqs = [builders.court_verdict(d.evidence, k, report_sha256=report) for k in kinds]

    def post(i: int) -> None:
        barrier.wait()
        try:
            results[i] = lab.post_verdict(d, oid, lab_id, Actor(f"tech-{i}", "lab", lab_id), reqs[i], f"corr-{i}")
        except Exception as exc:  # noqa: BLE001 - collected and asserted on below
            results[i] = exc

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(kinds))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


@pytest.fixture()
def d(deps: Deps) -> Deps:
    return dataclasses.replace(deps, events=FakeEvents(), workflow=FakeWorkflow())


def test_identical_concurrent_verdicts_create_one_verdict_one_custody_entry_one_event(d: Deps) -> None:
    oid, lab_id = at_lab(d)
    results = race(d, oid, lab_id, [VerdictKind.COUNTERFEIT] * THREADS)
    assert not [r for r in results if isinstance(r, BaseException)], results
    created = [r for r in results if r[1]]
    assert len(created) == 1, "exactly one post creates the verdict"
    stored: Verdict = created[0][0]
    assert all(r[0] == stored for r in results), "the others get the idempotent answer: the stored verdict"
    assert d.orders.get_verdict(oid) == stored
    chain = d.custody.chain(oid)
    examined = [e for e in chain if e.condition == "examined: counterfeit"]
    assert len(examined) == 1 and custody.report(d, oid)["valid"] and len(chain) == 2
    events = d.events
    assert isinstance(events, FakeEvents)
    assert len(events.unique("VerdictRecorded")) == 1  # published by several, one event id: subscribers dedupe
    workflow = d.workflow
    assert isinstance(workflow, FakeWorkflow)
    assert workflow.resumed == {f"token-{oid}": {"verdict": "counterfeit"}}
    order = d.orders.get_order(oid)
    assert order.status is OrderStatus.VERDICT and order.verdict is VerdictKind.COUNTERFEIT
    assert d.orders.lab_queue(lab_id) == []


def test_different_concurrent_verdicts_one_wins_the_others_conflict(d: Deps) -> None:
    oid, lab_id = at_lab(d)
    kinds = [VerdictKind.COUNTERFEIT, VerdictKind.AUTHENTIC] * (THREADS // 2)
    results = race(d, oid, lab_id, kinds)
    stored = d.orders.get_verdict(oid)
    assert stored is not None
    for kind, r in zip(kinds, results, strict=True):
        if kind is stored.verdict:
            assert not isinstance(r, BaseException) and r[0] == stored, r
        else:
            assert isinstance(r, Conflict), r
    assert sum(1 for r in results if not isinstance(r, BaseException) and r[1]) == 1
    examined = [e for e in d.custody.chain(oid) if e.condition.startswith("examined")]
    assert [e.condition for e in examined] == [f"examined: {stored.verdict.value}"]
