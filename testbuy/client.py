"""A small HTTP client for testbuy's REST API (stdlib only), used by the CLI, the demo and the e2e tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any


class ApiCallError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status
        self.body = body


@dataclass
class ApiClient:
    base_url: str
    token: str | None = None
    timeout: float = 60.0

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> tuple[int, Any, dict[str, str]]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if self.token:
            hdrs.setdefault("Authorization", f"Bearer {self.token}")
        req = urllib.request.Request(self.base_url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - configured URL
                payload = resp.read()
                ctype = resp.headers.get("Content-Type", "")
                return resp.status, _decode(payload, ctype), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            return exc.code, _decode(payload, exc.headers.get("Content-Type", "")), dict(exc.headers)

    def call(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = (200, 201, 202)) -> Any:
        status, payload, _ = self.request(method, path, body)
        if status not in expect:
            raise ApiCallError(status, payload)
        return payload


def _decode(payload: bytes, ctype: str) -> Any:
    if not payload:
        return None
    if "json" in ctype:
        return json.loads(payload)
    return payload.decode()
