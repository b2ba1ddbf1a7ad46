"""Schemathesis against the committed docs/openapi.json on the running local API, once per role.

Bounded (examples per operation and seconds per role, fixed seed) so that ``make test`` stays within about three
minutes for all roles; a seeded representative run, not an exhaustive one (``SCHEMATHESIS_MAX_TIME`` and
``SCHEMATHESIS_EXAMPLES`` raise the bounds for a longer campaign). Checks, all phases (coverage, fuzzing, stateful):

- ``not_a_server_error``: 0 answers with status 5xx;
- ``response_schema_conformance``: 0 answers that break their declared schema (status, body);
- ``documented_positive_acceptance`` (tests/e2e/schemathesis_hooks.py): 0 schema-valid requests refused, except
  by a rule the document states (``x-constraints``, ``x-refusals``) with a 400 naming its field;
- ``negative_data_rejection``: schema-invalid requests are refused.

Each run's figures go to ``.testbuy/schemathesis-<role>.json`` (schemathesis' JSON report) and one summary line per
role is printed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chalicelib.api.auth import Role, issue_token

ROOT = Path(__file__).resolve().parents[2]
CHECKS = "not_a_server_error,response_schema_conformance,documented_positive_acceptance,negative_data_rejection"
MAX_TIME = int(os.environ.get("SCHEMATHESIS_MAX_TIME", "22"))
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "8"))
ROLES = ["program_manager", "finance", "enforcement", "lab", "admin", "marketplace"]


def run_schemathesis(api_url: str, token: str, report: Path, seed: int) -> dict[str, Any]:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    cmd = [
        str(schemathesis),
        "run",
        str(ROOT / "docs" / "openapi.json"),
        "--url",
        api_url,
        "-H",
        f"Authorization: Bearer {token}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(EXAMPLES),
        "--max-time",
        str(MAX_TIME),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--no-shrink",
        "--request-timeout",
        "30",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=MAX_TIME + 120)
    if not report.exists():
        raise AssertionError(f"schemathesis did not run:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(report.read_text())
    result["_output"] = done.stdout
    return result


def figures(role: str, result: dict[str, Any]) -> dict[str, Any]:
    by_code = {f["code"]: int(f["count"]) for f in result.get("failures", [])}
    return {
        "role": role,
        "operations": result["operations"]["tested"],
        "requests": result["test_cases"]["generated"],
        "server_errors_5xx": by_code.get("ST101", 0),
        "schema_violations": sum(n for code, n in by_code.items() if code.startswith("ST1") and code != "ST101"),
        "valid_refused": by_code.get("ST202", 0) + by_code.get("ST990", 0),
        "failures": by_code,
        "errors": len(result.get("errors", [])),
        "seconds": round(float(result["running_time"]), 1),
    }


@pytest.mark.parametrize("role", ROLES)
def test_the_api_keeps_its_document_for_every_role(stack_info: Any, role: str) -> None:
    token = issue_token(stack_info.token_secret, Role(role), f"schemathesis-{role}", "lab-1" if role == "lab" else None)
    report = ROOT / ".testbuy" / f"schemathesis-{role}.json"
    report.parent.mkdir(exist_ok=True)
    report.unlink(missing_ok=True)
    result = run_schemathesis(stack_info.api_url, token, report, seed=8 + ROLES.index(role))
    summary = figures(role, result)
    print(json.dumps(summary))
    doc = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert summary["operations"] == sum(len(item) for item in doc["paths"].values())
    assert summary["requests"] > 0
    assert summary["errors"] == 0, result["_output"][-4000:]
    assert summary["failures"] == {}, result["_output"][-6000:]


def test_the_acceptance_check_tolerates_documented_rules_only() -> None:
    """The custom check can fail: only a 400 naming a field of a documented rule is tolerated."""
    sys.path.insert(0, str(ROOT))
    from tests.e2e.schemathesis_hooks import DOC, _covered

    programs, funding = DOC["paths"]["/programs"]["post"], DOC["paths"]["/programs/{program_id}/funding"]["post"]

    def err(code: str, *fields: str) -> dict[str, Any]:
        return {"error": {"code": code, "message": "m", "details": [{"field": f} for f in fields]}}

    assert _covered(programs, 400, err("invalid_input", "period_end"))
    assert not _covered(programs, 400, err("invalid_input", "name"))
    assert not _covered(programs, 400, err("invalid_input", "period_end", "name"))
    assert not _covered(programs, 400, err("invalid_input"))
    assert not _covered(programs, 422, err("invalid_input", "period_end"))
    assert _covered(programs, 400, err("invalid_input", "timeouts"))  # the sum of the waits (x-constraints)
    assert _covered(funding, 400, err("currency_mismatch", "currency"))
    assert _covered(funding, 400, err("invalid_input", "amount"))  # total funding cap (x-refusals)
    assert not _covered(programs, 400, err("currency_mismatch", "currency"))
    assert not _covered(funding, 400, err("invalid_input", "currency"))
