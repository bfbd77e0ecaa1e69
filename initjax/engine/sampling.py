"""The sampled network: one seed's keys, inputs, layers, cotangent and Gaussian scales.

Everything both samplers (:mod:`initjax.engine.dense`, :mod:`initjax.engine.fast`) share about a
:class:`~initjax.config.NetworkConfig` drawn at initialization:

* Keys. Seed ``s`` of a run uses ``fold_in(base_key, s)`` (:func:`seed_keys`), split by fixed
  ``fold_in`` tags into input, weight, bias and cotangent keys (:func:`split_seed_key`); layer
  ``l``'s weights and bias come from ``fold_in(weights, l)`` and ``fold_in(biases, l)``. So a seed's
  numbers depend only on its key and layer, never on how many seeds run beside it. An int key
  follows the one key rule (``initjax._keys.as_key``): ``prng_impl`` (default ``"philox2x32"``).
* A layer: ``h = x W + b``, ``y = phi(h)`` and the optional batch/layer norm before or after
  ``phi`` (:func:`layer_forward`). The product ``x W`` is tagged ``"product"`` and
  :data:`REMAT_POLICY` keeps only it in the backward pass, so with ``remat`` the weights are drawn
  again there but never re-multiplied.
* Scales as data: a zero-mean Gaussian init is ``std * z`` with ``z`` the layer's standard-normal
  draw; :func:`as_scaled` takes the ``std`` out of the configs (:func:`scale_free`) into a
  ``(config, layer)`` array, so configs equal up to that scale share one compiled program.

References:
  Ioffe & Szegedy 2015 (batch norm, Algorithm 1), https://arxiv.org/abs/1502.03167.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from initjax._checks import check_choice
from initjax._keys import DEFAULT_IMPL, PRNG_IMPLS, as_key
from initjax.config import NetworkConfig

__all__ = [
    "COTANGENTS",
    "PRNG_IMPLS",
    "REMAT_POLICY",
    "SeedKeys",
    "UNIT_GAUSSIAN",
    "as_scaled",
    "base_key",
    "draw_bias",
    "draw_cotangent",
    "draw_inputs",
    "layer_after_product",
    "layer_forward",
    "layer_params",
    "normalize",
    "product",
    "scale_array",
    "scale_free",
    "seed_keys",
    "split_seed_key",
    "standard_draw",
    "weight_key",
]

COTANGENTS = ("normal", "mse", "xent")


class SeedKeys(NamedTuple):
    """One seed's independent keys (:func:`split_seed_key`), each a typed key of shape ()."""

    inputs: jax.Array
    weights: jax.Array
    biases: jax.Array
    cotangent: jax.Array


def split_seed_key(seed_key: jax.Array) -> SeedKeys:
    # fold_in with fixed tags: adding a new use of randomness later never shifts the existing ones
    return SeedKeys(*(jax.random.fold_in(seed_key, tag) for tag in range(4)))


def draw_inputs(config: NetworkConfig, key: jax.Array) -> jax.Array:
    """x^0 with per-coordinate variance v and pairwise example correlation c:
    ``x_b = sqrt(v) (sqrt(c) s + sqrt(1 - c) e_b)`` with s, e_b i.i.d. N(0, I). Each example is
    ``(*spatial, n_0)`` for a description with spatial axes (a conv Network), else ``(n_0,)``."""
    shape = (*getattr(config, "spatial", ()), config.widths[0])
    k_shared, k_own = jax.random.split(key)
    shared = jax.random.normal(k_shared, (1, *shape), jnp.float32)
    own = jax.random.normal(k_own, (config.batch, *shape), jnp.float32)
    c, v = config.input_correlation, config.input_variance
    x = math.sqrt(v) * (math.sqrt(c) * shared + math.sqrt(1.0 - c) * own)
    return x.astype(config.jnp_dtype)


def normalize(config: NetworkConfig, z: jax.Array) -> jax.Array:
    """Batch norm (training mode: batch statistics per unit, gamma 1, beta 0) or layer norm."""
    if config.norm == "none":
        return z
    axis = 0 if config.norm == "batch" else 1
    zf = z.astype(jnp.float32)
    mean = zf.mean(axis=axis, keepdims=True)
    var = ((zf - mean) ** 2).mean(axis=axis, keepdims=True)  # biased, as Ioffe & Szegedy Alg. 1
    return ((zf - mean) * jax.lax.rsqrt(var + config.norm_eps)).astype(z.dtype)


def layer_forward(config: NetworkConfig, x, w, b, probe_h, probe_x):
    """One layer: returns (h, phi output, layer output). Probes are zeros whose cotangents are
    dL/dh and dL/dx."""
    return layer_after_product(config, product(x @ w), b, probe_h, probe_x)


def product(xw: jax.Array) -> jax.Array:
    """Tags a layer's ``x W``: the backward pass keeps it (:data:`REMAT_POLICY`), so only the
    weights are drawn again there, never the forward product."""
    return checkpoint_name(xw, "product")


# With remat, a layer's backward pass redraws its weights (they are too big to keep for every
# layer) but keeps the (batch, units) product x W: recomputing it would cost a matmul per layer.
REMAT_POLICY = jax.checkpoint_policies.save_only_these_names("product")


def layer_after_product(config: NetworkConfig, xw, b, probe_h, probe_x):
    """The rest of a layer once ``x W`` is known: bias, activation and normalization."""
    act = config.activation
    h = xw + b[None, :] + probe_h
    if config.norm_placement == "before":
        y = act(normalize(config, h))
        out = y
    else:
        y = act(h)
        out = normalize(config, y)
    return h, y, out + probe_x


def draw_cotangent(config: NetworkConfig, cotangent: str, x_out: jax.Array, key: jax.Array) -> jax.Array:
    """dL/dx^L: i.i.d. N(0, 1) ("normal"), or the gradient of a real loss against random targets:
    ``"mse"``: L = 1/(2B) sum_b ||x_b - t_b||^2, t ~ N(0, I); ``"xent"``: softmax cross-entropy of
    the output units as logits against uniform random labels, averaged over the batch."""
    shape = x_out.shape
    if cotangent == "normal":
        return jax.random.normal(key, shape, jnp.float32).astype(x_out.dtype)
    xf = x_out.astype(jnp.float32)
    if cotangent == "mse":
        target = jax.random.normal(key, shape, jnp.float32)
        g = (xf - target) / shape[0]
    else:
        labels = jax.random.randint(key, (shape[0],), 0, shape[1])
        g = (jax.nn.softmax(xf, axis=-1) - jax.nn.one_hot(labels, shape[1])) / shape[0]
    return g.astype(x_out.dtype)


def layer_params(config: NetworkConfig, keys: SeedKeys, layer, shape, std=None):
    """One layer's ``(W, b)``: ``config.init``'s draw, or with ``std`` (a Gaussian init's scale)
    ``W = z * std`` for the standard-normal draw ``z`` of the layer's key: bitwise what the Gaussian
    initializers compute (see ``Initializer.gaussian_std``)."""
    dtype = config.jnp_dtype
    w = config.init(weight_key(keys, layer), shape, dtype) if std is None else standard_draw(keys, layer, shape, dtype) * std
    return w, draw_bias(config, keys, layer, shape[1])


def draw_bias(config: NetworkConfig, keys: SeedKeys, layer, units: int) -> jax.Array:
    """Layer ``layer``'s bias, ``config.bias_init`` from ``fold_in(keys.biases, layer)``."""
    return config.bias_init(jax.random.fold_in(keys.biases, layer), (units,), config.jnp_dtype)


def weight_key(keys: SeedKeys, layer) -> jax.Array:
    """Layer ``layer``'s weight key, ``fold_in(keys.weights, layer)``."""
    return jax.random.fold_in(keys.weights, layer)


def standard_draw(keys: SeedKeys, layer, shape, dtype) -> jax.Array:
    """The standard-normal draw ``z`` of a layer with Gaussian weights, materialized: without the
    barrier XLA on CPU may fuse the generator into the matmul that consumes it, which ran ~15x
    slower than drawing then multiplying."""
    return jax.lax.optimization_barrier(jax.random.normal(weight_key(keys, layer), shape, dtype))


UNIT_GAUSSIAN = "normal:stddev=1.0"


def scale_free(config: NetworkConfig) -> tuple[NetworkConfig, tuple[float, ...] | None]:
    """``config`` with its Gaussian weight scale taken out, and the per-layer scales.

    Two configs that differ only in the scale of a zero-mean Gaussian init (and in their labels)
    have the same scale-free config, so they share one compiled program, and inside a shared group
    one traced body: the scales enter the program as data. Non-Gaussian inits return
    ``(config, None)``. The placeholder init of a scale-free config is never sampled: the engine
    multiplies its own draw by the scales it is given."""
    std = getattr(config.init, "gaussian_std", None)
    stds = None if std is None else tuple(std(shape) for shape in config.weight_shapes)
    if stds is None or any(v is None for v in stds):
        return config, None
    return config.replace(init=UNIT_GAUSSIAN, label=None), stds


def scale_array(configs: Sequence[NetworkConfig], stds: Sequence[Sequence[float]]) -> np.ndarray:
    """The scales as a ``(config, layer)`` array of the configs' dtype, each rounded exactly as
    ``jnp.asarray(std, dtype)`` rounds it in the initializers."""
    dtype = configs[0].jnp_dtype
    return np.stack([np.stack([np.asarray(jnp.asarray(v, dtype)) for v in row]) for row in stds])


def as_scaled(configs: tuple[NetworkConfig, ...]) -> tuple[tuple[NetworkConfig, ...], np.ndarray | None]:
    """``(scale-free configs, (config, layer) scales)`` when every config has a Gaussian init
    (the scales then enter the program as data: one program serves every scale), else
    ``(configs, None)``."""
    pairs = [scale_free(c) for c in configs]
    if not all(v is not None for _, v in pairs):
        return configs, None
    free = tuple(c for c, _ in pairs)
    return free, scale_array(free, [v for _, v in pairs])

def base_key(key: Any, prng_impl: str = DEFAULT_IMPL) -> jax.Array:
    """The run's base key: an int seed becomes a ``prng_impl`` key (``initjax._keys.as_key``, the
    one key rule); a typed key is used as given.

    Raises:
      ValueError: for a ``prng_impl`` outside :data:`PRNG_IMPLS` or a negative seed.
      TypeError: for anything that is neither an int seed nor a single key.
    """
    check_choice("prng_impl", prng_impl, PRNG_IMPLS)
    return as_key(key, "key", impl=prng_impl)


def seed_keys(key: jax.Array, seeds: Sequence[int] | np.ndarray) -> jax.Array:
    """The per-seed keys ``fold_in(key, s)``: seed s's numbers never depend on its neighbours."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.asarray(seeds, jnp.uint32))

