"""Benchmark: the whole fault-injection matrix (issue 7, item 9) on its own embedded local stack (stage ``faults``).

Usage: ``python benchmarks/faults.py [--seed S] [--batch N] [--per-scenario K] [--only CASE,...]``.
Prints ONE JSON line::

    {"fault_points": N, "scenarios": M, "runs": R, "violations": 0, "lost_minor_units": 0, "stuck_holds": 0,
     "lost_events": 0, ...}

* A census run (one fault-free order per scenario) records every task and call each scenario reaches; the fault
  points are every Task state of the ASL at the Lambda boundary, every call the census saw, the marketplace's
  operations, an abort at every wait, and the duplicated webhook and verdict (``testbuy.faults.enumerate_points``).
* ``runs``: every (scenario, fault point) the scenario reaches, plus one control per scenario: the WHOLE matrix (the
  test suite runs a seeded part of it). ``--per-scenario K`` runs the same seeded part as the tests instead.
* ``violations``: runs with at least one broken invariant; ``lost_minor_units``: money off the ledger (a live
  purchase not captured at its price, a capture without a purchase, a refund not recovered); ``stuck_holds``:
  reservations left once every execution ended and the sweeper ran; ``lost_events``: facts that never reached the
  bus. ``by_invariant`` counts violations per invariant; ``failing`` lists up to 50 failing case ids (reproduce one
  with ``FAULTS_ONLY=<id> FAULTS_SEED=<seed> pytest tests/faults``).
* A run whose only broken invariant is ``outcome`` (the order ended right, but e.g. without the lab's verdict,
  because on a loaded machine the verdict missed its wait) is re-run once in a batch of 10; ``first_pass_violations``
  counts violating runs before that, ``outcome_reruns`` how many were re-run. Money, hold and event violations are
  never re-run.

Cases run in batches of ``--batch`` orders (one programme per scenario per batch, all orders of a batch at once).
Progress goes to stderr through rich when stderr is a terminal; the JSON line goes to stdout, plain, on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RERUN_BATCH = 10
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch", type=int, default=80, help="orders running at once")
    parser.add_argument("--per-scenario", type=int, default=0, help="run the tests' seeded sample instead")
    parser.add_argument("--only", default="", help="comma-separated case ids")
    parser.add_argument("--report", default="", help="write every run (case, status, violations) as JSON lines here")
    args = parser.parse_args(argv)

    from testbuy import faults
    from testbuy.localstack import LocalStack

    # Handlers log their (injected) failures to stdout: keep stdout for the one JSON line.
    out = sys.stdout
    sys.stdout = sys.stderr
    started = time.monotonic()
    interactive = sys.stderr.isatty()
    console: Any = None
    if interactive:
        from rich.console import Console

        console = Console(stderr=True)
    with (
        LocalStack(stage="faults", workdir=ROOT / ".testbuy" / "bench-faults") as stack,
        faults.FaultRun(stack, seed=args.seed) as run,
    ):
        census = run.census()
        points = faults.enumerate_points(census)
        every = faults.matrix(census)
        if args.only:
            wanted = set(args.only.split(","))
            cases = [c for c in every if c.id in wanted]
        elif args.per_scenario:
            cases = faults.sample(every, args.seed, args.per_scenario)
        else:
            cases = every
        results: list[faults.CaseResult] = []
        batches = [cases[i : i + args.batch] for i in range(0, len(cases), args.batch)]
        progress: Any = None
        if console is not None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            progress = Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
            )
            progress.start()
            bar = progress.add_task("fault runs", total=len(cases))
        try:
            for batch in batches:
                results.extend(run.run(batch))
                if progress is not None:
                    bad = sum(1 for r in results if r.violations)
                    progress.update(bar, completed=len(results), description=f"fault runs ({bad} violating)")
            # A run whose ONLY broken invariant is the outcome check (on a loaded machine a lab's verdict can miss its
            # wait, and the order then settles correctly without one) runs once more in a small batch. Money, holds
            # and events are never re-run: a violation of those stands.
            first_pass = sum(1 for r in results if r.violations)
            again = [r.case for r in results if r.violations and all(v.invariant == "outcome" for v in r.violations)]
            redo = {
                r.case.id: r for k in range(0, len(again), RERUN_BATCH) for r in run.run(again[k : k + RERUN_BATCH])
            }
            results = [redo.get(r.case.id, r) for r in results]
        finally:
            if progress is not None:
                progress.stop()
    if args.report:
        with open(args.report, "w") as fh:
            for r in results:
                fh.write(
                    json.dumps(
                        {
                            "case": r.case.id,
                            "order_id": r.order_id,
                            "status": r.status,
                            "fired": r.fired,
                            "violations": [[v.invariant, v.detail] for v in r.violations],
                        }
                    )
                    + "\n"
                )
    summary = faults.summarize(results, len(points), len(faults.SCENARIOS))
    summary["first_pass_violations"] = first_pass
    summary["outcome_reruns"] = len(again)
    summary["matrix"] = len(every)
    summary["seed"] = args.seed
    summary["seconds"] = round(time.monotonic() - started, 1)
    summary["failing"] = sorted(r.case.id for r in results if r.violations)[:50]
    out.write(json.dumps(summary) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
