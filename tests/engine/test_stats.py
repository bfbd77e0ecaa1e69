"""The engine's statistics (initjax.engine.stats) against independent computations: numpy
re-derivations on the raw tensors of the same network (``trace``), numpy's histogram, and the
non-finite bookkeeping."""

import numpy as np
import pytest

from initjax import NetworkConfig, NonFiniteWarning, propagate, trace
from initjax.engine import histogram, measure_layers
from initjax.engine.stats import MeasureOptions, check_range, stats_of_layers

from .networks import small


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


def test_constant_init_makes_every_unit_identical():
    """Every unit of a layer computes the same sum; only float rounding (the matmul sums columns
    in different orders) separates them, ~1e-7 of the spread across examples."""
    st = propagate(small(activation="tanh", init="constant:value=0.01"), seeds=2).stats
    assert np.all(np.asarray(st.act_var) > 1e-4)  # examples still differ ...
    assert np.all(np.asarray(st.unit_std) < 1e-5 * np.sqrt(np.asarray(st.act_var)))  # ... units do not
    zeros = propagate(small(activation="tanh", init="zeros"), seeds=1).stats
    np.testing.assert_array_equal(zeros.unit_std, 0.0)


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


def test_measure_layers_equals_the_engine_on_its_own_tensors():
    """measure_layers on trace's tensors of a seed gives propagate's statistics of that seed, from
    per-layer lists (ragged networks) and from stacked arrays alike."""
    config = small(activation="tanh", init="xavier_normal", depth=3)
    t = trace(config, seed=1)
    names = ("x_prev", "h", "y", "out", "dh", "dx")
    from_lists = measure_layers("tanh", *(t[n] for n in names))
    from_stacked = measure_layers("tanh", *(np.stack(t[n]) for n in names))
    engine = propagate(config, seeds=2).stats
    for field in ("preact_var", "act_var", "grad_preact_var", "weight_grad_var", "cosine"):
        np.testing.assert_allclose(getattr(from_lists, field), getattr(engine, field)[1], rtol=1e-5, err_msg=field)
        np.testing.assert_allclose(getattr(from_stacked, field), getattr(from_lists, field), rtol=1e-6)
    np.testing.assert_array_equal(from_lists.act_hist, engine.act_hist[1])
    opts = MeasureOptions((-1.0, 1.0), (-1.0, 1.0), 40, "normal", False, 0.01)
    direct = stats_of_layers(config.activation, opts, *(t[n] for n in names))
    np.testing.assert_array_equal(direct.act_var, from_lists.act_var)
    with pytest.raises(ValueError, match="same non-zero number of layers"):
        measure_layers("tanh", t["x_prev"], t["h"][:2], t["y"], t["out"], t["dh"], t["dx"])


def test_check_range_names_the_bad_value():
    assert check_range("act_range", [0, 2]) == (0.0, 2.0)
    with pytest.raises(ValueError, match=r"act_range must have low < high, got \(1, 1\)"):
        check_range("act_range", (1, 1))
    with pytest.raises(ValueError, match="grad_range must be a pair"):
        check_range("grad_range", 3.0)


def test_an_overflowed_example_has_no_gradient_anywhere_not_a_zero_one():
    """relu'(nan) = 0 carries an overflow back as an exact zero gradient ("vanishing"): the rows
    of an example that overflowed at any layer are counted non-finite at every layer instead."""
    config = NetworkConfig(depth=60, width=64, batch=4, init="normal:stddev=1.0", activation="relu")
    with pytest.warns(NonFiniteWarning):
        st = propagate(config, seeds=2).stats
    assert np.asarray(st.nonfinite)[:, 0].max() == 0  # layer 1's forward is finite
    assert (np.asarray(st.grad_nonfinite)[:, 0] > 0).all()  # but its gradient rows are not kept
    grad = np.asarray(st.grad_preact_var)[:, 0]
    assert not (grad == 0).any()
