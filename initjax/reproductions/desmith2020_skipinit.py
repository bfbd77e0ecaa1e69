"""De & Smith 2020: batch norm biases residual blocks towards the identity; SkipInit without it.

Paper: "Batch Normalization Biases Residual Blocks Towards the Identity Function in Deep
Networks", https://arxiv.org/abs/2002.10444. In a residual block ``x^{l+1} = x^l + f_l(x^l)``
whose branch starts with batch norm, the branch output has variance about 1 whatever the
stream's, and is uncorrelated with the stream, so

    Var x^l = Var x^0 + l = l + 1,      branch share Var f / Var(x + f) = 1 / (l + 1)

(linear growth: block ``l`` is close to the identity, by a factor ``sqrt(l)``), while without
normalization a He-initialized ReLU branch returns the stream's own variance, so

    Var x^l = 2^l,                       branch share = 1 / 2.

SkipInit (the paper's proposal) drops the norm and multiplies each branch by a learnable scalar
``alpha`` initialized to 0, so every block starts as the identity and deep unnormalized residual
networks train.

What this runs:

(a) At initialization (:func:`initjax.propagate`, block statistics): ``depth`` pre-activation
    residual blocks ``x + W2 relu(norm(W1 relu(norm(x))))`` (ResNet-V2 ordering, He-normal
    weights, zero biases, ``Network.residual_mlp(branch_layers=2)``) with batch norm and without
    it; the stream variance, the branch variance before the add and the branch's share of the
    block output's variance (pooled over batch and units), against the laws above and
    :func:`initjax.theory.predict`. The channel-averaged batch variances (the statistic of the
    paper's Fig. 2 [unverified]) are drawn beside them.
(b) Training: a deep residual MLP of the same blocks on the 8x8 digits (the 64 pixels are the
    stream: width 64), SGD with momentum, three arms: SkipInit (``alpha`` learnable, starting at
    0, no norm), the same with ``alpha = 1`` fixed (no norm: the variance doubles per block) and
    with batch norm (``alpha = 1``); the classifier is zero-initialized in all three (as the
    SkipInit code does). Final training loss, test accuracy and non-finite losses per seed.

Training runs the blocks as a ``lax.scan`` of the Flax NNX blocks that
:func:`initjax.modules.build` makes from the same description (stacked block states), so a
100-block network compiles like a 1-block one; see :func:`train`.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from initjax import _io, data, plotting
from initjax._checks import check_float, check_int
from initjax._precision import matmul_precision
from initjax.engine import BlockPropagation, propagate
from initjax.network import Network
from initjax.reproductions import _reports

__all__ = ["NAME", "INIT_ARMS", "TRAIN_ARMS", "TrainArm", "init_network", "train_network",
           "train", "run"]

NAME = "desmith2020-skipinit"
SE_FACTOR = 5.0
INIT_ARMS = (("BN in the branch", "batch"), ("no norm (He)", "none"))
LN10 = math.log(10.0)
LEARN_ACC = 0.8  # "trains": median final test accuracy at least this (chance: 0.1)
STALL_LOSS = 0.05  # "does not learn": final training loss within this of ln(10), or non-finite


class TrainArm(NamedTuple):
    label: str
    alpha: float
    learnable: bool
    norm: str


TRAIN_ARMS = (
    TrainArm("SkipInit (alpha = 0, learnable), no norm", 0.0, True, "none"),
    TrainArm("alpha = 1, no norm", 1.0, False, "none"),
    TrainArm("BN in the branch, alpha = 1", 1.0, False, "batch"),
)


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"width": 256, "batch": 16, "depth": 16, "seeds": 6,
                "train_depth": 16, "steps": 300, "record_every": 50, "train_seeds": 2,
                "learning_rate": 0.01}
    return {"width": 1024, "batch": 32, "depth": 50, "seeds": 8,
            "train_depth": 100, "steps": 600, "record_every": 100, "train_seeds": 3,
            "learning_rate": 0.01}


MOMENTUM = 0.9
TRAIN_BATCH = 64
TRAIN_WIDTH = 64  # the digits' 64 pixels


def init_network(norm: str, width: int, depth: int, batch: int) -> Network:
    """Part (a)'s network: ``depth`` blocks ``x + W2 relu(norm(W1 relu(norm(x))))`` (He-normal,
    zero biases; ``norm`` "batch" or "none")."""
    return Network.residual_mlp(depth, width, init="he_normal", activation="relu",
                                branch_layers=2, norm=norm, norm_position="pre", batch=batch,
                                label="BN in the branch" if norm == "batch" else "no norm (He)")


def train_network(arm: TrainArm, depth: int) -> Network:
    """Part (b)'s network for ``arm`` on the digits' 64 pixels."""
    return Network.residual_mlp(depth, TRAIN_WIDTH, init="he_normal", activation="relu",
                                branch_layers=2, branch_scale=arm.alpha, learnable=arm.learnable,
                                norm=arm.norm, norm_position="pre", batch=TRAIN_BATCH,
                                label=arm.label)


# -- training: a scan over the NNX blocks ---------------------------------------------------
class TrainResult(NamedTuple):
    """What :func:`train` records; ``record`` = steps ``0, k, 2k, ..., steps``."""

    step: np.ndarray  # (record,) updates done
    train_loss: np.ndarray  # (seed, record) mean minibatch loss over the updates since the
    #                         previous record (record 0: the loss of the first minibatch at init)
    test_loss: np.ndarray  # (seed, record) eval mode (running averages with BN); NaN once diverged
    test_accuracy: np.ndarray  # (seed, record)
    nonfinite_losses: np.ndarray  # (seed,) updates whose minibatch loss was non-finite
    diverged_step: np.ndarray  # (seed,) first update with a non-finite loss or parameters, -1 none
    alpha: np.ndarray | None  # (seed, block) final branch scales of a learnable alpha, else None
    seconds: float


def _scanned_model(network: Network, num_classes: int):
    """``(init(key) -> (params, rest), forward(params, rest, x, train) -> (logits, rest))`` for
    ``modules.build(network, num_classes, readout_init="zeros")`` with its blocks' states stacked
    on a leading axis and applied by ``lax.scan`` (one stage of identical blocks)."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from initjax import modules

    if len(network.stages) != 1:
        raise ValueError(f"the scanned trainer takes one stage of identical blocks, got "
                         f"{len(network.stages)} stages")
    bn = {"momentum": 0.99} if "batch" in network.norms else None

    def build(key):
        return modules.build(network, num_classes, readout_init="zeros", batchnorm_kwargs=bn,
                             rngs=nnx.Rngs(key))

    abstract = nnx.eval_shape(lambda: build(jax.random.key(0)))
    block_def = nnx.split(abstract.blocks[0], nnx.Param, ...)[0]
    readout_def = nnx.split(abstract.readout, nnx.Param, ...)[0]

    def init(key):
        model = build(key)
        parts = [nnx.split(b, nnx.Param, ...)[1:] for b in model.blocks]

        def stack(*xs):
            return jnp.stack(xs)

        params = jax.tree.map(stack, *[p for p, _ in parts])
        rest = jax.tree.map(stack, *[r for _, r in parts])
        _, readout, _ = nnx.split(model.readout, nnx.Param, ...)
        return {"blocks": params, "readout": readout}, {"blocks": rest}

    def forward(params, rest, x, train: bool):
        def body(h, block_state):
            block = nnx.merge(block_def, *block_state, copy=True)
            h = block(h, use_running_average=not train)
            return h, nnx.split(block, nnx.Param, ...)[2]

        h, new_rest = jax.lax.scan(body, x, (params["blocks"], rest["blocks"]))
        readout = nnx.merge(readout_def, params["readout"], nnx.State({}), copy=True)
        return readout(h), {"blocks": new_rest}

    return init, forward


def train(
    network: Network,
    dataset: data.Dataset,
    *,
    seeds: int,
    steps: int,
    record_every: int,
    learning_rate: float,
    momentum: float = MOMENTUM,
    batch_size: int = TRAIN_BATCH,
    key: int = 0,
) -> TrainResult:
    """Train ``seeds`` copies of ``network`` (plus a zero-initialized linear classifier) on
    ``dataset`` with SGD + momentum (``optax.sgd``) and the mean softmax cross-entropy.

    Seed ``s`` starts from ``modules.build`` with ``fold_in(key(key), s)``; all seeds see the same
    minibatches (epochs of a permutation seeded by ``key``, remainder dropped). The seeds are
    ``vmap``-ped and each interval of ``record_every`` updates is one ``lax.scan``
    (:func:`initjax.training.core.run_steps`), the blocks a ``lax.scan`` inside it. Divergence as
    in :func:`initjax.training.core.make_step`: a seed whose loss or parameters turn non-finite
    keeps its ``diverged_step`` and NaN records from then on; nothing raises.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from initjax.training.core import init_state, make_step, run_steps

    if not isinstance(network, Network):
        raise TypeError(f"network must be an initjax Network, got {type(network).__name__}")
    seeds = check_int("seeds", seeds, minimum=1)
    steps = check_int("steps", steps, minimum=1)
    record_every = check_int("record_every", record_every, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    learning_rate = check_float("learning_rate", learning_rate, minimum=0.0, strict_minimum=True)
    momentum = check_float("momentum", momentum, minimum=0.0)
    if momentum >= 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if batch_size > len(dataset.x_train):
        raise ValueError(f"batch_size {batch_size} exceeds the {len(dataset.x_train)} "
                         "training examples")
    t0 = time.perf_counter()
    init, forward = _scanned_model(network, dataset.num_classes)
    x_train = jnp.asarray(dataset.x_train.reshape(len(dataset.x_train), -1), jnp.float32)
    y_train = jnp.asarray(dataset.y_train)
    x_test = jnp.asarray(dataset.x_test.reshape(len(dataset.x_test), -1), jnp.float32)
    y_test = jnp.asarray(dataset.y_test)
    tx = optax.sgd(learning_rate, momentum=momentum)

    def loss_fn(params, rest, rows):
        logits, new_rest = forward(params, rest, x_train[rows], True)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_train[rows]).mean()
        return loss, new_rest

    step = make_step(loss_fn, tx)

    def start(k):
        params, rest = init(k)
        return init_state(params, tx, rest)

    def interval(state, idx):
        return run_steps(step, state, idx)

    def evaluate(state, rows):
        first, _ = loss_fn(state.params, state.model_state, rows)
        logits, _ = forward(state.params, state.model_state, x_test, False)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_test).mean()
        acc = jnp.mean((jnp.argmax(logits, -1) == y_test) & jnp.all(jnp.isfinite(logits), -1))
        return first, loss, acc

    root = jax.random.key(key, impl="philox2x32")
    keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(jnp.arange(seeds))
    state = jax.jit(jax.vmap(start))(keys)
    run_interval = jax.jit(jax.vmap(interval, in_axes=(0, None)))
    measure = jax.jit(jax.vmap(evaluate, in_axes=(0, None)))

    n = x_train.shape[0]
    rng = np.random.default_rng(np.random.SeedSequence([key, 0x5EED]))
    per_epoch = n // batch_size
    order = np.concatenate([rng.permutation(n)[: per_epoch * batch_size]
                            for _ in range(-(-steps // per_epoch))]).reshape(-1, batch_size)[:steps]
    first, loss0, acc0 = measure(state, jnp.asarray(order[0]))
    records = {"train_loss": [np.asarray(first)], "test_loss": [np.asarray(loss0)],
               "test_accuracy": [np.asarray(acc0)]}
    nonfinite = np.zeros(seeds, np.int64)
    done, steps_at = 0, [0]
    while done < steps:
        k = min(record_every, steps - done)
        state, losses = run_interval(state, jnp.asarray(order[done:done + k]))
        losses = np.asarray(losses)  # (seed, k)
        nonfinite += (~np.isfinite(losses)).sum(axis=1)
        with np.errstate(invalid="ignore"):
            records["train_loss"].append(losses.mean(axis=1))
        _, loss, acc = measure(state, jnp.asarray(order[0]))
        records["test_loss"].append(np.asarray(loss))
        records["test_accuracy"].append(np.asarray(acc))
        done += k
        steps_at.append(done)
    step_arr = np.asarray(steps_at)
    diverged = np.asarray(state.diverged_step).astype(np.int64)
    after = (diverged[:, None] >= 0) & (step_arr[None, :] >= diverged[:, None])
    out = {k: np.where(after, np.nan, np.stack(v, axis=1).astype(np.float64))
           for k, v in records.items()}
    alpha = None
    if any(getattr(b, "learnable", False) for b in network.blocks):
        alpha = np.asarray(state.params["blocks"]["alpha"][...], np.float64)  # (seed, block)
    return TrainResult(step_arr, out["train_loss"], out["test_loss"], out["test_accuracy"],
                       nonfinite, diverged, alpha, time.perf_counter() - t0)


# -- the run ---------------------------------------------------------------------------------------
def run(
    out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """(a) the variances at initialization, (b) the three training arms; figures, data, reports.
    ``seeds`` sets part (a)'s seed count (>= 2: its tolerances use the seed spread)."""
    size = _sizes(quick)
    out, seeds, t0 = _reports.start(out, NAME, seeds, size["seeds"], min_seeds=2)
    measured: dict[str, BlockPropagation] = {}
    predicted: dict[str, Any] = {}
    for label, norm in INIT_ARMS:
        net = init_network(norm, size["width"], size["depth"], size["batch"])
        result = propagate(net, seeds, key=0, progress=progress)
        result.save(out / "data" / _reports.slug(label))
        measured[label] = result
        predicted[label] = _predict(net)
    t_init = time.perf_counter() - t0
    ds = data.digits()
    trained: dict[str, TrainResult] = {}
    for arm in TRAIN_ARMS:
        with matmul_precision():  # float32-exact training on every backend (issue 13)
            trained[arm.label] = train(train_network(arm, size["train_depth"]), ds,
                                       seeds=size["train_seeds"], steps=size["steps"],
                                       record_every=size["record_every"],
                                       learning_rate=size["learning_rate"])
    _io.write_npz(out / "training.npz", **{
        f"{_reports.slug(label)}_{k}": np.asarray(v) for label, r in trained.items()
        for k, v in r._asdict().items() if v is not None and k != "seconds"})
    report = _report(quick, seeds, size, measured, predicted, trained, t_init,
                     time.perf_counter() - t0)
    _figures(out, measured, predicted, trained, size)
    return _reports.finish(out, report, _markdown(report))


def laws(norm: str, depth: int) -> dict[str, np.ndarray]:
    """The laws per block ``l = 1..depth``: stream variance ``l + 1`` (BN) or ``2^l`` (none),
    branch variance 1 or ``2^(l-1)``, share ``1 / (l + 1)`` or ``1 / 2``."""
    b = np.arange(1, depth + 1, dtype=np.float64)
    if norm == "batch":
        return {"stream": b + 1, "branch": np.ones_like(b), "share": 1 / (b + 1)}
    return {"stream": 2.0**b, "branch": 2.0 ** (b - 1), "share": np.full_like(b, 0.5)}


def _predict(net: Network) -> dict[str, np.ndarray] | None:
    """``initjax.theory.predict``'s stream variance, branch variance and share, or None."""
    try:
        from initjax import theory

        pred = theory.predict(net)
        return {"stream": np.asarray(pred.q, np.float64) - np.asarray(pred.mean, np.float64) ** 2,
                "branch": np.asarray(pred.branch_var, np.float64),
                "share": np.asarray(pred.branch_share, np.float64)}
    except (ImportError, NotImplementedError, TypeError, ValueError, AttributeError):
        return None


def _seed_mean(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = np.where(np.isfinite(values), values, np.nan).astype(np.float64)
    n = np.maximum(np.isfinite(v).sum(axis=0), 1)
    return np.nanmean(v, axis=0), np.nanstd(v, axis=0, ddof=1) / np.sqrt(n)


def _compare(values: np.ndarray, target: np.ndarray, width: int) -> dict[str, Any]:
    """Worst block of ``|mean / target - 1|`` against ``5 SE + 4 / width`` (relative; the
    finite-width corrections, such as the pooled mean removed from a pooled variance, are
    O(1 / width))."""
    mean, se = _seed_mean(values)
    dev = mean / target - 1
    tol = SE_FACTOR * se / target + 4.0 / width
    with np.errstate(invalid="ignore"):
        ratio = np.where(np.isfinite(dev), np.abs(dev) / tol, np.inf)
    worst = int(np.argmax(ratio))
    return {"worst_block": worst + 1, "deviation": float(dev[worst]),
            "tolerance": float(tol[worst]), "worst_ratio": float(ratio[worst]),
            "mean": mean.tolist(), "se": se.tolist()}


def _growth(values: np.ndarray, lo: int, hi: int, log2: bool) -> tuple[float, float]:
    """Per seed, the per-block change of ``values`` (of ``log2 values``) from block ``lo`` to
    ``hi``; mean over seeds and standard error."""
    v = values.astype(np.float64)
    with np.errstate(all="ignore"):
        if log2:
            v = np.log2(v)
        a, b = v[:, lo - 1], v[:, hi - 1]
    r = (b - a) / (hi - lo)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return float("nan"), float("inf")
    return float(r.mean()), float(r.std(ddof=1) / math.sqrt(r.size))


def _report(quick, seeds, size, measured, predicted, trained, t_init, seconds) -> dict[str, Any]:
    width, depth = size["width"], size["depth"]
    checks, init_rows = [], []
    half = max(1, depth // 2)
    for label, norm in INIT_ARMS:
        st, law = measured[label].stats, laws(norm, depth)
        res = {"stream": _compare(st.act_var, law["stream"], width),
               "branch": _compare(st.branch_var, law["branch"], width),
               "share": _compare(st.branch_share, law["share"], width)}
        names = {"stream": ("stream variance Var x^l", "l + 1" if norm == "batch" else "2^l"),
                 "branch": ("branch variance Var f(x^l) before the add",
                            "1" if norm == "batch" else "2^(l-1)"),
                 "share": ("branch share Var f / Var(x + f)",
                           "1 / (l + 1)" if norm == "batch" else "1 / 2")}
        for key, (what, formula) in names.items():
            r = res[key]
            checks.append({
                "check": f"{label}: {what} = {formula} at every block (relative, {SE_FACTOR:g} "
                         f"SE + 4 / width; worst block {r['worst_block']}, deviation "
                         f"{r['deviation']:+.4f})",
                "measured": r["worst_ratio"], "tolerance": 1.0, "pass": r["worst_ratio"] <= 1.0})
        if norm == "batch":
            g, g_se = _growth(st.act_var, half, depth, log2=False)
            checks.append({
                "check": f"{label}: linear growth: Var x^l grows by 1 per block over blocks "
                         f"{half}-{depth} ({SE_FACTOR:g} SE)",
                "measured": g, "tolerance": SE_FACTOR * g_se,
                "pass": abs(g - 1) <= SE_FACTOR * g_se})
        else:
            g, g_se = _growth(st.act_var, half, depth, log2=True)
            checks.append({
                "check": f"{label}: exponential growth: log2 Var x^l grows by 1 per block over "
                         f"blocks {half}-{depth} ({SE_FACTOR:g} SE)",
                "measured": g, "tolerance": SE_FACTOR * g_se,
                "pass": abs(g - 1) <= SE_FACTOR * g_se})
        pred = predicted[label]
        row = {"label": label, "norm": norm, "laws": {k: v.tolist() for k, v in law.items()},
               "growth_per_block": g, "growth_per_block_se": g_se,
               "nonfinite_blocks": measured[label].nonfinite_blocks, **res}
        if pred is not None:
            diff = max(float(np.max(np.abs(pred[k] / law[k] - 1))) for k in law)
            row["theory_predict"] = {k: v.tolist() for k, v in pred.items()}
            row["theory_vs_law_max_rel_diff"] = diff
            # batch norm's eps = 1e-5 makes the branch variance 1 / (1 + eps) of the law's
            checks.append({"check": f"{label}: initjax.theory.predict gives these laws (stream, "
                                    "branch, share; max relative difference <= 1e-4)",
                           "measured": diff, "tolerance": 1e-4, "pass": diff <= 1e-4})
        init_rows.append(row)

    runs = []
    for arm in TRAIN_ARMS:
        r = trained[arm.label]
        acc, loss = r.test_accuracy[:, -1], r.train_loss[:, -1]
        runs.append({
            "label": arm.label, "alpha": arm.alpha, "learnable": arm.learnable, "norm": arm.norm,
            "final_train_loss": loss.tolist(), "final_test_accuracy": acc.tolist(),
            "median_final_test_accuracy": float(np.median(np.nan_to_num(acc, nan=0.0))),
            "median_final_train_loss": float(np.median(np.nan_to_num(loss, nan=np.inf))),
            "nonfinite_losses": r.nonfinite_losses.tolist(),
            "diverged_step": r.diverged_step.tolist(),
            "alpha_final_abs_mean": None if r.alpha is None else float(np.abs(r.alpha).mean()),
            "alpha_final_abs_max": None if r.alpha is None else float(np.abs(r.alpha).max()),
            "seconds": r.seconds,
        })
    by = {r["label"]: r for r in runs}
    skip, plain, bn = (by[a.label] for a in TRAIN_ARMS)
    tdepth = size["train_depth"]
    checks.append({
        "check": f"training, {tdepth} blocks, {skip['label']}: trains: median final test "
                 f"accuracy >= {LEARN_ACC} (chance 0.1), no non-finite loss",
        "measured": skip["median_final_test_accuracy"],
        "pass": (skip["median_final_test_accuracy"] >= LEARN_ACC
                 and sum(skip["nonfinite_losses"]) == 0)})
    failed = [d >= 0 or not (ls < LN10 - STALL_LOSS)
              for d, ls in zip(plain["diverged_step"], plain["final_train_loss"], strict=True)]
    checks.append({
        "check": f"training, {tdepth} blocks, {plain['label']}: fails in every seed (diverges: a "
                 f"non-finite loss or parameters, or its final training loss stays within "
                 f"{STALL_LOSS} of ln(10))",
        "measured": f"diverged at steps {plain['diverged_step']} (-1: never); non-finite losses "
                    f"{plain['nonfinite_losses']}",
        "pass": all(failed)})
    checks.append({
        "check": f"training, {tdepth} blocks, {bn['label']}: trains: median final test accuracy >= "
                 f"{LEARN_ACC}, no non-finite loss",
        "measured": bn["median_final_test_accuracy"],
        "pass": bn["median_final_test_accuracy"] >= LEARN_ACC and sum(bn["nonfinite_losses"]) == 0})
    return {
        "name": NAME, "status": "done", "quick": quick, "seeds": seeds, "seconds": seconds,
        "seconds_at_init": t_init,
        "setup": {**size, "seeds": seeds, "train_width": TRAIN_WIDTH, "train_batch": TRAIN_BATCH,
                  "momentum": MOMENTUM, "data": "digits (8x8, 1438 train / 359 test)"},
        "prng_impl": measured[INIT_ARMS[0][0]].prng_impl,
        "init": init_rows, "training": runs, "checks": checks,
        "all_pass": all(c["pass"] for c in checks),
    }


def _figures(out: Path, measured, predicted, trained, size) -> None:
    depth = size["depth"]
    blocks = np.arange(1, depth + 1)
    fig = plotting.new_figure(13.0, 4.2)
    ax_v, ax_s, ax_c = fig.subplots(1, 3)
    for i, (label, norm) in enumerate(INIT_ARMS):
        st, law = measured[label].stats, laws(norm, depth)
        for field, name, style in (("act_var", "stream", "o-"), ("branch_var", "branch", "s-")):
            v = np.asarray(getattr(st, field), np.float64)
            ok = np.isfinite(v) & (v > 0)
            med = np.array([np.median(v[ok[:, j], j]) if ok[:, j].any() else np.nan
                            for j in range(depth)])
            ax_v.plot(blocks, med, style, ms=3, color=f"C{i}", label=f"{label}: {name}")
            ax_v.plot(blocks, law[name], "--", color=f"C{i}", lw=1)
        share = np.asarray(st.branch_share, np.float64)
        ax_s.plot(blocks, np.nanmedian(np.where(np.isfinite(share), share, np.nan), axis=0), "o-",
                  ms=3, color=f"C{i}", label=label)
        ax_s.plot(blocks, law["share"], "--", color=f"C{i}", lw=1)
        for field, name, style in (("act_chan_var", "stream", "o-"),
                                   ("branch_chan_var", "branch", "s-")):
            v = np.asarray(getattr(st, field), np.float64)
            v = np.where(np.isfinite(v) & (v > 0), v, np.nan)
            ax_c.plot(blocks, np.nanmedian(v, axis=0), style, ms=3, color=f"C{i}",
                      label=f"{label}: {name}")
    ax_v.set_yscale("log", base=2)
    plotting.label_axes(ax_v, "block l", "variance (pooled over batch and units)",
                        "stream and branch variance (dashed: l + 1, 1; 2^l, 2^(l-1))")
    ax_s.set_yscale("log")
    plotting.label_axes(ax_s, "block l", "Var f / Var(x + f)",
                        "branch share (dashed: 1 / (l + 1) with BN, 1 / 2 without)")
    ax_c.set_yscale("log", base=2)
    plotting.label_axes(ax_c, "block l", "mean over channels of the batch variance",
                        "channel-averaged batch variance (De & Smith Fig. 2's statistic)")
    _io.save_figure(fig, out / "variance-at-init")

    fig = plotting.new_figure(11.0, 4.0)
    ax_l, ax_a = fig.subplots(1, 2)
    for i, arm in enumerate(TRAIN_ARMS):
        r = trained[arm.label]
        bad_seeds = int((r.diverged_step >= 0).sum())
        label = arm.label + (f" ({bad_seeds} seeds diverged)" if bad_seeds else "")
        for s in range(r.train_loss.shape[0]):
            kw = {"label": label} if s == 0 else {}
            loss = np.where(np.isfinite(r.train_loss[s]), r.train_loss[s], np.nan)
            ax_l.plot(r.step, loss, "o-", ms=3, color=f"C{i}", alpha=0.8, **kw)
            ax_a.plot(r.step, r.test_accuracy[s], "o-", ms=3, color=f"C{i}", alpha=0.8, **kw)
            bad = r.diverged_step[s]
            if bad >= 0:
                ax_l.plot([bad], [LN10], "x", color="red", ms=8, mew=2)
    ax_l.axhline(LN10, color="k", ls=":", lw=1, label="ln(10)")
    ax_l.set_yscale("log")
    plotting.label_axes(ax_l, "updates", "training loss (red x: diverged)",
                        f"{size['train_depth']} residual blocks on digits")
    ax_a.axhline(0.1, color="k", ls=":", lw=1, label="chance")
    plotting.label_axes(ax_a, "updates", "test accuracy", "test accuracy (eval mode)")
    _io.save_figure(fig, out / "training")


def _markdown(report: dict[str, Any]) -> str:
    s = report["setup"]
    lines = [
        *_reports.header(
            "Batch norm biases residual blocks towards the identity; SkipInit (De & Smith 2020)",
            f"(a) {report['seeds']} seeds, width {s['width']}, {s['depth']} blocks "
            "x + W2 relu(norm(W1 relu(norm(x)))), He-normal, batch "
            f"{s['batch']}, inputs N(0, 1); (b) digits, {s['train_depth']} blocks of width "
            f"{s['train_width']}, {s['train_seeds']} seeds, SGD momentum {s['momentum']}, learning "
            f"rate {s['learning_rate']}, batch {s['train_batch']}, {s['steps']} updates; ", report),
        "",
        "## (a) At initialization",
        "",
        "| network | block | Var x^l measured | law | Var f measured | law | share measured "
        "| law |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["init"]:
        n = len(row["stream"]["mean"])
        for b in sorted({1, 2, max(1, n // 4), max(1, n // 2), n}):
            lines.append(
                "| " + " | ".join([row["label"], str(b)] + [
                    _reports.fmt(row[k]["mean"][b - 1]) + " | "
                    + _reports.fmt(row["laws"][k][b - 1]) for k in ("stream", "branch", "share")])
                + " |")
    lines += [
        "",
        "## (b) Training",
        "",
        "| arm | final training loss per seed | final test accuracy per seed | non-finite losses | "
        "diverged at step | final mean abs alpha |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["training"]:
        lines.append(
            f"| {r['label']} | {', '.join(_reports.fmt(v) for v in r['final_train_loss'])} | "
            f"{', '.join(_reports.fmt(v, 3) for v in r['final_test_accuracy'])} | "
            f"{r['nonfinite_losses']} | {r['diverged_step']} | "
            f"{_reports.fmt(r['alpha_final_abs_mean'])} |")
    lines += [
        "",
        "Beside the paper: De & Smith show that batch norm in the residual branch downscales it by "
        "about sqrt(depth) relative to the skip path at initialization (the share 1 / (l + 1) "
        "here), that without normalization the variance of a He-initialized residual net doubles "
        "per block, and that SkipInit (a learnable scalar on each branch, initialized to 0) trains "
        "deep unnormalized residual networks (1000 layers in the paper). Here the variances are "
        "pooled over batch and units (the laws' Var); the paper's Fig. 2 plots the "
        "channel-averaged batch variance of a ResNet-V2 [figure details unverified], drawn in the "
        "third panel: it is smaller than the pooled one because each unit's batch mean (the relu "
        "outputs' mean carried through W) is left out. Departures: MLP blocks instead of conv "
        "ResNets; the training is a small dataset (digits), a short run at one learning rate, "
        f"{s['train_depth']} blocks (not 1000), no weight decay, biases 0, and a zero-initialized "
        "classifier in every arm. Divergence of the alpha = 1 net is its non-finite loss or "
        "parameters (the forward variance grows like 2^l).",
        "",
        *_reports.checks_table(report["checks"]),
        "",
        "Figures: `variance-at-init` (stream, branch, share, channel variances; dashed: laws), "
        "`training` (loss and test accuracy per seed). Data: `data/<network>/` (engine "
        "statistics), `training.npz`.",
        "",
    ]
    return "\n".join(lines)
