import pytest

from chalicelib.config import ConfigError, load

ENV = {
    "TESTBUY_STAGE": "dev",
    "AWS_DEFAULT_REGION": "us-east-1",
    "TESTBUY_DATA_TABLE": "d",
    "TESTBUY_LEDGER_TABLE": "l",
    "TESTBUY_EVENT_BUS": "b",
    "TESTBUY_EVIDENCE_BUCKET": "e",
    "TESTBUY_ROUND_STATE_MACHINE_ARN": "r",
    "TESTBUY_ORDER_STATE_MACHINE_ARN": "o",
    "TESTBUY_APPEAL_STATE_MACHINE_ARN": "a",  # appeals (issue 10 item 2)
    "TESTBUY_MARKETPLACE_URL": "http://m",
    "TESTBUY_TOKEN_SECRET": "x" * 32,
    "TESTBUY_WEBHOOK_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:123456789012:secret:testbuy-webhook",
    "TESTBUY_AUTH_MODE": "local",
}


def test_thresholds_come_from_the_environment_with_defaults() -> None:
    assert load(ENV).budget_thresholds == (0.5, 0.8, 1.0)
    assert load({**ENV, "TESTBUY_BUDGET_THRESHOLDS": "0.25,0.9"}).budget_thresholds == (0.25, 0.9)


def test_complete_environment_loads() -> None:
    s = load({**ENV, "TESTBUY_BUDGET_THRESHOLDS": "0.25,0.75"})
    assert s.data_table == "d" and s.budget_thresholds == (0.25, 0.75) and s.auth_mode == "local"


def test_missing_variables_are_named() -> None:
    env = dict(ENV)
    del env["TESTBUY_LEDGER_TABLE"]
    with pytest.raises(ConfigError, match="TESTBUY_LEDGER_TABLE"):
        load(env)


def test_local_auth_needs_a_secret() -> None:
    with pytest.raises(ConfigError, match="TESTBUY_TOKEN_SECRET"):
        load({**ENV, "TESTBUY_TOKEN_SECRET": ""})
    assert load({**ENV, "TESTBUY_TOKEN_SECRET": "", "TESTBUY_AUTH_MODE": "cognito"}).auth_mode == "cognito"


def test_auth_mode_has_no_default() -> None:
    env = {k: v for k, v in ENV.items() if k != "TESTBUY_AUTH_MODE"}
    with pytest.raises(ConfigError, match="TESTBUY_AUTH_MODE"):
        load(env)
    with pytest.raises(ConfigError, match="TESTBUY_AUTH_MODE"):
        load({**ENV, "TESTBUY_AUTH_MODE": "none"})


def test_a_deployed_function_refuses_to_start_without_cognito() -> None:
    deployed = {**ENV, "AWS_LAMBDA_FUNCTION_NAME": "testbuy-dev"}
    with pytest.raises(ConfigError, match="cognito"):
        load(deployed)
    assert load({**deployed, "TESTBUY_AUTH_MODE": "cognito"}).auth_mode == "cognito"


def test_the_webhook_secret_is_never_in_the_environment() -> None:
    s = load(ENV)
    assert "webhook_secret" not in s.model_dump()
    assert s.webhook_secret_arn.startswith("arn:aws:secretsmanager:")


@pytest.mark.parametrize("value", ["half", "0.5,,1", "0,0.5", "1.5"])
def test_budget_thresholds_are_validated(value: str) -> None:
    with pytest.raises(ConfigError, match="TESTBUY_BUDGET_THRESHOLDS"):
        load({**ENV, "TESTBUY_BUDGET_THRESHOLDS": value})
