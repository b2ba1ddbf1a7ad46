"""Design-based estimates of marketplace-wide counterfeit prevalence.

Inputs are the sampled units with a *conclusive* verdict: ``y_i`` in {0, 1} (1 = counterfeit) and the
inclusion probability ``pi_i`` recorded when the round was drawn (:mod:`chalicelib.domain.sampling`). Weights
``w_i = 1/pi_i``.

Estimators
----------
* Horvitz-Thompson: ``p_HT = sum(w y) / N``. Exactly design-unbiased when every sampled unit responds;
  inconclusive or undelivered buys count as zeros, so it is reported for reference only.
* Hajek (the headline ``prevalence``): ``p = sum(w y) / sum(w)``. A ratio: unbiased only to O(1/n)
  (consistent), and unbiased in that sense under non-response only if verdicts are missing at random given the
  design. More stable than HT when the realised Poisson sample size varies.
* Variance (Poisson sampling, Taylor linearisation of the ratio):
  ``v = sum((1 - pi) / pi^2 * (y - p)^2) / Nhat^2`` with ``Nhat = sum(w)``; units with ``pi = 1`` add nothing
  (they are not sampled at random). ``v`` is consistent, not unbiased, and rests on the few sampled fakes when
  the prevalence is low.
* Kish effective sample size ``n_eff = (sum w)^2 / sum(w^2)`` (reported; no longer used by the interval).

Interval rule (``score-design`` / ``clopper-pearson-design`` / ``census``)
--------------------------------------------------------------------------
The linearised variance at a hypothesised prevalence ``p0`` splits into a fakes' and a non-fakes' term,
``V(p0) = p0 (1 - p0) [(1 - p0) c_F + p0 c_N]``, where ``c_F = a_F / Nhat`` and ``c_N = a_N / Nhat`` hold the
mean of ``(1 - pi) / pi`` over the frame's fakes (``a_F``) and non-fakes (``a_N``). Evaluating the variance at
``p0`` (instead of at the estimate) is what a score interval does: a round that missed the low-probability fakes
has a low estimate *and* a low plug-in variance, and the score interval does not inherit that correlation.

* ``a_F = (A_1 + m a) / (sum(w y) + m)`` and ``a_N = (A_0 + m a) / (sum(w (1 - y)) + m)``, with
  ``A_1 = sum((1 - pi) w^2 y)``, ``A_0 = sum((1 - pi) w^2 (1 - y))`` (their Horvitz-Thompson estimates),
  shrunk towards the frame mean ``a = (A_0 + A_1) / Nhat`` by ``m = PSEUDO_UNITS * Nhat / n`` (half an average
  unit), so that one hit cannot set the fakes' term alone.
* **Unseen fakes**: with no hit at all, ``a_F`` is at least ``sum((1 - pi) w^3) / sum(w^2)``, the mean of
  ``(1 - pi) / pi`` when the fakes are spread over the frame in proportion to ``1 / pi`` (as if the risk model
  pointed the wrong way). A zero-hit round thus gets a finite upper bound that stays honest when the model
  misleads; it is wider than the uniform-design rule of three by the design's weight dispersion.
* **Few hits, few degrees of freedom**: the fakes' term rests on ``hits`` units, so ``z`` is replaced by
  Student's ``t`` with ``max(hits - 1, DF_FLOOR = 5)`` degrees of freedom: ``c_F`` and ``c_N`` are multiplied
  by ``(t / z)^2`` (Korn & Graubard's degrees-of-freedom adjustment, with the hits as the primary units; the
  floor because below 6 hits the Clopper-Pearson step already carries the small-count uncertainty).
* With ``hits >= SMALL_HITS`` the interval is the score interval ``{p0 : |p - p0| <= z sqrt(V(p0))}`` (both
  ends by bisection; ``method = "score-design"``). With fewer hits the normal approximation is poor, and it is
  the Clopper-Pearson interval on the design effective size ``n* = 1 / ((1 - p) c_F + p c_N)`` with
  ``x* = p n*`` (``method = "clopper-pearson-design"``). ``n_eff_ci`` reports ``n*``.
* **Census**: if every unit has ``pi = 1`` there is no sampling variance: ``ci_low == ci_high == prevalence``,
  ``method = "census"``, ``n_eff_ci = inf``. (Non-response is not sampling error; a round that cannot buy
  every unit should lower the recorded ``pi`` by the thinning probability.)

The method names ``score-design``, ``clopper-pearson-design`` and ``census`` were added in issue 9; the earlier
names ``wilson-kish`` / ``clopper-pearson-kish`` (and :func:`interval_size` / :func:`interval`, which compute
that earlier rule) remain in the module, but :func:`estimate` no longer returns them.

Evidence (``docs/decisions.md``, "Calibrated intervals"; ``benchmarks/interval_study.py``): on a grid of
prevalence 0.1%-10% x risk model informative (AUC 0.8) / useless / misleading x 300-5,000 buys (45 cells, 2,000
rounds each, per round and two rounds combined) the rule above covered at least 0.94 in 44 cells (0.936 in the
45th, within one Monte Carlo s.e.) and at most 0.963 wherever a round expects 20 or more hits; the former rule
(Korn-Graubard effective size capped at ``n``) covered 0.97-0.99 with an informative model and down to 0.90 with a
misleading one. Where it can fail: the normal approximation with 10-100 hits of very unequal weight (that 0.936
cell: informative model, 2% prevalence), and fakes concentrated on units of smaller ``pi`` than the ``1 / pi``
spread assumes (the zero-hit bound is then optimistic; the guaranteed worst case is ``-ln(alpha / 2) / (N
pi_min)``).

Combining rounds
----------------
:func:`combine_rounds` pools independent rounds *weighted by frame size*: ``p = sum(N_r p_r) / sum(N_r)``,
``v = sum((N_r / sum N)^2 v_r)``, and the interval's terms likewise ``c = sum((N_r / sum N)^2 c_r)`` with the
hits summed. This estimates the mean prevalence over seller-rounds, and it is unbiased whenever the round
estimates are. Inverse-variance weights were rejected: for a rare binary outcome the estimated variance grows
with the estimate itself, so rounds that happened to find fewer fakes would get more weight and the pooled
figure would be biased downward -- the opposite of what a governance report should do.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.domain.errors import FieldError

FloatArray = npt.NDArray[np.float64]

SMALL_COUNT = 5.0
"""Earlier rule (:func:`interval`): below this many hits or misses, Clopper-Pearson instead of Wilson."""

SMALL_HITS = 10
"""Below this many hits the interval is Clopper-Pearson on the design effective size, else the score interval."""

DF_FLOOR = 5.0
"""Least degrees of freedom of the t factor: below 6 hits Clopper-Pearson on the effective counts already carries
the small-count uncertainty, and t with 1-4 df on top made 0.1%-prevalence intervals 10-20x wider for no coverage
gain."""

PSEUDO_UNITS = 0.5
"""Shrinkage of the fakes' and non-fakes' variance terms towards the frame mean, in average units."""

METHOD_WILSON = "wilson-kish"
METHOD_CLOPPER_PEARSON = "clopper-pearson-kish"
METHOD_SCORE = "score-design"
METHOD_CLOPPER_PEARSON_DESIGN = "clopper-pearson-design"
METHOD_CENSUS = "census"


class EstimationError(FieldError):
    """Invalid estimation input; ``field`` names the offending input."""

    code = "invalid_estimation_input"


@dataclass(frozen=True)
class Estimate:
    """A prevalence estimate with its ``confidence`` interval; formulas in the module docstring.

    ``c_fake`` / ``c_clean`` are the interval's variance terms (``V(p0) = p0 (1-p0) [(1-p0) c_fake + p0
    c_clean]``, before the degrees-of-freedom factor); both 0 for a census.
    """

    prevalence: float
    ht_prevalence: float
    variance: float
    std_error: float
    ci_low: float
    ci_high: float
    n: int
    hits: int
    n_eff: float
    population: int
    method: str
    confidence: float = 0.95
    n_eff_ci: float = 0.0
    c_fake: float = 0.0
    c_clean: float = 0.0

    @property
    def half_width(self) -> float:
        """Half the interval's length."""
        return 0.5 * (self.ci_high - self.ci_low)

    @property
    def design_effect(self) -> float:
        """Design effect of the interval, ``n / n_eff_ci`` (0 for a census; includes the finite-population
        factor, so an equal-probability sample of a fraction ``f`` has ``1 - f``)."""
        n_ci = self.n_eff_ci if self.n_eff_ci > 0 else self.n_eff
        return self.n / n_ci if n_ci > 0 else 1.0


# ----------------------------------------------------------------------------------------------------
# Beta distribution and intervals


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function ``I_x(a, b)`` for ``a, b > 0``."""
    if a <= 0 or b <= 0:
        raise EstimationError("beta", "shape parameters must be positive")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def beta_quantile(q: float, a: float, b: float) -> float:
    """Quantile of Beta(a, b): the ``x`` with ``I_x(a, b) = q`` (bisection to relative precision 1e-15)."""
    if not 0.0 <= q <= 1.0:
        raise EstimationError("beta", "quantile level must be in [0, 1]")
    if q == 0.0:
        return 0.0
    if q == 1.0:
        return 1.0
    lo, hi = 0.0, 1.0
    # relative precision, so tiny quantiles (e.g. a lower Clopper-Pearson bound near 0) are exact too
    for _ in range(1_100):
        mid = 0.5 * (lo + hi)
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 4e-16 * hi:
            break
    return 0.5 * (lo + hi)


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(p: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for proportion ``p`` on ``n`` (possibly effective, non-integer) trials."""
    if n <= 0:
        return 0.0, 1.0
    z = _z(confidence)
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1.0 - p), 0.0) / n + z2 / (4.0 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def clopper_pearson_interval(x: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for ``x`` successes in ``n`` trials; counts may be non-integer."""
    if n <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    x = min(max(x, 0.0), n)
    low = 0.0 if x <= 1e-12 else beta_quantile(alpha / 2.0, x, n - x + 1.0)
    high = 1.0 if n - x <= 1e-12 else beta_quantile(1.0 - alpha / 2.0, x + 1.0, n - x)
    return low, high


def interval_size(p: float, variance: float, n: int, hits: int, n_eff: float) -> float:
    """Interval's effective sample size: ``min(n, p(1-p)/v)`` with >= 5 hits and ``v > 0``, else Kish's."""
    if hits >= SMALL_COUNT and variance > 0.0 and 0.0 < p < 1.0:
        return min(float(n), p * (1.0 - p) / variance)
    return n_eff


def interval(p: float, n_eff: float, hits: int, confidence: float = 0.95) -> tuple[float, float, str]:
    """Wilson on ``n_eff`` trials; Clopper-Pearson when raw or effective counts are < 5."""
    x_eff = p * n_eff
    if hits < SMALL_COUNT or x_eff < SMALL_COUNT or n_eff - x_eff < SMALL_COUNT:
        low, high = clopper_pearson_interval(x_eff, n_eff, confidence)
        return low, high, METHOD_CLOPPER_PEARSON
    low, high = wilson_interval(p, n_eff, confidence)
    return low, high, METHOD_WILSON


# ----------------------------------------------------------------------------------------------------
# Estimators


def t_quantile(confidence: float, df: float) -> float:
    """Two-sided Student ``t`` quantile, ``P(|T_df| <= t) = confidence``.

    Exact through the beta function: ``P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2)``.
    """
    if df >= 1e7:
        return _z(confidence)
    x = beta_quantile(1.0 - confidence, df / 2.0, 0.5)
    return math.sqrt(df * (1.0 / x - 1.0))


def score_interval(p: float, c_fake: float, c_clean: float, confidence: float = 0.95) -> tuple[float, float]:
    """Smallest interval holding ``{p0 in [0, 1] : (p - p0)^2 <= z^2 p0 (1-p0) [(1-p0) c_fake + p0 c_clean]}``.

    The set contains ``p``. ``(p - p0)^2 - z^2 V(p0)`` is a cubic, so with extreme terms (a handful of units) the set
    can be two pieces: a grid of 1,025 points on each side finds the outermost point inside, and bisection (to
    1e-15) the boundary beyond it.
    """
    z2 = _z(confidence) ** 2

    def outside(p0: Any) -> Any:
        return (p - p0) ** 2 > z2 * p0 * (1.0 - p0) * ((1.0 - p0) * c_fake + p0 * c_clean)

    def boundary(inside_at: float, outside_at: float) -> float:
        a, b = inside_at, outside_at
        for _ in range(200):
            mid = 0.5 * (a + b)
            if outside(mid):
                b = mid
            else:
                a = mid
            if abs(b - a) <= 1e-15 * max(abs(b), 1e-300):
                break
        return b

    low = 0.0
    if p > 0.0:
        grid = np.linspace(0.0, p, 1025)
        inside = np.flatnonzero(~outside(grid))  # never empty: p itself is inside
        first = int(inside[0])
        low = 0.0 if first == 0 else boundary(float(grid[first]), float(grid[first - 1]))
    high = 1.0
    if p < 1.0:
        grid = np.linspace(p, 1.0, 1025)
        inside = np.flatnonzero(~outside(grid))
        last = int(inside[-1])
        high = 1.0 if last == grid.shape[0] - 1 else boundary(float(grid[last]), float(grid[last + 1]))
    return low, high


def design_interval(
    p: float, c_fake: float, c_clean: float, hits: int, confidence: float = 0.95
) -> tuple[float, float, str, float]:
    """The interval rule of the module docstring: ``(low, high, method, n_eff_ci)``."""
    if c_fake <= 0.0 and c_clean <= 0.0:
        return p, p, METHOD_CENSUS, math.inf
    if hits > 0:
        factor = (t_quantile(confidence, max(hits - 1.0, DF_FLOOR)) / _z(confidence)) ** 2
        c_fake *= factor
        c_clean *= factor
    n_star = 1.0 / ((1.0 - p) * c_fake + p * c_clean)
    if hits < SMALL_HITS:
        low, high = clopper_pearson_interval(p * n_star, n_star, confidence)
        return low, high, METHOD_CLOPPER_PEARSON_DESIGN, n_star
    low, high = score_interval(p, c_fake, c_clean, confidence)
    return low, high, METHOD_SCORE, n_star


# ----------------------------------------------------------------------------------------------------
# Estimators


def _validate(y: Any, pi: Any) -> tuple[FloatArray, FloatArray]:
    ya = np.asarray(y)
    pa = np.asarray(pi)
    if ya.ndim != 1:
        raise EstimationError("y", "must be a 1-D array of 0/1 outcomes")
    if pa.ndim != 1:
        raise EstimationError("pi", "must be a 1-D array of inclusion probabilities")
    if ya.shape[0] != pa.shape[0]:
        raise EstimationError("pi", f"must hold one probability per outcome: y has {ya.shape[0]}, pi {pa.shape[0]}")
    if ya.shape[0] == 0:
        raise EstimationError("y", "must hold at least one conclusive outcome")
    if ya.dtype.kind not in "biuf" or not np.all((ya == 0) | (ya == 1)):
        raise EstimationError("y", "outcomes must be 0 or 1")
    if pa.dtype.kind not in "iuf":
        raise EstimationError("pi", f"must be numeric, got dtype {pa.dtype}")
    pf = pa.astype(np.float64)
    if not np.all(np.isfinite(pf)) or float(pf.min()) <= 0.0 or float(pf.max()) > 1.0:
        raise EstimationError("pi", "inclusion probabilities must be finite and in (0, 1]")
    return ya.astype(np.float64), pf


def _real(value: Any, field: str) -> float:
    """A finite real number (Python or numpy scalar; bools refused)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise EstimationError(field, f"must be a real number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise EstimationError(field, "must be finite")
    return out


def _check_confidence(confidence: Any) -> float:
    value = _real(confidence, "confidence")
    if not 0.0 < value < 1.0:
        raise EstimationError("confidence", f"must be strictly between 0 and 1, got {value}")
    return value


def _check_population(population: Any, n: int, field: str = "population") -> int:
    if isinstance(population, bool | np.bool_) or not isinstance(population, numbers.Integral):
        raise EstimationError(field, f"must be an integer number of sellers, got {type(population).__name__}")
    if population < n:
        raise EstimationError(field, f"must be at least the {n} sampled units, got {population}")
    return int(population)


@dataclass(frozen=True)
class _Sums:
    """Per-sample sums every figure is computed from."""

    n: int
    hits: int
    sum_w: float
    sum_wy: float
    a1: float  # sum((1 - pi) w^2 y): HT estimate of the fakes' sum of (1 - pi) / pi
    a0: float  # the same over the non-fakes
    sum_w2: float
    a_w: float  # sum((1 - pi) w^3): for the unseen fakes' term

    @property
    def p(self) -> float:
        return self.sum_wy / self.sum_w


def _sums(y: FloatArray, pi: FloatArray) -> _Sums:
    w = 1.0 / pi
    a = (1.0 - pi) * w * w
    return _Sums(
        n=y.shape[0],
        hits=int(y.sum()),
        sum_w=float(w.sum()),
        sum_wy=float(np.dot(w, y)),
        a1=float(np.dot(a, y)),
        a0=float(a.sum() - np.dot(a, y)),
        sum_w2=float(np.dot(w, w)),
        a_w=float(np.dot(a, w)),
    )


def _terms(s: _Sums) -> tuple[float, float]:
    """``(c_fake, c_clean)`` of the module docstring (shrunk, with the unseen-fakes floor at zero hits)."""
    a_frame = (s.a0 + s.a1) / s.sum_w
    m = PSEUDO_UNITS * s.sum_w / s.n
    a_fake = (s.a1 + m * a_frame) / (s.sum_wy + m)
    a_clean = (s.a0 + m * a_frame) / (s.sum_w - s.sum_wy + m)
    if s.hits == 0:
        a_fake = max(a_fake, s.a_w / s.sum_w2)
    return a_fake / s.sum_w, a_clean / s.sum_w


def _build(
    p: float,
    ht: float,
    variance: float,
    n: int,
    hits: int,
    n_eff: float,
    population: int,
    confidence: float,
    c_fake: float,
    c_clean: float,
) -> Estimate:
    p = min(max(p, 0.0), 1.0)
    variance = max(variance, 0.0)
    low, high, method, n_ci = design_interval(p, c_fake, c_clean, hits, confidence)
    return Estimate(
        prevalence=p,
        ht_prevalence=ht,
        variance=variance,
        std_error=math.sqrt(variance),
        ci_low=low,
        ci_high=high,
        n=n,
        hits=hits,
        n_eff=n_eff,
        population=population,
        method=method,
        confidence=float(confidence),
        n_eff_ci=n_ci,
        c_fake=c_fake,
        c_clean=c_clean,
    )


def _from_sums(s: _Sums, population: int, confidence: float) -> Estimate:
    p = s.p
    c_fake, c_clean = _terms(s)
    return _build(
        p,
        s.sum_wy / population,
        ((1.0 - p) ** 2 * s.a1 + p * p * s.a0) / (s.sum_w * s.sum_w),
        s.n,
        s.hits,
        s.sum_w * s.sum_w / s.sum_w2,
        population,
        confidence,
        c_fake,
        c_clean,
    )


def estimate(y: npt.ArrayLike, pi: npt.ArrayLike, population: int, *, confidence: float = 0.95) -> Estimate:
    """Hajek and Horvitz-Thompson prevalence, linearised variance and the design interval.

    ``y`` holds 0/1 outcomes of the sampled units with a conclusive verdict, ``pi`` their recorded inclusion
    probabilities, ``population`` the number of eligible sellers in the frame the round was drawn from.
    """
    conf = _check_confidence(confidence)
    ya, pa = _validate(y, pi)
    pop = _check_population(population, ya.shape[0])
    return _from_sums(_sums(ya, pa), pop, conf)


def estimate_by_stratum(
    y: npt.ArrayLike,
    pi: npt.ArrayLike,
    strata: npt.ArrayLike,
    population_by_stratum: dict[int, int],
    *,
    confidence: float = 0.95,
) -> tuple[Estimate, dict[int, Estimate]]:
    """Per-stratum estimates and their stratified combination.

    Overall ``p = sum(N_h p_h) / N``, ``v = sum((N_h / N)^2 v_h)`` and the interval's terms likewise
    (``c = sum((N_h / N)^2 c_h)``, hits summed); its Kish ``n_eff`` uses the stratum-calibrated weights
    ``w_i N_h / Nhat_h``. Every stratum in ``population_by_stratum`` must have at least one conclusive outcome
    (otherwise its prevalence is unknown and so is the overall one).
    """
    conf = _check_confidence(confidence)
    ya, pa = _validate(y, pi)
    sa = np.asarray(strata)
    if sa.ndim != 1 or sa.shape[0] != ya.shape[0]:
        raise EstimationError("strata", "must hold one stratum code per outcome")
    if sa.dtype.kind not in "iu":
        raise EstimationError("strata", "must be integer codes")
    if not population_by_stratum:
        raise EstimationError("population_by_stratum", "must name at least one stratum")
    present = {int(code) for code in np.unique(sa)}
    unknown = present - {int(k) for k in population_by_stratum}
    if unknown:
        raise EstimationError("population_by_stratum", f"must give a population for strata {sorted(unknown)}")

    per: dict[int, Estimate] = {}
    total_n = sum(int(v) for v in population_by_stratum.values())
    p_sum = ht_sum = var_sum = sum_w2_cal = cf_sum = cn_sum = 0.0
    for code, n_h in sorted(population_by_stratum.items()):
        mask = sa == code
        if not mask.any():
            raise EstimationError("strata", f"stratum {code} has no conclusive outcome")
        y_h, pi_h = ya[mask], pa[mask]
        n_h = _check_population(n_h, y_h.shape[0], "population_by_stratum")
        s = _sums(y_h, pi_h)
        est = _from_sums(s, n_h, conf)
        per[int(code)] = est
        share = n_h / total_n
        p_sum += share * est.prevalence
        ht_sum += s.sum_wy
        var_sum += share * share * est.variance
        cf_sum += share * share * est.c_fake
        cn_sum += share * share * est.c_clean
        sum_w2_cal += s.sum_w2 * (n_h / s.sum_w) ** 2
    overall = _build(
        p_sum,
        ht_sum / total_n,
        var_sum,
        sum(e.n for e in per.values()),
        sum(e.hits for e in per.values()),
        float(total_n) ** 2 / sum_w2_cal,
        total_n,
        conf,
        cf_sum,
        cn_sum,
    )
    return overall, per


def combine_rounds(estimates: Sequence[Estimate]) -> Estimate:
    """Programme-level estimate from independent rounds, weighted by each round's frame size.

    ``p = sum(N_r p_r) / sum(N_r)``, ``v = sum(a_r^2 v_r)`` with ``a_r = N_r / sum(N)``, the interval's terms
    ``c = sum(a_r^2 c_r)`` with the hits summed, and effective size ``n_eff = 1 / sum(a_r^2 / n_eff_r)``.
    ``population`` is the number of seller-rounds, ``sum(N_r)``. Why not inverse-variance weights: see the
    module docstring. An :class:`Estimate` built by hand without ``c_fake``/``c_clean`` but with a variance
    contributes ``c = v / (p (1 - p))`` (its plug-in variance) to both terms.
    """
    if not estimates:
        raise EstimationError("estimates", "must hold at least one round's estimate")
    confidence = estimates[0].confidence
    if any(e.confidence != confidence for e in estimates):
        raise EstimationError("estimates", "must all be at the same confidence level")
    total = sum(e.population for e in estimates)
    if total <= 0:
        raise EstimationError("estimates", "must cover a positive total population")
    shares = [e.population / total for e in estimates]

    def terms(e: Estimate) -> tuple[float, float]:
        if e.c_fake > 0.0 or e.c_clean > 0.0 or e.variance <= 0.0:
            return e.c_fake, e.c_clean
        c = e.variance / max(e.prevalence * (1.0 - e.prevalence), 1e-12)
        return c, c

    pairs = [terms(e) for e in estimates]
    return _build(
        sum(a * e.prevalence for a, e in zip(shares, estimates, strict=True)),
        sum(a * e.ht_prevalence for a, e in zip(shares, estimates, strict=True)),
        sum(a * a * e.variance for a, e in zip(shares, estimates, strict=True)),
        sum(e.n for e in estimates),
        sum(e.hits for e in estimates),
        1.0 / sum(a * a / e.n_eff for a, e in zip(shares, estimates, strict=True)),
        total,
        confidence,
        sum(a * a * c[0] for a, c in zip(shares, pairs, strict=True)),
        sum(a * a * c[1] for a, c in zip(shares, pairs, strict=True)),
    )


# ----------------------------------------------------------------------------------------------------
# Planning


def _wilson_half_width(p: float, m: float, z: float) -> float:
    z2 = z * z
    return z / (1.0 + z2 / m) * math.sqrt(p * (1.0 - p) / m + z2 / (4.0 * m * m))


@dataclass(frozen=True)
class BuysPlan:
    """How many more conclusive buys reach a target half-width, within what the frame allows.

    ``buys`` more buys (0 if the target is met); ``frame_exhausted`` is True when reaching the target takes
    every unit not yet bought (``buys == remaining``, i.e. a census: then the half-width is 0); ``remaining``
    is ``population - n``, the most the frame allows.
    """

    buys: int
    frame_exhausted: bool
    remaining: int


def plan_buys(current: Estimate, half_width: float) -> BuysPlan:
    """More conclusive test buys for the interval's half-width to reach ``half_width``, capped by the frame.

    Planning figure: the next buys follow the current design, so the design effect without the
    finite-population factor, ``d = (n / n_eff_ci) / (1 - n / N)``, carries over; the prevalence is the current
    one guarded away from 0 and 1 by ``1/n``. The required effective size ``m`` comes from the Wilson half-width
    formula, and the total ``n'`` solves ``n' / (d (1 - n'/N)) = m``, i.e. ``n' = m d / (1 + m d / N)`` < N.
    The result never exceeds ``population - n``; a census (``n == population`` or zero width) needs 0.
    """
    target = _real(half_width, "half_width")
    if not 0.0 < target < 0.5:
        raise EstimationError("half_width", f"must be strictly between 0 and 0.5, got {target}")
    remaining = max(current.population - current.n, 0)
    if current.half_width <= target:
        return BuysPlan(0, False, remaining)
    if remaining == 0:
        return BuysPlan(0, True, 0)
    n = max(current.n, 1)
    guard = 1.0 / n
    p = min(max(current.prevalence, guard), 1.0 - guard) if n > 2 else 0.5
    z = _z(current.confidence)
    lo, hi = 1e-9, 1.0
    while _wilson_half_width(p, hi, z) > target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _wilson_half_width(p, mid, z) > target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9 * hi:
            break
    population = float(current.population)
    fpc = 1.0 - current.n / population
    deff = current.design_effect / fpc if fpc > 0 else 1.0
    md = hi * deff
    needed_total = math.ceil(md / (1.0 + md / population) - 1e-9)
    more = max(needed_total - current.n, 1)
    if more >= remaining:
        return BuysPlan(remaining, True, remaining)
    return BuysPlan(more, False, remaining)


def buys_needed(current: Estimate, half_width: float) -> int:
    """``plan_buys(current, half_width).buys``: never more than the ``population - n`` units the frame allows."""
    return plan_buys(current, half_width).buys


# ----------------------------------------------------------------------------------------------------
# Hunting


@dataclass(frozen=True)
class HitLift:
    """Hits per unit of spend achieved by a sample versus (an estimate of) uniform sampling's.

    ``lift`` is bias-corrected to second order; ``lift_plugin`` is the plain ratio ``(hits / spend) / (Yhat /
    Chat)`` it corrects (about 4% high with ~25 hits: ``1 / Yhat`` is convex).
    """

    hits: int
    spend: int
    hits_per_spend: float
    uniform_hits_per_spend: float
    lift: float
    lift_plugin: float = 0.0


def hit_lift(y: npt.ArrayLike, pi: npt.ArrayLike, cost: npt.ArrayLike) -> HitLift:
    """The sample's hits per minor unit against uniform sampling's, estimated from the sample.

    Estimand: the design's lift ``L = (E hits / E spend) / (Y / C)`` (``Y`` fakes and ``C`` total cost in the
    frame). The plug-in ``f = (hits / spend) * (Chat / Yhat)``, with Horvitz-Thompson ``Yhat = sum(y / pi)``,
    ``Chat = sum(c / pi)``, is a product ``prod x_j^{e_j}`` of four Poisson-design totals ``x = (hits, spend,
    Yhat, Chat)`` with exponents ``e = (1, -1, -1, 1)``; its second-order bias is
    ``f / 2 * (e' R e - sum_j e_j R_jj)`` with ``R_jk = Cov(x_j, x_k) / (x_j x_k)``, and each covariance of two
    totals ``sum_s g``, ``sum_s h`` is estimated unbiasedly by ``sum_s (1 - pi) g h`` (Poisson design). ``lift``
    is ``f`` minus that estimated bias (consistent; the remaining bias is O(n^-2), shown by Monte Carlo in
    ``tests/unit/test_lift_montecarlo.py``). Costs must be positive integer minor units.
    """
    ya, pa = _validate(y, pi)
    ca = np.asarray(cost)
    if ca.ndim != 1 or ca.shape[0] != ya.shape[0]:
        raise EstimationError("cost", "must hold one cost per outcome")
    if ca.dtype.kind not in "iu":
        raise EstimationError("cost", f"must be integer minor units, got dtype {ca.dtype}")
    if np.any(ca <= 0):
        raise EstimationError("cost", "must be positive integer minor units")
    cf = ca.astype(np.float64)
    hits = int(ya.sum())
    spend = int(ca.sum())
    per_spend = hits / spend
    w = 1.0 / pa
    y_hat = float(np.dot(w, ya))
    c_hat = float(np.dot(w, cf))
    uniform = y_hat / c_hat
    if uniform <= 0:
        value = 1.0 if not hits else math.inf
        return HitLift(hits, spend, per_spend, uniform, value, value)
    plugin = per_spend / uniform
    # per-unit contributions g_j to the totals x_j = sum_s g_j
    g = np.stack([ya, cf, w * ya, w * cf])
    x = np.array([hits, spend, y_hat, c_hat], dtype=np.float64)
    cov = (g * (1.0 - pa)) @ g.T
    rel = cov / np.outer(x, x)
    e = np.array([1.0, -1.0, -1.0, 1.0])
    bias = 0.5 * plugin * (float(e @ rel @ e) - float(np.dot(e, np.diag(rel))))
    return HitLift(hits, spend, per_spend, uniform, plugin - bias, plugin)
