"""Round use cases: start a round (API) and the tasks of the ``round`` state machine."""

from __future__ import annotations

import hashlib
import secrets
from collections import Counter
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from chalicelib.domain import estimation, model_quality, nonresponse, risk, sampling, second_unit
from chalicelib.domain.errors import InsufficientFunds, InvalidInput, InvalidState
from chalicelib.domain.events import RoundCompleted, RoundFailed, deterministic_event_id, envelope
from chalicelib.domain.models import (
    TERMINAL_STATUSES,
    Order,
    OrderStatus,
    Program,
    Round,
    RoundStart,
    RoundStatus,
    VerdictKind,
)
from chalicelib.services.deps import Deps
from chalicelib.services.programs import marketplace_refund_rate

# The reservation covers the expected price plus this margin; capture returns what was not spent.
RESERVATION_MARGIN = 0.15


class RoundTaskInput(BaseModel):
    """What the round state machine passes to its tasks (extra state fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
    program_id: str
    round_id: str
    correlation_id: str


def order_id_for(round_id: str, seller_id: str) -> str:
    """Deterministic, so a retried sampling task creates the same orders (and the same execution names)."""
    return "ord-" + hashlib.sha256(f"{round_id}|{seller_id}".encode()).hexdigest()[:24]


def reservation_amount(expected_cost: int, cap: int | None = None) -> int:
    """Expected cost plus the margin, never above the programme's per-order cap."""
    amount = expected_cost + (expected_cost * int(RESERVATION_MARGIN * 100) + 99) // 100
    return amount if cap is None else min(amount, cap)


def frame(program: Program, sellers: list[Any]) -> list[Any]:
    """The sampling frame: eligible sellers whose expected cost fits the per-order cap (the estimate speaks for
    exactly this population), in a stable order."""
    cap = program.per_order_cap
    return sorted(
        (s for s in sellers if s.eligible and (cap is None or s.expected_cost <= cap)), key=lambda s: s.seller_id
    )


def start_round(d: Deps, program_id: str, req: RoundStart) -> Round:
    """Validate that a round can run, record it and start its ``round`` execution (named by the round id)."""
    program = d.programs.get_program(program_id)
    now = d.clock.now()
    if not (program.period_start <= now <= program.period_end):
        raise InvalidState(
            f"programme {program_id} runs from {program.period_start.isoformat()} to {program.period_end.isoformat()}",
            details=[{"field": "period"}],
        )
    sellers = frame(program, d.programs.list_sellers(program_id))
    if not sellers:
        raise InvalidState(
            "the programme has no eligible sellers; import sellers first", details=[{"field": "sellers"}]
        )
    available = d.ledger.balance(program_id).available
    cap = program.per_order_cap
    total_cost = sum(reservation_amount(s.expected_cost, cap) for s in sellers)
    # integer arithmetic: round_size x mean cost, never a unit short of a census through float rounding (the
    # sample is thinned to the budget, so a budget one unit below the frame's cost would drop a seller)
    budget = req.budget if req.budget is not None else program.round_size * total_cost // len(sellers)
    cheapest = min(reservation_amount(s.expected_cost, cap) for s in sellers)
    if budget < cheapest:
        raise InvalidInput(
            f"round budget {budget} is below the cheapest order {cheapest}",
            details=[{"field": "budget", "minimum": cheapest}],
        )
    if available < cheapest:
        raise InsufficientFunds(
            f"available budget {available} cannot pay for even the cheapest order {cheapest}; fund the programme first",
            details=[{"field": "budget", "available": available}],
        )
    budget = min(budget, available)
    round_id = d.ids.new("rnd")
    rnd = Round(
        program_id=program_id,
        round_id=round_id,
        status=RoundStatus.STARTED,
        seed=req.seed if req.seed is not None else secrets.randbits(62),
        budget=budget,
        started_at=now,
        execution_name=round_id,
    )
    d.rounds.put_round(rnd)
    d.workflow.start(
        "round",
        round_id,
        {
            "program_id": program_id,
            "round_id": round_id,
            "correlation_id": round_id,
            "timeouts": program.timeouts.model_dump(),
        },
    )
    return rnd


def load_program(d: Deps, inp: RoundTaskInput) -> dict[str, Any]:
    program = d.programs.get_program(inp.program_id)
    rnd = d.rounds.get_round(inp.program_id, inp.round_id)
    return {"currency": program.currency, "budget": rnd.budget, "seed": rnd.seed}


def sample_sellers(d: Deps, inp: RoundTaskInput, bucket_prefix: str = "rounds") -> dict[str, Any]:
    """Design and draw the round's Poisson sample, thin it to what the round can spend, store every kept unit
    with its final pi, stratum, seed and round.

    The design spends the round budget only in expectation. When the drawn units' reservations exceed the spend
    limit -- min(round budget, available balance now) -- a seeded simple random subsample is kept
    (``chalicelib.domain.nonresponse.thin``): each drawn unit is kept with the recorded ``thinning_factor`` r, and
    its stored ``pi`` is ``design_pi * r``, exact given the draw. Thinned-out units are not stored as orders (the
    round's ``sampled`` counts only kept units, so ``settled >= sampled`` still means done). What is *not* exact:
    with unequal costs the kept total can still exceed the limit (rarely, z = 3), and concurrent rounds can take
    money before these orders reserve; those budget skips are nonresponse, weighted by class in :func:`summarize`.
    """
    program = d.programs.get_program(inp.program_id)
    rnd = d.rounds.get_round(inp.program_id, inp.round_id)
    sellers = frame(program, d.programs.list_sellers(inp.program_id))
    risks = learned_risk(d, inp.program_id, inp.round_id, sellers)
    cap = program.per_order_cap
    cost = np.fromiter((reservation_amount(s.expected_cost, cap) for s in sellers), dtype=np.int64, count=len(sellers))
    categories = sorted({s.category for s in sellers})
    code = {c: i for i, c in enumerate(categories)}
    strata = np.fromiter((code[s.category] for s in sellers), dtype=np.int64, count=len(sellers))
    design = sampling.design(
        risks,
        cost,
        rnd.budget,
        eps=program.exploration_share,
        blend=program.blend,
        strata=strata if len(categories) > 1 else None,
    )
    drawn = sampling.draw(design, rnd.seed)
    limit = rnd.spend_limit
    if limit is None:  # recorded first, so a retry thins to the same limit
        limit = max(0, min(rnd.budget, d.ledger.balance(inp.program_id).available))
        d.rounds.update_round(inp.program_id, inp.round_id, {"spend_limit": limit})
    thinning = nonresponse.thin(cost[drawn.index], limit, rnd.seed)
    r = thinning.factor
    chosen = drawn.index[thinning.keep]
    explored = drawn.exploration[thinning.keep]
    q = design.exploration_pi(chosen) * r  # the exploration units are thinned with the same r
    top_threshold, top_flagged = model_quality.top_decile(risks)
    now = d.clock.now()
    orders = [
        Order(
            order_id=order_id_for(inp.round_id, sellers[i].seller_id),
            program_id=inp.program_id,
            round_id=inp.round_id,
            seller_id=sellers[i].seller_id,
            category=sellers[i].category,
            pi=float(design.pi[i] * r),
            design_pi=float(design.pi[i]),
            risk=float(risks[i]),
            exploration=explore,
            exploration_pi=qi,
            stratum=sellers[i].category,
            seed=rnd.seed,
            amount=int(cost[i]),
            currency=program.currency,
            status=OrderStatus.SAMPLED,
            created_at=now,
            updated_at=now,
        )
        for i, explore, qi in zip(chosen.tolist(), explored.tolist(), q.tolist(), strict=True)
    ]
    d.orders.put_orders(orders)
    population_by_stratum = Counter(s.category for s in sellers)
    d.rounds.update_round(
        inp.program_id,
        inp.round_id,
        {
            "status": RoundStatus.SAMPLED.value,
            "population": len(sellers),
            "sampled": len(orders),
            "drawn": thinning.drawn,
            "thinned_out": thinning.thinned_out,
            "thinning_factor": r,
            "population_by_stratum": dict(population_by_stratum),
            "expected_spend": round(design.expected_spend),
            "expected_size": design.expected_size,
            "top_decile_threshold": top_threshold,
            "top_decile_flagged": top_flagged,
        },
    )
    handed = [orders[k] for k in nonresponse.placing_order(len(orders), rnd.seed).tolist()]
    bucket, key = d.evidence.put_json(
        f"{bucket_prefix}/{inp.round_id}/orders.json", [{"order_id": o.order_id} for o in handed]
    )
    return {"bucket": bucket, "key": key, "count": len(orders)}


def learned_risk(d: Deps, program_id: str, round_id: str, sellers: list[Any]) -> np.ndarray[Any, Any]:
    """Each seller's risk for this round: its model score shrunk toward its category's Beta-Binomial rate and
    updated by its own earlier test buys in this programme (``chalicelib.domain.risk.combine``), so every round
    learns from the conclusive verdicts of the rounds before it."""
    outcomes: list[tuple[str, bool]] = []
    own: dict[str, list[int]] = {}
    for rnd in d.rounds.list_rounds(program_id):
        if rnd.round_id == round_id:
            continue
        for o in second_unit.units(d.orders.list_round_orders(rnd.round_id)):  # one outcome per sampled unit
            if o.verdict is not None and o.verdict.conclusive:
                fake = o.verdict is VerdictKind.COUNTERFEIT
                outcomes.append((o.category, fake))
                counts = own.setdefault(o.seller_id, [0, 0])
                counts[0] += 1
                counts[1] += int(fake)
    priors = risk.update_priors({}, outcomes) if outcomes else {}
    return np.fromiter(
        (risk.combine(s.risk, priors.get(s.category), *own.get(s.seller_id, (0, 0))) for s in sellers),
        dtype=np.float64,
        count=len(sellers),
    )


def start_order(d: Deps, item: dict[str, Any]) -> dict[str, Any]:
    """Distributed Map item processor: start the order's own execution, named by its order id (idempotent)."""
    order = d.orders.get_order(str(item["order_id"]))
    program = d.programs.get_program(order.program_id)
    d.workflow.start(
        "order",
        order.order_id,
        {
            "order_id": order.order_id,
            "program_id": order.program_id,
            "round_id": order.round_id,
            "correlation_id": str(item.get("correlation_id", order.round_id)),
            "timeouts": program.timeouts.model_dump(),
        },
    )
    return {"order_id": order.order_id, "started": True}


def await_orders(d: Deps, inp: RoundTaskInput, token: str) -> dict[str, Any]:
    """Park the round until its last order settles (that order's Finalize resumes it), unless all already have."""
    rnd = d.rounds.arm_round(inp.program_id, inp.round_id, token)
    if rnd.settled >= rnd.sampled + rnd.second_units:
        d.workflow.succeed(token, {"settled": rnd.settled})
    return {"armed": True}


def summarize(
    orders: list[Order], population: int, population_by_stratum: dict[str, int] | None = None
) -> dict[str, Any]:
    """Round figures: raw hit rate among conclusive verdicts and the design-weighted prevalence estimate.

    The estimate is Hajek over the conclusive verdicts with each one's recorded pi (already multiplied by the
    round's thinning factor, exact given the draw) divided by its weighting class's response rate
    (:func:`respondent_pi`). Exact: the design and the thinning probabilities. Assumed: refusals, losses, budget
    skips, inconclusive verdicts and open orders are missing at random within round x stratum x risk band
    (``chalicelib.domain.nonresponse`` says where that fails); ``nonresponse`` in the summary shows the classes.

    Second units (retest mode ``second_unit``) are never units of their own: the statistics (sampled, placed,
    delivered, verdicts, conclusive, hits, the estimate, nonresponse, failures) are per sampled unit, whose outcome
    is the conclusive verdict of any of its units (``chalicelib.domain.second_unit.units``); the money and the
    purchases (spent, refund rate, service quality, stuck) count every order bought, second units included.
    """
    bought = list(orders)
    orders = second_unit.units(bought)
    placed = [o for o in orders if o.marketplace_order_id is not None]
    delivered = [o for o in orders if o.delivered_at is not None]
    with_verdict = [o for o in orders if o.verdict is not None]
    conclusive = [o for o in with_verdict if o.verdict is not None and o.verdict.conclusive]
    hits = [o for o in conclusive if o.verdict is VerdictKind.COUNTERFEIT]
    settled = [o for o in bought if o.status is OrderStatus.SETTLED]
    refunded = [o for o in settled if o.refunded > 0]
    spent = sum((o.price or 0) - o.refunded for o in settled)
    sq = [o.service_quality for o in bought if o.service_quality is not None]
    summary: dict[str, Any] = {
        "population": population,
        "sampled": len(orders),
        "placed": len(placed),
        "delivered": len(delivered),
        "verdicts": len(with_verdict),
        "conclusive": len(conclusive),
        "counterfeit_hits": len(hits),
        "hit_rate": len(hits) / len(conclusive) if conclusive else None,
        "inconclusive_rate": (len(with_verdict) - len(conclusive)) / len(with_verdict) if with_verdict else None,
        "refund_rate": len(refunded) / len(settled) if settled else None,
        "delivery_failures": sum(1 for o in orders if o.status is OrderStatus.DELIVERY_FAILED),
        "skipped_budget": sum(1 for o in orders if o.status is OrderStatus.SKIPPED_BUDGET),
        "spent": spent,
        "service_quality": sum(sq) / len(sq) if sq else None,
        "stuck": sum(1 for o in bought if o.status not in TERMINAL_STATUSES),
        "failures_by_reason": dict(sorted(Counter(o.failure for o in orders if o.failure).items())),
        "nonresponse": None,
        "estimate": None,
        "retest": retest_counts(bought),
    }
    if conclusive:
        y = np.fromiter((o.verdict is VerdictKind.COUNTERFEIT for o in conclusive), dtype=np.float64)
        pi, adjustment = respondent_pi(orders)
        summary["nonresponse"] = adjustment
        est = estimation.estimate(y, pi, population)
        summary["estimate"] = estimate_dict(est)
        if population_by_stratum and len(population_by_stratum) > 1:
            names = sorted(population_by_stratum)
            code = {c: i for i, c in enumerate(names)}
            strata = np.fromiter((code[o.stratum] for o in conclusive), dtype=np.int64)
            _, per = estimation.estimate_by_stratum(
                y, pi, strata, {code[c]: n for c, n in population_by_stratum.items() if c in code and code[c] in strata}
            )
            summary["by_stratum"] = {names[k]: estimate_dict(v) for k, v in per.items()}
    return summary


def retest_counts(orders: list[Order]) -> dict[str, int]:
    """Re-tests and re-assignments (issue 10 item 1). A sample is conclusive only once a lab concluded: an order's
    verdict is its latest lab attempt's, so a sample re-tested to a conclusive verdict counts as conclusive (and as a
    respondent in the estimate), one that stayed inconclusive after all its attempts counts as nonresponse, as an
    inconclusive verdict always did. ``overdue_escalations`` counts every missed lab deadline, re-assigned or not.

    ``orders`` are every order bought (second units included). A second unit is a re-test of its sample:
    ``retests_requested`` counts the same-sample hand-overs after an inconclusive verdict and the second units
    created; ``second_units`` / ``second_units_bought`` / ``second_units_concluded`` count those created, placed at
    the marketplace and concluded by a lab. A sample stays inconclusive once every unit bought for it is settled or
    closed and none concluded."""
    bought = list(orders)
    seconds = second_unit.second_units(bought)
    by_root: dict[str, list[Order]] = {}
    for o in bought:
        by_root.setdefault(second_unit.root_id(o), []).append(o)
    retested = {root for root, group in by_root.items() if any(o.retest_reasons or o.parent_order_id for o in group)}
    unit_list = second_unit.units(bought)
    closed = {root for root, group in by_root.items() if all(o.status in TERMINAL_STATUSES for o in group)}
    return {
        "retests_requested": sum(r == "inconclusive" for o in bought for r in o.retest_reasons) + len(seconds),
        "overdue_escalations": sum(r == "overdue" for o in bought for r in o.retest_reasons)
        + sum(1 for o in bought if o.last_lab_overdue),
        "retested_samples": sum(1 for u in unit_list if u.order_id in retested),
        "concluded_after_retest": sum(
            1 for u in unit_list if u.order_id in retested and u.verdict is not None and u.verdict.conclusive
        ),
        "stayed_inconclusive": sum(
            1 for u in unit_list if u.order_id in closed and u.verdict is VerdictKind.INCONCLUSIVE
        ),
        # --- second unit (retest mode second_unit)
        "second_units": len(seconds),
        "second_units_bought": sum(1 for o in seconds if o.marketplace_order_id is not None),
        "second_units_concluded": sum(1 for o in seconds if o.verdict is not None and o.verdict.conclusive),
    }


def respondent_pi(orders: list[Order]) -> tuple[np.ndarray[Any, Any], dict[str, Any]]:
    """The conclusive orders' pi adjusted for nonresponse (in their order in ``orders``) and a summary of the
    adjustment.

    Eligible units are all the orders given (the kept sample of one round, or several rounds: classes never span
    rounds); respondents those with a conclusive verdict. Classes are round x stratum x risk band
    (``chalicelib.domain.nonresponse``): each respondent's pi is its recorded (thinned) pi times its class's
    weighted response rate. Assumed: missing at random within class; see that module for where it fails.
    Second units are folded into their sampled units first (``second_unit.units``): one eligible unit each.
    """
    orders = second_unit.units(orders)
    respondent = np.fromiter((o.verdict is not None and o.verdict.conclusive for o in orders), dtype=bool)
    pi = np.fromiter((o.pi for o in orders), dtype=np.float64, count=len(orders))
    groups = {key: k for k, key in enumerate(sorted({(o.round_id, o.stratum) for o in orders}))}
    strata = np.fromiter((groups[(o.round_id, o.stratum)] for o in orders), dtype=np.int64, count=len(orders))
    by_pi = any(o.risk is None for o in orders)  # orders recorded before risk was stored: band by pi instead
    band_by = np.fromiter((o.pi if by_pi else o.risk for o in orders), dtype=np.float64, count=len(orders))
    adj = nonresponse.nonresponse_adjust(pi, respondent, strata, band_by)
    return adj.pi[respondent], adj.summary()


def estimate_dict(est: estimation.Estimate) -> dict[str, Any]:
    return {
        "prevalence": est.prevalence,
        "ht_prevalence": est.ht_prevalence,
        "std_error": est.std_error,
        "ci_low": est.ci_low,
        "ci_high": est.ci_high,
        "n": est.n,
        "n_eff": est.n_eff,
        "hits": est.hits,
        "method": est.method,
    }


def aggregate_round(d: Deps, inp: RoundTaskInput) -> dict[str, Any]:
    """Compute the round's figures, store them, emit metrics and publish ``RoundCompleted``."""
    program = d.programs.get_program(inp.program_id)
    rnd = d.rounds.get_round(inp.program_id, inp.round_id)
    orders = d.orders.list_round_orders(inp.round_id)
    summary = summarize(orders, rnd.population, rnd.population_by_stratum)
    summary["risk_model"] = model_quality.section([(rnd, orders)])
    now = d.clock.now()
    d.rounds.update_round(
        inp.program_id,
        inp.round_id,
        {"status": RoundStatus.COMPLETED.value, "completed_at": now, "summary": summary},
    )
    est = summary["estimate"] or {}
    dims = {"ProgramId": inp.program_id}
    d.metrics.add("OrdersPlaced", summary["placed"], "Count", dims)
    d.metrics.add("Spend", summary["spent"], "Count", dims)
    d.metrics.add("CounterfeitHits", summary["counterfeit_hits"], "Count", dims)
    d.metrics.add("DeliveryFailures", summary["delivery_failures"], "Count", dims)
    # --- retest (issue 10 item 1)
    d.metrics.add("RetestsRequested", summary["retest"]["retests_requested"], "Count", dims)
    d.metrics.add("VerdictDeadlinesMissed", summary["retest"]["overdue_escalations"], "Count", dims)
    d.metrics.add("StayedInconclusive", summary["retest"]["stayed_inconclusive"], "Count", dims)
    for name, key in (
        ("CounterfeitHitRate", "hit_rate"),
        ("RefundRate", "refund_rate"),
        ("InconclusiveRate", "inconclusive_rate"),
        ("ServiceQualityScore", "service_quality"),
    ):
        if summary[key] is not None:
            d.metrics.add(name, summary[key], "None", dims)
    if est:
        d.metrics.add("EstimatedPrevalence", est["prevalence"], "None", dims)
        d.metrics.add("EstimatedPrevalenceLow", est["ci_low"], "None", dims)
        d.metrics.add("EstimatedPrevalenceHigh", est["ci_high"], "None", dims)
    for name, key in (
        ("RiskModelAUC", "auc"),
        ("RiskModelBrier", "brier"),
        ("RiskModelTopDecilePrecision", "top_decile_precision"),
    ):
        if summary["risk_model"][key]["estimate"] is not None:
            d.metrics.add(name, summary["risk_model"][key]["estimate"], "None", dims)
    d.metrics.flush()
    event = RoundCompleted(
        round_id=inp.round_id,
        population=rnd.population,
        sampled=summary["sampled"],
        placed=summary["placed"],
        conclusive=summary["conclusive"],
        counterfeit_hits=summary["counterfeit_hits"],
        hit_rate=summary["hit_rate"],
        prevalence=est.get("prevalence"),
        ci_low=est.get("ci_low"),
        ci_high=est.get("ci_high"),
        spent=summary["spent"],
        currency=program.currency,
        stuck=summary["stuck"],
    )
    d.events.publish(
        [
            envelope(
                event,
                event_id=deterministic_event_id(inp.round_id, "RoundCompleted"),
                correlation_id=inp.correlation_id,
                occurred_at=now,
                program_id=inp.program_id,
            )
        ]
    )
    return {"status": "completed", "stuck": summary["stuck"], "sampled": summary["sampled"]}


def round_failed(d: Deps, inp: RoundTaskInput, error: dict[str, Any] | None) -> dict[str, Any]:
    """Compensation of the round: mark it failed and say so on the bus (no money is held by a round itself)."""
    text = str((error or {}).get("Error", "unknown"))
    d.rounds.update_round(
        inp.program_id,
        inp.round_id,
        {"status": RoundStatus.FAILED.value, "failure": (error or {}).get("Cause", text)[:1000]},
    )
    d.events.publish(
        [
            envelope(
                RoundFailed(round_id=inp.round_id, error=text),
                event_id=deterministic_event_id(inp.round_id, "RoundFailed"),
                correlation_id=inp.correlation_id,
                occurred_at=d.clock.now(),
                program_id=inp.program_id,
            )
        ]
    )
    return {"status": "failed"}


def round_view(d: Deps, program_id: str, round_id: str) -> dict[str, Any]:
    rnd = d.rounds.get_round(program_id, round_id)
    orders = d.orders.list_round_orders(round_id)
    counts = Counter(o.status.value for o in orders)
    return {**rnd.model_dump(mode="json"), "orders_by_status": dict(sorted(counts.items()))}


def round_orders(
    d: Deps, program_id: str, round_id: str, status: str | None = None, cursor: str | None = None, limit: int = 100
) -> dict[str, Any]:
    """A page of the round's orders in order-id order, optionally of one status; ``cursor`` is the last order id of
    the previous page (the next page starts after it). 404 for a round that is not this programme's."""
    d.rounds.get_round(program_id, round_id)
    orders = sorted(
        (o for o in d.orders.list_round_orders(round_id) if status is None or o.status.value == status),
        key=lambda o: o.order_id,
    )
    if cursor is not None:
        orders = [o for o in orders if o.order_id > cursor]
    page = orders[:limit]
    return {
        "program_id": program_id,
        "round_id": round_id,
        "status": status,
        "orders": [
            {
                "order_id": o.order_id,
                "seller_id": o.seller_id,
                "category": o.category,
                "status": o.status.value,
                "amount": o.amount,
                "currency": o.currency,
                "lab_id": o.lab_id,
                "verdict": o.verdict.value if o.verdict is not None else None,
                "failure": o.failure,
                "delivered_at": o.delivered_at.isoformat() if o.delivered_at is not None else None,
                "created_at": o.created_at.isoformat(),
                "updated_at": o.updated_at.isoformat(),
                "parent_order_id": o.parent_order_id,  # second unit (issue 10 item 1)
            }
            for o in page
        ],
        "next_cursor": page[-1].order_id if len(orders) > limit else None,
    }


def program_metrics(d: Deps, program: Program) -> dict[str, Any]:
    """Programme-level metrics: per-round figures combined, raw and design-weighted (each round's respondents
    weighted for thinning and nonresponse as in :func:`summarize`)."""
    rounds = d.rounds.list_rounds(program.program_id)
    all_orders: list[Order] = []
    per_round: list[tuple[Round, list[Order]]] = []
    estimates = []
    for rnd in rounds:
        orders = d.orders.list_round_orders(rnd.round_id)
        all_orders.extend(orders)
        per_round.append((rnd, orders))
        conclusive = [o for o in second_unit.units(orders) if o.verdict is not None and o.verdict.conclusive]
        if conclusive and rnd.population:
            y = np.fromiter((o.verdict is VerdictKind.COUNTERFEIT for o in conclusive), dtype=np.float64)
            pi, _ = respondent_pi(orders)
            estimates.append(estimation.estimate(y, pi, rnd.population))
    summary = summarize(all_orders, max((r.population for r in rounds), default=0))
    combined = estimation.combine_rounds(estimates) if estimates else None
    summary["estimate"] = estimate_dict(combined) if combined else None
    summary["rounds"] = len(rounds)
    summary["cost_per_hit"] = summary["spent"] // summary["counterfeit_hits"] if summary["counterfeit_hits"] else None
    if combined and summary["hit_rate"] is not None and combined.prevalence > 0:
        summary["lift_over_uniform"] = summary["hit_rate"] / combined.prevalence
    else:
        summary["lift_over_uniform"] = None
    summary["currency"] = program.currency
    summary["risk_model"] = model_quality.section(per_round)
    summary["marketplace_refund_rate"] = marketplace_refund_rate(d, program.program_id)
    from chalicelib.services.leads import metrics_section  # leads funnel (issue 10 item 4)

    summary["leads"] = metrics_section(d, program.program_id)
    summary["precision"] = None
    if combined:
        plans = {hw: estimation.plan_buys(combined, hw) for hw in (0.01, 0.005)}
        summary["precision"] = {f"buys_needed_for_pm_{hw * 100:g}pt": plan.buys for hw, plan in plans.items()}
        # True when a target can only be met by buying every unit not yet bought (the plan is capped there)
        summary["precision"]["frame_exhausted"] = any(plan.frame_exhausted for plan in plans.values())
    from chalicelib.services.appeals import appeal_metrics  # appeals (issue 10 item 2)

    summary["appeals"] = appeal_metrics(d, program.program_id, all_orders)
    return summary
