"""The Flax modules of the residual features (issue 14): preactivation layers, scaled weight
standardization, NF-ResNets' beta, Fixup's scalars and ``fixup(network)``.

Every forward test compares the built module (float32, matmuls at "highest" precision) with a
float64 numpy re-derivation written here from the papers' formulas, reading the same parameters
from the module; every parameter that is not a kernel is first moved off its initial value, so a
scalar or gain applied in the wrong place (or not at all) changes the numbers.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from initjax import data, modules, training
from initjax.network import Dense, Network, Repeat, Residual, fixup
from initjax.training import TrainConfig

# float32 forward vs float64 re-derivation through <= 4 blocks of width <= 32 with norms:
# measured max error ~2e-6; 2e-5 leaves room for other backends at "highest" precision.
TOL = dict(rtol=2e-5, atol=2e-5)
WS_FLOOR = 1e-4  # Brock et al.'s floor on var * fan_in (deepmind-research nfnets/base.py)
ws = jax.jit(modules.scaled_weight_standardization)  # one compile per shape, not one per op


# -- the float64 re-derivation --------------------------------------------------------------


def _names(path):
    names = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path]
    return "/".join(str(n) for n in names if n != "value")


def params_of(model):
    """``{"blocks/0/branch/1/kernel": float64 array, ...}``: every nnx.Param of the model."""
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
    return {_names(p): np.asarray(v, np.float64) for p, v in leaves}


def perturb(model, key, scale=0.3):
    """Move every non-kernel parameter (biases, norm scales, gains, Fixup scalars, a learnable
    alpha) by ``scale * N(0, 1)`` so that each one's placement shows in the output."""
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    keys = jax.random.split(key, len(leaves))
    new = [v if _names(p).endswith("kernel") else v + scale * jax.random.normal(k, v.shape, v.dtype)
           for (p, v), k in zip(leaves, keys, strict=True)]
    nnx.update(model, jax.tree_util.tree_unflatten(treedef, new))


PHI = {"relu": lambda u: np.maximum(u, 0.0), "tanh": np.tanh, "identity": lambda u: u}


def np_norm(kind, x, eps, P, prefix):
    """Layer norm and RMS norm over features, batch norm (training mode: batch mean, biased
    batch variance) over examples, then the norm's scale and bias."""
    if kind == "none":
        return x
    if kind == "rms":
        y = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + eps)
    else:
        axis = -1 if kind == "layer" else 0
        mu = x.mean(axis, keepdims=True)
        y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis, keepdims=True) + eps)
    y = y * P[prefix + "/norm/scale"]
    return y + P[prefix + "/norm/bias"] if prefix + "/norm/bias" in P else y


def np_weight(kernel, gain):
    """Scaled WS: W_hat[:, j] = g_j (W[:, j] - mean_j) / sqrt(max(var_j n_in, 1e-4))."""
    n_in = kernel.shape[0]
    mean = kernel.mean(axis=0)
    var = ((kernel - mean) ** 2).mean(axis=0)
    return gain * (kernel - mean) / np.sqrt(np.maximum(var * n_in, WS_FLOOR))


def np_dense(layer, P, prefix, x):
    """One Dense layer; returns (output, phi input, phi output, linear-map output). Fixup's
    scalars: ``c_lin`` right before the linear map, ``c_act`` right before the activation."""
    W = P[prefix + "/kernel"]
    if layer.weight_standardization:
        W = np_weight(W, P[prefix + "/gain"])
    c_lin = P.get(prefix + "/bias_linear", 0.0)
    c_act = P.get(prefix + "/bias_act", 0.0)
    phi = PHI[layer.activation.spec]
    norm = lambda u: np_norm(layer.norm, u, layer.norm_eps, P, prefix)  # noqa: E731

    def activate(u):
        z = (norm(u) if layer.norm_position == "before" else u) + c_act
        a = phi(z)
        return z, a, (norm(a) if layer.norm_position == "after" else a)

    def linear(u):
        return layer.multiplier * ((u + c_lin) @ W) + P[prefix + "/bias"]

    if layer.preactivation:  # m * phi(norm(x)) W + b
        z, a, u = activate(x)
        h = out = linear(u)
    else:  # phi(norm(m * x W + b))
        h = linear(x)
        z, a, out = activate(h)
    return out, z, a, h


def alpha_of(net, block):
    """The branch scale as a number: 1/sqrt(number of residual blocks) for "1/sqrt(depth)"."""
    if block.alpha == "1/sqrt(depth)":
        return 1.0 / math.sqrt(sum(isinstance(b, Residual) for b in net.blocks))
    return float(block.alpha)


def nf_betas(net):
    """NF-ResNets' beta_l = sqrt(Var x before block l), by Var x_{l+1} = Var x_l + alpha^2 from
    the input variance (a Dense block restarts at 1)."""
    out, v = [], net.input_variance
    for block in net.blocks:
        if isinstance(block, Residual):
            out.append(math.sqrt(v))
            v += alpha_of(net, block) ** 2
        else:
            out.append(None)
            v = 1.0
    return out


def np_forward(net, P, x):
    """The whole network; returns (output, per-block last-layer (phi input, phi output, h))."""
    betas, inter = nf_betas(net), []
    for i, block in enumerate(net.blocks):
        pre = f"blocks/{i}"
        if isinstance(block, Dense):
            x, z, a, h = np_dense(block, P, pre, x)
        else:
            alpha = P[pre + "/alpha"] if block.learnable else alpha_of(net, block)
            s = P.get(pre + "/branch_multiplier", 1.0)
            u = x / betas[i] if block.beta == "expected" else x
            if block.norm_position == "pre":
                u = np_norm(block.norm, u, block.norm_eps, P, pre)
            for j, layer in enumerate(block.branch):
                u, z, a, h = np_dense(layer, P, f"{pre}/branch/{j}", u)
            x = x + alpha * s * u
            if block.norm_position == "post":
                x = np_norm(block.norm, x, block.norm_eps, P, pre)
        inter.append((z, a, h))
    if "readout/kernel" in P:
        x = x @ P["readout/kernel"] + P["readout/bias"]
    return x, inter


@nnx.jit
def _forward(model, x):
    return model(x, return_intermediates=True)


def run(model, x):
    """One compiled program per network (faster than the eager path's op-by-op compiles)."""
    with jax.default_matmul_precision("highest"):
        return _forward(model, jnp.asarray(x, jnp.float32))


def x_in(n, width, seed=2):
    return np.asarray(jax.random.normal(jax.random.key(seed), (n, width)), np.float64)


# -- preactivation, norms, WS, NF beta: the module equals the re-derivation ------------------

PREACT = dict(preactivation=True, bias_init="normal:stddev=0.1")
CASES = {
    # ResNet v2 branch: pre-LN on the stream, each layer phi(norm(x)) W + b (BN and RMS inside).
    "preact-preLN": Network(16, (Repeat(Residual(
        (Dense(24, "he_normal", "relu", norm="batch", **PREACT),
         Dense(16, "he_normal", "tanh", norm="rms", norm_position="after", multiplier=0.5,
               **PREACT)),
        alpha=0.7, learnable=True, norm="layer", norm_position="pre"), 3),), batch=8),
    # Post-BN after the add, a standard and a preactivation layer in the branch, a Dense stem.
    "postBN": Network(12, (Repeat(Dense(16, "lecun_normal", "tanh"), 1), Repeat(Residual(
        (Dense(20, "he_normal", "relu", bias_init="normal:stddev=0.1"),
         Dense(16, "he_normal", "relu", norm="layer", **PREACT)),
        alpha="1/sqrt(depth)", norm="batch", norm_position="post"), 3)), batch=8),
    # NF-ResNet: x + alpha * branch(x / beta), scaled-WS preactivation layers, no norm; input
    # variance 2 so beta starts at sqrt(2).
    "NF-WS": Network(16, (Repeat(Residual(
        (Dense(32, "he_normal", "relu", weight_standardization=True, **PREACT),
         Dense(16, "he_normal", "relu", weight_standardization=True, **PREACT)),
        alpha=0.2, beta="expected"), 4),), batch=8, input_variance=2.0),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    net = CASES[request.param]
    model = modules.build(net, out_features=3, rngs=nnx.Rngs(1))
    perturb(model, jax.random.key(7))
    x = x_in(net.batch, net.in_width) * math.sqrt(net.input_variance)
    return request.param, net, model, x, run(model, x)


def test_blocks_equal_a_float64_rederivation(case):
    name, net, model, x, (y, inter) = case
    want, want_inter = np_forward(net, params_of(model), x)
    np.testing.assert_allclose(y, want, **TOL, err_msg=name)
    for key, idx in (("phi_input", 0), ("act", 1), ("preact", 2)):
        for i, (got, w) in enumerate(zip(inter[key], want_inter, strict=True)):
            np.testing.assert_allclose(got, w[idx], **TOL, err_msg=f"{name} {key}[{i}]")


def test_preactivation_intermediates_mean_phi_of_the_layer_input(case):
    """For a preactivation last layer, "preact" is the block's branch output (the linear map's
    output) and "phi_input"/"act" have the layer's input width; the norm has n_in features."""
    name, net, model, x, (y, inter) = case
    for i, block in enumerate(net.blocks):
        last = getattr(block, "branch", (block,))[-1]
        if not last.preactivation:
            continue
        n_in = block.branch[-2].width
        assert inter["act"][i].shape == inter["phi_input"][i].shape == (net.batch, n_in)
        assert inter["preact"][i].shape == (net.batch, last.width)
        if last.norm != "none":
            assert model.blocks[i].branch[-1].norm.scale[...].shape == (n_in,)


def test_nf_beta_is_the_expected_stream_std_before_each_block():
    """beta_l = sqrt(v0 + l alpha^2) within a run of residual blocks; a Dense block restarts the
    count at variance 1; blocks with beta="none" have none."""
    res = Residual((Dense(8, "he_normal", "relu", preactivation=True),), alpha=0.5,
                   beta="expected")
    net = Network(8, (Repeat(res, 3), Repeat(Dense(8), 1), Repeat(res, 2),
                      Repeat(Residual((Dense(8),)), 1)), input_variance=4.0)
    model = modules.build(net, rngs=nnx.Rngs(0))
    want = [2.0, math.sqrt(4.25), math.sqrt(4.5), None, 1.0, math.sqrt(1.25), None]
    got = [getattr(b, "beta", None) for b in model.blocks]
    assert got[3] is None and got[6] is None
    np.testing.assert_allclose([g for g in got if g is not None],
                               [w for w in want if w is not None], rtol=1e-12)
    # beta is a constant of the module, not a parameter
    assert not any("beta" in k for k in params_of(model))


# -- scaled weight standardization --------------------------------------------------------------


def test_ws_units_have_mean_zero_and_unit_squared_norm():
    """With gain 1 every unit's standardized fan-in weights have mean 0 and squared norm 1,
    whatever the initializer drew (here N(3, 0.05^2), far from both)."""
    net = Network(48, (Repeat(Residual(
        (Dense(64, "normal:stddev=0.05", "relu", weight_standardization=True,
               bias_init="zeros", preactivation=True),
         Dense(48, "he_normal", "relu", weight_standardization=True)), alpha=0.2), 2),))
    model = modules.build(net, rngs=nnx.Rngs(0))
    model.blocks[0].branch[0].kernel[...] += 3.0
    eps32 = float(np.finfo(np.float32).eps)
    for block in model.blocks:
        for layer in block.branch:
            w = np.asarray(ws(layer.kernel[...], layer.gain[...]), np.float64)
            np.testing.assert_allclose(w, np.asarray(layer.weight()), rtol=1e-6, atol=1e-7)
            k = np.asarray(layer.kernel[...], np.float64)
            assert w.shape == k.shape
            # float32 rounding of the column mean (a few ulp of |mean_j|) survives the
            # standardization as a shift of ~ulp(mean_j) / (std_j sqrt(n_in)): 16 ulp of room.
            shift = 16 * eps32 * np.max(np.abs(k.mean(0)) / (k.std(0) * math.sqrt(k.shape[0])))
            np.testing.assert_allclose(w.mean(axis=0), 0.0, atol=shift + 1e-7)
            np.testing.assert_allclose((w**2).sum(axis=0), 1.0, rtol=1e-5)
            np.testing.assert_allclose(w, np_weight(k, np.ones(w.shape[1])), rtol=1e-5,
                                       atol=shift + 1e-7)


def test_ws_floor_keeps_constant_and_zero_columns_finite():
    """var * n_in is floored at 1e-4: a zero column stays 0, a constant one becomes 0, a column
    with var * n_in = 1e-6 is scaled by 1/sqrt(1e-4) = 100 instead of 1000."""
    k = np.zeros((4, 3), np.float32)
    k[:, 1] = 2.5
    k[:, 2] = np.array([1, -1, 1, -1]) * 5e-4  # var = 2.5e-7, var * 4 = 1e-6
    w = np.asarray(ws(k, jnp.array([1.0, 1.0, 2.0])))
    assert np.all(np.isfinite(w))
    np.testing.assert_array_equal(w[:, :2], 0.0)
    np.testing.assert_allclose(w[:, 2], 2.0 * 100 * k[:, 2], rtol=1e-5)


def test_ws_of_a_conv_kernel_standardizes_over_every_fan_in_axis():
    k = jax.random.normal(jax.random.key(3), (3, 3, 4, 5)) * 0.2 + 0.7
    w = np.asarray(ws(k, jnp.ones(5)), np.float64)
    np.testing.assert_allclose(w.reshape(36, 5).mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose((w.reshape(36, 5) ** 2).sum(0), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kernel, gain, match", [
    (np.ones(4), np.ones(4), r"rank >= 2, got shape \(4,\)"),
    (np.ones((4, 3)), np.ones(4), r"gain must have shape \(3,\).*got \(4,\)"),
])
def test_ws_refuses_bad_shapes(kernel, gain, match):
    with pytest.raises(ValueError, match=match):
        modules.scaled_weight_standardization(kernel, gain)


# -- Fixup ----------------------------------------------------------------------------------------


def _fixup_net(preactivation, width=16, blocks=3, in_width=12):
    """A stem and ``blocks`` two-layer residual blocks, through fixup() (the last branch layer's
    activation is 0 at 0, its bias starts at 0)."""
    last_act = "relu" if preactivation else "identity"
    net = Network(in_width, (Repeat(Dense(width, "he_normal", "relu"), 1), Repeat(Residual(
        (Dense(24, "he_normal", "relu", preactivation=preactivation,
               bias_init="normal:stddev=0.1"),
         Dense(width, "he_normal", last_act, preactivation=preactivation)),
        alpha=1.0), blocks)), batch=8)
    return fixup(net)


@pytest.fixture(scope="module", params=[True, False], ids=["preact", "standard"])
def fixup_model(request):
    net = _fixup_net(request.param)
    model = modules.build(net, out_features=3, rngs=nnx.Rngs(4))
    return net, model


def test_fixup_network_is_the_identity_on_the_stream_at_init(fixup_model):
    """The last branch layer is zero, Fixup's scalars start at 0 and 1: every residual block
    returns its input exactly."""
    net, model = fixup_model
    for block in model.blocks[1:]:
        np.testing.assert_array_equal(block.branch[-1].kernel[...], 0.0)
        np.testing.assert_array_equal(block.branch_multiplier[...], 1.0)
        for layer in block.branch:
            np.testing.assert_array_equal(layer.bias_linear[...], 0.0)
            np.testing.assert_array_equal(layer.bias_act[...], 0.0)
    x = x_in(8, 12)
    _, inter = run(model, x)
    stem = np.asarray(inter["hidden"][0])
    for h in inter["hidden"][1:]:
        np.testing.assert_array_equal(np.asarray(h), stem)


def test_fixup_scales_the_other_branch_layers_by_L_to_the_minus_half():
    """m = 2 layers per branch, L = 8 blocks: the first layer's weights have variance
    (2 / fan_in) / L. 8 x 64 x 64 = 32768 entries: sd of a sample variance sqrt(2/n) = 0.8%;
    5 sd."""
    net = fixup(Network(64, (Repeat(Residual((Dense(64, "he_normal", "relu", preactivation=True),
                                               Dense(64, "he_normal", "relu", preactivation=True)),
                                              ), 8),)))
    model = modules.build(net, rngs=nnx.Rngs(0))
    first = np.concatenate([np.asarray(b.branch[0].kernel[...]).ravel() for b in model.blocks])
    assert np.var(first) == pytest.approx(2 / 64 / 8, rel=5 * math.sqrt(2 / first.size))


def test_fixup_scalars_sit_where_fixup_puts_them(fixup_model):
    """Non-default scalar biases, multipliers and a non-zero last layer (as after training):
    the module equals the re-derivation with c_lin before every linear map, c_act before every
    activation and the multiplier on the branch output."""
    net, model = fixup_model
    model = nnx.clone(model)
    for i, block in enumerate(model.blocks[1:]):
        k = block.branch[-1].kernel
        k[...] = 0.2 * jax.random.normal(jax.random.key(10 + i), k[...].shape)
    perturb(model, jax.random.key(11), scale=0.5)
    x = x_in(8, 12)
    y, inter = run(model, x)
    P = params_of(model)
    want, _ = np_forward(net, P, x)
    np.testing.assert_allclose(y, want, **TOL)
    # the scalars matter: dropping any one kind changes the output by far more than TOL
    for drop in ("bias_linear", "bias_act", "branch_multiplier"):
        Q = {k: (np.ones_like(v) if drop == "branch_multiplier" else np.zeros_like(v))
             if k.endswith(drop) else v for k, v in P.items()}
        assert np.max(np.abs(np_forward(net, Q, x)[0] - want)) > 1e-2, drop


def test_fixup_scalar_gradients_are_nonzero_and_match_finite_differences(fixup_model):
    """d sum(r * y) / d c for every Fixup scalar c equals a float64 central difference of the
    re-derivation (step 1e-5: truncation ~1e-10, a ReLU kink is crossed with probability
    ~1e-5 per unit), and is non-zero once the last branch layer is (after a step of training).
    At Fixup's init the branch is 0, so the multiplier's gradient is exactly 0 there."""
    net, model = fixup_model
    x = x_in(8, 12)
    r = np.asarray(jax.random.normal(jax.random.key(5), (8, 3)), np.float64)

    def grads_of(m):
        def loss(m):
            with jax.default_matmul_precision("highest"):
                return jnp.sum(jnp.asarray(r, jnp.float32) * m(jnp.asarray(x, jnp.float32)))
        return params_of_tree(nnx.grad(loss)(m))

    g0 = grads_of(model)
    for i in range(1, net.depth):
        assert g0[f"blocks/{i}/branch_multiplier"] == 0.0
        assert np.any(g0[f"blocks/{i}/branch/1/kernel"] != 0.0)

    model = nnx.clone(model)
    for i, block in enumerate(model.blocks[1:]):
        k = block.branch[-1].kernel
        k[...] = 0.2 * jax.random.normal(jax.random.key(20 + i), k[...].shape)
    perturb(model, jax.random.key(21), scale=0.2)
    g, P = grads_of(model), params_of(model)
    scalars = [k for k in P if k.endswith(("bias_linear", "bias_act", "branch_multiplier"))]
    assert len(scalars) == 5 * (net.depth - 1)
    eps = 1e-5
    for name in scalars:
        up, down = dict(P), dict(P)
        up[name], down[name] = P[name] + eps, P[name] - eps
        fd = (np.sum(r * np_forward(net, up, x)[0])
              - np.sum(r * np_forward(net, down, x)[0])) / (2 * eps)
        assert abs(g[name]) > 1e-3, name
        # float32 backward through ~8 layers: ~1e-5 relative of the summed terms
        assert g[name] == pytest.approx(fd, rel=2e-3, abs=1e-4), name


def params_of_tree(state):
    leaves = jax.tree_util.tree_leaves_with_path(state)
    return {_names(p): np.asarray(v, np.float64) for p, v in leaves}


# -- learning-rate multipliers -----------------------------------------------------------------


def test_lr_multipliers_cover_the_new_parameters():
    """A branch layer's own parameters (kernel, bias, WS gain, Fixup biases) follow its
    lr_multiplier; its norm, block scalars (alpha, Fixup's multiplier) and the readout get 1."""
    net = fixup(Network(8, (Repeat(Residual(
        (Dense(8, "he_normal", "relu", preactivation=True, norm="layer",
               weight_standardization=True, lr_multiplier=0.25),
         Dense(8, "he_normal", "relu", preactivation=True, lr_multiplier=3.0)),
        alpha=0.0, learnable=True), 2),)))
    model = modules.build(net, out_features=2, rngs=nnx.Rngs(0))
    mult = params_of_tree(model.lr_multipliers())
    assert set(mult) == set(params_of(model))
    for name, m in mult.items():
        parts = name.split("/")
        if parts[0] == "blocks" and parts[2] == "branch" and parts[4] != "norm":
            assert m == (0.25 if parts[3] == "0" else 3.0), name
        else:
            assert m == 1.0, name
    assert {n.split("/")[-1] for n in mult} >= {"gain", "bias_linear", "bias_act",
                                                "branch_multiplier", "alpha"}


def test_residual_block_needs_beta_exactly_when_expected():
    block = Residual((Dense(4),), beta="expected")
    kw = dict(bn_kwargs={}, param_dtype=jnp.float32, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs beta=sqrt"):
        modules.ResidualBlock(block, 4, 1.0, **kw)
    with pytest.raises(ValueError, match="needs no beta, got beta=2.0"):
        modules.ResidualBlock(Residual((Dense(4),)), 4, 1.0, beta=2.0, **kw)
    with pytest.raises(ValueError, match="beta"):
        modules.ResidualBlock(block, 4, 1.0, beta=float("nan"), **kw)


# -- training a fixup() net through initjax.training --------------------------------------------


def test_a_fixup_network_trains_and_its_scalars_move():
    """A stem and 3 Fixup blocks (preactivation ReLU branches) on digits, SGD, 40 steps: the loss
    falls, and every Fixup scalar has moved off its initial value. A branch layer has
    lr_multiplier 0.5, so the trainer walks lr_multipliers() over the new parameters."""
    res = Residual((Dense(32, "he_normal", "relu", preactivation=True, lr_multiplier=0.5),
                    Dense(32, "he_normal", "relu", preactivation=True)))
    net = fixup(Network(64, (Repeat(Dense(32, "he_normal", "relu"), 1), Repeat(res, 3))))
    cfg = TrainConfig(label="fixup", model="network", network=net, optimizer="sgd",
                      learning_rate=0.1, steps=40, record_every=20, batch_size=32,
                      probe_size=64, train_eval_size=128)
    result = training.compare(cfg, data.digits(), seeds=1, progress=False)
    rec = result["fixup"]
    assert np.all(np.isfinite(rec.train_loss))
    assert rec.train_loss[0, -1] < 0.7 * rec.train_loss[0, 0], rec.train_loss
    final = params_of_tree(nnx.state(result.final_models[0], nnx.Param))
    scalars = {k: v for k, v in final.items()
               if k.endswith(("bias_linear", "bias_act", "branch_multiplier"))}
    assert len(scalars) == 3 * 5
    for name, v in scalars.items():
        start = 1.0 if name.endswith("branch_multiplier") else 0.0
        assert np.all(v != start), name
