"""Weight initializers: the classic schemes, with their exact second moments.

An :class:`Initializer` is a hashable value (a registry name and its parameters) that speaks JAX's
initializer protocol ``init(key, shape, dtype) -> Array``, so it plugs into
``flax.linen.Dense(kernel_init=...)`` and ``flax.nnx.Linear(kernel_init=...)`` unchanged:

    >>> init = get("he_normal:mode=fan_out")
    >>> w = init(jax.random.key(0), (256, 128))            # std = sqrt(2 / 128)
    >>> w.shape, w.dtype
    ((256, 128), dtype('float32'))
    >>> init.second_moment((256, 128))                     # E[W_ij^2] = 2 / 128, exactly
    0.015625
    >>> get(init.spec) == init                             # configs round-trip as strings
    True

Beside sampling, each scheme states ``second_moment(shape)`` (``E[W_ij^2]``, so a layer's
mean-field ``sigma_w^2 = fan_in * second_moment(shape)``) and ``gaussian_std(shape)``: the ``std``
for which the draw is literally ``std * jax.random.normal(key, shape, dtype)``, so schemes that
differ only in scale can share one standard-normal draw.

Layouts follow Flax: Dense kernels are ``(in, out)``, Conv kernels ``(*spatial, in, out)``, with
``fan_in = in * prod(spatial)`` and ``fan_out = out * prod(spatial)`` (:func:`compute_fans`).

Where the ecosystem disagrees, each docstring says which convention it follows: PyTorch's gains
multiply the standard deviation, jax's ``scale`` multiplies the variance; jax's ``glorot_normal``,
``he_normal`` and ``lecun_normal`` are truncated at 2 sigma (and rescaled), PyTorch's are not.
Here the named schemes are untruncated by default (``truncated=True`` gives jax's convention),
and :func:`variance_scaling` is jax's function.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from initjax._checks import check_choice, check_float, check_float_dtype, check_int, check_shape
from initjax._registry import Registry, SpecValue, freeze_kwargs
from initjax.gains import calculate_gain

__all__ = [
    "Initializer",
    "get",
    "names",
    "compute_fans",
    "truncated_normal_std",
    "TRUNCATED_NORMAL_STD_2SIGMA",
    "zeros",
    "ones",
    "constant",
    "normal",
    "uniform",
    "truncated_normal",
    "variance_scaling",
    "xavier_normal",
    "xavier_uniform",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "kaiming_normal",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "orthogonal",
    "delta_orthogonal",
    "identity",
    "glorot2010_standard",
    "sparse",
]

Shape = tuple[int, ...]


# ---------------------------------------------------------------------------------------------
# Fans and the truncated normal
# ---------------------------------------------------------------------------------------------


def compute_fans(shape: Any) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a kernel in Flax layout.

    Dense ``(in, out)``: ``(in, out)``. Conv ``(*spatial, in, out)``: ``(in * R, out * R)`` with
    ``R = prod(spatial)`` the receptive field, as in jax's ``_compute_fans`` (``in_axis=-2``,
    ``out_axis=-1``) and PyTorch's ``_calculate_fan_in_and_fan_out`` (whose layout is
    ``(out, in, *spatial)``).

    Raises:
      ValueError: if the shape has rank < 2 (a bias or a scalar has no fans).
    """
    dims = check_shape("shape", shape)
    if len(dims) < 2:
        raise ValueError(
            f"fans need a kernel shape of rank >= 2, (in, out) or (*spatial, in, out); got shape "
            f"{dims} (rank {len(dims)})"
        )
    receptive_field = math.prod(dims[:-2])
    return dims[-2] * receptive_field, dims[-1] * receptive_field


def _normal_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _normal_mass(lower: float, upper: float) -> float:
    """``Phi(upper) - Phi(lower)``, through ``erfc`` in the tails to keep its precision there."""
    r2 = math.sqrt(2.0)
    if lower >= 0.0:
        return 0.5 * (math.erfc(lower / r2) - math.erfc(upper / r2))
    if upper <= 0.0:
        return 0.5 * (math.erfc(-upper / r2) - math.erfc(-lower / r2))
    return 0.5 * (math.erf(upper / r2) - math.erf(lower / r2))


def _truncated_moments(lower: float, upper: float) -> tuple[float, float]:
    """``(E[T], E[T^2])`` of a standard normal T truncated to ``(lower, upper)``, in closed form.

    With ``Z = Phi(b) - Phi(a)``: ``E[T] = (phi(a) - phi(b)) / Z`` and
    ``E[T^2] = 1 + (a phi(a) - b phi(b)) / Z`` (Johnson, Kotz & Balakrishnan, "Continuous
    Univariate Distributions", vol. 1, the truncated normal).
    """
    mass = _normal_mass(lower, upper)
    if not mass > 0.0:
        raise ValueError(
            f"a standard normal has no representable mass in ({lower}, {upper}); move the bounds "
            "closer to 0"
        )
    pa, pb = _normal_pdf(lower), _normal_pdf(upper)
    return (pa - pb) / mass, 1.0 + (lower * pa - upper * pb) / mass


def truncated_normal_std(lower: float = -2.0, upper: float = 2.0) -> float:
    """The standard deviation of a standard normal truncated to ``(lower, upper)``.

    ``sqrt(E[T^2] - E[T]^2)`` from the closed-form moments (evaluated in float64 with ``math.erf``,
    so it is exact to rounding for any bounds, and costs nothing under ``jit``). For ``(-2, 2)`` it
    is jax's constant 0.87962566103423978 (see :data:`TRUNCATED_NORMAL_STD_2SIGMA`).

    Raises:
      ValueError: unless ``lower < upper`` (both finite) and the interval has mass.
    """
    lower = check_float("lower", lower)
    upper = check_float("upper", upper)
    if not lower < upper:
        raise ValueError(f"truncation bounds need lower < upper, got lower={lower}, upper={upper}")
    m1, m2 = _truncated_moments(lower, upper)
    return math.sqrt(max(m2 - m1 * m1, 0.0))


TRUNCATED_NORMAL_STD_2SIGMA: float = truncated_normal_std(-2.0, 2.0)
"""Std of a standard normal truncated to (-2, 2); jax hard-codes it as 0.87962566103423978 in
``variance_scaling`` and divides by it so a 2-sigma truncated draw keeps the target variance."""


# ---------------------------------------------------------------------------------------------
# The Initializer value and its registry
# ---------------------------------------------------------------------------------------------


class _Impl(NamedTuple):
    sample: Callable[..., jax.Array]  # sample(key, shape, dtype, **params), shape already checked
    second_moment: Callable[..., float]  # second_moment(shape, **params) -> E[W_ij^2]
    gaussian_std: Callable[..., float | None]  # gaussian_std(shape, **params)
    check_shape: Callable[..., None]  # check_shape(shape, **params): raise for shapes it can't fill
    compiled: bool  # run sample under one jit (structured schemes made of many small ops)


_IMPLS: dict[str, _Impl] = {}
_REGISTRY: Registry[Initializer] = Registry("initializer")


@dataclasses.dataclass(frozen=True)
class Initializer(SpecValue):
    """A weight initializer: a registry name and its parameters; ``init(key, shape, dtype)``.

    Compares and hashes by value, so it can be a static argument of ``jax.jit`` and a field of a
    frozen config, and it round-trips through JSON as its :attr:`spec` string.

    Attributes:
      name: the canonical registry name, e.g. ``"he_normal"`` (aliases resolve to it).
      params: sorted ``(name, value)`` pairs of all its parameters, defaults included.
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def __call__(self, key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
        """Draw a ``shape`` array of ``dtype`` from ``key`` (works under ``jit``; shape is static).

        Raises:
          TypeError: if ``dtype`` is not a floating dtype (e.g. int32).
          ValueError: if the scheme cannot fill ``shape`` (rank < 2 for fan-based schemes, ...).
        """
        dims = self._checked(shape)
        if dtype is None:  # jax's convention: the default float type (float64 under x64)
            dtype = jnp.result_type(float)
        dt = check_float_dtype(dtype)
        if math.prod(dims) == 0:  # nothing to draw (and a QR of an empty matrix would fail)
            return jnp.zeros(dims, dt)
        if _IMPLS[self.name].compiled:
            return _compiled_sample(self.name, key, dims, dt, self.params)
        return _IMPLS[self.name].sample(key, dims, dt, **self.kwargs)

    def second_moment(self, shape: Any) -> float:
        """``E[W_ij^2]`` of a tensor of this shape, exactly (analytic, no sampling).

        A layer's mean-field ``sigma_w^2`` is ``fan_in * second_moment(shape)``.
        """
        return float(_IMPLS[self.name].second_moment(self._checked(shape), **self.kwargs))

    def gaussian_std(self, shape: Any) -> float | None:
        """``std`` if ``self(key, shape, dtype) == std * jax.random.normal(key, shape, dtype)``
        exactly (the same key, computed as ``normal(...) * jnp.asarray(std, dtype)``), else None."""
        std = _IMPLS[self.name].gaussian_std(self._checked(shape), **self.kwargs)
        return None if std is None else float(std)

    def _checked(self, shape: Any) -> Shape:
        dims = check_shape("shape", shape)
        _IMPLS[self.name].check_shape(dims, **self.kwargs)
        return dims

    def __repr__(self) -> str:
        return f"Initializer({self.spec!r})"


@functools.partial(jax.jit, static_argnums=(0, 2, 3, 4))
def _compiled_sample(
    name: str, key: jax.Array, shape: Shape, dtype: Any, params: tuple
) -> jax.Array:
    # One XLA program per (scheme, shape, dtype, params) instead of one per eager op: QR, scatter
    # and shuffles are a dozen ops, each compiled separately when called eagerly. The scaled-normal
    # schemes stay eager so their draw is literally ``normal(key, ...) * std`` (see gaussian_std).
    return _IMPLS[name].sample(key, shape, dtype, **dict(params))


def _no_shape_check(shape: Shape, **_: Any) -> None:
    del shape


def _check_rank2(name: str) -> Callable[..., None]:
    """A shape check for schemes that need a kernel: rank >= 2 (fans, or a matrix to factor)."""

    def check(shape: Shape, **_: Any) -> None:
        if len(shape) < 2:
            raise ValueError(
                f"{name} needs a kernel shape of rank >= 2, (in, out) or (*spatial, in, out); got "
                f"shape {shape} (rank {len(shape)})"
            )

    return check


def _register(
    name: str,
    factory: Callable[..., Initializer],
    *,
    sample: Callable[..., jax.Array],
    second_moment: Callable[..., float],
    gaussian_std: Callable[..., float | None] = lambda shape, **_: None,
    check_shape: Callable[..., None] = _no_shape_check,
    compiled: bool = False,
    aliases: tuple[str, ...] = (),
) -> None:
    _IMPLS[name] = _Impl(sample, second_moment, gaussian_std, check_shape, compiled)
    _REGISTRY.register(name, factory, aliases=aliases)


def _make(name: str, **params: Any) -> Initializer:
    return Initializer(name, freeze_kwargs(params))


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return value


def _check_nonneg(name: str, value: Any) -> float:
    return check_float(name, value, minimum=0.0)


# ---------------------------------------------------------------------------------------------
# Samplers shared by the fan-based schemes
# ---------------------------------------------------------------------------------------------


class _Law(NamedTuple):
    """A zero-mean law fixed by one number: ``normal`` (its std), ``truncated`` (the target std of a
    normal cut at +-2 sigma and rescaled so its variance is std^2, jax's convention) or ``uniform``
    (its bound a, U[-a, a])."""

    kind: str
    value: float


def _gaussian(key: jax.Array, shape: Shape, dtype: Any, std: float) -> jax.Array:
    # Literally this expression: the engine reproduces it from gaussian_std() to share one draw.
    return jax.random.normal(key, shape, dtype) * jnp.asarray(std, dtype)


def _sample_law(key: jax.Array, shape: Shape, dtype: Any, law: _Law) -> jax.Array:
    if law.kind == "normal":
        return _gaussian(key, shape, dtype, law.value)
    if law.kind == "truncated":
        # The multiplier is computed in float64 then rounded once to dtype.
        factor = law.value / TRUNCATED_NORMAL_STD_2SIGMA
        draw = jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
        return draw * jnp.asarray(factor, dtype)
    return jax.random.uniform(key, shape, dtype, minval=-law.value, maxval=law.value)


def _law_second_moment(law: _Law) -> float:
    if law.kind == "uniform":
        return law.value**2 / 3.0  # Var U[-a, a] = a^2 / 3
    return law.value**2  # normal, and the variance-preserving truncated normal


def _law_gaussian_std(law: _Law) -> float | None:
    return law.value if law.kind == "normal" else None


def _register_law(
    name: str,
    factory: Callable[..., Initializer],
    law: Callable[..., _Law],
    aliases: tuple[str, ...] = (),
) -> None:
    """Register a fan-based scheme given by ``law(shape, **params) -> _Law``."""
    _register(
        name,
        factory,
        sample=lambda key, shape, dtype, **p: _sample_law(key, shape, dtype, law(shape, **p)),
        second_moment=lambda shape, **p: _law_second_moment(law(shape, **p)),
        gaussian_std=lambda shape, **p: _law_gaussian_std(law(shape, **p)),
        check_shape=_check_rank2(name),
        aliases=aliases,
    )


def _fan(shape: Shape, mode: str) -> float:
    """The fan of ``mode``; an empty kernel (fan 0) counts as 1 so that no formula divides by 0."""
    fan_in, fan_out = compute_fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[mode]
    return max(1.0, float(fan))


def _normal_law(std: float, truncated: bool) -> _Law:
    return _Law("truncated" if truncated else "normal", std)


# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------


def zeros() -> Initializer:
    """All weights 0. ``E[W^2] = 0``.

    Every unit of the layer then computes the same function and receives the same gradient, so the
    symmetry between units is never broken (the classic failure the CS231n demo shows). Useful for
    biases and for residual branches that should start as the identity.
    """
    return _make("zeros")


def ones() -> Initializer:
    """All weights 1. ``E[W^2] = 1``. Like :func:`zeros`, it never breaks symmetry between units."""
    return _make("ones")


def constant(value: float) -> Initializer:
    """All weights equal to ``value``; ``E[W^2] = value^2``. As jax's ``constant``.

    Args:
      value: the constant (a finite real number).
    """
    return _make("constant", value=check_float("value", value))


_register(
    "zeros",
    zeros,
    sample=lambda key, shape, dtype: jnp.zeros(shape, dtype),
    second_moment=lambda shape: 0.0,
)
_register(
    "ones",
    ones,
    sample=lambda key, shape, dtype: jnp.ones(shape, dtype),
    second_moment=lambda shape: 1.0,
)
_register(
    "constant",
    constant,
    sample=lambda key, shape, dtype, value: jnp.full(shape, value, dtype),
    second_moment=lambda shape, value: value**2,
)


# ---------------------------------------------------------------------------------------------
# Plain distributions
# ---------------------------------------------------------------------------------------------


def normal(stddev: float = 1.0, mean: float = 0.0) -> Initializer:
    """``W ~ N(mean, stddev^2)``, untruncated; ``E[W^2] = stddev^2 + mean^2``.

    jax's ``normal(stddev=1e-2)`` has no mean and defaults to 0.01; PyTorch's ``normal_`` defaults
    to N(0, 1) as here. With ``mean == 0`` the draw is exactly
    ``jax.random.normal(key, shape, dtype) * stddev`` (see :meth:`Initializer.gaussian_std`).

    Args:
      stddev: the standard deviation, >= 0 (0 gives a constant ``mean``).
      mean: the mean.

    Raises:
      ValueError: if ``stddev < 0``.
    """
    return _make("normal", stddev=_check_nonneg("stddev", stddev), mean=check_float("mean", mean))


def _normal_sample(
    key: jax.Array, shape: Shape, dtype: Any, stddev: float, mean: float
) -> jax.Array:
    w = _gaussian(key, shape, dtype, stddev)
    return w if mean == 0.0 else w + jnp.asarray(mean, dtype)


_register(
    "normal",
    normal,
    sample=_normal_sample,
    second_moment=lambda shape, stddev, mean: stddev**2 + mean**2,
    gaussian_std=lambda shape, stddev, mean: stddev if mean == 0.0 else None,
)


def uniform(
    scale: float | None = None, low: float | None = None, high: float | None = None
) -> Initializer:
    """``W ~ U[-scale, scale]`` or ``W ~ U[low, high]``; ``E[W^2] = (low^2 + low high + high^2)/3``.

    Give either ``scale`` (symmetric) or both ``low`` and ``high``, not both forms. With no argument
    the law is **U[-1, 1]** (stored as ``scale=None``): symmetric, so zero-mean like every other
    random scheme here. This differs from jax's ``uniform(scale=1e-2)``, which draws from
    ``U[0, scale)`` (non-negative weights), and from PyTorch's ``uniform_(a=0, b=1)``; write
    ``uniform(low=0.0, high=0.01)`` for jax's default.

    Args:
      scale: half-width of the symmetric interval, >= 0.
      low: lower end of the interval (with ``high``).
      high: upper end, > ``low``.

    Raises:
      ValueError: if both forms are given, only one of ``low``/``high``, ``high <= low``, or
        ``scale < 0``.
    """
    if scale is not None and (low is not None or high is not None):
        raise ValueError(
            f"uniform takes either scale (U[-scale, scale]) or low and high (U[low, high]), not "
            f"both; got scale={scale!r}, low={low!r}, high={high!r}"
        )
    if (low is None) != (high is None):
        raise ValueError(f"uniform needs both low and high, got low={low!r}, high={high!r}")
    if scale is not None:
        scale = _check_nonneg("scale", scale)
    if low is not None:
        low, high = check_float("low", low), check_float("high", high)
        if not high > low:
            raise ValueError(f"uniform needs low < high, got low={low}, high={high}")
    return _make("uniform", scale=scale, low=low, high=high)


def _uniform_bounds(
    scale: float | None, low: float | None, high: float | None
) -> tuple[float, float]:
    if low is not None and high is not None:
        return low, high
    half = 1.0 if scale is None else scale  # the documented default U[-1, 1]
    return -half, half


def _uniform_second_moment(shape: Shape, **p: Any) -> float:
    low, high = _uniform_bounds(**p)
    return (low * low + low * high + high * high) / 3.0


_register(
    "uniform",
    uniform,
    sample=lambda key, shape, dtype, **p: jax.random.uniform(
        key, shape, dtype, *_uniform_bounds(**p)
    ),
    second_moment=_uniform_second_moment,
)


def truncated_normal(
    stddev: float = 1.0,
    mean: float = 0.0,
    lower: float = -2.0,
    upper: float = 2.0,
    rescale: bool = False,
) -> Initializer:
    """``W = mean + s T`` with ``T`` a standard normal truncated to ``(lower, upper)``.

    The bounds are in units of the standard deviation (jax's convention:
    ``truncated_normal(stddev)`` cuts at +-2 stddev), unlike PyTorch's
    ``trunc_normal_(mean, std, a, b)`` whose ``a, b`` are absolute values. ``s = stddev`` by
    default, so the variance is *smaller* than ``stddev^2`` (by a factor
    ``truncated_normal_std(lower, upper)^2``, 0.7737 for +-2), as in jax's ``truncated_normal``
    and PyTorch's ``trunc_normal_``. With ``rescale=True``,
    ``s = stddev / truncated_normal_std(lower, upper)`` so the variance is exactly ``stddev^2``
    (what jax's ``variance_scaling`` does with its constant 0.87962566103423978 for +-2; here
    computed for any bounds).

    ``E[W^2] = mean^2 + 2 mean s E[T] + s^2 E[T^2]`` with the closed-form truncated moments
    ``E[T] = (phi(a) - phi(b)) / Z``, ``E[T^2] = 1 + (a phi(a) - b phi(b)) / Z``,
    ``Z = Phi(b) - Phi(a)``.

    Args:
      stddev: the std of the normal before truncation (or of the result with ``rescale``), >= 0.
      mean: added after truncation (the interval is centred on it).
      lower: lower cut, in units of std (finite).
      upper: upper cut, in units of std, > ``lower``.
      rescale: divide by the truncated std so the variance is ``stddev^2``.

    Raises:
      ValueError: if ``stddev < 0`` or ``lower >= upper``.
    """
    stddev = _check_nonneg("stddev", stddev)
    truncated_normal_std(lower, upper)  # validates the bounds
    return _make(
        "truncated_normal",
        stddev=stddev,
        mean=check_float("mean", mean),
        lower=float(lower),
        upper=float(upper),
        rescale=_check_bool("rescale", rescale),
    )


def _tn_scale(stddev: float, lower: float, upper: float, rescale: bool) -> float:
    return stddev / truncated_normal_std(lower, upper) if rescale else stddev


def _tn_sample(key: jax.Array, shape: Shape, dtype: Any, stddev, mean, lower, upper, rescale):
    s = _tn_scale(stddev, lower, upper, rescale)
    w = jax.random.truncated_normal(key, lower, upper, shape, dtype) * jnp.asarray(s, dtype)
    return w if mean == 0.0 else w + jnp.asarray(mean, dtype)


def _tn_second_moment(shape: Shape, stddev, mean, lower, upper, rescale) -> float:
    s = _tn_scale(stddev, lower, upper, rescale)
    m1, m2 = _truncated_moments(lower, upper)
    return mean * mean + 2.0 * mean * s * m1 + s * s * m2


_register("truncated_normal", truncated_normal, sample=_tn_sample, second_moment=_tn_second_moment)


# ---------------------------------------------------------------------------------------------
# Fan-based schemes
# ---------------------------------------------------------------------------------------------

_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("truncated_normal", "normal", "uniform")


def variance_scaling(
    scale: float = 1.0, mode: str = "fan_in", distribution: str = "truncated_normal"
) -> Initializer:
    """jax's ``variance_scaling``: ``Var[W] = scale / n``, ``n`` = fan_in, fan_out or their mean.

    ``scale`` multiplies the **variance** (jax/TF semantics; a PyTorch gain g is ``scale = g^2``).

    - ``"truncated_normal"``: a normal cut at +-2 sigma, divided by 0.87962566103423978 (the std of
      a standard normal truncated to (-2, 2)) so the variance is exactly ``scale / n``.
    - ``"normal"``: untruncated, ``std = sqrt(scale / n)``; the draw is exactly
      ``jax.random.normal(key, shape, dtype) * std``.
    - ``"uniform"``: ``U[-a, a]`` with ``a = sqrt(3 scale / n)``.

    ``E[W^2] = scale / n`` in all three cases. Unlike jax, ``mode`` and ``distribution`` have
    defaults (fan_in, truncated_normal) and ``in_axis``/``out_axis`` are fixed to Flax's layout.
    A zero fan (empty kernel) counts as 1.

    References: He et al. 2015, https://arxiv.org/abs/1502.01852 (``scale=2``, fan_in); Glorot &
    Bengio 2010 (``scale=1``, fan_avg); LeCun et al. 1998 (``scale=1``, fan_in).

    Args:
      scale: the variance multiplier, >= 0.
      mode: ``"fan_in"``, ``"fan_out"`` or ``"fan_avg"``.
      distribution: ``"truncated_normal"``, ``"normal"`` or ``"uniform"``.

    Raises:
      ValueError: for ``scale < 0`` or an unknown mode or distribution.
    """
    return _make(
        "variance_scaling",
        scale=_check_nonneg("scale", scale),
        mode=check_choice("mode", mode, _MODES),
        distribution=check_choice("distribution", distribution, _DISTRIBUTIONS),
    )


def _vs_law(shape: Shape, scale: float, mode: str, distribution: str) -> _Law:
    variance = scale / _fan(shape, mode)
    if distribution == "uniform":
        return _Law("uniform", math.sqrt(3.0 * variance))  # Var U[-a, a] = a^2 / 3
    return _normal_law(math.sqrt(variance), truncated=distribution == "truncated_normal")


_register_law("variance_scaling", variance_scaling, _vs_law)


def xavier_normal(gain: float = 1.0, truncated: bool = False) -> Initializer:
    """Xavier/Glorot normal: ``std = gain * sqrt(2 / (fan_in + fan_out))``.

    ``E[W^2] = 2 gain^2 / (fan_in + fan_out)``, the compromise between forward (fan_in) and
    backward (fan_out) variance preservation of Glorot & Bengio 2010, "Understanding the difficulty
    of training deep feedforward neural networks" (AISTATS, no arXiv version;
    https://proceedings.mlr.press/v9/glorot10a).

    Untruncated by default, as PyTorch's ``xavier_normal_``; the gain multiplies the **std**, as in
    PyTorch. ``truncated=True`` is jax's ``glorot_normal`` (= ``variance_scaling(gain^2, "fan_avg",
    "truncated_normal")``): cut at +-2 sigma and rescaled so the variance is unchanged.

    Args:
      gain: std multiplier, >= 0 (e.g. ``calculate_gain("tanh")``).
      truncated: use jax's 2-sigma truncated, variance-preserving normal.

    Raises:
      ValueError: if ``gain < 0``.
    """
    return _make(
        "xavier_normal",
        gain=_check_nonneg("gain", gain),
        truncated=_check_bool("truncated", truncated),
    )


def xavier_uniform(gain: float = 1.0) -> Initializer:
    """Xavier/Glorot uniform, the "normalized initialization" of Glorot & Bengio 2010 (eq. 16):
    ``U[-a, a]`` with ``a = gain * sqrt(6 / (fan_in + fan_out))``;
    ``E[W^2] = 2 gain^2 / (fan_in + fan_out)``.

    The gain multiplies the bound (so the std), as PyTorch's ``xavier_uniform_``; jax's
    ``glorot_uniform`` is the ``gain=1`` case. Paper: https://proceedings.mlr.press/v9/glorot10a.

    Raises:
      ValueError: if ``gain < 0``.
    """
    return _make("xavier_uniform", gain=_check_nonneg("gain", gain))


def _xavier_normal_law(shape: Shape, gain: float, truncated: bool) -> _Law:
    fan_in, fan_out = compute_fans(shape)
    return _normal_law(gain * math.sqrt(2.0 / max(1, fan_in + fan_out)), truncated)


def _xavier_uniform_law(shape: Shape, gain: float) -> _Law:
    fan_in, fan_out = compute_fans(shape)
    return _Law("uniform", gain * math.sqrt(6.0 / max(1, fan_in + fan_out)))


_register_law("xavier_normal", xavier_normal, _xavier_normal_law, aliases=("glorot_normal",))
_register_law("xavier_uniform", xavier_uniform, _xavier_uniform_law, aliases=("glorot_uniform",))
glorot_normal = xavier_normal
glorot_uniform = xavier_uniform


def _he_params(gain: Any, nonlinearity: Any, param: Any, mode: Any) -> dict[str, Any]:
    calculate_gain(nonlinearity, param)  # validates nonlinearity (and leaky_relu's param)
    if param is not None:
        param = check_float("param", param)
    return dict(
        gain=None if gain is None else _check_nonneg("gain", gain),
        nonlinearity=nonlinearity,
        param=param,
        mode=check_choice("mode", mode, ("fan_in", "fan_out")),
    )


def he_normal(
    gain: float | None = None,
    nonlinearity: str = "relu",
    param: float | None = None,
    mode: str = "fan_in",
    truncated: bool = False,
) -> Initializer:
    """He/Kaiming normal: ``std = gain / sqrt(fan_mode)``; ``E[W^2] = gain^2 / fan_mode``.

    Unless given, ``gain = calculate_gain(nonlinearity, param)`` (sqrt(2) for ReLU).

    He et al. 2015, "Delving Deep into Rectifiers", https://arxiv.org/abs/1502.01852: a ReLU layer
    halves the second moment, so ``n_l Var[w_l] = 2`` keeps it constant with depth
    (``2 / (1 + a^2)`` for slope a); ``mode="fan_out"`` preserves the backward pass instead.

    PyTorch's ``kaiming_normal_`` semantics: untruncated, and the gain multiplies the **std**.
    Differences: PyTorch's defaults are ``nonlinearity="leaky_relu", a=0`` (the same sqrt(2));
    here ``nonlinearity="leaky_relu"`` with ``param=None`` uses slope 0.01, as ``calculate_gain``
    does. ``truncated=True`` is jax's ``he_normal`` (= ``variance_scaling(2, "fan_in",
    "truncated_normal")`` for ReLU): cut at +-2 sigma and rescaled, variance unchanged.

    Args:
      gain: std multiplier >= 0; None derives it from ``nonlinearity`` and ``param``.
      nonlinearity: a name accepted by :func:`initjax.gains.calculate_gain`.
      param: leaky_relu's negative slope (None: 0.01); ignored by other nonlinearities.
      mode: ``"fan_in"`` (forward) or ``"fan_out"`` (backward).
      truncated: use jax's 2-sigma truncated, variance-preserving normal.

    Raises:
      ValueError: for ``gain < 0``, an unknown nonlinearity or mode.
    """
    params = _he_params(gain, nonlinearity, param, mode)
    return _make("he_normal", truncated=_check_bool("truncated", truncated), **params)


def he_uniform(
    gain: float | None = None,
    nonlinearity: str = "relu",
    param: float | None = None,
    mode: str = "fan_in",
) -> Initializer:
    """He/Kaiming uniform: ``U[-a, a]``, ``a = gain * sqrt(3 / fan_mode)``;
    ``E[W^2] = gain^2 / fan_mode``.

    Same parameters and gain rule as :func:`he_normal` (PyTorch's ``kaiming_uniform_``; jax's
    ``he_uniform`` is ``gain = sqrt(2)``, fan_in), minus ``truncated``. He et al. 2015,
    https://arxiv.org/abs/1502.01852.

    Raises:
      ValueError: for ``gain < 0``, an unknown nonlinearity or mode.
    """
    return _make("he_uniform", **_he_params(gain, nonlinearity, param, mode))


def _he_gain(gain: float | None, nonlinearity: str, param: float | None) -> float:
    return calculate_gain(nonlinearity, param) if gain is None else gain


def _he_normal_law(shape: Shape, gain, nonlinearity, param, mode, truncated) -> _Law:
    std = _he_gain(gain, nonlinearity, param) / math.sqrt(_fan(shape, mode))
    return _normal_law(std, truncated)


def _he_uniform_law(shape: Shape, gain, nonlinearity, param, mode) -> _Law:
    return _Law("uniform", _he_gain(gain, nonlinearity, param) * math.sqrt(3.0 / _fan(shape, mode)))


_register_law("he_normal", he_normal, _he_normal_law, aliases=("kaiming_normal",))
_register_law("he_uniform", he_uniform, _he_uniform_law, aliases=("kaiming_uniform",))
kaiming_normal = he_normal
kaiming_uniform = he_uniform


def lecun_normal(truncated: bool = False) -> Initializer:
    """LeCun normal: ``std = sqrt(1 / fan_in)``; ``E[W^2] = 1 / fan_in``.

    LeCun, Bottou, Orr & Mueller 1998, "Efficient BackProp" (sec. 4.6); the init SELU networks need
    (Klambauer et al. 2017, https://arxiv.org/abs/1706.02515). Untruncated by default;
    ``truncated=True`` is jax's ``lecun_normal`` (2-sigma cut, variance preserved). PyTorch has no
    named equivalent (``kaiming_normal_(nonlinearity="linear")`` is the same law).
    """
    return _make("lecun_normal", truncated=_check_bool("truncated", truncated))


def lecun_uniform() -> Initializer:
    """LeCun uniform: ``U[-a, a]`` with ``a = sqrt(3 / fan_in)``; ``E[W^2] = 1 / fan_in``.

    LeCun et al. 1998, "Efficient BackProp"; as jax's ``lecun_uniform``.
    """
    return _make("lecun_uniform")


_register_law(
    "lecun_normal",
    lecun_normal,
    lambda shape, truncated: _normal_law(math.sqrt(1.0 / _fan(shape, "fan_in")), truncated),
)
_register_law(
    "lecun_uniform",
    lecun_uniform,
    lambda shape: _Law("uniform", math.sqrt(3.0 / _fan(shape, "fan_in"))),
)


def glorot2010_standard() -> Initializer:
    """Glorot & Bengio 2010's "standard" initialization (eq. 1): ``U[-1/sqrt(n), 1/sqrt(n)]``,
    ``n = fan_in``.

    ``E[W^2] = 1 / (3 n)``, so ``n Var[W] = 1/3``: the variance shrinks by 3 per layer, which is
    why the paper proposes the normalized (Xavier) init. Paper:
    https://proceedings.mlr.press/v9/glorot10a. (PyTorch's default ``nn.Linear`` init,
    ``kaiming_uniform_(a=sqrt(5))``, is this same law.)
    """
    return _make("glorot2010_standard")


_register_law(
    "glorot2010_standard",
    glorot2010_standard,
    lambda shape: _Law("uniform", 1.0 / math.sqrt(_fan(shape, "fan_in"))),
)


# ---------------------------------------------------------------------------------------------
# Structured schemes
# ---------------------------------------------------------------------------------------------


def _compute_dtype(dtype: Any) -> Any:
    # QR has no float16/bfloat16 kernels; factorize in float32 (float64 when asked for) and cast.
    return jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32


def _orthogonal_matrix(key: jax.Array, rows: int, cols: int, dtype: Any) -> jax.Array:
    """A ``(rows, cols)`` matrix with orthonormal columns (tall/square) or rows (wide), Haar."""
    tall = (max(rows, cols), min(rows, cols))
    q, r = jnp.linalg.qr(jax.random.normal(key, tall, dtype))
    # Sign-correct so the law is Haar (Mezzadri 2007, https://arxiv.org/abs/math-ph/0609050);
    # a zero diagonal (probability 0) keeps its column rather than zeroing it, as sign() would.
    signs = jnp.where(jnp.diagonal(r) < 0, -1.0, 1.0).astype(dtype)
    q = q * signs[jnp.newaxis, :]
    return q if rows >= cols else q.T


def _orthogonal_rows_cols(shape: Shape) -> tuple[int, int]:
    return math.prod(shape[:-1]), shape[-1]


def orthogonal(gain: float = 1.0) -> Initializer:
    """A (scaled) random orthogonal matrix, Saxe, McClelland & Ganguli 2014, "Exact solutions to
    the nonlinear dynamics of learning in deep linear neural networks",
    https://arxiv.org/abs/1312.6120.

    The kernel is flattened to ``(prod(shape[:-1]), shape[-1])``; a Gaussian matrix of the taller
    orientation is QR-factorized, the columns of Q are multiplied by ``sign(diag R)`` (so Q is Haar
    distributed), Q is transposed back if the kernel is wide, and multiplied by ``gain``. So
    ``Q^T Q = gain^2 I`` for tall/square kernels and ``Q Q^T = gain^2 I`` for wide ones, and
    ``E[W^2] = gain^2 / max(rows, cols)``. Same law as jax's ``orthogonal(scale=gain)`` and
    PyTorch's ``orthogonal_(gain)``; the gain multiplies the entries in both.

    Args:
      gain: multiplier, >= 0.

    Raises:
      ValueError: if ``gain < 0``; calling it on a shape of rank < 2.
    """
    return _make("orthogonal", gain=_check_nonneg("gain", gain))


def _orthogonal_sample(key: jax.Array, shape: Shape, dtype: Any, gain: float) -> jax.Array:
    rows, cols = _orthogonal_rows_cols(shape)
    work = _compute_dtype(dtype)
    q = _orthogonal_matrix(key, rows, cols, work) * jnp.asarray(gain, work)
    return q.reshape(shape).astype(dtype)


_register(
    "orthogonal",
    orthogonal,
    sample=_orthogonal_sample,
    second_moment=lambda shape, gain: gain**2 / max(1, *_orthogonal_rows_cols(shape)),
    check_shape=_check_rank2("orthogonal"),
    compiled=True,
)


def delta_orthogonal(gain: float = 1.0) -> Initializer:
    """Delta-orthogonal conv kernel, Xiao et al. 2018, "Dynamical Isometry and a Mean Field Theory
    of CNNs", https://arxiv.org/abs/1806.05393.

    For a kernel ``(*spatial, in, out)`` of rank 3 to 5 with ``in <= out``, every tap is zero except
    the spatial centre (index ``k // 2`` of each spatial dim), which is a random ``(in, out)``
    matrix with orthonormal rows (:func:`orthogonal`) times ``gain``. A conv layer is then an
    orthogonal map of each pixel's channels, which is what gives 10,000-layer CNNs dynamical
    isometry. ``E[W^2] = gain^2 / (out * prod(spatial))``. As jax's
    ``delta_orthogonal(scale=gain)``, except for even kernel sizes, where jax puts the centre at
    ``(k - 1) // 2``.

    Args:
      gain: multiplier, >= 0.

    Raises:
      ValueError: if ``gain < 0``; calling it on a shape whose rank is not 3..5 or with in > out.
    """
    return _make("delta_orthogonal", gain=_check_nonneg("gain", gain))


def _check_delta(shape: Shape, **_: Any) -> None:
    if not 3 <= len(shape) <= 5:
        raise ValueError(
            f"delta_orthogonal needs a conv kernel (*spatial, in, out) of rank 3, 4 or 5; got "
            f"shape {shape} (rank {len(shape)})"
        )
    if shape[-2] > shape[-1]:
        raise ValueError(
            f"delta_orthogonal needs in <= out channels (its centre has orthonormal rows); got "
            f"in={shape[-2]} > out={shape[-1]} for shape {shape}"
        )


def _centre(shape: Shape) -> tuple[int, ...]:
    return tuple(k // 2 for k in shape[:-2])


def _delta_sample(key: jax.Array, shape: Shape, dtype: Any, gain: float) -> jax.Array:
    work = _compute_dtype(dtype)
    centre = _orthogonal_matrix(key, shape[-2], shape[-1], work) * jnp.asarray(gain, work)
    return jnp.zeros(shape, work).at[_centre(shape)].set(centre).astype(dtype)


_register(
    "delta_orthogonal",
    delta_orthogonal,
    sample=_delta_sample,
    second_moment=lambda shape, gain: gain**2 / max(1, shape[-1] * math.prod(shape[:-2])),
    check_shape=_check_delta,
    compiled=True,
)


def identity(gain: float = 1.0) -> Initializer:
    """The identity map times ``gain``: ``eye(in, out)`` for a Dense kernel, a Dirac kernel for a
    conv kernel (``eye(in, out)`` at the spatial centre, index ``k // 2``, zero elsewhere).

    Deterministic (the key is unused).
    ``E[W^2] = gain^2 min(in, out) / (in * out * prod(spatial))``.
    Rectangular kernels get the rectangular identity (ones on the main diagonal). Used for IRNNs
    (Le, Jaitly & Hinton 2015, https://arxiv.org/abs/1504.00941) and DiracNets (Zagoruyko &
    Komodakis 2017, https://arxiv.org/abs/1706.00388); PyTorch's ``eye_`` and ``dirac_``
    (without groups), times ``gain``.

    Args:
      gain: multiplier, >= 0.

    Raises:
      ValueError: if ``gain < 0``; calling it on a shape of rank < 2 (it needs a Dense kernel
        ``(in, out)`` or a conv kernel ``(*spatial, in, out)``).
    """
    return _make("identity", gain=_check_nonneg("gain", gain))


def _identity_sample(key: jax.Array, shape: Shape, dtype: Any, gain: float) -> jax.Array:
    del key
    eye = jnp.eye(shape[-2], shape[-1], dtype=dtype) * jnp.asarray(gain, dtype)
    if len(shape) == 2:
        return eye
    return jnp.zeros(shape, dtype).at[_centre(shape)].set(eye)


_register(
    "identity",
    identity,
    sample=_identity_sample,
    second_moment=lambda shape, gain: (
        gain**2 * min(shape[-2], shape[-1]) / max(1, math.prod(shape))
    ),
    check_shape=_check_rank2("identity"),
    compiled=True,
)


def sparse(k: int = 15, stddev: float = 1.0) -> Initializer:
    """Sparse init, Martens 2010, "Deep learning via Hessian-free optimization" (ICML, no arXiv
    version; https://www.cs.toronto.edu/~jmartens/docs/Deep_HessianFree.pdf).

    With the kernel flattened to ``(fan_in, out)``, each output unit (column) gets exactly ``k``
    non-zero incoming weights at uniformly random rows, drawn ``N(0, stddev^2)`` (untruncated); the
    rest are 0. Martens uses ``k = 15``, so units are not saturated however wide the layer is.
    ``E[W^2] = k stddev^2 / fan_in``. (PyTorch's ``sparse_`` instead zeroes a *fraction* of each
    column; jax has no equivalent.)

    Args:
      k: non-zeros per column, >= 1.
      stddev: std of the non-zero weights, >= 0.

    Raises:
      ValueError: if ``k < 1`` or ``stddev < 0``; calling it on a shape of rank < 2 or with
        ``k > fan_in``.
    """
    return _make("sparse", k=check_int("k", k, minimum=1), stddev=_check_nonneg("stddev", stddev))


def _check_sparse(shape: Shape, k: int, stddev: float) -> None:
    del stddev
    _check_rank2("sparse")(shape)
    fan_in = math.prod(shape[:-1])
    if k > fan_in:
        raise ValueError(
            f"sparse needs k <= fan_in, got k={k} > fan_in={fan_in} for shape {shape}"
        )


def _sparse_sample(key: jax.Array, shape: Shape, dtype: Any, k: int, stddev: float) -> jax.Array:
    rows, cols = math.prod(shape[:-1]), shape[-1]
    k_rows, k_vals = jax.random.split(key)
    # Each column is an independent shuffle of k ones and rows - k zeros: exactly k per column.
    pattern = jnp.broadcast_to((jnp.arange(rows) < k)[:, jnp.newaxis], (rows, cols))
    mask = jax.random.permutation(k_rows, pattern, axis=0, independent=True)
    values = _gaussian(k_vals, (rows, cols), dtype, stddev)
    return jnp.where(mask, values, jnp.zeros((), dtype)).reshape(shape)


_register(
    "sparse",
    sparse,
    sample=_sparse_sample,
    second_moment=lambda shape, k, stddev: k * stddev**2 / math.prod(shape[:-1]),
    check_shape=_check_sparse,
    compiled=True,
)


# ---------------------------------------------------------------------------------------------
# Lookup
# ---------------------------------------------------------------------------------------------


def get(spec: str | Initializer, **kwargs: Any) -> Initializer:
    """The initializer named by ``spec`` (``"name"`` or ``"name:key=value,..."``) with ``kwargs``.

    ``get("he_normal:mode=fan_out")`` and ``get("he_normal", mode="fan_out")`` are the same;
    aliases (``kaiming_normal``, ``glorot_uniform``, ...) resolve to the canonical name. An
    :class:`Initializer` passed in is returned unchanged, or rebuilt with ``kwargs`` applied on top.

    Raises:
      ValueError: for an unknown name (the message lists the known ones), an unknown parameter, or
        a bad parameter value.
    """
    if isinstance(spec, Initializer):
        if not kwargs:
            return spec
        return _REGISTRY.get(spec.name, **{**spec.kwargs, **kwargs})
    return _REGISTRY.get(spec, **kwargs)


def names(aliases: bool = True) -> tuple[str, ...]:
    """The registered initializer names, sorted; aliases (``kaiming_normal``, ...) unless False."""
    return _REGISTRY.names(aliases=aliases)
