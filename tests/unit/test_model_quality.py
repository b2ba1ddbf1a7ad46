"""The risk-model estimators on hand-checkable cases (chalicelib.domain.model_quality)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from chalicelib.domain import model_quality as mq


def _assess(y: list[int], s: list[float], q: list[float], threshold: float | None = 0.5, **kw: int) -> mq.ModelQuality:
    return mq.assess(np.array(y), np.array(s), np.array(q), threshold, **kw)


def test_a_perfect_ranker_has_auc_one_a_reversed_one_zero_and_ties_one_half() -> None:
    q = [0.1] * 6
    assert _assess([1, 1, 0, 0, 0, 0], [0.9, 0.8, 0.3, 0.2, 0.1, 0.05], q).auc.estimate == 1.0
    assert _assess([1, 1, 0, 0, 0, 0], [0.01, 0.02, 0.3, 0.2, 0.1, 0.05], q).auc.estimate == 0.0
    assert _assess([1, 1, 0, 0, 0, 0], [0.3] * 6, q).auc.estimate == 0.5
    # one fake tied with one of two genuine units and above the other: (1/2 + 1) / 2
    assert _assess([1, 0, 0], [0.4, 0.4, 0.1], [0.1] * 3).auc.estimate == pytest.approx(0.75)


def test_weights_count_each_unit_for_the_frame_units_it_stands_for() -> None:
    # the fake (0.5) beats the genuine unit at 0.4 and loses to the one at 0.6
    equal = _assess([1, 0, 0], [0.5, 0.6, 0.4], [0.5, 0.5, 0.5]).auc.estimate
    assert equal == pytest.approx(0.5)
    # the genuine unit at 0.6 was three times less likely to be drawn: it stands for 3 frame units against 1
    weighted = _assess([1, 0, 0], [0.5, 0.6, 0.4], [0.5, 0.5 / 3, 0.5]).auc.estimate
    assert weighted == pytest.approx(1.0 / 4.0)


def test_weighted_auc_equals_the_brute_force_pair_sum_and_its_linearisation() -> None:
    rng = np.random.default_rng(3)
    n = 60
    y = (rng.random(n) < 0.3).astype(float)
    s = np.round(rng.random(n), 1)  # many ties
    q = rng.choice([0.05, 0.2, 0.5, 1.0], n)
    w = 1 / q
    auc, var, jack = mq.weighted_auc(y, s, w, q)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    k = (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])
    n1, n0 = w[pos].sum(), w[neg].sum()
    assert auc == pytest.approx(float(w[pos] @ k @ w[neg]) / (n1 * n0), rel=1e-12)
    g = np.zeros(n)
    g[pos] = k @ w[neg]
    g[neg] = w[pos] @ k
    z = (g - auc * np.where(y == 1, n0, n1)) / (n1 * n0)
    assert var == pytest.approx(float(np.sum((1 - q) * (w * z) ** 2)), rel=1e-12)
    assert var > 0
    # the closed-form jackknife equals recomputing the AUC without each unit in turn
    loo = np.array(
        [mq.weighted_auc(np.delete(y, k), np.delete(s, k), np.delete(w, k), np.delete(q, k))[0] for k in range(n)]
    )
    assert jack == pytest.approx((n - 1) / n * float(np.sum((1 - q) * (loo - auc) ** 2)), rel=1e-9)


def test_t_quantiles() -> None:
    # published 97.5% points of Student's t
    for df, value in ((1, 12.7062), (3, 3.1824), (5, 2.5706), (10, 2.2281), (30, 2.0423), (120, 1.9799)):
        assert mq.t_quantile(df) == pytest.approx(value, abs=3e-4)


def test_brier_hajek_and_horvitz_thompson_by_hand() -> None:
    out = _assess([1, 0], [0.8, 0.3], [0.5, 0.25], population=10)
    # weights 2 and 4: (2 * 0.04 + 4 * 0.09) / 6 and / 10
    assert out.brier.estimate == pytest.approx(0.44 / 6)
    assert out.brier.ht == pytest.approx(0.044)
    assert out.brier.ci_low is not None and out.brier.ci_high is not None
    assert out.brier.ci_low < out.brier.estimate < out.brier.ci_high


def test_top_decile_precision_counts_only_flagged_units_with_their_weights() -> None:
    y = [1, 0, 0, 1, 0]
    s = [0.9, 0.8, 0.7, 0.1, 0.2]
    q = [0.5, 0.25, 0.5, 0.5, 0.5]  # flagged (s >= 0.7): weights 2, 4, 2, one fake
    out = _assess(y, s, q, threshold=0.7, flagged=16)
    prec = out.top_decile_precision
    assert prec.estimate == pytest.approx(2 / 8)
    assert prec.ht == pytest.approx(2 / 16)
    assert (prec.n, prec.fakes) == (3, 1)
    assert prec.ci_low is not None and prec.ci_high is not None
    assert prec.ci_low <= prec.estimate <= prec.ci_high


def test_per_unit_thresholds_pool_rounds_with_their_own_frames() -> None:
    # round A flags s >= 0.5, round B flags s >= 0.2: the unit at 0.3 is flagged only in round B
    out = mq.assess(np.array([1, 1]), np.array([0.3, 0.3]), np.array([0.1, 0.1]), np.array([0.5, 0.2]))
    assert out.top_decile_precision.n == 1


def test_reliability_bins_report_weighted_means_and_rates() -> None:
    y = [0, 1, 0, 0, 1]
    s = [0.005, 0.01, 0.15, 0.18, 0.9]
    q = [0.1, 0.05, 0.1, 0.1, 0.1]
    table = _assess(y, s, q).reliability
    assert [(b.low, b.high) for b in table] == list(zip(mq.BIN_EDGES[:-1], mq.BIN_EDGES[1:], strict=True))
    first = table[0]  # (0, 0.01]: weights 10 and 20, one fake of weight 20
    assert (first.n, first.fakes, first.frame_units) == (2, 1, 30.0)
    assert first.mean_predicted == pytest.approx((10 * 0.005 + 20 * 0.01) / 30)
    assert first.observed == pytest.approx(20 / 30)
    assert table[4].n == 2 and table[5].n == 0 and table[6].n == 1  # 0.15, 0.18 in (0.1, 0.2]
    assert table[4].observed == 0.0 and table[4].ci_high is not None and table[4].ci_high > 0
    empty = table[1]
    assert empty.n == 0 and empty.observed is None and empty.reason


def test_wilson_is_not_degenerate_at_the_boundary() -> None:
    out = _assess([1] * 5 + [0] * 5, [0.9] * 5 + [0.1] * 5, [0.2] * 10)
    assert out.auc.estimate == 1.0
    assert out.auc.ci_high == 1.0
    assert out.auc.ci_low is not None and 0.5 < out.auc.ci_low < 1.0
    lo, hi = mq.wilson(0.0, 10)
    assert lo == 0.0 and 0.2 < hi < 0.35  # Wilson 0/10: upper 0.278


def test_no_units_no_fakes_no_genuine_give_none_with_a_reason() -> None:
    empty = mq.assess([], [], [], 0.5, population=100, flagged=10)
    assert empty.units == 0
    for fig in (empty.auc, empty.brier, empty.top_decile_precision):
        assert fig.estimate is None and fig.reason
    assert all(b.n == 0 and b.observed is None for b in empty.reliability)
    no_fakes = _assess([0, 0, 0], [0.1, 0.6, 0.2], [0.1] * 3)
    assert no_fakes.auc.estimate is None and no_fakes.auc.reason and "counterfeit" in no_fakes.auc.reason
    assert no_fakes.brier.estimate is not None
    assert no_fakes.top_decile_precision.estimate == 0.0  # one flagged unit, genuine
    no_genuine = _assess([1, 1], [0.1, 0.6], [0.1] * 2)
    assert no_genuine.auc.estimate is None and no_genuine.auc.reason and "genuine" in no_genuine.auc.reason
    unknown = _assess([1, 0], [0.1, 0.6], [0.1] * 2, threshold=None)
    assert unknown.top_decile_precision.estimate is None and unknown.top_decile_precision.reason
    none_flagged = _assess([1, 0], [0.1, 0.2], [0.1] * 2, threshold=0.9)
    assert none_flagged.top_decile_precision.estimate is None and none_flagged.top_decile_precision.reason


def test_census_units_carry_no_sampling_variance() -> None:
    out = _assess([1, 0, 0, 1], [0.8, 0.3, 0.2, 0.4], [1.0] * 4, population=4)
    assert out.brier.std_error == 0.0 and out.brier.ci_low == out.brier.ci_high == out.brier.estimate
    assert out.auc.std_error == 0.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"y": [2, 0]}, "y"),
        ({"score": [0.5, 1.5]}, "score"),
        ({"q": [0.0, 0.5]}, "q"),
        ({"q": [0.5, math.nan]}, "q"),
        ({"score": [0.5]}, "units"),
        ({"population": -1}, "population"),
        ({"flagged": 1.5}, "flagged"),
        ({"edges": [0.0, 0.5]}, "edges"),
        ({"threshold": [0.1, 0.2, 0.3]}, "threshold"),
    ],
)
def test_bad_input_names_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"y": [1, 0], "score": [0.5, 0.2], "q": [0.1, 0.1], "threshold": 0.4}
    args.update(kwargs)
    with pytest.raises(mq.ModelQualityError) as err:
        mq.assess(args.pop("y"), args.pop("score"), args.pop("q"), args.pop("threshold"), **args)  # type: ignore[arg-type]
    assert err.value.field == field


def test_top_decile_threshold_of_a_frame() -> None:
    s = np.arange(1, 21) / 100.0  # 20 units: the 2 largest are flagged
    assert mq.top_decile(s) == (0.19, 2)
    tied = np.array([0.5] * 5 + [0.1] * 10)  # ceil(15 / 10) = 2nd largest is 0.5: all five tied units flagged
    assert mq.top_decile(tied) == (0.5, 5)
    with pytest.raises(mq.ModelQualityError):
        mq.top_decile([])


def test_as_dict_is_plain_json() -> None:
    import json

    out = _assess([1, 0, 0], [0.5, 0.6, 0.4], [0.5, 0.5, 0.5], population=6, flagged=2)
    text = json.dumps(out.as_dict())
    assert '"auc"' in text and '"reliability"' in text
