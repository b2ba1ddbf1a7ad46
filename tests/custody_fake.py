"""An in-memory custody repository that keeps the port's contract (``chalicelib.ports.CustodyRepository``): an append
lands only on the anchored head and moves the anchor, as the DynamoDB transaction does. For service unit tests (and
for ``tests/fakes.py`` to reuse). ``interleave`` lets a test land a rival's entry just before the next append."""

from __future__ import annotations

import threading

from chalicelib.domain.custody import Anchor, CustodyEntry
from chalicelib.domain.errors import Conflict


class AnchoredFakeCustody:
    """The repository's contract in memory: an append lands only on the anchored head and moves it."""

    def __init__(self) -> None:
        self.entries: dict[str, list[CustodyEntry]] = {}
        self.anchors: dict[str, Anchor] = {}
        self.interleave: list[CustodyEntry] = []  # entries a rival writer lands just before our next append
        self.lock = threading.Lock()

    def append(self, entry: CustodyEntry) -> Anchor:
        with self.lock:
            if self.interleave:
                rival = self.interleave.pop(0)
                self._land(rival)
            return self._land(entry)

    def _land(self, entry: CustodyEntry) -> Anchor:
        current = self.anchors.get(entry.order_id, Anchor.empty())
        if (current.length, current.head) != (entry.seq, entry.prev_mac):
            raise Conflict("the anchor moved")
        self.entries.setdefault(entry.order_id, []).append(entry)
        self.anchors[entry.order_id] = Anchor(entry.seq + 1, entry.mac)
        return self.anchors[entry.order_id]

    def chain(self, order_id: str) -> list[CustodyEntry]:
        return list(self.entries.get(order_id, []))

    def snapshot(self, order_id: str) -> tuple[list[CustodyEntry], Anchor | None]:
        return self.chain(order_id), self.anchors.get(order_id)
