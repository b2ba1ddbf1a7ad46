"""Finance over HTTP: spend reports per group (JSON and CSV) whose totals equal the ledger balances to the minor unit,
the reconciliation endpoint, the CLI, and bad funding input refused with nothing changed."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.adapters.ledger_dynamodb import DynamoLedger
from chalicelib.domain.ledger import Balance
from chalicelib.services.deps import Deps

GROUPS = ("program", "round", "category", "seller", "month")
COLUMNS = ("funded", "reserved", "captured", "recovered", "spent")


class PastClock:
    """40 days back is always another calendar month."""

    def now(self) -> datetime:
        return datetime.now(UTC) - timedelta(days=40)


def create_programme(api: Any) -> str:
    body = {
        "name": f"finance-{uuid.uuid4().hex[:6]}",
        "currency": "CNY",
        "budget": 200_000,
        "period_start": "2025-01-01T00:00:00Z",
        "period_end": "2030-01-01T00:00:00Z",
        "round_size": 10,
        "per_order_cap": 5_000,
    }
    return str(api("program_manager").call("POST", "/programs", body)["program_id"])


@pytest.fixture()
def scenario(api: Any, deps: Deps) -> dict[str, Any]:
    """A programme with funding, reservations, captures, a refund and a release, across two months."""
    pid = create_programme(api)
    fin = api("finance")
    fin.call("POST", f"/programs/{pid}/funding", {"amount": 100_000, "currency": "CNY", "reference": "budget-1"})
    fin.call("POST", f"/programs/{pid}/funding", {"amount": 5_000, "currency": "CNY", "reference": "budget-2"})
    now_ledger = deps.ledger
    assert isinstance(now_ledger, DynamoLedger)
    past_ledger = DynamoLedger(now_ledger._db, now_ledger._table, PastClock())
    this_month, last_month = datetime.now(UTC).strftime("%Y-%m"), PastClock().now().strftime("%Y-%m")
    # (ledger, op, order, amount, round, category, seller)
    ops = [
        (now_ledger, "reserve", "o1", 1000, "r1", "bags", "s1"),
        (now_ledger, "capture", "o1", 900, "r1", "bags", "s1"),
        (now_ledger, "recover", "o1", 300, "r1", "bags", "s1"),
        (now_ledger, "reserve", "o2", 2000, "r1", "shoes", "s2"),
        (now_ledger, "capture", "o2", 2000, "r1", "shoes", "s2"),
        (now_ledger, "reserve", "o3", 1500, "r2", "bags", "s2"),
        (now_ledger, "reserve", "o4", 700, "r2", "watches", "s3"),
        (now_ledger, "release", "o4", 700, "r2", "watches", "s3"),
        (past_ledger, "reserve", "o5", 400, "r1", "bags", "s1"),
        (past_ledger, "capture", "o5", 433, "r1", "bags", "s1"),  # above the reservation, within the cap
    ]
    expected: dict[str, dict[str, dict[str, int]]] = {g: defaultdict(lambda: dict.fromkeys(COLUMNS, 0)) for g in GROUPS}
    for g, key in (("program", pid), ("round", "(funding)"), ("category", "(funding)"), ("seller", "(funding)")):
        expected[g][key]["funded"] += 105_000
    expected["month"][this_month]["funded"] += 105_000
    held: dict[str, int] = {}
    for ledger, op, order, amount, rnd, cat, seller in ops:
        attrs = {"round_id": rnd, "category": cat, "seller_id": seller}
        order_id = f"{pid}-{order}"
        if op == "reserve":
            ledger.reserve(pid, order_id, amount, "CNY", attrs)
            held[order] = amount
            delta = {"reserved": amount}
        elif op == "capture":
            ledger.capture(pid, order_id, amount, "CNY")
            delta = {"reserved": -held.pop(order), "captured": amount, "spent": amount}
        elif op == "recover":
            ledger.recover(pid, order_id, amount, "CNY")
            delta = {"recovered": amount, "spent": -amount}
        else:
            ledger.release(pid, order_id)
            delta = {"reserved": -held.pop(order)}
        month = last_month if ledger is past_ledger else this_month
        for g, key in (("program", pid), ("round", rnd), ("category", cat), ("seller", seller), ("month", month)):
            for col, v in delta.items():
                expected[g][key][col] += v
    return {"pid": pid, "expected": expected, "months": (last_month, this_month)}


BALANCE = Balance(
    funded=105_000, available=105_000 - 1500 - 900 - 2000 - 433 + 300, reserved=1500, captured=3333, recovered=300
)


def test_the_ledger_holds_what_the_scenario_booked(deps: Deps, scenario: dict[str, Any]) -> None:
    assert deps.ledger.balance(scenario["pid"]) == BALANCE


@pytest.mark.parametrize("group_by", GROUPS)
def test_json_report_totals_equal_the_balances(api: Any, scenario: dict[str, Any], group_by: str) -> None:
    pid = scenario["pid"]
    status, report, headers = api("finance").request("GET", f"/programs/{pid}/spend?group_by={group_by}")
    assert status == 200 and "application/json" in headers["Content-Type"]
    assert report["currency"] == "CNY" and report["group_by"] == group_by
    balance = report["balance"]
    assert balance == {**BALANCE.__dict__, "spent": BALANCE.spent}
    for col in COLUMNS:
        assert report["totals"][col] == balance[col], col
        assert sum(row[col] for row in report["rows"]) == balance[col], col
    assert report["reconciled"] is True
    rows = {row["group"]: {c: row[c] for c in COLUMNS} for row in report["rows"]}
    assert rows == dict(scenario["expected"][group_by])


def test_known_figures(api: Any, scenario: dict[str, Any]) -> None:
    pid = scenario["pid"]
    by_seller = {r["group"]: r for r in api("finance").call("GET", f"/programs/{pid}/spend?group_by=seller")["rows"]}
    assert by_seller["s1"]["spent"] == 900 - 300 + 433 and by_seller["s1"]["reserved"] == 0
    assert by_seller["s2"]["reserved"] == 1500 and by_seller["s2"]["captured"] == 2000
    assert by_seller["s3"] == {"group": "s3", "funded": 0, "reserved": 0, "captured": 0, "recovered": 0, "spent": 0}
    last, this = scenario["months"]
    by_month = {r["group"]: r for r in api("finance").call("GET", f"/programs/{pid}/spend?group_by=month")["rows"]}
    assert set(by_month) == {last, this}
    assert by_month[last]["captured"] == 433 and by_month[last]["funded"] == 0


def _parse_csv(text: str) -> tuple[list[str], dict[str, list[str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], {r[0]: r[1:] for r in rows[1:]}


@pytest.mark.parametrize("group_by", GROUPS)
@pytest.mark.parametrize("how", ["format", "accept"])
def test_csv_report_totals_equal_the_balances(api: Any, scenario: dict[str, Any], group_by: str, how: str) -> None:
    pid = scenario["pid"]
    path = f"/programs/{pid}/spend?group_by={group_by}"
    if how == "format":
        status, body, headers = api("finance").request("GET", path + "&format=csv")
    else:
        status, body, headers = api("finance").request("GET", path, headers={"Accept": "text/csv"})
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    assert "attachment" in headers.get("Content-Disposition", "")
    header, rows = _parse_csv(body)
    assert header == [group_by, *COLUMNS, "currency"]
    total = rows.pop("TOTAL")
    assert total == [
        *(str(v) for v in (BALANCE.funded, BALANCE.reserved, BALANCE.captured, BALANCE.recovered, BALANCE.spent)),
        "CNY",
    ]
    expected = scenario["expected"][group_by]
    assert {g: [int(x) for x in r[:-1]] for g, r in rows.items()} == {
        g: [v[c] for c in COLUMNS] for g, v in expected.items()
    }


def test_format_json_wins_over_an_accept_header(api: Any, scenario: dict[str, Any]) -> None:
    status, body, _ = api("finance").request(
        "GET", f"/programs/{scenario['pid']}/spend?format=json", headers={"Accept": "text/csv"}
    )
    assert status == 200 and isinstance(body, dict)


def test_reconciliation_endpoint(api: Any, scenario: dict[str, Any]) -> None:
    body = api("finance").call("GET", f"/programs/{scenario['pid']}/reconciliation")
    assert body["reconciled"] is True and body["invariant_holds"] is True
    assert body["drift"] == dict.fromkeys(("funded", "available", "reserved", "captured", "recovered"), 0)
    assert body["stored"] == body["recomputed"] == {**BALANCE.__dict__, "spent": BALANCE.spent}
    assert body["journal_entries"] == 12 and body["unbalanced_entries"] == []


@pytest.mark.parametrize(
    ("query", "field"),
    [("group_by=bogus", "group_by"), ("format=xml", "format"), ("colour=red", "colour")],
)
def test_bad_report_queries_are_400s_naming_the_field(
    api: Any, scenario: dict[str, Any], query: str, field: str
) -> None:
    status, body, _ = api("finance").request("GET", f"/programs/{scenario['pid']}/spend?{query}")
    assert status == 400
    assert body["error"]["code"] == "invalid_input" and body["error"]["details"] == [{"field": field}]


def test_report_access_and_unknown_programme(api: Any, scenario: dict[str, Any]) -> None:
    pid = scenario["pid"]
    for path in (f"/programs/{pid}/spend", f"/programs/{pid}/reconciliation"):
        assert api(None).request("GET", path)[0] == 401
        assert api("lab", lab_id="lab-1").request("GET", path)[0] == 403
        assert api("enforcement").request("GET", path)[0] == 403
        assert api("program_manager").request("GET", path)[0] == 200
    for path in ("/programs/prg-nope/spend", "/programs/prg-nope/reconciliation"):
        status, body, _ = api("finance").request("GET", path)
        assert status == 404 and body["error"]["code"] == "not_found"


@pytest.mark.parametrize("amount", [0, -1, 2**53 + 1, 2**63, 2**64, 10**15 + 1, "100", 1.5, True, None])
def test_bad_funding_is_refused_and_changes_nothing(api: Any, deps: Deps, amount: Any) -> None:
    pid = create_programme(api)
    fin = api("finance")
    fin.call("POST", f"/programs/{pid}/funding", {"amount": 1000, "currency": "CNY", "reference": "ok"})
    status, body, _ = fin.request(
        "POST", f"/programs/{pid}/funding", {"amount": amount, "currency": "CNY", "reference": "bad"}
    )
    assert status == 400, body
    assert body["error"]["code"] == "invalid_input"
    assert any(d["field"] == "amount" for d in body["error"]["details"])
    assert deps.ledger.balance(pid) == Balance(funded=1000, available=1000)
    assert len(deps.ledger.journal(pid)) == 1


def test_funding_conflicts_and_currency(api: Any, deps: Deps) -> None:
    pid = create_programme(api)
    fin = api("finance")
    url = f"/programs/{pid}/funding"
    first = fin.call("POST", url, {"amount": 1000, "currency": "CNY", "reference": "t-1"})
    assert fin.call("POST", url, {"amount": 1000, "currency": "CNY", "reference": "t-1"}) == first
    status, body, _ = fin.request("POST", url, {"amount": 999, "currency": "CNY", "reference": "t-1"})
    assert status == 409 and body["error"]["code"] == "idempotency_conflict"
    status, body, _ = fin.request("POST", url, {"amount": 10, "currency": "USD", "reference": "t-2"})
    assert status == 400 and body["error"]["code"] == "currency_mismatch"
    assert body["error"]["details"] == [{"field": "currency", "expected": "CNY", "given": "USD"}]
    status, body, _ = fin.request(
        "POST", "/programs/prg-nope/funding", {"amount": 1, "currency": "CNY", "reference": "x"}
    )
    assert status == 404
    assert deps.ledger.balance(pid) == Balance(funded=1000, available=1000)


def test_cli_spend_prints_the_same_report(stack_info: Any, token_for: Any, scenario: dict[str, Any]) -> None:
    from typer.testing import CliRunner

    from testbuy.cli import app

    pid = scenario["pid"]
    base = ["spend", pid, "--api-url", stack_info.api_url, "--token", token_for("finance")]
    out = CliRunner().invoke(app, [*base, "--group-by", "category"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["totals"]["spent"] == BALANCE.spent and report["reconciled"] is True
    out = CliRunner().invoke(app, [*base, "--group-by", "seller", "--format", "csv"])
    assert out.exit_code == 0, out.output
    _, rows = _parse_csv(out.stdout)
    assert rows["TOTAL"][4] == str(BALANCE.spent)
    assert (
        CliRunner()
        .invoke(app, ["spend", "prg-nope", "--api-url", stack_info.api_url, "--token", token_for("finance")])
        .exit_code
        == 3  # the CLI's documented exit code for "not found"
    )
