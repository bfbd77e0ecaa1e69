"""probe_ops: per-operation statistics of any JAX function, by interpreting its jaxpr.

The truths are independent of the interpreter: float64 numpy forward and backward passes of a
3-layer MLP written by hand, numpy's histogram, the same weights in Linen and NNX, a float64
numpy attention for an ``nnx.MultiHeadAttention`` transformer and ``jax.vjp`` of the rest of that
network for the attention output's cotangent. Shapes are few and small: each is an XLA compile.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from initjax.opprobe import OpStats, probe_ops, tag

N_IN, WIDTH, N_OUT, BATCH = 5, 16, 3, 8
# float32 programs at "highest" matmul precision vs float64 numpy: a few ulps of the sums
RTOL, ATOL = 2e-5, 2e-6
MLP_NAMES = ("dot_general(params.w1)", "dot_general(params.w2)", "dot_general(params.w3)")


def _key(seed):
    return jax.random.key(seed, impl="philox2x32")


# ----------------------------------------------------------------------------------------------
# A plain 3-layer MLP, its float64 reference, and the Linen / NNX versions with the same weights
# ----------------------------------------------------------------------------------------------
def _weights():
    ks = jax.random.split(_key(0), 6)
    w1 = jax.random.normal(ks[0], (N_IN, WIDTH)) / np.sqrt(N_IN)
    w2 = jax.random.normal(ks[1], (WIDTH, WIDTH)) / np.sqrt(WIDTH)
    w3 = jax.random.normal(ks[2], (WIDTH, N_OUT)) / np.sqrt(WIDTH)
    b1 = 0.1 * jax.random.normal(ks[3], (WIDTH,))
    b2 = 0.1 * jax.random.normal(ks[4], (WIDTH,))
    return {"w1": w1, "b1": b1, "w2": w2, "b2": b2, "w3": w3}


def mlp(params, x):
    a1 = jnp.tanh(x @ params["w1"] + params["b1"][None, :])
    a2 = jnp.tanh(a1 @ params["w2"] + params["b2"][None, :])
    return a2 @ params["w3"]


def _reference(params, x, ct):
    """float64: the three dot outputs and d<ct, out>/d(dot output) of each."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    x = np.asarray(x, np.float64)
    d1 = x @ p["w1"]
    a1 = np.tanh(d1 + p["b1"])
    d2 = a1 @ p["w2"]
    a2 = np.tanh(d2 + p["b2"])
    d3 = a2 @ p["w3"]
    g3 = np.asarray(ct, np.float64)
    g2 = (g3 @ p["w3"].T) * (1 - a2**2)
    g1 = (g2 @ p["w2"].T) * (1 - a1**2)
    return [d1, d2, d3], [g1, g2, g3]


class LinenMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(WIDTH)(x))
        x = jnp.tanh(nn.Dense(WIDTH)(x))
        return nn.Dense(N_OUT, use_bias=False)(x)


class NNXMLP(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([nnx.Linear(N_IN, WIDTH, rngs=rngs),
                                nnx.Linear(WIDTH, WIDTH, rngs=rngs)])
        self.readout = nnx.Linear(WIDTH, N_OUT, use_bias=False, rngs=rngs)

    def __call__(self, x):
        for layer in self.layers:
            x = jnp.tanh(layer(x))
        return self.readout(x)


@pytest.fixture(scope="module")
def setup():
    params = _weights()
    x = jax.random.normal(_key(1), (BATCH, N_IN))
    ct = jax.random.normal(_key(2), (BATCH, N_OUT))
    return params, x, ct


@pytest.fixture(scope="module")
def plain(setup):
    params, x, ct = setup
    return probe_ops(mlp, params, x, cotangent=ct, return_tensors=True)


def _np_stats(a):
    a = np.asarray(a, np.float64)
    return {"mean": a.mean(), "var": a.var(), "second_moment": (a**2).mean(),
            "mean_abs": np.abs(a).mean()}


def test_plain_mlp_matches_float64_forward_and_backward(setup, plain):
    params, x, ct = setup
    want_vals, want_cots = _reference(params, x, ct)
    assert plain.names == MLP_NAMES
    assert [op.primitive for op in plain.ops] == ["dot_general"] * 3
    assert [op.shape for op in plain.ops] == [(BATCH, WIDTH), (BATCH, WIDTH), (BATCH, N_OUT)]
    assert all(op.has_grad and op.context == "" for op in plain.ops)
    for i in range(3):
        np.testing.assert_allclose(plain.values[i], want_vals[i], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(plain.cotangents[i], want_cots[i], rtol=RTOL, atol=ATOL)
        for field, value in _np_stats(want_vals[i]).items():
            np.testing.assert_allclose(getattr(plain, field)[i], value, rtol=1e-4, atol=1e-6,
                                       err_msg=field)
        for field, value in _np_stats(want_cots[i]).items():
            np.testing.assert_allclose(getattr(plain, "grad_" + field)[i], value, rtol=1e-4,
                                       atol=1e-6, err_msg=field)
        # the histograms follow numpy.histogram exactly on the recorded float32 values
        counts, _ = np.histogram(np.asarray(plain.values[i]), bins=plain.edges)
        np.testing.assert_array_equal(plain.hist[i], counts)
        counts, _ = np.histogram(np.asarray(plain.cotangents[i]), bins=plain.grad_edges)
        np.testing.assert_array_equal(plain.grad_hist[i], counts)
        v = np.asarray(plain.values[i])
        np.testing.assert_array_equal(plain.outside[i], [(v < -3).sum(), (v > 3).sum()])
    assert int(plain.nonfinite.sum()) == 0 and int(plain.grad_nonfinite.sum()) == 0
    want_loss = np.sum(want_vals[2] * np.asarray(ct, np.float64))
    np.testing.assert_allclose(plain.loss, want_loss, rtol=1e-5)


def test_normal_and_loss_cotangents(setup, plain):
    params, x, _ = setup
    key = _key(7)
    st = probe_ops(mlp, params, x, key=key)
    # the documented rule: output leaf i gets N(0, 1) from fold_in(key, i)
    ct = jax.random.normal(jax.random.fold_in(key, 0), (BATCH, N_OUT))
    ref = probe_ops(mlp, params, x, cotangent=ct, return_tensors=True)  # the fixture's program
    np.testing.assert_allclose(st.grad_var, ref.grad_var, rtol=1e-5)
    # a scalar loss: d(0.5 ||out||^2)/d out = out, so the last cotangent is the output itself
    st = probe_ops(lambda p, x: 0.5 * jnp.sum(mlp(p, x) ** 2), params, x, cotangent="loss",
                   return_tensors=True)
    np.testing.assert_allclose(st.cotangents[2], st.values[2], rtol=1e-6)
    want_loss = 0.5 * np.sum(np.asarray(plain.values[2], np.float64) ** 2)
    np.testing.assert_allclose(st.loss, want_loss, rtol=1e-5)


def _same_rows(got: OpStats, want: OpStats):
    for field in ("mean", "var", "second_moment", "mean_abs", "grad_mean", "grad_var",
                  "grad_second_moment", "grad_mean_abs"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-5, atol=1e-7,
                                   err_msg=field)
    for field in ("hist", "grad_hist", "outside", "grad_outside"):
        # two programs may round a value differently in the last bit (GPU fusions): at most one
        # value per row may then cross a bin edge
        a, b = np.asarray(getattr(got, field)), np.asarray(getattr(want, field))
        moved = np.abs(a - b).sum(axis=-1)
        assert (moved <= 2).all(), (field, moved)


def test_linen_mlp_same_numbers_and_module_outputs(setup, plain):
    params, x, ct = setup
    model = LinenMLP()
    variables = {"params": {
        "Dense_0": {"kernel": params["w1"], "bias": params["b1"]},
        "Dense_1": {"kernel": params["w2"], "bias": params["b2"]},
        "Dense_2": {"kernel": params["w3"]},
    }}
    st = probe_ops(model.apply, variables, x, cotangent=ct)
    assert [op.scope for op in st.ops] == [f"LinenMLP/Dense_{i}" for i in range(3)]
    _same_rows(st, plain)
    # Linen modules push named scopes: their outputs (after the bias) are recorded on request
    st = probe_ops(model.apply, variables, x, cotangent=ct, include=(), scopes=("LinenMLP/*",),
                   return_tensors=True)
    assert st.names == ("LinenMLP/Dense_0", "LinenMLP/Dense_1", "LinenMLP/Dense_2")
    (d1, d2, _), _ = _reference(params, x, ct)
    np.testing.assert_allclose(st.values[0], d1 + np.asarray(params["b1"]), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(st.values[1], d2 + np.asarray(params["b2"]), rtol=RTOL, atol=ATOL)


def _nnx_mlp(params):
    model = NNXMLP(nnx.Rngs(0))
    model.layers[0].kernel[...] = params["w1"]
    model.layers[0].bias[...] = params["b1"]
    model.layers[1].kernel[...] = params["w2"]
    model.layers[1].bias[...] = params["b2"]
    model.readout.kernel[...] = params["w3"]
    return model


def _state_arrays(model):
    return [np.array(v) for v in jax.tree_util.tree_leaves(nnx.state(model))]


def test_nnx_mlp_same_numbers_named_by_parameter_paths(setup, plain):
    params, x, ct = setup
    model = _nnx_mlp(params)
    before, graph_before = _state_arrays(model), nnx.graphdef(model)
    st = probe_ops(model, x, cotangent=ct)
    assert st.names == ("dot_general(layers.0.kernel)", "dot_general(layers.1.kernel)",
                        "dot_general(readout.kernel)")
    _same_rows(st, plain)
    # module outputs by data flow: the operations that take a bias are the Linears' outputs
    st = probe_ops(model, x, cotangent=ct, include=(), params=("*.bias",), return_tensors=True)
    assert st.names == ("add(layers.0.bias)", "add(layers.1.bias)")
    (d1, d2, _), (g1, g2, _) = _reference(params, x, ct)
    np.testing.assert_allclose(st.values[0], d1 + np.asarray(params["b1"]), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(st.values[1], d2 + np.asarray(params["b2"]), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(st.cotangents[1], g2, rtol=RTOL, atol=ATOL)
    for a, b in zip(before, _state_arrays(model), strict=True):
        np.testing.assert_array_equal(a, b)
    assert nnx.graphdef(model) == graph_before


# ----------------------------------------------------------------------------------------------
# A transformer built from flax.nnx layers alone
# ----------------------------------------------------------------------------------------------
D, HEADS, TOKENS, SEQS, BLOCKS = 16, 2, 6, 3, 2


class Block(nnx.Module):
    def __init__(self, rngs):
        self.ln1 = nnx.LayerNorm(D, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=HEADS, in_features=D, decode=False, rngs=rngs)
        self.ln2 = nnx.LayerNorm(D, rngs=rngs)
        self.up = nnx.Linear(D, 2 * D, rngs=rngs)
        self.down = nnx.Linear(2 * D, D, rngs=rngs)

    def mlp(self, x):
        return x + self.down(jax.nn.gelu(self.up(self.ln2(x))))

    def __call__(self, x):
        return self.mlp(x + self.attn(self.ln1(x)))


class Transformer(nnx.Module):
    def __init__(self, rngs):
        self.blocks = nnx.List([Block(rngs) for _ in range(BLOCKS)])

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


@pytest.fixture(scope="module")
def transformer():
    model = Transformer(nnx.Rngs(_key(3)))
    x = jax.random.normal(_key(4), (SEQS, TOKENS, D))
    ct = jax.random.normal(_key(5), (SEQS, TOKENS, D))
    before = _state_arrays(model)
    st = probe_ops(model, x, cotangent=ct, return_tensors=True)
    return model, x, ct, before, st


def _np_attention_output(attn, ln, x):
    """float64: the out-projection's dot output (before its bias) of ln -> multi-head attention."""
    f = lambda a: np.asarray(a, np.float64)  # noqa: E731
    x = f(x)
    mu = x.mean(-1, keepdims=True)
    var = x.var(-1, keepdims=True)
    h = (x - mu) / np.sqrt(var + ln.epsilon) * f(ln.scale[...]) + f(ln.bias[...])
    q, k, v = (np.einsum("btd,dnh->btnh", h, f(m.kernel[...])) + f(m.bias[...])
               for m in (attn.query, attn.key, attn.value))
    logits = np.einsum("btnh,bsnh->bnts", q / np.sqrt(q.shape[-1]), k)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    heads = np.einsum("bnts,bsnh->btnh", w, v)
    return np.einsum("btnh,nhd->btd", heads, f(attn.out.kernel[...]))


def test_transformer_every_dot_found_and_named(transformer):
    model, _, _, before, st = transformer
    # per block, counted by hand: Q, K, V projections, the logits, the weighted values, the O
    # projection, and the MLP's two Linears
    assert len(st.ops) == BLOCKS * 8
    assert all(op.primitive == "dot_general" for op in st.ops)
    for b in range(BLOCKS):
        for part in ("attn.query", "attn.key", "attn.value", "attn.out", "up", "down"):
            st.index(f"dot_general(blocks.{b}.{part}.kernel)")  # raises if missing
    unnamed = [op for op in st.ops if "kernel" not in op.name]  # einsums of two activations
    assert len(unnamed) == BLOCKS * 2
    assert {op.shape for op in st.ops if op.name.startswith("dot_general(blocks.0.attn.query")} == \
        {(SEQS, TOKENS, HEADS, D // HEADS)}
    # the model is not modified
    for a, b in zip(before, _state_arrays(model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_transformer_attention_output_equals_direct_computation(transformer):
    model, x, ct, _, st = transformer
    blk = model.blocks[0]
    i = st.index("dot_general(blocks.0.attn.out.kernel)")
    want = _np_attention_output(blk.attn, blk.ln1, x)
    np.testing.assert_allclose(st.values[i], want, rtol=1e-4, atol=1e-5)
    for field, value in _np_stats(want).items():
        np.testing.assert_allclose(getattr(st, field)[i], value, rtol=1e-4, atol=1e-6,
                                   err_msg=field)

    # its cotangent: jax.vjp of the rest of the network with respect to that output
    def rest(a):
        h = blk.mlp(x + a + blk.attn.out.bias[...][None, None, :])
        for other in model.blocks[1:]:
            h = other(h)
        return h

    with jax.default_matmul_precision("highest"):
        (g,) = jax.jit(lambda a, c: jax.vjp(rest, a)[1](c))(jnp.asarray(want, jnp.float32), ct)
    np.testing.assert_allclose(st.cotangents[i], g, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(st.grad_var[i], np.var(np.asarray(g, np.float64)), rtol=1e-4)


# ----------------------------------------------------------------------------------------------
# Control flow, custom rules, tags, seeds
# ----------------------------------------------------------------------------------------------
def _stacked():
    ws = jax.random.normal(_key(8), (3, WIDTH, WIDTH)) / np.sqrt(WIDTH)
    return ws, jax.random.normal(_key(9), (BATCH, WIDTH))


def scanned(ws, x):
    # the body is rematerialized: the probe inlines it, values and gradients unchanged
    return jax.lax.scan(jax.checkpoint(lambda h, w: (jnp.tanh(h @ w), None)), x, ws)[0]


def unrolled(ws, x):
    for i in range(ws.shape[0]):
        x = jnp.tanh(x @ ws[i])
    return x


def test_scan_rows_per_iteration_equal_the_unrolled_loop():
    ws, x = _stacked()
    st = probe_ops(scanned, ws, x, key=1)
    ref = probe_ops(unrolled, ws, x, key=1)
    assert [op.context for op in st.ops] == ["scan[0]", "scan[1]", "scan[2]"]
    assert st.names[0] == "dot_general(ws)@scan[0]"
    _same_rows(st, ref)


def test_cond_records_the_branch_that_ran():
    ws, x = _stacked()

    def f(ws, x):
        return jax.lax.cond(x.sum() > -1e9, lambda h: jnp.tanh(h @ ws[0]),
                            lambda h: h @ ws[1] @ ws[2], x)

    ct = jax.random.normal(_key(10), (BATCH, WIDTH))
    st = probe_ops(f, ws, x, cotangent=ct)
    # lax.cond's branches are (false, true): the true branch, which runs, is cond[1]
    assert [op.context for op in st.ops] == ["cond[0]", "cond[0]", "cond[1]"]
    d = np.asarray(x, np.float64) @ np.asarray(ws[0], np.float64)
    np.testing.assert_allclose(st.var[2], d.var(), rtol=1e-5)
    g = np.asarray(ct, np.float64) * (1 - np.tanh(d) ** 2)
    np.testing.assert_allclose(st.grad_var[2], g.var(), rtol=1e-5)
    assert np.isnan(st.var[:2]).all() and np.isnan(st.grad_var[:2]).all()
    assert (st.nonfinite[:2] == BATCH * WIDTH).all()


@jax.custom_vjp
def _clipped_matmul(x, w):
    return x @ w


_clipped_matmul.defvjp(lambda x, w: (x @ w, (x, w)),
                       lambda res, g: (jnp.clip(g, -0.01, 0.01) @ res[1].T, res[0].T @ g))


def test_custom_vjp_kept_by_default_inlined_on_request(setup):
    params, x, ct = setup

    def f(p, x):
        return jnp.tanh(_clipped_matmul(x, p["w1"])) @ p["w2"][:, :N_OUT]

    st = probe_ops(f, params, x, cotangent=ct)
    inner = st.index("dot_general(p.w1)@custom_vjp_call")
    assert not st.ops[inner].has_grad and np.isnan(st.grad_var[inner])
    want = _np_stats(_reference(params, x, ct)[0][0])["var"]
    np.testing.assert_allclose(st.var[inner], want, rtol=1e-4)
    st = probe_ops(f, params, x, cotangent=ct, inline_custom=True)
    i = st.index("dot_general(p.w1)")
    assert st.ops[i].has_grad and np.isfinite(st.grad_var[i])


def test_tags_and_named_scopes():
    ws, x = _stacked()

    def f(ws, x):
        with jax.named_scope("block"):
            h = jnp.tanh(x @ ws[0])
        return tag(h * 2.0, "doubled") @ ws[1]

    st = probe_ops(f, ws, x, include=(), return_tensors=True)
    assert st.names == ("doubled",)
    want = 2 * np.tanh(np.asarray(x, np.float64) @ np.asarray(ws[0], np.float64))
    np.testing.assert_allclose(st.values[0], want, rtol=RTOL, atol=ATOL)
    st = probe_ops(f, ws, x, scopes=("block",), names=(), return_tensors=True)
    # the dot inside the scope, the scope's output (the tanh: the value used outside), the last dot
    assert st.names == ("block/dot_general", "block", "dot_general(ws)")
    assert [op.primitive for op in st.ops] == ["dot_general", "tanh", "dot_general"]
    np.testing.assert_allclose(st.values[1], np.tanh(st.values[0]), rtol=1e-6)


def test_vmap_over_seeds_and_no_recompile(setup, compiles):
    params, x, _ = setup
    keys = jax.random.split(_key(11), 4)
    many = jax.jit(jax.vmap(lambda k: probe_ops(mlp, params, x, key=k)))(keys)
    assert many.grad_var.shape == (4, 3) and many.hist.shape == (4, 3, 40)
    assert many.names == MLP_NAMES
    for s in (0, 3):
        one = probe_ops(mlp, params, x, key=keys[s])
        _same_rows(jax.tree_util.tree_map(lambda a, s=s: a[s], many), one)
    # seeds of weights: vmap over stacked parameters
    stacked = jax.tree_util.tree_map(lambda a: jnp.stack([a, 2 * a]), params)
    st = jax.vmap(lambda p: probe_ops(mlp, p, x, key=0))(stacked)
    np.testing.assert_allclose(st.var[1, 0], 4 * st.var[0, 0], rtol=1e-5)
    probe_ops(mlp, params, x, key=5)
    assert compiles(lambda: jax.block_until_ready(probe_ops(mlp, params, x, key=6).var)) == []


def test_bad_input_refused_by_name(setup):
    params, x, _ = setup
    with pytest.raises(TypeError, match="fn must be callable.*int"):
        probe_ops(3, params, x)
    with pytest.raises(ValueError, match="dot_genral"):
        probe_ops(mlp, params, x, include=("dot_genral",))
    with pytest.raises(ValueError, match="histogram_bins must be >= 1, got 0"):
        probe_ops(mlp, params, x, histogram_bins=0)
    with pytest.raises(TypeError, match="include must be a sequence of strings"):
        probe_ops(mlp, params, x, include="dot_general")
    with pytest.raises(ValueError, match="cotangent must be one of"):
        probe_ops(mlp, params, x, cotangent="uniform")
    with pytest.raises(ValueError, match="cotangent must have fn's output structure"):
        probe_ops(mlp, params, x, cotangent=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match="one float scalar"):
        probe_ops(mlp, params, x, cotangent="loss")
    with pytest.raises(ValueError, match="nothing to record"):
        probe_ops(lambda x: jnp.tanh(x), x)
    with pytest.raises(ValueError, match="value_range"):
        probe_ops(mlp, params, x, value_range=(1.0, -1.0))
    with pytest.raises(ValueError, match="precision"):
        probe_ops(mlp, params, x, precision="fast")


def test_matmuls_run_at_the_requested_precision(setup):
    params, x, _ = setup
    def lowered(precision):
        run = jax.jit(lambda p: probe_ops(mlp, p, x, precision=precision).var)
        return run.lower(params).as_text()

    assert "HIGHEST" in lowered("highest")
    assert "HIGHEST" not in lowered("default")
