"""Money: integer minor units plus an ISO 4217 code. Never a float."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, StrictInt, WithJsonSchema

from chalicelib.domain.errors import CurrencyMismatch

# Ten trillion major units of a two-decimal currency: far above any real programme, far below 2**53, so every
# amount survives a JSON round trip through any client exactly.
MAX_MINOR_UNITS = 10**15

_ISO4217 = re.compile(r"^[A-Z]{3}$")


def _check_currency(value: str) -> str:
    if not _ISO4217.fullmatch(value):
        raise ValueError("currency must be an ISO 4217 code of three capital letters, e.g. CNY")
    return value


# The pattern is in the JSON Schema too (OpenAPI document and server agree); the validator gives the clear message.
Currency = Annotated[
    str,
    AfterValidator(_check_currency),
    WithJsonSchema({"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code, e.g. CNY"}),
]
Amount = Annotated[StrictInt, Field(gt=0, le=MAX_MINOR_UNITS)]
NonNegativeAmount = Annotated[StrictInt, Field(ge=0, le=MAX_MINOR_UNITS)]


def require_currency(expected: str, given: str) -> None:
    """Raise ``CurrencyMismatch`` unless ``given`` is the programme's currency."""
    if expected != given:
        raise CurrencyMismatch(
            f"this programme is in {expected}; {given} was given",
            details=[{"field": "currency", "expected": expected, "given": given}],
        )


def format_minor(amount: int, currency: str, exponent: int = 2) -> str:
    """Human rendering for reports, e.g. ``format_minor(123456, 'CNY') == 'CNY 1,234.56'``."""
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**exponent)
    return f"{sign}{currency} {major:,}.{minor:0{exponent}d}" if exponent else f"{sign}{currency} {major:,}"
