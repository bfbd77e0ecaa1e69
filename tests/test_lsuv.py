"""LSUV (Mishkin & Matas 2016): unit pre-activation variance on the batch, layer by layer.

Variances are checked independently of lsuv's own bookkeeping: numpy on forward_with_intermediates.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from initjax.lsuv import LSUVReport, lsuv
from initjax.modules import MLP, PlainCNN, create_ensemble

WIDTH, BATCH = 32, 8


def _key(seed):
    # threefry's normal sampler compiles for seconds per shape on a small CPU; philox does not
    return jax.random.key(seed, impl="philox2x32")


def _rngs(seed):
    return nnx.Rngs(_key(seed))


X = jax.random.normal(_key(1), (BATCH, WIDTH))


def _preact_vars(net, x):
    # float32-exact matmuls, as lsuv's own forward passes (its precision policy): the reference
    # must not carry a GPU's default TF32-class rounding (1e-4 relative in a variance)
    with jax.default_matmul_precision("highest"):
        out, inter = net.forward_with_intermediates(x)
    vs = [np.var(np.asarray(h, np.float64)) for h in inter["preact"]]
    if getattr(net, "readout", None) is not None or getattr(net, "classifier", None) is not None:
        vs.append(np.var(np.asarray(out, np.float64)))  # the readout's output: its "pre-activation"
    return np.array(vs)


def _flat_kernel(module):
    k = np.asarray(module.kernel[...], np.float64)
    return k.reshape(-1, k.shape[-1])


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_deep_mlp_with_tiny_init_collapses_and_lsuv_restores_unit_variance(act):
    net = MLP(WIDTH, (WIDTH,) * 10, activation=act, kernel_init="normal:stddev=0.01",
              rngs=_rngs(0))
    assert _preact_vars(net, X)[-1] < 1e-12  # N(0, 0.01^2): each layer multiplies Var by ~0.0032
    same, report = lsuv(net, X, orthogonal=False)
    assert same is net  # updated in place
    v = _preact_vars(net, X)
    assert np.all(np.abs(v - 1.0) < 0.1), v
    np.testing.assert_allclose(report.variance, v, rtol=1e-4)
    assert report.all_converged and report.layer_names == tuple(f"layers.{i}" for i in range(10))
    # zero biases: Var scales exactly with the kernel, one rescaling per layer suffices
    np.testing.assert_array_equal(report.iterations, np.ones(10))
    assert report.initial_variance[0] < 0.01 and report.table()[0]["converged"] is True


def test_orthonormal_preinit_cnn_and_readout():
    net = PlainCNN(3, 8, 2, 5, activation="relu", rngs=_rngs(0))
    x = jax.random.normal(_key(2), (2, 8, 8, 3))
    bias_before = np.asarray(net.layers[0].bias[...])
    _, report = lsuv(net, x, tol=0.05)
    assert report.layer_names == ("layers.0", "layers.1", "classifier")
    v = _preact_vars(net, x)
    assert np.all(np.abs(v - 1.0) < 0.05), v
    np.testing.assert_array_equal(net.layers[0].bias[...], bias_before)  # biases are left alone
    for module in (*net.layers, net.classifier):
        w = _flat_kernel(module)  # (prod(shape[:-1]), out)
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        scale = np.mean(np.diag(gram))  # LSUV's rescaling: Q^T Q = c^2 I
        np.testing.assert_allclose(gram / scale, np.eye(gram.shape[0]), atol=1e-5)


def test_generic_model_and_key_reproducibility():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(WIDTH, WIDTH, rngs=rngs)
            self.b = nnx.Linear(WIDTH, WIDTH, rngs=rngs)

        def __call__(self, x):
            return self.b(jax.nn.relu(self.a(x)))

    nets = [Net(_rngs(s)) for s in (0, 1)]
    reports = [lsuv(n, X, key=3)[1] for n in nets]
    # the orthonormal draws come from the key, not from the model's old weights
    np.testing.assert_allclose(_flat_kernel(nets[0].a), _flat_kernel(nets[1].a), rtol=1e-6)
    assert reports[0].layer_names == ("a", "b") and reports[0].all_converged
    h = nets[0].a(X)
    assert abs(float(jnp.var(h)) - 1.0) < 0.1
    assert abs(float(jnp.var(nets[0](X))) - 1.0) < 0.1


def test_non_convergence_is_recorded_not_raised():
    # biases with std 3 put Var[h] >= ~9 whatever the kernel scale: LSUV cannot reach 1
    net = MLP(WIDTH, (WIDTH, WIDTH), activation="tanh", bias_init="normal:stddev=3.0",
              rngs=_rngs(0))
    _, report = lsuv(net, X, max_iter=1)
    assert isinstance(report, LSUVReport)
    assert not report.all_converged and not report.converged[0]
    np.testing.assert_array_equal(report.iterations, [1, 1])
    assert report.variance[0] > 2.0 and report.max_iter == 1
    # a dead layer (zero kernel and bias: Var = 0) cannot be rescaled: reported, never divided by 0
    dead = MLP(WIDTH, (WIDTH,), activation="tanh", kernel_init="zeros", rngs=_rngs(0))
    _, report = lsuv(dead, X, orthogonal=False)
    assert report.iterations[0] == 0 and not report.converged[0] and report.variance[0] == 0.0
    assert np.all(np.isfinite(np.asarray(dead.layers[0].kernel[...])))


class _NoLayers(nnx.Module):
    def __call__(self, x):
        return x


@pytest.mark.parametrize(
    "model, kwargs, err, match",
    [
        (None, {"tol": 0.0}, ValueError, "tol must be > 0"),
        (None, {"tol": -0.1}, ValueError, "tol must be > 0"),
        (None, {"max_iter": 0}, ValueError, "max_iter must be >= 1"),
        (None, {"max_iter": 2.5}, TypeError, "max_iter must be an integer"),
        (None, {"orthogonal": "yes"}, TypeError, "orthogonal must be True or False"),
        (None, {"key": "k"}, TypeError, "key must be"),
        (None, {"x": jnp.ones((BATCH, 3))}, ValueError,
         r"x has shape \(8, 3\); MLP expects \(batch, 32\)"),
        (_NoLayers(), {}, ValueError, "_NoLayers has no probe-able layers"),
        ("ensemble", {}, ValueError, "stacked ensemble of 2 members"),
    ],
)
def test_lsuv_errors(model, kwargs, err, match):
    if model is None:
        model = MLP(WIDTH, (WIDTH,), rngs=_rngs(0))
    elif model == "ensemble":
        model = create_ensemble(
            lambda rngs: MLP(WIDTH, (WIDTH,), rngs=rngs), jnp.stack([_key(0), _key(1)])
        )
    kwargs = dict(kwargs)
    x = kwargs.pop("x", X)
    with pytest.raises(err, match=match):
        lsuv(model, x, **kwargs)
