"""The KMS custody key against the local stack's KMS (HMAC_256, GenerateMac/VerifyMac), and the key from config."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from chalicelib.adapters.custody_hmac import LocalHmacKey
from chalicelib.adapters.custody_kms import KmsCustodyKey, custody_key_from
from chalicelib.config import ConfigError, load
from chalicelib.domain import custody as c
from chalicelib.domain.custody import Actor, Anchor, next_entry, verify_chain


@pytest.fixture()
def kms(local_stack: Any) -> Any:
    # The shared local stack's KMS, not ``moto.mock_aws``: in this process that would reset the backends the local
    # stack runs on (and break every test after it).
    return local_stack.client("kms")


def hmac_key(kms: Any) -> str:
    meta = kms.create_key(KeySpec="HMAC_256", KeyUsage="GENERATE_VERIFY_MAC")["KeyMetadata"]
    return str(meta["Arn"])


def test_entries_sealed_with_kms_verify_and_a_forgery_does_not(kms: Any) -> None:
    key = KmsCustodyKey(kms, hmac_key(kms))
    entries = []
    for i in range(3):
        entries.append(
            next_entry(
                entries[-1] if entries else None,
                key=key,
                order_id="o1",
                actor=Actor("bob", "lab", "lab-1"),
                from_party=f"p{i}",
                to_party=f"p{i + 1}",
                at=datetime(2026, 11, 1, tzinfo=UTC),
                location="bench",
                condition="sealed",
            )
        )
    assert len(entries[0].mac) == 64 and entries[0].key_id == key.current_key_id()
    anchor = Anchor(3, entries[-1].mac)
    assert verify_chain(entries, key, anchor).valid
    entries[1] = c.CustodyEntry(**{**entries[1].__dict__, "condition": "opened"})
    report = verify_chain(entries, key, anchor)
    assert (report.valid, report.first_bad_seq, report.reason) == (False, 1, c.MAC)
    # a MAC from another KMS key, a malformed MAC, an untrusted key id: all refused without raising
    other = KmsCustodyKey(kms, hmac_key(kms))
    msg = entries[0].digest()
    assert not key.verify(key.current_key_id(), msg, other.mac(other.current_key_id(), msg))
    assert not key.verify(key.current_key_id(), msg, "zz")
    assert not key.verify(key.current_key_id(), msg, "")
    assert not key.verify(other.current_key_id(), msg, other.mac(other.current_key_id(), msg))
    # rotation: the old ARN stays trusted for verification
    rotated = KmsCustodyKey(kms, other.current_key_id(), previous=[key.current_key_id()])
    entries[1] = c.CustodyEntry(**{**entries[1].__dict__, "condition": "sealed"})
    assert verify_chain(entries, rotated, anchor).valid


def test_the_kms_key_must_be_an_arn_not_an_alias(kms: Any) -> None:
    with pytest.raises(ValueError, match="ARN"):
        KmsCustodyKey(kms, "alias/testbuy-custody")


BASE = {
    "TESTBUY_STAGE": "t",
    "AWS_DEFAULT_REGION": "us-east-1",
    "TESTBUY_DATA_TABLE": "d",
    "TESTBUY_LEDGER_TABLE": "l",
    "TESTBUY_EVENT_BUS": "b",
    "TESTBUY_EVIDENCE_BUCKET": "e",
    "TESTBUY_ROUND_STATE_MACHINE_ARN": "arn:r",
    "TESTBUY_ORDER_STATE_MACHINE_ARN": "arn:o",
    "TESTBUY_APPEAL_STATE_MACHINE_ARN": "arn:a",  # appeals (issue 10 item 2)
    "TESTBUY_MARKETPLACE_URL": "http://m",
    "TESTBUY_AUTH_MODE": "local",
    "TESTBUY_TOKEN_SECRET": "x" * 32,
    "TESTBUY_WEBHOOK_SECRET_ARN": "testbuy-t-webhook-secret",
}


def test_the_custody_key_comes_from_config_and_is_never_absent(kms: Any) -> None:
    session = boto3.session.Session(region_name="us-east-1")
    assert isinstance(custody_key_from(load({**BASE, "TESTBUY_CUSTODY_KEY": "s" * 40}), session), LocalHmacKey)
    arn = hmac_key(kms)
    prev = hmac_key(kms)
    cfg = load({**BASE, "TESTBUY_CUSTODY_KMS_KEY_ARN": arn, "TESTBUY_CUSTODY_KMS_PREVIOUS_KEY_ARNS": f" {prev} ,"})
    key = custody_key_from(cfg, session)
    assert isinstance(key, KmsCustodyKey) and key.trusts(arn) and key.trusts(prev) and key.current_key_id() == arn
    with pytest.raises(ConfigError, match="no custody key"):
        custody_key_from(load(BASE), session)
    with pytest.raises(ConfigError, match="TESTBUY_CUSTODY_KEY"):
        custody_key_from(load({**BASE, "TESTBUY_CUSTODY_KEY": "short"}), session)
    cognito = {**BASE, "TESTBUY_AUTH_MODE": "cognito", "TESTBUY_CUSTODY_KEY": "s" * 40}
    with pytest.raises(ConfigError, match="KMS_KEY_ARN is required"):
        custody_key_from(load(cognito), session)
    with pytest.raises(ConfigError, match="alias"):
        custody_key_from(load({**BASE, "TESTBUY_CUSTODY_KMS_KEY_ARN": "alias/x"}), session)
