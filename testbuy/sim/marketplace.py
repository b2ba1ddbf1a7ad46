"""Simulated marketplace: an HTTP order API on 127.0.0.1 and signed delivery webhooks to testbuy's API.

Behaviour comes from the seeded ``World``: prices vary around the seller's expected cost, some first attempts fail
with 503 (the order workflow must retry), some sellers refuse (409), some parcels are lost (no webhook: the order
workflow must time out and release the money), the rest are delivered after the seller's delay.

The API: ``POST /orders`` (idempotent on ``client_order_id``; a price above ``max_price`` is refused with 409),
``GET /orders?client_order_id=`` (look an order up by the client's id: 404 if never taken), ``POST
/orders/<id>/cancel`` (409 once delivered), ``POST /orders/<id>/refund``. ``truth()`` is the ground truth tests
check the ledger against: every order bought, at its price, and whether it was cancelled, delivered, refunded.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from chalicelib.api.auth import sign_webhook
from testbuy.sim.world import SimSeller, World, synth_seller

WEBHOOK_RETRIES = 8
"""Retries of a webhook the API did not accept (backoff 0.5 s doubling: the last comes about 2 minutes later)."""


@dataclass
class SimOrder:
    marketplace_order_id: str
    client_order_id: str
    seller_id: str
    price: int
    buyer: str = ""
    status: str = "placed"  # placed (live), delivered, cancelled: what the marketplace knows, webhooks or not
    refunded: int = 0
    cancel_calls: int = 0


class Scheduler:
    """Runs callbacks at wall-clock times on one background thread."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cv = threading.Condition()
        self._seq = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def at(self, when: float, fn: Callable[[], None]) -> None:
        with self._cv:
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, fn))
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stop and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._cv.wait(timeout)
                if self._stop:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:  # noqa: BLE001 - a failed webhook is retried by the callback itself
                pass

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()


@dataclass
class MarketplaceSim:
    world: World
    api_url: str
    webhook_secret: str
    seconds_per_day: float = 0.2
    transient_failure_rate: float = 0.05
    seed: int = 7
    accept_unknown_sellers: bool = False  # `testbuy serve`: a user's own sellers get a seeded behaviour
    orders: dict[str, SimOrder] = field(default_factory=dict)
    webhooks_sent: int = 0
    webhook_failures: int = 0
    attempts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._scheduler = Scheduler()
        self._server: ThreadingHTTPServer | None = None
        self._by_seller = self.world.by_id

    # ------------------------------------------------------------------------------------------------ server
    def start(self, port: int = 0) -> str:
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                self._answer(*sim.lookup(self.path))

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                length = int(self.headers.get("content-length", "0"))
                body = json.loads(self.rfile.read(length) or b"{}")
                self._answer(*sim.handle(self.path, body))

            def _answer(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def stop(self) -> None:
        self._scheduler.stop()
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    # ------------------------------------------------------------------------------------------------ behaviour
    def _rng(self, *parts: str) -> random.Random:
        return random.Random(hashlib.sha256("|".join((str(self.seed), *parts)).encode()).hexdigest())

    def by_client_id(self, client_order_id: str) -> SimOrder | None:
        with self._lock:
            return next((o for o in self.orders.values() if o.client_order_id == client_order_id), None)

    def lookup(self, path: str) -> tuple[int, dict[str, Any]]:
        url = urllib.parse.urlsplit(path)
        if url.path.rstrip("/") != "/orders":
            return 404, {"error": "no such route"}
        client_id = urllib.parse.parse_qs(url.query).get("client_order_id", [""])[0]
        order = self.by_client_id(client_id)
        if order is None:
            return 404, {"error": "unknown order"}
        return 200, self._view(order)

    @staticmethod
    def _view(o: SimOrder) -> dict[str, Any]:
        return {
            "marketplace_order_id": o.marketplace_order_id,
            "client_order_id": o.client_order_id,
            "price": o.price,
            "status": o.status,
            "refunded": o.refunded,
        }

    def truth(self) -> list[dict[str, Any]]:
        """Ground truth: every order the marketplace took, with its price, status and refund."""
        with self._lock:
            return [{**self._view(o), "seller_id": o.seller_id, "buyer": o.buyer} for o in self.orders.values()]

    def cancel(self, marketplace_order_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            order = self.orders.get(marketplace_order_id)
            if order is None:
                return 404, {"error": "unknown order"}
            order.cancel_calls += 1
            if order.status == "delivered":
                return 409, {"reason": "already delivered"}
            order.status = "cancelled"
        return 200, {"cancelled": True}

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        parts = [p for p in path.split("/") if p]
        if parts == ["orders"]:
            return self.place(body)
        if len(parts) == 3 and parts[0] == "orders" and parts[2] == "cancel":
            return self.cancel(parts[1])
        if len(parts) == 3 and parts[0] == "orders" and parts[2] == "refund":
            with self._lock:
                order = self.orders.get(parts[1])
                if order is None:
                    return 404, {"error": "unknown order"}
                if order.refunded == 0:
                    order.refunded = min(int(body.get("amount", 0)), order.price)
                return 200, {"refunded": order.refunded}
        return 404, {"error": "no such route"}

    def seller(self, seller_id: str, max_price: int) -> SimSeller | None:
        """The world's seller, or (``accept_unknown_sellers``) one drawn from (seed, seller id) whose expected cost
        is what the order's reservation implies (max_price = cost + the 15% margin), remembered for its truth."""
        with self._lock:
            known = self._by_seller.get(seller_id)
            if known is None and self.accept_unknown_sellers:
                known = synth_seller(self.seed, seller_id, max(1, int(max_price / 1.15)))
                self._by_seller[seller_id] = known
            return known

    def place(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        client_id = str(body["client_order_id"])
        seller = self.seller(str(body["seller_id"]), int(body["max_price"]))
        if seller is None:
            return 400, {"error": "unknown seller"}
        with self._lock:
            existing = next((o for o in self.orders.values() if o.client_order_id == client_id), None)
            if existing:  # idempotent on the client's order id
                return 200, {"marketplace_order_id": existing.marketplace_order_id, "price": existing.price}
            attempt = self.attempts.get(client_id, 0) + 1
            self.attempts[client_id] = attempt
        rng = self._rng(client_id)
        if attempt == 1 and rng.random() < self.transient_failure_rate:
            return 503, {"error": "temporarily unavailable"}
        if seller.refuses:
            return 409, {"reason": "seller cancelled the order"}
        price = self.price_for(seller.seller_id, int(seller.expected_cost * rng.uniform(0.9, 1.1)))
        if price > int(body["max_price"]):
            return 409, {"reason": "price above max_price"}
        mid = "mo-" + hashlib.sha256(client_id.encode()).hexdigest()[:16]
        order = SimOrder(
            marketplace_order_id=mid,
            client_order_id=client_id,
            seller_id=seller.seller_id,
            price=price,
            buyer=str(body.get("buyer", "")),
        )
        with self._lock:
            self.orders[mid] = order
        if not seller.loses_parcel:
            delay = seller.delivery_days * self.seconds_per_day * rng.uniform(0.5, 1.5)
            self._scheduler.at(time.monotonic() + delay, lambda: self._deliver(order, 0))
        return 200, {"marketplace_order_id": mid, "price": price}

    def price_for(self, seller_id: str, price: int) -> int:
        """The price charged (a hook for scripted marketplaces in tests)."""
        return price

    def _deliver(self, order: SimOrder, attempt: int) -> None:
        with self._lock:
            if order.status == "cancelled":
                return
            order.status = "delivered"  # the parcel arrived, whether or not the webhook gets through
        body = json.dumps(
            {
                "order_id": order.client_order_id,
                "marketplace_order_id": order.marketplace_order_id,
                "status": "delivered",
                "occurred_at": datetime.now(UTC).isoformat(),
            }
        ).encode()
        req = urllib.request.Request(
            f"{self.api_url}/webhooks/delivery",
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                # Standard Webhooks: the id is the same on every retry of this notice (the receiver deduplicates)
                **sign_webhook(self.webhook_secret, body, f"msg_{order.marketplace_order_id}_delivered"),
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
                resp.read()
            with self._lock:
                self.webhooks_sent += 1
        except (urllib.error.URLError, TimeoutError, ConnectionError):
            # Like a real marketplace: retry with backoff. Standard Webhooks senders retry for days; compressed here
            # to 8 retries over about 2 minutes, so a retry still comes after the receiver's 60 s claim lease
            # (a notice whose first processing crashed after claiming it is processed by a later retry).
            with self._lock:
                self.webhook_failures += 1
            if attempt < WEBHOOK_RETRIES:
                self._scheduler.at(time.monotonic() + 0.5 * 2**attempt, lambda: self._deliver(order, attempt + 1))

    def item_truth(self, client_order_id: str) -> tuple[bool, tuple[int, int, int], int]:
        """What the lab finds in the parcel: (counterfeit?, service scores, delivery days). Ground truth."""
        with self._lock:
            order = next((o for o in self.orders.values() if o.client_order_id == client_order_id), None)
        if order is None:
            raise KeyError(client_order_id)
        with self._lock:
            seller = self._by_seller[order.seller_id]
        return seller.sells_fakes, seller.service, seller.delivery_days
