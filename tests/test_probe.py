"""probe / probe_linen: the engine's statistics of existing Flax models.

The anchor is exact agreement with the engine: the same network built as an initjax MLP and probed
gives the LayerStats of propagate(). Everything else is checked against independent computations
(numpy on forward_with_intermediates, jax.grad, a hand-written forward with probes).
Shapes are few and small on purpose: every new shape is an XLA compile.
"""

import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from initjax import NetworkConfig, plotting, propagate_shared, trace
from initjax.modules import MLP, PlainCNN, create_ensemble, ensemble_member
from initjax.probing import ProbeResult, find_layers, probe, probe_linen

WIDTH, BATCH, DEPTH = 32, 8, 3


def _key(seed):
    # probe's int keys are philox too; threefry's normal sampler compiles for seconds per shape here
    return jax.random.key(seed, impl="philox2x32")


def _rngs(seed):
    return nnx.Rngs(_key(seed))
FLOAT_FIELDS_ATOL = 1e-7  # only for statistics that are ~0 (means), where rtol alone is too strict


def _x(seed=1):
    return jax.random.normal(_key(seed), (BATCH, WIDTH))


def _assert_same_stats(got, want, *, rtol=1e-5):
    for field in want._fields:
        a, b = np.asarray(getattr(got, field)), np.asarray(getattr(want, field))
        assert a.shape == b.shape, (field, a.shape, b.shape)
        if a.dtype.kind in "iu":
            np.testing.assert_array_equal(a, b, err_msg=field)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=FLOAT_FIELDS_ATOL, err_msg=field)


def _load(mlp, weights, biases):
    for layer, w, b in zip(mlp.layers, weights, biases, strict=True):
        layer.kernel[...] = jnp.asarray(w)
        layer.bias[...] = jnp.asarray(b)
    return mlp


@pytest.fixture(scope="module")
def engine():
    """One shared-draw propagate() for tanh and relu (one compile), and each config's trace."""
    configs = [
        NetworkConfig(depth=DEPTH, width=WIDTH, batch=BATCH, activation=a, init="xavier_normal")
        for a in ("tanh", "relu")
    ]
    results = propagate_shared(configs, seeds=1)
    return {
        c.activation.name: (c, r, trace(c, seed=0)) for c, r in zip(configs, results, strict=True)
    }


@pytest.fixture(scope="module")
def tanh_mlp(engine):
    _, _, t = engine["tanh"]
    return _load(MLP(WIDTH, (WIDTH,) * DEPTH, activation="tanh", rngs=_rngs(0)), t["w"], t["b"])


@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_probe_equals_propagate(engine, act):
    config, ref, t = engine[act]
    net = _load(MLP(WIDTH, (WIDTH,) * DEPTH, activation=act, rngs=_rngs(0)), t["w"], t["b"])
    res = probe(net, t["x_prev"][0], cotangent=t["cotangent"])
    # every float field within rtol 1e-5; the histogram and count fields exactly equal
    _assert_same_stats(res.stats, ref.stats)
    np.testing.assert_array_equal(res.act_edges, ref.act_edges)
    np.testing.assert_array_equal(res.grad_edges, ref.grad_edges)
    assert res.layer_names == ("layers.0", "layers.1", "layers.2")
    assert res.activations == (config.activation,) * DEPTH
    assert res.seeds == 1 and res.config.depth == DEPTH and res.cotangent == "array"
    table, ref_table = res.table(), ref.layer_table()
    assert [r["layer"] for r in table] == [1, 2, 3] and table[2]["name"] == "layers.2"
    for row, ref_row in zip(table, ref_table, strict=True):
        assert row.keys() - {"name", "activation"} == ref_row.keys()
        np.testing.assert_allclose(row["act_var"], ref_row["act_var"], rtol=1e-5)


def test_generic_nnx_model_and_linen_match_the_mlp(tanh_mlp, engine):
    _, ref, t = engine["tanh"]
    x, cot = t["x_prev"][0], t["cotangent"]

    class Plain(nnx.Module):  # the same network written by hand
        def __init__(self, rngs):
            self.first = nnx.Linear(WIDTH, WIDTH, rngs=rngs)
            self.blocks = nnx.List([nnx.Linear(WIDTH, WIDTH, rngs=rngs) for _ in range(DEPTH - 1)])

        def __call__(self, x):
            x = jnp.tanh(self.first(x))
            for b in self.blocks:
                x = jnp.tanh(b(x))
            return x

    plain = Plain(_rngs(3))
    for mod, w, b in zip([plain.first, *plain.blocks], t["w"], t["b"], strict=True):
        mod.kernel[...], mod.bias[...] = jnp.asarray(w), jnp.asarray(b)
    res = probe(plain, x, cotangent=cot)
    assert res.layer_names == ("first", "blocks.0", "blocks.1")
    assert [a.name for a in res.activations] == ["tanh"] * DEPTH  # inferred from h -> next input
    _assert_same_stats(res.stats, ref.stats)
    given = probe(plain, x, cotangent=cot, activation="tanh")  # y = tanh(h): the same tensor here
    _assert_same_stats(given.stats, ref.stats)

    class LinenMLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            for _ in range(DEPTH):
                x = jnp.tanh(nn.Dense(WIDTH)(x))
            return x

    layers = enumerate(zip(t["w"], t["b"], strict=True))
    variables = {"params": {f"Dense_{i}": {"kernel": w, "bias": b} for i, (w, b) in layers}}
    lin = probe_linen(LinenMLP().apply, variables, x, cotangent=cot)
    assert lin.layer_names == ("Dense_0", "Dense_1", "Dense_2") and lin.model_name == "LinenMLP"
    _assert_same_stats(lin.stats, ref.stats)


def test_cotangent_forms_agree(tanh_mlp):
    x = _x()
    with jax.default_matmul_precision("highest"):  # probe's own forward pass is float32-exact
        out = tanh_mlp(x)
    # loss = 1/2 ||f||^2 has gradient f: the callable and the array forms give the same statistics
    by_loss = probe(tanh_mlp, x, cotangent=lambda f: 0.5 * jnp.sum(f**2))
    by_array = probe(tanh_mlp, x, cotangent=out)
    assert by_loss.cotangent == "loss"
    _assert_same_stats(by_loss.stats, by_array.stats)
    # "normal" draws N(0, 1) from fold_in(key, 0)
    drawn = jax.random.normal(jax.random.fold_in(_key(5), 0), out.shape)
    _assert_same_stats(probe(tanh_mlp, x, key=5).stats, probe(tanh_mlp, x, cotangent=drawn).stats)


def test_ensemble_has_a_seed_axis_and_members_match_solo_probes():
    make = functools.partial(MLP, WIDTH, (WIDTH,) * DEPTH, activation="tanh")
    ens = create_ensemble(make, jnp.stack([_key(0), _key(1)]))
    x = _x()
    res = probe(ens, x, key=7)
    assert res.stats.act_var.shape == (2, DEPTH) and res.stats.act_hist.shape == (2, DEPTH, 40)
    assert res.seeds == 2 and res.model_name == "ensemble of 2 MLP"
    for s in range(2):
        member = ensemble_member(ens, s)
        cot = jax.random.normal(jax.random.fold_in(_key(7), s), (BATCH, WIDTH))
        solo = probe(member, x, cotangent=cot)
        # vmapped vs lone matmuls may differ in the last bits: rtol, not equality
        got = type(res.stats)(*(np.asarray(v)[s : s + 1] for v in res.stats))
        _assert_same_stats(got, solo.stats)
    with pytest.raises(ValueError, match=r"cotangent array has shape \(3, 8, 32\)"):
        probe(ens, x, cotangent=jnp.zeros((3, BATCH, WIDTH)))


def test_plain_cnn_flattened_statistics_and_conv_weight_gradients():
    cnn = PlainCNN(3, 8, 2, 5, activation="relu", rngs=_rngs(0))
    x = jax.random.normal(_key(2), (2, 8, 8, 3))
    cot = jax.random.normal(_key(3), (2, 5))
    res = probe(cnn, x, cotangent=cot)
    assert res.layer_names == ("layers.0", "layers.1")

    @nnx.jit
    def reference(m):  # one compiled program: the intermediates and the true kernel gradients
        grads = nnx.grad(lambda m: jnp.sum(cot * m(x)))(m)
        return m.forward_with_intermediates(x)[1], grads

    with jax.default_matmul_precision("highest"):  # as probe's own (its precision policy)
        inter, grads = reference(cnn)
    for layer in range(2):
        h = np.asarray(inter["preact"][layer]).reshape(-1, 8)  # (batch*H*W, channels)
        a = np.asarray(inter["act"][layer]).reshape(-1, 8)
        np.testing.assert_allclose(res.stats.preact_var[0, layer], h.var(), rtol=1e-5)
        np.testing.assert_allclose(res.stats.act_mean[0, layer], a.mean(), rtol=1e-5)
        np.testing.assert_allclose(res.stats.zero_fraction[0, layer], (a == 0).mean(), rtol=1e-6)
        np.testing.assert_allclose(res.stats.dead_fraction[0, layer], (a == 0).all(axis=0).mean())
        assert res.stats.act_hist[0, layer].sum() + res.stats.act_outside[0, layer].sum() == a.size

    # the true kernel gradients of L = <cot, f(x)>
    for layer in range(2):
        g = np.asarray(grads["layers"][layer]["kernel"][...], np.float64)
        st = res.stats
        np.testing.assert_allclose(st.weight_grad_mean[0, layer], g.mean(), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(st.weight_grad_var[0, layer], g.var(), rtol=1e-4)
        np.testing.assert_allclose(st.weight_grad_norm[0, layer], np.sqrt((g**2).sum()), rtol=1e-5)
    # dL/d(last hidden): mean pooling then the classifier, by hand
    w_cls = np.asarray(cnn.classifier.kernel[...])
    d_hidden = np.broadcast_to((np.asarray(cot) @ w_cls.T)[:, None, None, :] / 64.0, (2, 8, 8, 8))
    np.testing.assert_allclose(res.stats.grad_act_var[0, 1], d_hidden.var(), rtol=1e-5)


def test_norm_after_residual_and_batch_norm_modes():
    """Batch norm after the activation, identity skips: the gradients equal a hand-written forward
    with its own probes; the model's running averages and mode are never touched."""
    net = MLP(WIDTH, (WIDTH, WIDTH), activation="tanh", norm="batch", norm_placement="after",
              residual=True, rngs=_rngs(4))
    x, cot = 3.0 + _x(), jax.random.normal(_key(9), (BATCH, WIDTH))
    running_mean = np.asarray(net.norms[0].mean[...])
    train = probe(net, x, cotangent=cot)
    evaluated = probe(net, x, cotangent=cot, use_running_average=True)
    np.testing.assert_array_equal(net.norms[0].mean[...], running_mean)  # no running-average update
    assert net.norms[0].use_running_average is False

    graphdef, state = nnx.split(net)

    def forward(ph, px, mode):  # Linear -> tanh -> BatchNorm, then the skip; probes on h and x^l
        m = nnx.merge(graphdef, jax.tree.map(lambda a: a, state))  # own Variables: BN may update
        h = x
        for i in range(2):
            z = m.layers[i](h) + ph[i]
            h = h + m.norms[i](jnp.tanh(z), use_running_average=mode) + px[i]
        return h

    zeros = [jnp.zeros((BATCH, WIDTH))] * 2
    for mode, res in ((True, evaluated), (False, train)):  # the training-mode pass updates net
        with jax.default_matmul_precision("highest"):  # as probe's own (its precision policy)
            _, vjp = jax.vjp(lambda ph, px, mode=mode: forward(ph, px, mode), zeros, zeros)
            dh, dx = vjp(cot)
            _, inter = net.forward_with_intermediates(x, use_running_average=mode)
        for i in range(2):
            np.testing.assert_allclose(res.stats.grad_preact_var[0, i], np.var(dh[i]), rtol=1e-5)
            np.testing.assert_allclose(res.stats.grad_act_var[0, i], np.var(dx[i]), rtol=1e-5)
            np.testing.assert_allclose(res.stats.act_var[0, i], np.var(inter["act"][i]), rtol=1e-5)
            np.testing.assert_allclose(
                res.stats.out_second_moment[0, i], np.mean(np.square(inter["hidden"][i])), rtol=1e-5
            )
    # the two modes really differ (batch statistics vs running averages of mean 0, var 1)
    moments = train.stats.out_second_moment, evaluated.stats.out_second_moment
    assert not np.allclose(*moments, rtol=1e-3)


def test_find_layers_plots_and_no_recompile(tanh_mlp, caplog):
    readout = MLP(WIDTH, (WIDTH,), 4, activation="tanh", rngs=_rngs(0))
    assert find_layers(readout, _x()) == ("layers.0", "readout")
    res = probe(tanh_mlp, _x())
    assert isinstance(res, ProbeResult) and res.nonfinite_layers == []
    # the same architecture again (another instance, other weights): nothing is compiled
    other, x = MLP(WIDTH, (WIDTH,) * DEPTH, activation="tanh", rngs=_rngs(8)), _x(2)
    with caplog.at_level(logging.WARNING, logger="jax"), jax.log_compiles(True):
        again = probe(other, x)
    compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Compiling")]
    assert compiled == [], compiled
    assert not np.array_equal(again.stats.act_var, res.stats.act_var)  # it did measure the other net
    axes = plotting.hist_strip(res)
    assert len(axes) == DEPTH
    plotting.variance_curves([res], "grad_preact_var")


class _NoLayers(nnx.Module):
    def __init__(self):
        self.norm = nnx.LayerNorm(WIDTH, rngs=_rngs(0))

    def __call__(self, x):
        return self.norm(x)


class _TupleOut(nnx.Module):
    def __init__(self):
        self.lin = nnx.Linear(WIDTH, WIDTH, rngs=_rngs(0))

    def __call__(self, x):
        return self.lin(x), x


@pytest.mark.parametrize(
    "make, kwargs, err, match",
    [
        (lambda m: _NoLayers(), {}, ValueError, r"_NoLayers has no probe-able layers.*supports"),
        (lambda m: m, {"x": jnp.ones((BATCH, 7))}, ValueError,
         r"x has shape \(8, 7\); MLP expects \(batch, 32\)"),
        (lambda m: m, {"x": jnp.ones((WIDTH,))}, ValueError, r"leading batch axis.*\(32,\)"),
        (lambda m: m, {"x": jnp.ones((BATCH, WIDTH), jnp.int32)}, TypeError, "float array"),
        (lambda m: m, {"cotangent": jnp.ones((BATCH, 3))}, ValueError,
         r"cotangent array has shape \(8, 3\); expected.*\(8, 32\)"),
        (lambda m: m, {"cotangent": "mse"}, ValueError, "cotangent must be 'normal'"),
        (lambda m: m, {"cotangent": lambda f: f}, ValueError, "must return a scalar"),
        (lambda m: m, {"activation": "tanhh"}, ValueError, "tanhh"),
        (lambda m: m, {"bins": 0}, ValueError, "bins must be >= 1"),
        (lambda m: m, {"act_range": (1.0, -1.0)}, ValueError, "low < high"),
        (lambda m: m, {"key": 1.5}, TypeError, "key must be"),
        (lambda m: m, {"use_running_average": 1}, TypeError, "use_running_average"),
        (lambda m: "not a model", {}, TypeError, "NNX Module"),
        (lambda m: _TupleOut(), {}, TypeError, "one array"),
    ],
)
def test_probe_errors(tanh_mlp, make, kwargs, err, match):
    kwargs = dict(kwargs)
    x = kwargs.pop("x", _x())
    with pytest.raises(err, match=match):
        probe(make(tanh_mlp), x, **kwargs)


def test_generic_model_wrong_batch_shape_names_shapes():
    class Two(nnx.Module):
        def __init__(self):
            self.a = nnx.Linear(WIDTH, WIDTH, rngs=_rngs(0))

        def __call__(self, x):
            return self.a(x)

    match = r"x of shape \(8, 5\) does not fit Two.*\(batch, \.\.\., 32\)"
    with pytest.raises(ValueError, match=match):
        probe(Two(), jnp.ones((BATCH, 5)))


def test_probe_linen_errors():
    with pytest.raises(ValueError, match="'params' collection"):
        probe_linen(lambda v, x: x, {"batch_stats": {}}, _x())
    with pytest.raises(ValueError, match="no probe-able layer"):
        probe_linen(lambda v, x: x, {"params": {}}, _x())
    with pytest.raises(TypeError, match="apply_fn must be callable"):
        probe_linen(None, {"params": {}}, _x())
