"""The propagation engine against independent computations: numpy re-derivations on the raw
tensors of the same network (``trace``), He et al. 2015's variance recursion, and invariances
(chunking, seed neighbours, shared draws, jit vs no jit)."""

import logging
import math

import jax
import numpy as np
import pytest

from initjax import NetworkConfig, NonFiniteWarning, propagate, propagate_shared, trace
from initjax.propagation import LayerStats, estimate_memory, histogram


def small(**kw):
    base = dict(depth=4, width=64, batch=8, init="he_normal", activation="relu")
    base.update(kw)
    return NetworkConfig(**base)


# --- numpy re-derivations on the raw tensors ------------------------------------------------
@pytest.mark.parametrize(
    "config",
    [
        small(),
        small(activation="tanh", init="normal:stddev=0.3"),
        small(activation="tanh", init="xavier_normal", width=(48, 32, 32, 16), in_width=40),
        small(activation="sigmoid", norm="batch", init="normal:stddev=0.5"),
        small(activation="tanh", norm="layer", norm_placement="after"),
    ],
    ids=["relu-he", "tanh", "ragged", "sigmoid-bn", "tanh-ln-after"],
)
def test_stats_equal_numpy_on_the_same_tensors(config):
    t = trace(config, seed=1)
    st = propagate(config, seeds=2).stats
    act = config.activation
    lo, hi = act.bounds
    for layer in range(config.depth):
        h, y = t["h"][layer].astype(np.float64), t["y"][layer].astype(np.float64)
        dh, dx, xp = t["dh"][layer], t["dx"][layer], t["x_prev"][layer].astype(np.float64)
        assert st.preact_mean[1, layer] == pytest.approx(h.mean(), rel=1e-4, abs=1e-6)
        assert st.preact_var[1, layer] == pytest.approx(h.var(), rel=1e-4)
        assert st.preact_second_moment[1, layer] == pytest.approx((h**2).mean(), rel=1e-4)
        assert st.act_mean[1, layer] == pytest.approx(y.mean(), rel=1e-4, abs=1e-6)
        assert st.act_var[1, layer] == pytest.approx(y.var(), rel=1e-4)
        assert st.unit_std[1, layer] == pytest.approx(y.std(axis=1).mean(), rel=1e-4)
        assert st.zero_fraction[1, layer] == pytest.approx((y == 0).mean())
        assert st.dead_fraction[1, layer] == pytest.approx((y == 0).all(axis=0).mean())
        if act.bounded:
            margin = 0.01 * (hi - lo)
            assert st.saturated[1, layer] == pytest.approx(((y <= lo + margin) | (y >= hi - margin)).mean())
        assert st.grad_preact_var[1, layer] == pytest.approx(dh.astype(np.float64).var(), rel=1e-4)
        assert st.grad_act_var[1, layer] == pytest.approx(dx.astype(np.float64).var(), rel=1e-4)
        # cosine of pre-activations, from scratch
        u = h / np.linalg.norm(h, axis=1, keepdims=True)
        g = u @ u.T
        b = g.shape[0]
        assert st.cosine[1, layer] == pytest.approx((g.sum() - np.trace(g)) / (b * (b - 1)), rel=1e-4, abs=1e-6)
        # the weight gradient, formed explicitly (the engine never forms it)
        G = xp.T @ dh.astype(np.float64)
        assert st.weight_grad_mean[1, layer] == pytest.approx(G.mean(), rel=1e-3, abs=1e-7)
        assert st.weight_grad_var[1, layer] == pytest.approx(G.var(), rel=1e-4)
        assert st.weight_grad_norm[1, layer] == pytest.approx(np.linalg.norm(G), rel=1e-4)
        # histogram counts, numpy's convention
        counts, _ = np.histogram(t["y"][layer], bins=40, range=(-1.0, 1.0))
        np.testing.assert_array_equal(st.act_hist[1, layer], counts)
        below = (t["y"][layer] < -1).sum()
        above = (t["y"][layer] > 1).sum()
        np.testing.assert_array_equal(st.act_outside[1, layer], [below, above])


def test_trace_is_the_network_it_claims():
    """Rebuild the forward pass from trace's own x_prev/h with plain numpy: h = x W + b, y = phi(h)."""
    config = small(activation="tanh", init="normal:stddev=0.2", depth=3)
    t = trace(config)
    for layer in range(config.depth):
        np.testing.assert_allclose(t["y"][layer], np.tanh(t["h"][layer]), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(t["out"][layer], t["y"][layer])
        if layer:
            np.testing.assert_array_equal(t["x_prev"][layer], t["out"][layer - 1])
    # backprop by hand: dh = dx * phi'(h). 1 - tanh^2 loses ~eps / (1 - y^2) of relative precision
    # in float32 where |y| -> 1, hence the tolerance.
    for layer in range(config.depth):
        want = t["dx"][layer] * (1 - np.tanh(t["h"][layer].astype(np.float64)) ** 2)
        np.testing.assert_allclose(t["dh"][layer], want, rtol=5e-3, atol=1e-7)


@pytest.mark.parametrize("value_range,bins", [((-1.0, 1.0), 40), ((-0.3, 2.0), 7), ((0.0, 1.0), 1)])
def test_histogram_matches_numpy_including_edges(value_range, bins):
    rng = np.random.default_rng(0)
    edges = np.linspace(*value_range, bins + 1).astype(np.float32)
    x = np.concatenate([rng.normal(0, 1, 5000).astype(np.float32), edges, [np.inf, -np.inf, np.nan]]).astype(np.float32)
    counts, outside = histogram(x, value_range, bins)
    finite = x[np.isfinite(x)]
    want, _ = np.histogram(finite, bins=bins, range=value_range)
    np.testing.assert_array_equal(counts, want)
    np.testing.assert_array_equal(outside, [(finite < edges[0]).sum(), (finite > edges[-1]).sum()])


# --- He et al. 2015: the variance recursion -----------------------------------------------
def _log_ratio_test(result, expected_log_ratio_per_layer):
    """t-test over seeds of log(M_L / M_1) per layer, M = mean square of the layer output;
    tolerance 5 standard errors of the seed mean."""
    m = np.asarray(result.stats.out_second_moment, dtype=np.float64)
    per_seed = np.log(m[:, -1] / m[:, 0]) / (m.shape[1] - 1)
    se = per_seed.std(ddof=1) / math.sqrt(per_seed.size)
    assert abs(per_seed.mean() - expected_log_ratio_per_layer) < 5 * se + 1e-3, (per_seed.mean(), se)
    assert se < 0.05  # the test has power: the seeds agree to a few percent per layer
    return per_seed.mean()


def test_relu_he_keeps_variance_and_xavier_halves_it():
    base = NetworkConfig(depth=10, width=256, batch=16, activation="relu")
    he, xavier = propagate_shared([base.replace(init="he_normal"), base.replace(init="xavier_normal")], seeds=16)
    _log_ratio_test(he, 0.0)  # n Var[w] / 2 = 1
    _log_ratio_test(xavier, math.log(0.5))  # n Var[w] / 2 = 1/2
    # every layer of He within the seeds' sampling error of layer 1
    m = np.asarray(he.stats.out_second_moment, dtype=np.float64)
    rel = m / m[:, :1]
    se = rel.std(axis=0, ddof=1) / math.sqrt(rel.shape[0])
    assert np.all(np.abs(rel.mean(axis=0) - 1) <= 5 * se + 1e-6)


def test_leaky_relu_he_gain_keeps_variance():
    """He et al. eq. 10 with slope a: the factor is n Var[w] (1 + a^2) / 2, so the PyTorch gain
    sqrt(2 / (1 + a^2)) keeps it at 1 while plain He (gain sqrt 2) grows by (1 + a^2) per layer."""
    a = 0.5
    base = NetworkConfig(depth=8, width=256, batch=16, activation=f"leaky_relu:negative_slope={a}")
    keep, grow = propagate_shared(
        [base.replace(init=f"he_normal:nonlinearity=leaky_relu,param={a}"), base.replace(init="he_normal")],
        seeds=16,
    )
    _log_ratio_test(keep, 0.0)
    _log_ratio_test(grow, math.log(1 + a**2))


# --- invariances ------------------------------------------------------------------------------
def _assert_stats_equal(a: LayerStats, b: LayerStats):
    for field in LayerStats._fields:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


def test_results_identical_across_chunk_sizes_and_neighbours():
    config = small(activation="tanh", init="xavier_normal")
    ref = propagate(config, seeds=5, chunk_size=5).stats
    _assert_stats_equal(ref, propagate(config, seeds=5, chunk_size=1).stats)
    _assert_stats_equal(ref, propagate(config, seeds=5, chunk_size=2).stats)
    # a seed does not depend on how many seeds run beside it
    first3 = propagate(config, seeds=3).stats
    _assert_stats_equal(first3, LayerStats(*(v[:3] for v in ref)))
    offset = propagate(config, seeds=2, seed_offset=3).stats
    _assert_stats_equal(offset, LayerStats(*(v[3:] for v in ref)))


def test_shared_draws_equal_solo_runs():
    base = small(width=48)
    configs = [base.replace(init="normal:stddev=0.05", activation="tanh"), base.replace(init="he_normal"),
               base.replace(init="xavier_normal", norm="batch")]
    shared = propagate_shared(configs, seeds=3, chunk_size=2)
    for c, r in zip(configs, shared):
        _assert_stats_equal(propagate(c, seeds=3).stats, r.stats)


def test_unjitted_path_agrees():
    config = small(depth=3, width=16, batch=4, activation="tanh")
    a = propagate(config, seeds=2).stats
    b = propagate(config, seeds=2, jit=False).stats
    for field in ("preact_var", "act_var", "grad_preact_var", "weight_grad_var"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-5)


def _compiles(fn) -> list[str]:
    """The 'Compiling ...' messages jax logs while ``fn()`` runs."""

    class Collect(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            fn()
    finally:
        logger.removeHandler(handler)
    return [m for m in handler.messages if m.startswith("Compiling")]


def test_second_call_does_not_recompile():
    config = small(depth=3, width=32, activation="softsign")
    propagate(config, seeds=3)
    assert not _compiles(lambda: propagate(config, seeds=3))


def test_seed_counts_up_to_a_power_of_two_share_one_program():
    """Chunks hold the number of seeds rounded up to a power of two (within the memory budget), and
    the program stops after the real seeds: 5, 6 and 7 seeds run one program of capacity 8, whose
    padded slots are never computed (left at zero, where padding by repeating the last seed, as
    before, would have computed it again)."""
    from initjax import propagation as P

    assert [P._chunk_capacity(s, 100) for s in (1, 2, 3, 5, 8, 9, 100)] == [1, 2, 4, 8, 8, 16, 100]
    assert P._chunk_capacity(9, 5) == 5 and P._chunk_capacity(1, 0) == 1
    config = small(depth=3, width=32, activation="elu")
    propagate(config, seeds=5)
    compiles = _compiles(lambda: (propagate(config, seeds=6), propagate(config, seeds=7)))
    assert not [m for m in compiles if "jit(run)" in m], compiles  # (key arrays of new lengths do compile)
    assert [m for m in _compiles(lambda: propagate(config, seeds=9)) if "jit(run)" in m]  # capacity 16
    scaled, stds = P._as_scaled((config,))
    opts = P._Opts((-1.0, 1.0), (-1.0, 1.0), 40, "normal", True, 0.01)
    fn = P._compiled(scaled, opts, False, 1, "philox2x32", 1)
    keys = jax.random.key_data(P.seed_keys(jax.random.key(0, impl="philox2x32"), np.arange(4)))
    (out,) = fn(keys, None, stds, np.int32(2))
    assert np.all(np.asarray(out.preact_var)[:2] > 0) and np.all(np.asarray(out.preact_var)[2:] == 0)


def test_gaussian_scales_share_one_program():
    """The scale of a Gaussian init is data, not code: a sweep over sigma_w compiles once, and a
    shared group of same-activation configs runs one body whatever the scales."""
    base = small(depth=3, width=24, activation="tanh", init="normal:stddev=0.3")
    first = propagate(base, seeds=2)
    other = base.replace(init="xavier_normal", label="another label")  # std sqrt(1/24)
    compiles = _compiles(lambda: propagate(other, seeds=2))
    assert not compiles, compiles
    # and the numbers are the other scale's: for tanh at init the first layer's pre-activation
    # variance is n Var[w] Var[x] = 24 * std^2 (inputs N(0, 1)), within sampling error
    got = propagate(other, seeds=2).stats.preact_var[:, 0]
    np.testing.assert_allclose(first.stats.preact_var[:, 0] * (1 / 24) / 0.09, got, rtol=1e-5)
    group = [base.replace(init=f"normal:stddev={s}") for s in (0.1, 0.2, 0.4)]
    propagate_shared(group, seeds=2)
    rescaled = [base.replace(init=f"normal:stddev={s}") for s in (0.5, 0.6, 0.7)]
    compiles = _compiles(lambda: propagate_shared(rescaled, seeds=2))
    assert not compiles, compiles


def _weight_products(configs, width: int, remat: bool = True) -> dict[str, int]:
    """Row count -> number of matmuls with a width x width operand in the optimized program of
    one seed of ``configs`` (matched on the compiled HLO's ``dot`` output shapes)."""
    import re

    from initjax import propagation as P

    scaled, stds = P._as_scaled(tuple(configs))
    opts = P._Opts((-1.0, 1.0), (-1.0, 1.0), 40, "normal", remat, 0.01)
    key = jax.random.key(0, impl="philox2x32")
    text = jax.jit(lambda k: P._seed_stats(scaled, opts, k, None, stds)).lower(key).compile().as_text()
    rows = re.findall(rf"= f32\[(\d+),{width}\]\{{[^}}]*\}} dot\(", text)
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


def test_user_inputs_and_correlation():
    config = small(activation="identity", init="normal:stddev=0.125", width=64)  # n Var = 1
    x = np.ones((8, 64), np.float32)
    st = propagate(config, seeds=2, inputs=x).stats
    np.testing.assert_allclose(st.cosine[:, 0], 1.0, rtol=1e-5)  # identical examples stay identical
    corr = propagate(small(activation="identity", init="normal:stddev=0.0625", width=256, input_correlation=0.5), seeds=8)
    # a Gaussian linear layer keeps cosines: c = 0.5 up to O(1/sqrt(n)) noise (sd ~ 0.75/16 per pair)
    assert abs(float(np.mean(corr.stats.cosine[:, 0])) - 0.5) < 0.05


def test_batch_and_layer_norm_normalize():
    bn = propagate(small(activation="identity", norm="batch", init="normal:stddev=3.0"), seeds=2).stats
    np.testing.assert_allclose(bn.act_mean, 0.0, atol=1e-5)
    np.testing.assert_allclose(bn.act_var, 1.0, rtol=1e-3)
    ln = propagate(small(activation="identity", norm="layer", init="normal:stddev=0.01"), seeds=2).stats
    np.testing.assert_allclose(ln.act_var, 1.0, rtol=2e-3)  # eps 1e-5 against a variance ~ 0.006


def test_constant_init_makes_every_unit_identical():
    """Every unit of a layer computes the same sum; only float rounding (the matmul sums columns
    in different orders) separates them, ~1e-7 of the spread across examples."""
    st = propagate(small(activation="tanh", init="constant:value=0.01"), seeds=2).stats
    assert np.all(np.asarray(st.act_var) > 1e-4)  # examples still differ ...
    assert np.all(np.asarray(st.unit_std) < 1e-5 * np.sqrt(np.asarray(st.act_var)))  # ... units do not
    zeros = propagate(small(activation="tanh", init="zeros"), seeds=1).stats
    np.testing.assert_array_equal(zeros.unit_std, 0.0)


def test_cotangent_options():
    config = small(depth=2, width=10, batch=4, activation="tanh")
    t = trace(config, cotangent="xent")
    g = t["dx"][-1]
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-6)  # softmax - onehot sums to 0
    t = trace(config, cotangent="mse")
    assert np.all(np.isfinite(t["dx"][-1]))


# --- non-finite values are measured, never a crash --------------------------------------------
def test_overflow_is_reported_not_raised():
    config = NetworkConfig(depth=60, width=64, batch=4, init="normal:stddev=1.0", activation="relu")
    with pytest.warns(NonFiniteWarning, match="overflow"):
        result = propagate(config, seeds=2)
    st = result.stats
    assert np.asarray(st.nonfinite)[:, -1].min() > 0  # deep layers: inf values, counted
    assert np.asarray(st.nonfinite)[:, 0].max() == 0
    assert result.nonfinite_layers[0] < 60
    # statistics of layers that still have finite values are finite numbers, not NaN
    assert np.isfinite(st.act_mean[:, 5]).all()


# --- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(depth=0), "depth must be >= 1"),
        (dict(width=0), "width must be >= 1"),
        (dict(batch=0), "batch must be >= 1"),
        (dict(width=(8, 8)), "width has 2 entries"),
        (dict(norm="group"), "norm must be one of"),
        (dict(norm_placement="middle"), "norm_placement must be one of"),
        (dict(norm="batch", batch=1), "batch norm needs batch >= 2"),
        (dict(activation="swishy"), "unknown activation 'swishy'"),
        (dict(init="he_nromal"), "unknown initializer 'he_nromal'"),
        (dict(input_correlation=1.5), "input_correlation must be <= 1.0"),
        (dict(input_variance=0.0), "input_variance must be > 0.0"),
        (dict(dtype="int32"), "floating dtype"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        small(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(seeds=0), "seeds must be >= 1"),
        (dict(cotangent="hinge"), "cotangent must be one of"),
        (dict(chunk_size=0), "chunk_size must be >= 1"),
        (dict(bins=0), "bins must be >= 1"),
        (dict(act_range=(1.0, -1.0)), "low < high"),
        (dict(prng_impl="rbg"), "prng_impl must be one of"),
        (dict(inputs=np.zeros((3, 3), np.float32)), r"inputs must have shape \(batch, in_width\) = \(8, 64\)"),
        (dict(memory_budget=1000), "needs about"),
    ],
)
def test_bad_propagate_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError, MemoryError), match=match):
        propagate(small(), **kwargs)


def test_memory_estimate_scales_with_width_squared():
    # the weight buffers (~n^2) dominate the kept activations (~batch x n per layer) at large n;
    # at 8192 -> 16384 the linear term moves the ratio only from 4 to about 3.9
    a = estimate_memory(NetworkConfig(depth=10, width=8192, batch=16))
    b = estimate_memory(NetworkConfig(depth=10, width=16384, batch=16))
    assert 3.5 < b / a < 4.1
    assert estimate_memory(NetworkConfig(depth=10, width=8192, batch=16), remat=False) > a  # weights kept


def test_config_json_round_trip():
    config = small(width=(8, 6, 6, 4), in_width=5, init="he_normal:mode=fan_out", activation="leaky_relu:negative_slope=0.2",
                   norm="layer", label="x")
    again = NetworkConfig.from_json(config.to_json())
    assert again == config and hash(again) == hash(config)
    with pytest.raises(ValueError, match="unknown NetworkConfig fields"):
        NetworkConfig.from_dict({**config.to_dict(), "colour": 1})


MULTI_DEVICE_SCRIPT = """
import numpy as np, jax
from initjax import NetworkConfig, propagate
from initjax.propagation import LayerStats
assert jax.device_count() == 4
c = NetworkConfig(depth=3, width=32, batch=4, init="xavier_normal", activation="tanh")
one = propagate(c, seeds=6, prng_impl="threefry2x32").stats
four = propagate(c, seeds=6, prng_impl="threefry2x32", devices="all").stats  # 2 slots per device, one idle
# one seed per device per chunk: the second chunk fills two of the four devices
chunked = propagate(c, seeds=6, prng_impl="threefry2x32", devices="all", chunk_size=1).stats
for f in LayerStats._fields:
    np.testing.assert_allclose(getattr(four, f), getattr(one, f), rtol=1e-5, atol=1e-7, err_msg=f)
    np.testing.assert_allclose(getattr(chunked, f), getattr(one, f), rtol=1e-5, atol=1e-7, err_msg=f)
try:
    propagate(c, seeds=2, devices=4)
    raise SystemExit("philox on 4 devices was not refused")
except ValueError as e:
    assert "threefry2x32" in str(e)
print("OK")
"""


def test_seeds_sharded_over_four_devices_match_one_device():
    """4 simulated CPU devices (XLA_FLAGS must be set before jax starts: a subprocess). The random
    numbers are identical; statistics agree to float summation order (the devices share threads)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", MULTI_DEVICE_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]


def test_fast_method_is_used_and_falls_back_with_a_reason():
    """The fast path's distributional tests live in test_fastpath.py; here: propagate wires it in,
    records it, agrees with dense on the mean-field quantities, and falls back where it cannot."""
    import warnings

    from initjax.propagation import FallbackWarning

    config = NetworkConfig(depth=4, width=256, batch=8, init="he_normal", activation="relu")
    fast = propagate(config, seeds=16, method="fast")
    dense = propagate(config, seeds=16)
    assert fast.method == "fast" and dense.method == "dense"
    # q^l = 2 for ReLU + He in both; seed means within 5 standard errors of each other
    a, b = (np.asarray(r.stats.preact_second_moment, np.float64) for r in (fast, dense))
    se = np.sqrt(a.var(0, ddof=1) / 16 + b.var(0, ddof=1) / 16)
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < 5 * se)
    with pytest.warns(FallbackWarning, match="orthogonal"):
        r = propagate(config.replace(init="orthogonal"), seeds=1, method="fast")
    assert r.method == "dense"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="method must be one of"):
            propagate(config, method="magic")
