"""The real ``appeal`` ASL on the local stack (issue 10 item 2), over the HTTP API.

Two programmes run at once, each with one settled counterfeit order whose lab verdict came from ``lab-a`` (the order
is brought to ``settled`` by the order tasks on the real adapters; the verdict is posted over HTTP):

- overturn: the marketplace files an appeal; the appeal machine assigns the re-test to ``lab-b`` (the only other
  lab); ``lab-a`` cannot see or answer it (403 / 404); ``lab-b`` posts ``authentic`` (twice: 201 then 200; a different
  verdict is 409); the execution succeeds, one ``EnforcementActionRescinded`` per recommended action and
  ``AppealDecided`` (overturned) arrive on the enforcement queue, and the programme's estimate changes;
- timeout: nobody answers; the execution reaches its deadline, the appeal expires, the original verdict stands and a
  late verdict is refused (409).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chalicelib.api.auth import Role, issue_token
from chalicelib.domain.models import Round, RoundStatus
from chalicelib.services import orders, rounds
from chalicelib.services.orders import OrderTaskInput
from testbuy.client import ApiClient
from tests import builders
from tests.state_machine.test_order_workflow import Events

RUN = uuid.uuid4().hex[:8]
LAB_A, LAB_B = f"lab-a-{RUN}", f"lab-b-{RUN}"
CURRENCY = "CNY"
REPORT = {"content_base64": base64.b64encode(b"re-test report").decode(), "media_type": "application/pdf"}


@dataclass
class Case:
    pid: str
    rid: str
    oid: str
    recommendations: list[dict[str, Any]]


@dataclass
class H:
    info: Any
    stack: Any
    d: Any
    events: Events
    pm: ApiClient
    fin: ApiClient
    mkt: ApiClient
    lab_a: ApiClient
    lab_b: ApiClient

    def case(self, tag: str, decision_seconds: int) -> Case:
        now = datetime.now(UTC)
        pid = self.pm.call(
            "POST",
            "/programs",
            {
                "name": f"appeal {tag}",
                "currency": CURRENCY,
                "budget": 100_000,
                "period_start": (now - timedelta(days=1)).isoformat(),
                "period_end": (now + timedelta(days=30)).isoformat(),
                "round_size": 1,
                "labs": [LAB_A, LAB_B],
                "timeouts": {
                    "delivery_seconds": 60,
                    "verdict_seconds": 60,
                    "appeal_decision_seconds": decision_seconds,
                },
            },
        )["program_id"]
        self.events.programs.add(pid)
        self.fin.call("POST", f"/programs/{pid}/funding", {"amount": 100_000, "currency": CURRENCY, "reference": "f"})
        rid = f"rnd-{tag}-{RUN}"
        self.d.rounds.put_round(
            Round(
                program_id=pid,
                round_id=rid,
                status=RoundStatus.SAMPLED,
                seed=1,
                budget=100_000,
                started_at=now,
                execution_name=rid,
                population=20,
                population_by_stratum={"bags": 20},
                sampled=1,
            )
        )
        oid = rounds.order_id_for(rid, f"seller-{tag}-{RUN}")
        self.d.orders.put_orders(
            [
                builders.order(
                    order_id=oid,
                    program_id=pid,
                    round_id=rid,
                    seller_id=f"seller-{tag}-{RUN}",
                    pi=0.5,
                    amount=5_000,
                    lab_id=LAB_A,
                )
            ]
        )
        inp = OrderTaskInput(order_id=oid, program_id=pid, round_id=rid, correlation_id=f"c-{tag}")
        orders.reserve_budget(self.d, inp)
        at = datetime.now(UTC)
        self.d.orders.record_place_intent(oid, at)
        self.d.orders.mark_placed(oid, f"mkt-{oid}", 4_000, at)
        self.d.orders.mark_delivered(oid, at, at)
        assert orders.forward_to_lab(self.d, inp)["lab_id"] == LAB_A
        body = builders.court_body(self.lab_a, LAB_A, oid, "counterfeit")
        self.lab_a.call("POST", f"/samples/{oid}/verdict", body, expect=(201,))
        orders.capture_spend(self.d, inp)
        orders.enforce(self.d, inp)
        orders.finalize(self.d, inp)
        rounds.aggregate_round(self.d, rounds.RoundTaskInput(program_id=pid, round_id=rid, correlation_id="c"))
        order = self.d.orders.get_order(oid)
        assert order.status.value == "settled" and order.recommendations
        return Case(pid, rid, oid, order.recommendations)

    def execution(self, appeal_id: str, status: str, timeout: float = 60.0) -> dict[str, Any]:
        arn = self.info.env["TESTBUY_APPEAL_STATE_MACHINE_ARN"].replace(":stateMachine:", ":execution:")
        sfn = self.stack.client("stepfunctions")
        deadline = time.monotonic() + timeout
        while True:
            desc: dict[str, Any] = sfn.describe_execution(executionArn=f"{arn}:{appeal_id}")
            if desc["status"] != "RUNNING" or time.monotonic() > deadline:
                assert desc["status"] == status, desc
                return desc
            time.sleep(0.3)


@pytest.fixture(scope="module")
def h(local_stack: Any, stack_info: Any) -> Iterator[H]:
    from chalicelib.bootstrap import deps

    def client(role: Role, lab: str | None = None) -> ApiClient:
        return ApiClient(stack_info.api_url, issue_token(stack_info.token_secret, role, f"apl-{role.value}", lab))

    yield H(
        info=stack_info,
        stack=local_stack,
        d=deps(),
        events=Events(local_stack.client("sqs"), stack_info.queues),
        pm=client(Role.PROGRAM_MANAGER),
        fin=client(Role.FINANCE),
        mkt=client(Role.MARKETPLACE),
        lab_a=client(Role.LAB, LAB_A),
        lab_b=client(Role.LAB, LAB_B),
    )


def of(appeal_id: str, detail_type: str) -> Any:
    return lambda e: e["detail-type"] == detail_type and e["detail"]["data"].get("appeal_id") == appeal_id


def test_appeal_overturn_and_timeout_on_the_real_asl(h: H) -> None:
    over = h.case("over", decision_seconds=120)
    late = h.case("late", decision_seconds=4)
    before = h.pm.call("GET", f"/programs/{over.pid}/metrics")
    assert before["counterfeit_hits"] == 1 and before["estimate"]["prevalence"] > 0

    # both appeals filed at once (the timeout runs while the overturn is worked on)
    invoice = base64.b64encode(b"invoice of the seller's supplier").decode()
    stored = h.mkt.call("POST", "/appeals/evidence", {"content_base64": invoice, "media_type": "application/pdf"})
    h.mkt.call("POST", "/appeals", {"order_id": over.oid, "statement": "x", "evidence": ["0" * 64]}, expect=(400,))
    filing = {"order_id": over.oid, "statement": "genuine, invoice attached", "evidence": [stored["sha256"]]}
    appeal = h.mkt.call("POST", "/appeals", filing, expect=(201,))
    assert h.mkt.call("POST", "/appeals", filing, expect=(200,)) == appeal  # the same filing again
    h.mkt.call("POST", "/appeals", {**filing, "statement": "other"}, expect=(409,))
    expiring = h.mkt.call("POST", "/appeals", {"order_id": late.oid, "statement": "genuine"}, expect=(201,))
    aid = appeal["appeal_id"]
    assert appeal["retest_lab"] == LAB_B and appeal["original_lab"] == LAB_A

    # the re-test shows up in lab-b's appeal queue only; lab-a is refused
    deadline = time.monotonic() + 30
    while not any(a["appeal_id"] == aid for a in h.lab_b.call("GET", f"/labs/{LAB_B}/appeals")["appeals"]):
        assert time.monotonic() < deadline, "the appeal never reached lab-b's queue"
        time.sleep(0.3)
    h.lab_a.call("GET", f"/labs/{LAB_B}/appeals", expect=(403,))
    h.lab_a.call("POST", f"/labs/{LAB_B}/appeals/{aid}/verdict", {"verdict": "authentic"}, expect=(403,))
    wrong = h.lab_a.call("POST", f"/labs/{LAB_A}/appeals/{aid}/verdict", {"verdict": "authentic"}, expect=(404,))
    unknown = h.lab_a.call("POST", f"/labs/{LAB_A}/appeals/apl-x/verdict", {"verdict": "authentic"}, expect=(404,))
    assert wrong["error"]["code"] == unknown["error"]["code"] == "not_found"

    upload = f"/labs/{LAB_B}/appeals/{aid}/evidence"
    h.lab_a.call("POST", f"/labs/{LAB_A}/appeals/{aid}/evidence", REPORT, expect=(404,))  # not lab-a's appeal
    bare = h.lab_b.call("POST", f"/labs/{LAB_B}/appeals/{aid}/verdict", {"verdict": "authentic"}, expect=(400,))
    assert {d["field"] for d in bare["error"]["details"]} >= {"method", "report_sha256"}  # court-grade, or nothing
    authentic = builders.court_body(h.lab_b, LAB_B, over.oid, "authentic", upload)
    v = h.lab_b.call("POST", f"/labs/{LAB_B}/appeals/{aid}/verdict", authentic, expect=(201,))
    assert v["report_sha256"] == authentic["report_sha256"] and v["method"] == authentic["method"]
    assert h.lab_b.call("POST", f"/labs/{LAB_B}/appeals/{aid}/verdict", authentic, expect=(200,)) == v
    counterfeit = builders.court_body(h.lab_b, LAB_B, over.oid, "counterfeit", upload)
    h.lab_b.call("POST", f"/labs/{LAB_B}/appeals/{aid}/verdict", counterfeit, expect=(409,))

    h.execution(aid, "SUCCEEDED")
    shown = h.mkt.call("GET", f"/appeals/{aid}")
    assert (shown["status"], shown["retest_verdict"], shown["effective_verdict"]) == (
        "overturned",
        "authentic",
        "authentic",
    )
    rescinds = h.events.wait_for("enforcement", of(aid, "EnforcementActionRescinded"), len(over.recommendations))
    by_id = {e["detail"]["metadata"]["event_id"]: e["detail"]["data"] for e in rescinds}
    assert sorted((d["action"], d["rule"]) for d in by_id.values()) == sorted(
        (r["action"], r["rule"]) for r in over.recommendations
    )
    decided = h.events.wait_for("enforcement", of(aid, "AppealDecided"), 1)
    assert decided and decided[0]["detail"]["data"]["outcome"] == "overturned"
    assert h.events.wait_for("enforcement", of(aid, "AppealFiled"), 1)

    # the estimate follows the corrected verdict; the stored round summary was recomputed; the lab's record is kept
    after = h.pm.call("GET", f"/programs/{over.pid}/metrics")
    assert after["counterfeit_hits"] == 0 and after["estimate"]["prevalence"] == 0
    assert after["appeals"]["overturn_rate"] == 1.0 and after["appeals"]["filed"] == 1
    rnd = h.pm.call("GET", f"/programs/{over.pid}/rounds/{over.rid}")
    assert rnd["summary"]["counterfeit_hits"] == 0 and rnd["summary"]["recomputed_for_appeals"] == [aid]
    order = h.d.orders.get_order(over.oid)
    assert (order.verdict.value, order.original_verdict.value, order.verdict_overturned_by) == (
        "authentic",
        "counterfeit",
        aid,
    )
    assert h.d.orders.get_verdict(over.oid).verdict.value == "counterfeit"
    assert h.d.orders.confirmed_history(order.seller_id) == []
    chain = h.pm.call("GET", f"/samples/{over.oid}/custody")
    assert chain["valid"], chain
    assert chain["entries"][-2]["to_party"] == f"lab:{LAB_B}"  # the hand-over to the second lab
    assert chain["entries"][-1]["to_party"] == f"lab:{LAB_B}:archive"

    # timeout: nobody answered the other appeal; it expired and the original verdict stands
    eid = expiring["appeal_id"]
    h.execution(eid, "SUCCEEDED")
    assert h.mkt.call("GET", f"/appeals/{eid}")["status"] == "expired"
    expired = h.events.wait_for("enforcement", of(eid, "AppealDecided"), 1)
    assert expired and expired[0]["detail"]["data"]["outcome"] == "expired"
    assert h.events.of("enforcement", of(eid, "EnforcementActionRescinded")) == []
    late_lab = expiring["retest_lab"]
    token = issue_token(h.info.token_secret, Role.LAB, "apl-late", late_lab)
    late_client = ApiClient(h.info.api_url, token)
    body = builders.court_body(late_client, late_lab, late.oid, "authentic", f"/labs/{late_lab}/appeals/{eid}/evidence")
    late_client.call("POST", f"/labs/{late_lab}/appeals/{eid}/verdict", body, expect=(409,))
    assert h.d.orders.get_order(late.oid).verdict.value == "counterfeit"
    listed = h.pm.call("GET", f"/programs/{late.pid}/appeals?status=expired")["appeals"]
    assert [a["appeal_id"] for a in listed] == [eid]
