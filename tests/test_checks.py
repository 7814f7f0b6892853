import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stcrank.checks import DATA, NETWORK, check_non_negative, check_not_empty, check_positive
from stcrank.errors import ConfigError


@given(st.one_of(st.integers(min_value=1), st.floats(min_value=1e-300, allow_infinity=True)))
def test_positive_values_pass(value):
    check_positive("X", DATA, size=value, sizes=[value, value], unset=None)


@given(st.one_of(st.integers(max_value=0), st.floats(max_value=0), st.just(math.nan)))
def test_non_positive_values_fail_naming_the_option(value):
    with pytest.raises(ConfigError, match=r"^X: --data\.size must be positive"):
        check_positive("X", DATA, size=value)
    with pytest.raises(ConfigError, match=r"^X: --model\.init_args\.network\.init_args\.tower must be only positive"):
        check_positive("X", NETWORK, tower=[8, value])


def test_non_negative_and_not_empty():
    check_non_negative("X", DATA, num_workers=0, unset=None)
    with pytest.raises(ConfigError, match=r"--data\.num_workers must be at least 0, got -1"):
        check_non_negative("X", DATA, num_workers=-1)
    check_not_empty("X", DATA, days=None)
    with pytest.raises(ConfigError, match=r"--data\.days must not be empty; leave it out for the default"):
        check_not_empty("X", DATA, days=[])
