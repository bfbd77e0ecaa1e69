"""The block engine: per-block statistics of sampled residual networks (any :class:`Network`).

:func:`propagate_blocks` draws ``seeds`` networks from a :class:`~initjax.network.Network` of
Dense and Residual blocks, pushes a batch through them and back-propagates a cotangent, and
returns per-block statistics of the residual stream and of the branch (:class:`BlockStats`, axes
``(seed, block)``). :func:`initjax.propagate` sends every network that is not a plain Dense stack
here; a network with a token axis (``Network.tokens``: transformers, Attention blocks) goes on
to :mod:`initjax.engine.attention` (:func:`~initjax.engine.attention.propagate_attention`,
whose result is an :class:`~initjax.engine.attention.AttentionPropagation`). The blocks (see
:mod:`initjax.network`)::

    Dense:                 x' = phi(norm(m x W + b))        or, preactivation, m phi(norm(x)) W + b
    Residual, norm "pre":  x' = x + alpha * branch(norm(x) / beta)
    Residual, norm "post": x' = norm(x + alpha * branch(x / beta))

Norms have no affine part at initialization (gain 1, shift 0): batch norm uses the batch's
statistics per unit (biased variance, Ioffe & Szegedy's Algorithm 1), layer norm each example's
over its units, RMS norm each example's root mean square. Weight standardization (Brock et al.
2021) replaces each unit's fan-in weights by ``(w - mean) / sqrt(max(n_in var, 1e-4))``, as the NF
repository floors it. Fixup's scalar biases and multipliers (0 and 1 at initialization) and a
learnable alpha's starting value change nothing here.

How it runs: each :class:`~initjax.network.Repeat` stage is one ``lax.scan`` over its blocks, so
compile time does not grow with depth. Block ``b``'s (0-based, over the whole network) branch layer
``j`` draws its weights from ``fold_in(fold_in(weights, b), j)`` and its bias from the same under
the bias key (:func:`~initjax.engine.sampling.split_seed_key`); with ``remat`` the backward pass
draws them again instead of storing every block's (only the ``(batch, width)`` products are kept).
Forward statistics are reduced inside the scan; the gradients dL/dx of the stream after each block
and dL/d(x W) of each branch layer come from one ``jax.vjp`` against zero probes. Seeds are
``lax.map``-ped inside one compiled program per network and chunk capacity.

Spatial streams (``Network.spatial``, e.g. ``(8, 8)``) have shape ``(batch, *spatial, C)``,
channels last. A :class:`~initjax.network.Conv` layer is a stride-1 SAME-padded convolution with
kernel ``(*kernel_size, C_in, C_out)``; a Dense layer there acts per position. Norms on such a
stream: batch norm per channel over ``(batch, *spatial)``, layer and RMS norm per example over
``(*spatial, C)``; weight standardization per output channel over the fan-in ``(*kernel_size,
C_in)``. Moments pool every entry; the channel statistics below reduce over ``(batch, *spatial)``
per channel (Brock et al.'s NHWC signal propagation plots); the cosine is between the examples'
flattened ``(*spatial, C)`` vectors; a conv layer's ``weight_grad_norm`` is ``||dL/dK||_F``.

Statistics pool the batch and the units (ddof 0) and skip non-finite entries, as
:class:`~initjax.engine.stats.LayerStats` does; Brock et al.'s signal-propagation statistics are
per channel (unit) over the batch, then averaged over channels:
``sq_mean = mean_c (mean_b x_bc)^2`` and ``chan_var = mean_c Var_b x_bc``.

References:
  He et al. 2016, "Identity Mappings in Deep Residual Networks", https://arxiv.org/abs/1603.05027.
  Yang & Schoenholz 2017, https://arxiv.org/abs/1712.08969.
  De & Smith 2020, https://arxiv.org/abs/2002.10444.
  Brock, De & Smith 2021, "Characterizing signal propagation to close the performance gap in
  unnormalized ResNets", https://arxiv.org/abs/2101.08692.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initjax._checks import check_choice, check_int
from initjax._precision import DEFAULT_PRECISION, check_precision, matmul_precision
from initjax.engine.block_results import BlockResult
from initjax.engine.executor import (
    check_host_memory,
    chunked_seed_stats,
    default_lanes,
    describe_widths,
    lane_loop,
    plan_chunks,
    unjitted_seed_stats,
)
from initjax.engine.sampling import (
    COTANGENTS,
    REMAT_POLICY,
    base_key,
    draw_cotangent,
    draw_inputs,
    product,
    seed_keys,
    split_seed_key,
)
from initjax.engine.stats import (
    finite_moments,
    mean_cosine,
    overflowed_rows,
    seed_mean_sd,
    weight_grad_stats,
)
from initjax.network import Conv, Dense, Network, Residual

__all__ = [
    "BlockPropagation",
    "BlockStats",
    "apply_dense",
    "conv",
    "compiled_program",
    "block_params",
    "estimate_memory",
    "forward_stats",
    "normalize",
    "propagate_blocks",
    "standardize_weights",
    "trace_blocks",
    "weight_grad_norm",
]


class BlockStats(NamedTuple):
    """Per-block statistics of sampled networks; axes ``(seed, block)`` unless stated.

    ``act_*`` describe the stream ``x^l`` after block ``l`` (for a Dense block, its output);
    ``branch_*`` describe ``alpha * branch(.)`` before the add (NaN for a Dense block).
    """

    act_mean: Any  # mean of x^l over batch and units
    act_var: Any  # variance of x^l over batch and units
    act_second_moment: Any  # mean of (x^l)^2: the mean-field q^l
    act_sq_mean: Any  # Brock et al.: mean over units of (batch mean)^2
    act_chan_var: Any  # Brock et al.: mean over units of the batch variance
    cosine: Any  # mean pairwise cosine between the examples' x^l
    branch_mean: Any
    branch_var: Any
    branch_second_moment: Any
    branch_sq_mean: Any
    branch_chan_var: Any
    branch_share: Any  # branch_var / Var(x + alpha branch) (the sum before a post norm)
    nonfinite: Any  # int32 count of non-finite entries of x^l and of the branch output
    grad_var: Any  # variance of dL/dx^l
    grad_second_moment: Any  # mean of (dL/dx^l)^2: the mean-field chi^l
    grad_nonfinite: Any  # int32 count of non-finite entries of dL/dx^l
    weight_grad_norm: Any  # (seed, block, layer): Frobenius norm of dL/dW of each layer of the
    #                        block (a Dense block: its one layer); NaN past a block's last layer


# name in the JSON table -> BlockStats field
_TABLE_FIELDS = {
    "act_mean": "act_mean",
    "act_var": "act_var",
    "act_second_moment": "act_second_moment",
    "act_sq_mean": "act_sq_mean",
    "act_chan_var": "act_chan_var",
    "cosine": "cosine",
    "branch_var": "branch_var",
    "branch_sq_mean": "branch_sq_mean",
    "branch_chan_var": "branch_chan_var",
    "branch_share": "branch_share",
    "grad_var": "grad_var",
    "grad_second_moment": "grad_second_moment",
}


@dataclasses.dataclass(frozen=True)
class BlockPropagation(BlockResult):
    """The result of :func:`propagate_blocks` (and of :func:`initjax.propagate` for a network
    with residual blocks).

    Attributes:
      network: the :class:`~initjax.network.Network`.
      stats: :class:`BlockStats`, numpy arrays with axes ``(seed, block, ...)``.
      key: the integer seed of the base key (None if a key array was given).
      cotangent: how the output gradient was drawn.
      prng_impl: the PRNG implementation.
      seconds: wall time (compile included).
      precision: the matmul precision of the run (``"highest"`` unless asked otherwise; see
        :mod:`initjax._precision`).
      memory_budget: the bytes of temporaries per chunk the seeds were chunked to (NaN if not
        recorded); memory_budget_source: where it came from (as in
        :class:`~initjax.engine.Propagation`; ``"unknown"`` if not recorded).
    """

    STATS = BlockStats  # not a field: the statistics' type, for load()

    network: Network
    stats: BlockStats
    key: int | None = 0
    cotangent: str = "normal"
    prng_impl: str = "philox2x32"
    seconds: float = float("nan")
    precision: str = DEFAULT_PRECISION
    memory_budget: float = float("nan")
    memory_budget_source: str = "unknown"

    @property
    def nonfinite_blocks(self) -> list[int]:
        """1-based blocks in which some seed had a non-finite value, forward or backward, or a
        second moment beyond float32 (inf)."""
        st = self.stats
        bad = (np.asarray(st.nonfinite) + np.asarray(st.grad_nonfinite)).sum(axis=0) > 0
        for field in ("act_second_moment", "branch_second_moment", "grad_second_moment"):
            bad |= np.isinf(np.asarray(getattr(st, field))).any(axis=0)
        return [int(i) + 1 for i in np.flatnonzero(bad)]

    def layer_table(self) -> list[dict[str, Any]]:
        """One dict per block (``"layer"`` and ``"block"``: its 1-based index): each statistic's
        mean over seeds (finite values only; NaN if none) and, as ``<name>_sd``, its standard
        deviation; ``nonfinite`` sums forward and backward counts. This is the JSON of
        ``initjax propagate --arch residual --json``."""
        rows = []
        for i in range(self.network.depth):
            row: dict[str, Any] = {"layer": i + 1, "block": i + 1}
            for name, field in _TABLE_FIELDS.items():
                values = np.asarray(getattr(self.stats, field))[:, i].astype(np.float64)
                row[name], row[name + "_sd"] = seed_mean_sd(values)
            norms = np.asarray(self.stats.weight_grad_norm)[:, i].astype(np.float64)
            row["weight_grad_norm"] = [float(np.nanmean(c)) if np.isfinite(c).any() else float("nan")
                                       for c in norms.T]
            row["nonfinite"] = int(np.asarray(self.stats.nonfinite)[:, i].sum()
                                   + np.asarray(self.stats.grad_nonfinite)[:, i].sum())
            rows.append(row)
        return rows


# -- the sampled network --------------------------------------------------------------------------
def normalize(norm: str, x: jax.Array, eps: float) -> jax.Array:
    """``norm`` of ``x`` (batch, units) or (batch, *spatial, channels) at initialization:
    ``"batch"`` per unit (channel) over the batch (and positions), ``"layer"`` per example over
    its units (positions and channels; centred), ``"rms"`` per example by its root mean square
    over the same (not centred), ``"none"`` the identity. Computed in float32 at least."""
    if norm == "none":
        return x
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    per_example = tuple(range(1, x.ndim))
    if norm == "rms":
        out = xf * jax.lax.rsqrt((xf * xf).mean(axis=per_example, keepdims=True) + eps)
    else:
        axis = tuple(range(x.ndim - 1)) if norm == "batch" else per_example
        mean = xf.mean(axis=axis, keepdims=True)
        var = ((xf - mean) ** 2).mean(axis=axis, keepdims=True)
        out = (xf - mean) * jax.lax.rsqrt(var + eps)
    return out.astype(x.dtype)


def standardize_weights(w: jax.Array) -> jax.Array:
    """Brock et al.'s scaled weight standardization at gain 1: each column (unit) of ``w``
    ``(n_in, n_out)`` becomes ``(w - mean) / sqrt(max(n_in var, 1e-4))``, mean and variance over
    the fan-in, so every unit's fan-in weights have mean 0 and squared norm 1. A conv kernel
    ``(*kernel_size, C_in, C_out)`` is standardized per output channel over its fan-in
    ``(*kernel_size, C_in)`` (``n_in = prod(kernel_size) C_in``)."""
    if w.ndim > 2:
        return standardize_weights(w.reshape(-1, w.shape[-1])).reshape(w.shape)
    wf = w.astype(jnp.promote_types(w.dtype, jnp.float32))
    mean = wf.mean(axis=0, keepdims=True)
    var = ((wf - mean) ** 2).mean(axis=0, keepdims=True)
    return ((wf - mean) * jax.lax.rsqrt(jnp.maximum(var * w.shape[0], 1e-4))).astype(w.dtype)


def block_params(layer: Dense | Conv, keys, block, j: int, n_in: int, dtype,
                 spatial_rank: int = 0) -> tuple[jax.Array, jax.Array]:
    """Layer ``j`` of block ``block``'s ``(W, b)`` (``W`` standardized if the layer says so); a
    Conv layer's ``W`` is its kernel ``(*kernel_size, n_in, C_out)`` on ``spatial_rank`` axes."""
    wk = jax.random.fold_in(jax.random.fold_in(keys.weights, block), j)
    bk = jax.random.fold_in(jax.random.fold_in(keys.biases, block), j)
    w = layer.init(wk, _weight_shape(layer, n_in, spatial_rank), dtype)
    if layer.weight_standardization:
        w = standardize_weights(w)
    return w, layer.bias_init(bk, (layer.width,), dtype)


def _weight_shape(layer: Dense | Conv, n_in: int, spatial_rank: int) -> tuple[int, ...]:
    if isinstance(layer, Conv):
        return (*layer.kernel_shape(spatial_rank), n_in, layer.width)
    return (n_in, layer.width)


_CONV_SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"), 3: ("NDHWC", "DHWIO", "NDHWC")}


def conv(x: jax.Array, k: jax.Array) -> jax.Array:
    """Stride-1 SAME-padded convolution (cross-correlation, as Flax and XLA compute it) of ``x``
    ``(batch, *spatial, C_in)`` with ``k`` ``(*kernel_size, C_in, C_out)``:
    ``y[b, p, o] = sum_{d, i} x[b, p + d - (kernel_size - 1) // 2, i] k[d, i, o]``, zeros past the
    border (for even kernel sizes XLA pads one more zero after than before)."""
    rank = x.ndim - 2
    if rank not in _CONV_SPECS:
        raise ValueError(f"convolutions cover 1 to 3 spatial axes, got {rank} (input shape {x.shape})")
    return jax.lax.conv_general_dilated(x, k, (1,) * rank, "SAME", dimension_numbers=_CONV_SPECS[rank])


def _product(layer: Dense | Conv, u: jax.Array, w: jax.Array) -> jax.Array:
    return conv(u, w) if isinstance(layer, Conv) else u @ w


def apply_dense(layer: Dense | Conv, x: jax.Array, w: jax.Array, b: jax.Array, probe: jax.Array):
    """One Dense or Conv layer; returns ``(output, the product's input)``. ``probe`` (zeros, added
    to the product ``u W``, or ``conv(u, K)``) carries dL/d(u W) back."""
    def norm(v):
        return normalize(layer.norm, v, layer.norm_eps)

    act = layer.activation
    if layer.preactivation:
        u = act(norm(x)) if layer.norm_position == "before" else norm(act(x))
        out = layer.multiplier * (product(_product(layer, u, w)) + probe)
        return out + b.reshape((1,) * (out.ndim - 1) + b.shape), u
    h = layer.multiplier * (product(_product(layer, x, w)) + probe)
    h = h + b.reshape((1,) * (h.ndim - 1) + b.shape)
    return (act(norm(h)) if layer.norm_position == "before" else norm(act(h))), x


def _channel_stats(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Brock et al.'s ``(mean_c (mean_b x)^2, mean_c Var_b x)`` over finite entries (the mean and
    variance per channel over the batch and every spatial position)."""
    xf = x.astype(jnp.float32).reshape(-1, x.shape[-1])
    finite = jnp.isfinite(xf)
    n = jnp.maximum(finite.sum(axis=0, keepdims=True), 1)
    xz = jnp.where(finite, xf, 0.0)
    mean = xz.sum(axis=0, keepdims=True) / n
    var = jnp.where(finite, (xz - mean) ** 2, 0.0).sum(axis=0, keepdims=True) / n
    return (mean * mean).mean(), var.mean()


def forward_stats(out: jax.Array, f: jax.Array | None, total: jax.Array | None) -> dict[str, jax.Array]:
    """One block's forward :class:`BlockStats` fields from its output ``out`` (the stream), its
    scaled branch output ``f`` and the sum ``total = x + f`` before a post norm (``f`` and
    ``total`` None for a Dense block: the branch fields are NaN)."""
    s: dict[str, jax.Array] = {}
    s["act_mean"], s["act_var"], s["act_second_moment"], count = finite_moments(out)
    s["act_sq_mean"], s["act_chan_var"] = _channel_stats(out)
    s["cosine"] = mean_cosine(out.reshape(out.shape[0], -1))
    bad = out.size - count
    nan = jnp.float32(jnp.nan)
    if f is None:
        for name in ("branch_mean", "branch_var", "branch_second_moment", "branch_sq_mean",
                     "branch_chan_var", "branch_share"):
            s[name] = nan
    else:
        s["branch_mean"], s["branch_var"], s["branch_second_moment"], f_count = finite_moments(f)
        s["branch_sq_mean"], s["branch_chan_var"] = _channel_stats(f)
        _, total_var, _, _ = finite_moments(total)
        s["branch_share"] = s["branch_var"] / total_var
        bad = bad + f.size - f_count
    s["nonfinite"] = bad.astype(jnp.int32)
    return s


def _block_layers(block) -> tuple[Dense | Conv, ...]:
    return block.branch if isinstance(block, Residual) else (block,)


def _stage_plan(network: Network) -> list[tuple[Any, int, int, int, np.ndarray, float]]:
    """Per run of blocks: ``(block, count, first block index, input width, betas, alpha)``. A
    stage whose first block changes the width is split: that block alone, then the rest (a scan
    carries one shape)."""
    plan, start, width = [], 0, network.in_width
    variances = network.expected_stream_variance()
    for stage in network.stages:
        block = stage.block
        counts = [stage.count]
        if block.out_width(width) != width and stage.count > 1:
            counts = [1, stage.count - 1]
        for count in counts:
            if isinstance(block, Residual):
                alpha = network.branch_scale(block)
                v = np.asarray(variances[start:start + count], np.float64)
                betas = np.sqrt(v) if block.beta == "expected" else np.ones(count)
            else:
                alpha, betas = float("nan"), np.ones(count)
            plan.append((block, count, start, width, betas.astype(np.float32), alpha))
            start += count
            width = block.out_width(width)
    return plan


def _max_layers(network: Network) -> int:
    return max(len(_block_layers(stage.block)) for stage in network.stages)


def _flat(x: jax.Array) -> jax.Array:
    """(batch, everything else), the layout :func:`overflowed_rows` and cosines take."""
    return x.reshape(x.shape[0], -1)


def weight_grad_norm(layer: Dense | Conv, x_in: jax.Array, d: jax.Array) -> jax.Array:
    """``||dL/dW||_F`` of a layer from its product's input ``x_in`` and ``d = dL/d(product)``.

    Dense: ``G = sum over examples (and positions) of x_in^T d`` via Gram matrices
    (:func:`~initjax.engine.stats.weight_grad_stats`). Conv: ``G = dL/dK``, the vector-Jacobian
    product of ``conv(x_in, K)`` with respect to ``K``, both factors first divided by their max-abs
    so that huge-but-finite values do not overflow."""
    if not isinstance(layer, Conv):
        return weight_grad_stats(x_in.reshape(-1, x_in.shape[-1]), d.reshape(-1, d.shape[-1]))[2]
    x = x_in.astype(jnp.float32)
    g = d.astype(jnp.float32)
    sx = jnp.maximum(jnp.max(jnp.abs(x)), jnp.float32(1e-30))
    sg = jnp.maximum(jnp.max(jnp.abs(g)), jnp.float32(1e-30))
    shape = (*layer.kernel_shape(x.ndim - 2), x.shape[-1], g.shape[-1])
    _, vjp = jax.vjp(lambda k: conv(x / sx, k), jnp.zeros(shape, jnp.float32))
    (gk,) = vjp(g / sg)
    return jnp.sqrt(jnp.sum(gk * gk)) * (sx * sg)


def seed_block_stats(network: Network, cotangent: str, remat: bool, seed_key: jax.Array,
                     inputs: jax.Array | None, raw: bool = False) -> dict[str, jax.Array]:
    """One seed's per-block statistics (a dict of :class:`BlockStats` fields, axis ``block``);
    with ``raw``, the tensors instead (see :func:`trace_blocks`)."""
    keys = split_seed_key(seed_key)
    dtype = network.jnp_dtype
    x0 = draw_inputs(network, keys.inputs) if inputs is None else inputs.astype(dtype)
    batch = x0.shape[0]
    spatial = tuple(network.spatial)
    rank = len(spatial)
    plan = _stage_plan(network)
    m_max = _max_layers(network)

    def stage_fn(block, start, n_in):
        layers = _block_layers(block)

        def body(x, inp):
            b, beta, p_out, p_layers = inp
            widths = [n_in] + [layer.width for layer in layers]
            ins = []
            if isinstance(block, Residual):
                alpha = network.branch_scale(block)
                u = normalize(block.norm, x, block.norm_eps) if block.norm_position == "pre" else x
                u = u / beta.astype(dtype)
            else:
                u = x
            for j, layer in enumerate(layers):
                w, bias = block_params(layer, keys, b, j, widths[j], dtype, rank)
                u, layer_in = apply_dense(layer, u, w, bias, p_layers[j])
                ins.append(layer_in)
            if isinstance(block, Residual):
                f = alpha * u
                total = x + f
                out = normalize(block.norm, total, block.norm_eps) if block.norm_position == "post" else total
                stats = {"x": out, "branch": f} if raw else forward_stats(out, f, total)
                bad_rows = overflowed_rows([_flat(out), _flat(f)])
            else:
                out = u
                stats = {"x": out, "branch": jnp.full_like(out, jnp.nan)} if raw else forward_stats(out, None, None)
                bad_rows = overflowed_rows([_flat(out)])
            return out + p_out, (stats, tuple(ins), bad_rows)

        if remat:
            body = jax.checkpoint(body, policy=REMAT_POLICY)
        return body

    def forward(p_outs, p_layers):
        x, per_stage = x0, []
        for (block, count, start, n_in, betas, _), p_o, p_l in zip(plan, p_outs, p_layers, strict=True):
            xs = (jnp.arange(start, start + count), jnp.asarray(betas), p_o, p_l)
            if block.out_width(n_in) == n_in:
                x, aux = jax.lax.scan(stage_fn(block, start, n_in), x, xs)
            else:  # a block that changes the width runs alone (the plan gives it count 1)
                x, aux = stage_fn(block, start, n_in)(x, jax.tree.map(lambda v: v[0], xs))
                aux = jax.tree.map(lambda v: v[None], aux)
            per_stage.append(aux)
        return x, per_stage

    zero_out, zero_layers = [], []
    for block, count, _, n_in, _, _ in plan:
        zero_out.append(jnp.zeros((count, batch, *spatial, block.out_width(n_in)), dtype))
        zero_layers.append(tuple(jnp.zeros((count, batch, *spatial, layer.width), dtype)
                                 for layer in _block_layers(block)))
    x_out, vjp, per_stage = jax.vjp(forward, zero_out, zero_layers, has_aux=True)
    cot = draw_cotangent(network, cotangent, x_out, keys.cotangent)
    d_outs, d_layers = vjp(cot)
    # an example that overflowed anywhere has no meaningful gradient anywhere (relu'(nan) = 0 would
    # report it as a vanishing one): its gradient rows count as non-finite at every block
    bad = jnp.concatenate([rows for _, _, rows in per_stage]).any(axis=0)  # (batch,)
    bad = bad.reshape((1, batch) + (1,) * (rank + 1))
    d_outs = [jnp.where(bad, jnp.nan, d) for d in d_outs]
    d_layers = [tuple(jnp.where(bad, jnp.nan, d) for d in ds) for ds in d_layers]
    per_stage = [(stats, ins) for stats, ins, _ in per_stage]

    if raw:
        return {"x0": x0, "cotangent": cot,
                "x": [t for stats, _ in per_stage for t in stats["x"]],
                "branch": [t for stats, _ in per_stage for t in stats["branch"]],
                "dx": [t for d_o in d_outs for t in d_o],
                "layer_inputs": [tuple(v[i] for v in ins) for _, ins in per_stage for i in range(ins[0].shape[0])],
                "d_product": [tuple(v[i] for v in d_l) for d_l in d_layers for i in range(d_l[0].shape[0])]}
    result: dict[str, list[jax.Array]] = {}
    for (stats, ins), d_o, d_l, (block, *_) in zip(per_stage, d_outs, d_layers, plan, strict=True):
        for name, v in stats.items():
            result.setdefault(name, []).append(v)
        _, g_var, g_m2, g_count = jax.vmap(finite_moments)(d_o)
        result.setdefault("grad_var", []).append(g_var)
        result.setdefault("grad_second_moment", []).append(g_m2)
        result.setdefault("grad_nonfinite", []).append((d_o[0].size - g_count).astype(jnp.int32))
        norms = [jax.vmap(functools.partial(weight_grad_norm, layer))(x_in, d)
                 for layer, x_in, d in zip(_block_layers(block), ins, d_l, strict=True)]
        count = d_o.shape[0]
        norms += [jnp.full((count,), jnp.nan, jnp.float32)] * (m_max - len(norms))
        result.setdefault("weight_grad_norm", []).append(jnp.stack(norms, axis=1))
    return {k: jnp.concatenate(v) for k, v in result.items()}


def trace_blocks(
    network: Network,
    seed: int = 0,
    key: int | jax.Array = 0,
    *,
    inputs: Any = None,
    cotangent: str = "normal",
    prng_impl: str = "philox2x32",
    precision: str | None = None,
) -> dict[str, Any]:
    """The raw tensors of one seed's network, exactly as :func:`propagate_blocks` draws it.

    For debugging and for checking the statistics by hand. Returns numpy arrays: ``"x0"`` (the
    input batch); per block, ``"x"`` (the stream after it), ``"branch"`` (``alpha * branch``
    before the add; NaN for a Dense block), ``"dx"`` (dL/dx of the stream after it); per block, a
    tuple over its layers of ``"layer_inputs"`` (what multiplies ``W``), ``"d_product"``
    (dL/d(u W)), ``"w"`` and ``"b"`` (the drawn, possibly standardized, weights and biases); and
    the output ``"cotangent"``. ``precision``: the matmul precision, as in
    :func:`propagate_blocks`.
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be an initjax Network, got {type(network).__name__}")
    if network.tokens is not None:  # a token stream: the attention engine
        from initjax.engine.attention import trace_attention

        return trace_attention(network, seed, key, inputs=inputs, cotangent=cotangent,
                               prng_impl=prng_impl, precision=precision)
    seed = check_int("seed", seed, minimum=0)
    precision = check_precision(precision)
    check_choice("cotangent", cotangent, COTANGENTS)
    _check_spatial_cotangent(network, cotangent)
    k = seed_keys(base_key(key, prng_impl), [seed])[0]
    x = _check_inputs(network, inputs, 1)
    with matmul_precision(precision):
        run = jax.jit(lambda kk, xx: seed_block_stats(network, cotangent, False, kk, xx, raw=True))
        out = jax.tree.map(np.asarray, run(k, None if x is None else x[0]))
        keys = split_seed_key(k)
        out["w"], out["b"] = [], []
        width, b = network.in_width, 0
        for block in network.blocks:
            ws, bs, n = [], [], width
            for j, layer in enumerate(_block_layers(block)):
                w, bias = block_params(layer, keys, b, j, n, network.jnp_dtype, len(network.spatial))
                ws.append(np.asarray(w))
                bs.append(np.asarray(bias))
                n = layer.width
            out["w"].append(tuple(ws))
            out["b"].append(tuple(bs))
            width, b = block.out_width(width), b + 1
    return out


def estimate_memory(network: Network, *, remat: bool = True) -> int:
    """Estimated peak bytes of temporaries for one seed: about four copies of the largest weight
    matrix while it is drawn (all of them without ``remat``), and about six ``(batch, width)``
    tensors kept per layer and block (stream, probes, gradients, layer inputs), times the spatial
    positions of a spatial stream."""
    itemsize = max(network.jnp_dtype.itemsize, 4)
    shapes, width = [], network.in_width
    for block in network.blocks:
        n = width
        for layer in _block_layers(block):
            shapes.append(math.prod(_weight_shape(layer, n, len(network.spatial))))
            n = layer.width
        width = block.out_width(width)
    weights = 4 * max(shapes) + (0 if remat else sum(shapes))
    kept = 6 * network.batch * math.prod(network.spatial) * (sum(network.widths[1:]) + sum(
        layer.width for block in network.blocks for layer in _block_layers(block)))
    return int((weights + kept) * itemsize)


_COMPILED: dict[tuple, Any] = {}


def compiled_program(network: Network, cotangent: str, remat: bool, with_inputs: bool, lanes: int, impl: str):
    """The compiled program of a chunk: seeds vmapped ``lanes`` at a time in a loop that stops
    after the ``valid`` real seeds (the padding of the last chunk is skipped). Cached per network
    and options, so a second call with the same network does not compile again."""
    cache_key = (network, cotangent, remat, with_inputs, lanes, impl)
    if cache_key in _COMPILED:
        return _COMPILED[cache_key]

    def one(k, x):
        return seed_block_stats(network, cotangent, remat, k, x if with_inputs else None)

    lane_group = jax.vmap(one)

    def run(key_data, x, valid):
        keys = jax.random.wrap_key_data(key_data, impl=impl)
        return lane_loop(lane_group, keys, x if with_inputs else None, valid, lanes)

    _COMPILED[cache_key] = jax.jit(run)
    return _COMPILED[cache_key]


def propagate_blocks(
    network: Network,
    seeds: int = 1,
    key: int | jax.Array = 0,
    *,
    inputs: Any = None,
    cotangent: str = "normal",
    chunk_size: int | None = None,
    memory_budget: float | None = None,
    remat: bool = True,
    jit: bool = True,
    prng_impl: str = "philox2x32",
    progress: bool | None = None,
    seed_offset: int = 0,
    precision: str | None = None,
) -> BlockPropagation:
    """Per-block statistics of ``seeds`` sampled networks (see the module docstring).

    >>> from initjax.network import Dense, Network, Repeat, Residual
    >>> net = Network(64, (Repeat(Residual((Dense(64, "he_normal", "relu", preactivation=True),),
    ...                                    alpha=1.0), 4),), batch=8)
    >>> result = propagate_blocks(net, seeds=2)
    >>> result.stats.act_var.shape  # (seed, block)
    (2, 4)

    Args:
      network: a :class:`~initjax.network.Network` (Dense and Residual blocks); one with a token
        axis (``tokens``, Attention blocks) is measured by
        :func:`initjax.engine.attention.propagate_attention` and returns its
        :class:`~initjax.engine.attention.AttentionPropagation`.
      seeds: number of independent networks (>= 1); seed s draws from ``fold_in(key, s)``.
      key: an int seed or a JAX PRNG key.
      inputs: ``(batch, in_width)`` shared by all seeds or ``(seeds, batch, in_width)``; by
        default each seed draws Gaussian inputs as the network says.
      cotangent: ``"normal"``, ``"mse"`` or ``"xent"`` (see :func:`initjax.propagate`).
      chunk_size: seeds per compiled call (default: as many as ``memory_budget`` holds, rounded
        to a power of two).
      memory_budget: bytes of temporaries a chunk may use (default ``INITJAX_MEMORY_BUDGET``,
        else measured: 3/4 of an accelerator's free memory, 1/4 of the host's available RAM on
        CPU, 2 GiB where neither is known; see :func:`initjax.propagate`); recorded in the result.
      remat: draw each block's weights again in the backward pass instead of keeping them.
      jit: False runs seed by seed without compilation (slow; for debugging).
      prng_impl: the PRNG implementation of an int ``key``.
      progress: show a progress bar (default: only on a terminal and with more than one chunk).
      seed_offset: the first seed index.
      precision: the precision of every matmul and convolution, ``"highest"`` (None, the default:
        float32-exact on every backend), ``"high"`` or ``"default"`` (the backend's fastest);
        see :func:`initjax.propagate` for the error measured on a GPU (issue 13's H200:
        5e-5..1e-4 relative for ``"default"``). Identical numbers on CPU.

    Raises:
      ValueError / TypeError: for bad arguments, naming the value; MemoryError when one seed
        exceeds the budget (with the estimate).
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be an initjax Network, got {type(network).__name__}")
    if network.tokens is not None:  # a token stream: the attention engine
        from initjax.engine.attention import propagate_attention

        return propagate_attention(
            network, seeds, key, inputs=inputs, cotangent=cotangent, chunk_size=chunk_size,
            memory_budget=memory_budget, remat=remat, jit=jit, prng_impl=prng_impl,
            progress=progress, seed_offset=seed_offset, precision=precision)
    seeds = check_int("seeds", seeds, minimum=1)
    # before anything walks the blocks: a huge seed count or depth is refused with its estimate
    layers = max(len(_block_layers(s.block)) for s in network.stages)
    check_host_memory(seeds, network.depth, len(BlockStats._fields) + layers, "block engine")
    seed_offset = check_int("seed_offset", seed_offset, minimum=0)
    check_choice("cotangent", cotangent, COTANGENTS)
    _check_spatial_cotangent(network, cotangent)
    precision = check_precision(precision)
    remat, jit = bool(remat), bool(jit)
    root = base_key(key, prng_impl)
    impl = str(jax.random.key_impl(root))
    x = _check_inputs(network, inputs, seeds)
    per_seed = estimate_memory(network, remat=remat)
    spatial = f", spatial {network.spatial}" if network.spatial else ""
    plan = plan_chunks(seeds, per_seed, chunk_size=chunk_size, memory_budget=memory_budget,
                       devices=None, impl=impl, noun="network",
                       what=f"{describe_widths(network.widths, 'block')}{spatial}, batch {network.batch}")
    budget, lanes = plan.budget, default_lanes()
    chunk_size = -(-plan.chunk_size // lanes) * lanes

    start = time.perf_counter()
    keys = seed_keys(root, np.arange(seed_offset, seed_offset + seeds))
    with matmul_precision(precision):  # traced and called at it: jit's cache keys on the precision
        stats = _run(network, cotangent, remat, jit, keys, x, chunk_size, lanes, progress)
    seconds = time.perf_counter() - start
    return BlockPropagation(
        network=network,
        stats=BlockStats(**stats),
        key=int(key) if isinstance(key, int | np.integer) else None,
        cotangent=cotangent,
        prng_impl=impl,
        seconds=seconds,
        precision=precision,
        memory_budget=budget.nbytes,
        memory_budget_source=budget.source,
    )


def _run(network, cotangent, remat, jit, keys, x, chunk_size, lanes, progress) -> dict[str, np.ndarray]:
    """The statistics of ``keys``' seeds, in compiled chunks (or seed by seed without jit)."""
    impl = str(jax.random.key_impl(keys))
    if jit:
        fn = compiled_program(network, cotangent, remat, x is not None, lanes, impl)
        return chunked_seed_stats(fn, keys, x, chunk_size, desc=network.name, progress=progress)
    return unjitted_seed_stats(lambda k, xs: seed_block_stats(network, cotangent, remat, k, xs),
                               keys, x)


def _check_inputs(network: Network, inputs: Any, seeds: int) -> jax.Array | None:
    if inputs is None:
        return None
    x = jnp.asarray(inputs)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"inputs must be a float array, got dtype {x.dtype}")
    want = (network.batch, *network.spatial, network.in_width)
    if x.shape == want:
        return jnp.broadcast_to(x, (seeds, *want))
    if x.shape == (seeds, *want):
        return x
    where = "(batch, *spatial, in_width)" if network.spatial else "(batch, in_width)"
    raise ValueError(f"inputs must have shape {where} = {want} or (seeds, {where[1:]} = "
                     f"{(seeds, *want)} for this network; got {x.shape}")


def _check_spatial_cotangent(network: Network, cotangent: str) -> None:
    if network.spatial and cotangent == "xent":
        raise ValueError("cotangent='xent' treats the output units as logits and needs a stream without "
                         f"spatial axes; this network has spatial={network.spatial}: use 'normal' or 'mse'")
