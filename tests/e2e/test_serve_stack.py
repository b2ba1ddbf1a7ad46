"""`testbuy serve` as a user runs it: a subprocess with the simulated marketplace and labs on (the default). The
test reads what the banner tells a user (API URL, state file, sellers file), makes tokens from the state file,
creates and funds a programme over HTTP, imports some of the simulated sellers and some of its own (unknown to the
simulator, which then draws their behaviour from their id), starts a round and sees every order reach its end with
verdicts posted by the simulated labs. About 30-40 s on an idle core."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from chalicelib.api.auth import Role, issue_token
from testbuy.client import ApiClient
from testbuy.infra import ROOT

TESTBUY = str(Path(sys.executable).parent / "testbuy")
BANNER_END = "Sign a delivery"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    # its own state directory: the session's shared stack keeps .testbuy/local.json
    state_dir = tmp_path_factory.mktemp("serve") / ".testbuy"
    proc = subprocess.Popen(  # noqa: S603 - our own console script
        [TESTBUY, "serve", "--seed", "5", "--state-dir", str(state_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    seen: dict[str, str] = {}
    deadline = time.monotonic() + 120
    try:
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            key, sep, value = line.partition(": ")
            if sep:
                seen[key] = value
            if line.startswith(BANNER_END):
                break
        yield seen
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_round_started_over_http_reaches_its_verdicts(served: dict[str, str]) -> None:
    api_url = served["API URL"]
    state = json.loads(Path(next(v for k, v in served.items() if k.startswith("State file"))).read_text())
    assert state["api_url"] == api_url and state["webhook_secret"].startswith("whsec_")
    token = issue_token(state["token_secret"], Role.PROGRAM_MANAGER, "pm@serve-e2e")
    finance = issue_token(state["token_secret"], Role.FINANCE, "finance@serve-e2e")
    pm, fin = ApiClient(api_url, token), ApiClient(api_url, finance)
    sellers_file = Path(served["Simulated sellers, ready to import (JSON lines)"])
    rows = [json.loads(line) for line in sellers_file.read_text().splitlines()]
    own = [
        {
            "seller_id": f"own-{i:03d}",
            "category": "sneakers",
            "expected_cost": 50_000,
            "signals": {},
            "linked_sellers": [],
        }
        for i in range(20)
    ]
    sellers = rows[:120] + own
    now = datetime.now(UTC)
    pid = pm.call(
        "POST",
        "/programs",
        {
            "name": "serve e2e",
            "currency": "CNY",
            "budget": 5_000_000,
            "period_start": (now - timedelta(days=1)).isoformat(),
            "period_end": (now + timedelta(days=30)).isoformat(),
            "round_size": 12,
            "exploration_share": 0.5,
            "labs": ["lab-east", "lab-west"],
            "timeouts": {"delivery_seconds": 15, "verdict_seconds": 120, "round_seconds": 300},
        },
    )["program_id"]
    fin.call("POST", f"/programs/{pid}/funding", {"amount": 5_000_000, "currency": "CNY", "reference": "e2e"})
    assert pm.call("POST", f"/programs/{pid}/sellers", {"sellers": sellers}) == {"imported": len(sellers)}
    rid = pm.call("POST", f"/programs/{pid}/rounds", {"seed": 11})["round_id"]
    deadline = time.monotonic() + 150
    while True:
        view = pm.call("GET", f"/programs/{pid}/rounds/{rid}")
        if view["status"] in ("completed", "failed"):
            break
        assert time.monotonic() < deadline, view
        time.sleep(0.5)
    assert view["status"] == "completed", view
    summary = view["summary"]
    assert summary["stuck"] == 0 and view["sampled"] >= 5
    assert summary["placed"] >= 5 and summary["verdicts"] >= 5, summary
    assert summary["verdicts"] == summary["delivered"]  # every delivered parcel got a verdict from a simulated lab
    assert set(view["orders_by_status"]) <= {"settled", "delivery_failed", "refused", "skipped_budget"}
    spend = fin.call("GET", f"/programs/{pid}/spend?group_by=seller")
    bought = {row["group"] for row in spend["rows"] if row["captured"] > 0}
    assert any(s.startswith("own-") for s in bought), bought  # the simulator sold from the user's own sellers too
