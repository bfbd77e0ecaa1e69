"""initjax.transfer: the learning-rate x seed grid in one program, divergence, the optimum."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from initjax import data, modules, parametrization, transfer
from initjax.network import Dense, Network
from initjax.training import scale_by_multipliers

STEPS, BATCH, SEEDS = 12, 16, 2
LRS = (2.0**-9, 2.0**-6, 2.0**-3)


@pytest.fixture(scope="module")
def ds():
    return data.digits()


@pytest.fixture(scope="module")
def net():
    # muP at 4x its base width: the per-layer multipliers (forward and learning rate) are not 1
    return parametrization.mlp(64, 32, 3, 10, parametrization="mup", optimizer="adam",
                               base_width=8)


@pytest.fixture(scope="module")
def sweeps(ds, net):
    """The grid with the learning rates mapped and vmapped, and a second grid of other values."""
    out = {}
    for loop in ("map", "vmap"):
        out[loop] = transfer.lr_sweep(net, ds, learning_rates=LRS, seeds=SEEDS, steps=STEPS,
                                      batch_size=BATCH, key=3, lr_loop=loop, loss_window=4)
    out["other"] = transfer.lr_sweep(net, ds, learning_rates=[v * 1.5 for v in LRS], seeds=SEEDS,
                                     steps=STEPS, batch_size=BATCH, key=3, lr_loop="map")
    return out


def _alone(net, ds, lr, seed, key):
    """One member trained by a plain loop: its own model, optax chain and minibatches."""
    model = modules.build(net, rngs=nnx.Rngs(modules.ensemble_keys(key, seed + 1)[seed]))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tx = optax.chain(optax.adam(lr), scale_by_multipliers(model.lr_multipliers()))
    opt = tx.init(params)
    x = jnp.asarray(ds.x_train.reshape(len(ds.x_train), -1), jnp.float32)
    y = jnp.asarray(ds.y_train)

    @jax.jit
    def step(params, opt, rows):
        def loss(p):
            logits = nnx.merge(graphdef, p, rest, copy=True)(x[rows])
            return optax.softmax_cross_entropy_with_integer_labels(logits, y[rows]).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt, value

    rows = np.arange(len(x), dtype=np.int32)
    batches = data.batches(rows, rows, BATCH, seed=key)
    losses = []
    with jax.default_matmul_precision("highest"):
        for _ in range(STEPS):
            params, opt, value = step(params, opt, jnp.asarray(next(batches)[0]))
            losses.append(float(value))
    return np.asarray(losses)


@pytest.mark.parametrize("loop", ["map", "vmap"])
def test_member_of_grid_equals_member_trained_alone(sweeps, ds, net, loop):
    sweep = sweeps[loop]
    assert sweep.curves.shape == (len(LRS), SEEDS, STEPS)
    assert not sweep.diverged.any()
    # float32 rounding of batched vs single matmuls, carried through 12 Adam steps (measured on
    # CPU: 4e-7 relative at most; the margin covers other summation orders on accelerators)
    for i, s in ((1, 1), (2, 0)):
        np.testing.assert_allclose(sweep.curves[i, s], _alone(net, ds, LRS[i], s, key=3),
                                   rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(sweep.final_loss, sweep.curves[..., -4:].mean(-1), rtol=1e-12)


def test_map_and_vmap_agree(sweeps):
    np.testing.assert_allclose(sweeps["map"].curves, sweeps["vmap"].curves, rtol=2e-5, atol=1e-6)


def test_learning_rates_are_data_one_compilation(sweeps, net):
    # two grids of different values (sweeps["map"] and sweeps["other"]): one compiled program
    assert transfer.sweep_program(net, "adam", "map")._cache_size() == 1
    assert transfer.sweep_program(net, "adam", "vmap")._cache_size() == 1
    assert not np.allclose(sweeps["map"].final_loss, sweeps["other"].final_loss)


def test_divergence_is_flagged_and_isolated(ds):
    small = Network(64, (Dense(16, "he_normal", "relu"), Dense(10, "lecun_normal", "identity")))
    kw = {"seeds": 2, "steps": 10, "batch_size": 16, "optimizer": "sgd", "loss_window": 3}
    bad = transfer.lr_sweep(small, ds, learning_rates=[0.05, 1e9, 0.1], **kw)
    good = transfer.lr_sweep(small, ds, learning_rates=[0.05, 0.1], **kw)
    assert bad.diverged[1].all() and not bad.diverged[[0, 2]].any()
    assert np.all(bad.final_loss[1] == np.inf)
    for s in range(2):
        d = bad.diverged_step[1, s]
        assert 1 <= d <= 10
        assert np.isnan(bad.curves[1, s, d:]).all()
    np.testing.assert_allclose(bad.final_loss[[0, 2]], good.final_loss, rtol=1e-5)
    assert np.isfinite(bad.curves[[0, 2]]).all()
    assert bad.seed_mean_loss()[1] == np.inf
    assert bad.optimal_log2_lr("argmin") in (np.log2(0.05), np.log2(0.1))


def _synthetic(log2_lrs, loss, diverged=None):
    loss = np.asarray(loss, np.float64)[:, None] * np.ones((1, 2))
    bad = np.full(loss.shape, -1) if diverged is None else np.asarray(diverged)
    return transfer.LRSweep(learning_rates=2.0 ** np.asarray(log2_lrs, np.float64),
                            final_loss=np.where(bad >= 0, np.inf, loss),
                            curves=np.zeros(loss.shape + (3,)), diverged_step=bad, steps=3,
                            batch_size=1, loss_window=1, optimizer="adam")


def test_optimal_log2_lr_recovers_a_parabola():
    x = np.array([-12.0, -11.0, -9.5, -9.0, -7.0, -6.5, -4.0])  # uneven spacing
    for x0 in (-9.2, -9.4, -8.1, -6.9):
        sw = _synthetic(x, 0.3 * (x - x0) ** 2 + 0.1)
        assert sw.optimal_log2_lr() == pytest.approx(x0, abs=1e-9)
        i = int(np.argmin((x - x0) ** 2))
        assert sw.best_index() == i and sw.optimal_log2_lr("argmin") == x[i]
        assert not sw.optimum_at_edge()


def test_optimal_log2_lr_edges_divergence_and_nothing_left():
    x = np.arange(-6.0, 0.0)
    edge = _synthetic(x, (x + 7.0) ** 2)  # minimum below the grid
    assert edge.optimal_log2_lr() == -6.0 and edge.optimum_at_edge()
    # the right neighbour of the minimum diverged: no parabola, the grid point
    div = np.full((6, 2), -1)
    div[4, 1] = 5
    near = _synthetic(x, (x + 3.3) ** 2, div)
    assert near.optimal_log2_lr() == -3.0
    # a diverged rate is never the optimum, even with the lowest finite-seed loss
    div = np.full((6, 2), -1)
    div[2, 0] = 1
    low = _synthetic(x, [5, 4, 0.1, 3, 4, 5], div)
    assert low.optimal_log2_lr("argmin") != -4.0
    gone = _synthetic(x, np.ones(6), np.ones((6, 2), int))
    assert np.isnan(gone.optimal_log2_lr()) and gone.best_index() == -1


def test_save_load_roundtrip(tmp_path, sweeps):
    sw = sweeps["map"]
    path = sw.save(tmp_path / "sweep.npz")
    back = transfer.LRSweep.load(path)
    for f in ("learning_rates", "final_loss", "curves", "diverged_step"):
        np.testing.assert_array_equal(getattr(back, f), getattr(sw, f))
    assert back.meta() == sw.meta()
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        transfer.LRSweep.load(tmp_path / "junk.npz")


def test_plot_transfer_draws_panels(sweeps):
    fig = transfer.plot_transfer({"SP": {32: sweeps["map"]}, "muP": {32: sweeps["other"]}})
    assert len(fig.axes) == 2


@pytest.mark.parametrize("kwargs, match", [
    ({"learning_rates": [1e-3, 0.0]}, r"learning_rates must be finite and > 0, got \[0.0\]"),
    ({"learning_rates": [1e-3, float("nan")]}, "learning_rates must be finite"),
    ({"learning_rates": []}, "non-empty"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"loss_window": 20}, "loss_window must be <= steps=10"),
    ({"lr_loop": "pmap"}, "lr_loop"),
    ({"precision": "low"}, "precision"),
    ({"batch_size": 10**6}, "batch_size must be <="),
])
def test_bad_input_is_named(ds, net, kwargs, match):
    args = {"learning_rates": [1e-3], "seeds": 1, "steps": 10, "batch_size": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        transfer.lr_sweep(net, ds, **args)


def test_network_without_readout_is_refused(ds):
    headless = Network(64, (Dense(32, "he_normal", "relu"),))
    with pytest.raises(ValueError, match="readout"):
        transfer.lr_sweep(headless, ds, learning_rates=[1e-3], steps=2, batch_size=8)
    with pytest.raises(TypeError, match="Network"):
        transfer.lr_sweep("mlp", ds, learning_rates=[1e-3], steps=2, batch_size=8)
    with pytest.raises(ValueError, match="distinct"):
        transfer.transfer([8, 8], lambda w: headless, ds, learning_rates=[1e-3])
