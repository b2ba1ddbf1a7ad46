"""`testbuy serve` flags (fast, no stack): each simulator can be turned off, the marketplace pointed elsewhere, bad
values refused; the banner is plain lines; its signing recipe, run in a shell, signs exactly as the API verifies."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chalicelib.api.auth import sign_webhook
from testbuy import cli
from testbuy.localstack import StackInfo
from testbuy.serve import UNSET_MARKETPLACE, ServeOptions, banner, marketplace_url, simulators

INFO = StackInfo(api_url="http://127.0.0.1:5000", endpoint_url="http://127.0.0.1:5001", bus_name="bus", env={})


def _parsed(monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, ServeOptions | None, str]:
    seen: list[ServeOptions] = []
    monkeypatch.setattr("testbuy.serve.run_serve", lambda opts: seen.append(opts))
    result = CliRunner().invoke(cli.app, ["serve", *args])
    return result.exit_code, (seen[0] if seen else None), result.output


def test_by_default_both_simulators_run(monkeypatch: pytest.MonkeyPatch) -> None:
    code, opts, _ = _parsed(monkeypatch)
    assert code == 0 and opts is not None
    sims = simulators(opts)
    assert sims.options.marketplace and sims.options.labs == ("lab-east", "lab-west")
    assert sims.options.accept_unknown_sellers
    assert marketplace_url(opts, sims) == sims.marketplace_url != UNSET_MARKETPLACE


def test_no_labs_and_no_marketplace(monkeypatch: pytest.MonkeyPatch) -> None:
    code, opts, _ = _parsed(monkeypatch, "--no-labs", "--no-marketplace")
    assert code == 0 and opts is not None
    sims = simulators(opts)
    assert sims.options.labs == () and not sims.options.marketplace and sims.marketplace_url is None
    assert marketplace_url(opts, sims) == UNSET_MARKETPLACE
    text = "\n".join(banner(opts, INFO, Path("/tmp/x/local.json"), UNSET_MARKETPLACE, None))
    assert "--no-labs" in text and "--no-marketplace" in text


def test_marketplace_url_replaces_the_simulator_and_labs_are_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    code, opts, _ = _parsed(monkeypatch, "--marketplace-url", "https://market.example/api", "--lab", "lab-x")
    assert code == 0 and opts is not None
    sims = simulators(opts)
    assert not sims.options.marketplace and sims.options.labs == ("lab-x",)
    assert marketplace_url(opts, sims) == "https://market.example/api"


def test_a_bad_marketplace_url_is_refused_naming_the_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    code, opts, output = _parsed(monkeypatch, "--marketplace-url", "ftp://market")
    assert code == 2 and opts is None
    assert "--marketplace-url" in output


def test_banner_is_plain_lines_naming_the_secret_and_the_token() -> None:
    lines = banner(ServeOptions(), INFO, Path("/tmp/x/local.json"), "http://127.0.0.1:9999", Path("/tmp/x/s.jsonl"))
    text = "\n".join(lines)
    assert "API URL: http://127.0.0.1:5000" in lines
    assert "/tmp/x/local.json" in text and "webhook_secret" in text and "testbuy token --role" in text
    assert "/tmp/x/s.jsonl" in text and "webhook-signature" in text
    assert not any("[" in line and "[/" in line for line in lines)  # no rich markup


def test_the_printed_signing_recipe_signs_as_the_api_verifies(tmp_path: Path) -> None:
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    (tmp_path / "state").mkdir()
    (tmp_path / "state/local.json").write_text(json.dumps({"webhook_secret": secret}))
    body = b'{"order_id": "ord-1", "status": "delivered"}\n'
    (tmp_path / "body.json").write_bytes(body)
    lines = banner(ServeOptions(), INFO, tmp_path / "state/local.json", "m", None)
    start = lines.index("  In a shell (body in body.json):") + 1
    recipe = [line.strip() for line in lines[start : start + 4]]
    script = "\n".join([*recipe, "ID=msg_fixed; TS=1700000000", *recipe[2:], 'echo "v1,$SIG"'])
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)  # noqa: S603, S607
    expected: dict[str, Any] = sign_webhook(secret, body, "msg_fixed", 1700000000)
    assert out.stdout.strip() == expected["webhook-signature"]


def test_demo_json_flag_reaches_the_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, bool]] = []

    def fake(cfg: Any, console: Any, *, as_json: bool) -> tuple[dict[str, Any], int]:
        seen.append((cfg, as_json))
        return {}, 0

    monkeypatch.setattr("testbuy.demo.run_demo", fake)
    result = CliRunner().invoke(cli.app, ["demo", "--json", "--seed", "9", "--rounds", "1"])
    assert result.exit_code == 0 and seen[0][1] is True and seen[0][0].seed == 9 and seen[0][0].rounds == 1
    assert CliRunner().invoke(cli.app, ["demo", "--seed", "-1"]).exit_code == 2  # a seed is >= 0 (the round's rule)
