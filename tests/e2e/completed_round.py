"""One whole round over HTTP on the embedded local stack, run once per test session and shared (read-only) by the
tests that need a completed round: tests/e2e/test_round_http.py and the dashboard's browser tests. A seeded simulated
marketplace (transient 503s, refusals, lost parcels, signed delivery webhooks), two simulated labs posting verdicts over
the API, and the enforcement subscriber reading the bus's SQS queues. Registered in tests/conftest.py."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.api.auth import Role, issue_token
from testbuy.client import ApiClient
from testbuy.sim.enforcement import EnforcementSubscriber
from testbuy.sim.lab import LabSim
from testbuy.sim.marketplace import MarketplaceSim
from testbuy.sim.world import World, generate

SELLERS = 200
ROUND_SIZE = 10
SEED = 2026
RUN = uuid.uuid4().hex[:6]
LABS = (f"lab-e2e-east-{RUN}", f"lab-e2e-west-{RUN}")
TIMEOUTS = {"delivery_seconds": 8, "verdict_seconds": 15, "round_seconds": 120}
ROUND_DEADLINE_S = 90.0


@dataclass
class Outcome:
    pid: str
    rid: str
    view: dict[str, Any]
    world: World
    market: MarketplaceSim
    subscriber: EnforcementSubscriber
    labs: list[LabSim]
    pm: ApiClient
    fin: ApiClient
    wall_seconds: float


@pytest.fixture(scope="session")
def completed_round(local_stack: Any, stack_info: Any) -> Iterator[Outcome]:
    started = time.monotonic()
    world = generate(SELLERS, SEED)
    # seller ids are global to the shared stack (enforcement history is per seller): make this run's unique
    world.sellers = [dataclasses.replace(s, seller_id=f"e2e-{RUN}-{s.seller_id}") for s in world.sellers]
    market = MarketplaceSim(
        world=world, api_url=stack_info.api_url, webhook_secret=stack_info.webhook_secret, seed=SEED
    )
    local_stack.set_marketplace_url(market.start())
    labs = [
        LabSim(
            api_url=stack_info.api_url,
            lab_id=lab,
            token=issue_token(stack_info.token_secret, Role.LAB, f"tech@{lab}", lab),
            truth=market.item_truth,
            seed=SEED,
        )
        for lab in LABS
    ]
    for lab in labs:
        lab.start()
    subscriber = EnforcementSubscriber(
        local_stack.client("sqs"), stack_info.queues["enforcement"], stack_info.queues["archive"]
    )
    subscriber.start()
    pm = ApiClient(stack_info.api_url, issue_token(stack_info.token_secret, Role.PROGRAM_MANAGER, "pm@e2e"))
    fin = ApiClient(stack_info.api_url, issue_token(stack_info.token_secret, Role.FINANCE, "finance@e2e"))
    try:
        now = datetime.now(UTC)
        mean_cost = sum(s.expected_cost for s in world.sellers) / len(world.sellers)
        funds = int(ROUND_SIZE * mean_cost * 1.15 * 1.5)
        pid = pm.call(
            "POST",
            "/programs",
            {
                "name": "e2e round over HTTP",
                "currency": "CNY",
                "budget": funds,
                "period_start": (now - timedelta(days=1)).isoformat(),
                "period_end": (now + timedelta(days=365)).isoformat(),
                "round_size": ROUND_SIZE,
                "exploration_share": 0.2,
                "blend": 0.5,
                "labs": list(LABS),
                "timeouts": TIMEOUTS,
            },
        )["program_id"]
        fin.call("POST", f"/programs/{pid}/funding", {"amount": funds, "currency": "CNY", "reference": "e2e-1"})
        assert pm.call("POST", f"/programs/{pid}/sellers", {"sellers": world.import_payload()}) == {"imported": SELLERS}
        rid = pm.call("POST", f"/programs/{pid}/rounds", {"seed": SEED})["round_id"]
        deadline = time.monotonic() + ROUND_DEADLINE_S
        while True:
            view = pm.call("GET", f"/programs/{pid}/rounds/{rid}")
            if view["status"] in ("completed", "failed"):
                break
            assert time.monotonic() < deadline, f"round not completed in {ROUND_DEADLINE_S}s: {view}"
            time.sleep(0.5)
        subscriber.drain()
        # The round is over: stop the labs and the subscriber before handing the outcome on. The fixture lives for the
        # whole session, and a subscriber left polling would take the bus's messages from every later test's queues.
        for lab in labs:
            lab.stop()
        subscriber.stop()
        yield Outcome(pid, rid, view, world, market, subscriber, labs, pm, fin, time.monotonic() - started)
    finally:
        for lab in labs:
            lab.stop()
        subscriber.stop()
        market.stop()
