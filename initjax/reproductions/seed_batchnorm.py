"""Batch norm makes the init not matter at init, and uses running averages at inference.

The blog posts (shared/seeds 003 and 004) make two points, reproduced here:

1. **At init** (post 003): a 6-layer tanh MLP with N(0, 0.01^2) weights collapses toward 0, with
   N(0, 1) saturates at +-1, with N(0, 0.05^2) stays spread; "with a BN layer the setting of the
   weight initialization no longer seems to matter". Measured with the engine
   (:func:`initjax.propagate_shared`, ``norm="batch"``: training-mode batch statistics, gamma 1,
   beta 0, before the tanh): width 500 (the post gives none; CS231n's width, as our seed-demo
   uses; 250 in quick mode), a batch of 500 N(0, 1) inputs, the three weight scales without and
   with BN. The six networks share one standard-normal draw per layer and seed, scaled per init
   (common random numbers), so the comparison isolates the scale: BN(c h) = BN(h) up to epsilon,
   and the three BN networks compute nearly the same function.
2. **At inference** (post 004): batch norm must not normalize a test batch with its own statistics;
   it uses moving averages of the training batches' means and of their **unbiased** variances
   (Ioffe & Szegedy 2015, Algorithm 2). Measured with :func:`initjax.train.compare`: the same
   6 x 500 tanh net with BN, trained briefly on scikit-learn's digits (plain SGD, lr 0.1, batch 60),
   evaluated on the test set with running averages (``test_accuracy``) and with the statistics of
   each test batch of 60 (``test_accuracy_batch_stats``), in Flax's convention (momentum 0.99
   kept, biased running variance) and PyTorch's (0.1 of the new batch taken, unbiased running
   variance). Full mode (500 steps, 4 seeds) trains N(0, 0.05^2) with BN in both conventions and
   without BN, and N(0, 0.01^2) and N(0, 1) with BN (Flax's convention) and without; quick mode
   (200 steps, 2 seeds, width 250) only N(0, 0.05^2) with BN in both conventions.

Checks:

* with BN the per-layer activation std of the three inits agrees within 1% (relative spread,
  every layer), while without BN the last layer's std differs by more than 100x between inits;
* running averages are what eval uses: a float64 re-implementation of the trained net that
  normalizes with the stored running mean and variance gives the model's eval-mode logits
  (within 1e-4 of the logit scale) and the recorded test accuracy; eval-mode outputs of one
  example alone equal those in the full test batch (no dependence on the batch);
* the accuracy with running averages and with test-batch statistics agree at the end of training
  within 0.03 (about two binomial standard errors at 95% accuracy on ~300-359 test images; the
  batch-statistics accuracy drops the last partial batch);
* PyTorch's convention (unbiased variance, momentum 0.1) and Flax's (biased, 0.99) give the same
  final test accuracy within 0.02 (7 of 359 test images) for every seed;
* and the two conventions train identically (running averages never enter a training step): their
  training losses agree within 1e-4 of the loss scale at every record (bitwise on the CPU).

References:
  Ioffe & Szegedy 2015, "Batch Normalization", https://arxiv.org/abs/1502.03167 (Algorithms 1, 2).
  CS231n, "Training Neural Networks I" (the 6-layer tanh demo).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from initjax import _io, plotting, training
from initjax import data as _data
from initjax._precision import matmul_precision
from initjax.config import NetworkConfig
from initjax.engine import Propagation, propagate_shared
from initjax.modules import ensemble_member
from initjax.reproductions import _reports

NAME = "seed-batchnorm"
DEPTH = 6
STDS = (0.01, 0.05, 1.0)
ENGINE_BATCH = 500
BN_AGREE_RTOL = 0.01  # relative spread of the BN nets' per-layer std across the three inits
NO_BN_RATIO = 100.0  # the no-BN nets' last-layer std must differ by more than this factor
EVAL_VS_BATCH_TOL = 0.03
CONVENTION_TOL = 0.02
LOGIT_RTOL = 1e-4
LOSS_RTOL = 1e-4  # float summation order may differ between the two compiled programs
LEARNING_RATE = 0.1
BATCH = 60
TRAIN_STD = 0.05  # the init trained in quick mode (and whose BN runs the eval checks use)


def _std_label(std: float) -> str:
    return "N(0, 1)" if std == 1 else f"N(0, {std:g}^2)"


def engine_configs(quick: bool) -> list[NetworkConfig]:
    """Six 6-layer tanh nets: three weight scales, without and with batch norm (before tanh)."""
    width = 250 if quick else 500
    return [NetworkConfig(depth=DEPTH, width=width, batch=ENGINE_BATCH, init=f"normal:stddev={s}",
                          activation="tanh", norm=norm,
                          label=f"{_std_label(s)}" + (", BN" if norm == "batch" else ", no BN"))
            for norm in ("none", "batch") for s in STDS]


def _train_label(std: float, norm: str | None, convention: str = "flax") -> str:
    if norm is None:
        return f"{_std_label(std)}, no BN"
    return f"{_std_label(std)}, BN ({convention})"


def train_configs(quick: bool, width: int) -> list[training.TrainConfig]:
    """The training runs: BN in Flax's and PyTorch's conventions (and, full mode, no BN)."""
    steps, every = (200, 50) if quick else (500, 50)
    base = training.TrainConfig(widths=(width,) * DEPTH, activation="tanh", optimizer="sgd",
                                learning_rate=LEARNING_RATE, batch_size=BATCH, steps=steps,
                                record_every=every)
    out = []
    for std in (TRAIN_STD,) if quick else STDS:
        cfg = dataclasses.replace(base, kernel_init=f"normal:stddev={std}")
        # both conventions only where the eval checks look; Flax's elsewhere (width 500 is slow)
        for conv in ("flax", "pytorch") if std == TRAIN_STD else ("flax",):
            out.append(dataclasses.replace(cfg, norm="batch", bn_convention=conv,
                                           label=_train_label(std, "batch", conv)))
        if not quick:
            out.append(dataclasses.replace(cfg, label=_train_label(std, None)))
    return out


def run(out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None,
        ) -> dict[str, Any]:
    """Measure at init, train, and write figures, data, ``report.json`` and ``report.md``."""
    t0 = time.perf_counter()
    seeds = seeds if seeds is not None else (2 if quick else 4)
    engine_seeds = 2 if quick else 8
    out = _reports.begin(out, NAME)

    engine = propagate_shared(engine_configs(quick), engine_seeds, key=0, progress=progress)
    for r in engine:
        r.save(out / "data" / "init" / _reports.slug(r.config.label))

    ds = _data.digits()
    width = engine[0].config.widths[1]
    # out=None: 6 x 500 nets make large checkpoints; the records are saved below
    result = training.compare(train_configs(quick, width), ds, seeds=seeds, progress=progress)
    manual = _manual_eval(result, ds)
    report = _report(quick, seeds, engine_seeds, engine, result, manual, ds, time.perf_counter() - t0)
    _save_data(out, result)
    _figures(out, engine, result)
    return _reports.finish(out, report, _markdown(report))



def _forward_running(member: Any, x: np.ndarray) -> np.ndarray:
    """Logits of a trained BN MLP in float64, normalizing with the stored running averages:
    ``z = h W + b``, ``n = gamma (z - running_mean) / sqrt(running_var + eps) + beta``,
    ``h = tanh(n)``; readout ``h W_out + b_out``."""
    h = np.asarray(x, np.float64)
    for layer, norm in zip(member.layers, member.norms, strict=True):
        z = h @ np.asarray(layer.kernel[...], np.float64) + np.asarray(layer.bias[...], np.float64)
        mean = np.asarray(norm.mean[...], np.float64)
        var = np.asarray(norm.var[...], np.float64)
        n = (z - mean) / np.sqrt(var + norm.epsilon)
        n = n * np.asarray(norm.scale[...], np.float64) + np.asarray(norm.bias[...], np.float64)
        h = np.tanh(n)
    return h @ np.asarray(member.readout.kernel[...], np.float64) + np.asarray(member.readout.bias[...], np.float64)


def _one_at_a_time(member: Any, x: np.ndarray) -> jax.Array:
    """Eval-mode logits of each example run alone (a batch of one), vmapped over the examples."""
    graphdef, state = nnx.split(member)

    def one(example):
        model = nnx.merge(graphdef, state)
        return model(example[None, :], use_running_average=True)[0]

    return jax.jit(jax.vmap(one))(jnp.asarray(x))


def _manual_eval(result: training.CompareResult, ds: _data.Dataset) -> dict[str, Any]:
    """For each BN config trained on TRAIN_STD and each seed: the float64 running-average forward
    pass against the model's eval mode, its accuracy against the record, and per-example eval."""
    x, y = np.asarray(ds.x_test, np.float32), np.asarray(ds.y_test)
    rows = []
    for conv in ("flax", "pytorch"):
        label = _train_label(TRAIN_STD, "batch", conv)
        i = result.labels.index(label)
        rec = result.records[i]
        for s in range(result.seeds):
            member = ensemble_member(result.final_models[i], s)
            # the model's eval pass at the precision policy (float32-exact matmuls): at a GPU's
            # default (TF32-class) precision it was 3.8e-4 of the logit scale from float64 (issue 13)
            with matmul_precision():
                model_logits = np.asarray(member(jnp.asarray(x), use_running_average=True), np.float64)
                single = np.asarray(_one_at_a_time(member, x), np.float64)
            manual = _forward_running(member, x)
            scale = float(np.max(np.abs(manual)))
            rows.append({
                "config": label, "seed": s,
                "max_abs_logit_diff": float(np.max(np.abs(model_logits - manual))),
                "logit_scale": scale,
                "manual_accuracy": float(np.mean(np.argmax(manual, -1) == y)),
                "recorded_accuracy": float(rec.test_accuracy[s, -1]),
                "max_abs_single_vs_batch": float(np.max(np.abs(single - model_logits))),
            })
    return {"rows": rows, "n_test": int(x.shape[0])}


def _report(quick, seeds, engine_seeds, engine, result, manual, ds, seconds) -> dict[str, Any]:
    checks = []
    init_rows = []
    for r in engine:
        st = r.stats
        init_rows.append({
            "config": r.config.label, "norm": r.config.norm, "init": r.config.init.spec,
            "act_std": np.nanmedian(np.asarray(st.act_std, np.float64), axis=0).tolist(),
            "act_mean": np.nanmedian(np.asarray(st.act_mean, np.float64), axis=0).tolist(),
            "saturated": np.nanmedian(np.asarray(st.saturated, np.float64), axis=0).tolist(),
        })
    std_bn = np.array([row["act_std"] for row in init_rows if row["norm"] == "batch"])  # (init, layer)
    std_no = np.array([row["act_std"] for row in init_rows if row["norm"] == "none"])
    rel_spread = (std_bn.max(0) - std_bn.min(0)) / std_bn.mean(0)
    checks.append({"check": f"with BN the three inits give the same per-layer activation std (relative spread "
                            f"< {BN_AGREE_RTOL:g} in every layer)",
                   "measured": f"largest relative spread {rel_spread.max():.2e}",
                   "pass": bool(np.all(np.isfinite(rel_spread)) and rel_spread.max() < BN_AGREE_RTOL)})
    ratio = float(std_no[:, -1].max() / std_no[:, -1].min())
    checks.append({"check": f"without BN the three inits' last-layer activation std differ by > {NO_BN_RATIO:g}x",
                   "measured": f"max / min = {ratio:.3g} (std {', '.join(f'{v:.2e}' for v in std_no[:, -1])})",
                   "pass": bool(np.isfinite(ratio) and ratio > NO_BN_RATIO)})

    mrows = manual["rows"]
    worst_logit = max(m["max_abs_logit_diff"] / m["logit_scale"] for m in mrows)
    worst_acc = max(abs(m["manual_accuracy"] - m["recorded_accuracy"]) for m in mrows)
    worst_single = max(m["max_abs_single_vs_batch"] / m["logit_scale"] for m in mrows)
    checks.append({"check": "eval uses the running averages: a float64 forward pass normalizing with the stored "
                            f"running mean/var gives the eval-mode logits (within {LOGIT_RTOL:g} of the logit scale) "
                            "and the recorded test accuracy (within half an image), every seed and convention",
                   "measured": f"worst relative logit difference {worst_logit:.2e}, accuracy difference {worst_acc:.2e}",
                   "pass": bool(worst_logit < LOGIT_RTOL and worst_acc < 0.5 / manual["n_test"])})
    checks.append({"check": "eval does not depend on the batch: each test example alone gives the same logits "
                            f"as in the full test batch (within {LOGIT_RTOL:g} of the logit scale)",
                   "measured": f"worst relative difference {worst_single:.2e}",
                   "pass": bool(worst_single < LOGIT_RTOL)})

    train_rows = []
    for label, rec in zip(result.labels, result.records, strict=True):
        row = {"config": label, "final_test_accuracy": rec.test_accuracy[:, -1].tolist(),
               "final_test_accuracy_median": float(np.nanmedian(rec.test_accuracy[:, -1])),
               "diverged_seeds": int((rec.diverged_step >= 0).sum())}
        if rec.test_accuracy_batch_stats is not None:
            diff = rec.test_accuracy[:, :] - rec.test_accuracy_batch_stats[:, :]
            row.update({
                "final_test_accuracy_batch_stats": rec.test_accuracy_batch_stats[:, -1].tolist(),
                "final_test_accuracy_batch_stats_median": float(np.nanmedian(rec.test_accuracy_batch_stats[:, -1])),
                "running_minus_batch_first_record_after_0": float(np.nanmedian(diff[:, 1])),
                "running_minus_batch_final": float(np.nanmedian(diff[:, -1])),
            })
        train_rows.append(row)
    for conv in ("flax", "pytorch"):
        rec = result[_train_label(TRAIN_STD, "batch", conv)]
        d = np.abs(rec.test_accuracy[:, -1] - rec.test_accuracy_batch_stats[:, -1])
        checks.append({"check": f"{_train_label(TRAIN_STD, 'batch', conv)}: final test accuracy with running "
                                f"averages and with test-batch statistics agree within {EVAL_VS_BATCH_TOL:g}",
                       "measured": f"largest |difference| over seeds {np.max(d):.3f} (running "
                                   f"{np.median(rec.test_accuracy[:, -1]):.3f}, batch stats "
                                   f"{np.median(rec.test_accuracy_batch_stats[:, -1]):.3f})",
                       "pass": bool(np.all(np.isfinite(d)) and np.max(d) <= EVAL_VS_BATCH_TOL)})
    flax = result[_train_label(TRAIN_STD, "batch", "flax")]
    torch = result[_train_label(TRAIN_STD, "batch", "pytorch")]
    conv_diff = np.abs(flax.test_accuracy[:, -1] - torch.test_accuracy[:, -1])
    loss_diff = float(np.nanmax(np.abs(flax.train_loss - torch.train_loss)))
    checks.append({"check": f"unbiased running variance (PyTorch convention) vs Flax's: same final test accuracy "
                            f"within {CONVENTION_TOL:g}, every seed",
                   "measured": f"largest |difference| {np.max(conv_diff):.3f} (flax {np.median(flax.test_accuracy[:, -1]):.3f}, "
                               f"pytorch {np.median(torch.test_accuracy[:, -1]):.3f}); training losses differ by "
                               f"at most {loss_diff:.2e}",
                   "pass": bool(np.all(np.isfinite(conv_diff)) and np.max(conv_diff) <= CONVENTION_TOL)})
    loss_scale = float(np.nanmax(np.abs(flax.train_loss)))
    checks.append({"check": f"the two conventions train identically (running averages never enter a training "
                            f"step): training losses agree within {LOSS_RTOL:g} of their scale, every record",
                   "measured": f"largest |difference| {loss_diff:.2e} (loss scale {loss_scale:.3g})",
                   "pass": bool(np.isfinite(loss_diff) and loss_diff <= LOSS_RTOL * loss_scale)})
    return {
        "name": NAME, "status": "done", "quick": quick, "seeds": seeds, "engine_seeds": engine_seeds,
        "seconds": seconds,
        "engine": {"depth": DEPTH, "width": engine[0].config.widths[1], "batch": ENGINE_BATCH,
                   "layers": init_rows},
        "training": {"data": ds.name, "n_train": int(ds.x_train.shape[0]), "n_test": int(ds.x_test.shape[0]),
                     "widths": list(result.configs[0].widths), "optimizer": "sgd",
                     "learning_rate": LEARNING_RATE, "batch": BATCH, "steps": int(result.configs[0].steps),
                     "rows": train_rows, "manual_eval": mrows,
                     "train_loss_max_abs_diff_flax_vs_pytorch": loss_diff},
        "checks": checks,
        "all_pass": all(c["pass"] for c in checks),
    }


def _save_data(out: Path, result: training.CompareResult) -> None:
    arrays: dict[str, np.ndarray] = {"step": result.steps}
    for label, rec in zip(result.labels, result.records, strict=True):
        key = _reports.slug(label)
        arrays[f"{key}__test_accuracy"] = rec.test_accuracy
        arrays[f"{key}__train_loss"] = rec.train_loss
        arrays[f"{key}__act_std"] = rec.act_std
        if rec.test_accuracy_batch_stats is not None:
            arrays[f"{key}__test_accuracy_batch_stats"] = rec.test_accuracy_batch_stats
    _io.write_npz(out / "data" / "training.npz", **arrays)


def _figures(out: Path, engine: list[Propagation], result: training.CompareResult) -> None:
    fig = plotting.new_figure(max(8.0, 1.6 * DEPTH), 2.2 * len(engine))
    for sub, r in zip(fig.subfigures(len(engine), 1), engine, strict=True):
        plotting.hist_strip(r, "act", fig=sub, title=f"6-layer tanh, {r.config.label}: activations at init")
    _io.save_figure(fig, out / "hist-bn")

    fig = plotting.new_figure(6.5, 4.2)
    ax = fig.subplots()
    plotting.variance_curves(engine, "act_std", ax=ax)
    ax.set_title("activation std by layer: without BN three orders of magnitude apart, with BN one curve",
                 fontsize=8)
    _io.save_figure(fig, out / "std-by-layer")

    bn_labels = [lab for lab in result.labels if "BN (" in lab]
    fig = plotting.new_figure(12.0, 4.2)
    ax_run, ax_all = fig.subplots(1, 2)
    for j, lab in enumerate(lab for lab in bn_labels if _std_label(TRAIN_STD) in lab):
        rec = result[lab]
        for field, style in (("test_accuracy", "-"), ("test_accuracy_batch_stats", ":")):
            v = np.asarray(getattr(rec, field), np.float64)
            ax_run.plot(rec.step, np.nanmedian(v, 0), style, color=f"C{j}",
                        label=f"{lab}: " + ("running averages" if field == "test_accuracy" else "test-batch statistics"))
    ax_run.set_xlabel("step")
    ax_run.set_ylabel("test accuracy (median over seeds)")
    ax_run.legend(fontsize=7)
    ax_run.set_title("eval with running averages vs with each test batch's statistics", fontsize=9)
    training.plot_curves(result, "test_accuracy", ax=ax_all)
    ax_all.set_title("test accuracy (eval mode) of every run", fontsize=9)
    _io.save_figure(fig, out / "bn-eval")


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    x = float(x)
    return "n/a" if not math.isfinite(x) else f"{x:.3g}"


def _markdown(report: dict[str, Any]) -> str:
    eng, tr = report["engine"], report["training"]
    lines = [
        *_reports.header("Batch norm: the init stops mattering, and inference uses running averages (shared/seeds 003, 004)", "", report),
        "",
        "## At init: 6-layer tanh MLP, three weight scales, without and with BN",
        "",
        f"Width {eng['width']}, a batch of {eng['batch']} N(0, 1) inputs, {report['engine_seeds']} seeds; the six "
        "networks share one standard-normal draw per layer and seed. BN: batch statistics, gamma 1, beta 0, "
        "before tanh (`hist-bn.png`, `std-by-layer.png`).",
        "",
        "| network | the post | std layer 1 | std layer 6 | saturated (layer 6) |",
        "|---|---|---|---|---|",
    ]
    says = {"N(0, 0.01^2), no BN": "collapses toward 0", "N(0, 0.05^2), no BN": "stays spread",
            "N(0, 1), no BN": "saturates at +-1"}
    for row in eng["layers"]:
        lines.append(f"| {row['config']} | {says.get(row['config'], 'with BN: the init no longer matters')} | "
                     f"{_fmt(row['act_std'][0])} | {_fmt(row['act_std'][-1])} | {_fmt(row['saturated'][-1])} |")
    lines += [
        "",
        "## Training: running averages vs test-batch statistics; Flax vs PyTorch conventions",
        "",
        f"digits ({tr['n_train']} train / {tr['n_test']} test), MLP {len(tr['widths'])} x {tr['widths'][0]} tanh, "
        f"plain SGD lr {tr['learning_rate']:g}, batch {tr['batch']}, {tr['steps']} steps, {report['seeds']} seeds. "
        "\"running\" is eval mode (running averages, all test images); \"batch stats\" normalizes each test batch "
        f"of {tr['batch']} with its own statistics (the last partial batch dropped) (`bn-eval.png`).",
        "",
        "| run | final test accuracy, running (median) | batch stats (median) | running - batch stats, first record / final | diverged |",
        "|---|---|---|---|---|",
    ]
    for row in tr["rows"]:
        if "final_test_accuracy_batch_stats_median" in row:
            lines.append(f"| {row['config']} | {_fmt(row['final_test_accuracy_median'])} | "
                         f"{_fmt(row['final_test_accuracy_batch_stats_median'])} | "
                         f"{_fmt(row['running_minus_batch_first_record_after_0'])} / {_fmt(row['running_minus_batch_final'])} | "
                         f"{row['diverged_seeds']} |")
        else:
            lines.append(f"| {row['config']} | {_fmt(row['final_test_accuracy_median'])} | - | - | {row['diverged_seeds']} |")
    lines += ["", *_reports.checks_table(report["checks"])]
    lines += [
        "",
        "## Where and why this departs from the posts",
        "",
        "- The posts show one network per setting; we use several seeds and medians. Width 500 and the batch "
        "of 500 inputs at init are our choices (the post gives neither).",
        "- Common random numbers make the BN agreement at init nearly exact: batch norm is invariant to the "
        "scale of the weights (BN(c h) = BN(h) up to epsilon), so with the same draw the three BN nets compute "
        "the same function; with independent draws they would agree only statistically.",
        "- \"The init no longer matters\" holds for the forward pass at init. In training the scale still "
        "matters through the readout layer (not normalized, drawn from the same law) and through the effective "
        "learning rate of normalized layers (it scales as 1 / ||W||^2); the full-mode table shows the three "
        "inits trained with and without BN.",
        "- Running averages: Flax's momentum 0.99 averages over ~100 steps and starts from mean 0, variance 1, "
        "so early in training eval-mode accuracy lags the batch-statistics one (the first-record column); "
        "PyTorch's 0.1 follows within ~10 steps. The unbiased factor m/(m-1) = 60/59 changes the normalized "
        "values by under 1%, invisible in the accuracy.",
        "",
    ]
    return "\n".join(lines)
