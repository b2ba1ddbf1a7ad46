"""Schemathesis hooks for tests/e2e/test_schemathesis.py (loaded through ``SCHEMATHESIS_HOOKS``).

``documented_positive_acceptance`` is schemathesis' ``positive_data_acceptance`` with one difference: a request that
is valid by the document but breaks a rule the document states outside JSON Schema (``x-constraints`` of a schema:
``period_end > period_start``...; ``x-refusals`` of an operation: a currency other than the programme's...) may be
refused, provided the 400 names a field of that rule. Anything else refused is a failure: the document would then
promise more than the server accepts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import schemathesis
from schemathesis.core.failures import Failure

DOC = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
ACCEPTED = {401, 403, 404, 409, 429}
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _constraint_fields(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for rule in node.get("x-constraints", []):
            found |= set(_WORD.findall(rule))
        for value in node.values():
            found |= _constraint_fields(value)
    elif isinstance(node, list):
        for value in node:
            found |= _constraint_fields(value)
    return found


CONSTRAINED = _constraint_fields(DOC["components"]["schemas"])


class DocumentedRuleBroken(Failure):
    code = "ST990"
    kind_title = "Schema-valid request refused outside the documented rules"


def _covered(operation: dict[str, Any], status: int, payload: Any) -> bool:
    error = payload.get("error") if isinstance(payload, dict) else None
    if status != 400 or not isinstance(error, dict):
        return False
    fields = [str(d.get("field", "")) for d in (error.get("details") or []) if isinstance(d, dict)]
    if not fields:
        return False
    refusals = operation.get("x-refusals", [])
    for name in fields:
        by_refusal = any(r["code"] == error.get("code") and re.search(r["field"], name) for r in refusals)
        by_constraint = re.split(r"[.\[\]]+", name.strip("]"))[-1] in CONSTRAINED
        if not (by_refusal or by_constraint):
            return False
    return True


@schemathesis.check
def documented_positive_acceptance(ctx: Any, response: Any, case: Any) -> bool | None:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    status = response.status_code
    if status < 400 or status in ACCEPTED or status >= 500:  # 5xx: not_a_server_error's business
        return None
    operation = DOC["paths"].get(case.operation.path, {}).get(case.operation.method.lower())
    if operation is None:
        return None  # a method the document does not have: not positive data for any operation
    try:
        payload = json.loads(response.content)
    except ValueError:
        payload = None
    if _covered(operation, status, payload):
        return None
    raise DocumentedRuleBroken(
        operation=case.operation.label,
        message=f"a request valid by the document was refused with {status}: {str(payload)[:500]}",
    )
