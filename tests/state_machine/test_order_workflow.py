"""The real ``order`` and ``round`` ASL, executed by moto's Step Functions interpreter through the Lambda bridge.

Scenarios run as whole rounds over the HTTP API against a scripted simulated marketplace: each hand-made seller
exercises one path (happy, transient 503 then retry, lost parcel, counterfeit, verdict never posted, refusal), all in
ONE round so they run concurrently. A second stage runs two more programmes at once: the same counterfeit seller
again (repeat offender -> ban) and a programme whose funds cover only one of its two drawn units (thinned at random
before placing: one order bought, the other never placed; the skipped_budget path is in tests/unit/test_order_tasks.py).

Every scenario asserts the order's status, the ledger (balance, holds, journal) and the events read from the SQS
queues subscribed to the bus (filtered by this module's programme ids: the session stack is shared).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from chalicelib.api.auth import Role, issue_token, sign_webhook
from chalicelib.domain import sampling
from chalicelib.domain.ledger import Balance, Op, replay
from chalicelib.domain.models import Order, OrderStatus
from chalicelib.services.rounds import order_id_for, reservation_amount
from testbuy.client import ApiClient
from testbuy.sim.lab import court_verdict
from testbuy.sim.marketplace import MarketplaceSim
from testbuy.sim.world import SimSeller, World

RUN = uuid.uuid4().hex[:8]
LAB = f"lab-sm-{RUN}"
CURRENCY = "CNY"
TIMEOUTS = {"delivery_seconds": 5, "verdict_seconds": 8, "round_seconds": 120}
ROUND_DEADLINE_S = 90.0


# ------------------------------------------------------------------------------------------------ simulated world


@dataclass
class ScriptedMarketplace(MarketplaceSim):
    """The simulated marketplace, plus sellers whose FIRST placement attempt answers 503 (per seller, not random)."""

    flaky: set[str] = field(default_factory=set)

    def place(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        client_id = str(body["client_order_id"])
        if str(body.get("seller_id")) in self.flaky:
            with self._lock:
                first = client_id not in self.attempts
                if first:
                    self.attempts[client_id] = 1
            if first:
                return 503, {"error": "temporarily unavailable"}
        return super().place(body)

    def add(self, seller: SimSeller, *, flaky: bool = False) -> SimSeller:
        self.world.sellers.append(seller)
        self._by_seller = self.world.by_id  # the sim caches the index at construction
        if flaky:
            self.flaky.add(seller.seller_id)
        return seller

    def by_client_id(self, order_id: str) -> Any:
        with self._lock:
            return next((o for o in self.orders.values() if o.client_order_id == order_id), None)


def sim_seller(tag: str, cost: int = 20_000, **kw: Any) -> SimSeller:
    base: dict[str, Any] = {
        "seller_id": f"sm-{RUN}-{tag}",
        "category": "cosmetics",
        "expected_cost": cost,
        "sells_fakes": False,
        "signals": {},
        "linked_sellers": (),
        "delivery_days": 1,
        "service": (5, 5, 5),
        "loses_parcel": False,
        "refuses": False,
    }
    base.update(kw)
    return SimSeller(**base)


@pytest.fixture(scope="module")
def market(local_stack: Any, stack_info: Any) -> Iterator[ScriptedMarketplace]:
    sim = ScriptedMarketplace(
        world=World(seed=5, sellers=[]),
        api_url=stack_info.api_url,
        webhook_secret=stack_info.webhook_secret,
        seconds_per_day=0.2,
        transient_failure_rate=0.0,
    )
    local_stack.set_marketplace_url(sim.start())
    yield sim
    sim.stop()


# ------------------------------------------------------------------------------------------------ events


class Events:
    """Reads the bus's SQS queues; keeps (and deletes) only events of the programmes it tracks."""

    def __init__(self, sqs: Any, queues: dict[str, str]) -> None:
        self.sqs = sqs
        self.queues = queues
        self.programs: set[str] = set()
        self.got: dict[str, list[dict[str, Any]]] = {"enforcement": [], "archive": []}
        self._seen: set[tuple[str, str]] = set()

    def poll(self) -> None:
        """Sweep both queues until empty. Another test's messages are left alone: they turn visible again after the
        queue's visibility timeout, so a backlog of them delays this sweep by one pass, never starves it."""
        for key in ("enforcement", "archive"):
            for _ in range(200):
                resp = self.sqs.receive_message(QueueUrl=self.queues[key], MaxNumberOfMessages=10, WaitTimeSeconds=0)
                msgs = resp.get("Messages", [])
                if not msgs:
                    break
                for m in msgs:
                    event = json.loads(m["Body"])
                    if event["detail"]["metadata"].get("program_id") not in self.programs:
                        continue
                    if (key, m["MessageId"]) not in self._seen:
                        self._seen.add((key, m["MessageId"]))
                        self.got[key].append(event)
                    self.sqs.delete_message(QueueUrl=self.queues[key], ReceiptHandle=m["ReceiptHandle"])

    def of(self, queue: str, pred: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [e for e in self.got[queue] if pred(e)]

    def wait_for(self, queue: str, pred: Callable[[dict[str, Any]], bool], count: int, timeout: float = 15.0) -> list:
        deadline = time.monotonic() + timeout
        while True:
            self.poll()
            found = self.of(queue, pred)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.2)


def for_order(order_id: str, detail_type: str | None = None) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e["detail"]["data"].get("order_id") == order_id and (detail_type is None or e["detail-type"] == detail_type)
    )


def types_for(events: Events, order_id: str) -> list[str]:
    """Distinct detail-types published for an order, by event id (at-least-once delivery may duplicate)."""
    by_id = {e["detail"]["metadata"]["event_id"]: e["detail-type"] for e in events.of("archive", for_order(order_id))}
    return sorted(by_id.values())


# ------------------------------------------------------------------------------------------------ driving a round


@dataclass
class Harness:
    stack: Any
    info: Any
    market: ScriptedMarketplace
    events: Events
    pm: ApiClient
    fin: ApiClient
    lab: ApiClient
    d: Any

    def program(self, name: str, funds: int, sellers: list[SimSeller], **extra: Any) -> str:
        now = datetime.now(UTC)
        body = {
            "name": name,
            "currency": CURRENCY,
            "budget": funds,
            "period_start": (now - timedelta(days=1)).isoformat(),
            "period_end": (now + timedelta(days=30)).isoformat(),
            "round_size": len(sellers),
            "exploration_share": 1.0,
            "blend": 0.5,
            "labs": [LAB],
            "timeouts": TIMEOUTS,
            **extra,
        }
        pid = self.pm.call("POST", "/programs", body)["program_id"]
        self.events.programs.add(pid)
        self.fin.call("POST", f"/programs/{pid}/funding", {"amount": funds, "currency": CURRENCY, "reference": "f1"})
        payload = [
            {"seller_id": s.seller_id, "category": s.category, "expected_cost": s.expected_cost, "risk": 0.5}
            for s in sellers
        ]
        assert self.pm.call("POST", f"/programs/{pid}/sellers", {"sellers": payload}) == {"imported": len(sellers)}
        return pid

    def start_round(self, pid: str, **body: Any) -> str:
        return str(self.pm.call("POST", f"/programs/{pid}/rounds", body)["round_id"])

    def webhook(self, order: Order) -> int:
        body = json.dumps(
            {
                "order_id": order.order_id,
                "marketplace_order_id": order.marketplace_order_id,
                "status": "delivered",
                "occurred_at": datetime.now(UTC).isoformat(),
            }
        ).encode()
        status, _, _ = self.pm.request(
            "POST",
            "/webhooks/delivery",
            raw=body,
            headers=sign_webhook(self.info.webhook_secret, body, f"msg_{order.order_id}_delivered"),
        )
        return status

    def run(
        self,
        rounds: list[tuple[str, str]],
        verdicts: dict[str, str | None],
        on_sample: Callable[[str], None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Drive the lab (scripted verdicts by seller id; None = never answer) until every round completes."""
        handled: set[str] = set()
        views: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + ROUND_DEADLINE_S
        while len(views) < len(rounds):
            assert time.monotonic() < deadline, f"rounds did not complete in {ROUND_DEADLINE_S}s: {views}"
            for sample in self.lab.call("GET", f"/labs/{LAB}/queue")["samples"]:
                oid, sid = sample["order_id"], sample["seller_id"]
                if oid in handled or sid not in verdicts:
                    continue
                handled.add(oid)
                if on_sample:
                    on_sample(oid)
                verdict = verdicts[sid]
                if verdict is None:
                    continue
                photo = hashlib.sha256(f"photo|{oid}".encode()).hexdigest()
                self.lab.call(
                    "POST",
                    f"/samples/{oid}/custody",
                    {
                        "from_party": f"lab:{LAB}:intake",
                        "to_party": f"lab:{LAB}:bench",
                        "location": "bench 1",
                        "condition": "seal intact",
                        "evidence": [photo],
                    },
                )
                body = court_verdict(  # evidence (issue 10 item 0)
                    lambda p, b: self.lab.request("POST", p, b)[:2], LAB, oid, verdict, [photo], "scripted"
                )
                self.lab.call("POST", f"/samples/{oid}/verdict", body, expect=(201,))
            for pid, rid in rounds:
                if rid in views:
                    continue
                view = self.pm.call("GET", f"/programs/{pid}/rounds/{rid}")
                assert view["status"] != "failed", view
                if view["status"] == "completed":
                    views[rid] = view
            time.sleep(0.25)
        return views

    def orders(self, round_id: str) -> dict[str, Order]:
        return {o.seller_id: o for o in self.d.orders.list_round_orders(round_id)}

    def balance(self, pid: str) -> Balance:
        b = self.d.ledger.balance(pid)
        b.check()
        assert replay(self.d.ledger.journal(pid)) == b, "the journal does not replay to the stored balance"
        return b

    def holds(self, pid: str) -> dict[str, dict[str, Any]]:
        return {h["order_id"]: h for h in self.d.ledger.holds(pid)}

    def journal_ops(self, pid: str, order_id: str) -> list[Op]:
        return sorted(e.op for e in self.d.ledger.journal(pid) if e.subject == order_id)

    def history(self, order_id: str) -> list[dict[str, Any]]:
        arn = self.info.env["TESTBUY_ORDER_STATE_MACHINE_ARN"].replace(":stateMachine:", ":execution:")
        sfn = self.stack.client("stepfunctions")
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": f"{arn}:{order_id}", "maxResults": 1000}
        while True:
            resp = sfn.get_execution_history(**kwargs)
            out.extend(resp["events"])
            if not resp.get("nextToken"):
                return out
            kwargs["nextToken"] = resp["nextToken"]


def make_harness(local_stack: Any, stack_info: Any, market: Any, subject_prefix: str) -> Harness:
    """A harness on the shared local stack: API clients per role (subjects ``<prefix>-<role>``), the bus's queues."""
    from chalicelib.bootstrap import deps

    def client(role: Role, lab: str | None = None) -> ApiClient:
        subject = f"{subject_prefix}-{role.value}"
        return ApiClient(stack_info.api_url, issue_token(stack_info.token_secret, role, subject, lab))

    return Harness(
        stack=local_stack,
        info=stack_info,
        market=market,
        events=Events(local_stack.client("sqs"), stack_info.queues),
        pm=client(Role.PROGRAM_MANAGER),
        fin=client(Role.FINANCE),
        lab=client(Role.LAB, LAB),
        d=deps(),
    )


@pytest.fixture(scope="module")
def h(local_stack: Any, stack_info: Any, market: ScriptedMarketplace) -> Harness:
    return make_harness(local_stack, stack_info, market, "sm")


# ------------------------------------------------------------------------------------------------ stage 1


@dataclass
class Stage:
    pid: str
    rid: str
    view: dict[str, Any]
    orders: dict[str, Order]
    sellers: dict[str, SimSeller]
    funds: int
    extra: dict[str, Any] = field(default_factory=dict)

    def order(self, tag: str) -> Order:
        return self.orders[self.sellers[tag].seller_id]


@pytest.fixture(scope="module")
def stage1(h: Harness) -> Stage:
    """One round, six sellers, six paths, run concurrently."""
    m = h.market
    sellers = {
        "happy": m.add(sim_seller("happy", cost=20_000)),
        "retry": m.add(sim_seller("retry", cost=30_000), flaky=True),
        "lost": m.add(sim_seller("lost", cost=25_000, loses_parcel=True)),
        "fake": m.add(sim_seller("fake", cost=40_000, sells_fakes=True)),
        "noverdict": m.add(sim_seller("noverdict", cost=15_000)),
        "refuse": m.add(sim_seller("refuse", cost=10_000, refuses=True)),
    }
    total = sum(reservation_amount(s.expected_cost) for s in sellers.values())
    funds = total + 50_000  # budget >= total cost: every pi is 1
    pid = h.program("sm stage 1", funds, list(sellers.values()))
    rid = h.start_round(pid, seed=1)
    dup_status: list[int] = []
    first_delivery: list[datetime | None] = []
    happy_oid = order_id_for(rid, sellers["happy"].seller_id)

    def on_sample(oid: str) -> None:
        if oid == happy_oid:  # the marketplace repeats its delivery notice: harmless
            order = h.d.orders.get_order(oid)
            first_delivery.append(order.delivered_at)
            dup_status.extend([h.webhook(order), h.webhook(order)])

    views = h.run(
        [(pid, rid)],
        {
            sellers["happy"].seller_id: "authentic",
            sellers["retry"].seller_id: "authentic",
            sellers["fake"].seller_id: "counterfeit",
            sellers["noverdict"].seller_id: None,
        },
        on_sample,
    )
    orders = h.orders(rid)
    dup_status.append(h.webhook(orders[sellers["happy"].seller_id]))  # and once more after settlement
    extra = {"dup_status": dup_status, "first_delivery": first_delivery}
    return Stage(pid, rid, views[rid], orders, sellers, funds, extra)


def test_round_completes_with_every_order_terminal(h: Harness, stage1: Stage) -> None:
    view = stage1.view
    assert view["sampled"] == 6 and view["settled"] == 6
    assert view["orders_by_status"] == {"delivery_failed": 1, "refused": 1, "settled": 4}
    summary = view["summary"]
    assert summary["stuck"] == 0
    assert summary["placed"] == 5 and summary["delivery_failures"] == 1 and summary["counterfeit_hits"] == 1
    completed = h.events.wait_for(
        "archive", lambda e: e["detail-type"] == "RoundCompleted" and e["detail"]["data"]["round_id"] == stage1.rid, 1
    )
    assert len(completed) == 1 and completed[0]["detail"]["data"]["sampled"] == 6
    b = h.balance(stage1.pid)
    assert b.reserved == 0
    assert b.funded == stage1.funds


def test_happy_path_captures_the_price_and_returns_the_unused_reservation(h: Harness, stage1: Stage) -> None:
    o = stage1.order("happy")
    assert o.status is OrderStatus.SETTLED and o.verdict is not None and o.verdict.value == "authentic"
    assert o.price is not None and o.marketplace_order_id is not None and o.delivered_at is not None
    sim_order = h.market.orders[o.marketplace_order_id]
    assert sim_order.price == o.price and sim_order.status == "delivered"
    hold = h.holds(stage1.pid)[o.order_id]
    assert hold["state"] == "captured"
    assert int(hold["amount"]) == reservation_amount(stage1.sellers["happy"].expected_cost) > o.price
    assert int(hold["captured"]) == o.price and int(hold["recovered"]) == 0
    assert h.journal_ops(stage1.pid, o.order_id) == sorted([Op.RESERVE, Op.CAPTURE])
    capture = next(e for e in h.d.ledger.journal(stage1.pid) if e.subject == o.order_id and e.op is Op.CAPTURE)
    assert capture.d_captured == o.price and capture.d_available == int(hold["amount"]) - o.price
    assert o.recommendations == []
    h.events.wait_for("archive", for_order(o.order_id, "OrderSettled"), 1)
    assert types_for(h.events, o.order_id) == ["OrderPlaced", "OrderSettled", "VerdictRecorded"]
    settled = h.events.of("archive", for_order(o.order_id, "OrderSettled"))[0]["detail"]["data"]
    assert settled["spent"] == o.price and settled["refunded"] == 0 and settled["verdict"] == "authentic"
    # custody: forwarded to the lab, handed over at the lab, archived with the verdict
    chain = h.pm.call("GET", f"/samples/{o.order_id}/custody")
    assert chain["valid"] is True and chain["length"] == 3


def test_duplicate_delivery_webhook_is_harmless(h: Harness, stage1: Stage) -> None:
    o = stage1.order("happy")
    assert stage1.extra["dup_status"] == [202, 202, 202]
    assert o.status is OrderStatus.SETTLED
    assert stage1.extra["first_delivery"] == [o.delivered_at] and o.delivered_at is not None  # the first one wins
    # the order went through AwaitDelivery once and was captured once
    hist = h.history(o.order_id)
    entered = [e["stateEnteredEventDetails"]["name"] for e in hist if e["type"] == "TaskStateEntered"]
    assert entered.count("AwaitDelivery") == 1 and entered.count("CaptureSpend") == 1
    assert hist[-1]["type"] == "ExecutionSucceeded"
    assert h.journal_ops(stage1.pid, o.order_id) == sorted([Op.RESERVE, Op.CAPTURE])


def test_marketplace_503_is_retried_and_the_order_placed_once(h: Harness, stage1: Stage) -> None:
    o = stage1.order("retry")
    assert o.status is OrderStatus.SETTLED and o.marketplace_order_id is not None
    assert h.market.attempts[o.order_id] == 2
    assert [x for x in h.market.orders.values() if x.client_order_id == o.order_id] == [
        h.market.orders[o.marketplace_order_id]
    ]
    hist = h.history(o.order_id)
    failures = [e["taskFailedEventDetails"]["error"] for e in hist if e["type"] == "TaskFailed"]
    assert failures == ["MarketplaceUnavailable"]  # the first attempt's 503, seen by Retry as its error type
    entered = [e["stateEnteredEventDetails"]["name"] for e in hist if e["type"] == "TaskStateEntered"]
    assert "ReleaseBudget" not in entered
    hold = h.holds(stage1.pid)[o.order_id]
    assert hold["state"] == "captured" and int(hold["captured"]) == o.price
    h.events.wait_for("archive", for_order(o.order_id, "OrderSettled"), 1)
    placed = {e["detail"]["metadata"]["event_id"] for e in h.events.of("archive", for_order(o.order_id, "OrderPlaced"))}
    assert len(placed) == 1


def test_delivery_timeout_cancels_and_releases_the_reservation(h: Harness, stage1: Stage) -> None:
    o = stage1.order("lost")
    assert o.status is OrderStatus.DELIVERY_FAILED and o.failure == "States.Timeout"
    assert o.marketplace_order_id is not None and o.delivered_at is None
    assert h.market.orders[o.marketplace_order_id].status == "cancelled"
    hold = h.holds(stage1.pid)[o.order_id]
    assert hold["state"] == "released" and int(hold["captured"]) == 0
    assert h.journal_ops(stage1.pid, o.order_id) == sorted([Op.RESERVE, Op.RELEASE])
    release = next(e for e in h.d.ledger.journal(stage1.pid) if e.subject == o.order_id and e.op is Op.RELEASE)
    assert release.d_available == o.amount and release.d_reserved == -o.amount
    failed = h.events.wait_for("archive", for_order(o.order_id, "OrderDeliveryFailed"), 1)
    assert failed and failed[0]["detail"]["data"]["reason"] == "States.Timeout"
    assert "OrderSettled" not in types_for(h.events, o.order_id)


def test_counterfeit_is_refunded_and_enforcement_recommended(h: Harness, stage1: Stage) -> None:
    o = stage1.order("fake")
    assert o.status is OrderStatus.SETTLED and o.verdict is not None and o.verdict.value == "counterfeit"
    assert o.price is not None and o.refunded == o.price
    assert h.market.orders[str(o.marketplace_order_id)].refunded == o.price
    hold = h.holds(stage1.pid)[o.order_id]
    assert int(hold["captured"]) == o.price and int(hold["recovered"]) == o.price
    assert h.journal_ops(stage1.pid, o.order_id) == sorted([Op.RESERVE, Op.CAPTURE, Op.RECOVER])
    assert {r["action"] for r in o.recommendations} == {"take_down_listing", "lower_credit", "suspend_marketing"}
    enf = h.events.wait_for("enforcement", for_order(o.order_id), 4)
    kinds = sorted(e["detail-type"] for e in enf)
    assert kinds == ["CounterfeitConfirmed"] + ["EnforcementActionRecommended"] * 3
    actions = {e["detail"]["data"]["action"] for e in enf if e["detail-type"] == "EnforcementActionRecommended"}
    assert actions == {"take_down_listing", "lower_credit", "suspend_marketing"}
    for e in enf:
        if e["detail-type"] == "EnforcementActionRecommended":
            assert e["detail"]["data"]["rule"] == "counterfeit-confirmed" and e["detail"]["data"]["policy_version"]
            assert e["detail"]["data"]["evidence"]  # names the evidence it rests on
    settled = h.events.wait_for("archive", for_order(o.order_id, "OrderSettled"), 1)[0]["detail"]["data"]
    assert settled["spent"] == 0 and settled["refunded"] == o.price


def test_verdict_timeout_settles_with_the_money_spent(h: Harness, stage1: Stage) -> None:
    o = stage1.order("noverdict")
    assert o.status is OrderStatus.SETTLED and o.verdict is None and o.price is not None
    hold = h.holds(stage1.pid)[o.order_id]
    assert hold["state"] == "captured" and int(hold["captured"]) == o.price
    hist = h.history(o.order_id)
    timed_out = [e for e in hist if e["type"] == "TaskTimedOut"]
    assert len(timed_out) == 1 and timed_out[0]["taskTimedOutEventDetails"]["error"] == "States.Timeout"
    entered = [e["stateEnteredEventDetails"]["name"] for e in hist if e["type"] == "TaskStateEntered"]
    i = entered.index("AwaitVerdict")
    assert entered[i + 1 : i + 3] == ["VerdictOverdue", "CaptureSpend"] and "ReleaseBudget" not in entered
    settled = h.events.wait_for("archive", for_order(o.order_id, "OrderSettled"), 1)[0]["detail"]["data"]
    assert settled["spent"] == o.price and settled["verdict"] is None
    # retest (issue 10 item 1): the escalation says no lab was left to re-assign the sample to
    missed = h.events.wait_for("archive", for_order(o.order_id, "VerdictDeadlineMissed"), 1)[0]["detail"]["data"]
    assert (missed["lab_id"], missed["attempt"], missed["reassigned_to"]) == (LAB, 1, None)
    assert o.last_lab_overdue and o.retest_reasons == [] and "RetestRequested" not in types_for(h.events, o.order_id)


def test_refusal_records_it_on_the_persona_and_releases_the_money(h: Harness, stage1: Stage) -> None:
    o = stage1.order("refuse")
    assert o.status is OrderStatus.REFUSED and o.marketplace_order_id is None and o.persona_id
    hold = h.holds(stage1.pid)[o.order_id]
    assert hold["state"] == "released"
    assert h.journal_ops(stage1.pid, o.order_id) == sorted([Op.RESERVE, Op.RELEASE])
    states = {s.persona_id: s for s in h.d.personas.states(stage1.pid, o.seller_id)}
    assert states[o.persona_id].refusals == 1
    assert sum(s.refusals for s in states.values()) == 1
    assert types_for(h.events, o.order_id) == []


def test_stage1_ledger_totals(h: Harness, stage1: Stage) -> None:
    b = h.balance(stage1.pid)
    captured = [stage1.order(t).price for t in ("happy", "retry", "fake", "noverdict")]
    assert all(isinstance(p, int) for p in captured)
    fake_price = stage1.order("fake").price
    assert b.reserved == 0
    assert b.captured == sum(p for p in captured if p is not None)
    assert b.recovered == fake_price
    assert b.available == stage1.funds - b.captured + b.recovered
    assert b.available + b.reserved + b.captured - b.recovered == b.funded


# ------------------------------------------------------------------------------------------------ stage 2


def seed_drawing_everyone(costs: list[int], budget: int) -> int:
    """A seed for which the round's Poisson draw (as ``sample_sellers`` makes it) selects every seller."""
    d = sampling.design(
        np.full(len(costs), 0.5), np.array([reservation_amount(c) for c in costs]), budget, eps=1.0, blend=0.5
    )
    for seed in range(10_000):
        if len(sampling.poisson_draw(d.pi, seed)) == len(costs):
            return seed
    raise AssertionError("no seed draws every seller")


@pytest.fixture(scope="module")
def stage2(h: Harness, stage1: Stage) -> dict[str, Stage]:
    """After stage 1: the counterfeit seller again in a second programme; and a programme short of money."""
    fake = stage1.sellers["fake"]
    pid_repeat = h.program("sm repeat offender", reservation_amount(fake.expected_cost) + 10_000, [fake])
    poor = [
        h.market.add(sim_seller("poor-a", cost=10_000)),
        h.market.add(sim_seller("poor-b", cost=10_000)),
    ]
    one = reservation_amount(10_000)
    funds = one + one // 2  # enough for one of the two reservations, not both
    pid_poor = h.program("sm budget exhausted", funds, poor)
    rid_repeat = h.start_round(pid_repeat, seed=3)
    rid_poor = h.start_round(pid_poor, seed=seed_drawing_everyone([10_000, 10_000], funds), budget=2 * one)
    views = h.run(
        [(pid_repeat, rid_repeat), (pid_poor, rid_poor)],
        {fake.seller_id: "counterfeit", poor[0].seller_id: "authentic", poor[1].seller_id: "authentic"},
    )
    return {
        "repeat": Stage(pid_repeat, rid_repeat, views[rid_repeat], h.orders(rid_repeat), {"fake": fake}, 0),
        "poor": Stage(pid_poor, rid_poor, views[rid_poor], h.orders(rid_poor), {"a": poor[0], "b": poor[1]}, funds),
    }


def test_repeat_offender_is_recommended_for_a_ban(h: Harness, stage1: Stage, stage2: dict[str, Stage]) -> None:
    s = stage2["repeat"]
    o = s.order("fake")
    assert o.status is OrderStatus.SETTLED and o.verdict is not None and o.verdict.value == "counterfeit"
    by_action = {r["action"]: r for r in o.recommendations}
    assert by_action["ban_seller"]["rule"] == "repeat-offender"
    enf = h.events.wait_for("enforcement", for_order(o.order_id, "EnforcementActionRecommended"), 4)
    bans = [e["detail"]["data"] for e in enf if e["detail"]["data"]["action"] == "ban_seller"]
    assert len(bans) == 1 and bans[0]["rule"] == "repeat-offender" and bans[0]["seller_id"] == o.seller_id
    # the first counterfeit (stage 1) was not a repeat
    assert "ban_seller" not in {r["action"] for r in stage1.order("fake").recommendations}
    b = h.balance(s.pid)
    assert b.reserved == 0 and b.captured == o.price and b.recovered == o.refunded == o.price


def test_a_round_short_of_money_is_thinned_at_random_and_completes(h: Harness, stage2: dict[str, Stage]) -> None:
    s = stage2["poor"]
    # Both sellers were drawn; the money pays for one: one of the two is kept at random (r = 1/2, recorded), the
    # other is never stored, reserved or placed, so no order depends on which execution reserved first.
    assert s.view["status"] == "completed" and s.view["drawn"] == 2 and s.view["sampled"] == 1
    assert s.view["thinned_out"] == 1 and s.view["thinning_factor"] == 0.5
    assert [o.status.value for o in s.orders.values()] == ["settled"]
    bought = next(iter(s.orders.values()))
    assert bought.design_pi is not None and bought.pi == pytest.approx(bought.design_pi * 0.5)
    dropped = next(x for x in s.sellers.values() if x.seller_id != bought.seller_id)
    dropped_oid = order_id_for(s.rid, dropped.seller_id)
    assert dropped_oid not in h.holds(s.pid) and h.journal_ops(s.pid, dropped_oid) == []
    assert dropped_oid not in h.market.attempts
    assert s.view["summary"]["skipped_budget"] == 0 and s.view["summary"]["sampled"] == 1
    assert bought.price is not None
    b = h.balance(s.pid)
    spent = bought.price
    assert b == Balance(funded=s.funds, available=s.funds - spent, reserved=0, captured=spent, recovered=0)
    assert h.journal_ops(s.pid, bought.order_id) == sorted([Op.RESERVE, Op.CAPTURE])


def test_a_round_is_refused_when_funds_cannot_pay_for_one_order(h: Harness) -> None:
    seller = h.market.add(sim_seller("unfunded", cost=10_000))
    pid = h.program("sm unfunded", reservation_amount(10_000) - 1, [seller])
    status, body, _ = h.pm.request("POST", f"/programs/{pid}/rounds", {})
    assert status == 409 and body["error"]["code"] == "insufficient_funds", body
    assert h.d.rounds.list_rounds(pid) == []
    assert h.balance(pid).reserved == 0
