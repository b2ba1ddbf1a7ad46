"""`testbuy demo`: a whole programme on the embedded local stack, through the real API and state machines.

Reproducible: the same seed gives the same programme (sample, verdicts, estimate) whatever the timing. Programme and
round ids are seeded (``LocalStack(id_seed=...)``), so order ids are too, and every decision downstream is keyed on
them or on the seller id (``docs/decisions.md``, "A reproducible demo"); rounds run one after the other; the
timeouts leave the simulators (delays of seconds) a wide margin. ``summary["sample"]`` lists every order with its
outcome, so two runs can be compared exactly.

Honest in any terminal: with a terminal, rich progress bars; without one, a plain progress line every few seconds.
The last line of the output is the summary path alone; with ``as_json`` stdout carries only the summary JSON and
everything else goes to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from chalicelib.api.auth import Role, issue_token
from testbuy.client import ApiClient
from testbuy.localstack import LocalStack
from testbuy.sim.enforcement import EnforcementSubscriber
from testbuy.sim.runner import SimOptions, Simulators
from testbuy.sim.world import generate


@dataclass(frozen=True)
class DemoConfig:
    sellers: int = 2500
    rounds: int = 2
    round_size: int = 70
    seed: int = 42
    labs: tuple[str, ...] = ("lab-east", "lab-west")
    # Lost parcels (drawn per seller) end on the delivery timeout; a delivered parcel arrives within seconds
    # (seconds_per_day x delivery days), so 90 s never races a delivery. The simulated labs never lose a verdict:
    # the verdict and round timeouts only bound a broken run and are set far beyond any lab's turnaround, so a slow
    # lab changes the wall time, never which orders get a verdict.
    delivery_timeout_s: int = 90
    verdict_timeout_s: int = 900
    round_timeout_s: int = 1800
    max_jitter_s: int = 3
    out: Path = Path(".testbuy/demo-summary.json")
    isolated: bool = True  # moto + Lambda handlers in a child process: both cores
    # wall time only (tests vary them and expect the same programme)
    seconds_per_day: float = 0.2
    lab_think_seconds: float = 0.0
    lab_shuffle_queue: bool = False
    progress_every_s: float = 5.0  # without a terminal: a plain progress line this often


class _Progress:
    """Rich bars on a terminal; otherwise a plain line (never wrapped, flushed) at most every ``every`` seconds."""

    def __init__(self, con: Console, out: IO[str], every: float) -> None:
        self.con = con
        self.out = out
        self.every = every
        self.tty = con.is_terminal
        self._rich: Progress | None = None
        self._last = 0.0

    def __enter__(self) -> _Progress:
        if self.tty:
            self._rich = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.con,
                transient=False,
            )
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)

    def line(self, text: str) -> None:
        if self._rich is not None:
            self._rich.console.print(text, soft_wrap=True)
        else:
            print(text, file=self.out, flush=True)

    def task(self, description: str, total: int | None) -> TaskID | None:
        self._last = 0.0
        return self._rich.add_task(description, total=total) if self._rich is not None else None

    def update(
        self, task: TaskID | None, description: str, completed: int, total: int | None, force: bool = False
    ) -> None:
        if self._rich is not None and task is not None:
            self._rich.update(task, description=description, completed=completed, total=total)
            return
        now = time.monotonic()
        if force or now - self._last >= self.every:
            self._last = now
            print(f"{description} ({completed}/{total if total is not None else '?'})", file=self.out, flush=True)


def run_demo(cfg: DemoConfig, console: Console | None = None, *, as_json: bool = False) -> tuple[dict[str, Any], int]:
    """Run the programme; return (summary, exit code). Exit code 1 if the ledger does not reconcile or orders stick.

    ``as_json``: stdout gets the summary JSON alone; progress, messages and the summary path go to stderr."""
    text_out: IO[str] = sys.stderr if as_json else sys.stdout
    con = console or Console(stderr=as_json)
    started = time.monotonic()
    world = generate(cfg.sellers, cfg.seed)
    sims = Simulators(
        SimOptions(
            seed=cfg.seed,
            sellers=cfg.sellers,
            labs=cfg.labs,
            seconds_per_day=cfg.seconds_per_day,
            lab_think_seconds=cfg.lab_think_seconds,
            lab_shuffle_queue=cfg.lab_shuffle_queue,
        ),
        world=world,
    )
    with (
        # its state beside the summary (.testbuy by default), so a demo elsewhere leaves a running stack's alone
        LocalStack(
            workdir=cfg.out.parent.resolve(),
            marketplace_url=sims.marketplace_url,
            isolated=cfg.isolated,
            id_seed=cfg.seed,
        ) as stack,
        _Progress(con, text_out, cfg.progress_every_s) as progress,
    ):
        info = stack.info
        assert info is not None  # nosec B101 # set by start()
        sims.start(info)
        subscriber = EnforcementSubscriber(stack.client("sqs"), info.queues["enforcement"], info.queues["archive"])
        subscriber.start()
        progress.line(
            f"testbuy local stack up: API {info.api_url}  AWS endpoint {info.endpoint_url}  bus {info.bus_name}"
        )
        pm = ApiClient(info.api_url, issue_token(info.token_secret, Role.PROGRAM_MANAGER, "pm@governance"))
        fin = ApiClient(info.api_url, issue_token(info.token_secret, Role.FINANCE, "finance@governance"))
        try:
            summary = _programme(cfg, progress, pm, fin, world)
            summary["sample"] = _sample(stack, info.env["TESTBUY_DATA_TABLE"], summary.pop("round_ids"))
        finally:
            sims.stop_labs()
            time.sleep(1.0)
            subscriber.drain()
            subscriber.stop()
            sims.stop()
        summary["events_received"] = subscriber.received
        summary["events_by_type"] = dict(sorted(subscriber.all_events.items()))
        summary["enforcement_actions"] = dict(sorted(subscriber.actions.items()))
        summary["lab_errors"] = sims.lab_errors
    stats: dict[str, Any] = (
        {"invocations": stack.bridge.invocations, "seconds": stack.bridge.seconds, "calls": stack.bridge.calls}
        if stack.bridge
        else stack.bridge_stats
    )
    summary["lambda_invocations"] = stats.get("invocations", 0)
    summary["task_seconds"] = {k: round(v, 2) for k, v in sorted(stats.get("seconds", {}).items())}
    summary["task_calls"] = dict(sorted(stats.get("calls", {}).items()))
    summary["wall_seconds"] = round(time.monotonic() - started, 2)
    summary["orders_per_second"] = round(summary["orders"]["placed"] / summary["wall_seconds"], 3)
    ok = summary["ledger"]["reconciled"] and summary["orders"]["stuck"] == 0
    cfg.out.write_text(json.dumps(summary, indent=2, sort_keys=True))
    if as_json:
        sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        sys.stdout.flush()
    else:
        _render(con, summary)
    if not ok:
        print("FAILED: the ledger does not reconcile or orders are stuck (see the summary).", file=text_out, flush=True)
    # plain, unwrapped, last: a script reads the path with `tail -n 1`
    print("summary written to:", file=text_out, flush=True)
    print(str(cfg.out.resolve()), file=sys.stderr if as_json else sys.stdout, flush=True)
    return summary, 0 if ok else 1


def _sample(stack: LocalStack, table: str, round_ids: list[str]) -> list[dict[str, Any]]:
    """Every order of the programme with its outcome, in (round, order id) order: what two runs of one seed must
    share exactly."""
    from chalicelib.adapters.store_dynamodb import DynamoOrders

    orders = DynamoOrders(stack.client("dynamodb"), table)
    out = []
    for n, rid in enumerate(round_ids, start=1):
        for o in sorted(orders.list_round_orders(rid), key=lambda o: o.order_id):
            out.append(
                {
                    "round": n,
                    "order_id": o.order_id,
                    "seller_id": o.seller_id,
                    "pi": o.pi,
                    "exploration": o.exploration,
                    "status": o.status.value,
                    "lab_id": o.lab_id,
                    "price": o.price,
                    "refunded": o.refunded,
                    "verdict": o.verdict.value if o.verdict else None,
                    "failure": o.failure,
                }
            )
    return out


def _programme(cfg: DemoConfig, progress: _Progress, pm: ApiClient, fin: ApiClient, world: Any) -> dict[str, Any]:
    now = datetime.now(UTC)
    mean_cost = sum(s.expected_cost for s in world.sellers) / len(world.sellers)
    funds = int(cfg.rounds * cfg.round_size * mean_cost * 1.15 * 1.1)
    program = pm.call(
        "POST",
        "/programs",
        {
            "name": "Counterfeit test-buy programme (demo)",
            "currency": "CNY",
            "budget": funds,
            "period_start": (now - timedelta(days=1)).isoformat(),
            "period_end": (now + timedelta(days=365)).isoformat(),
            "round_size": cfg.round_size,
            "exploration_share": 0.2,
            "labs": list(cfg.labs),
            "timeouts": {
                "delivery_seconds": cfg.delivery_timeout_s,
                "verdict_seconds": cfg.verdict_timeout_s,
                "round_seconds": cfg.round_timeout_s,
                "max_jitter_seconds": cfg.max_jitter_s,
            },
        },
    )
    pid = program["program_id"]
    fin.call("POST", f"/programs/{pid}/funding", {"amount": funds, "currency": "CNY", "reference": "fy2026-q4"})
    payload = world.import_payload()
    round_ids: list[str] = []
    task = progress.task("importing sellers", total=len(payload))
    for start in range(0, len(payload), 500):
        pm.call("POST", f"/programs/{pid}/sellers", {"sellers": payload[start : start + 500]})
        done = min(start + 500, len(payload))
        progress.update(task, "importing sellers", done, len(payload), force=done == len(payload))
    for n in range(cfg.rounds):
        # one round at a time: a round's learned risk reads the verdicts of the rounds before it, so it starts only
        # once the previous round has completed (every order settled, its verdict in)
        rnd = pm.call("POST", f"/programs/{pid}/rounds", {"seed": cfg.seed * 1000 + n})
        rid = rnd["round_id"]
        round_ids.append(rid)
        bar = progress.task(f"round {n + 1}: sampling", total=None)
        deadline = time.monotonic() + cfg.round_timeout_s + 60
        while time.monotonic() < deadline:
            view = pm.call("GET", f"/programs/{pid}/rounds/{rid}")
            by = view["orders_by_status"]
            finished = view["status"] in ("completed", "failed")
            progress.update(
                bar,
                " ".join([f"round {n + 1}/{cfg.rounds} {view['status']}:", *(f"{k}={v}" for k, v in by.items())]),
                view["settled"],
                view["sampled"] or None,
                force=finished,
            )
            if finished:
                break
            time.sleep(0.5)
    metrics = pm.call("GET", f"/programs/{pid}/metrics")
    recon = fin.call("GET", f"/programs/{pid}/reconciliation")
    spend = fin.call("GET", f"/programs/{pid}/spend?group_by=round")
    bal = recon["stored"]
    totals_match = (
        spend["totals"]["captured"] == bal["captured"]
        and spend["totals"]["recovered"] == bal["recovered"]
        and spend["totals"]["funded"] == bal["funded"]
        and spend["totals"]["reserved"] == bal["reserved"]
    )
    est = metrics["estimate"] or {}
    return {
        "program_id": pid,
        "round_ids": round_ids,
        "seed": cfg.seed,
        "currency": "CNY",
        "sellers": len(world.sellers),
        "rounds": metrics["rounds"],
        "ledger": {
            "funded": bal["funded"],
            "reserved": bal["reserved"],
            "spent": bal["captured"],
            "recovered": bal["recovered"],
            "available": bal["available"],
            "reconciled": bool(recon["reconciled"] and totals_match),
            "journal_entries": recon["journal_entries"],
            "report_totals_match": totals_match,
        },
        "orders": {
            "sampled": metrics["sampled"],
            "placed": metrics["placed"],
            "delivered": metrics["delivered"],
            "verdicts": metrics["verdicts"],
            "stuck": metrics["stuck"],
            "delivery_failures": metrics["delivery_failures"],
            "skipped_budget": metrics["skipped_budget"],
            "failures_by_reason": metrics["failures_by_reason"],
        },
        "counterfeit_hits": metrics["counterfeit_hits"],
        "hit_rate": metrics["hit_rate"],
        "refund_rate": metrics["refund_rate"],
        "cost_per_hit": metrics["cost_per_hit"],
        "lift_over_uniform": metrics["lift_over_uniform"],
        "estimate": {
            "prevalence": est.get("prevalence"),
            "ci_low": est.get("ci_low"),
            "ci_high": est.get("ci_high"),
            "n_eff": est.get("n_eff"),
            "true_prevalence": world.true_prevalence,
        },
        "risk_model": _risk_model(metrics["risk_model"]),
    }


def _risk_model(section: dict[str, Any]) -> dict[str, Any]:
    """The risk model measured on the exploration units: each figure with its interval and the units behind it."""

    def fig(f: dict[str, Any]) -> dict[str, Any]:
        return {k: f[k] for k in ("estimate", "ci_low", "ci_high", "n", "fakes", "reason")}

    return {
        "exploration_units": section["units"],
        "fakes": section["fakes"],
        "auc": fig(section["auc"]),
        "brier": fig(section["brier"]),
        "top_decile_precision": fig(section["top_decile_precision"]),
        "reliability": [
            {k: b[k] for k in ("low", "high", "n", "fakes", "mean_predicted", "observed", "ci_low", "ci_high")}
            for b in section["reliability"]
            if b["n"]
        ],
    }


def _render(con: Console, s: dict[str, Any]) -> None:
    def money(v: int) -> str:
        return f"{s['currency']} {v / 100:,.2f}"

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.2f}%"

    t = Table(title="testbuy demo summary", show_header=False)
    led = s["ledger"]
    for k in ("funded", "reserved", "spent", "recovered", "available"):
        t.add_row(f"ledger {k}", money(led[k]))
    t.add_row("ledger reconciles", "[green]yes[/]" if led["reconciled"] else "[red]NO[/]")
    o = s["orders"]
    t.add_row("orders placed / delivered / with verdict", f"{o['placed']} / {o['delivered']} / {o['verdicts']}")
    t.add_row("stuck orders", str(o["stuck"]))
    t.add_row("delivery failures / skipped for budget", f"{o['delivery_failures']} / {o['skipped_budget']}")
    t.add_row("counterfeit hits", str(s["counterfeit_hits"]))
    t.add_row("hit rate (raw, conclusive verdicts)", pct(s["hit_rate"]))
    e = s["estimate"]
    t.add_row(
        "estimated prevalence (Hajek, 95% CI)", f"{pct(e['prevalence'])}  [{pct(e['ci_low'])}, {pct(e['ci_high'])}]"
    )
    t.add_row("true prevalence (simulator)", pct(e["true_prevalence"]))
    t.add_row(
        "lift over uniform sampling (hit rate / prevalence)",
        "n/a" if s["lift_over_uniform"] is None else f"{s['lift_over_uniform']:.2f}x",
    )
    t.add_row("refund rate (suspect / settled)", pct(s["refund_rate"]))
    rm = s["risk_model"]
    t.add_row("risk model: exploration units (fakes)", f"{rm['exploration_units']} ({rm['fakes']})")
    for label, key, as_pct in (
        ("risk model AUC (95% CI)", "auc", False),
        ("risk model Brier score (95% CI)", "brier", False),
        ("precision of the top risk decile (95% CI)", "top_decile_precision", True),
    ):
        f = rm[key]
        if f["estimate"] is None:
            t.add_row(label, f"n/a ({f['reason']})")
        else:
            show = pct if as_pct else (lambda v: f"{v:.4f}")
            t.add_row(label, f"{show(f['estimate'])}  [{show(f['ci_low'])}, {show(f['ci_high'])}]  n={f['n']}")
    for b in rm["reliability"]:
        t.add_row(
            f"  calibration, risk in ({b['low']:g}, {b['high']:g}]",
            f"predicted {pct(b['mean_predicted'])}, observed {pct(b['observed'])} "
            f"[{pct(b['ci_low'])}, {pct(b['ci_high'])}]  n={b['n']}",
        )
    t.add_row("enforcement actions", ", ".join(f"{k}={v}" for k, v in s["enforcement_actions"].items()) or "none")
    t.add_row("events received by the subscriber", str(s["events_received"]))
    t.add_row("wall time / orders per second", f"{s['wall_seconds']} s / {s['orders_per_second']}")
    con.print(t)
