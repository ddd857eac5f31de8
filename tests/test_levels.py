"""The level rules (chromaviz.noise.levels): births, the sigmoid, level lists, and the one birth rule."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from chromaviz.noise.levels import (
    BIRTH_TOLERANCE, birth_log_snr, born_steps, check_levels, first_born_step, is_born, is_power_of_two, level_offset,
    sigmoid,
)


@given(st.floats(-700, 700))
def test_sigmoid_is_the_logistic_function_and_its_tails_are_exact(x):
    assert sigmoid(x) == pytest.approx(1 / (1 + math.exp(-x)), rel=1e-12, abs=1e-300)
    assert sigmoid(x) + sigmoid(-x) == pytest.approx(1.0, abs=1e-15)


def test_sigmoid_at_infinities_and_on_arrays():
    np.testing.assert_array_equal(sigmoid([-np.inf, np.inf]), [0.0, 1.0])
    assert sigmoid(np.zeros((2, 3))).shape == (2, 3)


@pytest.mark.parametrize("m", [1, 2, 3, 4, 15, 1024, 2.5])
def test_birth_is_where_m2_snr_is_one(m):
    lam = float(birth_log_snr(m)[0])
    assert m * m * math.exp(lam) == pytest.approx(1.0)
    assert float(level_offset(m)[0]) == pytest.approx(-lam)
    assert float(sigmoid(lam + level_offset(m)[0])) == pytest.approx(0.5)  # half formed


def test_level_lists_accept_numbers_numpy_and_torch():
    assert check_levels(4).tolist() == [4.0]
    assert check_levels(np.array([1, 2, 4]), ladder=True).tolist() == [1.0, 2.0, 4.0]
    assert check_levels(torch.tensor([1, 2]), ladder=True).tolist() == [1.0, 2.0]
    assert check_levels((np.int64(8), 2), dyadic=True).tolist() == [8.0, 2.0]
    assert check_levels([1.5, 15]).tolist() == [1.5, 15.0]  # the m² law holds for any block size


@pytest.mark.parametrize("bad, kwargs, message", [
    ([0], {}, r"levels must each be a block size ≥ 1 .* got \[0\]"),
    ([1, math.nan], {}, "block size ≥ 1"),
    ([1, math.inf], {}, "block size ≥ 1"),
    ([True], {}, "block size"),
    ("124", {}, "the string"),
    ([], {}, "empty"),
    ([3], {"dyadic": True}, r"power of two ≥ 1 .* got \[3\]"),
    ([2.0], {"dyadic": True}, "non-integer"),
    ([1, 4], {"ladder": True}, r"consecutive powers of two starting at 1.*expected \(1, 2\)"),
    ([1024], {"dyadic": True, "size": (32, 32)}, "level 1024 is coarser than the 32×32 image"),
    ([1, 2, 4, 8], {"ladder": True, "size": (8, 4)}, "level 8 is coarser than the 8×4 image"),
])
def test_bad_level_lists_say_what_is_wrong(bad, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_levels(bad, **kwargs)


def test_name_appears_in_the_message():
    with pytest.raises(ValueError, match="pooling factor m must"):
        check_levels(0.5, name="pooling factor m")


def test_powers_of_two():
    assert [m for m in range(-2, 70) if is_power_of_two(m)] == [1, 2, 4, 8, 16, 32, 64]
    assert not is_power_of_two(4.0) and not is_power_of_two(True) and is_power_of_two(np.int32(16))


@given(st.lists(st.floats(-30, 30), min_size=1, max_size=40).map(sorted), st.integers(0, 10))
def test_first_born_step_is_the_first_step_that_is_born(lams, k):
    m = 2**k
    born = is_born(lams, [m])[:, 0]
    step = first_born_step(lams, m)
    expected = [i for i, lam in enumerate(lams) if lam >= -2 * math.log(m) - BIRTH_TOLERANCE]
    assert step == (expected[0] if expected else None)
    assert born.tolist() == [lam >= -2 * math.log(m) - BIRTH_TOLERANCE for lam in lams]
    if step is not None:  # and from a later start, the first from there on
        assert first_born_step(lams, m, start=step) == step


def test_birth_tolerance_covers_float32_sigmas_only():
    lam = float(birth_log_snr(8)[0])
    sigma32 = np.float32(math.exp(-lam / 2))  # the σ an Euler scheduler keeps for this λ
    lam32 = -2 * math.log(float(sigma32))
    assert abs(lam32 - lam) < BIRTH_TOLERANCE / 10
    assert is_born([lam32], 8)[0, 0] and is_born([lam - BIRTH_TOLERANCE], 8)[0, 0]
    assert not is_born([lam - 2 * BIRTH_TOLERANCE], 8)[0, 0]
    assert is_born([-np.inf, np.inf], 1)[:, 0].tolist() == [False, True]


@given(st.lists(st.floats(-30, 30), min_size=1, max_size=40).map(sorted), st.integers(0, 6))
def test_born_steps_of_the_m2_law_are_the_first_born_steps(lams, k):
    """One birth rule: read from the m² law's fractions, a level is born at the step first_born_step names,
    also where the birth sits exactly on a step (as a designed schedule puts it) or a float32 σ away."""
    levels = [2**j for j in range(k + 1)]
    births = [float(lam) for lam in birth_log_snr(levels)]
    lams = sorted(lams + births + [lam - BIRTH_TOLERANCE / 2 for lam in births])
    fractions = sigmoid(np.asarray(lams)[:, None] + level_offset(levels)[None, :])
    assert born_steps(fractions) == [first_born_step(lams, m) for m in levels]


def test_born_steps_reads_half_of_each_levels_signal():
    fractions = np.array([[0.1, 0.6], [0.4, 0.9], [0.5, 1.0]])
    assert born_steps(fractions) == [2, 0]
    assert born_steps(fractions[:2]) == [None, 0]
    with pytest.raises(ValueError, match="shape"):
        born_steps([0.5, 0.6])
