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
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from initjax import activations as _activations
from initjax._checks import check_choice, check_float, check_float_dtype, check_int
from initjax.network import Dense, JSONDescription, Network, Repeat, init_spec, resolve_init

__all__ = ["NetworkConfig", "NORMS", "PLACEMENTS", "as_config"]

NORMS = ("none", "batch", "layer")
PLACEMENTS = ("before", "after")


@dataclasses.dataclass(frozen=True)
class NetworkConfig(JSONDescription):
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
        setattr_(self, "init", resolve_init(self.init, "init"))
        setattr_(self, "bias_init", resolve_init(self.bias_init, "bias_init"))
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
        return f"{self.activation.spec} / {init_spec(self.init)}"

    @property
    def network(self) -> Network:
        """This MLP as a :class:`~initjax.network.Network`: consecutive layers of equal width form
        one repeated Dense stage."""
        stages: list[Repeat] = []
        for n_out in self.widths[1:]:
            if stages and stages[-1].block.width == n_out:
                stages[-1] = Repeat(stages[-1].block, stages[-1].count + 1)
                continue
            layer = Dense(n_out, self.init, self.activation, self.bias_init, self.norm,
                          self.norm_placement, self.norm_eps)
            stages.append(Repeat(layer, 1))
        return Network(self.widths[0], tuple(stages), self.batch, self.input_variance,
                       self.input_correlation, self.dtype, self.label)

    @classmethod
    def from_network(cls, network: Network) -> NetworkConfig:
        """The MLP config of a plain :class:`~initjax.network.Network`.

        Raises:
          ValueError: if the network is not a stack of Dense layers sharing one initializer,
            activation, bias initializer and norm, each with forward multiplier 1, or uses a norm
            this config lacks (``"rms"``, refused by the config's own check); the message names
            the first such difference.
        """
        if not isinstance(network, Network):
            raise TypeError(f"network must be an initjax Network, got {type(network).__name__}")
        blocks = network.blocks
        for i, block in enumerate(blocks):
            if not isinstance(block, Dense):
                raise ValueError(
                    f"block {i} is a {block.kind} block; NetworkConfig (and the engine and theory "
                    "that take it) describe plain Dense stacks only"
                )
        first = blocks[0]
        shared = ("init", "activation", "bias_init", "norm", "norm_position", "norm_eps")
        for i, block in enumerate(blocks):
            for field in shared:
                if getattr(block, field) != getattr(first, field):
                    raise ValueError(
                        f"layer {i} has {field}={getattr(block, field)!r} but layer 0 has "
                        f"{getattr(first, field)!r}; NetworkConfig shares one {field} across layers"
                    )
            if block.multiplier != 1.0:
                raise ValueError(
                    f"layer {i} has forward multiplier {block.multiplier}; NetworkConfig "
                    "describes layers with multiplier 1"
                )
            for flag in ("preactivation", "weight_standardization"):
                if getattr(block, flag):
                    raise ValueError(
                        f"layer {i} has {flag}=True; NetworkConfig describes plain "
                        "phi(norm(x W + b)) layers (the block engine runs this network)"
                    )
        widths = tuple(b.width for b in blocks)
        return cls(
            depth=len(blocks),
            width=widths if len(set(widths)) > 1 else widths[0],
            batch=network.batch,
            init=first.init,
            activation=first.activation,
            bias_init=first.bias_init,
            input_variance=network.input_variance,
            input_correlation=network.input_correlation,
            in_width=None if network.in_width == widths[0] else network.in_width,
            norm=first.norm,
            norm_placement=first.norm_position,
            norm_eps=first.norm_eps,
            dtype=network.dtype,
            label=network.label,
        )

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
                value = init_spec(value)
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


def as_config(description: Any, name: str = "config") -> NetworkConfig:
    """A :class:`NetworkConfig` from a NetworkConfig or a plain :class:`~initjax.network.Network`
    (see :meth:`NetworkConfig.from_network`), for the functions that take either.

    Raises:
      TypeError: for anything else, naming its type.
      ValueError: for a Network that is not a plain MLP.
    """
    if isinstance(description, NetworkConfig):
        return description
    if isinstance(description, Network):
        return NetworkConfig.from_network(description)
    raise TypeError(
        f"{name} must be an initjax NetworkConfig or Network, got {type(description).__name__}"
    )
