"""Clock and id adapters."""

from __future__ import annotations

import secrets
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
