"""Train networks over many seeds at once and record how their signal evolves during training.

:func:`compare` trains every :class:`TrainConfig` on a :class:`~initjax.data.Dataset` for
``seeds`` seeds, the seeds as a ``vmap`` axis (one compiled computation for all of them), and
records at regular intervals what the classic papers plot: loss and accuracy curves (Glorot &
Bengio 2010; He et al. 2015, Figures 2-3; Ioffe & Szegedy 2015, Figure 1(a)), the mean, std and
15/50/85th percentiles of each hidden layer's activations (Glorot & Bengio Figures 2-4; Ioffe &
Szegedy Figure 1(b, c)), saturated and dead units, per-layer gradient norms, and for batch-norm
models the test accuracy with running averages vs batch statistics.

    >>> import dataclasses
    >>> from initjax import data, training
    >>> ds = data.digits()
    >>> plain = training.TrainConfig(label="sigmoid", widths=(100, 100, 100), activation="sigmoid",
    ...                              kernel_init="normal:stddev=0.1", optimizer="momentum",
    ...                              learning_rate=0.05, steps=2000, record_every=100)
    >>> bn = dataclasses.replace(plain, label="sigmoid + BN", norm="batch")
    >>> result = training.compare([plain, bn], ds, seeds=8, out="runs/bn")   # resumable
    >>> result["sigmoid + BN"].test_accuracy.shape                          # (seed, record)
    >>> training.plot_curves(result, "test_accuracy")

How a run is computed (functional NNX): the stacked ensemble is split into a graph definition
and state (``nnx.split``); one training step is a pure function
``step(params, batch_stats, opt_state, batch)`` (softmax cross-entropy, ``optax`` update), and
``record_every`` steps run as one ``lax.scan`` over the minibatch indices, ``vmap``-ped over the
seed axis and jitted. Member ``i`` of the seed axis is the network built from
``jax.random.fold_in(jax.random.key(key), i)``, so a seed's run does not depend on how many seeds
run beside it.

Checkpoints: with ``out``, every config gets a directory holding ``config.json``, ``status.json``
(``incomplete`` / ``done`` / ``diverged``) and ``checkpoint.npz`` (parameters, optimizer state,
batch-norm statistics, the step and the records so far), rewritten atomically after every record
interval; a later :func:`compare` with the same ``out`` continues from there and skips finished
configs, and its numbers equal those of an uninterrupted run.

References:
  Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
  networks", AISTATS, https://proceedings.mlr.press/v9/glorot10a.html.
  He et al. 2015, "Delving Deep into Rectifiers", https://arxiv.org/abs/1502.01852.
  Ioffe & Szegedy 2015, "Batch Normalization", https://arxiv.org/abs/1502.03167.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from initjax import activations as _activations
from initjax import data as _data
from initjax import modules as _modules
from initjax._checks import check_choice, check_float, check_int
from initjax._io import write_json, write_npz
from initjax._registry import parse_spec

__all__ = [
    "TrainConfig",
    "Record",
    "CompareResult",
    "compare",
    "plot_curves",
    "plot_percentiles",
    "MODELS",
    "OPTIMIZERS",
    "SCHEDULES",
    "PERCENTILES",
    "RECORD_FIELDS",
]

MODELS = ("mlp", "cnn")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "step", "exponential")
# The percentiles of Ioffe & Szegedy 2015, Figure 1(b, c).
PERCENTILES = (15.0, 50.0, 85.0)
_BN_PRESETS = {"flax": (0.99, "biased"), "pytorch": (0.1, "unbiased")}
_EVAL_CHUNK = 1000  # examples per evaluation chunk (bounds the memory of test-set passes)
_FORMAT = 1  # checkpoint format version, part of the run hash
# XLA:CPU spends seconds in LLVM optimizing threefry-heavy initialization code that runs once;
# without backend optimization it compiles ~10x faster. Per compiled function, CPU only.
_CPU_COMPILER_OPTIONS: dict[str, dict[str, Any]] = {
    "init": {"xla_backend_optimization_level": 0},
    "measure": {},
    "run": {},
}


def _jit(kind: str, fun: Callable[..., Any]) -> Callable[..., Any]:
    options = _CPU_COMPILER_OPTIONS[kind] if jax.default_backend() == "cpu" else {}
    return jax.jit(fun, compiler_options=options or None)


# ----------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------


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
      ``f eta`` at ``T`` (``optax.warmup_cosine_decay_schedule``).
    - ``"step"``: ``eta decay_rate^floor(t / decay_every)``.
    - ``"exponential"``: ``eta decay_rate^(t / decay_every)``.

    Attributes:
      label: the name shown in results and plots ("" gives ``"config <i>"``).
      model: ``"mlp"`` or ``"cnn"``.
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
        norms = (None, "batch", "layer") if self.model == "mlp" else (None, "batch")
        check_choice(f"norm (model={self.model!r})", self.norm, norms)
        check_choice("norm_placement", self.norm_placement, _modules.NORM_PLACEMENTS)
        if not isinstance(self.residual, bool):
            raise TypeError(f"residual must be True or False, got {self.residual!r}")
        if self.residual and self.model != "mlp":
            raise ValueError("residual=True needs model='mlp' (PlainCNN has no shortcuts)")
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
        if self.norm == "batch" and self.batch_size < 2:
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
        if self.norm != "batch" and (
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
            f.name: list(v) if isinstance(v, tuple) else v
            for f in dataclasses.fields(self)
            for v in [getattr(self, f.name)]
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
    def batchnorm_kwargs(self) -> dict[str, Any] | None:
        """Keyword arguments of every :class:`~initjax.modules.BatchNorm` (None without BN)."""
        if self.norm != "batch":
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
          in_shape: ``(features,)`` or ``(H, W, C)``; an MLP takes ``prod(in_shape)`` features.
          num_classes: readout width.
          rngs: ``nnx.Rngs`` for the parameters.
        """
        in_shape = tuple(check_int("in_shape[i]", s, minimum=1) for s in in_shape)
        num_classes = check_int("num_classes", num_classes, minimum=1)
        common = dict(activation=self.activation, kernel_init=self.kernel_init,
                      bias_init=self.bias_init, norm=self.norm,
                      norm_placement=self.norm_placement,
                      batchnorm_kwargs=self.batchnorm_kwargs, rngs=rngs)
        if self.model == "mlp":
            return _modules.MLP(int(np.prod(in_shape)), self.widths, num_classes,
                                residual=self.residual, **common)
        if len(in_shape) != 3:
            raise ValueError(f"model='cnn' needs (H, W, C) inputs, got example shape {in_shape}")
        return _modules.PlainCNN(in_shape[-1], self.widths, len(self.widths), num_classes,
                                 downsample_at=self.downsample_at, **common)

    def make_schedule(self) -> optax.Schedule:
        """The learning-rate schedule ``t -> eta_t`` (``t`` = updates done so far)."""
        lr = self.learning_rate
        if self.schedule == "constant":
            return optax.constant_schedule(lr)
        if self.schedule == "cosine":
            return optax.cosine_decay_schedule(lr, self.steps, alpha=self.final_lr_fraction)
        if self.schedule == "warmup_cosine":
            return optax.warmup_cosine_decay_schedule(
                0.0, lr, self.warmup_steps, self.steps, end_value=lr * self.final_lr_fraction
            )
        return optax.exponential_decay(lr, self.decay_every, self.decay_rate,
                                       staircase=self.schedule == "step")

    def make_optimizer(self) -> optax.GradientTransformation:
        """The ``optax`` transformation of :attr:`optimizer` with :meth:`make_schedule`."""
        lr = self.make_schedule()
        if self.optimizer == "sgd":
            return optax.sgd(lr)
        if self.optimizer in ("momentum", "nesterov"):
            return optax.sgd(lr, momentum=self.momentum, nesterov=self.optimizer == "nesterov")
        return optax.adam(lr, b1=self.b1, b2=self.b2, eps=self.eps)

    @property
    def record_steps(self) -> np.ndarray:
        """(record,) the steps at which records are taken: ``0, k, 2k, ...`` and ``steps``."""
        s = list(range(0, self.steps, self.record_every)) + [self.steps]
        return np.asarray(s, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------


class Record(NamedTuple):
    """What :func:`compare` measured for one config. Axes as commented; ``layer`` = hidden layer.

    Train-mode quantities use batch statistics in batch norm; eval-mode ones use the running
    averages (``use_running_average=True``). The probe batch is a fixed set of training examples
    (:attr:`CompareResult.probe_index`), measured in train mode (batch statistics of the probe
    batch, running averages left unchanged). After a seed diverges (``diverged_step[s] >= 0``) its
    records at steps ``>= diverged_step[s]`` are NaN.
    """

    step: np.ndarray  # (record,) int64: updates done when the record was taken (0 first)
    learning_rate: np.ndarray  # (record,) the schedule's rate for the next update, eta(step)
    train_loss: np.ndarray  # (seed, record) mean minibatch loss over the updates since the
    #                         previous record; at step 0 the initial loss on the probe batch
    train_accuracy: np.ndarray  # (seed, record) eval-mode accuracy on the train-eval subset
    test_loss: np.ndarray  # (seed, record) eval-mode mean cross-entropy on the test set
    test_accuracy: np.ndarray  # (seed, record) eval-mode accuracy (running averages with BN)
    test_accuracy_batch_stats: np.ndarray | None  # (seed, record) BN only: test batches of
    #   batch_size normalized with their own statistics (remainder dropped); None without BN
    act_mean: np.ndarray  # (seed, record, layer) mean of phi's output on the probe batch
    act_std: np.ndarray  # (seed, record, layer) std (ddof 0) of phi's output, units x examples
    act_percentiles: np.ndarray  # (seed, record, layer, 3) PERCENTILES of phi's output
    input_percentiles: np.ndarray  # (seed, record, layer, 3) PERCENTILES of phi's input (the
    #   pre-activation; after BN when norm_placement="before"): Ioffe & Szegedy's Figure 1(b, c)
    saturated: np.ndarray  # (seed, record, layer) fraction of phi outputs within 1% of the range
    #   of a bound (Activation.saturated); 0 for unbounded activations
    dead_fraction: np.ndarray  # (seed, record, layer) fraction of units whose phi output is
    #   exactly 0 on every probe example
    grad_norm: np.ndarray  # (seed, record, layer) Frobenius norm of dL/dW of the hidden layer's
    #   kernel, L the mean cross-entropy of the probe batch
    readout_grad_norm: np.ndarray  # (seed, record) the same for the readout / classifier kernel
    prelu_slope: np.ndarray | None  # (seed, record, layer) mean learned PReLU slope; None if
    #   the activation is not "prelu_learned"
    diverged_step: np.ndarray  # (seed,) int64: first update whose loss or parameters were
    #   non-finite, -1 if none


# Field name -> the axes of its array, for documentation and for the plot helpers.
RECORD_FIELDS: dict[str, tuple[str, ...]] = {
    "step": ("record",),
    "learning_rate": ("record",),
    "train_loss": ("seed", "record"),
    "train_accuracy": ("seed", "record"),
    "test_loss": ("seed", "record"),
    "test_accuracy": ("seed", "record"),
    "test_accuracy_batch_stats": ("seed", "record"),
    "act_mean": ("seed", "record", "layer"),
    "act_std": ("seed", "record", "layer"),
    "act_percentiles": ("seed", "record", "layer", "percentile"),
    "input_percentiles": ("seed", "record", "layer", "percentile"),
    "saturated": ("seed", "record", "layer"),
    "dead_fraction": ("seed", "record", "layer"),
    "grad_norm": ("seed", "record", "layer"),
    "readout_grad_norm": ("seed", "record"),
    "prelu_slope": ("seed", "record", "layer"),
    "diverged_step": ("seed",),
}
# Fields measured at each record (the engine's output, all with a leading seed axis).
_MEASURED = tuple(f for f, ax in RECORD_FIELDS.items() if ax[:2] == ("seed", "record"))


@dataclasses.dataclass(frozen=True, eq=False)
class CompareResult:
    """The outcome of :func:`compare`.

    Attributes:
      configs: the configs, in the order given.
      records: one :class:`Record` per config.
      seeds: number of seeds; seed ``i`` was built from ``fold_in(jax.random.key(key), i)``.
      key: the base key (an int).
      probe_index: rows of ``data.x_train`` forming the probe batch: config ``c`` uses the first
        ``min(c.probe_size, n_train)`` of them (the rows are a prefix of one fixed permutation).
      train_eval_index: rows on which train accuracy is measured, the first
        ``min(c.train_eval_size, n_train)`` for config ``c`` (a prefix of the same permutation).
      final_models: per config, the trained stacked ensemble (every state leaf has a leading
        seed axis); take one seed with :func:`initjax.modules.ensemble_member`.
      out: the checkpoint directory, or None.
    """

    configs: tuple[TrainConfig, ...]
    records: tuple[Record, ...]
    seeds: int
    key: int
    probe_index: np.ndarray
    train_eval_index: np.ndarray
    final_models: tuple[nnx.Module, ...]
    out: Path | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """Each config's label (``"config <i>"`` for an empty one)."""
        return tuple(c.label or f"config {i}" for i, c in enumerate(self.configs))

    @property
    def steps(self) -> np.ndarray:
        """(record,) the steps recorded, when all configs share them (else see ``records[i].step``).

        Raises:
          ValueError: if the configs record at different steps.
        """
        first = self.records[0].step
        if any(not np.array_equal(r.step, first) for r in self.records[1:]):
            raise ValueError(
                "the configs record at different steps; use result.records[i].step"
            )
        return first

    @property
    def diverged(self) -> np.ndarray:
        """(config, seed) bool: whether the seed's run became non-finite."""
        return np.stack([r.diverged_step >= 0 for r in self.records])

    @property
    def diverged_step(self) -> np.ndarray:
        """(config, seed) int64: the first non-finite update, -1 where none."""
        return np.stack([r.diverged_step for r in self.records])

    def __getitem__(self, which: int | str) -> Record:
        """The :class:`Record` of config ``which`` (an index or a label)."""
        return self.records[self._index(which)]

    def _index(self, which: int | str) -> int:
        if isinstance(which, str):
            if which not in self.labels:
                raise KeyError(f"no config labelled {which!r}; labels are {list(self.labels)}")
            return self.labels.index(which)
        i = check_int("config index", which)
        if not -len(self.records) <= i < len(self.records):
            raise IndexError(f"config index {i} out of range for {len(self.records)} configs")
        return i % len(self.records)


# ----------------------------------------------------------------------------------------------
# The engine: pure per-seed functions, vmapped over seeds
# ----------------------------------------------------------------------------------------------


def _xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.array(True)


def _percentiles(x: jax.Array, q: Sequence[float]) -> jax.Array:
    """``np.percentile(x, q)`` (linear interpolation) over all entries of ``x``, without a sort.

    XLA's CPU sort is slow, so the order statistic ``floor(p)`` at ``p = q / 100 * (n - 1)`` is
    found by bisection over the 2^32 float bit patterns, mapped to unsigned ints in the order of
    the floats: 32 counting passes, exact. Its neighbour ``floor(p) + 1`` then costs one more pass:
    it is the same value when at least ``floor(p) + 2`` entries are <= it, else the smallest entry
    above it (half the passes of bisecting for both). Any non-finite entry gives NaN, as numpy's
    result would be.
    """
    x = x.reshape(-1).astype(jnp.float32)
    n = x.shape[0]
    # Positions in float64 on the host (n and q are static), as numpy computes them.
    pos = np.asarray(q, np.float64) / 100.0 * (n - 1)
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
    above = jnp.min(jnp.where(u[None, :] > found[:, None], u[None, :], jnp.uint32(0xFFFFFFFF)), axis=1)
    repeated = (at_or_below >= ranks + 2) | jnp.asarray(lower + 1 > n - 1)
    upper = jnp.where(repeated, found, above)
    a, b = (_from_ordered_bits(k) for k in (found, upper))
    return jnp.where(jnp.all(jnp.isfinite(x)), a + frac * (b - a), jnp.nan)


def _from_ordered_bits(key: jax.Array) -> jax.Array:
    """The float32 whose order-preserving bit key (see :func:`_percentiles`) is ``key``."""
    back = jnp.where((key >> 31) == 1, key & jnp.uint32(0x7FFFFFFF), ~key)
    return jax.lax.bitcast_convert_type(back, jnp.float32)


class _ModelFns(NamedTuple):
    """What depends on the network only (shared by configs that differ in optimizer or steps)."""

    graphdef: Any
    forward: Callable[..., Any]  # (params, rest, x, train) -> (logits, intermediates, new rest)
    init: Callable[..., Any]  # keys (seed,) -> stacked (params, rest)
    measure: Callable[..., Any]  # vmapped record measurement


class _Fns(NamedTuple):
    """Compiled functions of one (config, data shape): all take stacked (seed-axis) state."""

    graphdef: Any
    init: Callable[..., Any]  # keys -> (params, rest, opt_state)
    run: Callable[..., Any]  # vmapped scan of record_every steps, seeds share the batches
    run_per_seed: Callable[..., Any]  # same, each seed with its own batch indices
    measure: Callable[..., Any]  # vmapped record measurement
    step: Callable[..., Any]  # one unbatched step of one seed, jitted (the sequential path)


# Fields that define the network (and so the measurement); the rest define the training.
_MODEL_FIELDS = ("model", "widths", "activation", "kernel_init", "bias_init", "norm",
                 "norm_placement", "residual", "downsample_at", "bn_convention", "bn_momentum",
                 "bn_running_var", "bn_epsilon")
_TRAIN_FIELDS = ("optimizer", "learning_rate", "momentum", "b1", "b2", "eps", "schedule",
                 "warmup_steps", "decay_every", "decay_rate", "final_lr_fraction", "steps")


def _build_fns(cfg: TrainConfig, in_shape: tuple[int, ...], num_classes: int) -> _Fns:
    """The compiled functions of ``cfg``, cached so that configs differing only in fields that
    do not enter them (label, record_every, probe sizes, ...) share one compilation."""
    model_key = tuple((f, getattr(cfg, f)) for f in _MODEL_FIELDS)
    train_key = tuple((f, getattr(cfg, f)) for f in _TRAIN_FIELDS)
    if cfg.schedule not in ("cosine", "warmup_cosine"):  # only these depend on the run length
        train_key = tuple((f, 1 if f == "steps" else v) for f, v in train_key)
    return _train_fns(model_key, train_key, tuple(in_shape), num_classes)


@functools.lru_cache(maxsize=32)
def _model_fns(model_key: tuple, in_shape: tuple[int, ...], num_classes: int) -> _ModelFns:
    cfg = TrainConfig(**dict(model_key))
    abstract = nnx.eval_shape(lambda: cfg.build(in_shape, num_classes, rngs=nnx.Rngs(0)))
    graphdef, _, _ = nnx.split(abstract, nnx.Param, ...)
    name, _ = parse_spec(cfg.activation)
    act = None if name == _modules.LEARNED_PRELU else _activations.get(cfg.activation)
    bn = cfg.norm == "batch"
    phi_input = "postnorm" if cfg.norm is not None and cfg.norm_placement == "before" else "preact"

    def forward(params, rest, x, train: bool):
        model = nnx.merge(graphdef, params, rest, copy=True)
        out, inter = model.forward_with_intermediates(x, use_running_average=not train)
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return out, inter, new_rest

    def init_one(key):
        model = cfg.build(in_shape, num_classes, rngs=nnx.Rngs(key))
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return params, rest

    def eval_sums(params, rest, xs, ys, ms, train: bool):
        def body(acc, inp):
            x, y, m = inp
            out, _, _ = forward(params, rest, x, train)
            loss = optax.softmax_cross_entropy_with_integer_labels(out, y)
            ok = (jnp.argmax(out, axis=-1) == y) & jnp.all(jnp.isfinite(out), axis=-1)
            return (acc[0] + jnp.sum(jnp.where(m, loss, 0.0)),
                    acc[1] + jnp.sum(jnp.where(m, ok, False).astype(jnp.float32)),
                    acc[2] + jnp.sum(m.astype(jnp.float32))), None

        zero = jnp.zeros((), jnp.float32)
        (loss, correct, n), _ = jax.lax.scan(body, (zero, zero, zero), (xs, ys, ms))
        return loss / n, correct / n

    def measure_one(params, rest, xp, yp, train_eval, test_eval, test_bs):
        def probe_loss(p, r):
            out, inter, _ = forward(p, r, xp, True)
            return _xent(out, yp), inter

        (ploss, inter), grads = jax.value_and_grad(probe_loss, has_aux=True)(params, rest)
        rec: dict[str, jax.Array] = {"train_loss": ploss}
        acts, inputs = inter["act"], inter[phi_input]
        rec["act_mean"] = jnp.stack([jnp.mean(a) for a in acts])
        rec["act_std"] = jnp.stack([jnp.std(a) for a in acts])
        rec["act_percentiles"] = jnp.stack([_percentiles(a, PERCENTILES) for a in acts])
        rec["input_percentiles"] = jnp.stack([_percentiles(z, PERCENTILES) for z in inputs])
        if act is not None:
            rec["saturated"] = jnp.stack([jnp.mean(act.saturated(a).astype(jnp.float32))
                                          for a in acts])
        else:
            rec["saturated"] = jnp.zeros((len(acts),), jnp.float32)
        rec["dead_fraction"] = jnp.stack([
            jnp.mean(jnp.all(a.reshape(-1, a.shape[-1]) == 0, axis=0).astype(jnp.float32))
            for a in acts
        ])
        gmodel = nnx.merge(graphdef, grads, rest, copy=True)
        head = gmodel.readout if cfg.model == "mlp" else gmodel.classifier
        rec["grad_norm"] = jnp.stack([jnp.linalg.norm(layer.kernel[...].reshape(-1))
                                      for layer in gmodel.layers])
        rec["readout_grad_norm"] = jnp.linalg.norm(head.kernel[...].reshape(-1))
        if act is None:
            pmodel = nnx.merge(graphdef, params, rest, copy=True)
            rec["prelu_slope"] = jnp.stack([jnp.mean(p.slope[...]) for p in pmodel.prelus])
        _, rec["train_accuracy"] = eval_sums(params, rest, *train_eval, train=False)
        rec["test_loss"], rec["test_accuracy"] = eval_sums(params, rest, *test_eval, train=False)
        if bn:
            _, rec["test_accuracy_batch_stats"] = eval_sums(params, rest, *test_bs, train=True)
        return rec

    return _ModelFns(
        graphdef=graphdef,
        forward=forward,
        init=_jit("init", jax.vmap(init_one)),
        measure=_jit("measure", jax.vmap(measure_one, in_axes=(0, 0) + (None,) * 5)),
    )


@functools.lru_cache(maxsize=32)
def _train_fns(model_key: tuple, train_key: tuple, in_shape: tuple[int, ...],
               num_classes: int) -> _Fns:
    mf = _model_fns(model_key, in_shape, num_classes)
    tx = TrainConfig(**dict(model_key), **dict(train_key), record_every=1).make_optimizer()
    forward = mf.forward

    def step(params, rest, opt_state, xb, yb):
        """One update on the minibatch ``(xb, yb)``; returns the new state and the loss."""

        def loss_fn(p, r):
            out, _, new_r = forward(p, r, xb, True)
            return _xent(out, yb), new_r

        (loss, new_rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, rest)
        updates, new_opt = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_rest, new_opt, loss

    def checked_step(carry, t, x_train, y_train, rows):
        """Update ``t`` (1-based) on the rows ``rows`` of the training set; ``carry`` is
        ``(params, rest, opt_state, bad)`` with ``bad`` the first non-finite update or -1."""
        params, rest, opt_state, bad = carry
        params, rest, opt_state, loss = step(params, rest, opt_state, x_train[rows],
                                             y_train[rows])
        finite = jnp.isfinite(loss) & _all_finite(params)
        bad = jnp.where((bad < 0) & ~finite, t, bad)
        return (params, rest, opt_state, bad), loss

    def run_one(params, rest, opt_state, bad, x_train, y_train, t, idx):
        """``len(t)`` updates; ``idx`` (k, batch) rows of the training set, ``t`` (k,) 1-based."""

        def body(carry, inp):
            return checked_step(carry, inp[0], x_train, y_train, inp[1])

        carry, losses = jax.lax.scan(body, (params, rest, opt_state, bad), (t, idx))
        return carry, jnp.mean(losses)

    opt_init = _jit("init", jax.vmap(tx.init))

    def init(keys):
        params, rest = mf.init(keys)
        return params, rest, opt_init(params)

    shared = (0, 0, 0, 0, None, None, None, None)
    return _Fns(
        graphdef=mf.graphdef,
        init=init,
        run=_jit("run", jax.vmap(run_one, in_axes=shared)),
        run_per_seed=_jit("run", jax.vmap(run_one, in_axes=shared[:-1] + (0,))),
        measure=mf.measure,
        step=jax.jit(checked_step),
    )


# ----------------------------------------------------------------------------------------------
# Data, batches, checkpoints
# ----------------------------------------------------------------------------------------------


def _batch_seed(key: int, seed: int | None) -> int:
    """Seed of the minibatch stream for :func:`initjax.data.batches`.

    The shared stream (``same_batches=True``) uses ``key`` itself, so it is exactly
    ``data.batches(x, y, batch_size, seed=key)``; seed ``s``'s own stream uses
    ``SeedSequence([key, s])``.
    """
    if seed is None:
        return key
    return int(np.random.SeedSequence([key, seed]).generate_state(1)[0])


def _index_stream(n: int, batch_size: int, seed: int, start: int) -> Iterator[np.ndarray]:
    rows = np.arange(n, dtype=np.int32)
    it = (idx for idx, _ in _data.batches(rows, rows, batch_size, seed=seed))
    return itertools.islice(it, start, None)


def _chunks(x: np.ndarray, y: np.ndarray, size: int, pad: bool):
    """Split into ``(chunks, size, ...)`` arrays and a mask; pad (masked) or drop the remainder."""
    n = x.shape[0]
    size = min(size, n)
    if pad:
        m = -(-n // size)
        extra = m * size - n
        x = np.concatenate([x, np.zeros((extra, *x.shape[1:]), x.dtype)])
        y = np.concatenate([y, np.zeros((extra,), y.dtype)])
        mask = np.arange(m * size) < n
    else:
        m = n // size
        x, y = x[: m * size], y[: m * size]
        mask = np.ones(m * size, bool)
    return (jnp.asarray(x.reshape(m, size, *x.shape[1:])), jnp.asarray(y.reshape(m, size)),
            jnp.asarray(mask.reshape(m, size)))


def _check_data(data: Any, configs: Sequence[TrainConfig]) -> tuple[np.ndarray, ...]:
    if not isinstance(data, _data.Dataset):
        raise TypeError(f"data must be an initjax.data.Dataset, got {type(data).__name__}")
    xtr, ytr, xte, yte = (np.asarray(a) for a in data[:4])
    nc = check_int("data.num_classes", data.num_classes, minimum=2)
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.ndim < 2 or x.shape[0] < 1:
            raise ValueError(f"data.x_{name} must have shape (n, features) or (n, H, W, C) with "
                             f"n >= 1, got {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"data.x_{name} must be floating point, got {x.dtype}")
        if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"data.y_{name} must be integer class labels of shape ({x.shape[0]},), got "
                f"{y.dtype} {y.shape} (regression targets are not supported)"
            )
        if y.min() < 0 or y.max() >= nc:
            raise ValueError(f"data.y_{name} has labels outside [0, {nc}): "
                             f"min {y.min()}, max {y.max()}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"data.x_{name} holds non-finite values")
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(f"x_train examples have shape {xtr.shape[1:]} but x_test {xte.shape[1:]}")
    for i, cfg in enumerate(configs):
        if cfg.batch_size > xtr.shape[0]:
            raise ValueError(f"configs[{i}].batch_size={cfg.batch_size} exceeds the training set "
                             f"size {xtr.shape[0]}")
        if cfg.model == "cnn" and xtr.ndim != 4:
            raise ValueError(f"configs[{i}] is a CNN, which needs NHWC images (n, H, W, C); got "
                             f"x_train of shape {xtr.shape} (load the data with flatten=False)")
    return (xtr.astype(np.float32), ytr.astype(np.int32), xte.astype(np.float32),
            yte.astype(np.int32))


def _fingerprint(arrays: Sequence[np.ndarray]) -> str:
    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _run_dir(out: Path, cfg: TrainConfig, ident: Mapping[str, Any]) -> Path:
    blob = json.dumps({"config": cfg.to_dict(), **ident}, sort_keys=True)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", cfg.label).strip("-")[:40] or "config"
    return out / f"{slug}-{digest}"


class _RunState:
    """Training state and records of one config (stacked over seeds), saveable as one npz."""

    def __init__(self, fns: _Fns, cfg: TrainConfig, keys: jax.Array):
        self.params, self.rest, self.opt_state = fns.init(keys)
        self.step = 0
        self.bad = jnp.full((keys.shape[0],), -1, jnp.int32)
        self.records: dict[str, list[np.ndarray]] = {}

    def tree(self) -> Any:
        return (self.params, self.rest, self.opt_state)

    def save(self, path: Path) -> None:
        leaves = jax.tree.leaves(self.tree())
        arrays = {f"state_{i:04d}": np.asarray(a) for i, a in enumerate(leaves)}
        arrays.update({f"record_{k}": np.stack(v, axis=1) for k, v in self.records.items()})
        write_npz(path, step=np.int64(self.step), bad=np.asarray(self.bad), **arrays)

    def load(self, path: Path) -> None:
        with np.load(path) as z:
            leaves, treedef = jax.tree.flatten(self.tree())
            stored = sorted(k for k in z.files if k.startswith("state_"))
            if len(stored) != len(leaves):
                raise ValueError(f"checkpoint {path} does not match its config's state layout")
            new = []
            for leaf, k in zip(leaves, stored):
                a = z[k]
                if a.shape != leaf.shape or a.dtype != leaf.dtype:
                    raise ValueError(f"checkpoint {path}: {k} is {a.dtype}{a.shape}, "
                                     f"expected {leaf.dtype}{leaf.shape}")
                new.append(jnp.asarray(a))
            self.params, self.rest, self.opt_state = jax.tree.unflatten(treedef, new)
            self.step = int(z["step"])
            self.bad = jnp.asarray(z["bad"])
            self.records = {
                k[len("record_"):]: list(np.moveaxis(z[k], 1, 0))
                for k in z.files if k.startswith("record_")
            }


class _Interrupted(Exception):
    """Raised by the ``_stop_after`` test hook of :func:`compare` (a simulated interruption)."""


# ----------------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------------


def compare(
    configs: TrainConfig | Sequence[TrainConfig],
    data: _data.Dataset,
    *,
    seeds: int = 4,
    key: int = 0,
    out: str | os.PathLike | None = None,
    progress: bool | None = None,
    resume: bool = True,
    sequential: bool = False,
    _stop_after: int | None = None,
) -> CompareResult:
    """Train each config for ``seeds`` seeds on ``data``, recording the fields of :class:`Record`.

    Seeds are a ``vmap`` axis: per config, one jitted function runs ``record_every`` updates of
    every seed as a ``lax.scan`` over minibatch indices. Seed ``i`` of every config starts from the
    network built with ``fold_in(jax.random.key(key), i)`` (common random numbers across configs).
    With ``same_batches`` (the default) all seeds see the minibatch sequence of
    ``data.batches(x_train, y_train, batch_size, seed=key)`` (shuffled per epoch, remainder
    dropped); otherwise seed ``i`` has its own stream. The probe batch and the train-eval subset
    are fixed rows of the training set chosen by ``key``.

    Divergence: a seed whose minibatch loss or updated parameters are non-finite at update ``t``
    gets ``diverged_step = t`` and NaN records from step ``t`` on; the other seeds and configs go
    on and nothing raises.

    Args:
      configs: a :class:`TrainConfig` or a sequence of them (distinct).
      data: a classification :class:`~initjax.data.Dataset` (int labels); MLPs flatten images.
      seeds: number of seeds, >= 1.
      key: non-negative int: model keys, batch order and probe rows.
      out: directory for checkpoints and results, or None (nothing written).
      progress: show a tqdm bar of the updates done with its ETA: None (default) on a terminal
        only, True always, False never.
      resume: with ``out``, continue from the checkpoints there (finished configs are loaded,
        not retrained); False starts every config afresh.
      sequential: run the seeds one after the other through the same (unvmapped) step function,
        for debugging; the numbers agree with the vmapped run to float rounding.
      _stop_after: test hook: raise after this many record intervals have been checkpointed in
        this call, as an interruption would.

    Returns:
      A :class:`CompareResult`.

    Raises:
      TypeError, ValueError: bad arguments (non-configs, duplicate configs, seeds < 1, a
        batch_size above the training-set size, data of the wrong shape or with non-integer
        labels, a CNN on flattened data, ...).
    """
    if isinstance(configs, TrainConfig):
        configs = (configs,)
    if isinstance(configs, (str, bytes)) or not isinstance(configs, Sequence) or not configs:
        raise TypeError(f"configs must be a TrainConfig or a non-empty sequence of them, got "
                        f"{configs!r}")
    for i, c in enumerate(configs):
        if not isinstance(c, TrainConfig):
            raise TypeError(f"configs[{i}] must be a TrainConfig, got {type(c).__name__}")
    if len(set(configs)) != len(configs):
        raise ValueError("configs holds duplicates; give each run a distinct label")
    configs = tuple(configs)
    seeds = check_int("seeds", seeds, minimum=1)
    key = check_int("key", key, minimum=0)
    for name, flag in (("resume", resume), ("sequential", sequential)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    if progress is not None and not isinstance(progress, bool):
        raise TypeError(f"progress must be True, False or None, got {progress!r}")
    if _stop_after is not None:
        _stop_after = check_int("_stop_after", _stop_after, minimum=1)
    xtr, ytr, xte, yte = _check_data(data, configs)
    num_classes = int(data.num_classes)
    n_train = xtr.shape[0]

    out_dir = None
    ident: dict[str, Any] = {}
    if out is not None:
        if not isinstance(out, (str, os.PathLike)):
            raise TypeError(f"out must be a directory path or None, got {out!r}")
        out_dir = Path(out)
        if out_dir.exists() and not out_dir.is_dir():
            raise ValueError(f"out={str(out_dir)!r} exists and is not a directory")
        ident = {"seeds": seeds, "key": key, "format": _FORMAT,
                 "data": {"name": data.name, "sha1": _fingerprint((xtr, ytr, xte, yte))}}

    rng = np.random.default_rng(np.random.SeedSequence([key, 0x9B0BE]))
    order = rng.permutation(n_train)
    show = progress if progress is not None else sys.stderr.isatty()
    model_keys = _modules.ensemble_keys(key, seeds)
    flat = {"mlp": (xtr.reshape(n_train, -1), xte.reshape(xte.shape[0], -1)), "cnn": (xtr, xte)}
    device_x = {}

    run_dirs = [_run_dir(out_dir, c, ident) if out_dir is not None else None for c in configs]
    if out_dir is not None:
        write_json(out_dir / "compare.json", {
            **ident, "runs": [{"label": c.label, "dir": d.name} for c, d in zip(configs, run_dirs)]
        })

    states: list[_RunState] = []
    fns_list: list[_Fns] = []
    for cfg, rdir in zip(configs, run_dirs):
        fns = _build_fns(cfg, xtr.shape[1:], num_classes)
        st = _RunState(fns, cfg, model_keys)
        if rdir is not None and resume and (rdir / "checkpoint.npz").exists():
            stored = json.loads((rdir / "config.json").read_text())
            if stored.get("config") != cfg.to_dict():
                raise ValueError(f"{rdir} holds a different config; remove it or use resume=False")
            st.load(rdir / "checkpoint.npz")
        states.append(st)
        fns_list.append(fns)

    total = sum(c.steps - s.step for c, s in zip(configs, states))
    intervals_done = 0
    trained: set[int] = set()
    bar = _progress_bar(total=total, desc="training", unit="step", disable=not show)
    try:
        for ci, (cfg, st, fns, rdir) in enumerate(zip(configs, states, fns_list, run_dirs)):
            if st.step >= cfg.steps:
                continue
            bar.set_description(cfg.label or f"config {ci}")
            trained.add(ci)
            if rdir is not None:
                write_json(rdir / "config.json", {"config": cfg.to_dict(), **ident})
            if cfg.model not in device_x:
                device_x[cfg.model] = (jnp.asarray(flat[cfg.model][0]), jnp.asarray(ytr))
            x_dev, y_dev = device_x[cfg.model]
            xtr_m, xte_m = flat[cfg.model]
            probe = order[: min(cfg.probe_size, n_train)]
            tr_eval = order[: min(cfg.train_eval_size, n_train)]
            probe_xy = (jnp.asarray(xtr_m[probe]), jnp.asarray(ytr[probe]))
            train_eval = _chunks(xtr_m[tr_eval], ytr[tr_eval], _EVAL_CHUNK, pad=True)
            test_eval = _chunks(xte_m, yte, _EVAL_CHUNK, pad=True)
            test_bs = _chunks(xte_m, yte, cfg.batch_size, pad=False)

            def measure(st=st, fns=fns, probe_xy=probe_xy, train_eval=train_eval,
                        test_eval=test_eval, test_bs=test_bs):
                rec = fns.measure(st.params, st.rest, *probe_xy, train_eval, test_eval, test_bs)
                return {k: np.asarray(v) for k, v in rec.items()}

            if st.step == 0 and not st.records:
                st.records = {k: [v] for k, v in measure().items()}
            if cfg.same_batches:
                streams = [_index_stream(n_train, cfg.batch_size, _batch_seed(key, None), st.step)]
            else:
                streams = [_index_stream(n_train, cfg.batch_size, _batch_seed(key, s), st.step)
                           for s in range(seeds)]
            while st.step < cfg.steps:
                k = min(cfg.record_every - st.step % cfg.record_every, cfg.steps - st.step)
                t = jnp.arange(st.step + 1, st.step + k + 1, dtype=jnp.int32)
                idx = np.stack([np.stack([next(s) for _ in range(k)]) for s in streams])
                carry, loss = _run_interval(fns, st, x_dev, y_dev, t, idx, cfg.same_batches,
                                            sequential)
                st.params, st.rest, st.opt_state, st.bad = carry
                st.step += k
                rec = measure()
                rec["train_loss"] = np.asarray(loss)
                for name, v in rec.items():
                    st.records[name].append(v)
                if rdir is not None:
                    _checkpoint(rdir, cfg, st)
                bar.update(k)
                intervals_done += 1
                if _stop_after is not None and intervals_done >= _stop_after:
                    raise _Interrupted(f"stopped after {intervals_done} intervals (test hook)")
    finally:
        bar.close()

    records, models = [], []
    for ci, (cfg, st, fns, rdir) in enumerate(zip(configs, states, fns_list, run_dirs)):
        rec = _assemble(cfg, st)
        records.append(rec)
        models.append(nnx.merge(fns.graphdef, st.params, st.rest))
        if rdir is not None and (ci in trained or not (rdir / "records.npz").exists()):
            arrays = {k: v for k, v in rec._asdict().items() if v is not None}
            write_npz(rdir / "records.npz", **arrays)
    return CompareResult(
        configs=configs, records=tuple(records), seeds=seeds, key=key,
        probe_index=order[: min(max(c.probe_size for c in configs), n_train)],
        train_eval_index=order[: min(max(c.train_eval_size for c in configs), n_train)],
        final_models=tuple(models), out=out_dir,
    )


def _run_interval(fns: _Fns, st: _RunState, x, y, t, idx, same: bool, sequential: bool):
    if not sequential:
        if same:
            return fns.run(st.params, st.rest, st.opt_state, st.bad, x, y, t, jnp.asarray(idx[0]))
        return fns.run_per_seed(st.params, st.rest, st.opt_state, st.bad, x, y, t,
                                jnp.asarray(idx))
    # One seed at a time through the unbatched step function (the debugging path; wrap the call
    # in jax.disable_jit() to step through it op by op).
    carries, losses = [], []
    for s in range(st.bad.shape[0]):
        carry = jax.tree.map(lambda a, s=s: a[s], (*st.tree(), st.bad))
        ls = []
        for j in range(len(t)):
            carry, loss = fns.step(carry, t[j], x, y, jnp.asarray(idx[0 if same else s][j]))
            ls.append(loss)
        carries.append(carry)
        losses.append(jnp.mean(jnp.stack(ls)))
    return jax.tree.map(lambda *a: jnp.stack(a), *carries), jnp.stack(losses)


def _checkpoint(rdir: Path, cfg: TrainConfig, st: _RunState) -> None:
    st.save(rdir / "checkpoint.npz")  # the one file resume reads: atomic, so always consistent
    bad = np.asarray(st.bad)
    done = st.step >= cfg.steps
    status = "incomplete" if not done else ("diverged" if np.any(bad >= 0) else "done")
    write_json(rdir / "status.json", {
        "status": status, "step": st.step, "steps": cfg.steps,
        "diverged_step": [int(b) for b in bad],
    })


def _assemble(cfg: TrainConfig, st: _RunState) -> Record:
    steps = cfg.record_steps
    bad = np.asarray(st.bad).astype(np.int64)
    sched = cfg.make_schedule()
    fields: dict[str, Any] = {
        "step": steps,
        "learning_rate": np.asarray([float(sched(int(s))) for s in steps], np.float64),
        "diverged_step": bad,
    }
    # Records after divergence are NaN: mask[s, r] is True where seed s had diverged by step r.
    mask = (bad[:, None] >= 0) & (steps[None, :] >= bad[:, None])
    for name in _MEASURED:
        if name not in st.records:
            fields[name] = None
            continue
        a = np.stack(st.records[name], axis=1).astype(np.float64)
        m = mask.reshape(mask.shape + (1,) * (a.ndim - 2))
        fields[name] = np.where(m, np.nan, a)
    return Record(**fields)


def _progress_bar(**kwargs: Any):
    from initjax.propagation import _progress_bar as bar

    return bar(**kwargs)


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------


def _new_ax(ax: Any) -> Any:
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=(5, 3.5)).add_subplot()


def _select(result: CompareResult, configs: Any) -> list[int]:
    if not isinstance(result, CompareResult):
        raise TypeError(f"result must be a CompareResult, got {type(result).__name__}")
    if configs is None:
        return list(range(len(result.configs)))
    if isinstance(configs, (int, str)):
        configs = [configs]
    return [result._index(c) for c in configs]


def _seed_quantiles(values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """(len(qs), record) percentiles over seeds (axis 0) of the finite entries; NaN where none."""
    out = np.full((len(qs), values.shape[1]), np.nan)
    for r in range(values.shape[1]):
        col = values[:, r][np.isfinite(values[:, r])]
        if col.size:
            out[:, r] = np.percentile(col, qs)
    return out


def _mark_nonfinite(ax: Any, x: np.ndarray, values: np.ndarray, med: np.ndarray, color: Any,
                    label: str | None) -> None:
    """Mark records where some seeds are non-finite: ``x`` on the median where it exists, else at
    the bottom of the axes (x in data, y in axes coordinates), and say how many seeds in the
    legend."""
    bad = ~np.isfinite(values).all(axis=0)
    if not bad.any():
        return
    on = bad & np.isfinite(med)
    ax.plot(x[on], med[on], "x", color=color, ms=6)
    off = bad & ~np.isfinite(med)
    if off.any():
        ax.plot(x[off], np.zeros(int(off.sum())), "x", color=color, ms=6,
                transform=ax.get_xaxis_transform(), clip_on=False)
    if label is not None:
        n_bad = int((~np.isfinite(values)).any(axis=1).sum())
        ax.plot([], [], "x", color=color,
                label=f"{label}: non-finite in {n_bad} of {values.shape[0]} seeds")


def plot_curves(
    result: CompareResult,
    field: str = "test_accuracy",
    ax: Any = None,
    *,
    layer: int | None = None,
    configs: Any = None,
) -> Any:
    """Median over seeds of a recorded field against steps, with a 10-90% band, one line per config.

    Records where some seeds are non-finite (diverged) are marked with ``x`` and counted in the
    legend; the median and band are taken over the finite seeds only.

    Args:
      result: from :func:`compare`.
      field: a ``(seed, record)`` field of :class:`Record` (``"test_accuracy"``, ``"train_loss"``,
        ...), or a ``(seed, record, layer)`` one with ``layer``.
      ax: a matplotlib Axes; None makes a new ``matplotlib.figure.Figure``.
      layer: hidden-layer index for per-layer fields.
      configs: indices or labels of the configs to draw (all by default).

    Returns:
      The Axes.
    """
    idx = _select(result, configs)
    axes = RECORD_FIELDS.get(field)
    if axes is None or axes[:2] != ("seed", "record") or len(axes) > 3:
        allowed = [f for f, a in RECORD_FIELDS.items() if a[:2] == ("seed", "record")
                   and len(a) <= 3]
        raise ValueError(f"field must be one of {allowed}, got {field!r}")
    if (len(axes) == 3) != (layer is not None):
        raise ValueError(f"field {field!r} has axes {axes}: "
                         + ("give layer=" if len(axes) == 3 else "layer= does not apply"))
    ax = _new_ax(ax)
    for j, i in enumerate(idx):
        rec = result.records[i]
        values = getattr(rec, field)
        if values is None:
            continue
        if layer is not None:
            n_layers = values.shape[2]
            li = check_int("layer", layer)
            if not -n_layers <= li < n_layers:
                raise ValueError(f"layer {li} out of range for {n_layers} hidden layers")
            values = values[:, :, li]
        lo, med, hi = _seed_quantiles(values, (10.0, 50.0, 90.0))
        color = f"C{j}"
        ax.plot(rec.step, med, color=color, label=result.labels[i])
        ax.fill_between(rec.step, lo, hi, color=color, alpha=0.2, linewidth=0)
        _mark_nonfinite(ax, rec.step, values, med, color, result.labels[i])
    ax.set_xlabel("step")
    ax.set_ylabel(field if layer is None else f"{field} (layer {layer})")
    ax.legend(fontsize="small")
    return ax


def plot_percentiles(
    result: CompareResult,
    layer: int,
    ax: Any = None,
    *,
    field: str = "input_percentiles",
    configs: Any = None,
) -> Any:
    """The 15th, 50th and 85th percentiles of one layer over training (Ioffe & Szegedy Fig. 1b,c).

    Each curve is the median over seeds of that percentile (dashed 15/85, solid 50), one colour per
    config. Non-finite records are skipped and marked with ``x``.

    Args:
      result: from :func:`compare`.
      layer: hidden-layer index (negative counts from the last; ``-1`` is Ioffe & Szegedy's).
      ax: a matplotlib Axes; None makes a new ``matplotlib.figure.Figure``.
      field: ``"input_percentiles"`` (the nonlinearity's input, as in the paper) or
        ``"act_percentiles"`` (its output).
      configs: indices or labels of the configs to draw (all by default).

    Returns:
      The Axes.
    """
    check_choice("field", field, ("input_percentiles", "act_percentiles"))
    idx = _select(result, configs)
    ax = _new_ax(ax)
    layer = check_int("layer", layer)
    for j, i in enumerate(idx):
        rec = result.records[i]
        values = getattr(rec, field)
        n_layers = values.shape[2]
        if not -n_layers <= layer < n_layers:
            raise ValueError(f"layer {layer} out of range for {n_layers} hidden layers")
        color = f"C{j}"
        for p, q in enumerate(PERCENTILES):
            v = values[:, :, layer, p]
            (med,) = _seed_quantiles(v, (50.0,))
            ax.plot(rec.step, med, "-" if q == 50.0 else "--", color=color,
                    label=f"{result.labels[i]} (15/50/85th)" if p == 0 else None)
            _mark_nonfinite(ax, rec.step, v, med, color, result.labels[i] if p == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{'input' if field == 'input_percentiles' else 'output'} of phi, layer "
                  f"{layer} (15/50/85th pct)")
    ax.legend(fontsize="small")
    return ax
