"""The round's sampling task against the real adapters: frame, per-order cap, recorded design, learning."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.domain.errors import InvalidState
from chalicelib.domain.models import (
    OrderStatus,
    ProgramCreate,
    Round,
    RoundStatus,
    SellerImport,
    SellerIn,
    VerdictKind,
)
from chalicelib.services import orders as order_tasks
from chalicelib.services import programs, rounds
from tests import builders


def _program(deps: Any, cap: int | None) -> str:
    now = datetime.now(UTC)
    req = ProgramCreate(
        name="frame",
        currency="CNY",
        budget=10**9,
        period_start=now - timedelta(days=1),
        period_end=now + timedelta(days=30),
        round_size=50,
        exploration_share=1.0,
        per_order_cap=cap,
    )
    pid = programs.create_program(deps, req).program_id
    deps.ledger.fund(pid, "f1", 10**9, "CNY")  # the money the round may spend (sampling thins to it)
    sellers = [
        SellerIn(seller_id=f"s{i:03d}", category="bags" if i % 2 else "toys", expected_cost=1_000 * (i + 1), risk=0.1)
        for i in range(20)
    ]
    programs.import_sellers(deps, pid, SellerImport(sellers=sellers))
    return pid


def _round(deps: Any, pid: str, budget: int) -> str:
    rid = f"rnd-{uuid.uuid4().hex[:12]}"
    deps.rounds.put_round(
        Round(
            program_id=pid,
            round_id=rid,
            status=RoundStatus.STARTED,
            seed=7,
            budget=budget,
            started_at=datetime.now(UTC),
            execution_name=rid,
        )
    )
    return rid


def test_census_records_pi_seed_stratum_and_cap_limits_the_frame(deps: Any) -> None:
    pid = _program(deps, cap=10_500)  # sellers s000..s009 cost 1,000..10,000; s010.. cost more than the cap
    rid = _round(deps, pid, budget=10**8)  # budget above the frame's total cost: a census of the frame
    out = rounds.sample_sellers(deps, rounds.RoundTaskInput(program_id=pid, round_id=rid, correlation_id="c"))
    orders = deps.orders.list_round_orders(rid)
    assert out["count"] == len(orders) == 10
    assert {o.seller_id for o in orders} == {f"s{i:03d}" for i in range(10)}
    assert all(o.pi == 1.0 and o.seed == 7 and o.stratum == o.category and o.amount <= 10_500 for o in orders)
    # exploration share 1 and a census: every unit is drawn through the uniform part, with probability 1
    assert all(o.exploration is True and o.exploration_pi == 1.0 for o in orders)
    rnd = deps.rounds.get_round(pid, rid)
    assert rnd.population == 10 and rnd.sampled == 10 and sum(rnd.population_by_stratum.values()) == 10
    assert rnd.top_decile_threshold == 0.1 and rnd.top_decile_flagged == 10  # all risks tie at 0.1: all flagged


def test_next_round_learns_from_verdicts(deps: Any) -> None:
    pid = _program(deps, cap=None)
    first = _round(deps, pid, budget=10**8)
    rounds.sample_sellers(deps, rounds.RoundTaskInput(program_id=pid, round_id=first, correlation_id="c"))
    for o in deps.orders.list_round_orders(first):
        fake = o.seller_id == "s003"
        builders.force_order_fields(
            deps.orders,
            o.order_id,
            {"verdict": (VerdictKind.COUNTERFEIT if fake else VerdictKind.AUTHENTIC), "status": OrderStatus.SETTLED},
        )
    second = _round(deps, pid, budget=10**8)
    sellers = rounds.frame(deps.programs.get_program(pid), deps.programs.list_sellers(pid))
    learned = dict(zip([s.seller_id for s in sellers], rounds.learned_risk(deps, pid, second, sellers), strict=True))
    assert learned["s003"] > 0.1 > learned["s004"], "a confirmed fake raises risk; a clean buy lowers it"


def test_an_order_that_is_not_reserved_is_never_placed(deps: Any) -> None:
    pid = _program(deps, cap=None)
    rid = _round(deps, pid, budget=10**8)
    rounds.sample_sellers(deps, rounds.RoundTaskInput(program_id=pid, round_id=rid, correlation_id="c"))
    order = deps.orders.list_round_orders(rid)[0]
    builders.force_order_fields(
        deps.orders, order.order_id, {"persona_id": f"{pid}-p000", "status": OrderStatus.FAILED}
    )
    with pytest.raises(InvalidState, match="only a reserved order"):
        order_tasks.place_order(
            deps, order_tasks.OrderTaskInput(order_id=order.order_id, program_id=pid, round_id=rid, correlation_id="c")
        )
