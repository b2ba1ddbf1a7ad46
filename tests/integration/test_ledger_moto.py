"""The local stack's DynamoDB must behave like DynamoDB under concurrency, or no ledger test means anything.

moto 5.2.5's server alone is not DynamoDB: requests run on werkzeug threads with no lock, a condition is checked and
the write applied in separate Python steps, and ``TransactWriteItems`` backs up every table it touches with
``copy.deepcopy`` and restores it when any condition fails. Measured while building the ledger: 16 threads reserving
against one programme overspent (1008 reserved of 1000 funded), a failed transaction's rollback discarded another
thread's committed write, and requests died with "dictionary changed size during iteration". The local stack installs
``testbuy.moto_fidelity`` (serialized requests, conditions first then writes); these tests prove it holds.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

# ---------------------------------------------------------------------------------------------------- the proof


@pytest.fixture()
def counter_table(local_stack: Any) -> Iterator[tuple[Any, str]]:
    from testbuy import moto_fidelity

    assert moto_fidelity.installed(), "the local stack must install testbuy.moto_fidelity"
    yield boto3.client("dynamodb"), os.environ["TESTBUY_LEDGER_TABLE"]


def test_failed_transaction_writes_nothing_and_names_each_item(counter_table: tuple[Any, str]) -> None:
    client, table = counter_table
    pk = f"MOTO#{uuid.uuid4().hex}"
    client.put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": "C"}, "n": {"N": "5"}})
    client.put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": "D"}, "n": {"N": "1"}})
    items: list[dict[str, Any]] = [
        {
            "Update": {
                "TableName": table,
                "Key": {"pk": {"S": pk}, "sk": {"S": "C"}},
                "UpdateExpression": "SET n = n - :d",
                "ConditionExpression": "n >= :d",
                "ExpressionAttributeValues": {":d": {"N": "3"}},
            }
        },
        {"Put": {"TableName": table, "Item": {"pk": {"S": pk}, "sk": {"S": "X"}}}},
        {
            "ConditionCheck": {
                "TableName": table,
                "Key": {"pk": {"S": pk}, "sk": {"S": "D"}},
                "ConditionExpression": "n > :big",
                "ExpressionAttributeValues": {":big": {"N": "100"}},
            }
        },
    ]
    with pytest.raises(client.exceptions.TransactionCanceledException) as info:
        client.transact_write_items(TransactItems=items)
    codes = [r["Code"] for r in info.value.response["CancellationReasons"]]
    assert codes == ["None", "None", "ConditionalCheckFailed"]
    got = client.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": "C"}}, ConsistentRead=True)["Item"]
    assert got["n"]["N"] == "5"
    assert "Item" not in client.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": "X"}})
    # And the same transaction applies in full once its condition holds.
    items[2]["ConditionCheck"]["ExpressionAttributeValues"] = {":big": {"N": "0"}}
    client.transact_write_items(TransactItems=items)
    got = client.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": "C"}}, ConsistentRead=True)["Item"]
    assert got["n"]["N"] == "2"
    assert "Item" in client.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": "X"}}, ConsistentRead=True)


def test_concurrent_guarded_decrements_never_go_below_zero(counter_table: tuple[Any, str]) -> None:
    _, table = counter_table
    pk = f"MOTO#{uuid.uuid4().hex}"
    boto3.client("dynamodb").put_item(TableName=table, Item={"pk": {"S": pk}, "sk": {"S": "C"}, "n": {"N": "40"}})
    wins: list[int] = []

    def worker(i: int) -> None:
        client = boto3.client("dynamodb")
        for j in range(10):
            try:
                client.transact_write_items(
                    TransactItems=[
                        {
                            "Update": {
                                "TableName": table,
                                "Key": {"pk": {"S": pk}, "sk": {"S": "C"}},
                                "UpdateExpression": "SET n = n - :one",
                                "ConditionExpression": "n >= :one",
                                "ExpressionAttributeValues": {":one": {"N": "1"}},
                            }
                        },
                        {"Put": {"TableName": table, "Item": {"pk": {"S": pk}, "sk": {"S": f"W#{i}#{j}"}}}},
                    ]
                )
                wins.append(1)
            except client.exceptions.TransactionCanceledException:
                pass

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client = boto3.client("dynamodb")
    got = client.get_item(TableName=table, Key={"pk": {"S": pk}, "sk": {"S": "C"}}, ConsistentRead=True)["Item"]
    written = client.query(
        TableName=table,
        KeyConditionExpression="pk = :pk AND begins_with(sk, :w)",
        ExpressionAttributeValues={":pk": {"S": pk}, ":w": {"S": "W#"}},
        ConsistentRead=True,
    )["Count"]
    assert len(wins) == 40
    assert got["n"]["N"] == "0"
    assert written == 40
