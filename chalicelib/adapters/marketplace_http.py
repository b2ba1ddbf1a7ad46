"""Marketplace adapter over HTTP/JSON (stdlib only; the real marketplace API has the same small surface)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from chalicelib.domain.errors import MarketplaceUnavailable, OrderRefused
from chalicelib.ports import MarketOrder, PlacedOrder


class HttpMarketplace:
    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        if not base_url.startswith(("https://", "http://")):
            raise ValueError("the marketplace URL must be http(s)://")  # urlopen would also open file:// and ftp://
        self._base = base_url.rstrip("/")
        self._timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """One request; ``None`` for a 404 (only a lookup asks about something that may not exist). 409 is the
        marketplace refusing (``OrderRefused``); 429, 5xx and an unreachable endpoint are ``MarketplaceUnavailable``
        (retryable); anything else is raised as it is."""
        req = urllib.request.Request(
            self._base + path,
            data=None if body is None else json.dumps(body).encode(),
            headers={} if body is None else {"Content-Type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(req, timeout=self._timeout) as resp:  # nosec B310 # scheme checked in __init__: http(s) only
                return json.loads(resp.read() or b"{}")  # type: ignore[no-any-return]
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            if exc.code == 404 and method == "GET":
                return None
            if exc.code == 409:
                raise OrderRefused(json.loads(payload or b"{}").get("reason", "refused")) from None
            if exc.code >= 500 or exc.code == 429:
                raise MarketplaceUnavailable(f"marketplace answered {exc.code}") from None
            raise
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            raise MarketplaceUnavailable(f"marketplace unreachable: {exc}") from None

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, body) or {}

    def place_order(
        self, order_id: str, seller_id: str, account_ref: str, max_price: int, currency: str
    ) -> PlacedOrder:
        """Idempotent on ``client_order_id``; the marketplace refuses (409) a price above ``max_price``."""
        data = self._post(
            "/orders",
            {
                "client_order_id": order_id,
                "seller_id": seller_id,
                "buyer": account_ref,
                "max_price": max_price,
                "currency": currency,
            },
        )
        return PlacedOrder(marketplace_order_id=str(data["marketplace_order_id"]), price=int(data["price"]))

    def find_order(self, order_id: str) -> MarketOrder | None:
        """``GET /orders?client_order_id=<order id>``: 404 means the marketplace never took it."""
        data = self._call("GET", "/orders?" + urllib.parse.urlencode({"client_order_id": order_id}))
        if data is None:
            return None
        return MarketOrder(
            marketplace_order_id=str(data["marketplace_order_id"]), price=int(data["price"]), status=str(data["status"])
        )

    def cancel_order(self, marketplace_order_id: str) -> None:
        self._post(f"/orders/{marketplace_order_id}/cancel", {})

    def request_refund(self, marketplace_order_id: str, amount: int, reason: str) -> int:
        data = self._post(f"/orders/{marketplace_order_id}/refund", {"amount": amount, "reason": reason})
        return int(data["refunded"])
