"""The Flax NNX transformer built from a token network (issue 15): ``modules.build`` of
:class:`~initjax.network.Attention` blocks, loaded with the attention engine's weights of a seed.

Three truths: (1) the engine's own tensors and statistics for the same seed
(``trace_attention``, ``propagate_attention``), which the module must reproduce to float32
rounding; (2) a float64 numpy re-derivation of the blocks from Vaswani et al.'s formulas, reading
the module's parameters after every norm scale/bias and the learnable branch scale are moved off
their initial values (so an affine part or alpha applied in the wrong place changes the numbers);
(3) closed forms: zero query/key kernels give uniform attention ``P = 1/T`` (causal: ``1/(i+1)``).
The probe's per-block statistics (``initjax.opprobe.probe_ops`` on the module) are compared with
the engine's, the weight-gradient norms ``||sum_{b,t} u_bt^T d_bt||_F`` rebuilt in float64 from the
probe's tagged inputs and cotangents and checked against ``nnx.grad`` too.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy.special import erf

from initjax import modules
from initjax._precision import matmul_precision
from initjax.engine.attention import propagate_attention, trace_attention
from initjax.network import Attention, Dense, Network, Repeat
from initjax.opprobe import probe_ops

SEED, KEY = 1, 0
# float32 through <= 2 blocks of width 16 at "highest" precision: measured max abs error ~1e-6
# on values of order 1; 1e-5 leaves room for other backends' reduction orders.
TOL = dict(rtol=1e-5, atol=1e-5)
# a weight gradient sums B*T = 15 products of float32 values: the same rounding, a bit more room
GRAD_TOL = dict(rtol=1e-4, atol=1e-6)

NETS = {
    # pre-LN with MLP, causal mask, learnable branch scale (ReZero-style, started at 0.7)
    "pre_mlp_causal": Network.transformer(depth=2, width=16, heads=2, tokens=5, batch=3, mlp=True,
                                          mlp_width=24, causal=True, learnable=True,
                                          branch_scale=0.7),
    # post-norm RMS, muP's 1/d_head logit scale, its own Q/K init
    "post_rms": Network.transformer(depth=2, width=16, heads=4, tokens=5, batch=3, norm="rms",
                                    norm_position="post", logit_scale="1/d_head",
                                    qk_init="xavier_normal"),
    # Dong et al.'s pure attention: no residual, no norm
    "pure": Network.transformer(depth=2, width=16, heads=2, tokens=5, batch=3, residual=False,
                                norm="none"),
}
PROBED = ("pre_mlp_causal", "post_rms")


@pytest.fixture(scope="module")
def traced():
    """Per network: the engine's trace of seed SEED and the module built with its weights."""
    out = {}
    for name, net in NETS.items():
        tr = trace_attention(net, seed=SEED, key=KEY, precision="highest")
        model = modules.build(net, rngs=nnx.Rngs(0),
                              attention_weights=modules.attention_weights(net, SEED, KEY))
        out[name] = (net, tr, model)
    return out


@pytest.fixture(scope="module")
def probed(traced):
    """Per probed network: the engine's statistics of seed SEED and the probe of the module."""
    out = {}
    for name in PROBED:
        net, tr, model = traced[name]
        # remat=False compiles faster; the engine's values do not depend on it
        eng = propagate_attention(net, seeds=1, key=KEY, seed_offset=SEED, remat=False,
                                  precision="highest")
        st = probe_ops(model, jnp.asarray(tr["x0"]), cotangent=jnp.asarray(tr["cotangent"]),
                       return_tensors=True, precision="highest")
        out[name] = (net, tr, model, eng.stats, st)
    return out


def _forward(model, x):
    """``model.forward_with_intermediates(x)``, compiled (faster than op by op) at "highest"."""
    graphdef, state = nnx.split(model)
    run = jax.jit(lambda s, v: nnx.merge(graphdef, s).forward_with_intermediates(v))
    with matmul_precision("highest"):
        return run(state, jnp.asarray(x))


# -- the engine's weights and tensors --------------------------------------------------------


@pytest.mark.parametrize("name", NETS)
def test_attention_weights_are_the_engines(traced, name):
    net, tr, model = traced[name]
    w = modules.attention_weights(net, SEED, KEY)
    layer = {"q": "query", "k": "key", "v": "value", "o": "out", "mlp_in": "mlp_in",
             "mlp_out": "mlp_out"}
    for b, (mine, theirs) in enumerate(zip(w, tr["w"], strict=True)):
        assert sorted(mine) == sorted(theirs)
        for k in mine:
            np.testing.assert_array_equal(np.asarray(mine[k]), theirs[k])
            kernel = getattr(model.blocks[b], layer[k]).kernel[...]
            np.testing.assert_array_equal(np.asarray(kernel), theirs[k])
    # another seed draws other weights
    other = modules.attention_weights(net, SEED + 1, KEY)
    assert not np.array_equal(np.asarray(other[0]["q"]), np.asarray(w[0]["q"]))


@pytest.mark.parametrize("name", NETS)
def test_stream_equals_engine_trace(traced, name):
    net, tr, model = traced[name]
    out, inter = _forward(model, tr["x0"])
    assert set(inter) == {"hidden", "attention", "branch", "mlp_branch"}
    assert len(inter["hidden"]) == net.depth
    for b in range(net.depth):
        np.testing.assert_allclose(np.asarray(inter["hidden"][b]), tr["x"][b], **TOL)
        np.testing.assert_allclose(np.asarray(inter["attention"][b]), tr["p"][b], **TOL)
        np.testing.assert_allclose(np.asarray(inter["branch"][b]), tr["branch"][b], **TOL)
        assert (inter["mlp_branch"][b] is None) == (net.blocks[b].mlp_width is None)
    np.testing.assert_allclose(np.asarray(out), tr["x"][-1], **TOL)


# -- an independent float64 re-derivation ----------------------------------------------------


def _norm64(kind, x, eps, scale, bias):
    if kind == "none":
        return x
    if kind == "rms":
        y = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    else:
        c = x - x.mean(-1, keepdims=True)
        y = c / np.sqrt((c * c).mean(-1, keepdims=True) + eps)
    return y * scale + (0.0 if bias is None else bias)


def _block64(spec, blk, x, alpha):
    """One block from Vaswani et al.'s formulas in float64, parameters read from the module."""
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    d = x.shape[-1]
    h = spec.heads
    dh = d // h
    t = x.shape[1]

    def norm(mod, v):
        if mod is None:
            return v
        return _norm64(spec.norm, v, spec.norm_eps, f64(mod.scale[...]),
                       None if mod.bias is None else f64(mod.bias[...]))

    def attn(u):
        q, k, v = (u @ f64(getattr(blk, n).kernel[...]) for n in ("query", "key", "value"))
        heads = []
        for i in range(h):
            cols = slice(i * dh, (i + 1) * dh)
            s = spec.scale(d) * q[..., cols] @ np.swapaxes(k[..., cols], -1, -2)
            if spec.causal:
                s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            p = p / p.sum(-1, keepdims=True)
            heads.append(p @ v[..., cols])
        return np.concatenate(heads, axis=-1) @ f64(blk.out.kernel[...])

    def mlp(u):
        z = u @ f64(blk.mlp_in.kernel[...])
        return (z * 0.5 * (1.0 + erf(z / math.sqrt(2.0)))) @ f64(blk.mlp_out.kernel[...])

    def sub(v, mod, branch):
        pre = spec.norm_position == "pre"
        f = alpha * branch(norm(mod, v) if pre else v)
        total = v + f if spec.residual else f
        return total if pre else norm(mod, total)

    x = sub(x, blk.attn_norm, attn)
    if spec.mlp_width is not None:
        x = sub(x, blk.mlp_norm, mlp)
    return x


@pytest.mark.parametrize("name", ["pre_mlp_causal", "post_rms"])
def test_module_matches_float64_formulas_with_trained_affine_parts(traced, name):
    net, tr, _ = traced[name]
    model = modules.build(net, rngs=nnx.Rngs(3))  # drawn weights, not the engine's
    rng = np.random.default_rng(0)
    for blk in model.blocks:
        for mod in (blk.attn_norm, blk.mlp_norm):
            if mod is None:
                continue
            mod.scale[...] = jnp.asarray(1.0 + 0.3 * rng.standard_normal(16), jnp.float32)
            if mod.bias is not None:
                mod.bias[...] = jnp.asarray(0.3 * rng.standard_normal(16), jnp.float32)
        if isinstance(blk.alpha, nnx.Param):
            blk.alpha[...] = jnp.float32(0.45)
    x = np.asarray(tr["x0"], np.float64)
    _, inter = _forward(model, tr["x0"])
    for b, blk in enumerate(model.blocks):
        alpha = float(blk.alpha[...]) if isinstance(blk.alpha, nnx.Param) else blk.alpha
        x = _block64(net.blocks[b], blk, x, alpha)
        np.testing.assert_allclose(np.asarray(inter["hidden"][b]), x, **TOL)


def test_zero_query_key_kernels_give_uniform_attention():
    """Xiong et al.'s assumption: Q K^T = 0, so P_ij = 1/T (causal: 1/(i+1) for j <= i)."""
    for causal in (False, True):
        net = Network.transformer(depth=1, width=8, heads=2, tokens=4, batch=2, qk_init="zeros",
                                  causal=causal)
        model = modules.build(net, rngs=nnx.Rngs(0))
        x = jax.random.normal(jax.random.key(0), (2, 4, 8))
        _, inter = _forward(model, x)
        p = np.asarray(inter["attention"][0])
        t = np.arange(4)
        want = (np.where(t[None, :] <= t[:, None], 1.0 / (t[:, None] + 1), 0.0) if causal
                else np.full((4, 4), 0.25))
        np.testing.assert_allclose(p, np.broadcast_to(want, p.shape), rtol=1e-6, atol=1e-7)


def test_built_parameters_and_token_readout():
    net = NETS["pre_mlp_causal"]
    model = modules.build(net, out_features=3, rngs=nnx.Rngs(0))
    blk = model.blocks[0]
    assert isinstance(blk, modules.AttentionBlock)
    assert blk.query.kernel[...].shape == (16, 16) and blk.mlp_in.kernel[...].shape == (16, 24)
    assert blk.query.bias is None and blk.mlp_out.bias is None
    np.testing.assert_array_equal(np.asarray(blk.attn_norm.scale[...]), np.ones(16))
    np.testing.assert_array_equal(np.asarray(blk.attn_norm.bias[...]), np.zeros(16))
    assert float(blk.alpha[...]) == pytest.approx(0.7)  # learnable: one Param for both sub-blocks
    assert NETS["post_rms"].blocks[0].norm == "rms"
    rms = modules.build(NETS["post_rms"], rngs=nnx.Rngs(0)).blocks[0]
    assert rms.attn_norm.bias is None and rms.mlp_norm is None
    assert not isinstance(rms.alpha, nnx.Param)
    # the same rngs draw the same kernels; others differ
    again = modules.build(net, out_features=3, rngs=nnx.Rngs(0)).blocks[0]
    np.testing.assert_array_equal(np.asarray(again.value.kernel[...]),
                                  np.asarray(blk.value.kernel[...]))
    x = jnp.ones((2, 5, 16))
    assert model(x).shape == (2, 5, 3)  # the readout acts on every token
    leaves = jax.tree_util.tree_leaves(model.lr_multipliers())
    assert leaves and all(v == 1.0 for v in leaves)


# -- the probe equals the engine on the same weights ------------------------------------------


def _record(st, name):
    """The index of the probe's row ``name`` (exactly one)."""
    hits = [i for i, n in enumerate(st.names) if n == name]
    assert len(hits) == 1, (name, st.names)
    return hits[0]


def _grad_norm64(st, u_name, product_name):
    u = np.asarray(st.values[_record(st, u_name)], np.float64)
    d = np.asarray(st.cotangents[_record(st, product_name)], np.float64)
    g = u.reshape(-1, u.shape[-1]).T @ d.reshape(-1, d.shape[-1])
    return float(np.sqrt((g * g).sum()))


@pytest.mark.parametrize("name", PROBED)
def test_probe_gives_the_engines_per_block_statistics(probed, name):
    net, tr, model, eng, st = probed[name]
    for b in range(net.depth):
        p = f"blocks.{b}."
        stream = _record(st, p + "stream")
        np.testing.assert_allclose(st.var[stream], eng.act_var[0, b], **TOL)
        np.testing.assert_allclose(st.mean[stream], eng.act_mean[0, b], **TOL)
        np.testing.assert_allclose(st.grad_var[stream], eng.grad_var[0, b], **TOL)
        np.testing.assert_allclose(st.var[_record(st, p + "attn_branch")], eng.branch_var[0, b],
                                   **TOL)
        np.testing.assert_allclose(np.asarray(st.cotangents[stream]), tr["dx"][b], **TOL)
        probs = np.asarray(st.values[_record(st, p + "attn_probs")], np.float64)
        entropy = -np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0)
        np.testing.assert_allclose(entropy.sum(-1).mean(), eng.attn_entropy[0, b], **TOL)
        for w, u in (("q", "attn_input"), ("k", "attn_input"), ("v", "attn_input"),
                     ("o", "attn_heads")):
            layer = {"q": "query", "k": "key", "v": "value", "o": "out"}[w]
            got = _grad_norm64(st, p + u, f"dot_general({p}{layer}.kernel)")
            np.testing.assert_allclose(got, getattr(eng, f"grad_norm_{w}")[0, b], **GRAD_TOL)
        if net.blocks[b].mlp_width is None:
            assert np.isnan(eng.grad_norm_mlp_in[0, b])
            continue
        np.testing.assert_allclose(st.var[_record(st, p + "mlp_branch")], eng.mlp_branch_var[0, b],
                                   **TOL)
        for w, u in (("mlp_in", "mlp_input"), ("mlp_out", "mlp_hidden")):
            got = _grad_norm64(st, p + u, f"dot_general({p}{w}.kernel)")
            np.testing.assert_allclose(got, getattr(eng, f"grad_norm_{w}")[0, b], **GRAD_TOL)


def test_probe_weight_gradients_equal_autodiff(probed):
    """``u^T d`` from the probe's records is dL/dW itself: nnx.grad of <cotangent, model(x)>."""
    net, tr, model, _, st = probed["post_rms"]
    cot, x0 = jnp.asarray(tr["cotangent"]), jnp.asarray(tr["x0"])
    graphdef, params = nnx.split(model, nnx.Param)

    def loss(p):
        return jnp.sum(cot * nnx.merge(graphdef, p)(x0))

    with matmul_precision("highest"):
        grads = jax.jit(jax.grad(loss))(params)
    for b in range(net.depth):
        p = f"blocks.{b}."
        for layer, u in (("query", "attn_input"), ("out", "attn_heads")):
            g = np.asarray(getattr(grads.blocks[b], layer).kernel[...], np.float64)
            got = _grad_norm64(st, p + u, f"dot_general({p}{layer}.kernel)")
            np.testing.assert_allclose(got, np.sqrt((g * g).sum()), **GRAD_TOL)


# -- errors -----------------------------------------------------------------------------------


def test_errors_name_the_bad_value():
    mixed = Network(16, (Dense(16, "he_normal", "relu"), Repeat(Attention(heads=2), 1)), tokens=4)
    with pytest.raises(ValueError, match="block 0 is a 'dense' block.*Attention blocks only"):
        modules.build(mixed, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="block 0 is a 'dense' block"):
        modules.attention_weights(mixed)
    net = NETS["post_rms"]
    w = modules.attention_weights(net)
    with pytest.raises(ValueError, match=r"one mapping per block \(2\), got 1"):
        modules.build(net, rngs=nnx.Rngs(0), attention_weights=w[:1])
    with pytest.raises(ValueError, match=r"missing \['o'\]"):
        bad = [dict(w[0]), w[1]]
        del bad[0]["o"]
        modules.build(net, rngs=nnx.Rngs(0), attention_weights=bad)
    with pytest.raises(ValueError, match=r"'q' must have shape \(16, 16\), got \(16, 8\)"):
        modules.build(net, rngs=nnx.Rngs(0),
                      attention_weights=[{**w[0], "q": jnp.zeros((16, 8))}, w[1]])
    with pytest.raises(ValueError, match="tokens=None"):
        modules.build(Network(16, (Dense(16, "he_normal", "relu"),)), rngs=nnx.Rngs(0),
                      attention_weights=w)
    with pytest.raises(ValueError, match=r"inputs \(batch, tokens, 16\), got shape \(3, 16\)"):
        modules.build(net, rngs=nnx.Rngs(0))(jnp.ones((3, 16)))
    with pytest.raises(ValueError, match="seed"):
        modules.attention_weights(net, seed=-1)
