"""The evidence-package signer in AWS (issue 10 item 5): a KMS asymmetric key (``KeySpec=ECC_NIST_P256``,
``KeyUsage=SIGN_VERIFY``, ``ECDSA_SHA_256``). The private key never leaves KMS; the function that builds packages
needs ``kms:Sign`` and ``kms:GetPublicKey`` on it. Locally the same adapter runs against moto's KMS."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chalicelib.config import Settings
    from chalicelib.ports import ManifestSigner

ALGORITHM = "ECDSA_SHA_256"


class KmsManifestSigner:
    def __init__(self, client: Any, key_arn: str) -> None:
        if not key_arn.startswith("arn:") or ":key/" not in key_arn:
            raise ValueError("the evidence signing key must be a KMS key ARN (arn:...:key/<id>), not an alias")
        self._kms = client
        self._arn = key_arn
        self._public: bytes | None = None

    def key_id(self) -> str:
        return self._arn

    def algorithm(self) -> str:
        return ALGORITHM

    def sign(self, message: bytes) -> bytes:
        resp = self._kms.sign(KeyId=self._arn, Message=message, MessageType="RAW", SigningAlgorithm=ALGORITHM)
        return bytes(resp["Signature"])

    def public_key_der(self) -> bytes:
        if self._public is None:  # the public half never changes for a key: fetched once per container
            self._public = bytes(self._kms.get_public_key(KeyId=self._arn)["PublicKey"])
        return self._public


def manifest_signer_from(cfg: Settings, session: Any) -> ManifestSigner | None:
    """The deployment's package signer, or None when no key is configured (exporting a package then fails closed)."""
    from chalicelib.adapters.clients import make_client
    from chalicelib.config import ConfigError

    if not cfg.evidence_signing_key_arn:
        return None
    try:
        return KmsManifestSigner(make_client(session, "kms"), cfg.evidence_signing_key_arn)
    except ValueError as exc:
        raise ConfigError(f"TESTBUY_EVIDENCE_SIGNING_KEY_ARN: {exc}") from None
