"""The dense sampler: every weight matrix drawn, one stacked matmul per layer for a group.

For each seed, :func:`group_tensors` draws the network (:mod:`initjax.engine.sampling`), pushes
the batch forward and back-propagates the cotangent, returning every layer's
``(x_prev, h, y, out, dh, dx)``.

* Depth is a ``lax.scan`` when all weight matrices have the same shape, so compile time does not
  grow with depth. Layer ``l``'s weights are drawn inside the scan from ``fold_in(weight_key, l)``
  and, with ``remat=True``, drawn again in the backward pass (``jax.checkpoint`` with
  :data:`~initjax.engine.sampling.REMAT_POLICY`) instead of being stored for every layer; the
  ``(batch, width)`` product ``x W`` is kept, so the backward pass redraws but never re-multiplies.
* Scales as data and shared draws: every Gaussian config of a call shares the layer's
  standard-normal draw ``z``. Their inputs are stacked into one product ``[x_1; ...; x_k] z``
  (each config's ``x_i W_i = (x_i z) s_i``), so the ``n x n`` draw is read once per layer and
  pass, not once per config (the matmuls are memory-bound at batch 16). Configs equal up to their
  scale run the rest of the layer through one body, ``lax.map``-ped over their scales, so compile
  time grows with the number of distinct activations/norms, not with the number of configs.
* Gradients with respect to each layer's pre-activation ``h^l`` and output ``x^l`` come from one
  ``jax.vjp`` with zero "probes" added to ``h^l`` and ``x^l``.

References:
  Glorot & Bengio 2010, https://proceedings.mlr.press/v9/glorot10a.html;
  CS231n, "Training Neural Networks I".
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initjax.config import NetworkConfig
from initjax.engine.sampler import Sampler
from initjax.engine.sampling import (
    REMAT_POLICY,
    as_scaled,
    draw_bias,
    draw_cotangent,
    draw_inputs,
    layer_after_product,
    layer_forward,
    product,
    split_seed_key,
    standard_draw,
    weight_key,
)
from initjax.engine.stats import MeasureOptions, stats_of_layers

__all__ = [
    "SAMPLER",
    "applicable",
    "estimate_memory",
    "group_tensors",
    "map_members",
    "member_groups",
    "seed_stats",
    "seed_tensors",
    "ungroup",
]


def member_groups(configs: tuple[NetworkConfig, ...], scaled: bool) -> list[list[int]]:
    """Indices of the configs that run through one traced body: with traced scales (``scaled``)
    the configs are scale-free (:func:`as_scaled`), and equal ones share a body; otherwise each
    config keeps its own."""
    if not scaled:
        return [[i] for i in range(len(configs))]
    out: dict[NetworkConfig, list[int]] = {}
    for i, c in enumerate(configs):
        out.setdefault(c, []).append(i)
    return list(out.values())


def ungroup(groups: list[list[int]], per_group: list[Any], n: int) -> list[Any]:
    """Per config, in config order, its slice of its group's pytree (leading member axis)."""
    result: list[Any] = [None] * n
    for idx, group in zip(groups, per_group, strict=True):
        for j, i in enumerate(idx):
            result[i] = jax.tree.map(lambda v, j=j: v[j], group)
    return result


def map_members(fn, args):
    """``lax.map(fn, args)`` over the leading axis, called directly when it has length 1. After
    the layer's stacked product (one matmul for every config, see :func:`group_tensors`), the
    members of a group run one after the other through the same code; XLA may emit a reduction or
    a matmul with another row count differently, so a member's statistics equal its solo run's to
    float32 rounding (relative ~1e-6), not always bitwise (they were bitwise at every size tried,
    up to width 1024)."""
    n = jax.tree.leaves(args)[0].shape[0]
    if n == 1:
        return jax.tree.map(lambda v: v[None], fn(jax.tree.map(lambda v: v[0], args)))
    return jax.lax.map(fn, args)


def group_tensors(
    configs: tuple[NetworkConfig, ...],
    opts: MeasureOptions,
    seed_key: jax.Array,
    inputs: jax.Array | None,
    stds: jax.Array | None = None,
):
    """Forward and backward for one seed of each config of a group (same shapes, input and seed).

    ``stds``: None, or the ``(config, layer)`` Gaussian scales of scale-free configs (see
    :func:`as_scaled`); then every config uses the layer's one standard-normal draw ``z``, the
    products of all configs are one matmul ``[x_1; ...; x_k] z`` (scaled per config afterwards),
    and equal configs run the rest of the layer through one body, ``lax.map``-ped over their
    scales. Without ``stds`` there is one config, with its initializer's own draw. Returns
    ``(groups, tensors)``: the index lists of :func:`member_groups` and, per group, the per-layer tensors
    ``(x_prev, h, y, out, dh, dx)`` with a leading group-member axis: ``(k, layer, batch, units)``
    arrays when the network is uniform, else lists over layers of ``(k, batch, units)``."""
    first = configs[0]
    keys = split_seed_key(seed_key)
    dtype = first.jnp_dtype
    x0 = draw_inputs(first, keys.inputs) if inputs is None else inputs.astype(dtype)
    batch, depth = x0.shape[0], first.depth
    groups = member_groups(configs, stds is not None)
    stds = None if stds is None else jnp.asarray(stds)
    reps = [configs[idx[0]] for idx in groups]
    scales = [None if stds is None else stds[np.asarray(idx)] for idx in groups]  # (k, layer)
    xs0 = tuple(jnp.broadcast_to(x0, (len(idx), *x0.shape)) for idx in groups)

    def layer_step(xs, layer, shape, ph, px):
        """Every group's layer ``layer``; ``ph``/``px``: per group, (k, batch, units) probes."""
        if stds is not None:
            # one standard-normal draw and one matmul for every member of every group: stacking
            # the members' inputs reads the n_in x n_out draw once, not once per config
            z = standard_draw(keys, layer, shape, dtype)
            stacked = jnp.concatenate(xs) if len(xs) > 1 else xs[0]
            zx = product((stacked.reshape(-1, shape[0]) @ z).reshape(stacked.shape[0], batch, shape[1]))
            bounds = np.cumsum([0] + [x.shape[0] for x in xs])
            products = [zx[lo:hi] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
        outs = []
        for g, (c, x, p_h, p_x) in enumerate(zip(reps, xs, ph, px, strict=True)):
            b = draw_bias(c, keys, layer, shape[1])
            if stds is None:  # one config, not a Gaussian init: the initializer's own draw
                w = c.init(weight_key(keys, layer), shape, dtype)
                outs.append(jax.tree.map(lambda v: v[None], layer_forward(c, x[0], w, b, p_h[0], p_x[0])))
                continue

            def one(args, c=c, b=b):
                zx_, s_, p_h_, p_x_ = args
                return layer_after_product(c, zx_ * s_, b, p_h_, p_x_)

            outs.append(map_members(one, (products[g], scales[g][:, layer], p_h, p_x)))
        return tuple(o[2] for o in outs), tuple(outs)

    if first.uniform:
        n = first.widths[0]

        def body(xs, inp):
            layer, ph, px = inp
            return layer_step(xs, layer, (n, n), ph, px)

        if opts.remat:
            body = jax.checkpoint(body, policy=REMAT_POLICY)

        def forward(ph, px):
            return jax.lax.scan(body, xs0, (jnp.arange(depth), ph, px))

        zeros = tuple(jnp.zeros((depth, len(idx), batch, n), dtype) for idx in groups)
    else:
        shapes = first.weight_shapes
        step = jax.checkpoint(layer_step, static_argnums=(1, 2), policy=REMAT_POLICY) if opts.remat else layer_step

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
    cot = tuple(map_members(lambda xo, c=c: draw_cotangent(c, opts.cotangent, xo, keys.cotangent), xo)
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


def seed_tensors(
    configs: tuple[NetworkConfig, ...],
    opts: MeasureOptions,
    seed_key: jax.Array,
    inputs: jax.Array | None,
    stds: jax.Array | None = None,
):
    """Per config, the per-layer tensors ``(x_prev, h, y, out, dh, dx)`` of one seed: stacked
    ``(layer, batch, units)`` arrays when the network is uniform, else lists of ``(batch, units)``."""
    groups, tensors = group_tensors(configs, opts, seed_key, inputs, stds)
    return ungroup(groups, tensors, len(configs))

def seed_stats(configs, opts: MeasureOptions, seed_key: jax.Array, inputs: jax.Array | None,
                stds: jax.Array | None = None):
    """A tuple with one :class:`LayerStats` (no seed axis) per config of the group; the statistics
    of the configs that share a body are ``lax.map``-ped over them too (one copy of the code)."""
    groups, tensors = group_tensors(configs, opts, seed_key, inputs, stds)
    stats = [map_members(lambda t, act=configs[idx[0]].activation: stats_of_layers(act, opts, *t), group)
             for idx, group in zip(groups, tensors, strict=True)]
    return tuple(ungroup(groups, stats, len(configs)))


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


def applicable(config: NetworkConfig) -> str | None:
    """The dense sampler applies to every network: always None (see :class:`Sampler`)."""
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"config must be an initjax NetworkConfig, got {type(config).__name__}")
    return None


# the protocol's fields in order: name, applicable, estimate_memory, prepare, seed_tensors, seed_stats
SAMPLER = Sampler("dense", applicable, estimate_memory, as_scaled, seed_tensors, seed_stats)
