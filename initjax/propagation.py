"""The propagation engine: per-layer activation and gradient statistics of sampled networks.

:func:`propagate` draws a fully connected network (:class:`~initjax.config.NetworkConfig`) for each
of ``seeds`` seeds, pushes a batch forward, back-propagates a cotangent, and returns per-layer
statistics with axes ``(seed, layer, ...)``. It is the classic demo of CS231n (a 10-layer, 4096-wide
MLP with N(0, 0.01^2), N(0, 1), Xavier and He weights) and the at-init measurements of Glorot &
Bengio (2010, Figures 6-8), made exact, fast and reusable.

How it runs:

* Seeds are a vmapped key axis: seed ``s`` uses ``fold_in(key, s)``, so its numbers do not depend on
  how many seeds run beside it or on the chunk size. Seeds run in chunks sized to a memory budget;
  every chunk has the same size (the last is padded, and the program stops before the padding),
  so one compiled program serves them all, and any other number of seeds up to the same power of
  two.
* Depth is a ``lax.scan`` when all weight matrices have the same shape, so compile time does not
  grow with depth. Layer ``l``'s weights are drawn inside the scan from ``fold_in(weight_key, l)``
  and, with ``remat=True``, drawn again in the backward pass (``jax.checkpoint``) instead of being
  stored for every layer; the ``(batch, width)`` product ``x W`` is kept, so the backward pass
  redraws but never re-multiplies.
* The scale of a zero-mean Gaussian init is data, not code: configs equal up to that scale share one
  compiled program (a sweep over sigma_w compiles once), and inside :func:`propagate_shared` they
  share one traced body, ``lax.map``-ped over their scales, so compile time grows with the number
  of distinct activations/norms in a group, not with the number of configs. Every Gaussian config
  of a call shares the layer's standard-normal draw ``z``: their inputs are stacked into one
  product ``[x_1; ...; x_k] z`` (each config's ``x_i W_i = (x_i z) s_i``), so the ``n x n`` draw is
  read once per layer and pass, not once per config (the matmuls are memory-bound at batch 16).
* Gradients with respect to each layer's pre-activation ``h^l`` and output ``x^l`` come from one
  ``jax.vjp`` with zero "probes" added to ``h^l`` and ``x^l``. The weight gradient
  ``G^l = x^{l-1 T} delta^l`` is never formed: its squared Frobenius norm is the Gram identity
  ``||X^T D||_F^2 = tr((X X^T)(D D^T))`` over the ``batch x batch`` Gram matrices.
* Non-finite values (N(0, 1) weights overflow deep down) are counted per layer; every statistic is
  computed over the finite entries only and with a max-abs rescaling, so huge-but-finite values do
  not overflow when squared. Nothing raises; a layer with no finite entry gets NaN statistics and
  a non-finite count equal to its size.

References:
  Glorot & Bengio 2010, https://proceedings.mlr.press/v9/glorot10a.html;
  He et al. 2015, https://arxiv.org/abs/1502.01852; CS231n, "Training Neural Networks I".
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from initjax import _io
from initjax._checks import check_choice, check_float, check_int
from initjax.config import NetworkConfig

__all__ = [
    "LayerStats",
    "Propagation",
    "propagate",
    "propagate_shared",
    "measure_layers",
    "shareable",
    "trace",
    "histogram",
    "COTANGENTS",
    "METHODS",
    "FallbackWarning",
    "PRNG_IMPLS",
    "estimate_memory",
]

COTANGENTS = ("normal", "mse", "xent")
METHODS = ("dense", "fast")
_DEFAULT_BUDGET = 2 * 2**30  # bytes of temporaries per chunk of seeds; INITJAX_MEMORY_BUDGET overrides


class LayerStats(NamedTuple):
    """Per-layer statistics of a sampled network. Axes ``(seed, layer)`` unless stated.

    Layer index ``i`` is weight layer ``i + 1``. Moments pool the batch and the units of a layer
    (ddof 0) and skip non-finite entries.
    """

    preact_mean: jax.Array  # (seed, layer) mean of h^l = x^{l-1} W^l + b^l
    preact_var: jax.Array  # (seed, layer) variance of h^l
    preact_second_moment: jax.Array  # (seed, layer) mean of (h^l)^2: the mean-field q^l
    act_mean: jax.Array  # (seed, layer) mean of the activation output phi(.)
    act_var: jax.Array  # (seed, layer)
    act_std: jax.Array  # (seed, layer)
    out_second_moment: jax.Array  # (seed, layer) mean of (x^l)^2, the layer output fed onwards
    saturated: jax.Array  # (seed, layer) fraction of phi outputs within 1% of the range of a bound
    zero_fraction: jax.Array  # (seed, layer) fraction of phi outputs exactly 0
    dead_fraction: jax.Array  # (seed, layer) fraction of units whose phi output is 0 on the whole batch
    unit_std: jax.Array  # (seed, layer) std across the units of one example, averaged over the batch:
    #                      exactly 0 when every unit computes the same thing (constant/zero init)
    cosine: jax.Array  # (seed, layer) mean pairwise cosine between the examples' h^l (mean-field c^l)
    act_cosine: jax.Array  # (seed, layer) the same for the layer outputs x^l
    nonfinite: jax.Array  # (seed, layer) int32 count of non-finite entries of h^l and phi outputs
    act_hist: jax.Array  # (seed, layer, bin) int32 counts of phi outputs in act_edges
    act_outside: jax.Array  # (seed, layer, 2) int32 counts below / above the histogram range
    grad_preact_var: jax.Array  # (seed, layer) variance of dL/dh^l
    grad_act_var: jax.Array  # (seed, layer) variance of dL/dx^l
    grad_hist: jax.Array  # (seed, layer, bin) int32 counts of dL/dh^l in grad_edges
    grad_outside: jax.Array  # (seed, layer, 2) int32 counts below / above
    grad_nonfinite: jax.Array  # (seed, layer) int32 count of non-finite entries of dL/dh^l, dL/dx^l
    weight_grad_mean: jax.Array  # (seed, layer) mean entry of dL/dW^l
    weight_grad_var: jax.Array  # (seed, layer) variance of the entries of dL/dW^l
    weight_grad_norm: jax.Array  # (seed, layer) Frobenius norm of dL/dW^l


# ----------------------------------------------------------------------------------------------
# Statistics of one layer (no seed or layer axis): pure functions, vmapped by the engine.
# ----------------------------------------------------------------------------------------------
def _finite_moments(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(mean, variance, second moment, count) over the finite entries of ``x``, overflow-safe."""
    x = x.astype(jnp.float32)
    finite = jnp.isfinite(x)
    count = finite.sum()
    xz = jnp.where(finite, x, 0.0)
    scale = jnp.max(jnp.abs(xz))
    scale = jnp.where(scale > 0, scale, 1.0)
    y = xz / scale
    n = jnp.maximum(count, 1).astype(jnp.float32)
    m1 = y.sum() / n
    centred = jnp.where(finite, y - m1, 0.0)
    var = (centred * centred).sum() / n
    m2 = (y * y).sum() / n
    nan = jnp.float32(jnp.nan)
    empty = count == 0
    return (
        jnp.where(empty, nan, m1 * scale),
        jnp.where(empty, nan, var * scale * scale),
        jnp.where(empty, nan, m2 * scale * scale),
        count,
    )


def _edges(value_range: tuple[float, float], bins: int) -> np.ndarray:
    # float64 linspace cast to float32, as numpy.histogram builds its edges for float32 data
    return np.linspace(value_range[0], value_range[1], bins + 1).astype(np.float32)


def histogram(x: jax.Array, value_range: tuple[float, float], bins: int) -> tuple[jax.Array, jax.Array]:
    """Counts of the finite entries of ``x`` in ``bins`` equal bins over ``value_range``.

    Bins are half-open ``[e_i, e_{i+1})`` except the last, which includes its right edge: exactly
    ``numpy.histogram``'s convention (the same edges and the same edge corrections), so the counts
    equal numpy's on the same float32 values.

    Returns:
      ``(counts, outside)``: ``counts`` int32 of shape ``(bins,)``; ``outside`` int32 ``(2,)`` with
      the numbers of finite values below and above the range.
    """
    lo, hi = value_range
    edges = jnp.asarray(_edges(value_range, bins))
    x = x.astype(jnp.float32).ravel()
    finite = jnp.isfinite(x)
    inside = finite & (x >= edges[0]) & (x <= edges[-1])
    idx = jnp.floor((x - lo) / (hi - lo) * bins).astype(jnp.int32)
    idx = jnp.clip(idx, 0, bins - 1)
    # numpy's corrections: the edges array, not the arithmetic, decides the bin
    idx = jnp.where(x < edges[idx], idx - 1, idx)
    idx = jnp.where((x >= edges[jnp.minimum(idx + 1, bins)]) & (idx != bins - 1), idx + 1, idx)
    idx = jnp.clip(idx, 0, bins - 1)
    counts = jnp.zeros(bins, jnp.int32).at[idx].add(inside.astype(jnp.int32))
    below = (finite & (x < edges[0])).sum()
    above = (finite & (x > edges[-1])).sum()
    return counts, jnp.stack([below, above]).astype(jnp.int32)


def _mean_cosine(x: jax.Array) -> jax.Array:
    """Mean cosine similarity over the pairs of rows of ``x`` (batch, units); NaN for batch 1."""
    x = x.astype(jnp.float32)
    x = jnp.where(jnp.isfinite(x), x, 0.0)
    x = x / jnp.maximum(jnp.max(jnp.abs(x)), jnp.float32(1e-30))
    norms = jnp.linalg.norm(x, axis=1, keepdims=True)
    u = x / jnp.maximum(norms, jnp.float32(1e-30))
    gram = u @ u.T
    b = x.shape[0]
    if b < 2:
        return jnp.float32(jnp.nan)
    return (gram.sum() - jnp.trace(gram)) / (b * (b - 1))


def _weight_grad_stats(x_prev: jax.Array, delta: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Mean, variance and Frobenius norm of ``G = x_prev^T delta`` without forming G.

    ``||G||_F^2 = tr((X X^T)(D D^T)) = sum((X X^T) * (D D^T))`` (both Gram matrices are batch x
    batch), and ``sum(G) = sum_b (sum_i X_bi)(sum_j D_bj)``. Both factors are rescaled by their
    max-abs first so that squares of huge-but-finite values do not overflow.
    """
    x = x_prev.astype(jnp.float32)
    d = delta.astype(jnp.float32)
    sx = jnp.maximum(jnp.max(jnp.abs(x)), jnp.float32(1e-30))
    sd = jnp.maximum(jnp.max(jnp.abs(d)), jnp.float32(1e-30))
    xs, ds = x / sx, d / sd
    n_entries = float(x.shape[1]) * float(d.shape[1])  # a Python float: 65536^2 overflows int32
    sq = jnp.sum((xs @ xs.T) * (ds @ ds.T))
    total = jnp.sum(xs.sum(axis=1) * ds.sum(axis=1))
    mean = total / n_entries
    var = jnp.maximum(sq / n_entries - mean * mean, 0.0)
    scale = sx * sd
    return mean * scale, var * scale * scale, jnp.sqrt(sq) * scale


class _Opts(NamedTuple):
    """Static measurement options (hashable: part of the compile-cache key)."""

    act_range: tuple[float, float]
    grad_range: tuple[float, float]
    bins: int
    cotangent: str
    remat: bool
    saturation_tolerance: float
    method: str = "dense"  # "dense": sampled weight matrices; "fast": initjax.fastpath


def _layer_stats(act: Any, opts: _Opts, h, y, out, dh, da, x_prev) -> dict[str, jax.Array]:
    """All statistics of one layer from its tensors (each (batch, units)); ``act`` is the
    :class:`~initjax.activations.Activation` whose bounds define saturation."""
    stats: dict[str, jax.Array] = {}
    stats["preact_mean"], stats["preact_var"], stats["preact_second_moment"], h_count = _finite_moments(h)
    stats["act_mean"], stats["act_var"], _, y_count = _finite_moments(y)
    stats["act_std"] = jnp.sqrt(stats["act_var"])
    _, _, stats["out_second_moment"], _ = _finite_moments(out)
    yf = y.astype(jnp.float32)
    n_y = jnp.maximum(y_count, 1).astype(jnp.float32)
    finite_y = jnp.isfinite(yf)
    stats["saturated"] = (act.saturated(yf, opts.saturation_tolerance) & finite_y).sum() / n_y
    zeros = yf == 0
    stats["zero_fraction"] = zeros.sum() / n_y
    stats["dead_fraction"] = jnp.all(zeros, axis=0).mean()
    stats["unit_std"] = jnp.std(yf, axis=1).mean()
    stats["cosine"] = _mean_cosine(h)
    stats["act_cosine"] = _mean_cosine(out)
    stats["nonfinite"] = (h.size - h_count + y.size - y_count).astype(jnp.int32)
    stats["act_hist"], stats["act_outside"] = histogram(y, opts.act_range, opts.bins)
    _, stats["grad_preact_var"], _, dh_count = _finite_moments(dh)
    _, stats["grad_act_var"], _, da_count = _finite_moments(da)
    stats["grad_hist"], stats["grad_outside"] = histogram(dh, opts.grad_range, opts.bins)
    stats["grad_nonfinite"] = (dh.size - dh_count + da.size - da_count).astype(jnp.int32)
    wg = _weight_grad_stats(x_prev, dh)
    stats["weight_grad_mean"], stats["weight_grad_var"], stats["weight_grad_norm"] = wg
    return stats


# ----------------------------------------------------------------------------------------------
# One seed's network: forward, backward, statistics.
# ----------------------------------------------------------------------------------------------
class _Keys(NamedTuple):
    inputs: jax.Array
    weights: jax.Array
    biases: jax.Array
    cotangent: jax.Array


def _split_seed_key(seed_key: jax.Array) -> _Keys:
    # fold_in with fixed tags: adding a new use of randomness later never shifts the existing ones
    return _Keys(*(jax.random.fold_in(seed_key, tag) for tag in range(4)))


def _draw_inputs(config: NetworkConfig, key: jax.Array) -> jax.Array:
    """x^0 with per-coordinate variance v and pairwise example correlation c:
    ``x_b = sqrt(v) (sqrt(c) s + sqrt(1 - c) e_b)`` with s, e_b i.i.d. N(0, I)."""
    n0 = config.widths[0]
    k_shared, k_own = jax.random.split(key)
    shared = jax.random.normal(k_shared, (1, n0), jnp.float32)
    own = jax.random.normal(k_own, (config.batch, n0), jnp.float32)
    c, v = config.input_correlation, config.input_variance
    x = math.sqrt(v) * (math.sqrt(c) * shared + math.sqrt(1.0 - c) * own)
    return x.astype(config.jnp_dtype)


def _normalize(config: NetworkConfig, z: jax.Array) -> jax.Array:
    """Batch norm (training mode: batch statistics per unit, gamma 1, beta 0) or layer norm."""
    if config.norm == "none":
        return z
    axis = 0 if config.norm == "batch" else 1
    zf = z.astype(jnp.float32)
    mean = zf.mean(axis=axis, keepdims=True)
    var = ((zf - mean) ** 2).mean(axis=axis, keepdims=True)  # biased, as Ioffe & Szegedy Alg. 1
    return ((zf - mean) * jax.lax.rsqrt(var + config.norm_eps)).astype(z.dtype)


def _layer_forward(config: NetworkConfig, x, w, b, probe_h, probe_x):
    """One layer: returns (h, phi output, layer output). Probes are zeros whose cotangents are
    dL/dh and dL/dx."""
    return _layer_after_product(config, _product(x @ w), b, probe_h, probe_x)


def _product(xw: jax.Array) -> jax.Array:
    """Tags a layer's ``x W``: the backward pass keeps it (:data:`_REMAT_POLICY`), so only the
    weights are drawn again there, never the forward product."""
    return checkpoint_name(xw, "product")


# With remat, a layer's backward pass redraws its weights (they are too big to keep for every
# layer) but keeps the (batch, units) product x W: recomputing it would cost a matmul per layer.
_REMAT_POLICY = jax.checkpoint_policies.save_only_these_names("product")


def _layer_after_product(config: NetworkConfig, xw, b, probe_h, probe_x):
    """The rest of a layer once ``x W`` is known: bias, activation and normalization."""
    act = config.activation
    h = xw + b[None, :] + probe_h
    if config.norm_placement == "before":
        y = act(_normalize(config, h))
        out = y
    else:
        y = act(h)
        out = _normalize(config, y)
    return h, y, out + probe_x


def _cotangent(config: NetworkConfig, cotangent: str, x_out: jax.Array, key: jax.Array) -> jax.Array:
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


def _layer_params(config: NetworkConfig, keys: _Keys, layer, shape, std=None):
    """One layer's ``(W, b)``: ``config.init``'s draw, or with ``std`` (a Gaussian init's scale)
    ``W = z * std`` for the standard-normal draw ``z`` of the layer's key: bitwise what the Gaussian
    initializers compute (see ``Initializer.gaussian_std``)."""
    dtype = config.jnp_dtype
    w = config.init(_weight_key(keys, layer), shape, dtype) if std is None else _draw(keys, layer, shape, dtype) * std
    return w, _bias(config, keys, layer, shape[1])


def _bias(config: NetworkConfig, keys: _Keys, layer, units: int) -> jax.Array:
    return config.bias_init(jax.random.fold_in(keys.biases, layer), (units,), config.jnp_dtype)


def _weight_key(keys: _Keys, layer) -> jax.Array:
    return jax.random.fold_in(keys.weights, layer)


def _draw(keys: _Keys, layer, shape, dtype) -> jax.Array:
    """The standard-normal draw ``z`` of a layer with Gaussian weights, materialized: without the
    barrier XLA on CPU may fuse the generator into the matmul that consumes it, which ran ~15x
    slower than drawing then multiplying."""
    return jax.lax.optimization_barrier(jax.random.normal(_weight_key(keys, layer), shape, dtype))


_UNIT_GAUSSIAN = "normal:stddev=1.0"


def _scale_free(config: NetworkConfig) -> tuple[NetworkConfig, tuple[float, ...] | None]:
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
    return config.replace(init=_UNIT_GAUSSIAN, label=None), stds


def _scale_array(configs: Sequence[NetworkConfig], stds: Sequence[Sequence[float]]) -> np.ndarray:
    """The scales as a ``(config, layer)`` array of the configs' dtype, each rounded exactly as
    ``jnp.asarray(std, dtype)`` rounds it in the initializers."""
    dtype = configs[0].jnp_dtype
    return np.stack([np.stack([np.asarray(jnp.asarray(v, dtype)) for v in row]) for row in stds])


def _groups(configs: tuple[NetworkConfig, ...], scaled: bool) -> list[list[int]]:
    """Indices of the configs that run through one traced body: with traced scales (``scaled``)
    the configs are scale-free (:func:`_as_scaled`), and equal ones share a body; otherwise each
    config keeps its own."""
    if not scaled:
        return [[i] for i in range(len(configs))]
    out: dict[NetworkConfig, list[int]] = {}
    for i, c in enumerate(configs):
        out.setdefault(c, []).append(i)
    return list(out.values())


def _ungroup(groups: list[list[int]], per_group: list[Any], n: int) -> list[Any]:
    """Per config, in config order, its slice of its group's pytree (leading member axis)."""
    result: list[Any] = [None] * n
    for idx, group in zip(groups, per_group, strict=True):
        for j, i in enumerate(idx):
            result[i] = jax.tree.map(lambda v, j=j: v[j], group)
    return result


def _map(fn, args):
    """``lax.map(fn, args)`` over the leading axis, called directly when it has length 1. After
    the layer's stacked product (one matmul for every config, see :func:`_group_tensors`), the
    members of a group run one after the other through the same code; XLA may emit a reduction or
    a matmul with another row count differently, so a member's statistics equal its solo run's to
    float32 rounding (relative ~1e-6), not always bitwise (they were bitwise at every size tried,
    up to width 1024)."""
    n = jax.tree.leaves(args)[0].shape[0]
    if n == 1:
        return jax.tree.map(lambda v: v[None], fn(jax.tree.map(lambda v: v[0], args)))
    return jax.lax.map(fn, args)


def _group_tensors(
    configs: tuple[NetworkConfig, ...],
    opts: _Opts,
    seed_key: jax.Array,
    inputs: jax.Array | None,
    stds: jax.Array | None = None,
):
    """Forward and backward for one seed of each config of a group (same shapes, input and seed).

    ``stds``: None, or the ``(config, layer)`` Gaussian scales of scale-free configs (see
    :func:`_as_scaled`); then every config uses the layer's one standard-normal draw ``z``, the
    products of all configs are one matmul ``[x_1; ...; x_k] z`` (scaled per config afterwards),
    and equal configs run the rest of the layer through one body, ``lax.map``-ped over their
    scales. Without ``stds`` there is one config, with its initializer's own draw. Returns
    ``(groups, tensors)``: the index lists of :func:`_groups` and, per group, the per-layer tensors
    ``(x_prev, h, y, out, dh, dx)`` with a leading group-member axis: ``(k, layer, batch, units)``
    arrays when the network is uniform, else lists over layers of ``(k, batch, units)``."""
    first = configs[0]
    keys = _split_seed_key(seed_key)
    dtype = first.jnp_dtype
    x0 = _draw_inputs(first, keys.inputs) if inputs is None else inputs.astype(dtype)
    batch, depth = x0.shape[0], first.depth
    groups = _groups(configs, stds is not None)
    stds = None if stds is None else jnp.asarray(stds)
    reps = [configs[idx[0]] for idx in groups]
    scales = [None if stds is None else stds[np.asarray(idx)] for idx in groups]  # (k, layer)
    xs0 = tuple(jnp.broadcast_to(x0, (len(idx), *x0.shape)) for idx in groups)

    def layer_step(xs, layer, shape, ph, px):
        """Every group's layer ``layer``; ``ph``/``px``: per group, (k, batch, units) probes."""
        if stds is not None:
            # one standard-normal draw and one matmul for every member of every group: stacking
            # the members' inputs reads the n_in x n_out draw once, not once per config
            z = _draw(keys, layer, shape, dtype)
            stacked = jnp.concatenate(xs) if len(xs) > 1 else xs[0]
            zx = _product((stacked.reshape(-1, shape[0]) @ z).reshape(stacked.shape[0], batch, shape[1]))
            bounds = np.cumsum([0] + [x.shape[0] for x in xs])
            products = [zx[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        outs = []
        for g, (c, x, p_h, p_x) in enumerate(zip(reps, xs, ph, px, strict=True)):
            b = _bias(c, keys, layer, shape[1])
            if stds is None:  # one config, not a Gaussian init: the initializer's own draw
                w = c.init(_weight_key(keys, layer), shape, dtype)
                outs.append(jax.tree.map(lambda v: v[None], _layer_forward(c, x[0], w, b, p_h[0], p_x[0])))
                continue

            def one(args, c=c, b=b):
                zx_, s_, p_h_, p_x_ = args
                return _layer_after_product(c, zx_ * s_, b, p_h_, p_x_)

            outs.append(_map(one, (products[g], scales[g][:, layer], p_h, p_x)))
        return tuple(o[2] for o in outs), tuple(outs)

    if first.uniform:
        n = first.widths[0]

        def body(xs, inp):
            layer, ph, px = inp
            return layer_step(xs, layer, (n, n), ph, px)

        if opts.remat:
            body = jax.checkpoint(body, policy=_REMAT_POLICY)

        def forward(ph, px):
            return jax.lax.scan(body, xs0, (jnp.arange(depth), ph, px))

        zeros = tuple(jnp.zeros((depth, len(idx), batch, n), dtype) for idx in groups)
    else:
        shapes = first.weight_shapes
        step = jax.checkpoint(layer_step, static_argnums=(1, 2), policy=_REMAT_POLICY) if opts.remat else layer_step

        def forward(ph, px):
            xs, per_group = xs0, [([], [], []) for _ in groups]
            for layer, shape in enumerate(shapes):
                xs, outs = step(xs, layer, shape, tuple(p[layer] for p in ph), tuple(p[layer] for p in px))
                for store, out in zip(per_group, outs, strict=True):
                    for lst, value in zip(store, out, strict=True):
                        lst.append(value)
            return xs, tuple(per_group)

        zeros = tuple([jnp.zeros((len(idx), batch, s[1]), dtype) for s in shapes] for idx in groups)

    x_out, vjp, per_group = jax.vjp(forward, zeros, zeros, has_aux=True)
    cot = tuple(_map(lambda xo, c=c: _cotangent(c, opts.cotangent, xo, keys.cotangent), xo)
                for c, xo in zip(reps, x_out, strict=True))
    dhs, dxs = vjp(cot)
    result = []
    for idx, (h, y, out), dh, dx in zip(groups, per_group, dhs, dxs, strict=True):
        x_first = jnp.broadcast_to(x0, (len(idx), *x0.shape))
        if first.uniform:  # (layer, k, ...) -> (k, layer, ...)
            h, y, out, dh, dx = (jnp.swapaxes(v, 0, 1) for v in (h, y, out, dh, dx))
            x_prev = jnp.concatenate([x_first[:, None], out[:, :-1]], axis=1)
        else:
            x_prev = [x_first, *out[:-1]]
        result.append((x_prev, h, y, out, dh, dx))
    return groups, result


def _seed_tensors(
    configs: tuple[NetworkConfig, ...],
    opts: _Opts,
    seed_key: jax.Array,
    inputs: jax.Array | None,
    stds: jax.Array | None = None,
):
    """Per config, the per-layer tensors ``(x_prev, h, y, out, dh, dx)`` of one seed: stacked
    ``(layer, batch, units)`` arrays when the network is uniform, else lists of ``(batch, units)``."""
    groups, tensors = _group_tensors(configs, opts, seed_key, inputs, stds)
    return _ungroup(groups, tensors, len(configs))


def _stats_of_layers(act: Any, opts: _Opts, x_prev, h, y, out, dh, dx) -> LayerStats:
    """:class:`LayerStats` with a leading layer axis, from stacked ``(layer, batch, units)`` arrays
    (vmapped over layers) or from per-layer lists of ``(batch, units)`` arrays (ragged widths)."""
    per_layer = functools.partial(_layer_stats, act, opts)
    if not isinstance(h, list | tuple):
        return LayerStats(**jax.vmap(per_layer)(h, y, out, dh, dx, x_prev))
    layers = [per_layer(*t) for t in zip(h, y, out, dh, dx, x_prev, strict=True)]
    return LayerStats(**{k: jnp.stack([s[k] for s in layers]) for k in layers[0]})


def measure_layers(
    activation: Any,
    x_prev: Sequence[jax.Array],
    h: Sequence[jax.Array],
    y: Sequence[jax.Array],
    out: Sequence[jax.Array],
    dh: Sequence[jax.Array],
    dx: Sequence[jax.Array],
    *,
    act_range: tuple[float, float] = (-1.0, 1.0),
    grad_range: tuple[float, float] = (-1.0, 1.0),
    bins: int = 40,
    saturation_tolerance: float = 0.01,
) -> LayerStats:
    """The engine's per-layer statistics from per-layer tensors of any network (no seed axis).

    Each argument is a list with one ``(batch, units)`` array per layer (or one stacked
    ``(layer, batch, units)`` array): the layer's input ``x_prev``, pre-activation ``h``,
    activation output ``y``, layer output ``out`` and the gradients ``dh = dL/dh``, ``dx = dL/dx``.
    This is how :func:`initjax.probe` measures a user's own model with the very code
    :func:`propagate` uses. Works under ``jit`` and ``vmap``.

    Returns:
      :class:`LayerStats` with axes ``(layer, ...)``.
    """
    from initjax import activations

    opts = _Opts(
        act_range=_check_range("act_range", act_range),
        grad_range=_check_range("grad_range", grad_range),
        bins=check_int("bins", bins, minimum=1),
        cotangent="normal",
        remat=False,
        saturation_tolerance=check_float("saturation_tolerance", saturation_tolerance, minimum=0.0),
    )
    tensors = [x_prev, h, y, out, dh, dx]
    if isinstance(h, list | tuple):
        lengths = {len(t) for t in tensors}
        if len(lengths) != 1 or not h:
            raise ValueError(f"need the same non-zero number of layers in every argument, got {sorted(lengths)}")
        tensors = [list(t) for t in tensors]
    return _stats_of_layers(activations.get(activation), opts, *tensors)


def _seed_stats(configs, opts: _Opts, seed_key: jax.Array, inputs: jax.Array | None,
                stds: jax.Array | None = None):
    """A tuple with one :class:`LayerStats` (no seed axis) per config of the group; the statistics
    of the configs that share a body are ``lax.map``-ped over them too (one copy of the code)."""
    if opts.method == "fast":
        from initjax import fastpath  # fastpath builds on this module

        return (fastpath.fast_seed_stats(configs[0], opts, seed_key, inputs),)
    groups, tensors = _group_tensors(configs, opts, seed_key, inputs, stds)
    stats = [_map(lambda t, act=configs[idx[0]].activation: _stats_of_layers(act, opts, *t), group)
             for idx, group in zip(groups, tensors, strict=True)]
    return tuple(_ungroup(groups, stats, len(configs)))


@functools.lru_cache(maxsize=64)
def _compiled(
    configs: tuple[NetworkConfig, ...],
    opts: _Opts,
    with_inputs: bool,
    lanes: int,
    impl: str,
    n_devices: int,
):
    """One jit-compiled program per (configs, options): seeds are vmapped ``lanes`` at a time, and
    a loop walks over groups of lanes. Every seed therefore runs through the same compiled
    ``lanes``-wide program whatever the chunk size (XLA compiles a size-1 and a size-5 batched
    matmul differently, so vmapping a whole chunk would tie a seed's last bits to its chunk).
    The program takes ``valid``, the number of real seeds in the chunk, and stops after their
    lane groups: a padded chunk costs nothing for its padding, and one program (per capacity, see
    :func:`_chunk_capacity`) serves every number of seeds up to it.
    With ``n_devices > 1`` the seed axis is split over a one-axis device mesh by ``shard_map``:
    each device runs that same program on its share, so the numbers do not change.
    Keys enter as raw key data (uint32), which every sharding API accepts. Cached, so a second
    call with the same configs does not recompile."""

    def one(args, stds):
        k, x = args
        return _seed_stats(configs, opts, k, x if with_inputs else None, stds)

    # jitted so that the output shapes (eval_shape) and the loop body share one trace of the network
    lane_group = jax.jit(jax.vmap(one, in_axes=(0, None)))

    def run(key_data, x, stds, valid):
        keys = jax.random.wrap_key_data(key_data, impl=impl)
        groups = keys.shape[0] // lanes
        keys = keys.reshape(groups, lanes)
        x = x.reshape(groups, lanes, *x.shape[1:]) if with_inputs else jnp.zeros((groups, lanes))
        if n_devices > 1:  # this device's seeds are [offset, offset + its share) of the chunk
            valid = valid - jax.lax.axis_index("seeds") * keys.size
        count = jnp.clip((valid + lanes - 1) // lanes, 0, groups)

        def body(i, acc):
            out = lane_group((keys[i], x[i]), stds)
            return jax.tree.map(lambda a, o: jax.lax.dynamic_update_index_in_dim(a, o, i, 0), acc, out)

        shapes = jax.eval_shape(lane_group, (keys[0], x[0]), stds)
        init = jax.tree.map(lambda v: jnp.zeros((groups, *v.shape), v.dtype), shapes)
        out = jax.lax.fori_loop(0, count, body, init)
        return jax.tree.map(lambda v: v.reshape(groups * lanes, *v.shape[2:]), out)

    if n_devices == 1:
        return jax.jit(run)
    from jax.sharding import PartitionSpec

    mesh = jax.make_mesh((n_devices,), ("seeds",), devices=jax.devices()[:n_devices])
    spec, replicated = PartitionSpec("seeds"), PartitionSpec()
    # check_vma=False: every device's work is independent. With the check on, the zero probes
    # that jax.vjp differentiates against count as replicated over the mesh, and the transpose
    # would psum every device's gradients together.
    if with_inputs:
        return jax.jit(jax.shard_map(run, mesh=mesh, in_specs=(spec, spec, replicated, replicated),
                                     out_specs=spec, check_vma=False))
    return jax.jit(jax.shard_map(lambda k, s, v: run(k, None, s, v), mesh=mesh,
                                 in_specs=(spec, replicated, replicated), out_specs=spec, check_vma=False))


def _chunk_capacity(seeds: int, fits: int) -> int:
    """Seeds per compiled call when the caller sets no chunk size: the number of seeds rounded up
    to a power of two, at most the ``fits`` seeds the memory budget allows. The program skips a
    chunk's padding (:func:`_compiled`), so rounding up costs no work, and a session that asks
    for 3, 5, 6, then 8 seeds compiles once (capacity 8), not four times."""
    return int(max(1, min(fits, 1 << max(seeds - 1, 0).bit_length())))


def default_lanes() -> int:
    """Seeds vmapped side by side: 1 on CPU (a wider vmap gains nothing there), 8 on accelerators."""
    return 1 if jax.default_backend() == "cpu" else 8


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
def estimate_memory(config: NetworkConfig, *, remat: bool = True, group: int = 1) -> int:
    """Estimated peak bytes of temporaries for one seed (weights, random bits, kept activations).

    Drawing a weight matrix keeps about four matrix-sized buffers alive (random bits, the floats,
    the matmul's packed copy); the ``group`` configs of a shared draw use that one matrix (their
    inputs are stacked into one product, never a scaled copy per config); without ``remat`` every
    layer's draw is kept for the backward pass; about eight ``(batch, width)`` tensors per layer
    and config are kept for the statistics.
    """
    itemsize = max(jnp.dtype(config.dtype).itemsize, 4)
    matrices = [a * b for a, b in config.weight_shapes]
    weights = 4 * max(matrices) + (0 if remat else sum(matrices))
    kept = 8 * group * config.batch * sum(config.widths)
    return int((weights + kept) * itemsize)


def _memory_budget(memory_budget: float | None) -> float:
    if memory_budget is None:
        env = os.environ.get("INITJAX_MEMORY_BUDGET")
        return float(env) if env else float(_DEFAULT_BUDGET)
    return check_float("memory_budget", memory_budget, minimum=0.0, strict_minimum=True)


PRNG_IMPLS = ("philox2x32", "philox4x32", "threefry2x32", "threefry4x32")


def _as_key(key: Any, prng_impl: str) -> jax.Array:
    check_choice("prng_impl", prng_impl, PRNG_IMPLS)
    if isinstance(key, int | np.integer) and not isinstance(key, bool):
        return jax.random.key(int(key), impl=prng_impl)
    if isinstance(key, jax.Array):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            return key
        return jax.random.wrap_key_data(key)
    raise TypeError(f"key must be an int seed or a JAX PRNG key, got {key!r}")


def seed_keys(key: jax.Array, seeds: Sequence[int] | np.ndarray) -> jax.Array:
    """The per-seed keys ``fold_in(key, s)``: seed s's numbers never depend on its neighbours."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.asarray(seeds, jnp.uint32))


@dataclasses.dataclass(frozen=True)
class Propagation:
    """The result of :func:`propagate`: the config, the statistics and how they were measured.

    Attributes:
      config: the network.
      stats: :class:`LayerStats`, numpy arrays with axes ``(seed, layer, ...)``.
      act_edges: the ``bins + 1`` edges of the activation histograms.
      grad_edges: the edges of the gradient histograms.
      key: the integer seed of the base key (or None if a key array was given).
      cotangent: how the output gradient was drawn (see :data:`COTANGENTS`).
      prng_impl: the PRNG implementation that drew every random number.
      seconds: wall time of the run (compile included).
      method: ``"dense"`` or ``"fast"`` (see :func:`propagate`).
    """

    config: NetworkConfig
    stats: LayerStats
    act_edges: np.ndarray
    grad_edges: np.ndarray
    key: int | None = 0
    cotangent: str = "normal"
    prng_impl: str = "threefry2x32"
    seconds: float = float("nan")
    method: str = "dense"

    @property
    def seeds(self) -> int:
        return int(self.stats.act_var.shape[0])

    @property
    def nonfinite_layers(self) -> list[int]:
        """1-based layers in which some seed had a non-finite value, forward or backward, or a
        variance too large for float32 (finite values whose squares overflow)."""
        st = self.stats
        bad = (np.asarray(st.nonfinite) + np.asarray(st.grad_nonfinite)).sum(axis=0) > 0
        for field in _OVERFLOW_FIELDS:
            bad |= np.isinf(np.asarray(getattr(st, field))).any(axis=0)
        return [int(i) + 1 for i in np.flatnonzero(bad)]

    def layer_table(self) -> list[dict[str, Any]]:
        """One dict per layer: each scalar statistic's mean over seeds (NaN-ignoring) and, as
        ``<name>_sd``, its standard deviation over seeds. ``nonfinite`` sums forward and
        backward counts over seeds. This is the JSON schema of ``initjax propagate --json``."""
        rows = []
        for i in range(self.config.depth):
            row: dict[str, Any] = {"layer": i + 1}
            for name, (field, reducer) in _TABLE_FIELDS.items():
                values = np.asarray(getattr(self.stats, field))[:, i].astype(np.float64)
                if reducer == "sum":
                    row[name] = int(values.sum())
                    continue
                finite = values[np.isfinite(values)]
                row[name] = float(finite.mean()) if finite.size else float("nan")
                row[name + "_sd"] = float(finite.std()) if finite.size > 1 else 0.0
            row["nonfinite"] = int(
                np.asarray(self.stats.nonfinite)[:, i].sum() + np.asarray(self.stats.grad_nonfinite)[:, i].sum()
            )
            rows.append(row)
        return rows

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "seeds": self.seeds,
            "key": self.key,
            "cotangent": self.cotangent,
            "prng_impl": self.prng_impl,
            "method": self.method,
            "layers": self.layer_table(),
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json``, ``stats.npz`` and ``meta.json`` into ``directory``, atomically."""
        d = Path(directory)
        arrays = {k: np.asarray(v) for k, v in self.stats._asdict().items()}
        _io.write_npz(d / "stats.npz", act_edges=self.act_edges, grad_edges=self.grad_edges, **arrays)
        meta = {
            "key": self.key,
            "cotangent": self.cotangent,
            "prng_impl": self.prng_impl,
            "method": self.method,
            "seconds": self.seconds,
            "seeds": self.seeds,
        }
        _io.write_json(d / "meta.json", meta)
        _io.write_json(d / "config.json", self.config.to_dict())
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Propagation:
        """Read what :meth:`save` wrote."""
        d = Path(directory)
        for name in ("config.json", "stats.npz", "meta.json"):
            if not (d / name).exists():
                raise FileNotFoundError(f"{d / name} is missing: not a saved Propagation directory")
        config = NetworkConfig.from_dict(json.loads((d / "config.json").read_text()))
        meta = json.loads((d / "meta.json").read_text())
        with np.load(d / "stats.npz") as z:
            stats = LayerStats(**{f: z[f] for f in LayerStats._fields})
            act_edges, grad_edges = z["act_edges"], z["grad_edges"]
        seconds = meta.get("seconds")
        return cls(
            config=config,
            stats=stats,
            act_edges=act_edges,
            grad_edges=grad_edges,
            key=meta.get("key"),
            cotangent=meta.get("cotangent", "normal"),
            prng_impl=meta.get("prng_impl", "threefry2x32"),
            seconds=float("nan") if seconds is None else float(seconds),
            method=meta.get("method", "dense"),
        )


# statistics that overflow float32 (inf) while every value is finite, e.g. ReLU with N(0, 1) weights
_OVERFLOW_FIELDS = ("preact_var", "act_var", "grad_preact_var", "grad_act_var", "weight_grad_var")

# name in the table -> (LayerStats field, how to reduce over seeds)
_TABLE_FIELDS = {
    "preact_mean": ("preact_mean", "mean"),
    "preact_var": ("preact_var", "mean"),
    "act_mean": ("act_mean", "mean"),
    "act_var": ("act_var", "mean"),
    "grad_var": ("grad_preact_var", "mean"),
    "weight_grad_var": ("weight_grad_var", "mean"),
    "saturated": ("saturated", "mean"),
    "zero_fraction": ("zero_fraction", "mean"),
    "dead_fraction": ("dead_fraction", "mean"),
    "cosine": ("cosine", "mean"),
}


def _check_range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = value
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from err
    lo, hi = check_float(f"{name}[0]", lo), check_float(f"{name}[1]", hi)
    if not lo < hi:
        raise ValueError(f"{name} must have low < high, got {value!r}")
    return lo, hi


def _check_inputs(config: NetworkConfig, inputs: Any, seeds: int) -> jax.Array | None:
    if inputs is None:
        return None
    x = jnp.asarray(inputs)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"inputs must be a float array, got dtype {x.dtype}")
    want = (config.batch, config.widths[0])
    if x.shape == want:
        return jnp.broadcast_to(x, (seeds, *want))
    if x.shape == (seeds, *want):
        return x
    raise ValueError(
        f"inputs must have shape (batch, in_width) = {want} or (seeds, batch, in_width) = "
        f"{(seeds, *want)} for this config; got {x.shape}"
    )


def propagate(
    config: NetworkConfig,
    seeds: int = 1,
    key: int | jax.Array = 0,
    *,
    inputs: Any = None,
    cotangent: str = "normal",
    act_range: tuple[float, float] = (-1.0, 1.0),
    grad_range: tuple[float, float] = (-1.0, 1.0),
    bins: int = 40,
    saturation_tolerance: float = 0.01,
    chunk_size: int | None = None,
    memory_budget: float | None = None,
    remat: bool = True,
    jit: bool = True,
    prng_impl: str = "philox2x32",
    progress: bool | None = None,
    seed_offset: int = 0,
    devices: int | str | None = None,
    method: str = "dense",
) -> Propagation:
    """Measure per-layer activation and gradient statistics of ``seeds`` sampled networks.

    Args:
      config: the network (:class:`~initjax.config.NetworkConfig`).
      seeds: number of independent networks (>= 1); seed s draws from ``fold_in(key, s)``.
      key: an int seed or a JAX PRNG key.
      inputs: optional input batch, ``(batch, in_width)`` shared by all seeds or
        ``(seeds, batch, in_width)``; by default each seed draws Gaussian inputs as the config says.
      cotangent: the output gradient: ``"normal"`` (i.i.d. N(0, 1), default), ``"mse"`` (squared
        error to random N(0, 1) targets) or ``"xent"`` (softmax cross-entropy to random labels).
      act_range, grad_range: the ranges of the activation and pre-activation-gradient histograms.
      bins: number of histogram bins (40, as the classic demo).
      saturation_tolerance: a bounded activation's output counts as saturated within this fraction
        of its range from a bound.
      chunk_size: seeds per compiled call; by default the number of seeds rounded up to a power
        of two, at most as many as fit in ``memory_budget`` (the padding is skipped, not computed).
      memory_budget: bytes of temporaries a chunk may use (default 2 GiB, or the environment
        variable ``INITJAX_MEMORY_BUDGET``). A single seed above it raises with the estimate.
      remat: redraw each layer's weights in the backward pass instead of storing them all.
      jit: False runs seed by seed without compilation (slow; for debugging).
      prng_impl: the PRNG implementation of an int ``key``. The default, ``"philox2x32"``, drew
        normals 2.8x faster than jax's default ``"threefry2x32"`` on the 2-core development
        machine and, like it, gives every seed the same numbers however seeds are batched
        (``"rbg"``/``"unsafe_rbg"`` do not, so they are refused).
      progress: show a progress bar (default: only if stderr is a terminal and seeds > 1 chunk).
      seed_offset: the first seed index (seeds ``seed_offset .. seed_offset + seeds - 1``).
      method: ``"dense"`` (default) samples every weight matrix; ``"fast"`` samples each layer's
        outputs and gradients exactly in distribution with O(batch x width) random numbers
        (:mod:`initjax.fastpath`, i.i.d. zero-mean Gaussian weights only). Where the fast path does
        not apply, the dense path runs instead and a :class:`FallbackWarning` says why.
      devices: split the seeds of each chunk over this many devices (or ``"all"``) with
        ``jax.shard_map`` on a one-axis mesh; None uses the default device. Every seed draws the
        same random numbers as on one device and its statistics agree to float summation order
        (<= 1e-6 relative measured on 4 simulated CPU devices, whose matmuls share the host's
        threads). Needs a shardable PRNG (``"threefry2x32"``): philox cannot be partitioned in
        current jax and is refused with that explanation.

    Returns:
      :class:`Propagation` with :class:`LayerStats` as numpy arrays of axes ``(seed, layer, ...)``.

    Raises:
      ValueError / TypeError: for bad arguments; the message names the value and what is allowed.
    """
    return _propagate(
        (config,), seeds, key, shared=False, inputs=inputs, cotangent=cotangent,
        act_range=act_range, grad_range=grad_range, bins=bins,
        saturation_tolerance=saturation_tolerance, chunk_size=chunk_size,
        memory_budget=memory_budget, remat=remat, jit=jit, prng_impl=prng_impl,
        progress=progress, seed_offset=seed_offset, devices=devices, method=method,
    )[0]


def shareable(configs: Sequence[NetworkConfig]) -> bool:
    """True if ``configs`` can share one standard-normal weight draw per layer and seed.

    They must agree on every shape and on the input and biases (widths, batch, input law, dtype,
    bias init), and every weight init must be a zero-mean Gaussian ``std * normal(key)`` (see
    ``Initializer.gaussian_std``). Activations, norms and the Gaussian scales may differ.
    """
    first = configs[0]
    same = ("widths", "batch", "input_variance", "input_correlation", "dtype", "bias_init")
    for c in configs:
        if any(getattr(c, f) != getattr(first, f) for f in same):
            return False
        std = getattr(c.init, "gaussian_std", None)
        if std is None or any(std(shape) is None for shape in c.weight_shapes):
            return False
    return True


def propagate_shared(
    configs: Sequence[NetworkConfig], seeds: int = 1, key: int | jax.Array = 0, **kwargs: Any
) -> list[Propagation]:
    """:func:`propagate` for several configs that share one weight draw per layer and seed.

    Schemes that differ only in the scale of Gaussian weights (N(0, 0.01^2), Xavier, He, N(0, 1))
    and in activation or normalization draw the same standard normals ``z`` per layer and seed and
    use ``W = std * z``: the random numbers, the dominant cost, are drawn once for all of them
    (common random numbers), and each config's weights are exactly those of its solo
    :func:`propagate` call. Configs that also agree on everything but the scale (activation, norm)
    run through one traced body, so compile time does not grow with their number. Each layer's
    products ``x_i W_i`` of all configs are one matmul of their stacked inputs with the shared draw
    (the ``n x n`` draw is read once, not once per config: the five-scheme demo at width 4096 went
    from 4.8 to 2.3 s per seed). Statistics equal the solo runs' to float32 rounding (XLA may order
    a reduction or a matmul with more rows differently); they were bitwise in every case tested.
    Configs that cannot share (see :func:`shareable`) raise ValueError.
    """
    configs = tuple(configs)
    if not configs:
        raise ValueError("propagate_shared needs at least one config, got none")
    for i, c in enumerate(configs):
        if not isinstance(c, NetworkConfig):
            raise TypeError(f"configs[{i}] must be a NetworkConfig, got {type(c).__name__}")
    if not shareable(configs):
        raise ValueError(
            "these configs cannot share weight draws: they need equal widths, batch, input law, "
            "dtype and bias init, and zero-mean Gaussian weight inits; run them with propagate()"
        )
    return _propagate(configs, seeds, key, shared=True, **kwargs)


def _propagate(
    configs: tuple[NetworkConfig, ...],
    seeds: int,
    key: int | jax.Array,
    *,
    shared: bool,
    inputs: Any = None,
    cotangent: str = "normal",
    act_range: tuple[float, float] = (-1.0, 1.0),
    grad_range: tuple[float, float] = (-1.0, 1.0),
    bins: int = 40,
    saturation_tolerance: float = 0.01,
    chunk_size: int | None = None,
    memory_budget: float | None = None,
    remat: bool = True,
    jit: bool = True,
    prng_impl: str = "philox2x32",
    progress: bool | None = None,
    seed_offset: int = 0,
    devices: int | str | None = None,
    method: str = "dense",
) -> list[Propagation]:
    import time

    for c in configs:
        if not isinstance(c, NetworkConfig):
            raise TypeError(f"config must be an initjax NetworkConfig, got {type(c).__name__}")
    seeds = check_int("seeds", seeds, minimum=1)
    seed_offset = check_int("seed_offset", seed_offset, minimum=0)
    check_choice("cotangent", cotangent, COTANGENTS)
    bins = check_int("bins", bins, minimum=1)
    opts = _Opts(
        act_range=_check_range("act_range", act_range),
        grad_range=_check_range("grad_range", grad_range),
        bins=bins,
        cotangent=cotangent,
        remat=bool(remat),
        saturation_tolerance=check_float("saturation_tolerance", saturation_tolerance, minimum=0.0),
    )
    check_choice("method", method, METHODS)
    if method == "fast":
        from initjax import fastpath

        reason = "propagate_shared draws weight matrices" if shared else fastpath.fast_applicable(configs[0])
        if reason is None:
            opts = opts._replace(method="fast")
        else:
            method = "dense"
            warnings.warn(f"method='fast' does not apply ({reason}); running the dense path",
                          FallbackWarning, stacklevel=3)
    base_key = _as_key(key, prng_impl)
    impl_name = str(jax.random.key_impl(base_key))
    first = configs[0]
    x = _check_inputs(first, inputs, seeds)

    if method == "fast":
        per_seed = fastpath.fast_estimate_memory(first)
    else:
        per_seed = estimate_memory(first, remat=remat, group=len(configs))
    budget = _memory_budget(memory_budget)
    n_devices = _n_devices(devices, impl_name)
    if chunk_size is None:
        if per_seed > budget:
            raise MemoryError(
                f"one seed of this config needs about {per_seed / 2**30:.2f} GiB of temporaries "
                f"(widths {first.widths}, batch {first.batch}, {len(configs)} config(s)); the memory "
                f"budget is {budget / 2**30:.2f} GiB: raise memory_budget or INITJAX_MEMORY_BUDGET, "
                "or reduce width, depth or batch"
            )
        # per device: each device's share of the seeds, rounded up (the budget is per device)
        chunk_size = _chunk_capacity(-(-seeds // n_devices), int(budget // per_seed))
    else:
        chunk_size = min(check_int("chunk_size", chunk_size, minimum=1), seeds)
    # a chunk holds whole lane groups on every device
    chunk_size *= n_devices

    start = time.perf_counter()
    keys = seed_keys(base_key, np.arange(seed_offset, seed_offset + seeds))
    if jit:
        stats = _run_chunks(configs, opts, keys, x, chunk_size, progress, default_lanes(), n_devices)
    else:
        stats = _run_unjitted(configs, opts, keys, x)
    seconds = time.perf_counter() - start
    results = []
    for config, st in zip(configs, stats, strict=True):
        result = Propagation(
            config=config,
            stats=st,
            act_edges=_edges(opts.act_range, bins),
            grad_edges=_edges(opts.grad_range, bins),
            key=int(key) if isinstance(key, int | np.integer) else None,
            cotangent=cotangent,
            prng_impl=impl_name,
            seconds=seconds / len(configs),
            method=method,
        )
        bad = result.nonfinite_layers
        if bad:
            warnings.warn(
                f"{config.name}: overflow in layers {bad}: non-finite values (statistics there use "
                "the finite entries only; see LayerStats.nonfinite / grad_nonfinite) or variances "
                "beyond float32 (reported as inf)",
                NonFiniteWarning,
                stacklevel=3,
            )
        results.append(result)
    return results


class NonFiniteWarning(RuntimeWarning):
    """A propagation produced inf or NaN values (measured and reported, not an error)."""


class FallbackWarning(UserWarning):
    """``method="fast"`` was asked for a network it does not apply to; the dense path ran."""


def _as_scaled(configs: tuple[NetworkConfig, ...]) -> tuple[tuple[NetworkConfig, ...], np.ndarray | None]:
    """``(scale-free configs, (config, layer) scales)`` when every config has a Gaussian init
    (the scales then enter the program as data: one program serves every scale), else
    ``(configs, None)``."""
    scale_free = [_scale_free(c) for c in configs]
    if not all(v is not None for _, v in scale_free):
        return configs, None
    free = tuple(c for c, _ in scale_free)
    return free, _scale_array(free, [v for _, v in scale_free])


def _run_chunks(configs, opts, keys, x, chunk_size, progress, lanes, n_devices) -> list[LayerStats]:
    impl = str(jax.random.key_impl(keys))
    stds = None
    if opts.method == "dense":
        configs, stds = _as_scaled(configs)
    fn = _compiled(configs, opts, x is not None, lanes, impl, n_devices)
    key_data = jax.random.key_data(keys)
    seeds = keys.shape[0]
    step = lanes * n_devices
    chunk_size = -(-chunk_size // step) * step  # whole lane groups on every device
    pieces = []
    show = sys.stderr.isatty() and seeds > chunk_size if progress is None else bool(progress)
    desc = configs[0].name if len(configs) == 1 else f"{len(configs)} configs"
    with _progress_bar(total=seeds, desc=desc, unit="seed", disable=not show) as bar:
        for lo in range(0, seeds, chunk_size):
            hi = min(lo + chunk_size, seeds)
            idx = np.minimum(np.arange(lo, lo + chunk_size), seeds - 1)  # pad the last chunk
            args = (key_data[idx],) if x is None else (key_data[idx], x[idx])
            valid = np.int32(hi - lo)  # the program skips the padding
            if n_devices > 1:
                args = _shard_seeds(args, n_devices)
                out = fn(*args, stds, valid)
            else:
                out = fn(args[0], None if x is None else args[1], stds, valid)
            pieces.append([LayerStats(*(_host(v)[: hi - lo] for v in st)) for st in out])
            bar.update(hi - lo)
    return [
        LayerStats(*(np.concatenate(parts) for parts in zip(*(p[i] for p in pieces), strict=True)))
        for i in range(len(configs))
    ]


def _shard_seeds(arrays, n_devices: int):
    """Place each array's leading (seed) axis across the first ``n_devices`` devices. Built with
    ``make_array_from_callback``, which also works when the devices span several hosts
    (``jax.distributed``): each process supplies the shards its devices hold."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((n_devices,), ("seeds",), devices=jax.devices()[:n_devices])
    sharding = NamedSharding(mesh, PartitionSpec("seeds"))
    out = []
    for a in arrays:
        host = np.asarray(a)
        out.append(jax.make_array_from_callback(host.shape, sharding, lambda index, h=host: h[index]))
    return tuple(out)


def _host(v: jax.Array) -> np.ndarray:
    """A (possibly multi-host) array as a numpy array on this host."""
    if getattr(v, "is_fully_addressable", True):
        return np.asarray(v)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(v, tiled=True))


def _n_devices(devices: int | str | None, impl: str) -> int:
    if devices is None:
        return 1
    available = len(jax.devices())
    if devices == "all":
        n = available
    else:
        n = check_int("devices", devices, minimum=1)
        if n > available:
            raise ValueError(f"devices={n} but only {available} are visible: {jax.devices()}")
    if n > 1 and impl.startswith("philox"):
        raise ValueError(
            f"prng_impl={impl!r} cannot be split across devices: in jax {jax.__version__} XLA fails "
            "to lower philox's mulhi under sharding. Use prng_impl='threefry2x32' (it draws the "
            "same numbers on 1 device and on many), or devices=None"
        )
    return n


def _run_unjitted(configs, opts, keys, x) -> list[LayerStats]:
    per_seed = []
    configs, stds = _as_scaled(configs) if opts.method == "dense" else (configs, None)
    with jax.disable_jit():
        for s in range(keys.shape[0]):
            out = _seed_stats(configs, opts, keys[s], None if x is None else x[s], stds)
            per_seed.append([LayerStats(*(np.asarray(v) for v in st)) for st in out])
    return [
        LayerStats(*(np.stack(parts) for parts in zip(*(p[i] for p in per_seed), strict=True)))
        for i in range(len(configs))
    ]


def _progress_bar(**kwargs: Any):
    from tqdm.auto import tqdm

    return tqdm(leave=False, dynamic_ncols=True, **kwargs)


def trace(
    config: NetworkConfig,
    seed: int = 0,
    key: int | jax.Array = 0,
    *,
    inputs: Any = None,
    cotangent: str = "normal",
    prng_impl: str = "philox2x32",
) -> dict[str, list[np.ndarray]]:
    """The raw per-layer tensors of one seed's network, exactly as :func:`propagate` draws it.

    For debugging and for checking statistics by hand: returns lists (one ``(batch, units)`` array
    per layer) under ``"x_prev"`` (the layer's input), ``"h"`` (pre-activation), ``"y"`` (activation
    output), ``"out"`` (layer output), ``"dh"`` (dL/dh) and ``"dx"`` (dL/dx); the weights ``"w"``
    ``(n_{l-1}, n_l)`` and biases ``"b"`` per layer; and the output ``"cotangent"`` (dL/dx^L). With
    Gaussian weights the engine computes ``h = (x z) std + b`` from the standard-normal draw ``z``,
    so ``h`` equals ``x_prev @ w + b`` to float32 rounding, not bitwise.
    """
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"config must be an initjax NetworkConfig, got {type(config).__name__}")
    seed = check_int("seed", seed, minimum=0)
    check_choice("cotangent", cotangent, COTANGENTS)
    opts = _Opts((-1.0, 1.0), (-1.0, 1.0), 1, cotangent, False, 0.01)
    k = seed_keys(_as_key(key, prng_impl), [seed])[0]
    x = _check_inputs(config, inputs, 1)
    scaled, stds = _as_scaled((config,))
    run = jax.jit(lambda kk, xx: _seed_tensors(scaled, opts, kk, xx, stds)[0])
    tensors = run(k, None if x is None else x[0])
    names = ("x_prev", "h", "y", "out", "dh", "dx")
    result = {n: [np.asarray(a) for a in t] for n, t in zip(names, tensors, strict=True)}
    keys = _split_seed_key(k)
    params = [_layer_params(config, keys, layer, shape, None if stds is None else stds[0, layer])
              for layer, shape in enumerate(config.weight_shapes)]
    result["w"] = [np.asarray(w) for w, _ in params]
    result["b"] = [np.asarray(b) for _, b in params]
    result["cotangent"] = np.asarray(_cotangent(config, cotangent, jnp.asarray(result["out"][-1]), keys.cotangent))
    return result
