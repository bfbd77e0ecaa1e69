"""The attention engine (initjax.engine.attention) against a float64 numpy re-derivation and
closed forms: uniform attention, Noci et al.'s vanishing query/key gradients under rank collapse,
and Dong et al.'s rank collapse of pure attention.

The engine runs float32 with its matmuls at "highest" precision, so the comparisons hold to
float32 rounding on CPU and GPU alike.
"""

import math

import numpy as np
import pytest

import initjax
from initjax.engine.attention import (
    AttentionPropagation,
    compiled_program,
    propagate_attention,
    trace_attention,
)
from initjax.engine.executor import default_lanes
from initjax.network import Attention, Dense, Network, Repeat

from . import attention_reference as ref
from .block_reference import assert_close

# One network whose stages cover every block form (one compile): width 16, 2 heads, 5 tokens,
# 3 sequences.
BLOCKS = (
    Attention(2),  # pre-LN, the CLI's default block (2 of them: a scan of length 2)
    Attention(2, norm_position="post", causal=True, mlp_width=8, mlp_activation="relu"),
    Attention(2, residual=False, norm="none"),  # pure attention
    Attention(2, norm="rms", mlp_width=24, alpha="1/sqrt(depth)", logit_scale="1/d_head"),  # gelu MLP
    Attention(2, residual=False, norm_position="post", mlp_width=8, mlp_activation="relu"),
)
SEEDS = 2


@pytest.fixture(scope="module")
def case():
    network = Network(16, tuple(Repeat(b, 2 if i == 0 else 1) for i, b in enumerate(BLOCKS)),
                      batch=3, tokens=5)
    result = propagate_attention(network, seeds=SEEDS, key=3)
    tr = trace_attention(network, seed=1, key=3)
    return network, result, tr


def test_tensors_match_float64_reference(case):
    network, _, tr = case
    xs, ps, dxs, _ = ref.reference(network, tr)
    for i in range(network.depth):
        assert_close(tr["x"][i], xs[i], f"block {i + 1} stream")
        assert_close(tr["p"][i], ps[i], f"block {i + 1} attention")
        assert_close(tr["dx"][i], dxs[i], f"block {i + 1} dL/dx")


def test_statistics_match_float64_reference(case):
    network, result, tr = case
    xs, ps, dxs, grads = ref.reference(network, tr)
    st = result.stats
    for i in range(network.depth):
        want = {
            "act_var": xs[i].var(),
            "act_mean": xs[i].mean(),
            "cosine": ref.token_cosine(xs[i]),
            "rel_residual": ref.rel_residual(xs[i]),
            "attn_entropy": ref.entropy(ps[i]),
            "grad_var": dxs[i].var(),
            **{f"grad_norm_{n}": np.linalg.norm(g) for n, g in grads[i].items()},
        }
        for name, value in want.items():
            got = float(np.asarray(getattr(st, name))[1, i])
            # the mean, the cosine and the relative residual cancel: float32 gives them an
            # absolute error of float32 rounding times their O(1) inputs
            floor = 1e-3 if name in ("act_mean", "cosine", "rel_residual") else 1e-6
            scale = max(abs(value), floor)
            assert abs(got - value) <= 2e-4 * scale, f"block {i + 1} {name}: {got} vs {value}"
        if network.blocks[i].mlp_width is None:
            assert np.isnan(np.asarray(st.grad_norm_mlp_in)[:, i]).all()
    assert np.asarray(st.nonfinite).sum() == 0 and np.asarray(st.grad_nonfinite).sum() == 0


def test_uniform_attention_closed_forms():
    """W_Q = W_K = 0: every softmax row is uniform (entropy log T); pure attention makes every
    token the mean of V W_O after one block (cosine 1, relative residual 0). Causal and logit
    scale 0: row i is uniform over i + 1 keys, mean entropy log(T!)/T; with ReZero's alpha = 0
    the stream stays the input (every block's statistics equal) and no weight gets a gradient."""
    t = 8
    pure = Network.transformer(2, 32, 4, t, 4, residual=False, norm="none", qk_init="zeros")
    st = propagate_attention(pure, seeds=2).stats
    np.testing.assert_allclose(st.attn_entropy, math.log(t), rtol=1e-5)  # float32 sum of T terms
    np.testing.assert_allclose(st.cosine, 1.0, atol=1e-5)
    assert np.abs(st.rel_residual).max() < 1e-5
    causal = Network.transformer(2, 32, 4, t, 4, causal=True, logit_scale=0.0, branch_scale=0.0,
                                 learnable=True)
    st = propagate_attention(causal, seeds=2).stats
    np.testing.assert_allclose(st.attn_entropy, math.lgamma(t + 1) / t, rtol=1e-5)
    for name in ("act_var", "cosine", "rel_residual", "grad_var"):
        values = np.asarray(getattr(st, name))
        np.testing.assert_array_equal(values[:, 1], values[:, 0], err_msg=name)
    for name in ("q", "k", "v", "o"):
        assert (np.asarray(getattr(st, f"grad_norm_{name}")) == 0).all(), name


def test_query_key_gradients_vanish_under_rank_collapse(tmp_path):
    """Noci et al. 2022: all tokens equal (input correlation 1) -> constant logits per row and
    equal rows of V: dL/dW_Q = dL/dW_K = 0 exactly, while W_V and W_O still learn. Also: the
    dispatch of initjax.propagate, the program cache, seed independence and save/load."""
    net = Network.transformer(2, 32, 4, 8, 4, mlp=True, mlp_width=32, input_correlation=1.0)
    a = initjax.propagate(net, seeds=2)
    assert isinstance(a, AttentionPropagation)
    st = a.stats
    v = np.asarray(st.grad_norm_v)
    assert (v > 1.0).all() and (np.asarray(st.grad_norm_o) > 1.0).all()
    assert np.asarray(st.grad_norm_q).max() <= 1e-5 * v.min()
    assert np.asarray(st.grad_norm_k).max() <= 1e-5 * v.min()
    np.testing.assert_allclose(st.cosine, 1.0, atol=1e-5)
    np.testing.assert_allclose(st.attn_entropy, math.log(8), rtol=1e-5)

    # a seed's numbers do not depend on the seeds beside it nor on the chunk size; the same
    # compiled program (capacity 2) serves both calls
    c = propagate_attention(net, seeds=3, chunk_size=2)
    fn = compiled_program(net, "normal", True, False, default_lanes(), a.prng_impl, "highest")
    assert fn._cache_size() == 1
    np.testing.assert_array_equal(c.stats.grad_norm_v[:2], st.grad_norm_v)
    rows = a.layer_table()
    assert {"cosine", "rel_residual", "attn_entropy", "act_var", "grad_var", "grad_norm_q",
            "grad_norm_k", "grad_norm_v", "grad_norm_o"} <= set(rows[0])
    loaded = AttentionPropagation.load(a.save(tmp_path / "run"))
    assert loaded.network == net
    np.testing.assert_array_equal(loaded.stats.rel_residual, st.rel_residual)


def test_rank_collapse_pure_attention_vs_skip():
    """Dong et al. 2021: pure attention loses rank doubly exponentially (each block at least
    squares the relative residual here), while a skip connection keeps it of order 1."""
    common = {"depth": 4, "width": 64, "heads": 4, "tokens": 8, "batch": 4}
    pure = propagate_attention(Network.transformer(**common, residual=False, norm="none"), seeds=3)
    skip = propagate_attention(Network.transformer(**common), seeds=3)
    r = np.asarray(pure.stats.rel_residual).mean(axis=0)
    s = np.asarray(skip.stats.rel_residual).mean(axis=0)
    assert r[0] < 0.8 and r[1] <= r[0] ** 2 and r[2] <= max(r[1] ** 2, 1e-6), r
    assert r[-1] < 1e-4, r
    assert (s > 0.3).all() and (s[-1] > 100 * r[-1]), (s, r)
    assert (np.diff(np.asarray(pure.stats.cosine).mean(axis=0)) >= -1e-6).all()


def test_description_json_and_errors():
    net = Network.transformer(4, 32, 4, 8, 2, mlp=True, causal=True, norm="rms", norm_position="post",
                              branch_scale="inv-sqrt-depth", qk_init="zeros", logit_scale=0.5)
    assert Network.from_json(net.to_json()) == net
    assert net.residual_depth == 4 and net.branch_scale(net.stages[0].block) == 0.5
    assert net.stages[0].block.mlp_width == 128
    with pytest.raises(ValueError, match="heads=3 must divide the stream width 32"):
        Network.transformer(2, 32, 3, 8)
    with pytest.raises(ValueError, match="tokens must be >= 2, got 1"):
        Network.transformer(2, 32, 4, 1)
    with pytest.raises(ValueError, match="Attention blocks need a token stream"):
        Network(32, (Repeat(Attention(4), 2),))
    with pytest.raises(ValueError, match="exclude each other"):
        Network(32, (Repeat(Dense(32), 2),), tokens=4, spatial=(2, 2))
    with pytest.raises(ValueError, match="norm must be one of 'layer', 'rms', 'none'; got 'batch'"):
        Attention(2, norm="batch")
    with pytest.raises(ValueError, match="alpha must be 1"):
        Attention(2, residual=False, alpha=0.5)
    with pytest.raises(ValueError, match="logit_scale must be"):
        Attention(2, logit_scale=-1.0)
    mixed = Network(16, (Repeat(Attention(2), 1), Repeat(Dense(16), 1)), tokens=4)
    with pytest.raises(ValueError, match="stages\\[1\\] is a Dense block"):
        propagate_attention(mixed)
    with pytest.raises(ValueError, match="cotangent must be one of 'normal', 'mse'; got 'xent'"):
        propagate_attention(Network.transformer(1, 16, 2, 4), cotangent="xent")
    with pytest.raises(ValueError, match="inputs must have shape"):
        propagate_attention(Network.transformer(1, 16, 2, 4, 2), inputs=np.zeros((2, 16)))
