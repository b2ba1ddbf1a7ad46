"""Benchmark: the DynamoDB budget ledger against the embedded moto server (its own LocalStack, stage ``bench``).

Usage: ``python benchmarks/ledger.py [--ops N] [--orders 100,1000] [--raw-moto]``. Prints one JSON line::

    {"reservations_per_s": {"1": R1, "4": R4, "16": R16}, "overspend": 0, "requests_per_order": {"100": Q1, "1000": Q2}}

* ``reservations_per_s``: ``--ops`` reservations (default 240) on one programme with ample funds, split over 1, 4
  and 16 threads, each thread with its own boto3 client (as separate Lambdas would have); wall-clock rate.
* ``overspend``: a programme funded with X; 16 threads reserve random amounts until refused, then one minor unit at
  a time until even that is refused. ``max(0, sum(successful) - X)``; must be 0. The run also fails (exit 1) if the
  successful reservations do not add up to exactly X - available, or the journal does not replay to the balance.
* ``requests_per_order``: DynamoDB requests per order lifecycle (reserve, capture, recover) over 100 and 1000
  orders, counted with a botocore ``before-call.dynamodb.*`` handler on the client. Must not grow with orders.

By default the moto server is made to behave like DynamoDB (``testbuy.moto_fidelity``, which the local stack
installs: requests serialized, transactions O(items) instead of a deepcopy of the
whole table per transaction). ``--raw-moto`` runs on moto as shipped: it is neither atomic under concurrency (it
oversells) nor fast on a growing table, so its figures describe moto, not the ledger.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _ledger(client: Any = None) -> Any:
    import boto3

    from chalicelib.adapters.ledger_dynamodb import DynamoLedger
    from chalicelib.adapters.system import SystemClock

    return DynamoLedger(client or boto3.client("dynamodb"), os.environ["TESTBUY_LEDGER_TABLE"], SystemClock())


def _programme(funds: int, cap: int | None = None) -> str:
    pid = f"prg-bench-{uuid.uuid4().hex[:10]}"
    ledger = _ledger()
    ledger.open_account(pid, "CNY", cap)
    ledger.fund(pid, "initial", funds, "CNY")
    return pid


def _run_threads(n: int, target: Any) -> float:
    errors: list[BaseException] = []
    barrier = threading.Barrier(n + 1)

    def wrapped(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]
    return elapsed


def reservations_per_second(threads: int, ops: int) -> float:
    pid = _programme(10**12)
    per_thread = max(1, ops // threads)
    ledgers = [_ledger() for _ in range(threads)]  # clients created outside the timed region

    def work(i: int) -> None:
        for n in range(per_thread):
            ledgers[i].reserve(pid, f"t{i}-{n}", 100, "CNY", {"seller_id": f"s{i}"})

    elapsed = _run_threads(threads, work)
    return per_thread * threads / elapsed


def overspend(funds: int = 3000, threads: int = 16) -> tuple[int, list[str]]:
    from chalicelib.domain.errors import InsufficientFunds
    from chalicelib.domain.ledger import replay

    pid = _programme(funds)
    ok: list[int] = []
    lock = threading.Lock()
    ledgers = [_ledger() for _ in range(threads)]

    def work(i: int) -> None:
        rng, amount, n = random.Random(i), random.randint(10, 60), 0
        while True:
            n += 1
            try:
                ledgers[i].reserve(pid, f"o{i}-{n}", amount, "CNY", {})
            except InsufficientFunds:
                if amount == 1:
                    return
                amount = 1
                continue
            with lock:
                ok.append(amount)
            if amount > 1:
                amount = rng.randint(10, 60)

    _run_threads(threads, work)
    ledger = _ledger()
    balance = ledger.balance(pid)
    problems = []
    if sum(ok) != balance.funded - balance.available:
        problems.append(f"successful reservations {sum(ok)} != funded - available {balance.funded - balance.available}")
    try:
        if replay(ledger.journal(pid)) != balance:
            problems.append("journal does not replay to the stored balance")
    except AssertionError as exc:
        problems.append(f"journal replay failed: {exc}")
    return max(0, sum(ok) - funds), problems


def requests_per_order(orders: int) -> float:
    import boto3

    client = boto3.client("dynamodb")
    count = [0]

    def counter(**_: Any) -> None:
        count[0] += 1

    client.meta.events.register("before-call.dynamodb.*", counter)
    pid = _programme(10**12, cap=10**6)
    ledger = _ledger(client)
    count[0] = 0
    for n in range(orders):
        order = f"o{n}"
        ledger.reserve(pid, order, 1000, "CNY", {"round_id": "r1", "category": "c", "seller_id": f"s{n % 50}"})
        ledger.capture(pid, order, 900 + n % 200, "CNY")  # some above the reservation, within the cap
        ledger.recover(pid, order, 100, "CNY")
    return count[0] / orders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=240, help="reservations per throughput measurement")
    parser.add_argument("--orders", default="100,1000", help="order counts for requests per lifecycle")
    parser.add_argument("--raw-moto", action="store_true", help="do not make moto behave like DynamoDB")
    args = parser.parse_args()

    from testbuy.localstack import LocalStack

    t0 = time.perf_counter()
    with LocalStack(stage="bench"):
        if args.raw_moto:
            from testbuy import moto_fidelity

            moto_fidelity.uninstall()
        rates = {str(n): round(reservations_per_second(n, args.ops), 1) for n in (1, 4, 16)}
        over, problems = overspend()
        per_order = {str(n): round(requests_per_order(n), 2) for n in (int(x) for x in args.orders.split(","))}
    print(json.dumps({"reservations_per_s": rates, "overspend": over, "requests_per_order": per_order}))
    print(f"wall time {time.perf_counter() - t0:.1f}s; raw moto: {args.raw_moto}", file=sys.stderr)
    for p in problems:
        print(f"PROBLEM: {p}", file=sys.stderr)
    growth = per_order and max(per_order.values()) - min(per_order.values())
    if over or problems or growth:
        sys.exit(1)


if __name__ == "__main__":
    main()
