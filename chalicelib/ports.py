"""Ports: what the services need from the outside world, as Protocols. Adapters implement them; tests use fakes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chalicelib.domain.appeals import Appeal, AppealEvent, RetestVerdict  # appeals (issue 10 item 2)
from chalicelib.domain.custody import Anchor, CustodyEntry
from chalicelib.domain.events import Envelope
from chalicelib.domain.ledger import Balance, JournalEntry
from chalicelib.domain.lifecycle import OrderEvent
from chalicelib.domain.models import Order, Program, Round, Seller, Verdict, VerdictKind
from chalicelib.domain.personas import PersonaPolicy, PersonaState


class Clock(Protocol):
    def now(self) -> datetime:
        """Timezone-aware UTC now."""
        ...


class IdGenerator(Protocol):
    def new(self, prefix: str) -> str:
        """A fresh, unguessable id such as ``prg-01J...``."""
        ...


class ProgramRepository(Protocol):
    def put_program(self, program: Program) -> None: ...
    def get_program(self, program_id: str) -> Program:
        """Raise ``NotFound`` for an unknown id."""
        ...

    def put_sellers(self, program_id: str, sellers: Sequence[Seller]) -> None: ...
    def list_sellers(self, program_id: str) -> list[Seller]: ...
    def get_seller(self, program_id: str, seller_id: str) -> Seller | None: ...
    def put_refund_feed(self, program_id: str, period: str, orders: int, suspect_refunds: int) -> None:
        """Store (or replace) one period of the marketplace refund feed."""
        ...

    def refund_feed(self, program_id: str) -> list[dict[str, Any]]: ...


class RoundRepository(Protocol):
    def put_round(self, rnd: Round) -> None: ...
    def get_round(self, program_id: str, round_id: str) -> Round: ...
    def list_rounds(self, program_id: str) -> list[Round]: ...
    def update_round(self, program_id: str, round_id: str, fields: Mapping[str, Any]) -> None: ...
    def arm_round(self, program_id: str, round_id: str, token: str) -> Round:
        """Store the token the round waits on; return the round as it is now (settled count included)."""
        ...

    def round_token(self, program_id: str, round_id: str) -> str | None: ...


class OrderRepository(Protocol):
    """Orders and what hangs off them. Every status change is one typed method per intent; its write is conditional
    on the from-statuses of ``chalicelib.domain.lifecycle`` (``InvalidState`` otherwise). Applying the same intent to
    an order already in its target status returns the order unchanged (a retried task). Index keys (round listing,
    lab queue) are the adapter's business."""

    def put_orders(self, orders: Sequence[Order]) -> None:
        """Insert sampled orders; an order that already exists is left as it is (idempotent sampling)."""
        ...

    def get_order(self, order_id: str) -> Order: ...
    def list_round_orders(self, round_id: str) -> list[Order]: ...
    def lab_queue(self, lab_id: str) -> list[Order]: ...

    # -- lifecycle intents (status changes) --
    def mark_reserved(self, order_id: str, at: datetime) -> Order: ...
    def mark_skipped_budget(self, order_id: str, at: datetime) -> Order: ...
    def record_place_intent(self, order_id: str, at: datetime) -> Order:
        """RESERVED -> PLACING, before the marketplace is called (the order id is its idempotency key)."""
        ...

    def mark_placed(self, order_id: str, marketplace_order_id: str, price: int, at: datetime) -> Order: ...
    def mark_refused(self, order_id: str, at: datetime) -> Order: ...
    def mark_delivered(self, order_id: str, delivered_at: datetime, at: datetime) -> Order: ...
    def mark_at_lab(self, order_id: str, lab_id: str, at: datetime) -> Order:
        """Forwarded to ``lab_id``: the order joins that lab's queue."""
        ...

    def mark_verdict(self, order_id: str, verdict: VerdictKind, at: datetime, *, attempt: int | None = None) -> Order:
        """The verdict is in: the order leaves the lab's queue. With ``attempt``: only while the sample is at that lab
        attempt (a verdict of a lab the sample was taken from never moves it)."""
        ...

    # --- retest (issue 10 item 1)
    def reassign_lab(
        self, order_id: str, event: OrderEvent, from_attempt: int, to_lab: str, reason: str, at: datetime
    ) -> Order:
        """RETEST (VERDICT -> AT_LAB) or REASSIGN (AT_LAB -> AT_LAB): the sample goes from lab attempt
        ``from_attempt`` to ``to_lab`` (attempt + 1), which takes it into its queue; conditional on the status AND the
        attempt. Already done (the order is at attempt + 1 with ``to_lab``): returns it unchanged (a retry). Anything
        else: ``InvalidState``."""
        ...

    def record_lab_overdue(self, order_id: str, attempt: int, at: datetime) -> Order:
        """The lab of ``attempt`` missed its deadline and no lab is left (a fact; idempotent)."""
        ...

    def list_verdicts(self, order_id: str) -> list[Verdict]:
        """Every lab attempt's verdict, by attempt."""
        ...

    def create_second_unit(self, parent_order_id: str, unit: Order) -> tuple[Order, bool]:
        """Second unit (retest mode ``second_unit``): store ``unit`` (a new sampled-status order bought again for
        the parent's inconclusive sample), set the parent's ``second_unit_order_id`` and count the unit on its round
        (``Round.second_units``: the round waits for it), all at once and once. The unit already stored (a retry):
        (it, False). The parent linked to another unit: ``InvalidState``."""
        ...

    # --- end retest

    def mark_settled(self, order_id: str, at: datetime) -> Order:
        """The price is captured on the ledger."""
        ...

    def record_cancel_intent(self, order_id: str, failure: str, at: datetime) -> Order:
        """Compensation starts: remember why; the marketplace is asked to cancel next (if it holds the order)."""
        ...

    def mark_failed(self, order_id: str, failure: str, at: datetime, *, delivery: bool = False) -> Order:
        """The money is released (``delivery``: because the parcel never came)."""
        ...

    def mark_needs_reconciliation(self, order_id: str, reason: str, at: datetime) -> Order:
        """Compensation could not finish: the hold is kept and an alert raised; the sweeper retries."""
        ...

    # -- facts that do not move the status --
    def set_persona(self, order_id: str, persona_id: str, at: datetime) -> Order:
        """Assign the persona once (a different persona for an order that has one is ``InvalidState``)."""
        ...

    def record_marketplace_order(self, order_id: str, marketplace_order_id: str, price: int, at: datetime) -> Order:
        """What the marketplace says it holds for this order (found after a lost reply)."""
        ...

    def record_refund(self, order_id: str, refunded: int, at: datetime) -> Order: ...
    def record_recommendations(self, order_id: str, recommendations: list[dict[str, Any]], at: datetime) -> Order: ...
    def record_service_quality(self, order_id: str, score: float, detail: Mapping[str, Any], at: datetime) -> Order: ...

    # -- wait points --
    def arm(self, order_id: str, point: str, token: str) -> Mapping[str, Any] | None:
        """Store a task token for wait point ``point``; return the arrival payload if it already arrived."""
        ...

    def arrive(self, order_id: str, point: str, payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
        """Record the arrival for ``point`` (first write wins); return (the arrival now stored, the armed token)."""
        ...

    def finalize(self, order_id: str, program_id: str, round_id: str) -> Round:
        """Mark the order finalized and count it as settled on its round, once; return the round."""
        ...

    def put_verdict(self, verdict: Verdict) -> tuple[Verdict, bool]:
        """Store the verdict of its lab attempt once (one conditional write); return (the verdict now stored for that
        attempt, whether this call created it)."""
        ...

    def get_verdict(self, order_id: str, attempt: int | None = None) -> Verdict | None:
        """The verdict of lab attempt ``attempt``; without it, the order's verdict: the latest attempt's (the
        conclusive one when a lab concluded)."""
        ...

    def record_confirmed(self, seller_id: str, order_id: str, at: datetime) -> None: ...
    def confirmed_history(self, seller_id: str) -> list[datetime]: ...


# --- custody (issue 8 item 5) -------------------------------------------------------------------------------------
class CustodyRepository(Protocol):
    def append(self, entry: CustodyEntry) -> Anchor:
        """Atomically store the entry at ``entry.seq`` and move the order's anchor from (``entry.seq``,
        ``entry.prev_mac``) to (``entry.seq + 1``, ``entry.mac``); return the new anchor. Raise ``Conflict`` if the
        sequence number is taken or the anchor moved (a concurrent append), ``NotFound`` for an unknown order."""
        ...

    def chain(self, order_id: str) -> list[CustodyEntry]:
        """The stored entries in sequence order (as stored: verification is the domain's job)."""
        ...

    def snapshot(self, order_id: str) -> tuple[list[CustodyEntry], Anchor | None]:
        """The entries and the order's anchor read as one consistent state (``None``: the order has no anchor)."""
        ...


class CustodyKey(Protocol):
    """The key that seals custody entries (KMS HMAC key in AWS, a per-stack key locally); the table's writers never
    hold it. Key ids are versions: new entries use the current one, entries under a trusted older one still verify."""

    def current_key_id(self) -> str: ...
    def mac(self, key_id: str, message: bytes) -> str:
        """HMAC-SHA256 of ``message`` under ``key_id``, hex."""
        ...

    def verify(self, key_id: str, message: bytes, mac: str) -> bool:
        """True only if ``mac`` is the MAC of ``message`` under the trusted key ``key_id``."""
        ...

    def trusts(self, key_id: str) -> bool: ...


# --- end custody ---------------------------------------------------------------------------------------------------


class PersonaRepository(Protocol):
    def ensure_pool(self, program_id: str, size: int) -> None: ...
    def states(self, program_id: str, seller_id: str) -> list[PersonaState]: ...
    def claim(
        self,
        program_id: str,
        persona_id: str,
        seller_id: str,
        order_id: str,
        now: datetime,
        policy: PersonaPolicy,
    ) -> bool:
        """Atomically record the purchase if the persona is still eligible; False if it lost a race."""
        ...

    def record_refusal(self, program_id: str, persona_id: str, retire_after: int) -> None: ...
    def account_ref(self, program_id: str, persona_id: str) -> str:
        """The opaque account reference the marketplace sees for this persona (random, stored with the persona,
        the same on every call): never the persona id, which would link a programme's buys."""
        ...

    def persona_secret(self, program_id: str, persona_id: str) -> dict[str, Any]:
        """Account, drop point and payment reference: only ever shown to the admin role."""
        ...


@dataclass(frozen=True)
class LedgerResult:
    """``amount`` is what the operation booked (for a replay: what the first call booked); ``balance`` is the
    programme's balance read right after the call (for a replay: as it is now, not as it was then)."""

    key: str
    op: str
    amount: int
    balance: Balance
    replayed: bool = False


class Ledger(Protocol):
    """Two-phase budget ledger (DESIGN.md section 7). Every operation is keyed by (subject, operation): repeating it
    with the same arguments returns the first result (``replayed=True``), with other arguments raises
    ``IdempotencyConflict``. Amounts are ints in ``1..MAX_MINOR_UNITS`` (else ``InvalidInput``); a currency other than
    the programme's raises ``CurrencyMismatch``; an unknown programme or order ``NotFound``; capture after release,
    release after capture ``InvalidState``; a reservation that would overdraw ``InsufficientFunds``. A failed call
    changes nothing."""

    def open_account(self, program_id: str, currency: str, per_order_cap: int | None) -> None:
        """Idempotent; reopening with another currency or cap is refused."""
        ...

    def fund(self, program_id: str, reference: str, amount: int, currency: str) -> LedgerResult: ...
    def reserve(
        self, program_id: str, order_id: str, amount: int, currency: str, attributes: Mapping[str, Any]
    ) -> LedgerResult:
        """Hold ``amount`` for the order; ``attributes`` (round_id, category, seller_id) feed the spend reports."""
        ...

    def capture(self, program_id: str, order_id: str, actual: int, currency: str) -> LedgerResult:
        """Post ``actual`` and return the unused reservation; above the reservation only up to the per-order cap."""
        ...

    def release(self, program_id: str, order_id: str) -> LedgerResult: ...
    def recover(self, program_id: str, order_id: str, amount: int, currency: str) -> LedgerResult:
        """Book a refund of at most the captured amount."""
        ...

    def balance(self, program_id: str) -> Balance: ...
    def journal(self, program_id: str) -> list[JournalEntry]: ...
    def threshold_marked(self, program_id: str, threshold: float) -> bool:
        """Whether ``threshold``'s event was already published (``mark_threshold`` was called)."""
        ...

    def mark_threshold(self, program_id: str, threshold: float) -> bool:
        """Record that ``threshold``'s event was published; True only the first time. Call after publishing."""
        ...

    def holds(self, program_id: str, state: str | None = None) -> list[dict[str, Any]]:
        """Reservation records, each with ``order_id``, ``state``, ``amount``, ``reserved_at`` (ISO-8601 UTC)."""
        ...

    def list_accounts(self) -> list[str]:
        """Every programme id with a ledger account (for scheduled jobs such as the sweeper)."""
        ...


class EventPublisher(Protocol):
    def publish(self, events: Sequence[Envelope]) -> None:
        """Publish in batches of at most 10; raise if any entry failed."""
        ...


class Workflow(Protocol):
    def start(self, machine: str, name: str, payload: Mapping[str, Any]) -> str:
        """Start a named execution of ``machine`` ('round' or 'order'); idempotent on the name. Returns its ARN."""
        ...

    def succeed(self, token: str, output: Mapping[str, Any]) -> None:
        """Resume a waiting task; a token that is no longer waiting (already resumed, timed out) is ignored."""
        ...

    def fail(self, token: str, error: str, cause: str) -> None: ...
    def is_running(self, machine: str, name: str) -> bool:
        """Whether the named execution is still running (False when it ended or never existed)."""
        ...


@dataclass(frozen=True)
class PlacedOrder:
    marketplace_order_id: str
    price: int


@dataclass(frozen=True)
class MarketOrder:
    """What the marketplace holds for one of our order ids: ``status`` is ``placed`` (live), ``delivered`` or
    ``cancelled``."""

    marketplace_order_id: str
    price: int
    status: str

    @property
    def live(self) -> bool:
        return self.status == "placed"

    @property
    def delivered(self) -> bool:
        return self.status == "delivered"


class Marketplace(Protocol):
    def place_order(
        self, order_id: str, seller_id: str, account_ref: str, max_price: int, currency: str
    ) -> PlacedOrder:
        """Idempotent on ``order_id``; the marketplace refuses a price above ``max_price``. Raise
        ``MarketplaceUnavailable`` (retryable) or ``OrderRefused``."""
        ...

    def find_order(self, order_id: str) -> MarketOrder | None:
        """Look an order up by our order id (the idempotency key); None if the marketplace never took it."""
        ...

    def cancel_order(self, marketplace_order_id: str) -> None:
        """Ask for cancellation; an order already delivered is not cancelled (``OrderRefused``); look it up after."""
        ...

    def request_refund(self, marketplace_order_id: str, amount: int, reason: str) -> int:
        """Return the amount the marketplace refunded (minor units)."""
        ...


class EvidenceStore(Protocol):
    def put_bytes(self, data: bytes) -> str:
        """Store by content hash; return the SHA-256 hex."""
        ...

    def put_json(self, key: str, payload: Any) -> tuple[str, str]:
        """Write a JSON document; return (bucket, key)."""
        ...

    # --- evidence (issue 10 items 0 and 5): read evidence back by hash, store and hand out evidence packages
    def exists(self, digest: str) -> bool:
        """Whether an evidence file with this SHA-256 is stored."""
        ...

    def get_bytes(self, digest: str) -> bytes | None:
        """The evidence file stored under this SHA-256, or None."""
        ...

    def put_package(self, manifest_sha256: str, data: bytes) -> str:
        """Store an evidence package (a zip) under its manifest's SHA-256; return its key (idempotent)."""
        ...

    def package_url(self, key: str, expires_seconds: int) -> str:
        """A pre-signed GET URL of a stored package."""
        ...

    # --- end evidence


# --- evidence (issue 10 item 5) -----------------------------------------------------------------------------------
class ManifestSigner(Protocol):
    """Signs evidence-package manifests with an asymmetric key whose private half never leaves its keeper (KMS in
    AWS: ECC_NIST_P256, ECDSA_SHA_256). Anyone holding the public key verifies a package offline."""

    def key_id(self) -> str: ...
    def algorithm(self) -> str:
        """The signing algorithm's name, e.g. ``ECDSA_SHA_256``."""
        ...

    def sign(self, message: bytes) -> bytes:
        """The signature (DER for ECDSA) of ``message`` (at most 4,096 bytes, KMS's RAW limit)."""
        ...

    def public_key_der(self) -> bytes:
        """The public key, DER SubjectPublicKeyInfo."""
        ...


# --- end evidence


class Metrics(Protocol):
    def add(self, name: str, value: float, unit: str, dimensions: Mapping[str, str] | None = None) -> None: ...
    def flush(self) -> None: ...


class WebhookReceipts(Protocol):
    """Durable, expiring record of the webhook ids received (Standard Webhooks ``webhook-id``), for deduplication."""

    def claim(self, webhook_id: str, now: datetime, lease_seconds: int, keep_seconds: int) -> str:
        """``"claimed"``: this caller processes the webhook (first arrival, or a claim whose lease ran out);
        ``"done"``: it was processed before (a replay); ``"busy"``: another arrival is processing it now."""
        ...

    def complete(self, webhook_id: str) -> None: ...

    def release(self, webhook_id: str) -> None:
        """Give up a claim (processing failed) so that the sender's retry is processed."""
        ...


# ------------------------------------------------------------------ rings and leads (issue 10 items 3 and 4)


class RingRepository(Protocol):
    """The programme's fingerprint index (fingerprint -> sellers, seller -> fingerprints) and its rings. Fingerprints
    only accumulate: a re-import adds, never removes (an identity once shared stays evidence)."""

    def add_fingerprints(self, program_id: str, seller_id: str, fingerprints: Sequence[tuple[str, str]]) -> None: ...
    def fingerprints_of(self, program_id: str, seller_id: str) -> list[tuple[str, str]]: ...
    def holders(self, program_id: str, kind: str, digest: str, limit: int) -> list[str]:
        """Sellers holding the fingerprint, at most ``limit`` of them (sorted)."""
        ...

    def ring_of(self, program_id: str, seller_id: str) -> str | None: ...
    def set_ring_of(self, program_id: str, seller_ids: Sequence[str], ring_id: str) -> None: ...
    def get_ring(self, program_id: str, ring_id: str) -> Any: ...
    def save_ring(self, ring: Any, expected_version: int | None) -> bool:
        """Write the ring if its stored version is ``expected_version`` (None: it must not exist); False otherwise."""
        ...

    def list_rings(self, program_id: str) -> list[Any]: ...


class LeadRepository(Protocol):
    """The marketplace sales feed, the per-programme test-buy outcomes per seller (for the estimator), and leads."""

    def put_sales(self, program_id: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Store rows (seller_id, period, units, orders, gross_sales); per ``seller|period``: new, replaced or
        unchanged."""
        ...

    def sales_of(self, program_id: str, seller_id: str) -> dict[str, int]:
        """Gross sales (minor units) by period."""
        ...

    def record_testbuy(self, program_id: str, seller_id: str, order_id: str, verdict: str, at: datetime) -> None: ...
    def testbuys_of(self, program_id: str, seller_id: str) -> list[dict[str, Any]]:
        """``{order_id, verdict, at}`` of the seller's test buys with a verdict in this programme."""
        ...

    def create_lead(self, lead: Any) -> tuple[Any, bool]:
        """Insert the lead unless its id exists; the stored lead and whether it was created."""
        ...

    def get_lead(self, program_id: str, lead_id: str) -> Any:
        """Raise ``NotFound`` for an unknown lead."""
        ...

    def list_leads(self, program_id: str) -> list[Any]: ...
    def update_lead_status(
        self, program_id: str, lead_id: str, from_status: str, to_status: str, entry: Mapping[str, Any], at: datetime
    ) -> Any:
        """Move the lead (conditional on ``from_status``: ``InvalidState`` when it moved meanwhile) and append
        ``entry`` to its history."""
        ...

    def set_package(self, program_id: str, lead_id: str, package_sha256: str) -> Any: ...


# --- appeals (issue 10 item 2) -------------------------------------------------------------------------------------
class AppealRepository(Protocol):
    """Appeals, their re-test verdicts and wait point, and the corrections an overturn makes. Status changes are
    conditional on the from-statuses of ``chalicelib.domain.appeals`` (``InvalidState`` otherwise); applying an event
    to an appeal already in its target status returns it unchanged (a retried task)."""

    def create(self, appeal: Appeal) -> tuple[Appeal, bool]:
        """Store the appeal once (one conditional write on its id); return (the appeal now stored, created)."""
        ...

    def get(self, appeal_id: str) -> Appeal:
        """Raise ``NotFound`` for an unknown id."""
        ...

    def list_program(self, program_id: str) -> list[Appeal]: ...
    def lab_queue(self, lab_id: str) -> list[Appeal]:
        """Appeals whose re-test waits for this lab's verdict."""
        ...

    def apply(
        self, appeal_id: str, event: AppealEvent, at: datetime, fields: Mapping[str, Any] | None = None
    ) -> Appeal:
        """Apply a status event (``assign_retest`` joins the re-test lab's queue, every other event leaves it)."""
        ...

    def arm(self, appeal_id: str, token: str) -> Mapping[str, Any] | None:
        """Store the task token of the waiting execution; return the re-test arrival if it already came."""
        ...

    def arrive(self, appeal_id: str, payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], str | None]:
        """Record the re-test arrival (first write wins); return (the arrival now stored, the armed token)."""
        ...

    def put_retest_verdict(self, verdict: RetestVerdict) -> tuple[RetestVerdict, bool]:
        """Store the re-test verdict once; return (the verdict now stored, created)."""
        ...

    def get_retest_verdict(self, appeal_id: str) -> RetestVerdict | None: ...
    def overturn_order(
        self, order_id: str, appeal_id: str, original: VerdictKind, effective: VerdictKind, at: datetime
    ) -> Order:
        """Make ``effective`` the order's verdict, keeping ``original`` and the appeal id on the order (the lab's
        verdict record itself is never rewritten). Conditional: the order's verdict is still ``original`` or was
        already overturned by this appeal."""
        ...

    def rescind_confirmed(self, seller_id: str, order_id: str, appeal_id: str, at: datetime) -> None:
        """Mark the seller's confirmed-counterfeit entry of this order rescinded (kept, no longer counted)."""
        ...


# --- end appeals ---------------------------------------------------------------------------------------------------
