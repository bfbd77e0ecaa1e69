"""Convolutional residual blocks in the block engine against a float64 numpy re-derivation and a
border-aware closed form.

The numpy reference is written from the definitions in initjax.network's docstring: a SAME-padded
stride-1 convolution as patches times the flattened kernel (im2col), its backward pass by
scattering the patch gradients back (col2im), norms over (N, H, W) per channel (batch) or
(H, W, C) per example (layer, RMS), all in float64 on the tensors the engine drew
(``trace_blocks``). The engine runs float32 at "highest" precision, so the comparisons hold to
float32 rounding on CPU and GPU alike.
"""

import math

import jax
import numpy as np
import pytest

from initjax.engine.blocks import propagate_blocks, trace_blocks
from initjax.network import Conv, Dense, Network, Repeat, Residual

from .block_reference import assert_close, nf_betas, norm_with_backward, reference

_ACT = {
    "relu": (lambda x: np.maximum(x, 0.0), lambda x: (x > 0).astype(np.float64)),
    "identity": (lambda x: x, lambda x: np.ones_like(x)),
}


def _patches(x, k):
    """(B, H, W, k*k*C): the SAME-padded k x k neighbourhood of each position, in HWIO order."""
    p = (k - 1) // 2
    b, h, w, c = x.shape
    xp = np.zeros((b, h + k - 1, w + k - 1, c))
    xp[:, p:p + h, p:p + w] = x
    return np.concatenate([xp[:, i:i + h, j:j + w] for i in range(k) for j in range(k)], axis=-1)


def _unpatch(dp, k, c):
    """The adjoint of :func:`_patches`: scatter-add patch gradients back to (B, H, W, c)."""
    p = (k - 1) // 2
    b, h, w, _ = dp.shape
    out = np.zeros((b, h + k - 1, w + k - 1, c))
    for n, (i, j) in enumerate((i, j) for i in range(k) for j in range(k)):
        out[:, i:i + h, j:j + w] += dp[..., n * c:(n + 1) * c]
    return out[:, p:p + h, p:p + w]


def np_conv(x, kernel):
    """SAME, stride 1, kernel (k, k, C_in, C_out)."""
    k = kernel.shape[0]
    return _patches(x, k) @ kernel.reshape(-1, kernel.shape[-1])


def _conv_layer(layer, x, kern, b):
    """A preactivation Conv layer: (out, u, backward(dout) -> (dx, dL/d(conv(u, K))))."""
    assert layer.preactivation and layer.norm_position == "before"
    f, df = _ACT[layer.activation.name]
    m, k = layer.multiplier, kern.shape[0]
    z, nb = norm_with_backward(layer.norm, x, layer.norm_eps)
    u = f(z)
    out = m * np_conv(u, kern) + b

    def back(dout):
        dp = m * dout
        du = _unpatch(dp @ kern.reshape(-1, kern.shape[-1]).T, k, kern.shape[2])
        return nb(du * df(z)), dp
    return out, u, back


C = 12
NETS = {
    "pre-BN, 2 convs, biases": Network.residual_cnn(
        3, C, (6, 5), branch_layers=2, norm="batch", bias_init="normal:stddev=0.2", batch=4),
    "NF: scaled WS, beta, alpha 0.3": Network(C, (Repeat(Residual((
        Conv(C, weight_standardization=True, preactivation=True, multiplier=1.7),
        Conv(C, weight_standardization=True, preactivation=True, multiplier=1.7)),
        alpha=0.3, beta="expected"), 3),), spatial=(5, 6), batch=4, input_variance=2.0),
}


@pytest.fixture(scope="module", params=sorted(NETS))
def traced(request):
    net = NETS[request.param]
    with jax.default_matmul_precision("highest"):
        tr = trace_blocks(net, seed=1, key=7)
        st = propagate_blocks(net, seeds=2, key=7).stats
    return net, tr, st


def test_tensors_equal_a_float64_rederivation(traced):
    net, tr, _ = traced
    assert tr["x0"].shape == (net.batch, *net.spatial, C)
    assert tr["w"][0][0].shape == (3, 3, C, C)
    xs, fs, dxs, ins, dps = reference(net, tr, nf_betas(net), _conv_layer)
    for i in range(net.depth):
        assert_close(tr["x"][i], xs[i], f"block {i + 1} stream")
        assert_close(tr["branch"][i], fs[i], f"block {i + 1} branch")
        assert_close(tr["dx"][i], dxs[i], f"block {i + 1} dL/dx")
        for j, (u, dp) in enumerate(zip(ins[i], dps[i], strict=True)):
            assert_close(tr["layer_inputs"][i][j], u, f"block {i + 1} layer {j} input")
            assert_close(tr["d_product"][i][j], dp, f"block {i + 1} layer {j} dL/d(conv)")


def test_kernels_are_hwio_with_the_conv_fan_in(traced):
    net, tr, _ = traced
    k = tr["w"][0][0].astype(np.float64).reshape(-1, C)  # (3*3*C_in, C_out)
    if net.stages[0].block.branch[0].weight_standardization:
        # scaled WS per output channel over the fan-in (k_h, k_w, C_in): mean 0, squared norm 1
        np.testing.assert_allclose(k.mean(0), 0.0, atol=1e-6)
        np.testing.assert_allclose((k * k).sum(0), 1.0, rtol=1e-5)
    else:
        # he_normal with fan-in 3 * 3 * C_in: Var K = 2 / (9 C_in) (sd of a sample variance
        # ~ sqrt(2 / n) relative)
        np.testing.assert_allclose(k.var(), 2.0 / (9 * C), rtol=4 * math.sqrt(2.0 / k.size))


def _np_cosine(x):
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    g = u @ u.T
    return (g.sum() - np.trace(g)) / (len(x) * (len(x) - 1))


def test_statistics_equal_numpy_on_the_same_tensors(traced):
    net, tr, st = traced
    for i in range(net.depth):
        x, f = np.asarray(tr["x"][i], np.float64), np.asarray(tr["branch"][i], np.float64)
        got = {k: float(np.asarray(getattr(st, k))[1, i])
               for k in st._fields if k != "weight_grad_norm"}
        np.testing.assert_allclose([got["act_var"], got["act_second_moment"]],
                                   [x.var(), (x * x).mean()], rtol=1e-4)
        per_channel = x.reshape(-1, C)  # Brock et al.: statistics over (N, H, W) per channel
        np.testing.assert_allclose(got["act_sq_mean"], (per_channel.mean(0) ** 2).mean(),
                                   rtol=1e-3, atol=1e-7)
        np.testing.assert_allclose(got["act_chan_var"], per_channel.var(0).mean(), rtol=1e-4)
        np.testing.assert_allclose(got["cosine"], _np_cosine(x), rtol=1e-3, atol=1e-6)
        fc = f.reshape(-1, C)
        np.testing.assert_allclose([got["branch_var"], got["branch_chan_var"]],
                                   [f.var(), fc.var(0).mean()], rtol=1e-4)
        np.testing.assert_allclose(got["branch_sq_mean"], (fc.mean(0) ** 2).mean(),
                                   rtol=1e-3, atol=1e-7)
        x_prev = np.asarray(tr["x0"] if i == 0 else tr["x"][i - 1], np.float64)
        np.testing.assert_allclose(got["branch_share"], f.var() / (x_prev + f).var(), rtol=1e-4)
        g = np.asarray(tr["dx"][i], np.float64)
        np.testing.assert_allclose([got["grad_var"], got["grad_second_moment"]],
                                   [g.var(), (g * g).mean()], rtol=1e-4)
        # ||dL/dK||_F: dL/dK = patches(u)^T dL/d(conv), flattened HWIO
        norms = [np.linalg.norm(_patches(u.astype(np.float64), 3).reshape(-1, 9 * C).T
                                @ dp.astype(np.float64).reshape(-1, C))
                 for u, dp in zip(tr["layer_inputs"][i], tr["d_product"][i], strict=True)]
        np.testing.assert_allclose(np.asarray(st.weight_grad_norm)[1, i], norms, rtol=1e-4)
        assert got["nonfinite"] == 0 and got["grad_nonfinite"] == 0


# -- the closed form: per-position second moments, border included ------------------------------
def _border_recursion(spatial, depth, k, bn):
    """E[x^2] per position for ``x + conv_He(relu(norm(x)))`` on unit-variance inputs, in the
    infinite-channel limit: a He kernel makes the branch's second moment at p
    ``(1 / k^2) sum_{d valid} E[relu(z)^2](p + d) * 2 = (1 / k^2) sum_{d valid} s(p + d)`` with
    ``s`` the second moment of the branch input (``q`` without a norm; ``q / mean_p q`` under
    batch norm, which pools the positions). Away from the border that is ``q``: no norm doubles
    the variance per block, BN adds 1 (``1 + l``); at the border fewer taps see data."""
    q = np.ones(spatial)
    p = (k - 1) // 2
    out = []
    for _ in range(depth):
        s = q / q.mean() if bn else q
        sp = np.zeros((spatial[0] + k - 1, spatial[1] + k - 1))
        sp[p:p + spatial[0], p:p + spatial[1]] = s
        a = sum(sp[i:i + spatial[0], j:j + spatial[1]]
                for i in range(k) for j in range(k)) / (k * k)
        q = q + a
        out.append(q)
    return out


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_he_relu_conv_branches_follow_the_border_aware_recursion(norm):
    depth, spatial, seeds = 5, (8, 8), 8
    net = Network.residual_cnn(depth, 64, spatial, norm=norm, batch=8)
    with jax.default_matmul_precision("highest"):
        st = propagate_blocks(net, seeds=seeds, key=3).stats
    q = _border_recursion(spatial, depth, 3, norm == "batch")
    want = np.array([v.mean() for v in q])
    centre = np.array([v[3:5, 3:5].mean() for v in q])
    if norm == "none":
        # the interior is the dense closed form 2^l until the border reaches it (block l sees l
        # positions away: the centre of 8 x 8 for l <= 3)
        np.testing.assert_allclose(centre[:3], 2.0 ** np.arange(1, 4), rtol=1e-12)
    else:
        # BN divides by the variance pooled over positions, which the border lowers, so the
        # interior grows a little faster than the dense 1 + l after the first block
        assert centre[0] == 2.0 and np.all(np.diff(centre) > 1.0)
    m2 = np.asarray(st.act_second_moment, np.float64)
    mean, sem = m2.mean(0), m2.std(0, ddof=1) / math.sqrt(seeds)
    # sampling error from the seed spread, plus the O(1/fan-in) mean-field correction (fan-in 576)
    np.testing.assert_array_less(np.abs(mean - want), 4 * sem + 0.01 * want)
    # and the border matters: the pooled variance is measurably below the interior's closed form
    assert np.all(mean[1:] < centre[1:] - 4 * sem[1:])


def test_bad_conv_input_is_named():
    from initjax.theory.residual import predict_residual

    net = NETS["pre-BN, 2 convs, biases"]
    with pytest.raises(ValueError, match=r"Conv blocks need a spatial stream.*spatial=\(\)"):
        Network(C, (Conv(C),))
    with pytest.raises(ValueError, match=r"kernel_size=\(3,\) has 1 axes, but the stream has 2"):
        Network(C, (Conv(C, kernel_size=(3,)),), spatial=(4, 4))
    with pytest.raises(ValueError, match=r"all Dense or all Conv"):
        Residual((Conv(C), Dense(C)))
    with pytest.raises(ValueError, match=r"cotangent='xent'.*spatial=\(6, 5\)"):
        propagate_blocks(net, seeds=1, cotangent="xent")
    with pytest.raises(ValueError, match=r"\(batch, \*spatial, in_width\) = \(4, 6, 5, 12\)"):
        propagate_blocks(net, seeds=1, inputs=np.zeros((4, 30, 12), np.float32))
    with pytest.raises(ValueError, match=r"spatial=\(6, 5\).*SAME-padding border"):
        predict_residual(net)
    assert Network.from_json(net.to_json()) == net and not net.is_plain


def test_memory_estimate_counts_positions():
    from initjax.engine.blocks import estimate_memory

    small, big = (Network.residual_cnn(4, 8, s, batch=4) for s in ((4, 4), (8, 8)))
    kept = lambda n: estimate_memory(n) - 4 * 4 * 9 * 8 * 8  # noqa: E731  (less the weight term)
    assert kept(big) == 4 * kept(small)
