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
    "TESTBUY_MARKETPLACE_URL": "http://m",
    "TESTBUY_TOKEN_SECRET": "x" * 20,
    "TESTBUY_WEBHOOK_SECRET": "w" * 20,
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


@pytest.mark.parametrize("value", ["half", "0.5,,1", "0,0.5", "1.5"])
def test_budget_thresholds_are_validated(value: str) -> None:
    with pytest.raises(ConfigError, match="TESTBUY_BUDGET_THRESHOLDS"):
        load({**ENV, "TESTBUY_BUDGET_THRESHOLDS": value})
