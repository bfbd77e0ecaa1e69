"""Parametrizations (SP, NTK, muP, depth-muP) against independent truths: TP5 Table 3 written out
by hand, TP4's abc form and ``mup``'s MuReadout/MuAdam form trained in float64 numpy, the
abc-shift symmetry, exact identities of the rescaled initializers, sample variances, and a user's
plain ``nnx.Linear`` model stepped by hand."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax import initializers, parametrization
from initjax._precision import matmul_precision
from initjax.network import Conv, Dense, Network, Repeat, Residual
from initjax.parametrization import (
    PARAMETRIZATIONS,
    Exponents,
    Parametrization,
    Rule,
    get,
    kernel_init,
    lr_multiplier,
    lr_multipliers_by_path,
    mlp,
    multiplier,
    parametrize,
    scale_lr_by_path,
)

# -- float64 numpy MLP: h_l = mult_l * a_{l-1} W_l + bmult_l * beta_l, tanh, linear readout ------


def _forward(ws, bs, mults, bmults, x):
    acts, hs = [x], []
    for i, (w, b, m, bm) in enumerate(zip(ws, bs, mults, bmults, strict=True)):
        h = m * acts[-1] @ w + bm * b
        hs.append(h)
        acts.append(h if i == len(ws) - 1 else np.tanh(h))
    return acts, hs


def _grads(ws, bs, mults, bmults, x, y):
    """Gradients of 0.5 * mean_batch |f(x) - y|^2 with respect to the stored ws and bs."""
    acts, hs = _forward(ws, bs, mults, bmults, x)
    delta = (acts[-1] - y) / x.shape[0]
    gw, gb = [None] * len(ws), [None] * len(ws)
    for i in reversed(range(len(ws))):
        gw[i] = mults[i] * acts[i].T @ delta
        gb[i] = bmults[i] * delta.sum(0)
        if i:
            delta = (mults[i] * delta @ ws[i].T) * (1.0 - np.tanh(hs[i - 1]) ** 2)
    return gw, gb


def _train(layers, x, y, steps, eta, optimizer="sgd"):
    """``layers``: dicts with w, b, mult, bmult, lr, blr (stored parameters and their factors).
    SGD, or Adam (b1 0.9, b2 0.999, eps 1e-30: scale-invariant to float64 rounding)."""
    ws = [np.array(L["w"]) for L in layers]
    bs = [np.array(L["b"]) for L in layers]
    mults, bmults = [L["mult"] for L in layers], [L["bmult"] for L in layers]
    lrs = [L["lr"] for L in layers] + [L["blr"] for L in layers]
    params = ws + bs
    mom = [np.zeros_like(p) for p in params]
    var = [np.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        gw, gb = _grads(params[:len(ws)], params[len(ws):], mults, bmults, x, y)
        for i, g in enumerate(gw + gb):
            if optimizer == "sgd":
                step = g
            else:
                mom[i] = 0.9 * mom[i] + 0.1 * g
                var[i] = 0.999 * var[i] + 0.001 * g * g
                step = (mom[i] / (1 - 0.9**t)) / (np.sqrt(var[i] / (1 - 0.999**t)) + 1e-30)
            params[i] = params[i] - eta * lrs[i] * step
    return params[:len(ws)], params[len(ws):], mults, bmults


def _output(layers, x, y, x_test, steps=2, eta=0.05, optimizer="sgd"):
    ws, bs, mults, bmults = _train(layers, x, y, steps, eta, optimizer)
    return _forward(ws, bs, mults, bmults, x_test)[0][-1]


D, K, N0, N = 5, 3, 16, 64  # data dim, outputs, base width, width (m = 4)
M = N / N0


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    z = [rng.standard_normal((D, N)), rng.standard_normal((N, N)), rng.standard_normal((N, K))]
    x, y, x_test = rng.standard_normal((8, D)), rng.standard_normal((8, K)), rng.standard_normal(
        (4, D))
    return z, x, y, x_test


def _layers_of(network, z):
    """The numpy layers of an initjax network description: stored weights from its initializers'
    gaussian std (the same standard-normal draws z), and its multipliers."""
    out = []
    for layer, zl in zip(network.dense_layers, z, strict=True):
        std = layer.init.gaussian_std(zl.shape)
        blr = layer.lr_multiplier if layer.bias_lr_multiplier is None else layer.bias_lr_multiplier
        out.append({"w": std * zl, "b": np.zeros(zl.shape[1]), "mult": layer.multiplier,
                    "bmult": 1.0, "lr": layer.lr_multiplier, "blr": blr})
    return out


# -- TP5 Table 3, written out by hand ---------------------------------------------------------

# (name, optimizer) -> role -> (init_var, multiplier, lr) factors at m_in = m_out = 4 (width 512
# over base 128; m_in = 1 for the input and the biases, m_out = 1 for the output), by hand.
TABLE = {
    ("sp", "sgd"): {r: (1, 1, 1) for r in ("input", "hidden", "output", "bias")},
    ("sp", "adam"): {r: (1, 1, 1) for r in ("input", "hidden", "output", "bias")},
    ("mup", "sgd"): {"input": (1, 1, 4), "hidden": (1, 1, 1), "output": (0.25, 1, 0.25),
                     "bias": (1, 1, 4)},
    ("mup", "adam"): {"input": (1, 1, 1), "hidden": (1, 1, 0.25), "output": (0.25, 1, 0.25),
                      "bias": (1, 1, 1)},
    ("ntk", "sgd"): {"input": (1, 1, 1), "hidden": (4, 0.5, 1), "output": (4, 0.5, 1),
                     "bias": (1, 1, 1)},
    ("ntk", "adam"): {"input": (1, 1, 0.5), "hidden": (4, 0.5, 0.25), "output": (4, 0.5, 0.5),
                      "bias": (1, 1, 0.5)},
}
_MULTS = {"input": (1.0, 4.0), "hidden": (4.0, 4.0), "output": (4.0, 1.0), "bias": (1.0, 4.0)}


@pytest.mark.parametrize("name,optimizer", sorted(TABLE))
def test_factors_are_table3_written_by_hand(name, optimizer):
    p = get(name, optimizer)
    for role, want in TABLE[name, optimizer].items():
        m_in, m_out = _MULTS[role]
        got = p.factors(role, fan_in_mult=m_in, fan_out_mult=m_out)
        assert got == pytest.approx(want, rel=1e-15), (role, got)


def test_parametrized_mlp_carries_table3_absolute_values():
    """The absolute init variances and learning-rate factors of a muP MLP at widths 128..1024
    (base 128), by hand: hidden He 2/n, readout (1/n) (128/n), SGD LR n/128 on the input layer
    and every hidden bias, 128/n on the readout."""
    for n in (128, 256, 1024):
        net = mlp(20, n, 3, 10, parametrization="mup", optimizer="sgd", base_width=128)
        inp, hid, out = net.dense_layers
        assert hid.init.second_moment((n, n)) == pytest.approx(2.0 / n, rel=1e-12)
        assert out.init.second_moment((n, 10)) == pytest.approx(128.0 / n**2, rel=1e-12)
        assert inp.init.second_moment((20, n)) == pytest.approx(2.0 / 20, rel=1e-12)
        assert (inp.lr_multiplier, hid.lr_multiplier, out.lr_multiplier) == pytest.approx(
            (n / 128, 1.0, 128 / n))
        assert hid.bias_lr_multiplier == pytest.approx(n / 128) or n == 128
        assert out.bias_lr_multiplier in (None, 1.0)
        assert {layer.multiplier for layer in net.dense_layers} == {1.0}


def test_attention_logit_multiplier_is_mups_8_over_d():
    for d in (64, 128, 256):
        m = multiplier("mup", "attention_logit", fan_in=d, base_fan_in=64)
        assert m / math.sqrt(d) == pytest.approx(8.0 / d, rel=1e-12)
        assert multiplier("sp", "attention_logit", fan_in=d, base_fan_in=64) == 1.0


def test_depth_mup_scales_the_branch_and_adams_hidden_lr_with_depth():
    def net(L):
        return Network(8, (Dense(64, "he_normal", "relu"),
                           Repeat(Residual((Dense(64, "he_normal", "relu", preactivation=True),),
                                           alpha=0.5), L),
                           Dense(4, "lecun_normal", "identity")))

    for L in (4, 16):
        adam = parametrize(net(L), "depth_mup", base_width=16, base_depth=4, optimizer="adam")
        sgd = parametrize(net(L), "depth_mup", base_width=16, base_depth=4, optimizer="sgd")
        res_a, res_s = adam.stages[1].block, sgd.stages[1].block
        assert res_a.alpha == pytest.approx(0.5 * (L / 4) ** -0.5)
        assert res_s.alpha == pytest.approx(0.5 * (L / 4) ** -0.5)
        assert res_a.branch[0].lr_multiplier == pytest.approx(0.25 * (L / 4) ** -0.5)
        assert res_s.branch[0].lr_multiplier == pytest.approx(1.0)  # SGD: not scaled with L
        assert adam.stages[-1].block.lr_multiplier == pytest.approx(0.25)
        assert adam.stages[1].count == L


# -- at the base shape, every parametrization is the network as written -------------------------


@pytest.mark.parametrize("name", PARAMETRIZATIONS)
@pytest.mark.parametrize("optimizer", ("sgd", "adam"))
def test_every_parametrization_is_sp_at_the_base_shape(name, optimizer):
    net = mlp(12, 96, 4, 3, activation="tanh")
    assert parametrize(net, name, base_width=96, optimizer=optimizer) == net
    res = Network(8, (Dense(32, "he_normal", "relu"),
                      Repeat(Residual((Dense(32, "he_normal", "relu", preactivation=True),),
                                      alpha=0.7), 6),
                      Dense(4, "lecun_normal", "identity")))
    assert parametrize(res, name, base_width=32, base_depth=6, optimizer=optimizer) == res
    # away from the base, muP differs from SP
    if name != "sp":
        assert parametrize(net, name, base_width=24, optimizer=optimizer) != net


# -- the abc form: TP4's muP and the shift symmetry --------------------------------------------


def _abc_layers(a, b, c, z, base_std, n, n0, bias_a):
    """TP4's abc form relative to the base: W = (n/n0)^-a w, w = base_std (n/n0)^-b z, SGD LR
    (n/n0)^-c; biases (zero at init) with multiplier (n/n0)^-bias_a and the same LR as their
    layer."""
    m = n / n0
    return [{"w": s * m ** -bl * zl, "b": np.zeros(zl.shape[1]), "mult": m ** -al,
             "bmult": m ** -ba, "lr": m ** -cl, "blr": m ** -cl}
            for al, bl, cl, zl, s, ba in zip(a, b, c, z, base_std, bias_a, strict=True)]


def test_table3_mup_trains_like_tp4s_abc_mup_sgd(data):
    """Two SGD steps of initjax's muP (Table 3 form) and of TP4's muP (a = -1/2, 0, 1/2; b
    relative to SP: 1/2 on the input (std x m^-1/2), 0 after; c = 0; input and hidden biases with
    multiplier m^{1/2}) give the same function to float64 rounding: they differ by the abc shift."""
    z, x, y, x_test = data
    ours = mlp(D, N, 3, K, activation="tanh", parametrization="mup", optimizer="sgd",
               base_width=N0)
    sp = mlp(D, N, 3, K, activation="tanh")
    base_std = [layer.init.gaussian_std(zl.shape) for layer, zl in zip(sp.dense_layers, z,
                                                                       strict=True)]
    tp4 = _abc_layers(a=(-0.5, 0.0, 0.5), b=(0.5, 0.0, 0.0), c=(0, 0, 0), z=z, base_std=base_std,
                      n=N, n0=N0, bias_a=(-0.5, -0.5, 0.0))
    f_ours = _output(_layers_of(ours, z), x, y, x_test)
    f_tp4 = _output(tp4, x, y, x_test)
    np.testing.assert_allclose(f_ours, f_tp4, rtol=1e-10, atol=1e-12)
    # and the check can fail: a readout learning rate left at 1 trains differently
    wrong = dataclasses.replace(get("mup"), name="wrong", output=Rule(init_var=Exponents(-1.0)))
    f_wrong = _output(_layers_of(parametrize(sp, wrong, base_width=N0), z), x, y, x_test)
    assert np.max(np.abs(f_wrong - f_tp4)) > 1e-3


def test_abc_shift_leaves_sgd_unchanged(data):
    """(a + t, b - t, c - 2t), a different t per layer, gives the same function after 2 SGD steps
    (float64); (a + t, b - t, c) does not."""
    z, x, y, x_test = data
    a, b, c, t = (0.2, -0.1, 0.4), (0.1, 0.3, 0.2), (0.5, 0.0, 0.3), (0.3, -0.4, 0.7)
    base, bias_a = (0.5, 0.2, 0.2), (0.0, 0.0, 0.0)
    f0 = _output(_abc_layers(a, b, c, z, base, N, N0, bias_a), x, y, x_test)
    shift = [tuple(v + s * ti for v, ti in zip(vals, t, strict=True))
             for vals, s in ((a, 1), (b, -1), (c, -2))]
    # a zero-init bias shifts like its layer: multiplier (a + t), LR (c - 2t)
    bias_shift = tuple(ba + ti for ba, ti in zip(bias_a, t, strict=True))
    layers = _abc_layers(*shift, z, base, N, N0, bias_shift)
    np.testing.assert_allclose(_output(layers, x, y, x_test), f0, rtol=1e-10, atol=1e-12)
    no_lr_shift = _abc_layers(shift[0], shift[1], c, z, base, N, N0, bias_shift)
    assert np.max(np.abs(_output(no_lr_shift, x, y, x_test) - f0)) > 1e-3


def test_table3_mup_adam_trains_like_mups_mureadout_and_muadam(data):
    """Two Adam steps of initjax's muP for Adam and of the ``mup`` package's form (MuReadout:
    input divided by width_mult, weight rescaled by sqrt(width_mult); MuAdam: lr / width_mult on
    the hidden matrix only) give the same function (Adam's abc shift is (a + t, b - t, c - t))."""
    z, x, y, x_test = data
    ours = mlp(D, N, 3, K, activation="tanh", parametrization="mup", optimizer="adam",
               base_width=N0)
    sp = _layers_of(mlp(D, N, 3, K, activation="tanh"), z)
    mup_form = [dict(sp[0]), dict(sp[1], lr=1 / M, blr=1.0),
                dict(sp[2], w=sp[2]["w"] * math.sqrt(M), mult=1 / M)]
    kw = {"eta": 0.01, "optimizer": "adam"}
    f_ours = _output(_layers_of(ours, z), x, y, x_test, **kw)
    np.testing.assert_allclose(f_ours, _output(mup_form, x, y, x_test, **kw), rtol=1e-9,
                               atol=1e-11)
    assert np.max(np.abs(f_ours - _output(sp, x, y, x_test, **kw))) > 1e-3  # SP differs


def test_ntk_adam_is_the_kernel_regime():
    """The NTK-Adam choice, measured: one Adam step (a sign step) on a tanh MLP at widths
    128..2048 moves the output by Theta(1) (log2 slope ~ 0) and the hidden features by
    Theta(n^-1/2) (slope ~ -1/2); a constant Adam LR (NTK-SGD's rule) grows the output's move
    like n (through the hidden layers)."""
    rng = np.random.default_rng(1)
    widths = (128, 512, 2048)
    x, y = rng.standard_normal((4, D)), rng.standard_normal((4, 1))
    moves = {"adam": [], "sgd": []}
    for n in widths:
        z = [rng.standard_normal((D, n)), rng.standard_normal((n, n)),
             rng.standard_normal((n, 1))]
        for rule in ("adam", "sgd"):
            net = mlp(D, n, 3, 1, activation="tanh", parametrization="ntk", optimizer=rule,
                      base_width=128)
            layers = _layers_of(net, z)
            acts0, _ = _forward([L["w"] for L in layers], [L["b"] for L in layers],
                                [L["mult"] for L in layers], [1.0] * 3, x)
            ws, bs, mults, bm = _train(layers, x, y, 1, 1e-3, "adam")
            acts1, _ = _forward(ws, bs, mults, bm, x)
            moves[rule].append((np.abs(acts1[-1] - acts0[-1]).mean(),
                                np.abs(acts1[2] - acts0[2]).mean()))
    logw = np.log2(widths)
    out_slope = np.polyfit(logw, np.log2([o for o, _ in moves["adam"]]), 1)[0]
    feat_slope = np.polyfit(logw, np.log2([f for _, f in moves["adam"]]), 1)[0]
    const_slope = np.polyfit(logw, np.log2([o for o, _ in moves["sgd"]]), 1)[0]
    # measured: 0.105, -0.429, 1.04 (muP-Adam's output slope on the same MLP is 0.10: finite width)
    assert abs(out_slope) < 0.2, out_slope
    assert abs(feat_slope + 0.5) < 0.2, feat_slope
    assert const_slope > 0.8, const_slope


# -- rescaled initializers: exact identities and sample variances -------------------------------

SPECS = ["he_normal", "he_uniform:nonlinearity=tanh", "he_normal:gain=0.5,truncated=true",
         "lecun_normal", "lecun_normal:truncated=true", "lecun_uniform", "xavier_normal",
         "xavier_uniform", "glorot2010_standard", "normal:stddev=0.02,mean=0.1",
         "truncated_normal:stddev=0.3", "uniform:scale=0.2", "uniform:low=-0.1,high=0.3",
         "variance_scaling:scale=2.0,mode=fan_avg,distribution=uniform", "orthogonal",
         "sparse:k=3", "ones", "constant:value=0.5", "zeros"]


@pytest.mark.parametrize("spec", SPECS)
def test_a_rescaled_initializer_draws_s_times_the_same_draw(spec, key):
    """The scaled init keeps the family and the key: its draw is exactly sqrt(factor) times the
    original's, and its second moment is factor times it."""
    base = initializers.get(spec)
    scaled = kernel_init("mup", "output", fan_in=64, base_fan_in=16, base_init=base)
    assert isinstance(scaled, initializers.Initializer) and initializers.get(scaled.spec) == scaled
    shape = (64, 32)
    np.testing.assert_allclose(scaled(key, shape), 0.5 * base(key, shape), rtol=2e-6, atol=1e-7)
    assert scaled.second_moment(shape) == pytest.approx(0.25 * base.second_moment(shape),
                                                        rel=1e-12, abs=1e-15)


def test_every_registered_scheme_can_be_rescaled():
    for name in initializers.names(aliases=False):
        base = initializers.get(name, value=1.0) if name == "constant" else initializers.get(name)
        kernel_init("ntk", "hidden", fan_in=32, base_fan_in=8, base_init=base)


def test_a_users_jax_initializer_is_wrapped(key):
    from flax import nnx

    user = nnx.initializers.lecun_normal()
    scaled = kernel_init("mup", "output", fan_in=256, base_fan_in=64, base_init=user)
    np.testing.assert_allclose(scaled(key, (256, 8), jnp.float32),
                               0.5 * user(key, (256, 8), jnp.float32), rtol=1e-6)


@pytest.mark.parametrize("name,role,want", [
    ("mup", "output", 1.0 / 1024 / 4), ("ntk", "hidden", 4.0 / 1024), ("sp", "output", 1 / 1024)])
def test_drawn_kernel_variance_matches_the_rule(name, role, want, key):
    """65,536 draws from Flax's default base (lecun truncated normal) scaled by the rule: the
    sample variance is within 5 standard errors (sqrt(2/n) relative, ~0.028)."""
    init = kernel_init(name, role, fan_in=1024, base_fan_in=256, fan_out=1024, base_fan_out=256)
    w = np.asarray(init(key, (1024, 64)), np.float64)
    assert abs(w.var() / want - 1.0) < 5 * math.sqrt(2.0 / w.size)


# -- a user's plain nnx.Linear model -------------------------------------------------------------


def test_a_users_nnx_model_takes_one_adam_step_as_written_by_hand():
    """A Flax NNX model of plain nnx.Linear layers, initialized with kernel_init and stepped by
    optax.adam chained with scale_lr_by_path, moves each parameter by -lr * factor * g / (|g| +
    eps) (Adam's first step), with g the float64 numpy gradient."""
    import optax
    from flax import nnx

    d, n, n0, k, lr = 6, 32, 8, 3, 0.01
    p = "mup"

    class Model(nnx.Module):
        def __init__(self, rngs):
            ki = {r: kernel_init(p, r, fan_in=fi, base_fan_in=bfi, optimizer="adam")
                  for r, fi, bfi in (("input", d, d), ("hidden", n, n0), ("output", n, n0))}
            self.inp = nnx.Linear(d, n, kernel_init=ki["input"], rngs=rngs)
            self.hid = nnx.Linear(n, n, kernel_init=ki["hidden"], rngs=rngs)
            self.out = nnx.Linear(n, k, kernel_init=ki["output"], rngs=rngs)

        def __call__(self, x):
            return self.out(jnp.tanh(self.hid(jnp.tanh(self.inp(x)))))

    model = Model(nnx.Rngs(0))
    graphdef, params = nnx.split(model, nnx.Param)
    roles = {r"^out/kernel$": "output", r"bias$": "bias", r"^inp/": "input", r"^hid/": "hidden"}
    tx = optax.chain(optax.adam(lr), scale_lr_by_path(params, roles, p, base_width=n0, width=n,
                                                      optimizer="adam"))
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((5, d)), rng.standard_normal((5, k))

    def loss(q):
        return 0.5 * jnp.mean(jnp.sum((nnx.merge(graphdef, q)(jnp.asarray(x, jnp.float32))
                                       - jnp.asarray(y, jnp.float32)) ** 2, -1))

    with matmul_precision("highest"):
        grads = jax.grad(loss)(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        new = optax.apply_updates(params, updates)

    names = ("inp", "hid", "out")
    ws = [np.asarray(params[m]["kernel"][...], np.float64) for m in names]
    bs = [np.asarray(params[m]["bias"][...], np.float64) for m in names]
    gw, gb = _grads(ws, bs, [1.0] * 3, [1.0] * 3, x, y)
    factor = {"inp": (1.0, 1.0), "hid": (1 / 4, 1.0), "out": (1 / 4, 1.0)}  # Table 3, Adam, m=4
    for i, m in enumerate(names):
        for j, (old, g) in enumerate(((ws[i], gw[i]), (bs[i], gb[i]))):
            want = old - lr * factor[m][j] * g / (np.abs(g) + 1e-8)
            got = np.asarray(new[m]["bias" if j else "kernel"][...], np.float64)
            np.testing.assert_allclose(got, want, rtol=0, atol=2e-6, err_msg=f"{m} {j}")
    # the initial readout was drawn with variance (1/n)(n0/n): a quarter of the hidden's scale
    out_var = np.var(ws[2]) * n
    assert 0.1 < out_var < 0.5


def test_lr_multipliers_by_path_from_base_shapes_equal_base_width():
    """Base shapes from the model built at the base width (nnx.eval_shape) give what base_width
    gives."""
    from flax import nnx

    def build(n, rngs):
        class Model(nnx.Module):
            def __init__(self, rngs):
                self.inp = nnx.Linear(4, n, rngs=rngs)
                self.layers = nnx.List([nnx.Linear(n, n, rngs=rngs) for _ in range(2)])
                self.out = nnx.Linear(n, 2, rngs=rngs)
        return Model(rngs)

    params = nnx.state(build(64, nnx.Rngs(0)), nnx.Param)
    base = nnx.state(nnx.eval_shape(lambda: build(16, nnx.Rngs(0))), nnx.Param)
    roles = {r"^out/kernel": "output", r"bias$": "bias", r"^inp/": "input", r".": "hidden"}
    a = lr_multipliers_by_path(params, roles, "mup", base_shapes=base)
    b = lr_multipliers_by_path(params, roles, "mup", base_width=16, width=64)
    leaves = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(a)}
    assert jax.tree.leaves(a) == jax.tree.leaves(b)
    assert leaves["['inp']['kernel'].value"] == 4.0  # SGD: input LR x fan_out mult
    assert leaves["['layers'][0]['bias'].value"] == 4.0
    assert leaves["['out']['kernel'].value"] == 0.25
    assert leaves["['out']['bias'].value"] == 1.0
    assert leaves["['layers'][1]['kernel'].value"] == 1.0


# -- the network description: bias_lr_multiplier, JSON, modules -------------------------------


def test_bias_lr_multiplier_is_validated_serialized_and_optional_in_old_json():
    layer = Dense(8, bias_lr_multiplier=3.0)
    assert Dense.from_dict(layer.to_dict()) == layer
    assert "bias_lr_multiplier" not in Dense(8).to_dict()  # old descriptions write unchanged
    old = {k: v for k, v in Dense(8, lr_multiplier=2.0).to_dict().items()}
    assert Dense.from_dict(old).bias_lr_multiplier is None
    conv = Conv(4, bias_lr_multiplier=0.5)
    assert Conv.from_dict(conv.to_dict()) == conv
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="bias_lr_multiplier must be"):
            Dense(8, bias_lr_multiplier=bad)
    with pytest.raises(TypeError, match="bias_lr_multiplier must be a real number"):
        Dense(8, bias_lr_multiplier="2")


def test_the_module_gives_the_bias_its_own_lr_multiplier():
    """NetworkModule.lr_multipliers: a layer's bias takes bias_lr_multiplier (its kernel
    lr_multiplier), in a plain block and in a residual branch; one SGD step moves it by
    -eta * 3 * g."""
    import optax
    from flax import nnx

    from initjax import modules
    from initjax.training.core import scale_by_multipliers

    net = Network(4, (Dense(8, "he_normal", "tanh", lr_multiplier=0.5, bias_lr_multiplier=3.0),
                      Residual((Dense(8, "he_normal", "tanh", preactivation=True,
                                      bias_lr_multiplier=2.0),)),
                      Dense(2, "lecun_normal", "identity")))
    model = modules.build(net, rngs=nnx.Rngs(0))
    mult = {jax.tree_util.keystr(k): v for k, v in
            jax.tree_util.tree_leaves_with_path(model.lr_multipliers())}
    assert mult["['blocks'][0]['kernel'].value"] == 0.5
    assert mult["['blocks'][0]['bias'].value"] == 3.0
    assert mult["['blocks'][1]['branch'][0]['kernel'].value"] == 1.0
    assert mult["['blocks'][1]['branch'][0]['bias'].value"] == 2.0
    assert mult["['blocks'][2]['bias'].value"] == 1.0
    graphdef, params = nnx.split(model, nnx.Param)
    x = jax.random.normal(jax.random.key(1), (3, 4))
    with matmul_precision("highest"):
        def loss(q):
            return jnp.sum(nnx.merge(graphdef, q)(x) ** 2)

        g = jax.grad(loss)(params)
        tx = optax.chain(optax.sgd(0.1), scale_by_multipliers(model.lr_multipliers()))
        u, _ = tx.update(g, tx.init(params))
    np.testing.assert_allclose(u["blocks"][0]["bias"][...],
                               -0.1 * 3.0 * g["blocks"][0]["bias"][...], rtol=1e-6)


def test_parametrized_networks_round_trip_through_json():
    nets = [mlp(10, 64, 3, 2, parametrization=n, optimizer=o, base_width=16)
            for n in PARAMETRIZATIONS for o in ("sgd", "adam")]
    res = Network(8, (Dense(32, "he_normal", "relu"),
                      Repeat(Residual((Dense(32, "he_normal", "relu", preactivation=True),
                                       Dense(32, "he_normal", "relu", preactivation=True)),
                                      alpha=1.0), 8),
                      Dense(3, "lecun_normal", "identity")))
    nets.append(parametrize(res, "depth_mup", base_width=8, base_depth=2, optimizer="adam"))
    for net in nets:
        assert Network.from_json(net.to_json()) == net
    for n in PARAMETRIZATIONS:
        for o in ("sgd", "adam"):
            p = get(n, o)
            assert Parametrization.from_json(p.to_json()) == p
            assert Parametrization.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_a_users_own_parametrization_is_data():
    """A user's parametrization from plain dicts: SP init, muP-style LR on hidden only."""
    p = Parametrization.from_dict({"name": "mine", "optimizer": "adam",
                                   "hidden": {"lr": {"fan_in": -0.5}}})
    net = parametrize(mlp(4, 64, 3, 2), p, base_width=16)
    assert [layer.lr_multiplier for layer in net.dense_layers] == [1.0, 0.5, 1.0]
    assert lr_multiplier(p, "hidden", fan_in=64, base_fan_in=16) == 0.5


def test_mlp_is_the_contract_shape():
    net = mlp(784, 256, 3, 10)
    assert net.widths == (784, 256, 256, 10)
    assert len(net.dense_layers) == 3
    assert [layer.activation.name for layer in net.dense_layers] == ["relu", "relu", "identity"]
    assert [layer.width for layer in mlp(5, 32, 2, 1).dense_layers] == [32, 1]
    assert len(mlp(5, 32, 6, 1).dense_layers) == 6
    sgd = mlp(784, 256, 4, 10, parametrization="mup", optimizer="sgd", base_width=64)
    assert [layer.lr_multiplier for layer in sgd.dense_layers] == [4.0, 1.0, 1.0, 0.25]


# -- bad input -------------------------------------------------------------------------------


def _net():
    return mlp(8, 64, 3, 2)


@pytest.mark.parametrize("call,err,match", [
    (lambda: get("mup2"), ValueError, r"unknown parametrization 'mup2'; known: sp, ntk, mup, "
                                      r"depth_mup"),
    (lambda: parametrize(_net(), "mupp", base_width=8), ValueError, "known: sp, ntk"),
    (lambda: get("mup", "rmsprop"), ValueError, "optimizer must be one of 'sgd', 'adam'"),
    (lambda: parametrize(_net(), "mup", base_width=128), ValueError,
     r"base_width=128 is larger than the network's width 64"),
    (lambda: parametrize(_net(), "mup", base_width=0), ValueError,
     "base_width must be >= 1, got 0"),
    (lambda: parametrize(_net(), "mup", base_width=True), TypeError, "base_width must be a number"),
    (lambda: parametrize(_net(), get("mup", "adam"), base_width=8, optimizer="sgd"), ValueError,
     r"optimizer='sgd' does not match .*'mup'.*optimizer='adam'"),
    (lambda: parametrize(Network(8, (Dense(16), Residual((Dense(16),)))), "mup", base_width=4),
     ValueError, "must end in a Dense layer .*readout.* got a 'residual' block"),
    (lambda: parametrize(Network(8, (Residual((Dense(8),)), Dense(2))), "mup", base_width=4),
     ValueError, "first block must be a Dense or Conv layer"),
    (lambda: parametrize(Network(8, (Dense(2),)), "mup", base_width=1), ValueError,
     "at least 2"),
    (lambda: parametrize("net", "mup", base_width=4), TypeError, "network must be an initjax"),
    (lambda: parametrize(Network(8, (Dense(16), Repeat(Residual((Dense(16),),
                                                                alpha="1/sqrt(depth)"), 4),
                                     Dense(2))),
                         "depth_mup", base_width=4, base_depth=2), ValueError,
     r"alpha='1/sqrt\(depth\)', which already scales with depth"),
    (lambda: parametrize(Network(8, (Dense(16), Repeat(Residual((Dense(16),)), 4), Dense(2))),
                         "depth_mup", base_width=4), ValueError, "pass base_depth"),
    (lambda: parametrize(Network(8, (Dense(16), Repeat(Residual((Dense(16),)), 4), Dense(2))),
                         "depth_mup", base_width=4, base_depth=8), ValueError,
     "base_depth=8 is larger than the network's depth L = 4"),
    (lambda: parametrize(_net(), "mup", base_width=8, base_depth=2), ValueError,
     "no residual blocks"),
    (lambda: mlp(8, 64, 1, 2), ValueError, "depth must be >= 2"),
    (lambda: mlp(8, 64, 3, 2, bias=False), ValueError, "bias=False"),
    (lambda: kernel_init("mup", "readout", fan_in=4, base_fan_in=2), ValueError,
     "role must be one of"),
    (lambda: kernel_init("mup", "output", fan_in=4, base_fan_in=8), ValueError,
     "base_fan_in=8 is larger than fan_in=4"),
    (lambda: lr_multiplier("mup", "input", fan_in=4, base_fan_in=4), ValueError,
     "the 'input' rule scales with fan_out: pass fan_out and base_fan_out"),
    (lambda: multiplier("mup", "bias", fan_in=4, base_fan_in=4), ValueError, "role must be"),
    (lambda: Parametrization("x", bias=Rule(multiplier=Exponents(fan_out=1.0))), ValueError,
     "bias role has no forward multiplier"),
    (lambda: Parametrization("x", attention_logit=Rule(lr=Exponents(fan_in=1.0))), ValueError,
     "attention_logit role is a multiplier only"),
    (lambda: Parametrization.from_dict({"name": "x", "hiden": {}}), ValueError,
     r"unknown Parametrization fields \['hiden'\]"),
    (lambda: Exponents(fan_in=float("nan")), ValueError, "Exponents.fan_in must be finite"),
])
def test_bad_input_is_refused_with_a_message_naming_it(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_a_parameter_path_no_rule_covers_is_refused_naming_it():
    params = {"enc": {"kernel": jnp.zeros((4, 8)), "bias": jnp.zeros(8)},
              "head": {"kernel": jnp.zeros((8, 2))}}
    with pytest.raises(ValueError, match=r"parameter 'head/kernel' matches no pattern of roles "
                                         r"\['\^enc/', 'bias\$'\]"):
        lr_multipliers_by_path(params, {"^enc/": "input", "bias$": "bias"}, "mup",
                               base_width=4, width=8)
    with pytest.raises(ValueError, match="attention_logit is a multiplier only"):
        lr_multipliers_by_path(params, {".": "attention_logit"}, "mup", base_width=4, width=8)
    with pytest.raises(ValueError, match="either base_shapes .* not neither"):
        lr_multipliers_by_path(params, {".": "hidden"}, "mup")
    with pytest.raises(ValueError, match="base_width=16 is larger than width=8"):
        lr_multipliers_by_path(params, {".": "hidden"}, "mup", base_width=16, width=8)
    with pytest.raises(ValueError, match="'head/kernel' is not in base_shapes"):
        lr_multipliers_by_path(params, {".": "hidden"}, "mup",
                               base_shapes={"enc": params["enc"]})
    assert parametrization.ROLES == ("input", "hidden", "output", "bias", "attention_logit")


# -- token networks (transformers) ----------------------------------------------------------------
def test_parametrize_token_network_by_hand():
    net = Network.transformer(4, 256, 4, 8, mlp=True, mlp_width=1024, branch_scale=1.0)
    assert parametrization.parametrize(net, "mup", base_width=256, optimizer="adam") == net
    assert parametrization.parametrize(net, "sp", base_width=64) == net
    # muP, Adam, m = 4 (TP5 Table 3): hidden init unchanged, hidden lr 1/4, logit 1/d_head
    # relative to the base: (1/sqrt(64)) (16/64)^(1/2) = 4/64
    mup = parametrization.parametrize(net, "mup", base_width=64, optimizer="adam")
    b = mup.blocks[0]
    assert (b.init, b.mlp_init, b.lr_multiplier, b.alpha) == (net.blocks[0].init,
                                                             net.blocks[0].mlp_init, 0.25, 1.0)
    assert b.logit_scale == pytest.approx(4 / 64, rel=1e-12) == b.scale(256)
    assert parametrization.parametrize(net, "mup", base_width=64).blocks[0].lr_multiplier == 1.0
    assert type(mup).from_json(mup.to_json()) == mup  # lr_multiplier and the scale round-trip
    # depth-muP: alpha x (4/1)^-1/2, Adam hidden lr x 1/4 x (4/1)^-1/2
    d = parametrization.parametrize(net, "depth_mup", base_width=64, base_depth=1,
                                    optimizer="adam").blocks[0]
    assert (d.alpha, d.lr_multiplier) == (0.5, 0.125)
    with pytest.raises(ValueError, match="forward multiplier"):
        parametrization.parametrize(net, "ntk", base_width=64)
    with pytest.raises(ValueError, match="alpha='1/sqrt\\(depth\\)'"):
        parametrization.parametrize(Network.transformer(4, 256, 4, 8, branch_scale="1/sqrt(depth)"),
                                    "depth_mup", base_width=64, base_depth=1, optimizer="adam")


def test_token_heads_by_hand():
    # the readout: init variance and lr x 1/m (Adam and SGD); the stem (fan-out m): SGD lr x m
    for opt, embed_lr in (("adam", 1.0), ("sgd", 4.0)):
        h = parametrization.token_heads("mup", width=256, base_width=64, optimizer=opt)
        assert h == {"kernel_init": "variance_scaling:distribution=normal,mode=fan_in,scale=0.25",
                     "embed_init": "lecun_normal:truncated=false", "readout_lr_multiplier": 0.25,
                     "embed_lr_multiplier": embed_lr}
    assert parametrization.token_heads("sp", width=256, base_width=64)["readout_lr_multiplier"] == 1
    with pytest.raises(ValueError, match="forward multiplier"):
        parametrization.token_heads("ntk", width=256, base_width=64)
    with pytest.raises(TypeError, match="spec"):
        parametrization.token_heads("mup", width=256, base_width=64, readout_init=len)
    with pytest.raises(ValueError, match="base_width"):
        parametrization.token_heads("mup", width=64, base_width=256)
