"""Flax NNX modules for init research: batch norm with visible conventions, PReLU, probe-able nets.

Every network here can hand back the tensors a signal-propagation probe needs, layer by layer, and
every initializer and activation is named by a registry spec string (``"he_normal:mode=fan_out"``,
``"leaky_relu:negative_slope=0.1"``) or given as an object, so one config describes the network.

    >>> from flax import nnx
    >>> net = MLP(784, (256, 256), 10, activation="tanh", kernel_init="xavier_normal",
    ...           norm="batch", rngs=nnx.Rngs(0))
    >>> x = jnp.ones((32, 784))
    >>> logits, inter = net.forward_with_intermediates(x)   # inter["preact"][l]: (batch, 256)
    >>> logits.shape, len(inter["preact"]), inter["preact"][0].shape
    ((32, 10), 2, (32, 256))
    >>> net.eval()                                            # batch norm uses running averages

Train/eval mode follows nnx: :class:`BatchNorm` has a ``use_running_average`` attribute that
``model.train()`` sets to False and ``model.eval()`` to True (``nnx.view`` works too); a
``use_running_average=`` argument to a call overrides the attribute for that call.

Seeds are an axis: :func:`create_ensemble` builds one model per seed with ``nnx.vmap``, stacking
every parameter along a leading seed axis, and :func:`apply_ensemble` runs it. Member ``i``'s
parameters are bit-for-bit those of ``constructor(rngs=nnx.Rngs(ensemble_keys(...)[i]))`` built
alone, however many members are built beside it.

References:
  Ioffe & Szegedy 2015, "Batch Normalization", https://arxiv.org/abs/1502.03167.
  He et al. 2015, "Delving Deep into Rectifiers", https://arxiv.org/abs/1502.01852.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from initjax import activations as _activations
from initjax._checks import check_choice, check_float, check_int
from initjax._keys import as_key, is_key
from initjax._registry import parse_spec

__all__ = [
    "BatchNorm",
    "PReLU",
    "MLP",
    "PlainCNN",
    "MOMENTUM_CONVENTIONS",
    "RUNNING_VAR_MODES",
    "NORMS",
    "NORM_PLACEMENTS",
    "LEARNED_PRELU",
    "ensemble_keys",
    "create_ensemble",
    "apply_ensemble",
    "ensemble_member",
    "build",
    "NetworkModule",
    "DenseLayer",
    "ResidualBlock",
    "AttentionBlock",
    "TokenNorm",
    "attention_weights",
    "scaled_weight_standardization",
]

MOMENTUM_CONVENTIONS = ("flax", "pytorch")
RUNNING_VAR_MODES = ("biased", "unbiased")
NORMS = ("none", "batch", "layer")  # None is accepted for "none"
NORM_PLACEMENTS = ("before", "after")
# Activation name that selects the learnable PReLU module instead of a fixed registry activation;
# "prelu_learned:init_slope=0.1" sets its initial slope.
LEARNED_PRELU = "prelu_learned"

Array = jax.Array
InitSpec = Any  # a spec string, an initjax Initializer, or any JAX init(key, shape, dtype) callable


def _broadcast_shape(ndim: int, axis: int, size: int) -> tuple[int, ...]:
    """Shape that puts a per-feature vector on ``axis`` of a rank-``ndim`` array (rank-strict)."""
    shape = [1] * ndim
    shape[axis] = size
    return tuple(shape)


# ----------------------------------------------------------------------------------------------
# Batch norm
# ----------------------------------------------------------------------------------------------


class BatchNorm(nnx.Module):
    """Batch normalization with the running-average conventions of Flax and PyTorch as options.

    Training mode (``use_running_average=False``) normalizes with the statistics of the batch
    (Ioffe & Szegedy 2015, Algorithm 1), over every axis except the feature ``axis``::

        mu_B = mean(x),  sigma2_B = mean((x - mu_B)^2)            (biased: divide by m)
        y = scale * (x - mu_B) / sqrt(sigma2_B + epsilon) + bias

    and updates the running averages with ``d`` the fraction of the old average kept::

        running_mean <- d * running_mean + (1 - d) * mu_B
        running_var  <- d * running_var  + (1 - d) * v_B

    where ``d = momentum`` for ``momentum_convention="flax"`` (``nnx.BatchNorm``: 0.99 keeps 99%)
    and ``d = 1 - momentum`` for ``"pytorch"`` (``torch.nn.BatchNorm``: 0.1 takes 10% of the new
    batch); ``v_B = sigma2_B`` for ``running_var="biased"`` (Flax) and ``v_B = m / (m - 1) *
    sigma2_B`` for ``"unbiased"`` (Algorithm 2's ``Var[x] = m/(m-1) E_B[sigma2_B]``; PyTorch),
    with ``m`` the number of values per feature (batch x spatial positions). The running averages
    start at mean 0 and variance 1. Eval mode (``use_running_average=True``) normalizes with the
    running averages and leaves them unchanged.

    Presets: :meth:`flax_convention` (momentum 0.99, biased) and :meth:`pytorch_convention`
    (momentum 0.1, unbiased). Mode switching: ``model.train()`` / ``model.eval()`` set the
    ``use_running_average`` attribute of every BatchNorm inside ``model`` (nnx's mechanism), and
    the call argument ``use_running_average`` overrides it for one call.

    Args:
      num_features: size of the feature axis.
      momentum: in (0, 1); its meaning depends on ``momentum_convention``.
      momentum_convention: ``"flax"`` (momentum = fraction kept) or ``"pytorch"`` (momentum =
        fraction of the new batch statistic taken).
      running_var: ``"biased"`` or ``"unbiased"``: which batch variance enters the running average.
        Normalization in training mode always uses the biased batch variance.
      epsilon: added to the variance before the square root, >= 0.
      use_scale: learn a per-feature scale gamma (initialised to 1).
      use_bias: learn a per-feature shift beta (initialised to 0).
      axis: the feature axis of the input (default last, Flax's channels-last layout).
      use_running_average: initial mode; False (training) by default, as in ``nnx.BatchNorm``.
      param_dtype: dtype of gamma and beta.
      rngs: accepted for a uniform constructor signature; the parameters are deterministic.

    Attributes:
      mean, var: ``nnx.BatchStat`` running averages, shape ``(num_features,)``.
      scale, bias: ``nnx.Param`` of shape ``(num_features,)``, or None when disabled.

    Raises:
      ValueError: momentum outside (0, 1), an unknown convention or running-variance mode, a
        negative epsilon; at call time a feature axis of the wrong size, or a training-mode batch of
        ``m = 1`` value per feature with ``running_var="unbiased"`` (``m - 1 = 0``).

    References:
      Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network Training by Reducing
      Internal Covariate Shift", Algorithms 1 and 2, https://arxiv.org/abs/1502.03167.
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.99,
        momentum_convention: str = "flax",
        running_var: str = "biased",
        epsilon: float = 1e-5,
        use_scale: bool = True,
        use_bias: bool = True,
        axis: int = -1,
        use_running_average: bool = False,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        del rngs  # gamma = 1 and beta = 0: nothing random
        self.num_features = check_int("num_features", num_features, minimum=1)
        momentum = check_float("momentum", momentum)
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"momentum must be in the open interval (0, 1), got {momentum}")
        self.momentum = momentum
        self.momentum_convention = check_choice(
            "momentum_convention", momentum_convention, MOMENTUM_CONVENTIONS
        )
        self.running_var = check_choice("running_var", running_var, RUNNING_VAR_MODES)
        self.epsilon = check_float("epsilon", epsilon, minimum=0.0)
        self.axis = check_int("axis", axis)
        self.use_scale = bool(use_scale)
        self.use_bias = bool(use_bias)
        self.use_running_average = bool(use_running_average)
        shape = (self.num_features,)
        self.mean = nnx.BatchStat(jnp.zeros(shape, jnp.float32))
        self.var = nnx.BatchStat(jnp.ones(shape, jnp.float32))
        self.scale = nnx.Param(jnp.ones(shape, param_dtype)) if self.use_scale else None
        self.bias = nnx.Param(jnp.zeros(shape, param_dtype)) if self.use_bias else None

    @classmethod
    def flax_convention(cls, num_features: int, **kwargs: Any) -> BatchNorm:
        """Flax's ``nnx.BatchNorm`` defaults: momentum 0.99 kept per step, biased running variance.

        Keyword arguments (``epsilon``, ``axis``, ``rngs``, ...) override the preset.
        """
        preset = {"momentum": 0.99, "momentum_convention": "flax", "running_var": "biased"}
        return cls(num_features, **{**preset, **kwargs})

    @classmethod
    def pytorch_convention(cls, num_features: int, **kwargs: Any) -> BatchNorm:
        """PyTorch's ``BatchNorm`` defaults: momentum 0.1 of the new batch, unbiased running var.

        This is also Ioffe & Szegedy's Algorithm 2 (unbiased variance for inference). Keyword
        arguments (``epsilon``, ``axis``, ``rngs``, ...) override the preset.
        """
        preset = {"momentum": 0.1, "momentum_convention": "pytorch", "running_var": "unbiased"}
        return cls(num_features, **{**preset, **kwargs})

    @property
    def decay(self) -> float:
        """Fraction of the old running average kept per update (``d`` in the class docstring)."""
        return self.momentum if self.momentum_convention == "flax" else 1.0 - self.momentum

    def set_view(self, use_running_average: bool | None = None) -> None:
        """Hook for ``nnx.view(model, use_running_average=...)``."""
        if use_running_average is not None:
            self.use_running_average = bool(use_running_average)

    def __call__(self, x: Array, *, use_running_average: bool | None = None) -> Array:
        """Normalize ``x``; in training mode also update the running averages.

        Args:
          x: input with ``x.shape[axis] == num_features``.
          use_running_average: overrides the module's attribute for this call when not None.

        Returns:
          The normalized input, same shape and dtype as ``x``.
        """
        x = jnp.asarray(x)
        if x.ndim < 1:
            raise ValueError("BatchNorm input must have rank >= 1, got a scalar")
        axis = self.axis if self.axis >= 0 else x.ndim + self.axis
        if not 0 <= axis < x.ndim:
            raise ValueError(
                f"BatchNorm axis {self.axis} out of range for input of shape {x.shape}"
            )
        if x.shape[axis] != self.num_features:
            raise ValueError(
                f"BatchNorm expects {self.num_features} features on axis {self.axis}, "
                f"got input of shape {x.shape}"
            )
        eval_mode = self.use_running_average if use_running_average is None else use_running_average
        reduce_axes = tuple(i for i in range(x.ndim) if i != axis)
        bshape = _broadcast_shape(x.ndim, axis, self.num_features)
        # Statistics in at least float32, whatever the input dtype (bf16 sums lose too much).
        compute_dtype = jnp.promote_types(x.dtype, jnp.float32)
        xc = x.astype(compute_dtype)

        if eval_mode:
            mean = self.mean[...].astype(compute_dtype)
            var = self.var[...].astype(compute_dtype)
        else:
            m = int(np.prod([x.shape[i] for i in reduce_axes], dtype=np.int64))
            if m < 1:
                raise ValueError(f"BatchNorm got an empty batch (input shape {x.shape})")
            if m == 1 and self.running_var == "unbiased":
                raise ValueError(
                    "BatchNorm in training mode with running_var='unbiased' needs more than one "
                    "value per feature (m/(m-1) is undefined for m = 1); "
                    f"got input shape {x.shape}. "
                    "Use a batch of size >= 2, eval mode, or running_var='biased'."
                )
            mean = jnp.mean(xc, axis=reduce_axes)
            # Two-pass variance (not E[x^2] - E[x]^2): exact for large means too.
            var = jnp.mean(jnp.square(xc - mean.reshape(bshape)), axis=reduce_axes)
            stored_var = var * (m / (m - 1)) if self.running_var == "unbiased" else var
            d = self.decay
            self.mean[...] = jax.lax.stop_gradient(
                d * self.mean[...] + (1.0 - d) * mean.astype(self.mean[...].dtype)
            )
            self.var[...] = jax.lax.stop_gradient(
                d * self.var[...] + (1.0 - d) * stored_var.astype(self.var[...].dtype)
            )

        y = (xc - mean.reshape(bshape)) * jax.lax.rsqrt(var.reshape(bshape) + self.epsilon)
        if self.scale is not None:
            y = y * self.scale[...].astype(compute_dtype).reshape(bshape)
        if self.bias is not None:
            y = y + self.bias[...].astype(compute_dtype).reshape(bshape)
        return y.astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# PReLU
# ----------------------------------------------------------------------------------------------


class PReLU(nnx.Module):
    """Parametric ReLU with a learnable slope per channel (last axis).

    ``f(x_c) = x_c if x_c >= 0 else a_c * x_c``, with ``a_c`` an ``nnx.Param`` initialised to
    ``init_slope`` (0.25 in He et al. 2015). The gradient with respect to ``a_c`` is the sum of
    ``x * upstream_grad`` over the entries of channel ``c`` with ``x < 0``.

    Args:
      num_features: number of channels (size of the last axis).
      init_slope: initial value of every slope.
      param_dtype: dtype of the slope parameter.
      rngs: accepted for a uniform constructor signature; the initial slope is deterministic.

    Raises:
      ValueError: ``num_features < 1``, a non-finite ``init_slope``; at call time an input whose
        last axis is not ``num_features``.

    References:
      He et al. 2015, "Delving Deep into Rectifiers: Surpassing Human-Level Performance on
      ImageNet Classification", Section 2.1, https://arxiv.org/abs/1502.01852.
    """

    def __init__(
        self,
        num_features: int,
        init_slope: float = 0.25,
        *,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs | None = None,
    ):
        del rngs
        self.num_features = check_int("num_features", num_features, minimum=1)
        self.init_slope = check_float("init_slope", init_slope)
        self.slope = nnx.Param(jnp.full((self.num_features,), self.init_slope, param_dtype))

    def __call__(self, x: Array) -> Array:
        """Apply the PReLU with the current slopes; same shape and dtype as ``x``."""
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.num_features:
            raise ValueError(
                f"PReLU expects {self.num_features} channels on the last axis, got shape {x.shape}"
            )
        bshape = _broadcast_shape(x.ndim, x.ndim - 1, self.num_features)
        a = self.slope[...].astype(x.dtype).reshape(bshape)
        return jnp.where(x >= 0, x, a * x)


# ----------------------------------------------------------------------------------------------
# Shared resolution of specs
# ----------------------------------------------------------------------------------------------


def _resolve_activation(activation: Any) -> tuple[Callable[[Array], Array] | None, float | None]:
    """Return ``(fixed_activation, None)`` or ``(None, init_slope)`` for the learnable PReLU."""
    if isinstance(activation, str):
        name, kw = parse_spec(activation)
        if name == LEARNED_PRELU:
            unknown = set(kw) - {"init_slope"}
            if unknown:
                raise ValueError(
                    f"activation {LEARNED_PRELU!r} got unknown parameter(s) {sorted(unknown)}; "
                    "allowed: init_slope"
                )
            return None, check_float("init_slope", kw.get("init_slope", 0.25))
        try:
            return _activations.get(activation), None
        except ValueError as err:
            raise ValueError(
                f"{err} (or {LEARNED_PRELU!r} for the learnable PReLU module)"
            ) from err
    if isinstance(activation, _activations.Activation):
        return activation, None
    if callable(activation):
        return activation, None
    raise TypeError(
        f"activation must be a spec string, an initjax Activation or a callable, got {activation!r}"
    )


def _resolve_init(name: str, spec: InitSpec) -> Callable[..., Array]:
    """Turn an initializer spec into a JAX ``init(key, shape, dtype)`` callable."""
    if isinstance(spec, str):
        from initjax import initializers  # lazy: modules does not need initializers at import

        return initializers.get(spec)
    if callable(spec):
        return spec
    raise TypeError(
        f"{name} must be an initializer spec string (e.g. 'he_normal:mode=fan_out'), an "
        f"Initializer or a callable init(key, shape, dtype), got {spec!r}"
    )


def _check_widths(name: str, widths: Any) -> tuple[int, ...]:
    if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
        raise TypeError(f"{name} must be a sequence of positive ints, got {widths!r}")
    if len(widths) == 0:
        raise ValueError(f"{name} must not be empty; give at least one positive width")
    return tuple(check_int(f"{name}[{i}]", w, minimum=1) for i, w in enumerate(widths))


def _make_norm(
    norm: str | None, width: int, batchnorm_kwargs: Mapping[str, Any], param_dtype: Any,
    rngs: nnx.Rngs,
) -> nnx.Module | None:
    if norm is None:
        return None
    if norm == "batch":
        return BatchNorm(width, **{"param_dtype": param_dtype, **batchnorm_kwargs}, rngs=rngs)
    return nnx.LayerNorm(width, param_dtype=param_dtype, rngs=rngs)


def _canonical_norm(norm: str | None, allowed: tuple[str, ...]) -> str | None:
    """``"none"`` and None both mean no norm (stored as None); anything else must be allowed."""
    norm = "none" if norm is None else norm
    return None if check_choice("norm", norm, allowed) == "none" else norm


def _check_batchnorm_kwargs(norm: str | None, batchnorm_kwargs: Any) -> dict[str, Any]:
    if batchnorm_kwargs is None:
        return {}
    if not isinstance(batchnorm_kwargs, Mapping):
        raise TypeError(f"batchnorm_kwargs must be a dict or None, got {batchnorm_kwargs!r}")
    if norm != "batch" and batchnorm_kwargs:
        raise ValueError(f"batchnorm_kwargs given but norm={norm!r}; they need norm='batch'")
    bad = {"num_features", "rngs"} & set(batchnorm_kwargs)
    if bad:
        raise ValueError(f"batchnorm_kwargs must not set {sorted(bad)}; the network sets them")
    return dict(batchnorm_kwargs)


def _apply_norm(norm_module: nnx.Module, h: Array, use_running_average: bool | None) -> Array:
    if isinstance(norm_module, BatchNorm):
        return norm_module(h, use_running_average=use_running_average)
    return norm_module(h)


class _ProbedStack(nnx.Module):
    """The hidden-block loop and intermediates bookkeeping of :class:`MLP` and :class:`PlainCNN`.

    Subclasses set ``self.layers`` (Linear or Conv), ``self.norms`` (or None), ``self.prelus`` (or
    None), ``self.activation``, ``self.norm``, ``self.norm_placement`` and ``self.skips`` (a tuple
    of bools: identity skip around hidden block ``l``).
    """

    def _hidden(
        self, h: Array, use_running_average: bool | None
    ) -> tuple[Array, dict[str, list[Array]]]:
        inter: dict[str, list[Array]] = {"preact": [], "act": [], "hidden": []}
        if self.norm is not None:
            inter["postnorm"] = []
        for idx, layer in enumerate(self.layers):
            z = layer(h)
            inter["preact"].append(z)
            act_fn = self.prelus[idx] if self.prelus is not None else self.activation
            if self.norm is not None and self.norm_placement == "before":
                n = _apply_norm(self.norms[idx], z, use_running_average)
                inter["postnorm"].append(n)
                a = act_fn(n)
                inter["act"].append(a)
                out = a
            else:
                a = act_fn(z)
                inter["act"].append(a)
                out = a
                if self.norm is not None:
                    out = _apply_norm(self.norms[idx], a, use_running_average)
                    inter["postnorm"].append(out)
            if self.skips[idx]:
                out = h + out
            inter["hidden"].append(out)
            h = out
        return h, inter

    def _set_blocks(
        self,
        widths: Sequence[int],
        bn_kwargs: Any,
        fixed_act: Any,
        prelu_slope: float | None,
        param_dtype: Any,
        rngs: nnx.Rngs,
    ) -> None:
        """Set ``norms``, ``activation`` and ``prelus`` for hidden blocks of these widths."""
        norms = [_make_norm(self.norm, w, bn_kwargs, param_dtype, rngs) for w in widths]
        self.norms = nnx.List(norms) if self.norm is not None else None
        self.activation = fixed_act
        self.prelus = (
            nnx.List([PReLU(w, prelu_slope, param_dtype=param_dtype) for w in widths])
            if prelu_slope is not None
            else None
        )

    def __call__(
        self,
        x: Array,
        *,
        use_running_average: bool | None = None,
        return_intermediates: bool = False,
    ) -> Array | tuple[Array, dict[str, list[Array]]]:
        """The output (:class:`PlainCNN`: the logits); with ``return_intermediates=True`` the pair
        ``(output, intermediates)`` of :meth:`forward_with_intermediates`."""
        out, inter = self.forward_with_intermediates(x, use_running_average=use_running_average)
        return (out, inter) if return_intermediates else out


# ----------------------------------------------------------------------------------------------
# MLP
# ----------------------------------------------------------------------------------------------


class MLP(_ProbedStack):
    """A fully connected network whose forward pass can return every layer's tensors.

    Hidden layer ``l = 0 .. L-1`` (``L = len(widths)``), with ``h_{-1} = x``::

        z_l = h_{l-1} W_l + b_l                                  "preact"
        norm_placement="before":  n_l = Norm(z_l),  a_l = phi(n_l),  block_l = a_l
        norm_placement="after":   a_l = phi(z_l),   n_l = Norm(a_l), block_l = n_l
        (no norm:                 a_l = phi(z_l),   block_l = a_l)
        h_l = h_{l-1} + block_l  if residual and the shapes match, else block_l     "hidden"

    and, if ``out_features`` is given, a linear readout ``y = h_{L-1} W_out + b_out`` (no
    activation); otherwise ``y = h_{L-1}``. Kernels ``W`` have Flax's ``(in, out)`` layout and all
    (readout included) are drawn from ``kernel_init``; all biases from ``bias_init``. With
    ``norm="batch"`` before the activation the Linear bias is redundant (batch norm subtracts the
    batch mean, and its beta is the shift); it is kept, initialised from ``bias_init`` (zeros by
    default), so every configuration has the same parameter layout.

    Intermediates (``forward_with_intermediates`` or ``__call__(x, return_intermediates=True)``):
    a dict of lists with one entry per hidden layer, each of shape ``(*batch, widths[l])``:

    - ``"preact"``: ``z_l``, the Linear output before norm and activation.
    - ``"postnorm"``: ``n_l``, the norm's output (key present only when ``norm`` is set).
    - ``"act"``: ``a_l``, the activation function's output (before a norm placed after it, and
      before the residual addition).
    - ``"hidden"``: ``h_l``, the layer's output that the next layer receives.

    Args:
      in_features: input size.
      widths: hidden widths, a non-empty sequence of positive ints.
      out_features: readout size, or None for no readout.
      activation: a registry spec (``"relu"``, ``"leaky_relu:negative_slope=0.1"``), an
        ``initjax.activations.Activation``, any callable, or ``"prelu_learned"``
        (``"prelu_learned:init_slope=0.25"``) for one learnable :class:`PReLU` per hidden layer.
      kernel_init: initializer spec or object (``initjax.initializers.get`` resolves strings).
      bias_init: initializer spec or object for every bias.
      norm: None, ``"batch"`` (:class:`BatchNorm`) or ``"layer"`` (``nnx.LayerNorm``).
      norm_placement: ``"before"`` (Linear -> Norm -> act) or ``"after"`` (Linear -> act -> Norm).
      residual: add an identity skip around each hidden block whose input and output widths match.
      batchnorm_kwargs: keyword arguments for every :class:`BatchNorm` (e.g. ``momentum``,
        ``momentum_convention``, ``running_var``); needs ``norm="batch"``.
      param_dtype: dtype of the parameters.
      rngs: ``nnx.Rngs``; parameters are drawn in layer order from its ``params`` stream.

    Raises:
      ValueError: empty ``widths`` or a width < 1, unknown ``norm``, ``norm_placement``,
        activation or initializer name (the message lists the allowed values).

    References:
      Ioffe & Szegedy 2015, https://arxiv.org/abs/1502.03167 (batch norm before the nonlinearity);
      He et al. 2015, https://arxiv.org/abs/1502.01852 (PReLU, He init).
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int],
        out_features: int | None = None,
        *,
        activation: Any = "relu",
        kernel_init: InitSpec = "lecun_normal",
        bias_init: InitSpec = "zeros",
        norm: str | None = None,
        norm_placement: str = "before",
        residual: bool = False,
        batchnorm_kwargs: Mapping[str, Any] | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_features = check_int("in_features", in_features, minimum=1)
        self.widths = _check_widths("widths", widths)
        self.out_features = (
            None if out_features is None else check_int("out_features", out_features, minimum=1)
        )
        self.norm = _canonical_norm(norm, NORMS)
        self.norm_placement = check_choice("norm_placement", norm_placement, NORM_PLACEMENTS)
        self.residual = bool(residual)
        bn_kwargs = _check_batchnorm_kwargs(self.norm, batchnorm_kwargs)
        fixed_act, prelu_slope = _resolve_activation(activation)
        k_init = _resolve_init("kernel_init", kernel_init)
        b_init = _resolve_init("bias_init", bias_init)

        fan_ins = (self.in_features, *self.widths[:-1])
        self.skips = tuple(self.residual and i == o for i, o in zip(fan_ins, self.widths))
        self.layers = nnx.List(
            [
                nnx.Linear(i, o, kernel_init=k_init, bias_init=b_init, param_dtype=param_dtype,
                           rngs=rngs)
                for i, o in zip(fan_ins, self.widths)
            ]
        )
        self._set_blocks(self.widths, bn_kwargs, fixed_act, prelu_slope, param_dtype, rngs)
        self.readout = (
            nnx.Linear(self.widths[-1], self.out_features, kernel_init=k_init, bias_init=b_init,
                       param_dtype=param_dtype, rngs=rngs)
            if self.out_features is not None
            else None
        )

    def forward_with_intermediates(
        self, x: Array, *, use_running_average: bool | None = None
    ) -> tuple[Array, dict[str, list[Array]]]:
        """Run the network; return ``(output, intermediates)`` (see the class docstring).

        Args:
          x: input of shape ``(*batch, in_features)``.
          use_running_average: overrides the BatchNorm layers' mode for this call when not None.
        """
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"MLP expects inputs (..., {self.in_features}), got shape {x.shape}")
        h, inter = self._hidden(x, use_running_average)
        out = self.readout(h) if self.readout is not None else h
        return out, inter


# ----------------------------------------------------------------------------------------------
# Plain CNN
# ----------------------------------------------------------------------------------------------


class PlainCNN(_ProbedStack):
    """A plain (no shortcut) stack of 3x3 convs, global average pooling and a linear classifier.

    The deep plain nets of He et al. 2015 (Section 2.2, Figure 3: a 30-layer plain ReLU net that
    trains with their init and stalls with Xavier's). Input is NHWC. Conv layer ``l``
    (``l = 0 .. depth-1``) is a 3x3 convolution with ``SAME`` padding, stride 2 if
    ``l in downsample_at`` else 1, bias, then norm/activation exactly as in :class:`MLP`
    (``preact`` = conv output, ``postnorm``, ``act``, ``hidden``; no residual). Then
    ``pooled = mean over H, W`` and ``logits = pooled W_out + b_out``. Conv kernels have Flax's
    ``(3, 3, in, out)`` layout, so ``he_normal`` uses ``fan_in = 9 * in``; the classifier is drawn
    from ``kernel_init`` too. With batch norm before the activation the conv bias is redundant but
    kept (``bias_init``, zeros by default).

    Intermediates: the dict of lists of :class:`MLP` with one NHWC tensor per conv layer.

    Args:
      in_channels: input channels.
      channels: output channels of every conv (an int), or one per conv (a sequence of ``depth``).
      depth: number of conv layers, >= 1.
      num_classes: classifier outputs, >= 1.
      activation: as in :class:`MLP` (``"prelu_learned"`` included).
      kernel_init: initializer spec or object for convs and classifier (default ``"he_normal"``).
      bias_init: initializer spec or object for every bias.
      norm: None or ``"batch"``.
      norm_placement: ``"before"`` (conv -> BN -> act, He et al. / ResNet) or ``"after"``.
      downsample_at: conv indices (0-based) that use stride 2.
      batchnorm_kwargs: keyword arguments for every :class:`BatchNorm`; needs ``norm="batch"``.
      param_dtype: dtype of the parameters.
      rngs: ``nnx.Rngs``.

    Raises:
      ValueError: non-positive sizes, a ``channels`` sequence whose length is not ``depth``,
        ``downsample_at`` indices outside ``[0, depth)`` or repeated, unknown norm, placement,
        activation or initializer names.

    References:
      He et al. 2015, "Delving Deep into Rectifiers", https://arxiv.org/abs/1502.01852.
    """

    CNN_NORMS = ("none", "batch")

    def __init__(
        self,
        in_channels: int,
        channels: int | Sequence[int],
        depth: int,
        num_classes: int,
        *,
        activation: Any = "relu",
        kernel_init: InitSpec = "he_normal",
        bias_init: InitSpec = "zeros",
        norm: str | None = None,
        norm_placement: str = "before",
        downsample_at: Sequence[int] = (),
        batchnorm_kwargs: Mapping[str, Any] | None = None,
        param_dtype: Any = jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.depth = check_int("depth", depth, minimum=1)
        self.num_classes = check_int("num_classes", num_classes, minimum=1)
        if isinstance(channels, numbers.Integral) and not isinstance(channels, bool):
            self.channels = (check_int("channels", channels, minimum=1),) * self.depth
        else:
            self.channels = _check_widths("channels", channels)
            if len(self.channels) != self.depth:
                raise ValueError(
                    f"channels has {len(self.channels)} entries but depth is {self.depth}; "
                    "give one int or one entry per conv layer"
                )
        if isinstance(downsample_at, (str, bytes)) or not isinstance(downsample_at, Sequence):
            raise TypeError(
                f"downsample_at must be a sequence of layer indices, got {downsample_at!r}"
            )
        ds = tuple(check_int("downsample_at", i, minimum=0) for i in downsample_at)
        if any(i >= self.depth for i in ds) or len(set(ds)) != len(ds):
            raise ValueError(
                f"downsample_at must hold distinct conv indices in [0, {self.depth}), got {ds}"
            )
        self.downsample_at = tuple(sorted(ds))
        self.norm = _canonical_norm(norm, self.CNN_NORMS)
        self.norm_placement = check_choice("norm_placement", norm_placement, NORM_PLACEMENTS)
        bn_kwargs = _check_batchnorm_kwargs(self.norm, batchnorm_kwargs)
        fixed_act, prelu_slope = _resolve_activation(activation)
        k_init = _resolve_init("kernel_init", kernel_init)
        b_init = _resolve_init("bias_init", bias_init)

        fan_ins = (self.in_channels, *self.channels[:-1])
        self.skips = (False,) * self.depth
        self.layers = nnx.List(
            [
                nnx.Conv(i, o, kernel_size=(3, 3), strides=(2, 2) if idx in ds else (1, 1),
                         padding="SAME", kernel_init=k_init, bias_init=b_init,
                         param_dtype=param_dtype, rngs=rngs)
                for idx, (i, o) in enumerate(zip(fan_ins, self.channels))
            ]
        )
        self._set_blocks(self.channels, bn_kwargs, fixed_act, prelu_slope, param_dtype, rngs)
        self.classifier = nnx.Linear(self.channels[-1], self.num_classes, kernel_init=k_init,
                                     bias_init=b_init, param_dtype=param_dtype, rngs=rngs)

    def forward_with_intermediates(
        self, x: Array, *, use_running_average: bool | None = None
    ) -> tuple[Array, dict[str, list[Array]]]:
        """Run the network on NHWC ``x``; return ``(logits, intermediates)``.

        Args:
          x: images of shape ``(batch, height, width, in_channels)``.
          use_running_average: overrides the BatchNorm layers' mode for this call when not None.
        """
        x = jnp.asarray(x)
        if x.ndim != 4 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"PlainCNN expects NHWC inputs (batch, H, W, {self.in_channels}), "
                f"got shape {x.shape}"
            )
        h, inter = self._hidden(x, use_running_average)
        pooled = jnp.mean(h, axis=(1, 2))
        return self.classifier(pooled), inter


# ----------------------------------------------------------------------------------------------
# Ensembles: seeds as a leading axis
# ----------------------------------------------------------------------------------------------


def ensemble_keys(seeds_or_key: Any, num: int | None = None) -> Array:
    """One typed PRNG key per ensemble member, shape ``(num,)``.

    Int seeds follow initjax's one key rule (:func:`initjax._keys.as_key`): an int ``s`` means
    ``jax.random.key(s, impl="philox2x32")``.

    - a sequence of int seeds: ``as_key(seed)`` for each (``num`` may be omitted);
    - an int or a single key (typed, or raw ``uint32[2]``): ``jax.random.fold_in(as_key(k), i)``
      for ``i = 0 .. num-1``, so member ``i``'s key does not depend on ``num``;
    - a typed key array of shape ``(n,)``: used as is.

    >>> ensemble_keys([3, 4]).shape
    (2,)
    >>> keys = ensemble_keys(7, num=2)
    >>> bool(keys[1] == jax.random.fold_in(jax.random.key(7, impl="philox2x32"), 1))
    True

    Raises:
      ValueError: ``num < 1``, ``num`` missing for a single key, or disagreeing with the seeds.
      TypeError: anything that is not seeds, a key or an array of keys.
    """
    if num is not None:
        num = check_int("num", num, minimum=1)
    if is_key(seeds_or_key) and seeds_or_key.ndim == 1:
        keys = seeds_or_key
    elif (isinstance(seeds_or_key, Sequence) and not isinstance(seeds_or_key, str | bytes)) or (
        isinstance(seeds_or_key, np.ndarray) and seeds_or_key.ndim == 1
    ):
        seeds = [check_int("seed", s, minimum=0) for s in seeds_or_key]
        if not seeds:
            raise ValueError("seeds_or_key: the list of seeds is empty")
        keys = jnp.stack([as_key(s, "seed") for s in seeds])
    else:
        try:
            base = as_key(seeds_or_key, "seeds_or_key")
        except TypeError:
            raise TypeError(
                "seeds_or_key must be a sequence of int seeds, an int, a PRNG key or an array of "
                f"keys, got {seeds_or_key!r}"
            ) from None
        if num is None:
            raise ValueError("num (the number of members) is required with a single seed or key")
        keys = jnp.stack([jax.random.fold_in(base, i) for i in range(num)])
    if num is not None and keys.shape[0] != num:
        raise ValueError(f"num={num} but {keys.shape[0]} seeds/keys were given")
    return keys


def create_ensemble(
    constructor: Callable[..., nnx.Module], seeds_or_key: Any, num: int | None = None
) -> nnx.Module:
    """Build one model per seed at once; every state leaf gets a leading seed axis.

    ``constructor(rngs=...)`` builds one model (e.g. ``functools.partial(MLP, 8, (16, 16))``).
    It is run under ``nnx.vmap`` over the keys of :func:`ensemble_keys`, so member ``i`` holds
    exactly the parameters of ``constructor(rngs=nnx.Rngs(ensemble_keys(seeds_or_key, num)[i]))``
    built alone, whatever the number of members.

    Args:
      constructor: callable taking a keyword ``rngs`` and returning an ``nnx.Module``.
      seeds_or_key: seeds or key(s), see :func:`ensemble_keys`.
      num: number of members (needed for a single key or int).

    Returns:
      The stacked model: parameters and batch statistics of shape ``(num, *shape)``. Run it with
      :func:`apply_ensemble`; take one member out with :func:`ensemble_member`.

    Example::

        ens = create_ensemble(functools.partial(MLP, 784, (256,) * 5, 10), range(8))
        logits, inter = nnx.jit(
            lambda m, x: apply_ensemble(m, x, method="forward_with_intermediates")
        )(ens, x)                                  # inter["act"][l]: (seed, batch, 256)
    """
    if not callable(constructor):
        raise TypeError(f"constructor must be callable with rngs=..., got {constructor!r}")
    keys = ensemble_keys(seeds_or_key, num)

    @nnx.vmap(in_axes=0, out_axes=0)
    def build(key):
        return constructor(rngs=nnx.Rngs(key))

    return build(keys)


def apply_ensemble(
    model: nnx.Module,
    x: Array,
    *,
    per_seed_inputs: bool = False,
    method: str | Callable[..., Any] = "__call__",
    sequential: bool = False,
    **kwargs: Any,
) -> Any:
    """Run a stacked model (from :func:`create_ensemble`) for every member.

    Args:
      model: stacked model; its state has a leading seed axis.
      x: the inputs, shared by all members (``per_seed_inputs=False``), or with a leading seed axis
        (``per_seed_inputs=True``).
      per_seed_inputs: whether ``x`` has a leading seed axis.
      method: name of the method to call (``"__call__"``, ``"forward_with_intermediates"``) or a
        function ``f(member, x, **kwargs)``.
      sequential: False (default) runs all members as one ``nnx.vmap`` computation (fast; jit it
        with ``nnx.jit``). XLA may sum a batched matmul or convolution in another order than a lone
        one, so outputs can differ from a model run alone in the last bits (~1e-7 relative).
        True runs the members one after the other, unbatched and op by op (the debugging path):
        member ``i``'s outputs are then bit-for-bit those of ``ensemble_member(model, i)`` (or of
        the same model built alone) called eagerly on the same input.
      **kwargs: passed to the method (e.g. ``use_running_average=True``).

    Returns:
      The method's output with a leading seed axis on every array. State updates (batch-norm
      running averages in training mode) are written back into ``model``.
    """
    if isinstance(method, str):
        if not callable(getattr(model, method, None)):
            raise ValueError(f"method {method!r} is not a method of {type(model).__name__}")
    elif not callable(method):
        raise TypeError(f"method must be a method name or a function, got {method!r}")
    call = (lambda m, xx: getattr(m, method)(xx, **kwargs)) if isinstance(method, str) else (
        lambda m, xx: method(m, xx, **kwargs)
    )
    if not sequential:
        return nnx.vmap(call, in_axes=(0, 0 if per_seed_inputs else None), out_axes=0)(model, x)

    # One member after the other, op by op (debuggable, no batching): member i computes exactly
    # what ensemble_member(model, i) would compute alone.
    graphdef, state = nnx.split(model)
    n = _ensemble_size(state)
    if per_seed_inputs and jnp.shape(x)[0] != n:
        raise ValueError(f"per_seed_inputs: x has {jnp.shape(x)[0]} rows on axis 0 for {n} members")
    outs, states = [], []
    for i in range(n):
        member = nnx.merge(graphdef, jax.tree.map(lambda a, i=i: a[i], state))
        outs.append(call(member, x[i] if per_seed_inputs else x))
        states.append(nnx.state(member))
    nnx.update(model, jax.tree.map(lambda *a: jnp.stack(a), *states))
    return jax.tree.map(lambda *a: jnp.stack(a), *outs)


def _ensemble_size(state: Any) -> int:
    leaves = jax.tree.leaves(state)
    if not leaves or jnp.ndim(leaves[0]) == 0:
        raise ValueError("not a stacked ensemble: its state has no leading seed axis")
    return int(jnp.shape(leaves[0])[0])


def ensemble_member(model: nnx.Module, index: int) -> nnx.Module:
    """A standalone copy of member ``index`` of a stacked model (its state sliced at ``index``)."""
    index = check_int("index", index, minimum=0)
    graphdef, state = nnx.split(model)
    n = _ensemble_size(state)
    if index >= n:
        raise ValueError(f"index {index} out of range for an ensemble of {n} members")
    return nnx.merge(graphdef, jax.tree.map(lambda a: a[index], state))


# ----------------------------------------------------------------------------------------------
# Any network description, built
# ----------------------------------------------------------------------------------------------


def _norm_of(norm: str, width: int, eps: float, bn_kwargs: Mapping[str, Any], param_dtype: Any,
             rngs: nnx.Rngs, spatial_rank: int = 0) -> nnx.Module | None:
    """The norm module; on a spatial stream ``(batch, *spatial, C)`` batch norm reduces over
    ``(batch, *spatial)`` per channel, layer and RMS norm over ``(*spatial, C)`` per example (the
    block engine's definitions), with per-channel scale and bias."""
    if norm == "none":
        return None
    if norm == "batch":
        return BatchNorm(width, **{"epsilon": eps, "param_dtype": param_dtype, **bn_kwargs},
                         rngs=rngs)
    axes = {"reduction_axes": tuple(range(-spatial_rank - 1, 0)), "feature_axes": -1}
    if norm == "layer":
        return nnx.LayerNorm(width, epsilon=eps, param_dtype=param_dtype, rngs=rngs, **axes)
    return nnx.RMSNorm(width, epsilon=eps, param_dtype=param_dtype, rngs=rngs, **axes)


_CONV_SPECS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC"),
               3: ("NDHWC", "DHWIO", "NDHWC")}


def _conv_same(x: Array, kernel: Array) -> Array:
    """Stride-1 SAME convolution of ``x (batch, *spatial, C_in)`` with ``kernel (*k, C_in, C_out)``
    (what ``nnx.Conv`` computes with ``padding="SAME"``)."""
    rank = kernel.ndim - 2
    if x.ndim != rank + 2:
        raise ValueError(f"a conv layer with a {rank}-d kernel expects inputs (batch, *spatial, "
                         f"channels) of rank {rank + 2}, got shape {x.shape}")
    return jax.lax.conv_general_dilated(x, kernel, (1,) * rank, "SAME",
                                        dimension_numbers=_CONV_SPECS[rank])


# Brock et al.'s floor on var * fan_in in scaled weight standardization (deepmind-research
# nfnets/base.py, WSConv2D: ``rsqrt(max(var * fan_in, 1e-4))``): a unit whose fan-in weights are
# (nearly) constant, e.g. Fixup's zero-initialized layer, gets a finite weight instead of 0/0.
WS_VAR_FLOOR = 1e-4

# A Dense layer's own parameters: they follow its lr_multiplier (norms inside it do not).
_LAYER_OWN_PARAMS = ("kernel", "bias", "gain", "bias_linear", "bias_act")


def scaled_weight_standardization(kernel: Array, gain: Array) -> Array:
    """Brock et al.'s scaled weight standardization of a Flax kernel ``(..., n_out)``::

        W_hat[..., j] = g_j (W[..., j] - mean_j) / sqrt(max(var_j * N, 1e-4))

    with ``mean_j`` and ``var_j`` (biased, ``ddof=0``) over the ``N`` fan-in weights of unit
    ``j`` (every axis but the last: ``N = n_in`` for a Dense kernel ``(n_in, n_out)``, ``n_in x
    receptive field`` for a convolution). Above the floor every unit's fan-in weights have mean 0
    and squared norm ``g_j^2``, so with ``g = 1`` an input of i.i.d. unit-variance coordinates
    gives unit-variance pre-activations. The floor ``1e-4`` on ``var_j * N`` is
    deepmind-research ``nfnets/base.py``'s (``WSConv2D``); it keeps a constant column (a
    zero-initialized layer, Fixup's) finite: it becomes 0. Computed in at least float32, returned
    in the kernel's dtype.

    Args:
      kernel: weights with the output units on the last axis, rank >= 2.
      gain: per-unit gains, shape ``(n_out,)``.

    Raises:
      ValueError: a kernel of rank < 2 or a gain whose shape is not ``(n_out,)``.

    References:
      Brock, De & Smith 2021, "Characterizing signal propagation to close the performance gap in
      unnormalized ResNets", Section 4, https://arxiv.org/abs/2101.08692 (after Qiao et al. 2019,
      "Weight Standardization", https://arxiv.org/abs/1903.10520).
    """
    kernel, gain = jnp.asarray(kernel), jnp.asarray(gain)
    if kernel.ndim < 2:
        raise ValueError(f"weight standardization needs a kernel (..., n_in, n_out) of rank >= 2, "
                         f"got shape {kernel.shape}")
    if gain.shape != kernel.shape[-1:]:
        raise ValueError(f"the gain must have shape {kernel.shape[-1:]} (one per output unit of "
                         f"a kernel {kernel.shape}), got {gain.shape}")
    dtype = jnp.promote_types(kernel.dtype, jnp.float32)
    w = kernel.astype(dtype)
    fan_in = math.prod(w.shape[:-1])
    axes = tuple(range(w.ndim - 1))
    mean = jnp.mean(w, axis=axes, keepdims=True)
    var = jnp.var(w, axis=axes, keepdims=True)
    g = gain.astype(dtype).reshape(_broadcast_shape(w.ndim, w.ndim - 1, w.shape[-1]))
    scale = jax.lax.rsqrt(jnp.maximum(var * fan_in, WS_VAR_FLOOR)) * g
    return ((w - mean) * scale).astype(kernel.dtype)


class DenseLayer(nnx.Module):
    """A :class:`~initjax.network.Dense` layer with ``W: (n_in, n_out)`` and ``b: (n_out,)``, or
    a :class:`~initjax.network.Conv` layer with the kernel ``W: (*kernel_size, n_in, n_out)``
    (``x W`` below is then the stride-1 SAME convolution of ``x (batch, *spatial, n_in)``, and
    weight standardization is per output channel over ``(*kernel_size, n_in)``).

    The computation (``norm`` is the identity for ``norm="none"``)::

        standard layer:        h = multiplier * (x + c_lin) W + b
                               x' = phi(norm(h) + c_act)          norm_position="before"
                               x' = norm(phi(h + c_act))          norm_position="after"
        preactivation layer:   a = phi(norm(x) + c_act)           norm_position="before"
                               a = norm(phi(x + c_act))           norm_position="after"
                               x' = h = multiplier * (a + c_lin) W + b

    A preactivation layer (He et al. 2016's ResNet v2 ordering) normalizes and activates its
    input, so its norm has ``n_in`` features. ``c_lin`` and ``c_act`` are Fixup's scalar biases
    (``nnx.Param`` of shape ``()``, starting at 0), present only inside a residual block with
    ``scalar_biases=True`` (Zhang et al. 2019: a scalar bias before every linear map and every
    activation); otherwise they are absent (0).

    With ``weight_standardization`` the layer multiplies by
    :func:`scaled_weight_standardization` ``(kernel, gain)`` instead of ``kernel``, ``gain`` an
    ``nnx.Param`` of shape ``(n_out,)`` starting at 1; ``kernel`` stays the stored parameter (and
    :meth:`kernels` returns it, the one the optimizer updates).

    Intermediates (:meth:`forward`): ``"preact"`` is the linear map's output ``h`` (for a
    preactivation layer that is the layer's output), ``"phi_input"`` what the activation takes
    and ``"act"`` what it gives (for a preactivation layer these have ``n_in`` features).

    References:
      He, Zhang, Ren & Sun 2016, "Identity Mappings in Deep Residual Networks",
      https://arxiv.org/abs/1603.05027.
      Zhang, Dauphin & Ma 2019, "Fixup Initialization", https://arxiv.org/abs/1901.09321.
      Brock, De & Smith 2021, https://arxiv.org/abs/2101.08692.
    """

    def __init__(self, layer: Any, in_features: int, *, bn_kwargs: Mapping[str, Any],
                 param_dtype: Any, rngs: nnx.Rngs, scalar_biases: bool = False,
                 spatial_rank: int = 0):
        from initjax.network import Conv

        self.spec = layer
        self.is_conv = isinstance(layer, Conv)
        key_w, key_b = rngs.params(), rngs.params()
        shape = ((*layer.kernel_shape(spatial_rank), in_features, layer.width) if self.is_conv
                 else (in_features, layer.width))
        self.kernel = nnx.Param(layer.init(key_w, shape, param_dtype))
        self.bias = nnx.Param(layer.bias_init(key_b, (layer.width,), param_dtype))
        norm_width = in_features if layer.preactivation else layer.width
        self.norm = _norm_of(layer.norm, norm_width, layer.norm_eps, bn_kwargs, param_dtype, rngs,
                             spatial_rank)
        self.gain = (nnx.Param(jnp.ones((layer.width,), param_dtype))
                     if layer.weight_standardization else None)
        if not isinstance(scalar_biases, bool):
            raise TypeError(f"scalar_biases must be a bool (True or False), got {scalar_biases!r}")
        self.bias_linear = nnx.Param(jnp.zeros((), param_dtype)) if scalar_biases else None
        self.bias_act = nnx.Param(jnp.zeros((), param_dtype)) if scalar_biases else None

    def weight(self) -> Array:
        """The matrix the layer multiplies by: the kernel, or its scaled standardization."""
        if self.gain is None:
            return self.kernel[...]
        return scaled_weight_standardization(self.kernel[...], self.gain[...])

    def _linear(self, u: Array) -> Array:
        layer = self.spec
        if self.bias_linear is not None:
            u = u + self.bias_linear[...]
        uw = _conv_same(u, self.weight()) if self.is_conv else u @ self.weight()
        return layer.multiplier * uw + self.bias[...].reshape(_broadcast_shape(uw.ndim, -1,
                                                                               layer.width))

    def _activate(self, u: Array, use_running_average: bool | None
                  ) -> tuple[Array, Array, Array]:
        """``(phi_input, phi output, output)`` of the norm-and-activation part."""
        layer = self.spec
        before = self.norm is not None and layer.norm_position == "before"
        z = _apply_norm(self.norm, u, use_running_average) if before else u
        if self.bias_act is not None:
            z = z + self.bias_act[...]
        a = layer.activation(z)
        after = self.norm is not None and layer.norm_position == "after"
        return z, a, (_apply_norm(self.norm, a, use_running_average) if after else a)

    def forward(self, x: Array, use_running_average: bool | None = None
                ) -> tuple[Array, dict[str, Array]]:
        """The output and ``{"preact": h, "phi_input": ..., "act": phi(...)}`` (class docstring)."""
        if self.spec.preactivation:
            z, a, u = self._activate(x, use_running_average)
            h = out = self._linear(u)
        else:
            h = self._linear(x)
            z, a, out = self._activate(h, use_running_average)
        return out, {"preact": h, "phi_input": z, "act": a}

    def __call__(self, x: Array, use_running_average: bool | None = None) -> Array:
        return self.forward(x, use_running_average)[0]

    def kernels(self) -> list[Array]:
        """The stored kernel parameter (before any weight standardization)."""
        return [self.kernel[...]]


class ResidualBlock(nnx.Module):
    """A :class:`~initjax.network.Residual` block::

        x' = x + alpha * s * branch(norm(x) / beta)      norm_position="pre"
        x' = norm(x + alpha * s * branch(x / beta))      norm_position="post"

    ``alpha`` is the branch scale (an ``nnx.Param`` when ``learnable``: SkipInit / ReZero);
    ``beta`` is NF-ResNets' ``sqrt(Var x)`` expected before the block (``beta="expected"``,
    a constant computed from the description by :meth:`NetworkModule.__init__`; 1 otherwise);
    ``s`` is Fixup's scalar multiplier (``branch_multiplier``, an ``nnx.Param`` of shape ``()``
    starting at 1, present with ``scalar_biases=True``, which also gives every branch layer its
    scalar biases, see :class:`DenseLayer`; otherwise ``s = 1``).

    Args:
      block: the :class:`~initjax.network.Residual` description.
      width: the stream width.
      alpha: the branch scale as a number (:meth:`~initjax.network.Network.branch_scale`).
      beta: the divisor of the branch input, finite and > 0; required exactly when
        ``block.beta == "expected"``.

    References:
      Brock, De & Smith 2021, https://arxiv.org/abs/2101.08692 (alpha, beta).
      Zhang, Dauphin & Ma 2019, https://arxiv.org/abs/1901.09321 (scalar biases, multiplier).
      De & Smith 2020, https://arxiv.org/abs/2002.10444 (SkipInit).
    """

    def __init__(self, block: Any, width: int, alpha: float, *, beta: float | None = None,
                 bn_kwargs: Mapping[str, Any], param_dtype: Any, rngs: nnx.Rngs,
                 spatial_rank: int = 0):
        self.spec = block
        if (block.beta == "expected") != (beta is not None):
            raise ValueError(
                f"a block with beta={block.beta!r} needs "
                + ("beta=sqrt(expected stream variance) (NetworkModule passes it)"
                   if beta is None else f"no beta, got beta={beta!r}")
            )
        self.beta = (None if beta is None
                     else check_float("beta", beta, minimum=0.0, strict_minimum=True))
        self.norm = _norm_of(block.norm, width, block.norm_eps, bn_kwargs, param_dtype, rngs,
                             spatial_rank)
        layers, n_in = [], width
        for layer in block.branch:
            layers.append(DenseLayer(layer, n_in, bn_kwargs=bn_kwargs, param_dtype=param_dtype,
                                     rngs=rngs, scalar_biases=block.scalar_biases,
                                     spatial_rank=spatial_rank))
            n_in = layer.width
        self.branch = nnx.List(layers)
        self.alpha = nnx.Param(jnp.asarray(alpha, param_dtype)) if block.learnable else alpha
        self.branch_multiplier = (nnx.Param(jnp.ones((), param_dtype)) if block.scalar_biases
                                  else None)

    def forward(self, x: Array, use_running_average: bool | None = None
                ) -> tuple[Array, dict[str, Array]]:
        """The output and the last branch layer's intermediates (see :class:`DenseLayer`)."""
        out, inter, _, _ = self.forward_parts(x, use_running_average)
        return out, inter

    def forward_parts(self, x: Array, use_running_average: bool | None = None
                      ) -> tuple[Array, dict[str, Array], Array, Array]:
        """``(output, intermediates, f, total)``: besides :meth:`forward`'s pair, the scaled
        branch output ``f = alpha * s * branch(.)`` before the add and the sum ``x + f`` before a
        post norm (what :func:`initjax.probing.probe_blocks` measures)."""
        pre = self.norm is not None and self.spec.norm_position == "pre"
        h = _apply_norm(self.norm, x, use_running_average) if pre else x
        h = h / self.beta if self.beta is not None else h
        for layer in self.branch:
            h, inter = layer.forward(h, use_running_average)
        alpha = self.alpha[...] if isinstance(self.alpha, nnx.Param) else self.alpha
        if self.branch_multiplier is not None:
            h = self.branch_multiplier[...] * h
        f = alpha * h
        total = x + f
        out = _apply_norm(self.norm, total, use_running_average) if self.norm is not None and not pre else total
        return out, inter, f, total

    def __call__(self, x: Array, use_running_average: bool | None = None) -> Array:
        return self.forward(x, use_running_average)[0]

    def kernels(self) -> list[Array]:
        return [k for layer in self.branch for k in layer.kernels()]


class TokenNorm(nnx.Module):
    """The attention engine's per-token norm with a trained affine part that starts as identity::

        y = normalize_tokens(norm, x, eps) * scale + bias

    ``normalize_tokens`` (:mod:`initjax.engine.attention`) normalizes each token over its channels
    (the last axis) in float32 at least: layer norm ``(x - mean) / sqrt(var + eps)`` (two-pass,
    biased variance) or RMS norm ``x / sqrt(mean(x^2) + eps)``. ``scale`` (``(D,)``, starts at 1)
    is an ``nnx.Param`` for both; ``bias`` (``(D,)``, starts at 0) for layer norm only (RMS norm
    has none, as ``nnx.RMSNorm``). Multiplying by 1 and adding 0 are exact, so at initialization
    the output is bit for bit the engine's, which has no affine part.

    Args:
      norm: ``"layer"`` or ``"rms"``.
      width: the channels ``D``.
      eps: added to the variance (mean square), >= 0.
      param_dtype: dtype of scale and bias.

    References:
      Ba, Kiros & Hinton 2016, https://arxiv.org/abs/1607.06450 (layer norm);
      Zhang & Sennrich 2019, https://arxiv.org/abs/1910.07467 (RMS norm).
    """

    def __init__(self, norm: str, width: int, eps: float, *, param_dtype: Any = jnp.float32):
        self.norm = check_choice("norm", norm, ("layer", "rms"))
        self.width = check_int("width", width, minimum=1)
        self.eps = check_float("eps", eps, minimum=0.0)
        self.scale = nnx.Param(jnp.ones((self.width,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((self.width,), param_dtype)) if norm == "layer" else None

    def __call__(self, x: Array) -> Array:
        from initjax.engine.attention import normalize_tokens

        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.width:
            raise ValueError(f"TokenNorm expects {self.width} channels on the last axis, "
                             f"got shape {x.shape}")
        y = normalize_tokens(self.norm, x, self.eps)
        bshape = _broadcast_shape(y.ndim, y.ndim - 1, self.width)
        y = y * self.scale[...].astype(y.dtype).reshape(bshape)
        if self.bias is not None:
            y = y + self.bias[...].astype(y.dtype).reshape(bshape)
        return y


# the weights of an Attention block: attention_params' names, in its fold_in order j = 0..5
_ATTENTION_WEIGHTS = ("q", "k", "v", "o", "mlp_in", "mlp_out")
_ATTENTION_LAYERS = {"q": "query", "k": "key", "v": "value", "o": "out", "mlp_in": "mlp_in",
                     "mlp_out": "mlp_out"}


def _given_kernel(name: str, value: Any, shape: tuple[int, ...]) -> Callable[..., Array]:
    """A kernel initializer returning ``value`` (checked to have ``shape``), cast to the dtype."""
    arr = jnp.asarray(value)
    if arr.shape != shape:
        raise ValueError(f"attention weight {name!r} must have shape {shape}, got {arr.shape}")
    if not jnp.issubdtype(arr.dtype, jnp.floating):
        raise TypeError(f"attention weight {name!r} must be a float array, got dtype {arr.dtype}")
    return lambda key, shape_, dtype=jnp.float32: arr.astype(dtype)


class AttentionBlock(nnx.Module):
    """An :class:`~initjax.network.Attention` block (a transformer block) on ``(batch, T, D)``::

        pre:          x <- x + A Attn(norm_1(x));   x <- x + A MLP(norm_2(x))   (MLP if mlp_width)
        post:         x <- norm_1(x + A Attn(x));   x <- norm_2(x + A MLP(x))
        no residual:  x <- Attn(norm_1(x));         x <- MLP(norm_2(x))         (pre)
                      x <- norm_1(Attn(x));         x <- norm_2(MLP(x))         (post)
        Attn(X) = concat_h softmax(s Q_h K_h^T [+ causal mask]) V_h W_O,   MLP(u) = phi(u W_1) W_2

    with ``Q = X W_Q`` split into ``H = heads`` heads of ``D / H`` consecutive channels (head ``h``
    takes channels ``h D/H .. (h+1) D/H - 1``, as the engine's
    :func:`~initjax.engine.attention.attend` splits them), ``s`` the block's logit scale and
    the softmax in float32 at least. The kernels are bias-free ``nnx.Linear`` layers ``query``,
    ``key``, ``value``, ``out`` (``(D, D)``) and, with an MLP, ``mlp_in`` (``(D, mlp_width)``) and
    ``mlp_out`` (``(mlp_width, D)``), drawn from ``rngs.params`` by the block's initializers
    (``qk_init`` for Q and K) or given as ``weights``.
    ``norm_1`` / ``norm_2`` (``attn_norm`` / ``mlp_norm``) are :class:`TokenNorm` modules (scale 1
    and bias 0 at init: the engine's affine-free norm exactly), absent for ``norm="none"``.
    ``A`` is the branch scale, one for both sub-blocks as in the engine; with ``learnable`` it is
    one ``nnx.Param`` ``alpha`` of shape ``()`` shared by them (ReZero's one ``resweight`` per
    layer).

    Named outputs for :func:`initjax.opprobe.probe_ops`: :func:`initjax.opprobe.tag` marks
    ``<prefix>attn_input`` (the input of W_Q, W_K, W_V), ``<prefix>attn_probs`` (``P``, ``(batch,
    H, T, T)``), ``<prefix>attn_heads`` (``concat_h P_h V_h``, the input of W_O),
    ``<prefix>attn_branch`` (``A Attn``), with an MLP ``<prefix>mlp_input``, ``<prefix>mlp_hidden``
    (``phi(u W_1)``, the input of W_2) and ``<prefix>mlp_branch``, and ``<prefix>stream`` (the
    block's output), where ``prefix`` is ``"blocks.<index>."`` (``""`` without ``index``). So a
    probe gets each weight's gradient ``dL/dW = sum_{b,t} u_bt^T d_bt`` from the tagged input
    ``u`` and the cotangent ``d`` of the ``dot_general(blocks.<i>.query.kernel)`` record.

    Args:
      block: the :class:`~initjax.network.Attention` description.
      width: the stream width ``D`` (``heads`` must divide it).
      alpha: the branch scale as a number (:meth:`~initjax.network.Network.branch_scale`; 1
        without residual).
      weights: None (draw), or a mapping with :func:`~initjax.engine.attention.attention_params`'
        names ``"q", "k", "v", "o"`` (and ``"mlp_in", "mlp_out"`` with an MLP) to the kernels'
        values (see :func:`attention_weights`).
      index: the block's position in its network (names the tags; None: no prefix).
      param_dtype: dtype of every parameter.
      rngs: ``nnx.Rngs``; each kernel takes one ``rngs.params()`` key, drawn or not.

    Raises:
      ValueError: ``heads`` not dividing ``width``; ``weights`` with missing, extra or misshaped
        entries (named); at call time an input that is not ``(batch, T, width)``.

    References:
      Vaswani et al. 2017, https://arxiv.org/abs/1706.03762. Xiong et al. 2020 (pre/post norm),
      https://arxiv.org/abs/2002.04745. Bachlechner et al. 2020 (ReZero),
      https://arxiv.org/abs/2003.04887.
    """

    def __init__(self, block: Any, width: int, alpha: float, *,
                 weights: Mapping[str, Any] | None = None, index: int | None = None,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        from initjax.network import Attention

        if not isinstance(block, Attention):
            raise TypeError(f"block must be an initjax.network.Attention, "
                            f"got {type(block).__name__}")
        self.spec = block
        self.width = check_int("width", width, minimum=1)
        block.out_width(self.width)  # heads must divide the width
        self.logit_scale = block.scale(self.width)
        self.prefix = "" if index is None else f"blocks.{check_int('index', index, minimum=0)}."
        m = block.mlp_width
        shapes = {"q": (width, width), "k": (width, width), "v": (width, width),
                  "o": (width, width)}
        if m is not None:
            shapes.update(mlp_in=(width, m), mlp_out=(m, width))
        qk = block.init if block.qk_init is None else block.qk_init
        inits = {"q": qk, "k": qk, "v": block.init, "o": block.init, "mlp_in": block.mlp_init,
                 "mlp_out": block.mlp_init}
        if weights is not None:
            if not isinstance(weights, Mapping):
                raise TypeError(f"weights must be a mapping of weight names to arrays, "
                                f"got {type(weights).__name__}")
            missing = [k for k in shapes if k not in weights]
            extra = [k for k in weights if k not in shapes]
            if missing or extra:
                raise ValueError(f"weights must have exactly the keys {tuple(shapes)} for this "
                                 f"block; missing {missing}, unexpected {extra}")
            inits = {k: _given_kernel(k, weights[k], shapes[k]) for k in shapes}
        for name in _ATTENTION_WEIGHTS:
            if name in shapes:
                n_in, n_out = shapes[name]
                setattr(self, _ATTENTION_LAYERS[name],
                        nnx.Linear(n_in, n_out, use_bias=False, kernel_init=inits[name],
                                   param_dtype=param_dtype, rngs=rngs))
            else:
                setattr(self, _ATTENTION_LAYERS[name], None)
        has_norm = block.norm != "none"
        self.attn_norm = (TokenNorm(block.norm, width, block.norm_eps, param_dtype=param_dtype)
                          if has_norm else None)
        self.mlp_norm = (TokenNorm(block.norm, width, block.norm_eps, param_dtype=param_dtype)
                         if has_norm and m is not None else None)
        alpha = check_float("alpha", alpha, minimum=0.0)
        self.alpha = nnx.Param(jnp.asarray(alpha, param_dtype)) if block.learnable else alpha

    def _tag(self, x: Array, name: str) -> Array:
        return checkpoint_name(x, self.prefix + name)

    def _sub_block(self, x: Array, norm: TokenNorm | None, branch: Callable[[Array], Array],
                   name: str) -> tuple[Array, Array]:
        """One residual sub-block around ``branch``: ``(new stream, A branch(.))``."""
        spec = self.spec
        pre = spec.norm_position == "pre"
        u = norm(x) if pre and norm is not None else x
        alpha = self.alpha[...] if isinstance(self.alpha, nnx.Param) else self.alpha
        f = self._tag(alpha * branch(self._tag(u, name + "_input")), name + "_branch")
        total = x + f if spec.residual else f
        return (norm(total) if not pre and norm is not None else total), f

    def attention(self, u: Array) -> tuple[Array, Array]:
        """``(Attn(u), P)``: multi-head softmax self-attention (class docstring) and the
        probabilities ``P`` ``(batch, H, T, T)``."""
        b, t, d = u.shape
        split = (b, t, self.spec.heads, d // self.spec.heads)
        q = self.query(u).reshape(split)
        k = self.key(u).reshape(split)
        v = self.value(u).reshape(split)
        logits = self.logit_scale * jnp.einsum("bqhd,bkhd->bhqk", q, k)
        if self.spec.causal:
            mask = jnp.tril(jnp.ones((t, t), bool)).reshape(1, 1, t, t)
            logits = jnp.where(mask, logits, -jnp.inf)
        p = jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
        p = self._tag(p.astype(u.dtype), "attn_probs")
        o = jnp.einsum("bhqk,bkhd->bqhd", p, v).reshape(b, t, d)
        return self.out(self._tag(o, "attn_heads")), p

    def mlp(self, u: Array) -> Array:
        """``MLP(u) = phi(u W_1) W_2``."""
        return self.mlp_out(self._tag(self.spec.mlp_activation(self.mlp_in(u)), "mlp_hidden"))

    def forward(self, x: Array, use_running_average: bool | None = None
                ) -> tuple[Array, dict[str, Array | None]]:
        """The output and ``{"attention": P, "branch": A Attn(.), "mlp_branch": A MLP(.) or
        None}``. ``use_running_average`` is accepted for a uniform block interface (no batch
        norm here)."""
        del use_running_average
        x = jnp.asarray(x)
        if x.ndim != 3 or x.shape[-1] != self.width:
            raise ValueError(f"an attention block expects (batch, tokens, {self.width}), "
                             f"got shape {x.shape}")
        probs = []

        def attn(u):
            y, p = self.attention(u)
            probs.append(p)
            return y

        x, f = self._sub_block(x, self.attn_norm, attn, "attn")
        g = None
        if self.spec.mlp_width is not None:
            x, g = self._sub_block(x, self.mlp_norm, self.mlp, "mlp")
        return self._tag(x, "stream"), {"attention": probs[0], "branch": f, "mlp_branch": g}

    def __call__(self, x: Array, use_running_average: bool | None = None) -> Array:
        return self.forward(x, use_running_average)[0]

    def kernels(self) -> list[Array]:
        """The kernels W_Q, W_K, W_V, W_O (and W_1, W_2)."""
        return [getattr(self, _ATTENTION_LAYERS[n]).kernel[...] for n in _ATTENTION_WEIGHTS
                if getattr(self, _ATTENTION_LAYERS[n]) is not None]


def attention_weights(network: Any, seed: int = 0, key: Any = 0, *,
                      prng_impl: str = "philox2x32") -> list[dict[str, Array]]:
    """The weights of seed ``seed`` of the attention engine's transformer, block by block.

    :func:`~initjax.engine.attention.propagate_attention` (and ``trace_attention``) draw seed
    ``s``'s block ``b`` weight ``j`` (``j = 0..5`` for W_Q, W_K, W_V, W_O, W_1, W_2) from
    ``fold_in(fold_in(weights_key, b), j)``, with ``weights_key`` the weights' key of seed key
    ``fold_in(base_key(key), s)``; this returns exactly those arrays (equal to
    ``trace_attention(network, seed, key)["w"]``), to pass as ``build(network,
    attention_weights=...)``: the built module is then the engine's sampled network.

    Args:
      network: a :class:`~initjax.network.Network` with ``tokens`` and Attention blocks only.
      seed: the seed index (>= 0), as in ``propagate_attention(..., seed_offset)``.
      key: the run's key (an int seed or a typed key), as ``propagate_attention``'s ``key``.
      prng_impl: the PRNG implementation an int ``key`` becomes.

    Returns:
      One dict per block: ``"q", "k", "v", "o"`` ``(D, D)`` and, with an MLP, ``"mlp_in"``,
      ``"mlp_out"``, in the network's dtype.

    Raises:
      TypeError / ValueError: not a token network of Attention blocks, a bad seed or key.

    >>> from initjax.network import Network
    >>> net = Network.transformer(depth=2, width=8, heads=2, tokens=4, batch=2)
    >>> w = attention_weights(net, seed=1)
    >>> len(w), sorted(w[0]), w[0]["q"].shape
    (2, ['k', 'o', 'q', 'v'], (8, 8))
    """
    from initjax.engine.attention import attention_params
    from initjax.engine.sampling import base_key, seed_keys, split_seed_key

    _check_token_network(network)
    seed = check_int("seed", seed, minimum=0)
    keys = split_seed_key(seed_keys(base_key(key, prng_impl), [seed])[0])
    return [attention_params(block, keys, b, network.in_width, network.jnp_dtype)
            for b, block in enumerate(network.blocks)]


def _check_token_network(network: Any) -> None:
    """A token network (``tokens`` set) of Attention blocks only, else a named error."""
    from initjax.network import Attention, Network

    if not isinstance(network, Network):
        raise TypeError(f"network must be an initjax Network, got {type(network).__name__}")
    if network.tokens is None:
        raise ValueError("attention weights need a token network (Network(tokens=T)); "
                         "got tokens=None")
    for i, block in enumerate(network.blocks):
        if not isinstance(block, Attention):
            raise ValueError(f"block {i} is a {block.kind!r} block: a token network "
                             f"(tokens={network.tokens}) is built from Attention blocks only")


class NetworkModule(nnx.Module):
    """A Flax NNX module built from a network description (see :func:`build`)."""

    def __init__(self, network: Any, out_features: int | None = None, *,
                 readout_init: InitSpec = "lecun_normal",
                 batchnorm_kwargs: Mapping[str, Any] | None = None,
                 attention_weights: Sequence[Mapping[str, Any]] | None = None,
                 embed_features: int | None = None, embed_init: InitSpec = "lecun_normal",
                 position_std: float = 1.0, readout_lr_multiplier: float = 1.0,
                 embed_lr_multiplier: float = 1.0,
                 param_dtype: Any = jnp.float32, rngs: nnx.Rngs):
        from initjax.config import NetworkConfig
        from initjax.network import Attention, Conv, Dense, Network, Residual

        if isinstance(network, NetworkConfig):
            network = network.network
        if not isinstance(network, Network):
            raise TypeError(
                f"network must be an initjax Network or NetworkConfig, got {type(network).__name__}"
            )
        self.description = network
        if network.tokens is not None:
            _check_token_network(network)
        if embed_features is not None:  # the token stem's arguments, checked before any drawing
            if network.tokens is None:
                raise ValueError(f"embed_features={embed_features!r} is for a token network "
                                 "(Network(tokens=T)); this network has tokens=None")
            embed_features = check_int("embed_features", embed_features, minimum=1)
            position_std = check_float("position_std", position_std, minimum=0.0)
        elif position_std != 1.0 or embed_init != "lecun_normal" or embed_lr_multiplier != 1.0:
            raise ValueError("embed_init, position_std and embed_lr_multiplier set the token stem, "
                             f"which needs embed_features; got embed_features=None, embed_init="
                             f"{embed_init!r}, position_std={position_std!r}, embed_lr_multiplier="
                             f"{embed_lr_multiplier!r}")
        self.readout_lr_multiplier = check_float("readout_lr_multiplier", readout_lr_multiplier,
                                                 minimum=0.0, strict_minimum=True)
        self.embed_lr_multiplier = check_float("embed_lr_multiplier", embed_lr_multiplier,
                                               minimum=0.0, strict_minimum=True)
        if out_features is None and self.readout_lr_multiplier != 1.0:
            raise ValueError(f"readout_lr_multiplier={readout_lr_multiplier!r} needs a readout "
                             "(out_features); got out_features=None")
        if attention_weights is not None:
            if network.tokens is None:
                raise ValueError("attention_weights are for a token network of Attention blocks; "
                                 "this network has tokens=None")
            attention_weights = list(attention_weights)
            if len(attention_weights) != network.depth:
                raise ValueError(f"attention_weights must hold one mapping per block "
                                 f"({network.depth}), got {len(attention_weights)}")
        self.out_features = (
            None if out_features is None else check_int("out_features", out_features, minimum=1)
        )
        uses_bn = "batch" in network.norms
        bn_kwargs = _check_batchnorm_kwargs("batch" if uses_bn else None, batchnorm_kwargs)
        blocks, width = [], network.in_width
        stream_variance = network.expected_stream_variance()  # NF-ResNets' beta_l^2, per block
        for i, block in enumerate(network.blocks):
            common = {"bn_kwargs": bn_kwargs, "param_dtype": param_dtype, "rngs": rngs,
                      "spatial_rank": len(network.spatial)}
            if isinstance(block, Dense | Conv):
                blocks.append(DenseLayer(block, width, **common))
            elif isinstance(block, Residual):
                beta = math.sqrt(stream_variance[i]) if block.beta == "expected" else None
                blocks.append(ResidualBlock(block, width, network.branch_scale(block), beta=beta,
                                            **common))
            elif isinstance(block, Attention):
                alpha = network.branch_scale(block) if block.residual else 1.0
                blocks.append(AttentionBlock(
                    block, width, alpha, index=i, param_dtype=param_dtype, rngs=rngs,
                    weights=None if attention_weights is None else attention_weights[i]))
            else:
                raise ValueError(
                    f"block {i} is a {block.kind!r} block, which initjax.modules cannot build yet"
                )
            width = block.out_width(width)
        self.blocks = nnx.List(blocks)
        self.readout = (
            nnx.Linear(width, self.out_features, kernel_init=_resolve_init("readout_init", readout_init),
                       bias_init=nnx.initializers.zeros, param_dtype=param_dtype, rngs=rngs)
            if self.out_features is not None
            else None
        )
        # the token stem, drawn after the blocks and the readout so that these are the same
        # arrays with or without it
        embed, positions = None, None
        if embed_features is not None:
            embed = nnx.Linear(embed_features, network.in_width, use_bias=False,
                               kernel_init=_resolve_init("embed_init", embed_init),
                               param_dtype=param_dtype, rngs=rngs)
            shape = (network.tokens, network.in_width)
            positions = nnx.Param(
                position_std * jax.random.normal(rngs.params(), shape, param_dtype))
        self.embed_features = embed_features
        self.embed = embed
        self.positions = positions

    def stem(self, x: Array) -> Array:
        """The stream entering block 0: ``x W_e + positions`` for raw tokens ``x`` ``(batch, T,
        embed_features)`` with the stem (see :func:`build`), else ``x`` itself."""
        x = jnp.asarray(x)
        if self.embed is None:
            return x
        t, f = self.description.tokens, self.embed_features
        if x.ndim != 3 or x.shape[1:] != (t, f):
            raise ValueError(f"the token stem expects raw tokens (batch, {t}, {f}) (tokens, "
                             f"embed_features), got shape {x.shape}")
        return self.embed(x) + self.positions[...].astype(x.dtype)[None]

    def lr_multipliers(self) -> Any:
        """The learning-rate multiplier of every parameter, a tree shaped like
        ``nnx.state(self, nnx.Param)`` with float leaves: a Dense layer's ``lr_multiplier`` on its
        own parameters (kernel, bias, weight-standardization gain, Fixup's scalar biases; the bias
        takes ``bias_lr_multiplier`` instead when that is set), an Attention block's
        ``lr_multiplier`` on its kernels (W_Q, W_K, W_V, W_O, W_1, W_2), ``readout_lr_multiplier``
        on the readout's kernel (its bias keeps 1: a bias's fan-out, here the classes, does not
        scale with width, so every parametrization's bias rule gives it 1),
        ``embed_lr_multiplier`` on a token stem's ``embed`` and ``positions``, and 1 on norms and
        block-level scalars (a learnable branch scale, Fixup's branch multiplier)."""
        from initjax.network import Attention

        blocks = self.description.blocks
        heads = {("readout", "kernel"): self.readout_lr_multiplier,
                 ("embed", "kernel"): self.embed_lr_multiplier,
                 ("positions", "value"): self.embed_lr_multiplier}

        def multiplier(path: tuple, _leaf: Any) -> float:
            names = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path]
            if names[0] != "blocks":
                return heads.get(tuple(names[:2]), 1.0)
            block = blocks[names[1]]
            if isinstance(block, Attention):  # blocks/i/<query|key|...|mlp_out>/kernel, norms
                return block.lr_multiplier if names[2] in _ATTENTION_LAYERS.values() else 1.0
            if hasattr(block, "lr_multiplier"):  # a Dense block: blocks/i/<param or norm>
                layer, own = block, names[2]
            elif names[2] == "branch":  # a residual branch layer: blocks/i/branch/j/<...>
                layer, own = block.branch[names[3]], names[4]
            else:  # a block-level parameter or norm
                return 1.0
            if own == "bias" and layer.bias_lr_multiplier is not None:
                return layer.bias_lr_multiplier
            return layer.lr_multiplier if own in _LAYER_OWN_PARAMS else 1.0

        return jax.tree_util.tree_map_with_path(multiplier, nnx.state(self, nnx.Param))

    def forward_with_intermediates(
        self, x: Array, *, use_running_average: bool | None = None
    ) -> tuple[Array, dict[str, list[Array]]]:
        """The output and, per block, ``"hidden"`` (the block's output, the stream) and its last
        Dense layer's ``"preact"`` (the linear map's output ``multiplier * x W + b``),
        ``"phi_input"`` (what the activation takes: normalized for a norm placed before, plus
        Fixup's scalar bias) and ``"act"`` (the activation's output). For a preactivation layer
        (``phi`` before ``W``) ``"preact"`` is the layer's output and ``"phi_input"`` / ``"act"``
        have the layer's input width (see :class:`DenseLayer`).

        A token network (``tokens=T``, inputs ``(batch, T, D)``) gives instead, per block,
        ``"hidden"`` (the stream after it), ``"attention"`` (the probabilities ``(batch, H, T,
        T)``), ``"branch"`` (``A Attn(.)``, the scaled attention branch) and ``"mlp_branch"``
        (``A MLP(.)``; None for a block without MLP): the engine's ``trace_attention`` tensors
        ``"x"``, ``"p"``, ``"branch"`` (see :class:`AttentionBlock`)."""
        x = self.stem(x)
        n0 = self.description.in_width
        spatial = self.description.spatial
        if spatial:
            if x.ndim != len(spatial) + 2 or x.shape[-1] != n0:
                raise ValueError(f"the network expects inputs (batch, *spatial, {n0}) of rank "
                                 f"{len(spatial) + 2} (spatial {spatial}, channels last), "
                                 f"got shape {x.shape}")
        elif self.description.tokens is not None:
            if x.ndim != 3 or x.shape[-1] != n0:
                raise ValueError(f"the network expects token inputs (batch, tokens, {n0}), "
                                 f"got shape {x.shape}")
        elif x.ndim < 1 or x.shape[-1] != n0:
            raise ValueError(f"the network expects inputs (..., {n0}), got shape {x.shape}")
        inter: dict[str, list[Array]] = (
            {"hidden": [], "attention": [], "branch": [], "mlp_branch": []}
            if self.description.tokens is not None
            else {"preact": [], "phi_input": [], "act": [], "hidden": []})
        for block in self.blocks:
            x, parts = block.forward(x, use_running_average)
            for k, v in parts.items():
                inter[k].append(v)
            inter["hidden"].append(x)
        if self.readout is not None and spatial:
            # global average pooling over the spatial axes, then the linear readout
            out = self.readout(x.mean(axis=tuple(range(1, 1 + len(spatial)))))
        else:
            out = self.readout(x) if self.readout is not None else x
        return out, inter

    def __call__(self, x: Array, *, use_running_average: bool | None = None,
                 return_intermediates: bool = False) -> Array | tuple[Array, dict[str, list[Array]]]:
        """The output; with ``return_intermediates=True`` the pair ``(output, intermediates)``
        of :meth:`forward_with_intermediates`."""
        out, inter = self.forward_with_intermediates(x, use_running_average=use_running_average)
        return (out, inter) if return_intermediates else out


def build(network: Any, out_features: int | None = None, *, rngs: nnx.Rngs,
          **kwargs: Any) -> NetworkModule:
    """Build a Flax NNX module from a network description.

    Each :class:`~initjax.network.Dense` layer becomes a :class:`DenseLayer`,
    ``phi(norm(multiplier * x W + b))`` with ``W: (n_in, n_out)`` drawn by the layer's initializer
    and ``b`` by its bias initializer (``multiplier * phi(norm(x)) W + b`` for a
    ``preactivation`` layer; Brock et al.'s scaled standardization of ``W`` with a trained gain
    for ``weight_standardization``); each :class:`~initjax.network.Residual` block a
    :class:`ResidualBlock`, ``x + alpha * branch(norm(x) / beta)`` (``"pre"``) or
    ``norm(x + alpha * branch(x / beta))`` (``"post"``), with ``alpha`` from
    :meth:`~initjax.network.Network.branch_scale` (an ``nnx.Param`` when ``learnable``),
    ``beta = sqrt(expected_stream_variance()[block])`` for ``beta="expected"`` (else 1; see
    :meth:`~initjax.network.Network.expected_stream_variance`), and Fixup's trained scalars for
    ``scalar_biases``. Norms:
    :class:`BatchNorm`, ``nnx.LayerNorm`` or ``nnx.RMSNorm`` with the block's epsilon. Parameters
    are drawn block by block from ``rngs.params``. A :class:`~initjax.network.Conv` layer becomes
    a :class:`DenseLayer` holding a conv kernel ``(*kernel_size, n_in, n_out)`` (stride 1, SAME
    padding); a network with ``spatial`` axes takes inputs ``(batch, *spatial, in_width)``
    (channels last), its norms reduce as the block engine's do (batch norm over ``(batch,
    *spatial)``, layer and RMS norm over ``(*spatial, C)``), and the readout, if any, follows a
    global average pooling over the spatial axes: ``out = mean_{spatial}(x^L) W_r + b_r``.

    A token network (``Network(tokens=T)``, inputs ``(batch, T, D)``) of
    :class:`~initjax.network.Attention` blocks becomes one :class:`AttentionBlock` per block
    (bias-free ``query``/``key``/``value``/``out`` kernels ``(D, D)``, an optional MLP,
    :class:`TokenNorm` norms whose scale 1 and bias 0 reproduce the engine's affine-free norm);
    a readout, if any, acts on every token. ``attention_weights=attention_weights(network, seed,
    key)`` loads the attention engine's weights of that seed instead of drawing them, so the
    module is the sampled network that :func:`~initjax.engine.attention.propagate_attention`
    measures.

    The token stem (``embed_features=F``, token networks only): the module then takes raw tokens
    ``x: (batch, T, F)`` and the stream entering block 0 is ``x W_e + P`` (:meth:`NetworkModule.stem`),
    with ``W_e: (F, D)`` a bias-free ``nnx.Linear`` ``embed`` drawn by ``embed_init`` and ``P:
    (T, D)`` the trained ``nnx.Param`` ``positions``, entries i.i.d. ``N(0, position_std^2)``. The
    default ``position_std=1`` makes ``P`` alone the attention engine's input stream (tokens
    i.i.d. N(0, 1), token cosine ~0), so a sequence whose tokens are alike (digits' rows) does
    not start rank-collapsed; with ``embed_init="lecun_normal"`` (variance ``1/F``) and
    standardized inputs ``x W_e`` has variance ~1 per entry too, so the stream's variance is
    ``E[x^2] + position_std^2 ~ 2`` (a pre-norm block rescales it; ``position_std=0``: no
    positional information at initialization, still trained). The stem is drawn after the blocks
    and the readout, which are therefore the same arrays with or without it. Without
    ``embed_features`` (None, the default) inputs are the stream ``(batch, T, D)`` itself.

    Args:
      network: an :class:`initjax.network.Network` or :class:`initjax.NetworkConfig`.
      out_features: size of a linear readout after the last block (None: no readout).
      rngs: ``nnx.Rngs``.
      **kwargs: ``readout_init`` (the readout kernel's initializer, ``"lecun_normal"`` by
        default; its bias is zero), ``batchnorm_kwargs``, ``param_dtype``, ``attention_weights``
        (token networks: one mapping per block, see :func:`attention_weights`), and for a
        token network's stem ``embed_features`` (F, None: no stem), ``embed_init`` (an initjax
        initializer spec, default ``"lecun_normal"``) and ``position_std`` (>= 0, default 1);
        ``readout_lr_multiplier`` and (with the stem) ``embed_lr_multiplier``, the learning-rate
        factors :meth:`NetworkModule.lr_multipliers` gives the readout and the stem (> 0, default
        1; a parametrization's output and input rules, see
        :func:`initjax.parametrization.token_heads`).

    Returns:
      A :class:`NetworkModule`; ``model(x)`` gives the output, ``model(x,
      return_intermediates=True)`` also every block's tensors (see
      :meth:`NetworkModule.forward_with_intermediates`).

    Raises:
      TypeError: ``network`` is not a description. ValueError: a block kind this builder does not
        know, a token network with a block that is not Attention (named), ``out_features < 1``,
        ``batchnorm_kwargs`` without batch norm, ``attention_weights`` of the wrong length or
        keys or for a network without tokens, ``embed_features`` / ``embed_init`` /
        ``position_std`` without a token stem, ``position_std < 0``.

    >>> from flax import nnx
    >>> from initjax.network import Dense, Network, Repeat, Residual
    >>> net = Network(8, (Repeat(Residual((Dense(8, "he_normal", "relu"),), alpha=0.5), 3),))
    >>> model = build(net, out_features=2, rngs=nnx.Rngs(0))
    >>> model(jnp.ones((4, 8))).shape
    (4, 2)
    """
    return NetworkModule(network, out_features, rngs=rngs, **kwargs)
