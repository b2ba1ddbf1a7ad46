"""The risk model measured on the exploration share: AUC, Brier score, top-decile precision, reliability.

Inputs
------
One entry per *exploration unit with a conclusive verdict*: ``y`` in {0, 1} (1 = counterfeit), the risk score ``s``
the design used for that unit (``Order.risk``) and its exploration probability ``q`` (``Order.exploration_pi``).
:func:`chalicelib.domain.sampling.draw` marks a selected unit as an exploration unit iff its uniform fell below
``q_i = eps * min(1, B_h / C_h)``, so the exploration units are a Poisson sample of the frame with the known
probabilities ``q`` (equal within a stratum), drawn *independently of the risk score*. Units drawn through the
risk-driven part of pi are not used: their inclusion depends on ``s`` itself, and a model judged on the units it
picked would look as good as its own choices (the hunting units are almost all high-score sellers, so the ranking
among low scores, which is most of the frame, would be seen through a handful of units with huge weights).
Weights are ``w = 1 / q``.

Estimands (finite population: the frame of one round, or the seller-rounds of a programme)
------------------------------------------------------------------------------------------
* ``auc``: ``sum_{i fake} sum_{j genuine} [1(s_i > s_j) + 1/2 1(s_i = s_j)] / (N1 N0)``. Estimate: the weighted
  Mann-Whitney statistic ``sum w_i w_j K_ij / (N1hat N0hat)``. Poisson sampling draws units independently, so the
  joint probability of a (fake, genuine) pair is ``q_i q_j`` and the numerator is an exactly unbiased
  (Horvitz-Thompson) estimate of the pair total; so are ``N1hat`` and ``N0hat``. The ratio is *design-consistent*
  (bias O(1/n)), not unbiased.
* ``brier``: ``sum (s_i - y_i)^2 / N``. Headline: the Hajek mean (consistent; it reweights the conclusive units to
  the frame, so it tolerates inconclusive verdicts missing at random given the design). ``ht``: the
  Horvitz-Thompson mean over the known frame size ``N``, exactly unbiased when every exploration unit got a
  conclusive verdict (inconclusive ones count as zeros there, so it is low by the inconclusive share otherwise).
* ``top_decile_precision``: the share of the frame's top-10%-risk sellers (``s >= t``, ``t`` the frame's
  top-decile threshold, :func:`top_decile`) that are counterfeit. Headline Hajek ratio (consistent); ``ht`` over
  the known number of flagged sellers, exactly unbiased under full response. This is the figure the reference
  programme reports as 14%.
* ``reliability``: fixed bins of predicted risk (:data:`BIN_EDGES`, bins ``(lo, hi]``); per bin the weighted mean
  predicted risk and the observed counterfeit rate (both Hajek ratios, consistent), the estimated number of frame
  units in the bin, the units and fakes behind it and the rate's interval.

Variance and intervals
----------------------
Every figure is (a ratio of) Horvitz-Thompson totals, linearised (Taylor; for the AUC the first-order Hoeffding
projection of the pair sum, i.e. DeLong's placement values with design weights): ``v = sum (1 - q) w^2 z^2`` with
``z`` the linearised variable, the Poisson-sampling variance estimator (units with ``q = 1`` add nothing).

* Precision and reliability rates are proportions: the interval is Wilson's score interval on the design-based
  effective size ``n* = theta (1 - theta) / v`` (Korn & Graubard 1998), capped at the number of units behind the
  figure; where ``v = 0`` (estimate at 0 or 1) or fewer than 5 units of the rarer kind stand behind it (``v``
  resting on a handful of units is too unstable), ``n*`` is Kish's effective size of those units instead. Wilson
  never leaves [0, 1] and is not degenerate at 0 or 1.
* The AUC: Wald on the logit scale with the delete-one *jackknife* variance (closed form, one pass) and a Student t
  quantile on ``min(fakes, genuine) - 1`` degrees of freedom. With few fakes the linearised variance is too small and
  correlated with the estimate (a sample whose few fakes happen to rank high looks both better and surer): Wilson on
  the linearised ``n*`` covered 0.75 / 0.81 / 0.91 with 4 / 7 / 24 fakes; the rule here covers 0.98 / 0.95 /
  0.94 and 0.95 at 85 (3,000 draws each on two frames, see docs/decisions.md). A perfect ranking (AUC 0 or 1) or a
  single unit of a kind falls back to Wilson on the Kish size of the rarer kind. ``std_error`` is the jackknife's.
* The Brier score is not a proportion of units (each term is a squared error in [0, 1], whose variance is far
  below ``B (1 - B)``), so a Wilson interval would be needlessly wide: its interval is Wald on the logit scale.

The deterministic linearisation was chosen over a weight bootstrap: it is exact for Poisson sampling to first
order, costs one pass (the metrics endpoint computes it on every request), and needs no seed. Where it can fail:
with very few fakes (below ~10) the variance estimate is unstable and the AUC's first-order projection ignores
the pair term; intervals there are rough (the Kish fallback and the Wilson form keep them from being absurd).
The seeded Monte Carlo in ``tests/unit/test_model_quality_montecarlo.py`` measures bias and coverage.

Honest behaviour: with no exploration units, or no fakes, or no genuine units, the figures that need them are
``None`` with a ``reason``; nothing raises for a lack of data. Invalid input raises :class:`ModelQualityError`
naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.domain import second_unit
from chalicelib.domain.errors import FieldError
from chalicelib.domain.models import Order, Round, VerdictKind

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

Z95 = 1.959963984540054
SMALL_COUNT = 5
BIN_EDGES: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""Reliability bins ``(lo, hi]`` of predicted risk: fixed, so tables of different rounds line up."""

METHOD = (
    "hajek; auc: logit-wald, jackknife variance, t(min class - 1); "
    "precision, rates: wilson on korn-graubard n*; brier: logit-wald, linearised"
)


class ModelQualityError(FieldError):
    """Invalid model-quality input; ``field`` names the offending input."""

    code = "invalid_model_quality_input"


@dataclass(frozen=True)
class Figure:
    """One figure with its 95% interval. ``estimate`` is ``None`` (with ``reason``) when the data cannot give it.

    ``n`` units stand behind it (``fakes`` of them counterfeit). ``ht`` / ``ht_std_error``: the exactly unbiased
    Horvitz-Thompson version where the denominator is known (Brier, precision)."""

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    std_error: float | None
    n: int
    fakes: int
    reason: str | None = None
    ht: float | None = None
    ht_std_error: float | None = None


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    n: int
    fakes: int
    frame_units: float
    mean_predicted: float | None
    observed: float | None
    ci_low: float | None
    ci_high: float | None
    reason: str | None = None


@dataclass(frozen=True)
class ModelQuality:
    units: int
    fakes: int
    genuine: int
    auc: Figure
    brier: Figure
    top_decile_precision: Figure
    reliability: list[ReliabilityBin] = field(default_factory=list)
    method: str = METHOD

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------------ helpers


def top_decile(scores: npt.ArrayLike) -> tuple[float, int]:
    """The frame's top-decile threshold ``t`` and how many frame units are flagged (``s >= t``).

    ``t`` is the ``ceil(N / 10)``-th largest score; with ties at ``t`` more than 10% may be flagged (all tied
    units are, so the flag is a function of the score alone)."""
    s = _floats(scores, "scores")
    if s.shape[0] == 0:
        raise ModelQualityError("scores", "the frame is empty")
    k = math.ceil(s.shape[0] / 10)
    t = float(np.partition(s, s.shape[0] - k)[s.shape[0] - k])
    return t, int(np.count_nonzero(s >= t))


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion ``p`` observed on ``n`` (possibly fractional) trials."""
    if n <= 0:
        return 0.0, 1.0
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2.0 * n)) / denom
    half = z / denom * math.sqrt(max(p * (1.0 - p), 0.0) / n + z2 / (4.0 * n * n))
    # the interval always holds p (rounding could otherwise put a hair of daylight between them at 0 or 1)
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def _floats(values: Any, name: str) -> FloatArray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ModelQualityError(name, "must be a 1-D numeric array") from exc
    if arr.ndim != 1:
        raise ModelQualityError(name, "must be a 1-D array")
    if arr.shape[0] and not bool(np.isfinite(arr).all()):
        raise ModelQualityError(name, "must be finite")
    return arr


def _kish(w: FloatArray) -> float:
    sw2 = float(np.dot(w, w))
    return float(w.sum()) ** 2 / sw2 if sw2 > 0 else 0.0


def _var(z: FloatArray, w: FloatArray, q: FloatArray) -> float:
    """Poisson-sampling variance estimate of ``sum_S w z``'s linearisation: ``sum (1 - q) w^2 z^2``."""
    return float(np.sum((1.0 - q) * (w * z) ** 2))


def _proportion_interval(theta: float, v: float, n: int, kish: float, rare: int) -> tuple[float, float]:
    """Wilson on the Korn-Graubard ``n* = theta (1 - theta) / v`` capped at ``n`` (Kish's size when ``v = 0``
    or fewer than :data:`SMALL_COUNT` units of the rarer kind)."""
    if v > 0.0 and theta * (1.0 - theta) > 1e-12 and rare >= SMALL_COUNT:
        n_star = min(theta * (1.0 - theta) / v, float(n))
    else:
        n_star = kish
    return wilson(theta, n_star)


def _ratio(a: FloatArray, b: FloatArray, w: FloatArray, q: FloatArray) -> tuple[float, float]:
    """Hajek ratio ``sum w a / sum w b`` and its linearised variance (``sum w b`` must be positive)."""
    tb = float(np.dot(w, b))
    r = float(np.dot(w, a)) / tb
    if bool((a <= b).all()) and bool((a >= 0).all()):  # a share: keep rounding from stepping outside [0, 1]
        r = min(1.0, max(0.0, r))
    return r, _var((a - r * b) / tb, w, q)


def _none(reason: str, n: int, fakes: int) -> Figure:
    return Figure(None, None, None, None, n, fakes, reason)


# ---------------------------------------------------------------------------------------------------- the figures


def weighted_auc(y: FloatArray, s: FloatArray, w: FloatArray, q: FloatArray) -> tuple[float, float, float]:
    """Weighted Mann-Whitney AUC (ties count 1/2), its linearised variance and its jackknife variance.

    Needs both classes present. With ``W1(u)``, ``W0(u)`` the weight of fakes / genuine units at score value ``u``,
    the pair total is ``T = sum_u W0(u) [W1(> u) + W1(u) / 2]``. Each unit's placement ``g`` is the weight of the
    other class it beats (ties 1/2); the linearised variable is ``z = (g - A (y N0 + (1 - y) N1)) / (N1 N0)`` and
    ``v_lin = sum (1 - q) w^2 z^2``. The delete-one jackknife has a closed form (removing unit ``k`` removes
    ``w_k g_k`` from ``T`` and ``w_k`` from its class total): ``v_jack = (n - 1) / n sum (1 - q_k) (A_(k) - A)^2``;
    it is 0 when a class has a single unit (nothing to delete it against). The per-unit factor ``1 - q_k`` is the
    usual finite-population correction for Poisson sampling (as in Berger & Skinner's jackknife for unequal
    probabilities), an approximation that matters only where ``q`` is large."""
    values, inv = np.unique(s, return_inverse=True)
    w1 = np.bincount(inv, weights=w * y, minlength=values.shape[0])
    w0 = np.bincount(inv, weights=w * (1.0 - y), minlength=values.shape[0])
    n1, n0 = float(w1.sum()), float(w0.sum())
    above1 = n1 - np.cumsum(w1)  # fake weight strictly above each value
    below0 = np.cumsum(w0) - w0  # genuine weight strictly below
    total = float(np.dot(w0, above1 + 0.5 * w1))
    auc = min(1.0, max(0.0, total / (n1 * n0)))  # rounding can step a hair outside [0, 1]
    fake = y > 0.5
    g = np.where(fake, below0[inv] + 0.5 * w0[inv], above1[inv] + 0.5 * w1[inv])
    z = (g - auc * np.where(fake, n0, n1)) / (n1 * n0)
    v_jack = 0.0
    n = y.shape[0]
    if min(int(fake.sum()), n - int(fake.sum())) >= 2:
        loo = (total - w * g) / ((n1 - w * y) * (n0 - w * (1.0 - y)))
        v_jack = (n - 1) / n * float(np.sum((1.0 - q) * (loo - auc) ** 2))
    return auc, _var(z, w, q), v_jack


def t_quantile(df: int, z: float = Z95) -> float:
    """Student t quantile matching the normal quantile ``z`` (Cornish-Fisher expansion in 1/df). For the 97.5%
    point df <= 4 use the exact values, and the expansion's error is below 0.0003 from df = 5."""
    exact = {1: 12.706204736174705, 2: 4.302652729749464, 3: 3.182446305284263, 4: 2.7764451051977987}
    if df < 1:
        raise ModelQualityError("df", "must be at least 1")
    if df in exact and abs(z - Z95) < 1e-12:
        return exact[df]
    z2 = z * z
    return (
        z
        + (z2 + 1) * z / (4 * df)
        + ((5 * z2 + 16) * z2 + 3) * z / (96 * df**2)
        + (((3 * z2 + 19) * z2 + 17) * z2 - 15) * z / (384 * df**3)
        + ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) * z / (92160 * df**4)
    )


def assess(
    y: npt.ArrayLike,
    score: npt.ArrayLike,
    q: npt.ArrayLike,
    threshold: float | npt.ArrayLike | None,
    *,
    population: int | None = None,
    flagged: int | None = None,
    edges: Sequence[float] = BIN_EDGES,
) -> ModelQuality:
    """The risk model's AUC, Brier score, top-decile precision and reliability table from exploration units.

    ``y`` (0/1), ``score`` (the design's risk, in [0, 1]) and ``q`` (exploration probability, in (0, 1]) are one
    entry per exploration unit with a conclusive verdict; pool rounds by concatenating their units (each keeps
    its own ``q``). ``threshold`` is the frame's top-decile threshold (:func:`top_decile`), one value or one per
    unit (its round's); ``None`` when unknown. ``population`` (frame units, summed over pooled rounds) and
    ``flagged`` (frame units at or above the threshold, summed likewise) enable the unbiased ``ht`` figures.
    """
    yv, sv, qv = _floats(y, "y"), _floats(score, "score"), _floats(q, "q")
    n = yv.shape[0]
    if sv.shape[0] != n or qv.shape[0] != n:
        raise ModelQualityError(
            "units", f"y, score and q must have the same length ({n}, {sv.shape[0]}, {qv.shape[0]})"
        )
    if n and not bool(np.isin(yv, (0.0, 1.0)).all()):
        raise ModelQualityError("y", "must be 0 (genuine) or 1 (counterfeit)")
    if n and (float(sv.min()) < 0.0 or float(sv.max()) > 1.0):
        raise ModelQualityError("score", "must lie in [0, 1]")
    if n and (float(qv.min()) <= 0.0 or float(qv.max()) > 1.0):
        raise ModelQualityError("q", "exploration probabilities must lie in (0, 1]")
    for name, value in (("population", population), ("flagged", flagged)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0):
            raise ModelQualityError(name, "must be a non-negative integer")
    e = _floats(edges, "edges")
    if e.shape[0] < 2 or not bool(np.all(np.diff(e) > 0)) or e[0] > 0.0 or e[-1] < 1.0:
        raise ModelQualityError("edges", "must increase strictly from at most 0 to at least 1")
    top: BoolArray | None = None
    if threshold is not None:
        t = _floats(np.atleast_1d(np.asarray(threshold, dtype=object)), "threshold")
        if t.shape[0] == 1 and n != 1:
            t = np.full(n, float(t[0]))
        if t.shape[0] != n:
            raise ModelQualityError("threshold", f"must be one value or one per unit ({n}), got {t.shape[0]}")
        top = sv >= t

    w = 1.0 / qv if n else np.zeros(0)
    fakes = int(yv.sum())
    genuine = n - fakes
    return ModelQuality(
        units=n,
        fakes=fakes,
        genuine=genuine,
        auc=_auc_figure(yv, sv, w, qv, fakes, genuine),
        brier=_brier_figure(yv, sv, w, qv, fakes, population),
        top_decile_precision=_precision_figure(yv, w, qv, top, flagged),
        reliability=_reliability(yv, sv, w, qv, e),
    )


def _auc_figure(y: FloatArray, s: FloatArray, w: FloatArray, q: FloatArray, fakes: int, genuine: int) -> Figure:
    n = y.shape[0]
    if n == 0:
        return _none("no exploration units with a conclusive verdict", 0, 0)
    if fakes == 0:
        return _none("no counterfeit among the exploration units: the AUC needs both kinds", n, 0)
    if genuine == 0:
        return _none("no genuine seller among the exploration units: the AUC needs both kinds", n, fakes)
    auc, _, v = weighted_auc(y, s, w, q)
    rare = min(fakes, genuine)
    if rare >= 2 and v > 0.0 and 0.0 < auc < 1.0:
        # logit-scale Wald on the jackknife variance with a t quantile on min(fakes, genuine) - 1 degrees of freedom
        half = t_quantile(rare - 1) * math.sqrt(v) / (auc * (1.0 - auc))
        logit = math.log(auc / (1.0 - auc))
        lo, hi = _expit(logit - half), _expit(logit + half)
    else:  # a perfect (or perfectly reversed) ranking, or a single unit of a kind: Wilson on the Kish size
        pos = y > 0.5
        lo, hi = wilson(auc, min(_kish(w[pos]), _kish(w[~pos])))
    return Figure(auc, lo, hi, math.sqrt(v), n, fakes)


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _brier_figure(
    y: FloatArray, s: FloatArray, w: FloatArray, q: FloatArray, fakes: int, population: int | None
) -> Figure:
    n = y.shape[0]
    if n == 0:
        return _none("no exploration units with a conclusive verdict", 0, 0)
    a = (s - y) ** 2
    b, v = _ratio(a, np.ones(n), w, q)
    se = math.sqrt(v)
    if 0.0 < b < 1.0 and v > 0.0:
        half = Z95 * se / (b * (1.0 - b))
        logit = math.log(b / (1.0 - b))
        lo, hi = _expit(logit - half), _expit(logit + half)
    else:  # a census of the exploration units (q = 1) or a perfect score: nothing to sample
        lo = hi = b
    ht = ht_se = None
    if population:
        ht = float(np.dot(w, a)) / population
        ht_se = math.sqrt(_var(a / population, w, q))
    return Figure(b, lo, hi, se, n, fakes, None, ht, ht_se)


def _precision_figure(
    y: FloatArray, w: FloatArray, q: FloatArray, top: BoolArray | None, flagged: int | None
) -> Figure:
    n = y.shape[0]
    if top is None:
        return _none("the frame's top-decile threshold was not recorded", n, int(y.sum()))
    m = int(np.count_nonzero(top))
    hits = int(y[top].sum())
    if m == 0:
        return _none("no exploration unit in the frame's top risk decile", 0, 0)
    f = top.astype(np.float64)
    p, v = _ratio(y * f, f, w, q)
    lo, hi = _proportion_interval(p, v, m, _kish(w[top]), min(hits, m - hits))
    ht = ht_se = None
    if flagged:
        ht = float(np.dot(w, y * f)) / flagged
        ht_se = math.sqrt(_var(y * f / flagged, w, q))
    return Figure(p, lo, hi, math.sqrt(v), m, hits, None, ht, ht_se)


def _reliability(y: FloatArray, s: FloatArray, w: FloatArray, q: FloatArray, edges: FloatArray) -> list[ReliabilityBin]:
    which = np.searchsorted(edges, s, side="left") - 1
    which = np.clip(which, 0, edges.shape[0] - 2)  # a score equal to the lowest edge joins the first bin
    out: list[ReliabilityBin] = []
    for k in range(edges.shape[0] - 1):
        lo_e, hi_e = float(edges[k]), float(edges[k + 1])
        inside = which == k
        m = int(np.count_nonzero(inside))
        if m == 0:
            out.append(
                ReliabilityBin(lo_e, hi_e, 0, 0, 0.0, None, None, None, None, "no exploration units in this bin")
            )
            continue
        yk, sk, wk, qk = y[inside], s[inside], w[inside], q[inside]
        hits = int(yk.sum())
        ones = np.ones(m)
        rate, v = _ratio(yk, ones, wk, qk)
        lo, hi = _proportion_interval(rate, v, m, _kish(wk), min(hits, m - hits))
        mean_pred = float(np.dot(wk, sk) / wk.sum())
        out.append(ReliabilityBin(lo_e, hi_e, m, hits, float(wk.sum()), mean_pred, rate, lo, hi))
    return out


# ------------------------------------------------------------------------------------------------ from stored rounds


def section(rounds: Sequence[tuple[Round, Sequence[Order]]]) -> dict[str, Any]:
    """The ``risk_model`` section of a round's or a programme's metrics, from stored rounds and their orders.

    Uses the orders marked ``exploration`` with a conclusive verdict, each with its own ``exploration_pi`` (read
    from the order: a thinning step may have scaled it) and ``risk``, and its round's top-decile threshold. Rounds
    recorded before the exploration flag existed (no threshold) contribute nothing. Pooled rounds measure the model
    over seller-rounds; ``population`` and ``flagged`` sum the contributing rounds' frames."""
    y: list[float] = []
    s: list[float] = []
    q: list[float] = []
    t: list[float] = []
    population = flagged = used = 0
    for rnd, orders in rounds:
        if rnd.top_decile_threshold is None:
            continue
        used += 1
        population += rnd.population
        flagged += rnd.top_decile_flagged or 0
        for o in second_unit.units(orders):  # a second unit is never a unit of its own (issue 10 item 1)
            if not o.exploration or o.exploration_pi is None or o.risk is None:
                continue
            if o.verdict is None or not o.verdict.conclusive:
                continue
            y.append(1.0 if o.verdict is VerdictKind.COUNTERFEIT else 0.0)
            s.append(o.risk)
            q.append(o.exploration_pi)
            t.append(rnd.top_decile_threshold)
    quality = assess(
        np.array(y, dtype=np.float64),
        np.array(s, dtype=np.float64),
        np.array(q, dtype=np.float64),
        np.array(t, dtype=np.float64),
        population=population or None,
        flagged=flagged or None,
    )
    return {"rounds": used, "population": population, "flagged": flagged, **quality.as_dict()}
