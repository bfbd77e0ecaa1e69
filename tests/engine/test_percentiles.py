"""Tests of the records' statistics (initjax.engine.stats.percentiles, moments) against numpy
(the independent truth)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax.engine import stats


def test_percentile_selection_is_exact():
    rng = np.random.default_rng(0)
    q = (0.0, 15.0, 50.0, 85.0, 100.0)
    # Ties, exact zeros (ReLU-like), tiny negatives (sign handling of the bit mapping), n = 1.
    cases = [rng.integers(-3, 4, 210).astype(np.float64),
             np.maximum(rng.standard_normal((7, 30)), 0.0),
             -np.abs(rng.standard_normal(210)) * 1e-30 + np.repeat([0.0, 1.0], 105),
             rng.standard_normal(210), np.array([2.5])]
    for x in cases:
        x = x.astype(np.float32)
        got = np.asarray(jax.jit(lambda a: stats.percentiles(a, q))(x))
        np.testing.assert_allclose(got, np.percentile(x, q), rtol=1e-6, atol=1e-37)
    assert np.all(np.isnan(stats.percentiles(jnp.array([1.0, np.nan, 0.0]), q)))



def test_moments_match_numpy():
    x = np.random.default_rng(1).standard_normal((3, 40)).astype(np.float32) * 3 + 1
    mean, std = stats.moments(jnp.asarray(x))
    np.testing.assert_allclose([float(mean), float(std)], [x.mean(), x.std()], rtol=1e-5)


@pytest.mark.parametrize(("x", "q", "match"), [
    (np.zeros(0, np.float32), (50.0,), "empty"),
    (np.ones(3, np.float32), (), "non-empty"),
    (np.ones(3, np.float32), (101.0,), r"\[0, 100\]"),
    (np.ones(3, np.float32), (-1.0,), r"\[0, 100\]"),
])
def test_percentiles_reject_bad_input(x, q, match):
    with pytest.raises(ValueError, match=match):
        stats.percentiles(x, q)
