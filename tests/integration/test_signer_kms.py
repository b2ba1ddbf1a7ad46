"""The evidence-package signer against the local stack's KMS (moto): an ECC_NIST_P256 key signs, and the public key
it hands out verifies offline with ``cryptography`` only (issue 10 item 5)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from chalicelib.adapters.signer_kms import KmsManifestSigner, manifest_signer_from
from chalicelib.config import ConfigError, load
from chalicelib.domain import evidence_package as ep


@pytest.fixture()
def kms(local_stack: Any) -> Any:
    return local_stack.client("kms")  # the shared stack's KMS, never moto.mock_aws in this process


def test_a_kms_signed_package_verifies_with_the_public_key_alone(kms: Any) -> None:
    arn = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    signer = KmsManifestSigner(kms, arn)
    pkg = ep.assemble(
        {"a.txt": b"alpha", "evidence/x": b"\x00\x01"},
        kind="sample",
        subject_id="o1",
        created_at=datetime(2026, 11, 29, tzinfo=UTC),
        signer=signer,
    )
    pem = ep.public_key_pem(signer.public_key_der()).encode()
    report = ep.verify_bundle(pkg.data, pem)
    assert report.valid and report.key_id == arn, report.problems
    other = KmsManifestSigner(
        kms, kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["Arn"]
    )
    wrong = ep.verify_bundle(pkg.data, ep.public_key_pem(other.public_key_der()).encode())
    assert [p.kind for p in wrong.problems] == [ep.BAD_SIGNATURE]


def test_the_signer_from_config_wants_a_key_arn(stack_info: Any) -> None:
    env = dict(stack_info.env)
    assert manifest_signer_from(load(env), boto3.session.Session()) is not None  # the local stack provisioned one
    with pytest.raises(ConfigError, match="TESTBUY_EVIDENCE_SIGNING_KEY_ARN"):
        manifest_signer_from(
            load({**env, "TESTBUY_EVIDENCE_SIGNING_KEY_ARN": "alias/evidence"}), boto3.session.Session()
        )
    assert manifest_signer_from(load({**env, "TESTBUY_EVIDENCE_SIGNING_KEY_ARN": ""}), boto3.session.Session()) is None
