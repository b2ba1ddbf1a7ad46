"""Two-phase budget ledger rules (TigerBeetle-like): fund, reserve, capture, release, recover.

The storage adapter makes each operation one atomic conditional transaction; this module holds what is true
regardless of storage: the balance arithmetic, the invariant, idempotency fingerprints and the journal replay
that recomputes every balance from the immutable journal.

Invariant after every operation: ``available + reserved + captured - recovered == funded`` and ``available >= 0``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class Op(StrEnum):
    FUND = "fund"
    RESERVE = "reserve"
    CAPTURE = "capture"
    RELEASE = "release"
    RECOVER = "recover"


@dataclass(frozen=True)
class Balance:
    funded: int = 0
    available: int = 0
    reserved: int = 0
    captured: int = 0
    recovered: int = 0

    @property
    def spent(self) -> int:
        """Net spend: captured less recovered refunds."""
        return self.captured - self.recovered

    def check(self) -> None:
        if self.available + self.reserved + self.captured - self.recovered != self.funded:
            raise AssertionError(f"ledger invariant broken: {self}")
        if min(self.available, self.reserved, self.captured, self.recovered) < 0:
            raise AssertionError(f"negative ledger balance: {self}")


@dataclass(frozen=True)
class JournalEntry:
    """One immutable journal line. Deltas are signed minor units applied to the balance."""

    program_id: str
    key: str  # "<subject>#<op>", the idempotency key
    op: Op
    subject: str  # order id, or funding reference for FUND
    d_available: int
    d_reserved: int
    d_captured: int
    d_recovered: int
    d_funded: int
    at: str  # ISO-8601 UTC
    attributes: Mapping[str, Any]  # round_id, category, seller_id for reporting

    def apply(self, b: Balance) -> Balance:
        return replace(
            b,
            funded=b.funded + self.d_funded,
            available=b.available + self.d_available,
            reserved=b.reserved + self.d_reserved,
            captured=b.captured + self.d_captured,
            recovered=b.recovered + self.d_recovered,
        )


def replay(entries: Iterable[JournalEntry]) -> Balance:
    """Recompute a balance from its journal, checking the invariant after every line."""
    b = Balance()
    for e in entries:
        b = e.apply(b)
        b.check()
    return b


def fingerprint(op: Op, subject: str, args: Mapping[str, Any]) -> str:
    """Stable hash of an operation's arguments: equal keys with unequal fingerprints are a conflict."""
    body = json.dumps({"op": op.value, "subject": subject, "args": dict(args)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def op_key(subject: str, op: Op) -> str:
    return f"{subject}#{op.value}"
