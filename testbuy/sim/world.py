"""A seeded simulated marketplace population with ground truth.

Each seller either sells fakes or not (the truth the programme tries to estimate). The platform's signals about
a seller are noisy and only partly informative, like a real risk model's inputs; some are missing. Delivery delays,
lost parcels, refusals (a seller spotting the buyer) and service quality are drawn per seller.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = {
    # category: (share of sellers, share selling fakes, mean order cost in minor units)
    "luxury_bags": (0.12, 0.10, 160_000),
    "sneakers": (0.18, 0.07, 90_000),
    "cosmetics": (0.22, 0.04, 25_000),
    "electronics": (0.20, 0.03, 60_000),
    "toys": (0.16, 0.02, 12_000),
    "apparel": (0.12, 0.03, 20_000),
}


@dataclass(frozen=True)
class SimSeller:
    seller_id: str
    category: str
    expected_cost: int
    sells_fakes: bool
    signals: dict[str, Any]
    linked_sellers: tuple[str, ...]
    delivery_days: int
    service: tuple[int, int, int]  # packaging, description accuracy, communication (1..5)
    loses_parcel: bool
    refuses: bool
    # issue 10 (off by default): fingerprint hashes the platform knows, and monthly gross sales for the sales feed
    fingerprints: tuple[tuple[str, str], ...] = ()
    monthly_sales: int = 0  # minor units
    risk: float | None = None  # a risk the platform already gives (the planted ring and counterfeiter)


@dataclass
class World:
    seed: int
    sellers: list[SimSeller] = field(default_factory=list)
    known_ring: tuple[str, ...] = ()  # issue 10: a planted ring sharing payment and device fingerprints
    large_counterfeiter: str | None = None  # issue 10: a counterfeiter with large sales in the feed

    @property
    def by_id(self) -> dict[str, SimSeller]:
        return {s.seller_id: s for s in self.sellers}

    @property
    def true_prevalence(self) -> float:
        return sum(s.sells_fakes for s in self.sellers) / len(self.sellers)

    def import_payload(self) -> list[dict[str, Any]]:
        """What the platform knows: signals, never the truth (fingerprints and a given risk only when planted)."""
        out = []
        for s in self.sellers:
            row: dict[str, Any] = {
                "seller_id": s.seller_id,
                "category": s.category,
                "expected_cost": s.expected_cost,
                "signals": s.signals,
                "linked_sellers": list(s.linked_sellers),
            }
            if s.fingerprints:
                fps: dict[str, list[str]] = {}
                for kind, digest in s.fingerprints:
                    fps.setdefault(kind, []).append(digest)
                row["fingerprints"] = fps
            if s.risk is not None:
                row["risk"] = s.risk
            out.append(row)
        return out

    def sales_feed(self, periods: list[str], currency: str) -> dict[str, Any]:
        """The marketplace's sales feed (``POST /programs/{id}/sales-feed``) for the sellers with planted sales."""
        rows = [
            {
                "seller_id": s.seller_id,
                "period": p,
                "units": max(1, s.monthly_sales // max(s.expected_cost, 1)),
                "orders": max(1, s.monthly_sales // max(s.expected_cost, 1)),
                "gross_sales": s.monthly_sales,
            }
            for s in self.sellers
            if s.monthly_sales > 0
            for p in periods
        ]
        return {"currency": currency, "rows": rows}


def _beta(rng: random.Random, mean: float, strength: float) -> float:
    return rng.betavariate(max(mean * strength, 1e-3), max((1 - mean) * strength, 1e-3))


def generate(
    n_sellers: int,
    seed: int,
    *,
    lost_rate: float = 0.02,
    refuse_rate: float = 0.01,
    known_ring: int = 0,
    large_counterfeiter: bool = False,
) -> World:
    """The seeded population. ``known_ring`` (issue 10; 0 = off) plants a ring of that many storefronts sharing a
    payment account (in pairs) and a device (chained), all selling fakes, never refusing or losing a parcel, given a
    high risk; ``large_counterfeiter`` plants one more seller of fakes with large monthly sales. Both are chosen with
    their own generator after the population is drawn, so the default population is unchanged."""
    rng = random.Random(seed)
    cats = list(CATEGORIES)
    weights = [CATEGORIES[c][0] for c in cats]
    world = World(seed=seed)
    for i in range(n_sellers):
        cat = rng.choices(cats, weights)[0]
        _, fake_share, mean_cost = CATEGORIES[cat]
        fake = rng.random() < fake_share
        cost = max(1_000, int(rng.lognormvariate(math.log(mean_cost), 0.35)))

        def maybe(value: Any, p_missing: float = 0.1) -> Any:
            return None if rng.random() < p_missing else value

        signals = {
            "identity_verified": maybe(rng.random() < (0.6 if fake else 0.85)),
            "credibility": maybe(round(_beta(rng, 0.55 if fake else 0.7, 8), 4)),
            "policy_compliance": maybe(round(_beta(rng, 0.75 if fake else 0.85, 10), 4)),
            "penalty_count": maybe(int(rng.expovariate(1 / (1.1 if fake else 0.5)))),
            "positive_behaviour": maybe(round(_beta(rng, 0.5 if fake else 0.6, 6), 4)),
            "collaboration": maybe(round(_beta(rng, 0.5 if fake else 0.6, 6), 4)),
            "complaint_rate": maybe(round(_beta(rng, 0.04 if fake else 0.02, 60), 5)),
            "refund_rate": maybe(round(_beta(rng, 0.03 if fake else 0.015, 60), 5)),
            "price_anomaly": maybe(round(rng.gauss(-1.0 if fake else 0.0, 1.0), 3)),
            "account_age_days": maybe(int(rng.expovariate(1 / (350 if fake else 900)))),
            "linked_accounts": maybe(int(rng.expovariate(1 / (1.2 if fake else 0.4)))),
        }
        world.sellers.append(
            SimSeller(
                seller_id=f"sel-{i:06d}",
                category=cat,
                expected_cost=cost,
                sells_fakes=fake,
                signals=signals,
                linked_sellers=(),
                delivery_days=max(1, int(rng.gauss(5, 2.5))),
                service=(rng.randint(2, 5), rng.randint(1 if fake else 3, 5), rng.randint(2, 5)),
                loses_parcel=rng.random() < lost_rate,
                refuses=rng.random() < refuse_rate,
            )
        )
    # Rings: some fake sellers run linked storefronts.
    fakes = [s for s in world.sellers if s.sells_fakes]
    rng.shuffle(fakes)
    by_id = {s.seller_id: idx for idx, s in enumerate(world.sellers)}
    for a, b in zip(fakes[0:20:2], fakes[1:20:2], strict=False):
        ia, ib = by_id[a.seller_id], by_id[b.seller_id]
        world.sellers[ia] = _with_links(world.sellers[ia], (b.seller_id,))
        world.sellers[ib] = _with_links(world.sellers[ib], (a.seller_id,))
    if known_ring or large_counterfeiter:
        _plant(world, seed, known_ring, large_counterfeiter)
    return world


RING_MONTHLY_SALES = 3_000_000  # minor units per ring storefront and month
LARGE_MONTHLY_SALES = 25_000_000  # the large counterfeiter's, above the default lead threshold on its own


def _plant(world: World, seed: int, ring_size: int, large: bool) -> None:
    from dataclasses import replace

    rng = random.Random(f"{seed}|issue10")  # nosec B311 # a simulation
    linked = {s.seller_id for s in world.sellers if s.linked_sellers}
    free = [i for i, s in enumerate(world.sellers) if s.seller_id not in linked]
    picked = rng.sample(free, min(len(free), ring_size + (1 if large else 0)))

    def fp(kind: str, name: str) -> tuple[str, str]:
        return kind, hashlib.sha256(f"sim|{seed}|{kind}|{name}".encode()).hexdigest()

    ring_idx = picked[:ring_size]
    for k, i in enumerate(ring_idx):
        fps = {fp("payment_account", f"iban-{k // 2}"), fp("device", f"dev-{k}")}
        if k > 0:
            fps.add(fp("device", f"dev-{k - 1}"))  # a chain: each storefront shares a device with the previous one
        world.sellers[i] = replace(
            world.sellers[i],
            sells_fakes=True,
            refuses=False,
            loses_parcel=False,
            fingerprints=tuple(sorted(fps)),
            monthly_sales=RING_MONTHLY_SALES,
            risk=0.9,
        )
    world.known_ring = tuple(sorted(world.sellers[i].seller_id for i in ring_idx))
    if large and len(picked) > ring_size:
        i = picked[ring_size]
        world.sellers[i] = replace(
            world.sellers[i],
            sells_fakes=True,
            refuses=False,
            loses_parcel=False,
            fingerprints=(fp("identity_document", "big"),),
            monthly_sales=LARGE_MONTHLY_SALES,
            risk=0.9,
        )
        world.large_counterfeiter = world.sellers[i].seller_id


def _with_links(s: SimSeller, links: tuple[str, ...]) -> SimSeller:
    from dataclasses import replace

    return replace(s, linked_sellers=links)


def synth_seller(seed: int, seller_id: str, expected_cost: int, category: str | None = None) -> SimSeller:
    """A seller the world did not generate (imported by a user of ``testbuy serve``): its truth and behaviour drawn
    from a generator keyed on (seed, seller id), so the same seller behaves the same in every run and whatever
    order requests arrive in. Signals are not drawn: the platform's data about it is whatever the user imported."""
    rng = random.Random(hashlib.sha256(f"{seed}|seller|{seller_id}".encode()).hexdigest())
    cats = list(CATEGORIES)
    cat = category if category in CATEGORIES else rng.choices(cats, [CATEGORIES[c][0] for c in cats])[0]
    fake = rng.random() < CATEGORIES[cat][1]
    return SimSeller(
        seller_id=seller_id,
        category=cat,
        expected_cost=max(1, expected_cost),
        sells_fakes=fake,
        signals={},
        linked_sellers=(),
        delivery_days=max(1, int(rng.gauss(5, 2.5))),
        service=(rng.randint(2, 5), rng.randint(1 if fake else 3, 5), rng.randint(2, 5)),
        loses_parcel=rng.random() < 0.02,
        refuses=rng.random() < 0.01,
    )
