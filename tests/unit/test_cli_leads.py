"""`testbuy leads list|update` and fingerprint columns in `testbuy sellers import` (issue 10 items 3 and 4)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit import test_cli as base
from tests.unit.test_cli import FakeApi, run

clean_config = base.clean_config  # the autouse fixture: no setting of the developer's machine leaks in


@pytest.fixture()
def api() -> Iterator[FakeApi]:
    server = FakeApi()
    try:
        yield server
    finally:
        server.close()


LEAD = {
    "program_id": "prg-1",
    "lead_id": "lead-abc",
    "seller_id": None,
    "ring_id": "ring-1",
    "rule": "ring-counterfeiters",
    "estimated_counterfeit_sales": 1234,
    "currency": "EUR",
    "order_ids": ["o1"],
    "evidence_hashes": [],
    "package_sha256": None,
    "status": "submitted",
    "history": [],
    "created_at": "2026-03-01T00:00:00+00:00",
    "updated_at": "2026-03-01T00:00:00+00:00",
}


def opts(api: FakeApi) -> list[str]:
    return ["-p", "prg-1", "--api-url", api.url, "--token", "t"]


def test_list_filters_by_status_and_prints_plain_json(api: FakeApi) -> None:
    api.handler = lambda m, p, q, b: (200, {"leads": [LEAD]})
    result = run("leads", "list", "--status", "submitted", "--json", *opts(api))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["leads"][0]["lead_id"] == "lead-abc"
    req = api.requests[-1]
    assert (req["method"], req["path"], req["query"]) == ("GET", "/programs/prg-1/leads", {"status": ["submitted"]})
    table = run("leads", "list", *opts(api))
    assert table.exit_code == 0 and "ring ring-1" in table.stdout


def test_list_refuses_an_unknown_status_before_calling(api: FakeApi) -> None:
    result = run("leads", "list", "--status", "open", *opts(api))
    assert result.exit_code == 2 and api.requests == []


def test_update_sends_the_status_and_says_whether_it_changed(api: FakeApi) -> None:
    changed = {"value": True}

    def handle(m: str, p: str, q: Any, b: Any) -> tuple[int, Any]:
        return 200, {"changed": changed["value"], "lead": {**LEAD, "status": b["status"]}}

    api.handler = handle
    result = run("leads", "update", "lead-abc", "--status", "case_opened", "--note", "case 42", *opts(api))
    assert result.exit_code == 0 and "now case_opened" in result.stdout
    req = api.requests[-1]
    assert req["path"] == "/programs/prg-1/leads/lead-abc/status"
    assert req["body"] == {"status": "case_opened", "note": "case 42"}
    changed["value"] = False
    again = run("leads", "update", "lead-abc", "--status", "case_opened", *opts(api))
    assert again.exit_code == 0 and "nothing changed" in again.stdout


def test_a_refused_move_exits_2_naming_the_allowed_statuses(api: FakeApi) -> None:
    details = [{"field": "status", "current": "submitted", "allowed": ["case_opened", "closed_without_action"]}]
    api.handler = lambda m, p, q, b: (
        409,
        {"error": {"code": "invalid_state", "message": "cannot move", "details": details}},
    )
    result = run("leads", "update", "lead-abc", "--status", "conviction", "--json", *opts(api))
    assert result.exit_code == 2
    error = json.loads(result.stderr)
    assert error["http_status"] == 409 and "case_opened, closed_without_action" in error["error"]["message"]


def test_csv_fingerprint_columns_are_sent_and_raw_values_rejected_by_line(api: FakeApi, tmp_path: Path) -> None:
    sent: list[Any] = []
    api.handler = lambda m, p, q, b: (sent.append(b), (200, {"imported": len(b["sellers"])}))[1]
    d1, d2 = hashlib.sha256(b"d1").hexdigest(), hashlib.sha256(b"d2").hexdigest()
    f = tmp_path / "sellers.csv"
    f.write_text(
        "seller_id,category,expected_cost,risk,fingerprints.device,fingerprints.payment_account\n"
        f"s1,bags,1000,0.2,{d1};{d2},\n"
        "s2,bags,1000,0.2,,DE89370400440532013000\n"
    )
    result = run("sellers", "import", str(f), "--json", *opts(api))
    report = json.loads(result.stdout)
    assert [s["fingerprints"] for s in sent[0]["sellers"]] == [{"device": [d1, d2]}]
    assert report["rejected"][0]["line"] == 3
    assert report["rejected"][0]["field"].startswith("fingerprints.payment_account")
    assert "never the raw value" in report["rejected"][0]["reason"]
