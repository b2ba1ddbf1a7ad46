"""The local custody key: HMAC-SHA256 with a per-stack secret (the embedded stack makes one per start, like its token
secret). Key ids are fingerprints of the secrets, so a rotated stack still verifies entries under trusted older keys
and never confuses two keys. In AWS the KMS adapter (``custody_kms``) takes its place."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

MIN_SECRET_CHARS = 32


def key_id_for(secret: str) -> str:
    """A public, stable id for a secret (a fingerprint; it reveals nothing usable about the secret)."""
    return "local:" + hashlib.sha256(b"testbuy custody key id\x00" + secret.encode()).hexdigest()[:16]


class LocalHmacKey:
    def __init__(self, current: str, previous: Iterable[str] = ()) -> None:
        secrets = [current, *previous]
        if any(len(s) < MIN_SECRET_CHARS for s in secrets):
            raise ValueError(f"a custody key secret needs at least {MIN_SECRET_CHARS} characters")
        self._keys = {key_id_for(s): s.encode() for s in secrets}
        self._current = key_id_for(current)

    def current_key_id(self) -> str:
        return self._current

    def trusts(self, key_id: str) -> bool:
        return key_id in self._keys

    def mac(self, key_id: str, message: bytes) -> str:
        if key_id not in self._keys:
            raise KeyError(f"untrusted custody key {key_id!r}")
        return hmac.new(self._keys[key_id], message, hashlib.sha256).hexdigest()

    def verify(self, key_id: str, message: bytes, mac: str) -> bool:
        if key_id not in self._keys or not mac.isascii():
            return False
        return hmac.compare_digest(self.mac(key_id, message), mac)
