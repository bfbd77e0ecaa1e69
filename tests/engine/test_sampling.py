"""The sampled network (initjax.engine.sampling): He et al. 2015's variance recursion, inputs,
normalization, cotangents and the key rule."""

import math

import jax
import numpy as np
import pytest

from initjax import NetworkConfig, propagate, propagate_shared, trace
from initjax.engine.sampling import base_key, seed_keys, split_seed_key

from .networks import small


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


def test_cotangent_options():
    config = small(depth=2, width=10, batch=4, activation="tanh")
    t = trace(config, cotangent="xent")
    g = t["dx"][-1]
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-6)  # softmax - onehot sums to 0
    t = trace(config, cotangent="mse")
    assert np.all(np.isfinite(t["dx"][-1]))


def test_an_int_key_follows_the_one_key_rule():
    """An int seed s is jax.random.key(s, impl=prng_impl), philox2x32 by default; a typed key is
    used as given; a legacy raw uint32[2] key is wrapped as threefry (what made it)."""
    np.testing.assert_array_equal(jax.random.key_data(base_key(7)),
                                  jax.random.key_data(jax.random.key(7, impl="philox2x32")))
    assert str(jax.random.key_impl(base_key(7, "threefry2x32"))) == "threefry2x32"
    typed = jax.random.key(3, impl="threefry2x32")
    assert base_key(typed) is typed
    raw = base_key(jax.random.PRNGKey(5))
    assert str(jax.random.key_impl(raw)) == "threefry2x32"
    np.testing.assert_array_equal(jax.random.key_data(raw), np.asarray(jax.random.PRNGKey(5)))
    with pytest.raises(ValueError, match="prng_impl must be one of"):
        base_key(0, "rbg")
    with pytest.raises(TypeError, match="key must be"):
        base_key(1.5)
    with pytest.raises(ValueError, match="seed must be in"):
        base_key(-1)


def test_seed_keys_are_fold_ins_and_the_seed_key_splits_by_fixed_tags():
    """Seed s uses fold_in(key, s) whatever its neighbours, and its four keys are fold_in tags
    0..3 (inputs, weights, biases, cotangent): new uses of randomness never shift these."""
    root = jax.random.key(0, impl="philox2x32")
    keys = seed_keys(root, np.array([2, 9, 4]))
    for i, s in enumerate((2, 9, 4)):
        np.testing.assert_array_equal(jax.random.key_data(keys[i]),
                                      jax.random.key_data(jax.random.fold_in(root, s)))
    split = split_seed_key(keys[0])
    for tag, k in enumerate((split.inputs, split.weights, split.biases, split.cotangent)):
        np.testing.assert_array_equal(jax.random.key_data(k),
                                      jax.random.key_data(jax.random.fold_in(keys[0], tag)))
    # a propagated seed's inputs are the ones drawn from its inputs key
    config = small(depth=1, width=8, batch=4)
    t = trace(config, seed=2)
    assert t["x_prev"][0].shape == (4, 8)
    other = trace(config, seed=3)
    assert not np.array_equal(t["x_prev"][0], other["x_prev"][0])
