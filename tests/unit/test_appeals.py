"""Appeals (issue 10 item 2): the status table walk, the decision table, and the service on the in-memory fakes --
filing rules (window, once per order, second filing, no other lab), lab scoping, the re-test verdict twice, the
machine's tasks in order (overturn: effective verdict, strike, round summary, rescinds never duplicated on retry;
upheld; inconclusive re-test; expired), and the appeal metrics."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from chalicelib.domain import appeals as rules
from chalicelib.domain.appeals import AppealEvent, AppealIn, AppealStatus, Outcome, RetestVerdictIn
from chalicelib.domain.custody import Actor
from chalicelib.domain.errors import Conflict, InvalidInput, InvalidState, NotFound
from chalicelib.domain.models import (
    DeliveryNotice,
    OrderStatus,
    Program,
    Round,
    RoundStatus,
    Timeouts,
    VerdictKind,
)
from chalicelib.services import appeals, lab, orders, rounds
from chalicelib.services.appeals import AppealTaskInput, WrongAppealLab
from chalicelib.services.orders import OrderTaskInput
from tests import builders
from tests.fakes import Boom, World, world

A, AE = AppealStatus, AppealEvent
V = VerdictKind
PID, RID, SELLER = "prg-a", "rnd-a", "seller-a"
LAB1, LAB2 = "lab-1", "lab-2"
TECH1 = Actor(subject="tech1", role="lab", lab_id=LAB1)
TECH2 = Actor(subject="tech2", role="lab", lab_id=LAB2)


# ------------------------------------------------------------------------------------------------ pure tables


def court_retest(w: Any, verdict: Any) -> RetestVerdictIn:
    """A court-grade re-test verdict (its lab report stored first)."""
    return builders.court_verdict(w.deps.evidence, verdict, model=RetestVerdictIn)  # type: ignore[no-any-return]


def test_status_table_walk() -> None:
    """Every (status, event) pair: exactly the listed transitions exist; the rest are InvalidState."""
    allowed = {
        (A.FILED, AE.ASSIGN_RETEST): A.RETEST_ASSIGNED,
        (A.RETEST_ASSIGNED, AE.UPHOLD): A.UPHELD,
        (A.RETEST_ASSIGNED, AE.OVERTURN): A.OVERTURNED,
        (A.FILED, AE.EXPIRE): A.EXPIRED,
        (A.RETEST_ASSIGNED, AE.EXPIRE): A.EXPIRED,
    }
    for status in A:
        for event in AE:
            if (status, event) in allowed:
                assert rules.transition(status, event) is allowed[(status, event)]
                assert rules.allows(status, event)
            else:
                with pytest.raises(InvalidState):
                    rules.transition(status, event)
    assert {A.UPHELD, A.OVERTURNED, A.EXPIRED} == rules.TERMINAL


@pytest.mark.parametrize(
    ("original", "retest", "outcome", "effective"),
    [
        (V.COUNTERFEIT, V.AUTHENTIC, Outcome.OVERTURNED, V.AUTHENTIC),
        (V.NOT_AS_DESCRIBED, V.AUTHENTIC, Outcome.OVERTURNED, V.AUTHENTIC),
        (V.COUNTERFEIT, V.COUNTERFEIT, Outcome.UPHELD, V.COUNTERFEIT),
        (V.NOT_AS_DESCRIBED, V.NOT_AS_DESCRIBED, Outcome.UPHELD, V.NOT_AS_DESCRIBED),
        (V.COUNTERFEIT, V.INCONCLUSIVE, Outcome.UPHELD, V.COUNTERFEIT),
        (V.NOT_AS_DESCRIBED, V.INCONCLUSIVE, Outcome.UPHELD, V.NOT_AS_DESCRIBED),
        (V.COUNTERFEIT, V.NOT_AS_DESCRIBED, Outcome.OVERTURNED, V.NOT_AS_DESCRIBED),
        (V.NOT_AS_DESCRIBED, V.COUNTERFEIT, Outcome.UPHELD, V.NOT_AS_DESCRIBED),  # never worse for the appellant
    ],
)
def test_decision_table(original: V, retest: V, outcome: Outcome, effective: V) -> None:
    d = rules.decide(original, retest)
    assert (d.outcome, d.effective) == (outcome, effective)


@pytest.mark.parametrize("original", [V.AUTHENTIC, V.INCONCLUSIVE])
def test_only_suspect_verdicts_are_appealable(original: V) -> None:
    assert not rules.appealable(original)
    with pytest.raises(InvalidState):
        rules.decide(original, V.AUTHENTIC)


def test_retest_lab_is_never_the_first_lab_and_none_when_alone() -> None:
    for i in range(50):
        aid = f"apl-{i}"
        assert rules.retest_lab(["a", "b", "c"], "b", aid) in {"a", "c"}
        assert rules.retest_lab(["b", "c"], "b", aid) == "c"
    assert rules.retest_lab(["b"], "b", "apl-1") is None
    # a lab that examined the sample in an earlier re-test is avoided while a fresh one is left
    assert all(rules.retest_lab(["a", "b", "c"], "b", f"apl-{i}", tried=["a", "b"]) == "c" for i in range(20))
    assert rules.retest_lab(["a", "b"], "b", "apl-1", tried=["a", "b"]) == "a"
    assert rules.appeal_id_for("ord-1") == rules.appeal_id_for("ord-1") != rules.appeal_id_for("ord-2")


# ------------------------------------------------------------------------------------------------ service on fakes


def settled(
    w: World,
    verdict: V = V.COUNTERFEIT,
    labs: tuple[str, ...] = (LAB1, LAB2),
    seller: str = SELLER,
    round_id: str = RID,
    window: int = 30 * 86400,
) -> str:
    """Run the order tasks on the fakes to a settled order with a lab verdict and its recommendations."""
    now = w.clock.now()
    if PID not in w.programs.programs:
        w.programs.put_program(
            Program(
                program_id=PID,
                name="p",
                currency="CNY",
                budget=100_000,
                period_start=now - timedelta(days=1),
                period_end=now + timedelta(days=300),
                round_size=2,
                exploration_share=1.0,
                blend=0.5,
                labs=list(labs),
                timeouts=Timeouts(delivery_seconds=5, verdict_seconds=5, appeal_window_seconds=window),
                created_at=now,
            )
        )
        w.ledger.open_account(PID, "CNY", None)
        w.ledger.fund(PID, "f1", 100_000, "CNY")
        w.personas.ensure_pool(PID, 4)
    try:
        w.rounds.get_round(PID, round_id)
    except NotFound:
        w.rounds.put_round(
            Round(
                program_id=PID,
                round_id=round_id,
                status=RoundStatus.SAMPLED,
                seed=1,
                budget=100_000,
                started_at=now,
                execution_name=round_id,
                population=10,
                population_by_stratum={"bags": 10},
            )
        )
    oid = rounds.order_id_for(round_id, seller)
    w.orders.put_orders(
        [
            builders.order(
                at=now, order_id=oid, program_id=PID, round_id=round_id, seller_id=seller, pi=0.5, lab_id=labs[0]
            )
        ]
    )
    inp = OrderTaskInput(order_id=oid, program_id=PID, round_id=round_id, correlation_id="c-1")
    orders.reserve_budget(w.deps, inp)
    orders.assign_persona(w.deps, inp)
    orders.place_order(w.deps, inp)
    order = w.orders.get_order(oid)
    w.marketplace.deliver(oid)
    assert order.marketplace_order_id is not None
    orders.record_delivery(
        w.deps,
        DeliveryNotice(
            order_id=oid, marketplace_order_id=order.marketplace_order_id, status="delivered", occurred_at=now
        ),
    )
    assert orders.forward_to_lab(w.deps, inp)["lab_id"] == labs[0]  # pinned: the first lab is labs[0]
    lab.post_verdict(w.deps, oid, None, TECH1, builders.court_verdict(w.deps.evidence, verdict), "c-1")
    for task in (orders.capture_spend, orders.request_refund, orders.enforce, orders.publish_outcome):
        task(w.deps, inp)
    assert w.orders.get_order(oid).status is OrderStatus.SETTLED
    return oid


def file(w: World, oid: str, statement: str = "the item is genuine", evidence: list[str] | None = None) -> Any:
    stored = w.deps.evidence.put_bytes(b"the seller's invoice")
    req = AppealIn(order_id=oid, statement=statement, evidence=evidence if evidence is not None else [stored])
    return appeals.file_appeal(w.deps, req, "marketplace", "mkt-1", "c-appeal")


def task(appeal_id: str) -> AppealTaskInput:
    return AppealTaskInput(appeal_id=appeal_id, program_id=PID, correlation_id="c-appeal")


def test_filing_is_once_per_order_same_filing_idempotent_different_409() -> None:
    w = world()
    oid = settled(w)
    appeal, created = file(w, oid)
    assert created and appeal.status is A.FILED and appeal.retest_lab == LAB2 and appeal.original_lab == LAB1
    assert appeal.deadline == appeal.filed_at + timedelta(days=30)
    again, created2 = file(w, oid)
    assert not created2 and again == appeal
    with pytest.raises(Conflict):
        file(w, oid, statement="something else")
    with pytest.raises(Conflict):
        file(w, oid, evidence=[])
    # one execution (named by the appeal id) and one AppealFiled, however often the filing is repeated
    assert list(w.workflow.started) == [("appeal", appeal.appeal_id)]
    assert appeals.assign_retest_lab(w.deps, task(appeal.appeal_id))["wait_seconds"] == 30 * 86400
    w.clock.advance(days=29)
    assert appeals.assign_retest_lab(w.deps, task(appeal.appeal_id))["wait_seconds"] == 86400  # a late start
    w.clock.advance(days=2)
    assert appeals.assign_retest_lab(w.deps, task(appeal.appeal_id))["wait_seconds"] == 1  # past the deadline
    assert len(w.events.unique("AppealFiled")) == 1


def test_evidence_must_have_been_stored() -> None:
    w = world()
    oid = settled(w)
    with pytest.raises(InvalidInput) as err:
        file(w, oid, evidence=["ab" * 32])
    assert err.value.details[0]["field"] == "evidence" and err.value.details[0]["missing"] == ["ab" * 32]
    assert w.appeals is not None and w.appeals.appeals == {}


def test_filing_retry_after_a_lost_start_starts_the_execution() -> None:
    w = world()
    oid = settled(w)
    w.events.fail_next("publish", Boom("bus down"))
    with pytest.raises(Boom):
        file(w, oid)
    assert w.workflow.started == {}
    appeal, created = file(w, oid)  # the marketplace retries: same filing
    assert not created and ("appeal", appeal.appeal_id) in w.workflow.started


@pytest.mark.parametrize("verdict", [V.AUTHENTIC, V.INCONCLUSIVE])
def test_only_a_suspect_verdict_can_be_appealed(verdict: V) -> None:
    w = world()
    oid = settled(w, verdict=verdict)
    with pytest.raises(InvalidState):
        file(w, oid)
    assert w.appeals is not None and w.appeals.appeals == {} and w.workflow.started == {}


def test_an_unsettled_order_cannot_be_appealed() -> None:
    w = world()
    oid = settled(w)
    w.orders.orders[oid] = w.orders.orders[oid].model_copy(update={"status": OrderStatus.VERDICT})
    with pytest.raises(InvalidState):
        file(w, oid)
    with pytest.raises(NotFound):
        file(w, "ord-unknown")


def test_the_appeal_window() -> None:
    w = world()
    oid = settled(w, window=3600)
    w.clock.advance(seconds=3601)
    with pytest.raises(InvalidState) as err:
        file(w, oid)
    assert "window" in err.value.message and err.value.details[0]["field"] == "order_id"
    w2 = world()
    oid2 = settled(w2, window=3600)
    w2.clock.advance(seconds=3599)
    assert file(w2, oid2)[1]


def test_no_other_lab_refuses_the_filing_naming_why() -> None:
    w = world()
    oid = settled(w, labs=(LAB1,))
    with pytest.raises(Conflict) as err:
        file(w, oid)
    assert "no lab other than lab-1" in err.value.message
    assert w.appeals is not None and w.appeals.appeals == {}


def run_to_retest(w: World) -> tuple[str, str]:
    oid = settled(w)
    appeal, _ = file(w, oid)
    appeals.assign_retest_lab(w.deps, task(appeal.appeal_id))
    appeals.await_retest(w.deps, appeal.appeal_id, "tok-1")
    return oid, appeal.appeal_id


def test_assign_hands_the_sample_over_once_and_queues_it_at_the_second_lab_only() -> None:
    w = world()
    oid, aid = run_to_retest(w)
    appeals.assign_retest_lab(w.deps, task(aid))  # retried
    chain = w.custody.chain(oid)
    handovers = [e for e in chain if e.to_party == f"lab:{LAB2}"]
    assert len(handovers) == 1 and handovers[0].from_party == f"lab:{LAB1}:archive"
    assert [q["appeal_id"] for q in appeals.lab_queue(w.deps, LAB2)] == [aid]
    assert appeals.lab_queue(w.deps, LAB1) == []
    assert "statement" not in appeals.lab_queue(w.deps, LAB2)[0]  # blind re-test
    (req,) = w.events.unique("RetestRequested").values()
    assert req.detail["data"]["reason"] == "appeal" and req.detail["data"]["to_lab"] == LAB2


def test_a_conclusive_retest_verdict_is_court_grade_and_its_report_was_uploaded() -> None:
    w = world()
    _, aid = run_to_retest(w)
    with pytest.raises(InvalidInput) as missing:
        appeals.post_retest_verdict(w.deps, aid, LAB2, TECH2, RetestVerdictIn(verdict=V.AUTHENTIC))
    assert {d["field"] for d in missing.value.details} == {
        "method",
        "analyst",
        "accreditation",
        "confidence",
        "report_sha256",
    }
    with pytest.raises(InvalidInput) as unknown:
        appeals.post_retest_verdict(
            w.deps, aid, LAB2, TECH2, court_retest(w, V.AUTHENTIC).model_copy(update={"report_sha256": "ab" * 32})
        )
    assert [d["field"] for d in unknown.value.details] == ["report_sha256"]
    assert w.appeals is not None and w.appeals.retests == {}  # refused: nothing recorded
    # an inconclusive re-test needs none of them
    v, created = appeals.post_retest_verdict(w.deps, aid, LAB2, TECH2, RetestVerdictIn(verdict=V.INCONCLUSIVE))
    assert created and v.method is None


def test_lab_scoping_and_the_retest_verdict_twice() -> None:
    w = world()
    oid, aid = run_to_retest(w)
    with pytest.raises(WrongAppealLab) as wrong:
        appeals.post_retest_verdict(w.deps, aid, LAB1, TECH1, court_retest(w, V.AUTHENTIC))
    with pytest.raises(WrongAppealLab) as unknown:
        appeals.post_retest_verdict(w.deps, "apl-nope", LAB2, TECH2, court_retest(w, V.AUTHENTIC))
    assert wrong.value.message.replace(aid, "X") == unknown.value.message.replace("apl-nope", "X")
    assert w.appeals is not None and w.appeals.retests == {}
    req = court_retest(w, V.AUTHENTIC)
    v, created = appeals.post_retest_verdict(w.deps, aid, LAB2, TECH2, req)
    assert created and v.lab_id == LAB2 and v.report_sha256 == req.report_sha256 and v.method == req.method
    v2, created2 = appeals.post_retest_verdict(w.deps, aid, LAB2, TECH2, req)
    assert not created2 and v2 == v
    with pytest.raises(Conflict):
        appeals.post_retest_verdict(w.deps, aid, LAB2, TECH2, court_retest(w, V.COUNTERFEIT))
    with pytest.raises(Conflict) as changed:  # the same kind with another report is not the same verdict
        appeals.post_retest_verdict(w.deps, aid, LAB2, TECH2, court_retest(w, V.AUTHENTIC))
    assert [d["field"] for d in changed.value.details] == ["report_sha256"]
    assert w.workflow.resumed == {"tok-1": {"verdict": "authentic"}}
    archive = [e for e in w.custody.chain(oid) if e.to_party == f"lab:{LAB2}:archive"]
    assert len(archive) == 1 and archive[0].actor.subject == "tech2"


def test_overturn_corrects_verdict_strike_round_and_rescinds_every_action_never_duplicated() -> None:
    w = world()
    oid, aid = run_to_retest(w)
    recs = w.orders.get_order(oid).recommendations
    assert len(recs) >= 3  # take-down, credit, marketing (counterfeit-confirmed)
    assert len(w.orders.confirmed_history(SELLER)) == 1
    # the round completed with the counterfeit counted
    rounds.aggregate_round(w.deps, rounds.RoundTaskInput(program_id=PID, round_id=RID, correlation_id="c"))
    before = w.rounds.get_round(PID, RID).summary
    assert before is not None and before["counterfeit_hits"] == 1
    metrics_before = rounds.program_metrics(w.deps, w.programs.get_program(PID))
    appeals.post_retest_verdict(w.deps, aid, LAB2, TECH2, court_retest(w, V.AUTHENTIC))
    assert appeals.decide(w.deps, task(aid)) == {"outcome": "overturned"}
    # Rescind fails half-way (the bus), then is retried, then retried again after success
    w.events.fail_next("publish", Boom("bus down"))
    with pytest.raises(Boom):
        appeals.rescind(w.deps, task(aid))
    appeals.rescind(w.deps, task(aid))
    appeals.rescind(w.deps, task(aid))
    appeals.publish_decision(w.deps, task(aid))
    appeals.publish_decision(w.deps, task(aid))
    rescinds = [e for e in w.events.published if e.detail_type == "EnforcementActionRescinded"]
    unique = w.events.unique("EnforcementActionRescinded")
    assert len(unique) == len(recs)  # one per recommended action ...
    assert {(e.detail["data"]["action"], e.detail["data"]["rule"]) for e in unique.values()} == {
        (r["action"], r["rule"]) for r in recs
    }
    # ... and every redelivery carries the same id and the same content (never a second, different rescind)
    by_id: dict[str, Any] = {}
    for e in rescinds:
        assert by_id.setdefault(e.detail["metadata"]["event_id"], e.detail) == e.detail
    order = w.orders.get_order(oid)
    assert (order.verdict, order.original_verdict, order.verdict_overturned_by) == (V.AUTHENTIC, V.COUNTERFEIT, aid)
    assert w.orders.get_verdict(oid) is not None and w.orders.get_verdict(oid).verdict is V.COUNTERFEIT  # type: ignore[union-attr]
    assert w.orders.confirmed_history(SELLER) == []  # the strike no longer counts
    assert [t["verdict"] for t in w.leads.testbuys_of(PID, SELLER)] == ["authentic"]  # the lead estimator's input
    assert order.refunded > 0  # money does not move back
    after = w.rounds.get_round(PID, RID).summary
    assert after is not None and after["counterfeit_hits"] == 0 and after["recomputed_for_appeals"] == [aid]
    metrics_after = rounds.program_metrics(w.deps, w.programs.get_program(PID))
    assert metrics_before["counterfeit_hits"] == 1 and metrics_after["counterfeit_hits"] == 0
    assert metrics_after["appeals"]["overturn_rate"] == 1.0 and metrics_after["appeals"]["appeal_rate"] == 1.0
    (decided,) = w.events.unique("AppealDecided").values()
    assert (decided.detail["data"]["outcome"], decided.detail["data"]["retest_verdict"]) == ("overturned", "authentic")


def test_learned_risk_no_longer_counts_the_overturned_counterfeit() -> None:
    w = world()
    _oid, aid = run_to_retest(w)
    seller = builders_seller()
    w.programs.put_sellers(PID, [seller])
    before = float(rounds.learned_risk(w.deps, PID, "rnd-next", [seller])[0])
    appeals.post_retest_verdict(w.deps, aid, LAB2, TECH2, court_retest(w, V.AUTHENTIC))
    appeals.decide(w.deps, task(aid))
    appeals.rescind(w.deps, task(aid))
    after = float(rounds.learned_risk(w.deps, PID, "rnd-next", [seller])[0])
    assert after < before


def builders_seller() -> Any:
    from chalicelib.domain.models import Seller

    return Seller(program_id=PID, seller_id=SELLER, category="bags", expected_cost=1000, risk=0.3)


@pytest.mark.parametrize("retest", [V.COUNTERFEIT, V.INCONCLUSIVE])
def test_upheld_changes_nothing_and_rescinds_nothing(retest: V) -> None:
    w = world()
    oid, aid = run_to_retest(w)
    appeals.post_retest_verdict(w.deps, aid, LAB2, TECH2, court_retest(w, retest))
    assert appeals.decide(w.deps, task(aid)) == {"outcome": "upheld"}
    assert appeals.decide(w.deps, task(aid)) == {"outcome": "upheld"}  # retried
    with pytest.raises(InvalidState):
        appeals.rescind(w.deps, task(aid))
    appeals.publish_decision(w.deps, task(aid))
    order = w.orders.get_order(oid)
    assert order.verdict is V.COUNTERFEIT and order.verdict_overturned_by is None
    assert len(w.orders.confirmed_history(SELLER)) == 1
    assert w.events.unique("EnforcementActionRescinded") == {}
    assert appeals.get_appeal(w.deps, aid).status is A.UPHELD


def test_expired_the_original_verdict_stands_and_a_late_verdict_is_refused() -> None:
    w = world()
    oid, aid = run_to_retest(w)
    assert appeals.expire(w.deps, task(aid)) == {"outcome": "expired"}
    assert appeals.expire(w.deps, task(aid)) == {"outcome": "expired"}  # retried
    appeals.publish_decision(w.deps, task(aid))
    (decided,) = w.events.unique("AppealDecided").values()
    assert decided.detail["data"]["outcome"] == "expired" and decided.detail["data"]["retest_verdict"] is None
    assert appeals.lab_queue(w.deps, LAB2) == []
    with pytest.raises(InvalidState) as err:
        appeals.post_retest_verdict(w.deps, aid, LAB2, TECH2, court_retest(w, V.AUTHENTIC))
    assert "expired" in err.value.message
    assert w.orders.get_order(oid).verdict is V.COUNTERFEIT
    # a decided appeal is never filed again: the same filing returns it, no new execution
    appeal, created = file(w, oid)
    assert not created and appeal.status is A.EXPIRED


def test_list_and_metrics_by_status() -> None:
    w = world()
    o1 = settled(w, seller="s-1")
    o2 = settled(w, seller="s-2", verdict=V.NOT_AS_DESCRIBED)
    settled(w, seller="s-3")
    a1, _ = file(w, o1)
    a2, _ = file(w, o2)
    appeals.assign_retest_lab(w.deps, task(a1.appeal_id))
    appeals.post_retest_verdict(w.deps, a1.appeal_id, a1.retest_lab, TECH2, court_retest(w, V.AUTHENTIC))
    appeals.decide(w.deps, task(a1.appeal_id))
    assert [a.appeal_id for a in appeals.list_appeals(w.deps, PID, "overturned")] == [a1.appeal_id]
    assert [a.appeal_id for a in appeals.list_appeals(w.deps, PID, "filed")] == [a2.appeal_id]
    assert len(appeals.list_appeals(w.deps, PID)) == 2
    m = appeals.appeal_metrics(w.deps, PID, w.orders.list_round_orders(RID))
    assert m is not None
    assert (m["filed"], m["suspect_verdicts"], m["decided"]) == (2, 3, 1)
    assert m["appeal_rate"] == pytest.approx(2 / 3) and m["overturn_rate"] == 1.0
    with pytest.raises(NotFound):
        appeals.list_appeals(w.deps, "prg-unknown")


def test_a_verdict_that_lost_the_race_with_the_deadline_is_refused_even_as_a_replay() -> None:
    """The lab posted just as the deadline passed: the execution expired the appeal, so the verdict is not counted
    and the lab is told so (409) rather than a 200 that suggests it was."""
    w = world()
    oid, aid = run_to_retest(w)
    req = court_retest(w, V.AUTHENTIC)
    appeals.post_retest_verdict(w.deps, aid, LAB2, TECH2, req)
    appeals.expire(w.deps, task(aid))  # the timeout won: Decide never ran
    with pytest.raises(InvalidState):
        appeals.post_retest_verdict(w.deps, aid, LAB2, TECH2, req)
    appeals.publish_decision(w.deps, task(aid))
    (decided,) = w.events.unique("AppealDecided").values()
    assert decided.detail["data"]["outcome"] == "expired"
    assert w.orders.get_order(oid).verdict is V.COUNTERFEIT and w.events.unique("EnforcementActionRescinded") == {}
