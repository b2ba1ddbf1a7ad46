"""Tamper-evident chain of custody.

Each entry stores the SHA-256 of the previous entry's canonical form, and its own hash over its canonical form
(which includes that previous hash). Editing, removing or reordering any entry breaks every later link, which
``verify_chain`` reports with the first bad sequence number.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

GENESIS = "0" * 64


@dataclass(frozen=True)
class CustodyEntry:
    order_id: str
    seq: int
    from_party: str
    to_party: str
    at: datetime
    location: str
    condition: str
    evidence: tuple[str, ...] = field(default_factory=tuple)
    prev_hash: str = GENESIS
    entry_hash: str = ""

    def canonical(self) -> bytes:
        body = {
            "order_id": self.order_id,
            "seq": self.seq,
            "from": self.from_party,
            "to": self.to_party,
            "at": self.at.isoformat(),
            "location": self.location,
            "condition": self.condition,
            "evidence": list(self.evidence),
            "prev": self.prev_hash,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def compute_hash(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()


def next_entry(
    chain_tail: CustodyEntry | None,
    *,
    order_id: str,
    from_party: str,
    to_party: str,
    at: datetime,
    location: str,
    condition: str,
    evidence: Sequence[str] = (),
) -> CustodyEntry:
    """Build the entry that follows ``chain_tail`` (``None`` for the first), with its hash filled in."""
    draft = CustodyEntry(
        order_id=order_id,
        seq=0 if chain_tail is None else chain_tail.seq + 1,
        from_party=from_party,
        to_party=to_party,
        at=at,
        location=location,
        condition=condition,
        evidence=tuple(evidence),
        prev_hash=GENESIS if chain_tail is None else chain_tail.entry_hash,
    )
    return CustodyEntry(**{**draft.__dict__, "entry_hash": draft.compute_hash()})


@dataclass(frozen=True)
class ChainReport:
    valid: bool
    length: int
    head: str
    first_bad_seq: int | None = None
    reason: str | None = None


def verify_chain(entries: Sequence[CustodyEntry]) -> ChainReport:
    """Prove the chain: contiguous sequence numbers, each link and each hash recomputed."""
    prev = GENESIS
    for expected_seq, entry in enumerate(entries):
        if entry.seq != expected_seq:
            return ChainReport(False, len(entries), prev, entry.seq, "sequence gap or reorder")
        if entry.prev_hash != prev:
            return ChainReport(False, len(entries), prev, entry.seq, "previous-hash link broken")
        if entry.compute_hash() != entry.entry_hash:
            return ChainReport(False, len(entries), prev, entry.seq, "entry altered after it was written")
        prev = entry.entry_hash
    return ChainReport(True, len(entries), prev)
