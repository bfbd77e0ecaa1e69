"""Residual mean-field theory (initjax.theory.residual): closed forms, the named recursions, the
depth limit, agreement with theory.predict on plain nets, and a float64 Monte-Carlo re-derivation
of the networks themselves (written here, independently of the engine)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax import theory
from initjax.network import Dense, Network, Repeat, Residual
from initjax.theory.residual import (
    de_smith_variance,
    predict_residual,
    residual_depth_limit,
    yang_schoenholz,
)


def _res(block, depth, width=64, **fields):
    return Network(width, (Repeat(block, depth),), **fields)


# ----------------------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("alpha, std", [(1.0, 1.0), (0.5, 0.7), (0.1, 2.0)])
def test_linear_branch_geometric_growth(alpha, std):
    # x + alpha W x, W ~ N(0, s^2/n): q_l = q0 (1 + alpha^2 s^2)^l and chi_{l-1} = chi_l (1 + a^2 s^2)
    n, depth, q0 = 32, 7, 1.3
    layer = Dense(n, f"normal:stddev={std / math.sqrt(n)}", "identity", preactivation=True)
    pred = predict_residual(_res(Residual(layer, alpha=alpha), depth, n, input_variance=q0))
    g = 1 + alpha**2 * std**2
    blocks = np.arange(1, depth + 1)
    np.testing.assert_allclose(pred.q, q0 * g**blocks, rtol=1e-12)
    np.testing.assert_allclose(pred.grad, g ** (depth - blocks), rtol=1e-12)
    np.testing.assert_allclose(pred.grad_input, g**depth, rtol=1e-12)
    np.testing.assert_allclose(pred.branch_share, (g - 1) / g, rtol=1e-12)
    np.testing.assert_allclose(pred.mean, 0.0, atol=0)


def test_he_relu_branch_doubles_without_norm():
    # De & Smith 2020: x + W relu(x), He init: Var f = Var x, so the variance doubles (exact: the
    # split quadrature integrates relu^2 exactly)
    net = _res(Residual(Dense(64, "he_normal", "relu", preactivation=True)), 12)
    pred = predict_residual(net)
    var, share = de_smith_variance(12, normalized=False)
    np.testing.assert_allclose(pred.q, var, rtol=1e-12)
    np.testing.assert_allclose(pred.branch_share, share, rtol=1e-12)


@pytest.mark.parametrize("batch", [4, 16])
def test_bn_branch_linear_growth(batch):
    # x + W relu(BN(x)), He: E[relu(y)^2] = E[y^2]/2 = 1/2 exactly (y symmetric), so Var f = 1:
    # q_l = 1 + l and the branch share is 1/(l + 1) (De & Smith 2020), for any batch size
    net = _res(Residual(Dense(64, "he_normal", "relu", preactivation=True), norm="batch",
                        norm_eps=0.0), 20, batch=batch)
    pred = predict_residual(net)
    var, share = de_smith_variance(20)
    np.testing.assert_allclose(pred.q, var, rtol=1e-12)
    np.testing.assert_allclose(pred.branch_share, share, rtol=1e-12)
    np.testing.assert_allclose(pred.branch_share, 1 / (np.arange(1, 21) + 1), rtol=1e-12)


def test_batch_norm_output_moments_exact():
    # a plain Dense layer with BN after a linear map: second moment 1, pair moment -1/(B-1)
    for b in (2, 5, 32):
        net = Network(16, (Dense(16, "lecun_normal", "identity", norm="batch", norm_eps=0.0),),
                      batch=b, input_correlation=0.3)
        pred = predict_residual(net)
        np.testing.assert_allclose(pred.q, [1.0], rtol=1e-14)
        np.testing.assert_allclose(pred.cosine, [-1 / (b - 1)], rtol=1e-14)


def test_sqrt_depth_scaling_stays_bounded_and_matches_limit():
    # x + L^{-1/2} W relu(x), He: K' = K: q(1) = e exactly; the L-block recursion is Euler's
    # method, q_L = (1 + 1/L)^L
    for depth in (10, 100):
        net = _res(Residual(Dense(64, "he_normal", "relu", preactivation=True),
                            alpha="1/sqrt(depth)"), depth)
        np.testing.assert_allclose(predict_residual(net).q[-1], (1 + 1 / depth) ** depth, rtol=1e-12)
    lim = residual_depth_limit("relu", 2.0, [0.25, 1.0], steps=200)
    np.testing.assert_allclose(lim.q, np.exp([0.25, 1.0]), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# The depth limit (ODE) and its approach by the recursion
# ----------------------------------------------------------------------------------------------
def test_depth_limit_is_approached_at_rate_one_over_depth():
    # tanh branch with bias: no closed form. The ODE is solved by RK4; the L-block network's
    # recursion is Euler with step 1/L, so its error at t = 1 shrinks like 1/L.
    sw, sb, c0 = 1.5, 0.1, 0.4
    lim = residual_depth_limit("tanh", sw, 1.0, 1.0, c0, sigma_b2=sb, steps=400)
    lim_fine = residual_depth_limit("tanh", sw, 1.0, 1.0, c0, sigma_b2=sb, steps=800)
    assert abs(lim.q - lim_fine.q) < 1e-12 and abs(lim.c - lim_fine.c) < 1e-12
    errors = []
    for depth in (8, 16, 32, 64):
        layer = Dense(32, f"normal:stddev={math.sqrt(sw / 32)}", "tanh",
                      bias_init=f"normal:stddev={math.sqrt(sb)}", preactivation=True)
        net = _res(Residual(layer, alpha="1/sqrt(depth)"), depth, 32, input_correlation=c0)
        pred = predict_residual(net, num=60, num_2d=(24, 24))
        errors.append((abs(pred.q[-1] - lim.q), abs(pred.cross[-1] - lim.c)))
    errors = np.array(errors)
    ratios = errors[:-1] / errors[1:]
    np.testing.assert_allclose(ratios, 2.0, rtol=0.08)  # halving L halves the error
    assert errors[-1, 0] < 0.01 * lim.q


# ----------------------------------------------------------------------------------------------
# The named recursions against predict_residual on the same description
# ----------------------------------------------------------------------------------------------
def _frn(act, depth, sw, sv, sb, sa, p0, gamma0, n=32):
    w = Dense(n, f"normal:stddev={math.sqrt(sw / n)}", act, bias_init=f"normal:stddev={math.sqrt(sb)}")
    v = Dense(n, f"normal:stddev={math.sqrt(sv / n)}", "identity", bias_init=f"normal:stddev={math.sqrt(sa)}")
    return _res(Residual((w, v)), depth, n, input_variance=p0, input_correlation=gamma0 / p0)


@pytest.mark.parametrize("act", ["tanh", "relu", "erf"])
def test_full_residual_net_recursion(act):
    args = dict(sigma_w2=1.7, sigma_v2=0.8, sigma_b2=0.05, sigma_a2=0.02, p0=1.2, gamma0=0.3)
    ys = yang_schoenholz("full", act, 15, **args)
    pred = predict_residual(_frn(act, 15, 1.7, 0.8, 0.05, 0.02, 1.2, 0.3))
    np.testing.assert_allclose(pred.q, ys.p, rtol=1e-10)
    np.testing.assert_allclose(pred.cross, ys.gamma, rtol=1e-10)
    np.testing.assert_allclose(pred.grad, ys.chi, rtol=1e-10)
    np.testing.assert_allclose(pred.grad_input, ys.chi_input, rtol=1e-10)


def test_reduced_residual_net_recursion_odd_and_mean_term():
    # RRN x + phi(W x + b): for odd phi (tanh) the mean is 0 and the paper's recursion is exact;
    # for relu predict_residual adds the cross term 2 m_{l-1} E[relu(h^l)] the paper drops
    def rrn(act):
        layer = Dense(32, "normal:stddev=0.25", act, bias_init="normal:stddev=0.2")  # sw = 2
        return _res(Residual(layer), 10, 32, input_correlation=0.2)

    ys = yang_schoenholz("reduced", "tanh", 10, sigma_w2=2.0, sigma_b2=0.04, gamma0=0.2)
    pred = predict_residual(rrn("tanh"))
    np.testing.assert_allclose(pred.q, ys.p, rtol=1e-10)
    np.testing.assert_allclose(pred.cross, ys.gamma, rtol=1e-10)
    np.testing.assert_allclose(pred.grad, ys.chi, rtol=1e-10)
    np.testing.assert_allclose(pred.mean, 0.0, atol=1e-12)
    # relu: block 1 sees a centred stream (no mean yet), so the two agree there, then part
    ys = yang_schoenholz("reduced", "relu", 10, sigma_w2=2.0, sigma_b2=0.04, gamma0=0.2)
    pred = predict_residual(rrn("relu"))
    np.testing.assert_allclose(pred.q[0], ys.p[0], rtol=1e-10)
    q1 = ys.q[0]  # the pre-activation second moment of block 1
    np.testing.assert_allclose(pred.mean[0], math.sqrt(q1 / (2 * math.pi)), rtol=1e-12)
    assert np.all(pred.q[1:] > ys.p[1:] * 1.05)


# ----------------------------------------------------------------------------------------------
# Agreement with theory.predict on plain stacks, and predict's dispatch
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("init, act, bias", [("lecun_normal", "tanh", "normal:stddev=0.2"),
                                             ("he_normal", "relu", "zeros")])
def test_plain_stack_agrees_with_theory_predict(init, act, bias):
    net = Network.mlp(depth=4, width=128, in_width=64, init=init, activation=act, bias_init=bias,
                      input_variance=0.8, input_correlation=0.3)
    with jax.enable_x64(True):
        ref = theory.predict(net)
    pred = predict_residual(net)
    np.testing.assert_allclose(pred.q, ref.out_second_moment, rtol=1e-7)
    np.testing.assert_allclose(pred.grad, ref.grad_act_var, rtol=1e-7)


def test_predict_dispatches_residual_networks():
    net = _res(Residual(Dense(64, "he_normal", "relu", preactivation=True)), 3)
    out = theory.predict(net)
    np.testing.assert_allclose(out.q, [2.0, 4.0, 8.0])
    table = out.layer_table()
    assert [row["block"] for row in table] == [1, 2, 3]
    assert set(table[0]) == {"block", "q", "mean", "branch_var", "branch_share", "cosine", "grad_var"}
    assert table[-1]["grad_var"] == 1.0
    plain = Network.mlp(depth=3, width=64, init="he_normal", activation="relu")
    assert isinstance(theory.predict(plain), theory.Prediction)  # unchanged for plain stacks


def test_overflow_is_reported_not_raised():
    net = _res(Residual(Dense(64, "normal:stddev=100", "relu", preactivation=True)), 200)
    pred = predict_residual(net)
    assert np.isinf(pred.q[-1]) and np.isinf(pred.branch_var[-1]) and np.isnan(pred.cosine[-1])
    assert np.all(np.isfinite(pred.q[:10]))
    assert all(isinstance(row["q"], float) for row in pred.layer_table())


# ----------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------
def test_bad_input_is_refused():
    with pytest.raises(TypeError, match="Network"):
        predict_residual("not a network")

    def my_init(key, shape, dtype=jnp.float32):
        return jax.random.normal(key, shape, dtype)

    net = _res(Residual(Dense(64, my_init, "relu", preactivation=True)), 2)
    with pytest.raises(ValueError, match="user function"):
        predict_residual(net)
    with pytest.raises(ValueError, match="zero-mean"):
        predict_residual(_res(Residual(Dense(64, "normal:stddev=0.1,mean=0.1", "relu")), 2))
    with pytest.raises(ValueError, match="num must be even"):
        predict_residual(_res(Residual(Dense(64)), 2), num=7)
    with pytest.raises(ValueError, match="kind"):
        yang_schoenholz("half", "tanh", 3)
    with pytest.raises(ValueError, match="sigma_w2"):
        yang_schoenholz("full", "tanh", 3, sigma_w2=-1.0)
    with pytest.raises(ValueError, match="t must be"):
        residual_depth_limit("tanh", 1.0, [-0.5, 1.0])
    with pytest.raises(ValueError, match="c0"):
        residual_depth_limit("tanh", 1.0, 1.0, q0=1.0, c0=2.0)
    with pytest.raises(ValueError, match="depth"):
        de_smith_variance(0)


# ----------------------------------------------------------------------------------------------
# Measured: a float64 Monte-Carlo re-derivation of the networks (width 512, 8 seeds, 10 blocks)
# ----------------------------------------------------------------------------------------------
WIDTH, SEEDS, DEPTH, BATCH = 512, 8, 10, 8


def _normalize(kind, x, eps):
    if kind == "none":
        return x
    if kind == "batch":
        mu = x.mean(axis=0, keepdims=True)
        return (x - mu) / jnp.sqrt(((x - mu) ** 2).mean(axis=0, keepdims=True) + eps)
    if kind == "layer":
        mu = x.mean(axis=1, keepdims=True)
        return (x - mu) / jnp.sqrt(((x - mu) ** 2).mean(axis=1, keepdims=True) + eps)
    return x / jnp.sqrt((x**2).mean(axis=1, keepdims=True) + eps)


def _dense_apply(layer, x, w, b):
    act = layer.activation

    def pre(u):
        if layer.norm_position == "before":
            return act(_normalize(layer.norm, u, layer.norm_eps))
        return _normalize(layer.norm, act(u), layer.norm_eps)

    if layer.weight_standardization:
        w = (w - w.mean(axis=0, keepdims=True)) / (w.std(axis=0, keepdims=True) * math.sqrt(w.shape[0]))
    if layer.preactivation:
        return layer.multiplier * pre(x) @ w + b
    return pre(layer.multiplier * x @ w + b)


def _simulate(net, seed):
    """Per block: (q, mean, cross, branch second moment, grad second moment), one seed, float64."""
    rng = np.random.default_rng(seed)
    n0, c0, v0 = net.in_width, net.input_correlation, net.input_variance
    shared = rng.standard_normal((1, n0))
    x0 = math.sqrt(v0) * (math.sqrt(c0) * shared + math.sqrt(1 - c0) * rng.standard_normal((net.batch, n0)))
    params, width = [], n0
    for block in net.blocks:  # Gaussian weights and biases of the inits' second moments
        layers = block.branch if isinstance(block, Residual) else (block,)
        ps, w_in = [], width
        for layer in layers:
            sw = layer.init.second_moment((w_in, layer.width))
            sb = layer.bias_init.second_moment((layer.width,))
            ps.append((math.sqrt(sw) * rng.standard_normal((w_in, layer.width)),
                       math.sqrt(sb) * rng.standard_normal((1, layer.width))))
            w_in = layer.width
        params.append(ps)
        width = block.out_width(width)
    cot = rng.standard_normal((net.batch, width))
    with jax.enable_x64(True):
        return np.asarray(_runner(net)(jnp.asarray(x0), params, jnp.asarray(cot)), dtype=np.float64)


@functools.cache
def _runner(net):
    """The jitted forward, backward and per-block statistics of ``net`` (one compile per case)."""
    betas = np.sqrt(net.expected_stream_variance())

    def forward(x, deltas, params):
        streams, branches = [], []
        for i, (block, ps) in enumerate(zip(net.blocks, params, strict=True)):
            if isinstance(block, Dense):
                x = _dense_apply(block, x, *ps[0])
                branches.append(jnp.zeros(()))
            else:
                alpha = net.branch_scale(block)
                beta = betas[i] if block.beta == "expected" else 1.0
                u = _normalize(block.norm, x, block.norm_eps) if block.norm_position == "pre" else x
                u = u / beta
                for layer, (w, b) in zip(block.branch, ps, strict=True):
                    u = _dense_apply(layer, u, w, b)
                branches.append(jnp.var(alpha * u))  # a variance, as predict_residual states it
                x = x + alpha * u
                if block.norm_position == "post":
                    x = _normalize(block.norm, x, block.norm_eps)
            x = x + deltas[i]
            streams.append(x)
        return x, (streams, branches)

    @jax.jit
    def run(x0, params, cot):
        deltas = [jnp.zeros((net.batch, w), x0.dtype) for w in net.widths[1:]]
        _, vjp, (streams, branches) = jax.vjp(lambda x, d: forward(x, d, params), x0, deltas,
                                              has_aux=True)
        _, grads = vjp(cot)
        b = net.batch
        rows = []
        for x, br, g in zip(streams, branches, grads, strict=True):
            gram = x @ x.T / x.shape[1]
            cross = (gram.sum() - jnp.trace(gram)) / (b * (b - 1))
            rows.append(jnp.stack([jnp.mean(x**2), jnp.mean(x), cross, br, jnp.mean(g**2)]))
        return jnp.stack(rows)

    return run


MC_CASES = {
    # Yang & Schoenholz's full net, tanh, biases, correlated inputs
    "frn-tanh": Network(WIDTH, (Repeat(Residual((
        Dense(WIDTH, "lecun_normal", "tanh", bias_init="normal:stddev=0.3"),
        Dense(WIDTH, "lecun_normal", "identity", bias_init="normal:stddev=0.1"))), DEPTH),),
        batch=BATCH, input_correlation=0.5),
    # the reduced net with relu: the stream's mean and the cross term 2 m E[relu(h)]
    "rrn-relu": Network(WIDTH, (Repeat(Residual(Dense(WIDTH, "he_normal", "relu"), alpha=0.5),
                                       DEPTH),), batch=BATCH, input_correlation=0.2),
    # De & Smith: BN in the branch, linear growth
    "pre-bn-relu": Network(WIDTH, (Repeat(Residual(Dense(WIDTH, "he_normal", "relu", preactivation=True),
                                                   norm="batch"), DEPTH),), batch=BATCH),
    # post layer norm, 2-layer tanh branch
    "post-ln-tanh": Network(WIDTH, (Repeat(Residual((
        Dense(WIDTH, "lecun_normal", "tanh"), Dense(WIDTH, "lecun_normal", "identity")),
        norm="layer", norm_position="post"), DEPTH),), batch=BATCH, input_correlation=0.3),
    # NF-ResNet: x + alpha W_ws relu(x / beta), scaled WS removes relu's mean
    "nf-ws-relu": Network(WIDTH, (Repeat(Residual(Dense(WIDTH, "he_normal", "relu", preactivation=True,
                                                        weight_standardization=True),
                                                  alpha=0.5, beta="expected"), DEPTH),), batch=BATCH),
    # a stem with RMS norm into a linear-branch stack with pre RMS norm
    "rms-linear": Network(WIDTH, (Dense(WIDTH, "he_normal", "relu", norm="rms", norm_position="after"),
                                  Repeat(Residual(Dense(WIDTH, "lecun_normal", "identity", preactivation=True),
                                                  norm="rms", alpha=0.7), DEPTH - 1)), batch=BATCH),
}


@pytest.fixture(scope="module", params=sorted(MC_CASES))
def measured(request):
    net = MC_CASES[request.param]
    runs = np.stack([_simulate(net, seed) for seed in range(SEEDS)])  # (seed, block, stat)
    return request.param, net, runs


# Allowed relative bias at width 512 and 10 blocks, beyond 4 standard errors over the 8 seeds:
# finite width biases the per-block moments by O(depth / width) (about 2% here).
FINITE_WIDTH = 0.03
# Per-block backward factors multiply expectations, but with batch norm on the stream (pre) the
# same feature keeps a small or large batch variance from block to block, so E[prod 1/sigma^2] >
# prod E[1/sigma^2]: at B = 8 the measured gradient is above the theory by about 2% per block
# back from the output (22% after 10 blocks; it shrinks with B). Allowed, and checked to be there.
BN_GRADIENT = 0.3


def test_measured_against_theory(measured):
    name, net, runs = measured
    pred = predict_residual(net)
    branch_var = np.where(np.isnan(pred.branch_var), 0.0, pred.branch_var)  # a Dense stem: none
    for stat, col, want in (("q", 0, pred.q), ("mean", 1, pred.mean), ("cross", 2, pred.cross),
                            ("branch_var", 3, branch_var), ("grad", 4, pred.grad)):
        v = runs[:, :, col]
        se = v.std(axis=0, ddof=1) / math.sqrt(SEEDS)
        bias = BN_GRADIENT if (stat == "grad" and name == "pre-bn-relu") else FINITE_WIDTH
        err = np.abs(v.mean(axis=0) - want)
        assert np.all(err <= 4 * se + bias * np.abs(want) + 1e-12), (
            f"{name} {stat}: measured {v.mean(axis=0)}, theory {want}, se {se}")
    if name == "pre-bn-relu":  # the departure described above is real, and grows backward
        excess = runs[:, :, 4].mean(axis=0) / pred.grad - 1
        assert excess[0] > 0.1 and excess[-1] < 0.05
    if name == "rrn-relu":  # the stream's mean: sqrt(q_h / 2 pi) per block, accumulated
        assert np.all(np.diff(pred.mean) > 0)


# ----------------------------------------------------------------------------------------------
# The seed demo's dashed theory curves and the plotting helpers
# ----------------------------------------------------------------------------------------------
def test_seed_demo_predicted_curves_and_overlay():
    from types import SimpleNamespace

    from initjax import plotting
    from initjax.config import NetworkConfig
    from initjax.reproductions.seed_demo import predicted_curves

    he = SimpleNamespace(config=NetworkConfig(depth=4, width=64, init="he_normal", activation="relu"))
    act_var, grad = predicted_curves(he)
    # ReLU, He: q^l = 2 at every layer, Var relu(h) = q/2 - q/(2 pi); Var dL/dh = 1/2 per layer
    np.testing.assert_allclose(act_var, 1 - 1 / math.pi, rtol=1e-9)
    np.testing.assert_allclose(grad, 0.5, rtol=1e-9)
    bn = SimpleNamespace(config=NetworkConfig(depth=4, width=64, norm="batch"))
    assert predicted_curves(bn) is None  # no prediction for batch norm: said in the legend
    curve = plotting.theory_curve([1.0, np.inf, 0.0, np.nan, 2.0])
    np.testing.assert_array_equal(np.isnan(curve), [False, True, True, True, False])
    ax = plotting.new_figure(4, 3).subplots()
    ax.plot([1, 2], [1, 2], label="measured")
    ax.legend()
    ax.set_yscale("log")
    plotting.note_theory(ax, missing=["BN scheme"])
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["measured", "dashed: mean-field theory", "no theory for: BN scheme"]
