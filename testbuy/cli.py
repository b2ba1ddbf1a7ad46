"""The `testbuy` command line: the local stack and the build (demo, serve, token, package, schemas, openapi) and,
over the HTTP API, a command group per role (programs, sellers, rounds, metrics, spend, reconcile, lab, events)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

EXIT_CODES = (
    "Exit codes: 0 done; 1 done but negative (rows rejected, round failed, ledger drift); 2 usage or refused by "
    "the API (400/409); 3 not found; 4 authentication or role; 5 API unavailable or failing; 6 timed out; "
    "130 interrupted."
)
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="testbuy: marketplace test-buy programmes.\n\n"
    "Configuration: --api-url/--token > $TESTBUY_API_URL/$TESTBUY_TOKEN > --profile in "
    "~/.config/testbuy/profiles.toml > a running local stack (`make serve`, a dev token is minted). "
    "--json prints JSON on stdout.\n\n" + EXIT_CODES,
)
console = Console()


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
    stage: str = typer.Option("local", help="the stack's stage (tests run stage test)"),
    as_json: bool = typer.Option(False, "--json", help='print {"token": ..., "api_url": ...} as JSON'),
) -> None:
    """Print a dev token for the running local stack (`testbuy serve`), from any directory."""
    from chalicelib.api.auth import Role, issue_token
    from testbuy.profiles import find_local_stack, runtime_state_path

    state = find_local_stack(stage)
    if state is None:
        err = Console(stderr=True)
        err.print(
            f"[red]No running local stack found[/] (looked in {runtime_state_path(stage)} and the project's "
            ".testbuy/local.json). Start one with `make serve` (or `testbuy serve`).",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    try:
        r = Role(role)
    except ValueError:
        console.print(f"[red]Unknown role {role}.[/] Use one of: {', '.join(x.value for x in Role)}")
        raise typer.Exit(2) from None
    if r is Role.LAB and not lab_id:
        console.print("[red]A lab token needs --lab-id.[/]")
        raise typer.Exit(2)
    value = issue_token(str(state["token_secret"]), r, subject, lab_id, ttl)
    if as_json:
        print(json.dumps({"token": value, "role": r.value, "lab_id": lab_id, "api_url": state["api_url"]}))
    else:
        print(value)


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


# Commands over the HTTP API, one group per role (testbuy/commands/); exit codes: testbuy/commands/common.py.
from testbuy.commands import appeals as _appeals  # noqa: E402  # appeals (issue 10 item 2); also adds `lab appeals`
from testbuy.commands import common as _common  # noqa: E402
from testbuy.commands import events as _events  # noqa: E402
from testbuy.commands import evidence as _evidence  # noqa: E402
from testbuy.commands import leads as _leads  # noqa: E402  # issue 10 item 4
from testbuy.commands import roles as _roles  # noqa: E402
from testbuy.commands import sellers as _sellers  # noqa: E402

app.add_typer(_roles.programs, name="programs")
app.add_typer(_sellers.sellers, name="sellers")
app.add_typer(_roles.rounds, name="rounds")
app.add_typer(_roles.lab, name="lab")
app.add_typer(_events.events, name="events")
app.add_typer(_leads.leads, name="leads")  # issue 10 item 4
app.add_typer(_appeals.appeals, name="appeals")  # appeals (issue 10 item 2)
app.add_typer(_evidence.evidence, name="evidence")  # issue 10 item 5
app.command("metrics")(_roles.metrics)
app.command("spend")(_roles.spend)
app.command("reconcile")(_roles.reconcile)
app.command("config")(_roles.config)


@app.command()
def report(
    program_id: str = typer.Option(..., "--program", help="the programme's id"),
    out: Path | None = typer.Option(None, help="where the HTML file goes (default report-<program>.html)"),
    as_json: bool = _common.JSON_OPT,
    profile: str | None = _common.PROFILE_OPT,
    api_url: str | None = _common.API_OPT,
    token_value: str | None = _common.TOKEN_OPT,
) -> None:
    """Write one self-contained HTML report of a programme (opens with no server); prints its path."""
    from testbuy.report import write_report

    api = _common.connect(api_url=api_url, token=token_value, profile=profile, as_json=as_json, role="finance")
    data = api.call("GET", f"/programs/{_common.q(program_id)}/dashboard", expect=(200,))
    path = write_report(data, out or Path(f"report-{program_id}.html")).resolve()
    if as_json:
        _common.emit_json({"program_id": program_id, "path": str(path)})
    else:
        print(path)


def main() -> None:
    app()
