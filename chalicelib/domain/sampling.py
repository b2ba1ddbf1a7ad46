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
the uniform design): every eligible seller can be chosen. If ``B >= C`` every ``pi_i = 1`` (a census).

Strata
------
With ``strata`` (integer codes, e.g. categories) the budget is first split with cost-aware Neyman allocation,
``B_h ∝ N_h * S_h * sqrt(cbar_h)`` with ``S_h = sqrt(pbar_h * (1 - pbar_h))`` from the stratum's mean risk and
``cbar_h`` its mean cost (equivalently expected size ``n_h ∝ N_h S_h / sqrt(cbar_h)``), subject to
``B_h <= C_h`` (a stratum can at most be censused) and to ``B_h >= Q_h``, the smallest budget whose
within-stratum design has expected size ``quotas[h]``. The within-stratum design is the one above with budget
``B_h``, so the floor becomes ``pi_i >= eps * B_h / C_h`` there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from chalicelib.domain.errors import InvalidInput

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_DRAW_CHUNK = 1 << 20
_MAX_CAP_PASSES = 64


class SamplingError(InvalidInput, ValueError):
    """Invalid sampling input. ``field`` names the offending input (``risk``, ``cost``, ``budget`` ...)."""

    code = "invalid_sampling_input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", details={"field": field})
        self.field = field


@dataclass(frozen=True, eq=False)
class Design:
    """Inclusion probabilities of one round and what they imply.

    ``pi`` is read-only float64 with ``0 < pi <= 1``; ``expected_spend = sum(cost * pi)`` (minor units) and
    ``expected_size = sum(pi)``. ``stratum_budgets`` holds the allocated budget per stratum code when
    stratified.
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
            codes = self.strata[idx]
            rates = np.fromiter((self.uniform_rate[int(k)] for k in codes), dtype=np.float64, count=codes.shape[0])
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


def _as_float_array(values: Any, field: str) -> FloatArray:
    try:
        arr = np.asarray(values)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise SamplingError(field, "must be a 1-D numeric array") from exc
    if arr.ndim != 1:
        raise SamplingError(field, "must be a 1-D array")
    if arr.dtype.kind not in "biuf":
        raise SamplingError(field, f"must be numeric, got dtype {arr.dtype}")
    out: FloatArray = arr.astype(np.float64, copy=False)
    return out


def _validate_frame(risk: Any, cost: Any) -> tuple[FloatArray, FloatArray]:
    p = _as_float_array(risk, "risk")
    c_raw = np.asarray(cost)
    if c_raw.ndim != 1:
        raise SamplingError("cost", "must be a 1-D array")
    if c_raw.dtype.kind not in "iuf":
        raise SamplingError("cost", f"must be integer minor units, got dtype {c_raw.dtype}")
    if p.shape[0] == 0 or c_raw.shape[0] == 0:
        raise SamplingError("frame", "the frame is empty")
    if p.shape[0] != c_raw.shape[0]:
        raise SamplingError("frame", f"risk has {p.shape[0]} units but cost has {c_raw.shape[0]}")
    # min/max are single passes, no temporaries; NaN propagates through both.
    pmin, pmax = float(p.min()), float(p.max())
    if not (math.isfinite(pmin) and math.isfinite(pmax)):
        raise SamplingError("risk", "must be finite")
    if pmin <= 0.0 or pmax >= 1.0:
        raise SamplingError("risk", "every risk must lie strictly between 0 and 1")
    c = c_raw.astype(np.float64)  # always a fresh copy: it is reused as scratch space below
    cmin, cmax = float(c.min()), float(c.max())
    if not (math.isfinite(cmin) and math.isfinite(cmax)):
        raise SamplingError("cost", "must be finite")
    if cmin <= 0.0:
        raise SamplingError("cost", "every cost must be positive")
    return p, c


def _capped_scale(w: FloatArray, c: FloatArray, budget: float, total_cw: float) -> tuple[float, bool]:
    """Scale ``lam`` with ``sum(c * min(1, lam * w)) == budget`` and whether any unit caps; needs budget < sum(c).

    Newton iteration from below on the concave piecewise-linear spend function: fix the units that cap at the
    current scale, rescale the rest so the spend is met, repeat until the capped set stops growing.
    """
    lam = budget / total_cw
    if lam * float(w.max()) < 1.0:  # the common case: one reduction, nothing caps
        return lam, False
    n_capped = 0
    for _ in range(_MAX_CAP_PASSES):
        capped = np.flatnonzero(w >= 1.0 / lam)
        if capped.size == n_capped:
            return lam, True
        n_capped = capped.size
        cap_cost = float(c[capped].sum())
        if 2 * n_capped > w.shape[0]:
            free = np.ones(w.shape[0], dtype=bool)
            free[capped] = False
            free_cw = float(np.dot(c[free], w[free]))
        else:
            free_cw = total_cw - float(np.dot(c[capped], w[capped]))
        lam = (budget - cap_cost) / free_cw
    return _capped_scale_exact(w, c, budget), True


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
    raise SamplingError("budget", "no feasible scaling (budget at or above the frame cost)")  # pragma: no cover


def _component_into(out: FloatArray, lam: float, capped: bool, factor: float) -> None:
    """``out = factor * min(1, lam * out)`` in place (one pass when nothing caps)."""
    if capped:
        out *= lam
        np.minimum(out, 1.0, out=out)
        out *= factor
    else:
        out *= lam * factor


def _design_arrays(p: FloatArray, c: FloatArray, budget: float, eps: float, blend: float) -> FloatArray:
    """Inclusion probabilities for one (sub)frame; ``c`` is float64 and is overwritten as scratch space.

    Inputs are assumed valid. Returns a fresh float64 array.
    """
    total_cost = float(c.sum())
    if budget >= total_cost:
        return np.ones(p.shape[0], dtype=np.float64)
    uniform = budget / total_cost
    pi: FloatArray
    if eps >= 1.0:
        pi = np.full(p.shape[0], uniform, dtype=np.float64)
        return pi
    any_capped = False
    if blend > 0.0:
        # estimation component sqrt(p / c); sum(c * w) = sum(sqrt(p * c)) = dot(c, w)
        pi = np.divide(p, c)
        np.sqrt(pi, out=pi)
        lam_a, any_capped = _capped_scale(pi, c, budget, float(np.dot(c, pi)))
        _component_into(pi, lam_a, any_capped, (1.0 - eps) * blend)
        if blend < 1.0:
            lam_b, capped_b = _capped_scale(p, c, budget, float(np.dot(c, p)))
            any_capped |= capped_b
            # reuse the cost buffer for the hunting component: c is not needed after this line
            hunt = np.multiply(p, lam_b, out=c)
            _component_into(hunt, 1.0, capped_b, (1.0 - eps) * (1.0 - blend))
            pi += hunt
    else:
        lam_b, any_capped = _capped_scale(p, c, budget, float(np.dot(c, p)))
        pi = np.multiply(p, lam_b)
        _component_into(pi, 1.0, any_capped, 1.0 - eps)
    pi += eps * uniform
    if any_capped:
        # guard the last ulp: a mixture of values <= 1 can round to 1 + 2e-16 (without caps every part is < 1)
        np.minimum(pi, 1.0, out=pi)
    return pi


def _expected_size(p: FloatArray, c: FloatArray, budget: float, eps: float, blend: float) -> float:
    return float(_design_arrays(p, c.copy(), budget, eps, blend).sum())


def _min_budget_for_size(p: FloatArray, c: FloatArray, size: float, eps: float, blend: float) -> float:
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


def _validate_params(budget: Any, eps: float, blend: float, cmin: float) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer):
        raise SamplingError("budget", "must be an integer amount of minor units")
    if budget < cmin:
        raise SamplingError("budget", f"budget {budget} is below the cheapest order ({cmin:.0f})")
    if not (isinstance(eps, int | float) and math.isfinite(eps) and 0.0 < eps <= 1.0):
        raise SamplingError("eps", "must satisfy 0 < eps <= 1")
    if not (isinstance(blend, int | float) and math.isfinite(blend) and 0.0 <= blend <= 1.0):
        raise SamplingError("blend", "must satisfy 0 <= blend <= 1")


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

    ``risk`` are model probabilities in (0, 1), ``cost`` expected order costs in integer minor units,
    ``budget`` the round budget in minor units. ``eps`` (0 < eps <= 1) is the uniform share that guarantees
    every seller a chance; ``blend`` weighs the estimation component (``blend=1``, pi ∝ sqrt(p/c)) against the
    hunting component (``blend=0``, pi ∝ p). With ``strata`` the budget is split by cost-aware Neyman
    allocation, with optional ``quotas`` (minimum expected sample size per stratum code). See the module
    docstring for the exact formulas.

    Raises :class:`SamplingError` naming the offending field.
    """
    p, c = _validate_frame(risk, cost)
    _validate_params(budget, eps, blend, float(c.min()))
    eps, blend, budget = float(eps), float(blend), int(budget)
    if strata is None:
        if quotas:
            raise SamplingError("quotas", "quotas need strata")
        total_cost = float(c.sum())
        pi = _design_arrays(p, c, float(budget), eps, blend)
        del c
        spend = total_cost if budget >= total_cost else _spend(pi, cost)
        pi.flags.writeable = False
        return Design(pi, spend, float(pi.sum()), eps, blend, budget, None, None, min(1.0, budget / total_cost))
    return _stratified_design(p, c, budget, eps, blend, strata, quotas)


def _spend(pi: FloatArray, cost: npt.ArrayLike) -> float:
    """``sum(cost * pi)`` without a full-size temporary: dot in chunks of the integer costs."""
    c = np.asarray(cost)
    total = 0.0
    for start in range(0, pi.shape[0], _DRAW_CHUNK):
        stop = start + _DRAW_CHUNK
        total += float(np.dot(c[start:stop].astype(np.float64), pi[start:stop]))
    return total


def _stratified_design(
    p: FloatArray,
    c: FloatArray,
    budget: int,
    eps: float,
    blend: float,
    strata: npt.ArrayLike,
    quotas: dict[int, int] | None,
) -> Design:
    s = np.asarray(strata)
    if s.ndim != 1 or s.shape[0] != p.shape[0]:
        raise SamplingError("strata", "must be a 1-D array with one code per unit")
    if s.dtype.kind not in "iu":
        raise SamplingError("strata", f"must be integer codes, got dtype {s.dtype}")
    codes, inverse = np.unique(s, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(codes.shape[0] + 1))
    members = [order[bounds[h] : bounds[h + 1]] for h in range(codes.shape[0])]
    code_list = [int(x) for x in codes]

    sizes = np.array([m.shape[0] for m in members], dtype=np.float64)
    pbar = np.array([float(p[m].mean()) for m in members])
    cbar = np.array([float(c[m].mean()) for m in members])
    ctot = sizes * cbar
    score = sizes * np.sqrt(pbar * (1.0 - pbar)) * np.sqrt(cbar)

    lo = np.zeros(codes.shape[0])
    if quotas:
        for key, q in quotas.items():
            if isinstance(q, bool) or not isinstance(q, int | np.integer) or q < 0:
                raise SamplingError("quotas", f"quota for stratum {key} must be a non-negative integer")
            if key not in code_list:
                raise SamplingError("quotas", f"stratum {key} has no units in the frame")
            h = code_list.index(key)
            if q > sizes[h]:
                raise SamplingError("quotas", f"quota {q} exceeds the {int(sizes[h])} units of stratum {key}")
            lo[h] = _min_budget_for_size(p[members[h]], c[members[h]], float(q), eps, blend)
        if float(lo.sum()) > budget * (1.0 + 1e-12):
            raise SamplingError(
                "quotas",
                f"meeting the quotas needs an expected {lo.sum():.0f} minor units, above the budget {budget}",
            )
    total_cost = float(ctot.sum())
    census = budget >= total_cost
    alloc = ctot.copy() if census else _box_allocation(score, np.minimum(lo, ctot), ctot, float(budget))

    pi = np.empty(p.shape[0], dtype=np.float64)
    for h, m in enumerate(members):
        pi[m] = _design_arrays(p[m], c[m], float(alloc[h]), eps, blend)
    spend = total_cost if budget >= total_cost else float(np.dot(c, pi))
    pi.flags.writeable = False
    strata_codes = s.astype(np.int64)
    strata_codes.flags.writeable = False
    return Design(
        pi,
        spend,
        float(pi.sum()),
        eps,
        blend,
        budget,
        strata_codes,
        {code: float(alloc[h]) for h, code in enumerate(code_list)},
        {code: min(1.0, float(alloc[h]) / float(ctot[h])) for h, code in enumerate(code_list)},
    )


def poisson_draw(pi: npt.ArrayLike, seed: int) -> IntArray:
    """Sorted int64 indices of a Poisson sample: unit ``i`` is selected independently w.p. ``pi[i]``.

    Uses ``numpy.random.default_rng(seed)`` and one uniform per unit in index order, so a seed always gives
    the same sample (record it with the round). Works in chunks to keep memory flat.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise SamplingError("seed", "must be a non-negative integer")
    arr = _as_float_array(pi, "pi")
    if arr.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    lo, hi = float(arr.min()), float(arr.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo <= 0.0 or hi > 1.0:
        raise SamplingError("pi", "inclusion probabilities must be finite and in (0, 1]")
    rng = np.random.default_rng(int(seed))
    n = arr.shape[0]
    chunk = min(n, _DRAW_CHUNK)
    u = np.empty(chunk, dtype=np.float64)
    hit = np.empty(chunk, dtype=bool)
    parts: list[IntArray] = []
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        rng.random(size, out=u[:size])
        np.less(u[:size], arr[start : start + size], out=hit[:size])
        idx = np.flatnonzero(hit[:size])
        if start:
            idx += start
        parts.append(idx.astype(np.int64, copy=False))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def draw(d: Design, seed: int) -> Draw:
    """:func:`poisson_draw` on ``d.pi`` with the same uniforms, plus which selected units are exploration units.

    Unit ``i`` is selected iff ``U_i < pi_i`` and is an exploration unit iff ``U_i < q_i`` (``q_i <= pi_i``, see
    :meth:`Design.exploration_pi`): the same seed selects the same units as :func:`poisson_draw`.
    """
    index = poisson_draw(d.pi, seed)
    if index.shape[0] == 0:
        return Draw(index, np.zeros(0, dtype=bool))
    u = _uniforms_at(d.pi.shape[0], seed, index)
    return Draw(index, u < d.exploration_pi(index))


def _uniforms_at(n: int, seed: int, index: IntArray) -> FloatArray:
    """The uniforms :func:`poisson_draw` drew for the units ``index`` (regenerated chunk by chunk)."""
    rng = np.random.default_rng(int(seed))
    chunk = min(n, _DRAW_CHUNK)
    out = np.empty(index.shape[0], dtype=np.float64)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        u = rng.random(size)
        lo, hi = np.searchsorted(index, [start, start + size])
        if hi > lo:
            out[lo:hi] = u[index[lo:hi] - start]
    return out


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
        raise SamplingError("seller_id", f"{len(dupes)} duplicate seller id(s) in the frame, e.g. {shown}")
