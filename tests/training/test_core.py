"""Tests of initjax.training.core: the pure step, the scan, arms and seeds as vmap axes.

The truth is plain SGD written out in numpy on a least-squares model, member by member.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from initjax import training
from initjax.training import (
    TrainState,
    init_state,
    make_step,
    run_steps,
    scale_by_multipliers,
    vmap_arms_seeds,
)

STEPS, BATCH, DIM = 12, 8, 3


@pytest.fixture(autouse=True)
def _float32_exact_matmuls():
    """The core's functions run at their caller's matmul precision (``training.compare`` sets
    "highest" itself); against float64 numpy at rtol 1e-5 these tests' own jitted steps do too:
    a GPU's default TF32-class matmuls are ~1e-3 off."""
    with jax.default_matmul_precision("highest"):
        yield


def _loss(params, model_state, batch):
    x, y = batch
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2), model_state


def _task(seed):
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((STEPS, BATCH, DIM)).astype(np.float32)
    ys = (xs @ np.array([1.0, -2.0, 0.5], np.float32) + 0.3).astype(np.float32)
    return xs, ys


def _numpy_sgd(w, b, xs, ys, lr, momentum=0.0):
    """SGD (with PyTorch/optax momentum: v <- mu v + g, p <- p - lr v) in float64."""
    w, b = np.asarray(w, np.float64), float(b)
    vw, vb, losses = np.zeros_like(w), 0.0, []
    for x, y in zip(xs.astype(np.float64), ys.astype(np.float64)):
        r = x @ w + b - y
        losses.append(np.mean(r**2))
        gw, gb = 2 * x.T @ r / len(y), 2 * np.mean(r)
        vw, vb = momentum * vw + gw, momentum * vb + gb
        w, b = w - lr * vw, b - lr * vb
    return w, b, np.asarray(losses)


def _params(seed):
    w = np.random.default_rng(100 + seed).standard_normal(DIM).astype(np.float32)
    return {"w": jnp.asarray(w), "b": jnp.zeros((), jnp.float32)}


def test_one_member_equals_numpy_sgd():
    tx = optax.sgd(0.05, momentum=0.5)
    state = init_state(_params(0), tx)
    xs, ys = _task(0)
    state, losses = jax.jit(lambda s, b: run_steps(make_step(_loss, tx), s, b))(state, (xs, ys))
    w, b, want = _numpy_sgd(_params(0)["w"], 0.0, xs, ys, 0.05, 0.5)
    np.testing.assert_allclose(losses, want, rtol=1e-5)
    np.testing.assert_allclose(state.params["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.params["b"], b, rtol=1e-5, atol=1e-6)
    assert int(state.step) == STEPS and int(state.diverged_step) == -1
    assert isinstance(state, TrainState)


def test_arms_and_seeds_vmapped_equal_members_alone_and_diverge_alone():
    """Arms differ in the learning rate (data, one compile); each (arm, seed) member equals the
    numpy run of that member alone; the 1e6 arm diverges without touching the others."""
    lrs = np.array([0.01, 0.05, 0.1, 1e6], np.float32)
    seeds = 3

    def member(state, lr, xs, ys):
        tx = optax.sgd(lambda count: lr)
        return run_steps(make_step(_loss, tx), state, (xs, ys))

    tx0 = optax.sgd(lambda count: 1.0)
    per_seed = [init_state(_params(s), tx0) for s in range(seeds)]
    stacked = jax.tree.map(lambda *a: jnp.stack([jnp.stack(a)] * len(lrs)), *per_seed)
    data = [_task(s) for s in range(seeds)]
    xs = jnp.asarray(np.stack([d[0] for d in data]))
    ys = jnp.asarray(np.stack([d[1] for d in data]))
    run = jax.jit(vmap_arms_seeds(member, (0, 0, None, None), (0, None, 0, 0)))
    compiled: list[str] = []
    log = logging.Handler()
    log.emit = lambda r: compiled.append(r.getMessage()) if "Compiling jit(member)" in r.getMessage() else None
    logging.getLogger("jax").addHandler(log)
    try:
        with jax.log_compiles(True):
            state, losses = run(stacked, jnp.asarray(lrs), xs, ys)
            run(stacked, jnp.asarray(lrs * 0.5), xs, ys)  # new numbers: no new compile
    finally:
        logging.getLogger("jax").removeHandler(log)
    assert len(compiled) == 1, compiled
    assert losses.shape == (len(lrs), seeds, STEPS)
    for a, lr in enumerate(lrs[:3]):
        for s in range(seeds):
            w, b, want = _numpy_sgd(_params(s)["w"], 0.0, *data[s], float(lr))
            np.testing.assert_allclose(losses[a, s], want, rtol=1e-5)
            np.testing.assert_allclose(state.params["w"][a, s], w, rtol=1e-5, atol=1e-6)
    diverged = np.asarray(state.diverged_step)
    assert np.all(diverged[:3] == -1)
    assert np.all((diverged[3] >= 1) & (diverged[3] <= STEPS))


def test_model_state_is_carried():
    """A loss that updates a counter in its model state (as batch norm does)."""
    def loss(params, count, batch):
        return jnp.sum(params ** 2) * batch, count + 1

    tx = optax.sgd(0.1)
    state, _ = run_steps(make_step(loss, tx), init_state(jnp.ones(2), tx, jnp.int32(0)),
                         jnp.ones(5))
    assert int(state.model_state) == 5
    np.testing.assert_allclose(state.params, 0.8**5, rtol=1e-6)


def test_bad_input_is_rejected():
    with pytest.raises(TypeError, match="optax.GradientTransformation"):
        init_state({"w": jnp.zeros(2)}, "sgd")
    with pytest.raises(TypeError, match="loss_fn must be callable"):
        make_step(3.0, optax.sgd(0.1))
    with pytest.raises(TypeError, match="optax.GradientTransformation"):
        make_step(_loss, lambda g: g)
    with pytest.raises(ValueError, match="one entry per argument"):
        vmap_arms_seeds(lambda a, b: a, (0, 0), (0,))


def test_all_finite():
    assert bool(training.core.all_finite({"a": jnp.ones(2), "b": ()}))
    assert not bool(training.core.all_finite([jnp.array([1.0, jnp.inf])]))
    assert bool(training.core.all_finite(()))


def test_per_layer_learning_rate_multipliers_scale_each_layers_update():
    """A Dense layer's lr_multiplier m gives its kernel and bias the update -eta m g (SGD, one
    step), every other parameter (norm, branch scale, readout) -eta g."""
    from flax import nnx

    from initjax import modules
    from initjax.network import Dense, Network, Repeat, Residual

    net = Network(6, (Dense(8, "he_normal", "tanh", lr_multiplier=0.25),
                      Repeat(Residual((Dense(8, "he_normal", "relu", lr_multiplier=4.0),),
                                      learnable=True, norm="layer"), 1)))
    model = modules.build(net, 3, rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    x, y = jax.random.normal(jax.random.key(1), (5, 6)), jnp.arange(5) % 3

    def loss(p, rest, batch):
        logits = nnx.merge(graphdef, p)(batch[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean(), rest

    eta = 0.1
    tx = optax.chain(optax.sgd(eta), scale_by_multipliers(model.lr_multipliers()))
    state, _ = make_step(loss, tx)(init_state(params, tx), (x, y))
    grads = jax.grad(lambda p: loss(p, (), (x, y))[0])(params)
    moved = jax.tree.map(lambda new, old: new - old, state.params, params)
    for (path, g), (_, d) in zip(jax.tree_util.tree_leaves_with_path(grads),
                                 jax.tree_util.tree_leaves_with_path(moved), strict=True):
        name = jax.tree_util.keystr(path)
        m = 0.25 if "[0]" in name and "blocks" in name and "branch" not in name else (
            4.0 if "branch" in name else 1.0)
        # new - old loses float32 digits of |param| <~ 2: atol 4 ulp(2) = 5e-7
        np.testing.assert_allclose(d, -eta * m * g, rtol=1e-4, atol=5e-7, err_msg=name)


def test_arms_in_turn_equal_arms_vmapped():
    """map_arms_vmap_seeds (arms one after the other, for convolutions) computes what
    vmap_arms_seeds computes: arms x seeds members with shared and per-arm arguments."""
    from initjax.training import map_arms_vmap_seeds

    def member(w, lr, x, noise):
        return jnp.tanh(x @ w) * lr + noise

    w = jax.random.normal(jax.random.key(0), (3, 4, 5, 2))  # (arm, seed, in, out)
    lr = jnp.array([0.1, 1.0, 10.0])  # (arm,)
    x = jax.random.normal(jax.random.key(1), (7, 5))  # shared
    noise = jax.random.normal(jax.random.key(2), (4, 7, 2))  # (seed, ...)
    args = ((0, 0, None, None), (0, None, None, 0))
    want = vmap_arms_seeds(member, *args)(w, lr, x, noise)
    got = jax.jit(map_arms_vmap_seeds(member, *args))(w, lr, x, noise)
    assert got.shape == (3, 4, 7, 2)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[2, 1], jnp.tanh(x @ w[2, 1]) * 10.0 + noise[1], rtol=1e-5)
    with pytest.raises(ValueError, match="arm_axes must be 0 or None"):
        map_arms_vmap_seeds(member, (1, 0, None, None), (0, None, None, 0))


@pytest.mark.parametrize("bad, match", [
    ({"a": 0.0}, r"multiplier \['a'\] must be a finite number > 0, got 0.0"),
    ({"a": float("nan")}, r"\['a'\] must be a finite number > 0"),
    ({"a": np.ones(2)}, r"\['a'\] must be a finite number > 0, got array"),
    ({"a": "fast"}, r"\['a'\] must be a finite number > 0, got 'fast'"),
])
def test_scale_by_multipliers_refuses_bad_multipliers(bad, match):
    with pytest.raises(ValueError, match=match):
        scale_by_multipliers(bad)
