"""Deep plain MLPs as arms of one program, on the trainer's core (Glorot, He, Schoenholz).

:class:`Ensemble` trains arms (configurations that differ in activation function, initializer,
learning rate and depth) x seeds plain MLPs in lockstep: the hidden layers are one ``lax.scan``
(compile time flat in depth, up to 60 layers here), and training is :mod:`initjax.training.core`'s
step (an ``optax`` SGD/momentum transformation, divergence tracking) scanned over minibatches and
``vmap``-ped over arms and seeds (:func:`~initjax.training.core.vmap_arms_seeds`). What differs
between arms is data (the learning rate, the activation's index, the depth), so a grid costs one
compilation per set of activations. Weights are drawn with :mod:`initjax.initializers` and
activations come from :mod:`initjax.activations`, so a spec means the same thing as everywhere else
in initjax; layer statistics come from :mod:`initjax.engine.stats`.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from initjax import activations, data, initializers
from initjax._precision import check_precision, matmul_precision
from initjax.engine import stats
from initjax.modules import ensemble_keys
from initjax.training.core import TrainState, init_state, make_step, run_steps, vmap_arms_seeds

__all__ = [
    "Arm",
    "Ensemble",
    "MLPParams",
    "Records",
    "epoch_batches",
    "layer_stats",
    "select_arms",
    "shapeset_batches",
    "train_and_record",
]




class MLPParams(NamedTuple):
    """Parameters of one plain MLP; stacked ensembles add leading ``(arm, seed)`` axes.

    Layout as Flax's Dense, kernels ``(in, out)``. The ``depth`` hidden layers are the input layer
    and ``depth - 1`` square ones, kept as one stacked array so the forward pass is a scan.
    """

    w_in: jax.Array  # shape=(in_dim, width)
    b_in: jax.Array  # shape=(width,)
    w_hid: jax.Array  # shape=(depth - 1, width, width)
    b_hid: jax.Array  # shape=(depth - 1, width)
    w_out: jax.Array  # shape=(width, classes)
    b_out: jax.Array  # shape=(classes,)


@dataclasses.dataclass(frozen=True)
class Arm:
    """One configuration of an :class:`Ensemble`.

    Attributes:
      label: the name in reports and plots.
      activation: :mod:`initjax.activations` spec of every hidden layer.
      kernel_init: :mod:`initjax.initializers` spec of every kernel, the readout's included.
      bias_init: spec of every bias (zeros by default, as Glorot & Bengio).
      learning_rate: SGD step size (> 0).
      depth: hidden layers of this arm; None: the ensemble's ``depth``. Arms shallower than the
        ensemble skip its last layers (their activations pass through unchanged and those layers'
        parameters get no gradient), so nets of several depths share one compiled program.
    """

    label: str
    activation: str
    kernel_init: str
    bias_init: str = "zeros"
    learning_rate: float = 0.1
    depth: int | None = None


def _stack(trees: Sequence[Any]) -> Any:
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def _draw(arm: Arm, key: jax.Array, in_dim: int, width: int, depth: int, classes: int) -> MLPParams:
    """One network of ``arm`` from ``key``: layer ``l`` (0 = input layer, ``arm.depth`` = readout)
    draws its kernel and bias from ``split(fold_in(key, l))``, so the draws of a layer do not
    depend on the depth, and arms with the same law of weights share them (common random numbers).
    ``depth`` (>= the arm's) is the ensemble's: layers beyond the arm's are drawn and never used."""
    k_init, b_init = initializers.get(arm.kernel_init), initializers.get(arm.bias_init)

    def layer(index: int | jax.Array, shape: tuple[int, int]) -> tuple[jax.Array, jax.Array]:
        kw, kb = jax.random.split(jax.random.fold_in(key, index))
        return k_init(kw, shape), b_init(kb, (shape[1],))

    w_in, b_in = layer(0, (in_dim, width))
    if depth > 1:
        w_hid, b_hid = jax.vmap(lambda i: layer(i, (width, width)))(jnp.arange(1, depth))
    else:
        w_hid, b_hid = jnp.zeros((0, width, width)), jnp.zeros((0, width))
    w_out, b_out = layer(arm.depth or depth, (width, classes))
    return MLPParams(w_in, b_in, w_hid, b_hid, w_out, b_out)


@functools.lru_cache(maxsize=16)
def _drawer(arms: tuple[Arm, ...], in_dim: int, width: int, depth: int,
            classes: int) -> Callable[[jax.Array], MLPParams]:
    """``keys (seed,) -> MLPParams`` with leading ``(arm, seed)`` axes: one jitted program for all
    arms (XLA's fixed cost per compilation dominates these small programs), compiled on CPU
    without backend optimization: it runs once, and random-number code compiles ~10x faster that
    way (as :mod:`initjax.training` does for its initialization)."""
    options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None

    def draw_all(keys):
        return _stack([jax.vmap(lambda k, a=a: _draw(a, k, in_dim, width, depth, classes))(keys)
                       for a in arms])

    return jax.jit(draw_all, compiler_options=options)


@functools.lru_cache(maxsize=16)
def _programs(acts: tuple[str, ...], momentum: float) -> tuple[Callable[..., Any], ...]:
    """The jitted programs of ensembles whose arms use the activations ``acts`` (static)."""
    fns = tuple(activations.get(a) for a in acts)

    def phi(index: jax.Array, z: jax.Array) -> jax.Array:
        # one branch when all arms share the activation; otherwise, vmapped over arms, switch
        # becomes a select of every branch (elementwise, cheap next to the matmuls)
        return fns[0](z) if len(fns) == 1 else jax.lax.switch(index, fns, z)

    def hidden(p: MLPParams, arm: tuple[jax.Array, jax.Array], x: jax.Array) -> tuple[jax.Array, jax.Array]:
        index, depth = arm
        h0 = phi(index, x @ p.w_in + p.b_in[None, :])

        def body(h, inp):
            layer, w, b = inp
            out = jnp.where(layer < depth, phi(index, h @ w + b[None, :]), h)
            return out, out

        layers = jnp.arange(1, p.w_hid.shape[0] + 1)
        h, rest = jax.lax.scan(body, h0, (layers, p.w_hid, p.b_hid))
        return h, jnp.concatenate([h0[None], rest])  # (depth, batch, width)

    def logits(p, arm, x):
        return hidden(p, arm, x)[0] @ p.w_out + p.b_out[None, :]

    def xent(out, y):
        return optax.softmax_cross_entropy_with_integer_labels(out, y)

    def interval_one(state, arm, lr, xs, ys):
        """``len(xs)`` updates of one member: SGD at this arm's rate ``lr`` (data), with momentum
        ``v <- mu v + g, theta <- theta - lr v`` (optax.sgd's and PyTorch's convention)."""

        def loss_fn(p, model_state, batch):
            x, y = batch
            return jnp.mean(xent(logits(p, arm, x), y)), model_state

        tx = optax.sgd(lambda count: lr, momentum=momentum or None)
        state, losses = run_steps(make_step(loss_fn, tx), state, (xs, ys))
        return state, jnp.mean(losses)

    # arms (activation index, depth, lr per arm) outside, seeds inside; batches shared by all
    interval = vmap_arms_seeds(interval_one, (0, 0, 0, None, None), (0, None, None, None, None))

    def sums(p, arm, x, y, m):
        out = logits(p, arm, x)
        ok = (jnp.argmax(out, axis=-1) == y) & jnp.all(jnp.isfinite(out), axis=-1)
        return jnp.sum(jnp.where(m, xent(out, y), 0.0)), jnp.sum(jnp.where(m, ok, False))

    def both(f, rest):
        return jax.vmap(jax.vmap(f, in_axes=(0, None) + rest), in_axes=(0, 0) + rest)

    return (
        jax.jit(interval, donate_argnums=(0,)),
        jax.jit(both(sums, (None, None, None))),
        jax.jit(both(lambda p, arm, x: hidden(p, arm, x)[1], (None,))),
    )


EVAL_CHUNK = 500  # examples per evaluation call: every evaluation set shares one compilation


class Ensemble:
    """``len(arms) x seeds`` plain MLPs trained in lockstep on the same minibatches.

    Network: ``arm.depth`` hidden layers ``h_l = phi(h_{l-1} W_l + b_l)`` of ``width`` units and a
    linear readout to ``classes`` logits; loss: mean softmax cross-entropy; optimizer: SGD with
    optional momentum ``v <- mu v + g, theta <- theta - eta v``. Seed ``s`` of every arm starts
    from ``fold_in(as_key(key), s)`` (an int key is a philox2x32 key; see :func:`_draw`), so its numbers do not depend on
    how many seeds or arms run beside it, up to float summation order.

    Attributes:
      params: :class:`MLPParams` with leading ``(arm, seed)`` axes (``depth`` = the deepest arm's).
      step: updates done.
      state: the members' :class:`~initjax.training.core.TrainState`, leading ``(arm, seed)`` axes.
      diverged_step: ``(arm, seed)`` first update with a non-finite minibatch loss or
        parameters, -1 if none.
      precision: the matmul precision every program of the ensemble is traced and run at:
        ``"highest"`` (``precision=None``, the default: float32-exact on every backend),
        ``"high"`` or ``"default"`` (the backend's fastest: TF32-class passes on an NVIDIA GPU,
        5e-5..1e-4 relative in a 10 x 1024 tanh network's variances at initialization on issue
        13's H200). Identical on CPU. See :mod:`initjax._precision`.
    """

    def __init__(self, arms: Sequence[Arm], *, in_dim: int, width: int, depth: int, classes: int,
                 seeds: int, key: int = 0, momentum: float = 0.0, precision: str | None = None):
        if not arms or len({a.label for a in arms}) != len(arms):
            raise ValueError("arms must be a non-empty sequence with distinct labels")
        if depth < 1 or width < 1 or seeds < 1:
            raise ValueError(f"need depth, width, seeds >= 1; got {depth}, {width}, {seeds}")
        if any(a.depth is not None and not 1 <= a.depth <= depth for a in arms):
            raise ValueError(f"every arm's depth must be in [1, {depth}]")
        self.arms = tuple(arms)
        self.depths = np.asarray([a.depth or depth for a in arms])
        self.shape = (in_dim, width, depth, classes)
        self.seeds = seeds
        self.acts = tuple(dict.fromkeys(activations.get(a.activation).spec for a in arms))
        index = jnp.asarray([self.acts.index(activations.get(a.activation).spec) for a in arms], jnp.int32)
        self.arm_data = (index, jnp.asarray(self.depths, jnp.int32))
        self.lr = jnp.asarray([a.learning_rate for a in arms], jnp.float32)
        self.momentum = float(momentum)
        self.precision = check_precision(precision)
        keys = ensemble_keys(key, seeds)
        tx = optax.sgd(lambda count: 1.0, momentum=self.momentum or None)  # the state layout
        with matmul_precision(self.precision):
            params = _drawer(self.arms, in_dim, width, depth, classes)(keys)
            self.state: TrainState = jax.vmap(jax.vmap(lambda p: init_state(p, tx)))(params)
        self.step = 0
        self._interval, self._sums, self._acts = _programs(self.acts, self.momentum)

    @property
    def params(self) -> MLPParams:
        """:class:`MLPParams` with leading ``(arm, seed)`` axes."""
        return self.state.params

    @property
    def diverged_step(self) -> np.ndarray:
        """``(arm, seed)`` the first update with a non-finite loss or parameters, -1 if none."""
        return np.asarray(self.state.diverged_step)

    def train(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """``len(xs)`` updates on the minibatches ``xs (k, batch, in_dim)``, ``ys (k, batch)``;
        returns the mean minibatch loss ``(arm, seed)`` over them."""
        with matmul_precision(self.precision):  # traced and called at it (jit keys on it)
            self.state, loss = self._interval(self.state, self.arm_data, self.lr,
                                              jnp.asarray(xs, jnp.float32), jnp.asarray(ys, jnp.int32))
        self.step += len(xs)
        return np.asarray(loss, np.float64)

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean cross-entropy and accuracy ``(arm, seed)`` on ``(x, y)`` (non-finite logits count
        as errors), in padded chunks of :data:`EVAL_CHUNK` examples."""
        n = len(x)
        loss = np.zeros((len(self.arms), self.seeds))
        correct = np.zeros_like(loss)
        for i in range(0, n, EVAL_CHUNK):
            xc, yc = x[i:i + EVAL_CHUNK], y[i:i + EVAL_CHUNK]
            m = np.arange(EVAL_CHUNK) < len(xc)
            pad = EVAL_CHUNK - len(xc)
            xc = np.concatenate([xc, np.zeros((pad, *xc.shape[1:]), np.float32)]).astype(np.float32)
            yc = np.concatenate([yc, np.zeros(pad, yc.dtype)]).astype(np.int32)
            with matmul_precision(self.precision):
                ls, ok = self._sums(self.params, self.arm_data, jnp.asarray(xc), jnp.asarray(yc),
                                    jnp.asarray(m))
            loss += np.asarray(ls, np.float64)
            correct += np.asarray(ok, np.float64)
        return loss / n, correct / n

    def activations(self, x: np.ndarray) -> np.ndarray:
        """Every hidden layer's activations on ``x``: ``(arm, seed, layer, batch, width)``; an arm
        shallower than the ensemble repeats its last layer's activations beyond its depth."""
        with matmul_precision(self.precision):
            return np.asarray(self._acts(self.params, self.arm_data, jnp.asarray(x, jnp.float32)))


def layer_stats(acts: np.ndarray, arms: Sequence[Arm], percentiles: Sequence[float]) -> dict[str, np.ndarray]:
    """Per-layer statistics of :meth:`Ensemble.activations` output ``(arm, seed, layer, batch,
    width)``: ``mean``, ``std`` (ddof 0 over examples and units), ``percentiles`` ``(arm, seed,
    layer, q)`` and ``saturated``, the fraction within 1% of the range from a bound
    (:meth:`initjax.activations.Activation.saturated`; 0 for unbounded activations)."""
    acts = np.asarray(acts, np.float32)
    sat = np.stack([
        np.asarray(activations.get(a.activation).saturated(jnp.asarray(acts[i]))).mean(axis=(-2, -1))
        for i, a in enumerate(arms)
    ])
    mean, std, pct = _layer_moments(tuple(float(q) for q in percentiles))(jnp.asarray(acts))
    return {
        "mean": np.asarray(mean, np.float64),
        "std": np.asarray(std, np.float64),
        "percentiles": np.asarray(pct, np.float64),
        "saturated": sat,
    }


@functools.lru_cache(maxsize=8)
def _layer_moments(qs: tuple[float, ...]) -> Callable[[jax.Array], tuple[jax.Array, ...]]:
    """``acts (arm, seed, layer, batch, width) -> mean, std (arm, seed, layer), percentiles
    (arm, seed, layer, q)`` with :mod:`initjax.engine.stats` (one jitted program)."""

    def one(a):
        mean, std = stats.moments(a)
        return mean, std, stats.percentiles(a, qs)

    return jax.jit(jax.vmap(jax.vmap(jax.vmap(one))))


class Records(NamedTuple):
    """What :func:`train_and_record` measured; ``arm`` follows the ensemble's arms."""

    step: np.ndarray  # (record,) updates done at each record
    train_loss: np.ndarray  # (arm, seed, record) mean minibatch loss since the last record
    test_loss: np.ndarray  # (arm, seed, record)
    test_accuracy: np.ndarray  # (arm, seed, record)
    train_accuracy: np.ndarray  # (arm, seed, record) on a fixed training subset
    act_mean: np.ndarray | None  # (arm, seed, record, layer) on the probe batch
    act_std: np.ndarray | None  # (arm, seed, record, layer)
    act_percentiles: np.ndarray | None  # (arm, seed, record, layer, q)
    saturated: np.ndarray | None  # (arm, seed, record, layer)
    diverged_step: np.ndarray  # (arm, seed) first non-finite update, -1 if none


def select_arms(rec: Records, arms: Sequence[int]) -> Records:
    """The records of some arms only (arrays with an arm axis are indexed on it)."""
    idx = np.asarray(arms)
    return Records(*(v if k == "step" or v is None else v[idx] for k, v in rec._asdict().items()))


def train_and_record(
    ens: Ensemble,
    batches: Iterator[tuple[np.ndarray, np.ndarray]],
    *,
    steps: int,
    record_steps: Iterable[int],
    test: tuple[np.ndarray, np.ndarray],
    train_eval: tuple[np.ndarray, np.ndarray],
    probe: np.ndarray | None = None,
    percentiles: Sequence[float] = (2.0, 15.0, 50.0, 85.0, 98.0),
    progress: bool | None = None,
) -> Records:
    """Train ``ens`` for ``steps`` updates on ``batches`` and record at ``record_steps`` (0 and
    ``steps`` are always included): test and train-subset loss/accuracy, and with ``probe`` the
    per-layer activation statistics of :func:`layer_stats`."""
    marks = sorted({0, steps, *(s for s in record_steps if 0 <= s <= steps)})
    show = progress if progress is not None else sys.stderr.isatty()
    out: dict[str, list[np.ndarray]] = {k: [] for k in Records._fields if k not in ("step", "diverged_step")}
    last_loss = None
    t0 = time.perf_counter()
    for mark in marks:
        if mark > ens.step:
            k = mark - ens.step
            xs, ys = zip(*(next(batches) for _ in range(k)))
            last_loss = ens.train(np.stack(xs), np.stack(ys))
        test_loss, test_acc = ens.evaluate(*test)
        train_loss0, train_acc = ens.evaluate(*train_eval)
        out["train_loss"].append(last_loss if last_loss is not None else train_loss0)
        out["test_loss"].append(test_loss)
        out["test_accuracy"].append(test_acc)
        out["train_accuracy"].append(train_acc)
        if probe is not None:
            with matmul_precision(ens.precision):
                st = layer_stats(ens.activations(probe), ens.arms, percentiles)
            out["act_mean"].append(st["mean"])
            out["act_std"].append(st["std"])
            out["act_percentiles"].append(st["percentiles"])
            out["saturated"].append(st["saturated"])
        if show:
            acc = ", ".join(f"{a.label} {np.nanmean(test_acc[i]):.3f}" for i, a in enumerate(ens.arms))
            print(f"  step {mark:6d} ({time.perf_counter() - t0:5.0f} s): test acc {acc}", file=sys.stderr)
    stacked = {k: (np.stack(v, axis=2) if v else None) for k, v in out.items()}
    return Records(step=np.asarray(marks), diverged_step=ens.diverged_step, **stacked)


def shapeset_batches(seed: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Glorot & Bengio's endless online Shapeset-3x2 stream (every minibatch new)."""
    return data.shapeset_stream(seed, batch_size)


def epoch_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Endless shuffled minibatches of a fixed training set (:func:`initjax.data.batches`)."""
    return data.batches(x, y, batch_size, seed=seed)
