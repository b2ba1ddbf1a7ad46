"""The README's walk-throughs, run as written (bash, the installed ``testbuy``, the real HTTP API of the local stack),
with the simulators ``make serve`` runs beside the stack (``testbuy.serve.simulators(ServeOptions())``: the seeded
marketplace whose 500 sellers ``testbuy sellers sample`` writes, and the labs ``lab-east`` and ``lab-west``).

- "Run a programme" with the CLI: ``sellers sample``, ``programs create``, ``programs fund``, ``sellers import``,
  ``rounds start``, ``rounds watch``, ``rounds orders``, ``rounds show``, ``metrics``; meanwhile ``events tail``
  (a subprocess) sees the round's ``RoundCompleted`` and then removes its queue and rule; then "For finance" on that
  programme: ``spend``, ``reconcile``, ``report``.
- The same with curl, where curl and jq are installed (they are not part of the project's requirements).
- "For labs", with the simulated lab stopped: queue, evidence, custody, verdict, custody again.

Each block must exit 0 (``bash -euo pipefail``); the effects are then checked through the API. 50 s here, up to about
100 s: three real rounds of about 10 orders each (the CLI one, the curl one and the lab one) wait for deliveries and
verdicts, and a lost parcel costs the 30 s delivery timeout the README sets."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from chalicelib.api.auth import Role, issue_token
from testbuy.client import ApiClient
from testbuy.commands.sellers import SAMPLE_SEED, SAMPLE_SELLERS
from testbuy.infra import ROOT
from testbuy.profiles import publish_state
from testbuy.serve import ServeOptions, simulators
from testbuy.sim.lab import LabSim
from testbuy.sim.runner import Simulators
from testbuy.sim.world import generate

LAB = "lab-east"
BLOCK_TIMEOUT_S = 240


def readme_block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- e2e: " + re.escape(name) + r"\b[^>]*-->\s*```bash\n(.*?)```", text, re.DOTALL)
    assert m, f"README has no block marked e2e: {name}"
    return m.group(1)


@dataclass
class Env:
    cwd: Path
    env: dict[str, str]
    sims: Simulators
    pm: ApiClient
    stack_info: Any

    def bash(self, script: str, tail: str = "") -> subprocess.CompletedProcess[str]:
        done = subprocess.run(  # noqa: S603 - our own script
            ["bash", "-xeuo", "pipefail", "-c", script + "\n" + tail],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=BLOCK_TIMEOUT_S,
        )
        assert done.returncode == 0, (
            f"exit {done.returncode}\nstdout:\n{done.stdout[-4000:]}\nstderr:\n{done.stderr[-4000:]}"
        )
        return done

    def lab(self) -> LabSim:
        assert self.sims.market is not None
        return LabSim(
            api_url=self.stack_info.api_url,
            lab_id=LAB,
            token=issue_token(self.stack_info.token_secret, Role.LAB, f"tech@{LAB}", LAB),
            truth=self.sims.market.item_truth,
            seed=5,
        )

    def wait_round(self, pid: str, rid: str, deadline_s: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + deadline_s
        while True:
            view: dict[str, Any] = self.pm.call("GET", f"/programs/{pid}/rounds/{rid}")
            if view["status"] in ("completed", "failed") or time.monotonic() > deadline:
                return view
            time.sleep(0.5)


@pytest.fixture(scope="module")
def env(local_stack: Any, stack_info: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    cwd = tmp_path_factory.mktemp("walkthrough")
    runtime = tmp_path_factory.mktemp("runtime")
    sims = simulators(ServeOptions())
    assert sims.marketplace_url is not None
    local_stack.set_marketplace_url(sims.marketplace_url)
    sims.start(stack_info)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("TESTBUY_", "AWS_"))}
    environment = {
        **clean,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + clean.get("PATH", ""),
        "TESTBUY_RUNTIME_DIR": str(runtime),
        "TESTBUY_CONFIG": str(cwd / "no-profiles.toml"),
        "COLUMNS": "100",
    }
    old = os.environ.get("TESTBUY_RUNTIME_DIR")
    os.environ["TESTBUY_RUNTIME_DIR"] = str(runtime)
    try:
        publish_state(
            "local",
            {
                "api_url": stack_info.api_url,
                "endpoint_url": stack_info.endpoint_url,
                "bus_name": stack_info.bus_name,
                "token_secret": stack_info.token_secret,
                "pid": os.getpid(),
            },
        )
    finally:
        if old is None:
            os.environ.pop("TESTBUY_RUNTIME_DIR")
        else:
            os.environ["TESTBUY_RUNTIME_DIR"] = old
    pm = ApiClient(stack_info.api_url, issue_token(stack_info.token_secret, Role.PROGRAM_MANAGER, "pm@walkthrough"))
    try:
        yield Env(cwd, environment, sims, pm, stack_info)
    finally:
        sims.stop()


def test_the_sample_sellers_are_those_make_serve_simulates() -> None:
    opts = ServeOptions()
    assert (opts.sellers, opts.seed) == (SAMPLE_SELLERS, SAMPLE_SEED)


def test_run_a_programme_with_the_cli_as_the_readme_shows(env: Env, local_stack: Any) -> None:
    testbuy = shutil.which("testbuy", path=env.env["PATH"])
    assert testbuy is not None
    tail = subprocess.Popen(  # noqa: S603
        [testbuy, "events", "tail", "--json", "--detail-type", "RoundCompleted", "--max", "1", "--for", "200"],
        cwd=env.cwd,
        env=env.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        assert "listening on" in tail.stderr.readline()
        done = env.bash(readme_block("cli-walkthrough"), 'printf "%s %s\\n" "$TESTBUY_PROGRAM" "$ROUND" > ids.txt')
        events_out, events_err = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
    pid, rid = (env.cwd / "ids.txt").read_text().split()
    view = env.pm.call("GET", f"/programs/{pid}/rounds/{rid}")
    assert view["status"] == "completed" and view["population"] == SAMPLE_SELLERS
    program = env.pm.call("GET", f"/programs/{pid}")
    assert program["balance"]["funded"] == 5_000_000 and program["balance"]["reserved"] == 0
    assert f"{SAMPLE_SELLERS} sellers imported" in done.stdout
    settled = env.pm.call("GET", f"/programs/{pid}/rounds/{rid}/orders?status=settled")["orders"]
    assert settled and all(o["order_id"] in done.stdout for o in settled)  # `rounds orders --status settled`
    assert f"round {rid}" in done.stdout and "estimated prevalence" in done.stdout
    assert env.sims.lab_errors == 0
    # the orders route pages by order id: pages of 2 give every order once, in order, with the counts of the round
    everything = env.pm.call("GET", f"/programs/{pid}/rounds/{rid}/orders")["orders"]
    paged: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = env.pm.call(
            "GET", f"/programs/{pid}/rounds/{rid}/orders?limit=2" + (f"&cursor={cursor}" if cursor else "")
        )
        paged += page["orders"]
        if page["next_cursor"] is None:
            break
        cursor = page["next_cursor"]
    assert paged == everything and [o["order_id"] for o in paged] == sorted(o["order_id"] for o in paged)
    assert len(everything) == sum(view["orders_by_status"].values())
    status, body, _ = env.pm.request("GET", f"/programs/prg-not-this-one/rounds/{rid}/orders")
    assert status == 404 and body["error"]["code"] == "not_found"
    # For finance: the spend report, the reconciliation and the HTML report of the same programme
    finance = env.bash(f"export TESTBUY_PROGRAM={pid}\n" + readme_block("finance-walkthrough"))
    spend_csv = (env.cwd / "spend.csv").read_text().splitlines()
    assert spend_csv[0].startswith("month,funded,") and len(spend_csv) >= 2
    assert json.loads(finance.stdout[: finance.stdout.rindex("}") + 1])["reconciled"] is True
    report = Path(finance.stdout.strip().splitlines()[-1])
    assert report.is_file() and report.name == f"report-{pid}.html" and pid in report.read_text()
    # events tail saw the round end, then removed what it created
    assert tail.returncode == 0, events_err
    event = json.loads(events_out.splitlines()[0])
    assert event["detail-type"] == "RoundCompleted" and event["detail"]["data"]["round_id"] == rid
    rules = local_stack.client("events").list_rules(EventBusName=env.stack_info.bus_name)["Rules"]
    assert not [r for r in rules if r["Name"].startswith("testbuy-tail-")]
    queues = local_stack.client("sqs").list_queues(QueueNamePrefix="testbuy-tail-").get("QueueUrls", [])
    assert queues == []


def test_the_curl_walkthrough_runs_where_curl_and_jq_are_installed(env: Env) -> None:
    """The curl block needs curl and jq, which the project does not install: without them this test checks that the
    block at least names only the routes of the OpenAPI document."""
    block = readme_block("curl-walkthrough")
    paths = json.loads((ROOT / "docs" / "openapi.json").read_text())["paths"]
    used = {re.sub(r"\$\w+", "{x}", p.split("?")[0]) for p in re.findall(r'"\$API(/[^"\s]*)"', block)}
    known = {re.sub(r"\{\w+\}", "{x}", p) for p in paths}
    assert used and used <= known, used - known
    if not (shutil.which("curl") and shutil.which("jq")):
        return
    done = env.bash(block, 'printf "%s %s\\n" "$PROGRAM" "$ROUND" > curl-ids.txt')
    pid, rid = (env.cwd / "curl-ids.txt").read_text().split()
    view = env.pm.call("GET", f"/programs/{pid}/rounds/{rid}")
    assert view["status"] == "completed" and view["population"] == SAMPLE_SELLERS
    assert '"prevalence"' in done.stdout


def test_a_lab_works_its_queue_by_hand_as_the_readme_shows(env: Env) -> None:
    env.sims.stop_labs()  # as with `make serve SERVE_ARGS=--no-labs`
    lab_token = issue_token(env.stack_info.token_secret, Role.LAB, f"tech@{LAB}", LAB)
    lab_api = ApiClient(env.stack_info.api_url, lab_token)
    pid = env.pm.call(
        "POST",
        "/programs",
        {
            "name": "lab walkthrough",
            "currency": "EUR",
            "budget": 2_000_000,
            "period_start": "2026-01-01T00:00:00Z",
            "period_end": "2036-01-01T00:00:00Z",
            "round_size": 5,
            "labs": [LAB],
            "timeouts": {"delivery_seconds": 30, "verdict_seconds": 60},
        },
    )["program_id"]
    env.pm.call("POST", f"/programs/{pid}/funding", {"amount": 2_000_000, "currency": "EUR", "reference": "w-1"})
    sellers = generate(SAMPLE_SELLERS, SAMPLE_SEED).import_payload()
    env.pm.call("POST", f"/programs/{pid}/sellers", {"sellers": sellers})
    rid = env.pm.call("POST", f"/programs/{pid}/rounds", {"seed": 11})["round_id"]
    deadline = time.monotonic() + 60
    while not [s for s in lab_api.call("GET", f"/labs/{LAB}/queue")["samples"] if s["order_id"]]:
        assert time.monotonic() < deadline, "no sample reached the lab"
        time.sleep(0.5)
    done = env.bash(readme_block("lab-walkthrough"), 'printf "%s\\n" "$ORDER" > order.txt')
    order_id = (env.cwd / "order.txt").read_text().strip()
    report = env.pm.call("GET", f"/samples/{order_id}/custody")
    assert report["valid"] is True
    assert any(e["to_party"] == "lab-east intake" and e["location"] == "bench 4" for e in report["entries"])
    assert "the chain verifies" in done.stdout
    lab = env.lab()  # the rest of the round's samples, so nothing is left waiting on the shared stack
    lab.start()
    try:
        view = env.wait_round(pid, rid)
    finally:
        lab.stop()
    assert view["status"] == "completed"
    mine = [
        o for o in env.pm.call("GET", f"/programs/{pid}/rounds/{rid}/orders")["orders"] if o["order_id"] == order_id
    ]
    assert mine and mine[0]["verdict"] == "counterfeit" and mine[0]["lab_id"] == LAB
