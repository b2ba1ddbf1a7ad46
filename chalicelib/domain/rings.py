"""Rings: sellers linked by shared fingerprints (identity document, payment account, address, device, or a link the
programme manager declared), as the connected components of the seller-fingerprint graph. Pure: no storage, no
clock; the service (``chalicelib.services.rings``) reads the programme's fingerprint index and stores the result.

A fingerprint is a pair ``(kind, sha256hex)``; the values are never seen here, only their hashes. A fingerprint held
by more than ``common_above`` sellers (a marketplace's fulfilment warehouse, a shared payment processor) links no
one: it is reported as common and ignored, otherwise one shared address would chain a whole country into a ring.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import Field

from chalicelib.domain.models import Lenient

DECLARED_LINK = "declared_link"
Fingerprint = tuple[str, str]  # (kind, sha256 hex)


def declared_link(a: str, b: str) -> Fingerprint:
    """An explicit ``linked_sellers`` entry as a fingerprint both sellers hold (order of the pair does not matter)."""
    lo, hi = sorted((a, b))
    return DECLARED_LINK, hashlib.sha256(f"{DECLARED_LINK}|{lo}|{hi}".encode()).hexdigest()


class UnionFind:
    """Disjoint sets with path halving and union by size."""

    def __init__(self) -> None:
        self._parent: dict[str, str] = {}
        self._size: dict[str, int] = {}

    def add(self, x: str) -> None:
        if x not in self._parent:
            self._parent[x] = x
            self._size[x] = 1

    def find(self, x: str) -> str:
        self.add(x)
        while self._parent[x] != x:
            self._parent[x] = self._parent[self._parent[x]]
            x = self._parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]

    def groups(self) -> list[list[str]]:
        out: dict[str, list[str]] = {}
        for x in self._parent:
            out.setdefault(self.find(x), []).append(x)
        return [sorted(g) for g in out.values()]


@dataclass(frozen=True)
class Component:
    members: tuple[str, ...]  # sorted seller ids
    shared_kinds: tuple[str, ...]  # sorted kinds of the fingerprints that link its members (never the values)


def holders_by_fingerprint(holdings: Mapping[str, Iterable[Fingerprint]]) -> dict[Fingerprint, set[str]]:
    out: dict[Fingerprint, set[str]] = {}
    for seller, fps in holdings.items():
        for fp in fps:
            out.setdefault(fp, set()).add(seller)
    return out


def components(
    holdings: Mapping[str, Iterable[Fingerprint]],
    *,
    common_above: int | None = None,
    ignore: Iterable[Fingerprint] = (),
    min_size: int = 2,
) -> list[Component]:
    """The connected components (of at least ``min_size`` sellers) of the graph where two sellers are adjacent when
    they hold a fingerprint in common; fingerprints in ``ignore`` or held by more than ``common_above`` sellers link
    no one. Sorted by first member; deterministic whatever the order of ``holdings``."""
    skip = set(ignore)
    uf = UnionFind()
    by_fp = holders_by_fingerprint(holdings)
    for seller in holdings:
        uf.add(seller)
    linking: dict[Fingerprint, list[str]] = {}
    for fp, holders in by_fp.items():
        if fp in skip or len(holders) < 2 or (common_above is not None and len(holders) > common_above):
            continue
        ordered = sorted(holders)
        linking[fp] = ordered
        for other in ordered[1:]:
            uf.union(ordered[0], other)
    kinds: dict[str, set[str]] = {}
    for fp, ordered in linking.items():
        kinds.setdefault(uf.find(ordered[0]), set()).add(fp[0])
    out = [
        Component(tuple(group), tuple(sorted(kinds.get(uf.find(group[0]), set()))))
        for group in uf.groups()
        if len(group) >= min_size
    ]
    return sorted(out, key=lambda c: c.members)


def new_ring_id(program_id: str, members: Sequence[str]) -> str:
    """A ring's id when it is first detected: from the programme and its smallest member (deterministic)."""
    return "ring-" + hashlib.sha256(f"{program_id}|{min(members)}".encode()).hexdigest()[:20]


@dataclass(frozen=True)
class RingAssignment:
    ring_id: str
    component: Component
    absorbed: tuple[str, ...]  # ids of earlier rings merged into this one (retired: they point here)


def assign_ids(program_id: str, comps: Sequence[Component], current: Mapping[str, str]) -> list[RingAssignment]:
    """Stable ids: a component whose members already belong to rings keeps the smallest of those ring ids (the
    others are absorbed); a new component gets :func:`new_ring_id`. Once issued, an id never changes for its
    members, so recommendations and leads that name a ring stay valid when it grows."""
    used: set[str] = set()
    out: list[RingAssignment] = []
    for comp in comps:
        existing = sorted({current[m] for m in comp.members if m in current} - used)
        if existing:
            rid, absorbed = existing[0], tuple(existing[1:])
        else:
            rid, absorbed = new_ring_id(program_id, comp.members), ()
            if rid in used:  # pragma: no cover - cannot happen: each component has a different smallest member
                rid = new_ring_id(program_id, comp.members[::-1])
        used.add(rid)
        used.update(absorbed)
        out.append(RingAssignment(rid, comp, absorbed))
    return out


class Ring(Lenient):
    """A stored ring (``RING#<program>``); ``merged_into`` is set on a ring absorbed by another."""

    program_id: str
    ring_id: str
    members: list[str] = Field(default_factory=list)
    shared_fingerprint_kinds: list[str] = Field(default_factory=list)
    detected_at: datetime
    updated_at: datetime
    version: int = 1
    merged_into: str | None = None
