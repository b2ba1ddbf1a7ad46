"""The risk model's section of round and programme metrics, against the in-memory fakes: sampling marks the
exploration units with their probability, the round records its frame's top-decile threshold, and the metrics measure
the model on exactly those units (pooled over rounds for the programme)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from chalicelib.domain import model_quality, sampling
from chalicelib.domain.models import Program, Round, RoundStatus, Seller, Timeouts, VerdictKind
from chalicelib.services import rounds
from tests.fakes import World, world

PID = "prg-rm"
N = 400


def _setup(w: World) -> None:
    now = w.clock.now()
    w.programs.put_program(
        Program(
            program_id=PID,
            name="p",
            currency="CNY",
            budget=10**9,
            period_start=now - timedelta(days=1),
            period_end=now + timedelta(days=30),
            round_size=120,
            exploration_share=0.4,
            blend=0.5,
            labs=["lab-1"],
            timeouts=Timeouts(),
            created_at=now,
        )
    )
    w.ledger.open_account(PID, "CNY", None)
    w.ledger.fund(PID, "f1", 10**9, "CNY")  # sampling thins to min(round budget, available balance)
    rng = np.random.default_rng(5)
    w.programs.put_sellers(
        PID,
        [
            Seller(
                program_id=PID,
                seller_id=f"s{i:04d}",
                category="bags" if i % 3 else "toys",
                expected_cost=int(rng.integers(800, 1_500)),
                risk=float(rng.uniform(0.01, 0.4)),
            )
            for i in range(N)
        ],
    )


def _round(w: World, rid: str, seed: int) -> rounds.RoundTaskInput:
    w.rounds.put_round(
        Round(
            program_id=PID,
            round_id=rid,
            status=RoundStatus.STARTED,
            seed=seed,
            budget=120_000,
            started_at=w.clock.now(),
            execution_name=rid,
        )
    )
    inp = rounds.RoundTaskInput(program_id=PID, round_id=rid, correlation_id=rid)
    rounds.sample_sellers(w.deps, inp)
    return inp


def _verdicts(w: World, rid: str) -> None:
    """Fakes among the higher-risk sellers; every seventh seller's order inconclusive (left out of the measures)."""
    imported = {s.seller_id: s.risk for s in w.programs.list_sellers(PID)}
    for o in w.orders.list_round_orders(rid):
        k = int(o.seller_id[1:])
        kind = VerdictKind.COUNTERFEIT if imported[o.seller_id] > 0.2 and k % 2 else VerdictKind.AUTHENTIC
        if k % 7 == 0:
            kind = VerdictKind.INCONCLUSIVE
        w.orders.orders[o.order_id] = o.model_copy(update={"verdict": kind})


def test_sampling_marks_exploration_units_with_their_probability_and_records_the_threshold() -> None:
    w = world()
    _setup(w)
    inp = _round(w, "rnd-a", seed=11)
    orders = w.orders.list_round_orders("rnd-a")
    rnd = w.rounds.get_round(PID, "rnd-a")
    explore = [o for o in orders if o.exploration]
    assert 0 < len(explore) < len(orders)
    for o in orders:
        assert o.exploration_pi is not None and 0 < o.exploration_pi <= o.pi
    # the same seed and design give the same draw: the flags are sampling.draw's
    sellers = rounds.frame(w.programs.get_program(PID), w.programs.list_sellers(PID))
    risks = np.array([o.risk for o in sorted(orders, key=lambda o: o.seller_id)])
    assert rnd.top_decile_threshold is not None and rnd.top_decile_flagged is not None
    all_risks = rounds.learned_risk(w.deps, PID, inp.round_id, sellers)
    assert (rnd.top_decile_threshold, rnd.top_decile_flagged) == model_quality.top_decile(all_risks)
    assert rnd.top_decile_flagged == pytest.approx(N / 10, abs=2)
    assert set(risks) <= set(all_risks)
    codes = {c: i for i, c in enumerate(sorted({s.category for s in sellers}))}
    cost = np.array([rounds.reservation_amount(s.expected_cost) for s in sellers], dtype=np.int64)
    strata = np.array([codes[s.category] for s in sellers], dtype=np.int64)
    d = sampling.design(all_risks, cost, 120_000, eps=0.4, blend=0.5, strata=strata)
    drawn = sampling.draw(d, 11)
    ids = [sellers[i].seller_id for i in drawn.index]
    kept = {o.seller_id for o in orders}  # the draw, thinned at random if it costs more than the round budget
    assert kept <= set(ids) and rnd.drawn == len(ids) and rnd.sampled == len(kept)
    flags = {sellers[i].seller_id: bool(e) for i, e in zip(drawn.index, drawn.exploration, strict=True)}
    assert {o.seller_id: o.exploration for o in orders} == {k: v for k, v in flags.items() if k in kept}


def test_round_and_programme_metrics_measure_the_model_on_the_exploration_units() -> None:
    w = world()
    _setup(w)
    per_round = {}
    for rid, seed in (("rnd-a", 11), ("rnd-b", 12)):
        inp = _round(w, rid, seed)
        _verdicts(w, rid)
        rounds.aggregate_round(w.deps, inp)
        used = [
            o for o in w.orders.list_round_orders(rid) if o.exploration and o.verdict is not VerdictKind.INCONCLUSIVE
        ]
        per_round[rid] = used
        section = w.rounds.get_round(PID, rid).summary["risk_model"]  # type: ignore[index]
        assert section["units"] == len(used) > 0
        assert section["fakes"] == sum(o.verdict is VerdictKind.COUNTERFEIT for o in used)
        assert section["rounds"] == 1 and section["population"] == N
        assert section["auc"]["estimate"] is not None
        assert section["auc"]["ci_low"] <= section["auc"]["estimate"] <= section["auc"]["ci_high"]
        assert len(section["reliability"]) == len(model_quality.BIN_EDGES) - 1
    names = {p[0] for p in w.metrics.points}
    assert {"RiskModelAUC", "RiskModelBrier", "RiskModelTopDecilePrecision"} <= names

    metrics = rounds.program_metrics(w.deps, w.programs.get_program(PID))
    pooled = metrics["risk_model"]
    used = per_round["rnd-a"] + per_round["rnd-b"]
    assert pooled["rounds"] == 2 and pooled["population"] == 2 * N
    assert pooled["units"] == len(used)
    # the pooled Brier score is the weighted mean over both rounds' units, each with its own exploration_pi
    w_ = np.array([1 / o.exploration_pi for o in used])  # type: ignore[operator]
    err = np.array([(o.risk - (o.verdict is VerdictKind.COUNTERFEIT)) ** 2 for o in used])  # type: ignore[operator]
    assert pooled["brier"]["estimate"] == pytest.approx(float(w_ @ err / w_.sum()))


def test_a_round_with_no_verdicts_reports_why_the_model_cannot_be_measured() -> None:
    w = world()
    _setup(w)
    inp = _round(w, "rnd-a", seed=11)
    rounds.aggregate_round(w.deps, inp)
    section = w.rounds.get_round(PID, "rnd-a").summary["risk_model"]  # type: ignore[index]
    assert section["units"] == 0
    for key in ("auc", "brier", "top_decile_precision"):
        assert section[key]["estimate"] is None and section[key]["reason"]
    assert not {"RiskModelAUC", "RiskModelBrier"} & {p[0] for p in w.metrics.points}
