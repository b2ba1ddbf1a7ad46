"""Authentication: PyJWT local tokens, principals that fail closed, Cognito groups, Standard Webhooks verification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from chalicelib.api.auth import (
    AUDIENCE,
    ISSUER,
    Role,
    Unauthorized,
    issue_token,
    principal_from_cognito,
    sign_webhook,
    verify_token,
    webhook_key,
)
from chalicelib.api.webhooks import verify_webhook

SECRET = "s" * 32
WHSEC = "whsec_" + base64.b64encode(b"k" * 24).decode()
OLD_WHSEC = "whsec_" + base64.b64encode(b"o" * 24).decode()


def test_token_round_trip_carries_role_and_lab() -> None:
    who = verify_token(SECRET, issue_token(SECRET, Role.LAB, "tech", "lab-1", now=1000), now=1001)
    assert (who.role, who.lab_id, who.subject) == (Role.LAB, "lab-1", "tech")
    claims = jwt.decode(issue_token(SECRET, Role.FINANCE, "f"), SECRET, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["iss"] == ISSUER and claims["nbf"] == claims["iat"] and claims["exp"] > claims["iat"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],
        lambda t: "x.y",
        lambda t: t.replace(t.split(".")[1], t.split(".")[1][::-1]),
        lambda t: "",
        lambda t: "é.é.é",
    ],
)
def test_tampered_or_malformed_tokens_are_rejected(mutate: Any) -> None:
    token = issue_token(SECRET, Role.FINANCE, "f", now=1000)
    with pytest.raises(Unauthorized):
        verify_token(SECRET, mutate(token), now=1001)


def test_expired_not_yet_valid_and_wrong_secret_tokens_are_rejected() -> None:
    token = issue_token(SECRET, Role.ADMIN, "a", ttl_seconds=60, now=1000)
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(SECRET, token, now=2000)
    with pytest.raises(Unauthorized):
        verify_token(SECRET, token, now=900)  # before nbf
    with pytest.raises(Unauthorized):
        verify_token("t" * 32, token, now=1001)
    with pytest.raises(Unauthorized, match="expired"):  # and against the wall clock
        verify_token(SECRET, issue_token(SECRET, Role.ADMIN, "a", ttl_seconds=60, now=time.time() - 3600))


def _forge(claims: dict[str, Any], alg: str = "HS256") -> str:
    def enc(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    signing = f"{enc({'alg': alg, 'typ': 'JWT'})}.{enc(claims)}"
    sig = base64.urlsafe_b64encode(hmac.new(SECRET.encode(), signing.encode(), hashlib.sha256).digest())
    return f"{signing}.{sig.rstrip(b'=').decode()}"


GOOD = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "role": "finance", "iat": 0, "nbf": 0, "exp": 2**31}


@pytest.mark.parametrize(
    "change",
    [
        {"exp": "tomorrow"},
        {"exp": 1e400},
        {"exp": [1]},
        {"exp": None},
        {"nbf": "x"},
        {"iss": "someone-else"},
        {"aud": "another-api"},
        {"iss": None},
        {"role": "superuser"},
        {"role": ["admin"]},
        {"role": "lab"},  # a lab without a lab id
        {"role": "lab", "lab_id": ""},
        {"role": "lab", "lab_id": "lab 1"},
        {"role": "lab", "lab_id": "x" * 65},
    ],
    ids=repr,
)
def test_malformed_claims_are_a_401_never_a_crash(change: dict[str, Any]) -> None:
    claims = {**GOOD, **change}
    with pytest.raises(Unauthorized):
        verify_token(SECRET, _forge(claims))
    with pytest.raises(Unauthorized):
        verify_token(SECRET, _forge(claims), now=1000)


@pytest.mark.parametrize("missing", ["exp", "nbf", "iat", "iss", "aud", "sub", "role"])
def test_every_required_claim_is_required(missing: str) -> None:
    assert verify_token(SECRET, _forge(GOOD)).role is Role.FINANCE
    with pytest.raises(Unauthorized):
        verify_token(SECRET, _forge({k: v for k, v in GOOD.items() if k != missing}))


def test_alg_none_and_other_algorithms_are_refused() -> None:
    with pytest.raises(Unauthorized):
        verify_token(SECRET, _forge(GOOD, alg="none"))
    with pytest.raises(Unauthorized):
        verify_token(SECRET, _forge(GOOD, alg="HS512"))


def test_lab_tokens_need_a_lab_and_other_roles_carry_none() -> None:
    with pytest.raises(ValueError):
        issue_token(SECRET, Role.LAB, "tech")
    assert verify_token(SECRET, _forge({**GOOD, "lab_id": "lab-1"})).lab_id is None


def _cognito(groups: Any, lab: str | None = None) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": "u1", "cognito:groups": groups}
    if lab is not None:
        claims["custom:lab_id"] = lab
    return {"authorizer": {"claims": claims}}


def test_cognito_groups_map_to_one_role() -> None:
    assert principal_from_cognito(_cognito("finance", lab="x")).role is Role.FINANCE
    assert principal_from_cognito(_cognito("finance", lab="x")).lab_id is None
    assert principal_from_cognito(_cognito(["lab", "other-app"], lab="lab-9")).lab_id == "lab-9"
    assert principal_from_cognito(_cognito("[lab, staff]", lab="lab-9")).role is Role.LAB
    with pytest.raises(Unauthorized):
        principal_from_cognito(_cognito("strangers"))


@pytest.mark.parametrize("groups", ["lab,admin", "admin,lab", ["admin", "lab"], "finance program_manager"])
def test_several_testbuy_groups_are_refused_whatever_their_order(groups: Any) -> None:
    with pytest.raises(Unauthorized, match="several"):
        principal_from_cognito(_cognito(groups, lab="lab-1"))


@pytest.mark.parametrize("lab", [None, "", "lab 1", "x" * 65])
def test_a_cognito_lab_without_a_valid_lab_id_is_refused(lab: str | None) -> None:
    with pytest.raises(Unauthorized, match="lab id"):
        principal_from_cognito(_cognito("lab", lab=lab))


# ------------------------------------------------------------------------------------------------ Standard Webhooks

BODY = b'{"order_id":"o1"}'
KEYS = [webhook_key(WHSEC)]


def test_webhook_signature_binds_id_body_and_time() -> None:
    headers = sign_webhook(WHSEC, BODY, "msg_1", timestamp=1000)
    assert verify_webhook(KEYS, headers, BODY, now=1010) == "msg_1"
    with pytest.raises(Unauthorized):
        verify_webhook(KEYS, headers, BODY + b" ", now=1010)
    with pytest.raises(Unauthorized):
        verify_webhook(KEYS, {**headers, "webhook-id": "msg_2"}, BODY, now=1010)
    with pytest.raises(Unauthorized, match="300 s"):
        verify_webhook(KEYS, headers, BODY, now=1000 + 301)  # stale
    with pytest.raises(Unauthorized, match="300 s"):
        verify_webhook(KEYS, headers, BODY, now=1000 - 301)  # from the future
    with pytest.raises(Unauthorized):
        verify_webhook([webhook_key(OLD_WHSEC)], headers, BODY, now=1010)


def test_rotation_accepts_the_current_or_the_previous_secret() -> None:
    both = [webhook_key(WHSEC), webhook_key(OLD_WHSEC)]
    assert verify_webhook(both, sign_webhook(OLD_WHSEC, BODY, "m", timestamp=1000), BODY, now=1000) == "m"
    assert verify_webhook(both, sign_webhook(WHSEC, BODY, "m", timestamp=1000), BODY, now=1000) == "m"
    assert verify_webhook(KEYS, sign_webhook([OLD_WHSEC, WHSEC], BODY, "m", timestamp=1000), BODY, now=1000) == "m"


def _sig(**change: str) -> dict[str, str]:
    return {**sign_webhook(WHSEC, BODY, "msg_1", timestamp=1000), **change}


VALID_ENTRY = _sig()["webhook-signature"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        _sig(**{"webhook-signature": "v1,é" + VALID_ENTRY[3:]}),
        _sig(**{"webhook-signature": "v1,ÿÿÿ"}),
        _sig(**{"webhook-signature": "v1,not base64!"}),
        _sig(**{"webhook-signature": "v1," + "A" * 5}),
        _sig(**{"webhook-signature": "v2," + VALID_ENTRY[3:]}),
        _sig(**{"webhook-signature": VALID_ENTRY[3:]}),
        _sig(**{"webhook-signature": ""}),
        _sig(**{"webhook-signature": "v1," + "A" * 5000}),
        _sig(**{"webhook-timestamp": "1e3"}),
        _sig(**{"webhook-timestamp": "-1000"}),
        _sig(**{"webhook-timestamp": "\uff11\uff10\uff10\uff10"}),  # full-width digits: isdigit(), not ASCII
        _sig(**{"webhook-timestamp": "9" * 40}),
        _sig(**{"webhook-timestamp": " 1000"}),
        _sig(**{"webhook-id": ""}),
        _sig(**{"webhook-id": "msg 1"}),
        _sig(**{"webhook-id": "é"}),
        _sig(**{"webhook-id": "m" * 129}),
    ],
    ids=lambda h: repr(h)[:80],
)
def test_malformed_webhook_headers_are_401_never_an_error(headers: dict[str, str]) -> None:
    with pytest.raises(Unauthorized):
        verify_webhook(KEYS, headers, BODY, now=1000)


def test_malformed_entries_are_skipped_and_a_valid_one_still_verifies() -> None:
    noisy = f"v1,é v1,!!! garbage  v2,abc {VALID_ENTRY} v1,AAAA"
    assert verify_webhook(KEYS, _sig(**{"webhook-signature": noisy}), BODY, now=1000) == "msg_1"


@pytest.mark.parametrize("secret", ["plain", "whsec_", "whsec_!!!", "whsec_" + base64.b64encode(b"short").decode()])
def test_webhook_secrets_have_the_standard_form(secret: str) -> None:
    with pytest.raises(ValueError):
        webhook_key(secret)
