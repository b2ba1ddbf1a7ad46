"""The simulators around a local stack, wired once for `testbuy demo` and `testbuy serve`: the simulated
marketplace (orders over HTTP, signed Standard Webhooks deliveries to the API) and the simulated labs (poll their
queue over the API, post custody, service quality and a verdict).

Every decision a simulator makes is keyed on (seed, order id) or (seed, seller id), never on arrival order or the
clock, so that timing changes wall time only (see ``docs/decisions.md``, "A reproducible demo").
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any

from chalicelib.api.auth import Role, issue_token
from testbuy.localstack import StackInfo, free_port
from testbuy.sim.lab import LabSim
from testbuy.sim.marketplace import MarketplaceSim
from testbuy.sim.world import World, generate

DEFAULT_LABS = ("lab-east", "lab-west")


@dataclass(frozen=True)
class SimOptions:
    seed: int = 42
    sellers: int = 2500
    marketplace: bool = True
    labs: tuple[str, ...] = DEFAULT_LABS  # the lab ids simulated; () for none (verdicts posted by hand)
    accept_unknown_sellers: bool = False  # serve: a user's own sellers get a seeded behaviour
    seconds_per_day: float = 0.2  # marketplace delivery delay per simulated day (wall time only)
    lab_poll_seconds: float = 0.3
    lab_think_seconds: float = 0.0  # wall time only
    lab_shuffle_queue: bool = False  # wall time only
    # --- retest knobs (issue 10 item 1): inconclusive rates, and labs that answer late (lab id, seconds after they
    # first see a sample; float("inf"): never). A late lab makes the clock decide (its samples are re-assigned after
    # the programme's verdict_seconds): the one simulator choice that is not keyed on (seed, order id).
    lab_inconclusive_rate: float = 0.03
    lab_retest_inconclusive_rate: float | None = None
    slow_labs: tuple[tuple[str, float], ...] = ()


def blind_truth(seed: int) -> Any:
    """What a simulated lab finds when no simulated marketplace knows the parcel (a real marketplace behind
    ``--marketplace-url``): counterfeit with probability 5%, keyed on (seed, order id)."""

    def truth(order_id: str) -> tuple[bool, tuple[int, int, int], int]:
        rng = random.Random(hashlib.sha256(f"{seed}|blind|{order_id}".encode()).hexdigest())  # nosec B311
        return rng.random() < 0.05, (rng.randint(2, 5), rng.randint(2, 5), rng.randint(2, 5)), rng.randint(1, 9)

    return truth


@dataclass
class Simulators:
    """Create before the stack (the marketplace port must be known up front: an isolated stack passes its URL to
    the child process), ``start(info)`` once the stack is up, ``stop()`` at the end."""

    options: SimOptions
    world: World | None = None
    market: MarketplaceSim | None = None
    labs: list[LabSim] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._port = free_port() if self.options.marketplace else 0
        if self.world is None:
            self.world = generate(self.options.sellers, self.options.seed)

    @property
    def marketplace_url(self) -> str | None:
        """Where the simulated marketplace will listen (None when it is off)."""
        return f"http://127.0.0.1:{self._port}" if self.options.marketplace else None

    def start(self, info: StackInfo) -> None:
        o = self.options
        assert self.world is not None  # nosec B101 # set in __post_init__
        if o.marketplace:
            self.market = MarketplaceSim(
                world=self.world,
                api_url=info.api_url,
                webhook_secret=info.webhook_secret,
                seed=o.seed,
                seconds_per_day=o.seconds_per_day,
                accept_unknown_sellers=o.accept_unknown_sellers,
            )
            self.market.start(self._port)
        truth = self.market.item_truth if self.market else blind_truth(o.seed)
        self.labs = [
            LabSim(
                api_url=info.api_url,
                lab_id=lab,
                token=issue_token(info.token_secret, Role.LAB, f"tech@{lab}", lab),
                truth=truth,
                seed=o.seed,
                poll_seconds=o.lab_poll_seconds,
                think_seconds=o.lab_think_seconds,
                shuffle_queue=o.lab_shuffle_queue,
                inconclusive_rate=o.lab_inconclusive_rate,
                retest_inconclusive_rate=o.lab_retest_inconclusive_rate,
                answer_after_seconds=min(dict(o.slow_labs).get(lab, 0.0), 1e9),
                never_answers=dict(o.slow_labs).get(lab, 0.0) == float("inf"),
            )
            for lab in o.labs
        ]
        for lab in self.labs:
            lab.start()

    def stop_labs(self) -> None:
        for lab in self.labs:
            lab.stop()

    def stop(self) -> None:
        self.stop_labs()
        if self.market:
            self.market.stop()

    @property
    def lab_errors(self) -> int:
        return sum(len(lab.errors) for lab in self.labs)
