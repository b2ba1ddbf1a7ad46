"""Monte Carlo: a round funded for half of its sample, with refusals and losses that hit the riskiest sellers most,
stays unbiased and covered once the sample is thinned at random and the respondents are weighted by class.

This is a seeded part (fixed seeds, ``REPS`` rounds per arm, about 10 s on an idle core) of the study written up in
``docs/decisions.md`` ("Unbought units that stay random"), where the same scenario ran 20,000 rounds.

Scenario (design-based: the frame and its true labels are fixed, only the draw, thinning and nonresponse vary):
4,000 sellers in 2 strata, model risk ~ Beta(1, 12), costs 800..2,999, true counterfeit probability 1.5 x risk
(so the riskiest are the most often fake). The design's budget ``B`` buys ~650 units in expectation; the round
may spend only ``B / 2`` (the available balance), so the thinning keeps ~48% of the drawn units. Every kept
unit then responds (is bought, delivered and gets a conclusive verdict) with probability ``0.95 - 0.6 x`` its risk
rank in the frame (0.95 for the safest, 0.35 for the riskiest; missing at random given risk, not within a band),
times 0.9 for inconclusive verdicts.

Tolerances: the bias bound is 3 Monte Carlo standard errors of the mean estimate (``sd / sqrt(REPS)``), so a
correct method fails it with probability ~0.3%; as the seeds are fixed the outcome is reproducible. Coverage is
checked in [0.94, 0.99]: nominal 0.95 less 3 Monte Carlo s.e. (``sqrt(0.95 x 0.05 / REPS)`` ~ 0.0034) and a
margin for the ``n``-capped interval rule of ``chalicelib.domain.estimation`` at the time of writing (it covers
about 0.97 here; the ``intervals`` work is changing that rule, and any rule that covers at least 0.94 passes).
The contrasts show what the two parts fix: skipping for budget in arrival order (highest risk last, as when the
riskiest orders wait longest) biases the estimate by well over 10 standard errors, and thinning without the
weighting classes is still biased by the risk-correlated refusals.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from chalicelib.domain import estimation, nonresponse, sampling

REPS = 4_000
N = 4_000
BUDGET = 1_200_000
SEED = 20_261_129


@dataclass(frozen=True)
class Frame:
    risk: npt.NDArray[np.float64]
    strata: npt.NDArray[np.int64]
    cost: npt.NDArray[np.int64]
    y: npt.NDArray[np.float64]
    pi: npt.NDArray[np.float64]
    respond_p: npt.NDArray[np.float64]

    @property
    def truth(self) -> float:
        return float(self.y.mean())


@cache
def frame() -> Frame:
    rng = np.random.default_rng(SEED)
    risk = rng.beta(1.0, 12.0, N)
    strata = rng.integers(0, 2, N).astype(np.int64)
    cost = rng.integers(800, 3_000, N).astype(np.int64)
    y = (rng.random(N) < np.clip(1.5 * risk, 0.0, 0.9)).astype(np.float64)
    design = sampling.design(risk, cost, BUDGET, eps=0.1, blend=0.5, strata=strata)
    rank = risk.argsort().argsort() / (N - 1)
    return Frame(risk, strata, cost, y, design.pi, (0.95 - 0.6 * rank) * 0.9)


@dataclass(frozen=True)
class Study:
    mean: float
    mc_se: float
    coverage: float
    mean_factor: float

    def bias(self, truth: float) -> float:
        return self.mean - truth


def study(arm: str, reps: int = REPS) -> Study:
    f = frame()
    limit = BUDGET // 2
    estimates, covered, factors = [], [], []
    for k in range(reps):
        drawn = sampling.poisson_draw(f.pi, SEED + k)
        if arm == "old":  # no thinning: orders reserve in arrival order (riskiest last) until the money runs out
            order = drawn[np.argsort(f.risk[drawn], kind="stable")]
            kept = order[np.cumsum(f.cost[order]) <= limit]
            pi = f.pi[kept]
        else:
            thinning = nonresponse.thin(f.cost[drawn], limit, SEED + k)
            kept = drawn[thinning.keep]
            pi = f.pi[kept] * thinning.factor
            factors.append(thinning.factor)
        rng = np.random.default_rng([SEED, k])
        respond = rng.random(kept.shape[0]) < f.respond_p[kept]
        if arm == "classes":
            adj = nonresponse.nonresponse_adjust(pi, respond, f.strata[kept], f.risk[kept])
            pi_resp = adj.pi[respond]
        else:  # Hajek over respondents with their recorded pi (missing at random across the sample)
            pi_resp = pi[respond]
        est = estimation.estimate(f.y[kept][respond], pi_resp, N)
        estimates.append(est.prevalence)
        covered.append(est.ci_low <= f.truth <= est.ci_high)
    e = np.asarray(estimates)
    return Study(
        float(e.mean()),
        float(e.std(ddof=1) / np.sqrt(reps)),
        float(np.mean(covered)),
        float(np.mean(factors)) if factors else 1.0,
    )


def test_thinning_and_weighting_classes_keep_the_estimate_unbiased_and_covered() -> None:
    f = frame()
    s = study("classes")
    assert 0.40 < s.mean_factor < 0.55, "the round is funded for about half of its draw"
    assert abs(s.bias(f.truth)) <= 3 * s.mc_se, (s, f.truth)
    assert 0.94 <= s.coverage <= 0.99, s


def test_arrival_order_budget_skips_are_biased() -> None:
    f = frame()
    s = study("old")
    assert s.bias(f.truth) < -10 * s.mc_se and s.bias(f.truth) < -0.1 * f.truth, (s, f.truth)


def test_thinning_alone_leaves_the_refusal_bias() -> None:
    f = frame()
    s = study("thin-only", reps=REPS // 2)
    assert s.bias(f.truth) < -5 * s.mc_se, (s, f.truth)
