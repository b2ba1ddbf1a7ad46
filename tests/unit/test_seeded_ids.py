"""Seeded ids (the reproducible demo): the same seed and creation order give the same ids, ids never repeat within a
process (even after the dependencies are rebuilt), sort by creation, and a deployed function refuses the setting."""

from __future__ import annotations

import pytest

from chalicelib.adapters.system import SeededIds
from chalicelib.config import ConfigError, load
from tests.unit.test_config import ENV


def test_same_seed_same_sequence_and_never_a_repeat() -> None:
    first = SeededIds(910_001)
    a = [first.new("prg"), first.new("rnd"), first.new("rnd")]
    again = SeededIds(910_001)  # bootstrap.reset() builds a new one: the counter carries on
    b = [again.new("rnd") for _ in range(50)]
    assert len(set(a + b)) == 53
    assert sorted(b) == b and all(len(x) == 4 + 26 for x in b)
    other = SeededIds(910_002)
    assert other.new("prg") != a[0]
    # a fresh process would start the sequence again: the n-th id is a pure function of (seed, prefix, n)
    import chalicelib.adapters.system as system

    system._SEEDED_COUNTERS.pop(910_001)
    assert SeededIds(910_001).new("prg") == a[0]


def test_the_setting_is_validated_and_refused_in_a_deployed_function() -> None:
    assert load({**ENV, "TESTBUY_ID_SEED": "42"}).id_seed == 42
    assert load(ENV).id_seed is None
    with pytest.raises(ConfigError, match="TESTBUY_ID_SEED"):
        load({**ENV, "TESTBUY_ID_SEED": "-1"})
    deployed = {**ENV, "TESTBUY_AUTH_MODE": "cognito", "AWS_LAMBDA_FUNCTION_NAME": "testbuy-dev"}
    with pytest.raises(ConfigError, match="TESTBUY_ID_SEED"):
        load({**deployed, "TESTBUY_ID_SEED": "42"})
