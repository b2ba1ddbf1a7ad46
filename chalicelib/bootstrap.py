"""Builds the services' dependencies from settings. Called lazily on first use; nothing happens at import time."""

from __future__ import annotations

import threading
from typing import Any

from chalicelib.config import Settings, settings
from chalicelib.services.deps import Deps

_LOCK = threading.Lock()
_DEPS: Deps | None = None


def build(cfg: Settings, session: Any = None) -> Deps:
    """Wire adapters to boto3 clients (created here, once per container)."""
    import boto3  # local import: keeps module import cheap and the domain free of boto3

    from chalicelib.adapters.appeals_dynamodb import DynamoAppeals  # appeals (issue 10 item 2)
    from chalicelib.adapters.aws import EventBridgePublisher, S3EvidenceStore, StepFunctionsWorkflow
    from chalicelib.adapters.clients import make_client
    from chalicelib.adapters.custody_dynamodb import DynamoCustody
    from chalicelib.adapters.custody_kms import custody_key_from
    from chalicelib.adapters.ledger_dynamodb import DynamoLedger
    from chalicelib.adapters.marketplace_http import HttpMarketplace
    from chalicelib.adapters.rings_dynamodb import DynamoLeads, DynamoRings
    from chalicelib.adapters.signer_kms import manifest_signer_from
    from chalicelib.adapters.store_dynamodb import (
        DynamoOrders,
        DynamoPersonas,
        DynamoPrograms,
        DynamoRounds,
    )
    from chalicelib.adapters.system import SystemClock, make_ids
    from chalicelib.adapters.webhook_receipts import DynamoWebhookReceipts
    from chalicelib.observability import EmfMetrics

    sess = session or boto3.session.Session(region_name=cfg.region)
    clock = SystemClock()
    # Every client: standard retries, connect/read timeouts, throttling/5xx/connection errors as TransientError.
    dynamodb = make_client(sess, "dynamodb")
    return Deps(
        clock=clock,
        ids=make_ids(cfg.id_seed),
        programs=DynamoPrograms(dynamodb, cfg.data_table),
        rounds=DynamoRounds(dynamodb, cfg.data_table),
        orders=DynamoOrders(dynamodb, cfg.data_table),
        custody=DynamoCustody(dynamodb, cfg.data_table),
        custody_key=custody_key_from(cfg, sess),
        personas=DynamoPersonas(dynamodb, cfg.data_table),
        ledger=DynamoLedger(dynamodb, cfg.ledger_table, clock),
        events=EventBridgePublisher(make_client(sess, "events"), cfg.event_bus),
        workflow=StepFunctionsWorkflow(
            make_client(sess, "stepfunctions"),
            {
                "round": cfg.round_state_machine_arn,
                "order": cfg.order_state_machine_arn,
                "appeal": cfg.appeal_state_machine_arn,  # appeals (issue 10 item 2)
            },
        ),
        marketplace=HttpMarketplace(cfg.marketplace_url),
        evidence=S3EvidenceStore(make_client(sess, "s3"), cfg.evidence_bucket),
        metrics=EmfMetrics(cfg.metrics_namespace, cfg.metrics_file),
        persona_pool_size=cfg.persona_pool_size,
        budget_thresholds=cfg.budget_thresholds,
        webhook_receipts=DynamoWebhookReceipts(dynamodb, cfg.data_table),
        rings=DynamoRings(dynamodb, cfg.data_table),  # issue 10 items 3 and 4
        leads=DynamoLeads(dynamodb, cfg.data_table),
        appeals=DynamoAppeals(dynamodb, cfg.data_table),  # appeals (issue 10 item 2)
        manifest_signer=manifest_signer_from(cfg, sess),  # evidence (issue 10 item 5)
    )


def deps() -> Deps:
    """The container's dependencies, built on first use."""
    global _DEPS
    if _DEPS is None:
        with _LOCK:
            if _DEPS is None:
                _DEPS = build(settings())
    return _DEPS


def reset() -> None:
    """Forget the wired dependencies and settings (tests and the local stack re-wire after changing env)."""
    global _DEPS
    with _LOCK:
        _DEPS = None
    settings.cache_clear()
