"""Learning-rate transfer: every (learning rate, seed) of a network trained in one compiled program.

"How should my learning rate change when I make the model wider or deeper?" Under muP (Yang et
al. 2022, Tensor Programs V) the optimal learning rate of a network stays put as its width grows,
so it can be tuned on a small model and *transferred* to a large one; under the standard
parametrization (SP) it drifts (with Adam, roughly like ``1 / width``). :func:`lr_sweep` measures
the training loss against the learning rate for one network, :func:`transfer` does it for a range
of widths (or depths), and :func:`plot_transfer` draws TP5 Figure 1 (loss vs log2 learning rate,
one line per width, one panel per parametrization).

How a sweep runs. The network is built from its description with :func:`initjax.modules.build`
(Flax NNX, used functionally through ``nnx.split`` / ``nnx.merge``); its last block is the readout
(no extra readout is added). One jitted program

- builds the ``seeds`` networks (seed ``s`` from ``fold_in(as_key(key), s)``, the same initial
  network for every learning rate: common random numbers),
- trains member ``(learning rate i, seed s)`` with ``optax.adam(lr_i)`` (or ``optax.sgd``) chained
  with :func:`initjax.training.core.scale_by_multipliers` of the module's per-layer
  :meth:`~initjax.modules.NetworkModule.lr_multipliers` (the parametrization's rule), each update a
  :func:`initjax.training.core.make_step` of the mean softmax cross-entropy, the updates a
  ``lax.scan`` (:func:`~initjax.training.core.run_steps`) over minibatch row indices,
- ``vmap``-s over the seeds and, on accelerators, over the learning rates too
  (:func:`~initjax.training.core.vmap_arms_seeds`); on CPU the learning rates run one after the
  other inside the same program (:func:`~initjax.training.core.map_arms_vmap_seeds`), which
  XLA:CPU runs faster (``lr_loop``, see :func:`sweep_program`).

The learning rates are *data* (an array with a learning-rate axis), so another grid of the same
size reuses the compiled program. Every member sees the same minibatch sequence (epochs of a
permutation seeded by ``key``, remainder dropped: :func:`initjax.data.batches`).

Divergence: a member whose loss or parameters turn non-finite at update ``t`` is frozen there (its
state no longer changes), gets ``diverged_step = t``, a loss curve that is NaN from the divergence
on and a final loss of ``+inf``; the other members are unaffected and nothing raises. A learning
rate at which any seed diverged is not a candidate for the optimum.

    >>> from initjax import data, transfer
    >>> from initjax.network import Dense, Network
    >>> net = Network(64, (Dense(32, "he_normal", "relu"), Dense(10, "lecun_normal", "identity")))
    >>> sweep = transfer.lr_sweep(net, data.digits(), learning_rates=[1e-3, 1e-2], seeds=2,
    ...                           steps=20, batch_size=32)
    >>> sweep.final_loss.shape, sweep.curves.shape
    ((2, 2), (2, 2, 20))

References:
  Yang, Hu, Babuschkin, Sidor, Liu, Farhi, Ryder, Pachocki, Chen & Gao 2022, "Tensor Programs V:
  Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer", Figure 1,
  https://arxiv.org/abs/2203.03466.
  Yang, Yu, Zhu & Hayou 2023, "Tensor Programs VI: Feature Learning in Infinite-Depth Neural
  Networks", https://arxiv.org/abs/2310.02244 (depth-muP).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from initjax import data as _data
from initjax import modules as _modules
from initjax._checks import check_choice, check_int
from initjax._io import load_npz, progress_bar, write_npz
from initjax._precision import check_precision, matmul_precision
from initjax.training.core import (
    TrainState,
    init_state,
    make_step,
    map_arms_vmap_seeds,
    run_steps,
    scale_by_multipliers,
    vmap_arms_seeds,
)

__all__ = ["OPTIMIZERS", "FITS", "LR_LOOPS", "LRSweep", "lr_sweep", "sweep_program", "transfer",
           "plot_sweeps", "plot_transfer"]

OPTIMIZERS = ("adam", "sgd")
FITS = ("parabola", "argmin")
# How the learning-rate axis runs inside the one program: vmapped beside the seeds, or one learning
# rate after the other (lax.map) with the seeds vmapped. "auto": "map" on CPU, "vmap" elsewhere.
LR_LOOPS = ("auto", "vmap", "map")
_FORMAT = 1  # LRSweep file format version


# ----------------------------------------------------------------------------------------------
# The result
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class LRSweep:
    """The training losses of one network over a learning-rate x seed grid.

    Attributes:
      learning_rates: ``(lr,)`` the learning rates, as given (float64).
      final_loss: ``(lr, seed)`` the mean training minibatch loss over the last ``loss_window``
        updates; ``+inf`` for a diverged member.
      curves: ``(lr, seed, step)`` the training minibatch loss of every update (``curves[..., t]``
        is the loss of the parameters before update ``t + 1``); NaN from a member's divergence on.
      diverged_step: ``(lr, seed)`` the first update whose loss or parameters were non-finite
        (1-based), -1 if none.
      steps, batch_size, loss_window: the run's length, minibatch size and averaging window.
      optimizer: ``"adam"`` or ``"sgd"``.
      key: the int key of the model seeds and the minibatch order.
      label: a name for plots (e.g. ``"muP, width 256"``).
      seconds: wall time of the sweep (compile included).
    """

    learning_rates: np.ndarray
    final_loss: np.ndarray
    curves: np.ndarray
    diverged_step: np.ndarray
    steps: int
    batch_size: int
    loss_window: int
    optimizer: str
    key: int = 0
    label: str = ""
    seconds: float = float("nan")

    @property
    def log2_lr(self) -> np.ndarray:
        """``(lr,)`` log2 of the learning rates."""
        return np.log2(self.learning_rates)

    @property
    def diverged(self) -> np.ndarray:
        """``(lr, seed)`` bool: the member diverged."""
        return self.diverged_step >= 0

    @property
    def seeds(self) -> int:
        return int(self.final_loss.shape[1])

    def seed_mean_loss(self) -> np.ndarray:
        """``(lr,)`` the final loss averaged over seeds; ``+inf`` where any seed diverged (such a
        learning rate is unstable: it is never taken as the optimum)."""
        loss = np.asarray(self.final_loss, np.float64)
        bad = self.diverged.any(axis=1) | ~np.isfinite(loss).all(axis=1)
        with np.errstate(invalid="ignore"):
            mean = loss.mean(axis=1)
        return np.where(bad, np.inf, mean)

    def seed_se(self) -> np.ndarray:
        """``(lr,)`` the standard error of :meth:`seed_mean_loss` over seeds (NaN with one seed
        or where a seed diverged)."""
        loss = np.where(np.isfinite(self.final_loss), self.final_loss, np.nan)
        if self.seeds < 2:
            return np.full(loss.shape[0], np.nan)
        with np.errstate(invalid="ignore"):
            return np.std(loss, axis=1, ddof=1) / math.sqrt(self.seeds)

    def best_index(self) -> int:
        """Index of the learning rate with the lowest :meth:`seed_mean_loss` (-1 if every
        learning rate diverged)."""
        mean = self.seed_mean_loss()
        return int(np.argmin(mean)) if np.isfinite(mean).any() else -1

    def optimum_at_edge(self) -> bool:
        """The best learning rate is the smallest or largest of the grid (the true optimum may
        lie outside it); False if every learning rate diverged."""
        i = self.best_index()
        return i >= 0 and (i == 0 or i == len(self.learning_rates) - 1)

    def optimal_log2_lr(self, fit: str = "parabola") -> float:
        """log2 of the learning rate of lowest seed-mean final loss.

        ``fit="argmin"``: the grid point ``x_i`` (``x = log2 lr``) with the lowest
        :meth:`seed_mean_loss`. ``fit="parabola"`` (default) refines it: the parabola
        ``L(x) = a x^2 + b x + c`` through the minimum and its two neighbours (any spacing) has
        its vertex at ``x* = -b / (2a)``; ``x*`` is returned when ``a > 0`` and
        ``x_{i-1} <= x* <= x_{i+1}``. At the grid's edge, next to a diverged learning rate, or
        for a flat or concave triple, the grid point ``x_i`` is returned. NaN if every learning
        rate diverged.

        Raises:
          ValueError: an unknown ``fit``.
        """
        check_choice("fit", fit, FITS)
        i = self.best_index()
        if i < 0:
            return float("nan")
        x = self.log2_lr.astype(np.float64)
        if fit == "argmin":
            return float(x[i])
        return _parabola_vertex(x, self.seed_mean_loss(), i)

    # -- files ----------------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        return {"format": _FORMAT, "steps": self.steps, "batch_size": self.batch_size,
                "loss_window": self.loss_window, "optimizer": self.optimizer, "key": self.key,
                "label": self.label, "seconds": self.seconds}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the sweep to ``path`` (a ``.npz``, written atomically); :meth:`load` reads it."""
        return write_npz(Path(path), learning_rates=self.learning_rates,
                         final_loss=self.final_loss, curves=self.curves,
                         diverged_step=self.diverged_step,
                         meta=np.asarray(json.dumps(self.meta())))

    @classmethod
    def load(cls, path: str | os.PathLike) -> LRSweep:
        """Read a sweep written by :meth:`save`.

        Raises:
          ValueError: an unreadable or incomplete file, or another format (named).
        """
        arrays = load_npz(path, ("learning_rates", "final_loss", "curves", "diverged_step",
                                 "meta"), what="learning-rate sweep")
        meta = json.loads(str(arrays.pop("meta")))
        if meta.pop("format", None) != _FORMAT:
            raise ValueError(f"{path}: not a learning-rate sweep of format {_FORMAT}")
        return cls(**arrays, **meta)


def _parabola_vertex(x: np.ndarray, y: np.ndarray, i: int) -> float:
    """The vertex of the parabola through ``(x[j], y[j])``, ``j = i-1, i, i+1`` (see
    :meth:`LRSweep.optimal_log2_lr`), or ``x[i]`` when it does not apply."""
    if i == 0 or i == len(x) - 1 or not np.all(np.isfinite(y[i - 1:i + 2])):
        return float(x[i])
    (x0, x1, x2), (y0, y1, y2) = x[i - 1:i + 2], y[i - 1:i + 2]
    # divided differences: L(x) = y0 + d01 (x - x0) + a (x - x0)(x - x1)
    d01 = (y1 - y0) / (x1 - x0)
    d12 = (y2 - y1) / (x2 - x1)
    a = (d12 - d01) / (x2 - x0)
    if not a > 0:
        return float(x[i])
    vertex = (x0 + x1) / 2 - d01 / (2 * a)
    return float(vertex) if x0 <= vertex <= x2 else float(x[i])


# ----------------------------------------------------------------------------------------------
# The compiled program
# ----------------------------------------------------------------------------------------------


def _frozen(step: Callable[[TrainState, Any], tuple[TrainState, jax.Array]]):
    """``step`` that leaves a diverged member's parameters, optimizer and model state as they were
    before its divergence (the flag and the step counter still advance)."""

    def frozen_step(state: TrainState, batch: Any) -> tuple[TrainState, jax.Array]:
        new, loss = step(state, batch)
        ok = new.diverged_step < 0
        keep = jax.tree.map(lambda a, b: jnp.where(ok, a, b),
                            (new.params, new.opt_state, new.model_state),
                            (state.params, state.opt_state, state.model_state))
        return TrainState(*keep, new.step, new.diverged_step), loss

    return frozen_step


def _optimizer(kind: str, learning_rate: jax.Array) -> optax.GradientTransformation:
    if kind == "adam":
        return optax.adam(learning_rate)
    return optax.sgd(learning_rate)


def _resolve_lr_loop(lr_loop: str) -> str:
    check_choice("lr_loop", lr_loop, LR_LOOPS)
    if lr_loop == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return lr_loop


def sweep_program(network: Any, optimizer: str = "adam", lr_loop: str = "auto"
                  ) -> Callable[..., Any]:
    """The jitted program of :func:`lr_sweep` for ``network`` and ``optimizer`` (cached: one per
    description and options, so its ``_cache_size()`` counts the compilations of every sweep of
    it).

    ``program(keys (seed,), learning_rates (lr,), x (n, in), y (n,), idx (step, batch)) ->
    (losses (lr, seed, step), diverged_step (lr, seed))``: builds ``modules.build(network,
    rngs=nnx.Rngs(keys[s]))`` per seed, trains every (learning rate, seed) member on the rows
    ``idx[t]`` of ``(x, y)`` at update ``t + 1``. The seeds are ``vmap``-ped; the learning rates
    too with ``lr_loop="vmap"``, or run one after the other inside the program (``lax.map``)
    with ``"map"``; ``"auto"`` takes ``"map"`` on CPU and ``"vmap"`` on accelerators. (On
    XLA:CPU a matmul batched over 64 members ran about 2x slower per member than the unbatched
    one, and a 16 x 4 grid of a width-256/512 MLP took 1.5-2.7x longer vmapped than with the
    learning rates mapped; see ``benchmarks/lr_grid.py``.) Call it inside
    :func:`initjax._precision.matmul_precision`, as :func:`lr_sweep` does.

    Raises:
      TypeError: ``network`` is not an :class:`initjax.network.Network`.
      ValueError: an unknown optimizer or lr_loop.
    """
    from initjax.network import Network

    if not isinstance(network, Network):
        raise TypeError(f"network must be an initjax Network, got {type(network).__name__}")
    check_choice("optimizer", optimizer, OPTIMIZERS)
    return _sweep_program(network, optimizer, _resolve_lr_loop(lr_loop))


@functools.lru_cache(maxsize=32)
def _sweep_program(network: Any, optimizer: str, lr_loop: str) -> Callable[..., Any]:
    abstract = nnx.eval_shape(lambda: _modules.build(network, rngs=nnx.Rngs(0)))
    graphdef = nnx.split(abstract, nnx.Param, ...)[0]
    multipliers = abstract.lr_multipliers()
    uniform = all(m == 1.0 for m in jax.tree.leaves(multipliers))

    def build(key):
        model = _modules.build(network, rngs=nnx.Rngs(key))
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return params, rest

    def member(params, rest, lr, x, y, idx):
        tx = _optimizer(optimizer, lr)
        if not uniform:
            tx = optax.chain(tx, scale_by_multipliers(multipliers))

        def loss_fn(p, r, rows):
            model = nnx.merge(graphdef, p, r, copy=True)
            logits = model(x[rows], use_running_average=False)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y[rows]).mean()
            return loss, nnx.split(model, nnx.Param, ...)[2]

        state = init_state(params, tx, rest)
        state, losses = run_steps(_frozen(make_step(loss_fn, tx)), state, idx)
        return losses, state.diverged_step

    over = vmap_arms_seeds if lr_loop == "vmap" else map_arms_vmap_seeds
    grid = over(member, arm_axes=(None, None, 0, None, None, None),
                seed_axes=(0, 0, None, None, None, None))

    def program(keys, learning_rates, x, y, idx):
        params, rest = jax.vmap(build)(keys)
        return grid(params, rest, learning_rates, x, y, idx)

    return jax.jit(program)


# ----------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------


def _check_learning_rates(learning_rates: Any) -> np.ndarray:
    if isinstance(learning_rates, (str, bytes)):
        raise TypeError(f"learning_rates must be a sequence of numbers > 0, got {learning_rates!r}")
    try:
        lrs = np.asarray(learning_rates, np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"learning_rates must be a sequence of numbers > 0, got "
                        f"{learning_rates!r}") from None
    if lrs.ndim != 1 or lrs.size == 0:
        raise ValueError(f"learning_rates must be a non-empty 1-d sequence, got shape {lrs.shape}")
    bad = ~(np.isfinite(lrs) & (lrs > 0))
    if bad.any():
        raise ValueError(f"learning_rates must be finite and > 0, got {lrs[bad].tolist()} "
                         f"at positions {np.flatnonzero(bad).tolist()}")
    return lrs


def _check_data(network: Any, data: Any) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(data, _data.Dataset):
        raise TypeError(f"data must be an initjax.data.Dataset, got {type(data).__name__}")
    x = np.asarray(data.x_train, np.float32)
    x = x.reshape(x.shape[0], -1)
    y = np.asarray(data.y_train)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"data.y_train must hold integer class labels, got dtype {y.dtype}")
    if x.shape[1] != network.in_width:
        raise ValueError(f"the network takes {network.in_width} inputs but data "
                         f"{data.name!r} has {x.shape[1]} features per example")
    out = network.widths[-1]
    if out != data.num_classes:
        raise ValueError(f"the network's last block has {out} outputs but data {data.name!r} has "
                         f"{data.num_classes} classes; end the description with a readout "
                         f"Dense({data.num_classes}, activation='identity')")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"data {data.name!r} has non-finite inputs")
    return x, y.astype(np.int32)


def _batch_rows(n: int, batch_size: int, steps: int, key: int) -> np.ndarray:
    """``(steps, batch_size)`` row indices: :func:`initjax.data.batches` of ``range(n)`` with
    seed ``key`` (epochs of a permutation, remainder dropped)."""
    rows = np.arange(n, dtype=np.int32)
    it = _data.batches(rows, rows, batch_size, seed=key)
    return np.stack([next(it)[0] for _ in range(steps)])


def lr_sweep(
    network: Any,
    data: _data.Dataset,
    *,
    learning_rates: Sequence[float] | np.ndarray,
    seeds: int = 4,
    optimizer: str = "adam",
    steps: int = 500,
    batch_size: int = 32,
    key: int = 0,
    loss_window: int | None = None,
    precision: str = "highest",
    lr_loop: str = "auto",
    label: str = "",
) -> LRSweep:
    """Train ``network`` at every learning rate for ``seeds`` seeds, all in one compiled program.

    Member ``(i, s)`` is seed ``s``'s network (``modules.build(network, rngs=nnx.Rngs(k_s))``,
    ``k_s = fold_in(as_key(key), s)``; its last block is the readout) trained for ``steps``
    updates of ``optimizer`` at learning rate ``learning_rates[i]`` (times each parameter's
    ``lr_multiplier`` from the description) on the mean softmax cross-entropy of minibatches of
    ``batch_size`` training examples, the same minibatch sequence for every member. Its final
    loss is the training objective averaged over the last ``loss_window`` updates::

        final_loss[i, s] = mean_{t > steps - loss_window} L(theta_{t-1}; B_t)

    See the module docstring for the program and the divergence rule.

    Args:
      network: an :class:`initjax.network.Network` whose output width is ``data.num_classes``
        (e.g. :func:`initjax.parametrization.mlp`).
      data: a classification :class:`~initjax.data.Dataset` (images are flattened).
      learning_rates: the grid, numbers > 0 (data of the program: any grid of the same size
        reuses the compilation).
      seeds: seeds per learning rate, >= 1.
      optimizer: ``"adam"`` (``optax.adam``, its default constants) or ``"sgd"``.
      steps: updates per member, >= 1.
      batch_size: examples per minibatch, 1 .. number of training examples.
      key: non-negative int: the model seeds and the minibatch order.
      loss_window: updates averaged into the final loss (default ``max(1, steps // 10)``),
        1 .. steps.
      precision: matmul precision of the program (:mod:`initjax._precision`).
      lr_loop: ``"vmap"`` the learning rates beside the seeds, ``"map"`` them one after the
        other inside the program, or ``"auto"`` (``"map"`` on CPU, where it is faster, else
        ``"vmap"``); see :func:`sweep_program`. The numbers agree to float rounding.
      label: a name for plots.

    Returns:
      An :class:`LRSweep`.

    Raises:
      TypeError, ValueError: a bad argument (named, with what is allowed).
    """
    from initjax.network import Network

    if not isinstance(network, Network):
        raise TypeError(f"network must be an initjax Network, got {type(network).__name__}")
    lrs = _check_learning_rates(learning_rates)
    seeds = check_int("seeds", seeds, minimum=1)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    steps = check_int("steps", steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    key = check_int("key", key, minimum=0)
    loss_window = max(1, steps // 10) if loss_window is None else check_int(
        "loss_window", loss_window, minimum=1)
    if loss_window > steps:
        raise ValueError(f"loss_window must be <= steps={steps}, got {loss_window}")
    precision = check_precision(precision)
    check_choice("lr_loop", lr_loop, LR_LOOPS)
    if not isinstance(label, str):
        raise TypeError(f"label must be a string, got {label!r}")
    x, y = _check_data(network, data)
    if batch_size > x.shape[0]:
        raise ValueError(f"batch_size must be <= the {x.shape[0]} training examples, "
                         f"got {batch_size}")
    t0 = time.perf_counter()
    idx = _batch_rows(x.shape[0], batch_size, steps, key)
    program = sweep_program(network, optimizer, lr_loop)
    keys = _modules.ensemble_keys(key, seeds)
    with matmul_precision(precision):
        losses, bad = program(keys, jnp.asarray(lrs, jnp.float32), jnp.asarray(x),
                              jnp.asarray(y), jnp.asarray(idx))
    losses = np.asarray(losses, np.float64)
    bad = np.asarray(bad, np.int64)
    t = np.arange(steps)
    after = (bad[..., None] >= 0) & (t >= bad[..., None])  # curves[t]: before update t + 1
    curves = np.where(after | ~np.isfinite(losses), np.nan, losses)
    window = curves[..., steps - loss_window:]
    with np.errstate(invalid="ignore"):
        final = window.mean(axis=-1)
    final = np.where((bad >= 0) | ~np.isfinite(final), np.inf, final)
    return LRSweep(learning_rates=lrs, final_loss=final, curves=curves, diverged_step=bad,
                   steps=steps, batch_size=batch_size, loss_window=loss_window,
                   optimizer=optimizer, key=key, label=label,
                   seconds=time.perf_counter() - t0)


def transfer(
    sizes: Iterable[int],
    make_network: Callable[[int], Any],
    data: _data.Dataset,
    *,
    learning_rates: Sequence[float] | np.ndarray,
    progress: bool | None = None,
    label: str = "",
    **sweep_kwargs: Any,
) -> dict[int, LRSweep]:
    """:func:`lr_sweep` of ``make_network(size)`` for every size (widths or depths).

    Each size is one compiled program (a new width is a new shape); within a size every
    (learning rate, seed) member runs in that one program. ``sweep_kwargs`` go to
    :func:`lr_sweep` (``seeds``, ``optimizer``, ``steps``, ``batch_size``, ``key``,
    ``loss_window``, ``precision``).

    Returns:
      ``{size: LRSweep}`` in the order given; each sweep's label is ``f"{label} {size}"``.

    Raises:
      TypeError, ValueError: bad sizes (ints >= 1, distinct, at least one), a ``make_network``
        that is not callable, or any :func:`lr_sweep` error.

    >>> from initjax import data
    >>> from initjax.network import Dense, Network
    >>> def mlp(width):
    ...     return Network(64, (Dense(width, "he_normal", "relu"), Dense(10, "zeros", "identity")))
    >>> sweeps = transfer([16, 32], mlp, data.digits(), learning_rates=[1e-2, 1e-1], seeds=1,
    ...                   steps=10, batch_size=16, progress=False)
    >>> sorted(sweeps), sweeps[32].final_loss.shape
    ([16, 32], (2, 1))
    """
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
        raise TypeError(f"sizes must be a sequence of ints >= 1, got {sizes!r}")
    sizes = [check_int("size", s, minimum=1) for s in sizes]
    if not sizes or len(set(sizes)) != len(sizes):
        raise ValueError(f"sizes must be distinct ints >= 1 (at least one), got {sizes}")
    if not callable(make_network):
        raise TypeError(f"make_network must be callable (size -> Network), got {make_network!r}")
    lrs = _check_learning_rates(learning_rates)
    show = progress if progress is not None else sys.stderr.isatty()
    out: dict[int, LRSweep] = {}
    bar = progress_bar(total=len(sizes), desc=label or "transfer", unit="size", disable=not show)
    try:
        for size in sizes:
            out[size] = lr_sweep(make_network(size), data, learning_rates=lrs,
                                 label=f"{label} {size}".strip(), **sweep_kwargs)
            bar.update(1)
    finally:
        bar.close()
    return out


# ----------------------------------------------------------------------------------------------
# Figures (matplotlib loaded on first use)
# ----------------------------------------------------------------------------------------------


def plot_sweeps(sweeps: Mapping[int, LRSweep], ax: Any = None, *, title: str = "",
                size_name: str = "width", logy: bool = True,
                ylim: tuple[float, float] | None = None) -> Any:
    """One panel of TP5 Figure 1: seed-mean final training loss against log2 learning rate, one
    line per size (dark to light with the size), each grid optimum marked with a dot and each
    parabola-refined optimum (:meth:`LRSweep.optimal_log2_lr`) with a dotted vertical line;
    diverged learning rates are not drawn but marked with a red ``x`` along the top of the
    panel. ``logy``: a log loss axis (training losses near 0 stay legible). Returns the axes.
    """
    import matplotlib as mpl

    from initjax.plotting import label_axes, new_figure

    if ax is None:
        ax = new_figure(5.0, 3.5).add_subplot()
    cmap = mpl.colormaps["viridis"]
    n = max(len(sweeps) - 1, 1)
    any_bad = False
    for j, (size, sw) in enumerate(sweeps.items()):
        color = cmap(0.9 * j / n)
        x, mean = sw.log2_lr, sw.seed_mean_loss()
        ok = np.isfinite(mean) & (mean > 0 if logy else True)
        ax.plot(x[ok], mean[ok], "-", color=color, lw=1.4, label=f"{size_name} {size}")
        i = sw.best_index()
        if i >= 0:
            ax.plot([x[i]], [mean[i]], "o", color=color, ms=5)
            ax.axvline(sw.optimal_log2_lr(), color=color, lw=0.7, ls=":")
        if (~ok).any():
            any_bad = True
            ax.plot(x[~ok], np.ones((~ok).sum()), "x", color="red", ms=5,
                    transform=ax.get_xaxis_transform(), clip_on=False)
    if logy:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    note = " (red x: diverged)" if any_bad else ""
    return label_axes(ax, "log2 learning rate", "training loss", f"{title}{note}")


def plot_transfer(panels: Mapping[str, Mapping[int, LRSweep]], axes: Any = None, *,
                  size_name: str = "width", logy: bool = True, top: float | None = None) -> Any:
    """TP5 Figure 1: one :func:`plot_sweeps` panel per entry of ``panels`` (e.g. ``{"SP": ...,
    "muP": ...}``), side by side with a shared loss axis (from just below the lowest loss to
    ``top``, by default 10x the median finite loss: blown-up learning rates are cut off) and a
    dashed line at the best loss of the first panel. Returns the Figure (or the given axes'
    figure).

    Raises:
      ValueError: ``axes`` of another length than ``panels``.
    """
    from initjax.plotting import new_figure

    if axes is None:
        fig = new_figure(5.0 * len(panels), 3.6)
        axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    elif len(axes) != len(panels):
        raise ValueError(f"give one axes per panel: {len(panels)} panels, {len(axes)} axes")
    finite = np.array([v for sweeps in panels.values() for sw in sweeps.values()
                       for v in sw.seed_mean_loss() if np.isfinite(v) and (v > 0 or not logy)])
    ylim = None
    if finite.size:
        lo, hi = finite.min(), finite.max()
        hi = min(hi, 10 * float(np.median(finite))) if top is None else top
        ylim = (lo / 1.5, hi) if logy else (lo - 0.05 * (hi - lo), hi)
    best_first = None
    for j, (name, sweeps) in enumerate(panels.items()):
        plot_sweeps(sweeps, axes[j], title=name, size_name=size_name, logy=logy, ylim=ylim)
        means = [sw.seed_mean_loss().min() for sw in sweeps.values()]
        if j == 0 and means and np.isfinite(min(means)):
            best_first = min(means)
    if best_first is not None:
        for ax in axes:
            ax.axhline(best_first, color="gray", ls="--", lw=0.8)
    return axes[0].figure
