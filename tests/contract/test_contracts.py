"""Contracts: committed event schemas and OpenAPI document equal the generated ones, every route is documented, and
events published through the real EventBridge publisher arrive on the bus shaped as their committed schemas say."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_openapi
from pydantic import BaseModel

from chalicelib.domain.events import ALL_EVENTS, EVENT_VERSION, envelope
from testbuy import contracts
from testbuy.event_catalogue import example_event, registry_document

EVENT_IDS = [e.detail_type for e in ALL_EVENTS]


def committed_schema(detail_type: str) -> dict[str, Any]:
    return dict(json.loads(contracts.schema_path(detail_type).read_text()))


# ------------------------------------------------------------------------------------------------ committed files


def test_committed_event_schemas_match_the_models() -> None:
    assert contracts.check_schemas(write=False) == []


def test_committed_openapi_matches_the_code() -> None:
    assert contracts.check_openapi(write=False) == []


@pytest.mark.parametrize("detail_type", EVENT_IDS)
def test_committed_schema_is_valid_draft_2020_12(detail_type: str) -> None:
    schema = committed_schema(detail_type)
    Draft202012Validator.check_schema(schema)
    assert schema["x-detail-type"] == detail_type
    assert schema["x-source"].startswith("testbuy.")


def test_event_names_are_past_tense_and_unique() -> None:
    assert len(set(EVENT_IDS)) == len(EVENT_IDS)
    for name in EVENT_IDS:
        assert name[0].isupper() and name.endswith("ed"), name


def test_openapi_document_is_valid_openapi_3_1() -> None:
    from openapi_spec_validator import validate

    doc = json.loads(contracts.OPENAPI_PATH.read_text())
    assert doc["openapi"].startswith("3.1")
    validate(doc)


# ------------------------------------------------------------------------------------------------ routes


def test_every_app_route_is_a_declared_one() -> None:
    """A Chalice route can only come from a declaration: same set of (method, path), and each view is the
    declaration's own wrapper (so a bare ``@bp.route`` next to a declared path is caught too)."""
    routes = contracts.app_routes()
    assert contracts.route_problems() == []
    assert set(routes) == set(contracts.declarations())
    for key, entry in routes.items():
        assert entry.view_function.__declaration__ is contracts.declarations()[key], key


def test_a_route_added_without_a_declaration_is_reported() -> None:
    from chalice.app import Chalice

    from chalicelib.api.declare import DECLARATIONS, Ok, endpoint
    from chalicelib.api.schemas import Health
    from testbuy.localstack import load_app

    real = load_app().app
    app = Chalice(app_name="probe")
    for entry_path, methods in real.routes.items():
        for method, entry in methods.items():
            app.routes[entry_path][method] = entry

    @app.route("/undeclared", methods=["GET"])
    def undeclared() -> dict[str, str]:
        return {}

    @app.route("/health", methods=["POST"])
    def sneaky() -> dict[str, str]:
        return {}

    problems = contracts.route_problems({(m, p): e for p, ms in app.routes.items() for m, e in ms.items()})
    assert any("GET /undeclared" in p and "declare it" in p for p in problems), problems
    assert any("POST /health" in p for p in problems), problems
    fewer = {k: v for k, v in contracts.app_routes().items() if k != ("GET", "/orders/{order_id}")}
    assert any("GET /orders/{order_id}" in p and "does not serve" in p for p in contracts.route_problems(fewer))
    # and the declaration itself refuses the usual mistakes
    from chalice.app import Blueprint

    bp = Blueprint("probe")
    with pytest.raises(TypeError, match="declared twice"):
        endpoint(bp, "GET", "/health", summary="x", tag="x", auth="none", ok=(Ok(200, "x", Health),))
    with pytest.raises(TypeError, match="lab_scope"):
        from chalicelib.api.auth import Role

        endpoint(bp, "GET", "/probe/{x}", summary="x", tag="x", roles=(Role.LAB,), ok=(Ok(200, "x", Health),))
    assert ("GET", "/probe/{x}") not in DECLARATIONS


def test_openapi_operations_document_roles_errors_and_security() -> None:
    doc = contracts.openapi_document()
    ops = {(m.upper(), p): op for p, item in doc["paths"].items() for m, op in item.items()}
    assert set(ops) == set(contracts.declarations())
    assert ops[("GET", "/programs/{program_id}/personas/{persona_id}")]["x-roles"] == ["admin"]
    assert ops[("GET", "/labs/{lab_id}/queue")]["x-roles"] == ["admin", "lab"]
    assert ops[("POST", "/samples/{order_id}/verdict")]["x-lab-scope"] == "order_id"
    webhook_security = [{"webhookId": [], "webhookTimestamp": [], "webhookSignature": []}]
    assert ops[("POST", "/webhooks/delivery")]["security"] == webhook_security
    assert ops[("GET", "/health")]["security"] == []
    assert ops[("POST", "/samples/{order_id}/verdict")]["responses"].keys() >= {"200", "201", "404", "409"}
    for (method, path), op in ops.items():
        responses = op["responses"]
        if op["security"] != []:  # the public routes: /health and the dashboard page (which holds no data)
            assert "401" in responses, (method, path)
        if op["security"] and op["security"] != webhook_security:
            assert "403" in responses, (method, path)
        for param in op.get("parameters", []):
            if param["in"] == "path":
                assert param["schema"]["maxLength"] <= 128 and param["schema"]["pattern"].startswith("^")
                assert "400" in responses
        if "requestBody" in op:
            assert {"400", "413", "415"} <= responses.keys(), (method, path)
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
        for status, resp in responses.items():
            if int(status) >= 400:
                assert resp == {"$ref": f"#/components/responses/E{status}"}
            elif "text/html" in resp["content"]:  # a page: HTML only
                assert resp["content"] == {"text/html": {"schema": {"type": "string"}}}, (method, path)
            else:  # every success answer has a model
                assert "$ref" in resp["content"]["application/json"]["schema"], (method, path, status)
    # every $ref resolves
    text = json.dumps(doc)
    for name in {part.split('"')[0] for part in text.split('"#/components/schemas/')[1:]}:
        assert name in doc["components"]["schemas"], name


def test_the_routes_open_without_a_cognito_token_are_exactly_the_undeclared_bearer_ones() -> None:
    """In AWS every operation but ``PUBLIC_ROUTES`` gets the Cognito authorizer: those must be exactly the routes that
    authenticate otherwise (none, or a webhook signature), so no bearer route is left open and none is shut."""
    from testbuy.packaging import PUBLIC_ROUTES

    public = {path for (_, path), decl in contracts.declarations().items() if decl.auth != "bearer"}
    assert public == set(PUBLIC_ROUTES)


def test_request_schemas_come_from_the_pydantic_models() -> None:
    doc = contracts.openapi_document()
    schemas = doc["components"]["schemas"]
    for decl in contracts.declarations().values():
        if decl.request is not None:
            generated = decl.request.model_json_schema(ref_template="#/components/schemas/{model}")
            generated.pop("$defs", None)
            assert schemas[decl.request.__name__] == generated
    assert schemas["SellerImport"]["properties"]["sellers"]["maxItems"] == 500


def test_the_document_states_what_the_server_enforces() -> None:
    """Issue 8 item 10: currency pattern, cross-field rules, the balance of GET /programs/{id}."""
    schemas = contracts.openapi_document()["components"]["schemas"]
    assert schemas["FundRequest"]["properties"]["currency"]["pattern"] == "^[A-Z]{3}$"
    assert schemas["ProgramCreate"]["properties"]["currency"]["pattern"] == "^[A-Z]{3}$"
    assert schemas["ProgramCreate"]["x-constraints"] == ["period_end > period_start"]
    assert schemas["RefundFeedIn"]["x-constraints"] == ["suspect_refunds <= orders"]
    balance = set(schemas["BalanceOut"]["properties"])
    assert balance == set(schemas["SpendReport"]["properties"]["balance"] and schemas["BalanceOut"]["properties"])
    assert "spent" in balance
    assert schemas["ProgramView"]["properties"]["balance"] == {"$ref": "#/components/schemas/BalanceOut"}
    assert schemas["Reconciliation"]["properties"]["stored"] == {"$ref": "#/components/schemas/BalanceOut"}


# ------------------------------------------------------------------------------------------------ privacy


def test_no_event_field_carries_persona_address_or_payment_data() -> None:
    assert contracts.sensitive_event_fields() == []
    for event in ALL_EVENTS:
        for name in event.model_fields:
            assert not any(w in name.lower() for w in ("persona", "address", "payment", "card", "drop_point")), (
                event.detail_type,
                name,
            )


# ------------------------------------------------------------------------------------------------ events on the bus


def _receive_mine(sqs: Any, queue_url: str, wanted: set[str], timeout: float = 30.0) -> dict[str, dict[str, Any]]:
    """Messages of the archive queue whose event id is ours. Other tests publish to the same bus: their messages
    are left alone (made visible again at the end, so their receive count rises by one at most)."""
    found: dict[str, dict[str, Any]] = {}
    foreign: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while wanted - set(found) and time.monotonic() < deadline:
            resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            for msg in resp.get("Messages", []):
                body = json.loads(msg["Body"])
                event_id = ((body.get("detail") or {}).get("metadata") or {}).get("event_id")
                if event_id in wanted:
                    found[event_id] = body
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])
                else:
                    foreign.append(msg["ReceiptHandle"])
    finally:
        for handle in foreign:
            try:
                sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0)
            except Exception:  # noqa: S110 - the message was consumed meanwhile; nothing to give back
                pass
    return found


def test_every_event_published_on_the_bus_matches_its_committed_schema(local_stack: Any, stack_info: Any) -> None:
    from chalicelib.adapters.aws import EventBridgePublisher

    run = uuid.uuid4().hex[:12]
    occurred = datetime.now(UTC)
    envelopes = {
        f"evt-contract-{run}-{event.detail_type}-{copy}": envelope(
            example_event(event),
            event_id=f"evt-contract-{run}-{event.detail_type}-{copy}",
            correlation_id=f"corr-{run}",
            occurred_at=occurred,
            program_id=f"prg-contract-{run}",
        )
        for copy in range(2)  # two of each: more than one batch of 10, so the publisher must split
        for event in ALL_EVENTS
    }
    assert len(envelopes) > 10
    publisher = EventBridgePublisher(local_stack.client("events"), stack_info.bus_name)
    publisher.publish(list(envelopes.values()))

    received = _receive_mine(local_stack.client("sqs"), stack_info.queues["archive"], set(envelopes))
    assert set(received) == set(envelopes), f"missing: {sorted(set(envelopes) - set(received))}"
    for event_id, message in received.items():
        sent = envelopes[event_id]
        schema = committed_schema(sent.detail_type)
        assert message["detail-type"] == sent.detail_type == schema["x-detail-type"]
        assert message["source"] == sent.source == schema["x-source"]
        component = message["source"].removeprefix("testbuy.")
        assert message["source"] == f"testbuy.{component}" and component
        errors = sorted(Draft202012Validator(schema).iter_errors(message["detail"]), key=str)
        assert not errors, f"{sent.detail_type}: {[e.message for e in errors]}"
        # the same message against the schema registry's document (OpenAPI 3.0, the whole EventBridge event)
        registered = registry_document(next(e for e in ALL_EVENTS if e.detail_type == sent.detail_type))
        aws_event = OAS30Validator({"$ref": "#/components/schemas/AWSEvent", "components": registered["components"]})
        errors = sorted(aws_event.iter_errors(message), key=str)
        assert not errors, f"{sent.detail_type} (registry): {[e.message for e in errors]}"
        meta = message["detail"]["metadata"]
        assert meta == {
            "event_id": event_id,
            "event_version": EVENT_VERSION,
            "correlation_id": f"corr-{run}",
            "occurred_at": meta["occurred_at"],
            "program_id": f"prg-contract-{run}",
        }
        assert datetime.fromisoformat(meta["occurred_at"]) == occurred
        assert message["detail"]["data"] == sent.detail["data"]


@pytest.mark.parametrize("detail_type", EVENT_IDS)
def test_committed_schema_rejects_extra_and_missing_fields(detail_type: str) -> None:
    event = next(e for e in ALL_EVENTS if e.detail_type == detail_type)
    env = envelope(
        example_event(event), event_id="evt-1", correlation_id="c", occurred_at=datetime.now(UTC), program_id="p"
    )
    validator = Draft202012Validator(committed_schema(detail_type))
    assert validator.is_valid(env.detail)
    assert not validator.is_valid({**env.detail, "extra": 1})
    assert not validator.is_valid({**env.detail, "data": {**env.detail["data"], "persona_id": "p-1"}})
    meta = dict(env.detail["metadata"])
    meta.pop("event_id")
    assert not validator.is_valid({**env.detail, "metadata": meta})


def test_example_events_are_models() -> None:
    for event in ALL_EVENTS:
        assert isinstance(example_event(event), BaseModel)


# ------------------------------------------------------------------------------------------------ schema registry


def _registered() -> dict[str, dict[str, Any]]:
    from testbuy.infra import StackDescription
    from testbuy.packaging import render_fragment

    resources = render_fragment(StackDescription.load("dev"))["Resources"]
    return {k: v for k, v in resources.items() if v["Type"] == "AWS::EventSchemas::Schema"}


def test_every_event_is_registered_once_in_the_stages_schema_registry_with_a_valid_document() -> None:
    registered = _registered()
    by_name = {r["Properties"]["SchemaName"]: r["Properties"] for r in registered.values()}
    assert len(by_name) == len(registered) == len(ALL_EVENTS)  # one each, names unique
    for event in ALL_EVENTS:
        props = by_name[f"testbuy.{event.component}@{event.detail_type}"]
        assert props["Type"] == "OpenApi3"
        assert props["RegistryName"] == {"Fn::GetAtt": ["EventSchemaRegistry", "RegistryName"]}
        assert 0 < len(props["Description"]) <= 256 and props["Description"].startswith(f"v{EVENT_VERSION}.")
        document = json.loads(props["Content"])
        validate_openapi(document)  # raises on an invalid OpenAPI 3.0 document
        assert document["info"]["version"].split(".")[0] == EVENT_VERSION
        aws = document["components"]["schemas"]["AWSEvent"]
        assert aws["x-amazon-events-detail-type"] == event.detail_type
        assert aws["x-amazon-events-source"] == f"testbuy.{event.component}"


@pytest.mark.parametrize("detail_type", EVENT_IDS)
def test_the_registry_document_takes_a_real_event_and_refuses_a_wrong_one(detail_type: str) -> None:
    event = next(e for e in ALL_EVENTS if e.detail_type == detail_type)
    now = datetime.now(UTC)
    env = envelope(example_event(event), event_id="e", correlation_id="c", occurred_at=now, program_id="p")
    message = {
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": env.detail_type,
        "source": env.source,
        "account": "123456789012",
        "time": "2026-11-29T12:00:00Z",
        "region": "eu-west-1",
        "resources": [],
        "detail": json.loads(json.dumps(env.detail)),
    }
    document = registry_document(event)
    validator = OAS30Validator({"$ref": "#/components/schemas/AWSEvent", "components": document["components"]})
    assert validator.is_valid(message)
    assert not validator.is_valid({**message, "detail-type": "SomethingElse"})
    assert not validator.is_valid({**message, "detail": {**message["detail"], "extra": 1}})
    assert not validator.is_valid({**message, "detail": {**message["detail"], "data": {**env.detail["data"], "x": 1}}})
    nullable = [n for n, f in event.model_fields.items() if "None" in str(f.annotation)]
    for name in nullable:  # Draft 2020-12's anyOf [X, null] became nullable, and still takes null
        data = {**env.detail["data"], name: None}
        assert validator.is_valid({**message, "detail": {**message["detail"], "data": data}}), name


def test_every_event_says_when_it_is_sent_and_who_should_subscribe() -> None:
    catalogue = contracts.CATALOGUE_PATH.read_text()
    for event in ALL_EVENTS:
        assert len(event.sent_when) > 10 and len(event.audience) > 3, event.detail_type
        assert f"## {event.detail_type}\n" in catalogue
