"""The rings and leads repositories keep one contract: the DynamoDB adapters (on the local stack) and the in-memory
fakes answer the same way (the index bounded by ``limit``, ring writes conditional on the version, lead moves
conditional on the from-status, sales idempotent on seller and period)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.domain.errors import InvalidState, NotFound
from chalicelib.domain.leads import Lead, LeadStatus
from chalicelib.domain.rings import Ring
from tests.fakes import FakeLeads, FakeRings

T = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(params=["dynamodb", "fake"])
def stores(request: Any) -> tuple[Any, Any]:
    if request.param == "fake":
        return FakeRings(), FakeLeads()
    d = request.getfixturevalue("deps")
    return d.rings, d.leads


def test_fingerprint_index_and_rings(stores: tuple[Any, Any]) -> None:
    rings, _ = stores
    pid = f"prg-{uuid.uuid4().hex[:10]}"
    digest = hashlib.sha256(b"x").hexdigest()
    for i in range(7):
        rings.add_fingerprints(pid, f"s{i}", [("device", digest), ("address", digest)])
    rings.add_fingerprints(pid, "s0", [("device", digest)])  # again: idempotent
    assert rings.fingerprints_of(pid, "s0") == [("address", digest), ("device", digest)]
    assert rings.holders(pid, "device", digest, 100) == [f"s{i}" for i in range(7)]
    assert len(rings.holders(pid, "device", digest, 3)) == 3
    assert rings.holders(pid, "payment_account", digest, 10) == []

    ring = Ring(program_id=pid, ring_id="ring-1", members=["s0", "s1"], detected_at=T, updated_at=T)
    assert rings.save_ring(ring, None) is True
    assert rings.save_ring(ring, None) is False  # exists already
    grown = ring.model_copy(update={"members": ["s0", "s1", "s2"], "version": 2})
    assert rings.save_ring(grown, 2) is False  # stale version
    assert rings.save_ring(grown, 1) is True
    assert rings.get_ring(pid, "ring-1").members == ["s0", "s1", "s2"]
    assert rings.get_ring(pid, "ring-404") is None
    rings.set_ring_of(pid, ["s0", "s1", "s2"], "ring-1")
    assert rings.ring_of(pid, "s2") == "ring-1" and rings.ring_of(pid, "s3") is None
    assert [r.ring_id for r in rings.list_rings(pid)] == ["ring-1"]


def test_sales_testbuys_and_leads(stores: tuple[Any, Any]) -> None:
    _, leads = stores
    pid = f"prg-{uuid.uuid4().hex[:10]}"
    row = {"seller_id": "s1", "period": "2026-03", "units": 3, "orders": 2, "gross_sales": 900}
    assert leads.put_sales(pid, [row]) == {"s1|2026-03": "new"}
    assert leads.put_sales(pid, [row]) == {"s1|2026-03": "unchanged"}
    assert leads.put_sales(pid, [{**row, "gross_sales": 1000}]) == {"s1|2026-03": "replaced"}
    assert leads.sales_of(pid, "s1") == {"2026-03": 1000}
    leads.record_testbuy(pid, "s1", "o1", "counterfeit", T)
    leads.record_testbuy(pid, "s1", "o1", "counterfeit", T)
    assert [(t["order_id"], t["verdict"], t["at"]) for t in leads.testbuys_of(pid, "s1")] == [("o1", "counterfeit", T)]

    lead = Lead(
        program_id=pid, lead_id="lead-1", seller_id="s1", rule="r", currency="EUR",
        history=[{"status": "submitted", "at": T.isoformat()}], created_at=T, updated_at=T,
    )  # fmt: skip
    assert leads.create_lead(lead)[1] is True
    again, created = leads.create_lead(lead.model_copy(update={"rule": "other"}))
    assert created is False and again.rule == "r"
    entry = {"status": "case_opened", "at": T.isoformat(), "by": "e", "note": ""}
    moved = leads.update_lead_status(pid, "lead-1", "submitted", "case_opened", entry, T)
    assert moved.status is LeadStatus.CASE_OPENED and [h["status"] for h in moved.history] == [
        "submitted",
        "case_opened",
    ]
    with pytest.raises(InvalidState):
        leads.update_lead_status(pid, "lead-1", "submitted", "closed_without_action", entry, T)
    assert leads.get_lead(pid, "lead-1").version == 2
    assert leads.set_package(pid, "lead-1", "a" * 64).package_sha256 == "a" * 64
    with pytest.raises(NotFound):
        leads.get_lead(pid, "lead-2")
    assert [x.lead_id for x in leads.list_leads(pid)] == ["lead-1"]
