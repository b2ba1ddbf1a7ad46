"""Ring detection: components are exactly the connected components, whatever the order and the batching."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from chalicelib.domain.models import SellerFingerprints, SellerIn
from chalicelib.domain.rings import DECLARED_LINK, UnionFind, assign_ids, components, declared_link, new_ring_id
from chalicelib.services import rings
from tests.fakes import world

KINDS = ("identity_document", "payment_account", "address", "device")


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def naive_components(holdings: Mapping[str, Sequence[tuple[str, str]]]) -> set[frozenset[str]]:
    """Reference: breadth-first search over 'shares a fingerprint' adjacency, O(n^2) and obviously right."""
    sellers = list(holdings)
    adj = {s: {t for t in sellers if t != s and set(holdings[s]) & set(holdings[t])} for s in sellers}
    seen: set[str] = set()
    out: set[frozenset[str]] = set()
    for s in sellers:
        if s in seen:
            continue
        comp, stack = {s}, [s]
        while stack:
            for t in adj[stack.pop()]:
                if t not in comp:
                    comp.add(t)
                    stack.append(t)
        seen |= comp
        if len(comp) >= 2:
            out.add(frozenset(comp))
    return out


holdings_st = st.dictionaries(
    st.sampled_from([f"s{i:02d}" for i in range(14)]),
    st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from([h(str(i)) for i in range(10)])), max_size=3),
    min_size=1,
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(holdings_st)
def test_components_are_exactly_the_connected_components(holdings: dict[str, list[tuple[str, str]]]) -> None:
    got = {frozenset(c.members) for c in components(holdings)}
    assert got == naive_components(holdings)
    for c in components(holdings):  # the kinds named are the kinds some two members share, nothing else
        shared = {
            fp[0]
            for fp in {fp for m in c.members for fp in holdings[m]}
            if sum(fp in holdings[m] for m in c.members) >= 2
        }
        assert set(c.shared_kinds) == shared


@settings(max_examples=80, deadline=None)
@given(holdings_st, st.randoms(use_true_random=False))
def test_order_of_the_input_does_not_matter(holdings: dict[str, list[tuple[str, str]]], rnd: random.Random) -> None:
    keys = list(holdings)
    rnd.shuffle(keys)
    shuffled = {k: list(reversed(holdings[k])) for k in keys}
    assert components(shuffled) == components(holdings)


def _import(d: object, batches: Sequence[Sequence[SellerIn]]) -> set[frozenset[str]]:
    w = d
    for batch in batches:
        rings.after_import(w.deps, "prg-1", batch, "c")  # type: ignore[attr-defined]
    store = w.rings  # type: ignore[attr-defined]
    live = [r for r in store.list_rings("prg-1") if r.merged_into is None]
    # every member's pointer names its live ring
    for r in live:
        assert all(store.ring_of("prg-1", m) == r.ring_id for m in r.members)
    return {frozenset(r.members) for r in live}


def _seller(sid: str, fps: Sequence[tuple[str, str]], links: Sequence[str] = ()) -> SellerIn:
    by_kind: dict[str, list[str]] = {k: [] for k in KINDS}
    for k, v in sorted(set(fps)):
        by_kind[k].append(v)
    return SellerIn(
        seller_id=sid,
        category="c",
        expected_cost=1000,
        risk=0.1,
        fingerprints=SellerFingerprints(**by_kind),
        linked_sellers=list(links),
    )


@settings(max_examples=40, deadline=None)
@given(holdings_st, st.randoms(use_true_random=False), st.integers(min_value=1, max_value=5))
def test_batches_give_the_same_rings_as_one_import(
    holdings: dict[str, list[tuple[str, str]]], rnd: random.Random, parts: int
) -> None:
    sellers = [_seller(s, fps) for s, fps in holdings.items()]
    one = _import(world(), [sellers])
    rnd.shuffle(sellers)
    cuts = sorted(rnd.sample(range(1, len(sellers)), min(parts - 1, len(sellers) - 1))) if len(sellers) > 1 else []
    batches = [sellers[a:b] for a, b in zip([0, *cuts], [*cuts, len(sellers)], strict=True)]
    assert _import(world(), batches) == one == naive_components(holdings)


def test_a_new_seller_joins_an_existing_ring_and_the_id_is_stable() -> None:
    w = world()
    first = rings.after_import(
        w.deps, "prg-1", [_seller("b", [("device", h("d1"))]), _seller("c", [("device", h("d1"))])], "c"
    )
    assert len(first) == 1
    rid = first[0].ring_id
    assert rid == new_ring_id("prg-1", ["b", "c"])
    # later, in another batch: "a" (smaller than every member) shares c's address... and c's device
    grown = rings.after_import(w.deps, "prg-1", [_seller("a", [("device", h("d1")), ("address", h("x"))])], "c")
    assert [r.ring_id for r in grown] == [rid]  # the id does not move to the new smallest member
    assert grown[0].members == ["a", "b", "c"]
    events = [e for e in w.events.published if e.detail_type == "RingDetected"]
    assert [e.detail["data"]["sellers"] for e in events] == [["b", "c"], ["a", "b", "c"]]
    assert all(e.detail["data"]["shared_fingerprint_kinds"] == ["device"] for e in events)
    # a repeat of the same import changes nothing and publishes nothing new
    assert rings.after_import(w.deps, "prg-1", [_seller("a", [("device", h("d1"))])], "c") == []


def test_two_rings_merge_into_the_smaller_id_and_the_other_points_to_it() -> None:
    w = world()
    r1 = rings.after_import(
        w.deps, "prg-1", [_seller("a", [("address", h("1"))]), _seller("b", [("address", h("1"))])], "c"
    )
    r2 = rings.after_import(
        w.deps, "prg-1", [_seller("x", [("device", h("2"))]), _seller("y", [("device", h("2"))])], "c"
    )
    ids = sorted([r1[0].ring_id, r2[0].ring_id])
    merged = rings.after_import(w.deps, "prg-1", [_seller("m", [("address", h("1")), ("device", h("2"))])], "c")
    assert [r.ring_id for r in merged] == [ids[0]]
    assert merged[0].members == ["a", "b", "m", "x", "y"]
    assert merged[0].shared_fingerprint_kinds == ["address", "device"]
    gone = w.rings.get_ring("prg-1", ids[1])
    assert gone.merged_into == ids[0]
    assert [r.ring_id for r in rings.list_rings(_with_program(w), "prg-1")] == [ids[0]]


def _with_program(w: object) -> object:
    from datetime import UTC, datetime

    from chalicelib.domain.models import Program, Timeouts

    now = datetime(2026, 1, 1, tzinfo=UTC)
    w.programs.put_program(  # type: ignore[attr-defined]
        Program(
            program_id="prg-1",
            name="p",
            currency="EUR",
            budget=1,
            period_start=now,
            period_end=now.replace(year=2027),
            round_size=1,
            exploration_share=0.1,
            blend=0.25,
            labs=["lab-1"],
            timeouts=Timeouts(),
            created_at=now,
        )
    )
    return w.deps  # type: ignore[attr-defined]


def test_declared_links_are_fingerprints_of_kind_declared_link() -> None:
    w = world()
    out = rings.after_import(w.deps, "prg-1", [_seller("a", [], links=["z"])], "c")
    assert out[0].members == ["a", "z"] and out[0].shared_fingerprint_kinds == [DECLARED_LINK]
    assert declared_link("a", "z") == declared_link("z", "a")


def test_a_common_fingerprint_links_no_one() -> None:
    w = world()
    warehouse = ("address", h("warehouse"))
    batch = [_seller(f"s{i:03d}", [warehouse]) for i in range(rings.COMMON_ABOVE + 1)]
    assert rings.after_import(w.deps, "prg-1", batch, "c") == []
    assert components({f"s{i}": [warehouse] for i in range(5)}, common_above=4) == []


def test_union_find_and_assign_ids() -> None:
    uf = UnionFind()
    uf.union("a", "b")
    uf.union("c", "d")
    uf.union("b", "d")
    uf.add("e")
    assert sorted(uf.groups()) == [["a", "b", "c", "d"], ["e"]]
    comps = components({"a": [("device", h("1"))], "b": [("device", h("1"))]})
    assert assign_ids("p", comps, {"b": "ring-zzz", "a": "ring-aaa"})[0].absorbed == ("ring-zzz",)


@pytest.mark.parametrize(
    "value",
    ["AB12345678", "A" * 64, h("x")[:63], h("x") + "0", "passport 1234"],
)
def test_a_raw_value_is_refused_with_a_clear_error(value: str) -> None:
    with pytest.raises(ValidationError) as exc:
        SellerIn.model_validate(
            {"seller_id": "s", "category": "c", "expected_cost": 1, "risk": 0.1, "fingerprints": {"device": [value]}}
        )
    assert "never the raw value" in str(exc.value)


def test_fingerprint_lists_are_bounded_and_kinds_closed() -> None:
    base = {"seller_id": "s", "category": "c", "expected_cost": 1, "risk": 0.1}
    with pytest.raises(ValidationError):
        SellerIn.model_validate({**base, "fingerprints": {"device": [h(str(i)) for i in range(21)]}})
    with pytest.raises(ValidationError):
        SellerIn.model_validate({**base, "fingerprints": {"email": [h("x")]}})
    ok = SellerIn.model_validate({**base, "fingerprints": {"device": [h("x")], "address": [h("y")]}})
    assert ok.fingerprints is not None and ok.fingerprints.pairs() == [("address", h("y")), ("device", h("x"))]
