"""The CLI over HTTP, against a fake API server on 127.0.0.1 (fast: no stack): configuration precedence, exit codes,
``--json`` output, the seller import (batching, rejected rows, resume), ``rounds watch`` and ``rounds orders``
paging, ``testbuy token`` from any directory; and the round-orders service on the in-memory fakes."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from chalicelib.domain.models import OrderStatus, Round, RoundStatus
from testbuy import profiles
from testbuy.cli import app
from tests import builders
from tests.fakes import world

Handler = Callable[[str, str, dict[str, list[str]], Any], tuple[int, Any]]


class FakeApi:
    """An HTTP server whose answers come from ``handler(method, path, query, body)``; it records every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.handler: Handler = lambda m, p, q, b: (404, {"error": {"code": "not_found", "message": p}})
        api = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                api.requests.append(
                    {
                        "method": self.command,
                        "path": url.path,
                        "query": query,
                        "body": body,
                        "auth": self.headers.get("Authorization"),
                    }
                )
                status, payload = api.handler(self.command, url.path, query, body)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(status)
                ctype = "text/csv" if isinstance(payload, str) else "application/json"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def fake_api() -> Iterator[FakeApi]:
    api = FakeApi()
    try:
        yield api
    finally:
        api.close()


@pytest.fixture(autouse=True)
def clean_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting of the developer's machine leaks in: empty runtime dir, no profile file, no TESTBUY_* variables,
    no project state file."""
    for var in list(os.environ):
        if var.startswith("TESTBUY_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("TESTBUY_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("TESTBUY_CONFIG", str(tmp_path / "profiles.toml"))
    monkeypatch.setattr(profiles, "project_state_paths", lambda: [])


runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


PROGRAM = {
    "program_id": "prg-1",
    "name": "a programme whose name is long enough to be wrapped by rich at eighty columns for sure, really long",
    "currency": "EUR",
    "budget": 500000,
    "period_start": "2026-01-01T00:00:00Z",
    "period_end": "2026-12-31T00:00:00Z",
    "round_size": 10,
    "labs": ["lab-1"],
    "status": "active",
    "balance": {"funded": 0, "available": 0, "reserved": 0, "captured": 0, "recovered": 0, "spent": 0},
}


# ----------------------------------------------------------------------------------------------- configuration
def write_profiles(tmp_path: Path, text: str) -> None:
    (tmp_path / "profiles.toml").write_text(text)


def local_state(tmp_path: Path, api_url: str, secret: str = "s" * 32, pid: int | None = None) -> None:
    profiles.publish_state("local", {"api_url": api_url, "token_secret": secret, "pid": pid or os.getpid()})


def test_precedence_flag_over_env_over_profile_over_local_stack(tmp_path: Path, monkeypatch: Any) -> None:
    local_state(tmp_path, "http://local:1")
    s = profiles.resolve(api_url=None, token=None, profile=None, role="program_manager")
    assert s.api_url == "http://local:1" and s.token_from == "minted for the local stack"
    write_profiles(
        tmp_path, '[default]\napi_url = "http://profile:1"\ntoken = "ptok"\n[prod]\napi_url = "http://p:2"\n'
    )
    s = profiles.resolve(api_url=None, token=None, profile=None, role="program_manager")
    assert (s.api_url, s.token, s.api_url_from) == ("http://profile:1", "ptok", "profile")
    monkeypatch.setenv("TESTBUY_API_URL", "http://env:1/")
    monkeypatch.setenv("TESTBUY_TOKEN", "etok")
    s = profiles.resolve(api_url=None, token=None, profile=None, role="program_manager")
    assert (s.api_url, s.token) == ("http://env:1", "etok")
    s = profiles.resolve(api_url="http://flag:1", token="ftok", profile=None, role="program_manager")
    assert (s.api_url, s.token, s.api_url_from, s.token_from) == ("http://flag:1", "ftok", "flag", "flag")
    monkeypatch.delenv("TESTBUY_API_URL")
    monkeypatch.delenv("TESTBUY_TOKEN")
    s = profiles.resolve(api_url=None, token=None, profile="prod", role="program_manager")
    assert (s.api_url, s.token) == ("http://p:2", None)  # a remote API never gets a locally minted token


def test_a_local_token_is_minted_with_the_commands_role(tmp_path: Path) -> None:
    local_state(tmp_path, "http://local:1", secret="x" * 32)
    s = profiles.resolve(api_url=None, token=None, profile=None, role="lab", lab_id="lab-7")
    assert s.token is not None
    from chalicelib.api.auth import verify_token

    who = verify_token("x" * 32, s.token)
    assert (who.role.value, who.lab_id) == ("lab", "lab-7")
    with pytest.raises(profiles.ConfigError, match="--lab-id"):
        profiles.resolve(api_url=None, token=None, profile=None, role="lab")


def test_a_stale_state_file_is_ignored(tmp_path: Path) -> None:
    dead = 2**22 + 12345  # above the default pid_max of 4194304
    local_state(tmp_path, "http://local:1", pid=dead)
    assert profiles.find_local_stack() is None
    result = run("programs", "show", "prg-1")
    assert result.exit_code == 2
    assert "no API configured" in result.stderr


def test_profile_errors_name_the_problem(tmp_path: Path) -> None:
    write_profiles(tmp_path, '[default]\napi_url = "http://x"\ntokn = "typo"\n')
    result = run("programs", "show", "prg-1", "--json")
    assert result.exit_code == 2
    assert "unknown keys ['tokn']" in json.loads(result.stderr)["error"]["message"]
    result = run("programs", "show", "prg-1", "--profile", "nope")
    assert result.exit_code == 2 and "no profile 'nope'" in result.stderr


def test_token_works_from_any_directory(tmp_path: Path, monkeypatch: Any) -> None:
    local_state(tmp_path, "http://local:1", secret="y" * 32)
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    result = run("token", "--role", "finance")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[-1]
    from chalicelib.api.auth import verify_token

    assert verify_token("y" * 32, token).role.value == "finance"


def test_token_without_a_stack_says_how_to_start_one(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("token", "--role", "finance")
    assert result.exit_code == 2
    assert "make serve" in result.stderr


def test_the_runtime_file_is_private_and_withdrawn_by_its_owner_only(tmp_path: Path) -> None:
    path = profiles.publish_state("local", {"api_url": "http://a", "token_secret": "z", "pid": os.getpid()})
    assert path is not None and (path.stat().st_mode & 0o777) == 0o600
    profiles.withdraw_state("local", pid=os.getpid() + 1)
    assert path.exists()
    profiles.withdraw_state("local", pid=os.getpid())
    assert not path.exists()


# ------------------------------------------------------------------------------------------- exit codes, --json
@pytest.mark.parametrize(
    ("status", "code"),
    [(400, 2), (409, 2), (404, 3), (401, 4), (403, 4), (500, 5), (503, 5)],
)
def test_http_errors_map_to_exit_codes_and_show_code_and_field(fake_api: FakeApi, status: int, code: int) -> None:
    fake_api.handler = lambda m, p, q, b: (
        status,
        {"error": {"code": f"code_{status}", "message": "refused", "details": [{"field": "amount", "message": "bad"}]}},
    )
    result = run(
        "programs",
        "fund",
        "prg-1",
        "--amount",
        "5",
        "--currency",
        "EUR",
        "--reference",
        "r1",
        "--api-url",
        fake_api.url,
        "--token",
        "t",
    )
    assert result.exit_code == code
    assert f"code_{status}" in result.stderr and "amount" in result.stderr
    as_json = run(
        "programs",
        "fund",
        "prg-1",
        "--amount",
        "5",
        "--currency",
        "EUR",
        "--reference",
        "r1",
        "--json",
        "--api-url",
        fake_api.url,
        "--token",
        "t",
    )
    err = json.loads(as_json.stderr)
    assert (as_json.exit_code, err["http_status"], err["exit_code"]) == (code, status, code)
    assert err["error"]["details"] == [{"field": "amount", "message": "bad"}]
    assert as_json.stdout == ""


def test_an_unreachable_api_is_exit_5(fake_api: FakeApi) -> None:
    url = fake_api.url
    fake_api.close()
    result = run("programs", "show", "prg-1", "--api-url", url, "--token", "t")
    assert result.exit_code == 5 and "cannot reach" in result.stderr


def test_no_token_for_a_remote_api_is_exit_4(fake_api: FakeApi) -> None:
    result = run("programs", "show", "prg-1", "--api-url", fake_api.url)
    assert result.exit_code == 4
    assert fake_api.requests == []


def test_json_output_is_the_answer_unwrapped(fake_api: FakeApi) -> None:
    fake_api.handler = lambda m, p, q, b: (200, PROGRAM)
    result = run(
        "programs", "show", "prg-1", "--json", "--api-url", fake_api.url, "--token", "tok", env={"COLUMNS": "40"}
    )
    assert result.exit_code == 0
    assert json.loads(result.stdout) == PROGRAM
    assert fake_api.requests[0]["path"] == "/programs/prg-1"
    assert fake_api.requests[0]["auth"] == "Bearer tok"


def test_programs_create_sends_the_period_and_prints_the_id(fake_api: FakeApi) -> None:
    fake_api.handler = lambda m, p, q, b: (201, {**PROGRAM, **b, "program_id": "prg-9"})
    result = run(
        "programs",
        "create",
        "--name",
        "n",
        "--currency",
        "EUR",
        "--budget",
        "1000",
        "--round-size",
        "5",
        "--start",
        "2026-02-01T00:00:00Z",
        "--days",
        "10",
        "--lab",
        "lab-a",
        "--delivery-seconds",
        "60",
        "-q",
        "--api-url",
        fake_api.url,
        "--token",
        "t",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == "prg-9\n"
    body = fake_api.requests[0]["body"]
    assert body["period_start"] == "2026-02-01T00:00:00+00:00" and body["period_end"] == "2026-02-11T00:00:00+00:00"
    assert body["labs"] == ["lab-a"] and body["timeouts"] == {"delivery_seconds": 60}
    assert "blend" not in body  # the server's default applies
    naive = run(
        "programs",
        "create",
        "--name",
        "n",
        "--currency",
        "EUR",
        "--budget",
        "1",
        "--round-size",
        "1",
        "--start",
        "2026-02-01T00:00:00",
        "--api-url",
        fake_api.url,
        "--token",
        "t",
    )
    assert naive.exit_code == 2 and "timezone" in naive.stderr


def test_reconcile_exit_code_says_whether_the_ledger_reconciles(fake_api: FakeApi) -> None:
    fake_api.handler = lambda m, p, q, b: (200, {"program_id": "prg-1", "reconciled": False})
    result = run("reconcile", "prg-1", "--api-url", fake_api.url, "--token", "t")
    assert result.exit_code == 1 and json.loads(result.stdout)["reconciled"] is False
    fake_api.handler = lambda m, p, q, b: (200, {"program_id": "prg-1", "reconciled": True})
    assert run("reconcile", "prg-1", "--api-url", fake_api.url, "--token", "t").exit_code == 0


def test_spend_csv_goes_out_as_the_api_wrote_it(fake_api: FakeApi) -> None:
    csv_text = "group,funded,reserved,captured,recovered,spent\nprg-1,10,0,0,0,0\n"
    fake_api.handler = lambda m, p, q, b: (200, csv_text)
    result = run("spend", "prg-1", "--format", "csv", "--group-by", "month", "--api-url", fake_api.url, "--token", "t")
    assert result.exit_code == 0 and result.stdout == csv_text
    assert fake_api.requests[0]["query"] == {"group_by": ["month"], "format": ["csv"]}


# ------------------------------------------------------------------------------------------------ seller import
def seller_line(i: int, **over: Any) -> str:
    row = {"seller_id": f"s-{i:05d}", "category": "bags", "expected_cost": 1000 + i, "risk": 0.05, **over}
    return json.dumps(row)


def importing_api(fake_api: FakeApi, refuse: Callable[[list[dict[str, Any]]], list[int]] | None = None) -> list[Any]:
    """The API's import route: all or nothing, refusing the rows ``refuse`` names; returns the accepted batches."""
    accepted: list[Any] = []

    def handle(m: str, p: str, q: Any, b: Any) -> tuple[int, Any]:
        bad = refuse(b["sellers"]) if refuse else []
        if bad:
            details = [{"field": f"sellers[{i}].signals", "message": "no risk"} for i in bad]
            return 400, {"error": {"code": "invalid_input", "message": "rejected", "details": details}}
        accepted.append([s["seller_id"] for s in b["sellers"]])
        return 200, {"imported": len(b["sellers"])}

    fake_api.handler = handle
    return accepted


def test_import_batches_to_the_api_limit_and_reports_bad_rows_by_line(fake_api: FakeApi, tmp_path: Path) -> None:
    lines = [seller_line(i) for i in range(1203)]
    lines[6] = seller_line(6, expected_cost=-5)  # line 7
    lines[9] = "{not json"  # line 10
    lines[12] = seller_line(3)  # line 13 repeats line 4's seller
    lines.insert(20, "")  # a blank line is skipped, the numbering still counts it
    f = tmp_path / "sellers.jsonl"
    f.write_text("\n".join(lines) + "\n")
    accepted = importing_api(fake_api)
    result = run("sellers", "import", str(f), "-p", "prg-1", "--json", "--api-url", fake_api.url, "--token", "t")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert [len(b) for b in accepted] == [500, 500, 200]
    assert report["imported"] == 1200 and report["batches"] == 3
    assert [(r["line"], r["field"]) for r in report["rejected"]] == [
        (7, "expected_cost"),
        (10, "(line)"),
        (13, "seller_id"),
    ]
    assert "line 4" in report["rejected"][2]["reason"]


def test_rows_the_api_refuses_are_reported_and_the_rest_of_the_batch_imported(
    fake_api: FakeApi, tmp_path: Path
) -> None:
    f = tmp_path / "sellers.jsonl"
    f.write_text("\n".join(seller_line(i) for i in range(10)) + "\n")
    accepted = importing_api(
        fake_api, refuse=lambda rows: [i for i, r in enumerate(rows) if r["seller_id"] == "s-00004"]
    )
    result = run(
        "sellers",
        "import",
        str(f),
        "-p",
        "prg-1",
        "--batch-size",
        "4",
        "--api-url",
        fake_api.url,
        "--token",
        "t",
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 1
    assert accepted == [
        ["s-00000", "s-00001", "s-00002", "s-00003"],
        ["s-00005", "s-00006", "s-00007"],
        ["s-00008", "s-00009"],
    ]
    assert "9 sellers imported" in result.stdout
    assert "5" in result.stdout and "refused by the API: no risk" in result.stdout  # line 5 holds s-00004


def test_resume_skips_the_batches_already_accepted(fake_api: FakeApi, tmp_path: Path) -> None:
    f = tmp_path / "sellers.jsonl"
    f.write_text("\n".join(seller_line(i) for i in range(10)) + "\n")
    calls = {"n": 0}

    def flaky(m: str, p: str, q: Any, b: Any) -> tuple[int, Any]:
        calls["n"] += 1
        if calls["n"] == 2:
            return 503, {"error": {"code": "unavailable", "message": "try later", "details": None}}
        return 200, {"imported": len(b["sellers"])}

    fake_api.handler = flaky
    args = ["sellers", "import", str(f), "-p", "prg-1", "--batch-size", "4", "--api-url", fake_api.url, "--token", "t"]
    first = run(*args)
    assert first.exit_code == 5
    state = json.loads((tmp_path / "sellers.jsonl.import-state.json").read_text())
    assert state["done"] == [0] and state["imported"] == 4
    fake_api.requests.clear()
    second = run(*args, "--resume", "--json")
    assert second.exit_code == 0, second.output
    sent = [[s["seller_id"] for s in r["body"]["sellers"]] for r in fake_api.requests]
    assert sent == [["s-00004", "s-00005", "s-00006", "s-00007"], ["s-00008", "s-00009"]]
    report = json.loads(second.stdout)
    assert (report["imported"], report["batches_skipped"], report["rejected"]) == (10, 1, [])
    f.write_text(f.read_text() + seller_line(10) + "\n")  # another file: resume starts over
    fake_api.requests.clear()
    third = run(*args, "--resume", "--json")
    assert third.exit_code == 0 and len(fake_api.requests) == 3


def test_csv_import_reads_what_sellers_sample_writes(fake_api: FakeApi, tmp_path: Path) -> None:
    from testbuy.commands.sellers import read_sellers
    from testbuy.sim.world import generate

    f = tmp_path / "sellers.csv"
    assert run("sellers", "sample", str(f), "--count", "60", "--seed", "3").exit_code == 0
    parsed = read_sellers(f)
    assert parsed.rejected == []
    assert [r.data for r in parsed.rows] == [
        {k: v for k, v in row.items() if v not in ([], None)}
        | {"signals": {k: v for k, v in row["signals"].items() if v is not None}}
        for row in generate(60, 3).import_payload()
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("seller_id,category,expected_cost,colour\ns1,bags,10,red\n")
    result = run("sellers", "import", str(bad), "-p", "prg-1", "--api-url", fake_api.url, "--token", "t")
    assert result.exit_code == 2 and "colour" in result.stderr and fake_api.requests == []
    typed = tmp_path / "typed.csv"
    typed.write_text("seller_id,category,expected_cost,identity_verified\ns1,bags,ten,true\ns2,bags,10,maybe\n")
    parsed = read_sellers(typed)
    assert [(r.line, r.field) for r in parsed.rejected] == [(2, "expected_cost"), (3, "identity_verified")]


# ------------------------------------------------------------------------------------------------------ rounds
def round_view(status: str, settled: int = 0) -> dict[str, Any]:
    return {"round_id": "rnd-1", "status": status, "sampled": 3, "settled": settled, "orders_by_status": {}}


@pytest.mark.parametrize(("final", "code"), [("completed", 0), ("failed", 1)])
def test_watch_exit_code_says_how_the_round_ended(fake_api: FakeApi, final: str, code: int) -> None:
    states = iter([round_view("started"), round_view("sampled", 1), round_view(final, 3)])
    fake_api.handler = lambda m, p, q, b: (200, next(states))
    result = run(
        "rounds",
        "watch",
        "rnd-1",
        "-p",
        "prg-1",
        "--interval",
        "0.1",
        "--json",
        "--api-url",
        fake_api.url,
        "--token",
        "t",
    )
    assert result.exit_code == code
    assert json.loads(result.stdout)["status"] == final
    assert len(fake_api.requests) == 3


def test_watch_times_out_with_exit_6(fake_api: FakeApi) -> None:
    fake_api.handler = lambda m, p, q, b: (200, round_view("sampled"))
    result = run(
        "rounds",
        "watch",
        "rnd-1",
        "-p",
        "prg-1",
        "--interval",
        "0.1",
        "--timeout",
        "0.5",
        "--api-url",
        fake_api.url,
        "--token",
        "t",
    )
    assert result.exit_code == 6
    assert "still sampled" in result.stderr


def test_rounds_orders_follows_the_cursor_and_passes_the_status(fake_api: FakeApi) -> None:
    def page(m: str, p: str, q: Any, b: Any) -> tuple[int, Any]:
        after = q.get("cursor", [None])[0]
        ids = ["o1", "o2", "o3"]
        start = ids.index(after) + 1 if after else 0
        chunk = ids[start : start + 2]
        orders = [{"order_id": i, "status": q["status"][0]} for i in chunk]
        nxt = chunk[-1] if start + 2 < len(ids) else None
        return 200, {
            "program_id": "prg-1",
            "round_id": "rnd-1",
            "status": "settled",
            "orders": orders,
            "next_cursor": nxt,
        }

    fake_api.handler = page
    result = run(
        "rounds",
        "orders",
        "rnd-1",
        "-p",
        "prg-1",
        "--status",
        "settled",
        "--json",
        "--api-url",
        fake_api.url,
        "--token",
        "t",
    )
    assert result.exit_code == 0
    assert [o["order_id"] for o in json.loads(result.stdout)["orders"]] == ["o1", "o2", "o3"]
    assert [r["path"] for r in fake_api.requests] == ["/programs/prg-1/rounds/rnd-1/orders"] * 2
    assert fake_api.requests[1]["query"]["cursor"] == ["o2"]


def test_the_program_comes_from_the_environment(fake_api: FakeApi) -> None:
    fake_api.handler = lambda m, p, q, b: (202, {"round_id": "rnd-7", "seed": 1, "budget": 5})
    result = run("rounds", "start", "-q", "--api-url", fake_api.url, "--token", "t", env={"TESTBUY_PROGRAM": "prg-e"})
    assert result.exit_code == 0 and result.stdout == "rnd-7\n"
    assert fake_api.requests[0]["path"] == "/programs/prg-e/rounds" and fake_api.requests[0]["body"] == {}


# ------------------------------------------------------------------------------------------------------ the route
def test_round_orders_service_filters_by_status_and_pages_by_order_id() -> None:
    from chalicelib.domain.errors import NotFound
    from chalicelib.services.rounds import round_orders

    w = world()
    now = datetime.now(UTC)
    w.rounds.put_round(
        Round(
            program_id="prg-test",
            round_id="rnd-test",
            status=RoundStatus.SAMPLED,
            seed=1,
            budget=10,
            started_at=now,
            execution_name="x",
        )
    )
    statuses = [OrderStatus.SETTLED, OrderStatus.AT_LAB, OrderStatus.SETTLED, OrderStatus.FAILED, OrderStatus.SETTLED]
    for i, st in enumerate(statuses):
        w.orders.put_orders([builders.order(order_id=f"ord-{4 - i}", status=st, seller_id=f"s{i}")])
    page = round_orders(w.deps, "prg-test", "rnd-test", status="settled", limit=2)
    assert [o["order_id"] for o in page["orders"]] == ["ord-0", "ord-2"] and page["next_cursor"] == "ord-2"
    rest = round_orders(w.deps, "prg-test", "rnd-test", status="settled", cursor="ord-2", limit=2)
    assert [o["order_id"] for o in rest["orders"]] == ["ord-4"] and rest["next_cursor"] is None
    everything = round_orders(w.deps, "prg-test", "rnd-test")
    assert [o["status"] for o in everything["orders"]] == ["settled", "failed", "settled", "at_lab", "settled"]
    assert "persona_id" not in everything["orders"][0]
    with pytest.raises(NotFound):
        round_orders(w.deps, "prg-other", "rnd-test")


def test_funding_needs_a_reference_and_takes_the_programmes_currency(fake_api: FakeApi) -> None:
    base = ["programs", "fund", "prg-1", "--amount", "700", "--api-url", fake_api.url, "--token", "t"]
    missing = run(*base)
    assert missing.exit_code == 2 and "--reference" in missing.output and fake_api.requests == []

    def answer(m: str, p: str, q: Any, b: Any) -> tuple[int, Any]:
        return (200, PROGRAM) if m == "GET" else (200, {"program_id": "prg-1", "balance": PROGRAM["balance"]})

    fake_api.handler = answer
    assert run(*base, "--reference", "fin-7").exit_code == 0
    assert fake_api.requests[-1]["body"] == {"amount": 700, "currency": "EUR", "reference": "fin-7"}


# -------------------------------------------------------------------------------------------------------- labs
def test_lab_commands_send_what_the_routes_take(fake_api: FakeApi, tmp_path: Path) -> None:
    import hashlib

    photo = tmp_path / "label.jpg"
    photo.write_bytes(b"a photo")
    sha = hashlib.sha256(b"a photo").hexdigest()

    def answer(m: str, p: str, q: Any, b: Any) -> tuple[int, Any]:
        if p.endswith("/queue"):
            return 200, {"lab_id": "lab-1", "samples": [{"order_id": f"o{i}"} for i in range(3)]}
        if p.endswith("/evidence"):
            return 201, {"sha256": sha, "bytes": 7, "media_type": b["media_type"]}
        if p.endswith("/verdict"):
            return 201, {**b, "order_id": "o1", "recorded_at": "2026-01-01T00:00:00Z"}
        return 404, {"error": {"code": "not_found", "message": "no sample o1 for this lab", "details": None}}

    fake_api.handler = answer
    conn = ["--api-url", fake_api.url, "--token", "t"]
    queue = run("lab", "queue", "--lab-id", "lab-1", "-q", "--limit", "2", *conn)
    assert (queue.exit_code, queue.stdout) == (0, "o0\no1\n")
    assert fake_api.requests[-1]["path"] == "/labs/lab-1/queue"
    evidence = run("lab", "evidence", "o1", str(photo), *conn)
    assert (evidence.exit_code, evidence.stdout) == (0, sha + "\n")
    assert fake_api.requests[-1]["body"]["media_type"] == "image/jpeg"
    verdict = run("lab", "verdict", "o1", "--verdict", "counterfeit", "--evidence", sha, *conn)
    assert verdict.exit_code == 0
    assert fake_api.requests[-1]["body"] == {"verdict": "counterfeit", "notes": "", "evidence": [sha]}
    before = len(fake_api.requests)
    partial = run("lab", "custody", "o1", "--from", "courier", "--to", "lab", *conn)
    assert partial.exit_code == 2 and "--location" in partial.stderr and len(fake_api.requests) == before
    other_lab = run("lab", "custody", "o1", *conn)
    assert other_lab.exit_code == 3 and "no sample o1" in other_lab.stderr


# ------------------------------------------------------------------------------------------------- events tail
class FakeSqs:
    def __init__(self, bodies: list[str]) -> None:
        self.bodies = bodies
        self.deleted: list[str] = []
        self.queues: set[str] = set()
        self.policy: dict[str, Any] = {}

    def create_queue(self, QueueName: str) -> dict[str, str]:
        self.queues.add(QueueName)
        return {"QueueUrl": f"http://sqs/{QueueName}"}

    def get_queue_attributes(self, QueueUrl: str, AttributeNames: list[str]) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:r:1:" + QueueUrl.rsplit("/", 1)[1]}}

    def set_queue_attributes(self, QueueUrl: str, Attributes: dict[str, str]) -> None:
        self.policy = json.loads(Attributes["Policy"])

    def receive_message(self, **kw: Any) -> dict[str, Any]:
        batch, self.bodies = self.bodies[:10], self.bodies[10:]
        return {"Messages": [{"Body": b, "MessageId": f"m{i}", "ReceiptHandle": f"r{i}"} for i, b in enumerate(batch)]}

    def delete_message(self, QueueUrl: str, ReceiptHandle: str) -> None:
        self.deleted.append(ReceiptHandle)

    def delete_queue(self, QueueUrl: str) -> None:
        self.queues.discard(QueueUrl.rsplit("/", 1)[1])


class FakeEvents:
    def __init__(self, fail_delete: bool = False) -> None:
        self.rules: dict[str, Any] = {}
        self.targets: dict[str, Any] = {}
        self.fail_delete = fail_delete

    def put_rule(self, Name: str, EventBusName: str, EventPattern: str, State: str) -> dict[str, str]:
        self.rules[Name] = json.loads(EventPattern)
        return {"RuleArn": f"arn:aws:events:r:1:rule/{EventBusName}/{Name}"}

    def put_targets(self, Rule: str, EventBusName: str, Targets: list[dict[str, str]]) -> None:
        self.targets[Rule] = Targets

    def remove_targets(self, Rule: str, EventBusName: str, Ids: list[str]) -> None:
        self.targets.pop(Rule)

    def delete_rule(self, Name: str, EventBusName: str) -> None:
        if self.fail_delete:
            raise RuntimeError("AccessDenied")
        self.rules.pop(Name)


def envelope(event_id: str, detail_type: str = "RoundCompleted") -> str:
    return json.dumps({"detail-type": detail_type, "detail": {"metadata": {"event_id": event_id}, "data": {}}})


def test_tail_subscribes_dedupes_by_event_id_and_removes_what_it_created() -> None:
    from testbuy.commands.events import Tail, pattern

    sqs, events = FakeSqs([envelope("e1"), envelope("e2"), envelope("e1")]), FakeEvents()
    tail = Tail(events, sqs, "testbuy-local", pattern("RoundCompleted", "prg-1"))
    tail.open()
    assert events.rules[tail.name] == {
        "source": [{"prefix": "testbuy."}],
        "detail-type": ["RoundCompleted"],
        "detail": {"metadata": {"program_id": ["prg-1"]}},
    }
    statement = sqs.policy["Statement"][0]
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"].endswith(f"/{tail.name}")
    got = tail.poll()
    assert [e["detail"]["metadata"]["event_id"] for e in got] == ["e1", "e2"]
    assert sqs.deleted == ["r0", "r1", "r2"]  # the duplicate is deleted too, not redelivered
    assert tail.close() == []
    assert events.rules == {} and events.targets == {} and sqs.queues == set()


def test_tail_removes_its_queue_even_when_the_rule_cannot_be_removed() -> None:
    from testbuy.commands.events import Tail, pattern

    sqs, events = FakeSqs([]), FakeEvents(fail_delete=True)
    tail = Tail(events, sqs, "bus", pattern(None, None))
    tail.open()
    problems = tail.close()
    assert len(problems) == 1 and "AccessDenied" in problems[0] and tail.name in problems[0]
    assert sqs.queues == set()


def test_an_empty_seller_file_is_a_usage_error(fake_api: FakeApi, tmp_path: Path) -> None:
    f = tmp_path / "empty.jsonl"
    f.write_text("\n\n")
    result = run("sellers", "import", str(f), "-p", "prg-1", "--api-url", fake_api.url, "--token", "t")
    assert result.exit_code == 2 and "holds no sellers" in result.stderr and fake_api.requests == []


def test_token_json_names_the_stack(tmp_path: Path) -> None:
    local_state(tmp_path, "http://local:9", secret="q" * 32)
    result = run("token", "--role", "lab", "--lab-id", "lab-east", "--json")
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert (body["role"], body["lab_id"], body["api_url"]) == ("lab", "lab-east", "http://local:9")
    from chalicelib.api.auth import verify_token

    assert verify_token("q" * 32, body["token"]).lab_id == "lab-east"


def test_ctrl_c_during_an_import_keeps_its_progress(fake_api: FakeApi, tmp_path: Path, monkeypatch: Any) -> None:
    from testbuy.commands import sellers

    f = tmp_path / "sellers.jsonl"
    f.write_text("\n".join(seller_line(i) for i in range(10)) + "\n")
    importing_api(fake_api)
    real_send = sellers._send
    calls = {"n": 0}

    def interrupted_second_time(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_send(*args)

    monkeypatch.setattr(sellers, "_send", interrupted_second_time)
    result = run(
        "sellers", "import", str(f), "-p", "prg-1", "--batch-size", "4", "--api-url", fake_api.url, "--token", "t"
    )
    assert result.exit_code == 130 and "--resume" in result.stderr
    state = json.loads((tmp_path / "sellers.jsonl.import-state.json").read_text())
    assert state["done"] == [0] and state["imported"] == 4


def test_programs_create_sends_the_retest_attempts(fake_api: FakeApi) -> None:
    """Re-tests (issue 10 item 1): --max-lab-attempts becomes the programme's retest setting; absent, none is sent."""
    fake_api.handler = lambda m, p, q, b: (201, {**PROGRAM, **b, "program_id": "prg-9"})
    common = ["programs", "create", "--name", "n", "--currency", "EUR", "--budget", "1000", "--round-size", "5"]
    tail = ["-q", "--api-url", fake_api.url, "--token", "t"]
    assert run(*common, "--lab", "a", "--lab", "b", "--max-lab-attempts", "2", *tail).exit_code == 0
    assert fake_api.requests[0]["body"]["retest"] == {"max_lab_attempts": 2}
    assert run(*common, *tail).exit_code == 0
    assert "retest" not in fake_api.requests[1]["body"]
    # second unit (issue 10 item 1): --retest-mode is passed on as given (the API validates it)
    assert run(*common, "--lab", "a", "--lab", "b", "--retest-mode", "second_unit", *tail).exit_code == 0
    assert fake_api.requests[2]["body"]["retest"] == {"mode": "second_unit"}
