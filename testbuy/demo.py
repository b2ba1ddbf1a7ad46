"""`testbuy demo`: a whole programme on the embedded local stack, through the real API and state machines."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from chalicelib.api.auth import Role, issue_token
from testbuy.client import ApiClient
from testbuy.localstack import LocalStack, free_port
from testbuy.sim.enforcement import EnforcementSubscriber
from testbuy.sim.lab import LabSim
from testbuy.sim.marketplace import MarketplaceSim
from testbuy.sim.world import generate


@dataclass(frozen=True)
class DemoConfig:
    sellers: int = 2500
    rounds: int = 2
    round_size: int = 70
    seed: int = 42
    labs: tuple[str, ...] = ("lab-east", "lab-west")
    delivery_timeout_s: int = 90
    verdict_timeout_s: int = 120
    round_timeout_s: int = 600
    max_jitter_s: int = 3
    out: Path = Path(".testbuy/demo-summary.json")
    isolated: bool = True  # moto + Lambda handlers in a child process: both cores


def run_demo(cfg: DemoConfig, console: Console | None = None) -> tuple[dict[str, Any], int]:
    """Run the programme; return (summary, exit code). Exit code 1 if the ledger does not reconcile or orders stick."""
    con = console or Console()
    started = time.monotonic()
    world = generate(cfg.sellers, cfg.seed)
    market_port = free_port()
    with LocalStack(marketplace_url=f"http://127.0.0.1:{market_port}", isolated=cfg.isolated) as stack:
        info = stack.info
        assert info is not None
        market = MarketplaceSim(world=world, api_url=info.api_url, webhook_secret=info.webhook_secret, seed=cfg.seed)
        market.start(market_port)
        labs = [
            LabSim(
                api_url=info.api_url,
                lab_id=lab,
                token=issue_token(info.token_secret, Role.LAB, f"tech@{lab}", lab),
                truth=market.item_truth,
                seed=cfg.seed,
            )
            for lab in cfg.labs
        ]
        for lab in labs:
            lab.start()
        subscriber = EnforcementSubscriber(stack.client("sqs"), info.queues["enforcement"], info.queues["archive"])
        subscriber.start()
        con.print(
            f"[bold]testbuy[/] local stack up: API {info.api_url}  AWS endpoint {info.endpoint_url}  "
            f"bus {info.bus_name}"
        )
        pm = ApiClient(info.api_url, issue_token(info.token_secret, Role.PROGRAM_MANAGER, "pm@governance"))
        fin = ApiClient(info.api_url, issue_token(info.token_secret, Role.FINANCE, "finance@governance"))
        try:
            summary = _programme(cfg, con, pm, fin, world)
        finally:
            for lab in labs:
                lab.stop()
            time.sleep(1.0)
            subscriber.drain()
            subscriber.stop()
            market.stop()
        summary["events_received"] = subscriber.received
        summary["events_by_type"] = dict(sorted(subscriber.all_events.items()))
        summary["enforcement_actions"] = dict(sorted(subscriber.actions.items()))
        summary["lab_errors"] = sum(len(lab.errors) for lab in labs)
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
    _render(con, summary)
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(summary, indent=2, sort_keys=True))
    if not ok:
        con.print("[bold red]FAILED[/]: the ledger does not reconcile or orders are stuck (see above).")
    con.print(f"summary written to {cfg.out.resolve()}")
    return summary, 0 if ok else 1


def _programme(cfg: DemoConfig, con: Console, pm: ApiClient, fin: ApiClient, world: Any) -> dict[str, Any]:
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
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=con,
        transient=False,
    ) as progress:
        task = progress.add_task("importing sellers", total=len(payload))
        for start in range(0, len(payload), 500):
            pm.call("POST", f"/programs/{pid}/sellers", {"sellers": payload[start : start + 500]})
            progress.advance(task, len(payload[start : start + 500]))
        for n in range(cfg.rounds):
            rnd = pm.call("POST", f"/programs/{pid}/rounds", {"seed": cfg.seed * 1000 + n})
            rid = rnd["round_id"]
            bar = progress.add_task(f"round {n + 1}: sampling", total=None)
            deadline = time.monotonic() + cfg.round_timeout_s + 60
            while time.monotonic() < deadline:
                view = pm.call("GET", f"/programs/{pid}/rounds/{rid}")
                by = view["orders_by_status"]
                progress.update(
                    bar,
                    total=view["sampled"] or None,
                    completed=view["settled"],
                    description=f"round {n + 1}: " + " ".join(f"{k}={v}" for k, v in by.items()),
                )
                if view["status"] in ("completed", "failed"):
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
