"""Simulated lab: polls its queue over the real HTTP API, logs a custody hand-over, rates service quality and posts
a verdict. It examines the parcel's ground truth (from the simulated marketplace); a few results are inconclusive.

Knobs for the re-test paths (issue 10 item 1): ``inconclusive_rate`` (first examinations) and
``retest_inconclusive_rate`` (samples re-tested here after another lab; default: the same rate, drawn independently
of the first lab's draw); ``answer_after_seconds`` makes the lab slow (it answers that long after it first saw a
sample: longer than the programme's ``verdict_seconds`` and the sample is re-assigned, and the late verdict it still
posts is refused: counted in ``late_refused``); ``never_answers`` makes it miss every deadline."""

from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LabSim:
    api_url: str
    lab_id: str
    token: str
    truth: Callable[[str], tuple[bool, tuple[int, int, int], int]]
    inconclusive_rate: float = 0.03
    poll_seconds: float = 0.3
    seed: int = 11
    # wall-clock only, never a decision (the verdict is keyed on (seed, order id)): examine the queue in a random
    # order and wait a random 0..think_seconds per parcel (tests vary timing with these and expect the same verdicts)
    shuffle_queue: bool = False
    think_seconds: float = 0.0
    # --- retest knobs (issue 10 item 1)
    retest_inconclusive_rate: float | None = None
    answer_after_seconds: float = 0.0
    never_answers: bool = False
    late_refused: list[str] = field(default_factory=list)
    retests: int = 0
    # --- end retest knobs
    verdicts: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._timing = random.Random()  # nosec B311 # timing noise only, deliberately unseeded
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"lab-{self.lab_id}")
        self._pending: dict[str, tuple[float, int]] = {}  # order id -> (first seen, monotonic; lab attempt)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.api_url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - loopback
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def examine(self, order_id: str, attempt: int = 1) -> None:
        fake, (packaging, accuracy, communication), days = self.truth(order_id)
        # The first examination keeps its historical key; a re-test draws on its own (this lab, this attempt).
        key = f"{self.seed}|{order_id}" if attempt <= 1 else f"{self.seed}|{self.lab_id}|{attempt}|{order_id}"
        rng = random.Random(hashlib.sha256(key.encode()).hexdigest())
        rate = self.inconclusive_rate
        if attempt > 1:
            self.retests += 1
            rate = self.inconclusive_rate if self.retest_inconclusive_rate is None else self.retest_inconclusive_rate
        photo = self.upload(order_id, f"simulated photo of sample {order_id}\n".encode(), "image/png")
        self.call(
            "POST",
            f"/samples/{order_id}/custody",
            {
                "from_party": f"lab:{self.lab_id}:intake",
                "to_party": f"lab:{self.lab_id}:bench",
                "location": f"{self.lab_id} bench 1",
                "condition": "seal intact",
                "evidence": [photo],
            },
        )
        self.call(
            "POST",
            f"/samples/{order_id}/service-quality",
            {
                "delivery_days": days,
                "packaging": packaging,
                "description_accuracy": accuracy,
                "communication": communication,
            },
        )
        if rng.random() < rate:
            verdict = "inconclusive"
        else:
            verdict = "counterfeit" if fake else "authentic"
        status, body = self.call("POST", f"/samples/{order_id}/verdict", self.verdict_body(order_id, verdict, photo))
        if status in (200, 201):
            self.verdicts += 1
        elif status == 409 and "re-assigned" in json.dumps(body):
            self.late_refused.append(order_id)  # too slow: the sample went to another lab
        else:
            self.errors.append(f"{order_id}: {status} {body}")

    def upload(self, order_id: str, content: bytes, media_type: str) -> str:
        """Upload an evidence file; its SHA-256 (computed here: the same whether or not the upload answered)."""
        return upload_evidence(self._post, order_id, content, media_type, self.errors)

    def verdict_body(self, order_id: str, verdict: str, photo: str) -> dict[str, Any]:
        return court_verdict(self._post, self.lab_id, order_id, verdict, [photo], "simulated examination", self.errors)

    def _post(self, path: str, body: Any) -> tuple[int, Any]:
        return self.call("POST", path, body)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = self.call("GET", f"/labs/{self.lab_id}/queue")
                if status == 200:
                    samples = list(body["samples"])
                    if self.shuffle_queue:
                        self._timing.shuffle(samples)
                    now = time.monotonic()
                    for sample in samples:
                        self._pending.setdefault(sample["order_id"], (now, int(sample.get("attempt", 1))))
                    for order_id, (seen, attempt) in list(self._pending.items()):
                        if self.never_answers or time.monotonic() - seen < self.answer_after_seconds:
                            continue  # a slow lab: it answers later (a sample re-assigned meanwhile is still answered)
                        if self.think_seconds and self._stop.wait(self._timing.uniform(0, self.think_seconds)):
                            break
                        del self._pending[order_id]
                        self.examine(order_id, attempt)
            except (OSError, KeyError) as exc:
                self.errors.append(repr(exc))
            self._stop.wait(self.poll_seconds)


# --- evidence (issue 10 item 0): every client that posts verdicts (this simulator, the fault suite, the state-machine
# tests) builds a court-grade one here: the lab report is uploaded as evidence first and cited by its SHA-256.
Post = Callable[[str, Any], tuple[int, Any]]


def upload_evidence(
    post: Post,
    order_id: str,
    content: bytes,
    media_type: str,
    errors: list[str] | None = None,
    path: str | None = None,
) -> str:
    """Upload an evidence file with ``post(path, body)`` (default: the sample's evidence route; an appeal's re-test
    lab passes its appeal's); return its SHA-256 (computed locally, so a lost reply changes nothing: the upload is
    idempotent by content)."""
    body = {"content_base64": base64.b64encode(content).decode(), "media_type": media_type}
    for _ in range(3):
        status, answer = post(path or f"/samples/{order_id}/evidence", body)
        if status < 500:
            break
    if status != 201 and errors is not None:
        errors.append(f"{order_id}: evidence upload {status} {answer}")
    return hashlib.sha256(content).hexdigest()


def court_verdict(
    post: Post,
    lab_id: str,
    order_id: str,
    verdict: str,
    evidence: list[str],
    notes: str,
    errors: list[str] | None = None,
    upload_path: str | None = None,
) -> dict[str, Any]:
    """The verdict body with method, analyst, accreditation, confidence and the uploaded report's SHA-256
    (``upload_path``: where the report goes, default the sample's evidence route)."""
    method = "visual+microscopy"
    report = json.dumps(
        {"lab": lab_id, "order_id": order_id, "verdict": verdict, "method": method, "notes": notes}, sort_keys=True
    ).encode()
    return {
        "verdict": verdict,
        "notes": notes,
        "evidence": evidence,
        "method": method,
        "analyst": f"analyst-1@{lab_id}",
        "accreditation": f"ISO/IEC 17025 cert SIM-{lab_id}",
        "confidence": 0.5 if verdict == "inconclusive" else 0.95,
        "report_sha256": upload_evidence(post, order_id, report, "application/json", errors, upload_path),
    }
