"""Risk-weighted Poisson sampling with known inclusion probabilities.

A round buys from a random subset of the eligible sellers. Each seller ``i`` has a risk ``p_i`` in (0, 1) and
an expected order cost ``c_i`` (integer minor units). :func:`design` turns them into inclusion probabilities
``pi_i`` and :func:`poisson_draw` draws the sample: seller ``i`` is bought from independently with probability
``pi_i``. Because every ``pi_i`` is known and positive, estimates weighted by ``1 / pi_i`` stay unbiased
however wrong the risk model is (see :mod:`chalicelib.domain.estimation`).

The design
----------
With budget ``B`` and total frame cost ``C = sum(c)``::

    pi = eps * u + (1 - eps) * (blend * a + (1 - blend) * b)

* ``u_i = B / C`` is the uniform component (every seller equally likely);
* ``a_i = min(1, la * sqrt(p_i / c_i))`` is the estimation component (the optimum for estimating a rare
  prevalence at a given expected cost);
* ``b_i = min(1, lb * p_i)`` is the hunting component (the most expected hits per unit of budget under the
  model);
* the scale ``la`` (``lb``) is chosen so that ``sum(c * a) = B`` (``sum(c * b) = B``); units whose scaled
  weight reaches 1 are fixed at 1 and the remaining budget is spread over the others, repeated until no new
  unit caps (each pass is one vectorised sweep; the passes are Newton steps on a concave piecewise-linear
  function, so they increase monotonically and end after a handful of passes in practice; a sort-based exact
  solve is the fallback).

Each component spends exactly ``B`` in expectation and is at most 1, so their convex combination does too:
``sum(c * pi) = B`` and ``0 < pi <= 1``. The guaranteed floor is ``pi_i >= eps * B / C`` (the ``eps`` share of
the uniform design): every eligible seller can be chosen. If ``B >= C`` every ``pi_i = 1`` (a census:
``Design.census`` is true and ``expected_spend`` is ``C``, less than the budget).

Costs are integer arrays (floats are refused, even whole-number ones); the budget is a positive integer; Python
and numpy scalars are accepted alike for every scalar input.

Strata
------
With ``strata`` (integer codes, e.g. categories) the budget is first split with cost-aware Neyman allocation,
``B_h ∝ N_h * S_h * sqrt(cbar_h)`` with ``S_h = sqrt(pbar_h * (1 - pbar_h))`` from the stratum's mean risk and
``cbar_h`` its mean cost (equivalently expected size ``n_h ∝ N_h S_h / sqrt(cbar_h)``), subject to
``B_h <= C_h`` (a stratum can at most be censused) and to ``B_h >= Q_h``, the smallest budget whose
within-stratum design has expected size ``quotas[h]``. The within-stratum design is the one above with budget
``B_h``, so the floor becomes ``pi_i >= eps * B_h / C_h`` there.

The draw
--------
Unit ``i`` gets one uniform ``U_i = (k_i + V_i) / 2**16`` and is selected iff ``U_i < pi_i``: ``k_i`` is a
16-bit integer from the seed's stream (one stream, four units per 64-bit word) and ``V_i`` a 53-bit uniform
that is only generated in the rare case ``k_i == floor(pi_i * 2**16)`` where the first 16 bits cannot decide
(probability at most ``2**-16`` per unit), from a counter-based generator keyed by the seed and ``i``. So the
selection probability is ``pi_i`` to within ``2**-69`` for every ``pi_i``, however small (a first stage alone
would round it up to a multiple of ``2**-16``), and the exploration flag of :func:`draw` (``U_i < q_i``) uses
the same ``U_i``.

Speed and memory
----------------
:func:`design` makes two chunked passes over the frame (:func:`_scan`: validation, the sums and the weights
``sqrt(p / c)``, rooted in single precision, written into the output; :func:`_fill`: the probabilities and
their size, in place), so its only full-size allocation is ``pi`` itself; capped units cost one extra sweep per
Newton pass. The target for 10 million sellers (``benchmarks/sampling.py``): design + draw at least 3 times
faster than numpy's weighted ``Generator.choice`` without replacement, with a peak of at most twice the inputs
(measured: about 1.6 times).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.domain.errors import FieldError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# Units per chunk of the design's fused passes: each pass reads a chunk from memory once and every further
# operation on it hits the cache (a 4 MiB working set: L2/L3); large enough that the per-chunk Python overhead
# (about 15 numpy calls) is negligible. Measured: 2**15 to 2**18 are within 10% of each other.
_CHUNK = 1 << 17
# Units per chunk of the draw. Must be a multiple of 8: the first-stage integers are the 16-bit (8-bit) pieces of
# the generator's raw 64-bit words, so chunks of whole words keep the stream the same whatever the chunk size.
_DRAW_CHUNK = 1 << 18
_MAX_CAP_PASSES = 64
# The draw's first stage resolves each unit's uniform to 2**-_STAGE_BITS (8 or 16; tests use 8 to exercise the
# refinement often); the refinement makes the probabilities exact whatever this resolution.
_STAGE_BITS = 16
_REFINE_STREAM = 0x5EED  # spawn key of the refinement stream (independent of the seed's first-stage stream)
_MAX_COST = 10**12  # minor units per order; keeps every partial sum of costs exact in int64 and float64


class SamplingError(FieldError):
    """Invalid sampling input. ``field`` names the offending input (``risk``, ``cost``, ``budget`` ...); the
    message is a sentence that names the input and the rule it broke."""

    code = "invalid_sampling_input"
    prefix_always = False


@dataclass(frozen=True, eq=False)
class Design:
    """Inclusion probabilities of one round and what they imply.

    ``pi`` is read-only float64 with ``0 < pi <= 1``; ``expected_spend = sum(cost * pi)`` (minor units) and
    ``expected_size = sum(pi)``. ``stratum_budgets`` holds the allocated budget per stratum code when
    stratified. ``total_cost`` is the frame's total cost (minor units).

    When the budget buys everyone (``budget >= total_cost``) the design is a census: every ``pi`` is 1,
    :attr:`census` is true and ``expected_spend`` is the frame's total cost, *not* the budget (the rest of the
    budget is not spent). Otherwise ``expected_spend`` equals the budget (to rounding).
    """

    pi: FloatArray
    expected_spend: float
    expected_size: float
    eps: float
    blend: float
    budget: int
    strata: IntArray | None
    stratum_budgets: dict[int, float] | None = None
    uniform_rate: float | dict[int, float] = 1.0
    total_cost: int = 0

    @property
    def census(self) -> bool:
        """True when the budget covers the whole frame, so every unit is bought (all ``pi == 1``)."""
        return self.total_cost > 0 and self.budget >= self.total_cost

    def exploration_pi(self, index: npt.ArrayLike | None = None) -> FloatArray:
        """Probability ``q_i = eps * min(1, B_h / C_h)`` that unit ``i`` is drawn through the uniform part of pi.

        ``q_i <= pi_i`` always, and :func:`draw` marks a selected unit as an exploration unit exactly when its
        uniform fell below ``q_i``; so the exploration units are themselves a Poisson sample with these known
        probabilities, equal within a stratum (an equal-probability sample of the frame when unstratified).
        ``index`` selects units (all when omitted).
        """
        n = self.pi.shape[0]
        idx = np.arange(n) if index is None else np.asarray(index, dtype=np.int64)
        if isinstance(self.uniform_rate, dict):
            if self.strata is None:  # pragma: no cover - constructed together
                raise SamplingError("strata", "per-stratum rates need strata")
            keys = np.array(sorted(self.uniform_rate), dtype=np.int64)
            values = np.array([self.uniform_rate[int(k)] for k in keys], dtype=np.float64)
            rates = values[np.searchsorted(keys, self.strata[idx])]
        else:
            rates = np.full(idx.shape[0], self.uniform_rate, dtype=np.float64)
        out: FloatArray = np.minimum(self.eps * rates, self.pi[idx])
        return out


@dataclass(frozen=True)
class Draw:
    """A Poisson sample: ``index`` (sorted unit indices) and, per selected unit, whether it is an
    ``exploration`` unit (its uniform fell below :meth:`Design.exploration_pi`)."""

    index: IntArray
    exploration: npt.NDArray[np.bool_]


# ------------------------------------------------------------------------------------------------- validation


def _is_integer(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def _validate_params(budget: Any, eps: Any, blend: Any) -> tuple[int, float, float]:
    """Check the scalar inputs (Python or numpy scalars) and return them as ``int, float, float``."""
    if not _is_integer(budget) or budget <= 0:
        raise SamplingError("budget", f"budget must be a positive integer of minor units, got {budget!r}")
    if not _is_real(eps) or not (math.isfinite(float(eps)) and 0.0 < float(eps) <= 1.0):
        raise SamplingError("eps", f"eps (the uniform share) must be a number with 0 < eps <= 1, got {eps!r}")
    if not _is_real(blend) or not (math.isfinite(float(blend)) and 0.0 <= float(blend) <= 1.0):
        raise SamplingError("blend", f"blend must be a number with 0 <= blend <= 1, got {blend!r}")
    return int(budget), float(eps), float(blend)


def _frame_arrays(risk: Any, cost: Any) -> tuple[FloatArray, npt.NDArray[Any]]:
    """Shapes and dtypes of the frame (no pass over the values: :func:`_scan` checks those chunk by chunk).

    Risk comes back as float64 (a copy only if it was not float64 already); cost keeps its integer dtype.
    """
    try:
        p = np.asarray(risk)
        c = np.asarray(cost)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise SamplingError("frame", "frame must be 1-D numeric arrays") from exc
    if p.ndim != 1:
        raise SamplingError("risk", "risk must be a 1-D array")
    if c.ndim != 1:
        raise SamplingError("cost", "cost must be a 1-D array")
    if p.shape[0] == 0 or c.shape[0] == 0:
        raise SamplingError("frame", "frame is empty: risk and cost need at least one unit")
    if p.shape[0] != c.shape[0]:
        raise SamplingError("frame", f"frame mismatch: risk has {p.shape[0]} units but cost has {c.shape[0]}")
    if p.dtype.kind not in "iuf":
        raise SamplingError("risk", f"risk must be numeric probabilities, got dtype {p.dtype}")
    if c.dtype.kind not in "iu":
        hint = " (whole-number floats: pass cost.astype(np.int64))" if c.dtype.kind == "f" else ""
        raise SamplingError("cost", f"cost must be integer minor units (an integer array), got dtype {c.dtype}{hint}")
    out: FloatArray = p.astype(np.float64, copy=False)
    return out, c


@dataclass
class _Scan:
    """One chunked pass over a frame: validation and the sums the design needs."""

    n: int
    total_cost: int  # exact
    cmin: int
    pmax: float
    wmax: float = 0.0  # an upper bound of max sqrt(p / c): sqrt(pmax / cmin)
    sum_cw: float = 0.0  # sum(c * sqrt(p / c)) = sum(sqrt(p * c))
    sum_cp: float = 0.0  # sum(c * p)


def _risk_error(chunk: FloatArray) -> SamplingError:
    if not bool(np.isfinite(chunk).all()):
        return SamplingError("risk", "risk must be finite (no NaN or infinity)")
    return SamplingError("risk", "risk must lie strictly between 0 and 1 for every unit")


def _scan(p: FloatArray, c: npt.NDArray[Any], weights: FloatArray | None) -> _Scan:
    """Validate risk and cost and accumulate their sums, chunk by chunk; optionally write ``sqrt(p / c)`` into
    ``weights`` (the estimation component's weights, so the design need not compute them twice).

    The weights' square root is taken in single precision (``p / c`` in double, rounded to float32, its root
    widened back): float64's square root is the slowest operation of the design on the reference machine (12 ms
    per 10 million units against 6 ms this way). So the estimation component is proportional to ``sqrt(p / c)``
    to within 1.2e-7 relative (and a unit with ``p / c`` below float32's range, 1e-45, gets weight 0 and keeps
    the other components of pi). Nothing downstream needs more: the design uses these weights consistently
    (its sums, caps and spend are those of the weights as computed) and the estimator uses the recorded pi.
    """
    n = p.shape[0]
    chunk = min(n, _CHUNK)
    cf = np.empty(chunk, dtype=np.float64)
    w32 = np.empty(chunk if weights is not None else 0, dtype=np.float32)
    total = 0
    cmin = _MAX_COST
    pmax = 0.0
    wmax = sum_cw = sum_cp = 0.0
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        pc = p[start:stop]
        lo, hi = float(pc.min()), float(pc.max())
        if not (lo > 0.0 and hi < 1.0):  # NaN fails both comparisons
            raise _risk_error(pc)
        cc = c[start:stop]
        clo, chi = int(cc.min()), int(cc.max())
        if clo <= 0:
            raise SamplingError("cost", "cost must be positive for every unit")
        if chi > _MAX_COST:
            raise SamplingError("cost", f"cost must be at most {_MAX_COST} minor units per order, got {chi}")
        total += int(cc.sum(dtype=np.int64))
        cmin = min(cmin, clo)
        pmax = max(pmax, hi)
        cfc = cf[:m]
        cfc[:] = cc
        sum_cp += float(np.dot(cfc, pc))
        if weights is not None:
            wc = weights[start:stop]
            np.divide(pc, cfc, out=wc)
            wf = w32[:m]
            wf[:] = wc  # the square root in single precision: 3x faster than float64's here, see _scan's docstring
            np.sqrt(wf, out=wf)
            wc[:] = wf
            sum_cw += float(np.dot(cfc, wc))
    if weights is not None:
        wmax = math.sqrt(pmax / cmin) * (1.0 + 1e-6)  # >= every weight as computed (float32 roundings: 1.2e-7)
    return _Scan(n, total, cmin, pmax, wmax, sum_cw, sum_cp)


# ------------------------------------------------------------------------------------------------- the design


def _capped_scale(
    w: FloatArray, c: npt.NDArray[Any], budget: float, total_cw: float, wmax: float
) -> tuple[float, bool]:
    """Scale ``lam`` with ``sum(c * min(1, lam * w)) == budget`` and whether any unit caps; needs budget < sum(c)
    and ``wmax >= max(w)``.

    Newton iteration from below on the concave piecewise-linear spend function: fix the units that cap at the
    current scale, rescale the rest so the spend is met, repeat until the capped set stops growing.
    """
    lam = budget / total_cw
    if lam * wmax < 1.0:  # the common case: nothing can cap (``wmax`` bounds every weight; decided without a pass)
        return lam, False
    n = w.shape[0]
    n_capped = 0
    for _ in range(_MAX_CAP_PASSES):
        capped = np.flatnonzero(w >= 1.0 / lam)
        if capped.size == n_capped:
            return lam, n_capped > 0
        n_capped = capped.size
        cap_c = c[capped].astype(np.float64)
        cap_cost = float(cap_c.sum())
        if 2 * n_capped > n:
            free = np.ones(n, dtype=bool)
            free[capped] = False
            free_cw = float(np.dot(c[free].astype(np.float64), w[free]))
        else:
            free_cw = total_cw - float(np.dot(cap_c, w[capped]))
        lam = (budget - cap_cost) / free_cw
    return _capped_scale_exact(w, c.astype(np.float64), budget), True


def _capped_scale_exact(w: FloatArray, c: FloatArray, budget: float) -> float:
    """Sort-based exact solve (fallback for pathological weight profiles)."""
    order = np.argsort(-w, kind="stable")
    ws, cs = w[order], c[order]
    cap_cost = np.concatenate(([0.0], np.cumsum(cs)))  # cost of capping the k largest
    free_cw = np.concatenate((np.cumsum((cs * ws)[::-1])[::-1], [0.0]))  # sum c*w of the rest
    for k in range(ws.shape[0]):
        lam = (budget - cap_cost[k]) / free_cw[k]
        # consistent if the k largest cap and the (k+1)-th does not
        if lam * ws[k] < 1.0 and (k == 0 or lam * ws[k - 1] >= 1.0):
            return float(lam)
    raise SamplingError("budget", "budget: no feasible scaling (at or above the frame cost)")  # pragma: no cover


def _fill(
    pi: FloatArray, p: FloatArray, c: npt.NDArray[Any], scan: _Scan, budget: float, eps: float, blend: float
) -> tuple[float, float]:
    """Write the inclusion probabilities into ``pi`` and return ``(sum(c * pi), sum(pi))``.

    ``pi`` holds ``sqrt(p / c)`` on entry when ``0 < blend`` and ``eps < 1`` (from :func:`_scan`). One chunked
    pass computes each chunk's probabilities and its size while the chunk is in cache. When nothing caps,
    ``pi = A * sqrt(p / c) + H * p + floor`` exactly, so the spend is ``A * sum(sqrt(p c)) + H * sum(c p) +
    floor * C`` from the scan's sums (no second read of the costs); when something caps, the pass measures
    ``sum(c * pi)`` chunk by chunk.
    """
    n = scan.n
    if budget >= scan.total_cost:
        pi.fill(1.0)
        return float(scan.total_cost), float(n)
    total = float(scan.total_cost)
    floor = eps * (budget / total)
    if eps >= 1.0:
        pi.fill(floor)
        return floor * total, floor * n
    fa = (1.0 - eps) * blend
    fb = (1.0 - eps) * (1.0 - blend)
    lam_a = lam_b = 0.0
    capped_a = capped_b = False
    if blend > 0.0:
        lam_a, capped_a = _capped_scale(pi, c, budget, scan.sum_cw, scan.wmax)
    if blend < 1.0:
        lam_b, capped_b = _capped_scale(p, c, budget, scan.sum_cp, scan.pmax)
    any_capped = capped_a or capped_b
    chunk = min(n, _CHUNK)
    cf = np.empty(chunk, dtype=np.float64)
    tmp = np.empty(chunk, dtype=np.float64)
    spend = 0.0 if any_capped else fa * lam_a * scan.sum_cw + fb * lam_b * scan.sum_cp + floor * total
    size = 0.0
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        out = pi[start:stop]
        if blend > 0.0:  # estimation component, from the weights sqrt(p / c) already in ``out``
            if capped_a:
                out *= lam_a
                np.minimum(out, 1.0, out=out)
                out *= fa
            else:
                out *= lam_a * fa
        if blend < 1.0:  # hunting component, proportional to p
            hunt = out if blend == 0.0 else tmp[:m]
            if capped_b:
                np.multiply(p[start:stop], lam_b, out=hunt)
                np.minimum(hunt, 1.0, out=hunt)
                hunt *= fb
            else:
                np.multiply(p[start:stop], lam_b * fb, out=hunt)
            if blend > 0.0:
                out += hunt
        out += floor
        if any_capped:
            # guard the last ulp: a mixture of values <= 1 can round to 1 + 2e-16 (without caps every part is < 1)
            np.minimum(out, 1.0, out=out)
            cfc = cf[:m]
            cfc[:] = c[start:stop]
            spend += float(np.dot(cfc, out))
        size += float(out.sum())
    return spend, size


def _design_core(
    p: FloatArray, c: npt.NDArray[Any], budget: float, eps: float, blend: float
) -> tuple[FloatArray, float, float]:
    """Inclusion probabilities of one (sub)frame (inputs valid) with their spend and size."""
    pi = np.empty(p.shape[0], dtype=np.float64)
    scan = _scan(p, c, pi if (blend > 0.0 and eps < 1.0) else None)
    spend, size = _fill(pi, p, c, scan, budget, eps, blend)
    return pi, spend, size


def _expected_size(p: FloatArray, c: npt.NDArray[Any], budget: float, eps: float, blend: float) -> float:
    return _design_core(p, c, budget, eps, blend)[2]


def _min_budget_for_size(p: FloatArray, c: npt.NDArray[Any], size: float, eps: float, blend: float) -> float:
    """Smallest budget whose design has expected size >= ``size`` (bisection: size grows with budget)."""
    total = float(c.sum())
    if size <= 0:
        return 0.0
    if size >= p.shape[0]:
        return total
    lo, hi = 0.0, total
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _expected_size(p, c, mid, eps, blend) >= size:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-12 * total:
            break
    return hi


def _box_allocation(score: FloatArray, lo: FloatArray, hi: FloatArray, total: float) -> FloatArray:
    """``x_h = clip(lam * score_h, lo_h, hi_h)`` with ``sum(x) == total`` (sum(lo) <= total <= sum(hi))."""

    def alloc(lam: float) -> FloatArray:
        out: FloatArray = np.clip(lam * score, lo, hi)
        return out

    a, b = 0.0, 1.0
    while float(alloc(b).sum()) < total:
        b *= 2.0
        if b > 1e300:  # pragma: no cover - defensive
            break
    for _ in range(300):
        mid = 0.5 * (a + b)
        if float(alloc(mid).sum()) < total:
            a = mid
        else:
            b = mid
        if b - a <= 1e-15 * b:
            break
    x = alloc(b)
    # make the sum exact: rescale the strata strictly inside their bounds
    free = (lam_score := b * score) > lo
    free &= lam_score < hi
    if free.any():
        fixed = float(x[~free].sum())
        x[free] = score[free] * ((total - fixed) / float(score[free].sum()))
    return x


def design(
    risk: npt.ArrayLike,
    cost: npt.ArrayLike,
    budget: int,
    *,
    eps: float = 0.1,
    blend: float = 0.25,
    strata: npt.ArrayLike | None = None,
    quotas: dict[int, int] | None = None,
) -> Design:
    """Inclusion probabilities for a risk-weighted Poisson sample spending ``budget`` in expectation.

    ``risk`` are model probabilities in (0, 1), ``cost`` expected order costs in integer minor units (an integer
    array; floats are refused, even whole-number ones, as everywhere money is handled), ``budget`` the round
    budget in minor units (a positive integer). ``eps`` (0 < eps <= 1, keyword-only) is the uniform share that
    guarantees every seller a chance; ``blend`` (0 <= blend <= 1, keyword-only) weighs the estimation component
    (``blend=1``, pi ∝ sqrt(p/c)) against the hunting component (``blend=0``, pi ∝ p). With ``strata`` (integer
    codes) the budget is split by cost-aware Neyman allocation, with optional ``quotas`` (minimum expected
    sample size per stratum code). Python and numpy scalars are accepted alike (``np.float32(0.1)``,
    ``np.int64(5_000)``). See the module docstring for the exact formulas.

    If the budget covers the whole frame (``budget >= sum(cost)``) the design is a census: every ``pi`` is 1,
    ``Design.census`` is true and ``expected_spend`` is the frame's total cost, below the budget.

    Raises :class:`SamplingError` naming the offending input and the rule it broke; nothing is modified.
    """
    budget_i, eps_f, blend_f = _validate_params(budget, eps, blend)
    p, c = _frame_arrays(risk, cost)
    if strata is None:
        if quotas:
            raise SamplingError("quotas", "quotas need strata: pass strata codes with the quotas")
        pi = np.empty(p.shape[0], dtype=np.float64)
        scan = _scan(p, c, pi if (blend_f > 0.0 and eps_f < 1.0) else None)
        _check_budget(budget_i, scan.cmin)
        spend, size = _fill(pi, p, c, scan, float(budget_i), eps_f, blend_f)
        pi.flags.writeable = False
        rate = min(1.0, budget_i / scan.total_cost)
        return Design(pi, spend, size, eps_f, blend_f, budget_i, None, None, rate, scan.total_cost)
    scan = _scan(p, c, None)
    _check_budget(budget_i, scan.cmin)
    return _stratified_design(p, c, scan.total_cost, budget_i, eps_f, blend_f, strata, quotas)


def _check_budget(budget: int, cmin: int) -> None:
    if budget < cmin:
        raise SamplingError(
            "budget", f"budget {budget} is below the cheapest order ({cmin} minor units): it cannot buy any seller"
        )


def _stratified_design(
    p: FloatArray,
    c: npt.NDArray[Any],
    total_cost: int,
    budget: int,
    eps: float,
    blend: float,
    strata: npt.ArrayLike,
    quotas: dict[int, int] | None,
) -> Design:
    s = np.asarray(strata)
    if s.ndim != 1 or s.shape[0] != p.shape[0]:
        raise SamplingError("strata", "strata must be a 1-D array with one code per unit")
    if s.dtype.kind not in "iu":
        raise SamplingError("strata", f"strata must be integer codes, got dtype {s.dtype}")
    codes, inverse = np.unique(s, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(codes.shape[0] + 1))
    members = [order[bounds[h] : bounds[h + 1]] for h in range(codes.shape[0])]
    code_list = [int(x) for x in codes]

    sizes = np.array([m.shape[0] for m in members], dtype=np.float64)
    pbar = np.array([float(p[m].mean()) for m in members])
    ctot_int = [int(c[m].sum()) for m in members]
    ctot = np.array(ctot_int, dtype=np.float64)
    cbar = ctot / sizes
    score = sizes * np.sqrt(pbar * (1.0 - pbar)) * np.sqrt(cbar)

    lo = np.zeros(codes.shape[0])
    if quotas:
        if not isinstance(quotas, dict):
            raise SamplingError("quotas", "quotas must be a mapping of stratum code to minimum expected size")
        for key, q in quotas.items():
            if not _is_integer(q) or q < 0:
                raise SamplingError("quotas", f"quotas: the quota for stratum {key} must be a non-negative integer")
            if not _is_integer(key):
                raise SamplingError("quotas", f"quotas: keys must be integer stratum codes, got {key!r}")
            if int(key) not in code_list:
                raise SamplingError("quotas", f"quotas: stratum {key} has no units in the frame")
            h = code_list.index(int(key))
            if q > sizes[h]:
                raise SamplingError("quotas", f"quotas: quota {q} exceeds the {int(sizes[h])} units of stratum {key}")
            lo[h] = _min_budget_for_size(p[members[h]], c[members[h]], float(q), eps, blend)
        if float(lo.sum()) > budget * (1.0 + 1e-12):
            raise SamplingError(
                "quotas",
                f"quotas: meeting them needs an expected {lo.sum():.0f} minor units, above the budget {budget}",
            )
    census = budget >= total_cost
    alloc = ctot.copy() if census else _box_allocation(score, np.minimum(lo, ctot), ctot, float(budget))

    pi = np.empty(p.shape[0], dtype=np.float64)
    spend = size = 0.0
    for h, m in enumerate(members):
        pi_h, spend_h, size_h = _design_core(p[m], c[m], float(alloc[h]), eps, blend)
        pi[m] = pi_h
        spend += spend_h
        size += size_h
    if census:
        spend = float(total_cost)
    pi.flags.writeable = False
    strata_codes = s.astype(np.int64)
    strata_codes.flags.writeable = False
    return Design(
        pi,
        spend,
        size,
        eps,
        blend,
        budget,
        strata_codes,
        {code: float(alloc[h]) for h, code in enumerate(code_list)},
        {code: min(1.0, float(alloc[h]) / float(ctot[h])) for h, code in enumerate(code_list)},
        total_cost,
    )


# ------------------------------------------------------------------------------------------------- the draw


def _check_seed(seed: Any) -> int:
    if not _is_integer(seed) or seed < 0:
        raise SamplingError("seed", f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _refine_uniforms(seed: int, index: IntArray) -> FloatArray:
    """The refinement uniform ``V_i`` of each unit in ``index``: a function of ``(seed, i)`` only.

    ``V_i`` is the first double (53 bits, as ``Generator.random`` makes it) of numpy's counter-based ``Philox``
    keyed by the seed's refinement stream and started at counter ``i``; so it does not depend on which other
    units needed refining, and the same unit gets the same ``V_i`` in :func:`poisson_draw` and :func:`draw`.
    """
    key = np.random.SeedSequence(seed, spawn_key=(_REFINE_STREAM,)).generate_state(2, np.uint64)
    out = np.empty(index.shape[0], dtype=np.float64)
    for j, i in enumerate(index.tolist()):
        raw = int(np.random.Philox(key=key, counter=i).random_raw())
        out[j] = (raw >> 11) * 2.0**-53
    return out


def _select(pi: npt.NDArray[Any], seed: int) -> tuple[IntArray, npt.NDArray[np.integer[Any]]]:
    """The selected units and their first-stage integers ``k_i`` (see :func:`poisson_draw`)."""
    n = pi.shape[0]
    bits = _STAGE_BITS
    kind = "<u2" if bits == 16 else "<u1"
    per_word = 64 // bits
    scale = float(1 << bits)
    chunk = min(n, _DRAW_CHUNK)
    if _DRAW_CHUNK % 8:  # pragma: no cover - a constant
        raise AssertionError("the draw's chunk must be a multiple of 8")
    bitgen = np.random.default_rng(seed).bit_generator
    scaled = np.empty(chunk, dtype=np.float64)
    hit = np.empty(chunk, dtype=bool)
    index_parts: list[IntArray] = []
    k_parts: list[npt.NDArray[np.integer[Any]]] = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        m = stop - start
        pc = pi[start:stop]
        lo, hi = float(pc.min()), float(pc.max())
        if not (lo > 0.0 and hi <= 1.0):  # NaN fails both comparisons
            raise SamplingError("pi", "pi (inclusion probabilities) must be finite and in (0, 1]")
        # the raw 64-bit words cut into little-endian pieces: the stream Generator.integers(0, 2**bits) makes
        words = bitgen.random_raw(-(-m // per_word))
        k = words.astype("<u8", copy=False).view(kind)[:m]
        s = np.multiply(pc, scale, out=scaled[:m])  # exact: a power of two
        cand = np.flatnonzero(np.less(k, s, out=hit[:m]))  # k < pi * 2^b, i.e. U_i could be below pi_i
        k_c = k[cand]
        room = s[cand] - k_c  # exact (see poisson_draw); >= 1 means U_i < pi_i whatever V_i
        tie = np.flatnonzero(room < 1.0)
        if tie.shape[0]:
            v = _refine_uniforms(seed, cand[tie] + start)
            keep = np.ones(cand.shape[0], dtype=bool)
            keep[tie] = v < room[tie]
            cand, k_c = cand[keep], k_c[keep]
        index_parts.append((cand + start).astype(np.int64, copy=False))
        k_parts.append(k_c)
    if len(index_parts) == 1:
        return index_parts[0], k_parts[0]
    return np.concatenate(index_parts), np.concatenate(k_parts)


def _as_pi(pi: npt.ArrayLike) -> npt.NDArray[Any]:
    try:
        arr = np.asarray(pi)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise SamplingError("pi", "pi must be a 1-D numeric array") from exc
    if arr.ndim != 1:
        raise SamplingError("pi", "pi must be a 1-D array")
    if arr.dtype.kind not in "biuf":
        raise SamplingError("pi", f"pi must be numeric, got dtype {arr.dtype}")
    return arr


def poisson_draw(pi: npt.ArrayLike, seed: int) -> IntArray:
    """Sorted int64 indices of a Poisson sample: unit ``i`` is selected independently w.p. ``pi[i]``.

    Unit ``i`` has the uniform ``U_i = (k_i + V_i) / 2**16`` and is selected iff ``U_i < pi_i``, where

    * ``k_i`` is the ``i``-th of ``numpy.random.default_rng(seed).integers(0, 2**16, n, dtype=np.uint16)``,
      i.e. the ``i``-th little-endian 16-bit piece of the generator's raw 64-bit words (PCG64; read chunk by
      chunk, the same stream; 16 bits per unit, four units per word, is what makes the draw fast);
    * ``V_i`` in [0, 1) (53 bits) is needed only when ``k_i == floor(pi_i * 2**16)``, the one case the first
      stage cannot decide (probability at most ``2**-16`` per unit); it comes from a counter-based generator
      keyed by the seed and ``i`` (see :func:`_refine_uniforms`).

    So ``P(selected) = floor(pi_i 2^16) / 2^16 + 2^-16 P(V_i < frac(pi_i 2^16))``, which is ``pi_i`` to within
    ``2**-69``: exact for every pi, including pi far below the first stage's resolution (a pi of 1e-9 is drawn
    with probability 1e-9, not 2**-16). A seed always gives the same sample (record it with the round); the
    samples differ from those of releases before issue 9, which used one float64 uniform per unit.
    """
    s = _check_seed(seed)
    arr = _as_pi(pi)
    if arr.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    return _select(arr, s)[0]


def draw(d: Design, seed: int) -> Draw:
    """:func:`poisson_draw` on ``d.pi`` with the same uniforms, plus which selected units are exploration units.

    Unit ``i`` is selected iff ``U_i < pi_i`` and is an exploration unit iff ``U_i < q_i`` (``q_i <= pi_i``, see
    :meth:`Design.exploration_pi`): the same seed selects the same units as :func:`poisson_draw`. The flags come
    from the same pass (the selected units' first-stage integers and, for the rare ties, the same ``V_i``).
    """
    s = _check_seed(seed)
    if d.pi.shape[0] == 0:  # pragma: no cover - a design always has units
        return Draw(np.empty(0, dtype=np.int64), np.zeros(0, dtype=bool))
    index, k = _select(d.pi, s)
    if index.shape[0] == 0:
        return Draw(index, np.zeros(0, dtype=bool))
    room = d.exploration_pi(index) * float(1 << _STAGE_BITS) - k  # exact where positive
    exploration = room >= 1.0
    tie = np.flatnonzero((room > 0.0) & (room < 1.0))
    if tie.shape[0]:
        exploration[tie] = _refine_uniforms(s, index[tie]) < room[tie]
    return Draw(index, exploration)


def check_unique_ids(ids: Sequence[str]) -> None:
    """Raise ``SamplingError('seller_id', ...)`` if any seller id occurs more than once in the frame."""
    seen: set[str] = set()
    dupes: list[str] = []
    for sid in ids:
        if sid in seen:
            dupes.append(sid)
        else:
            seen.add(sid)
    if dupes:
        shown = ", ".join(sorted(set(dupes))[:5])
        raise SamplingError(
            "seller_id", f"seller_id must be unique: {len(dupes)} duplicate(s) in the frame, e.g. {shown}"
        )
