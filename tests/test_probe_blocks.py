"""probe_blocks: per-block statistics of an existing NetworkModule, against direct computations
on the module's own forward pass and gradients taken without probes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from initjax import modules
from initjax.engine import BlockPropagation
from initjax.network import Dense, Network, Repeat, Residual
from initjax.probing import probe, probe_blocks

NET = Network(24, (Dense(32, "he_normal", "relu"),
                   Repeat(Residual((Dense(32, "he_normal", "relu", preactivation=True),
                                    Dense(32, "he_normal", "relu", preactivation=True, norm="batch")),
                                   alpha=0.7, norm="layer"), 3),
                   Repeat(Residual((Dense(32, "lecun_normal", "tanh"),), norm="batch", norm_position="post"), 2)),
              batch=12)


@pytest.fixture(scope="module")
def setup():
    model = modules.build(NET, 5, rngs=nnx.Rngs(3))
    x = jax.random.normal(jax.random.key(0), (12, 24))
    ct = jax.random.normal(jax.random.key(1), (12, 5))
    with jax.default_matmul_precision("highest"):
        result = probe_blocks(model, x, cotangent=ct)
        _, inter = model.forward_with_intermediates(x)

        graphdef, state = nnx.split(model)

        def tail(h, start):
            m = nnx.merge(graphdef, jax.tree.map(lambda a: a, state))  # a private copy per trace
            for blk in m.blocks[start:]:
                h = blk(h)
            return m.readout(h)

        grads = [jax.grad(lambda h, i=i: (ct * tail(h, i + 1)).sum())(inter["hidden"][i])
                 for i in range(NET.depth)]
    return model, x, result, inter["hidden"], grads


def test_stream_statistics_equal_the_modules_forward_pass(setup):
    _, x, result, hidden, _ = setup
    st = result.stats
    assert isinstance(result, BlockPropagation) and st.act_var.shape == (1, NET.depth)
    for i, h in enumerate(hidden):
        h = np.asarray(h, np.float64)
        np.testing.assert_allclose(st.act_second_moment[0, i], (h * h).mean(), rtol=1e-5)
        np.testing.assert_allclose(st.act_chan_var[0, i], h.var(0).mean(), rtol=1e-5)
        np.testing.assert_allclose(st.act_sq_mean[0, i], (h.mean(0) ** 2).mean(), rtol=1e-4, atol=1e-8)
        u = h / np.linalg.norm(h, axis=1, keepdims=True)
        g = u @ u.T
        np.testing.assert_allclose(st.cosine[0, i], (g.sum() - np.trace(g)) / (12 * 11), rtol=1e-4, atol=1e-6)
    assert np.isnan(st.branch_var[0, 0])  # the Dense stem has no branch


def test_branch_of_a_pre_norm_block_is_the_streams_increment(setup):
    _, _, result, hidden, _ = setup
    for i in (1, 2, 3):  # pre-norm blocks: x_l = x_{l-1} + f_l
        f = np.asarray(hidden[i], np.float64) - np.asarray(hidden[i - 1], np.float64)
        np.testing.assert_allclose(result.stats.branch_var[0, i], f.var(), rtol=1e-4)
        total = np.asarray(hidden[i], np.float64)
        np.testing.assert_allclose(result.stats.branch_share[0, i], f.var() / total.var(), rtol=1e-4)


def test_stream_gradients_equal_gradients_taken_without_probes(setup):
    """dL/dx_l includes the skip path: equal to the gradient of the network's tail from block l."""
    _, _, result, _, grads = setup
    for i, g in enumerate(grads):
        g = np.asarray(g, np.float64)
        np.testing.assert_allclose(result.stats.grad_second_moment[0, i], (g * g).mean(), rtol=1e-4)


def test_weight_gradient_norms_equal_nnx_grad(setup):
    model, x, result, _, _ = setup
    ct = jax.random.normal(jax.random.key(1), (12, 5))
    with jax.default_matmul_precision("highest"):
        grads = nnx.grad(lambda m: (ct * m(x)).sum())(nnx.clone(model))
    for i, blk in enumerate(model.blocks):
        g = grads["blocks"][i]
        layers = [g] if isinstance(blk, modules.DenseLayer) else [g["branch"][j] for j in range(len(blk.branch))]
        want = [float(jnp.linalg.norm(jnp.asarray(layer["kernel"][...]))) for layer in layers]
        np.testing.assert_allclose(result.stats.weight_grad_norm[0, i, : len(want)], want, rtol=1e-4)


def test_the_model_is_not_modified_and_probe_dispatches(setup):
    model, x, _, _, _ = setup
    before = jax.tree.map(np.asarray, nnx.state(model))
    res = probe(model, x, use_running_average=False)
    after = jax.tree.map(np.asarray, nnx.state(model))
    jax.tree.map(np.testing.assert_array_equal, before, after)
    assert isinstance(res, BlockPropagation)
    with pytest.raises(ValueError, match="bins=10 does not apply to a NetworkModule"):
        probe(model, x, bins=10)


def test_bad_input_is_refused():
    model = modules.build(Network.residual_mlp(2, 8, batch=4), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="NetworkModule"):
        probe_blocks(modules.MLP(8, (8,), rngs=nnx.Rngs(0)), jnp.ones((4, 8)))
    with pytest.raises(ValueError, match=r"shape \(batch, 8\)"):
        probe_blocks(model, jnp.ones((4, 9)))
    with pytest.raises(ValueError, match="output's shape"):
        probe_blocks(model, jnp.ones((4, 8)), cotangent=jnp.ones((3, 8)))


def test_spatial_networks_are_refused_by_probe_blocks_and_the_trainer():
    from initjax.training import TrainConfig

    cnn = Network.residual_cnn(2, 4, (4, 4), batch=2)
    with pytest.raises(ValueError, match=r"spatial=\(4, 4\)"):
        probe_blocks(modules.build(cnn, rngs=nnx.Rngs(0)), jnp.ones((2, 4, 4, 4)))
    with pytest.raises(ValueError, match=r"spatial=\(4, 4\)"):
        TrainConfig(model="network", network=cnn)
