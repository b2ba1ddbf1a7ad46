"""Clock and id adapters."""

from __future__ import annotations

import hashlib
import itertools
import secrets
import threading
import time
from datetime import UTC, datetime

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class UlidIds:
    """ULID-like ids: 48-bit millisecond time + 80 random bits, Crockford base32, sortable by creation time."""

    def new(self, prefix: str) -> str:
        value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
        chars = []
        for _ in range(26):
            value, rem = divmod(value, 32)
            chars.append(_CROCKFORD[rem])
        return f"{prefix}-{''.join(reversed(chars))}"


_SEEDED_LOCK = threading.Lock()
_SEEDED_COUNTERS: dict[int, itertools.count[int]] = {}


class SeededIds:
    """Reproducible ids for a seeded local run (``TESTBUY_ID_SEED``; refused in a deployed function): the n-th id
    this process creates for ``seed`` is ``prefix-`` + 26 Crockford characters of (n << 80 | 80 bits of
    SHA-256(seed, prefix, n)), sortable by creation like :class:`UlidIds`. The counter is per process and per seed
    and survives ``bootstrap.reset()``, so ids never repeat within a run; the same calls in the same order (the demo
    creates its programme and rounds one after the other) give the same ids, hence the same order ids
    (``rounds.order_id_for``) and every decision keyed on them."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        with _SEEDED_LOCK:
            self._counter = _SEEDED_COUNTERS.setdefault(seed, itertools.count(1))

    def new(self, prefix: str) -> str:
        with _SEEDED_LOCK:
            n = next(self._counter)
        noise = int.from_bytes(hashlib.sha256(f"{self.seed}|{prefix}|{n}".encode()).digest()[:10], "big")
        value = (n << 80) | noise
        chars = []
        for _ in range(26):
            value, rem = divmod(value, 32)
            chars.append(_CROCKFORD[rem])
        return f"{prefix}-{''.join(reversed(chars))}"


def make_ids(seed: int | None) -> UlidIds | SeededIds:
    """Random ULIDs, or reproducible ids when a seed is configured (``TESTBUY_ID_SEED``: the demo). A factory, so the
    IAM check (``testbuy/iam.py``) sees both adapters this port may be bound to."""
    return UlidIds() if seed is None else SeededIds(seed)
