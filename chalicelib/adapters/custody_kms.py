"""The custody key in AWS: a KMS HMAC key (``KeySpec=HMAC_256``, ``KeyUsage=GENERATE_VERIFY_MAC``).

The key material never leaves KMS: functions that append custody entries need ``kms:GenerateMac`` on the current key,
functions that verify need ``kms:VerifyMac`` on every trusted key, and nobody with only DynamoDB write access can
seal an entry. Key ids are full key ARNs (not aliases) because each entry records the key that sealed it: rotation
creates a new key, makes it current and keeps the old ARN in ``previous`` so older entries still verify.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo_codec import error_code

if TYPE_CHECKING:
    from chalicelib.config import Settings
    from chalicelib.ports import CustodyKey

ALGORITHM = "HMAC_SHA_256"


class KmsCustodyKey:
    def __init__(self, client: Any, key_arn: str, previous: Iterable[str] = ()) -> None:
        if not key_arn.startswith("arn:") or ":key/" not in key_arn:
            raise ValueError("the custody key must be a KMS key ARN (arn:...:key/<id>), not an alias")
        self._kms = client
        self._current = key_arn
        self._trusted = {key_arn, *previous}

    def current_key_id(self) -> str:
        return self._current

    def trusts(self, key_id: str) -> bool:
        return key_id in self._trusted

    def mac(self, key_id: str, message: bytes) -> str:
        if key_id not in self._trusted:
            raise KeyError(f"untrusted custody key {key_id!r}")
        resp = self._kms.generate_mac(KeyId=key_id, Message=message, MacAlgorithm=ALGORITHM)
        return bytes(resp["Mac"]).hex()

    def verify(self, key_id: str, message: bytes, mac: str) -> bool:
        if key_id not in self._trusted:
            return False
        try:
            raw = bytes.fromhex(mac)
        except ValueError:
            return False
        if not raw:
            return False
        try:
            resp = self._kms.verify_mac(KeyId=key_id, Message=message, Mac=raw, MacAlgorithm=ALGORITHM)
        except ClientError as exc:
            if error_code(exc) == "KMSInvalidMacException":
                return False
            raise
        return bool(resp.get("MacValid"))


def custody_key_from(cfg: Settings, session: Any) -> CustodyKey:
    """The deployment's custody key: KMS when a key ARN is configured, else the local per-stack key; neither is a
    configuration error (custody is never written unkeyed), and a deployed (``cognito``) stack must use KMS."""
    from chalicelib.adapters.custody_hmac import LocalHmacKey
    from chalicelib.config import ConfigError

    if cfg.auth_mode == "cognito" and not cfg.custody_kms_key_arn:
        raise ConfigError("TESTBUY_CUSTODY_KMS_KEY_ARN is required when TESTBUY_AUTH_MODE=cognito")
    if cfg.custody_kms_key_arn:
        try:
            return KmsCustodyKey(session.client("kms"), cfg.custody_kms_key_arn, cfg.custody_kms_previous_key_arns)
        except ValueError as exc:
            raise ConfigError(f"TESTBUY_CUSTODY_KMS_KEY_ARN: {exc}") from None
    if cfg.custody_key:
        try:
            return LocalHmacKey(cfg.custody_key)
        except ValueError as exc:
            raise ConfigError(f"TESTBUY_CUSTODY_KEY: {exc}") from None
    raise ConfigError("no custody key: set TESTBUY_CUSTODY_KMS_KEY_ARN (AWS) or TESTBUY_CUSTODY_KEY (local stack)")
