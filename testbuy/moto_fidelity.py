"""Make moto's DynamoDB behave like DynamoDB where testbuy's guarantees depend on it (local stack only).

Two gaps in moto 5.2.5 (pinned exactly because this touches its internals):

1. Requests are served by concurrent threads with no isolation: a conditional write's check and its write can
   interleave with another request, so two "available >= :amount" reservations could both pass. DynamoDB makes every
   single-item write and every transaction atomic. We serialize DynamoDB requests on one lock (the local stack is
   single-process and GIL-bound anyway, so this costs no real throughput).
2. ``TransactWriteItems`` snapshots every table it touches with ``copy.deepcopy`` for rollback: O(table size) per
   transaction, and it crashes ("dictionary changed size during iteration") under concurrent writes. We replace it
   with an all-or-nothing version that evaluates every condition first, then applies the writes, and on an unexpected
   error restores only the items it touched.

And one cost: the Step Functions executor builds a new boto3 client for every Lambda invocation (tens of ms of CPU
each); we cache one client per (service, region) for the executor's Lambda and S3 item-reader calls.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

LOCK = threading.RLock()
_installed: dict[str, Any] = {}


def _transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
    from moto.dynamodb.comparisons import get_filter_expression
    from moto.dynamodb.exceptions import (
        MultipleTransactionsException,
        TooManyTransactionsException,
        TransactionCanceledException,
        TransactWriteSingleOpException,
    )

    with LOCK:
        if len(transact_items) > 100:
            raise TooManyTransactionsException()
        plan: list[tuple[str, dict[str, Any], str, dict[str, Any]]] = []
        seen: set[tuple[str, str]] = set()
        for entry in transact_items:
            if len(entry) != 1:
                raise TransactWriteSingleOpException
            op_type, op = next(iter(entry.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")
            table = backend.get_table(op["TableName"])
            if op_type == "Put":
                key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = op["Item"][table.range_key_attr]
            else:
                key = op["Key"]
            marker = (str(op["TableName"]), str(sorted(key.items())))
            if marker in seen:
                raise MultipleTransactionsException()
            seen.add(marker)
            plan.append((op_type, op, op["TableName"], key))

        # Phase 1: every condition against the state before any write (DynamoDB's semantics).
        reasons: list[tuple[str | None, str | None, Any]] = []
        for _op_type, op, table_name, key in plan:
            condition = op.get("ConditionExpression")
            if condition is None:
                reasons.append((None, None, None))
                continue
            current = backend.get_item(table_name, key)
            expr = get_filter_expression(
                condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
            )
            if expr.expr(current):
                reasons.append((None, None, None))
            else:
                old = None
                if op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD" and current is not None:
                    old = current.to_json()["Attributes"]
                reasons.append(("ConditionalCheckFailed", "The conditional request failed", old))
        if any(code is not None for code, _, _ in reasons):
            raise TransactionCanceledException(reasons)

        # Phase 2: apply, restoring the touched items if anything unexpected fails half-way.
        snapshots = []
        for _op_type, _op, table_name, key in plan:
            item = backend.get_item(table_name, key)
            snapshots.append((table_name, key, copy.deepcopy(item.to_json()["Attributes"]) if item else None))
        try:
            for op_type, op, table_name, key in plan:
                names = op.get("ExpressionAttributeNames")
                values = op.get("ExpressionAttributeValues")
                if op_type == "Put":
                    backend.put_item(
                        table_name, op["Item"], expression_attribute_names=names, expression_attribute_values=values
                    )
                elif op_type == "Delete":
                    backend.delete_item(table_name, key)
                elif op_type == "Update":
                    backend.update_item(
                        table_name,
                        key,
                        update_expression=op["UpdateExpression"],
                        expression_attribute_names=names,
                        expression_attribute_values=values,
                    )
        except Exception:
            for table_name, key, attrs in reversed(snapshots):
                if attrs is None:
                    if backend.get_item(table_name, key) is not None:
                        backend.delete_item(table_name, key)
                else:
                    backend.put_item(table_name, attrs)
            raise


_CLIENT_MODULES = (
    "moto.stepfunctions.parser.asl.component.state.exec.state_task.lambda_eval_utils",
    "moto.stepfunctions.parser.asl.component.state.exec.state_map.item_reader.eval.resource_eval_s3",
)


def _cached_client_factory(original: Any) -> Any:
    cache: dict[tuple[str, str], Any] = {}
    guard = threading.Lock()

    def boto_client_for(region: str, service: str, state_credentials: Any = None) -> Any:
        key = (service, region)
        with guard:
            if key not in cache:
                cache[key] = original(region=region, service=service, state_credentials=state_credentials)
            return cache[key]

    return boto_client_for


def installed() -> bool:
    return bool(_installed)


def install() -> None:
    """Idempotent."""
    if _installed:
        return
    import importlib

    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler

    for name in _CLIENT_MODULES:
        module = importlib.import_module(name)
        original = getattr(module, "boto_client_for")  # noqa: B009 - moto internal, not in its stubs
        _installed[f"client:{name}"] = original
        setattr(module, "boto_client_for", _cached_client_factory(original))  # noqa: B010

    original_call = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with LOCK:
            return original_call(self)

    _installed["call_action"] = original_call
    _installed["transact"] = DynamoDBBackend.transact_write_items
    setattr(DynamoHandler, "call_action", call_action)  # noqa: B010 - patching moto internals on purpose
    setattr(DynamoDBBackend, "transact_write_items", _transact_write_items)  # noqa: B010


def uninstall() -> None:
    if not _installed:
        return
    import importlib

    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler

    for name in _CLIENT_MODULES:
        setattr(importlib.import_module(name), "boto_client_for", _installed.pop(f"client:{name}"))  # noqa: B010
    setattr(DynamoHandler, "call_action", _installed.pop("call_action"))  # noqa: B010
    setattr(DynamoDBBackend, "transact_write_items", _installed.pop("transact"))  # noqa: B010
