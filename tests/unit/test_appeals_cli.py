"""``testbuy appeals`` and ``testbuy lab appeals|appeal-verdict`` against a fake API server (no stack): the requests
they send, ``--json`` output plain on stdout, the appeal id on its own line, exit codes of a refusal."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.unit.test_cli import FakeApi, clean_config, run  # noqa: F401  # clean_config: an autouse fixture
from tests.unit.test_cli import fake_api as fake_api  # noqa: F401  # the fixture

APPEAL = {
    "appeal_id": "apl-0123456789abcdef01234567",
    "program_id": "prg-1",
    "order_id": "ord-1",
    "status": "filed",
    "original_verdict": "counterfeit",
    "retest_lab": "lab-2",
    "deadline": "2026-02-01T00:00:00Z",
}


def test_file_sends_the_filing_and_prints_the_id_plain(fake_api: FakeApi) -> None:
    fake_api.handler = lambda m, p, q, b: (201, {**APPEAL, **(b or {})})
    res = run(
        "appeals", "file", "ord-1", "--statement", "genuine", "--evidence", "ab" * 32,
        "--api-url", fake_api.url, "--token", "t",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    req = fake_api.requests[-1]
    assert (req["method"], req["path"]) == ("POST", "/appeals")
    assert req["body"] == {"order_id": "ord-1", "statement": "genuine", "evidence": ["ab" * 32]}
    assert res.output.splitlines()[-1] == APPEAL["appeal_id"]


def test_list_filters_by_status_and_json_is_plain(fake_api: FakeApi) -> None:
    body = {"program_id": "prg-1", "status": "filed", "appeals": [APPEAL]}
    fake_api.handler = lambda m, p, q, b: (200, body)
    res = run(
        "appeals", "list", "-p", "prg-1", "--status", "filed", "--json", "--api-url", fake_api.url, "--token", "t"
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert fake_api.requests[-1]["path"] == "/programs/prg-1/appeals"
    assert fake_api.requests[-1]["query"] == {"status": ["filed"]}
    assert json.loads(res.stdout) == body
    bad = run("appeals", "list", "-p", "prg-1", "--status", "nope", "--api-url", fake_api.url, "--token", "t")
    assert bad.exit_code == 2


def test_a_refused_filing_exits_2_and_names_the_error(fake_api: FakeApi) -> None:
    fake_api.handler = lambda m, p, q, b: (
        409,
        {"error": {"code": "conflict", "message": "already appealed", "details": [{"field": "order_id"}]}},
    )
    res = run("appeals", "file", "ord-1", "--statement", "x", "--api-url", fake_api.url, "--token", "t")
    assert res.exit_code == 2 and "already appealed" in res.output


def test_lab_appeal_verdict_posts_to_its_own_lab(fake_api: FakeApi, tmp_path: Path) -> None:
    verdict: dict[str, Any] = {"appeal_id": APPEAL["appeal_id"], "lab_id": "lab-2", "verdict": "authentic"}
    fake_api.handler = lambda m, p, q, b: (201, verdict)
    res = run(
        "lab", "appeal-verdict", APPEAL["appeal_id"], "--verdict", "authentic", "--lab-id", "lab-2",
        "--json", "--api-url", fake_api.url, "--token", "t",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    req = fake_api.requests[-1]
    assert req["path"] == f"/labs/lab-2/appeals/{APPEAL['appeal_id']}/verdict"
    assert req["body"] == {"verdict": "authentic", "notes": "", "evidence": []}
    assert json.loads(res.stdout) == verdict


def test_lab_appeal_verdict_uploads_its_report_to_the_appeal_and_sends_the_court_fields(
    fake_api: FakeApi, tmp_path: Path
) -> None:
    import hashlib

    report = tmp_path / "report.pdf"
    report.write_bytes(b"re-test report: genuine")
    digest = hashlib.sha256(report.read_bytes()).hexdigest()
    verdict: dict[str, Any] = {"appeal_id": APPEAL["appeal_id"], "lab_id": "lab-2", "verdict": "authentic"}

    def handler(m: str, p: str, q: Any, b: Any) -> tuple[int, Any]:
        return (201, {"sha256": digest, "bytes": 23}) if p.endswith("/evidence") else (201, verdict)

    fake_api.handler = handler
    res = run(
        "lab", "appeal-verdict", APPEAL["appeal_id"], "--verdict", "authentic", "--lab-id", "lab-2",
        "--method", "XRF", "--analyst", "a-1", "--accreditation", "ISO 17025 #9", "--confidence", "0.8",
        "--report", str(report), "--json", "--api-url", fake_api.url, "--token", "t",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    upload, post = fake_api.requests[-2:]
    assert upload["path"] == f"/labs/lab-2/appeals/{APPEAL['appeal_id']}/evidence"
    assert post["body"] == {
        "verdict": "authentic",
        "notes": "",
        "evidence": [],
        "method": "XRF",
        "analyst": "a-1",
        "accreditation": "ISO 17025 #9",
        "confidence": 0.8,
        "report_sha256": digest,
    }
