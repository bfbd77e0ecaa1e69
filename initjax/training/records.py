"""What :func:`initjax.training.compare` returns: a :class:`Record` per config and a
:class:`CompareResult` around them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from initjax._checks import check_int
from initjax.training.config import TrainConfig

__all__ = ["Record", "RECORD_FIELDS", "MEASURED_FIELDS", "PERCENTILES", "CompareResult"]

# The percentiles of Ioffe & Szegedy 2015, Figure 1(b, c).
PERCENTILES = (15.0, 50.0, 85.0)

class Record(NamedTuple):
    """What :func:`compare` measured for one config. Axes as commented; ``layer`` = hidden layer.

    For a token network (``Network(tokens=T)`` of attention blocks) ``layer`` is the block and
    the per-layer fields describe the stream ``X`` (``(sequence, T, D)``) on the probe sequences:
    ``act_mean`` / ``act_std`` / ``act_percentiles`` of the stream after the block,
    ``input_percentiles`` of the stream entering it (the stem's ``x W_e + positions`` for block
    0), ``saturated`` 0, ``dead_fraction`` the fraction of the ``D`` channels exactly 0 on every
    probe token, ``grad_norm`` ``sqrt(sum_W ||dL/dW||_F^2)`` over the block's kernels (W_Q, W_K,
    W_V, W_O and the MLP's W_1, W_2), and ``token_cosine`` / ``attn_entropy`` are set.

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
    token_cosine: np.ndarray | None  # (seed, record, layer) token networks: the mean pairwise
    #   cosine <x_t, x_t'> / (|x_t| |x_t'|) over pairs t != t' of the tokens of a probe sequence
    #   after the block, averaged over the probe sequences; None for other models
    attn_entropy: np.ndarray | None  # (seed, record, layer) token networks: the block's mean
    #   attention-row entropy -sum_j P_ij log P_ij (nats; log T for uniform attention), averaged
    #   over probe sequences, heads and queries; None for other models
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
    "token_cosine": ("seed", "record", "layer"),
    "attn_entropy": ("seed", "record", "layer"),
    "diverged_step": ("seed",),
}
# Fields measured at each record (the engine's output, all with a leading seed axis).
MEASURED_FIELDS = tuple(f for f, ax in RECORD_FIELDS.items() if ax[:2] == ("seed", "record"))


@dataclasses.dataclass(frozen=True, eq=False)
class CompareResult:
    """The outcome of :func:`compare`.

    Attributes:
      configs: the configs, in the order given.
      records: one :class:`Record` per config.
      seeds: number of seeds; seed ``i`` was built from ``fold_in(as_key(key), i)`` (an int key
        is a philox2x32 key, :func:`initjax.modules.ensemble_keys`).
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
    final_models: tuple[Any, ...]
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
        return self.records[self.index(which)]

    def index(self, which: int | str) -> int:
        """The position of config ``which`` (an index, negative allowed, or a label)."""
        if isinstance(which, str):
            if which not in self.labels:
                raise KeyError(f"no config labelled {which!r}; labels are {list(self.labels)}")
            return self.labels.index(which)
        i = check_int("config index", which)
        if not -len(self.records) <= i < len(self.records):
            raise IndexError(f"config index {i} out of range for {len(self.records)} configs")
        return i % len(self.records)

