"""Ring detection on seller import (issue 10 item 3).

An import batch writes its sellers' fingerprints (and each declared ``linked_sellers`` entry as a ``declared_link``
fingerprint both sellers hold) to the programme's fingerprint index, then walks the index from the batch's sellers
to the whole of every component they touch (so a seller imported today joins the ring of sellers imported last
month), computes the components (``chalicelib.domain.rings``) and stores each ring with a stable id.
``RingDetected`` is published when a ring forms or grows (deterministic id per ring and member set: a retried
import republishes the same event; the event goes out before the ring is stored, so a crash in between never loses
it). Cost: an import of n sellers with f fingerprints each writes 2nf index items and reads one partition per seller
and per fingerprint of the components it touches; fingerprints held by more than ``COMMON_ABOVE`` sellers link no
one and stop the walk (docs/decisions.md "Rings and leads").
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from chalicelib.domain.errors import TransientError
from chalicelib.domain.events import RingDetected, deterministic_event_id, envelope
from chalicelib.domain.models import SellerIn
from chalicelib.domain.rings import Fingerprint, Ring, assign_ids, components, declared_link
from chalicelib.ports import RingRepository
from chalicelib.services.deps import Deps

COMMON_ABOVE = 50  # a fingerprint shared by more sellers than this is a warehouse or a processor, not a ring
MAX_WALK = 5_000  # sellers one recomputation may visit; beyond, the import is refused as a likely data error


class RingConflict(TransientError):
    """Another import changed the same ring meanwhile: retry the import (it is idempotent)."""


def _store(d: Deps) -> RingRepository | None:
    return d.rings


def fingerprints_of_batch(sellers: Sequence[SellerIn]) -> dict[str, set[Fingerprint]]:
    """What each seller of the batch (and each seller it declares a link to) holds."""
    out: dict[str, set[Fingerprint]] = {}
    for s in sellers:
        out.setdefault(s.seller_id, set()).update(s.fingerprints.pairs() if s.fingerprints else [])
        for other in s.linked_sellers:
            if other == s.seller_id:
                continue
            link = declared_link(s.seller_id, other)
            out[s.seller_id].add(link)
            out.setdefault(other, set()).add(link)
    return out


def _walk(
    store: RingRepository, program_id: str, start: Iterable[str]
) -> tuple[dict[str, list[Fingerprint]], set[Fingerprint]]:
    holdings: dict[str, list[Fingerprint]] = {}
    common: set[Fingerprint] = set()
    seen: set[Fingerprint] = set()
    frontier = sorted(set(start))
    while frontier:
        seller = frontier.pop()
        if seller in holdings:
            continue
        if len(holdings) >= MAX_WALK:
            raise RingConflict(f"ring walk exceeded {MAX_WALK} sellers; check the fingerprints for a common value")
        fps = store.fingerprints_of(program_id, seller)
        holdings[seller] = fps
        for fp in fps:
            if fp in seen:
                continue
            seen.add(fp)
            holders = store.holders(program_id, fp[0], fp[1], COMMON_ABOVE + 1)
            if len(holders) > COMMON_ABOVE:
                common.add(fp)
                continue
            frontier.extend(h for h in holders if h not in holdings)
    return holdings, common


def after_import(d: Deps, program_id: str, sellers: Sequence[SellerIn], correlation_id: str) -> list[Ring]:
    """Index the batch's fingerprints and recompute the rings it touches; the rings that formed or grew."""
    store = _store(d)
    if store is None:
        return []
    batch = fingerprints_of_batch(sellers)
    for seller_id, fps in sorted(batch.items()):
        if fps:
            store.add_fingerprints(program_id, seller_id, sorted(fps))
    return recompute(d, program_id, sorted(batch), correlation_id)


def recompute(d: Deps, program_id: str, seller_ids: Sequence[str], correlation_id: str) -> list[Ring]:
    store = _store(d)
    if store is None:
        return []
    holdings, common = _walk(store, program_id, seller_ids)
    comps = components(holdings, ignore=common)
    current = {m: rid for c in comps for m in c.members if (rid := store.ring_of(program_id, m)) is not None}
    now = d.clock.now()
    changed: list[Ring] = []
    for a in assign_ids(program_id, comps, current):
        members, kinds = list(a.component.members), list(a.component.shared_kinds)
        old = store.get_ring(program_id, a.ring_id)
        if old is None or sorted(old.members) != members or sorted(old.shared_fingerprint_kinds) != kinds:
            ring = Ring(
                program_id=program_id,
                ring_id=a.ring_id,
                members=members,
                shared_fingerprint_kinds=kinds,
                detected_at=old.detected_at if old else now,
                updated_at=now,
                version=old.version + 1 if old else 1,
            )
            digest = hashlib.sha256("|".join(members).encode()).hexdigest()
            d.events.publish(
                [
                    envelope(
                        RingDetected(ring_id=a.ring_id, sellers=members, shared_fingerprint_kinds=kinds),
                        event_id=deterministic_event_id(program_id, a.ring_id, "RingDetected", digest, *kinds),
                        correlation_id=correlation_id,
                        occurred_at=now,
                        program_id=program_id,
                    )
                ]
            )
            if not store.save_ring(ring, old.version if old else None):
                raise RingConflict(f"ring {a.ring_id} changed during this import; retry the import")
            changed.append(ring)
        for absorbed in a.absorbed:
            gone = store.get_ring(program_id, absorbed)
            if gone is not None and gone.merged_into != a.ring_id:
                merged = gone.model_copy(
                    update={"merged_into": a.ring_id, "updated_at": now, "version": gone.version + 1}
                )
                if not store.save_ring(merged, gone.version):
                    raise RingConflict(f"ring {absorbed} changed during this import; retry the import")
        stale = [m for m in members if current.get(m) != a.ring_id]
        if stale:
            store.set_ring_of(program_id, stale, a.ring_id)
    return changed


def list_rings(d: Deps, program_id: str) -> list[Ring]:
    d.programs.get_program(program_id)
    store = _store(d)
    return [] if store is None else [r for r in store.list_rings(program_id) if r.merged_into is None]
