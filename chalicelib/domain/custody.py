"""Tamper-evident, keyed and anchored chain of custody (DESIGN.md section 8; docs/decisions.md "Custody chain").

Each entry records who logged it (the authenticated ``Actor``), the hand-over (from, to, when, where, condition,
evidence hashes), its sequence number and the MAC of the previous entry. Its own ``mac`` is an HMAC, under a key the
writer of the table does not hold (KMS in AWS, a per-stack key locally), over the SHA-256 of its canonical form, which
includes the previous MAC and the key id. So:

- editing any field of an entry, or recomputing plain hashes, or MACs with another key, fails that entry's MAC;
- removing, inserting or reordering entries breaks the sequence numbers or the previous-MAC links;
- trimming the tail, which leaves a chain consistent with itself, is caught by the ``Anchor`` (length and head MAC)
  written atomically with every append on the order, and by the checkpoints published in ``VerdictRecorded`` events,
  which live outside the table.

``verify_chain`` walks the chain once and names the first bad entry (``first_bad_seq``) with a stable ``reason`` code.
This module is pure: the key is a port (``chalicelib.ports.CustodyKey``) passed in by the caller.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the port is a Protocol; the domain never imports adapters or boto3
    from chalicelib.ports import CustodyKey

GENESIS = "0" * 64
CANONICAL_VERSION = 2
SYSTEM_ROLE = "system"


@dataclass(frozen=True)
class Actor:
    """Who logged an entry: the authenticated principal (subject, role, lab id for labs) or a workflow task."""

    subject: str
    role: str
    lab_id: str | None = None

    @classmethod
    def system(cls, task: str) -> Actor:
        """The actor for entries written by a state-machine task (``system:<task>``)."""
        return cls(subject=f"system:{task}", role=SYSTEM_ROLE)

    def as_dict(self) -> dict[str, str | None]:
        return {"subject": self.subject, "role": self.role, "lab_id": self.lab_id}


@dataclass(frozen=True)
class Anchor:
    """The chain's length and head (the last entry's MAC; ``GENESIS`` for an empty chain), kept outside the chain."""

    length: int
    head: str

    @classmethod
    def empty(cls) -> Anchor:
        return cls(0, GENESIS)


@dataclass(frozen=True)
class CustodyEntry:
    order_id: str
    seq: int
    from_party: str
    to_party: str
    at: datetime
    location: str
    condition: str
    actor: Actor
    key_id: str
    evidence: tuple[str, ...] = field(default_factory=tuple)
    prev_mac: str = GENESIS
    mac: str = ""

    def canonical(self) -> bytes:
        """Everything the MAC covers, as sorted compact JSON (the MAC itself excluded)."""
        body = {
            "v": CANONICAL_VERSION,
            "order_id": self.order_id,
            "seq": self.seq,
            "from": self.from_party,
            "to": self.to_party,
            "at": self.at.isoformat(),
            "location": self.location,
            "condition": self.condition,
            "evidence": list(self.evidence),
            "actor": self.actor.as_dict(),
            "key_id": self.key_id,
            "prev": self.prev_mac,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def digest(self) -> bytes:
        """The SHA-256 of the canonical form: what the key MACs (fixed size, well under KMS's 4 KiB message cap)."""
        return hashlib.sha256(self.canonical()).digest()


def next_entry(
    tail: CustodyEntry | None,
    *,
    key: CustodyKey,
    order_id: str,
    actor: Actor,
    from_party: str,
    to_party: str,
    at: datetime,
    location: str,
    condition: str,
    evidence: Sequence[str] = (),
) -> CustodyEntry:
    """Build and seal the entry that follows ``tail`` (``None`` for the first) with the key's current version."""
    draft = CustodyEntry(
        order_id=order_id,
        seq=0 if tail is None else tail.seq + 1,
        from_party=from_party,
        to_party=to_party,
        at=at,
        location=location,
        condition=condition,
        actor=actor,
        key_id=key.current_key_id(),
        evidence=tuple(evidence),
        prev_mac=GENESIS if tail is None else tail.mac,
    )
    return CustodyEntry(**{**draft.__dict__, "mac": key.mac(draft.key_id, draft.digest())})


@dataclass(frozen=True)
class ChainReport:
    """``valid`` is True only if every entry verifies and the chain matches the anchor and every checkpoint.
    ``first_bad_seq`` names the first entry that is wrong or missing; ``reason`` is a stable code, ``detail`` prose."""

    valid: bool
    length: int
    head: str
    first_bad_seq: int | None = None
    reason: str | None = None
    detail: str | None = None
    anchored_length: int | None = None
    anchored_head: str | None = None


# Stable reason codes (clients may switch on them).
SEQUENCE = "sequence"  # an entry is missing (gap), duplicated or out of order
LINK = "link"  # the previous-MAC link does not match the entry before it (insertion, reorder, deletion)
MAC = "mac"  # the entry's MAC does not verify: edited, or re-hashed without the key
UNKNOWN_KEY = "unknown_key"  # sealed with a key id this deployment does not trust
ORDER = "order"  # an entry of another order's chain
NO_ANCHOR = "no_anchor"  # entries exist but nothing anchors them
TAIL_MISSING = "tail_missing"  # fewer entries than the anchor (or a checkpoint) says were written
BEYOND_ANCHOR = "beyond_anchor"  # more entries than the anchor says were written
HEAD_MISMATCH = "head_mismatch"  # the last entry's MAC is not the anchored head
CHECKPOINT = "checkpoint"  # an external checkpoint (e.g. from VerdictRecorded) is not on this chain


def verify_chain(
    entries: Sequence[CustodyEntry],
    key: CustodyKey,
    anchor: Anchor | None,
    *,
    order_id: str | None = None,
    checkpoints: Sequence[Anchor] = (),
) -> ChainReport:
    """Prove the chain against the key, its anchor and any external checkpoints; name the first bad entry.

    Entries are checked in storage order (by sequence number). For each position ``i``: the entry must carry
    sequence number ``i``, belong to ``order_id`` (when given), link to the previous entry's MAC and carry a MAC that
    verifies under a trusted key. Then the walked chain must end where the anchor says (length and head), and pass
    through every checkpoint. ``anchor=None`` means the order has no anchor: only an empty chain is then valid.
    """
    prev = GENESIS
    n = len(entries)

    def bad(seq: int, reason: str, detail: str) -> ChainReport:
        return ChainReport(
            False,
            n,
            prev,
            seq,
            reason,
            detail,
            anchor.length if anchor else None,
            anchor.head if anchor else None,
        )

    macs: list[str] = []
    for i, entry in enumerate(entries):
        if entry.seq != i:
            what = "missing" if entry.seq > i else "out of order"
            return bad(i, SEQUENCE, f"entry {i} is {what}: found entry {entry.seq} in its place")
        if order_id is not None and entry.order_id != order_id:
            return bad(i, ORDER, f"entry {i} belongs to order {entry.order_id}")
        if entry.prev_mac != prev:
            return bad(
                i, LINK, f"entry {i} does not link to entry {i - 1}" if i else "entry 0 does not start the chain"
            )
        if not key.trusts(entry.key_id):
            return bad(i, UNKNOWN_KEY, f"entry {i} is sealed with an untrusted key {entry.key_id!r}")
        if not key.verify(entry.key_id, entry.digest(), entry.mac):
            return bad(i, MAC, f"entry {i} was altered or re-sealed without the custody key")
        prev = entry.mac
        macs.append(entry.mac)

    if anchor is None:
        if n:
            return bad(0, NO_ANCHOR, "the chain has entries but the order carries no custody anchor")
    elif n < anchor.length:
        return bad(n, TAIL_MISSING, f"the anchor records {anchor.length} entries; entries {n}.. are missing")
    elif n > anchor.length:
        return bad(anchor.length, BEYOND_ANCHOR, f"entries {anchor.length}.. were not written through the anchor")
    elif prev != anchor.head:
        return bad(max(n - 1, 0), HEAD_MISMATCH, "the last entry's MAC is not the anchored head")

    for cp in sorted(checkpoints, key=lambda c: c.length):
        if cp.length > n:
            return bad(n, TAIL_MISSING, f"a checkpoint records {cp.length} entries; entries {n}.. are missing")
        if cp.length and macs[cp.length - 1] != cp.head:
            return bad(cp.length - 1, CHECKPOINT, f"entry {cp.length - 1} is not the head of the checkpoint")
    return ChainReport(
        True, n, prev, anchored_length=anchor.length if anchor else None, anchored_head=anchor.head if anchor else None
    )
