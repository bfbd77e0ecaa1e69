"""The one rule that turns an int into a PRNG key, everywhere in initjax.

An int seed ``s`` means ``jax.random.key(s, impl="philox2x32")``. Philox is the engine's PRNG: it is
batching-invariant (a seed's draws do not depend on how many seeds are vmapped beside it) and the
fastest such implementation measured on the development machine (threefry's normal sampler also
took seconds to compile per shape there). A typed key (``jax.random.key(0, impl=...)``) is used as
given, whatever its implementation; a legacy raw ``uint32[2]`` key (``jax.random.PRNGKey(0)``) is
wrapped as JAX's default implementation (threefry2x32), which is what it was made by.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["DEFAULT_IMPL", "PRNG_IMPLS", "as_key", "is_key"]

DEFAULT_IMPL = "philox2x32"
PRNG_IMPLS = ("philox2x32", "philox4x32", "threefry2x32", "threefry4x32")
_SEED_BOUND = 2**63  # jax.random.key takes a signed 64-bit seed; larger ints overflow inside it


def is_key(x: Any) -> bool:
    """True for a typed JAX PRNG key array (any shape)."""
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def as_key(key_or_seed: Any, name: str = "key", *, impl: str = DEFAULT_IMPL) -> jax.Array:
    """A single typed PRNG key from an int seed or a key.

    Args:
      key_or_seed: a non-negative int seed (``int`` or numpy integer) below 2**63, a typed key of
        shape ``()``, or a legacy raw ``uint32[2]`` key.
      name: the argument's name, for the error message.
      impl: the implementation an int seed is turned into (one of :data:`PRNG_IMPLS`).

    Returns:
      A typed key of shape ``()``.

    Raises:
      TypeError: for anything else (a bool, a float, a batch of keys), naming the value.
      ValueError: for a negative or too large seed, or an unknown ``impl``.

    >>> as_key(0) == jax.random.key(0, impl="philox2x32")
    Array(True, dtype=bool)
    """
    if impl not in PRNG_IMPLS:
        raise ValueError(f"impl must be one of {PRNG_IMPLS}, got {impl!r}")
    if isinstance(key_or_seed, numbers.Integral) and not isinstance(key_or_seed, bool):
        seed = int(key_or_seed)
        if not 0 <= seed < _SEED_BOUND:
            raise ValueError(f"{name} as an int seed must be in [0, 2**63), got {seed}")
        return jax.random.key(seed, impl=impl)
    if is_key(key_or_seed) and key_or_seed.shape == ():
        return key_or_seed
    if isinstance(key_or_seed, jax.Array | np.ndarray) and not is_key(key_or_seed):
        if key_or_seed.shape == (2,) and key_or_seed.dtype == np.uint32:
            return jax.random.wrap_key_data(jnp.asarray(key_or_seed))
    if isinstance(key_or_seed, jax.Array | np.ndarray):  # an array's repr spans lines
        got = f"an array of shape {tuple(key_or_seed.shape)} and dtype {key_or_seed.dtype}"
    else:
        got = f"{key_or_seed!r} ({type(key_or_seed).__name__})"
    raise TypeError(
        f"{name} must be a non-negative int seed or a single JAX PRNG key (jax.random.key(0)), got {got}"
    )
