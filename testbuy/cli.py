"""The `testbuy` command line: demo, serve, token, package, schemas, openapi, spend."""

from __future__ import annotations

import json
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True, help="testbuy: marketplace test-buy programmes.")
console = Console()
LOCAL_STATE = Path(".testbuy/local.json")


@app.command()
def demo(
    sellers: int = typer.Option(2500, min=100, help="sellers in the simulated marketplace"),
    rounds: int = typer.Option(2, min=1, max=10),
    round_size: int = typer.Option(70, min=1, help="expected test buys per round"),
    seed: int = typer.Option(42, min=0, help="the same seed gives the same programme, sample and estimate"),
    out: Path = typer.Option(Path(".testbuy/demo-summary.json"), help="where the JSON summary goes"),
    as_json: bool = typer.Option(False, "--json", help="print the summary JSON on stdout (everything else: stderr)"),
) -> None:
    """Run a whole programme on the embedded local stack and print its summary (last line: the summary path)."""
    from testbuy.demo import DemoConfig, run_demo

    cfg = DemoConfig(sellers=sellers, rounds=rounds, round_size=round_size, seed=seed, out=out)
    _, code = run_demo(cfg, Console(stderr=True) if as_json else console, as_json=as_json)
    raise typer.Exit(code)


@app.command()
def serve(
    labs: bool = typer.Option(True, "--labs/--no-labs", help="simulated labs post verdicts (off: post them by hand)"),
    lab: list[str] = typer.Option(["lab-east", "lab-west"], "--lab", help="a simulated lab id (repeat the option)"),
    marketplace: bool = typer.Option(True, "--marketplace/--no-marketplace", help="the simulated marketplace"),
    marketplace_url: str | None = typer.Option(None, help="a real marketplace API (turns the simulated one off)"),
    seed: int = typer.Option(42, min=0, help="seeds the simulators' decisions"),
    state_dir: Path | None = typer.Option(None, help="where the state file goes (default: .testbuy)"),
) -> None:
    """Keep the local stack up with the simulated marketplace and labs (Ctrl-C to stop); prints how to use it."""
    from testbuy.serve import ServeOptions, run_serve

    try:
        opts = ServeOptions(
            labs=labs,
            lab_ids=tuple(lab),
            marketplace=marketplace,
            marketplace_url=marketplace_url,
            seed=seed,
            workdir=state_dir,
        )
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    run_serve(opts)


@app.command()
def token(
    role: str = typer.Option(..., help="program_manager, lab, finance, enforcement, marketplace or admin"),
    lab_id: str | None = typer.Option(None, help="required for role lab"),
    subject: str = typer.Option("cli-user"),
    ttl: int = typer.Option(86400, min=60),
) -> None:
    """Print a dev token for the running local stack (`testbuy serve`)."""
    from chalicelib.api.auth import Role, issue_token

    if not LOCAL_STATE.exists():
        console.print("[red]No local stack state found.[/] Start one with `testbuy serve` in this directory first.")
        raise typer.Exit(2)
    try:
        r = Role(role)
    except ValueError:
        console.print(f"[red]Unknown role {role}.[/] Use one of: {', '.join(x.value for x in Role)}")
        raise typer.Exit(2) from None
    if r is Role.LAB and not lab_id:
        console.print("[red]A lab token needs --lab-id.[/]")
        raise typer.Exit(2)
    secret = json.loads(LOCAL_STATE.read_text())["token_secret"]
    print(issue_token(secret, r, subject, lab_id, ttl))


@app.command()
def package(out: Path = typer.Option(Path("build/package"))) -> None:
    """Build the deployable CloudFormation template: `chalice package` merged with infra/."""
    from testbuy.packaging import build_package

    path = build_package(out, console)
    console.print(f"template: {path}")


@app.command()
def schemas(write: bool = typer.Option(False, help="rewrite schemas/events/*.json")) -> None:
    """Check (or write) the committed JSON Schemas of the events."""
    from testbuy.contracts import check_schemas

    problems = check_schemas(write)
    for p in problems:
        console.print(f"[red]{p}[/]")
    raise typer.Exit(1 if problems else 0)


@app.command()
def openapi(write: bool = typer.Option(False, help="rewrite docs/openapi.json")) -> None:
    """Check (or write) the committed OpenAPI document."""
    from testbuy.contracts import check_openapi

    problems = check_openapi(write)
    for p in problems:
        console.print(f"[red]{p}[/]")
    raise typer.Exit(1 if problems else 0)


def _get(api_url: str, token_value: str, path: str) -> Any:
    """GET from a running API; a non-200 answer is printed and ends the command with exit 1."""
    from testbuy.client import ApiClient

    status, body, _ = ApiClient(api_url, token_value).request("GET", path)
    if status != 200:
        console.print(f"[red]HTTP {status}[/]: {body}")
        raise typer.Exit(1)
    return body


@app.command()
def spend(
    program_id: str,
    api_url: str = typer.Option(..., envvar="TESTBUY_API_URL"),
    token_value: str = typer.Option(..., "--token", envvar="TESTBUY_TOKEN"),
    group_by: str = typer.Option("program"),
    fmt: str = typer.Option("json", "--format"),
) -> None:
    """Print a spend report (JSON or CSV) from a running API."""
    query = urllib.parse.urlencode({"group_by": group_by, "format": fmt})
    body = _get(api_url, token_value, f"/programs/{urllib.parse.quote(program_id, safe='')}/spend?{query}")
    sys.stdout.write(body if isinstance(body, str) else json.dumps(body, indent=2) + "\n")


@app.command()
def reconcile(
    program_id: str,
    api_url: str = typer.Option(..., envvar="TESTBUY_API_URL"),
    token_value: str = typer.Option(..., "--token", envvar="TESTBUY_TOKEN"),
) -> None:
    """Recompute every balance from the ledger journal and report drift (exit 1 unless it reconciles)."""
    body = _get(api_url, token_value, f"/programs/{urllib.parse.quote(program_id, safe='')}/reconciliation")
    sys.stdout.write(json.dumps(body, indent=2) + "\n")
    raise typer.Exit(0 if body.get("reconciled") else 1)


@app.command()
def report(
    program_id: str = typer.Option(..., "--program", help="the programme's id"),
    api_url: str = typer.Option(..., envvar="TESTBUY_API_URL"),
    token_value: str = typer.Option(..., "--token", envvar="TESTBUY_TOKEN"),
    out: Path | None = typer.Option(None, help="where the HTML file goes (default report-<program>.html)"),
) -> None:
    """Write one self-contained HTML report of a programme (opens with no server); prints its path."""
    from testbuy.report import write_report

    data = _get(api_url, token_value, f"/programs/{urllib.parse.quote(program_id, safe='')}/dashboard")
    print(write_report(data, out or Path(f"report-{program_id}.html")).resolve())


def main() -> None:
    app()
