"""From verdict to consequence, end to end over HTTP (issue 10): a seeded world with a known ring of three storefronts
(sharing a payment account and devices) and a known large counterfeiter; a round that buys from every seller, two
simulated labs posting court-grade verdicts from the ground truth, the simulated marketplace, and the enforcement
subscriber reading the bus's queue from before the round.

It must end with: the ring detected (members and fingerprint kinds, never a fingerprint's value); a ring-level ban
naming the ring and the shared kinds; after the marketplace's sales feed, a lead for the ring and one for the large
counterfeiter, via the API and as ``LeadRaised``; enforcement moving a lead (``LeadUpdated``); an appeal against one
ring member's counterfeit verdict, re-tested at the other lab (this test acts as that lab: it uploads its report to the
appeal and posts a court-grade ``authentic``), overturned (``AppealDecided``) with one ``EnforcementActionRescinded``
per recommendation of that order, never two for one; and every event the subscriber received for this programme valid
against its committed JSON Schema (schemas/events/<detail-type>.json). About 30-60 s on the shared local stack."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from chalicelib.api.auth import Role, issue_token
from chalicelib.domain.leads import month_of
from testbuy.client import ApiClient
from testbuy.sim.enforcement import EnforcementSubscriber
from testbuy.sim.lab import LabSim, court_verdict
from testbuy.sim.marketplace import MarketplaceSim
from testbuy.sim.world import World, generate

SELLERS = 12
SEED = 3  # a world of 12 where nobody loses a parcel or refuses: the round ends as soon as the labs answered
RUN = uuid.uuid4().hex[:6]
LABS = (f"lab-csq-a-{RUN}", f"lab-csq-b-{RUN}")
CURRENCY = "CNY"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "events"
ROUND_DEADLINE_S = 60.0


def _world() -> World:
    """The seeded world, seller ids unique to this run (enforcement history is per seller on the shared stack), the
    planted ring, the large counterfeiter and the linked storefronts renamed consistently."""
    world = generate(SELLERS, SEED, known_ring=3, large_counterfeiter=True)
    name = {s.seller_id: f"csq-{RUN}-{s.seller_id}" for s in world.sellers}
    world.sellers = [
        dataclasses.replace(s, seller_id=name[s.seller_id], linked_sellers=tuple(name[x] for x in s.linked_sellers))
        for s in world.sellers
    ]
    world.known_ring = tuple(sorted(name[x] for x in world.known_ring))
    assert world.large_counterfeiter is not None and len(world.known_ring) == 3
    world.large_counterfeiter = name[world.large_counterfeiter]
    return world


def _wait(what: str, probe: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.3)


def test_a_ring_a_large_counterfeiter_an_appeal_and_their_events(local_stack: Any, stack_info: Any) -> None:
    world = _world()
    ring = set(world.known_ring)
    fingerprint_values = {digest for s in world.sellers for _, digest in s.fingerprints}

    def client(role: Role, lab: str | None = None) -> ApiClient:
        return ApiClient(stack_info.api_url, issue_token(stack_info.token_secret, role, f"csq-{role.value}", lab))

    pm, fin, mkt, enf = (client(r) for r in (Role.PROGRAM_MANAGER, Role.FINANCE, Role.MARKETPLACE, Role.ENFORCEMENT))
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
            inconclusive_rate=0.0,  # the ground truth, every time: the ring's three verdicts are counterfeit
        )
        for lab in LABS
    ]
    subscriber = EnforcementSubscriber(local_stack.client("sqs"), stack_info.queues["enforcement"])
    subscriber.start()  # before the programme exists: it must see everything from the ring's detection on
    for lab in labs:
        lab.start()
    try:
        # ---------------------------------------------------------------------------------- a round buying everyone
        now = datetime.now(UTC)
        frame_cost = sum(s.expected_cost for s in world.sellers)
        funds = frame_cost * 2  # the round budget covers the frame: a census (every pi is 1)
        pid = pm.call(
            "POST",
            "/programs",
            {
                "name": "consequences e2e",
                "currency": CURRENCY,
                "budget": funds,
                "period_start": (now - timedelta(days=1)).isoformat(),
                "period_end": (now + timedelta(days=30)).isoformat(),
                "round_size": SELLERS,
                "labs": list(LABS),
                "timeouts": {
                    "delivery_seconds": 8,
                    "verdict_seconds": 20,
                    "round_seconds": 90,
                    "appeal_decision_seconds": 60,
                },
            },
        )["program_id"]
        fin.call("POST", f"/programs/{pid}/funding", {"amount": funds, "currency": CURRENCY, "reference": "csq"})
        assert pm.call("POST", f"/programs/{pid}/sellers", {"sellers": world.import_payload()}) == {"imported": SELLERS}
        rid = pm.call("POST", f"/programs/{pid}/rounds", {"seed": SEED, "budget": funds})["round_id"]

        def finished() -> dict[str, Any] | None:
            view: dict[str, Any] = pm.call("GET", f"/programs/{pid}/rounds/{rid}")
            return view if view["status"] in ("completed", "failed") else None

        view = _wait("the round", finished, ROUND_DEADLINE_S)
        assert view["status"] == "completed" and view["sampled"] == SELLERS, view
        orders = pm.call("GET", f"/programs/{pid}/rounds/{rid}/orders?limit=100")["orders"]
        assert sorted(o["seller_id"] for o in orders) == sorted(s.seller_id for s in world.sellers)
        by_seller = {o["seller_id"]: pm.call("GET", f"/orders/{o['order_id']}") for o in orders}
        for s in world.sellers:
            o = by_seller[s.seller_id]
            assert o["status"] == "settled" and o["verdict"] == ("counterfeit" if s.sells_fakes else "authentic"), o
        assert not any(lab.errors for lab in labs), [lab.errors for lab in labs]

        # ---------------------------------------------------------------------------------- the ring and its ban
        rings = pm.call("GET", f"/programs/{pid}/rings")["rings"]
        assert [(set(r["members"]), r["shared_fingerprint_kinds"]) for r in rings] == [
            (ring, ["device", "payment_account"])
        ]
        ring_id = rings[0]["ring_id"]
        ring_bans = [(sid, r) for sid in ring for r in by_seller[sid]["recommendations"] if r["action"] == "ban_ring"]
        assert ring_bans, {sid: by_seller[sid]["recommendations"] for sid in ring}
        for _, r in ring_bans:
            assert (r["rule"], r["ring_id"], r["shared_fingerprint_kinds"]) == (
                "ring-repeat-offender",
                ring_id,
                ["device", "payment_account"],
            )

        # ---------------------------------------------------------------------------------- the sales feed, leads
        periods = sorted({month_of(now - timedelta(days=31)), month_of(now), month_of(datetime.now(UTC))})
        fed = mkt.call("POST", f"/programs/{pid}/sales-feed", world.sales_feed(periods, CURRENCY))
        leads = pm.call("GET", f"/programs/{pid}/leads")["leads"]
        assert set(fed["leads_due"]) <= {x["lead_id"] for x in leads}
        seller_leads = [x for x in leads if x["seller_id"] == world.large_counterfeiter]
        ring_leads = [x for x in leads if x["ring_id"] == ring_id]
        assert [x["rule"] for x in seller_leads] == ["large-counterfeit-sales"], leads
        assert "large-ring-counterfeit-sales" in {x["rule"] for x in ring_leads}, leads
        assert {x["seller_id"] for x in leads} - {None} == {world.large_counterfeiter}, leads  # nobody else
        assert {x["ring_id"] for x in leads} - {None} == {ring_id}, leads
        big = seller_leads[0]
        assert big["estimated_counterfeit_sales"] >= 10_000_000 and big["order_ids"] == [
            by_seller[world.large_counterfeiter]["order_id"]
        ]
        moved = enf.call("POST", f"/programs/{pid}/leads/{big['lead_id']}/status", {"status": "case_opened"})
        assert moved["changed"] and moved["lead"]["status"] == "case_opened"
        again = enf.call("POST", f"/programs/{pid}/leads/{big['lead_id']}/status", {"status": "case_opened"})
        assert not again["changed"]  # a repeat changes nothing (its event, if republished, has the same id)

        # ---------------------------------------------------------------------------------- an appeal, overturned
        member = sorted(sid for sid, _ in ring_bans)[0]  # its actions include the ring ban
        appealed = by_seller[member]
        filed = mkt.call(
            "POST",
            "/appeals",
            {"order_id": appealed["order_id"], "statement": "genuine stock, invoices attached"},
            expect=(201,),
        )
        aid, retest_lab = filed["appeal_id"], filed["retest_lab"]
        assert retest_lab in LABS and retest_lab != appealed["lab_id"]
        as_lab = client(Role.LAB, retest_lab)
        _wait(
            "the appeal in the re-test lab's queue",
            lambda: any(a["appeal_id"] == aid for a in as_lab.call("GET", f"/labs/{retest_lab}/appeals")["appeals"]),
        )

        def post(path: str, body: Any) -> tuple[int, Any]:
            status, payload, _ = as_lab.request("POST", path, body)
            return status, payload

        errors: list[str] = []
        verdict = court_verdict(
            post,
            retest_lab,
            appealed["order_id"],
            "authentic",
            [],
            "re-test on appeal",
            errors,
            upload_path=f"/labs/{retest_lab}/appeals/{aid}/evidence",
        )
        assert not errors, errors
        as_lab.call("POST", f"/labs/{retest_lab}/appeals/{aid}/verdict", verdict, expect=(201,))
        as_lab.call("POST", f"/labs/{retest_lab}/appeals/{aid}/verdict", verdict, expect=(200,))  # a replay
        decided = _wait(
            "the appeal's decision",
            lambda: (a := mkt.call("GET", f"/appeals/{aid}"))["status"] not in ("filed", "retesting") and a,
            30,
        )
        assert (decided["status"], decided["effective_verdict"]) == ("overturned", "authentic"), decided

        # ---------------------------------------------------------------------------------- what the subscriber got
        recs = appealed["recommendations"]
        mine: list[dict[str, Any]] = []

        def arrived() -> bool:
            mine[:] = [e for e in subscriber.events if e["detail"]["metadata"]["program_id"] == pid]
            types = [e["detail-type"] for e in mine]
            return (
                "AppealDecided" in types
                and types.count("EnforcementActionRescinded") >= len(recs)
                and types.count("LeadRaised") >= len(leads)
                and "LeadUpdated" in types
            )

        _wait("the events on the enforcement queue", arrived, 30)
        time.sleep(1.0)  # a duplicate rescind (a second id for one action) would arrive now
        subscriber.drain()
        mine = [e for e in subscriber.events if e["detail"]["metadata"]["program_id"] == pid]
        ids = [e["detail"]["metadata"]["event_id"] for e in mine]
        assert len(ids) == len(set(ids))  # the subscriber keeps the first delivery of each event id
        of = {t: [e["detail"]["data"] for e in mine if e["detail-type"] == t] for t in {e["detail-type"] for e in mine}}

        assert [d["sellers"] for d in of["RingDetected"]] == [sorted(ring)]
        assert of["RingDetected"][0]["shared_fingerprint_kinds"] == ["device", "payment_account"]
        bans = [d for d in of["EnforcementActionRecommended"] if d["action"] == "ban_ring"]
        assert sorted(d["seller_id"] for d in bans) == sorted(sid for sid, _ in ring_bans)
        assert all(
            d["ring_id"] == ring_id and d["shared_fingerprint_kinds"] == ["device", "payment_account"] for d in bans
        )
        assert sorted((d["lead_id"], d["package_sha256"]) for d in of["LeadRaised"]) == sorted(
            (x["lead_id"], x["package_sha256"]) for x in leads
        )
        assert all(x["package_sha256"] for x in leads), leads  # each lead with its evidence package attached
        assert of["LeadUpdated"] == [
            {"lead_id": big["lead_id"], "status": "case_opened", "previous_status": "submitted"}
        ]
        assert [(d["appeal_id"], d["filed_by"]) for d in of["AppealFiled"]] == [(aid, "marketplace")]
        assert [(d["appeal_id"], d["outcome"], d["retest_lab"]) for d in of["AppealDecided"]] == [
            (aid, "overturned", retest_lab)
        ]
        rescinds = of["EnforcementActionRescinded"]
        assert all(d["appeal_id"] == aid and d["order_id"] == appealed["order_id"] for d in rescinds)
        assert sorted((d["action"], d["rule"]) for d in rescinds) == sorted((r["action"], r["rule"]) for r in recs)
        assert len({(d["action"], d["rule"]) for d in rescinds}) == len(rescinds)  # never two for one action
        assert [d["ring_id"] for d in rescinds if d["action"] == "ban_ring"] == [ring_id]

        # every event valid against its committed schema; no fingerprint value anywhere on the bus
        for e in mine:
            schema = json.loads((SCHEMAS / f"{e['detail-type']}.json").read_text())
            problems = [p.message for p in Draft202012Validator(schema).iter_errors(e["detail"])]
            assert not problems, (e["detail-type"], problems)
            assert not any(v in json.dumps(e) for v in fingerprint_values), e["detail-type"]
    finally:
        for lab in labs:
            lab.stop()
        subscriber.stop()  # a subscriber left polling would take the later tests' messages
        market.stop()
