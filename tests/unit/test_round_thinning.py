"""The round's thinning step and the nonresponse weighting, through the services with the in-memory fakes.

A round whose drawn sample costs more than it may spend keeps a seeded random subsample (factor recorded, pi
multiplied), never stores the thinned-out units, hands exactly the kept orders to the workflow and completes when
they have all settled; ``summarize`` weights the respondents by stratum x risk-band classes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest

from chalicelib.domain import nonresponse, sampling
from chalicelib.domain.models import (
    OrderStatus,
    ProgramCreate,
    Round,
    RoundStart,
    RoundStatus,
    SellerImport,
    SellerIn,
    VerdictKind,
)
from chalicelib.services import orders as order_tasks
from chalicelib.services import programs, rounds
from tests import builders
from tests.fakes import World, world

COST = 1_000  # every seller's expected cost; the reservation is 1,150
RESERVATION = rounds.reservation_amount(COST)
SELLERS = 400


def _world(funds: int) -> tuple[World, str]:
    w = world()
    now = w.clock.now()
    req = ProgramCreate(
        name="thin",
        currency="CNY",
        budget=funds,
        period_start=now - timedelta(days=1),
        period_end=now + timedelta(days=30),
        round_size=50,
        exploration_share=0.2,
    )
    pid = programs.create_program(w.deps, req).program_id
    w.ledger.fund(pid, "f1", funds, "CNY")
    sellers = [
        SellerIn(
            seller_id=f"s{i:04d}",
            category="bags" if i % 3 else "toys",
            expected_cost=COST,
            risk=0.01 + 0.4 * (i % 10) / 10,
        )
        for i in range(SELLERS)
    ]
    for k in range(0, SELLERS, 200):
        programs.import_sellers(w.deps, pid, SellerImport(sellers=sellers[k : k + 200]))
    return w, pid


def _sample(w: World, pid: str, seed: int, budget: int, take: int = 0) -> tuple[str, rounds.RoundTaskInput]:
    """Start a round with ``budget``, then (before it samples) let another round hold ``take`` of the money."""
    rnd = rounds.start_round(w.deps, pid, RoundStart(seed=seed, budget=budget))
    if take:
        w.ledger.reserve(pid, "ord-other-round", take, "CNY", {"round_id": "rnd-other"})
    inp = rounds.RoundTaskInput(program_id=pid, round_id=rnd.round_id, correlation_id="c")
    rounds.sample_sellers(w.deps, inp)
    return rnd.round_id, inp


def test_a_round_short_of_money_is_thinned_at_random_with_the_factor_recorded() -> None:
    budget = 100 * RESERVATION
    w, pid = _world(funds=budget)
    rid, _ = _sample(w, pid, seed=11, budget=budget, take=budget // 2)  # half the money went elsewhere
    rnd = w.rounds.get_round(pid, rid)
    kept = w.orders.list_round_orders(rid)
    assert rnd.spend_limit == budget - budget // 2
    assert rnd.drawn > rnd.sampled == len(kept) > 0
    assert rnd.thinned_out == rnd.drawn - rnd.sampled
    assert rnd.thinning_factor == pytest.approx(rnd.sampled / rnd.drawn)
    # equal costs: the kept sample fits the limit exactly, so no order will be skipped for budget
    assert rnd.sampled == rnd.spend_limit // RESERVATION
    assert sum(o.amount for o in kept) <= rnd.spend_limit
    for o in kept:
        assert o.design_pi is not None and o.pi == pytest.approx(o.design_pi * rnd.thinning_factor)
    handed = w.evidence.docs[f"rounds/{rid}/orders.json"]
    assert sorted(x["order_id"] for x in handed) == sorted(o.order_id for o in kept)


def test_thinning_is_deterministic_per_seed_and_differs_across_seeds() -> None:
    budget = 100 * RESERVATION

    def kept_sellers(seed: int) -> tuple[set[str], int]:
        w, pid = _world(funds=budget)
        rid, _ = _sample(w, pid, seed=seed, budget=budget, take=budget // 2)
        return {o.seller_id for o in w.orders.list_round_orders(rid)}, w.rounds.get_round(pid, rid).drawn

    first, drawn = kept_sellers(5)
    again, drawn_again = kept_sellers(5)
    other, _ = kept_sellers(6)
    assert first == again and drawn == drawn_again
    assert first != other


def test_a_retried_sampling_task_thins_to_the_limit_it_recorded() -> None:
    budget = 100 * RESERVATION
    w, pid = _world(funds=budget)
    rid, inp = _sample(w, pid, seed=3, budget=budget, take=budget // 2)
    before = {o.order_id for o in w.orders.list_round_orders(rid)}
    w.ledger.release(pid, "ord-other-round")  # the money comes back before the retry
    rounds.sample_sellers(w.deps, inp)
    assert {o.order_id for o in w.orders.list_round_orders(rid)} == before
    assert w.rounds.get_round(pid, rid).sampled == len(before)


def test_a_round_that_can_pay_for_its_draw_is_not_thinned() -> None:
    w, pid = _world(funds=10**9)
    rid, _ = _sample(w, pid, seed=2, budget=SELLERS * RESERVATION)  # a census budget: every pi is 1
    rnd = w.rounds.get_round(pid, rid)
    kept = w.orders.list_round_orders(rid)
    assert rnd.thinning_factor == 1.0 and rnd.thinned_out == 0 and rnd.drawn == rnd.sampled == SELLERS
    assert all(o.pi == o.design_pi == 1.0 for o in kept)


def test_a_thinned_round_completes_when_its_kept_orders_settle() -> None:
    budget = 60 * RESERVATION
    w, pid = _world(funds=budget)
    rid, inp = _sample(w, pid, seed=9, budget=budget, take=budget // 2)
    kept = w.orders.list_round_orders(rid)
    assert w.rounds.get_round(pid, rid).thinned_out > 0
    rounds.await_orders(w.deps, inp, "tok-round")
    assert "tok-round" not in w.workflow.resumed
    for k, o in enumerate(kept):
        oin = order_tasks.OrderTaskInput(order_id=o.order_id, program_id=pid, round_id=rid, correlation_id="c")
        order_tasks.reserve_budget(w.deps, oin)  # every kept order finds its money
        verdict = VerdictKind.COUNTERFEIT if k % 4 == 0 else VerdictKind.AUTHENTIC
        w.orders.orders[o.order_id] = w.orders.get_order(o.order_id).model_copy(
            update={"status": OrderStatus.SETTLED, "verdict": verdict}
        )
        order_tasks.finalize(w.deps, oin)
    assert w.workflow.resumed["tok-round"] == {"settled": len(kept)}
    out = rounds.aggregate_round(w.deps, inp)
    summary = w.rounds.get_round(pid, rid).summary or {}
    assert out["stuck"] == 0 and summary["sampled"] == len(kept) and summary["skipped_budget"] == 0
    assert summary["nonresponse"]["respondents"] == summary["nonresponse"]["eligible"] == len(kept)


def _orders(spec: list[tuple[float, float, int, int, int]]) -> list[Any]:
    """Orders from (risk, pi, respondents, of which hits, nonrespondents) per group, one stratum."""
    out = []
    for risk, pi, n_resp, hits, n_non in spec:
        for k in range(n_resp):
            verdict = VerdictKind.COUNTERFEIT if k < hits else VerdictKind.AUTHENTIC
            out.append(builders.order(risk=risk, pi=pi, verdict=verdict, status=OrderStatus.SETTLED))
        for k in range(n_non):
            status = (OrderStatus.REFUSED, OrderStatus.SKIPPED_BUDGET, OrderStatus.DELIVERY_FAILED)[k % 3]
            out.append(builders.order(risk=risk, pi=pi, status=status))
    return out


def test_summarize_reweights_respondents_within_their_risk_band() -> None:
    # low risk: 20 units at pi 0.5, all bought, 2 fakes; high risk: 20 units at pi 1, half refused or lost, and
    # half the rest fakes. If the missing high-risk units are like the bought ones (missing at random within the
    # band), the frame's prevalence estimate is (2*2 + 20*0.5) / (20*2 + 20) = 14/60; treating them as missing
    # at random across the whole sample (the old estimate) gives (2*2 + 5) / (20*2 + 10) = 9/50.
    orders = _orders([(0.01, 0.5, 20, 2, 0), (0.5, 1.0, 10, 5, 10)])
    summary = rounds.summarize(orders, population=60)
    assert summary["estimate"]["prevalence"] == pytest.approx(14 / 60)
    assert summary["nonresponse"] == {
        "eligible": 40,
        "respondents": 30,
        "classes": 2,
        "max_weight_factor": pytest.approx(2.0),
        "unrepresented": 0,
    }


def test_program_metrics_use_the_adjusted_weights_round_by_round() -> None:
    w, pid = _world(funds=10**9)
    program = w.programs.get_program(pid)
    for rid, spec in (("rnd-a", [(0.01, 0.5, 20, 2, 0), (0.5, 1.0, 10, 5, 10)]), ("rnd-b", [(0.2, 1.0, 10, 1, 0)])):
        w.rounds.put_round(_completed_round(w, pid, rid, population=60 if rid == "rnd-a" else 10))
        w.orders.put_orders([o.model_copy(update={"round_id": rid, "program_id": pid}) for o in _orders(spec)])
    est = rounds.program_metrics(w.deps, program)["estimate"]
    # frame-size weighted combination of 14/60 (60 sellers) and 1/10 (10 sellers)
    assert est["prevalence"] == pytest.approx((60 * 14 / 60 + 10 * 0.1) / 70)


def _completed_round(w: World, pid: str, rid: str, population: int) -> Round:
    now = w.clock.now()
    return Round(
        program_id=pid,
        round_id=rid,
        status=RoundStatus.COMPLETED,
        seed=1,
        budget=1,
        started_at=now,
        execution_name=rid,
        population=population,
    )


def test_a_stratum_without_respondents_is_reported_unrepresented() -> None:
    pi = np.array([0.5, 0.5, 0.5, 0.5])
    adj = nonresponse.nonresponse_adjust(pi, [True, True, False, False], [0, 0, 1, 1], [0.1, 0.2, 0.1, 0.2])
    assert adj.unrepresented == 2 and adj.n_classes == 1
    assert adj.pi[:2].tolist() == [0.5, 0.5] and np.isnan(adj.pi[2:]).all()


def test_the_default_budget_of_a_census_is_not_a_unit_short() -> None:
    # 11 sellers whose reservations total 13,325: 11 x (13,325 / 11) is 13,324.999... in floating point, and a
    # budget truncated to 13,324 would now thin one seller out of what is meant to be a census
    w = world()
    now = w.clock.now()
    req = ProgramCreate(
        name="census",
        currency="CNY",
        budget=10**6,
        period_start=now - timedelta(days=1),
        period_end=now + timedelta(days=30),
        round_size=11,
        exploration_share=1.0,
    )
    pid = programs.create_program(w.deps, req).program_id
    w.ledger.fund(pid, "f1", 10**6, "CNY")
    sellers = [SellerIn(seller_id=f"c{i}", category="bags", expected_cost=1_018 + 7 * i, risk=0.1) for i in range(11)]
    programs.import_sellers(w.deps, pid, SellerImport(sellers=sellers))
    rnd = rounds.start_round(w.deps, pid, RoundStart(seed=1))
    assert rnd.budget == sum(rounds.reservation_amount(s.expected_cost) for s in sellers) == 13_325
    rounds.sample_sellers(w.deps, rounds.RoundTaskInput(program_id=pid, round_id=rnd.round_id, correlation_id="c"))
    after = w.rounds.get_round(pid, rnd.round_id)
    assert after.sampled == after.drawn == 11 and after.thinned_out == 0


def test_exploration_probabilities_are_thinned_with_the_same_factor() -> None:
    budget = 100 * RESERVATION
    w, pid = _world(funds=budget)
    rid, _ = _sample(w, pid, seed=11, budget=budget, take=budget // 2)
    rnd = w.rounds.get_round(pid, rid)
    r = rnd.thinning_factor
    # the design and draw sample_sellers made (no earlier rounds: the learned risk is the imported risk)
    program = w.programs.get_program(pid)
    sellers = rounds.frame(program, w.deps.programs.list_sellers(pid))
    cats = sorted({s.category for s in sellers})
    design = sampling.design(
        np.array([s.risk for s in sellers]),
        np.array([rounds.reservation_amount(s.expected_cost) for s in sellers]),
        rnd.budget,
        eps=program.exploration_share,
        blend=program.blend,
        strata=np.array([cats.index(s.category) for s in sellers]),
    )
    drawn = sampling.draw(design, rnd.seed)
    q = dict(zip((sellers[i].seller_id for i in drawn.index), design.exploration_pi(drawn.index), strict=True))
    flag = dict(zip((sellers[i].seller_id for i in drawn.index), drawn.exploration, strict=True))
    kept = w.orders.list_round_orders(rid)
    assert 0 < r < 1 and any(o.exploration for o in kept) and not all(o.exploration for o in kept)
    for o in kept:
        assert o.exploration == flag[o.seller_id]
        assert o.exploration_pi == pytest.approx(q[o.seller_id] * r) and o.exploration_pi <= o.pi
