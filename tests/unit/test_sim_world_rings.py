"""The simulated world's issue-10 knobs: off by default (the demo's population is unchanged), and when on, a known
ring that the ring detection finds exactly, and a large counterfeiter whose sales feed crosses the lead threshold."""

from __future__ import annotations

import hashlib
import json

from chalicelib.domain.enforcement import PolicyConfig
from chalicelib.domain.models import SellerIn
from chalicelib.services import rings
from testbuy.sim.world import generate
from tests.fakes import world as fake_world


def test_the_default_population_is_unchanged() -> None:
    # pinned before the knobs existed: the default demo's sellers, their signals and links are byte for byte the same
    payload = generate(300, 11).import_payload()
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    assert digest == "f8106ff6488485cb9454d6770eea08f7e88f954cde3180d75b1db7b891183f02"
    assert generate(300, 11).known_ring == () and generate(300, 11).large_counterfeiter is None


def test_the_known_ring_is_found_and_the_large_counterfeiter_crosses_the_threshold() -> None:
    w = generate(300, 11, known_ring=4, large_counterfeiter=True)
    assert len(w.known_ring) == 4 and w.large_counterfeiter not in w.known_ring
    assert all(w.by_id[s].sells_fakes and not w.by_id[s].refuses for s in w.known_ring)
    # the rest of the population keeps its draw
    base = generate(300, 11)
    planted = {*w.known_ring, w.large_counterfeiter}
    assert [s for s in w.sellers if s.seller_id not in planted] == [
        s for s in base.sellers if s.seller_id not in planted
    ]
    f = fake_world()
    sellers = [SellerIn.model_validate({**row, "signals": None}) for row in w.import_payload()]
    found = rings.after_import(f.deps, "prg-1", sellers[:150], "c") + rings.after_import(
        f.deps, "prg-1", sellers[150:], "c"
    )
    live = [r for r in f.rings.list_rings("prg-1") if r.merged_into is None]
    assert w.known_ring in {tuple(r.members) for r in live}
    assert found
    feed = w.sales_feed(["2026-03"], "EUR")
    big = [r for r in feed["rows"] if r["seller_id"] == w.large_counterfeiter]
    assert big[0]["gross_sales"] >= PolicyConfig().lead_sales_threshold
