"""The configuration of one training run (:class:`TrainConfig`) and its optimizer and schedule.

A config's fields split into *structure* (the network, the optimizer and schedule kinds, the run
length and record cadence: they decide what is compiled) and *numbers* (:data:`NUMERIC_FIELDS`:
learning rate, momentum, Adam's constants, decay constants). Numbers enter the compiled program as
data (:meth:`TrainConfig.numbers`), so configs that differ only in numbers and in their
initializers (:func:`structure_key`) train as arms of one vmapped program.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from initjax import activations as _activations
from initjax import modules as _modules
from initjax._checks import check_choice, check_float, check_int
from initjax._registry import parse_spec
from initjax.network import Dense, Network, Repeat, Residual

__all__ = ["TrainConfig", "MODELS", "OPTIMIZERS", "SCHEDULES", "NUMERIC_FIELDS", "INIT_FIELDS",
           "structure_key", "schedule_value", "make_optimizer"]

MODELS = ("mlp", "cnn", "network")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step", "exponential")
# Fields that enter the training program as data (one value per arm), not as code.
NUMERIC_FIELDS = ("learning_rate", "momentum", "b1", "b2", "eps", "decay_rate", "final_lr_fraction")
# Fields that only decide the initial parameters (drawn once per config before training).
INIT_FIELDS = ("kernel_init", "bias_init", "embed_init", "position_std")
# Fields omitted from to_dict() at their default, so that configs written before they existed
# keep their run identity (the run folder's hash).
_OMITTED_AT_DEFAULT = {"readout": True, "embed_init": None, "position_std": 1.0,
                       "readout_lr_multiplier": 1.0, "embed_lr_multiplier": 1.0}
_BN_PRESETS = {"flax": (0.99, "biased"), "pytorch": (0.1, "unbiased")}



def _as_int_tuple(name: str, value: Any, *, minimum: int, allow_empty: bool) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of ints, got {value!r}")
    out = tuple(check_int(f"{name}[{i}]", v, minimum=minimum) for i, v in enumerate(value))
    if not out and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    return out


def _check_spec_string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a registry spec string (e.g. 'he_normal', 'normal:stddev=0.01') so "
            f"the config serializes to JSON, got {value!r}"
        )
    return value


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run: network, optimizer, schedule and measurement options (frozen, JSON).

    The network is :class:`initjax.modules.MLP` (``model="mlp"``: hidden ``widths``, a linear
    readout to the classes; image inputs are flattened) or :class:`initjax.modules.PlainCNN`
    (``model="cnn"``: one 3x3 conv per entry of ``widths``, global average pooling, a linear
    classifier; NHWC inputs). The loss is the mean softmax cross-entropy of a minibatch.

    Optimizers (``optax``), with ``eta_t`` the learning rate of the schedule at update ``t``:

    - ``"sgd"``: ``theta <- theta - eta_t g``.
    - ``"momentum"``: ``v <- momentum v + g``, ``theta <- theta - eta_t v`` (``optax.sgd`` with
      momentum; PyTorch's convention).
    - ``"nesterov"``: the same with Nesterov's look-ahead (``nesterov=True``).
    - ``"adam"``: Kingma & Ba 2015 with ``b1``, ``b2``, ``eps`` (``optax.adam``).

    Schedules, with ``T = steps`` and ``eta = learning_rate``:

    - ``"constant"``: ``eta``.
    - ``"cosine"``: ``eta (f + (1 - f) (1 + cos(pi t / T)) / 2)``, ``f = final_lr_fraction``.
    - ``"warmup_cosine"``: linear from 0 to ``eta`` over ``warmup_steps``, then cosine to
      ``f eta`` at ``T`` (``optax.warmup_cosine_decay_schedule``). With ``final_lr_fraction=1``
      it is linear warm-up then constant, ``eta_t = eta min(t / w, 1)`` (the first update, at
      ``t = 0``, has rate 0): the warm-up arm of Xiong et al. 2020 (the constant arm is
      ``"constant"``).
    - ``"step"``: ``eta decay_rate^floor(t / decay_every)``.
    - ``"exponential"``: ``eta decay_rate^(t / decay_every)``.

    Attributes:
      label: the name shown in results and plots ("" gives ``"config <i>"``).
      model: ``"mlp"``, ``"cnn"`` or ``"network"`` (a description in ``network``).
      widths: hidden widths (MLP) or conv channels (CNN), one per layer.
      activation: :mod:`initjax.activations` spec (``"tanh"``, ``"leaky_relu:negative_slope=0.1"``)
        or ``"prelu_learned"`` (``"prelu_learned:init_slope=0.25"``) for learnable PReLU slopes.
      kernel_init, bias_init: :mod:`initjax.initializers` specs (``"normal:stddev=0.01"``).
      norm: None, ``"batch"`` or (MLP only) ``"layer"``.
      norm_placement: ``"before"`` (Linear -> norm -> phi) or ``"after"`` the activation.
      residual: MLP only: identity skips around blocks whose widths match.
      downsample_at: CNN only: conv indices with stride 2.
      optimizer: one of :data:`OPTIMIZERS`.
      learning_rate: the peak learning rate ``eta`` (> 0).
      momentum: the momentum of ``"momentum"`` and ``"nesterov"``, in [0, 1).
      b1, b2, eps: Adam's decay rates and epsilon.
      schedule: one of :data:`SCHEDULES`.
      warmup_steps: linear warm-up length (``"warmup_cosine"`` only), < ``steps``.
      decay_every: period of ``"step"`` / ``"exponential"`` decay (required by them).
      decay_rate: factor per period for ``"step"`` / ``"exponential"``, in (0, 1].
      final_lr_fraction: final learning rate over peak for the cosine schedules, in [0, 1].
      batch_size: minibatch size (>= 2 with batch norm).
      steps: number of optimizer updates.
      record_every: updates between records; records are taken at steps
        ``0, record_every, 2 record_every, ...`` and at ``steps``.
      same_batches: every seed sees the same minibatch sequence (True:
        ``data.batches(x_train, y_train, batch_size, seed=key)``) or its own (False: seed ``i``
        uses ``seed=SeedSequence([key, i]).generate_state(1)[0]``), ``key`` that of
        :func:`compare`.
      probe_size: examples of the fixed probe batch (taken from the training set) on which layer
        statistics and gradient norms are measured; capped at the training-set size.
      train_eval_size: examples of the fixed training subset on which train accuracy is measured;
        capped at the training-set size.
      bn_convention: ``"flax"`` (momentum = fraction kept, biased running variance) or
        ``"pytorch"`` (momentum = fraction of the new batch taken, unbiased running variance);
        see :class:`initjax.modules.BatchNorm`.
      bn_momentum: batch-norm momentum in the chosen convention (None: 0.99 flax, 0.1 pytorch).
      bn_running_var: ``"biased"`` / ``"unbiased"`` (None: the convention's).
      bn_epsilon: batch-norm epsilon.
      network: with ``model="network"``, the :class:`initjax.network.Network` to train (its
        ``in_width`` must be the flattened example size; a token network's is the stream width,
        see below); it states the layers, so ``widths``,
        ``activation``, ``bias_init``, ``norm``, ``norm_placement`` and ``residual`` are not used,
        and ``kernel_init`` draws the linear readout. Records' ``layer`` axis is then the block
        axis: activation statistics of each block's last Dense layer, gradient norms over each
        block's kernels. JSON holds it as :meth:`~initjax.network.Network.to_dict`.
      readout: with ``model="network"``: True adds a linear readout to the classes, drawn from
        ``kernel_init``; False makes the network's own last layer the readout (its width must be
        the number of classes), as a parametrized network does
        (:func:`initjax.parametrization.mlp` ends in its muP/SP readout). JSON omits it when True,
        so older configs keep their run identity.
      embed_init: token networks only: the initializer spec of the token embedding ``W_e``
        (None: ``kernel_init``).
      position_std: token networks only: the standard deviation (>= 0) of the learned
        positional embedding's entries at initialization (default 1).
      readout_lr_multiplier: with ``model="network"`` and ``readout=True``: the factor (> 0) on
        the learning rate of the added readout's kernel (a parametrization's output rule, e.g.
        muP's ``1/m``; :func:`initjax.parametrization.token_heads`); its bias keeps the base rate.
      embed_lr_multiplier: token networks only: the factor (> 0) on the stem's learning rate
        (``W_e`` and the positions; the input rule).

    Token networks (``model="network"`` with ``Network(tokens=T)`` of
    :class:`~initjax.network.Attention` blocks, e.g. :meth:`~initjax.network.Network.transformer`;
    ``network.in_width`` is the stream width ``D``): each example (any shape of ``T F`` values,
    ``(T, F)`` or flattened ``(T F,)``: digits' 64 pixels with ``T = 8`` are 8 rows of 8 pixels)
    is read as ``T`` tokens ``x_t`` of ``F`` features, and the stream entering block 0 is
    ``x_t W_e + p_t`` (:func:`initjax.modules.build` with ``embed_features=F``: ``W_e: (F, D)``
    bias-free from ``embed_init``, ``p: (T, D)`` trained, drawn N(0, ``position_std^2``)). The
    labels' shape decides the task: ``y: (n,)`` one class per sequence, the readout acting on the
    token mean of the last stream, ``logits = mean_t(x^L_t) W_r + b_r``; ``y: (n, T)`` one class
    per token, ``logits_t = x^L_t W_r + b_r``, the loss the mean cross-entropy over sequences and
    tokens and accuracy the fraction of tokens right. ``readout=False`` is refused. An Attention
    block's ``lr_multiplier`` scales its kernels' learning rate (``parametrize`` sets it).

    Raises:
      ValueError, TypeError: for any bad value; the message names the field and what is allowed.
    """

    label: str = ""
    model: str = "mlp"
    widths: tuple[int, ...] = (100, 100, 100)
    activation: str = "relu"
    kernel_init: str = "lecun_normal"
    bias_init: str = "zeros"
    norm: str | None = None
    norm_placement: str = "before"
    residual: bool = False
    downsample_at: tuple[int, ...] = ()
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    momentum: float = 0.9
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    schedule: str = "constant"
    warmup_steps: int = 0
    decay_every: int | None = None
    decay_rate: float = 0.1
    final_lr_fraction: float = 0.0
    batch_size: int = 60
    steps: int = 1000
    record_every: int = 100
    same_batches: bool = True
    probe_size: int = 500
    train_eval_size: int = 5000
    bn_convention: str = "flax"
    bn_momentum: float | None = None
    bn_running_var: str | None = None
    bn_epsilon: float = 1e-5
    network: Network | None = None
    readout: bool = True
    embed_init: str | None = None
    position_std: float = 1.0
    readout_lr_multiplier: float = 1.0
    embed_lr_multiplier: float = 1.0

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.label, str):
            raise TypeError(f"label must be a string, got {self.label!r}")
        check_choice("model", self.model, MODELS)
        put("widths", _as_int_tuple("widths", self.widths, minimum=1, allow_empty=False))
        _check_spec_string("activation", self.activation)
        name, kw = parse_spec(self.activation)
        if name == _modules.LEARNED_PRELU:
            if set(kw) - {"init_slope"}:
                raise ValueError(
                    f"activation {self.activation!r}: {_modules.LEARNED_PRELU} takes only "
                    "init_slope"
                )
        else:
            try:
                _activations.get(self.activation)
            except ValueError as err:
                raise ValueError(
                    f"activation: {err} (or {_modules.LEARNED_PRELU!r} for learnable PReLU)"
                ) from err
        from initjax import initializers  # late: initializers imports heavy optional pieces

        for field in ("kernel_init", "bias_init"):
            initializers.get(_check_spec_string(field, getattr(self, field)))
        if self.norm == "none":  # initjax's one spelling elsewhere; None stays canonical here
            object.__setattr__(self, "norm", None)
        norms = (None, "batch", "layer") if self.model == "mlp" else (None, "batch")
        check_choice(f"norm (model={self.model!r})", self.norm, norms)
        check_choice("norm_placement", self.norm_placement, _modules.NORM_PLACEMENTS)
        if not isinstance(self.residual, bool):
            raise TypeError(f"residual must be True or False, got {self.residual!r}")
        if self.residual and self.model != "mlp":
            raise ValueError("residual=True needs model='mlp' (PlainCNN has no shortcuts; a "
                             "network description states its own residual blocks)")
        put("downsample_at", _as_int_tuple("downsample_at", self.downsample_at, minimum=0,
                                           allow_empty=True))
        if self.downsample_at and self.model != "cnn":
            raise ValueError(f"downsample_at={self.downsample_at} needs model='cnn'")
        if any(i >= len(self.widths) for i in self.downsample_at):
            raise ValueError(
                f"downsample_at={self.downsample_at} must index convs in [0, {len(self.widths)})"
            )
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        put("learning_rate", check_float("learning_rate", self.learning_rate, minimum=0.0,
                                         strict_minimum=True))
        put("momentum", check_float("momentum", self.momentum, minimum=0.0))
        if self.momentum >= 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        for field in ("b1", "b2"):
            v = check_float(field, getattr(self, field), minimum=0.0)
            if v >= 1.0:
                raise ValueError(f"{field} must be in [0, 1), got {v}")
            put(field, v)
        put("eps", check_float("eps", self.eps, minimum=0.0))
        check_choice("schedule", self.schedule, SCHEDULES)
        put("steps", check_int("steps", self.steps, minimum=1))
        put("warmup_steps", check_int("warmup_steps", self.warmup_steps, minimum=0))
        if self.warmup_steps and self.schedule != "warmup_cosine":
            raise ValueError(
                f"warmup_steps={self.warmup_steps} needs schedule='warmup_cosine', "
                f"got {self.schedule!r}"
            )
        if self.schedule == "warmup_cosine" and self.warmup_steps >= self.steps:
            raise ValueError(
                f"warmup_steps must be < steps={self.steps}, got {self.warmup_steps}"
            )
        if self.schedule in ("step", "exponential"):
            if self.decay_every is None:
                raise ValueError(f"schedule={self.schedule!r} needs decay_every (an int >= 1)")
            put("decay_every", check_int("decay_every", self.decay_every, minimum=1))
        elif self.decay_every is not None:
            raise ValueError(
                f"decay_every={self.decay_every} needs schedule 'step' or 'exponential', "
                f"got {self.schedule!r}"
            )
        put("decay_rate", check_float("decay_rate", self.decay_rate, minimum=0.0,
                                      strict_minimum=True, maximum=1.0))
        put("final_lr_fraction", check_float("final_lr_fraction", self.final_lr_fraction,
                                             minimum=0.0, maximum=1.0))
        put("batch_size", check_int("batch_size", self.batch_size, minimum=1))
        if isinstance(self.network, Mapping):
            put("network", Network.from_dict(self.network))
        if (self.model == "network") != (self.network is not None):
            raise ValueError(
                f"model='network' and a network description go together; got model={self.model!r} "
                f"and network={type(self.network).__name__}"
            )
        if self.network is not None:
            if not isinstance(self.network, Network):
                raise TypeError(f"network must be an initjax Network, got {type(self.network).__name__}")
            if self.norm is not None or self.residual:
                raise ValueError("with model='network' the network states its norms and skips; "
                                 f"got norm={self.norm!r}, residual={self.residual!r}")
            if not isinstance(self.readout, bool):
                raise TypeError(f"readout must be True or False, got {self.readout!r}")
            if self.network.tokens is not None and not self.readout:
                raise ValueError(f"readout=False is not available for a token network (tokens="
                                 f"{self.network.tokens}): its last block is an attention block of "
                                 "the stream's width, not a readout; use readout=True")
            if self.network.spatial:
                raise ValueError(f"the trainer takes networks without spatial axes (flattened examples); "
                                 f"this one has spatial={self.network.spatial} (conv blocks): train it "
                                 "through initjax.modules.build and training.core for now")
        elif self.readout is not True:
            raise ValueError(f"readout={self.readout!r} needs model='network' (the other models "
                             "always end in a linear readout)")
        tokens = self.network is not None and self.network.tokens is not None
        if self.embed_init is not None:
            if not tokens:
                raise ValueError(f"embed_init={self.embed_init!r} needs a token network "
                                 "(model='network' with Network(tokens=T)): it draws the token "
                                 "embedding W_e")
            initializers.get(_check_spec_string("embed_init", self.embed_init))
        put("position_std", check_float("position_std", self.position_std, minimum=0.0))
        if self.position_std != 1.0 and not tokens:
            raise ValueError(f"position_std={self.position_std} needs a token network "
                             "(model='network' with Network(tokens=T)): it draws the positional "
                             "embedding")
        for field in ("readout_lr_multiplier", "embed_lr_multiplier"):
            put(field, check_float(field, getattr(self, field), minimum=0.0, strict_minimum=True))
        if self.readout_lr_multiplier != 1.0 and (self.network is None or not self.readout):
            raise ValueError(f"readout_lr_multiplier={self.readout_lr_multiplier} needs "
                             "model='network' with readout=True (the readout it scales)")
        if self.embed_lr_multiplier != 1.0 and not tokens:
            raise ValueError(f"embed_lr_multiplier={self.embed_lr_multiplier} needs a token "
                             "network (model='network' with Network(tokens=T)): it scales the "
                             "token stem's learning rate")
        if self.uses_batchnorm and self.batch_size < 2:
            raise ValueError("batch norm needs batch_size >= 2 (batch statistics of one example)")
        put("record_every", check_int("record_every", self.record_every, minimum=1))
        if self.record_every > self.steps:
            raise ValueError(
                f"record_every must be <= steps={self.steps}, got {self.record_every}"
            )
        if not isinstance(self.same_batches, bool):
            raise TypeError(f"same_batches must be True or False, got {self.same_batches!r}")
        put("probe_size", check_int("probe_size", self.probe_size, minimum=2))
        put("train_eval_size", check_int("train_eval_size", self.train_eval_size, minimum=1))
        check_choice("bn_convention", self.bn_convention, _modules.MOMENTUM_CONVENTIONS)
        if self.bn_momentum is not None:
            v = check_float("bn_momentum", self.bn_momentum)
            if not 0.0 < v < 1.0:
                raise ValueError(f"bn_momentum must be in (0, 1), got {v}")
            put("bn_momentum", v)
        if self.bn_running_var is not None:
            check_choice("bn_running_var", self.bn_running_var, _modules.RUNNING_VAR_MODES)
        if not self.uses_batchnorm and (
            self.bn_momentum is not None or self.bn_running_var is not None
        ):
            raise ValueError(
                f"bn_momentum / bn_running_var are set but norm={self.norm!r}; they need "
                "norm='batch'"
            )
        put("bn_epsilon", check_float("bn_epsilon", self.bn_epsilon, minimum=0.0))

    # -- serialization --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (tuples become lists)."""
        return {
            f.name: list(v) if isinstance(v, tuple) else v.to_dict() if isinstance(v, Network) else v
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
            if not (f.name in _OMITTED_AT_DEFAULT and v == _OMITTED_AT_DEFAULT[f.name]
                    and type(v) is type(_OMITTED_AT_DEFAULT[f.name]))
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` listing the fields."""
        if not isinstance(d, Mapping):
            raise TypeError(f"expected a dict of TrainConfig fields, got {d!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; fields are {names}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_json(self) -> str:
        """The config as a JSON string."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    # -- the objects it describes ----------------------------------------------------------------

    @property
    def uses_batchnorm(self) -> bool:
        """True if any layer of the model uses batch norm."""
        if self.network is None:
            return self.norm == "batch"
        return "batch" in self.network.norms

    @property
    def batchnorm_kwargs(self) -> dict[str, Any] | None:
        """Keyword arguments of every :class:`~initjax.modules.BatchNorm` (None without BN)."""
        if not self.uses_batchnorm:
            return None
        momentum, running_var = _BN_PRESETS[self.bn_convention]
        return {
            "momentum": momentum if self.bn_momentum is None else self.bn_momentum,
            "momentum_convention": self.bn_convention,
            "running_var": running_var if self.bn_running_var is None else self.bn_running_var,
            "epsilon": self.bn_epsilon,
        }

    def build(self, in_shape: Sequence[int], num_classes: int, *, rngs: nnx.Rngs) -> nnx.Module:
        """The network for inputs of shape ``in_shape`` (one example) and ``num_classes`` outputs.

        Args:
          in_shape: ``(features,)`` or ``(H, W, C)``; an MLP takes ``prod(in_shape)`` features. A
            token network (``Network(tokens=T)``) takes any shape of ``T F`` values, read as ``T``
            tokens of ``F`` features: the module is built with the stem ``embed_features=F``
            (:func:`initjax.modules.build`) and takes inputs ``(batch, T, F)``.
          num_classes: readout width.
          rngs: ``nnx.Rngs`` for the parameters.

        Raises:
          ValueError: an ``in_shape`` the network cannot take (sizes named).
        """
        in_shape = tuple(check_int("in_shape[i]", s, minimum=1) for s in in_shape)
        num_classes = check_int("num_classes", num_classes, minimum=1)
        common = dict(activation=self.activation, kernel_init=self.kernel_init,
                      bias_init=self.bias_init, norm=self.norm,
                      norm_placement=self.norm_placement,
                      batchnorm_kwargs=self.batchnorm_kwargs, rngs=rngs)
        if self.model == "network" and self.network.tokens is not None:
            return _modules.build(
                self.network, num_classes, readout_init=self.kernel_init, rngs=rngs,
                embed_features=self.token_features(in_shape),
                embed_init=self.kernel_init if self.embed_init is None else self.embed_init,
                position_std=self.position_std, readout_lr_multiplier=self.readout_lr_multiplier,
                embed_lr_multiplier=self.embed_lr_multiplier)
        if self.model == "network":
            if int(np.prod(in_shape)) != self.network.in_width:
                raise ValueError(f"the network takes {self.network.in_width} inputs, but the "
                                 f"examples have shape {in_shape} ({int(np.prod(in_shape))} values)")
            if not self.readout and self.network.widths[-1] != num_classes:
                raise ValueError(f"readout=False makes the network's last layer the readout, but "
                                 f"its width is {self.network.widths[-1]} and there are "
                                 f"{num_classes} classes")
            return _modules.build(self.network, num_classes if self.readout else None,
                                  readout_init=self.kernel_init,
                                  readout_lr_multiplier=self.readout_lr_multiplier,
                                  batchnorm_kwargs=self.batchnorm_kwargs, rngs=rngs)
        if self.model == "mlp":
            return _modules.MLP(int(np.prod(in_shape)), self.widths, num_classes,
                                residual=self.residual, **common)
        if len(in_shape) != 3:
            raise ValueError(f"model='cnn' needs (H, W, C) inputs, got example shape {in_shape}")
        return _modules.PlainCNN(in_shape[-1], self.widths, len(self.widths), num_classes,
                                 downsample_at=self.downsample_at, **common)

    def token_features(self, in_shape: Sequence[int]) -> int:
        """``F``: the features per token of examples of shape ``in_shape`` (a token network's
        ``T`` tokens of ``F = prod(in_shape) / T`` features each).

        Raises:
          ValueError: not a token network, or ``prod(in_shape)`` not divisible by ``T`` (both
            named).
        """
        if self.network is None or self.network.tokens is None:
            raise ValueError("token_features needs a token network (model='network' with "
                             "Network(tokens=T))")
        size, t = int(np.prod(in_shape)), self.network.tokens
        if size % t:
            raise ValueError(f"examples of shape {tuple(in_shape)} hold {size} values, which "
                             f"tokens={t} does not divide: a token network reads each example "
                             "as T tokens of size / T features")
        return size // t

    def as_network(self, in_features: int) -> Network:
        """This MLP's hidden layers as an :class:`initjax.network.Network` (the readout is not a
        block: ``modules.build(cfg.as_network(n), num_classes, readout_init=cfg.kernel_init)`` adds
        it). A ``residual`` MLP's blocks whose widths match become
        ``Residual((Dense(...),), alpha=1)``: ``h + phi(norm(h W + b))``.

        Raises:
          ValueError: for ``model="cnn"`` or the learnable PReLU (neither is a description yet).
        """
        in_features = check_int("in_features", in_features, minimum=1)
        if self.model == "network":
            return self.network
        if self.model != "mlp":
            raise ValueError(f"only model='mlp' has a network description, got {self.model!r}")
        if parse_spec(self.activation)[0] == _modules.LEARNED_PRELU:
            raise ValueError(f"activation {self.activation!r} (learnable slopes) has no network "
                             "description yet")
        stages, n_in = [], in_features
        for width in self.widths:
            layer = Dense(width, self.kernel_init, self.activation, self.bias_init,
                          self.norm or "none", self.norm_placement)
            block = Residual((layer,)) if self.residual and width == n_in else layer
            if stages and stages[-1].block == block:
                stages[-1] = Repeat(block, stages[-1].count + 1)
            else:
                stages.append(Repeat(block))
            n_in = width
        return Network(in_features, tuple(stages), batch=max(self.batch_size, 2),
                       label=self.label or None)

    def numbers(self) -> dict[str, float]:
        """The :data:`NUMERIC_FIELDS` of this config: what may differ between arms of a sweep."""
        return {f: float(getattr(self, f)) for f in NUMERIC_FIELDS}

    def make_schedule(self) -> Callable[[Any], Any]:
        """The learning-rate schedule ``t -> eta_t`` (``t`` = updates done so far), see
        :func:`schedule_value`."""
        return lambda t: schedule_value(self, self.numbers(), t)

    def make_optimizer(self) -> optax.GradientTransformation:
        """The ``optax`` transformation of :attr:`optimizer` with :meth:`make_schedule`
        (:func:`make_optimizer` with this config's own numbers)."""
        return make_optimizer(self, self.numbers())

    @property
    def record_steps(self) -> np.ndarray:
        """(record,) the steps at which records are taken: ``0, k, 2k, ...`` and ``steps``."""
        s = list(range(0, self.steps, self.record_every)) + [self.steps]
        return np.asarray(s, dtype=np.int64)


def structure_key(cfg: TrainConfig) -> tuple[tuple[str, Any], ...]:
    """What must agree for two configs to train as arms of one compiled program: every field but
    the label, the :data:`NUMERIC_FIELDS` (data per arm) and the :data:`INIT_FIELDS` (the initial
    parameters are drawn before training, per config)."""
    skip = {"label", *NUMERIC_FIELDS, *INIT_FIELDS}
    return tuple((f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg)
                 if f.name not in skip)


def schedule_value(cfg: TrainConfig, numbers: Mapping[str, Any], t: Any) -> Any:
    """The learning rate ``eta_t`` of ``cfg.schedule`` after ``t`` updates (jnp; traceable).

    The kind of schedule and its step counts come from ``cfg`` (structure); the peak rate
    ``eta = numbers["learning_rate"]``, ``f = numbers["final_lr_fraction"]`` and
    ``r = numbers["decay_rate"]`` may be traced arrays (one per arm). With ``T = cfg.steps``:

    - constant: ``eta``;
    - cosine: ``eta (f + (1 - f) (1 + cos(pi min(t, T) / T)) / 2)`` (``optax.cosine_decay_schedule``);
    - warmup_cosine: ``eta t / w`` for ``t < w = warmup_steps``, then the cosine over ``T - w``
      updates from ``eta`` to ``f eta`` (``optax.warmup_cosine_decay_schedule``);
    - step: ``eta r^floor(t / decay_every)``; exponential: ``eta r^(t / decay_every)``.
    """
    eta = numbers["learning_rate"]
    t = jnp.asarray(t, jnp.float32)
    kind = cfg.schedule
    if kind == "constant":
        return eta * jnp.ones_like(t)
    if kind in ("step", "exponential"):
        p = t / cfg.decay_every
        if kind == "step":
            p = jnp.floor(p)
        return eta * numbers["decay_rate"] ** p
    f = numbers["final_lr_fraction"]
    w = cfg.warmup_steps if kind == "warmup_cosine" else 0
    span = cfg.steps - w
    s = jnp.clip(t - w, 0.0, span)
    cosine = eta * (f + (1.0 - f) * 0.5 * (1.0 + jnp.cos(jnp.pi * s / span)))
    if w == 0:
        return cosine
    return jnp.where(t < w, eta * t / w, cosine)


def make_optimizer(cfg: TrainConfig, numbers: Mapping[str, Any]) -> optax.GradientTransformation:
    """``cfg.optimizer`` with the numbers ``numbers`` (floats or traced arrays, one arm's).

    The optimizer's state layout depends on ``cfg`` only, never on the numbers, so arms that
    differ in learning rate, momentum or Adam's constants share one compiled program:

    - sgd: ``theta <- theta - eta_t g``;
    - momentum / nesterov: ``v <- mu v + g``, ``theta <- theta - eta_t v`` (Nesterov: ``g + mu v``),
      as ``optax.sgd(momentum=mu)``;
    - adam: ``optax.scale_by_adam(b1, b2, eps)`` then ``-eta_t``.

    ``eta_t`` is :func:`schedule_value` at the optimizer's own update count.
    """
    if cfg.optimizer == "sgd":
        direction = optax.identity()
    elif cfg.optimizer in ("momentum", "nesterov"):
        direction = optax.trace(decay=numbers["momentum"], nesterov=cfg.optimizer == "nesterov")
    else:
        direction = optax.scale_by_adam(b1=numbers["b1"], b2=numbers["b2"], eps=numbers["eps"])
    return optax.chain(direction, optax.scale_by_learning_rate(
        lambda count: schedule_value(cfg, numbers, count)))
