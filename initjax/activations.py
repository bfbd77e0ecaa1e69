"""Activation functions, with the facts about each that signal-propagation measurements need.

An :class:`Activation` is a hashable value (a name and its parameters), callable on arrays. Beside
the function it states its output range (``bounds``), so the engine can count saturated units of
bounded activations, and whether it is a rectifier (exact zeros on a half-line), so it can count
zeros and dead units.

    >>> act = get("leaky_relu", negative_slope=0.1)
    >>> act(jnp.array([-1.0, 2.0]))
    Array([-0.1,  2. ], dtype=float32)
    >>> get("tanh").bounds
    (-1.0, 1.0)

Because an :class:`Activation` compares and hashes by value, it can be a static argument of
``jax.jit`` and round-trips through JSON as its :attr:`Activation.spec` string.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from initjax._checks import check_float
from initjax._registry import Registry, SpecValue, freeze_kwargs

__all__ = [
    "Activation",
    "get",
    "names",
    "SELU_LAMBDA",
    "SELU_ALPHA",
    "identity",
    "sigmoid",
    "tanh",
    "softsign",
    "relu",
    "leaky_relu",
    "prelu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "softplus",
    "erf",
]

# Klambauer et al. 2017, "Self-Normalizing Neural Networks", eq. (14): the constants that make
# (mean, variance) = (0, 1) a fixed point for weights with Var = 1/n.
SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717

# Minima of x * sigmoid(x) (at x ~ -1.2785), of x * Phi(x) (at x ~ -0.7518) and of GELU's tanh
# approximation (at x ~ -0.7525): the lower bounds of SiLU and GELU, computed once with
# scipy.optimize.minimize_scalar (tests recompute them).
_SILU_MIN = -0.27846454276107380
_GELU_MIN = -0.16997120747990370
_GELU_TANH_MIN = -0.17004075057125410


class _Impl(NamedTuple):
    fn: Callable[..., jax.Array]  # fn(x, **params)
    bounds: Callable[..., tuple[float, float]]  # bounds(**params) -> (lower, upper)
    rectifier: Callable[..., bool]  # exact zeros on a half-line, given the params
    defaults: dict[str, Any]
    doc: str


_IMPLS: dict[str, _Impl] = {}
_REGISTRY: Registry[Activation] = Registry("activation")


@dataclasses.dataclass(frozen=True)
class Activation(SpecValue):
    """An activation function: a registry name and its parameters, callable on arrays.

    Attributes:
      name: the canonical registry name, e.g. ``"leaky_relu"``.
      params: sorted ``(name, value)`` pairs of its parameters, e.g. ``(("negative_slope", 0.01),)``.
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    def __call__(self, x: jax.Array) -> jax.Array:
        return _IMPLS[self.name].fn(x, **dict(self.params))

    @property
    def bounds(self) -> tuple[float, float]:
        """``(lower, upper)`` of the output range; ``-inf``/``inf`` where unbounded."""
        return _IMPLS[self.name].bounds(**self.kwargs)

    @property
    def bounded(self) -> bool:
        """True if both bounds are finite (sigmoid, tanh, softsign, erf): saturation is measured."""
        lo, hi = self.bounds
        return math.isfinite(lo) and math.isfinite(hi)

    @property
    def rectifier(self) -> bool:
        """True if the output is exactly zero for all negative inputs (ReLU): zeros are measured."""
        return _IMPLS[self.name].rectifier(**self.kwargs)

    def saturated(self, y: jax.Array, tolerance: float = 0.01) -> jax.Array:
        """Boolean mask of outputs within ``tolerance * (upper - lower)`` of a bound.

        Only bounded activations saturate; for the others the mask is all False. With the default
        1% of the range, tanh counts ``|y| > 0.98`` and sigmoid ``y < 0.01 or y > 0.99``.
        """
        if not self.bounded:
            return jnp.zeros(jnp.shape(y), dtype=bool)
        lo, hi = self.bounds
        margin = tolerance * (hi - lo)
        return (y <= lo + margin) | (y >= hi - margin)

    def __repr__(self) -> str:
        return f"Activation({self.spec!r})"


def _register(
    name: str,
    fn: Callable[..., jax.Array],
    bounds: Callable[..., tuple[float, float]],
    *,
    doc: str,
    rectifier: Callable[..., bool] = lambda **_: False,
    defaults: dict[str, Any] | None = None,
    aliases: tuple[str, ...] = (),
    check: Callable[..., None] = lambda **_: None,
) -> Callable[..., Activation]:
    defaults = dict(defaults or {})
    _IMPLS[name] = _Impl(fn, bounds, rectifier, defaults, doc)

    def factory(**kwargs: Any) -> Activation:
        unknown = set(kwargs) - set(defaults)
        if unknown:
            allowed = ", ".join(sorted(defaults)) or "none"
            raise ValueError(
                f"activation {name!r} got unknown parameter(s) {sorted(unknown)}; allowed: {allowed}"
            )
        params = {**defaults, **kwargs}
        check(**params)
        return Activation(name, freeze_kwargs(params))

    factory.__name__ = name
    factory.__doc__ = doc
    _REGISTRY.register(name, factory, aliases=aliases)
    return factory


def _check_alpha(alpha: float) -> None:
    check_float("alpha", alpha, minimum=0.0, strict_minimum=True)


def _check_gelu(approximate: bool) -> None:
    if not isinstance(approximate, bool):
        raise TypeError(f"gelu's approximate must be True or False, got {approximate!r}")


_INF = math.inf

identity = _register(
    "identity", lambda x: x, lambda: (-_INF, _INF), aliases=("linear",), doc="phi(x) = x."
)
sigmoid = _register(
    "sigmoid", jax.nn.sigmoid, lambda: (0.0, 1.0), doc="phi(x) = 1 / (1 + exp(-x)); range (0, 1)."
)
tanh = _register("tanh", jnp.tanh, lambda: (-1.0, 1.0), doc="phi(x) = tanh(x); range (-1, 1).")
softsign = _register(
    "softsign",
    lambda x: x / (1 + jnp.abs(x)),
    lambda: (-1.0, 1.0),
    doc="phi(x) = x / (1 + |x|); range (-1, 1). Glorot & Bengio 2010's alternative to tanh.",
)
relu = _register(
    "relu",
    jax.nn.relu,
    lambda: (0.0, _INF),
    rectifier=lambda: True,
    doc="phi(x) = max(x, 0); range [0, inf).",
)


def _register_leaky(name: str, slope: str, default: float, doc: str) -> Callable[..., Activation]:
    """``phi(x) = x if x >= 0 else a x`` with the slope ``a`` named ``slope``: range ``[0, inf)``
    and a rectifier at ``a = 0``, else the whole line."""
    return _register(
        name,
        lambda x, **p: jnp.where(x >= 0, x, p[slope] * x),
        lambda **p: (0.0, _INF) if p[slope] == 0 else (-_INF, _INF),
        rectifier=lambda **p: p[slope] == 0,
        defaults={slope: default},
        check=lambda **p: check_float(slope, p[slope]),
        doc=doc,
    )


leaky_relu = _register_leaky(
    "leaky_relu",
    "negative_slope",
    0.01,
    "phi(x) = x if x >= 0 else a x, a = negative_slope (0.01 by default, Maas et al. 2013).",
)
prelu = _register_leaky(
    "prelu",
    "slope",
    0.25,
    "PReLU at a fixed slope a (He et al. 2015 initialise the learned a at 0.25): "
    "phi(x) = x if x >= 0 else a x. The learnable layer lives in initjax.modules.",
)
elu = _register(
    "elu",
    lambda x, alpha: jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0))),
    lambda alpha: (-alpha, _INF),
    defaults={"alpha": 1.0},
    check=_check_alpha,
    doc="phi(x) = x if x > 0 else alpha (exp(x) - 1); range (-alpha, inf). Clevert et al. 2016.",
)
selu = _register(
    "selu",
    lambda x: SELU_LAMBDA * jnp.where(x > 0, x, SELU_ALPHA * jnp.expm1(jnp.minimum(x, 0))),
    lambda: (-SELU_LAMBDA * SELU_ALPHA, _INF),
    doc="phi(x) = lambda (x if x > 0 else alpha (exp(x) - 1)), lambda = 1.0507..., alpha = 1.6733... "
    "(Klambauer et al. 2017).",
)
gelu = _register(
    "gelu",
    lambda x, approximate: jax.nn.gelu(x, approximate=approximate),
    lambda approximate: (_GELU_TANH_MIN if approximate else _GELU_MIN, _INF),
    defaults={"approximate": False},
    check=_check_gelu,
    doc="phi(x) = x Phi(x) (exact, default) or its tanh approximation (approximate=True); "
    "Hendrycks & Gimpel 2016.",
)
silu = _register(
    "silu",
    jax.nn.silu,
    lambda: (_SILU_MIN, _INF),
    aliases=("swish",),
    doc="phi(x) = x sigmoid(x) (SiLU, Swish with beta = 1).",
)
softplus = _register(
    "softplus",
    jax.nn.softplus,
    lambda: (0.0, _INF),
    doc="phi(x) = log(1 + exp(x)); range (0, inf).",
)
erf = _register(
    "erf",
    jax.scipy.special.erf,
    lambda: (-1.0, 1.0),
    doc="phi(x) = erf(x); range (-1, 1). A tanh-like activation whose mean-field maps have closed "
    "forms (Williams 1997), used to cross-check quadrature.",
)


def get(spec: str | Activation, **kwargs: Any) -> Activation:
    """The activation named by ``spec`` (``"name"`` or ``"name:key=value,..."``) with ``kwargs``.

    An :class:`Activation` passed in is returned unchanged (with ``kwargs`` applied on top).

    Raises:
      ValueError: for an unknown name (the message lists the known ones) or an unknown parameter.
    """
    if isinstance(spec, Activation):
        if not kwargs:
            return spec
        return _REGISTRY.get(spec.name, **{**spec.kwargs, **kwargs})
    return _REGISTRY.get(spec, **kwargs)


def names(*, aliases: bool = True) -> tuple[str, ...]:
    """The registered activation names (with aliases such as ``linear`` and ``swish`` by default)."""
    return _REGISTRY.names(aliases=aliases)
