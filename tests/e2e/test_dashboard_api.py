"""The dashboard's two routes over the real HTTP API: the public page (HTML, no data, strict headers) and the data
route (the caller's token and role; a programme with nothing bought yet still gets a whole document)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from testbuy.client import ApiClient


@pytest.fixture()
def program_id(api: Any) -> str:
    now = datetime.now(UTC)
    body = {
        "name": "dashboard <b>api</b>",
        "currency": "JPY",
        "budget": 500_000,
        "period_start": now.isoformat(),
        "period_end": (now + timedelta(days=30)).isoformat(),
        "round_size": 5,
    }
    return str(api("program_manager").call("POST", "/programs", body)["program_id"])


def test_the_page_is_public_html_that_holds_no_data(stack_info: Any, program_id: str) -> None:
    status, body, headers = ApiClient(stack_info.api_url).request("GET", "/dashboard")
    assert status == 200
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["content-type"].startswith("text/html")
    assert "connect-src 'self'" in lower["content-security-policy"] and lower["x-frame-options"] == "DENY"
    assert lower["cache-control"] == "no-store"
    assert isinstance(body, str) and "<svg" not in body and program_id not in body
    assert '<script id="embedded-data" type="application/json">null</script>' in body


def test_the_data_route_follows_roles_and_answers_an_empty_programme_whole(api: Any, program_id: str) -> None:
    path = f"/programs/{program_id}/dashboard"
    for role in ("program_manager", "finance", "admin"):
        assert api(role).request("GET", path)[0] == 200, role
    assert api("enforcement").request("GET", path)[0] == 403
    assert api("lab", "lab-1").request("GET", path)[0] == 403
    assert api(None).request("GET", path)[0] == 401
    status, err, _ = api("finance").request("GET", "/programs/prg-nope/dashboard")
    assert status == 404 and err["error"]["code"] == "not_found"
    assert api("finance").request("GET", f"{path}?x=1")[0] == 400  # unknown query parameters are refused

    api("finance").call(
        "POST", f"/programs/{program_id}/funding", {"amount": 500_000, "currency": "JPY", "reference": "f"}
    )
    doc = api("finance").call("GET", path)
    assert doc["program"]["currency"] == "JPY" and doc["balance"]["funded"] == 500_000
    assert [p["funded"] for p in doc["burn_down"]] == [500_000]
    assert doc["estimates"] == {
        "rounds": [],
        "combined": {
            "label": "combined",
            "conclusive": 0,
            "hits": 0,
            "hit_rate": None,
            "prevalence": None,
            "ci_low": None,
            "ci_high": None,
            "method": None,
            "status": None,
            "started_at": None,
        },
    }
    assert doc["orders"] == {
        "total": 0,
        "by_status": {},
        "overdue_count": 0,
        "overdue": [],
        "overdue_rule_seconds": {
            "awaiting_delivery": 14 * 86400,
            "awaiting_verdict": 30 * 86400,
            "other_open": 44 * 86400,
        },
    }
    assert doc["refund_rate"] is None and doc["labs"] == [] and doc["categories"] == []
    assert doc["reconciliation"]["reconciled"] is True and doc["forecast"]["projected_spent_at_end"] == 0
