"""chalicelib.domain.nonresponse: the thinning step's size, seeding and exact keep probability; the weighting classes
and their collapsing rule; input validation."""

from __future__ import annotations

import numpy as np
import pytest

from chalicelib.domain import nonresponse as nr
from chalicelib.domain.errors import InvalidInput


def test_a_sample_that_fits_is_kept_whole() -> None:
    t = nr.thin([100, 200, 300], 600, seed=1)
    assert t.factor == 1.0 and t.keep.tolist() == [0, 1, 2] and t.thinned_out == 0 and t.kept_total == 600


def test_equal_costs_fit_the_limit_exactly() -> None:
    t = nr.thin(np.full(84, 1_150), 42 * 1_150 + 1_000, seed=7)
    assert t.kept == 42 and t.factor == pytest.approx(42 / 84) and t.kept_total == 42 * 1_150
    assert np.all(np.diff(t.keep) > 0) and t.keep.max() < 84


def test_unequal_costs_keep_a_margin_of_three_standard_deviations() -> None:
    rng = np.random.default_rng(3)
    costs = rng.integers(500, 5_000, 300)
    limit = int(costs.sum()) // 2
    m = nr.thinning_size(costs, limit)
    cbar, s2, n = costs.mean(), costs.var(ddof=1), costs.shape[0]
    assert m * cbar + 3 * np.sqrt(m * (1 - m / n) * s2) <= limit
    m1 = m + 1
    assert m1 * cbar + 3 * np.sqrt(m1 * (1 - m1 / n) * s2) > limit
    # and the kept total of the seeded subsample is what it says
    t = nr.thin(costs, limit, seed=5)
    assert t.kept == m and t.kept_total == int(costs[t.keep].sum())


def test_the_dearest_units_fitting_is_a_sure_fit() -> None:
    # two costs of 10 and one of 1,000: the normal margin refuses m = 2, but the two dearest (1,010) fit 1,010
    assert nr.thinning_size([10, 10, 1_000], 1_010) == 2


def test_thinning_is_seeded_and_each_unit_is_kept_with_the_factor() -> None:
    costs = np.full(20, 100)
    a = nr.thin(costs, 500, seed=11)
    assert a.keep.tolist() == nr.thin(costs, 500, seed=11).keep.tolist()
    kept = np.zeros(20)
    seeds = 4_000
    for s in range(seeds):
        kept[nr.thin(costs, 500, seed=s).keep] += 1
    share = kept / seeds  # each unit kept with r = 5/20; s.e. of each share sqrt(.25 * .75 / 4000) = 0.0068
    assert np.all(np.abs(share - 0.25) < 4 * np.sqrt(0.25 * 0.75 / seeds))


def test_no_money_keeps_nothing() -> None:
    t = nr.thin([100, 100], 0, seed=1)
    assert t.kept == 0 and t.factor == 0.0 and t.kept_total == 0


@pytest.mark.parametrize(
    ("costs", "limit", "seed", "field"),
    [
        ([100, 0], 10, 1, "costs"),
        ([100.5], 10, 1, "costs"),
        ([[100]], 10, 1, "costs"),
        ([100], -1, 1, "limit"),
        ([100], 10, -3, "seed"),
        ([100], True, 1, "limit"),
    ],
)
def test_bad_thinning_input_names_the_field(costs: object, limit: object, seed: object, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        nr.thin(costs, limit, seed)  # type: ignore[arg-type]
    assert err.value.details == {"field": field}


def test_placing_order_is_a_seeded_permutation() -> None:
    a = nr.placing_order(50, 3)
    assert sorted(a.tolist()) == list(range(50)) and a.tolist() == nr.placing_order(50, 3).tolist()
    assert a.tolist() != list(range(50))


def test_bands_collapse_until_each_has_enough_respondents() -> None:
    risk = np.linspace(0.01, 0.5, 100)
    respondent = np.ones(100, dtype=bool)
    respondent[80:] = False  # the riskiest fifth never responds
    respondent[80:83] = True  # ... but three of them
    classes = nr.weighting_classes(np.zeros(100, dtype=np.int64), risk, respondent)
    counts = np.bincount(classes[respondent])
    assert counts.min() >= nr.MIN_RESPONDENTS and len(counts) < nr.RISK_BANDS
    assert np.all(np.diff(classes) >= 0), "classes are contiguous risk bands"


def test_a_stratum_with_few_respondents_is_one_class() -> None:
    classes = nr.weighting_classes([0] * 6 + [1] * 40, np.linspace(0, 1, 46), np.ones(46, dtype=bool))
    assert len(set(classes[:6].tolist())) == 1 and len(set(classes[6:].tolist())) > 1


def test_adjusted_pi_divides_by_the_weighted_response_rate() -> None:
    pi = np.array([0.5, 0.25, 0.5, 1.0])
    resp = np.array([True, False, True, True])
    adj = nr.adjust(pi, resp, np.array([0, 0, 1, 1]))
    # class 0: weights 2 and 4, respondent weight 2 -> rate 1/3; class 1: all respond -> rate 1
    assert adj.pi[0] == pytest.approx(0.5 / 3) and np.isnan(adj.pi[1])
    assert adj.pi[2:].tolist() == [0.5, 1.0]
    assert float((1 / adj.pi[resp]).sum()) == pytest.approx(float((1 / pi).sum()))
    assert adj.max_factor == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pi": [0.0, 0.5]}, "pi"),
        ({"pi": [1.5, 0.5]}, "pi"),
        ({"respondent": [1, 0]}, "respondent"),
        ({"risk": [np.nan, 0.1]}, "risk"),
        ({"strata": [0, 0, 0]}, "strata"),
    ],
)
def test_bad_weighting_input_names_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"pi": [0.5, 0.5], "respondent": [True, False], "strata": [0, 0], "risk": [0.1, 0.2]}
    args.update(kwargs)
    with pytest.raises(InvalidInput) as err:
        if field == "respondent":
            nr.weighting_classes(args["strata"], args["risk"], args["respondent"])  # type: ignore[arg-type]
        else:
            nr.nonresponse_adjust(**args)  # type: ignore[arg-type]
    assert err.value.details == {"field": field}
