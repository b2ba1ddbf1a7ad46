"""Re-tests and re-assignment (issue 10 item 1) on the real ``order`` ASL, executed by moto's interpreter through the
Lambda bridge: one round, two labs, two sellers run concurrently.

- ``retest``: the first lab answers inconclusive; the sample goes to the other lab, whose counterfeit verdict resumes
  the execution (refund, enforcement, as for any counterfeit);
- ``overdue``: the first lab never answers; its deadline (``verdict_seconds``, seconds here) escalates
  (``VerdictDeadlineMissed``), the sample goes to the other lab, which answers authentic; the first lab's late
  verdict is refused (409) and changes nothing.

The single-lab "no lab left" path is stage 1's ``noverdict`` seller in test_order_workflow.py.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chalicelib.api.auth import Role, issue_token
from chalicelib.domain.models import Order, OrderStatus, VerdictKind
from chalicelib.services.rounds import reservation_amount
from testbuy.client import ApiClient
from testbuy.sim.world import World
from tests import builders
from tests.state_machine.test_order_workflow import (
    ROUND_DEADLINE_S,
    Harness,
    ScriptedMarketplace,
    for_order,
    make_harness,
    sim_seller,
)

LATE_COURT = {
    "method": "XRF",
    "analyst": "late-analyst",
    "accreditation": "ISO/IEC 17025 cert 1",
    "confidence": 0.9,
    "report_sha256": "ab" * 32,
}
RUN = uuid.uuid4().hex[:8]
LAB_A, LAB_B = f"lab-rt-a-{RUN}", f"lab-rt-b-{RUN}"


@pytest.fixture(scope="module")
def market(local_stack: Any, stack_info: Any) -> Iterator[ScriptedMarketplace]:
    sim = ScriptedMarketplace(
        world=World(seed=7, sellers=[]),
        api_url=stack_info.api_url,
        webhook_secret=stack_info.webhook_secret,
        seconds_per_day=0.2,
        transient_failure_rate=0.0,
    )
    local_stack.set_marketplace_url(sim.start())
    yield sim
    sim.stop()


@dataclass
class Outcome:
    h: Harness
    pid: str
    rid: str
    view: dict[str, Any]
    orders: dict[str, Order]
    sellers: dict[str, str]
    first_lab: dict[str, str]
    late: tuple[int, Any]
    late_order_before: Order | None


@pytest.fixture(scope="module")
def outcome(local_stack: Any, stack_info: Any, market: ScriptedMarketplace) -> Outcome:
    h = make_harness(local_stack, stack_info, market, "rt")
    labs = {
        lab: ApiClient(stack_info.api_url, issue_token(stack_info.token_secret, Role.LAB, f"rt-{lab}", lab))
        for lab in (LAB_A, LAB_B)
    }
    sellers = {
        "retest": market.add(sim_seller(f"rt-{RUN}-retest", cost=20_000, sells_fakes=True)).seller_id,
        "overdue": market.add(sim_seller(f"rt-{RUN}-overdue", cost=30_000)).seller_id,
    }
    funds = sum(reservation_amount(c) for c in (20_000, 30_000)) + 50_000
    pid = h.program(
        "rt", funds, [s for s in market.world.sellers if s.seller_id in sellers.values()], labs=[LAB_A, LAB_B]
    )
    rid = h.start_round(pid, seed=1)
    # (seller, lab attempt) -> verdict; None: never answer
    script: dict[tuple[str, int], str | None] = {
        (sellers["retest"], 1): "inconclusive",
        (sellers["retest"], 2): "counterfeit",
        (sellers["overdue"], 1): None,
        (sellers["overdue"], 2): "authentic",
    }
    handled: set[tuple[str, int]] = set()
    first_lab: dict[str, str] = {}
    late: tuple[int, Any] = (0, None)
    late_before: Order | None = None
    deadline = time.monotonic() + ROUND_DEADLINE_S
    view: dict[str, Any] = {}
    while True:
        assert time.monotonic() < deadline, f"the round did not complete in {ROUND_DEADLINE_S}s"
        for lab_id, client in labs.items():
            for sample in client.call("GET", f"/labs/{lab_id}/queue")["samples"]:
                key = (sample["seller_id"], int(sample["attempt"]))
                if key in handled or key not in script:
                    continue
                handled.add(key)
                if key[1] == 1:
                    first_lab[key[0]] = lab_id
                verdict = script[key]
                if key == (sellers["overdue"], 2):
                    # the first lab wakes up now: its late verdict is refused and changes nothing
                    late_before = h.d.orders.get_order(sample["order_id"])
                    former = first_lab[key[0]]
                    late_body = {"verdict": "counterfeit", **LATE_COURT}  # it can no longer upload to the sample
                    status, body, _ = labs[former].request("POST", f"/samples/{sample['order_id']}/verdict", late_body)
                    late = (status, body)
                if verdict is not None:
                    body = builders.court_body(client, lab_id, sample["order_id"], verdict)
                    client.call("POST", f"/samples/{sample['order_id']}/verdict", body, expect=(201,))
        view = h.pm.call("GET", f"/programs/{pid}/rounds/{rid}")
        assert view["status"] != "failed", view
        if view["status"] == "completed":
            break
        time.sleep(0.25)
    orders = {o.seller_id: o for o in h.d.orders.list_round_orders(rid)}
    by_tag = {tag: orders[sid] for tag, sid in sellers.items()}
    return Outcome(h, pid, rid, view, by_tag, sellers, first_lab, late, late_before)


def entered(h: Harness, order_id: str) -> list[str]:
    return [
        e["stateEnteredEventDetails"]["name"]
        for e in h.history(order_id)
        if e["type"].endswith("StateEntered") and e["type"] != "ChoiceStateEntered"
    ]


def test_inconclusive_goes_to_the_other_lab_whose_verdict_resumes_the_execution(outcome: Outcome) -> None:
    o, h = outcome.orders["retest"], outcome.h
    first = outcome.first_lab[outcome.sellers["retest"]]
    second = ({LAB_A, LAB_B} - {first}).pop()
    assert o.status is OrderStatus.SETTLED and o.verdict is VerdictKind.COUNTERFEIT
    assert (o.lab_attempt, o.labs_tried, o.retest_reasons) == (2, [first, second], ["inconclusive"])
    verdicts = h.d.orders.list_verdicts(o.order_id)
    assert [(v.attempt, v.lab_id, v.verdict) for v in verdicts] == [
        (1, first, VerdictKind.INCONCLUSIVE),
        (2, second, VerdictKind.COUNTERFEIT),
    ]
    states = entered(h, o.order_id)
    assert states.count("AwaitVerdict") == 2 and states.count("AfterVerdict") == 2
    assert "VerdictOverdue" not in states and "ReleaseBudget" not in states
    assert states[states.index("CaptureSpend") - 1] == "AfterVerdict"
    handover = [e for e in h.d.custody.chain(o.order_id) if e.to_party == f"lab:{second}"]
    assert [e.from_party for e in handover] == [f"lab:{first}"]
    requested = h.events.wait_for("archive", for_order(o.order_id, "RetestRequested"), 1)[0]["detail"]["data"]
    assert (requested["reason"], requested["from_lab"], requested["to_lab"], requested["attempt"]) == (
        "inconclusive",
        first,
        second,
        2,
    )
    assert len(h.events.wait_for("archive", for_order(o.order_id, "VerdictRecorded"), 2)) >= 2
    h.events.wait_for("enforcement", for_order(o.order_id, "CounterfeitConfirmed"), 1)
    hold = h.holds(outcome.pid)[o.order_id]
    assert hold["state"] == "captured" and o.refunded == o.price


def test_a_missed_deadline_escalates_and_the_other_lab_concludes(outcome: Outcome) -> None:
    o, h = outcome.orders["overdue"], outcome.h
    first = outcome.first_lab[outcome.sellers["overdue"]]
    second = ({LAB_A, LAB_B} - {first}).pop()
    assert o.status is OrderStatus.SETTLED and o.verdict is VerdictKind.AUTHENTIC
    assert (o.lab_attempt, o.labs_tried, o.retest_reasons) == (2, [first, second], ["overdue"])
    hist = h.history(o.order_id)
    timed_out = [e for e in hist if e["type"] == "TaskTimedOut"]
    assert len(timed_out) == 1 and timed_out[0]["taskTimedOutEventDetails"]["error"] == "States.Timeout"
    states = entered(h, o.order_id)
    i = states.index("VerdictOverdue")
    assert states[i - 1] == "AwaitVerdict" and states[i + 1] == "AwaitVerdict"
    assert states.count("AfterVerdict") == 1 and "ReleaseBudget" not in states
    missed = h.events.wait_for("archive", for_order(o.order_id, "VerdictDeadlineMissed"), 1)[0]["detail"]["data"]
    assert (missed["lab_id"], missed["attempt"], missed["reassigned_to"]) == (first, 1, second)
    requested = h.events.wait_for("archive", for_order(o.order_id, "RetestRequested"), 1)[0]["detail"]["data"]
    assert requested["reason"] == "overdue" and requested["to_lab"] == second
    # the late verdict: refused with a clear message, and it changed nothing
    status, body = outcome.late
    assert status == 409 and "re-assigned" in str(body), body
    before = outcome.late_order_before
    assert before is not None and before.lab_id == second and before.lab_attempt == 2
    assert [(v.attempt, v.lab_id) for v in h.d.orders.list_verdicts(o.order_id)] == [(2, second)]
    hold = h.holds(outcome.pid)[o.order_id]
    assert hold["state"] == "captured" and int(hold["captured"]) == o.price


def test_the_round_summary_counts_retests_and_escalations(outcome: Outcome) -> None:
    summary = outcome.view["summary"]
    assert summary["retest"] == {
        "retests_requested": 1,
        "overdue_escalations": 1,
        "retested_samples": 2,
        "concluded_after_retest": 2,
        "stayed_inconclusive": 0,
        "second_units": 0,
        "second_units_bought": 0,
        "second_units_concluded": 0,
    }
    assert summary["conclusive"] == 2 and summary["counterfeit_hits"] == 1 and summary["stuck"] == 0
    b = outcome.h.balance(outcome.pid)
    assert b.reserved == 0
