"""Court-grade verdicts and evidence packages over the real HTTP API of the local stack (issue 10 items 0 and 5).

The package test exports a real sample of the session's completed round (tests/e2e/completed_round.py: the simulated
labs uploaded a report and posted court-grade verdicts) with ``testbuy evidence export``, signed by the KMS key the
local stack created in moto's KMS, downloads it from the pre-signed S3 URL, and verifies it offline with
``testbuy evidence verify`` and the public key; then a changed byte is named."""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chalicelib.api.auth import Role, issue_token
from chalicelib.domain.models import OrderStatus
from tests import builders
from tests.e2e.completed_round import Outcome

TESTBUY = str(Path(sys.executable).parent / "testbuy")


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TESTBUY, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _order_at_lab(deps: Any, lab: str) -> str:
    now = datetime.now(UTC)
    oid = f"ord-court-{uuid.uuid4().hex[:12]}"
    deps.orders.put_orders(
        [
            builders.order(
                at=now,
                order_id=oid,
                program_id="prg-court",
                round_id="rnd-court",
                seller_id="s1",
                pi=0.5,
                amount=100,
                currency="USD",
                status=OrderStatus.AT_LAB,
                lab_id=lab,
            )
        ]
    )
    return oid


def test_a_court_grade_verdict_over_http(api: Any, deps: Any) -> None:
    oid = _order_at_lab(deps, "lab-court")
    lab = api("lab", "lab-court")
    body: dict[str, Any] = {
        "verdict": "counterfeit",
        "method": "XRF",
        "analyst": "analyst-7",
        "accreditation": "ISO/IEC 17025 cert 1234-01",
        "confidence": 0.9,
    }
    status, payload, _ = lab.request("POST", f"/samples/{oid}/verdict", body)
    assert status == 400 and [d["field"] for d in payload["error"]["details"]] == ["report_sha256"]
    status, payload, _ = lab.request("POST", f"/samples/{oid}/verdict", {**body, "report_sha256": "ab" * 32})
    assert status == 400 and payload["error"]["details"][0]["field"] == "report_sha256"
    report = b"XRF report " + uuid.uuid4().bytes
    upload = {"content_base64": base64.b64encode(report).decode(), "media_type": "application/pdf"}
    assert lab.request("POST", f"/samples/{oid}/evidence", upload)[0] == 201
    body["report_sha256"] = hashlib.sha256(report).hexdigest()
    status, first, _ = lab.request("POST", f"/samples/{oid}/verdict", body)
    assert status == 201 and {k: first[k] for k in body} == body
    status, again, _ = lab.request("POST", f"/samples/{oid}/verdict", body)
    assert (status, again) == (200, first)
    status, payload, _ = lab.request("POST", f"/samples/{oid}/verdict", {**body, "confidence": 0.6})
    assert status == 409 and [d["field"] for d in payload["error"]["details"]] == ["confidence"]


def test_a_real_sample_exports_and_verifies_offline_and_a_changed_byte_is_named(
    completed_round: Outcome, stack_info: Any, tmp_path: Path
) -> None:
    pm = completed_round.pm
    orders = pm.call("GET", f"/programs/{completed_round.pid}/rounds/{completed_round.rid}/orders")["orders"]
    decided = [o for o in orders if o.get("verdict") in ("counterfeit", "authentic")]
    assert decided, orders
    sample = next((o for o in decided if o["verdict"] == "counterfeit"), decided[0])
    token = issue_token(stack_info.token_secret, Role.ENFORCEMENT, "enf@e2e")
    conn = ["--api-url", stack_info.api_url, "--token", token]

    # a lab may not export (the package carries the recommendations)
    lab_token = issue_token(stack_info.token_secret, Role.LAB, "tech@x", sample["lab_id"])
    denied = cli("evidence", "export", "--order", sample["order_id"], "--api-url", stack_info.api_url,
                 "--token", lab_token, cwd=tmp_path)  # fmt: skip
    assert denied.returncode == 4, denied.stderr

    exported = cli("evidence", "export", "--order", sample["order_id"], "--out", "pkg.zip", *conn, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    path = tmp_path / exported.stdout.strip().splitlines()[-1]
    assert path == tmp_path / "pkg.zip" and path.exists()
    key = cli("evidence", "public-key", "--out", "key.pem", *conn, cwd=tmp_path)
    assert key.returncode == 0, key.stderr

    ok = cli("evidence", "verify", str(path), "--public-key", "key.pem", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "signature verifies under the trusted key arn:aws:kms:" in ok.stdout

    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    oid = sample["order_id"]
    verdict_path = f"samples/{oid}/verdict.json"
    assert {verdict_path, f"samples/{oid}/custody/chain.json", "policy.json"} <= set(files)
    assert any(n.startswith("evidence/") for n in files)  # the uploaded report and photo
    changed = bytearray(files[verdict_path])
    changed[10] ^= 0x20
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in {**files, verdict_path: bytes(changed)}.items():
            zf.writestr(name, content)
    (tmp_path / "bad.zip").write_bytes(buf.getvalue())
    bad = cli("evidence", "verify", "bad.zip", "--public-key", "key.pem", cwd=tmp_path)
    assert bad.returncode == 1 and f"changed: {verdict_path}" in bad.stderr, bad.stderr

    seller = cli("evidence", "export", "--seller", sample["seller_id"], "--program", completed_round.pid,
                 "--out", "seller.zip", *conn, cwd=tmp_path)  # fmt: skip
    assert seller.returncode == 0, seller.stderr
    assert cli("evidence", "verify", "seller.zip", "--public-key", "key.pem", cwd=tmp_path).returncode == 0
