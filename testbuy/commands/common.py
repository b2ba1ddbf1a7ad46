"""What every API command shares: options, the resolved connection, JSON output and exit codes.

Exit codes (also in the README and ``testbuy --help``):

====  ==========================================================================================================
0     done
1     done, but the outcome is negative: rows rejected by an import, a round that failed, a ledger that does not
      reconcile
2     usage or validation: bad arguments, configuration, or the API refused the request (400/409/413/415; its error
      code and fields are shown)
3     not found (404)
4     authentication or permission (401/403): no token, an expired one, or the wrong role
5     the API is unavailable or failed (5xx, connection refused, network timeout)
6     a wait timed out (``rounds watch --timeout``)
130   interrupted (Ctrl-C); an import keeps its progress for ``--resume``
====  ==========================================================================================================
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.parse
from dataclasses import dataclass
from typing import Any, NoReturn

import typer
from rich.console import Console

OK, NEGATIVE, USAGE, NOT_FOUND, AUTH, UNAVAILABLE, TIMEOUT, INTERRUPTED = 0, 1, 2, 3, 4, 5, 6, 130

err = Console(stderr=True)
out = Console()

JSON_OPT = typer.Option(False, "--json", help="print machine-readable JSON on stdout (plain, unwrapped)")
PROFILE_OPT = typer.Option(None, "--profile", help="profile in the profile file (default: $TESTBUY_PROFILE)")
API_OPT = typer.Option(None, "--api-url", help="API base URL (default: $TESTBUY_API_URL, profile, local stack)")
TOKEN_OPT = typer.Option(None, "--token", help="bearer token (default: $TESTBUY_TOKEN, profile, minted locally)")
PROGRAM_OPT = typer.Option(..., "--program", "-p", envvar="TESTBUY_PROGRAM", help="programme id ($TESTBUY_PROGRAM)")


def q(value: str) -> str:
    """A path segment, percent-encoded."""
    return urllib.parse.quote(value, safe="")


def emit_json(data: Any) -> None:
    """JSON on stdout, plain (no rich markup or wrapping), one document."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def status_exit(status: int) -> int:
    if status == 404:
        return NOT_FOUND
    if status in (401, 403):
        return AUTH
    if 400 <= status < 500:
        return USAGE
    return UNAVAILABLE


_NEXT = {
    NOT_FOUND: "check the id (programme, round, order) and the API URL",
    AUTH: "get a token with the right role (locally: `testbuy token --role ...`; a lab token needs --lab-id)",
    UNAVAILABLE: "check that the API is up (locally: `make serve`) and retry",
    USAGE: "fix the fields named above and run the command again",
}


def fail(code: int, message: str, *, as_json: bool, details: Any = None, http_status: int | None = None) -> NoReturn:
    """Report an error on stderr (JSON when ``--json``) and exit with ``code``."""
    if as_json:
        body = {"error": {"message": message, "details": details}, "http_status": http_status, "exit_code": code}
        sys.stderr.write(json.dumps(body) + "\n")
    else:
        err.print(f"[red]error:[/] {message}", soft_wrap=True)
        for d in details or []:
            if isinstance(d, dict):
                where = d.get("field", "")
                err.print(f"  {where}: {d.get('message', '')}".rstrip(": "), soft_wrap=True, markup=False)
        if code in _NEXT and (code != USAGE or details):
            err.print(f"[dim]{_NEXT[code]}[/]", soft_wrap=True)
    raise typer.Exit(code)


@dataclass
class Api:
    """The resolved connection of one command; every call either returns the body or exits with the right code."""

    client: Any
    as_json: bool
    settings: Any

    def call(self, method: str, path: str, body: Any = None, *, expect: tuple[int, ...] = (200, 201, 202)) -> Any:
        try:
            status, payload, _ = self.client.request(method, path, body)
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            fail(UNAVAILABLE, f"cannot reach {self.client.base_url}: {reason}", as_json=self.as_json)
        if status in expect:
            return payload
        self.refused(status, payload)

    def refused(self, status: int, payload: Any) -> NoReturn:
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            message = f"HTTP {status} {error.get('code', '')}: {error.get('message', '')}"
            details = error.get("details")
        else:
            message, details = f"HTTP {status}: {str(payload)[:500]}", None
        fail(
            status_exit(status),
            message,
            as_json=self.as_json,
            details=details if isinstance(details, list) else None,
            http_status=status,
        )


def connect(
    *,
    api_url: str | None,
    token: str | None,
    profile: str | None,
    as_json: bool,
    role: str | None,
    lab_id: str | None = None,
) -> Api:
    """Resolve the configuration (flag > env > profile > local stack) and build the client."""
    from testbuy.client import ApiClient
    from testbuy.profiles import ConfigError, resolve

    try:
        settings = resolve(api_url=api_url, token=token, profile=profile, role=role, lab_id=lab_id)
    except ConfigError as exc:
        fail(USAGE, str(exc), as_json=as_json)
    if settings.token is None:
        fail(
            AUTH,
            f"no token for {settings.api_url}: pass --token, set TESTBUY_TOKEN or add token to your profile",
            as_json=as_json,
        )
    return Api(ApiClient(settings.api_url, settings.token, timeout=30.0), as_json, settings)
