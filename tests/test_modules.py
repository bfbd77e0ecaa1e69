"""Tests of initjax.modules against hand computations in numpy, never against its own output."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from initjax import modules
from initjax._keys import as_key
from initjax.modules import MLP, BatchNorm, PlainCNN, PReLU

EPS = 1e-5


@pytest.fixture(autouse=True)
def _float32_exact_matmuls():
    """initjax.modules are Flax layers: they run at their caller's matmul precision (initjax's
    own entry points set "highest" themselves). Against float64 numpy at rtol 1e-5 these tests
    call them at "highest": a GPU's default TF32-class matmuls are ~1e-3 off."""
    with jax.default_matmul_precision("highest"):
        yield


def _np(a):
    return np.asarray(a, dtype=np.float64)


def _rand(seed, shape, loc=0.0, scale=1.0):
    return (loc + scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def _np_bn(x, mean, var, eps=EPS, gamma=None, beta=None):
    y = (x - mean) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def _relu(x):
    return np.maximum(x, 0.0)


# ------------------------------------------------------------------------------------------------
# BatchNorm
# ------------------------------------------------------------------------------------------------


def test_batchnorm_training_output_is_algorithm_1():
    x = _rand(0, (8, 5), loc=3.0, scale=2.0)
    bn = BatchNorm(5)
    gamma = _rand(1, (5,))
    beta = _rand(2, (5,))
    bn.scale[...] = jnp.asarray(gamma)
    bn.bias[...] = jnp.asarray(beta)
    y = bn(jnp.asarray(x))
    xd = _np(x)
    want = _np_bn(xd, xd.mean(0), xd.var(0), gamma=gamma, beta=beta)  # biased batch variance
    np.testing.assert_allclose(_np(y), want, rtol=1e-5, atol=1e-5)


def test_batchnorm_reduces_over_all_axes_but_features():
    x = _rand(3, (2, 3, 3, 4), loc=-1.0)
    y = BatchNorm(4)(jnp.asarray(x))
    xd = _np(x)
    want = _np_bn(xd, xd.mean((0, 1, 2)), xd.var((0, 1, 2)))
    np.testing.assert_allclose(_np(y), want, rtol=1e-5, atol=1e-5)
    # feature axis 1 (NCHW layout)
    xc = _rand(4, (3, 4, 2, 2), loc=1.0)
    yc = BatchNorm(4, axis=1)(jnp.asarray(xc))
    xd = _np(xc)
    want = _np_bn(xd, xd.mean((0, 2, 3), keepdims=True), xd.var((0, 2, 3), keepdims=True))
    np.testing.assert_allclose(_np(yc), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "convention, momentum",
    [("flax", 0.99), ("pytorch", 0.1), ("flax", 0.9)],
)
@pytest.mark.parametrize("running_var", ["biased", "unbiased"])
def test_batchnorm_running_averages_follow_the_recursion(convention, momentum, running_var):
    m = 6
    bn = BatchNorm(3, momentum=momentum, momentum_convention=convention, running_var=running_var)
    keep = momentum if convention == "flax" else 1.0 - momentum
    ddof = 1 if running_var == "unbiased" else 0
    ra_mean, ra_var = np.zeros(3), np.ones(3)
    for step in range(3):
        xb = _rand(10 + step, (m, 3), loc=2.0 * step + 1.0, scale=1.5)
        bn(jnp.asarray(xb))
        xd = _np(xb)
        ra_mean = keep * ra_mean + (1 - keep) * xd.mean(0)
        ra_var = keep * ra_var + (1 - keep) * xd.var(0, ddof=ddof)
        if step in (0, 2):  # after 1 and after 3 updates
            np.testing.assert_allclose(_np(bn.mean[...]), ra_mean, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(_np(bn.var[...]), ra_var, rtol=1e-5, atol=1e-6)


def test_unbiased_factor_is_m_over_m_minus_1_with_spatial_positions():
    # m counts batch x spatial positions: 2 x 2 x 2 = 8 values per channel.
    x = _rand(20, (2, 2, 2, 3), scale=2.0)
    bn = BatchNorm.pytorch_convention(3)
    bn(jnp.asarray(x))
    v = _np(x).reshape(-1, 3).var(0) * 8 / 7
    np.testing.assert_allclose(_np(bn.var[...]), 0.9 * 1.0 + 0.1 * v, rtol=1e-5)


def test_batchnorm_eval_mode_uses_running_averages():
    bn = BatchNorm.pytorch_convention(4)
    for s in range(3):
        bn(jnp.asarray(_rand(30 + s, (5, 4), loc=1.0, scale=3.0)))
    ra_mean, ra_var = _np(bn.mean[...]), _np(bn.var[...])
    x = _rand(40, (7, 4))
    want = _np_bn(_np(x), ra_mean, ra_var)

    bn.eval()
    assert bn.use_running_average is True
    np.testing.assert_allclose(_np(bn(jnp.asarray(x))), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(_np(bn.mean[...]), ra_mean)  # unchanged in eval mode
    np.testing.assert_array_equal(_np(bn.var[...]), ra_var)

    bn.train()
    assert bn.use_running_average is False
    # the call argument overrides the attribute, and does not update the statistics
    np.testing.assert_allclose(
        _np(bn(jnp.asarray(x), use_running_average=True)), want, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(_np(bn.mean[...]), ra_mean)
    view = nnx.view(bn, use_running_average=True)
    np.testing.assert_allclose(_np(view(jnp.asarray(x))), want, rtol=1e-5, atol=1e-6)
    # back in training mode it normalizes with the batch's own statistics
    xd = _np(x)
    np.testing.assert_allclose(
        _np(bn(jnp.asarray(x))), _np_bn(xd, xd.mean(0), xd.var(0)), rtol=1e-5, atol=1e-5
    )


def test_flax_biased_convention_matches_nnx_batchnorm():
    ours = BatchNorm(4, momentum=0.9, momentum_convention="flax", running_var="biased")
    ref = nnx.BatchNorm(4, momentum=0.9, epsilon=EPS, rngs=nnx.Rngs(0))
    for s in range(4):
        x = jnp.asarray(_rand(50 + s, (6, 4), loc=0.5 * s, scale=1.0 + s))
        np.testing.assert_allclose(_np(ours(x)), _np(ref(x)), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(_np(ours.mean[...]), _np(ref.mean[...]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_np(ours.var[...]), _np(ref.var[...]), rtol=1e-5, atol=1e-6)
    x = jnp.asarray(_rand(60, (3, 4)))
    np.testing.assert_allclose(
        _np(ours(x, use_running_average=True)), _np(ref(x, use_running_average=True)), rtol=1e-5
    )


def test_batchnorm_presets():
    p = BatchNorm.pytorch_convention(2, epsilon=1e-3)
    assert (p.momentum, p.momentum_convention, p.running_var, p.epsilon) == (
        0.1, "pytorch", "unbiased", 1e-3)
    assert p.decay == pytest.approx(0.9)
    f = BatchNorm.flax_convention(2)
    assert (f.momentum, f.momentum_convention, f.running_var) == (0.99, "flax", "biased")
    assert f.decay == pytest.approx(0.99)


def test_batchnorm_in_jit_updates_like_eager():
    x = jnp.asarray(_rand(70, (5, 3), loc=2.0))
    eager, jitted = BatchNorm.pytorch_convention(3), BatchNorm.pytorch_convention(3)
    eager(x)
    nnx.jit(lambda m, xx: m(xx))(jitted, x)
    np.testing.assert_allclose(_np(jitted.mean[...]), _np(eager.mean[...]), rtol=1e-6)
    np.testing.assert_allclose(_np(jitted.var[...]), _np(eager.var[...]), rtol=1e-6)


def test_batchnorm_no_scale_no_bias():
    bn = BatchNorm(3, use_scale=False, use_bias=False)
    assert bn.scale is None and bn.bias is None
    assert set(nnx.state(bn, nnx.Param).flat_state()) == set()


@pytest.mark.parametrize("momentum", [0.0, 1.0, -0.1, 1.5])
def test_batchnorm_rejects_momentum_outside_open_interval(momentum):
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(3, momentum=momentum)


def test_batchnorm_errors():
    with pytest.raises(ValueError, match="'keras'.*'flax', 'pytorch'|'flax', 'pytorch'.*'keras'"):
        BatchNorm(3, momentum_convention="keras")
    with pytest.raises(ValueError, match="'sample'"):
        BatchNorm(3, running_var="sample")
    with pytest.raises(ValueError, match="num_features"):
        BatchNorm(0)
    with pytest.raises(ValueError, match="epsilon"):
        BatchNorm(3, epsilon=-1.0)
    with pytest.raises(ValueError, match="3 features"):
        BatchNorm(3)(jnp.ones((4, 5)))
    bn = BatchNorm.pytorch_convention(3)
    one = jnp.asarray(_rand(80, (1, 3)))
    with pytest.raises(ValueError, match="m = 1.*unbiased|unbiased.*m = 1"):
        bn(one)
    # a single example is fine when nothing divides by m - 1
    bn(one, use_running_average=True)
    BatchNorm(3, running_var="biased")(one)


# ------------------------------------------------------------------------------------------------
# PReLU
# ------------------------------------------------------------------------------------------------


def test_prelu_init_and_forward():
    p = PReLU(4)
    np.testing.assert_array_equal(_np(p.slope[...]), np.full(4, 0.25))
    assert PReLU(3, init_slope=0.1).slope[...].shape == (3,)
    slopes = np.array([0.25, -0.5, 0.0, 2.0], np.float32)
    p.slope[...] = jnp.asarray(slopes)
    x = _rand(90, (3, 2, 4))
    want = np.where(x >= 0, x, slopes * x)
    np.testing.assert_allclose(_np(p(jnp.asarray(x))), want, rtol=1e-6)


def test_prelu_slope_gradient_is_sum_of_x_g_over_negative_x():
    p = PReLU(3, init_slope=0.3)
    x = _rand(91, (6, 3))
    g = _rand(92, (6, 3))

    def loss(module):
        return jnp.sum(jnp.asarray(g) * module(jnp.asarray(x)))

    grads = nnx.grad(loss)(p)
    want = np.sum(np.where(x < 0, _np(x) * _np(g), 0.0), axis=0)
    np.testing.assert_allclose(_np(grads["slope"][...]), want, rtol=1e-5, atol=1e-6)


def test_prelu_errors():
    with pytest.raises(ValueError, match="num_features"):
        PReLU(0)
    with pytest.raises(ValueError, match="4 channels"):
        PReLU(4)(jnp.ones((2, 3)))


# ------------------------------------------------------------------------------------------------
# MLP
# ------------------------------------------------------------------------------------------------


def _dense(layer):
    return _np(layer.kernel[...]), _np(layer.bias[...])


def test_mlp_shapes_and_intermediates():
    net = MLP(6, (8, 8), 3, rngs=nnx.Rngs(0))
    x = jnp.asarray(_rand(100, (5, 6)))
    y, inter = net.forward_with_intermediates(x)
    assert y.shape == (5, 3)
    assert set(inter) == {"preact", "act", "hidden"}
    for key in inter:
        assert [t.shape for t in inter[key]] == [(5, 8), (5, 8)]
    y2, inter2 = net(x, return_intermediates=True)
    np.testing.assert_array_equal(_np(y2), _np(y))
    np.testing.assert_array_equal(_np(net(x)), _np(y))
    assert [layer.kernel[...].shape for layer in net.layers] == [(6, 8), (8, 8)]
    assert net.readout.kernel[...].shape == (8, 3)


def test_mlp_forward_matches_numpy_chain():
    net = MLP(6, (8, 8), 3, activation="tanh", bias_init=jax.nn.initializers.normal(1.0),
              rngs=nnx.Rngs(1))
    x = _rand(101, (3, 6))
    h = _np(x)
    y, inter = net.forward_with_intermediates(jnp.asarray(x))
    for k in range(2):
        w, b = _dense(net.layers[k])
        z = h @ w + b
        np.testing.assert_allclose(_np(inter["preact"][k]), z, rtol=1e-5, atol=1e-5)
        h = np.tanh(z)
        np.testing.assert_allclose(_np(inter["act"][k]), h, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(_np(inter["hidden"][k]), h, rtol=1e-5, atol=1e-5)
    w, b = _dense(net.readout)
    np.testing.assert_allclose(_np(y), h @ w + b, rtol=1e-5, atol=1e-5)


def test_mlp_without_readout_returns_last_hidden():
    net = MLP(6, (8,), rngs=nnx.Rngs(2))
    y, inter = net.forward_with_intermediates(jnp.asarray(_rand(102, (3, 6))))
    assert net.readout is None and y.shape == (3, 8)
    np.testing.assert_array_equal(_np(y), _np(inter["hidden"][-1]))


def test_mlp_batchnorm_before_activation_order():
    net = MLP(6, (8, 8), activation="relu", norm="batch", norm_placement="before",
              bias_init=jax.nn.initializers.normal(1.0), rngs=nnx.Rngs(3))
    x = _rand(103, (8, 6))
    _, inter = net.forward_with_intermediates(jnp.asarray(x))
    assert len(inter["postnorm"]) == 2
    h = _np(x)
    for k in range(2):
        w, b = _dense(net.layers[k])
        z = h @ w + b  # the pre-norm tensor is the plain linear output
        np.testing.assert_allclose(_np(inter["preact"][k]), z, rtol=1e-4, atol=1e-5)
        n = _np_bn(z, z.mean(0), z.var(0))
        np.testing.assert_allclose(_np(inter["postnorm"][k]), n, rtol=1e-4, atol=1e-4)
        h = _relu(n)
        np.testing.assert_allclose(_np(inter["act"][k]), h, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(_np(inter["hidden"][k]), h, rtol=1e-4, atol=1e-4)


def test_mlp_batchnorm_after_activation_order():
    net = MLP(6, (8,), activation="relu", norm="batch", norm_placement="after",
              rngs=nnx.Rngs(4))
    x = _rand(104, (8, 6))
    _, inter = net.forward_with_intermediates(jnp.asarray(x))
    w, b = _dense(net.layers[0])
    a = _relu(_np(x) @ w + b)
    np.testing.assert_allclose(_np(inter["act"][0]), a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_np(inter["postnorm"][0]), _np_bn(a, a.mean(0), a.var(0)),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(_np(inter["hidden"][0]), _np(inter["postnorm"][0]))


def test_mlp_layernorm():
    net = MLP(6, (8,), activation="identity", norm="layer", rngs=nnx.Rngs(5))
    x = _rand(105, (3, 6))
    _, inter = net.forward_with_intermediates(jnp.asarray(x))
    z = _np(inter["preact"][0])
    want = (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(_np(inter["postnorm"][0]), want, rtol=1e-4, atol=1e-4)


def test_mlp_train_eval_switch_reaches_batchnorm():
    net = MLP(6, (8, 8), 3, norm="batch", batchnorm_kwargs={"momentum": 0.1,
              "momentum_convention": "pytorch", "running_var": "unbiased"}, rngs=nnx.Rngs(6))
    assert all(bn.momentum == 0.1 and bn.running_var == "unbiased" for bn in net.norms)
    x = jnp.asarray(_rand(106, (6, 6)))
    net(x)  # training mode: running stats move from (0, 1)
    z = _np(net.forward_with_intermediates(x, use_running_average=True)[1]["preact"][0])
    ra_mean, ra_var = _np(net.norms[0].mean[...]), _np(net.norms[0].var[...])
    assert not np.allclose(ra_mean, 0.0)
    net.eval()
    assert all(bn.use_running_average for bn in net.norms)
    _, inter = net.forward_with_intermediates(x)
    np.testing.assert_allclose(_np(inter["postnorm"][0]), _np_bn(z, ra_mean, ra_var),
                               rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(_np(net.norms[0].mean[...]), ra_mean)
    net.train()
    assert not any(bn.use_running_average for bn in net.norms)


def test_mlp_zero_kernel_leaves_only_biases():
    net = MLP(6, (8, 8), 3, activation="tanh", kernel_init=jax.nn.initializers.zeros,
              bias_init=jax.nn.initializers.normal(1.0), rngs=nnx.Rngs(7))
    x = jnp.asarray(_rand(107, (6, 6)))
    y, inter = net.forward_with_intermediates(x)
    b0 = _np(net.layers[0].bias[...])
    np.testing.assert_array_equal(_np(inter["preact"][0]), np.broadcast_to(b0, (6, 8)))
    np.testing.assert_array_equal(_np(y), np.broadcast_to(_np(net.readout.bias[...]), (6, 3)))


def test_mlp_default_biases_are_zero_and_kernel_init_is_used():
    net = MLP(256, (512,), rngs=nnx.Rngs(8))  # default lecun_normal: std sqrt(1/256)
    assert np.all(_np(net.layers[0].bias[...]) == 0.0)
    w = _np(net.layers[0].kernel[...])
    # std of a sample std ~ std / sqrt(2 n); n = 131072 -> 0.2%; 3% leaves room for the truncation
    assert w.std() == pytest.approx(np.sqrt(1 / 256), rel=0.03)
    he = MLP(256, (512,), rngs=nnx.Rngs(8), kernel_init="he_normal")
    assert _np(he.layers[0].kernel[...]).std() == pytest.approx(np.sqrt(2 / 256), rel=0.03)


def test_mlp_residual_adds_the_input_where_shapes_match():
    net = MLP(8, (8, 8, 3), residual=True, activation="relu",
              bias_init=jax.nn.initializers.normal(1.0), rngs=nnx.Rngs(9))
    assert net.skips == (True, True, False)
    x = _rand(108, (4, 8))
    _, inter = net.forward_with_intermediates(jnp.asarray(x))
    h = _np(x)
    for k in range(3):
        w, b = _dense(net.layers[k])
        a = _relu(h @ w + b)
        np.testing.assert_allclose(_np(inter["act"][k]), a, rtol=1e-5, atol=1e-5)
        h = h + a if k < 2 else a
        np.testing.assert_allclose(_np(inter["hidden"][k]), h, rtol=1e-5, atol=1e-5)


def test_mlp_activation_specs_and_learned_prelu():
    x = _rand(109, (4, 6))
    leaky = MLP(6, (8,), activation="leaky_relu:negative_slope=0.1", rngs=nnx.Rngs(10))
    _, inter = leaky.forward_with_intermediates(jnp.asarray(x))
    z = _np(inter["preact"][0])
    np.testing.assert_allclose(_np(inter["act"][0]), np.where(z >= 0, z, 0.1 * z), rtol=1e-6)

    net = MLP(6, (8, 8), activation="prelu_learned", rngs=nnx.Rngs(10))
    assert net.activation is None and len(net.prelus) == 2
    np.testing.assert_array_equal(_np(net.prelus[1].slope[...]), np.full(8, 0.25))
    _, inter = net.forward_with_intermediates(jnp.asarray(x))
    z = _np(inter["preact"][1])
    np.testing.assert_allclose(_np(inter["act"][1]), np.where(z >= 0, z, 0.25 * z), rtol=1e-6)
    custom = MLP(6, (8,), activation="prelu_learned:init_slope=0.1", rngs=nnx.Rngs(10))
    np.testing.assert_array_equal(_np(custom.prelus[0].slope[...]), np.full(8, 0.1, np.float32))
    # the slopes are parameters: they get gradients
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.asarray(x))))(net)
    assert grads["prelus"][0]["slope"][...].shape == (8,)


def test_mlp_jit_matches_eager():
    net = MLP(6, (8, 8), 3, norm="batch", rngs=nnx.Rngs(11))
    x = jnp.asarray(_rand(110, (5, 6)))
    eager = _np(net(x, use_running_average=True))
    jitted = nnx.jit(lambda m, xx: m(xx, use_running_average=True))(net, x)
    np.testing.assert_allclose(_np(jitted), eager, rtol=1e-5, atol=1e-6)


def test_mlp_errors():
    rngs = nnx.Rngs(0)
    with pytest.raises(ValueError, match="widths must not be empty"):
        MLP(3, (), rngs=rngs)
    with pytest.raises(ValueError, match=r"widths\[1\]"):
        MLP(3, (4, 0), rngs=rngs)
    with pytest.raises(TypeError, match="widths"):
        MLP(3, 4, rngs=rngs)
    with pytest.raises(ValueError, match="in_features"):
        MLP(0, (4,), rngs=rngs)
    with pytest.raises(ValueError, match="'group'.*'batch', 'layer'|'batch', 'layer'.*'group'"):
        MLP(3, (4,), norm="group", rngs=rngs)
    with pytest.raises(ValueError, match="'middle'.*'before', 'after'|'before', 'after'.*'middle'"):
        MLP(3, (4,), norm="batch", norm_placement="middle", rngs=rngs)
    with pytest.raises(ValueError, match="'reluu'.*prelu_learned"):
        MLP(3, (4,), activation="reluu", rngs=rngs)
    with pytest.raises(ValueError, match="init_slop"):
        MLP(3, (4,), activation="prelu_learned:init_slop=0.1", rngs=rngs)
    with pytest.raises(ValueError, match="batchnorm_kwargs"):
        MLP(3, (4,), batchnorm_kwargs={"momentum": 0.1}, rngs=rngs)
    with pytest.raises(ValueError, match="momentum"):
        MLP(6, (8,), norm="batch", batchnorm_kwargs={"momentum": 2.0}, rngs=rngs)
    with pytest.raises(ValueError, match=r"\(\.\.\., 6\)"):
        MLP(6, (8,), rngs=rngs)(jnp.ones((2, 5)))


def test_init_spec_strings_and_unknown_names():
    net = MLP(256, (512,), kernel_init="normal:stddev=0.01", bias_init="zeros", rngs=nnx.Rngs(0))
    assert _np(net.layers[0].kernel[...]).std() == pytest.approx(0.01, rel=0.03)
    fan_out = MLP(256, (512,), kernel_init="he_normal:mode=fan_out", rngs=nnx.Rngs(0))
    assert _np(fan_out.layers[0].kernel[...]).std() == pytest.approx(np.sqrt(2 / 512), rel=0.03)
    with pytest.raises(ValueError, match="'no_such_init'"):
        MLP(3, (4,), kernel_init="no_such_init", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="'nope'"):
        PlainCNN(3, 4, 1, 2, bias_init="nope", rngs=nnx.Rngs(0))


# ------------------------------------------------------------------------------------------------
# PlainCNN
# ------------------------------------------------------------------------------------------------


def _np_conv_same(x, w, b):
    """3x3 stride-1 SAME convolution, NHWC x, HWIO w: a direct sum over the window."""
    n, hgt, wid, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((n, hgt, wid, w.shape[-1]))
    for i in range(3):
        for j in range(3):
            out += np.einsum("nhwc,co->nhwo", xp[:, i:i + hgt, j:j + wid, :], w[i, j])
    return out + b


def test_cnn_shapes_kernels_and_downsampling():
    net = PlainCNN(3, (4, 4, 8), depth=3, num_classes=5, downsample_at=(1,), rngs=nnx.Rngs(0))
    assert [net.layers[i].kernel[...].shape for i in range(3)] == [
        (3, 3, 3, 4), (3, 3, 4, 4), (3, 3, 4, 8)]
    assert net.classifier.kernel[...].shape == (8, 5)
    x = jnp.asarray(_rand(200, (2, 8, 8, 3)))
    y, inter = net.forward_with_intermediates(x)
    assert y.shape == (2, 5)
    assert [t.shape for t in inter["preact"]] == [(2, 8, 8, 4), (2, 4, 4, 4), (2, 4, 4, 8)]
    assert [t.shape for t in inter["act"]] == [(2, 8, 8, 4), (2, 4, 4, 4), (2, 4, 4, 8)]
    assert "postnorm" not in inter
    np.testing.assert_array_equal(_np(net(x)), _np(y))


def test_cnn_matches_numpy_convolutions():
    net = PlainCNN(3, (4, 8), depth=2, num_classes=5, downsample_at=(1,),
                   bias_init=jax.nn.initializers.normal(1.0), rngs=nnx.Rngs(1))
    x = _rand(201, (2, 6, 6, 3))
    y, inter = net.forward_with_intermediates(jnp.asarray(x))
    w0, b0 = _np(net.layers[0].kernel[...]), _np(net.layers[0].bias[...])
    z0 = _np_conv_same(_np(x), w0, b0)
    np.testing.assert_allclose(_np(inter["preact"][0]), z0, rtol=1e-4, atol=1e-4)
    a0 = _relu(z0)
    w1, b1 = _np(net.layers[1].kernel[...]), _np(net.layers[1].bias[...])
    # SAME with stride 2 on an even size pads 0 before and 1 after: output j is centred on input
    # 2j + 1 of the stride-1 SAME convolution.
    z1 = _np_conv_same(a0, w1, b1)[:, 1::2, 1::2, :]
    np.testing.assert_allclose(_np(inter["preact"][1]), z1, rtol=1e-4, atol=1e-4)
    pooled = _relu(z1).mean(axis=(1, 2))
    wc, bc = _dense(net.classifier)
    np.testing.assert_allclose(_np(y), pooled @ wc + bc, rtol=1e-4, atol=1e-4)


def test_cnn_batchnorm_and_he_init():
    net = PlainCNN(3, (4, 8), depth=2, num_classes=5, norm="batch", rngs=nnx.Rngs(2))
    unit = PlainCNN(3, (4, 8), depth=2, num_classes=5, kernel_init="normal:stddev=1.0",
                    rngs=nnx.Rngs(2))
    # Same key, same draw: he_normal of a (3, 3, in, out) kernel is sqrt(2 / (9 in)) N(0, 1).
    for layer, ref, c_in in zip(net.layers, unit.layers, (3, 4)):
        np.testing.assert_allclose(_np(layer.kernel[...]),
                                   np.sqrt(2 / (9 * c_in)) * _np(ref.kernel[...]), rtol=1e-5)
    x = jnp.asarray(_rand(202, (2, 4, 4, 3)))
    _, inter = net.forward_with_intermediates(x)
    z = _np(inter["preact"][0])
    want = _np_bn(z, z.mean((0, 1, 2)), z.var((0, 1, 2)))
    np.testing.assert_allclose(_np(inter["postnorm"][0]), want, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(_np(inter["act"][0]), _relu(want), rtol=1e-3, atol=1e-4)


def test_cnn_errors():
    rngs = nnx.Rngs(0)
    with pytest.raises(ValueError, match="depth"):
        PlainCNN(3, 4, 0, 2, rngs=rngs)
    with pytest.raises(ValueError, match="channels has 2 entries but depth is 3"):
        PlainCNN(3, (4, 4), 3, 2, rngs=rngs)
    with pytest.raises(ValueError, match="downsample_at"):
        PlainCNN(3, 4, 2, 2, downsample_at=(2,), rngs=rngs)
    with pytest.raises(ValueError, match="'layer'"):
        PlainCNN(3, 4, 2, 2, norm="layer", rngs=rngs)
    with pytest.raises(ValueError, match="num_classes"):
        PlainCNN(3, 4, 2, 0, rngs=rngs)
    with pytest.raises(ValueError, match="NHWC"):
        PlainCNN(3, (4, 8), 2, 5, rngs=rngs)(jnp.ones((2, 4, 3)))


# ------------------------------------------------------------------------------------------------
# Ensembles
# ------------------------------------------------------------------------------------------------


def _assert_same_state(a, b):
    sa, sb = nnx.state(a), nnx.state(b)
    la, lb = jax.tree.leaves(sa), jax.tree.leaves(sb)
    assert jax.tree.structure(sa) == jax.tree.structure(sb)
    for u, v in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


def test_ensemble_members_equal_solo_models():
    seeds = [0, 5, 7]
    make = functools.partial(MLP, 6, (8,), 3, activation="tanh")
    ens = modules.create_ensemble(make, seeds)
    assert ens.layers[0].kernel[...].shape == (3, 6, 8)
    x = jnp.asarray(_rand(300, (6, 6)))
    seq = modules.apply_ensemble(ens, x, sequential=True)
    vec = modules.apply_ensemble(ens, x)
    assert seq.shape == vec.shape == (3, 6, 3)
    for i, s in enumerate(seeds):
        solo = make(rngs=nnx.Rngs(as_key(s)))
        _assert_same_state(modules.ensemble_member(ens, i), solo)
        np.testing.assert_array_equal(_np(seq[i]), _np(solo(x)))  # bit for bit
        # vmap batches the matmuls, which may round differently in the last bit
        np.testing.assert_allclose(_np(vec[i]), _np(solo(x)), rtol=1e-5, atol=1e-6)


def test_ensemble_member_does_not_depend_on_ensemble_size():
    make = functools.partial(MLP, 6, (8,), 3, kernel_init="he_normal")
    big = modules.create_ensemble(make, jax.random.key(42), num=3)
    small = modules.create_ensemble(make, jax.random.key(42), num=2)
    for i in range(2):
        _assert_same_state(modules.ensemble_member(big, i), modules.ensemble_member(small, i))
    solo = make(rngs=nnx.Rngs(jax.random.fold_in(jax.random.key(42), 2)))
    _assert_same_state(modules.ensemble_member(big, 2), solo)
    # the one key rule: an int s is jax.random.key(s, impl="philox2x32"), not threefry
    philox = modules.create_ensemble(make, jax.random.key(42, impl="philox2x32"), num=2)
    _assert_same_state(modules.create_ensemble(make, 42, num=2), philox)
    assert not np.array_equal(_np(philox.layers[0].kernel[...]), _np(small.layers[0].kernel[...]))
    # a raw uint32[2] key is the threefry key that made it
    raw = modules.create_ensemble(make, jax.random.PRNGKey(42), num=2)
    _assert_same_state(raw, small)


def test_ensemble_per_seed_inputs_intermediates_and_batchnorm_updates():
    make = functools.partial(MLP, 6, (8,), 3, norm="batch",
                             batchnorm_kwargs={"momentum": 0.1, "momentum_convention": "pytorch",
                                               "running_var": "unbiased"})
    ens = modules.create_ensemble(make, [0, 5])
    xs = jnp.asarray(_rand(301, (2, 5, 6)))
    out, inter = modules.apply_ensemble(ens, xs, per_seed_inputs=True,
                                        method="forward_with_intermediates", sequential=True)
    assert out.shape == (2, 5, 3) and inter["postnorm"][0].shape == (2, 5, 8)
    for i, s in enumerate([0, 5]):
        solo = make(rngs=nnx.Rngs(as_key(s)))
        solo_out = solo(xs[i])  # training mode: updates solo's running stats
        np.testing.assert_array_equal(_np(out[i]), _np(solo_out))
        _assert_same_state(modules.ensemble_member(ens, i), solo)
    # vmapped training step also writes back the per-member running statistics
    ens2 = modules.create_ensemble(make, [0, 5])
    modules.apply_ensemble(ens2, xs, per_seed_inputs=True)
    z = _np(inter["preact"][0][1])
    want = 0.9 * 0.0 + 0.1 * z.mean(0)
    np.testing.assert_allclose(_np(ens2.norms[0].mean[...][1]), want, rtol=1e-5, atol=1e-6)
    want_var = 0.9 * 1.0 + 0.1 * z.var(0, ddof=1)
    np.testing.assert_allclose(_np(ens2.norms[0].var[...][1]), want_var, rtol=1e-5, atol=1e-6)


def test_ensemble_errors():
    make = functools.partial(MLP, 6, (8,), 3)
    with pytest.raises(ValueError, match="num"):
        modules.create_ensemble(make, 0)
    with pytest.raises(ValueError, match="num=3 but 2"):
        modules.ensemble_keys([1, 2], num=3)
    with pytest.raises(ValueError, match="num"):
        modules.ensemble_keys(jax.random.key(0), num=0)
    with pytest.raises(ValueError, match="empty"):
        modules.ensemble_keys([])
    with pytest.raises(ValueError, match="seed must be >= 0"):
        modules.ensemble_keys([1, -2])
    with pytest.raises(ValueError, match=r"seeds_or_key as an int seed must be in \[0, 2\*\*63\)"):
        modules.ensemble_keys(-1, num=2)
    with pytest.raises(TypeError, match="seeds_or_key must be"):
        modules.ensemble_keys("seed", num=2)
    with pytest.raises(TypeError, match="seeds_or_key must be"):
        modules.ensemble_keys(1.5, num=2)
    with pytest.raises(TypeError, match="callable"):
        modules.create_ensemble("MLP", [0])
    ens = modules.create_ensemble(make, [0, 5])
    with pytest.raises(ValueError, match="out of range"):
        modules.ensemble_member(ens, 2)
    with pytest.raises(ValueError, match="'forward'"):
        modules.apply_ensemble(ens, jnp.ones((2, 6)), method="forward")


def test_none_and_the_string_none_both_mean_no_norm():
    """One spelling across initjax: norm="none" (as in NetworkConfig and Network) or None."""
    a = MLP(4, (8,), 2, norm="none", rngs=nnx.Rngs(0))
    b = MLP(4, (8,), 2, norm=None, rngs=nnx.Rngs(0))
    assert a.norm is None and b.norm is None and a.norms is None
    x = jnp.ones((3, 4))
    np.testing.assert_array_equal(a(x), b(x))
    with pytest.raises(ValueError, match="norm must be one of 'none', 'batch', 'layer'; got 'rms'"):
        MLP(4, (8,), norm="rms", rngs=nnx.Rngs(0))
