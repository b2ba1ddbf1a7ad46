import pytest

from chalicelib.api.auth import (
    Role,
    Unauthorized,
    issue_token,
    principal_from_cognito,
    sign_webhook,
    verify_token,
    verify_webhook,
)

SECRET = "s" * 32


def test_token_round_trip_carries_role_and_lab() -> None:
    who = verify_token(SECRET, issue_token(SECRET, Role.LAB, "tech", "lab-1", now=1000), now=1001)
    assert (who.role, who.lab_id, who.subject) == (Role.LAB, "lab-1", "tech")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],
        lambda t: "x.y",
        lambda t: t.replace(t.split(".")[1], t.split(".")[1][::-1]),
    ],
)
def test_tampered_or_malformed_tokens_are_rejected(mutate: object) -> None:
    token = issue_token(SECRET, Role.FINANCE, "f", now=1000)
    with pytest.raises(Unauthorized):
        verify_token(SECRET, mutate(token), now=1001)  # type: ignore[operator]


def test_expired_and_wrong_secret_tokens_are_rejected() -> None:
    token = issue_token(SECRET, Role.ADMIN, "a", ttl_seconds=60, now=1000)
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(SECRET, token, now=2000)
    with pytest.raises(Unauthorized):
        verify_token("t" * 32, token, now=1001)


def test_lab_tokens_need_a_lab() -> None:
    with pytest.raises(ValueError):
        issue_token(SECRET, Role.LAB, "tech")


def test_webhook_signature_binds_body_and_time() -> None:
    body = b'{"order_id":"o1"}'
    header = sign_webhook(SECRET, body, timestamp=1000)
    assert verify_webhook(SECRET, body, header, now=1010).role is Role.MARKETPLACE
    with pytest.raises(Unauthorized):
        verify_webhook(SECRET, body + b" ", header, now=1010)
    with pytest.raises(Unauthorized, match="tolerance"):
        verify_webhook(SECRET, body, header, now=5000)
    with pytest.raises(Unauthorized):
        verify_webhook(SECRET, body, None, now=1010)


def test_cognito_groups_map_to_roles() -> None:
    ctx = {"authorizer": {"claims": {"sub": "u1", "cognito:groups": "finance", "custom:lab_id": "x"}}}
    assert principal_from_cognito(ctx).role is Role.FINANCE
    with pytest.raises(Unauthorized):
        principal_from_cognito({"authorizer": {"claims": {"cognito:groups": "strangers"}}})
