"""One description of a fully connected network at initialization, shared by measurement and theory.

The same :class:`NetworkConfig` goes to :func:`initjax.propagate` (a sampled network, measured) and
to :func:`initjax.theory.predict` (the mean-field prediction), in the spirit of neural-tangents'
``(init_fn, apply_fn, kernel_fn)`` triple: one description, two views.

The network, for layers ``l = 1..L`` (``depth = L``) with widths ``n_0 = in_width, n_1..n_L``::

    h^l = x^{l-1} W^l + b^l                      W^l: (n_{l-1}, n_l) drawn by ``init``
    x^l = phi(norm(h^l))   if norm_placement == "before"
    x^l = norm(phi(h^l))   if norm_placement == "after"   (norm is the identity for norm="none")

``x^0`` is the input batch (``batch`` examples): Gaussian with per-coordinate variance
``input_variance`` and pairwise correlation ``input_correlation`` between examples, unless an array
is given to ``propagate``.

A config is frozen and hashable (a static argument to ``jax.jit``) and round-trips through JSON;
initializer and activation specs are stored as strings such as ``"normal:stddev=0.01"``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from initjax import activations as _activations
from initjax._checks import check_choice, check_float, check_float_dtype, check_int

__all__ = ["NetworkConfig", "NORMS", "PLACEMENTS"]

NORMS = ("none", "batch", "layer")
PLACEMENTS = ("before", "after")


def _resolve_init(value: Any, field: str) -> Any:
    from initjax import initializers  # imported late: initializers is a sibling module

    if isinstance(value, initializers.Initializer):
        return value
    if isinstance(value, str):
        return initializers.get(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return initializers.get(value[0], **dict(value[1]))
    if callable(value):
        return value  # a user's own JAX initializer: usable, but not JSON-serializable
    raise TypeError(
        f"{field} must be an initializer name such as 'he_normal' or 'normal:stddev=0.01', "
        f"(name, kwargs), an initjax Initializer or a JAX initializer function; got {value!r}"
    )


def _spec_of(value: Any) -> str:
    spec = getattr(value, "spec", None)
    if isinstance(spec, str):
        return spec
    return f"custom:{getattr(value, '__name__', type(value).__name__)}"


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """A fully connected network at initialization.

    Attributes:
      depth: number of weight layers L (>= 1).
      width: hidden width, one int for all layers or a tuple of ``depth`` ints (n_1..n_L).
      batch: number of input examples (>= 1; >= 2 with batch norm).
      init: weight initializer: a registry spec (``"he_normal"``, ``"normal:stddev=0.01"``), an
        ``initjax.initializers.Initializer``, or any JAX initializer ``(key, shape, dtype)``.
      activation: activation spec (``"tanh"``, ``"leaky_relu:negative_slope=0.1"``) or Activation.
      bias_init: bias initializer, applied to shape ``(n_l,)``; zeros by default.
      input_variance: variance of each input coordinate (> 0).
      input_correlation: correlation between any two input examples, in [0, 1].
      in_width: input dimension n_0; the first hidden width by default.
      norm: ``"none"``, ``"batch"`` (training mode: batch statistics, gamma 1, beta 0) or ``"layer"``.
      norm_placement: ``"before"`` or ``"after"`` the activation.
      norm_eps: epsilon added to the variance inside the normalization.
      dtype: floating dtype of weights and activations, as a name (``"float32"``).
      label: an optional name for plots and sweep tables.
    """

    depth: int
    width: int | tuple[int, ...]
    batch: int = 16
    init: Any = "lecun_normal"
    activation: Any = "tanh"
    bias_init: Any = "zeros"
    input_variance: float = 1.0
    input_correlation: float = 0.0
    in_width: int | None = None
    norm: str = "none"
    norm_placement: str = "before"
    norm_eps: float = 1e-5
    dtype: str = "float32"
    label: str | None = None

    def __post_init__(self) -> None:
        setattr_ = object.__setattr__  # the dataclass is frozen; canonicalize fields once here
        depth = check_int("depth", self.depth, minimum=1)
        setattr_(self, "depth", depth)
        if isinstance(self.width, Sequence) and not isinstance(self.width, str):
            widths = tuple(check_int(f"width[{i}]", w, minimum=1) for i, w in enumerate(self.width))
            if len(widths) != depth:
                raise ValueError(
                    f"width has {len(widths)} entries {widths} but depth is {depth}: give one int "
                    "or exactly one width per layer"
                )
            if len(set(widths)) == 1:
                widths = widths[0]
            setattr_(self, "width", widths)
        else:
            setattr_(self, "width", check_int("width", self.width, minimum=1))
        batch = check_int("batch", self.batch, minimum=1)
        setattr_(self, "batch", batch)
        setattr_(self, "init", _resolve_init(self.init, "init"))
        setattr_(self, "bias_init", _resolve_init(self.bias_init, "bias_init"))
        setattr_(self, "activation", _activations.get(self.activation))
        check_float("input_variance", self.input_variance, minimum=0.0, strict_minimum=True)
        check_float("input_correlation", self.input_correlation, minimum=0.0, maximum=1.0)
        if self.in_width is not None:
            setattr_(self, "in_width", check_int("in_width", self.in_width, minimum=1))
        check_choice("norm", self.norm, NORMS)
        check_choice("norm_placement", self.norm_placement, PLACEMENTS)
        check_float("norm_eps", self.norm_eps, minimum=0.0)
        setattr_(self, "dtype", check_float_dtype(self.dtype).name)
        if self.norm == "batch" and batch < 2:
            raise ValueError("batch norm needs batch >= 2 (the batch variance of 1 example is 0)")

    # -- derived facts ------------------------------------------------------------------------
    @property
    def widths(self) -> tuple[int, ...]:
        """``(n_0, n_1, ..., n_L)``: the input dimension and every layer's width."""
        hidden = (self.width,) * self.depth if isinstance(self.width, int) else self.width
        n0 = self.in_width if self.in_width is not None else hidden[0]
        return (n0, *hidden)

    @property
    def uniform(self) -> bool:
        """True if every weight matrix has the same shape, so depth can be a ``lax.scan``."""
        return len(set(self.widths)) == 1

    @property
    def weight_shapes(self) -> tuple[tuple[int, int], ...]:
        """The ``(n_{l-1}, n_l)`` shape of each layer's weight matrix, l = 1..L."""
        w = self.widths
        return tuple((w[i], w[i + 1]) for i in range(self.depth))

    @property
    def jnp_dtype(self) -> Any:
        return jnp.dtype(self.dtype)

    @property
    def name(self) -> str:
        """``label`` if given, else ``"<activation> / <init>"``."""
        if self.label:
            return self.label
        return f"{self.activation.spec} / {_spec_of(self.init)}"

    def replace(self, **changes: Any) -> NetworkConfig:
        """A copy with ``changes`` applied (``dataclasses.replace``), validated again."""
        return dataclasses.replace(self, **changes)

    # -- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; initializers and activations become spec strings."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("init", "bias_init"):
                value = _spec_of(value)
            elif f.name == "activation":
                value = value.spec
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkConfig:
        """Inverse of :meth:`to_dict`. A ``custom:...`` initializer cannot be rebuilt and raises."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown NetworkConfig fields {sorted(unknown)}; known: {sorted(known)}")
        for f in ("init", "bias_init"):
            if isinstance(data.get(f), str) and data[f].startswith("custom:"):
                raise ValueError(
                    f"{f}={data[f]!r} was a user function and cannot be rebuilt from JSON; "
                    "pass the initializer again"
                )
        data = dict(data)
        if isinstance(data.get("width"), list):
            data["width"] = tuple(data["width"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NetworkConfig:
        return cls.from_dict(json.loads(text))

