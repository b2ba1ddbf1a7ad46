"""The events where subscribers look: EventBridge schema-registry documents and the catalogue page (docs/events.md).

Both are generated from the event models in ``chalicelib.domain.events`` (their fields, ``sent_when`` and ``audience``),
like the committed JSON Schemas, so nothing here can drift from what is published:

- ``registry_document(event)``: the event in the format the EventBridge schema registry uses for discovered schemas
  (``OpenApi3``: an ``AWSEvent`` envelope whose ``detail`` refers to the event's own schemas), registered by the
  template (``testbuy.packaging``: one ``AWS::EventSchemas::Schema`` per event in the stage's registry). The registry
  accepts only OpenAPI 3.0 and JSON Schema Draft 4, not the Draft 2020-12 of ``schemas/events/``: the conversion
  (``nullable`` for ``anyOf [X, null]``) is the only difference, and a contract test validates real bus messages
  against both.
- ``catalogue()``: the Markdown page (name, source, version, when it is sent, who should subscribe, fields, example).
"""

from __future__ import annotations

import json
import types
from datetime import UTC, datetime
from typing import Any, Union, get_args, get_origin

from chalicelib.domain.events import ALL_EVENTS, EVENT_VERSION, EventData, Metadata, envelope

REGISTRY_FORMAT = "OpenApi3"

# Plausible values by field name, for the catalogue's examples and the contract tests (a name not listed gets
# "<name>-1"); each must satisfy the field's constraints.
_EXAMPLE_STRINGS = {
    "currency": "USD",
    "verdict": "counterfeit",
    "original_verdict": "counterfeit",
    "retest_verdict": "authentic",
    "action": "take_down_listing",
    "custody_head": "0" * 64,
    "package_sha256": "0" * 64,
    "reason": "inconclusive",
    "outcome": "overturned",
    "filed_by": "marketplace",
    "status": "case_opened",
    "previous_status": "submitted",
    "rule": "counterfeit-confirmed",
    "policy_version": "2026-11-29.1",
    "error": "States.TaskFailed",
}
_EXAMPLE_TIME = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _example(annotation: Any, name: str) -> Any:
    """A plausible value of a field's type (fails loudly for a type it does not know: extend it then)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _example(args[0], name)
    if origin is list:
        return [_example(get_args(annotation)[0], name.removesuffix("s"))]
    if annotation is str:
        if name in _EXAMPLE_STRINGS:
            return _EXAMPLE_STRINGS[name]
        return f"{name.removesuffix('_id').replace('_', '-')}-0001"
    if annotation is bool:
        return False
    if annotation is datetime:
        return _EXAMPLE_TIME
    if annotation is int:
        return 1234
    if annotation is float:
        return 0.25
    raise AssertionError(f"no example for {name}: {annotation!r}")


def example_event(event: type[EventData]) -> EventData:
    """An instance of ``event`` with a plausible value in every field."""
    return event(**{name: _example(f.annotation, name) for name, f in event.model_fields.items()})


def example_detail(event: type[EventData]) -> dict[str, Any]:
    """The ``detail`` of an example message (metadata + data), as a subscriber receives it."""
    return envelope(
        example_event(event),
        event_id="evt-0123456789abcdef0123456789abcdef",
        correlation_id="corr-example",
        occurred_at=_EXAMPLE_TIME,
        program_id="prg-example",
    ).detail


# ============================================================================================== registry


def _openapi30(schema: Any) -> Any:
    """A pydantic (Draft 2020-12) schema as an OpenAPI 3.0 schema object: ``anyOf [X, {type: null}]`` becomes X with
    ``nullable: true``; ``$schema`` goes (OpenAPI 3.0 has no such keyword)."""
    if isinstance(schema, list):
        return [_openapi30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _openapi30(v) for k, v in schema.items() if k != "$schema"}
    any_of = out.get("anyOf")
    if isinstance(any_of, list) and {"type": "null"} in any_of:
        rest = [s for s in any_of if s != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1:
            out = {**rest[0], **out}
        else:
            out["anyOf"] = rest
        out["nullable"] = True
    return out


def registry_schema_name(event: type[EventData]) -> str:
    """Named as EventBridge names discovered schemas: ``<source>@<detail-type>``."""
    return f"testbuy.{event.component}@{event.detail_type}"


def registry_document(event: type[EventData]) -> dict[str, Any]:
    """The OpenAPI 3.0 document the schema registry holds for ``event`` (``info.version`` = the event version)."""
    name = event.detail_type
    return {
        "openapi": "3.0.0",
        "info": {"version": f"{EVENT_VERSION}.0.0", "title": name, "description": f"Sent when {event.sent_when}."},
        "paths": {},
        "components": {
            "schemas": {
                "AWSEvent": {
                    "type": "object",
                    "required": ["detail-type", "resources", "detail", "id", "source", "time", "region", "version"],
                    "x-amazon-events-detail-type": name,
                    "x-amazon-events-source": f"testbuy.{event.component}",
                    "properties": {
                        "detail": {"$ref": f"#/components/schemas/{name}Detail"},
                        "account": {"type": "string"},
                        "detail-type": {"type": "string", "enum": [name]},
                        "id": {"type": "string"},
                        "region": {"type": "string"},
                        "resources": {"type": "array", "items": {"type": "string"}},
                        "source": {"type": "string", "enum": [f"testbuy.{event.component}"]},
                        "time": {"type": "string", "format": "date-time"},
                        "version": {"type": "string"},
                    },
                },
                f"{name}Detail": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["metadata", "data"],
                    "properties": {
                        "metadata": {"$ref": "#/components/schemas/Metadata"},
                        "data": {"$ref": f"#/components/schemas/{name}"},
                    },
                },
                "Metadata": _openapi30(Metadata.model_json_schema()),
                name: _openapi30(event.model_json_schema()),
            }
        },
    }


def registry_description(event: type[EventData]) -> str:
    """The registry entry's description (at most 256 characters, the registry's limit)."""
    text = f"v{EVENT_VERSION}. Sent when {event.sent_when}. For: {event.audience}."
    return text if len(text) <= 256 else text[:253] + "..."


# ============================================================================================== catalogue


def _type_name(prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        return " or ".join(_type_name(p) for p in prop["anyOf"])
    kind = prop.get("type", "object")
    if kind == "array":
        return f"list of {_type_name(prop.get('items', {}))}"
    if prop.get("format") == "date-time":
        return "UTC timestamp"
    return str(kind)


def catalogue() -> str:
    """docs/events.md: every event, grouped by source, with when it is sent, who should subscribe, and an example."""
    lines = [
        "# Event catalogue",
        "",
        "<!-- generated by `testbuy schemas --write` from chalicelib/domain/events.py; do not edit by hand -->",
        "",
        "Every event testbuy publishes on its EventBridge bus (one bus per stage, `testbuy-<stage>`). Each is",
        "registered in the stage's schema registry (`testbuy-<stage>-events`, schema name `<source>@<detail-type>`,",
        f"format {REGISTRY_FORMAT}) and committed as JSON Schema under `schemas/events/`. The envelope is the same for",
        "all: `source` = `testbuy.<component>`, `detail-type` = the name below, `detail` = `{metadata, data}`;",
        f"`metadata.event_version` is `{EVENT_VERSION}`. Delivery is at least once: `metadata.event_id` is derived",
        "from what happened, so a retried publish carries the same id; subscribers dedupe by it.",
        "",
        "| event | source | sent when | who should subscribe |",
        "|---|---|---|---|",
    ]
    for event in ALL_EVENTS:
        lines.append(
            f"| [{event.detail_type}](#{event.detail_type.lower()}) | `testbuy.{event.component}` | "
            f"{event.sent_when} | {event.audience} |"
        )
    for event in ALL_EVENTS:
        schema = event.model_json_schema()
        required = set(schema.get("required", []))
        lines += [
            "",
            f"## {event.detail_type}",
            "",
            f"- **source**: `testbuy.{event.component}`; **version**: {EVENT_VERSION}; "
            f"**registry**: `{registry_schema_name(event)}`; "
            f"**JSON Schema**: `schemas/events/{event.detail_type}.json`",
            f"- **sent when**: {event.sent_when}",
            f"- **who should subscribe**: {event.audience}",
            "",
            "| field | type | required | description |",
            "|---|---|---|---|",
        ]
        for field, prop in schema.get("properties", {}).items():
            description = str(prop.get("description", "")).replace("|", "\\|")
            lines.append(f"| `{field}` | {_type_name(prop)} | {'yes' if field in required else 'no'} | {description} |")
        lines += ["", "```json", json.dumps(example_detail(event), indent=2), "```"]
    return "\n".join(lines) + "\n"
