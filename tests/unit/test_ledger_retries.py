"""How the DynamoDB ledger reads a cancelled transaction, with reasons moto never produces but DynamoDB does
(``TransactionConflict`` when another transaction holds one of the items, ``ValidationError``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError

from chalicelib.adapters.dynamo_codec import to_item
from chalicelib.adapters.ledger_dynamodb import DynamoLedger
from chalicelib.domain.errors import InsufficientFunds, TransientError


class _Clock:
    def now(self) -> datetime:
        return datetime(2025, 5, 1, tzinfo=UTC)


class _Exceptions:
    ClientError = ClientError


def cancelled(*codes: str) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
            "CancellationReasons": [{"Code": c} for c in codes],
        },
        "TransactWriteItems",
    )


class ScriptedClient:
    """A DynamoDB client whose ``transact_write_items`` raises the scripted errors, then succeeds."""

    exceptions = _Exceptions

    def __init__(self, *script: ClientError) -> None:
        self.script = list(script)
        self.transactions = 0

    def get_item(self, **kw: Any) -> dict[str, Any]:
        if kw["Key"]["sk"]["S"] == "BALANCE":
            acct = {"pk": "ACCOUNT#p", "sk": "BALANCE", "currency": "CNY", "funded": 100, "available": 100}
            return {"Item": to_item({**acct, "reserved": 0, "captured": 0, "recovered": 0})}
        return {}

    def transact_write_items(self, **kw: Any) -> dict[str, Any]:
        self.transactions += 1
        if self.script:
            raise self.script.pop(0)
        return {}


def ledger(client: ScriptedClient) -> DynamoLedger:
    return DynamoLedger(client, "ledger", _Clock())


def test_transaction_conflicts_are_retried() -> None:
    client = ScriptedClient(
        cancelled("TransactionConflict", "None", "None"), cancelled("None", "None", "TransactionConflict")
    )
    result = ledger(client).reserve("p", "o1", 10, "CNY", {})
    assert client.transactions == 3 and not result.replayed


def test_endless_conflicts_become_a_transient_error() -> None:
    client = ScriptedClient(*[cancelled("TransactionConflict", "None", "None") for _ in range(10)])
    with pytest.raises(TransientError):
        ledger(client).reserve("p", "o1", 10, "CNY", {})
    assert client.transactions == 6


def test_a_failed_balance_condition_wins_over_a_conflict_elsewhere() -> None:
    client = ScriptedClient(cancelled("ConditionalCheckFailed", "TransactionConflict", "None"))
    with pytest.raises(InsufficientFunds):
        ledger(client).reserve("p", "o1", 10, "CNY", {})
    assert client.transactions == 1


def test_a_validation_error_is_not_retried_or_disguised() -> None:
    client = ScriptedClient(cancelled("ValidationError", "None", "None"))
    with pytest.raises(ClientError):
        ledger(client).reserve("p", "o1", 10, "CNY", {})
    assert client.transactions == 1
