"""The engine's public face (initjax.engine.propagation): trace is the network it claims, bad
input is refused with a clear message, the fast method is wired in and falls back with a reason."""

import numpy as np
import pytest

from initjax import NetworkConfig, propagate, propagate_shared, trace
from initjax.engine import FallbackWarning, shareable

from .networks import small


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


def test_config_json_round_trip():
    config = small(width=(8, 6, 6, 4), in_width=5, init="he_normal:mode=fan_out", activation="leaky_relu:negative_slope=0.2",
                   norm="layer", label="x")
    again = NetworkConfig.from_json(config.to_json())
    assert again == config and hash(again) == hash(config)
    with pytest.raises(ValueError, match="unknown NetworkConfig fields"):
        NetworkConfig.from_dict({**config.to_dict(), "colour": 1})


def test_fast_method_is_used_and_falls_back_with_a_reason():
    """The fast path's distributional tests live in test_fast.py; here: propagate wires it in,
    records it, agrees with dense on the mean-field quantities, and falls back where it cannot."""
    import warnings


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


def test_bad_propagate_shared_arguments():
    """propagate_shared takes propagate's options by name and refuses what propagate refuses."""
    a, b = small(), small(init="xavier_normal", activation="tanh")
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
        propagate_shared([a, b], colour=1)
    with pytest.raises(ValueError, match="propagate_shared needs at least one config"):
        propagate_shared([])
    with pytest.raises(TypeError, match=r"configs\[1\] must be an initjax NetworkConfig or Network, got"):
        propagate_shared([a, "he_normal"])
    with pytest.raises(ValueError, match="cannot share weight draws"):
        propagate_shared([a, small(init="orthogonal")])
    with pytest.raises(ValueError, match="cotangent must be one of"):
        propagate_shared([a, b], cotangent="hinge")
    with pytest.raises(ValueError, match="shareable needs at least one config"):
        shareable([])
    assert shareable([a, b]) and not shareable([a, small(width=32)])
    with pytest.warns(FallbackWarning, match="propagate_shared draws weight matrices"):
        results = propagate_shared([a, b], seeds=1, method="fast")
    assert [r.method for r in results] == ["dense", "dense"]
