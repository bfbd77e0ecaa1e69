"""Parametrizations as data: SP, NTK, muP and depth-muP, and how they scale with width and depth.

A parametrization says, for each layer *role*, how three numbers change when the network is made
wider or deeper than a *base* shape:

- the **init variance** factor (on the variance the layer's own initializer draws with),
- the **forward multiplier** (``h = multiplier * x W + b``),
- the **learning-rate** factor (on the optimizer's step for that parameter),

each a product of powers of the width multipliers ``fan_in / base_fan_in``,
``fan_out / base_fan_out`` and of the depth multiplier ``L / L0``::

    factor = (fan_in / base_fan_in)^e_in * (fan_out / base_fan_out)^e_out * (L / L0)^e_depth

An :class:`Exponents` holds ``(e_in, e_out, e_depth)``; a :class:`Rule` holds the exponents of
the three factors for one role; a :class:`Parametrization` holds the rules of the roles
:data:`ROLES` and depth-muP's residual-branch multiplier ``(L / L0)^block_multiplier_depth``.
Everything is numbers, so a sweep over parametrizations is data, and a user's own
parametrization is a :class:`Parametrization` built by hand.

Normalisation (``mup``'s convention): at ``width == base_width`` (and ``L == L0``) every factor is
1, so every parametrization *is* the network as written (SP with the network's own inits); only
the scaling away from the base differs. The built-in rules (:func:`get`), relative to the base:

TP5 Table 3 (Yang et al. 2022, arXiv 2203.03466), muP; SP in brackets where it differs::

                  input weights & all biases   output weights          hidden weights
    init var      1/fan_in                     1/fan_in^2 (1/fan_in)   1/fan_in
    SGD LR        fan_out (1)                  1/fan_in (1)            1
    Adam LR       1                            1/fan_in (1)            1/fan_in (1)

so, relative to the base (``m_in = fan_in / base_fan_in``, ``m_out = fan_out / base_fan_out``):
muP scales the output init variance by ``1/m_in``, the SGD learning rates of the input weights
and of every bias by ``m_out`` and of the output weights by ``1/m_in``, and the Adam learning
rates of hidden and output weights by ``1/m_in``; the attention logit's multiplier is
``1/m_in^(1/2)`` (``q.k / d`` in place of ``q.k / sqrt(d)``; with ``base d = 64`` that is
``mup``'s ``8 / d``). SP changes nothing.

The abc form (TP4, Yang & Hu 2021, arXiv 2011.14522): ``W = n^-a w``, ``w ~ N(0, n^-2b)``,
SGD learning rate ``eta n^-c``. muP is ``a = (-1/2, 0, 1/2)`` (input, hidden, output), ``b = 1/2``,
``c = 0``; the table above is the same muP after the shift ``(a + t, b - t, c - 2t)``, which
leaves SGD's dynamics unchanged (``t = 1/2`` on the input, ``-1/2`` on the output). For Adam, whose
step does not scale with the gradient, the shift is ``(a + t, b - t, c - t)``.

NTK (the neural tangent parametrization, Jacot et al. 2018; TP4's NTP ``a = 1/2`` past the
input, ``b = 0``): weights of a width-independent scale and a ``1/sqrt(fan_in)`` multiplier,
relative to the base: init variance ``x m_in``, multiplier ``x m_in^(-1/2)`` on every weight
layer (``m_in = 1`` on the input, whose fan-in is the data's), so the network at initialization
is SP's, and for SGD a constant learning rate. For Adam there is no verified reference (TP IVb,
arXiv 2308.01814, was not checked); the rule here is *derived*: the kernel regime's scaling, in
which each layer's first update changes the output by ``Theta(1)`` while the features move by
``Theta(n^-1/2)``. An Adam step ``Delta w = -eta sign(g)`` (a sign pattern correlated with the
layer's input) moves ``x W`` by ``eta * multiplier * fan_in``, which gives the Adam learning
rates ``m_out^(-1/2)`` (input), ``m_in^(-1)`` (hidden), ``m_in^(-1/2)`` (output) and
``m_out^(-1/2)`` (biases). Measured on a tanh MLP at widths 128..2048 (one Adam step,
``tests/test_parametrization.py``): the output's move has log2-slope 0.10 in width (muP-Adam's:
0.10) and the features' -0.43; a constant Adam learning rate, the literal NTP, grows the output's
move like the width (slope 1.04).

depth-muP (Yang et al. 2023, TP6, arXiv 2310.02244; Bordelon et al. 2023, arXiv 2309.16620):
muP plus a residual branch multiplier ``alpha * (L / L0)^(-1/2)`` (``L`` residual blocks); the SGD
learning rate does not change with depth, the Adam learning rate of the hidden weights is
multiplied by ``(L / L0)^(-1/2)`` (as EleutherAI's nanoGPT-mup ``completep`` branch does with
``alpha = 1/2``).

    >>> p = get("mup", "adam")
    >>> p.factors("hidden", fan_in_mult=4.0, fan_out_mult=4.0).lr
    0.25
    >>> p.factors("output", fan_in_mult=4.0).init_var
    0.25
    >>> get("sp").factors("output", fan_in_mult=4.0)
    Factors(init_var=1.0, multiplier=1.0, lr=1.0)
    >>> Parametrization.from_json(p.to_json()) == p
    True

Applying one to a network (:func:`parametrize`, :func:`mlp`), or to a user's own Flax model
(:func:`kernel_init`, :func:`multiplier`, :func:`scale_lr_by_path`).

References:
  Yang & Hu 2021, "Feature Learning in Infinite-Width Neural Networks" (TP4),
  https://arxiv.org/abs/2011.14522.
  Yang et al. 2022, "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter
  Transfer" (TP5), https://arxiv.org/abs/2203.03466.
  Yang, Yu, Zhu & Hayou 2023, "Tensor Programs VI: Feature Learning in Infinite-Depth Neural
  Networks" (TP6), https://arxiv.org/abs/2310.02244.
  Bordelon, Noci, Li, Hanin & Pehlevan 2023, "Depthwise Hyperparameter Transfer in Residual
  Networks", https://arxiv.org/abs/2309.16620.
  Jacot, Gabriel & Hongler 2018, "Neural Tangent Kernel", https://arxiv.org/abs/1806.07572.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from initjax import initializers as _initializers
from initjax._checks import check_choice, check_float, check_int
from initjax.network import (
    Conv,
    Dense,
    JSONDescription,
    Network,
    Repeat,
    Residual,
    resolve_init,
)

__all__ = [
    "OPTIMIZERS",
    "PARAMETRIZATIONS",
    "ROLES",
    "Exponents",
    "Factors",
    "Parametrization",
    "Rule",
    "get",
    "kernel_init",
    "lr_multiplier",
    "lr_multipliers_by_path",
    "mlp",
    "multiplier",
    "parametrize",
    "scale_lr_by_path",
    "token_heads",
]

ROLES = ("input", "hidden", "output", "bias", "attention_logit")
PARAMETRIZATIONS = ("sp", "ntk", "mup", "depth_mup")
OPTIMIZERS = ("sgd", "adam")
# Roles that own trained parameters (the attention logit is a multiplier only).
_PARAM_ROLES = ("input", "hidden", "output", "bias")


# ---------------------------------------------------------------------------------------------
# The data: exponents, rules, parametrizations
# ---------------------------------------------------------------------------------------------


def _exponent(name: str, value: Any) -> float:
    return check_float(name, value)


@dataclasses.dataclass(frozen=True)
class Exponents:
    """The powers of ``fan_in / base_fan_in``, ``fan_out / base_fan_out`` and ``L / L0`` in one
    factor: ``factor = m_in^fan_in * m_out^fan_out * m_depth^depth``."""

    fan_in: float = 0.0
    fan_out: float = 0.0
    depth: float = 0.0

    def __post_init__(self) -> None:
        for f in ("fan_in", "fan_out", "depth"):
            object.__setattr__(self, f, _exponent(f"Exponents.{f}", getattr(self, f)))

    @property
    def is_zero(self) -> bool:
        return self.fan_in == 0.0 and self.fan_out == 0.0 and self.depth == 0.0

    def factor(self, fan_in_mult: float = 1.0, fan_out_mult: float = 1.0,
               depth_mult: float = 1.0) -> float:
        """``fan_in_mult^fan_in * fan_out_mult^fan_out * depth_mult^depth`` (exactly 1.0 at
        multipliers of 1)."""
        return float(fan_in_mult ** self.fan_in * fan_out_mult ** self.fan_out
                     * depth_mult ** self.depth)

    def to_dict(self) -> dict[str, float]:
        return {"fan_in": self.fan_in, "fan_out": self.fan_out, "depth": self.depth}

    @classmethod
    def from_dict(cls, data: Any) -> Exponents:
        return _as_exponents("exponents", data)


def _as_exponents(name: str, value: Any) -> Exponents:
    if isinstance(value, Exponents):
        return value
    if isinstance(value, Mapping):
        unknown = set(value) - {"fan_in", "fan_out", "depth"}
        if unknown:
            raise ValueError(f"{name}: unknown exponent keys {sorted(unknown)}; known: "
                             "['depth', 'fan_in', 'fan_out']")
        return Exponents(**value)
    raise TypeError(f"{name} must be an Exponents or a dict with keys fan_in, fan_out, depth; "
                    f"got {value!r}")


class Factors(NamedTuple):
    """The three factors of one role at given multipliers (all 1 at the base shape)."""

    init_var: float  # on the initializer's variance (its std is multiplied by sqrt(init_var))
    multiplier: float  # on the forward multiplier
    lr: float  # on the learning rate


@dataclasses.dataclass(frozen=True)
class Rule:
    """One role's scaling: the :class:`Exponents` of its init-variance factor, its forward
    multiplier and its learning-rate factor (each a :class:`Exponents` or a dict of them)."""

    init_var: Exponents = Exponents()
    multiplier: Exponents = Exponents()
    lr: Exponents = Exponents()

    def __post_init__(self) -> None:
        for f in ("init_var", "multiplier", "lr"):
            object.__setattr__(self, f, _as_exponents(f"Rule.{f}", getattr(self, f)))

    def factors(self, fan_in_mult: float = 1.0, fan_out_mult: float = 1.0,
                depth_mult: float = 1.0) -> Factors:
        args = (fan_in_mult, fan_out_mult, depth_mult)
        return Factors(self.init_var.factor(*args), self.multiplier.factor(*args),
                       self.lr.factor(*args))

    def uses(self, what: str) -> bool:
        """Whether any of the three factors has a nonzero exponent on ``what`` (``"fan_in"``,
        ``"fan_out"`` or ``"depth"``)."""
        return any(getattr(e, what) != 0.0 for e in (self.init_var, self.multiplier, self.lr))

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f).to_dict() for f in ("init_var", "multiplier", "lr")}

    @classmethod
    def from_dict(cls, data: Any) -> Rule:
        if isinstance(data, Rule):
            return data
        if not isinstance(data, Mapping):
            raise TypeError(f"a Rule must be a Rule or a dict with keys init_var, multiplier, lr; "
                            f"got {data!r}")
        unknown = set(data) - {"init_var", "multiplier", "lr"}
        if unknown:
            raise ValueError(f"unknown Rule keys {sorted(unknown)}; known: "
                             "['init_var', 'lr', 'multiplier']")
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class Parametrization(JSONDescription):
    """A parametrization as data: one :class:`Rule` per role of :data:`ROLES`.

    Attributes:
      name: a label (the built-ins are :data:`PARAMETRIZATIONS`; a user's own may be any name).
      optimizer: ``"sgd"`` or ``"adam"``: the optimizer its learning-rate rules are meant for.
      input, hidden, output, bias, attention_logit: the rules of each role (a :class:`Rule` or its
        dict). The bias rule applies to every layer's bias (``m_in = 1``, ``m_out`` the layer's
        fan-out multiplier); it has no forward multiplier (``h = multiplier * x W + b``). The
        attention-logit rule is a multiplier only (``m_in`` the head dimension's).
      block_multiplier_depth: the power of ``L / L0`` on a residual block's branch multiplier
        ``alpha`` (depth-muP: ``-1/2``).
    """

    name: str
    optimizer: str = "sgd"
    input: Rule = Rule()
    hidden: Rule = Rule()
    output: Rule = Rule()
    bias: Rule = Rule()
    attention_logit: Rule = Rule()
    block_multiplier_depth: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name must be a non-empty string, got {self.name!r}")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for role in ROLES:
            object.__setattr__(self, role, Rule.from_dict(getattr(self, role)))
        object.__setattr__(self, "block_multiplier_depth",
                           _exponent("block_multiplier_depth", self.block_multiplier_depth))
        if not self.bias.multiplier.is_zero:
            raise ValueError("the bias role has no forward multiplier (a layer computes "
                             "multiplier * x W + b); bias.multiplier must be Exponents(), got "
                             f"{self.bias.multiplier}")
        logit = self.attention_logit
        if not (logit.init_var.is_zero and logit.lr.is_zero):
            raise ValueError("the attention_logit role is a multiplier only (no weights); its "
                             f"init_var and lr must be Exponents(), got {logit}")

    def rule(self, role: str) -> Rule:
        """The rule of ``role`` (one of :data:`ROLES`)."""
        return getattr(self, check_choice("role", role, ROLES))

    def factors(self, role: str, *, fan_in_mult: float = 1.0, fan_out_mult: float = 1.0,
                depth_mult: float = 1.0) -> Factors:
        """``(init_var, multiplier, lr)`` factors of ``role`` at these multipliers (each > 0)."""
        mults = [check_float(n, v, minimum=0.0, strict_minimum=True) for n, v in
                 (("fan_in_mult", fan_in_mult), ("fan_out_mult", fan_out_mult),
                  ("depth_mult", depth_mult))]
        return self.rule(role).factors(*mults)

    @property
    def uses_depth(self) -> bool:
        return self.block_multiplier_depth != 0.0 or any(self.rule(r).uses("depth") for r in ROLES)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "optimizer": self.optimizer,
                **{role: self.rule(role).to_dict() for role in ROLES},
                "block_multiplier_depth": self.block_multiplier_depth}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Parametrization:
        if not isinstance(data, Mapping):
            raise TypeError(f"a Parametrization dict must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown Parametrization fields {sorted(unknown)}; known: "
                             f"{sorted(known)}")
        return cls(**data)


# ---------------------------------------------------------------------------------------------
# The built-ins
# ---------------------------------------------------------------------------------------------

_E = Exponents
_LOGIT_MUP = Rule(multiplier=_E(fan_in=-0.5))  # q.k/d instead of q.k/sqrt(d)
_NTK_INIT = {"init_var": _E(fan_in=1.0), "multiplier": _E(fan_in=-0.5)}


def _mup(optimizer: str, name: str = "mup", depth: bool = False) -> Parametrization:
    output = Rule(init_var=_E(fan_in=-1.0), lr=_E(fan_in=-1.0))
    if optimizer == "sgd":
        return Parametrization(name, "sgd", input=Rule(lr=_E(fan_out=1.0)), hidden=Rule(),
                               output=output, bias=Rule(lr=_E(fan_out=1.0)),
                               attention_logit=_LOGIT_MUP,
                               block_multiplier_depth=-0.5 if depth else 0.0)
    hidden = Rule(lr=_E(fan_in=-1.0, depth=-0.5 if depth else 0.0))
    return Parametrization(name, "adam", input=Rule(), hidden=hidden, output=output, bias=Rule(),
                           attention_logit=_LOGIT_MUP,
                           block_multiplier_depth=-0.5 if depth else 0.0)


def _ntk(optimizer: str) -> Parametrization:
    if optimizer == "sgd":
        lr = {"input": _E(), "hidden": _E(), "output": _E(), "bias": _E()}
    else:  # derived (module docstring): the kernel regime's Adam scaling
        lr = {"input": _E(fan_out=-0.5), "hidden": _E(fan_in=-1.0), "output": _E(fan_in=-0.5),
              "bias": _E(fan_out=-0.5)}
    return Parametrization("ntk", optimizer, input=Rule(lr=lr["input"], **_NTK_INIT),
                           hidden=Rule(lr=lr["hidden"], **_NTK_INIT),
                           output=Rule(lr=lr["output"], **_NTK_INIT), bias=Rule(lr=lr["bias"]))


_BUILTINS: dict[str, Callable[[str], Parametrization]] = {
    "sp": lambda opt: Parametrization("sp", opt),
    "ntk": _ntk,
    "mup": _mup,
    "depth_mup": lambda opt: _mup(opt, "depth_mup", depth=True),
}


def get(name: str, optimizer: str = "sgd") -> Parametrization:
    """The built-in parametrization ``name`` (one of :data:`PARAMETRIZATIONS`) for ``optimizer``
    (``"sgd"`` or ``"adam"``); see the module docstring for the rules.

    Raises:
      ValueError: an unknown name (the known ones are listed) or optimizer.
    """
    if not isinstance(name, str) or name not in _BUILTINS:
        raise ValueError(f"unknown parametrization {name!r}; known: {', '.join(PARAMETRIZATIONS)} "
                         "(or build a Parametrization)")
    return _BUILTINS[name](check_choice("optimizer", optimizer, OPTIMIZERS))


def _resolve(parametrization: Any, optimizer: str | None) -> Parametrization:
    if optimizer is not None:
        check_choice("optimizer", optimizer, OPTIMIZERS)
    if isinstance(parametrization, Parametrization):
        if optimizer is not None and optimizer != parametrization.optimizer:
            raise ValueError(f"optimizer={optimizer!r} does not match the parametrization "
                             f"{parametrization.name!r}, whose rules are for "
                             f"optimizer={parametrization.optimizer!r}")
        return parametrization
    if isinstance(parametrization, str):
        return get(parametrization, optimizer or "sgd")
    raise TypeError(f"parametrization must be a name ({', '.join(PARAMETRIZATIONS)}) or a "
                    f"Parametrization, got {parametrization!r}")


# ---------------------------------------------------------------------------------------------
# Scaling an initializer
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ScaledInit:
    """A user's JAX initializer whose draws are multiplied by ``std_factor``."""

    base: Any
    std_factor: float

    def __call__(self, key: Any, shape: Any, dtype: Any = None) -> Any:
        import jax.numpy as jnp

        w = self.base(key, shape, dtype) if dtype is not None else self.base(key, shape)
        return w * jnp.asarray(self.std_factor, w.dtype)

    @property
    def __name__(self) -> str:  # init_spec names it
        return f"scaled({getattr(self.base, '__name__', type(self.base).__name__)}, "\
               f"{self.std_factor:g})"


def _scale_kwargs(name: str, kw: dict[str, Any], s: float) -> tuple[str, dict[str, Any]]:
    """The registry spec whose draw is ``s`` times the draw of ``(name, kw)`` (same key)."""
    if name == "zeros":
        return name, kw
    if name == "ones":
        return "constant", {"value": s}
    if name == "constant":
        return name, {"value": kw["value"] * s}
    if name in ("normal", "truncated_normal"):
        return name, {**kw, "stddev": kw["stddev"] * s, "mean": kw["mean"] * s}
    if name == "uniform":
        if kw["low"] is not None:
            return name, {**kw, "low": kw["low"] * s, "high": kw["high"] * s}
        return name, {**kw, "scale": (1.0 if kw["scale"] is None else kw["scale"]) * s}
    if name == "variance_scaling":
        return name, {**kw, "scale": kw["scale"] * s * s}
    if name in ("he_normal", "he_uniform"):
        from initjax.gains import calculate_gain

        gain = kw["gain"]
        if gain is None:
            gain = calculate_gain(kw["nonlinearity"], kw["param"])
        return name, {**kw, "gain": gain * s}
    if name in ("xavier_normal", "xavier_uniform", "orthogonal", "delta_orthogonal", "identity"):
        return name, {**kw, "gain": kw["gain"] * s}
    if name == "lecun_normal":
        dist = "truncated_normal" if kw["truncated"] else "normal"
        return "variance_scaling", {"scale": s * s, "mode": "fan_in", "distribution": dist}
    if name == "lecun_uniform":
        return "variance_scaling", {"scale": s * s, "mode": "fan_in", "distribution": "uniform"}
    if name == "glorot2010_standard":  # U[-1/sqrt(n), 1/sqrt(n)] = variance_scaling(1/3, uniform)
        return "variance_scaling", {"scale": s * s / 3.0, "mode": "fan_in",
                                    "distribution": "uniform"}
    if name == "sparse":
        return name, {**kw, "stddev": kw["stddev"] * s}
    raise ValueError(f"initjax.parametrization cannot rescale the initializer {name!r}; known: "
                     "the registry's schemes (initjax.initializers.names())")


def _scaled_init(init: Any, var_factor: float) -> Any:
    """``init`` with its draws multiplied by ``sqrt(var_factor)`` (the same family and key, so the
    variance is ``var_factor`` times the original's); ``init`` itself at a factor of 1."""
    if var_factor == 1.0:
        return init
    s = math.sqrt(var_factor)
    if isinstance(init, _initializers.Initializer):
        name, kw = _scale_kwargs(init.name, init.kwargs, s)
        return _initializers.get(name, **kw)
    if isinstance(init, _ScaledInit):
        return _ScaledInit(init.base, init.std_factor * s)
    return _ScaledInit(init, s)


# ---------------------------------------------------------------------------------------------
# Applying a parametrization to a Network
# ---------------------------------------------------------------------------------------------


def _check_width_pair(name: str, value: Any, base_name: str, base: Any) -> float:
    """``value / base`` after checking both (numbers >= 1, ``base <= value``)."""
    value = check_float(name, value, minimum=1.0)
    base = check_float(base_name, base, minimum=1.0)
    if base > value:
        raise ValueError(f"{base_name}={base:g} is larger than {name}={value:g}; a parametrization "
                         f"scales up from its base shape: use {base_name} <= {name}")
    return value / base


def _depth_mult(p: Parametrization, network: Network, base_depth: Any) -> float:
    L = network.residual_depth
    if base_depth is None:
        if p.uses_depth and L > 0:
            raise ValueError(f"{p.name!r} scales with depth (L/L0, L = {L} residual blocks): pass "
                             "base_depth (L0, the depth at which it equals the network as written)")
        return 1.0
    base_depth = check_int("base_depth", base_depth, minimum=1)
    if L == 0:
        raise ValueError(f"base_depth={base_depth} was given, but the network has no residual "
                         "blocks: depth scaling counts residual blocks (L)")
    if base_depth > L:
        raise ValueError(f"base_depth={base_depth} is larger than the network's depth L = {L} "
                         "residual blocks; use base_depth <= L")
    return L / base_depth


def _parametrize_layer(layer: Dense | Conv, role: str, p: Parametrization, m_in: float,
                       m_out: float, m_depth: float) -> Dense | Conv:
    f = p.factors(role, fan_in_mult=m_in, fan_out_mult=m_out, depth_mult=m_depth)
    fb = p.factors("bias", fan_in_mult=1.0, fan_out_mult=m_out, depth_mult=m_depth)
    lr = layer.lr_multiplier * f.lr
    bias_base = (layer.lr_multiplier if layer.bias_lr_multiplier is None
                 else layer.bias_lr_multiplier)
    bias_lr = bias_base * fb.lr
    if layer.bias_lr_multiplier is None and bias_lr == lr:
        bias_lr = None  # still "the same as lr_multiplier"
    return dataclasses.replace(
        layer, init=_scaled_init(layer.init, f.init_var),
        bias_init=_scaled_init(layer.bias_init, fb.init_var),
        multiplier=layer.multiplier * f.multiplier, lr_multiplier=lr, bias_lr_multiplier=bias_lr)


def _scaled_alpha(alpha: Any, factor: float, p: Parametrization, index: int) -> Any:
    """A residual block's branch scale times a depth parametrization's ``(L/L0)^c`` factor."""
    if factor == 1.0:
        return alpha
    if isinstance(alpha, str):
        raise ValueError(f"block {index} has alpha={alpha!r}, which already scales with depth; "
                         f"{p.name!r} multiplies alpha by (L/L0)^{p.block_multiplier_depth:g}: "
                         "give alpha as a number (its value at the base depth)")
    return alpha * factor


def _network_width(network: Network) -> int:
    return network.widths[1]


def parametrize(network: Network, parametrization: Parametrization | str, *, base_width: int,
                base_depth: int | None = None, optimizer: str | None = None) -> Network:
    """``network`` under ``parametrization``, normalised to a base of ``base_width`` (and
    ``base_depth``): a new :class:`~initjax.network.Network` whose layers carry the scaled init,
    ``multiplier``, ``lr_multiplier`` and ``bias_lr_multiplier``, and whose residual ``alpha`` is
    scaled for depth-muP.

    Roles: the network's first block is the **input** layer (a Dense or Conv layer: its fan-in,
    ``in_width``, is the data's and does not scale), its last block the **output** layer (the
    readout: a Dense layer), every other weight layer (residual branches included) **hidden**;
    every bias follows the **bias** rule. The width is the first layer's width ``n =
    network.widths[1]``; every hidden dimension ``d`` is taken to scale with it (its base is ``d
    base_width / n``), so ``m = n / base_width`` is the fan-in multiplier of the hidden and output
    layers and the fan-out multiplier of the input and hidden layers. Depth ``L`` is the number of
    residual blocks (``base_depth`` is needed when the parametrization scales with depth and the
    network has residual blocks; a network without them is not scaled in depth).

    A token network (``Network(tokens=T)`` of :class:`~initjax.network.Attention` blocks, e.g.
    :meth:`~initjax.network.Network.transformer`) is all hidden: its width is the stream's
    (``in_width``), every block's W_Q, W_K, W_V, W_O, W_1, W_2 follow the **hidden** rule
    (``init``, ``qk_init``, ``mlp_init`` scaled, ``lr_multiplier`` set; a forward multiplier is
    refused: Attention has none), its logit scale the **attention_logit** rule with ``d_head``
    scaling like the width (the heads fixed): muP's ``1/d_head`` relative to the base is
    ``s = sqrt(d_head0) / d_head`` (SP's ``1/sqrt(d_head)`` at the base width); depth-muP scales
    ``alpha``. Its stem and readout are not blocks: :func:`token_heads` gives them.

    Each layer keeps its own initializer family and gain: its draws are multiplied by
    ``sqrt(init_var factor)`` (``lecun_normal`` becomes ``variance_scaling`` with ``scale =
    factor``, ``he_normal`` gets ``gain * sqrt(factor)``, ...). The multipliers multiply the
    layer's own. At ``base_width == n`` (and ``base_depth == L``) the result equals ``network``.
    Apply it once, to a network as written (SP): it composes with what the network already has.

    Args:
      network: the network as written at any width (SP: its own inits, multipliers 1).
      parametrization: a name of :data:`PARAMETRIZATIONS` or a :class:`Parametrization`.
      base_width: the width at which the result equals ``network``'s SP (1 <= base_width <= n).
      base_depth: ``L0`` (1 <= L0 <= L), for depth scaling.
      optimizer: ``"sgd"`` or ``"adam"`` for a named parametrization (default ``"sgd"``); for a
        :class:`Parametrization` it must match its ``optimizer`` if given.

    Raises:
      ValueError: an unknown parametrization or optimizer, an optimizer that does not match,
        ``base_width < 1`` or larger than the network's width (both named), a network whose first
        block is not a Dense/Conv layer or whose last block is not a Dense layer (the readout),
        a symbolic ``alpha="1/sqrt(depth)"`` under depth scaling, a missing ``base_depth``.
      TypeError: ``network`` is not a Network.

    >>> net = mlp(784, 1024, 3, 10)
    >>> mup = parametrize(net, "mup", base_width=256, optimizer="adam")
    >>> [layer.lr_multiplier for layer in mup.dense_layers]
    [1.0, 0.25, 0.25]
    >>> mup.dense_layers[-1].init.spec
    'variance_scaling:distribution=normal,mode=fan_in,scale=0.25'
    >>> parametrize(net, "mup", base_width=1024) == net
    True
    """
    p = _resolve(parametrization, optimizer)
    if not isinstance(network, Network):
        raise TypeError(f"network must be an initjax Network, got {type(network).__name__}")
    if network.tokens is not None:
        return _parametrize_tokens(network, p, base_width, base_depth)
    blocks = network.blocks
    if len(blocks) < 2:
        raise ValueError("a parametrization needs an input layer, a readout and a width between "
                         f"them: the network has {len(blocks)} block; build it with at least 2")
    for i, block in enumerate(blocks):
        if not isinstance(block, Dense | Conv | Residual):
            raise ValueError(f"parametrize knows Dense, Conv and Residual blocks; block {i} is a "
                             f"{getattr(block, 'kind', type(block).__name__)!r} block")
    if not isinstance(blocks[0], Dense | Conv):
        raise ValueError(f"the network's first block must be a Dense or Conv layer (the input "
                         f"layer, whose fan-in in_width={network.in_width} is the data's), got a "
                         f"{blocks[0].kind!r} block")
    if not isinstance(blocks[-1], Dense):
        raise ValueError(f"the network must end in a Dense layer (the readout, the output role), "
                         f"got a {blocks[-1].kind!r} block")
    width = _network_width(network)
    if isinstance(base_width, bool) or not isinstance(base_width, numbers.Real):
        raise TypeError(f"base_width must be a number >= 1, got {base_width!r}")
    if base_width < 1:
        raise ValueError(f"base_width must be >= 1, got {base_width}")
    if base_width > width:
        raise ValueError(f"base_width={base_width} is larger than the network's width {width} "
                         f"(its first layer's); use base_width <= {width}")
    m = width / base_width
    m_depth = _depth_mult(p, network, base_depth)
    branch_factor = m_depth ** p.block_multiplier_depth
    last = len(blocks) - 1
    new_blocks = []
    for i, block in enumerate(blocks):
        if isinstance(block, Dense | Conv):
            role = "input" if i == 0 else ("output" if i == last else "hidden")
            new_blocks.append(_parametrize_layer(block, role, p, 1.0 if i == 0 else m,
                                                 1.0 if i == last else m, m_depth))
            continue
        branch = tuple(_parametrize_layer(layer, "hidden", p, m, m, m_depth)
                       for layer in block.branch)
        new_blocks.append(dataclasses.replace(
            block, branch=branch, alpha=_scaled_alpha(block.alpha, branch_factor, p, i)))
    return _regroup(network, new_blocks)


def _regroup(network: Network, blocks: list[Any]) -> Network:
    stages: list[Repeat] = []
    for block in blocks:  # regroup equal consecutive blocks
        if stages and stages[-1].block == block:
            stages[-1] = Repeat(block, stages[-1].count + 1)
        else:
            stages.append(Repeat(block, 1))
    return network.replace(stages=tuple(stages))


def _parametrize_tokens(network: Network, p: Parametrization, base_width: Any,
                        base_depth: Any) -> Network:
    """:func:`parametrize` of a token network: every Attention block is hidden (module
    docstring of :func:`parametrize`)."""
    width = network.in_width
    m = _check_width_pair("the stream width", width, "base_width", base_width)
    m_depth = _depth_mult(p, network, base_depth)
    branch_factor = m_depth ** p.block_multiplier_depth
    f = p.factors("hidden", fan_in_mult=m, fan_out_mult=m, depth_mult=m_depth)
    if f.multiplier != 1.0:
        raise ValueError(f"{p.name!r} gives hidden layers a forward multiplier ({f.multiplier:g} at "
                         f"m = {m:g}); an Attention block has none, so its token networks cannot "
                         "be parametrized by it (sp, mup and depth_mup can)")
    # the heads are fixed, so d_head = width / heads scales like the width
    logit = p.factors("attention_logit", fan_in_mult=m, fan_out_mult=m,
                      depth_mult=m_depth).multiplier
    new_blocks = []
    for i, block in enumerate(network.blocks):
        alpha = _scaled_alpha(block.alpha, branch_factor, p, i) if block.residual else block.alpha
        new_blocks.append(dataclasses.replace(
            block, init=_scaled_init(block.init, f.init_var),
            qk_init=None if block.qk_init is None else _scaled_init(block.qk_init, f.init_var),
            mlp_init=_scaled_init(block.mlp_init, f.init_var),
            logit_scale=block.logit_scale if logit == 1.0 else block.scale(width) * logit,
            lr_multiplier=block.lr_multiplier * f.lr, alpha=alpha))
    return _regroup(network, new_blocks)


def token_heads(parametrization: Parametrization | str, *, width: int, base_width: int,
                readout_init: Any = "lecun_normal", embed_init: Any = "lecun_normal",
                optimizer: str | None = None) -> dict[str, Any]:
    """The stem and readout of a token network under a parametrization, as
    :class:`~initjax.training.TrainConfig` fields: a transformer's input layer (the stem's
    ``W_e`` and positions, fan-in ``F`` fixed, fan-out the width) and its readout (fan-in the
    width) are not blocks of its description (they are added by :func:`initjax.modules.build`
    and the trainer), so :func:`parametrize` cannot reach them::

        net = parametrize(Network.transformer(2, 256, 4, 8, mlp=True, mlp_width=256), "mup",
                          base_width=64, optimizer="adam")
        cfg = TrainConfig(model="network", network=net, optimizer="adam",
                          **token_heads("mup", width=256, base_width=64, optimizer="adam"))

    ``readout_init`` and ``embed_init`` are initjax initializer specs (the network as written: the
    trainer's defaults). Returns ``{"kernel_init": readout_init scaled by the output rule's init
    variance,
    "embed_init": embed_init scaled by the input rule's, "readout_lr_multiplier": the output
    rule's learning-rate factor, "embed_lr_multiplier": the input rule's}`` with ``m = width /
    base_width`` (the readout's fan-in multiplier and the stem's fan-out multiplier). For
    :func:`initjax.modules.build` the first key is ``readout_init``.

    >>> h = token_heads("mup", width=256, base_width=64, optimizer="adam")
    >>> h["kernel_init"], h["readout_lr_multiplier"], h["embed_lr_multiplier"]
    ('variance_scaling:distribution=normal,mode=fan_in,scale=0.25', 0.25, 1.0)

    Raises:
      ValueError: an unknown parametrization or optimizer, bad widths (named), or a
        parametrization whose input or output rule has a forward multiplier other than 1 (NTK:
        the stem and the readout have none).
      TypeError: an initializer that is not a spec string.
    """
    p = _resolve(parametrization, optimizer)
    m = _check_width_pair("width", width, "base_width", base_width)
    out = p.factors("output", fan_in_mult=m, fan_out_mult=1.0)
    inp = p.factors("input", fan_in_mult=1.0, fan_out_mult=m)
    for role, f in (("output", out), ("input", inp)):
        if f.multiplier != 1.0:
            raise ValueError(f"{p.name!r} gives the {role} layer a forward multiplier "
                             f"({f.multiplier:g} at m = {m:g}); a token network's "
                             f"{'readout' if role == 'output' else 'stem'} has none")
    specs = {}
    for key, init, f in (("kernel_init", readout_init, out), ("embed_init", embed_init, inp)):
        if not isinstance(init, str):
            raise TypeError(f"{'readout_init' if key == 'kernel_init' else key} must be an initjax "
                            f"initializer spec (a TrainConfig field is a string), got {init!r}")
        specs[key] = _scaled_init(_initializers.get(init), f.init_var).spec
    return {**specs, "readout_lr_multiplier": out.lr, "embed_lr_multiplier": inp.lr}


def mlp(in_width: int, width: int, depth: int, out_width: int, *, activation: Any = "relu",
        parametrization: Parametrization | str = "sp", optimizer: str = "sgd",
        base_width: int | None = None, bias: bool = True) -> Network:
    """The MLP of coordinate checks and learning-rate transfer, under a parametrization::

        input (in_width -> width) -> (depth - 1) hidden layers (width -> width) -> readout

    ``depth`` weight matrices (``depth=3``: in->w, w->w, w->out). Input and hidden layers use
    ``activation`` and He's init with that activation's gain (``he_normal`` with
    ``nonlinearity=activation``, see :func:`initjax.gains.calculate_gain`; ``lecun_normal`` for
    an activation it does not know); the
    readout is linear (``"identity"``) with ``lecun_normal`` (variance ``1/fan_in``, Table 3's
    SP). Biases start at 0. Then :func:`parametrize` with ``base_width`` (default: ``width``, so
    the network is SP's at its own width).

    Args:
      in_width, width, out_width: the data, hidden and output dimensions (>= 1).
      depth: the number of weight matrices (>= 2).
      activation: the hidden activation spec.
      parametrization: a name of :data:`PARAMETRIZATIONS` or a :class:`Parametrization`.
      optimizer: ``"sgd"`` or ``"adam"`` (a :class:`Parametrization`'s own optimizer must be
        the same).
      base_width: the base of the width scaling (1 <= base_width <= width).
      bias: must be True: every initjax Dense layer has a bias (zero-initialized here).

    Raises:
      ValueError: ``depth < 2``, ``bias=False``, or any bad argument of :func:`parametrize`.

    >>> net = mlp(64, 512, 3, 10, parametrization="mup", optimizer="sgd", base_width=128)
    >>> net.widths, [layer.lr_multiplier for layer in net.dense_layers]
    ((64, 512, 512, 10), [4.0, 1.0, 0.25])
    """
    from initjax import activations as _activations
    from initjax.gains import calculate_gain

    in_width = check_int("in_width", in_width, minimum=1)
    width = check_int("width", width, minimum=1)
    out_width = check_int("out_width", out_width, minimum=1)
    depth = check_int("depth", depth, minimum=2)
    if bias is not True:
        raise ValueError(f"bias={bias!r}: initjax's Dense layers always carry a bias (zero at "
                         "initialization); bias-free layers are not in the network description yet")
    act = _activations.get(activation)
    try:
        calculate_gain(act.name)
        init: Any = _initializers.he_normal(nonlinearity=act.name)
    except (ValueError, TypeError):
        init = "lecun_normal"
    layers = [Repeat(Dense(width, init, act, "zeros"), 1)]
    if depth > 2:
        layers.append(Repeat(Dense(width, init, act, "zeros"), depth - 2))
    layers.append(Repeat(Dense(out_width, "lecun_normal", "identity", "zeros"), 1))
    network = Network(in_width, tuple(layers))
    return parametrize(network, parametrization, base_width=width if base_width is None
                       else base_width, optimizer=optimizer)


# ---------------------------------------------------------------------------------------------
# Exports for a user's own Flax/optax code
# ---------------------------------------------------------------------------------------------


def _mults(rule: Rule, role: str, fan_in: Any, base_fan_in: Any, fan_out: Any, base_fan_out: Any,
           depth: Any, base_depth: Any) -> tuple[float, float, float]:
    out = []
    for what, (n, v, bn, bv) in {
        "fan_in": ("fan_in", fan_in, "base_fan_in", base_fan_in),
        "fan_out": ("fan_out", fan_out, "base_fan_out", base_fan_out),
        "depth": ("depth", depth, "base_depth", base_depth),
    }.items():
        if v is None and bv is None:
            if rule.uses(what):
                raise ValueError(f"the {role!r} rule scales with {what}: pass {n} and {bn}")
            out.append(1.0)
        elif v is None or bv is None:
            raise ValueError(f"pass both {n} and {bn}, got {n}={v!r}, {bn}={bv!r}")
        else:
            out.append(_check_width_pair(n, v, bn, bv))
    return out[0], out[1], out[2]


def _export_factors(parametrization: Any, role: str, optimizer: str | None, **sizes: Any
                    ) -> Factors:
    p = _resolve(parametrization, optimizer)
    rule = p.rule(role)
    return rule.factors(*_mults(rule, role, **sizes))


def _default_base_init() -> Any:
    # Flax's default kernel_init (nnx.Linear, linen.Dense): jax's lecun_normal, a normal truncated
    # at 2 sigma with variance 1/fan_in.
    return _initializers.variance_scaling(1.0, "fan_in", "truncated_normal")


def kernel_init(parametrization: Parametrization | str, role: str, *, fan_in: int,
                base_fan_in: int, fan_out: int | None = None, base_fan_out: int | None = None,
                depth: int | None = None, base_depth: int | None = None,
                base_init: Any = None, optimizer: str | None = None) -> Any:
    """A Flax initializer (``init(key, shape, dtype)``) for a ``role`` layer of a user's model:
    ``base_init`` with its draws multiplied by ``sqrt(init_var factor)``.

    ``base_init`` is the layer's init at the base shape: an initjax spec or
    :class:`~initjax.initializers.Initializer` (the result is then one too, JSON-able) or any JAX
    initializer (wrapped); None means Flax's default, jax's ``lecun_normal`` (truncated normal,
    variance ``1/fan_in``). muP's readout, for example::

        nnx.Linear(w, 10, kernel_init=kernel_init("mup", "output", fan_in=w, base_fan_in=256),
                   rngs=rngs)       # variance (1/w) * (256/w)

    Args:
      parametrization: a name or a :class:`Parametrization`.
      role: ``"input"``, ``"hidden"``, ``"output"`` or ``"bias"``.
      fan_in, base_fan_in: the layer's fan-in and its base (needed when the rule scales with it).
      fan_out, base_fan_out, depth, base_depth: likewise.
      base_init: the base initializer (see above).
      optimizer: for a named parametrization (the init does not depend on it for the built-ins).

    Raises:
      ValueError: an unknown role or parametrization, a base larger than its size, a size the rule
        needs but was not given.
    """
    check_choice("role", role, _PARAM_ROLES)
    f = _export_factors(parametrization, role, optimizer, fan_in=fan_in, base_fan_in=base_fan_in,
                        fan_out=fan_out, base_fan_out=base_fan_out, depth=depth,
                        base_depth=base_depth)
    base = _default_base_init() if base_init is None else resolve_init(base_init, "base_init")
    return _scaled_init(base, f.init_var)


def multiplier(parametrization: Parametrization | str, role: str, *, fan_in: int,
               base_fan_in: int, fan_out: int | None = None, base_fan_out: int | None = None,
               depth: int | None = None, base_depth: int | None = None,
               optimizer: str | None = None) -> float:
    """The forward multiplier of a ``role`` layer (or the attention logit) in a user's model.

    For an ``nnx.Linear`` ``lin``, apply it to the input, ``lin(mult * x) = mult * x W + b``,
    which is initjax's layer (the bias is not multiplied). muP's attention logit:
    ``(q @ k.T) / sqrt(d) * multiplier("mup", "attention_logit", fan_in=d, base_fan_in=64)``
    gives ``8 q.k / d``. NTK: ``multiplier("ntk", "hidden", fan_in=n, base_fan_in=n0) =
    sqrt(n0 / n)``.

    Raises:
      ValueError: as :func:`kernel_init`; the bias role has no multiplier.
    """
    check_choice("role", role, ("input", "hidden", "output", "attention_logit"))
    return _export_factors(parametrization, role, optimizer, fan_in=fan_in,
                           base_fan_in=base_fan_in, fan_out=fan_out, base_fan_out=base_fan_out,
                           depth=depth, base_depth=base_depth).multiplier


def lr_multiplier(parametrization: Parametrization | str, role: str, *,
                  fan_in: int | None = None, base_fan_in: int | None = None,
                  fan_out: int | None = None, base_fan_out: int | None = None,
                  depth: int | None = None, base_depth: int | None = None,
                  optimizer: str | None = None) -> float:
    """The learning-rate factor of a ``role`` parameter (``"input"``, ``"hidden"``,
    ``"output"``, ``"bias"``): e.g. ``lr_multiplier("mup", "hidden", fan_in=1024,
    base_fan_in=256, optimizer="adam") == 0.25``.

    Raises:
      ValueError: as :func:`kernel_init`.
    """
    check_choice("role", role, _PARAM_ROLES)
    return _export_factors(parametrization, role, optimizer, fan_in=fan_in,
                           base_fan_in=base_fan_in, fan_out=fan_out, base_fan_out=base_fan_out,
                           depth=depth, base_depth=base_depth).lr


def _key_name(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _path_str(path: tuple) -> str:
    """A pytree path as ``a/b/0/kernel`` (NNX's trailing ``.value`` dropped)."""
    names = [_key_name(k) for k in path]
    if len(path) > 1 and names[-1] == "value" and type(path[-1]).__name__ == "GetAttrKey":
        names = names[:-1]
    return "/".join(names)


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) >= 2:
        return _initializers.compute_fans(shape)
    return 1, (shape[0] if shape else 1)


def _shape_of(x: Any) -> tuple[int, ...]:
    shape = getattr(x, "shape", x)
    return tuple(int(d) for d in shape)


def lr_multipliers_by_path(params: Any, roles: Mapping[str, str],
                           parametrization: Parametrization | str, *,
                           base_shapes: Any = None, base_width: int | None = None,
                           width: int | None = None, depth: int | None = None,
                           base_depth: int | None = None, optimizer: str | None = None) -> Any:
    """Per-parameter learning-rate multipliers of a user's model, chosen by parameter path.

    Each leaf of ``params`` (e.g. ``nnx.state(model, nnx.Param)`` or a linen ``params`` dict) is
    named by its ``/``-joined path (``"layers/0/kernel"``); the first pattern of ``roles`` (a
    mapping ``regex -> role``, searched with :func:`re.search`, in order) that matches gives its
    role. Its multipliers: fans from its shape (kernel ``(..., in, out)`` as
    :func:`~initjax.initializers.compute_fans`; a vector ``(n,)`` has fan-in 1 and fan-out ``n``)
    over the fans of its base shape: the same path in ``base_shapes`` (a tree of arrays or
    ``ShapeDtypeStruct`` of the model built at the base width, e.g. from ``nnx.eval_shape``; only
    its paths must match), or, with ``base_width`` and ``width``, the shape with every dimension
    equal to ``width`` replaced by ``base_width``.

    Returns:
      A tree shaped like ``params`` with float leaves (for
      :func:`initjax.training.core.scale_by_multipliers`).

    Raises:
      ValueError: a path no pattern matches (naming it and the patterns), a role that is not a
        parameter role, a missing base shape, a base larger than the shape, neither or both of
        ``base_shapes`` and ``base_width``.
    """
    import jax

    p = _resolve(parametrization, optimizer)
    if not isinstance(roles, Mapping) or not roles:
        raise TypeError(f"roles must be a non-empty mapping regex -> role, got {roles!r}")
    compiled = []
    for pattern, role in roles.items():
        if role not in _PARAM_ROLES:
            raise ValueError(f"roles[{pattern!r}] = {role!r}: a parameter's role must be one of "
                             f"{', '.join(map(repr, _PARAM_ROLES))} (attention_logit is a "
                             "multiplier only: see multiplier())")
        try:
            compiled.append((re.compile(pattern), role))
        except re.error as err:
            raise ValueError(f"roles: {pattern!r} is not a valid regex: {err}") from None
    if (base_shapes is None) == (base_width is None):
        raise ValueError("give either base_shapes (the model's parameter shapes at the base width) "
                         "or base_width and width, not "
                         + ("neither" if base_shapes is None else "both"))
    if base_width is not None:
        if width is None:
            raise ValueError("base_width needs width (the model's width: its dimensions equal to "
                             "width are the ones scaled)")
        _check_width_pair("width", width, "base_width", base_width)
        width, base_width = int(width), int(base_width)
        base_of = None
    else:
        base_of = {_path_str(path): _shape_of(leaf) for path, leaf in
                   jax.tree_util.tree_leaves_with_path(base_shapes)}
    if depth is None and base_depth is None:
        if any(p.rule(r).lr.depth != 0.0 for r in _PARAM_ROLES):
            raise ValueError(f"{p.name!r} scales learning rates with depth: pass depth and "
                             "base_depth")
        m_depth = 1.0
    elif depth is None or base_depth is None:
        raise ValueError(f"pass both depth and base_depth, got depth={depth!r}, "
                         f"base_depth={base_depth!r}")
    else:
        m_depth = _check_width_pair("depth", depth, "base_depth", base_depth)

    def one(path: tuple, leaf: Any) -> float:
        name = _path_str(path)
        role = next((r for rx, r in compiled if rx.search(name)), None)
        if role is None:
            raise ValueError(f"parameter {name!r} matches no pattern of roles "
                             f"{list(roles)}; add a pattern for it")
        shape = _shape_of(leaf)
        if base_of is None:
            base = tuple(base_width if d == width else d for d in shape)
        elif name not in base_of:
            raise ValueError(f"parameter {name!r} is not in base_shapes (its paths: "
                             f"{sorted(base_of)[:8]}...)")
        else:
            base = base_of[name]
        if len(base) != len(shape):
            raise ValueError(f"parameter {name!r}: base shape {base} and shape {shape} differ in "
                             "rank")
        (fi, fo), (bfi, bfo) = _fans(shape), _fans(base)
        m_in = _check_width_pair(f"{name} fan_in", fi, f"{name} base fan_in", bfi)
        m_out = _check_width_pair(f"{name} fan_out", fo, f"{name} base fan_out", bfo)
        if role == "bias":
            m_in = 1.0
        return p.rule(role).factors(m_in, m_out, m_depth).lr

    return jax.tree_util.tree_map_with_path(one, params)


def scale_lr_by_path(params: Any, roles: Mapping[str, str],
                     parametrization: Parametrization | str, **kwargs: Any) -> Any:
    """An optax transformation that gives each parameter its role's learning-rate factor::

        tx = optax.chain(optax.adam(lr), scale_lr_by_path(params, {r"readout": "output",
                         r"bias$": "bias", r"^in/": "input", r".": "hidden"}, "mup",
                         base_width=256, width=1024, optimizer="adam"))

    Chain it after the optimizer (whose last step scales by the learning rate), so parameter
    ``p`` steps with ``lr * factor(p)``. ``params`` fixes the tree (the transformation's updates
    must have its structure); ``kwargs`` are :func:`lr_multipliers_by_path`'s.

    Returns:
      ``initjax.training.core.scale_by_multipliers(lr_multipliers_by_path(...))``.

    Raises:
      ValueError: as :func:`lr_multipliers_by_path`.
    """
    from initjax.training.core import scale_by_multipliers

    return scale_by_multipliers(lr_multipliers_by_path(params, roles, parametrization, **kwargs))
