"""Runtime configuration, read from the environment and validated once per container (never at import time)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ConfigError(RuntimeError):
    """The environment is incomplete; the message names every missing or invalid variable."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    stage: str = Field(min_length=1)
    region: str = Field(min_length=1)
    data_table: str = Field(min_length=1)
    ledger_table: str = Field(min_length=1)
    event_bus: str = Field(min_length=1)
    evidence_bucket: str = Field(min_length=1)
    round_state_machine_arn: str = Field(min_length=1)
    order_state_machine_arn: str = Field(min_length=1)
    appeal_state_machine_arn: str = Field(min_length=1)  # appeals (issue 10 item 2)
    marketplace_url: str = Field(min_length=1)
    auth_mode: Literal["local", "cognito"]  # no default: every environment says which (fails closed)
    # the Cognito hosted UI's sign-in address for the dashboard page ("" = none: the page takes a pasted token)
    signin_url: str = Field(default="", pattern=r"^(https://\S+)?$")
    token_secret: str = Field(default="", repr=False)
    webhook_secret_arn: str = Field(min_length=1, description="Secrets Manager secret, read at run time")
    metrics_namespace: str = "TestBuy"
    metrics_file: str | None = None
    persona_pool_size: int = Field(default=40, ge=1)
    budget_thresholds: tuple[float, ...] = (0.5, 0.8, 1.0)
    sweep_deadline_hours: float = Field(default=24.0, gt=0)
    # custody key (issue 8 item 5): a KMS HMAC key ARN in AWS (older ARNs still trusted for verification), or a local
    # per-stack secret; bootstrap refuses to wire custody without one of them.
    custody_kms_key_arn: str = ""
    custody_kms_previous_key_arns: tuple[str, ...] = ()
    custody_key: str = Field(default="", repr=False)
    # evidence (issue 10 item 5): the KMS asymmetric key (ECC_NIST_P256) that signs evidence-package manifests
    evidence_signing_key_arn: str = ""
    # reproducible ids for a seeded local run (the demo); refused in a deployed function
    id_seed: int | None = Field(default=None, ge=0)


_ENV = {
    "stage": "TESTBUY_STAGE",
    "region": "AWS_DEFAULT_REGION",
    "data_table": "TESTBUY_DATA_TABLE",
    "ledger_table": "TESTBUY_LEDGER_TABLE",
    "event_bus": "TESTBUY_EVENT_BUS",
    "evidence_bucket": "TESTBUY_EVIDENCE_BUCKET",
    "round_state_machine_arn": "TESTBUY_ROUND_STATE_MACHINE_ARN",
    "order_state_machine_arn": "TESTBUY_ORDER_STATE_MACHINE_ARN",
    "appeal_state_machine_arn": "TESTBUY_APPEAL_STATE_MACHINE_ARN",
    "marketplace_url": "TESTBUY_MARKETPLACE_URL",
    "auth_mode": "TESTBUY_AUTH_MODE",
    "signin_url": "TESTBUY_SIGNIN_URL",
    "token_secret": "TESTBUY_TOKEN_SECRET",  # nosec B105 # a variable name
    "webhook_secret_arn": "TESTBUY_WEBHOOK_SECRET_ARN",  # nosec B105 # a variable name
    "metrics_namespace": "POWERTOOLS_METRICS_NAMESPACE",
    "metrics_file": "TESTBUY_METRICS_FILE",
    "persona_pool_size": "TESTBUY_PERSONA_POOL_SIZE",
    "budget_thresholds": "TESTBUY_BUDGET_THRESHOLDS",
    "sweep_deadline_hours": "TESTBUY_SWEEP_DEADLINE_HOURS",
    "custody_kms_key_arn": "TESTBUY_CUSTODY_KMS_KEY_ARN",
    "custody_kms_previous_key_arns": "TESTBUY_CUSTODY_KMS_PREVIOUS_KEY_ARNS",
    "custody_key": "TESTBUY_CUSTODY_KEY",
    "id_seed": "TESTBUY_ID_SEED",
    "evidence_signing_key_arn": "TESTBUY_EVIDENCE_SIGNING_KEY_ARN",  # evidence (issue 10 item 5)
}


def load(environ: Mapping[str, str]) -> Settings:
    raw: dict[str, object] = {}
    for field, var in _ENV.items():
        if var in environ and environ[var] != "":
            raw[field] = environ[var]
    if "budget_thresholds" in raw:
        try:
            thresholds = tuple(float(x) for x in str(raw["budget_thresholds"]).split(","))
        except ValueError:
            raise ConfigError("TESTBUY_BUDGET_THRESHOLDS must be comma-separated fractions, e.g. 0.5,0.8,1") from None
        if not all(0.0 < t <= 1.0 for t in thresholds):
            raise ConfigError("TESTBUY_BUDGET_THRESHOLDS must each be in (0, 1]")
        raw["budget_thresholds"] = thresholds
    if "custody_kms_previous_key_arns" in raw:
        raw["custody_kms_previous_key_arns"] = tuple(
            a.strip() for a in str(raw["custody_kms_previous_key_arns"]).split(",") if a.strip()
        )
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{_ENV.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"testbuy configuration is incomplete ({problems}). Set these environment variables."
        ) from exc
    if settings.auth_mode != "cognito" and environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        # A deployed function (the Lambda runtime sets AWS_LAMBDA_FUNCTION_NAME; the local stack runs handlers
        # in-process, without it) authenticates through Cognito only: local tokens are for the embedded stack.
        raise ConfigError("TESTBUY_AUTH_MODE must be cognito in a deployed function; refusing to start")
    if settings.id_seed is not None and environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        raise ConfigError("TESTBUY_ID_SEED is for a seeded local run; unset it in a deployed function")
    if settings.auth_mode == "local" and len(settings.token_secret.encode()) < 32:
        # RFC 7518 section 3.2: an HS256 key of at least 256 bits
        raise ConfigError("TESTBUY_TOKEN_SECRET must be at least 32 bytes when TESTBUY_AUTH_MODE=local")
    return settings


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The container's settings, validated on first use (cold start)."""
    return load(os.environ)
