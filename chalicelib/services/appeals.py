"""Appeals (issue 10 item 2): filing (API), the tasks of the ``appeal`` state machine, the re-test lab's verdict.

The appeal machine: ``AssignRetestLab`` -> ``AwaitRetestVerdict`` (task token, timeout = the appeal's deadline) ->
``Decide`` -> (overturned) ``Rescind`` -> ``PublishDecision``; a timeout goes to ``Expire`` -> ``PublishDecision``
(the original verdict stands). Every task is idempotent: status changes are conditional writes that treat "already
there" as done, custody entries are looked up before they are appended, events carry deterministic ids.

What an overturn corrects (``rescind``): the order's effective verdict (the original stays on the order as
``original_verdict`` and in the lab's verdict record, which is never rewritten), the seller's confirmed-counterfeit
entry (marked rescinded, no longer counted by the repeat-offender rule), the round's stored summary (recomputed from
the corrected verdicts), and one ``EnforcementActionRescinded`` per action recommended on the verdict. The learned
risk and the programme metrics read the orders' verdicts live, so they follow. Money does not move: a refund already
requested stays.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from chalicelib.domain import appeals as rules
from chalicelib.domain.appeals import (
    Appeal,
    AppealEvent,
    AppealIn,
    AppealStatus,
    RetestVerdict,
    RetestVerdictIn,
)
from chalicelib.domain.custody import Actor
from chalicelib.domain.errors import Conflict, InvalidInput, InvalidState, NotFound
from chalicelib.domain.events import (
    AppealDecided,
    AppealFiled,
    EnforcementActionRescinded,
    EventData,
    RetestRequested,
    deterministic_event_id,
    envelope,
)
from chalicelib.domain.models import Order, OrderStatus, RoundStatus, VerdictKind
from chalicelib.services import custody, lab
from chalicelib.services.deps import Deps

A = AppealStatus
AE = AppealEvent
MACHINE = "appeal"


class WrongAppealLab(NotFound):
    """The appeal's re-test is not assigned to the caller's lab: the same 404 as an unknown appeal."""


class AppealTaskInput(BaseModel):
    model_config = ConfigDict(extra="ignore")
    appeal_id: str
    program_id: str
    correlation_id: str


class AppealsNotWired(RuntimeError):
    """``Deps.appeals`` is None: the deployment did not wire the appeals repository."""


def _publish(d: Deps, appeal: Appeal, data: EventData, corr: str, *key: str) -> None:
    d.events.publish(
        [
            envelope(
                data,
                event_id=deterministic_event_id(appeal.appeal_id, data.detail_type, *key),
                correlation_id=corr,
                occurred_at=d.clock.now(),
                program_id=appeal.program_id,
            )
        ]
    )


# ------------------------------------------------------------------------------------------------ filing


def file_appeal(d: Deps, req: AppealIn, filed_by: str, subject: str, correlation_id: str) -> tuple[Appeal, bool]:
    """File a seller's appeal against the verdict of ``req.order_id`` (once per order).

    Refused (nothing stored): an unknown order (404); an order that is not settled or whose verdict is not a
    conclusive suspect one (409 ``invalid_state``); after the appeal window (409 ``invalid_state``, naming when it
    closed); when the programme has no lab other than the one that gave the verdict (409 ``conflict``). A second
    filing with the same order, statement and evidence returns the first appeal (created=False); a different one is a
    409 ``conflict``. Whoever gets here, first call or retry, then makes sure of ``AppealFiled`` and of the appeal's
    execution (named by the appeal id), both idempotent."""
    if d.appeals is None:
        raise AppealsNotWired
    appeal_id = rules.appeal_id_for(req.order_id)
    try:
        existing: Appeal | None = d.appeals.get(appeal_id)
    except NotFound:
        existing = None
    if existing is not None:
        if not existing.same_filing(req):
            raise Conflict(
                f"order {req.order_id} was already appealed ({appeal_id}) with another statement or evidence; "
                "an order is appealed once",
                details=[{"field": "order_id", "appeal_id": appeal_id}],
            )
        _filing_follow_ups(d, existing, correlation_id)
        return existing, False
    order = d.orders.get_order(req.order_id)
    program = d.programs.get_program(order.program_id)
    missing = [h for h in req.evidence if not d.evidence.exists(h)]
    if missing:
        raise InvalidInput(
            f"{len(missing)} evidence file(s) were never stored; upload them with POST /appeals/evidence first",
            details=[{"field": "evidence", "missing": missing}],
        )
    verdict = d.orders.get_verdict(order.order_id)
    if order.status is not OrderStatus.SETTLED or verdict is None or order.verdict is None:
        raise InvalidState(
            f"order {order.order_id} is {order.status.value}; only a settled order with a verdict can be appealed",
            details=[{"field": "order_id", "status": order.status.value}],
        )
    if order.verdict_overturned_by is not None or not rules.appealable(verdict.verdict):
        raise InvalidState(
            f"order {order.order_id} has verdict {order.verdict.value}; only a counterfeit or not-as-described "
            "verdict can be appealed",
            details=[{"field": "order_id", "verdict": order.verdict.value}],
        )
    now = d.clock.now()
    closes = rules.window_closes(verdict.recorded_at, timedelta(seconds=program.timeouts.appeal_window_seconds))
    if now > closes:
        raise InvalidState(
            f"the appeal window of order {order.order_id} closed at {closes.isoformat()} "
            f"({program.timeouts.appeal_window_seconds} s after the verdict)",
            details=[{"field": "order_id", "window_closed_at": closes.isoformat()}],
        )
    lab = rules.retest_lab(program.labs, verdict.lab_id, appeal_id, order.labs_tried)
    if lab is None:
        raise Conflict(
            f"programme {program.program_id} has no lab other than {verdict.lab_id}, which gave the verdict; "
            "add a second lab to the programme to re-test appeals",
            details=[{"field": "labs", "program_id": program.program_id}],
        )
    appeal = Appeal(
        appeal_id=appeal_id,
        program_id=order.program_id,
        order_id=order.order_id,
        round_id=order.round_id,
        seller_id=order.seller_id,
        filed_by=filed_by,
        filed_by_subject=subject,
        statement=req.statement,
        evidence=list(req.evidence),
        original_verdict=verdict.verdict,
        original_lab=verdict.lab_id,
        verdict_at=verdict.recorded_at,
        retest_lab=lab,
        status=A.FILED,
        filed_at=now,
        deadline=now + timedelta(seconds=program.timeouts.appeal_decision_seconds),
        updated_at=now,
    )
    stored, created = d.appeals.create(appeal)
    if not created and not stored.same_filing(req):  # a concurrent, different filing won the race
        raise Conflict(
            f"order {req.order_id} was already appealed ({appeal_id}) with another statement or evidence",
            details=[{"field": "order_id", "appeal_id": appeal_id}],
        )
    _filing_follow_ups(d, stored, correlation_id)
    return stored, created


def _filing_follow_ups(d: Deps, appeal: Appeal, correlation_id: str) -> None:
    _publish(
        d,
        appeal,
        AppealFiled(
            appeal_id=appeal.appeal_id,
            order_id=appeal.order_id,
            seller_id=appeal.seller_id,
            filed_by=appeal.filed_by,
            verdict=appeal.original_verdict.value,
            deadline=appeal.deadline,
        ),
        correlation_id,
    )
    if appeal.status not in rules.TERMINAL:
        d.workflow.start(
            MACHINE,
            appeal.appeal_id,
            {
                "appeal_id": appeal.appeal_id,
                "program_id": appeal.program_id,
                "correlation_id": appeal.appeal_id,  # stable: a repeated filing starts the same execution
            },
        )


# ------------------------------------------------------------------------------------------------ reading


def view(appeal: Appeal) -> dict[str, Any]:
    return appeal.model_dump(mode="json")


def get_appeal(d: Deps, appeal_id: str) -> Appeal:
    if d.appeals is None:
        raise AppealsNotWired
    return d.appeals.get(appeal_id)


def list_appeals(d: Deps, program_id: str, status: str | None = None) -> list[Appeal]:
    if d.appeals is None:
        raise AppealsNotWired
    d.programs.get_program(program_id)  # 404 for an unknown programme
    return sorted(
        (a for a in d.appeals.list_program(program_id) if status is None or a.status.value == status),
        key=lambda a: (a.filed_at, a.appeal_id),
    )


def lab_queue(d: Deps, lab_id: str) -> list[dict[str, Any]]:
    """Appeals whose sample this lab re-tests. A blind re-test: neither the first verdict, nor the first lab, nor the
    seller's statement is shown (no persona data either)."""
    if d.appeals is None:
        raise AppealsNotWired
    return [
        {
            "appeal_id": a.appeal_id,
            "order_id": a.order_id,
            "seller_id": a.seller_id,
            "deadline": a.deadline.isoformat(),
        }
        for a in sorted(d.appeals.lab_queue(lab_id), key=lambda a: (a.deadline, a.appeal_id))
        if a.status is A.RETEST_ASSIGNED and a.retest_lab == lab_id
    ]


def appeal_metrics(d: Deps, program_id: str, orders: list[Order]) -> dict[str, Any] | None:
    """Appeal rate (appeals / suspect verdicts, the originals counted) and overturn rate (overturned / decided)."""
    if d.appeals is None:
        return None
    appeals = d.appeals.list_program(program_id)
    by_status = Counter(a.status.value for a in appeals)
    originals = [o.original_verdict or o.verdict for o in orders]
    suspect = sum(1 for v in originals if v is not None and v.suspect)
    decided = by_status[A.UPHELD.value] + by_status[A.OVERTURNED.value]
    return {
        "filed": len(appeals),
        "by_status": {s.value: by_status[s.value] for s in A},
        "suspect_verdicts": suspect,
        "appeal_rate": len(appeals) / suspect if suspect else None,
        "decided": decided,
        "overturn_rate": by_status[A.OVERTURNED.value] / decided if decided else None,
    }


# ------------------------------------------------------------------------------------------------ tasks


def assign_retest_lab(d: Deps, inp: AppealTaskInput) -> dict[str, Any]:
    """Hand the sample over to the re-test lab (custody entry, once), put the appeal in that lab's queue and say so
    (``RetestRequested``, reason ``appeal``)."""
    if d.appeals is None:
        raise AppealsNotWired
    appeal = d.appeals.get(inp.appeal_id)
    if appeal.status in rules.TERMINAL:
        return {"retest_lab": appeal.retest_lab, "status": appeal.status.value, "wait_seconds": 1}
    condition = f"re-test for appeal {appeal.appeal_id}"
    to_party = f"lab:{appeal.retest_lab}"
    custody.append(
        d,
        appeal.order_id,
        Actor.system("appeal_assign_retest_lab"),
        from_party=f"lab:{appeal.original_lab}:archive",
        to_party=to_party,
        location=f"lab {appeal.original_lab}",
        condition=condition,
        once=lambda e: (e.to_party, e.condition) == (to_party, condition),
    )
    if appeal.status is A.FILED:
        appeal = d.appeals.apply(appeal.appeal_id, AE.ASSIGN_RETEST, d.clock.now())
    order = d.orders.get_order(appeal.order_id)
    _publish(
        d,
        appeal,
        RetestRequested(
            order_id=appeal.order_id,
            round_id=order.round_id,
            seller_id=appeal.seller_id,
            reason="appeal",
            from_lab=appeal.original_lab,
            to_lab=appeal.retest_lab,
            attempt=2,
        ),
        inp.correlation_id,
    )
    return {"retest_lab": appeal.retest_lab, "status": appeal.status.value, "wait_seconds": wait_seconds(d, appeal)}


def wait_seconds(d: Deps, appeal: Appeal) -> int:
    """How long the execution waits for the re-test verdict: until the appeal's deadline (at least 1 s, Step
    Functions' minimum), computed when the wait starts, so a late start never extends the deadline."""
    return max(1, math.ceil((appeal.deadline - d.clock.now()).total_seconds()))


def check_retest_lab(d: Deps, appeal_id: str, lab_id: str | None) -> Appeal:
    """The appeal, if its re-test is assigned to ``lab_id`` (None: any); else the same 404 as an unknown appeal."""
    if d.appeals is None:
        raise AppealsNotWired
    try:
        appeal = d.appeals.get(appeal_id)
    except NotFound:
        appeal = None
    if appeal is None or (lab_id is not None and appeal.retest_lab != lab_id):
        # one answer for "no such appeal" and "not this lab's appeal"
        raise WrongAppealLab(f"no appeal {appeal_id} for this lab", details=[{"field": "appeal_id"}])
    return appeal


def await_retest(d: Deps, appeal_id: str, token: str) -> dict[str, Any]:
    """Park the execution until the re-test lab's verdict (resume at once if it already came)."""
    if d.appeals is None:
        raise AppealsNotWired
    arrival = d.appeals.arm(appeal_id, token)
    if arrival is not None:
        d.workflow.succeed(token, dict(arrival))
    return {"armed": True}


def post_retest_verdict(
    d: Deps, appeal_id: str, lab_id: str | None, actor: Actor, req: RetestVerdictIn
) -> tuple[RetestVerdict, bool]:
    """The re-test lab's verdict (once; the same verdict again returns it, a different one is a 409). A lab sees
    only the appeals assigned to it: another lab's appeal is the same 404 as an unknown one. The follow-ups (the
    lab's custody entry, the stored arrival, the resume of the waiting execution) are redone by every call."""
    appeal = check_retest_lab(d, appeal_id, lab_id)
    assert d.appeals is not None  # nosec B101 # checked by check_retest_lab
    stored = d.appeals.get_retest_verdict(appeal_id)
    lab.check_court_fields(
        d, req, first=stored is None, upload_route=f"POST /labs/{appeal.retest_lab}/appeals/{appeal_id}/evidence"
    )
    created = False
    if stored is None or appeal.status is A.EXPIRED:  # an expired appeal takes no verdict, not even a replay
        if appeal.status is not A.RETEST_ASSIGNED:
            why = "it expired: the original verdict stands" if appeal.status is A.EXPIRED else appeal.status.value
            raise InvalidState(
                f"appeal {appeal_id} takes no re-test verdict now ({why})",
                details=[{"field": "status", "status": appeal.status.value}],
            )
        stored, created = d.appeals.put_retest_verdict(
            RetestVerdict(
                appeal_id=appeal_id,
                lab_id=appeal.retest_lab,
                verdict=req.verdict,
                notes=req.notes,
                evidence=list(req.evidence),
                recorded_at=d.clock.now(),
                recorded_by=actor.subject,
                method=req.method,
                analyst=req.analyst,
                accreditation=req.accreditation,
                confidence=req.confidence,
                report_sha256=req.report_sha256,
            )
        )
    differ = lab.differing_fields(stored, req)
    if differ:
        raise Conflict(
            f"appeal {appeal_id} already has a different re-test verdict ({stored.verdict.value}); it differs in "
            f"{', '.join(differ)}",
            details=[{"field": f, "recorded": lab.recorded_value(getattr(stored, f))} for f in differ],
        )
    archive = f"lab:{appeal.retest_lab}:archive"
    condition = f"re-examined for appeal {appeal_id}: {stored.verdict.value}"
    custody.append(
        d,
        appeal.order_id,
        actor,
        from_party=f"lab:{appeal.retest_lab}",
        to_party=archive,
        at=stored.recorded_at,
        location=f"lab {appeal.retest_lab}",
        condition=condition,
        evidence=stored.evidence,
        once=lambda e: (e.to_party, e.condition) == (archive, condition),
    )
    arrival, token = d.appeals.arrive(appeal_id, {"verdict": stored.verdict.value})
    if token and appeal.status is A.RETEST_ASSIGNED:
        d.workflow.succeed(token, dict(arrival))
    return stored, created


def decide(d: Deps, inp: AppealTaskInput) -> dict[str, Any]:
    """Apply the decision table to the original and the re-test verdict (a retry finds the decision made)."""
    if d.appeals is None:
        raise AppealsNotWired
    appeal = d.appeals.get(inp.appeal_id)
    if appeal.status in rules.DECIDED:
        return {"outcome": appeal.outcome}
    retest = d.appeals.get_retest_verdict(appeal.appeal_id)
    if retest is None:
        raise InvalidState(f"appeal {appeal.appeal_id} has no re-test verdict to decide on")
    decision = rules.decide(appeal.original_verdict, retest.verdict)
    appeal = d.appeals.apply(
        appeal.appeal_id,
        decision.event,
        d.clock.now(),
        {
            "retest_verdict": retest.verdict.value,
            "outcome": decision.outcome.value,
            "effective_verdict": decision.effective.value,
            "decided_at": d.clock.now(),
        },
    )
    return {"outcome": appeal.outcome}


def rescind(d: Deps, inp: AppealTaskInput) -> dict[str, Any]:
    """An overturn's corrections, each idempotent (see the module docstring); rescind events with ids derived from
    (appeal, recommendation index, action, rule), so a retried task never sends a second, different rescind."""
    if d.appeals is None:
        raise AppealsNotWired
    appeal = d.appeals.get(inp.appeal_id)
    if appeal.status is not A.OVERTURNED or appeal.effective_verdict is None:
        raise InvalidState(f"appeal {appeal.appeal_id} is {appeal.status.value}; only an overturn rescinds")
    now = d.clock.now()
    order = d.appeals.overturn_order(
        appeal.order_id, appeal.appeal_id, appeal.original_verdict, appeal.effective_verdict, now
    )
    if appeal.original_verdict is VerdictKind.COUNTERFEIT:
        d.appeals.rescind_confirmed(appeal.seller_id, appeal.order_id, appeal.appeal_id, now)
    if d.leads is not None:  # the lead estimator's record of this test buy (idempotent on the order id)
        d.leads.record_testbuy(
            appeal.program_id, appeal.seller_id, appeal.order_id, appeal.effective_verdict.value, appeal.verdict_at
        )
    recomputed = _recompute_round(d, order, appeal.appeal_id)
    events = [
        envelope(
            EnforcementActionRescinded(
                order_id=order.order_id,
                seller_id=order.seller_id,
                action=str(r["action"]),
                rule=str(r["rule"]),
                policy_version=str(r["policy_version"]),
                appeal_id=appeal.appeal_id,
                reason=f"appeal {appeal.appeal_id} overturned the {appeal.original_verdict.value} verdict "
                f"(re-test at {appeal.retest_lab}: {appeal.retest_verdict.value if appeal.retest_verdict else '?'})",
                ring_id=r.get("ring_id"),
            ),
            event_id=deterministic_event_id(
                appeal.appeal_id, "EnforcementActionRescinded", str(i), str(r["action"]), str(r["rule"])
            ),
            correlation_id=inp.correlation_id,
            occurred_at=appeal.decided_at or now,
            program_id=appeal.program_id,
        )
        for i, r in enumerate(order.recommendations)
    ]
    if events:
        d.events.publish(events)
    return {"rescinded": len(events), "round_recomputed": recomputed}


def _recompute_round(d: Deps, order: Order, appeal_id: str) -> bool:
    """Recompute a completed round's stored summary from the corrected verdicts (the programme metrics and the
    learned risk read the orders live and need nothing)."""
    from chalicelib.domain import model_quality
    from chalicelib.services.rounds import summarize

    rnd = d.rounds.get_round(order.program_id, order.round_id)
    if rnd.status != RoundStatus.COMPLETED or rnd.summary is None:
        return False
    orders = d.orders.list_round_orders(rnd.round_id)
    summary = summarize(orders, rnd.population, rnd.population_by_stratum)
    summary["risk_model"] = model_quality.section([(rnd, orders)])
    summary["recomputed_for_appeals"] = sorted({*rnd.summary.get("recomputed_for_appeals", []), appeal_id})
    d.rounds.update_round(rnd.program_id, rnd.round_id, {"summary": summary, "summary_recomputed_at": d.clock.now()})
    return True


def expire(d: Deps, inp: AppealTaskInput) -> dict[str, Any]:
    """The decision deadline passed with no re-test verdict (or the wait failed): the appeal expires, the original
    verdict stands, nothing is rescinded."""
    if d.appeals is None:
        raise AppealsNotWired
    appeal = d.appeals.get(inp.appeal_id)
    if appeal.status not in rules.TERMINAL:
        appeal = d.appeals.apply(
            appeal.appeal_id, AE.EXPIRE, d.clock.now(), {"outcome": "expired", "decided_at": d.clock.now()}
        )
    return {"outcome": appeal.outcome or appeal.status.value}


def publish_decision(d: Deps, inp: AppealTaskInput) -> dict[str, Any]:
    if d.appeals is None:
        raise AppealsNotWired
    appeal = d.appeals.get(inp.appeal_id)
    if appeal.status not in rules.TERMINAL:
        raise InvalidState(f"appeal {appeal.appeal_id} is {appeal.status.value}; nothing decided to publish")
    outcome = appeal.outcome or appeal.status.value
    _publish(
        d,
        appeal,
        AppealDecided(
            appeal_id=appeal.appeal_id,
            order_id=appeal.order_id,
            seller_id=appeal.seller_id,
            outcome=outcome,
            original_verdict=appeal.original_verdict.value,
            retest_verdict=appeal.retest_verdict.value if appeal.retest_verdict else None,
            retest_lab=appeal.retest_lab if appeal.retest_verdict else None,
        ),
        inp.correlation_id,
    )
    return {"outcome": outcome}
