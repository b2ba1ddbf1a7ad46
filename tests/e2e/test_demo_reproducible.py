"""The demo is reproducible and honest without a terminal: a small programme (2 rounds of about a dozen orders) run
twice with the same seed but different timing -- the AWS half in a child process or in-process (different
concurrency), no order jitter or up to 2 s, marketplace deliveries 7x slower, labs examining their queue in a random
order with random pauses -- gives exactly the same sample, outcomes, verdicts, ledger and estimate, and the same
consequences (issue 10): re-tests, missed deadlines (a lab that never answers: its samples wait the 30 s verdict
timeout, then go to another lab), rings and ring bans, leads by stage, appeals overturned and upheld with their
rescinds, and a verified evidence package. Each run is a subprocess with no TTY: stdout is the summary JSON alone
(``--json`` mode), stderr ends with the summary path, the package's path just before it. About 2-3 minutes on an
idle core (each round waits for the never-answering lab's 30 s deadline)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from testbuy.infra import ROOT

BASE = {
    "sellers": 200,
    "rounds": 2,
    "round_size": 12,
    "seed": 7,
    "delivery_timeout_s": 12,
    "verdict_timeout_s": 30,  # the labs that answer do so in seconds; lab-north never does
    "progress_every_s": 1.0,
}
FAST = {"isolated": True, "max_jitter_s": 0, "seconds_per_day": 0.02}
SLOW = {
    "isolated": False,
    "max_jitter_s": 2,
    "seconds_per_day": 0.15,
    "lab_think_seconds": 0.3,
    "lab_shuffle_queue": True,
}
SCRIPT = """
import json, sys
from pathlib import Path
from testbuy.demo import DemoConfig, run_demo
cfg = json.loads(sys.argv[1])
cfg["out"] = Path(cfg["out"])
_, code = run_demo(DemoConfig(**cfg), as_json=True)
sys.exit(code)
"""


def _run(tmp_path: Path, name: str, timing: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    out = tmp_path / f"{name}.json"
    cfg = {**BASE, **timing, "out": str(out)}
    proc = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", SCRIPT, json.dumps(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # stdout is the summary JSON and nothing else
    assert json.loads(out.read_text()) == summary
    return summary, proc.stderr.splitlines()


def test_same_seed_same_programme_whatever_the_timing(tmp_path: Path) -> None:
    a, err_a = _run(tmp_path, "fast", FAST)
    b, err_b = _run(tmp_path, "slow", SLOW)
    # honest without a terminal: plain progress lines, and the path alone on the last line, unwrapped
    for err, name, summary in ((err_a, "fast", a), (err_b, "slow", b)):
        assert err[-1] == str((tmp_path / f"{name}.json").resolve())
        assert err[-3] == summary["evidence_package"]["path"]  # plain, on its own line, before the summary path
        assert any(line.startswith("round 2/2 completed:") for line in err)
        assert not any("\x1b[" in line for line in err)  # no live display, no escape codes
    assert a["sample"] and a["orders"]["verdicts"] >= 5, a["orders"]
    assert any(o["verdict"] == "counterfeit" for o in a["sample"]) or a["counterfeit_hits"] == 0
    assert a["sample"] == b["sample"]  # every order: seller, pi, status, lab, price, refund, verdict, failure
    assert a["program_id"] == b["program_id"]
    for key in ("orders", "ledger", "estimate", "counterfeit_hits", "hit_rate", "risk_model", "enforcement_actions"):
        assert a[key] == b[key], key
    assert a["orders"]["stuck"] == 0 and a["ledger"]["reconciled"]
    # from verdict to consequence: the same figures whatever the timing (the package's path and name too)
    for key in ("retest", "rings", "leads", "appeals", "evidence_package"):
        assert {k: v for k, v in a[key].items() if k not in ("path", "public_key")} == {
            k: v for k, v in b[key].items() if k not in ("path", "public_key")
        }, key
    assert a["retest"]["overdue_escalations"] > 0 and a["retest"]["retests_requested"] > 0
    assert a["rings"]["known_ring_found"] and a["rings"]["ring_bans"] > 0
    assert a["leads"]["funnel"]["leads"] > 0 and a["leads"]["funnel"]["cases"] > 0
    assert (a["appeals"]["filed"], a["appeals"]["overturned"], a["appeals"]["upheld"]) == (2, 1, 1)
    assert a["appeals"]["rescinds_received"] > 0
    assert a["evidence_package"]["verified"] == "yes"
    verify = subprocess.run(  # noqa: S603 - our own CLI: the package verifies offline with the public key
        [
            str(Path(sys.executable).parent / "testbuy"),
            "evidence",
            "verify",
            b["evidence_package"]["path"],
            "--public-key",
            b["evidence_package"]["public_key"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stderr
