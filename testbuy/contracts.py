"""Contracts generated from the code: event JSON Schemas (``schemas/events/``) and the OpenAPI document
(``docs/openapi.json``).

The OpenAPI document is generated from the routes' declarations (``chalicelib.api.declare.endpoint``): the same
objects that register, authorize and validate each route, and check each answer against its model. There is no
second description to keep in step: ``route_problems()`` only proves that every Chalice route of the app is a
declared one, so a route added without a declaration fails ``testbuy openapi`` and the contract tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from chalicelib.api.declare import DECLARATIONS, Declaration
from chalicelib.domain.events import ALL_EVENTS, detail_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "schemas" / "events"
CATALOGUE_PATH = ROOT / "docs" / "events.md"
OPENAPI_PATH = ROOT / "docs" / "openapi.json"

OPENAPI_VERSION = "3.1.0"
API_VERSION = "0.1.0"


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
    """Compare (or, with ``write``, rewrite) ``schemas/events/*.json`` and the event catalogue ``docs/events.md``;
    returns the problems, empty when in sync."""
    from testbuy.event_catalogue import catalogue

    wanted = {schema_path(name): render(schema) for name, schema in event_schemas().items()}
    present = set(SCHEMA_DIR.glob("*.json")) if SCHEMA_DIR.is_dir() else set()
    wanted[CATALOGUE_PATH] = catalogue()
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
            problems.append(f"{rel}: stale (differs from the event models); run `testbuy schemas --write`")
    for path in sorted(present - set(wanted)):
        problems.append(f"{path.relative_to(ROOT)}: no such event in chalicelib.domain.events.ALL_EVENTS; delete it")
    return problems


# ============================================================================================== declarations


def declarations() -> dict[tuple[str, str], Declaration]:
    """(METHOD, path) -> the route's one declaration (importing the app registers them)."""
    from testbuy.localstack import load_app

    load_app()
    return dict(DECLARATIONS)


def app_routes() -> dict[tuple[str, str], Any]:
    """(METHOD, path) -> Chalice RouteEntry of the real app."""
    from testbuy.localstack import load_app

    routes = load_app().app.routes
    return {(method, path): entry for path, methods in routes.items() for method, entry in methods.items()}


def route_problems(routes: dict[tuple[str, str], Any] | None = None) -> list[str]:
    """Every app route is a declared one (registered by ``chalicelib.api.declare.endpoint``), and every
    declaration is served: a route added with a bare ``@app.route``/``@bp.route`` is reported here."""
    routes = app_routes() if routes is None else routes
    declared = declarations()
    problems = [
        f"{m} {p}: route was not added through chalicelib.api.declare.endpoint; declare it"
        for m, p in sorted(set(routes) - set(declared))
    ]
    problems += [
        f"{m} {p}: declared but the app does not serve it (is its blueprint registered in app.py?)"
        for m, p in sorted(set(declared) - set(routes))
    ]
    for key in sorted(set(routes) & set(declared)):
        decl = getattr(routes[key].view_function, "__declaration__", None)
        if decl is not declared[key]:
            problems.append(f"{key[0]} {key[1]}: the view is not the declared one; declare it with endpoint()")
    return problems


# ============================================================================================== OpenAPI

ERROR_DESCRIPTIONS = {
    400: "invalid input: malformed JSON, missing, extra or mistyped fields, out-of-range values, a path parameter "
    "that is not a valid identifier, an unknown query parameter; details name the offending fields",
    401: "no, invalid or expired credentials, a principal that cannot be established (a lab without a lab id, a "
    "user in several testbuy groups), or a bad webhook signature",
    403: "the caller's role (or lab) may not do this",
    404: "unknown id (for a lab: also a sample of another lab, with the same body)",
    405: "the path exists but not with this method (the Allow header lists the methods)",
    409: "conflicts with what is already durable (e.g. a second, different verdict) or with the object's state",
    413: "the body exceeds 1,000,000 bytes; send smaller batches",
    415: "the request body is not application/json",
    500: "unexpected error; it was logged",
    503: "a dependency is briefly unavailable; retry",
}

ERROR_BODY: dict[str, Any] = {
    "title": "ErrorBody",
    "description": "Every error answer of the API (chalicelib/api/errors.py), including Chalice's own 404/405/415.",
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
        "description": "Local stack: an HS256 JWT issued by `testbuy token --role ...` with the stack's secret; "
        "issuer `testbuy-local`, audience `testbuy-api`, `exp`, `nbf`, `iat` and `sub` required; claim `role` "
        "(program_manager, lab, finance, enforcement, marketplace, admin); a lab token must carry `lab_id` "
        "(else 401).",
    },
    "cognito": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "AWS: a Cognito user-pool ID token. The user's testbuy group is its role: exactly one testbuy "
        "group is required (none or several: 401, whatever the order); a lab user must have `custom:lab_id` (else "
        "401).",
        "x-amazon-apigateway-authtype": "cognito_user_pools",
    },
    "webhookId": {
        "type": "apiKey",
        "in": "header",
        "name": "webhook-id",
        "description": "Standard Webhooks: the notice's id, the same on every retry (the idempotency key); "
        "1-128 characters of [A-Za-z0-9_.:=-].",
    },
    "webhookTimestamp": {
        "type": "apiKey",
        "in": "header",
        "name": "webhook-timestamp",
        "description": "Standard Webhooks: integer seconds since the epoch (digits only), within 300 s of now.",
    },
    "webhookSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "webhook-signature",
        "description": "Standard Webhooks: space-separated `v1,<base64 HMAC-SHA256 of '<id>.<timestamp>.' + raw "
        "body>` entries, keyed with the base64 part of the `whsec_` secret; the current or the previous secret "
        "(rotation) must match one entry.",
    },
}

INTEGER_NOTE = (
    "Integer fields accept any JSON number with an integral value (5, 5.0, 5e0), as JSON Schema's `integer` does; "
    "a fraction (5.5) is refused. Numbers closer to zero than 1e-100 are read as 0. Numbers are never read from "
    "strings."
)


def _hoist(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    for name, sub in schema.pop("$defs", {}).items():
        if components.setdefault(name, sub) != sub:
            raise ValueError(f"two different schemas are named {name}")
    return schema


def _model_ref(
    model: type[BaseModel], mode: Literal["validation", "serialization"], components: dict[str, Any]
) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    name = str(schema.get("title") or model.__name__)
    if mode == "serialization" and model.model_config.get("extra") == "forbid":
        schema.setdefault("additionalProperties", False)
    schema = _hoist(schema, components)
    if components.setdefault(name, schema) != schema:
        raise ValueError(f"two different schemas are named {name}")
    return {"$ref": f"#/components/schemas/{name}"}


def _operation(decl: Declaration, components: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": decl.view_name, "summary": decl.summary, "tags": [decl.tag]}
    if decl.description:
        op["description"] = decl.description
    op["x-roles"] = list(decl.admitted)
    if decl.lab_scope is not None:
        op["x-lab-scope"] = decl.lab_scope
    if decl.refusals:
        op["x-refusals"] = [
            {"status": r.status, "code": r.code, "field": r.field, "rule": r.rule} for r in decl.refusals
        ]
    if decl.auth == "bearer":
        op["security"] = [{"localBearer": []}, {"cognito": []}]
    elif decl.auth == "webhook":
        op["security"] = [{"webhookId": [], "webhookTimestamp": [], "webhookSignature": []}]
    else:
        op["security"] = []
    params: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": spec.description,
            "schema": {"type": "string", "minLength": 1, "maxLength": spec.max_length, "pattern": spec.pattern},
        }
        for name, spec in decl.params.items()
    ]
    for q in decl.query:
        schema: dict[str, Any] = {"type": "string"}
        if q.enum:
            schema["enum"] = list(q.enum)
        else:
            schema["maxLength"] = q.max_length
            if q.pattern is not None:
                schema["pattern"] = q.pattern
        if q.default is not None:
            schema["default"] = q.default
        params.append(
            {"name": q.name, "in": "query", "required": False, "description": q.description, "schema": schema}
        )
    if params:
        op["parameters"] = params
    if decl.request is not None:
        op["requestBody"] = {
            "required": not decl.body_optional,
            "content": {"application/json": {"schema": _model_ref(decl.request, "validation", components)}},
        }
    responses: dict[str, Any] = {}
    for ok in sorted(decl.ok, key=lambda o: o.status):
        if ok.model is None:  # a page (text/html): no JSON answer
            content: dict[str, Any] = {str(ok.media_type): {"schema": {"type": "string"}}}
        else:
            content = {"application/json": {"schema": _model_ref(ok.model, "serialization", components)}}
        if ok.csv:
            content["text/csv"] = {"schema": {"type": "string"}}
        responses[str(ok.status)] = {"description": ok.description, "content": content}
    for status in decl.error_statuses():
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    op["responses"] = responses
    return op


def openapi_document(routes: dict[tuple[str, str], Any] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app, generated from its route declarations."""
    routes = app_routes() if routes is None else routes
    declared = declarations()
    schemas: dict[str, Any] = {"ErrorBody": ERROR_BODY, "ErrorDetail": ERROR_DETAIL}
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(routes, key=lambda k: (k[1], k[0])):
        decl = declared.get((method, path))
        if decl is None:
            continue  # reported by route_problems()
        paths.setdefault(path, {})[method.lower()] = _operation(decl, schemas)
    used = {int(s) for ops in paths.values() for op in ops.values() for s in op["responses"] if int(s) >= 400}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "testbuy API",
            "version": API_VERSION,
            "description": "Marketplace test-buy programmes. Generated from the route declarations by "
            "`testbuy openapi --write`; do not edit by hand. Money is integer minor units plus an ISO 4217 code; "
            "times are UTC. `x-roles` lists the roles an operation admits; `x-lab-scope` the path parameter that "
            "confines a lab. " + INTEGER_NOTE + " Cross-field rules JSON Schema cannot express are stated in "
            "`x-constraints` of the schema concerned (a 400 names the field); rules that depend on stored state or "
            "compare items of a list are the operation's `x-refusals` (status, code, field pattern). Every error "
            "answer, including an unknown path (404), a "
            "method the path does not have (405) and a body that is not JSON (415), is an ErrorBody.",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "tags": [{"name": t} for t in sorted({d.tag for d in declared.values()})],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "responses": {
                f"E{status}": {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                }
                for status, text in sorted(ERROR_DESCRIPTIONS.items())
                if status in used or status in (404, 405, 500, 503)
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


def check_openapi(write: bool = False) -> list[str]:
    """Every route declared, and ``docs/openapi.json`` equal to the document generated from the declarations."""
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
