"""Seller risk score: a versioned logistic model plus Beta-Binomial learning from test-buy outcomes.

Model score
-----------
For each feature ``k`` a raw value ``x_k`` is derived from :class:`SellerSignals` (table ``FEATURES``: counts
enter as ``log1p``, the price anomaly as ``|z|`` capped at 10, identity verification as 0/1), standardised
with a documented reference centre and scale and capped: ``z_k = clip((x_k - centre_k) / scale_k, -6, 6)``.
Then::

    s = clip(logistic(intercept + sum_k weight_k * z_k + sum_k missing_weight_k * m_k), 1e-4, 1 - 1e-4)

Missing values are explicit, never silently zero: a missing signal takes its neutral value (``z_k = 0``, the
reference centre) and switches on its indicator ``m_k = 1``, whose weight says how much "we don't know" is
itself a risk signal (default: a little, for every feature). Past test buys are *not* in ``s``; they enter
through the shrinkage below, so they are not counted twice.

Learning from outcomes
----------------------
Category rates: each category ``c`` has a Beta(a_c, b_c) prior; after a round with ``h`` confirmed fakes and
``m`` genuine among its conclusive buys, the posterior is Beta(a_c + h, b_c + m) (:func:`update_priors`), with
mean ``r_c = a_c / (a_c + b_c)`` and evidence ``n_c = a_c + b_c``.

Seller risk for the next round (:func:`combine`)::

    w_c  = min(max_category_weight, n_c / (n_c + model_strength))   # category evidence vs the model's
    mu   = (1 - w_c) * s + w_c * r_c                                 # model score shrunk toward the category
    risk = (seller_strength * mu + x_i) / (seller_strength + t_i)    # Beta-Binomial update on the seller's
                                                                     # own t_i past buys with x_i fakes
    risk = clip(risk, 1e-4, 1 - 1e-4)

so ``mu`` acts as the prior mean of a Beta prior worth ``seller_strength`` pseudo-buys. The category weight is
capped so the model keeps ranking sellers inside a well-measured category. Scores only steer *whom* we buy
from; the reported prevalence stays unbiased whatever they are, because every seller keeps a known, positive
inclusion probability (:mod:`chalicelib.domain.sampling`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from chalicelib.domain.models import (
    SellerSignals as SellerSignals,  # re-exported; defined with the input models (they must not import numpy)
)

RISK_FLOOR = 1e-4
RISK_CEIL = 1.0 - 1e-4
Z_CAP = 6.0


@dataclass(frozen=True)
class Feature:
    """How one signal becomes a standardised model input."""

    name: str
    extract: Callable[[SellerSignals], float | None]
    centre: float
    scale: float
    weight: float
    missing_weight: float
    meaning: str


def _opt(v: float | None, f: Callable[[float], float]) -> float | None:
    return None if v is None else f(v)


FEATURES: tuple[Feature, ...] = (
    Feature(
        "identity_verified",
        lambda s: _opt(s.identity_verified, float),
        0.8,
        0.4,
        -0.5,
        0.3,
        "1 if the seller's identity is verified",
    ),
    Feature("credibility", lambda s: s.credibility, 0.7, 0.2, -0.4, 0.2, "credibility score"),
    Feature("policy_compliance", lambda s: s.policy_compliance, 0.8, 0.15, -0.4, 0.1, "policy compliance"),
    Feature(
        "penalty_count",
        lambda s: _opt(s.penalty_count, math.log1p),
        0.3,
        0.6,
        0.4,
        0.1,
        "log1p(penalties on record)",
    ),
    Feature("positive_behaviour", lambda s: s.positive_behaviour, 0.6, 0.2, -0.2, 0.05, "positive behaviour"),
    Feature("collaboration", lambda s: s.collaboration, 0.6, 0.2, -0.2, 0.05, "collaboration with the platform"),
    Feature("complaint_rate", lambda s: s.complaint_rate, 0.02, 0.03, 0.6, 0.2, "share of orders with complaints"),
    Feature("refund_rate", lambda s: s.refund_rate, 0.03, 0.04, 0.4, 0.1, "share of orders refunded"),
    Feature(
        "price_anomaly",
        lambda s: _opt(s.price_anomaly, lambda z: min(abs(z), 10.0)),
        1.0,
        1.0,
        0.5,
        0.1,
        "|z| of prices against the category reference, capped at 10",
    ),
    Feature(
        "account_age_days",
        lambda s: _opt(s.account_age_days, math.log1p),
        math.log1p(365.0),
        1.5,
        -0.3,
        0.2,
        "log1p(account age in days)",
    ),
    Feature(
        "linked_accounts",
        lambda s: _opt(s.linked_accounts, math.log1p),
        0.3,
        0.7,
        0.4,
        0.1,
        "log1p(accounts linked to this one)",
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
DEFAULT_INTERCEPT = math.log(0.02 / 0.98)  # a seller at every reference value scores 2%


def _clip_risk(x: float) -> float:
    return min(max(x, RISK_FLOOR), RISK_CEIL)


def _logistic(eta: float) -> float:
    if eta >= 0:
        return 1.0 / (1.0 + math.exp(-eta))
    e = math.exp(eta)
    return e / (1.0 + e)


class RiskModel(BaseModel):
    """Versioned logistic risk model over :class:`SellerSignals` (formula in the module docstring).

    ``weights`` and ``missing_weights`` override the defaults in ``FEATURES`` key by key; unknown keys are
    rejected.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = "risk-logit-v1"
    intercept: float = Field(default=DEFAULT_INTERCEPT, allow_inf_nan=False)
    weights: dict[str, float] = Field(default_factory=dict)
    missing_weights: dict[str, float] = Field(default_factory=dict)

    @field_validator("weights", "missing_weights")
    @classmethod
    def _known_finite(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(FEATURE_NAMES)
        if unknown:
            raise ValueError(f"unknown features: {sorted(unknown)}")
        if not all(math.isfinite(x) for x in v.values()):
            raise ValueError("weights must be finite")
        return v

    def weight(self, name: str) -> float:
        """Effective weight of feature ``name``."""
        return self.weights.get(name, _BY_NAME[name].weight)

    def missing_weight(self, name: str) -> float:
        """Effective weight of feature ``name``'s missing indicator."""
        return self.missing_weights.get(name, _BY_NAME[name].missing_weight)

    def contributions(self, signals: SellerSignals) -> dict[str, float]:
        """Each feature's additive contribution to the log-odds (for audit and explanation)."""
        out: dict[str, float] = {}
        for f in FEATURES:
            raw = f.extract(signals)
            if raw is None:
                out[f.name] = self.missing_weight(f.name)
            else:
                z = min(max((raw - f.centre) / f.scale, -Z_CAP), Z_CAP)
                out[f.name] = self.weight(f.name) * z
        return out

    def score(self, signals: SellerSignals) -> float:
        """Model risk in [1e-4, 1 - 1e-4]: logistic of the intercept plus the feature contributions."""
        eta = self.intercept + math.fsum(self.contributions(signals).values())
        return _clip_risk(_logistic(eta))

    def score_many(self, signals: Sequence[SellerSignals]) -> npt.NDArray[np.float64]:
        """:meth:`score` for many sellers, as a float64 array."""
        return np.fromiter((self.score(s) for s in signals), dtype=np.float64, count=len(signals))

    def score_with_history(
        self, signals: SellerSignals, category: CategoryPrior | tuple[float, float] | None = None
    ) -> float:
        """:meth:`score` combined with the category rate and own past test buys (see :func:`combine`)."""
        return combine(self.score(signals), category, signals.past_testbuys or 0, signals.past_counterfeits or 0)


_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}


@dataclass(frozen=True)
class CategoryPrior:
    """Beta(alpha, beta) belief about a category's counterfeit rate."""

    alpha: float
    beta: float

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.beta > 0 and math.isfinite(self.alpha) and math.isfinite(self.beta)):
            raise ValueError("alpha and beta must be positive and finite")

    @property
    def mean(self) -> float:
        """Posterior mean rate ``alpha / (alpha + beta)``."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def strength(self) -> float:
        """Evidence in pseudo-buys, ``alpha + beta``."""
        return self.alpha + self.beta

    def updated(self, hits: int, misses: int) -> CategoryPrior:
        """Posterior after ``hits`` fakes and ``misses`` genuine conclusive buys."""
        if hits < 0 or misses < 0:
            raise ValueError("counts must be non-negative")
        return CategoryPrior(self.alpha + hits, self.beta + misses)


DEFAULT_CATEGORY_PRIOR = CategoryPrior(1.0, 49.0)


def update_priors(
    priors: Mapping[str, tuple[float, float]],
    outcomes: Iterable[tuple[str, bool]],
    *,
    default: tuple[float, float] = (DEFAULT_CATEGORY_PRIOR.alpha, DEFAULT_CATEGORY_PRIOR.beta),
) -> dict[str, tuple[float, float]]:
    """Beta-Binomial update of per-category ``(alpha, beta)`` with ``(category, is_counterfeit)`` outcomes.

    Returns a new mapping (the input is not modified); a category seen for the first time starts from
    ``default``. Only conclusive verdicts should be passed.
    """
    out: dict[str, CategoryPrior] = {k: CategoryPrior(*v) for k, v in priors.items()}
    base = CategoryPrior(*default)
    for category, fake in outcomes:
        cur = out.get(category, base)
        out[category] = cur.updated(1, 0) if fake else cur.updated(0, 1)
    return {k: (v.alpha, v.beta) for k, v in out.items()}


def combine(
    model_score: float,
    category: CategoryPrior | tuple[float, float] | None,
    past_testbuys: int = 0,
    past_counterfeits: int = 0,
    *,
    model_strength: float = 100.0,
    max_category_weight: float = 0.8,
    seller_strength: float = 5.0,
) -> float:
    """Next round's risk: model score shrunk toward the category rate, then updated by the seller's own buys.

    Formula in the module docstring. ``category=None`` skips the category step.
    """
    if not 0.0 < model_score < 1.0:
        raise ValueError("model_score must be in (0, 1)")
    if past_testbuys < 0 or not 0 <= past_counterfeits <= past_testbuys:
        raise ValueError("need 0 <= past_counterfeits <= past_testbuys")
    if model_strength <= 0 or seller_strength <= 0 or not 0.0 <= max_category_weight <= 1.0:
        raise ValueError("strengths must be positive and max_category_weight in [0, 1]")
    mu = model_score
    if category is not None:
        prior = category if isinstance(category, CategoryPrior) else CategoryPrior(*category)
        w_c = min(max_category_weight, prior.strength / (prior.strength + model_strength))
        mu = (1.0 - w_c) * model_score + w_c * prior.mean
    return _clip_risk((seller_strength * mu + past_counterfeits) / (seller_strength + past_testbuys))
