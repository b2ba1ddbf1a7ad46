"""One declaration per route: it registers the Chalice route, authorizes (failing closed), validates, checks the
answer against its model, and is the only source of ``docs/openapi.json`` (``testbuy/contracts.py``).

A view is written as::

    @endpoint(bp, "POST", "/programs/{program_id}/funding", summary=..., tag="programs",
              roles=(PM, FIN), request=FundRequest, ok=(Ok(200, "the new balance", Funded),), errors=(404, 409))
    def fund(call: Call) -> Reply: ...

and ``endpoint`` is the only way a route gets into the app: ``tests/contract/test_contracts.py`` proves every
Chalice route of the app is a declared one (same method, path and view), so a bare ``@bp.route`` fails the build.

What the wrapper does, in order (the first failure answers):
1. authentication and role (401/403); admin is admitted to every bearer route; a lab principal always has a lab;
2. path parameters: each matches its pattern and length (400 names the parameter) before any storage is read, so an
   over-long id never reaches DynamoDB's 2,048-byte key limit;
3. query parameters: unknown ones and values outside their enum are 400s;
4. the body, strictly parsed into the request model (400/413);
5. lab scoping: on ``lab_scope="lab_id"`` routes a lab may name its own lab only (403); on ``lab_scope="order_id"``
   routes a sample that does not exist and a sample of another lab get the same 404 and body (no existence oracle);
6. the handler; its status must be a declared one and its body must validate (strict JSON) against that status's
   model, or the answer is a logged 500 (a bug in our code, never a silently wrong document).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from chalice.app import Blueprint, Response
from pydantic import BaseModel, ValidationError

from chalicelib.api.auth import Forbidden, Principal, Role, Unauthorized
from chalicelib.api.errors import ApiError, error_body, parse_body, raw_body, respond, to_response
from chalicelib.observability import logger

Auth = Literal["bearer", "webhook", "none"]
LabScope = Literal["lab_id", "order_id"]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
ID_MAX_LENGTH = 128  # far below DynamoDB's 2,048-byte partition key, even inside composite keys
_NAME = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class PathParam:
    description: str = "an identifier"
    pattern: str = ID_PATTERN
    max_length: int = ID_MAX_LENGTH

    def problem(self, value: str) -> str | None:
        if not value:
            return "must not be empty"
        if len(value) > self.max_length:
            return f"must be at most {self.max_length} characters"
        if not re.fullmatch(self.pattern, value):
            return f"must match {self.pattern}"
        return None


@dataclass(frozen=True)
class QueryParam:
    """A query parameter: one of ``enum`` when given, else a string matching ``pattern`` (at most ``max_length``)."""

    name: str
    description: str
    enum: tuple[str, ...] = ()
    default: str | None = None
    pattern: str | None = None
    max_length: int = ID_MAX_LENGTH

    def problem(self, value: str) -> str | None:
        if self.enum:
            return None if value in self.enum else f"must be one of {list(self.enum)}"
        if len(value) > self.max_length:
            return f"must be at most {self.max_length} characters"
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"must match {self.pattern}"
        return None


@dataclass(frozen=True)
class Ok:
    """A success answer: its status, what it means, and the model its JSON body validates against."""

    status: int
    description: str
    model: type[BaseModel] | None
    csv: bool = False  # the same data may also be answered as text/csv
    # a non-JSON answer only (e.g. "text/html" for a page): the body is a string of that type and ``model`` is None
    media_type: str | None = None

    def __post_init__(self) -> None:
        if (self.model is None) != (self.media_type is not None):
            raise TypeError("an answer has a JSON model, or a media_type and no model")


@dataclass(frozen=True)
class Refusal:
    """A rule that JSON Schema cannot state (it compares the body with stored state, or items with each other): a
    request valid by the document can still be refused, with this status and code, naming a field that matches
    ``field`` (a regular expression). Published as ``x-refusals`` of the operation."""

    status: int
    code: str
    field: str
    rule: str


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


@dataclass
class Call:
    """What a handler gets: the validated request."""

    request: Any
    principal: Principal | None
    params: dict[str, str]
    body: Any = None
    query: dict[str, str] = field(default_factory=dict)
    raw: bytes = b""
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def lab_scope(self) -> str | None:
        """The lab a lab principal is confined to; None for every other role (which is not confined)."""
        who = self.principal
        return who.lab_id if who is not None and who.role is Role.LAB else None

    @property
    def who(self) -> Principal:
        if self.principal is None:  # pragma: no cover - a declaration bug, caught by the contract tests
            raise RuntimeError("this route has no principal")
        return self.principal


Handler = Callable[[Call], "Reply | Response"]


@dataclass(frozen=True)
class Declaration:
    method: str
    path: str
    summary: str
    tag: str
    ok: tuple[Ok, ...]
    roles: tuple[Role, ...] = ()
    auth: Auth = "bearer"
    lab_scope: LabScope | None = None
    request: type[BaseModel] | None = None
    body_optional: bool = False
    errors: tuple[int, ...] = ()
    query: tuple[QueryParam, ...] = ()
    params: dict[str, PathParam] = field(default_factory=dict)
    description: str = ""
    view_name: str = ""
    refusals: tuple[Refusal, ...] = ()
    # retest (issue 10 item 1): on a lab_scope="order_id" route, a lab the sample was taken from (re-test,
    # re-assignment) gets through to the service, which answers it (the verdict route: its own verdict again, or 409)
    former_labs: bool = False

    @property
    def admitted(self) -> tuple[str, ...]:
        """Roles admitted (admin to every bearer route; the webhook route admits the signed marketplace only)."""
        if self.auth == "bearer":
            return tuple(sorted({*(r.value for r in self.roles), Role.ADMIN.value}))
        return tuple(r.value for r in self.roles)

    def error_statuses(self) -> list[int]:
        statuses = set(self.errors)
        if self.params or self.query or self.request is not None:
            statuses.add(400)
        if self.request is not None:
            statuses |= {413, 415}
        if self.auth != "none":
            statuses.add(401)
        if self.auth == "bearer":
            statuses.add(403)
        if self.lab_scope == "order_id":
            statuses.add(404)
        return sorted(statuses)


DECLARATIONS: dict[tuple[str, str], Declaration] = {}


def path_names(path: str) -> list[str]:
    return _NAME.findall(path)


def endpoint(
    bp: Blueprint,
    method: str,
    path: str,
    *,
    summary: str,
    tag: str,
    ok: tuple[Ok, ...],
    roles: tuple[Role, ...] = (),
    auth: Auth = "bearer",
    lab_scope: LabScope | None = None,
    request: type[BaseModel] | None = None,
    body_optional: bool = False,
    errors: tuple[int, ...] = (),
    query: tuple[QueryParam, ...] = (),
    params: dict[str, PathParam] | None = None,
    description: str = "",
    refusals: tuple[Refusal, ...] = (),
    former_labs: bool = False,
) -> Callable[[Handler], Callable[..., Any]]:
    """Declare, register and guard one route (see the module docstring)."""
    names = path_names(path)
    given = dict(params or {})
    if set(given) - set(names):
        raise TypeError(f"{method} {path}: parameters {sorted(set(given) - set(names))} are not in the path")
    typed = {name: given.get(name, PathParam()) for name in names}
    if (method, path) in DECLARATIONS:
        raise TypeError(f"{method} {path} is declared twice")
    if auth == "bearer" and Role.LAB in roles and lab_scope is None:
        raise TypeError(f"{method} {path}: a route open to labs must say how a lab is confined (lab_scope)")
    if lab_scope is not None and lab_scope not in names:
        raise TypeError(f"{method} {path}: lab_scope {lab_scope} is not a path parameter")
    if not ok:
        raise TypeError(f"{method} {path}: declare at least one success answer")

    def register(handler: Handler) -> Callable[..., Any]:
        decl = Declaration(
            method=method,
            path=path,
            summary=summary,
            tag=tag,
            ok=ok,
            roles=roles,
            auth=auth,
            lab_scope=lab_scope,
            former_labs=former_labs,
            request=request,
            body_optional=body_optional,
            errors=errors,
            query=query,
            params=typed,
            description=description or (handler.__doc__ or "").strip(),
            view_name=handler.__name__,
            refusals=refusals,
        )

        @functools.wraps(handler)
        def view(**path_args: str) -> Response:
            return _serve(decl, handler, bp.current_request, path_args)

        view.__declaration__ = decl  # type: ignore[attr-defined]
        content_types = ["application/json"] if request is not None else ["*/*"]
        bp.route(path, methods=[method], content_types=content_types)(view)
        DECLARATIONS[(method, path)] = decl
        return view

    return register


def authenticate(request: Any) -> Principal:
    """The caller of a bearer route, from Cognito's claims in AWS or a local token (``TESTBUY_AUTH_MODE``)."""
    from chalicelib.api.auth import principal_from_cognito, verify_token
    from chalicelib.config import settings

    cfg = settings()
    if cfg.auth_mode == "cognito":
        return principal_from_cognito(request.context or {})
    header = str((request.headers or {}).get("authorization", ""))
    if not header.lower().startswith("bearer "):
        raise Unauthorized("send 'Authorization: Bearer <token>'; get a local token with `testbuy token --role ...`")
    return verify_token(cfg.token_secret, header[7:].strip())


def _not_found_for_lab(order_id: str) -> ApiError:
    """One answer for "no such sample" and "not your lab's sample": same status, code, message and details."""
    return ApiError(404, "not_found", f"no sample {order_id} for this lab", [{"field": "order_id"}])


def _serve(decl: Declaration, handler: Handler, request: Any, path_args: dict[str, str]) -> Response:
    who: Principal | None = None
    try:
        raw = raw_body(request)
        context: dict[str, Any] = {}
        if decl.auth == "bearer":
            who = authenticate(request)
            if who.role.value not in decl.admitted:
                raise Forbidden(f"role {who.role.value} may not do this; needs one of {list(decl.admitted)}")
        elif decl.auth == "webhook":
            from chalicelib.api.webhooks import authenticate_webhook

            who, context = authenticate_webhook(request, raw)
        bad = [
            {"field": name, "message": problem, "type": "path_parameter"}
            for name, spec in decl.params.items()
            if (problem := spec.problem(str(path_args.get(name, "")))) is not None
        ]
        if bad:
            raise ApiError(400, "invalid_input", "a path parameter is not a valid identifier", bad)
        query = _query(decl, dict(request.query_params or {}))
        body = None
        if decl.request is not None:
            if decl.body_optional and raw.strip() == b"":
                raw = b"{}"
            body = parse_body(raw, decl.request)
        call = Call(request, who, dict(path_args), body, query, raw, context)
        if who is not None and who.role is Role.LAB:
            _confine(decl, who, path_args)
        result = handler(call)
    except Exception as exc:
        if who is not None and who.role is Role.LAB and decl.lab_scope == "order_id" and _is_not_found(exc):
            return to_response(_not_found_for_lab(path_args["order_id"]))
        return to_response(exc)
    return _checked(decl, result)


def _is_not_found(exc: BaseException) -> bool:
    from chalicelib.domain.errors import NotFound
    from chalicelib.services.lab import WrongLab

    return isinstance(exc, NotFound | WrongLab)


def _confine(decl: Declaration, who: Principal, path_args: dict[str, str]) -> None:
    if decl.lab_scope == "lab_id":
        if path_args["lab_id"] != who.lab_id:
            raise Forbidden("a lab sees its own lab only")
    elif decl.lab_scope == "order_id":
        from chalicelib.bootstrap import deps
        from chalicelib.domain.errors import NotFound

        order_id = path_args["order_id"]
        try:
            order = deps().orders.get_order(order_id)
        except NotFound:
            raise _not_found_for_lab(order_id) from None
        former = decl.former_labs and who.lab_id in order.labs_tried
        if order.lab_id is None or (order.lab_id != who.lab_id and not former):
            raise _not_found_for_lab(order_id)
    else:  # unreachable: endpoint() refuses lab routes without a scope
        raise Forbidden("this route is not open to labs")


def _query(decl: Declaration, given: dict[str, str]) -> dict[str, str]:
    known = {q.name: q for q in decl.query}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ApiError(400, "invalid_input", "unknown query parameters", [{"field": f} for f in unknown])
    out: dict[str, str] = {}
    for name, spec in known.items():
        if name in given:
            problem = spec.problem(given[name])
            if problem is not None:
                raise ApiError(400, "invalid_input", f"{name} {problem}", [{"field": name}])
            out[name] = given[name]
        elif spec.default is not None:
            out[name] = spec.default
    return out


def _checked(decl: Declaration, result: Reply | Response) -> Response:
    """The answer, if it is one the declaration promises; otherwise a logged 500 (and never a wrong document)."""
    if isinstance(result, Response):  # a non-JSON answer (CSV): its status must still be declared
        if any(o.status == result.status_code and (o.csv or o.media_type) for o in decl.ok):
            return result
        return _broken(decl, result.status_code, "undeclared non-JSON answer")
    ok = next((o for o in decl.ok if o.status == result.status), None)
    if ok is None or ok.model is None:
        return _broken(decl, result.status, "undeclared status")
    try:
        ok.model.model_validate_json(json.dumps(result.body), strict=True)
    except (ValidationError, TypeError, ValueError) as exc:
        return _broken(decl, result.status, type(exc).__name__, str(exc)[:2000])
    return respond(result.status, result.body)


def _broken(decl: Declaration, status: int, why: str, detail: str = "") -> Response:
    logger().error(
        "answer breaks its declaration",
        extra={"method": decl.method, "path": decl.path, "status": status, "why": why, "detail": detail},
    )
    return respond(500, error_body("internal", "unexpected error; it was logged, retry later"))
