"""Per-layer statistics of a network's tensors: the engine's measurements.

Everything here is a pure function of one layer's ``(batch, units)`` tensors (no seed or layer
axis): the samplers (:mod:`initjax.engine.dense`, :mod:`initjax.engine.fast`) and
:func:`initjax.probe` produce the tensors, and :func:`stats_of_layers` turns them into
:class:`LayerStats`, vmapped over layers and seeds by the caller.

* Non-finite values (N(0, 1) weights overflow deep down) are counted per layer; every statistic is
  computed over the finite entries only and with a max-abs rescaling, so huge-but-finite values do
  not overflow when squared. Nothing raises; a layer with no finite entry gets NaN statistics and
  a non-finite count equal to its size.
* The weight gradient ``G^l = x^{l-1 T} delta^l`` is never formed: its squared Frobenius norm is
  the Gram identity ``||X^T D||_F^2 = tr((X X^T)(D D^T))`` over the ``batch x batch`` Gram
  matrices.
* Histograms follow ``numpy.histogram`` exactly (same edges, same edge corrections).

References:
  Glorot & Bengio 2010, https://proceedings.mlr.press/v9/glorot10a.html (Figures 6-8).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initjax._checks import check_float, check_int

__all__ = [
    "LayerStats",
    "MeasureOptions",
    "measure_layers",
    "histogram",
    "histogram_edges",
    "finite_moments",
    "mean_cosine",
    "weight_grad_stats",
    "layer_stats",
    "stats_of_layers",
    "check_range",
    "percentiles",
    "moments",
    "seed_mean_sd",
]


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


def finite_moments(x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
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


def histogram_edges(value_range: tuple[float, float], bins: int) -> np.ndarray:
    """The ``bins + 1`` float32 edges of :func:`histogram` over ``value_range``."""
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
    edges = jnp.asarray(histogram_edges(value_range, bins))
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


def mean_cosine(x: jax.Array) -> jax.Array:
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


def weight_grad_stats(x_prev: jax.Array, delta: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
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


class MeasureOptions(NamedTuple):
    """Static measurement options (hashable: part of the compile-cache key).

    >>> MeasureOptions((-1.0, 1.0), (-1.0, 1.0), 40, "normal", True, 0.01).method
    'dense'
    """

    act_range: tuple[float, float]
    grad_range: tuple[float, float]
    bins: int
    cotangent: str
    remat: bool
    saturation_tolerance: float
    method: str = "dense"  # the sampler: "dense" (weight matrices) or "fast" (initjax.engine.fast)


def layer_stats(act: Any, opts: MeasureOptions, h, y, out, dh, da, x_prev) -> dict[str, jax.Array]:
    """All statistics of one layer from its tensors (each (batch, units)); ``act`` is the
    :class:`~initjax.activations.Activation` whose bounds define saturation."""
    stats: dict[str, jax.Array] = {}
    stats["preact_mean"], stats["preact_var"], stats["preact_second_moment"], h_count = finite_moments(h)
    stats["act_mean"], stats["act_var"], _, y_count = finite_moments(y)
    stats["act_std"] = jnp.sqrt(stats["act_var"])
    _, _, stats["out_second_moment"], _ = finite_moments(out)
    yf = y.astype(jnp.float32)
    n_y = jnp.maximum(y_count, 1).astype(jnp.float32)
    finite_y = jnp.isfinite(yf)
    stats["saturated"] = (act.saturated(yf, opts.saturation_tolerance) & finite_y).sum() / n_y
    zeros = yf == 0
    stats["zero_fraction"] = zeros.sum() / n_y
    stats["dead_fraction"] = jnp.all(zeros, axis=0).mean()
    stats["unit_std"] = jnp.std(yf, axis=1).mean()
    stats["cosine"] = mean_cosine(h)
    stats["act_cosine"] = mean_cosine(out)
    stats["nonfinite"] = (h.size - h_count + y.size - y_count).astype(jnp.int32)
    stats["act_hist"], stats["act_outside"] = histogram(y, opts.act_range, opts.bins)
    _, stats["grad_preact_var"], _, dh_count = finite_moments(dh)
    _, stats["grad_act_var"], _, da_count = finite_moments(da)
    stats["grad_hist"], stats["grad_outside"] = histogram(dh, opts.grad_range, opts.bins)
    stats["grad_nonfinite"] = (dh.size - dh_count + da.size - da_count).astype(jnp.int32)
    wg = weight_grad_stats(x_prev, dh)
    stats["weight_grad_mean"], stats["weight_grad_var"], stats["weight_grad_norm"] = wg
    return stats

def overflowed_rows(tensors: Sequence[jax.Array]) -> jax.Array:
    """``(batch,)`` True for the examples with a non-finite value anywhere in ``tensors`` (each
    ``(..., batch, units)``, the batch axis second to last)."""
    return functools.reduce(jnp.logical_or, [(~jnp.isfinite(t)).any(axis=-1).reshape(-1, t.shape[-2]).any(axis=0)
                                             for t in tensors])


def stats_of_layers(act: Any, opts: MeasureOptions, x_prev, h, y, out, dh, dx) -> LayerStats:
    """:class:`LayerStats` with a leading layer axis, from stacked ``(layer, batch, units)`` arrays
    (vmapped over layers) or from per-layer lists of ``(batch, units)`` arrays (ragged widths).

    An example whose forward pass overflowed anywhere (a non-finite ``h`` or output in any layer)
    has no meaningful gradient at any layer: the backward pass would carry NaN through a
    rectifier's derivative as an exact 0 (``relu'(nan) = 0``), which reads as a vanishing gradient.
    Its gradient rows are therefore counted as non-finite (``grad_nonfinite``) and left out of
    the gradient statistics at every layer."""
    per_layer = functools.partial(layer_stats, act, opts)
    if not isinstance(h, list | tuple):
        bad = overflowed_rows([h, out])
        dh, dx = (jnp.where(bad[None, :, None], jnp.nan, g) for g in (dh, dx))
        return LayerStats(**jax.vmap(per_layer)(h, y, out, dh, dx, x_prev))
    bad = overflowed_rows([*h, *out])
    dh = [jnp.where(bad[:, None], jnp.nan, g) for g in dh]
    dx = [jnp.where(bad[:, None], jnp.nan, g) for g in dx]
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

    opts = MeasureOptions(
        act_range=check_range("act_range", act_range),
        grad_range=check_range("grad_range", grad_range),
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
    return stats_of_layers(activations.get(activation), opts, *tensors)

def check_range(name: str, value: Any) -> tuple[float, float]:
    """``value`` as a ``(low, high)`` pair of floats with ``low < high``, or a ValueError naming it.

    >>> check_range("act_range", [-1, 1])
    (-1.0, 1.0)
    """
    try:
        lo, hi = value
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a pair (low, high), got {value!r}") from err
    lo, hi = check_float(f"{name}[0]", lo), check_float(f"{name}[1]", hi)
    if not lo < hi:
        raise ValueError(f"{name} must have low < high, got {value!r}")
    return lo, hi


# -- order statistics and moments of recorded tensors (the trainer's records) ----------------


def moments(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(mean, std)`` over all entries of ``x`` (std with ddof 0, as ``np.std``)."""
    x = jnp.asarray(x)
    return jnp.mean(x), jnp.std(x)


def percentiles(x: jax.Array, q: Sequence[float]) -> jax.Array:
    """``np.percentile(x, q)`` (linear interpolation) over all entries of ``x``, without a sort.

    XLA's CPU sort is slow, so the order statistic ``floor(p)`` at ``p = q / 100 * (n - 1)`` is
    found by bisection over the 2^32 float bit patterns, mapped to unsigned ints in the order of
    the floats: 32 counting passes, exact. Its neighbour ``floor(p) + 1`` then costs one more pass:
    it is the same value when at least ``floor(p) + 2`` entries are <= it, else the smallest entry
    above it (half the passes of bisecting for both). Any non-finite entry gives NaN, as numpy's
    result would be.

    Args:
      x: any array (float32 after conversion), at least one entry.
      q: percentiles in [0, 100].

    Returns:
      ``(len(q),)`` float32.

    Raises:
      ValueError: an empty ``x``, an empty ``q`` or a percentile outside [0, 100].

    >>> percentiles(jnp.arange(5.0), (50.0, 100.0))
    Array([2., 4.], dtype=float32)
    """
    qs = np.asarray(q, np.float64).reshape(-1)
    if qs.size == 0 or not np.all((qs >= 0.0) & (qs <= 100.0)):
        raise ValueError(f"q must be a non-empty sequence of percentiles in [0, 100], got {q!r}")
    x = jnp.asarray(x).reshape(-1).astype(jnp.float32)
    n = x.shape[0]
    if n == 0:
        raise ValueError("percentiles of an empty array are undefined")
    # Positions in float64 on the host (n and q are static), as numpy computes them.
    pos = qs / 100.0 * (n - 1)
    lower = np.floor(pos).astype(np.int64)
    ranks = jnp.asarray(lower, jnp.int32)
    frac = jnp.asarray(pos - lower, jnp.float32)
    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    # Negative floats: flip all bits (larger magnitude = smaller); positive: set the sign bit.
    u = jnp.where((bits >> 31) == 1, ~bits, bits | jnp.uint32(0x80000000))

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        count = jnp.sum((u[None, :] <= mid[:, None]).astype(jnp.int32), axis=1)
        enough = count >= ranks + 1  # the rank-th smallest (0-based) is <= mid
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    r = ranks.shape[0]
    init = (jnp.zeros((r,), jnp.uint32), jnp.full((r,), 0xFFFFFFFF, jnp.uint32))
    found, _ = jax.lax.fori_loop(0, 32, halve, init)
    at_or_below = jnp.sum((u[None, :] <= found[:, None]).astype(jnp.int32), axis=1)
    above = jnp.min(jnp.where(u[None, :] > found[:, None], u[None, :], jnp.uint32(0xFFFFFFFF)),
                    axis=1)
    repeated = (at_or_below >= ranks + 2) | jnp.asarray(lower + 1 > n - 1)
    upper = jnp.where(repeated, found, above)
    a, b = (_from_ordered_bits(k) for k in (found, upper))
    return jnp.where(jnp.all(jnp.isfinite(x)), a + frac * (b - a), jnp.nan)


def _from_ordered_bits(key: jax.Array) -> jax.Array:
    """The float32 whose order-preserving bit key (see :func:`percentiles`) is ``key``."""
    back = jnp.where((key >> 31) == 1, key & jnp.uint32(0x7FFFFFFF), ~key)
    return jax.lax.bitcast_convert_type(back, jnp.float32)


def seed_mean_sd(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation over seeds, ignoring NaN (a seed with no finite entry). A
    variance beyond float32 is inf and stays inf in the mean (it is data, not a gap); the spread
    of values that include inf is NaN."""
    kept = values[~np.isnan(values)]
    if not kept.size:
        return float("nan"), 0.0
    if not np.all(np.isfinite(kept)):
        with np.errstate(invalid="ignore"):
            return float(kept.sum()), float("nan")  # +inf, -inf, or NaN for both signs
    return float(kept.mean()), float(kept.std()) if kept.size > 1 else 0.0
