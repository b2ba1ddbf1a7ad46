"""Plain-Python <-> DynamoDB attribute values. Floats travel as Decimal strings; integers stay exact."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

_SER = TypeSerializer()
_DES = TypeDeserializer()


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, Mapping):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and "." not in str(value) else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


def av(value: Any) -> dict[str, Any]:
    """One attribute value."""
    return _SER.serialize(_to_dynamo(value))  # type: ignore[no-any-return]


def to_item(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: av(v) for k, v in data.items() if v is not None}


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _from_dynamo(_DES.deserialize(v)) for k, v in item.items()}


def cancellation_codes(exc: Exception) -> list[str]:
    """The per-item reason codes of a TransactionCanceledException ('None' where an item was fine)."""
    response = getattr(exc, "response", {}) or {}
    reasons = response.get("CancellationReasons") or []
    return [str(r.get("Code", "None")) for r in reasons]


def error_code(exc: Exception) -> str:
    response = getattr(exc, "response", {}) or {}
    return str(response.get("Error", {}).get("Code", ""))
