"""Enforcement subscriber: reads the SQS queues subscribed to the bus, checks each event's envelope, counts actions.

A message it cannot process is left on the queue (not deleted); after ``max_receives`` it moves to the DLQ.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EnforcementSubscriber:
    sqs: Any
    queue_url: str
    archive_url: str | None = None
    actions: Counter[str] = field(default_factory=Counter)
    detail_types: Counter[str] = field(default_factory=Counter)
    all_events: Counter[str] = field(default_factory=Counter)
    seen_ids: set[str] = field(default_factory=set)
    rejected: int = 0
    # every distinct event handled (the bus's JSON, first delivery of each event id), for checks against the schemas
    events: list[dict[str, Any]] = field(default_factory=list)
    redeliveries: int = 0  # deliveries of an event id already handled (at-least-once), dropped

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="enforcement-subscriber")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def received(self) -> int:
        return sum(self.detail_types.values())

    def handle(self, message: dict[str, Any]) -> None:
        event = json.loads(message["Body"])
        detail = event["detail"]
        meta = detail["metadata"]
        if not meta["event_id"] or not str(event["source"]).startswith("testbuy."):
            raise ValueError("not a testbuy event")
        if meta["event_id"] in self.seen_ids:
            self.redeliveries += 1
            return  # at-least-once delivery: dedupe on the event id
        self.seen_ids.add(meta["event_id"])
        self.events.append(event)
        self.detail_types[event["detail-type"]] += 1
        if event["detail-type"] == "EnforcementActionRecommended":
            self.actions[detail["data"]["action"]] += 1

    def poll_once(self, wait_seconds: int = 1) -> int:
        handled = 0
        resp = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds)
        for msg in resp.get("Messages", []):
            try:
                self.handle(msg)
            except (ValueError, KeyError, TypeError):
                self.rejected += 1
                continue  # not deleted: redelivered, then dead-lettered
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=msg["ReceiptHandle"])
            handled += 1
        if self.archive_url:
            resp = self.sqs.receive_message(QueueUrl=self.archive_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            for msg in resp.get("Messages", []):
                try:
                    event = json.loads(msg["Body"])
                    self.all_events[event["detail-type"]] += 1
                except (ValueError, KeyError):
                    self.rejected += 1
                    continue
                self.sqs.delete_message(QueueUrl=self.archive_url, ReceiptHandle=msg["ReceiptHandle"])
        return handled

    def drain(self) -> None:
        while self.poll_once(0):
            pass

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once(1)
