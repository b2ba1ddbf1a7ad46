"""Monte Carlo study of interval candidates for the Hajek prevalence under the risk-weighted Poisson design.

Grid: prevalence {0.001, 0.005, 0.02, 0.05, 0.1} x risk model {informative (AUC 0.8), useless (AUC 0.5),
misleading (the informative scores reversed)} x size {300 buys / 20,000 sellers, 1,500 / 50,000, 5,000 /
100,000}; costs lognormal around 10,000 minor units (sdlog 0.4); design = ``sampling.design`` with its defaults
(eps=0.1, blend as passed). Each cell: ``--rounds`` independent Poisson draws on one fixed frame, plus the
same number of two-round combinations (``combine_rounds`` of consecutive rounds).

Every candidate is computed from seven per-round sums (n, hits, sum w, sum w y, sum (1-pi) w^2 y,
sum (1-pi) w^2 (1-y), sum w^2), so the rounds are vectorised: the draws of a chunk of rounds are one
matrix of uniforms and the sums one matrix product. Prints one JSON line (the table); progress on stderr.
Usage: ``python benchmarks/interval_study.py [--rounds 2000] [--blend 0.25]`` (a few minutes on one core).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from statistics import NormalDist

import numpy as np

from chalicelib.domain.sampling import design
from testbuy.sim.frames import synthetic_frame as make_frame

PREVALENCES = (0.001, 0.005, 0.02, 0.05, 0.1)
MODELS = ("informative", "useless", "misleading")
SIZES = ((20_000, 300), (50_000, 1_500), (100_000, 5_000))
Z = NormalDist().inv_cdf(0.975)


def round_sums(y: np.ndarray, pi: np.ndarray, rounds: int, seed: int, chunk: int = 100) -> np.ndarray:
    """(rounds, 7) array: n, hits, Sw, Swy, A1, A0, Sw2 for independent Poisson draws."""
    w = 1.0 / pi
    yf = y.astype(np.float64)
    a = (1.0 - pi) * w * w
    cols = np.stack([np.ones_like(w), yf, w, w * yf, a * yf, a * (1 - yf), w * w, w * w * yf, a * w], axis=1)
    rng = np.random.default_rng(seed)
    out = np.empty((rounds, 9))
    for start in range(0, rounds, chunk):
        k = min(chunk, rounds - start)
        mask = (rng.random((k, pi.shape[0]), dtype=np.float32) < pi.astype(np.float32)).astype(np.float64)
        out[start : start + k] = mask @ cols
    return out


# ------------------------------------------------------------------ vectorised beta / Clopper-Pearson


def _betacf(a: np.ndarray, b: np.ndarray, x: np.ndarray, iters: int = 400) -> np.ndarray:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = 1.0 / np.where(np.abs(d) > tiny, d, tiny)
    h = d.copy()
    for m in range(1, iters):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / np.where(np.abs(d) > tiny, d, tiny)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) > tiny, c, tiny)
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / np.where(np.abs(d) > tiny, d, tiny)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) > tiny, c, tiny)
        delta = d * c
        h *= delta
        if np.all(np.abs(delta - 1.0) < 1e-14):
            break
    return h


def betainc(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    from math import lgamma

    lg = np.vectorize(lgamma)
    x = np.clip(x, 1e-300, 1 - 1e-16)
    front = np.exp(lg(a + b) - lg(a) - lg(b) + a * np.log(x) + b * np.log1p(-x))
    direct = x < (a + 1.0) / (a + b + 2.0)
    out = np.empty_like(x)
    if direct.any():
        out[direct] = front[direct] * _betacf(a[direct], b[direct], x[direct]) / a[direct]
    if (~direct).any():
        nd = ~direct
        out[nd] = 1.0 - front[nd] * _betacf(b[nd], a[nd], 1.0 - x[nd]) / b[nd]
    return out


def beta_quantile(q: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo = np.full(a.shape, -745.0)  # bisection on log x
    hi = np.zeros(a.shape)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = betainc(a, b, np.exp(mid)) < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return np.exp(0.5 * (lo + hi))


def clopper_pearson(x: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.clip(x, 0.0, n)
    low = np.zeros_like(x)
    high = np.ones_like(x)
    m = x > 1e-12
    if m.any():
        low[m] = beta_quantile(0.025, x[m], n[m] - x[m] + 1.0)
    m = (n - x) > 1e-12
    if m.any():
        high[m] = beta_quantile(0.975, x[m] + 1.0, n[m] - x[m])
    return low, high


def wilson(p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z2 = Z * Z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2.0 * n)) / denom
    half = Z / denom * np.sqrt(np.maximum(p * (1.0 - p), 0.0) / n + z2 / (4.0 * n * n))
    return np.maximum(0.0, center - half), np.minimum(1.0, center + half)


def wilson_or_cp(p: np.ndarray, n_ci: np.ndarray, hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The module's current rule: Clopper-Pearson when raw hits < 5 or effective counts < 5, else Wilson."""
    x = p * n_ci
    small = (hits < 5) | (x < 5) | (n_ci - x < 5)
    lo, hi = wilson(p, n_ci)
    if small.any():
        cl, ch = clopper_pearson(x[small], n_ci[small])
        lo[small], hi[small] = cl, ch
    return lo, hi


# ------------------------------------------------------------------ candidates


def base(s: np.ndarray) -> dict[str, np.ndarray]:
    n, x, sw, swy, a1, a0, sw2, sw2y, aw = s.T
    p = swy / sw
    v = ((1 - p) ** 2 * a1 + p * p * a0) / (sw * sw)
    kx = np.where(x > 0, swy * swy / np.where(sw2y > 0, sw2y, 1.0), 0.0)
    return {
        "n": n,
        "x": x,
        "sw": sw,
        "swy": swy,
        "a1": a1,
        "a0": a0,
        "p": p,
        "v": v,
        "kish": sw * sw / sw2,
        "kx": kx,
        "amis": aw / sw2,
    }


def coefs(b: dict[str, np.ndarray], k0: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit variance coefficients of fakes and non-fakes: V(p0) = p0 (1-p0) [(1-p0) cF + p0 cN]."""
    apop = (b["a0"] + b["a1"]) / b["sw"]
    m = k0 * b["sw"] / b["n"]
    af = (b["a1"] + m * apop) / (b["swy"] + m)
    an = (b["a0"] + m * apop) / (b["sw"] - b["swy"] + m)
    return af / b["sw"], an / b["sw"]


def score_bounds(p: np.ndarray, cf: np.ndarray, cn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Invert |p - p0| <= z sqrt(V(p0)), V(p0) = p0 (1-p0) [(1-p0) cF + p0 cN] (bisection on each side)."""

    def g(p0: np.ndarray) -> np.ndarray:
        return (p - p0) ** 2 - Z * Z * p0 * (1 - p0) * ((1 - p0) * cf + p0 * cn)

    lo_a, lo_b = np.zeros_like(p), p.copy()  # g(lo_a) >= 0 >= g(lo_b)
    hi_a, hi_b = p.copy(), np.ones_like(p)  # g(hi_a) <= 0 <= g(hi_b)
    for _ in range(70):
        mid = 0.5 * (lo_a + lo_b)
        pos = g(mid) > 0
        lo_a = np.where(pos, mid, lo_a)
        lo_b = np.where(pos, lo_b, mid)
        mid = 0.5 * (hi_a + hi_b)
        pos = g(mid) > 0
        hi_b = np.where(pos, mid, hi_b)
        hi_a = np.where(pos, hi_a, mid)
    return np.where(p > 0, lo_a, 0.0), hi_b


def tq(df: np.ndarray) -> np.ndarray:
    """Exact Student t 0.975 quantile: P(|T| > t) = I_{df/(df+t^2)}(df/2, 1/2) = 0.05 (df >= 1)."""
    d = np.maximum(df, 1.0)
    out = np.full(d.shape, Z)
    m = d < 1e6
    if m.any():
        xq = beta_quantile(0.05, d[m] / 2.0, np.full(int(m.sum()), 0.5))
        out[m] = np.sqrt(d[m] * (1.0 / xq - 1.0))
    return out


def family(b, k0, anchor, df_kind, small_hits=10):
    p, x = b["p"], b["x"]
    cf, cn = coefs(b, k0)
    if anchor:
        zero = x == 0
        cf = np.where(zero, np.maximum(cf, b["amis"] / b["sw"]), cf)
    infl = np.ones_like(p)
    if df_kind == "kish":
        infl = (tq(b["kx"] - 1) / Z) ** 2
    elif df_kind == "hits":
        infl = (tq(x - 1) / Z) ** 2
    elif df_kind == "hits5":
        infl = (tq(np.maximum(x - 1, 5.0)) / Z) ** 2
    infl = np.where(x == 0, 1.0, infl)
    cf = cf * infl
    cn = cn * infl
    sl, sh = score_bounds(p, cf, cn)
    nstar = 1.0 / ((1 - p) * cf + p * cn)
    small = x < small_hits
    if small.any():
        l2, h2 = clopper_pearson(p[small] * nstar[small], nstar[small])
        sl[small], sh[small] = l2, h2
    return sl, sh


def candidates(s: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    b = base(s)

    p, v, n, x, kish = b["p"], b["v"], b["n"], b["x"], b["kish"]
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    kg = np.where((x >= 5) & (v > 0), p * (1 - p) / np.where(v > 0, v, 1.0), kish)
    out["current (KG capped at n, Kish <5 hits)"] = wilson_or_cp(p, np.minimum(kg, np.where(x >= 5, n, kish)), x)
    out["KG uncapped"] = wilson_or_cp(p, kg, x)
    out["Kish deff Wilson/CP"] = wilson_or_cp(p, kish, x)
    out.update(new_candidates(b))
    return out


NEW_ONLY = False


def new_candidates(b):
    out = {}
    out["S: score k0=.5, CP<10"] = family(b, 0.5, False, None)
    out["S+anchor0"] = family(b, 0.5, True, None)
    out["S+anchor0+t(kish hits)"] = family(b, 0.5, True, "kish")
    out["S+anchor0+t(hits)"] = family(b, 0.5, True, "hits")
    out["S+anchor0+t(max(hits-1,5)) (chosen)"] = family(b, 0.5, True, "hits5")
    return out


def combine(s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """Two rounds of the same frame combined (equal frame sizes): sums that reproduce combine_rounds' formulas."""
    # p = (p1 + p2)/2, V(p0) = (V1 + V2)/4: equivalent to pooling with each round's weights scaled by 1/Sw_r
    return np.stack([s1, s2])


def evaluate_cell(y, pi, rounds, seed, truth):
    s = round_sums(y, pi, 2 * rounds, seed)
    res = {}
    single = candidates(s[:rounds])
    # two-round combination: p = mean of the two, coefficient cF, cN averaged / 4 (a_r = 1/2)
    comb = combined_candidates(s[:rounds], s[rounds:])
    for name, (lo, hi) in single.items():
        res[name] = {
            "cov": float(np.mean((lo <= truth) & (truth <= hi))),
            "width": float(np.mean(hi - lo)),
        }
    for name, (lo, hi) in comb.items():
        res[name]["cov2"] = float(np.mean((lo <= truth) & (truth <= hi)))
    res["hits"] = float(s[:rounds, 1].mean())
    return res


def combined_candidates(s1: np.ndarray, s2: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    b1, b2 = base(s1), base(s2)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if True:
        bc = {}
        bc["p"] = 0.5 * (b1["p"] + b2["p"])
        bc["x"] = b1["x"] + b2["x"]
        bc["n"] = b1["n"] + b2["n"]

        for name, k0, anchor, dfk in [
            ("S: score k0=.5, CP<10", 0.5, False, None),
            ("S+anchor0", 0.5, True, None),
            ("S+anchor0+t(kish hits)", 0.5, True, "kish"),
            ("S+anchor0+t(hits)", 0.5, True, "hits"),
            ("S+anchor0+t(max(hits-1,5)) (chosen)", 0.5, True, "hits5"),
        ]:
            cfs, cns = [], []
            for bb in (b1, b2):
                cf, cn = coefs(bb, k0)
                if anchor:
                    cf = np.where(bb["x"] == 0, np.maximum(cf, bb["amis"] / bb["sw"]), cf)
                cfs.append(cf)
                cns.append(cn)
            cf = 0.25 * (cfs[0] + cfs[1])
            cn = 0.25 * (cns[0] + cns[1])
            x = bc["x"]
            p = bc["p"]
            # kish count of hits of the combined: hits weighted by a_r w
            kx = np.where(
                x > 0,
                (0.5 * b1["swy"] / b1["sw"] + 0.5 * b2["swy"] / b2["sw"]) ** 2
                / np.maximum(0.25 * s1[:, 7] / b1["sw"] ** 2 + 0.25 * s2[:, 7] / b2["sw"] ** 2, 1e-300),
                0.0,
            )
            infl = np.ones_like(p)
            if dfk == "kish":
                infl = (tq(kx - 1) / Z) ** 2
            elif dfk == "hits":
                infl = (tq(x - 1) / Z) ** 2
            elif dfk == "hits5":
                infl = (tq(np.maximum(x - 1, 5.0)) / Z) ** 2
            infl = np.where(x == 0, 1.0, infl)
            cf = cf * infl
            cn = cn * infl
            sl, sh = score_bounds(p, cf, cn)
            nstar = 1.0 / ((1 - p) * cf + p * cn)
            small = x < 10
            if small.any():
                l2, h2 = clopper_pearson(p[small] * nstar[small], nstar[small])
                sl[small], sh[small] = l2, h2
            out[name] = (sl, sh)
    p = 0.5 * (b1["p"] + b2["p"])
    v = 0.25 * (b1["v"] + b2["v"])
    x = b1["x"] + b2["x"]
    n = b1["n"] + b2["n"]
    kish = 1.0 / (0.25 / b1["kish"] + 0.25 / b2["kish"])
    kg = np.where((x >= 5) & (v > 0), p * (1 - p) / np.where(v > 0, v, 1.0), kish)
    out["current (KG capped at n, Kish <5 hits)"] = wilson_or_cp(p, np.minimum(kg, np.where(x >= 5, n, kish)), x)
    out["KG uncapped"] = wilson_or_cp(p, kg, x)
    out["Kish deff Wilson/CP"] = wilson_or_cp(p, kish, x)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--blend", type=float, default=0.25)
    ap.add_argument("--sizes", default="0,1,2")
    args = ap.parse_args()
    table = []
    t0 = time.perf_counter()
    for si in [int(v) for v in args.sizes.split(",")]:
        n_frame, buys = SIZES[si]
        for prev in PREVALENCES:
            for model in MODELS:
                y, risk, cost = make_frame(n_frame, prev, model, seed=1000 + si)
                dsg = design(risk, cost, int(buys * cost.mean()), eps=0.1, blend=args.blend)
                res = evaluate_cell(y, np.asarray(dsg.pi), args.rounds, seed=77 + si, truth=float(y.mean()))
                table.append({"frame": n_frame, "buys": buys, "prevalence": prev, "model": model, **res})
                print(
                    f"{time.perf_counter() - t0:7.1f}s {n_frame} {buys} {prev} {model} hits={res['hits']:.1f}",
                    file=sys.stderr,
                )
    print(json.dumps({"blend": args.blend, "rounds": args.rounds, "table": table}))


if __name__ == "__main__":
    main()
