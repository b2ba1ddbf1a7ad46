"""Two-phase budget ledger rules (TigerBeetle-like): fund, reserve, capture, release, recover.

The storage adapter makes each operation one atomic conditional transaction; this module holds what is true
regardless of storage: the balance arithmetic, the invariant, idempotency fingerprints and the journal replay
that recomputes every balance from the immutable journal.

Invariant after every operation: ``available + reserved + captured - recovered == funded`` and ``available >= 0``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from chalicelib.domain.errors import InvalidInput
from chalicelib.domain.money import MAX_MINOR_UNITS


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

    @property
    def balanced(self) -> bool:
        """Every line moves money between buckets without creating any: the invariant holds for its deltas."""
        return self.d_available + self.d_reserved + self.d_captured - self.d_recovered == self.d_funded

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
    """Recompute a balance from its journal: every line must be balanced, and so must the result.

    Lines carry the writer's clock, which orders them only roughly: two transactions from two Lambdas may commit in
    the opposite order to their timestamps (a reservation stamped before a release it depended on). Non-negativity is
    therefore checked on the result, not on every prefix; the sum does not depend on the order.
    """
    lines = list(entries)
    for e in lines:
        if not e.balanced:
            raise AssertionError(f"unbalanced journal line: {e}")
    b = total(lines)
    b.check()
    return b


def total(entries: Iterable[JournalEntry]) -> Balance:
    """The plain sum of the journal's deltas, checking nothing (for reports that must show a broken state too)."""
    b = Balance()
    for e in entries:
        b = e.apply(b)
    return b


def check_amount(field: str, value: object) -> int:
    """An amount of money the ledger accepts: an ``int`` (not a bool) in ``1..MAX_MINOR_UNITS`` minor units.

    The API models validate too; the ledger checks again so no caller (a task, a script, a bug) can book zero, a
    negative amount (which would run an operation backwards) or a figure beyond what every JSON client keeps exact.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(
            f"{field} must be an integer number of minor units",
            details=[{"field": field, "message": "not an integer", "type": type(value).__name__}],
        )
    if value <= 0:
        raise InvalidInput(
            f"{field} must be positive, got {value}",
            details=[{"field": field, "message": "must be greater than 0", "given": str(value)}],
        )
    if value > MAX_MINOR_UNITS:
        raise InvalidInput(
            f"{field} exceeds the maximum of {MAX_MINOR_UNITS} minor units",
            details=[{"field": field, "message": f"must be at most {MAX_MINOR_UNITS}", "given": str(value)}],
        )
    return value


_ISO4217 = re.compile(r"^[A-Z]{3}$")


def check_currency(value: object) -> str:
    """An ISO 4217 code of three capital letters (whether it is the programme's is checked against the account)."""
    if not isinstance(value, str) or not _ISO4217.match(value):
        raise InvalidInput(
            "currency must be an ISO 4217 code of three capital letters, e.g. CNY",
            details=[{"field": "currency", "message": "not an ISO 4217 code"}],
        )
    return value


def check_subject(field: str, value: object) -> str:
    """An order id or funding reference: a non-empty string of at most 200 characters."""
    if not isinstance(value, str) or not value or len(value) > 200:
        raise InvalidInput(
            f"{field} must be a non-empty string of at most 200 characters",
            details=[{"field": field, "message": "empty, too long or not a string"}],
        )
    return value


def fingerprint(op: Op, subject: str, args: Mapping[str, Any]) -> str:
    """Stable hash of an operation's arguments: equal keys with unequal fingerprints are a conflict."""
    body = json.dumps({"op": op.value, "subject": subject, "args": dict(args)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def op_key(subject: str, op: Op) -> str:
    return f"{subject}#{op.value}"
