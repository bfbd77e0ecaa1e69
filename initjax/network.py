"""One description of a network: an input and a stack of repeated blocks.

A :class:`Network` is what the engine samples and measures (:func:`initjax.propagate`), what
:func:`initjax.theory.predict` predicts, what the trainer trains and what
:func:`initjax.modules.build` builds as a Flax NNX module, in the spirit of neural-tangents'
``(init_fn, apply_fn, kernel_fn)``: the architecture is stated once. It is frozen, hashable (a
static argument of ``jax.jit``) and round-trips through JSON.

The stream ``x^0`` is the input batch (``batch`` examples of ``in_width`` coordinates, Gaussian
with variance ``input_variance`` and correlation ``input_correlation`` between examples). Each
:class:`Repeat` applies its block ``count`` times; a repeat is one ``lax.scan`` step in the engine,
so compile time stays flat in depth. The blocks:

:class:`Dense` (a fully connected layer, weights ``W: (n_in, n_out)`` in Flax's layout)::

    h = multiplier * (x W) + b
    x' = phi(norm(h))   norm_position="before"
    x' = norm(phi(h))   norm_position="after"      (norm is the identity for norm="none")

:class:`Residual` (``branch`` a stack of Dense layers whose last width is the stream width)::

    x' = x + alpha * branch(norm(x))   norm_position="pre"
    x' = norm(x + alpha * branch(x))   norm_position="post"

``alpha`` is a number or ``"1/sqrt(depth)"`` (``depth`` = the number of residual blocks of the
network); with ``learnable=True`` it is a trained scalar starting at that value (``alpha=0``:
SkipInit, De & Smith 2020; ReZero, Bachlechner et al. 2020).

Every Dense layer also carries a learning-rate multiplier (``lr_multiplier``): the trainer scales
that layer's updates by it (a parametrization's per-layer rule; it does not change the network at
initialization).

The stream may carry spatial axes (``Network.spatial``, e.g. ``(8, 8)``): it is then
``(batch, *spatial, in_width)``, channels last (NHWC), and :class:`Conv` blocks (a stride-1
convolution with SAME padding, kernel ``(*kernel_size, C_in, C_out)`` in Flax's HWIO layout,
fan-in ``prod(kernel_size) * C_in``) may act on it, alone or as a residual branch::

    h = multiplier * conv(x, K) + b              (then phi and norm as for Dense)

A Dense block on a spatial stream acts per position (a 1x1 convolution). Norms on a spatial
stream: batch norm per channel over ``(batch, *spatial)``, layer and RMS norm per example over
``(*spatial, channels)``.

The stream may instead carry a token axis (``Network.tokens = T``): it is then ``(batch, T,
in_width)``, ``batch`` sequences of ``T`` tokens, and :class:`Attention` blocks (multi-head softmax
self-attention with an optional MLP sub-block, pre- or post-norm, residual or pure) act on it; norms
there act per token over its channels::

    x' = x + A Attn(norm(x))      (pre; post: norm(x + A Attn(x)); no residual: Attn(norm(x)))

New block kinds plug in with :func:`register_block`: a block is a frozen dataclass with a class
attribute ``kind``, ``out_width(in_width) -> int`` (validating the widths) and ``to_dict()`` /
``from_dict(data)``.

    >>> from initjax.network import Dense, Network, Repeat, Residual
    >>> mlp = Network.mlp(depth=10, width=512, init="he_normal", activation="relu")
    >>> mlp.depth, mlp.widths[-1]
    (10, 512)
    >>> res = Network(in_width=256, stages=(
    ...     Repeat(Residual((Dense(256, "he_normal", "relu"),), alpha="1/sqrt(depth)"), 50),))
    >>> res.residual_depth, res.branch_scale(res.stages[0].block)
    (50, 0.1414...)
    >>> Network.from_json(res.to_json()) == res
    True

References:
  Yang & Schoenholz 2017, "Mean Field Residual Networks: On the Edge of Chaos",
  https://arxiv.org/abs/1712.08969.
  De & Smith 2020, "Batch Normalization Biases Residual Blocks Towards the Identity Function in
  Deep Networks", https://arxiv.org/abs/2002.10444.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from initjax import activations as _activations
from initjax import gains as _gains
from initjax import initializers as _initializers
from initjax._checks import check_choice, check_float, check_float_dtype, check_int

__all__ = [
    "ATTENTION_NORMS",
    "BETAS",
    "BRANCH_SCALES",
    "LOGIT_SCALES",
    "NORMS",
    "Attention",
    "Conv",
    "Dense",
    "JSONDescription",
    "Network",
    "Repeat",
    "Residual",
    "block_from_dict",
    "fixup",
    "init_spec",
    "register_block",
    "resolve_init",
]

NORMS = ("none", "batch", "layer", "rms")
DENSE_NORM_POSITIONS = ("before", "after")
RESIDUAL_NORM_POSITIONS = ("pre", "post")
BRANCH_SCALES = ("1/sqrt(depth)",)  # the symbolic branch scales; any finite number >= 0 too
BETAS = ("none", "expected")


def resolve_init(value: Any, field: str) -> Any:
    """An initializer from a registry spec, a ``(name, kwargs)`` pair, an initjax
    :class:`~initjax.initializers.Initializer` or a user's JAX initializer function."""
    if isinstance(value, _initializers.Initializer):
        return value
    if isinstance(value, str):
        return _initializers.get(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return _initializers.get(value[0], **dict(value[1]))
    if callable(value):
        return value  # a user's own JAX initializer: usable, but not JSON-serializable
    raise TypeError(
        f"{field} must be an initializer name such as 'he_normal' or 'normal:stddev=0.01', "
        f"(name, kwargs), an initjax Initializer or a JAX initializer function; got {value!r}"
    )


def init_spec(value: Any) -> str:
    """The spec string of an initializer (``"custom:<name>"`` for a user's function)."""
    spec = getattr(value, "spec", None)
    if isinstance(spec, str):
        return spec
    return f"custom:{getattr(value, '__name__', type(value).__name__)}"


class JSONDescription:
    """``to_json`` / ``from_json`` for a description with ``to_dict`` / ``from_dict``."""

    def to_json(self) -> str:
        """The description as JSON text (keys sorted)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Any:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def _check_buildable_spec(field: str, spec: Any) -> None:
    if isinstance(spec, str) and spec.startswith("custom:"):
        raise ValueError(
            f"{field}={spec!r} was a user function and cannot be rebuilt from JSON; "
            "pass the initializer again"
        )


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {value!r}")


def _check_fields(cls: type, data: Mapping[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known - {"kind"}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(known)}")


def _canonicalize_layer(layer: Any) -> None:
    """Validate and canonicalize the fields a Dense and a Conv layer share (frozen: set once)."""
    set_ = object.__setattr__
    set_(layer, "init", resolve_init(layer.init, "init"))
    set_(layer, "bias_init", resolve_init(layer.bias_init, "bias_init"))
    set_(layer, "activation", _activations.get(layer.activation))
    check_choice("norm", layer.norm, NORMS)
    check_choice("norm_position", layer.norm_position, DENSE_NORM_POSITIONS)
    set_(layer, "norm_eps", check_float("norm_eps", layer.norm_eps, minimum=0.0))
    for name in ("multiplier", "lr_multiplier"):
        set_(layer, name, check_float(name, getattr(layer, name), minimum=0.0, strict_minimum=True))
    if layer.bias_lr_multiplier is not None:  # None: the bias follows lr_multiplier
        set_(layer, "bias_lr_multiplier", check_float("bias_lr_multiplier", layer.bias_lr_multiplier,
                                                      minimum=0.0, strict_minimum=True))
    _check_bool("preactivation", layer.preactivation)
    _check_bool("weight_standardization", layer.weight_standardization)


def _layer_dict(layer: Any) -> dict[str, Any]:
    """The JSON fields a Dense and a Conv layer share (``bias_lr_multiplier`` only when set, so
    older descriptions read and write unchanged)."""
    out = {
        "init": init_spec(layer.init),
        "activation": layer.activation.spec,
        "bias_init": init_spec(layer.bias_init),
        "norm": layer.norm,
        "norm_position": layer.norm_position,
        "norm_eps": layer.norm_eps,
        "multiplier": layer.multiplier,
        "lr_multiplier": layer.lr_multiplier,
        "preactivation": layer.preactivation,
        "weight_standardization": layer.weight_standardization,
    }
    if layer.bias_lr_multiplier is not None:
        out["bias_lr_multiplier"] = layer.bias_lr_multiplier
    return out


@dataclasses.dataclass(frozen=True)
class Dense:
    """A fully connected layer ``phi(norm(multiplier * x W + b))`` (see the module docstring).

    Attributes:
      width: output width ``n_out`` (>= 1).
      init: weight initializer spec (``"he_normal"``, ``"normal:stddev=0.01"``) or object.
      activation: activation spec (``"tanh"``, ``"identity"`` for a linear layer) or Activation.
      bias_init: bias initializer, drawn with shape ``(n_out,)``.
      norm: one of :data:`NORMS`.
      norm_position: ``"before"`` or ``"after"`` the activation.
      norm_eps: epsilon added to the variance inside the norm (>= 0).
      multiplier: forward multiplier on ``x W`` (> 0; muP's readout multiplier, for example).
      lr_multiplier: the factor on this layer's learning rate (> 0).
      bias_lr_multiplier: the factor on the bias's learning rate (> 0; None: ``lr_multiplier``).
        muP gives biases their own rule (TP5 Table 3, :mod:`initjax.parametrization`).
      preactivation: the activation (and norm) come first, as in a pre-activation residual branch
        (He et al. 2016, ResNet v2): ``multiplier * phi(norm(x)) W + b`` (``"before"``) or
        ``multiplier * norm(phi(x)) W + b`` (``"after"``).
      weight_standardization: use Brock et al.'s scaled weight standardization
        ``W_hat[:, j] = g_j (W[:, j] - mean_j) / (std_j sqrt(n_in))`` (mean and std over the
        fan-in of unit j, the gain ``g_j`` starting at 1; NF-ResNets, arXiv 2101.08692) in place
        of ``W``: every unit's fan-in weights have mean 0 and squared norm 1, whatever ``init``
        drew.
    """

    kind: ClassVar[str] = "dense"

    width: int
    init: Any = "lecun_normal"
    activation: Any = "tanh"
    bias_init: Any = "zeros"
    norm: str = "none"
    norm_position: str = "before"
    norm_eps: float = 1e-5
    multiplier: float = 1.0
    lr_multiplier: float = 1.0
    preactivation: bool = False
    weight_standardization: bool = False
    bias_lr_multiplier: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", check_int("width", self.width, minimum=1))
        _canonicalize_layer(self)

    def out_width(self, in_width: int) -> int:
        return self.width

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "width": self.width,
            **_layer_dict(self),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Dense:
        _check_fields(cls, data)
        for f in ("init", "bias_init"):
            _check_buildable_spec(f, data.get(f))
        return cls(**{k: v for k, v in data.items() if k != "kind"})


def _check_kernel_size(value: Any) -> int | tuple[int, ...]:
    if isinstance(value, bool):
        raise TypeError(f"kernel_size must be an int >= 1 or a tuple of them, got {value!r}")
    if isinstance(value, int):
        return check_int("kernel_size", value, minimum=1)
    if isinstance(value, Sequence) and not isinstance(value, str | bytes) and value:
        return tuple(check_int(f"kernel_size[{i}]", k, minimum=1) for i, k in enumerate(value))
    raise TypeError(f"kernel_size must be an int >= 1 or a non-empty tuple of them, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Conv:
    """A convolution layer ``phi(norm(multiplier * conv(x, K) + b))`` on a spatial stream.

    Stride 1 and SAME padding (the output has the input's spatial shape; positions past the border
    read zeros). The kernel ``K`` has Flax's layout ``(*kernel_size, C_in, C_out)`` (HWIO for 2-d)
    and fan-in ``prod(kernel_size) * C_in``, as :func:`initjax.initializers.compute_fans` computes
    it, so ``"he_normal"`` draws ``K ~ N(0, 2 / (k_h k_w C_in))``. Every other field means what it
    means for :class:`Dense` (``norm``, ``preactivation``, ``weight_standardization`` over the
    fan-in ``(*kernel_size, C_in)`` of each output channel, ...).

    Attributes:
      channels: output channels ``C_out`` (>= 1); ``width`` is the same number.
      kernel_size: an int (the same size on every spatial axis) or one size per spatial axis.
    """

    kind: ClassVar[str] = "conv"

    channels: int
    kernel_size: int | tuple[int, ...] = 3
    init: Any = "he_normal"
    activation: Any = "relu"
    bias_init: Any = "zeros"
    norm: str = "none"
    norm_position: str = "before"
    norm_eps: float = 1e-5
    multiplier: float = 1.0
    lr_multiplier: float = 1.0
    preactivation: bool = False
    weight_standardization: bool = False
    bias_lr_multiplier: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "channels", check_int("channels", self.channels, minimum=1))
        set_(self, "kernel_size", _check_kernel_size(self.kernel_size))
        _canonicalize_layer(self)

    @property
    def width(self) -> int:
        """The output channels (named as a Dense layer's width)."""
        return self.channels

    def kernel_shape(self, spatial_rank: int) -> tuple[int, ...]:
        """``kernel_size`` on ``spatial_rank`` axes (an int repeated; a tuple must match)."""
        if isinstance(self.kernel_size, int):
            return (self.kernel_size,) * spatial_rank
        if len(self.kernel_size) != spatial_rank:
            raise ValueError(f"kernel_size={self.kernel_size} has {len(self.kernel_size)} axes, "
                             f"but the stream has {spatial_rank} spatial axes")
        return self.kernel_size

    def out_width(self, in_width: int) -> int:
        return self.channels

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "channels": self.channels,
            "kernel_size": (self.kernel_size if isinstance(self.kernel_size, int)
                            else list(self.kernel_size)),
            **_layer_dict(self),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Conv:
        _check_fields(cls, data)
        for f in ("init", "bias_init"):
            _check_buildable_spec(f, data.get(f))
        data = {k: v for k, v in data.items() if k != "kind"}
        if isinstance(data.get("kernel_size"), list):
            data["kernel_size"] = tuple(data["kernel_size"])
        return cls(**data)


@dataclasses.dataclass(frozen=True)
class Residual:
    """A residual block ``x + alpha * branch(x)`` with the norm before the branch or after the add.

    Attributes:
      branch: the branch's layers, all Dense or all Conv (at least one; the last one's width must
        equal the stream width, so the add is defined).
      alpha: the branch scale: a finite number >= 0 or ``"1/sqrt(depth)"``.
      learnable: alpha is a trained scalar that starts at ``alpha`` (SkipInit / ReZero: 0).
      norm: one of :data:`NORMS`, applied to the branch input (``"pre"``) or to the sum
        (``"post"``).
      norm_position: ``"pre"`` or ``"post"``.
      norm_eps: epsilon added to the variance inside the norm (>= 0).
      beta: ``"none"``, or ``"expected"`` for NF-ResNets' ``x + alpha * branch(x / beta_l)``
        with ``beta_l`` the stream's expected standard deviation before the block, computed
        analytically (:meth:`Network.expected_stream_variance`), not measured. With a pre norm
        the branch takes ``norm(x) / beta_l``.
      scalar_biases: Fixup's scalars (Zhang et al. 2019): a trained scalar bias (starting at 0)
        before every branch layer and activation and a trained scalar multiplier (starting at 1)
        on the branch. At initialization they change nothing; the trainer and the Flax modules
        train them. See :func:`fixup`.
    """

    kind: ClassVar[str] = "residual"

    branch: tuple[Dense, ...]
    alpha: float | str = 1.0
    learnable: bool = False
    norm: str = "none"
    norm_position: str = "pre"
    norm_eps: float = 1e-5
    beta: str = "none"
    scalar_biases: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        branch = self.branch
        if isinstance(branch, Dense | Conv):
            branch = (branch,)
        if isinstance(branch, str | bytes) or not isinstance(branch, Sequence) or not branch:
            raise TypeError("branch must be a non-empty sequence of Dense layers or of Conv "
                            f"layers, got {branch!r}")
        for i, layer in enumerate(branch):
            if not isinstance(layer, Dense | Conv):
                raise TypeError(f"branch[{i}] must be a Dense layer or a Conv layer, "
                                f"got {type(layer).__name__}")
        kinds = {type(layer).__name__ for layer in branch}
        if len(kinds) > 1:
            raise ValueError("a branch's layers must be all Dense or all Conv, "
                             f"got {[type(x).__name__ for x in branch]}")
        set_(self, "branch", tuple(branch))
        if isinstance(self.alpha, str):
            check_choice("alpha", self.alpha, BRANCH_SCALES)
        else:
            set_(self, "alpha", check_float("alpha", self.alpha, minimum=0.0))
        _check_bool("learnable", self.learnable)
        check_choice("norm", self.norm, NORMS)
        check_choice("norm_position", self.norm_position, RESIDUAL_NORM_POSITIONS)
        set_(self, "norm_eps", check_float("norm_eps", self.norm_eps, minimum=0.0))
        check_choice("beta", self.beta, BETAS)
        _check_bool("scalar_biases", self.scalar_biases)

    def out_width(self, in_width: int) -> int:
        if self.branch[-1].width != in_width:
            raise ValueError(
                f"a residual branch must end at the stream width {in_width}, but its last layer "
                f"has width {self.branch[-1].width}"
            )
        return in_width

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "branch": [layer.to_dict() for layer in self.branch],
            "alpha": self.alpha,
            "learnable": self.learnable,
            "norm": self.norm,
            "norm_position": self.norm_position,
            "norm_eps": self.norm_eps,
            "beta": self.beta,
            "scalar_biases": self.scalar_biases,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Residual:
        _check_fields(cls, data)
        data = dict(data)
        data.pop("kind", None)
        def layer_of(d: Any) -> Dense | Conv:
            is_conv = isinstance(d, Mapping) and d.get("kind") == "conv"
            return (Conv if is_conv else Dense).from_dict(d)

        data["branch"] = tuple(layer_of(layer) for layer in data.get("branch", ()))
        return cls(**data)


ATTENTION_NORMS = ("layer", "rms", "none")
LOGIT_SCALES = ("1/sqrt(d_head)", "1/d_head")  # the symbolic logit scales; any finite number >= 0 too


@dataclasses.dataclass(frozen=True)
class Attention:
    """A transformer block: multi-head softmax self-attention, optionally followed by an MLP
    sub-block, on a token stream ``(batch, tokens, D)`` (``Network.tokens``).

    Attention on one sequence ``X: (T, D)`` with ``H = heads`` heads of ``d = D / H`` channels
    (no biases; ``W_Q, W_K, W_V, W_O: (D, D)`` in Flax's layout)::

        Q = X W_Q, K = X W_K, V = X W_V                  (split into H heads of d columns)
        P_h = softmax(s Q_h K_h^T)                       (row-wise; causal: keys j > query i masked)
        Attn(X) = concat_h(P_h V_h) W_O

    with ``s = logit_scale``: ``1/sqrt(d)`` (Vaswani et al. 2017), ``1/d`` (muP, Yang et al.
    2021) or a number >= 0 (0: uniform attention). The block (``A`` the branch scale ``alpha``,
    ``norm`` per token over its ``D`` channels, without affine part at initialization)::

        residual, pre:    x <- x + A Attn(norm(x));   x <- x + A MLP(norm(x))   (MLP if mlp_width)
        residual, post:   x <- norm(x + A Attn(x));   x <- norm(x + A MLP(x))
        no residual:      x <- Attn(norm(x));         x <- MLP(norm(x))         (pre)
                          x <- norm(Attn(x));         x <- norm(MLP(x))         (post)

    where ``MLP(u) = phi(u W_1) W_2`` (``W_1: (D, mlp_width)``, ``W_2: (mlp_width, D)``, no
    biases). ``residual=False`` with ``norm="none"`` is Dong et al.'s pure attention ("SAN");
    without residual the branch scale must stay 1 (there is no branch to scale).

    Attributes:
      heads: number of heads (>= 1; must divide the stream width).
      init: initializer of W_Q, W_K, W_V and W_O (default ``"lecun_normal"``: variance 1/D).
      qk_init: initializer of W_Q and W_K only (None: ``init``; ``"zeros"`` gives uniform
        attention, as Xiong et al. 2020 assume).
      logit_scale: ``"1/sqrt(d_head)"``, ``"1/d_head"`` or a finite number >= 0.
      causal: mask the keys after each query.
      mlp_width: the MLP sub-block's hidden width (None: no MLP).
      mlp_activation: the MLP's activation ``phi`` (default ``"gelu"``: initjax's exact
        ``x Phi(x)``, ``jax.nn.gelu(approximate=False)``).
      mlp_init: initializer of W_1 and W_2 (default ``"he_normal"``).
      norm: ``"layer"``, ``"rms"`` or ``"none"`` (per token over channels).
      norm_position: ``"pre"`` or ``"post"``.
      residual: add the stream (True) or replace it (False: pure attention).
      alpha: the branch scale: a finite number >= 0 or ``"1/sqrt(depth)"`` (depth = the number of
        residual blocks of the network, attention blocks included).
      learnable: alpha is a trained scalar that starts at ``alpha`` (ReZero: ``alpha=0``).
      norm_eps: epsilon added to the variance inside the norm (>= 0).
      lr_multiplier: the factor (> 0) on the learning rate of the block's kernels W_Q, W_K, W_V,
        W_O (and W_1, W_2), for the trainer (a parametrization's hidden rule,
        :func:`initjax.parametrization.parametrize`); its norms and ``alpha`` keep the base rate.
        Not used at initialization. JSON omits it at 1.

    References:
      Vaswani et al. 2017, https://arxiv.org/abs/1706.03762. Dong, Cordonnier & Loukas 2021,
      https://arxiv.org/abs/2103.03404. Xiong et al. 2020, https://arxiv.org/abs/2002.04745.
      Bachlechner et al. 2020 (ReZero), https://arxiv.org/abs/2003.04887.
    """

    kind: ClassVar[str] = "attention"

    heads: int = 1
    init: Any = "lecun_normal"
    qk_init: Any = None
    logit_scale: float | str = "1/sqrt(d_head)"
    causal: bool = False
    mlp_width: int | None = None
    mlp_activation: Any = "gelu"
    mlp_init: Any = "he_normal"
    norm: str = "layer"
    norm_position: str = "pre"
    residual: bool = True
    alpha: float | str = 1.0
    learnable: bool = False
    norm_eps: float = 1e-5
    lr_multiplier: float = 1.0

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "heads", check_int("heads", self.heads, minimum=1))
        set_(self, "lr_multiplier", check_float("lr_multiplier", self.lr_multiplier, minimum=0.0,
                                                strict_minimum=True))
        set_(self, "init", resolve_init(self.init, "init"))
        if self.qk_init is not None:
            set_(self, "qk_init", resolve_init(self.qk_init, "qk_init"))
        if isinstance(self.logit_scale, str):
            check_choice("logit_scale", self.logit_scale, LOGIT_SCALES)
        else:
            set_(self, "logit_scale", check_float("logit_scale", self.logit_scale, minimum=0.0))
        _check_bool("causal", self.causal)
        if self.mlp_width is not None:
            set_(self, "mlp_width", check_int("mlp_width", self.mlp_width, minimum=1))
        set_(self, "mlp_activation", _activations.get(self.mlp_activation))
        set_(self, "mlp_init", resolve_init(self.mlp_init, "mlp_init"))
        check_choice("norm", self.norm, ATTENTION_NORMS)
        check_choice("norm_position", self.norm_position, RESIDUAL_NORM_POSITIONS)
        _check_bool("residual", self.residual)
        if isinstance(self.alpha, str):
            check_choice("alpha", self.alpha, BRANCH_SCALES)
        else:
            set_(self, "alpha", check_float("alpha", self.alpha, minimum=0.0))
        _check_bool("learnable", self.learnable)
        if not self.residual and (self.alpha != 1.0 or self.learnable):
            raise ValueError(f"residual=False has no branch to scale: alpha must be 1 and learnable "
                             f"False, got alpha={self.alpha!r}, learnable={self.learnable!r}")
        set_(self, "norm_eps", check_float("norm_eps", self.norm_eps, minimum=0.0))

    def out_width(self, in_width: int) -> int:
        if in_width % self.heads:
            raise ValueError(f"heads={self.heads} must divide the stream width {in_width} "
                             f"(each head gets width / heads channels)")
        return in_width

    def d_head(self, width: int) -> int:
        """The channels per head, ``width / heads``."""
        return self.out_width(width) // self.heads

    def scale(self, width: int) -> float:
        """The logit scale ``s`` as a number for a stream of ``width`` channels."""
        d = self.d_head(width)
        if self.logit_scale == "1/sqrt(d_head)":
            return 1.0 / math.sqrt(d)
        if self.logit_scale == "1/d_head":
            return 1.0 / d
        return float(self.logit_scale)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "heads": self.heads,
            "init": init_spec(self.init),
            "qk_init": None if self.qk_init is None else init_spec(self.qk_init),
            "logit_scale": self.logit_scale,
            "causal": self.causal,
            "mlp_width": self.mlp_width,
            "mlp_activation": self.mlp_activation.spec,
            "mlp_init": init_spec(self.mlp_init),
            "norm": self.norm,
            "norm_position": self.norm_position,
            "residual": self.residual,
            "alpha": self.alpha,
            "learnable": self.learnable,
            "norm_eps": self.norm_eps,
            **({} if self.lr_multiplier == 1.0 else {"lr_multiplier": self.lr_multiplier}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Attention:
        _check_fields(cls, data)
        for f in ("init", "qk_init", "mlp_init"):
            _check_buildable_spec(f, data.get(f))
        return cls(**{k: v for k, v in data.items() if k != "kind"})


_BLOCKS: dict[str, type] = {"dense": Dense, "conv": Conv, "residual": Residual, "attention": Attention}


def register_block(cls: type) -> type:
    """Make a new block kind known to :class:`Network` and its JSON (usable as a decorator).

    The class must be a frozen dataclass with a class attribute ``kind`` (a new name),
    ``out_width(in_width)``, ``to_dict()`` (including ``"kind"``) and ``from_dict(data)``.
    """
    kind = getattr(cls, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"{cls!r} needs a class attribute 'kind' (a non-empty string)")
    if kind in _BLOCKS and _BLOCKS[kind] is not cls:
        raise ValueError(f"block kind {kind!r} is taken by {_BLOCKS[kind].__name__}")
    for method in ("out_width", "to_dict", "from_dict"):
        if not callable(getattr(cls, method, None)):
            raise TypeError(f"{cls.__name__} must define {method}()")
    _BLOCKS[kind] = cls
    return cls


def block_from_dict(data: Mapping[str, Any]) -> Any:
    """The block a ``to_dict()`` describes, by its ``"kind"``."""
    kind = data.get("kind") if isinstance(data, Mapping) else None
    if kind not in _BLOCKS:
        raise ValueError(f"a block's 'kind' must be one of {sorted(_BLOCKS)}, got {kind!r}")
    return _BLOCKS[kind].from_dict(data)


@dataclasses.dataclass(frozen=True)
class Repeat:
    """``count`` copies of ``block``, applied one after the other (each with its own weights)."""

    block: Any
    count: int = 1

    def __post_init__(self) -> None:
        if type(self.block) not in _BLOCKS.values():
            raise TypeError(
                f"block must be one of the registered block kinds "
                f"({', '.join(c.__name__ for c in _BLOCKS.values())}), got {self.block!r}"
            )
        object.__setattr__(self, "count", check_int("count", self.count, minimum=1))

    def to_dict(self) -> dict[str, Any]:
        return {"block": self.block.to_dict(), "count": self.count}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Repeat:
        _check_fields(cls, data)
        return cls(block_from_dict(data["block"]), data.get("count", 1))


@dataclasses.dataclass(frozen=True)
class Network(JSONDescription):
    """A network at initialization: an input and a stack of :class:`Repeat` stages.

    Attributes:
      in_width: the input dimension ``n_0`` (>= 1): the channels of a spatial input.
      stages: the repeated blocks, in order (a bare block counts as ``Repeat(block, 1)``).
      batch: number of input examples (>= 1; >= 2 if any layer uses batch norm).
      input_variance: variance of each input coordinate (> 0).
      input_correlation: correlation between any two input examples, in [0, 1].
      dtype: floating dtype of weights and activations, as a name.
      label: an optional name for plots and tables.
      spatial: the stream's spatial shape (``()``: none; ``(8, 8)``: inputs ``(batch, 8, 8,
        in_width)``, channels last). Conv blocks need it; Dense blocks on it act per position.
      tokens: the tokens per sequence ``T`` (>= 2) of a token stream ``(batch, T, in_width)``:
        ``batch`` sequences; None (the default): no token axis. Attention blocks need it; it
        excludes ``spatial``. The input tokens are Gaussian with variance ``input_variance`` and
        correlation ``input_correlation`` between the tokens of a sequence (sequences
        independent; i.i.d. tokens by default).
    """

    in_width: int
    stages: tuple[Repeat, ...]
    batch: int = 16
    input_variance: float = 1.0
    input_correlation: float = 0.0
    dtype: str = "float32"
    label: str | None = None
    spatial: tuple[int, ...] = ()
    tokens: int | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "in_width", check_int("in_width", self.in_width, minimum=1))
        spatial = self.spatial
        if isinstance(spatial, str | bytes) or not isinstance(spatial, Sequence):
            raise TypeError(f"spatial must be a tuple of ints >= 1 (e.g. (8, 8)) or (), "
                            f"got {spatial!r}")
        set_(self, "spatial", tuple(check_int(f"spatial[{i}]", n, minimum=1)
                                    for i, n in enumerate(spatial)))
        stages = self.stages
        if isinstance(stages, Repeat) or type(stages) in _BLOCKS.values():
            stages = (stages,)
        if isinstance(stages, str | bytes) or not isinstance(stages, Sequence) or not stages:
            raise TypeError(f"stages must be a non-empty sequence of Repeat stages, got {stages!r}")
        stages = tuple(s if isinstance(s, Repeat) else Repeat(s) for s in stages)
        set_(self, "stages", stages)
        set_(self, "batch", check_int("batch", self.batch, minimum=1))
        check_float("input_variance", self.input_variance, minimum=0.0, strict_minimum=True)
        check_float("input_correlation", self.input_correlation, minimum=0.0, maximum=1.0)
        set_(self, "dtype", check_float_dtype(self.dtype).name)
        width = self.in_width
        for i, stage in enumerate(stages):
            try:
                width = stage.block.out_width(width)
            except ValueError as err:
                raise ValueError(f"stages[{i}]: {err}") from None
        # per stage, not per expanded block: a huge depth is refused later with its memory estimate
        layers = (x for stage in stages for x in getattr(stage.block, "branch", (stage.block,)))
        for layer in layers:
            if isinstance(layer, Conv):
                if not self.spatial:
                    raise ValueError("Conv blocks need a spatial stream: set spatial (e.g. "
                                     "spatial=(8, 8)); got spatial=()")
                layer.kernel_shape(len(self.spatial))
        if self.tokens is not None:
            set_(self, "tokens", check_int("tokens", self.tokens, minimum=2))
            if self.spatial:
                raise ValueError(f"tokens={self.tokens} and spatial={self.spatial} exclude each "
                                 "other: a stream is (batch, tokens, width) or (batch, *spatial, width)")
        if self.tokens is None and any(isinstance(s.block, Attention) for s in stages):
            raise ValueError("Attention blocks need a token stream: set tokens (>= 2, e.g. "
                             "tokens=16); got tokens=None")
        if self.batch < 2 and "batch" in self.norms:
            raise ValueError("batch norm needs batch >= 2 (the batch variance of 1 example is 0)")

    # -- derived facts ------------------------------------------------------------------------
    @property
    def norms(self) -> frozenset[str]:
        """Every norm used anywhere: by a Dense layer (branch layers included) or around a block."""
        carriers = [s.block for s in self.stages] + [layer for s in self.stages
                                                     for layer in getattr(s.block, "branch", ())]
        return frozenset(getattr(c, "norm", "none") for c in carriers)

    @property
    def jnp_dtype(self) -> Any:
        """The dtype as a jax.numpy dtype."""
        import jax.numpy as jnp

        return jnp.dtype(self.dtype)

    @property
    def dense_layers(self) -> tuple[Dense | Conv, ...]:
        """Every weight layer (Dense or Conv) in order, repeats expanded: a Dense or Conv block, or
        a residual branch's layers."""
        return tuple(layer for b in self.blocks for layer in getattr(b, "branch", (b,)))

    @property
    def depth(self) -> int:
        """The number of blocks (each repeat counted ``count`` times)."""
        return sum(stage.count for stage in self.stages)

    @property
    def residual_depth(self) -> int:
        """The number of residual blocks, residual attention blocks included (the ``depth`` of
        ``alpha="1/sqrt(depth)"``)."""
        return sum(stage.count for stage in self.stages if isinstance(stage.block, Residual)
                   or (isinstance(stage.block, Attention) and stage.block.residual))

    @property
    def blocks(self) -> tuple[Any, ...]:
        """Every block in order, repeats expanded (``len == depth``)."""
        return tuple(stage.block for stage in self.stages for _ in range(stage.count))

    @property
    def widths(self) -> tuple[int, ...]:
        """``(n_0, n_1, ..., n_depth)``: the stream width after each block."""
        out = [self.in_width]
        for block in self.blocks:
            out.append(block.out_width(out[-1]))
        return tuple(out)

    def branch_scale(self, block: Residual | Attention) -> float:
        """A residual (or attention) block's ``alpha`` as a number (its initial value if
        learnable)."""
        if block.alpha == "1/sqrt(depth)":
            return 1.0 / math.sqrt(max(self.residual_depth, 1))
        return float(block.alpha)

    def expected_stream_variance(self) -> tuple[float, ...]:
        """Per block (``len == depth``), the stream's expected variance before it, as NF-ResNets
        compute ``beta_l^2`` analytically (Brock et al. 2021): a run of consecutive residual
        blocks starts at ``v`` (the network's ``input_variance`` at the input, else 1: any other
        block is taken to output unit variance) and each of its blocks adds ``alpha^2`` (its
        branch, fed ``x / beta``, is taken to output unit variance)."""
        out, v = [], float(self.input_variance)
        for block in self.blocks:
            out.append(v)
            v = v + self.branch_scale(block) ** 2 if isinstance(block, Residual) else 1.0
        return tuple(out)

    @property
    def is_plain(self) -> bool:
        """True for a plain stack of Dense layers (no residual or other blocks, no spatial or
        token axes)."""
        return not self.spatial and self.tokens is None and all(
            isinstance(stage.block, Dense) and not stage.block.preactivation
            and not stage.block.weight_standardization for stage in self.stages)

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        return " -> ".join(
            f"{stage.count} x {stage.block.kind}" if stage.count > 1 else stage.block.kind
            for stage in self.stages
        )

    def replace(self, **changes: Any) -> Network:
        """A copy with ``changes`` applied, validated again."""
        return dataclasses.replace(self, **changes)

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def mlp(
        cls,
        depth: int,
        width: int,
        *,
        in_width: int | None = None,
        init: Any = "lecun_normal",
        activation: Any = "tanh",
        bias_init: Any = "zeros",
        norm: str = "none",
        norm_position: str = "before",
        norm_eps: float = 1e-5,
        **network_fields: Any,
    ) -> Network:
        """``depth`` equal Dense layers of ``width`` units (the first one's fan-in ``in_width``,
        ``width`` by default), as one repeated stage (two when ``in_width != width``)."""
        depth = check_int("depth", depth, minimum=1)
        layer = Dense(width, init, activation, bias_init, norm, norm_position, norm_eps)
        n0 = width if in_width is None else in_width
        if n0 == layer.width or depth == 1:
            stages = (Repeat(layer, depth),)
        else:
            stages = (Repeat(layer, 1), Repeat(layer, depth - 1))
        return cls(n0, stages, **network_fields)

    @classmethod
    def residual_mlp(
        cls,
        depth: int,
        width: int,
        *,
        init: Any = "he_normal",
        activation: Any = "relu",
        branch_scale: float | str = 1.0,
        branch_layers: int = 1,
        norm: str = "none",
        norm_position: str = "pre",
        learnable: bool = False,
        bias_init: Any = "zeros",
        norm_eps: float = 1e-5,
        **network_fields: Any,
    ) -> Network:
        """``depth`` pre-activation residual blocks on a stream of ``width`` units (the input is
        the stream: ``in_width = width``), as ``initjax propagate --arch residual`` builds them::

            branch_layers=1:  x + A W phi(x)          (norm "none")
                              x + A W phi(norm(x))    (norm_position "pre")
                              norm(x + A W phi(x))    (norm_position "post")
            branch_layers=2:  phi(norm?(W1 ...)) before W, e.g. pre: x + A W phi(norm(W1 phi(norm(x))))

        (``norm?``: the norm, if any, in both positions). ``A`` is ``branch_scale`` (a number
        >= 0 or ``"1/sqrt(depth)"``; ``learnable=True`` trains it from that value: SkipInit with
        ``A = 0``).

        >>> net = Network.residual_mlp(100, 256, branch_scale="1/sqrt(depth)", norm="layer")
        >>> net.depth, net.branch_scale(net.stages[0].block), net.stages[0].block.norm_position
        (100, 0.1, 'pre')

        Raises:
          ValueError: for ``branch_layers`` other than 1 or 2, or any invalid field (named).
        """
        depth = check_int("depth", depth, minimum=1)
        branch_layers = check_choice("branch_layers", branch_layers, (1, 2))
        check_choice("norm", norm, NORMS)
        first = Dense(width, init, activation, bias_init, preactivation=True, norm_eps=norm_eps)
        layers = [first]
        if branch_layers == 2:
            layers.append(Dense(width, init, activation, bias_init, norm=norm, norm_position="before",
                                norm_eps=norm_eps, preactivation=True))
        block = Residual(tuple(layers), alpha=branch_scale, learnable=learnable, norm=norm,
                         norm_position=norm_position, norm_eps=norm_eps)
        return cls(width, (Repeat(block, depth),), **network_fields)

    @classmethod
    def residual_cnn(
        cls,
        depth: int,
        channels: int,
        spatial: Sequence[int],
        *,
        kernel_size: int | tuple[int, ...] = 3,
        init: Any = "he_normal",
        activation: Any = "relu",
        branch_scale: float | str = 1.0,
        branch_layers: int = 1,
        norm: str = "none",
        norm_position: str = "pre",
        learnable: bool = False,
        bias_init: Any = "zeros",
        norm_eps: float = 1e-5,
        weight_standardization: bool = False,
        beta: str = "none",
        **network_fields: Any,
    ) -> Network:
        """:meth:`residual_mlp` with Conv layers: ``depth`` pre-activation residual blocks on a
        stream of ``channels`` channels and spatial shape ``spatial`` (the input is the stream),
        each branch ``branch_layers`` convolutions of ``kernel_size`` (stride 1, SAME padding)::

            branch_layers=1:  x + A conv(phi(x))         (norm "none")
                              x + A conv(phi(norm(x)))   (norm_position "pre")
                              norm(x + A conv(phi(x)))   (norm_position "post")

        ``weight_standardization`` and ``beta="expected"`` give Brock et al.'s NF blocks.

        >>> net = Network.residual_cnn(4, 16, (8, 8), norm="batch")
        >>> net.spatial, net.stages[0].block.branch[0].kernel_size, net.is_plain
        ((8, 8), 3, False)
        """
        depth = check_int("depth", depth, minimum=1)
        branch_layers = check_choice("branch_layers", branch_layers, (1, 2))
        check_choice("norm", norm, NORMS)
        common = {"kernel_size": kernel_size, "init": init, "activation": activation,
                  "bias_init": bias_init, "norm_eps": norm_eps, "preactivation": True,
                  "weight_standardization": weight_standardization}
        layers = [Conv(channels, **common)]
        if branch_layers == 2:
            layers.append(Conv(channels, norm=norm, norm_position="before", **common))
        block = Residual(tuple(layers), alpha=branch_scale, learnable=learnable, norm=norm,
                         norm_position=norm_position, norm_eps=norm_eps, beta=beta)
        return cls(channels, (Repeat(block, depth),), spatial=tuple(spatial), **network_fields)

    @classmethod
    def transformer(
        cls,
        depth: int,
        width: int,
        heads: int,
        tokens: int,
        batch: int = 16,
        *,
        mlp: bool = False,
        residual: bool = True,
        norm: str = "layer",
        norm_position: str = "pre",
        branch_scale: float | str = 1.0,
        causal: bool = False,
        init: Any = "lecun_normal",
        qk_init: Any = None,
        logit_scale: float | str = "1/sqrt(d_head)",
        mlp_width: int | None = None,
        mlp_activation: Any = "gelu",
        mlp_init: Any = "he_normal",
        learnable: bool = False,
        norm_eps: float = 1e-5,
        **network_fields: Any,
    ) -> Network:
        """``depth`` :class:`Attention` blocks on ``batch`` sequences of ``tokens`` tokens of
        ``width`` channels (the input is the stream), as ``initjax propagate --arch transformer``
        builds them::

            pre:          x <- x + A Attn(norm(x))     (+ x <- x + A MLP(norm(x)) with mlp)
            post:         x <- norm(x + A Attn(x))     (+ x <- norm(x + A MLP(x)))
            no residual:  x <- Attn(norm(x))           (pure attention with norm="none")

        ``A`` is ``branch_scale``: a number >= 0, ``"1/sqrt(depth)"`` (or ``"inv-sqrt-depth"``,
        the CLI's spelling); ``learnable=True`` trains it from that value (ReZero with ``A = 0``).
        The MLP's hidden width is ``mlp_width`` (default ``4 * width``).

        >>> net = Network.transformer(12, 64, 4, 16, 8, mlp=True, branch_scale="inv-sqrt-depth")
        >>> net.tokens, net.stages[0].block.mlp_width, round(net.branch_scale(net.stages[0].block), 4)
        (16, 256, 0.2887)

        Raises:
          ValueError: heads not dividing ``width``, ``tokens < 2`` or any other invalid field (named).
        """
        depth = check_int("depth", depth, minimum=1)
        width = check_int("width", width, minimum=1)
        _check_bool("mlp", mlp)
        if branch_scale == "inv-sqrt-depth":
            branch_scale = "1/sqrt(depth)"
        if mlp and mlp_width is None:
            mlp_width = 4 * width
        block = Attention(heads=heads, init=init, qk_init=qk_init, logit_scale=logit_scale,
                          causal=causal, mlp_width=mlp_width if mlp else None,
                          mlp_activation=mlp_activation, mlp_init=mlp_init, norm=norm,
                          norm_position=norm_position, residual=residual, alpha=branch_scale,
                          learnable=learnable, norm_eps=norm_eps)
        return cls(width, (Repeat(block, depth),), batch=batch, tokens=tokens, **network_fields)

    # -- JSON ---------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; initializers and activations become spec strings (``spatial`` only
        when the stream has spatial axes, ``tokens`` only with a token axis, so older
        descriptions read and write unchanged)."""
        out = {
            "in_width": self.in_width,
            "stages": [stage.to_dict() for stage in self.stages],
            "batch": self.batch,
            "input_variance": self.input_variance,
            "input_correlation": self.input_correlation,
            "dtype": self.dtype,
            "label": self.label,
        }
        if self.spatial:
            out["spatial"] = list(self.spatial)
        if self.tokens is not None:
            out["tokens"] = self.tokens
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Network:
        """Inverse of :meth:`to_dict`. A ``custom:...`` initializer cannot be rebuilt and raises."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a Network dict must be a mapping, got {type(data).__name__}")
        _check_fields(cls, data)
        data = dict(data)
        data["stages"] = tuple(Repeat.from_dict(s) for s in data.get("stages", ()))
        if isinstance(data.get("spatial"), list):
            data["spatial"] = tuple(data["spatial"])
        return cls(**data)


def fixup(network: Network, base_init: Any = "he_normal") -> Network:
    """Fixup initialization (Zhang, Dauphin & Ma 2019, https://arxiv.org/abs/1901.09321).

    For every residual block of ``network`` (``L`` of them, branches of ``m`` layers):

    1. the last branch layer is zero-initialized;
    2. the other branch layers use ``base_init`` (He) with the std multiplied by ``L^(-1/(2m-2))``
       (so ``he_normal`` gets ``gain = sqrt(2) L^(-1/(2m-2))``);
    3. the block gets Fixup's scalar biases and multiplier (``scalar_biases=True``).

    The classifier's zero init is the readout's business (``modules.build(readout_init="zeros")``).

    >>> net = Network(64, (Repeat(Residual((Dense(64, preactivation=True, activation="relu"),
    ...     Dense(64, preactivation=True, activation="relu"))), 16),))
    >>> first, last = fixup(net).stages[0].block.branch  # sqrt(2) * 16^(-1/2)
    >>> round(first.init.kwargs["gain"], 6), init_spec(last.init)
    (0.353553, 'zeros')

    Raises:
      ValueError: if ``network`` has no residual block, or a branch of one layer (the scale
        ``L^(-1/(2m-2))`` needs ``m >= 2``), or ``base_init`` is not a He initializer.
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be an initjax Network, got {type(network).__name__}")
    depth = network.residual_depth
    if depth == 0:
        raise ValueError("Fixup needs residual blocks; this network has none (it is "
                         f"{network.name!r})")
    base = resolve_init(base_init, "base_init")
    if getattr(base, "name", None) not in ("he_normal", "he_uniform"):
        raise ValueError(f"Fixup scales a He initializer; base_init must be 'he_normal' or "
                         f"'he_uniform', got {init_spec(base)!r}")
    stages = []
    for i, stage in enumerate(network.stages):
        block = stage.block
        if isinstance(block, Residual):
            m = len(block.branch)
            if m < 2:
                raise ValueError(f"stages[{i}]: Fixup scales branches of m >= 2 layers by "
                                 f"L^(-1/(2m-2)); this branch has m = {m}")
            scale = depth ** (-1.0 / (2 * m - 2))
            branch = []
            for layer in block.branch[:-1]:
                gain = base.kwargs["gain"]
                if gain is None:
                    gain = _gains.calculate_gain(base.kwargs["nonlinearity"], base.kwargs["param"])
                init = _initializers.get(base.name, **{**base.kwargs, "gain": gain * scale})
                branch.append(dataclasses.replace(layer, init=init))
            branch.append(dataclasses.replace(block.branch[-1], init="zeros"))
            block = dataclasses.replace(block, branch=tuple(branch), scalar_biases=True)
        stages.append(Repeat(block, stage.count))
    return network.replace(stages=tuple(stages))
