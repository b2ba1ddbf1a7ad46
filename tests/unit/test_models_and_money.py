import pytest
from pydantic import ValidationError

from chalicelib.domain.errors import CurrencyMismatch
from chalicelib.domain.events import ALL_EVENTS, OrderPlaced, deterministic_event_id, envelope
from chalicelib.domain.models import FundRequest, ProgramCreate, ServiceQualityIn, VerdictIn
from chalicelib.domain.money import MAX_MINOR_UNITS, format_minor, require_currency

GOOD = {
    "name": "p",
    "currency": "CNY",
    "budget": 100,
    "period_start": "2026-01-01T00:00:00Z",
    "period_end": "2026-12-31T00:00:00Z",
    "round_size": 5,
}


@pytest.mark.parametrize("amount", [0, -1, MAX_MINOR_UNITS + 1, 2**53 + 1, 2**63, 1.5, "100", True])
def test_amounts_must_be_positive_integers_in_range(amount: object) -> None:
    with pytest.raises(ValidationError):
        FundRequest.model_validate({"amount": amount, "currency": "CNY", "reference": "r"})


@pytest.mark.parametrize(
    "change",
    [
        {"currency": "cny"},
        {"currency": "CNYY"},
        {"period_start": "2026-01-01T00:00:00"},
        {"period_end": "2025-01-01T00:00:00Z"},
        {"round_size": 0},
        {"exploration_share": 0},
        {"exploration_share": 1.5},
        {"unknown": 1},
        {"labs": []},
    ],
)
def test_programme_validation(change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ProgramCreate.model_validate_json(__import__("json").dumps({**GOOD, **change}))


def test_valid_programme_parses_times_as_utc() -> None:
    p = ProgramCreate.model_validate_json(
        __import__("json").dumps({**GOOD, "period_start": "2026-01-01T08:00:00+08:00"})
    )
    assert p.period_start.utcoffset() is not None and p.period_start.hour == 0


def test_verdicts_and_service_quality() -> None:
    assert VerdictIn.model_validate_json('{"verdict": "counterfeit"}').verdict.suspect
    with pytest.raises(ValidationError):
        VerdictIn.model_validate_json('{"verdict": "fake"}')
    with pytest.raises(ValidationError):
        VerdictIn.model_validate_json('{"verdict": "authentic", "evidence": ["nothex"]}')
    best = ServiceQualityIn(delivery_days=2, packaging=5, description_accuracy=5, communication=5)
    late = ServiceQualityIn(delivery_days=40, packaging=5, description_accuracy=5, communication=5)
    worst = ServiceQualityIn(delivery_days=2, packaging=1, description_accuracy=1, communication=1)
    assert best.score() == 1.0 and worst.score() == 0.0 and late.score() == 0.75


def test_currency_and_formatting() -> None:
    require_currency("CNY", "CNY")
    with pytest.raises(CurrencyMismatch):
        require_currency("CNY", "USD")
    assert format_minor(123456, "CNY") == "CNY 1,234.56"
    assert format_minor(-5, "JPY", 0) == "-JPY 5"


def test_event_envelope_shape_and_deterministic_ids() -> None:
    from datetime import UTC, datetime

    data = OrderPlaced(order_id="o", round_id="r", seller_id="s", category="c", amount=1, currency="CNY")
    env = envelope(
        data,
        event_id=deterministic_event_id("o", "OrderPlaced"),
        correlation_id="c",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        program_id="p",
    )
    assert env.source == "testbuy.orders" and env.detail_type == "OrderPlaced"
    assert set(env.detail) == {"metadata", "data"}
    assert env.detail["metadata"]["event_id"] == deterministic_event_id("o", "OrderPlaced")
    assert deterministic_event_id("o", "OrderPlaced") != deterministic_event_id("o", "OrderSettled")
    assert all(e.detail_type[0].isupper() and e.detail_type.endswith(("ed", "Recommended")) for e in ALL_EVENTS)
