"""Contracts generated from the code: event JSON Schemas (``schemas/events/``) and the OpenAPI document
(``docs/openapi.json``).

The OpenAPI document is built by walking the Chalice app's routes. What cannot be read off a route object (summary,
query parameters, error statuses) lives in the small explicit ``ROUTES`` registry below; what can be read off the
view function's source (the roles passed to ``require()``, the model passed to ``parse_body()``, the statuses passed
to ``respond()``/``Response()``, a ``verify_webhook()`` call) is read with ``ast`` and must agree with the registry.
``route_problems()`` reports every disagreement, every app route missing from the registry and every registry entry
with no route, so a new or changed route without documentation fails ``testbuy openapi`` and the contract tests.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from chalicelib.domain.events import ALL_EVENTS, detail_schema
from chalicelib.domain.models import (
    CustodyIn,
    DeliveryNotice,
    EvidenceIn,
    FundRequest,
    Program,
    ProgramCreate,
    RefundFeedIn,
    Round,
    RoundStart,
    SellerImport,
    ServiceQualityIn,
    Verdict,
    VerdictIn,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "schemas" / "events"
OPENAPI_PATH = ROOT / "docs" / "openapi.json"

OPENAPI_VERSION = "3.1.0"
API_VERSION = "0.1.0"
ADMIN = "admin"

Auth = Literal["bearer", "webhook", "none"]


def render(document: Any) -> str:
    """The one canonical text of a committed JSON file (stable key order as generated, two-space indent)."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# ============================================================================================== event schemas


def event_schemas() -> dict[str, dict[str, Any]]:
    """detail-type -> JSON Schema (Draft 2020-12) of that event's ``detail``."""
    return {event.detail_type: detail_schema(event) for event in ALL_EVENTS}


def schema_path(detail_type: str) -> Path:
    return SCHEMA_DIR / f"{detail_type}.json"


def check_schemas(write: bool = False) -> list[str]:
    """Compare (or, with ``write``, rewrite) ``schemas/events/*.json``; returns the problems, empty when in sync."""
    wanted = {schema_path(name): render(schema) for name, schema in event_schemas().items()}
    present = set(SCHEMA_DIR.glob("*.json")) if SCHEMA_DIR.is_dir() else set()
    if write:
        SCHEMA_DIR.mkdir(parents=True, exist_ok=True)
        for path, text in wanted.items():
            if not path.exists() or path.read_text() != text:
                path.write_text(text)
        for path in present - set(wanted):
            path.unlink()
        return []
    problems: list[str] = []
    for path, text in sorted(wanted.items()):
        rel = path.relative_to(ROOT)
        if not path.exists():
            problems.append(f"{rel}: missing; run `testbuy schemas --write`")
        elif path.read_text() != text:
            problems.append(f"{rel}: stale (differs from the event model); run `testbuy schemas --write`")
    for path in sorted(present - set(wanted)):
        problems.append(f"{path.relative_to(ROOT)}: no such event in chalicelib.domain.events.ALL_EVENTS; delete it")
    return problems


# ============================================================================================== route registry


@dataclass(frozen=True)
class QueryParam:
    name: str
    description: str
    enum: tuple[str, ...] = ()
    default: str | None = None


@dataclass(frozen=True)
class RouteDoc:
    """Documentation of one (method, path). ``roles`` are the roles passed to ``require()``; admin is always admitted
    too (``require()`` with no roles admits admin alone)."""

    summary: str
    tag: str
    success: dict[int, str]
    roles: tuple[str, ...] = ()
    auth: Auth = "bearer"
    request: type[BaseModel] | None = None
    body_optional: bool = False
    response: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    query: tuple[QueryParam, ...] = ()
    csv: bool = False
    description: str = ""


PM, LAB, FIN, ENF = "program_manager", "lab", "finance", "enforcement"

ROUTES: dict[tuple[str, str], RouteDoc] = {
    ("GET", "/health"): RouteDoc(summary="Liveness check", tag="system", success={200: "the API is up"}, auth="none"),
    ("POST", "/programs"): RouteDoc(
        summary="Create a programme (ledger account with no funds, persona pool)",
        tag="programs",
        roles=(PM,),
        request=ProgramCreate,
        response=Program,
        success={201: "the programme was created"},
    ),
    ("GET", "/programs/{program_id}"): RouteDoc(
        summary="A programme and its ledger balance",
        tag="programs",
        roles=(PM, FIN),
        success={200: "the programme with its balance"},
        errors=(404,),
    ),
    ("POST", "/programs/{program_id}/funding"): RouteDoc(
        summary="Add funds (idempotent on reference)",
        tag="programs",
        roles=(PM, FIN),
        request=FundRequest,
        success={200: "the funds were added (or this reference was already applied); the new balance"},
        errors=(404, 409),
        description="400 currency_mismatch when the currency is not the programme's; 409 idempotency_conflict "
        "when the reference was used before with a different amount or currency.",
    ),
    ("POST", "/programs/{program_id}/sellers"): RouteDoc(
        summary="Import a batch of sellers into the sampling frame (all or nothing)",
        tag="programs",
        roles=(PM,),
        request=SellerImport,
        success={200: "the batch was imported; how many sellers"},
        errors=(404,),
    ),
    ("POST", "/programs/{program_id}/rounds"): RouteDoc(
        summary="Start a sampling round",
        tag="programs",
        roles=(PM,),
        request=RoundStart,
        body_optional=True,
        response=Round,
        success={202: "the round was recorded and its workflow started"},
        errors=(404, 409),
        description="409 invalid_state outside the programme period or without eligible sellers; "
        "409 insufficient_funds when the available budget cannot pay for the cheapest order.",
    ),
    ("GET", "/programs/{program_id}/rounds/{round_id}"): RouteDoc(
        summary="A round with its orders counted by status",
        tag="programs",
        roles=(PM, FIN),
        success={200: "the round"},
        errors=(404,),
    ),
    ("GET", "/programs/{program_id}/metrics"): RouteDoc(
        summary="Programme metrics: hit rate, design-weighted prevalence with its interval, spend, cost per hit",
        tag="programs",
        roles=(PM, FIN, ENF),
        success={200: "the metrics"},
        errors=(404,),
    ),
    ("POST", "/programs/{program_id}/marketplace-refunds"): RouteDoc(
        summary="Ingest one month of the marketplace refund feed (marketplace-wide suspect-refund rate)",
        tag="programs",
        roles=(PM, FIN),
        request=RefundFeedIn,
        success={200: "stored; the month's rate"},
        errors=(404,),
    ),
    ("GET", "/labs/{lab_id}/queue"): RouteDoc(
        summary="Samples waiting for this lab's verdict (a lab token sees its own lab only)",
        tag="lab",
        roles=(LAB,),
        success={200: "the queue, oldest first"},
    ),
    ("POST", "/samples/{order_id}/verdict"): RouteDoc(
        summary="Record the lab verdict of a sample (once; the same verdict again is idempotent)",
        tag="lab",
        roles=(LAB,),
        request=VerdictIn,
        response=Verdict,
        success={201: "the verdict was recorded", 200: "the same verdict was already recorded"},
        errors=(404, 409),
        description="403 when the sample is not assigned to the caller's lab; 409 conflict when a different "
        "verdict is already recorded, invalid_state when the sample is not at the lab.",
    ),
    ("POST", "/samples/{order_id}/service-quality"): RouteDoc(
        summary="Rate the seller's service for a delivered sample",
        tag="lab",
        roles=(LAB,),
        request=ServiceQualityIn,
        success={200: "the score was recorded"},
        errors=(404, 409),
    ),
    ("POST", "/samples/{order_id}/custody"): RouteDoc(
        summary="Append a hand-over to the sample's hash-chained custody log",
        tag="lab",
        roles=(LAB,),
        request=CustodyIn,
        success={201: "the entry was appended"},
        errors=(404,),
    ),
    ("POST", "/samples/{order_id}/evidence"): RouteDoc(
        summary="Store an evidence file in S3 under its SHA-256 (cited by custody entries and verdicts)",
        tag="lab",
        roles=(LAB,),
        request=EvidenceIn,
        success={201: "stored; the body gives its sha256"},
        errors=(404,),
    ),
    ("GET", "/samples/{order_id}/custody"): RouteDoc(
        summary="The sample's custody chain and whether it verifies",
        tag="lab",
        roles=(LAB, ENF, PM),
        success={200: "the chain and its verification"},
        errors=(404,),
    ),
    ("GET", "/programs/{program_id}/spend"): RouteDoc(
        summary="Spend report from the ledger journal (JSON or CSV)",
        tag="finance",
        roles=(FIN, PM),
        success={200: "the report"},
        errors=(400, 404),
        csv=True,
        query=(
            QueryParam(
                "group_by",
                "how rows are grouped",
                ("program", "round", "category", "seller", "month"),
                "program",
            ),
            QueryParam(
                "format", "json or csv; without it, an Accept header naming text/csv asks for CSV", ("json", "csv")
            ),
        ),
    ),
    ("GET", "/programs/{program_id}/reconciliation"): RouteDoc(
        summary="Reconcile the journal against the balance",
        tag="finance",
        roles=(FIN, PM),
        success={200: "the reconciliation"},
        errors=(404,),
    ),
    ("POST", "/webhooks/delivery"): RouteDoc(
        summary="Marketplace delivery notice (HMAC-signed)",
        tag="webhooks",
        roles=("marketplace",),
        auth="webhook",
        request=DeliveryNotice,
        success={202: "the notice was recorded (the first one wins)"},
        errors=(404,),
    ),
    ("GET", "/orders/{order_id}"): RouteDoc(
        summary="An order (persona id shown to admin only)",
        tag="orders",
        roles=(PM, FIN, ENF),
        success={200: "the order"},
        errors=(404,),
    ),
    ("GET", "/programs/{program_id}/personas/{persona_id}"): RouteDoc(
        summary="A persona's account, drop point and payment reference (admin only)",
        tag="admin",
        success={200: "the persona"},
        errors=(404,),
    ),
}


# ============================================================================================== reading the code


@dataclass
class CodeFacts:
    """What a view function's source says about it."""

    roles: tuple[str, ...] | None = None  # None: no require() call
    request: type[BaseModel] | None = None
    statuses: set[int] = field(default_factory=set)
    webhook: bool = False


def _callee(node: ast.Call) -> str:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return ""


def _resolve(node: ast.expr, scope: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name):
        return scope[node.id]
    if isinstance(node, ast.Attribute):
        return getattr(_resolve(node.value, scope), node.attr)
    raise ValueError(f"cannot resolve {ast.dump(node)}")


def _ints(node: ast.expr) -> set[int]:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _ints(node.body) | _ints(node.orelse)
    return set()


def code_facts(view: Callable[..., Any]) -> CodeFacts:
    fn = inspect.unwrap(view)
    scope: dict[str, Any] = fn.__globals__
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    facts = CodeFacts()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _callee(node)
        if name == "require":
            facts.roles = tuple(str(getattr(r, "value", r)) for r in (_resolve(a, scope) for a in node.args[1:]))
        elif name == "parse_body" and len(node.args) > 1:
            facts.request = _resolve(node.args[1], scope)
        elif name == "respond" and node.args:
            facts.statuses |= _ints(node.args[0])
        elif name == "Response":
            for kw in node.keywords:
                if kw.arg == "status_code":
                    facts.statuses |= _ints(kw.value)
        elif name == "verify_webhook":
            facts.webhook = True
    if not facts.statuses:
        facts.statuses = {200}  # a view returning a plain value answers 200
    return facts


def app_routes() -> dict[tuple[str, str], Any]:
    """(METHOD, path) -> Chalice RouteEntry of the real app."""
    from testbuy.localstack import load_app

    routes = load_app().app.routes
    return {(method, path): entry for path, methods in routes.items() for method, entry in methods.items()}


def route_problems(routes: dict[tuple[str, str], Any] | None = None) -> list[str]:
    """Every app route documented, every documented route present, and the registry agreeing with the code."""
    routes = app_routes() if routes is None else routes
    problems = [
        f"{m} {p}: route has no entry in testbuy.contracts.ROUTES; document it"
        for m, p in sorted(set(routes) - set(ROUTES))
    ]
    problems += [
        f"{m} {p}: documented in testbuy.contracts.ROUTES but the app has no such route"
        for m, p in sorted(set(ROUTES) - set(routes))
    ]
    for key in sorted(set(routes) & set(ROUTES)):
        doc, facts, where = ROUTES[key], code_facts(routes[key].view_function), f"{key[0]} {key[1]}"
        if doc.auth == "bearer":
            if facts.roles is None:
                problems.append(f"{where}: documented as role-protected but the view calls no require()")
            elif set(facts.roles) != set(doc.roles):
                problems.append(
                    f"{where}: code requires roles {sorted(facts.roles)}, registry says {sorted(doc.roles)}"
                )
        elif facts.roles is not None:
            problems.append(f"{where}: the view calls require() but is documented with auth={doc.auth}")
        if facts.webhook != (doc.auth == "webhook"):
            problems.append(f"{where}: webhook signature check in code={facts.webhook}, registry auth={doc.auth}")
        if facts.request is not doc.request:
            got = facts.request.__name__ if facts.request else None
            want = doc.request.__name__ if doc.request else None
            problems.append(f"{where}: code parses the body as {got}, registry says {want}")
        if facts.statuses != set(doc.success):
            problems.append(f"{where}: code answers {sorted(facts.statuses)}, registry documents {sorted(doc.success)}")
    return problems


# ============================================================================================== OpenAPI

ERROR_DESCRIPTIONS = {
    400: "invalid input: malformed JSON, missing, extra or mistyped fields, out-of-range values; "
    "details name the offending fields",
    401: "no, invalid or expired credentials (or a bad webhook signature)",
    403: "the caller's role (or lab) may not do this",
    404: "unknown id",
    409: "conflicts with what is already durable (e.g. a second, different verdict) or with the object's state",
    413: "the body exceeds 1,000,000 bytes; send smaller batches",
}

ERROR_BODY: dict[str, Any] = {
    "title": "ErrorBody",
    "description": "Every error answer of the API (chalicelib/api/errors.py).",
    "type": "object",
    "additionalProperties": False,
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "additionalProperties": False,
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "pattern": "^[a-z][a-z_]*$", "description": "stable, machine-readable"},
                "message": {"type": "string", "minLength": 1, "description": "for humans; never match on it"},
                "details": {
                    "description": "for 400s, the offending fields",
                    "anyOf": [
                        {"type": "array", "items": {"$ref": "#/components/schemas/ErrorDetail"}},
                        {"type": "object"},
                        {"type": "null"},
                    ],
                },
            },
        }
    },
}

ERROR_DETAIL: dict[str, Any] = {
    "title": "ErrorDetail",
    "type": "object",
    "required": ["field"],
    "properties": {
        "field": {"type": "string", "description": "dotted path of the field, '(body)' for the body as a whole"},
        "message": {"type": "string"},
        "type": {"type": "string"},
    },
}

SECURITY_SCHEMES: dict[str, Any] = {
    "localBearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Local stack: an HS256 token issued by `testbuy token --role ...` with the local secret; claims "
        "`role` (program_manager, lab, finance, enforcement, marketplace, admin), `lab_id` for labs, `exp`.",
    },
    "cognito": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "AWS: a Cognito user-pool ID token; the user's groups are its roles, `custom:lab_id` its lab.",
        "x-amazon-apigateway-authtype": "cognito_user_pools",
    },
    "webhookSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-Testbuy-Signature",
        "description": "`t=<unix seconds>,v1=<hex HMAC-SHA256 over '<t>.' + raw body>` with the shared webhook secret; "
        "the timestamp must be within 300 s.",
    },
}


def _hoist(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    for name, sub in schema.pop("$defs", {}).items():
        if components.setdefault(name, sub) != sub:
            raise ValueError(f"two different schemas are named {name}")
    return schema


def _model_ref(
    model: type[BaseModel], mode: Literal["validation", "serialization"], components: dict[str, Any]
) -> dict[str, str]:
    name = model.__name__
    schema = _hoist(model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode), components)
    if components.setdefault(name, schema) != schema:
        raise ValueError(f"two different schemas are named {name}")
    return {"$ref": f"#/components/schemas/{name}"}


def _error_statuses(doc: RouteDoc) -> list[int]:
    statuses = set(doc.errors)
    if doc.request is not None or doc.query:
        statuses.add(400)
    if doc.request is not None:
        statuses.add(413)
    if doc.auth != "none":
        statuses.add(401)
    if doc.auth == "bearer":
        statuses.add(403)
    return sorted(statuses)


def _operation(entry: Any, doc: RouteDoc, components: dict[str, Any]) -> dict[str, Any]:
    fn = inspect.unwrap(entry.view_function)
    op: dict[str, Any] = {
        "operationId": entry.view_name,
        "summary": doc.summary,
        "tags": [doc.tag],
    }
    description = (inspect.getdoc(fn) or "").strip()
    if doc.description:
        description = f"{description}\n\n{doc.description}".strip()
    if description:
        op["description"] = description
    if doc.auth == "bearer":
        op["x-roles"] = sorted({*doc.roles, ADMIN})
        op["security"] = [{"localBearer": []}, {"cognito": []}]
    elif doc.auth == "webhook":
        op["x-roles"] = list(doc.roles)
        op["security"] = [{"webhookSignature": []}]
    else:
        op["x-roles"] = []
        op["security"] = []
    params: list[dict[str, Any]] = [
        {"name": arg, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
        for arg in entry.view_args
    ]
    for q in doc.query:
        schema: dict[str, Any] = {"type": "string"}
        if q.enum:
            schema["enum"] = list(q.enum)
        if q.default is not None:
            schema["default"] = q.default
        params.append(
            {"name": q.name, "in": "query", "required": False, "description": q.description, "schema": schema}
        )
    if params:
        op["parameters"] = params
    if doc.request is not None:
        op["requestBody"] = {
            "required": not doc.body_optional,
            "content": {"application/json": {"schema": _model_ref(doc.request, "validation", components)}},
        }
    responses: dict[str, Any] = {}
    for status, text in sorted(doc.success.items()):
        body: dict[str, Any] = (
            _model_ref(doc.response, "serialization", components) if doc.response is not None else {"type": "object"}
        )
        content: dict[str, Any] = {"application/json": {"schema": body}}
        if doc.csv:
            content["text/csv"] = {"schema": {"type": "string"}}
        responses[str(status)] = {"description": text, "content": content}
    for status in _error_statuses(doc):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    op["responses"] = responses
    return op


def openapi_document(routes: dict[tuple[str, str], Any] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app, generated from its routes and the registry."""
    routes = app_routes() if routes is None else routes
    schemas: dict[str, Any] = {"ErrorBody": ERROR_BODY, "ErrorDetail": ERROR_DETAIL}
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(routes, key=lambda k: (k[1], k[0])):
        doc = ROUTES.get((method, path))
        if doc is None:
            continue  # reported by route_problems()
        paths.setdefault(path, {})[method.lower()] = _operation(routes[(method, path)], doc, schemas)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "testbuy API",
            "version": API_VERSION,
            "description": "Marketplace test-buy programmes. Generated from the code by `testbuy openapi --write`; "
            "do not edit by hand. Money is integer minor units plus an ISO 4217 code; times are UTC. "
            "`x-roles` lists the roles an operation admits.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "tags": [{"name": t} for t in sorted({d.tag for d in ROUTES.values()})],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "responses": {
                f"E{status}": {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                }
                for status, text in sorted(ERROR_DESCRIPTIONS.items())
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def check_openapi(write: bool = False) -> list[str]:
    """Route registry consistent with the code, and ``docs/openapi.json`` equal to the generated document."""
    routes = app_routes()
    problems = route_problems(routes)
    text = render(openapi_document(routes))
    rel = OPENAPI_PATH.relative_to(ROOT)
    if write:
        if problems:
            return problems  # never commit a document that leaves routes undocumented
        OPENAPI_PATH.parent.mkdir(parents=True, exist_ok=True)
        if not OPENAPI_PATH.exists() or OPENAPI_PATH.read_text() != text:
            OPENAPI_PATH.write_text(text)
        return []
    if not OPENAPI_PATH.exists():
        problems.append(f"{rel}: missing; run `testbuy openapi --write`")
    elif OPENAPI_PATH.read_text() != text:
        problems.append(f"{rel}: stale (differs from the generated document); run `testbuy openapi --write`")
    return problems


_SENSITIVE = re.compile(r"persona|address|drop_point|payment|card|account|phone|email", re.IGNORECASE)


def sensitive_event_fields() -> list[str]:
    """Event fields (metadata or data) whose names suggest persona, address or payment data; must be empty."""
    found = []
    for name, schema in event_schemas().items():
        for part in ("metadata", "data"):
            for prop in schema["properties"][part].get("properties", {}):
                if _SENSITIVE.search(prop):
                    found.append(f"{name}.{part}.{prop}")
    return found
