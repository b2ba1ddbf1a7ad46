import random
from datetime import UTC, datetime, timedelta

from chalicelib.domain.personas import PersonaPolicy, PersonaState, eligible, iso_week, jitter, rank_candidates

NOW = datetime(2026, 11, 29, 12, tzinfo=UTC)
POLICY = PersonaPolicy(cooldown=timedelta(days=90), weekly_cap=3, retire_after_refusals=2)


def state(
    pid: str = "p",
    *,
    count: int = 0,
    week: str | None = None,
    refusals: int = 0,
    retired: bool = False,
    last: datetime | None = None,
) -> PersonaState:
    return PersonaState(pid, week or iso_week(NOW), count, refusals, retired, last)


def test_cooldown_weekly_cap_and_retirement() -> None:
    assert eligible(state(), NOW, POLICY)
    assert not eligible(state(last=NOW - timedelta(days=10)), NOW, POLICY)
    assert eligible(state(last=NOW - timedelta(days=91)), NOW, POLICY)
    assert not eligible(state(count=3), NOW, POLICY)
    assert eligible(state(count=3, week="2020-W01"), NOW, POLICY), "last week's count does not cap this week"
    assert not eligible(state(refusals=2), NOW, POLICY)
    assert not eligible(state(retired=True), NOW, POLICY)


def test_ranking_prefers_least_exposed_and_drops_ineligible() -> None:
    states = [state("busy", count=2), state("fresh", count=0), state("spotted", retired=True)]
    assert rank_candidates(states, NOW, POLICY, random.Random(1)) == ["fresh", "busy"]


def test_jitter_stays_within_policy() -> None:
    rng = random.Random(3)
    values = [jitter(rng, POLICY) for _ in range(200)]
    assert all(timedelta(0) <= v <= POLICY.max_jitter for v in values)
    assert len(set(values)) > 150
