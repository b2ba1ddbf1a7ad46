"""Stealth personas: who buys, so that sellers cannot spot the test buyer.

Rules (all enforced atomically by the persona repository, chosen here):
- a persona never buys twice from the same seller within ``cooldown``;
- at most ``weekly_cap`` orders per persona per ISO week;
- a persona is retired once sellers refuse or cancel its orders ``retire_after_refusals`` times;
- order times are jittered so that a round's orders do not arrive as one burst;
- persona details (account, drop point, payment reference) stay behind ``persona_id``: no event or log carries them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class PersonaPolicy:
    cooldown: timedelta = timedelta(days=90)
    weekly_cap: int = 5
    retire_after_refusals: int = 2
    max_jitter: timedelta = timedelta(hours=36)


@dataclass(frozen=True)
class PersonaState:
    persona_id: str
    week: str  # ISO year-week the count belongs to, e.g. "2026-W48"
    week_count: int
    refusals: int
    retired: bool
    last_bought_from_seller: datetime | None


def iso_week(at: datetime) -> str:
    year, week, _ = at.isocalendar()
    return f"{year}-W{week:02d}"


def eligible(state: PersonaState, now: datetime, policy: PersonaPolicy) -> bool:
    if state.retired or state.refusals >= policy.retire_after_refusals:
        return False
    count = state.week_count if state.week == iso_week(now) else 0
    if count >= policy.weekly_cap:
        return False
    return state.last_bought_from_seller is None or now - state.last_bought_from_seller >= policy.cooldown


def rank_candidates(
    states: Sequence[PersonaState], now: datetime, policy: PersonaPolicy, rng: random.Random
) -> list[str]:
    """Eligible personas, least exposed this week first, ties shuffled so no persona becomes a pattern."""
    ok = [s for s in states if eligible(s, now, policy)]
    rng.shuffle(ok)
    ok.sort(key=lambda s: s.week_count if s.week == iso_week(now) else 0)
    return [s.persona_id for s in ok]


def jitter(rng: random.Random, policy: PersonaPolicy) -> timedelta:
    """A random delay before the order is placed (seconds resolution)."""
    return timedelta(seconds=rng.randint(0, int(policy.max_jitter.total_seconds())))
