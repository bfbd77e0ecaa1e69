"""Train many configs over many seeds at once and record how their signal evolves in training.

:func:`compare` trains every :class:`~initjax.training.TrainConfig` on a
:class:`~initjax.data.Dataset` for ``seeds`` seeds. Configs that differ only in numbers (learning
rate, momentum, Adam's constants, decay constants: :data:`~initjax.training.config.NUMERIC_FIELDS`)
and initializers are *arms* of one program: their numbers are arrays with an arm axis, and the
:mod:`initjax.training.core` step is ``vmap``-ped over arms and seeds, ``lax.scan``-ned over the
minibatch indices of ``record_every`` updates and jitted, so a sweep over 8 learning rates compiles
once. Configs that differ in structure (network, optimizer or schedule kind, run length, record
cadence, probe sizes) are separate programs. Token networks (transformers: ``Network(tokens=T)``
of attention blocks) train the same way, on examples read as ``T`` tokens, with one label per
sequence (mean-pooled readout) or per token (see :class:`~initjax.training.TrainConfig`).

How a member is computed (functional NNX): the network is split into a graph definition, its
parameters and the rest of its state (batch-norm statistics, ``nnx.split``); the loss is the mean
softmax cross-entropy of a minibatch. Member ``(arm a, seed i)`` starts from the network of config
``a`` built with ``jax.random.fold_in(as_key(key), i)`` (:func:`initjax.modules.ensemble_keys`: an
int key is a philox2x32 key), so a seed's run does not depend on how many seeds or arms run beside
it (up to float rounding of the batched matmuls).

Checkpoints: with ``out``, every config gets a directory holding ``config.json``, ``status.json``
(``incomplete`` / ``done`` / ``diverged``) and ``checkpoint.npz`` (the training state, the step and
the records so far), rewritten atomically after every record interval; a later :func:`compare` with
the same ``out`` continues from there and skips finished configs, and its numbers equal those of an
uninterrupted run.

References:
  Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
  networks", AISTATS, https://proceedings.mlr.press/v9/glorot10a.html.
  He et al. 2015, "Delving Deep into Rectifiers", https://arxiv.org/abs/1502.01852.
  Ioffe & Szegedy 2015, "Batch Normalization", https://arxiv.org/abs/1502.03167.
"""

from __future__ import annotations

import contextlib
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
from initjax._checks import check_int
from initjax._io import claim_dir, progress_bar, read_json, reading, write_json, write_npz
from initjax._precision import check_precision, matmul_precision
from initjax._registry import parse_spec
from initjax.engine.attention import attention_entropy, token_cosine
from initjax.engine.stats import moments, percentiles
from initjax.training.config import (
    INIT_FIELDS,
    NUMERIC_FIELDS,
    TrainConfig,
    make_optimizer,
    structure_key,
)
from initjax.training.core import (
    TrainState,
    make_step,
    map_arms_vmap_seeds,
    run_steps,
    scale_by_multipliers,
    vmap_arms_seeds,
)
from initjax.training.records import MEASURED_FIELDS, PERCENTILES, CompareResult, Record

__all__ = ["compare", "Interrupted"]

_EVAL_CHUNK = 1000  # examples per evaluation chunk (bounds the memory of test-set passes)
_FORMAT = 2  # checkpoint format version, part of the run hash (2: the core's TrainState)
# XLA:CPU spends seconds in LLVM optimizing threefry-heavy initialization code that runs once;
# without backend optimization it compiles ~10x faster. Per compiled function, CPU only.
_CPU_COMPILER_OPTIONS: dict[str, dict[str, Any]] = {
    "init": {"xla_backend_optimization_level": 0},
    "measure": {},
    "run": {},
}
# Fields that define the network (and so the measurement), and those that enter the training
# program's code; the rest (label, numbers, initializers, record cadence, sizes) do not.
_MODEL_FIELDS = ("model", "widths", "activation", "norm", "norm_placement", "residual",
                 "downsample_at", "bn_convention", "bn_momentum", "bn_running_var", "bn_epsilon",
                 "network", "readout")
_PROGRAM_FIELDS = ("optimizer", "schedule", "warmup_steps", "decay_every", "steps",
                   "readout_lr_multiplier", "embed_lr_multiplier")


class Interrupted(Exception):
    """Raised by the ``_stop_after`` test hook of :func:`compare` (a simulated interruption)."""


def _jit(kind: str, fun: Callable[..., Any]) -> Callable[..., Any]:
    options = _CPU_COMPILER_OPTIONS[kind] if jax.default_backend() == "cpu" else {}
    return jax.jit(fun, compiler_options=options or None)


def _xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean cross-entropy over every label: examples, and tokens for per-token labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


# ----------------------------------------------------------------------------------------------
# Compiled functions: per network (init, measure) and per training program (run)
# ----------------------------------------------------------------------------------------------


class _ModelFns(NamedTuple):
    graphdef: Any
    forward: Callable[..., Any]  # (params, rest, x, train) -> (logits, intermediates, new rest)
    measure: Callable[..., Any]  # record measurement, vmapped over (arm, seed)


def _over_arms(cfg: TrainConfig) -> Callable[..., Any]:
    """How a program runs its arms: vmapped beside the seeds (dense layers batch well), or one
    after the other for a CNN (a convolution vmapped over arms x seeds is a grouped convolution,
    2.9x slower on XLA:CPU for 8 arms than the arms in turn); one compiled program either way."""
    return map_arms_vmap_seeds if cfg.model == "cnn" else vmap_arms_seeds


def _model_key(cfg: TrainConfig) -> tuple:
    return tuple((f, getattr(cfg, f)) for f in _MODEL_FIELDS)


@functools.lru_cache(maxsize=32)
def _model_fns(model_key: tuple, in_shape: tuple[int, ...], num_classes: int,
               per_token: bool = False) -> _ModelFns:
    cfg = TrainConfig(**dict(model_key))
    abstract = nnx.eval_shape(lambda: cfg.build(in_shape, num_classes, rngs=nnx.Rngs(0)))
    graphdef, _, _ = nnx.split(abstract, nnx.Param, ...)
    name, _ = parse_spec(cfg.activation)
    act = None if name == _modules.LEARNED_PRELU else _activations.get(cfg.activation)
    bn = cfg.uses_batchnorm
    tokens = cfg.network is not None and cfg.network.tokens is not None
    phi_input = "postnorm" if cfg.norm is not None and cfg.norm_placement == "before" else "preact"
    if cfg.network is not None and not tokens:  # per block: its last Dense layer's phi and input
        phi_input = "phi_input"
        block_acts = [getattr(b, "branch", (b,))[-1].activation for b in cfg.network.blocks]

    def forward(params, rest, x, train: bool):
        model = nnx.merge(graphdef, params, rest, copy=True)
        out, inter = model.forward_with_intermediates(x, use_running_average=not train)
        if tokens and not per_token:  # one label per sequence: mean-pool, then the readout
            out = model.readout(inter["hidden"][-1].mean(axis=1))
        _, _, new_rest = nnx.split(model, nnx.Param, ...)
        return out, inter, new_rest

    def eval_sums(params, rest, xs, ys, ms, train: bool):
        def body(acc, inp):
            x, y, m = inp
            out, _, _ = forward(params, rest, x, train)
            loss = optax.softmax_cross_entropy_with_integer_labels(out, y)
            ok = (jnp.argmax(out, axis=-1) == y) & jnp.all(jnp.isfinite(out), axis=-1)
            m = jnp.broadcast_to(m.reshape(m.shape + (1,) * (y.ndim - 1)), y.shape)  # per token
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
        if tokens:  # the stream after each block, and entering it (the stem's output for block 0)
            acts = inter["hidden"]
            inputs = [nnx.merge(graphdef, params, rest, copy=True).stem(xp), *acts[:-1]]
            rec["token_cosine"] = jnp.stack([token_cosine(a) for a in acts])
            rec["attn_entropy"] = jnp.stack([attention_entropy(p) for p in inter["attention"]])
        else:
            acts, inputs = inter["act"], inter[phi_input]
        mean_std = [moments(a) for a in acts]
        rec["act_mean"] = jnp.stack([m for m, _ in mean_std])
        rec["act_std"] = jnp.stack([s for _, s in mean_std])
        rec["act_percentiles"] = jnp.stack([percentiles(a, PERCENTILES) for a in acts])
        rec["input_percentiles"] = jnp.stack([percentiles(z, PERCENTILES) for z in inputs])
        if tokens:
            rec["saturated"] = jnp.zeros((len(acts),), jnp.float32)
        elif cfg.network is not None:
            rec["saturated"] = jnp.stack([jnp.mean(f.saturated(a).astype(jnp.float32))
                                          for f, a in zip(block_acts, acts, strict=True)])
        elif act is not None:
            rec["saturated"] = jnp.stack([jnp.mean(act.saturated(a).astype(jnp.float32))
                                          for a in acts])
        else:
            rec["saturated"] = jnp.zeros((len(acts),), jnp.float32)
        rec["dead_fraction"] = jnp.stack([
            jnp.mean(jnp.all(a.reshape(-1, a.shape[-1]) == 0, axis=0).astype(jnp.float32))
            for a in acts
        ])
        gmodel = nnx.merge(graphdef, grads, rest, copy=True)
        head = gmodel.classifier if cfg.model == "cnn" else gmodel.readout
        if cfg.network is not None:  # a block's kernels together (a residual branch has several)
            rec["grad_norm"] = jnp.stack([
                jnp.sqrt(sum(jnp.sum(k**2) for k in block.kernels())) for block in gmodel.blocks])
        else:
            rec["grad_norm"] = jnp.stack([jnp.linalg.norm(layer.kernel[...].reshape(-1))
                                          for layer in gmodel.layers])
        if head is None:  # readout=False: the network's last block is the readout
            rec["readout_grad_norm"] = jnp.sqrt(sum(jnp.sum(k**2) for k in gmodel.blocks[-1].kernels()))
        else:
            rec["readout_grad_norm"] = jnp.linalg.norm(head.kernel[...].reshape(-1))
        if act is None:
            pmodel = nnx.merge(graphdef, params, rest, copy=True)
            rec["prelu_slope"] = jnp.stack([jnp.mean(p.slope[...]) for p in pmodel.prelus])
        _, rec["train_accuracy"] = eval_sums(params, rest, *train_eval, train=False)
        rec["test_loss"], rec["test_accuracy"] = eval_sums(params, rest, *test_eval, train=False)
        if bn:
            _, rec["test_accuracy_batch_stats"] = eval_sums(params, rest, *test_bs, train=True)
        return rec

    shared = (None,) * 5
    return _ModelFns(
        graphdef=graphdef,
        forward=forward,
        measure=_jit("measure", _over_arms(cfg)(measure_one, (0, 0) + shared, (0, 0) + shared)),
    )


@functools.lru_cache(maxsize=32)
def _init_fn(init_key: tuple, in_shape: tuple[int, ...], num_classes: int) -> Callable[..., Any]:
    """``keys (seed,) -> (params, rest)`` stacked over seeds, for one network and initializer."""
    cfg = TrainConfig(**dict(init_key))

    def init_one(key):
        model = cfg.build(in_shape, num_classes, rngs=nnx.Rngs(key))
        _, params, rest = nnx.split(model, nnx.Param, ...)
        return params, rest

    return _jit("init", jax.vmap(init_one))


class _ProgramFns(NamedTuple):
    opt_init: Callable[..., Any]  # (params (seed, ...), one arm's numbers) -> opt_state
    run: Callable[..., Any]  # (state, numbers, x, y, idx (k, batch)) -> (state, loss (arm, seed))
    run_per_seed: Callable[..., Any]  # the same with idx (seed, k, batch)
    member_step: Callable[..., Any]  # one unbatched update of one member (the sequential path)


def _program_key(cfg: TrainConfig) -> tuple:
    """The fields the training program's code depends on: the run length only through a cosine
    schedule, so configs differing in steps alone share a compilation otherwise."""
    key = tuple((f, getattr(cfg, f)) for f in _PROGRAM_FIELDS)
    if cfg.schedule not in ("cosine", "warmup_cosine"):
        key = tuple((f, 1 if f == "steps" else v) for f, v in key)
    return key


@functools.lru_cache(maxsize=32)
def _program_fns(model_key: tuple, program_key: tuple, in_shape: tuple[int, ...],
                 num_classes: int, per_token: bool = False) -> _ProgramFns:
    cfg = TrainConfig(**dict(model_key), **dict(program_key), record_every=1)
    forward = _model_fns(model_key, in_shape, num_classes, per_token).forward
    multipliers = None  # a network description's per-layer learning-rate multipliers
    if cfg.network is not None:  # the module's own factors; no multiplier step if all are 1
        model = nnx.eval_shape(lambda: cfg.build(in_shape, num_classes, rngs=nnx.Rngs(0)))
        tree = model.lr_multipliers()
        if any(m != 1.0 for m in jax.tree.leaves(tree)):
            multipliers = tree

    def optimizer(numbers):
        tx = make_optimizer(cfg, numbers)
        return tx if multipliers is None else optax.chain(tx, scale_by_multipliers(multipliers))

    def member_step_fn(x_train, y_train, numbers):
        def loss_fn(params, rest, rows):
            out, _, new_rest = forward(params, rest, x_train[rows], True)
            return _xent(out, y_train[rows]), new_rest

        return make_step(loss_fn, optimizer(numbers))

    def train_interval(state, numbers, x_train, y_train, idx):
        """``len(idx)`` updates of one member on the rows ``idx (k, batch)`` of the training set;
        returns the state and the mean minibatch loss."""
        state, losses = run_steps(member_step_fn(x_train, y_train, numbers), state, idx)
        return state, jnp.mean(losses)

    def member_step(state, numbers, x_train, y_train, rows):
        return member_step_fn(x_train, y_train, numbers)(state, rows)

    def opt_init(params, numbers):
        return optimizer(numbers).init(params)

    member = (0, 0, None, None)  # state, numbers, x_train, y_train: over arms
    seed = (0, None, None, None)  # ... over seeds
    return _ProgramFns(
        opt_init=_jit("init", jax.vmap(opt_init, in_axes=(0, None))),  # over seeds
        run=_jit("run", _over_arms(cfg)(train_interval, member + (None,), seed + (None,))),
        run_per_seed=_jit("run", _over_arms(cfg)(train_interval, member + (None,), seed + (0,))),
        member_step=jax.jit(member_step),
    )


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
        y = np.concatenate([y, np.zeros((extra, *y.shape[1:]), y.dtype)])
        mask = np.arange(m * size) < n
    else:
        m = n // size
        x, y = x[: m * size], y[: m * size]
        mask = np.ones(m * size, bool)
    return (jnp.asarray(x.reshape(m, size, *x.shape[1:])),
            jnp.asarray(y.reshape(m, size, *y.shape[1:])), jnp.asarray(mask.reshape(m, size)))


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
        if y.shape[:1] != (x.shape[0],) or y.ndim > 2 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"data.y_{name} must be integer class labels of shape ({x.shape[0]},) (or "
                f"({x.shape[0]}, T), one per token, for token networks), got {y.dtype} {y.shape} "
                "(regression targets are not supported)"
            )
        if y.min() < 0 or y.max() >= nc:
            raise ValueError(f"data.y_{name} has labels outside [0, {nc}): "
                             f"min {y.min()}, max {y.max()}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"data.x_{name} holds non-finite values")
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(f"x_train examples have shape {xtr.shape[1:]} but x_test {xte.shape[1:]}")
    if ytr.shape[1:] != yte.shape[1:]:
        raise ValueError(f"y_train labels have shape {ytr.shape[1:]} per example but y_test "
                         f"{yte.shape[1:]}: both one label per example, or both one per token")
    size = int(np.prod(xtr.shape[1:]))
    for i, cfg in enumerate(configs):
        t = cfg.network.tokens if cfg.model == "network" else None
        if ytr.ndim == 2 and ytr.shape[1] != t:
            raise ValueError(
                f"data has labels of shape (n, {ytr.shape[1]}), one class per token, which only a "
                f"token network with tokens={ytr.shape[1]} takes; configs[{i}] is "
                + (f"a token network with tokens={t}" if t is not None else
                   f"model={cfg.model!r} without a token axis (it needs labels of shape (n,))"))
        if t is not None and size % t:
            raise ValueError(f"configs[{i}].network has tokens={t}, which does not divide the "
                             f"{size} values of an example (shape {xtr.shape[1:]}): each example "
                             "is read as T tokens of size / T features")
        if cfg.batch_size > xtr.shape[0]:
            raise ValueError(f"configs[{i}].batch_size={cfg.batch_size} exceeds the training set "
                             f"size {xtr.shape[0]}")
        if t is None and cfg.model == "network" and size != cfg.network.in_width:
            raise ValueError(f"configs[{i}].network takes {cfg.network.in_width} inputs, but the "
                             f"examples have {int(np.prod(xtr.shape[1:]))} values "
                             f"(shape {xtr.shape[1:]})")
        if cfg.model == "cnn" and xtr.ndim != 4:
            raise ValueError(f"configs[{i}] is a CNN, which needs NHWC images (n, H, W, C); got "
                             f"x_train of shape {xtr.shape} (load the data with flatten=False)")
    return (xtr.astype(np.float32), ytr.astype(np.int32), xte.astype(np.float32),
            yte.astype(np.int32))


def _view(cfg: TrainConfig) -> Any:
    """Which view of the examples ``cfg``'s model takes (see :func:`_view_shape`)."""
    if cfg.model == "network" and cfg.network.tokens is not None:
        return ("tokens", cfg.network.tokens)
    return "images" if cfg.model == "cnn" else "flat"


def _view_shape(cfg: TrainConfig, example: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one example as ``cfg``'s model takes it: NHWC for a CNN, ``(T, F)`` for a
    token network (``F = size / T``), flattened otherwise."""
    if cfg.model == "cnn":
        return tuple(example)
    if cfg.model == "network" and cfg.network.tokens is not None:
        return (cfg.network.tokens, cfg.token_features(example))
    return (int(np.prod(example)),)


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




class _Run:
    """One config's training state (leaves with a leading seed axis), step and records."""

    def __init__(self, state: TrainState, numbers: dict[str, float]):
        self.state = state
        self.numbers = numbers
        self.step = 0
        self.records: dict[str, list[np.ndarray]] = {}

    def save(self, path: Path) -> None:
        leaves = jax.tree.leaves(self.state)
        arrays = {f"state_{i:04d}": np.asarray(a) for i, a in enumerate(leaves)}
        arrays.update({f"record_{k}": np.stack(v, axis=1) for k, v in self.records.items()})
        write_npz(path, step=np.int64(self.step), **arrays)

    def load(self, path: Path) -> None:
        with reading(path, "training checkpoint"), open(path, "rb") as f, np.load(f) as z:
            leaves, treedef = jax.tree.flatten(self.state)
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
            self.state = jax.tree.unflatten(treedef, new)
            self.step = int(z["step"])
            self.records = {
                k[len("record_"):]: list(np.moveaxis(z[k], 1, 0))
                for k in z.files if k.startswith("record_")
            }

    @property
    def diverged_step(self) -> np.ndarray:
        return np.asarray(self.state.diverged_step)


def _check_same_run(rdir: Path, stored: Mapping[str, Any], identity: Mapping[str, Any]) -> None:
    """Refuse to resume a checkpoint written by another run (config, seeds, key, data or format):
    its state would continue as this call's. The folder name is a digest of the identity, so this
    is a check against a damaged or hand-copied folder."""
    diffs = [k for k in sorted(set(stored) | set(identity)) if stored.get(k) != identity.get(k)]
    if diffs:
        raise ValueError(f"{rdir / 'config.json'} records another run ({', '.join(diffs)} differ); "
                         "resuming would continue its state as this call's: remove the folder or "
                         "use resume=False")


def _fresh_run(cfg: TrainConfig, keys: jax.Array, in_shape: tuple[int, ...],
               num_classes: int, per_token: bool) -> _Run:
    init_key = _model_key(cfg) + tuple((f, getattr(cfg, f)) for f in INIT_FIELDS)
    params, rest = _init_fn(init_key, in_shape, num_classes)(keys)
    fns = _program_fns(_model_key(cfg), _program_key(cfg), in_shape, num_classes, per_token)
    numbers = cfg.numbers()
    opt_state = fns.opt_init(params, {k: np.float32(v) for k, v in numbers.items()})
    seeds = keys.shape[0]
    state = TrainState(params=params, opt_state=opt_state, model_state=rest,
                       step=jnp.zeros((seeds,), jnp.int32),
                       diverged_step=jnp.full((seeds,), -1, jnp.int32))
    return _Run(state, numbers)


@jax.jit
def _stack(trees: Sequence[Any]) -> Any:
    """Stack members' trees on a new leading (arm) axis: one compiled program per layout, not one
    small program per leaf."""
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


@functools.partial(jax.jit, static_argnums=1)
def _unstack(tree: Any, n: int) -> tuple[Any, ...]:
    """The inverse of :func:`_stack`: ``n`` trees, one per entry of the leading axis."""
    return tuple(jax.tree.map(lambda v, a=a: v[a], tree) for a in range(n))


def _groups(configs: Sequence[TrainConfig], runs: Sequence[_Run]) -> list[list[int]]:
    """Unfinished configs that can train as arms of one program: the same structure
    (:func:`~initjax.training.config.structure_key`) and the same step, in the order given."""
    groups: dict[tuple, list[int]] = {}
    for i, (cfg, run) in enumerate(zip(configs, runs)):
        if run.step < cfg.steps:
            groups.setdefault((structure_key(cfg), run.step), []).append(i)
    return list(groups.values())


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
    precision: str | None = None,
    _stop_after: int | None = None,
) -> CompareResult:
    """Train each config for ``seeds`` seeds on ``data``, recording the fields of :class:`Record`.

    Configs of the same structure (they differ only in label, numbers such as the learning rate,
    and initializers) are arms of one program: one jitted function runs ``record_every`` updates of
    every (arm, seed) member as a ``lax.scan`` over minibatch indices, ``vmap``-ped over arms and
    seeds. Seed ``i`` of every config starts from the network built with
    ``fold_in(as_key(key), i)`` (common random numbers across configs; an int key is a philox2x32
    key). With ``same_batches`` (the default) all seeds see the minibatch sequence of
    ``data.batches(x_train, y_train, batch_size, seed=key)`` (shuffled per epoch, remainder
    dropped); otherwise seed ``i`` has its own stream (the same for every config). The probe batch
    and the train-eval subset are fixed rows of the training set chosen by ``key``.

    Divergence: a member whose minibatch loss or updated parameters are non-finite at update ``t``
    gets ``diverged_step = t`` and NaN records from step ``t`` on; the other seeds, arms and
    configs go on and nothing raises.

    Args:
      configs: a :class:`TrainConfig` or a sequence of them (distinct).
      data: a classification :class:`~initjax.data.Dataset` (int labels); MLPs flatten images.
        A token network (``Network(tokens=T)``) reads each example as ``T`` tokens of ``size / T``
        features; labels ``y: (n,)`` are one class per sequence (mean-pool over tokens, then the
        readout), ``y: (n, T)`` one per token (loss: mean cross-entropy over sequences and
        tokens; accuracy: the fraction of tokens right); see :class:`TrainConfig`.
      seeds: number of seeds, >= 1.
      key: non-negative int: model keys, batch order and probe rows.
      out: directory for checkpoints and results, or None (nothing written).
      progress: show a tqdm bar of the updates done with its ETA: None (default) on a terminal
        only, True always, False never.
      resume: with ``out``, continue from the checkpoints there (finished configs are loaded,
        not retrained); False starts every config afresh.
      sequential: run the members one after the other through the same (unvmapped) step
        function, for debugging; the numbers agree with the vmapped run to float rounding.
      precision: the precision of every matmul and convolution of initialization, training and
        the recorded measurements: ``"highest"`` (None, the default: float32-exact on every
        backend), ``"high"`` or ``"default"`` (the backend's fastest: TF32-class passes on an
        NVIDIA GPU, which moved a 10 x 1024 tanh network's variances by 5e-5..1e-4 relative at
        initialization on issue 13's H200; in training such differences grow with the steps).
        Identical numbers on CPU. An execution option, not part of a run's identity: it is not
        hashed into the run folders, so a checkpoint resumes at whatever precision is asked (the
        last call's is written to ``compare.json``). See :mod:`initjax._precision`.
      _stop_after: test hook: raise :class:`Interrupted` after this many record intervals have
        been checkpointed in this call, as an interruption would.

    Returns:
      A :class:`CompareResult`.

    Raises:
      TypeError, ValueError: bad arguments (non-configs, duplicate configs, seeds < 1, a
        batch_size above the training-set size, data of the wrong shape or with non-integer
        labels, a CNN on flattened data, ``(n, T)`` labels for a model without that token axis,
        examples whose size a token network's ``T`` does not divide, ...).

    >>> from initjax import data, training
    >>> sweep = [training.TrainConfig(label=f"lr={lr}", widths=(16,), learning_rate=lr, steps=20,
    ...                               record_every=10, batch_size=32) for lr in (0.01, 0.1)]
    >>> result = training.compare(sweep, data.digits(), seeds=2, progress=False)  # one program
    >>> result["lr=0.1"].test_accuracy.shape
    (2, 3)
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
    precision = check_precision(precision)
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
    per_token = ytr.ndim == 2  # one label per token (token networks only, _check_data)
    # each config's view of the examples: flattened (MLP, network), NHWC (CNN) or (T, F) tokens
    views: dict[Any, tuple[np.ndarray, np.ndarray]] = {}
    for c in configs:
        views.setdefault(_view(c), tuple(
            v.reshape(v.shape[0], *_view_shape(c, xtr.shape[1:])) for v in (xtr, xte)))
    in_shapes = {k: tuple(v[0].shape[1:]) for k, v in views.items()}
    device_x: dict[Any, tuple[jax.Array, jax.Array]] = {}

    # one writer per folder: a second process training into it is refused, naming this pid
    claim = claim_dir(out_dir, "training folder") if out_dir is not None else contextlib.nullcontext()
    # every program is traced and called at the precision (jit's cache keys on it)
    with claim, matmul_precision(precision):
        run_dirs = [_run_dir(out_dir, c, ident) if out_dir is not None else None for c in configs]
        if out_dir is not None:
            write_json(out_dir / "compare.json", {
                **ident, "precision": precision,
                "runs": [{"label": c.label, "dir": d.name} for c, d in zip(configs, run_dirs)]
            })

        runs: list[_Run] = []
        for cfg, rdir in zip(configs, run_dirs):
            run = _fresh_run(cfg, model_keys, in_shapes[_view(cfg)], num_classes, per_token)
            if rdir is not None and resume and (rdir / "checkpoint.npz").exists():
                stored = read_json(rdir / "config.json", "training run identity")
                _check_same_run(rdir, stored, {"config": cfg.to_dict(), **json.loads(json.dumps(ident))})
                run.load(rdir / "checkpoint.npz")
            runs.append(run)

        total = sum(c.steps - r.step for c, r in zip(configs, runs))
        intervals_done = 0
        trained: set[int] = set()
        bar = progress_bar(total=total, desc="training", unit="step", disable=not show)
        try:
            for members in _groups(configs, runs):
                cfg = configs[members[0]]
                in_shape = in_shapes[_view(cfg)]
                mfns = _model_fns(_model_key(cfg), in_shape, num_classes, per_token)
                pfns = _program_fns(_model_key(cfg), _program_key(cfg), in_shape, num_classes,
                                    per_token)
                labels = [configs[i].label or f"config {i}" for i in members]
                bar.set_description(labels[0] if len(labels) == 1 else
                                    f"{labels[0]} +{len(labels) - 1} arms")
                trained.update(members)
                for i in members:
                    if run_dirs[i] is not None:
                        write_json(run_dirs[i] / "config.json",
                                   {"config": configs[i].to_dict(), **ident})
                if _view(cfg) not in device_x:
                    device_x[_view(cfg)] = (jnp.asarray(views[_view(cfg)][0]), jnp.asarray(ytr))
                x_dev, y_dev = device_x[_view(cfg)]
                xtr_m, xte_m = views[_view(cfg)]
                probe = order[: min(cfg.probe_size, n_train)]
                tr_eval = order[: min(cfg.train_eval_size, n_train)]
                probe_xy = (jnp.asarray(xtr_m[probe]), jnp.asarray(ytr[probe]))
                eval_sets = (_chunks(xtr_m[tr_eval], ytr[tr_eval], _EVAL_CHUNK, pad=True),
                             _chunks(xte_m, yte, _EVAL_CHUNK, pad=True),
                             _chunks(xte_m, yte, cfg.batch_size, pad=False))
                state = _stack(tuple(runs[i].state for i in members))
                numbers = {k: jnp.asarray([runs[i].numbers[k] for i in members], jnp.float32)
                           for k in NUMERIC_FIELDS}
                step = runs[members[0]].step

                def measure(state=state, mfns=mfns, probe_xy=probe_xy, eval_sets=eval_sets):
                    rec = mfns.measure(state.params, state.model_state, *probe_xy, *eval_sets)
                    return {k: np.asarray(v) for k, v in rec.items()}

                def record(rec, members=members):
                    for a, i in enumerate(members):
                        for name, v in rec.items():
                            runs[i].records.setdefault(name, []).append(v[a])

                if step == 0 and not runs[members[0]].records:
                    record(measure())
                if cfg.same_batches:
                    streams = [_index_stream(n_train, cfg.batch_size, _batch_seed(key, None), step)]
                else:
                    streams = [_index_stream(n_train, cfg.batch_size, _batch_seed(key, s), step)
                               for s in range(seeds)]
                while step < cfg.steps:
                    k = min(cfg.record_every - step % cfg.record_every, cfg.steps - step)
                    idx = np.stack([np.stack([next(s) for _ in range(k)]) for s in streams])
                    state, loss = _run_interval(pfns, state, numbers, x_dev, y_dev, idx,
                                                cfg.same_batches, sequential)
                    step += k
                    rec = measure(state)
                    rec["train_loss"] = np.asarray(loss)
                    record(rec)
                    for i, member_state in zip(members, _unstack(state, len(members))):
                        runs[i].state = member_state
                        runs[i].step = step
                        if run_dirs[i] is not None:
                            _checkpoint(run_dirs[i], configs[i], runs[i])
                    bar.update(k * len(members))
                    intervals_done += 1
                    if _stop_after is not None and intervals_done >= _stop_after:
                        raise Interrupted(f"stopped after {intervals_done} intervals (test hook)")
        finally:
            bar.close()

        records, models = [], []
        for ci, (cfg, run, rdir) in enumerate(zip(configs, runs, run_dirs)):
            rec = _assemble(cfg, run)
            records.append(rec)
            graphdef = _model_fns(_model_key(cfg), in_shapes[_view(cfg)], num_classes,
                                  per_token).graphdef
            models.append(nnx.merge(graphdef, run.state.params, run.state.model_state))
            if rdir is not None and (ci in trained or not (rdir / "records.npz").exists()):
                arrays = {k: v for k, v in rec._asdict().items() if v is not None}
                write_npz(rdir / "records.npz", **arrays)
        return CompareResult(
            configs=configs, records=tuple(records), seeds=seeds, key=key,
            probe_index=order[: min(max(c.probe_size for c in configs), n_train)],
            train_eval_index=order[: min(max(c.train_eval_size for c in configs), n_train)],
            final_models=tuple(models), out=out_dir,
        )


def _run_interval(fns: _ProgramFns, state: TrainState, numbers: dict[str, jax.Array], x, y,
                  idx: np.ndarray, same: bool, sequential: bool):
    if not sequential:
        if same:
            return fns.run(state, numbers, x, y, jnp.asarray(idx[0]))
        return fns.run_per_seed(state, numbers, x, y, jnp.asarray(idx))
    # One member at a time through the unbatched step function (the debugging path; wrap the
    # call in jax.disable_jit() to step through it op by op).
    arms, seeds = state.step.shape
    states, losses = [], []
    for a in range(arms):
        arm_numbers = {k: v[a] for k, v in numbers.items()}
        for s in range(seeds):
            member = jax.tree.map(lambda v, a=a, s=s: v[a, s], state)
            ls = []
            for rows in idx[0 if same else s]:
                member, loss = fns.member_step(member, arm_numbers, x, y, jnp.asarray(rows))
                ls.append(loss)
            states.append(member)
            losses.append(jnp.mean(jnp.stack(ls)))
    stacked = jax.tree.map(lambda v: v.reshape(arms, seeds, *v.shape[1:]), _stack(states))
    return stacked, jnp.stack(losses).reshape(arms, seeds)


def _checkpoint(rdir: Path, cfg: TrainConfig, run: _Run) -> None:
    run.save(rdir / "checkpoint.npz")  # the one file resume reads: atomic, so always consistent
    bad = run.diverged_step
    done = run.step >= cfg.steps
    status = "incomplete" if not done else ("diverged" if np.any(bad >= 0) else "done")
    write_json(rdir / "status.json", {
        "status": status, "step": run.step, "steps": cfg.steps,
        "diverged_step": [int(b) for b in bad],
    })


def _assemble(cfg: TrainConfig, run: _Run) -> Record:
    steps = cfg.record_steps
    bad = run.diverged_step.astype(np.int64)
    sched = cfg.make_schedule()
    fields: dict[str, Any] = {
        "step": steps,
        "learning_rate": np.asarray(sched(jnp.asarray(steps)), np.float64),
        "diverged_step": bad,
    }
    # Records after divergence are NaN: mask[s, r] is True where seed s had diverged by step r.
    mask = (bad[:, None] >= 0) & (steps[None, :] >= bad[:, None])
    for name in MEASURED_FIELDS:
        if name not in run.records:
            fields[name] = None
            continue
        a = np.stack(run.records[name], axis=1).astype(np.float64)
        m = mask.reshape(mask.shape + (1,) * (a.ndim - 2))
        fields[name] = np.where(m, np.nan, a)
    return Record(**fields)
