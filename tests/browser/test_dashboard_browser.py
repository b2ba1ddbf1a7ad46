"""The dashboard in headless Chromium (Debian's ``chromium`` package, driven by Playwright for Python) against the
local stack after the session's completed round (``completed_round``, tests/e2e/completed_round.py): the page loads
with no console error, each chart's numbers are the API's, a screenshot is saved (build/artifacts/dashboard.png;
copied to docs/dashboard.png for the README when that is missing or ``TESTBUY_UPDATE_SCREENSHOT`` is set), and
``testbuy report`` writes a file that draws with no server and no request.

Where no Chromium exists the tests fail and say how to install it; they are never skipped (a skipped test proves
nothing), and ``make test`` installs Debian's chromium first (``scripts/ensure-chromium.sh``).
Playwright's own browser download (``playwright install``) is never used: it fetches from a CDN.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chalicelib.api.auth import Role, issue_token
from testbuy.client import ApiClient
from tests.e2e.completed_round import Outcome

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("TESTBUY_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "build" / "artifacts"
VIEWPORT = {"width": 1440, "height": 900}  # a laptop screen
FEED = (("2026-08", 2_000_000, 620), ("2026-09", 2_100_000, 588), ("2026-10", 2_050_000, 451))


def _no_browser(why: str) -> None:
    """A missing browser fails the tests (never a skip): `make test` installs it (scripts/ensure-chromium.sh)."""
    pytest.fail(
        f"no headless browser: {why}; run `bash scripts/ensure-chromium.sh` (Debian's chromium) or set "
        "TESTBUY_CHROMIUM to a Chromium binary"
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        _no_browser(f"{CHROMIUM} does not exist")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the playwright package is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def program(completed_round: Outcome) -> str:
    """The completed round's programme, with a marketplace refund feed (read-only for the other tests)."""
    for period, orders, suspect in FEED:
        body = {"period": period, "orders": orders, "suspect_refunds": suspect}
        completed_round.pm.call("POST", f"/programs/{completed_round.pid}/marketplace-refunds", body)
    return completed_round.pid


def _figures(page: Any) -> dict[str, str]:
    return dict(page.eval_on_selector_all("[data-k]", "els => els.map(e => [e.dataset.k, e.dataset.v])"))


def _num(v: Any) -> str:
    """How data-v holds a JSON value (JavaScript's String(v); null as an empty string)."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return repr(v) if isinstance(v, float) else str(v)


def _money(v: int) -> str:
    return f"{'-' if v < 0 else ''}{abs(v) // 100:,}.{abs(v) % 100:02d} CNY"


def test_the_dashboard_shows_the_apis_numbers_with_no_console_error(
    browser: Any, program: str, completed_round: Outcome, stack_info: Any
) -> None:
    token = issue_token(stack_info.token_secret, Role.FINANCE, "finance@browser")
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    with page.expect_response(lambda r: r.url.endswith(f"/programs/{program}/dashboard")) as answer:
        page.goto(f"{stack_info.api_url}/dashboard#program={program}&token={token}")
    assert answer.value.status == 200
    data = answer.value.json()
    page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    assert problems == []
    assert "token=" not in page.url  # the token left the address bar

    # the answer the page drew is the API's: the figures that do not move with the clock, fetched again here
    fresh = ApiClient(stack_info.api_url, token).call("GET", f"/programs/{program}/dashboard")
    for key in ("balance", "estimates", "categories", "enforcement", "refund_rate", "labs", "policy_version"):
        assert data[key] == fresh[key], key
    assert data["reconciliation"]["reconciled"] is True
    metrics = completed_round.pm.call("GET", f"/programs/{program}/metrics")
    assert data["estimates"]["combined"]["prevalence"] == metrics["estimate"]["prevalence"]
    assert data["estimates"]["combined"]["hits"] == metrics["counterfeit_hits"]

    shown = _figures(page)
    expected: dict[str, Any] = {f"balance.{k}": v for k, v in data["balance"].items()}
    expected["forecast.projected_spent_at_end"] = data["forecast"]["projected_spent_at_end"]
    for row in data["estimates"]["rounds"]:
        for k in ("conclusive", "hits", "hit_rate", "prevalence", "ci_low", "ci_high", "method"):
            expected[f"round.{row['label']}.{k}"] = row[k]
    for k, v in data["estimates"]["combined"].items():
        if k not in ("label", "status", "started_at"):
            expected[f"combined.{k}"] = v
    for row in data["categories"]:
        for k in ("orders", "conclusive", "hits", "spent", "cost_per_hit"):
            expected[f"category.{row['category']}.{k}"] = row[k]
    expected["cost_per_hit"] = data["cost_per_hit"]
    for row in data["enforcement"]:
        expected[f"enforcement.{row['rule']}.{row['action']}"] = row["count"]
    for row in data["refund_rate"]["months"]:
        for k in ("orders", "suspect_refunds", "rate", "change_pp"):
            expected[f"refund.{row['period']}.{k}"] = row[k]
    expected["refund.overall"] = data["refund_rate"]["overall"]
    expected["refund.change_pp"] = data["refund_rate"]["change_pp"]
    for status, n in data["orders"]["by_status"].items():
        expected[f"status.{status}"] = n
    expected["orders.total"] = data["orders"]["total"]
    expected["orders.overdue_count"] = data["orders"]["overdue_count"]
    for row in data["labs"]:
        for k in ("samples", "median_hours", "p90_hours"):
            expected[f"lab.{row['lab_id']}.{k}"] = row[k]
    for part in ("stored", "recomputed", "drift"):
        for k, v in data["reconciliation"][part].items():
            if k != "spent":
                expected[f"recon.{part}.{k}"] = v
    expected["recon.journal_entries"] = data["reconciliation"]["journal_entries"]
    expected["recon.reconciled"] = data["reconciliation"]["reconciled"]
    missing = sorted(set(expected) - set(shown))
    assert missing == [], missing
    wrong = {k: (shown[k], _num(v)) for k, v in expected.items() if shown[k] != _num(v)}
    assert wrong == {}, wrong
    assert len(data["refund_rate"]["months"]) == len(FEED) and data["labs"] and data["categories"]

    # and as text a person reads: money in major units with the currency, the interval as percentages
    for k in ("funded", "spent", "available"):
        assert page.inner_text(f'[data-k="balance.{k}"]') == _money(data["balance"][k])
    combined = data["estimates"]["combined"]
    for k in ("prevalence", "ci_low", "ci_high", "hit_rate"):
        text = page.inner_text(f'[data-k="combined.{k}"]')
        assert text.endswith("%") and abs(float(text[:-1]) - combined[k] * 100) <= 0.005 + 1e-9, (k, text)
    # every chart drew an SVG
    for chart in ("budget", "estimate", "categories", "refunds", "orders", "labs"):
        assert page.locator(f"#c-{chart} svg").count() >= 1, chart

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    docs_copy = ROOT / "docs" / "dashboard.png"
    if os.environ.get("TESTBUY_UPDATE_SCREENSHOT") or not docs_copy.exists():  # a test run leaves the tree clean
        shutil.copyfile(shot, docs_copy)
    context.close()


def test_a_bad_token_gets_a_message_and_the_sign_in_form(browser: Any, program: str, stack_info: Any) -> None:
    page = browser.new_page()
    page.goto(f"{stack_info.api_url}/dashboard#program={program}&token=not-a-token")
    # a locator wait, not wait_for_function: a string predicate is eval'd in the page, which the dashboard's CSP
    # (no 'unsafe-eval') refuses whenever the first check is false and Playwright polls in the page
    page.locator("#status", has_text="401").wait_for(timeout=15_000)
    assert page.is_visible("#signin") and not page.is_visible("#main")
    page.close()


def test_the_report_opens_with_no_server_and_draws_the_same_numbers(
    browser: Any, program: str, stack_info: Any, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from testbuy.cli import app

    token = issue_token(stack_info.token_secret, Role.FINANCE, "finance@report")
    out = tmp_path / "report.html"
    env = {"TESTBUY_API_URL": stack_info.api_url, "TESTBUY_TOKEN": token}
    result = CliRunner().invoke(app, ["report", "--program", program, "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == str(out.resolve())  # the path alone on the last line
    context = browser.new_context(viewport=VIEWPORT)
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(out.resolve().as_uri())
    page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    assert errors == [] and requests == [out.resolve().as_uri()]  # nothing fetched but the file itself
    shown = _figures(page)
    recon = ApiClient(stack_info.api_url, token).call("GET", f"/programs/{program}/reconciliation")
    assert shown["recon.reconciled"] == "true"
    for k in ("funded", "captured", "recovered", "available"):
        assert shown[f"recon.stored.{k}"] == str(recon["stored"][k])
    metrics = ApiClient(stack_info.api_url, token).call("GET", f"/programs/{program}/metrics")
    assert shown["combined.prevalence"] == _num(metrics["estimate"]["prevalence"])
    assert shown["combined.method"] == metrics["estimate"]["method"]
    assert "enforcement policy" in page.inner_text("#meta")
    context.close()


def test_a_user_with_no_link_signs_in_by_the_form_and_a_hosted_ui_redirect_works_too(
    browser: Any, program: str, stack_info: Any
) -> None:
    token = issue_token(stack_info.token_secret, Role.PROGRAM_MANAGER, "pm@browser")
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(f"{stack_info.api_url}/dashboard")
    assert page.is_visible("#signin") and not page.is_visible("#main")
    page.fill("#f-program", program)
    page.fill("#f-token", token)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("body[data-ready=true]", timeout=15_000)
    assert not page.is_visible("#signin") and page.url.endswith(f"#program={program}")
    # what the Cognito hosted UI's implicit flow sends back: the token as #id_token=, among others
    page2 = context.new_page()
    page2.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page2.goto(f"{stack_info.api_url}/dashboard#id_token={token}&access_token=x&token_type=Bearer&program={program}")
    page2.wait_for_selector("body[data-ready=true]", timeout=15_000)
    assert "id_token" not in page2.url and "access_token" not in page2.url
    assert errors == []
    context.close()
