"""Flax modules of convolutional residual networks (``Network.spatial`` and Conv blocks) against a
float64 numpy re-derivation on the module's own parameters.

The numpy convolution is SAME-padded and stride 1, written as patches times the flattened HWIO
kernel; norms reduce as initjax.network documents (batch over (N, H, W) per channel, layer and
RMS over (H, W, C) per example) and then apply their per-channel scale and bias; the readout
follows a global average pool over (H, W). Every parameter that is not a kernel is first moved off
its initial value, so a scale or gain applied in the wrong place changes the numbers.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from initjax import modules
from initjax.network import Conv, Network, Repeat, Residual

# float32 vs float64 through <= 3 blocks of <= 12 channels at "highest" precision
TOL = dict(rtol=5e-5, atol=5e-5)
WS_FLOOR = 1e-4


def _names(path):
    names = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path]
    return "/".join(str(n) for n in names if n != "value")


def params_of(model):
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model, nnx.Param))
    return {_names(p): np.asarray(v, np.float64) for p, v in leaves}


def perturb(model, key, scale=0.3):
    state = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    keys = jax.random.split(key, len(leaves))
    new = [v if _names(p).endswith("kernel") else v + scale * jax.random.normal(k, v.shape, v.dtype)
           for (p, v), k in zip(leaves, keys, strict=True)]
    nnx.update(model, jax.tree_util.tree_unflatten(treedef, new))


def np_conv(x, kernel):
    k = kernel.shape[0]
    p = (k - 1) // 2
    b, h, w, c = x.shape
    xp = np.zeros((b, h + k - 1, w + k - 1, c))
    xp[:, p:p + h, p:p + w] = x
    patches = np.concatenate([xp[:, i:i + h, j:j + w] for i in range(k) for j in range(k)], axis=-1)
    return patches @ kernel.reshape(-1, kernel.shape[-1])


def np_norm(kind, x, eps, P, prefix):
    if kind == "none":
        return x
    if kind == "rms":
        y = x / np.sqrt(np.mean(x**2, axis=(1, 2, 3), keepdims=True) + eps)
    else:
        axis = (0, 1, 2) if kind == "batch" else (1, 2, 3)
        mu = x.mean(axis, keepdims=True)
        y = (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis, keepdims=True) + eps)
    y = y * P[prefix + "/norm/scale"]
    return y + P[prefix + "/norm/bias"] if prefix + "/norm/bias" in P else y


def np_weight(kernel, gain):
    """Scaled WS per output channel over the fan-in (k, k, C_in)."""
    flat = kernel.reshape(-1, kernel.shape[-1])
    mean, var = flat.mean(0), flat.var(0)
    flat = gain * (flat - mean) / np.sqrt(np.maximum(var * flat.shape[0], WS_FLOOR))
    return flat.reshape(kernel.shape)


PHI = {"relu": lambda u: np.maximum(u, 0.0), "identity": lambda u: u}


def np_layer(layer, P, prefix, x):
    K = P[prefix + "/kernel"]
    if layer.weight_standardization:
        K = np_weight(K, P[prefix + "/gain"])
    phi = PHI[layer.activation.spec]
    if layer.preactivation:
        u = phi(np_norm(layer.norm, x, layer.norm_eps, P, prefix))
        return layer.multiplier * np_conv(u, K) + P[prefix + "/bias"]
    h = layer.multiplier * np_conv(x, K) + P[prefix + "/bias"]
    if layer.norm_position == "after":
        return np_norm(layer.norm, phi(h), layer.norm_eps, P, prefix)
    return phi(np_norm(layer.norm, h, layer.norm_eps, P, prefix))


def np_forward(net, P, x):
    v = net.input_variance
    for i, block in enumerate(net.blocks):
        pre = f"blocks/{i}"
        if isinstance(block, Conv):
            x = np_layer(block, P, pre, x)
            v = 1.0
            continue
        alpha = net.branch_scale(block)
        u = x / math.sqrt(v) if block.beta == "expected" else x
        if block.norm_position == "pre":
            u = np_norm(block.norm, u, block.norm_eps, P, pre)
        for j, layer in enumerate(block.branch):
            u = np_layer(layer, P, f"{pre}/branch/{j}", u)
        x = x + alpha * u
        if block.norm_position == "post":
            x = np_norm(block.norm, x, block.norm_eps, P, pre)
        v += alpha**2
    return x.mean(axis=(1, 2)) @ P["readout/kernel"] + P["readout/bias"], x


PRE = dict(preactivation=True, bias_init="normal:stddev=0.1")
CASES = {
    # a conv stem (3 -> 12 channels, norm after the activation), then pre-LN residual blocks
    "stem + pre-LN (BN, RMS inside)": Network(3, (
        Conv(12, init="lecun_normal", norm="layer", norm_position="after"),
        Repeat(Residual((Conv(12, norm="batch", **PRE), Conv(12, kernel_size=1, norm="rms", **PRE)),
                        alpha=0.7, norm="layer"), 2)), spatial=(6, 5), batch=4),
    "post-BN": Network.residual_cnn(2, 8, (5, 5), norm="batch", norm_position="post",
                                    bias_init="normal:stddev=0.1", batch=4),
    "NF: scaled WS, beta": Network.residual_cnn(3, 8, (4, 6), branch_layers=2, branch_scale=0.3,
                                                weight_standardization=True, beta="expected",
                                                batch=4, input_variance=2.0),
}


@nnx.jit
def _forward(model, x):
    return model(x, return_intermediates=True)


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    net = CASES[request.param]
    model = modules.build(net, out_features=3, rngs=nnx.Rngs(1))
    perturb(model, jax.random.key(7))
    shape = (net.batch, *net.spatial, net.in_width)
    x = np.asarray(jax.random.normal(jax.random.key(2), shape), np.float64)
    x *= math.sqrt(net.input_variance)
    with jax.default_matmul_precision("highest"):
        out, inter = _forward(model, jnp.asarray(x, jnp.float32))
    return net, model, x, out, inter


def test_conv_modules_equal_a_float64_rederivation(case):
    net, model, x, out, inter = case
    want, stream = np_forward(net, params_of(model), x)
    np.testing.assert_allclose(np.asarray(inter["hidden"][-1]), stream, **TOL)
    np.testing.assert_allclose(np.asarray(out), want, **TOL)


def test_kernels_are_hwio_with_the_conv_fan_in(case):
    net, model, *_ = case
    P = params_of(model)
    for name, k in P.items():
        if name.endswith("kernel") and not name.startswith("readout"):
            assert k.ndim == 4 and k.shape[0] == k.shape[1], name
    # he_normal (truncated at 2 sigma and rescaled, jax's convention): Var K = 2 / (k k C_in)
    kern = np.asarray(modules.build(Network.residual_cnn(1, 64, (4, 4)), rngs=nnx.Rngs(3))
                      .blocks[0].branch[0].kernel[...], np.float64)
    n = kern.size
    np.testing.assert_allclose(kern.var(), 2.0 / (9 * 64), rtol=4 * math.sqrt(2.0 / n))


def test_spatial_inputs_are_checked():
    model = modules.build(Network.residual_cnn(1, 4, (4, 4)), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"\(batch, \*spatial, 4\)"):
        model(jnp.ones((2, 16, 4)))
