"""What every service function receives: the ports, already wired (by ``bootstrap`` in Lambda, by fakes in tests)."""

from __future__ import annotations

from dataclasses import dataclass, field

from chalicelib.domain.enforcement import PolicyConfig
from chalicelib.domain.personas import PersonaPolicy
from chalicelib.ports import (
    AppealRepository,
    Clock,
    CustodyKey,
    CustodyRepository,
    EventPublisher,
    EvidenceStore,
    IdGenerator,
    LeadRepository,
    Ledger,
    ManifestSigner,
    Marketplace,
    Metrics,
    OrderRepository,
    PersonaRepository,
    ProgramRepository,
    RingRepository,
    RoundRepository,
    WebhookReceipts,
    Workflow,
)


@dataclass
class Deps:
    clock: Clock
    ids: IdGenerator
    programs: ProgramRepository
    rounds: RoundRepository
    orders: OrderRepository
    custody: CustodyRepository
    personas: PersonaRepository
    ledger: Ledger
    events: EventPublisher
    workflow: Workflow
    marketplace: Marketplace
    evidence: EvidenceStore
    metrics: Metrics
    persona_policy: PersonaPolicy = field(default_factory=PersonaPolicy)
    enforcement_policy: PolicyConfig = field(default_factory=PolicyConfig)
    persona_pool_size: int = 40
    budget_thresholds: tuple[float, ...] = (0.5, 0.8, 1.0)
    # custody (issue 8 item 5): seals custody entries; None fails closed at the first custody write or read
    custody_key: CustodyKey | None = None
    webhook_receipts: WebhookReceipts | None = None  # the API's webhook route needs it; the tasks do not
    # rings and leads (issue 10 items 3 and 4); None: no ring detection, no leads (the enforcement policy still runs)
    rings: RingRepository | None = None
    leads: LeadRepository | None = None
    appeals: AppealRepository | None = None  # appeals (issue 10 item 2); None: appeals are not wired
    # evidence (issue 10 item 5): signs evidence-package manifests; None: exporting a package fails closed
    manifest_signer: ManifestSigner | None = None
