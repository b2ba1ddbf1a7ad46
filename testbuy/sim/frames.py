"""Synthetic seller frames for the estimation studies (``benchmarks/estimation.py``, ``benchmarks/interval_study.py``)
and their seeded parts in the tests: one construction, so the tests guard exactly what the benchmarks measure.

Exactly ``round(prevalence * n)`` counterfeit sellers at random; calibrated binormal risk scores (a latent
``z ~ N(d y, 1)`` mapped to ``P(y = 1 | z) = logistic(logit(prevalence) + d z - d^2 / 2)``, as a well-fitted model
produces); ``d = 1.190`` for an informative model (ROC AUC ``Phi(d / sqrt 2) = 0.80``), ``d = 0`` for a useless one,
and the informative construction applied to ``-z`` for a misleading one (AUC 0.20); order costs lognormal,
``round(exp(N(ln 10,000, 0.4)))`` minor units.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

D_AUC80 = 1.190
"""Separation of the informative model: Phi(1.190 / sqrt 2) = 0.80."""
MODELS = ("informative", "useless", "misleading")


def synthetic_frame(
    n: int, prevalence: float, model: str, seed: int
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """``(y, risk, cost)`` of the module's construction; the same seed always gives the same frame."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=np.int8)
    y[rng.choice(n, round(prevalence * n), replace=False)] = 1
    d = 0.0 if model == "useless" else D_AUC80
    z = rng.standard_normal(n) + d * y
    if model == "misleading":
        z = -z
    logit = math.log(prevalence / (1 - prevalence)) + d * z - d * d / 2
    risk = np.clip(1.0 / (1.0 + np.exp(-logit)), 1e-12, 1 - 1e-12)  # the design needs risk strictly in (0, 1)
    cost = np.round(np.exp(rng.normal(math.log(10_000), 0.4, n))).astype(np.int64)
    return y, risk, cost
