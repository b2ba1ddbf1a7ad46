"""Bad input for every route of the real HTTP API on the local stack.

Every refusal must come back with the documented status and body ``{"error": {"code", "message", "details"}}`` (the
ErrorBody schema of docs/openapi.json), name the offending field for 400s, and leave stored state exactly as it was
(read through the real adapters before and after). Routes, roles, path parameters and statuses come from the routes'
declarations (``testbuy.contracts.declarations()``), so a new route is covered by the authentication, role, path
parameter and lab-scoping cases as soon as it exists (it cannot exist without a declaration).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel

from chalicelib.api.auth import AUDIENCE, ISSUER, Role, issue_token, sign_webhook
from chalicelib.domain.appeals import AppealIn, RetestVerdictIn
from chalicelib.domain.custody import Actor
from chalicelib.domain.leads import LeadUpdateIn, SalesFeedIn
from chalicelib.domain.models import (
    CustodyIn,
    DeliveryNotice,
    EvidenceIn,
    FundRequest,
    Order,
    OrderStatus,
    ProgramCreate,
    RefundFeedIn,
    RoundStart,
    SellerImport,
    ServiceQualityIn,
    VerdictIn,
)
from chalicelib.services import custody
from testbuy import contracts
from testbuy.client import ApiClient
from tests import builders

RUN = uuid.uuid4().hex[:8]
LAB_A, LAB_B = f"lab-a-{RUN}", f"lab-b-{RUN}"
BAD_NAME = f"contract-bad-{RUN}"  # every refused POST /programs carries this name: none may ever be stored
NOW = datetime.now(UTC)
HEX = "ab" * 32
# evidence (issue 10 item 0): the lab report a valid verdict cites, uploaded by the ``adapters`` fixture
REPORT = b"contract test lab report"
REPORT_HEX = hashlib.sha256(REPORT).hexdigest()
COURT = {
    "method": "XRF",
    "analyst": "analyst-7",
    "accreditation": "ISO/IEC 17025 cert 1234-01",
    "confidence": 0.9,
    "report_sha256": REPORT_HEX,
}
MB = 1_000_000

# ====================================================================================================== the world


@dataclass
class World:
    url: str
    token_secret: str
    webhook_secret: str
    table: str
    program: str  # funded, with sellers
    no_sellers: str  # funded, no sellers
    no_funds: str  # sellers, no funds
    order_a: str  # at LAB_A, delivered, custody chain
    order_b: str  # at LAB_B, delivered, custody chain
    persona: str
    ids: dict[str, str] = field(default_factory=dict)

    def client(self, role: str | None, lab: str | None = None) -> ApiClient:
        if role is None:
            return ApiClient(self.url)
        lab_id = lab or (LAB_A if role == "lab" else None)
        return ApiClient(self.url, issue_token(self.token_secret, Role(role), f"tester-{role}", lab_id))

    def fill(self, template: str) -> str:
        return template.format(**self.ids)


def program_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": BAD_NAME,
        "currency": "USD",
        "budget": 5_000_000,
        "period_start": (NOW - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "period_end": (NOW + timedelta(days=90)).isoformat().replace("+00:00", "Z"),
        "round_size": 3,
        "labs": [LAB_A, LAB_B],
        "timeouts": {"delivery_seconds": 30, "verdict_seconds": 30, "round_seconds": 60},
    }
    body.update(changes)
    return body


def seller(i: int, **changes: Any) -> dict[str, Any]:
    return {"seller_id": f"s-{i:04d}", "category": "bags", "expected_cost": 1000 + i, "risk": 0.2, **changes}


def _order(world_program: str, lab: str, now: datetime) -> Order:
    oid = f"ord-contract-{uuid.uuid4().hex[:16]}"
    return builders.order(
        at=now,
        order_id=oid,
        program_id=world_program,
        round_id=f"rnd-contract-{RUN}",
        seller_id="s-0001",
        pi=0.5,
        seed=7,
        amount=1150,
        currency="USD",
        status=OrderStatus.AT_LAB,
        lab_id=lab,
        persona_id=f"{world_program}-p000",
        marketplace_order_id=f"mk-{oid}",
        price=1100,
        delivered_at=now,
    )


def make_order_at_lab(d: Any, program_id: str, lab: str) -> str:
    """An order waiting at ``lab`` as the order workflow leaves it (see services.orders.forward_to_lab)."""
    now = d.clock.now()
    order = _order(program_id, lab, now)
    d.orders.put_orders([order])
    builders.force_order_fields(d.orders, order.order_id, {"gsi2pk": f"LABQ#{lab}", "gsi2sk": now.isoformat()})
    custody.append(
        d,
        order.order_id,
        Actor.system("forward_to_lab"),
        from_party="seller:s-0001",
        to_party=f"lab:{lab}",
        at=now,
        location="drop point",
        condition="sealed parcel as delivered",
    )
    return order.order_id


@pytest.fixture(scope="module")
def adapters(local_stack: Any) -> Any:
    """The real adapters wired against the local stack, built once for the module (what the handlers use)."""
    from chalicelib.bootstrap import deps

    d = deps()
    d.evidence.put_bytes(REPORT)  # evidence (issue 10 item 0): the report the valid verdict body cites
    return d


@pytest.fixture(scope="module")
def world(adapters: Any, stack_info: Any) -> World:
    d = adapters
    pm = ApiClient(stack_info.api_url, issue_token(stack_info.token_secret, Role.PROGRAM_MANAGER, "setup"))

    def create(name: str, fund: bool, sellers: int) -> str:
        pid = str(pm.call("POST", "/programs", program_body(name=name))["program_id"])
        if fund:
            pm.call("POST", f"/programs/{pid}/funding", {"amount": 1_000_000, "currency": "USD", "reference": "f-1"})
        if sellers:
            pm.call("POST", f"/programs/{pid}/sellers", {"sellers": [seller(i) for i in range(sellers)]})
        return pid

    program = create(f"contract-{RUN}", fund=True, sellers=3)
    w = World(
        url=stack_info.api_url,
        token_secret=stack_info.token_secret,
        webhook_secret=stack_info.webhook_secret,
        table=stack_info.env["TESTBUY_DATA_TABLE"],
        program=program,
        no_sellers=create(f"contract-nosellers-{RUN}", fund=True, sellers=0),
        no_funds=create(f"contract-nofunds-{RUN}", fund=False, sellers=3),
        order_a=make_order_at_lab(d, program, LAB_A),
        order_b=make_order_at_lab(d, program, LAB_B),
        persona=f"{program}-p000",
    )
    w.ids = {
        "program": w.program,
        "no_sellers": w.no_sellers,
        "no_funds": w.no_funds,
        "order_a": w.order_a,
        "order_b": w.order_b,
        "persona": w.persona,
        "lab_a": LAB_A,
        "lab_b": LAB_B,
        "missing": "does-not-exist-0",
    }
    return w


# ====================================================================================================== state


def snapshot(d: Any, w: World, scope: set[str]) -> dict[str, Any]:
    """What a refused request could have touched, read through the real adapters. ``scope`` names the programmes
    (by their world key), ``orders`` (both samples and both lab queues) and ``persona``; ``refused`` (programmes
    named BAD_NAME) is checked by a scan after the request."""
    state: dict[str, Any] = {}
    for key in ("program", "no_sellers", "no_funds"):
        if key in scope:
            pid = w.ids[key]
            state[key] = {
                "program": d.programs.get_program(pid).model_dump(),
                "balance": dict(vars(d.ledger.balance(pid))),
                "journal": len(d.ledger.journal(pid)),
                "sellers": sorted((s.model_dump() for s in d.programs.list_sellers(pid)), key=lambda s: s["seller_id"]),
                "rounds": [r.model_dump() for r in d.rounds.list_rounds(pid)],
                "refund_feed": d.programs.refund_feed(pid),
            }
    if "orders" in scope:
        for oid in (w.order_a, w.order_b):
            verdict = d.orders.get_verdict(oid)
            state[oid] = {
                "order": d.orders.get_order(oid).model_dump(),
                "verdict": verdict.model_dump() if verdict else None,
                "custody": [e.mac for e in d.custody.chain(oid)],
            }
        mine = (w.order_a, w.order_b)  # other tests of this module add their own samples to the labs' queues
        state["queues"] = {
            lab: [o.order_id for o in d.orders.lab_queue(lab) if o.order_id in mine] for lab in (LAB_A, LAB_B)
        }
    if "persona" in scope:
        state["persona"] = d.personas.persona_secret(w.program, w.persona)
    if "appeals" in scope:  # appeals (issue 10 item 2): the world's appeals and the labs' appeal queues
        state["appeals"] = sorted((a.model_dump() for a in d.appeals.list_program(w.program)), key=str)
        state["appeal_queues"] = {lab: [a.appeal_id for a in d.appeals.lab_queue(lab)] for lab in (LAB_A, LAB_B)}
    if "evidence" in scope:
        import boto3

        from chalicelib.config import settings

        listing = boto3.client("s3", region_name=settings().region).list_objects_v2(
            Bucket=settings().evidence_bucket, Prefix="evidence/sha256/"
        )
        state["evidence"] = sorted(o["Key"] for o in listing.get("Contents", []))
    return state


def scope_of(cs: Case) -> set[str]:
    template = cs.path if cs.path is not None else concrete(cs.route)
    if cs.route == "/programs":
        return {"refused"}
    if cs.route == "/webhooks/delivery":
        return {"orders"}
    scope = {key for key in ("program", "no_sellers", "no_funds", "persona") if "{" + key + "}" in template}
    if any(k in template for k in ("{order_a}", "{order_b}", "{lab_a}", "{lab_b}", "/samples/", "/orders/")):
        scope.add("orders")
    if "{missing}" in template and cs.route.startswith("/programs/"):
        scope.add("program")
    if "{persona_id}" in cs.route:
        scope.add("persona")
    if cs.route.endswith("/evidence"):
        scope.add("evidence")
    if "/appeals" in cs.route:  # appeals (issue 10 item 2)
        scope.add("appeals")
    if not scope and cs.path is not None:  # a path parameter replaced by junk: what the valid path could touch
        return scope_of(dataclasses.replace(cs, path=None))
    return scope


def _programmes_named(name: str) -> list[str]:
    import boto3

    from chalicelib.config import settings

    db = boto3.client("dynamodb", region_name=settings().region)
    kwargs: dict[str, Any] = {
        "TableName": settings().data_table,
        "FilterExpression": "#n = :n AND sk = :meta",
        "ExpressionAttributeNames": {"#n": "name"},
        "ExpressionAttributeValues": {":n": {"S": name}, ":meta": {"S": "META"}},
        "ProjectionExpression": "pk",
    }
    found: list[str] = []
    while True:
        resp = db.scan(**kwargs)
        found += [i["pk"]["S"] for i in resp.get("Items", [])]
        if "LastEvaluatedKey" not in resp:
            return found
        kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]


_ERROR_VALIDATOR: Draft202012Validator | None = None


def error_validator() -> Draft202012Validator:
    global _ERROR_VALIDATOR
    if _ERROR_VALIDATOR is None:
        doc = json.loads(contracts.OPENAPI_PATH.read_text())
        _ERROR_VALIDATOR = Draft202012Validator(
            {"$ref": "#/components/schemas/ErrorBody", "components": doc["components"]}
        )
    return _ERROR_VALIDATOR


# ====================================================================================================== cases

# Route templates -> paths in the world ({program} etc. are filled per test).
PARAMS = {"program_id": "{program}", "round_id": "rnd-unknown-0", "order_id": "{order_a}", "lab_id": "{lab_a}"}
PARAMS["persona_id"] = "{persona}"
PARAMS["lead_id"] = "lead-unknown-0"  # rings and leads (issue 10)
PARAMS["appeal_id"] = "apl-unknown-0"  # appeals (issue 10 item 2)
PARAMS["seller_id"] = "s-unknown-0"  # evidence (issue 10 item 5): the seller package route


def concrete(template: str) -> str:
    out = template
    for name, value in PARAMS.items():
        out = out.replace("{" + name + "}", value)
    return out


VALID: dict[str, Callable[[], dict[str, Any]]] = {
    "/programs": program_body,
    "/programs/{program_id}/funding": lambda: {"amount": 500, "currency": "USD", "reference": f"f-{RUN}"},
    "/programs/{program_id}/sellers": lambda: {"sellers": [seller(90)]},
    "/programs/{program_id}/rounds": lambda: {"seed": 1},
    "/programs/{program_id}/marketplace-refunds": lambda: {"period": "2026-10", "orders": 1000, "suspect_refunds": 2},
    "/samples/{order_id}/verdict": lambda: {"verdict": "authentic", "notes": "", "evidence": [HEX], **COURT},
    "/samples/{order_id}/service-quality": lambda: {
        "delivery_days": 3,
        "packaging": 4,
        "description_accuracy": 4,
        "communication": 4,
    },
    "/samples/{order_id}/custody": lambda: {
        "from_party": "lab",
        "to_party": "vault",
        "location": "l",
        "condition": "c",
    },
    "/samples/{order_id}/evidence": lambda: {
        "content_base64": "cGhvdG8gb2YgYSBsb2dv",
        "media_type": "image/jpeg",
    },
    # rings and leads (issue 10)
    "/programs/{program_id}/sales-feed": lambda: {
        "currency": "USD",
        "rows": [{"seller_id": "s-1", "period": "2026-10", "units": 5, "orders": 4, "gross_sales": 1000}],
    },
    "/programs/{program_id}/leads/{lead_id}/status": lambda: {"status": "case_opened", "note": ""},
    # appeals (issue 10 item 2)
    "/appeals": lambda: {"order_id": "does-not-exist-0", "statement": "the item is genuine", "evidence": []},
    "/appeals/evidence": lambda: {"content_base64": "aW52b2ljZQ==", "media_type": "application/pdf"},
    "/labs/{lab_id}/appeals/{appeal_id}/verdict": lambda: {
        "verdict": "authentic",
        "notes": "",
        "evidence": [HEX],
        **COURT,
    },
    "/labs/{lab_id}/appeals/{appeal_id}/evidence": lambda: {
        "content_base64": "cmVwb3J0",
        "media_type": "application/pdf",
    },
    # evidence (issue 10 item 5): the package routes take no body
    "/samples/{order_id}/evidence-package": dict,
    "/programs/{program_id}/sellers/{seller_id}/evidence-package": dict,
    "/programs/{program_id}/leads/{lead_id}/evidence-package": dict,
    "/webhooks/delivery": lambda: {
        "order_id": "{order_a}",
        "marketplace_order_id": "mk-{order_a}",
        "status": "delivered",
        "occurred_at": NOW.isoformat(),
    },
}

MODELS: dict[str, type[BaseModel]] = {
    "/programs": ProgramCreate,
    "/programs/{program_id}/funding": FundRequest,
    "/programs/{program_id}/sellers": SellerImport,
    "/programs/{program_id}/rounds": RoundStart,
    "/programs/{program_id}/marketplace-refunds": RefundFeedIn,
    "/samples/{order_id}/verdict": VerdictIn,
    "/samples/{order_id}/service-quality": ServiceQualityIn,
    "/samples/{order_id}/custody": CustodyIn,
    "/samples/{order_id}/evidence": EvidenceIn,
    "/webhooks/delivery": DeliveryNotice,
    "/programs/{program_id}/sales-feed": SalesFeedIn,  # rings and leads (issue 10)
    "/programs/{program_id}/leads/{lead_id}/status": LeadUpdateIn,
    "/appeals": AppealIn,  # appeals (issue 10 item 2)
    "/appeals/evidence": EvidenceIn,
    "/labs/{lab_id}/appeals/{appeal_id}/evidence": EvidenceIn,
    "/labs/{lab_id}/appeals/{appeal_id}/verdict": RetestVerdictIn,
}

_UNSET = object()


@dataclass(frozen=True)
class Case:
    method: str
    route: str  # the route template, as declared
    status: int
    code: str
    field: str | None = None  # a 400 must name this field in details
    path: str | None = None  # default: concrete(route)
    role: str | None = "program_manager"
    lab: str | None = None  # lab token's lab (default LAB_A)
    body: Any = _UNSET  # default: the route's valid body (if it takes one)
    raw: bytes | None = None
    auth: str = "token"  # token | none | garbage | basic | wrong_secret | expired | no_role | bad_alg | ...
    signature: str = "valid"  # for the webhook: valid | none | garbage | wrong_secret | stale | future | ...


DECLS = contracts.declarations()


def valid_role(route: str, method: str) -> tuple[str | None, str | None]:
    doc = DECLS[(method, route)]
    if doc.auth != "bearer":
        return None, None
    if not doc.roles:
        return "admin", None
    role = doc.roles[0].value
    return role, (LAB_A if role == "lab" else None)


def case(method: str, route: str, status: int, code: str, **kw: Any) -> Case:
    if "role" not in kw:
        kw["role"], lab = valid_role(route, method)
        kw.setdefault("lab", lab)
    return Case(method, route, status, code, **kw)


def body_cases() -> list[Any]:
    out: list[Any] = []

    def add(route: str, label: str, status: int, code: str, **kw: Any) -> None:
        out.append(pytest.param(case("POST", route, status, code, **kw), id=f"POST {route} {label}"))

    for route, model in MODELS.items():
        valid = VALID[route]()
        add(route, "malformed JSON", 400, "malformed_json", field="(body)", raw=b'{"seed": 1,')
        add(route, "not an object", 400, "invalid_input", field="(body)", raw=b"[1, 2]")
        add(route, "bare string", 400, "invalid_input", field="(body)", raw=b'"x"')
        add(route, "invalid UTF-8", 400, "malformed_json", field="(body)", raw=b'{"a": "\xff\xfe"}')
        if route != "/programs/{program_id}/rounds":  # an empty body starts a round with defaults
            add(route, "empty body", 400, "invalid_input", field="(body)", raw=b"")
        add(route, "extra field", 400, "invalid_input", field="surprise", body={**valid, "surprise": 1})
        pad = json.dumps({**valid, "pad": "x" * (MB + 10)}).encode()
        add(route, "body over 1 MB", 413, "payload_too_large", raw=pad)
        schema = model.model_json_schema()
        for name in schema.get("required", []):
            add(
                route,
                f"missing {name}",
                400,
                "invalid_input",
                field=name,
                body={k: v for k, v in valid.items() if k != name},
            )
        for name, prop in schema["properties"].items():
            wrong = _wrong_type(prop, schema)
            add(route, f"wrong type {name}", 400, "invalid_input", field=name, body={**valid, name: wrong})
    return out


def _wrong_type(prop: dict[str, Any], schema: dict[str, Any]) -> Any:
    if "$ref" in prop:
        prop = schema["$defs"][prop["$ref"].rsplit("/", 1)[1]]
    kinds = [p.get("type") for p in prop.get("anyOf", [prop])] or [prop.get("type")]
    kind = next((k for k in kinds if k not in (None, "null")), "object")
    return {
        "string": 12345,
        "integer": "12",
        "number": "0.5",
        "boolean": "true",
        "array": {"a": 1},
        "object": "not-an-object",
    }[kind]


def b(route: str, **changes: Any) -> dict[str, Any]:
    return {**VALID[route](), **changes}


BIG = [-1, 0, 2**53 + 1, 2**63 + 1, 2**64 * 3, "NaN", 1.5, 1e300, True]  # (5.0 and 1e3 are integers: accepted)


def value_cases() -> list[Any]:
    p, f, s, r = (
        "/programs",
        "/programs/{program_id}/funding",
        "/programs/{program_id}/sellers",
        "/programs/{program_id}/rounds",
    )
    v, q, c, w = (
        "/samples/{order_id}/verdict",
        "/samples/{order_id}/service-quality",
        "/samples/{order_id}/custody",
        "/webhooks/delivery",
    )
    out: list[tuple[str, str, Any, str]] = []  # (route, label, body, field)
    for amount in BIG:
        out.append((p, f"budget={amount!r}", b(p, budget=amount), "budget"))
        out.append((f, f"amount={amount!r}", b(f, amount=amount), "amount"))
        out.append(
            (s, f"expected_cost={amount!r}", b(s, sellers=[seller(1, expected_cost=amount)]), "sellers.0.expected_cost")
        )
        if amount not in (-1, 0):
            out.append((r, f"budget={amount!r}", b(r, budget=amount), "budget"))
    out += [
        (p, "per_order_cap=0", b(p, per_order_cap=0), "per_order_cap"),
        (p, "currency lower case", b(p, currency="usd"), "currency"),
        (p, "currency 4 letters", b(p, currency="USDT"), "currency"),
        (p, "round_size=0", b(p, round_size=0), "round_size"),
        (p, "round_size=2**63", b(p, round_size=2**63), "round_size"),
        (p, "exploration_share=0", b(p, exploration_share=0), "exploration_share"),
        (p, "exploration_share NaN literal", None, "exploration_share"),
        (p, "exploration_share='0.5'", b(p, exploration_share="0.5"), "exploration_share"),
        (p, "blend=true", b(p, blend=True), "blend"),
        (p, "blend=1.5", b(p, blend=1.5), "blend"),
        (p, "blend=-0.1", b(p, blend=-0.1), "blend"),
        (p, "labs empty", b(p, labs=[]), "labs"),
        (p, "lab id with spaces", b(p, labs=["lab 1"]), "labs.0"),
        (p, "name empty", b(p, name=""), "name"),
        (p, "naive period_start", b(p, period_start="2026-01-01T00:00:00"), "period_start"),
        (p, "period_start not a date", b(p, period_start="yesterday"), "period_start"),
        (p, "timeouts.delivery_seconds=0", b(p, timeouts={"delivery_seconds": 0}), "timeouts.delivery_seconds"),
        (p, "timeouts extra field", b(p, timeouts={"hours": 1}), "timeouts.hours"),
        (p, "retest mode unknown", b(p, retest={"mode": "third_unit"}), "retest.mode"),
        (p, "retest max_lab_attempts=0", b(p, retest={"max_lab_attempts": 0}), "retest.max_lab_attempts"),
        (f, "currency lower case", b(f, currency="usd"), "currency"),
        (f, "reference empty", b(f, reference=""), "reference"),
        (f, "reference with spaces", b(f, reference="a b"), "reference"),
        (s, "no sellers", {"sellers": []}, "sellers"),
        (s, "501 sellers", {"sellers": [seller(i) for i in range(501)]}, "sellers"),
        (s, "duplicate seller ids", {"sellers": [seller(1), seller(1)]}, "sellers[1].seller_id"),
        (s, "risk=1", b(s, sellers=[seller(1, risk=1.0)]), "sellers.0.risk"),
        (s, "risk='0.5'", b(s, sellers=[seller(1, risk="0.5")]), "sellers.0.risk"),
        (s, "seller extra field", b(s, sellers=[seller(1, colour="red")]), "sellers.0.colour"),
        (s, "seller missing category", {"sellers": [{"seller_id": "s-1", "expected_cost": 5}]}, "sellers.0.category"),
        (r, "seed=-1", b(r, seed=-1), "seed"),
        (r, "seed=2**63", b(r, seed=2**63), "seed"),
        (r, "seed='1'", b(r, seed="1"), "seed"),
        (r, "budget below cheapest order", b(r, budget=1), "budget"),
        (v, "unknown verdict", b(v, verdict="fake"), "verdict"),
        (v, "evidence not sha256", b(v, evidence=["nothex"]), "evidence.0"),
        (v, "notes too long", b(v, notes="x" * 4001), "notes"),
        (q, "packaging=0", b(q, packaging=0), "packaging"),
        (q, "communication=6", b(q, communication=6), "communication"),
        (q, "delivery_days=-1", b(q, delivery_days=-1), "delivery_days"),
        (q, "delivery_days=2**63", b(q, delivery_days=2**63), "delivery_days"),
        (q, "description_accuracy=4.5", b(q, description_accuracy=4.5), "description_accuracy"),
        (c, "from_party empty", b(c, from_party=""), "from_party"),
        (c, "evidence not sha256", b(c, evidence=["ABC"]), "evidence.0"),
        # appeals (issue 10 item 2)
        ("/appeals", "statement empty", b("/appeals", statement=""), "statement"),
        ("/appeals", "statement too long", b("/appeals", statement="x" * 4001), "statement"),
        ("/appeals", "evidence not sha256", b("/appeals", evidence=["nothex"]), "evidence.0"),
        ("/appeals", "order_id not an id", b("/appeals", order_id="a b"), "order_id"),
        ("/labs/{lab_id}/appeals/{appeal_id}/verdict", "unknown verdict", {"verdict": "fake"}, "verdict"),
        (w, "status unknown", b(w, status="lost"), "status"),
        (w, "occurred_at naive", b(w, occurred_at="2026-01-01T00:00:00"), "occurred_at"),
        (w, "marketplace_order_id mismatch", b(w, marketplace_order_id="mk-other"), "marketplace_order_id"),
    ]
    params = []
    for route, label, body, fld in out:
        kw: dict[str, Any] = {"field": fld}
        if body is None:  # a JSON NaN literal, which json.dumps would not write for us
            kw["raw"] = json.dumps(b(route, exploration_share=0.314159)).replace("0.314159", "NaN").encode()
        else:
            kw["body"] = body
        params.append(pytest.param(case("POST", route, 400, "invalid_input", **kw), id=f"POST {route} {label}"))
    params.append(
        pytest.param(
            case("POST", p, 400, "invalid_input", field="period_end", body=b(p, period_end=b(p)["period_start"])),
            id="POST /programs period_end not after period_start",
        )
    )
    params.append(
        pytest.param(
            case("POST", f, 400, "currency_mismatch", field="currency", body=b(f, currency="EUR")),
            id="POST funding currency mismatch",
        )
    )
    return params


TOKENS = (
    "none",
    "garbage",
    "basic",
    "wrong_secret",
    "expired",
    "no_role",
    "bad_alg",
    "malformed_exp",
    "not_yet_valid",
    "wrong_audience",
    "wrong_issuer",
    "lab_without_lab_id",
)
SIGNATURES = ("none", "garbage", "wrong_secret", "stale", "future", "other_body", "non_ascii", "bad_base64", "bad_ts")


def auth_cases() -> list[Any]:
    out = []
    for (method, route), doc in sorted(DECLS.items()):
        if doc.auth == "bearer":
            for how in TOKENS:
                out.append(
                    pytest.param(case(method, route, 401, "unauthorized", auth=how), id=f"{method} {route} {how}")
                )
            admitted = set(doc.admitted)
            for role in sorted({r.value for r in Role} - admitted):
                out.append(
                    pytest.param(case(method, route, 403, "forbidden", role=role), id=f"{method} {route} as {role}")
                )
        elif doc.auth == "webhook":
            for how in SIGNATURES:
                out.append(
                    pytest.param(
                        case(method, route, 401, "unauthorized", signature=how), id=f"{method} {route} sig {how}"
                    )
                )
    return out


def path_param_cases() -> list[Any]:
    """Every path parameter of every route: over-long (would exceed DynamoDB's key limit), and not an identifier."""
    out = []
    for (method, route), doc in sorted(DECLS.items()):
        for name in doc.params:
            for label, value in (("over-long", "x" * 3000), ("one too long", "a" * 129), ("not an id", "a%20b")):
                path = concrete(route).replace(PARAMS[name], value)
                out.append(
                    pytest.param(
                        case(method, route, 400, "invalid_input", field=name, path=path),
                        id=f"{method} {route} {name} {label}",
                    )
                )
    return out


def not_found_cases() -> list[Any]:
    out = []
    for (method, route), doc in sorted(DECLS.items()):
        if 404 not in doc.errors or doc.auth == "webhook":  # the webhook's ids are in its body: below
            continue
        templ = concrete(route)
        if "{order_a}" in templ:
            paths = [templ.replace("{order_a}", "{missing}")]
        elif route.endswith("{round_id}"):
            paths = [templ, templ.replace("{program}", "{missing}")]
        elif route.endswith("{persona_id}"):
            paths = [templ.replace("{persona}", "{missing}"), templ.replace("{program}", "{missing}")]
        else:
            paths = [templ.replace("{program}", "{missing}")]
        for path in paths:
            out.append(pytest.param(case(method, route, 404, "not_found", path=path), id=f"{method} {path}"))
    w = "/webhooks/delivery"
    out.append(
        pytest.param(
            case("POST", w, 404, "not_found", body=b(w, order_id="does-not-exist-0")), id="POST webhook unknown order"
        )
    )
    return out


def other_cases() -> list[Any]:
    r, c = "/programs/{program_id}/rounds", "/samples/{order_id}/custody"
    sp = "/programs/{program_id}/spend"
    out = [
        (case("POST", r, 409, "invalid_state", path="/programs/{no_sellers}/rounds"), "round without sellers"),
        (case("POST", r, 409, "insufficient_funds", path="/programs/{no_funds}/rounds"), "round without funds"),
        (case("GET", sp, 400, "invalid_input", field="group_by", path="/programs/{program}/spend?group_by=x"), "group"),
        (case("GET", sp, 400, "invalid_input", field="format", path="/programs/{program}/spend?format=xml"), "format"),
        (case("GET", sp, 400, "invalid_input", field="colour", path="/programs/{program}/spend?colour=red"), "param"),
        (
            case(
                "POST",
                "/programs/{program_id}/funding",
                409,
                "idempotency_conflict",
                body={"amount": 999, "currency": "USD", "reference": "f-1"},
            ),
            "funding reference reused with another amount",
        ),
        # lab scoping: a lab-A token on lab B's queue (403) and samples (404, as for a sample that does not exist)
        (case("GET", "/labs/{lab_id}/queue", 403, "forbidden", path="/labs/{lab_b}/queue"), "lab A reads lab B queue"),
        (case("GET", c, 404, "not_found", path="/samples/{order_b}/custody", lab=f"lab-z-{RUN}"), "other lab custody"),
        # appeals (issue 10 item 2): a lab-A token on lab B's appeal queue and verdict route (403)
        (
            case("GET", "/labs/{lab_id}/appeals", 403, "forbidden", path="/labs/{lab_b}/appeals"),
            "lab A reads lab B appeal queue",
        ),
        (
            case(
                "POST",
                "/labs/{lab_id}/appeals/{appeal_id}/verdict",
                403,
                "forbidden",
                path="/labs/{lab_b}/appeals/apl-unknown-0/verdict",
            ),
            "lab A posts on lab B appeal",
        ),
    ]
    for (method, route), doc in sorted(DECLS.items()):
        if doc.lab_scope == "order_id":
            for label, target in (("another lab's sample", "{order_b}"), ("an unknown sample", "{missing}")):
                path = concrete(route).replace("{order_a}", target)
                out.append(
                    (
                        case(method, route, 404, "not_found", field="order_id", path=path, role="lab", lab=LAB_A),
                        f"lab A: {method} {route} on {label}",
                    )
                )
    return [pytest.param(cs, id=label) for cs, label in out]


# ====================================================================================================== running


def _forge(w: World, claims: dict[str, Any], alg: str = "HS256") -> str:
    """A token signed with the stack's real secret but with the given header algorithm and claims."""
    import base64

    def enc(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    signing = f"{enc({'alg': alg, 'typ': 'JWT'})}.{enc(claims)}"
    sig = base64.urlsafe_b64encode(hmac.new(w.token_secret.encode(), signing.encode(), hashlib.sha256).digest())
    return f"Bearer {signing}.{sig.rstrip(b'=').decode()}"


def _token(w: World, cs: Case) -> str | None:
    role, lab = cs.role, cs.lab or (LAB_A if cs.role == "lab" else None)
    if cs.auth == "none" or role is None:
        return None
    if cs.auth == "garbage":
        return "Bearer not.a.token"
    if cs.auth == "basic":
        return "Basic dXNlcjpwYXNz"
    if cs.auth == "wrong_secret":
        return "Bearer " + issue_token("not-the-secret-at-all-" + "x" * 16, Role(role), "x", lab)
    if cs.auth == "expired":
        return "Bearer " + issue_token(w.token_secret, Role(role), "x", lab, ttl_seconds=60, now=time.time() - 3600)
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "role": role, "iat": now, "nbf": now}
    claims["exp"] = now + 600
    if lab:
        claims["lab_id"] = lab
    changes: dict[str, dict[str, Any]] = {
        "no_role": {"role": "superuser"},
        "malformed_exp": {"exp": "soon"},
        "not_yet_valid": {"nbf": now + 3600},
        "wrong_audience": {"aud": "another-api"},
        "wrong_issuer": {"iss": "someone-else"},
        "lab_without_lab_id": {"role": "lab", "lab_id": None},
    }
    if cs.auth in changes:
        claims.update(changes[cs.auth])
        return _forge(w, {k: v for k, v in claims.items() if v is not None})
    if cs.auth == "bad_alg":
        return _forge(w, claims, alg="none")
    return "Bearer " + issue_token(w.token_secret, Role(role), f"tester-{role}", lab)


def _signature(w: World, cs: Case, raw: bytes, msg_id: str) -> dict[str, str]:
    now = int(time.time())
    valid = sign_webhook(w.webhook_secret, raw, msg_id, timestamp=now)
    other = "whsec_" + __import__("base64").b64encode(b"not-the-webhook-secret!!").decode()
    return {
        "valid": valid,
        "none": {},
        "garbage": {**valid, "webhook-signature": "sha256=deadbeef"},
        "wrong_secret": sign_webhook(other, raw, msg_id, timestamp=now),
        "stale": sign_webhook(w.webhook_secret, raw, msg_id, timestamp=now - 3600),
        "future": sign_webhook(w.webhook_secret, raw, msg_id, timestamp=now + 3600),
        "other_body": sign_webhook(w.webhook_secret, raw + b" ", msg_id, timestamp=now),
        "non_ascii": {**valid, "webhook-signature": "v1,\u00e9" + valid["webhook-signature"][4:]},
        "bad_base64": {**valid, "webhook-signature": "v1,!!!!"},
        "bad_ts": {**valid, "webhook-timestamp": f"{now}.0"},
    }[cs.signature]


def _fill_body(w: World, body: Any) -> Any:
    if isinstance(body, str):
        return w.fill(body) if "{" in body else body
    if isinstance(body, dict):
        return {k: _fill_body(w, v) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill_body(w, v) for v in body]
    return body


def send(w: World, cs: Case) -> tuple[int, Any]:
    path = w.fill(cs.path if cs.path is not None else concrete(cs.route))
    raw = cs.raw
    if raw is None and cs.method == "POST":
        body = VALID[cs.route]() if cs.body is _UNSET else copy.deepcopy(cs.body)
        raw = json.dumps(_fill_body(w, body)).encode()
    headers: dict[str, str] = {}
    token = _token(w, cs)
    if token:
        headers["Authorization"] = token
    if cs.route == "/webhooks/delivery":
        headers.update(_signature(w, cs, raw or b"", case_msg_id(cs)))
    status, payload, _ = ApiClient(w.url).request(cs.method, path, headers=headers, raw=raw)
    return status, payload


def case_msg_id(cs: Case) -> str:
    """A webhook-id of its own for each case: a refused notice must leave no receipt under it."""
    return "msg_case_" + hashlib.sha256(repr(cs).encode()).hexdigest()[:24]


def receipt(d: Any, msg_id: str) -> Any:
    import boto3

    from chalicelib.config import settings

    item = boto3.client("dynamodb", region_name=settings().region).get_item(
        TableName=settings().data_table, Key={"pk": {"S": f"WEBHOOK#{msg_id}"}, "sk": {"S": "RECEIPT"}}
    )
    return item.get("Item")


ALL_CASES = body_cases() + value_cases() + auth_cases() + path_param_cases() + not_found_cases() + other_cases()


@pytest.mark.parametrize("cs", ALL_CASES)
def test_bad_request_is_refused_with_the_documented_error_and_no_change(world: World, adapters: Any, cs: Case) -> None:
    scope = scope_of(cs)
    assert scope, cs
    before = snapshot(adapters, world, scope)
    status, payload = send(world, cs)
    assert status == cs.status, payload
    assert isinstance(payload, dict), payload
    errors = [e.message for e in error_validator().iter_errors(payload)]
    assert not errors, (errors, payload)
    assert payload["error"]["code"] == cs.code, payload
    if cs.field is not None:
        fields = [d.get("field") for d in payload["error"]["details"] or []]
        assert cs.field in fields, payload
    after = snapshot(adapters, world, scope)
    assert after == before
    if cs.route == "/webhooks/delivery":  # no receipt that would make the sender's retry a "replay"
        left = receipt(adapters, case_msg_id(cs))
        assert left is None or (left["state"] == {"S": "processing"} and left["lease_until"] == {"N": "0"}), left
    if "refused" in scope:  # BAD_NAME is used by refused requests only, so there was none before either
        assert _programmes_named(BAD_NAME) == []


def test_every_route_is_exercised() -> None:
    covered = {(c.values[0].method, c.values[0].route) for c in ALL_CASES}
    protected = {k for k, d in DECLS.items() if d.auth != "none"}
    assert protected <= covered, sorted(protected - covered)
    assert set(MODELS) == {path for (m, path), d in DECLS.items() if d.request is not None}
    with_params = {k for k, d in DECLS.items() if d.params}
    assert with_params <= {(c.values[0].method, c.values[0].route) for c in path_param_cases()}


# ====================================================================================================== happy paths


def test_verdict_is_recorded_once_same_again_is_idempotent_a_different_one_conflicts(
    world: World, adapters: Any
) -> None:
    oid = make_order_at_lab(adapters, world.program, LAB_A)
    lab = world.client("lab", LAB_A)
    body = {"verdict": "counterfeit", "evidence": [HEX], **COURT}
    status, first, _ = lab.request("POST", f"/samples/{oid}/verdict", body)
    assert status == 201, first
    status, again, _ = lab.request("POST", f"/samples/{oid}/verdict", body)
    assert status == 200 and again == first
    before = snapshot_order(adapters, oid)
    status, payload, _ = lab.request("POST", f"/samples/{oid}/verdict", {**body, "verdict": "authentic"})
    assert status == 409, payload
    assert not list(error_validator().iter_errors(payload))
    assert payload["error"]["code"] == "conflict"
    assert "verdict" in [d["field"] for d in payload["error"]["details"]]
    assert snapshot_order(adapters, oid) == before
    assert before["order"]["verdict"] == "counterfeit"
    # the lab's queue no longer lists it; lab B still cannot see it
    status, queue, _ = lab.request("GET", f"/labs/{LAB_A}/queue")
    assert status == 200 and oid not in [s["order_id"] for s in queue["samples"]]
    status, payload, _ = world.client("lab", LAB_B).request(
        "POST", f"/samples/{oid}/verdict", {"verdict": "counterfeit"}
    )
    assert status == 404 and payload["error"]["code"] == "not_found"


def snapshot_order(d: Any, oid: str) -> dict[str, Any]:
    verdict = d.orders.get_verdict(oid)
    return {
        "order": d.orders.get_order(oid).model_dump(mode="json"),
        "verdict": verdict.model_dump(mode="json") if verdict else None,
        "custody": [e.mac for e in d.custody.chain(oid)],
    }


def test_lab_sees_its_own_queue_only(world: World) -> None:
    status, body, _ = world.client("lab", LAB_A).request("GET", f"/labs/{LAB_A}/queue")
    assert status == 200
    ids = [s["order_id"] for s in body["samples"]]
    assert world.order_a in ids and world.order_b not in ids
    assert all("persona" not in k for s in body["samples"] for k in s)
    status, body, _ = world.client("admin").request("GET", f"/labs/{LAB_B}/queue")
    assert status == 200 and world.order_b in [s["order_id"] for s in body["samples"]]


def test_persona_route_is_admin_only(world: World) -> None:
    path = f"/programs/{world.program}/personas/{world.persona}"
    for role in ("program_manager", "finance", "enforcement", "lab", "marketplace"):
        status, payload, _ = world.client(role).request("GET", path)
        assert status == 403 and payload["error"]["code"] == "forbidden", role
    status, persona, _ = world.client("admin").request("GET", path)
    assert status == 200 and persona["persona_id"] == world.persona
    assert {"account", "drop_point", "payment_ref"} <= persona.keys()


def test_persona_id_on_orders_is_for_admin_only(world: World) -> None:
    status, order, _ = world.client("program_manager").request("GET", f"/orders/{world.order_a}")
    assert status == 200 and "persona_id" not in order
    status, order, _ = world.client("admin").request("GET", f"/orders/{world.order_a}")
    assert status == 200 and order["persona_id"] == world.persona


def test_valid_bodies_of_the_cases_are_accepted(world: World, adapters: Any) -> None:
    """The bad cases are the valid bodies with one thing broken: prove the valid ones pass (on fresh objects)."""
    pm = world.client("program_manager")
    status, prog, _ = pm.request("POST", "/programs", program_body(name=f"contract-ok-{RUN}"))
    assert status == 201, prog
    pid = prog["program_id"]
    for route in ("/programs/{program_id}/funding", "/programs/{program_id}/sellers"):
        status, payload, _ = pm.request("POST", route.replace("{program_id}", pid), VALID[route]())
        assert status in {o.status for o in DECLS[("POST", route)].ok}, payload
    RoundStart.model_validate_json(json.dumps(VALID["/programs/{program_id}/rounds"]()))  # (no round started here)
    oid = make_order_at_lab(adapters, pid, LAB_A)
    lab = world.client("lab", LAB_A)
    for route in ("/samples/{order_id}/service-quality", "/samples/{order_id}/custody", "/samples/{order_id}/verdict"):
        status, payload, _ = lab.request("POST", route.replace("{order_id}", oid), VALID[route]())
        assert status in {o.status for o in DECLS[("POST", route)].ok}, payload
    notice = _fill_body(world, VALID["/webhooks/delivery"]())
    notice.update(order_id=oid, marketplace_order_id=f"mk-{oid}")
    raw = json.dumps(notice).encode()
    status, payload, _ = ApiClient(world.url).request(
        "POST", "/webhooks/delivery", raw=raw, headers=sign_webhook(world.webhook_secret, raw, f"msg_ok_{oid}")
    )
    assert status == 202, payload


def test_a_lab_gets_one_answer_for_not_yours_and_does_not_exist(world: World) -> None:
    """No existence oracle: the same status and body, the requested id aside, for every lab-scoped route."""
    lab = world.client("lab", LAB_A)
    for (method, route), doc in sorted(DECLS.items()):
        if doc.lab_scope != "order_id":
            continue
        body = VALID.get(route, dict)() if method == "POST" else None
        answers = []
        for target in (world.order_b, "does-not-exist-0"):
            status, payload, _ = lab.request(method, route.replace("{order_id}", target), body)
            answers.append((status, json.dumps(payload).replace(target, "<id>")))
        assert answers[0] == answers[1], (route, answers)
        assert answers[0][0] == 404


def test_integral_numbers_are_integers_as_json_schema_says(world: World) -> None:
    """5.0 and 1e3 are JSON Schema integers: accepted as 5 and 1000; 5.5 is refused."""
    pm = world.client("program_manager")
    status, prog, _ = pm.request(
        "POST", "/programs", program_body(name=f"contract-int-{RUN}", budget=5_000_000.0, round_size=3e0)
    )
    assert status == 201, prog
    assert prog["budget"] == 5_000_000 and isinstance(prog["budget"], int) and prog["round_size"] == 3
    path = f"/programs/{prog['program_id']}/funding"
    status, funded, _ = pm.request("POST", path, {"amount": 1e3, "currency": "USD", "reference": "int-1"})
    assert status == 200 and funded["balance"]["funded"] == 1000, funded
    status, payload, _ = pm.request("POST", path, {"amount": 1000.5, "currency": "USD", "reference": "int-2"})
    assert status == 400 and "amount" in [d["field"] for d in payload["error"]["details"]]


def test_get_program_returns_the_balance_fields_of_the_finance_routes(world: World) -> None:
    fin = world.client("finance")
    status, program, _ = fin.request("GET", f"/programs/{world.program}")
    assert status == 200
    status, report, _ = fin.request("GET", f"/programs/{world.program}/spend")
    assert status == 200
    assert program["balance"] == report["balance"]
    assert program["balance"]["spent"] == program["balance"]["captured"] - program["balance"]["recovered"]


@pytest.mark.parametrize(
    ("method", "path", "headers", "raw", "status", "code"),
    [
        ("GET", "/no/such/path", {}, None, 404, "not_found"),
        ("DELETE", "/health", {}, None, 405, "method_not_allowed"),
        ("PUT", "/programs", {}, b"{}", 405, "method_not_allowed"),
        ("POST", "/programs", {"Content-Type": "text/plain"}, b"{}", 415, "unsupported_media_type"),
        ("POST", "/webhooks/delivery", {"Content-Type": "application/xml"}, b"<a/>", 415, "unsupported_media_type"),
    ],
)
def test_chalice_own_errors_use_the_documented_body(
    world: World, method: str, path: str, headers: dict[str, str], raw: bytes | None, status: int, code: str
) -> None:
    got, payload, answer_headers = world.client("program_manager").request(method, path, raw=raw, headers=headers)
    assert got == status, payload
    assert not list(error_validator().iter_errors(payload)), payload
    assert payload["error"]["code"] == code
    if status == 405:
        assert answer_headers.get("Allow")
