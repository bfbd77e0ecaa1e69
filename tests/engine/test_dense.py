"""The dense sampler (initjax.engine.dense): shared draws equal solo runs, Gaussian scales are
data (one program), one stacked matmul per layer and pass, and the memory estimate."""

import re

import jax
import numpy as np

from initjax import NetworkConfig, propagate, propagate_shared
from initjax.engine import MeasureOptions, dense, estimate_memory
from initjax.engine.sampling import as_scaled

from .networks import assert_stats_equal, small


def test_shared_draws_equal_solo_runs():
    base = small(width=48)
    configs = [base.replace(init="normal:stddev=0.05", activation="tanh"), base.replace(init="he_normal"),
               base.replace(init="xavier_normal", norm="batch")]
    shared = propagate_shared(configs, seeds=3, chunk_size=2)
    for c, r in zip(configs, shared, strict=True):
        assert_stats_equal(propagate(c, seeds=3).stats, r.stats)


def test_gaussian_scales_share_one_program(compiles):
    """The scale of a Gaussian init is data, not code: a sweep over sigma_w compiles once, and a
    shared group of same-activation configs runs one body whatever the scales."""
    base = small(depth=3, width=24, activation="tanh", init="normal:stddev=0.3")
    first = propagate(base, seeds=2)
    other = base.replace(init="xavier_normal", label="another label")  # std sqrt(1/24)
    found = compiles(lambda: propagate(other, seeds=2))
    assert not found, found
    # and the numbers are the other scale's: for tanh at init the first layer's pre-activation
    # variance is n Var[w] Var[x] = 24 * std^2 (inputs N(0, 1)), within sampling error
    got = propagate(other, seeds=2).stats.preact_var[:, 0]
    np.testing.assert_allclose(first.stats.preact_var[:, 0] * (1 / 24) / 0.09, got, rtol=1e-5)
    group = [base.replace(init=f"normal:stddev={s}") for s in (0.1, 0.2, 0.4)]
    propagate_shared(group, seeds=2)
    rescaled = [base.replace(init=f"normal:stddev={s}") for s in (0.5, 0.6, 0.7)]
    found = compiles(lambda: propagate_shared(rescaled, seeds=2))
    assert not found, found


def _weight_products(configs, width: int, remat: bool = True) -> dict[str, int]:
    """Row count -> number of matmuls with a ``rows x width`` result in the program of one seed of
    ``configs``: the ``stablehlo.dot_general`` ops of the lowered program, which is the same on
    every backend (the optimized HLO is not: on a GPU its dots are cuBLAS custom calls). The
    layer body is one scan body, so each matmul in it is counted once whatever the depth."""
    scaled, stds = as_scaled(tuple(configs))
    opts = MeasureOptions((-1.0, 1.0), (-1.0, 1.0), 40, "normal", remat, 0.01)
    key = jax.random.key(0, impl="philox2x32")
    text = jax.jit(lambda k: dense.seed_stats(scaled, opts, k, None, stds)).lower(key).as_text()
    rows = re.findall(rf"stablehlo\.dot_general .*-> tensor<(\d+)x{width}xf32>", text)
    return {r: rows.count(r) for r in sorted(set(rows))}


def test_shared_configs_multiply_the_draw_once_per_pass():
    """Every config of a shared call multiplies the layer's one draw in a single stacked matmul,
    forward and backward, and the backward pass keeps the forward product instead of recomputing
    it: two width x width products per layer body, each with configs x batch rows."""
    base = small(depth=4, width=96, batch=8)
    configs = [base.replace(init="normal:stddev=0.01", activation="tanh"),
               base.replace(init="xavier_normal", activation="tanh"), base.replace(init="he_normal")]
    assert _weight_products(configs, 96) == {"24": 2}  # 3 configs x batch 8, forward + backward
    assert _weight_products(configs[2:], 96) == {"8": 2}
    assert _weight_products(configs, 96, remat=False) == {"24": 2}


def test_memory_estimate_scales_with_width_squared():
    # the weight buffers (~n^2) dominate the kept activations (~batch x n per layer) at large n;
    # at 8192 -> 16384 the linear term moves the ratio only from 4 to about 3.9
    a = estimate_memory(NetworkConfig(depth=10, width=8192, batch=16))
    b = estimate_memory(NetworkConfig(depth=10, width=16384, batch=16))
    assert 3.5 < b / a < 4.1
    assert estimate_memory(NetworkConfig(depth=10, width=8192, batch=16), remat=False) > a  # weights kept
