"""Statistics of recorded tensors, shared by every trainer's records (jnp, traceable, exact).

:func:`percentiles` is ``np.percentile`` (linear interpolation) without a sort; :func:`moments`
gives the mean and the std (ddof 0). Both reduce over all entries of their input, so a caller
vmaps them over whatever axes it keeps (arm, seed, layer).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["percentiles", "moments"]


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
