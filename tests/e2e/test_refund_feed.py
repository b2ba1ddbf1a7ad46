"""The marketplace refund feed gives the reference programme's headline metric over the real HTTP API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest


@pytest.fixture()
def program_id(api: Any) -> str:
    now = datetime.now(UTC)
    body = {
        "name": "refund feed",
        "currency": "CNY",
        "budget": 1_000_000,
        "period_start": now.isoformat(),
        "period_end": (now + timedelta(days=90)).isoformat(),
        "round_size": 5,
    }
    return str(api("program_manager").call("POST", "/programs", body)["program_id"])


def test_monthly_feed_gives_overall_and_per_month_suspect_refund_rates(api: Any, program_id: str) -> None:
    pm = api("program_manager")
    path = f"/programs/{program_id}/marketplace-refunds"
    assert pm.call("POST", path, {"period": "2016-01", "orders": 100_000, "suspect_refunds": 31})["rate"] == 0.00031
    pm.call("POST", path, {"period": "2016-12", "orders": 100_000, "suspect_refunds": 99})
    # A resend of a month replaces it (the feed is idempotent per month).
    api("finance").call("POST", path, {"period": "2016-12", "orders": 100_000, "suspect_refunds": 21})
    rate = pm.call("GET", f"/programs/{program_id}/metrics")["marketplace_refund_rate"]
    assert [p["period"] for p in rate["by_period"]] == ["2016-01", "2016-12"]
    assert [p["rate"] for p in rate["by_period"]] == [0.00031, 0.00021]
    assert rate["overall"] == pytest.approx(52 / 200_000)


def test_more_suspect_refunds_than_orders_is_refused(api: Any, program_id: str) -> None:
    status, body, _ = api("program_manager").request(
        "POST",
        f"/programs/{program_id}/marketplace-refunds",
        {"period": "2016-02", "orders": 10, "suspect_refunds": 11},
    )
    assert status == 400 and body["error"]["details"][0]["field"] == "suspect_refunds"
    metrics = api("program_manager").call("GET", f"/programs/{program_id}/metrics")
    assert metrics["marketplace_refund_rate"] is None
