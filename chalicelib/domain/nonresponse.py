"""Unbought units that stay random: thinning a round's sample to its money, and weighting classes for the rest.

A round's Poisson sample (:mod:`chalicelib.domain.sampling`) spends its budget only *in expectation*; the realised
sample's reservations can exceed what the round may spend. Which units then go unbought must be decided by a
random mechanism with a known probability, never by the order in which order executions happen to run.

1. Thinning (:func:`thin`), a second phase drawn before anything is placed
--------------------------------------------------------------------------
Let ``S`` be the drawn sample (``n`` units, reservation costs ``c_i``, total ``T``) and ``L`` the spend limit:
the smaller of the round budget and the programme's available balance when the round is sampled. If ``T <= L``
nothing happens (factor 1). Otherwise a simple random sample *without replacement* of ``m`` of the ``n`` units is
kept (seeded from the round's seed, a stream separate from the Poisson draw's), with ``m`` the largest size whose
kept total fits ``L`` surely (the ``m`` dearest units fit) or with high probability: ``m cbar + z sd_m <= L``
where ``sd_m^2 = m (1 - m/n) s_c^2`` is the variance of an SRS total of ``m`` costs (``s_c^2`` the costs'
variance in ``S``) and ``z = 3`` (:data:`THINNING_Z`). With equal costs the fit is exact (``sd_m = 0``).

Exact: conditional on ``S`` every unit of ``S`` is kept with probability ``r = m / n``, so its final inclusion
probability is ``pi_i * r`` (two-phase sampling). ``r`` depends on ``S``, and that is fine: for the weight
``1 / (pi_i r(S))``, ``E[1{kept} / r(S) | S] = 1`` for every ``i`` in ``S``, so the Horvitz-Thompson total is
exactly unbiased, and the Hajek ratio is consistent as before. Variance: with a Bernoulli(``r``) second phase the
Poisson formula on ``pi * r`` is exactly unbiased for the two-phase variance (``(1-pi)r + (1-r) = 1 - pi r``);
the SRS second phase fixes the kept count, which only removes variance, so the formula errs on the safe side
(for the Hajek ratio the difference is of order ``1/n``). The exploration probability of a unit (the uniform part
of pi) is multiplied by the same ``r``.

Not exact: the kept total may still exceed ``L`` when costs differ (probability about 0.1% under a normal
approximation at ``z = 3``; Cantelli bounds it by 10%), and other rounds of the programme may reserve money
between sampling and placing. Orders then skipped for budget are *nonresponse*, handled by (2).

2. Weighting classes (:func:`weighting_classes`, :func:`adjust`) for everything not observed
--------------------------------------------------------------------------------------------
Eligible units are the kept sample. Respondents are those with a conclusive verdict; budget skips, seller
refusals, lost parcels, failures, inconclusive verdicts and orders still open are nonrespondents. Classes are
stratum x risk band: within each stratum the units are cut at the deciles of their risk weighted by ``1/pi``
(:data:`RISK_BANDS`; weighted, so the bands split the frame the estimate speaks for rather than only the
over-sampled risky end; equal risks share a band), then adjacent bands (in risk order) are merged, the band with the
fewest respondents into its neighbour with fewer, until every band has at least :data:`MIN_RESPONDENTS`
respondents or the stratum is one band (the numbers and the evidence for them: ``docs/decisions.md``). A
respondent's weight ``1/pi`` is multiplied by ``(sum of 1/pi over the class's units) / (sum of 1/pi over its
respondents)``; equivalently its pi is multiplied by the class's weighted response rate. A stratum with no
respondent at all cannot be adjusted for: its weight is left out, which the Hajek ratio spreads over all
respondents (missing completely at random across the frame for those units); :attr:`Adjustment.unrepresented`
counts them.

Assumption: response is **missing at random within class** -- given the stratum and the risk band, whether a unit
is observed does not depend on whether it is counterfeit. Where it fails: (a) when response depends on the
outcome itself (a counterfeiter who spots test buys and refuses them; a lab that finds fakes harder to call
conclusively) -- no reweighting on covariates can fix that, it needs a follow-up subsample of nonrespondents;
(b) when response varies with risk *within* a band (bands remove most, not all, of a smooth dependence; Cochran
1968 puts it at about 90% for five classes); (c) small rounds, whose collapsed classes are coarser still. The
variance treats the class response rates as known (a Bernoulli third phase); estimating them, like
post-stratification, usually lowers the true variance, so the interval tends to err wide, not narrow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.domain.errors import FieldError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

THINNING_Z = 3.0
"""Standard deviations of the kept total kept below the spend limit."""

THINNING_STREAM = 0x7468696E
"""Mixed into the round's seed for the thinning draw (``numpy.random.SeedSequence([seed, THINNING_STREAM])``), so
it is independent of the Poisson draw made with the seed alone."""

RISK_BANDS = 10
"""Risk bands per stratum before collapsing (design-weighted deciles of risk among the stratum's sampled units)."""

MIN_RESPONDENTS = 5
"""A weighting class has at least this many respondents, or is its stratum's only class."""


class NonresponseError(FieldError):
    """Invalid thinning or weighting input; ``field`` names the offending input."""

    code = "invalid_nonresponse_input"


# --------------------------------------------------------------------------------------------------- thinning


@dataclass(frozen=True)
class Thinning:
    """The second phase of a round's sample.

    ``keep`` holds the sorted positions (into the drawn sample) of the kept units; ``factor`` is ``r = m / n``,
    each drawn unit's conditional probability of being kept (1.0 when nothing was thinned); ``limit`` the spend
    limit it was fitted to; ``drawn_total`` and ``kept_total`` the reservations before and after.
    """

    keep: IntArray
    factor: float
    drawn: int
    limit: int
    drawn_total: int
    kept_total: int

    @property
    def kept(self) -> int:
        return int(self.keep.shape[0])

    @property
    def thinned_out(self) -> int:
        return self.drawn - self.kept


def _int_array(values: Any, field: str) -> IntArray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise NonresponseError(field, "must be a 1-D array")
    if arr.shape[0] and arr.dtype.kind not in "iu":
        raise NonresponseError(field, "must be integer minor units")
    out = arr.astype(np.int64)
    if out.shape[0] and int(out.min()) <= 0:
        raise NonresponseError(field, "every cost must be a positive integer of minor units")
    return out


def _check_nonneg_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise NonresponseError(field, "must be a non-negative integer")
    return int(value)


def thinning_size(costs: npt.ArrayLike, limit: int, *, z: float = THINNING_Z) -> int:
    """Largest ``m`` such that a simple random sample of ``m`` of ``costs`` fits ``limit``: surely (the ``m``
    dearest fit) or with ``m cbar + z sqrt(m (1 - m/n) s^2) <= limit`` (``s^2`` the costs' variance, ``n - 1``
    divisor). Returns ``n`` when everything fits."""
    c = _int_array(costs, "costs")
    limit = _check_nonneg_int(limit, "limit")
    if not (isinstance(z, int | float) and math.isfinite(z) and z >= 0):
        raise NonresponseError("z", "must be a finite number >= 0")
    n = int(c.shape[0])
    if n == 0 or int(c.sum()) <= limit:
        return n
    m = np.arange(n + 1, dtype=np.float64)
    cf = c.astype(np.float64)
    s2 = float(cf.var(ddof=1)) if n > 1 else 0.0
    high = m * float(cf.mean()) + z * np.sqrt(np.maximum(m * (1.0 - m / n) * s2, 0.0))
    dearest = np.concatenate(([0], np.cumsum(np.sort(c)[::-1])))
    ok = (high <= limit) | (dearest <= limit)
    return int(np.flatnonzero(ok).max())


def thin(costs: npt.ArrayLike, limit: int, seed: int, *, z: float = THINNING_Z) -> Thinning:
    """Thin a drawn sample (reservation ``costs``, in draw order) to ``limit`` by a seeded simple random
    subsample of :func:`thinning_size` units. Deterministic per (``costs``, ``limit``, ``seed``)."""
    c = _int_array(costs, "costs")
    limit = _check_nonneg_int(limit, "limit")
    seed = _check_nonneg_int(seed, "seed")
    n = int(c.shape[0])
    total = int(c.sum())
    m = thinning_size(c, limit, z=z)
    if m == n:
        return Thinning(np.arange(n, dtype=np.int64), 1.0, n, limit, total, total)
    rng = np.random.default_rng(np.random.SeedSequence([seed, THINNING_STREAM]))
    keep = np.sort(rng.permutation(n)[:m]).astype(np.int64)
    return Thinning(keep, m / n, n, limit, total, int(c[keep].sum()))


def placing_order(count: int, seed: int) -> IntArray:
    """A seeded random permutation of ``range(count)``: the order in which a round hands its orders to the
    workflow, so that if money still runs out (see the module docstring) the orders skipped are not those of the
    lowest seller ids. Not relied upon for unbiasedness (the weighting classes are)."""
    count = _check_nonneg_int(count, "count")
    seed = _check_nonneg_int(seed, "seed")
    rng = np.random.default_rng(np.random.SeedSequence([seed, THINNING_STREAM, 1]))
    return rng.permutation(count).astype(np.int64)


# ----------------------------------------------------------------------------------------- weighting classes


@dataclass(frozen=True)
class Adjustment:
    """Nonresponse adjustment of one set of eligible units.

    ``pi`` holds, for every unit, its pi divided by its class's weighted response rate (respondents; ``nan`` for
    nonrespondents and for units of a stratum without respondents); ``classes`` the class of every unit (-1 when
    unrepresented); ``rates`` the weighted response rate of each class.
    """

    pi: FloatArray
    classes: IntArray
    rates: FloatArray
    eligible: int
    respondents: int
    unrepresented: int

    @property
    def n_classes(self) -> int:
        return int(self.rates.shape[0])

    @property
    def max_factor(self) -> float:
        """Largest weight multiplier (1 / the lowest class response rate)."""
        return float(1.0 / self.rates.min()) if self.rates.shape[0] else 1.0

    def summary(self) -> dict[str, Any]:
        return {
            "eligible": self.eligible,
            "respondents": self.respondents,
            "classes": self.n_classes,
            "max_weight_factor": self.max_factor,
            "unrepresented": self.unrepresented,
        }


def weighted_quantiles(values: FloatArray, weights: FloatArray, levels: npt.ArrayLike) -> FloatArray:
    """Lower weighted quantiles: the smallest value whose cumulative weight share reaches each level."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    idx = np.searchsorted(cum, np.asarray(levels, dtype=np.float64) * cum[-1], side="left")
    out: FloatArray = values[order][np.minimum(idx, values.shape[0] - 1)]
    return out


def _bands(
    risk: FloatArray, weight: FloatArray, respondent: npt.NDArray[np.bool_], bands: int, min_respondents: int
) -> IntArray:
    """Risk bands of one stratum (0..k-1 in risk order), collapsed as the module docstring says."""
    n = risk.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    edges = weighted_quantiles(risk, weight, np.linspace(0.0, 1.0, bands + 1)[1:-1])
    raw = np.searchsorted(edges, risk, side="right").astype(np.int64)  # equal risks share a band
    labels = sorted(set(raw.tolist()))
    groups = [[lab] for lab in labels]
    counts = [int(respondent[raw == lab].sum()) for lab in labels]
    while len(groups) > 1 and min(counts) < min_respondents:
        j = int(np.argmin(counts))
        if j == 0:
            k = 1
        elif j == len(groups) - 1:
            k = j - 1
        else:
            k = j - 1 if counts[j - 1] <= counts[j + 1] else j + 1
        lo, hi = min(j, k), max(j, k)
        groups[lo] = groups[lo] + groups[hi]
        counts[lo] += counts[hi]
        del groups[hi], counts[hi]
    out = np.empty(n, dtype=np.int64)
    for g, labs in enumerate(groups):
        out[np.isin(raw, labs)] = g
    return out


def weighting_classes(
    strata: npt.ArrayLike,
    risk: npt.ArrayLike,
    respondent: npt.ArrayLike,
    weight: npt.ArrayLike | None = None,
    *,
    bands: int = RISK_BANDS,
    min_respondents: int = MIN_RESPONDENTS,
) -> IntArray:
    """Class of every eligible unit: stratum x collapsed risk band (module docstring); -1 for the units of a
    stratum without any respondent."""
    s = np.asarray(strata)
    r = np.asarray(risk, dtype=np.float64)
    resp = np.asarray(respondent)
    if s.ndim != 1 or r.shape != s.shape or resp.shape != s.shape:
        raise NonresponseError("strata", "strata, risk and respondent must be 1-D arrays of one length")
    if resp.dtype.kind != "b":
        raise NonresponseError("respondent", "must be booleans")
    if not np.all(np.isfinite(r)):
        raise NonresponseError("risk", "must be finite")
    wt = np.ones(s.shape[0]) if weight is None else np.asarray(weight, dtype=np.float64)
    if wt.shape != s.shape or not np.all(np.isfinite(wt)) or (wt.shape[0] and float(wt.min()) <= 0.0):
        raise NonresponseError("weight", "must be positive finite design weights, one per unit")
    if isinstance(bands, bool) or not isinstance(bands, int) or bands < 1:
        raise NonresponseError("bands", "must be a positive integer")
    if isinstance(min_respondents, bool) or not isinstance(min_respondents, int) or min_respondents < 1:
        raise NonresponseError("min_respondents", "must be a positive integer")
    out = np.full(s.shape[0], -1, dtype=np.int64)
    next_class = 0
    for code in np.unique(s):
        mask = s == code
        if not resp[mask].any():
            continue
        local = _bands(r[mask], wt[mask], resp[mask], bands, min_respondents)
        out[mask] = local + next_class
        next_class += int(local.max()) + 1
    return out


def adjust(pi: npt.ArrayLike, respondent: npt.ArrayLike, classes: npt.ArrayLike) -> Adjustment:
    """Divide each respondent's pi by its class's weighted response rate ``sum_resp(1/pi) / sum_all(1/pi)``."""
    p = np.asarray(pi, dtype=np.float64)
    resp = np.asarray(respondent)
    cls = np.asarray(classes)
    if p.ndim != 1 or resp.shape != p.shape or cls.shape != p.shape:
        raise NonresponseError("pi", "pi, respondent and classes must be 1-D arrays of one length")
    if resp.dtype.kind != "b":
        raise NonresponseError("respondent", "must be booleans")
    if cls.dtype.kind not in "iu":
        raise NonresponseError("classes", "must be integer class codes")
    if p.shape[0] and (not np.all(np.isfinite(p)) or float(p.min()) <= 0.0 or float(p.max()) > 1.0):
        raise NonresponseError("pi", "inclusion probabilities must be in (0, 1]")
    if np.any(resp & (cls < 0)):
        raise NonresponseError("classes", "every respondent needs a class")
    w = np.divide(1.0, p, out=np.zeros_like(p), where=p > 0)
    represented = cls >= 0
    k = int(cls.max()) + 1 if represented.any() else 0
    all_w = np.bincount(cls[represented], weights=w[represented], minlength=k)
    resp_w = np.bincount(cls[resp], weights=w[resp], minlength=k)
    used = all_w > 0
    if np.any(used & (resp_w <= 0)):
        raise NonresponseError("classes", "a class has no respondent")
    rates = np.divide(resp_w, all_w, out=np.ones_like(all_w), where=used)
    out = np.full(p.shape[0], np.nan)
    out[resp] = p[resp] * rates[cls[resp]]
    return Adjustment(
        pi=out,
        classes=cls.astype(np.int64),
        rates=rates[used],
        eligible=int(p.shape[0]),
        respondents=int(resp.sum()),
        unrepresented=int((~represented).sum()),
    )


def nonresponse_adjust(
    pi: npt.ArrayLike,
    respondent: npt.ArrayLike,
    strata: npt.ArrayLike,
    risk: npt.ArrayLike,
    *,
    bands: int = RISK_BANDS,
    min_respondents: int = MIN_RESPONDENTS,
) -> Adjustment:
    """:func:`weighting_classes` then :func:`adjust`: the respondents' pi to feed to ``estimation.estimate``."""
    resp = np.asarray(respondent, dtype=bool)
    p = np.asarray(pi, dtype=np.float64)
    if p.ndim != 1 or not np.all(np.isfinite(p)) or (p.shape[0] and (float(p.min()) <= 0.0 or float(p.max()) > 1.0)):
        raise NonresponseError("pi", "inclusion probabilities must be in (0, 1]")
    classes = weighting_classes(strata, risk, resp, 1.0 / p, bands=bands, min_respondents=min_respondents)
    return adjust(pi, resp, classes)
