"""Programme timeouts that could outlive a Standard execution (one year) are refused at the edge with a 400 that
names the field (request validation: the programme is never created)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


def body(**timeouts: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "name": "too long",
        "currency": "CNY",
        "budget": 100_000,
        "period_start": (now - timedelta(days=1)).isoformat(),
        "period_end": (now + timedelta(days=30)).isoformat(),
        "round_size": 1,
        "timeouts": timeouts,
    }


def test_timeouts_beyond_one_execution_are_a_400_naming_the_field(api: Any) -> None:
    pm = api("program_manager")
    status, answer, _ = pm.request("POST", "/programs", body(delivery_seconds=180 * 86400, verdict_seconds=200 * 86400))
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_input"
    fields = [d["field"] for d in answer["error"]["details"]]
    assert fields == ["timeouts"], answer
    assert "one year" in answer["error"]["details"][0]["message"]


def test_the_longest_allowed_timeouts_are_accepted(api: Any) -> None:
    pm = api("program_manager")
    status, answer, _ = pm.request("POST", "/programs", body(delivery_seconds=120 * 86400, verdict_seconds=230 * 86400))
    assert status == 201, answer
