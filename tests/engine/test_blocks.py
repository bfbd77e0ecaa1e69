"""The block engine (initjax.engine.blocks) against a float64 numpy re-derivation and closed forms.

The numpy reference below is written from the block definitions in initjax.network's docstring:
a forward pass and a hand-written backward pass (norm Jacobians included), in float64, on the
weights and inputs the engine drew (``trace_blocks``). The engine runs float32 with its matmuls at
"highest" precision here, so the comparisons hold to float32 rounding on CPU and GPU alike.
"""

import math
import warnings

import jax
import numpy as np
import pytest

import initjax
from initjax.engine import NonFiniteWarning
from initjax.engine.blocks import (
    BlockPropagation,
    propagate_blocks,
    standardize_weights,
    trace_blocks,
)
from initjax.network import Dense, Network, Repeat, Residual

from .block_reference import assert_close, nf_betas, norm_with_backward, reference

# -- the float64 reference ------------------------------------------------------------------------

_ACT = {
    "relu": (lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(np.float64)),
    "tanh": (np.tanh, lambda x: 1.0 - np.tanh(x) ** 2),
    "identity": (lambda x: x, lambda x: np.ones_like(x)),
}


def _dense(layer, x, w, b):
    """(out, u (what multiplies W), backward(dout) -> (dx, dL/d(uW)))."""
    f, df = _ACT[layer.activation.name]
    m, eps = layer.multiplier, layer.norm_eps
    if layer.preactivation:
        if layer.norm_position == "before":
            z, nb = norm_with_backward(layer.norm, x, eps)
            u = f(z)

            def back_u(du):
                return nb(du * df(z))
        else:
            a = f(x)
            u, nb = norm_with_backward(layer.norm, a, eps)

            def back_u(du):
                return nb(du) * df(x)
        out = m * (u @ w) + b

        def back(dout):
            dp = m * dout
            return back_u(dp @ w.T), dp
        return out, u, back
    h = m * (x @ w) + b
    if layer.norm_position == "before":
        z, nb = norm_with_backward(layer.norm, h, eps)
        out = f(z)

        def back_h(dout):
            return nb(dout * df(z))
    else:
        a = f(h)
        out, nb = norm_with_backward(layer.norm, a, eps)

        def back_h(dout):
            return nb(dout) * df(h)

    def back(dout):
        dp = m * back_h(dout)
        return dp @ w.T, dp
    return out, x, back


# -- networks ---------------------------------------------------------------------------------------
W = 48


def _nets():
    relu_pre = Dense(W, "he_normal", "relu", preactivation=True)
    return {
        "no-norm relu": Network.residual_mlp(4, W, branch_scale=0.7, batch=6),
        "pre-LN, 2-layer, tanh": Network.residual_mlp(3, W, init="xavier_normal", activation="tanh",
                                                      branch_layers=2, norm="layer", batch=6),
        "post-BN": Network.residual_mlp(3, W, norm="batch", norm_position="post", batch=6),
        "pre-RMS, 1/sqrt(depth)": Network.residual_mlp(4, W, norm="rms", branch_scale="1/sqrt(depth)", batch=6),
        # Yang & Schoenholz's full residual net: x + V phi(W x + b) + (bias), biases drawn
        "FRN with biases": Network(W, (Repeat(Residual((
            Dense(W, "lecun_normal", "tanh", bias_init="normal:stddev=0.3"),
            Dense(W, "lecun_normal", "identity", bias_init="normal:stddev=0.2"))), 3),), batch=6),
        "NF: WS, multiplier, beta": Network(W, (Repeat(Residual((
            Dense(W, "he_normal", "relu", preactivation=True, weight_standardization=True, multiplier=1.7),
            Dense(W, "he_normal", "relu", preactivation=True, weight_standardization=True, multiplier=1.7),
        ), alpha=0.4, beta="expected"), 3),), batch=6, input_variance=2.0),
        "stem, norm after act, post-LN": Network(20, (
            Dense(W, "he_normal", "relu", norm="layer", norm_position="after", multiplier=1.3),
            Repeat(Residual((relu_pre, Dense(W, "he_normal", "relu", preactivation=True, norm="batch",
                                             norm_position="after")), alpha=0.5, norm="layer",
                            norm_position="post"), 2),
            Dense(10, "lecun_normal", "identity")), batch=6),
    }


NETS = _nets()


@pytest.mark.parametrize("name", sorted(NETS))
def test_tensors_equal_a_float64_rederivation(name):
    net = NETS[name]
    with jax.default_matmul_precision("highest"):
        tr = trace_blocks(net, seed=3, key=11)
    xs, fs, dxs, ins, dps = reference(net, tr, nf_betas(net), _dense)
    for i in range(net.depth):
        assert_close(tr["x"][i], xs[i], f"block {i + 1} stream")
        assert_close(tr["dx"][i], dxs[i], f"block {i + 1} dL/dx")
        if fs[i] is not None:
            assert_close(tr["branch"][i], fs[i], f"block {i + 1} branch")
        else:
            assert np.isnan(tr["branch"][i]).all()
        for j, (u, dp) in enumerate(zip(ins[i], dps[i], strict=True)):
            assert_close(tr["layer_inputs"][i][j], u, f"block {i + 1} layer {j} input")
            assert_close(tr["d_product"][i][j], dp, f"block {i + 1} layer {j} dL/d(uW)")


def _np_moments(x):
    x = np.asarray(x, np.float64)
    return x.mean(), x.var(), (x * x).mean()


def _np_cosine(x):
    x = np.asarray(x, np.float64)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    g = u @ u.T
    b = len(x)
    return (g.sum() - np.trace(g)) / (b * (b - 1))


@pytest.mark.parametrize("name", ["pre-LN, 2-layer, tanh", "stem, norm after act, post-LN"])
def test_statistics_equal_numpy_on_the_same_tensors(name):
    net = NETS[name]
    with jax.default_matmul_precision("highest"):
        tr = trace_blocks(net, seed=2, key=5)
        st = propagate_blocks(net, seeds=3, key=5).stats
    for i in range(net.depth):
        x, f = np.asarray(tr["x"][i], np.float64), np.asarray(tr["branch"][i], np.float64)
        mean, var, m2 = _np_moments(x)
        got = {k: float(np.asarray(getattr(st, k))[2, i]) for k in st._fields if k != "weight_grad_norm"}
        np.testing.assert_allclose([got["act_mean"] + 10, got["act_var"], got["act_second_moment"]],
                                   [mean + 10, var, m2], rtol=1e-4)
        np.testing.assert_allclose(got["act_sq_mean"], (x.mean(0) ** 2).mean(), rtol=1e-3, atol=1e-7)
        np.testing.assert_allclose(got["act_chan_var"], x.var(0).mean(), rtol=1e-4)
        np.testing.assert_allclose(got["cosine"], _np_cosine(x), rtol=1e-3, atol=1e-6)
        g = np.asarray(tr["dx"][i], np.float64)
        np.testing.assert_allclose([got["grad_var"], got["grad_second_moment"]], [g.var(), (g * g).mean()],
                                   rtol=1e-4)
        norms = [np.linalg.norm(u.astype(np.float64).T @ d.astype(np.float64))
                 for u, d in zip(tr["layer_inputs"][i], tr["d_product"][i], strict=True)]
        wgn = np.asarray(st.weight_grad_norm)[2, i]
        np.testing.assert_allclose(wgn[: len(norms)], norms, rtol=1e-4)
        assert np.isnan(wgn[len(norms):]).all()
        if np.isnan(f).all():
            assert math.isnan(got["branch_var"]) and math.isnan(got["branch_share"])
            continue
        x_prev = tr["x0"] if i == 0 else tr["x"][i - 1]
        total = np.asarray(x_prev, np.float64) + f
        np.testing.assert_allclose(got["branch_var"], f.var(), rtol=1e-4)
        np.testing.assert_allclose(got["branch_share"], f.var() / total.var(), rtol=1e-4)
        np.testing.assert_allclose(got["branch_chan_var"], f.var(0).mean(), rtol=1e-4)
        assert got["nonfinite"] == 0 and got["grad_nonfinite"] == 0


def test_weight_standardization_unit_norm_zero_mean():
    w = jax.random.normal(jax.random.key(0), (300, 7)) * 3.0 + 1.5
    s = np.asarray(standardize_weights(w), np.float64)
    np.testing.assert_allclose(s.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose((s * s).sum(0), 1.0, rtol=1e-5)
    # the NF floor: a constant column has var * n_in = 0 < 1e-4, so it is scaled by 1/sqrt(1e-4)
    assert np.abs(np.asarray(standardize_weights(np.ones((5, 2), np.float32)))).max() == 0.0


# -- closed forms, measured (width 1024, 8 seeds) ---------------------------------------------------
N, SEEDS, L = 1024, 8, 12


@pytest.fixture(scope="module")
def measured():
    nets = {
        # Var x_l = (1 + a^2 sigma_w^2)^l exactly in expectation for a linear branch
        "linear": Network.residual_mlp(L, N, init="lecun_normal", activation="identity", branch_scale=0.5),
        # He ReLU branch without norm: Var doubles, share 1/2 (De & Smith)
        "relu": Network.residual_mlp(L, N),
        # batch norm in the branch: Var x_l = 1 + l, share 1/(l + 1) (De & Smith)
        "bn": Network.residual_mlp(L, N, norm="batch"),
    }
    with jax.default_matmul_precision("highest"):
        return {k: propagate_blocks(n, seeds=SEEDS, key=1) for k, n in nets.items()}


def _within(measured_values, truth, what):
    """Mean over seeds within 4 standard errors (the seeds' own spread) plus 1% of the truth."""
    v = np.asarray(measured_values, np.float64)
    se = v.std(axis=0, ddof=1) / math.sqrt(v.shape[0])
    bad = np.abs(v.mean(0) - truth) > 4 * se + 0.01 * np.abs(truth)
    assert not bad.any(), f"{what}: blocks {np.flatnonzero(bad) + 1}: {v.mean(0)[bad]} vs {np.asarray(truth)[bad]}"


def test_linear_branch_grows_geometrically(measured):
    st = measured["linear"].stats
    blk = np.arange(1, L + 1)
    _within(st.act_second_moment, 1.25 ** blk, "linear stream q")
    _within(st.branch_share, np.full(L, 0.2), "linear share 0.25/1.25")
    # backward: chi_{l-1} = chi_l (1 + a^2): the gradient at block l is 1.25^(L - l)
    _within(st.grad_second_moment, 1.25 ** (L - blk), "linear chi")


def test_relu_branch_doubles_and_bn_grows_linearly(measured):
    blk = np.arange(1, L + 1)
    relu, bn = measured["relu"].stats, measured["bn"].stats
    # doubling compounds sampling error multiplicatively: compare log2 growth per block
    growth = np.log2(np.asarray(relu.act_second_moment, np.float64))
    _within(np.diff(growth, axis=1, prepend=0.0), np.ones(L), "ReLU log2 growth per block")
    _within(relu.branch_share, np.full(L, 0.5), "ReLU share")
    _within(bn.act_second_moment, 1.0 + blk, "BN stream")
    _within(bn.branch_share, 1.0 / (blk + 1), "BN share")
    _within(bn.branch_var, np.ones(L), "BN branch variance")


# -- behaviour -------------------------------------------------------------------------------------
SMALL = Network.residual_mlp(5, 32, branch_layers=2, norm="layer", batch=4)


def test_propagate_sends_residual_networks_to_the_block_engine_and_refuses_plain_only_options():
    res = initjax.propagate(SMALL, seeds=2, key=3)
    assert isinstance(res, BlockPropagation) and res.stats.act_var.shape == (2, 5)
    np.testing.assert_array_equal(res.stats.act_var, propagate_blocks(SMALL, seeds=2, key=3).stats.act_var)
    for kwargs in ({"method": "fast"}, {"bins": 10}, {"devices": 1}, {"act_range": (-2.0, 2.0)}):
        with pytest.raises(ValueError, match=list(kwargs)[0]):
            initjax.propagate(SMALL, **kwargs)


def test_a_seed_does_not_depend_on_its_neighbours_or_the_chunking():
    together = propagate_blocks(SMALL, seeds=5, key=2).stats
    alone = propagate_blocks(SMALL, seeds=1, key=2, seed_offset=3).stats
    chunked = propagate_blocks(SMALL, seeds=5, key=2, chunk_size=2).stats
    for field in ("act_var", "grad_var", "cosine", "weight_grad_norm"):
        np.testing.assert_allclose(np.asarray(getattr(alone, field))[0], np.asarray(getattr(together, field))[3],
                                   rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(getattr(chunked, field), getattr(together, field), rtol=1e-6, equal_nan=True)


def test_save_load_round_trip(tmp_path):
    res = propagate_blocks(SMALL, seeds=2)
    back = BlockPropagation.load(res.save(tmp_path / "r"))
    assert back.network == SMALL and back.key == 0
    for field in res.stats._fields:
        np.testing.assert_array_equal(getattr(back.stats, field), getattr(res.stats, field))
    (tmp_path / "r" / "stats.npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="unreadable"):
        BlockPropagation.load(tmp_path / "r")


def test_overflow_is_reported_not_hidden():
    net = Network.residual_mlp(40, 32, init="normal:stddev=3.0", batch=4)
    with pytest.warns(NonFiniteWarning, match="overflow in blocks"):
        res = initjax.propagate(net, seeds=1)
    assert res.nonfinite_blocks and res.nonfinite_blocks[-1] == 40
    table = res.layer_table()
    assert table[0]["act_var"] > 0 and math.isfinite(table[0]["act_var"])


def test_bad_input_is_refused_naming_it():
    with pytest.raises(TypeError, match="Network"):
        propagate_blocks("resnet")
    with pytest.raises(ValueError, match="seeds"):
        propagate_blocks(SMALL, seeds=0)
    with pytest.raises(ValueError, match=r"inputs must have shape"):
        propagate_blocks(SMALL, inputs=np.zeros((3, 32), np.float32))
    with pytest.raises(ValueError, match="cotangent"):
        propagate_blocks(SMALL, cotangent="hinge")
    with pytest.raises(MemoryError, match="GiB"):
        propagate_blocks(SMALL, memory_budget=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        propagate_blocks(SMALL, inputs=np.ones((4, 32), np.float32), cotangent="xent")


def test_an_overflowed_example_has_no_gradient_anywhere_not_a_zero_one():
    """relu'(nan) = 0: without masking, the early blocks of an example that overflowed later
    would report an exactly-zero (vanishing) gradient."""
    net = Network.residual_mlp(60, 32, init="normal:stddev=2.0", batch=4)
    with pytest.warns(NonFiniteWarning):
        st = initjax.propagate(net, seeds=1).stats
    first = np.asarray(st.nonfinite)[0] > 0
    assert first.any() and not first[0]  # block 1's forward is finite, later ones overflow
    assert np.asarray(st.grad_nonfinite)[0, 0] == 4 * 32  # every row of block 1's dL/dx
    assert math.isnan(float(np.asarray(st.grad_var)[0, 0]))
