"""Coverage of the prevalence interval under the default risk-weighted design, and its hunting lift.

Frame: 50,000 eligible sellers; order costs lognormal, ``round(exp(N(ln 10,000, 0.4)))`` minor units; budget
``int(1,500 * mean cost)`` (about 1,500 expected buys, 3%); the DEFAULT design, ``sampling.design(risk, cost,
budget)`` (eps and blend at their defaults). Each prevalence has exactly ``round(prevalence * 50,000)``
counterfeit sellers, placed at random.

Risk models (calibrated binormal scores, as a well-fitted model produces): a latent ``z ~ N(d y, 1)`` mapped to
``P(y = 1 | z) = logistic(logit(prevalence) + d z - d^2 / 2)``. Informative: ``d = 1.190`` (ROC AUC
``Phi(d / sqrt 2) = 0.80``); useless: ``d = 0``; misleading: the informative construction applied to ``-z``, so
high-risk sellers are *less* likely to be counterfeit (AUC 0.20).

For each prevalence in {0.1%, 0.5%, 5%} and model: ``--rounds`` (default 4,000) independent Poisson draws on the
one fixed frame, each estimated by :func:`chalicelib.domain.estimation.estimate` -- the shipped code, one call
per round -- and the 95% interval checked against the true prevalence. The draws of a chunk of rounds are one
matrix of uniforms (vectorised); the estimates are per round (about 3 ms each).

Output (one JSON line on stdout; progress on stderr): ``coverage`` / ``coverage_useless`` /
``coverage_misleading`` keyed by prevalence; ``expected_hits`` (informative; ``expected_hits_useless`` and
``expected_hits_misleading`` likewise) = ``sum(pi * y)``, exact; ``census_width`` = the interval width of a
round whose budget buys the whole frame; ``lift`` = the default design's expected hits per unit of budget over
uniform sampling's, ``(sum(pi y) / B) / (Y / C)``, exact, at 0.5% prevalence with the informative model;
``rounds`` per cell. Done when every coverage >= 0.94, <= 0.965 where >= 20 hits are expected, lift >= 3,
census_width == 0. Why 4,000 rounds (the issue asks for at least 2,000): the Monte Carlo standard error of a
coverage near 0.95 is ``sqrt(.95 * .05 / R)``, 0.0049 at 2,000 rounds, about the margin between the true
coverage and the 0.94 / 0.965 goals in some cells; 4,000 rounds bring it to 0.0034. About 1-2 minutes on one
core.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import numpy as np
import numpy.typing as npt

from chalicelib.domain.estimation import estimate
from chalicelib.domain.sampling import design, poisson_draw
from testbuy.sim.frames import synthetic_frame as make_frame

N_SELLERS = 50_000
EXPECTED_BUYS = 1_500
PREVALENCES = (0.001, 0.005, 0.05)
MODELS = {"informative": "", "useless": "_useless", "misleading": "_misleading"}


def coverage(y: npt.NDArray[np.int8], pi: npt.NDArray[np.float64], rounds: int, seed: int) -> float:
    """Share of ``rounds`` Poisson draws whose interval contains the true prevalence."""
    truth = float(y.mean())
    rng = np.random.default_rng(seed)
    pi32 = pi.astype(np.float32)
    covered = 0
    chunk = 100
    for start in range(0, rounds, chunk):
        k = min(chunk, rounds - start)
        mask = rng.random((k, pi.shape[0]), dtype=np.float32) < pi32
        for row in mask:
            idx = np.flatnonzero(row)
            est = estimate(y[idx], pi[idx], y.shape[0])
            covered += est.ci_low <= truth <= est.ci_high
    return covered / rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4_000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    out: dict[str, object] = {}
    lift = math.nan
    for model, suffix in MODELS.items():
        cov: dict[str, float] = {}
        hits: dict[str, float] = {}
        for i, prev in enumerate(PREVALENCES):
            y, risk, cost = make_frame(N_SELLERS, prev, model, seed=20_261_129 + i)
            budget = int(EXPECTED_BUYS * cost.mean())
            dsg = design(risk, cost, budget)
            pi = np.asarray(dsg.pi)
            key = f"{prev:g}"
            hits[key] = round(float(np.dot(pi, y)), 2)
            cov[key] = round(coverage(y, pi, args.rounds, seed=7 + 10 * i), 4)
            if model == "informative" and prev == 0.005:
                lift = float(np.dot(pi, y)) / budget / (float(y.sum()) / float(cost.sum()))
            print(
                f"{time.perf_counter() - t0:7.1f}s {model} {key}: coverage {cov[key]} hits {hits[key]}",
                file=sys.stderr,
            )
        out[f"coverage{suffix}"] = cov
        out[f"expected_hits{suffix}"] = hits
    # a census: the budget buys every seller, so every pi = 1 and the interval must have zero width
    y, risk, cost = make_frame(2_000, 0.05, "informative", seed=3)
    census = design(risk, cost, int(cost.sum()))
    idx = poisson_draw(census.pi, seed=1)
    est = estimate(y[idx], np.asarray(census.pi)[idx], y.shape[0])
    result = {
        "coverage": out["coverage"],
        "coverage_useless": out["coverage_useless"],
        "coverage_misleading": out["coverage_misleading"],
        "expected_hits": out["expected_hits"],
        "expected_hits_useless": out["expected_hits_useless"],
        "expected_hits_misleading": out["expected_hits_misleading"],
        "census_width": est.ci_high - est.ci_low,
        "lift": round(lift, 4),
        "rounds": args.rounds,
    }
    print(f"{time.perf_counter() - t0:7.1f}s done", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
