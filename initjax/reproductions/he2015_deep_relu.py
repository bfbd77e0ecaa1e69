"""He et al. 2015, Figures 2-3: deep plain ReLU nets with Xavier vs He initialization.

Paper: "Delving Deep into Rectifiers: Surpassing Human-Level Performance on ImageNet
Classification", https://arxiv.org/abs/1502.01852. With ReLU, a layer multiplies the forward
signal's variance by ``n Var[w] / 2`` (eq. 10). Xavier's ``Var[w] = 1/n`` (square layers) halves it
at every layer, so a 30-layer net's last activations have ``2^-29`` of the first layer's
variance, and its gradients shrink the same way; He's ``Var[w] = 2/n`` keeps both at 1. Figure 2:
a 22-layer ImageNet model converges with both, He's sooner. Figure 3: a 30-layer model converges
with He's init and does not learn at all with Xavier's.

What this runs: the same comparison on the 8x8 digits (1438 training images, 10
classes, no download) with plain ReLU MLPs of 22 and 30 hidden layers (an MLP instead of a conv
net: cheaper, and the variance argument is the same), ``xavier_normal`` vs ``he_normal`` for every
kernel, zero biases, SGD with momentum 0.9 (He et al.'s optimizer) at one learning rate for all, a
few thousand updates; training loss and train/test accuracy over seeds. The per-layer variance at
initialization is measured twice: by initjax's propagation engine (:func:`initjax.propagate_shared`,
Gaussian inputs, square layers) against eq. 10, and on the digits probe batch inside the trained
networks.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from initjax import _io, data, plotting
from initjax.config import NetworkConfig
from initjax.engine import propagate_shared
from initjax.reproductions import _reports
from initjax.training.arms import (
    Arm,
    Ensemble,
    Records,
    epoch_batches,
    select_arms,
    train_and_record,
)

NAME = "he2015-deep-relu"
DEPTHS = (22, 30)
INITS = (("Xavier", "xavier_normal"), ("He", "he_normal"))
MOMENTUM = 0.9
LEARNING_RATE = 0.003
BATCH = 64
CHANCE = 0.1  # 10 balanced classes
LN10 = math.log(10.0)
# a net "learns" when its test accuracy ends at least this high (chance is 0.1); it "stalls" when
# its training loss stays within STALL_LOSS of ln(10) and its accuracy below STALL_ACC
LEARN_ACC = 0.5
STALL_LOSS = 0.05
STALL_ACC = 0.2


def _setup(quick: bool) -> dict[str, Any]:
    if quick:
        return {"width": 48, "steps": 1200, "record_every": 100, "seeds": 2, "engine_width": 128,
                "engine_seeds": 4}
    return {"width": 128, "steps": 2000, "record_every": 50, "seeds": 4, "engine_width": 512,
            "engine_seeds": 16}


def run(out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Train 22- and 30-layer ReLU MLPs with Xavier and He init on digits; write curves, the
    per-layer variance at init, ``report.json`` and ``report.md`` into ``out``."""
    t0 = time.perf_counter()
    cfg = _setup(quick)
    seeds = seeds if seeds is not None else cfg["seeds"]
    out = _reports.begin(out, NAME)

    # 1. the engine at initialization: Var[x^l] through 30 square ReLU layers, eq. 10
    # (both schemes scale the same standard-normal draws: common random numbers, one compilation)
    nets = [NetworkConfig(depth=max(DEPTHS), width=cfg["engine_width"], batch=32, init=init,
                          activation="relu", label=label) for label, init in INITS]
    measured = propagate_shared(nets, cfg["engine_seeds"], key=0, progress=False)
    engine = {label: np.asarray(r.stats.act_var, np.float64)  # (seed, layer)
              for (label, _), r in zip(INITS, measured, strict=True)}

    # 2. training on digits: both depths in one ensemble (the 22-layer arms skip the last 8 layers
    # of the 30-layer program), so both see the same minibatches and share one compilation
    ds = data.digits()
    arms = [Arm(f"{label}, {depth} layers", "relu", init, learning_rate=LEARNING_RATE, depth=depth)
            for depth in DEPTHS for label, init in INITS]
    ens = Ensemble(arms, in_dim=ds.x_train.shape[1], width=cfg["width"], depth=max(DEPTHS),
                   classes=ds.num_classes, seeds=seeds, key=0, momentum=MOMENTUM)
    acts = ens.activations(ds.x_train[:256])  # (arm, seed, layer, batch, width)
    std = acts.reshape(*acts.shape[:3], -1).std(-1)
    rec = train_and_record(
        ens, epoch_batches(ds.x_train, ds.y_train, BATCH, seed=0), steps=cfg["steps"],
        record_steps=range(0, cfg["steps"] + 1, cfg["record_every"]),
        test=(ds.x_test, ds.y_test), train_eval=(ds.x_train, ds.y_train), progress=progress)
    runs: dict[int, Records] = {}
    init_std: dict[int, np.ndarray] = {}
    for j, depth in enumerate(DEPTHS):
        idx = [j * len(INITS) + i for i in range(len(INITS))]  # arms of this depth, INITS order
        runs[depth] = select_arms(rec, idx)
        init_std[depth] = std[idx][:, :, :depth]
    arrays = {}
    for depth, rec in runs.items():
        for k, v in rec._asdict().items():
            if v is not None:
                arrays[f"depth{depth}_{k}"] = v
        arrays[f"depth{depth}_init_act_std"] = init_std[depth]
    for label, v in engine.items():
        arrays[f"engine_{label}_act_var"] = v
    _io.write_npz(out / "records.npz", **arrays)
    report = _report(quick, seeds, cfg, engine, runs, init_std, time.perf_counter() - t0)
    _figures(out, engine, runs, init_std)
    return _reports.finish(out, report, _markdown(report))


def _log2_shrink(v: np.ndarray) -> tuple[float, float]:
    """Mean over seeds of log2(Var[x^L] / Var[x^1]) and its standard error."""
    with np.errstate(all="ignore"):
        r = np.log2(v[:, -1] / v[:, 0])
    r = r[np.isfinite(r)]
    return float(r.mean()), float(r.std(ddof=1) / math.sqrt(len(r))) if len(r) > 1 else math.inf


def _first_step(rec: Records, arm: int, threshold: float) -> int | None:
    """First recorded step at which the median train accuracy over seeds reaches ``threshold``."""
    acc = np.nanmedian(rec.train_accuracy[arm], axis=0)
    hit = np.flatnonzero(acc >= threshold)
    return int(rec.step[hit[0]]) if hit.size else None


def _stall_steps(rec: Records, arm: int) -> list[int | None]:
    """Per seed, the first recorded step whose mean training loss since the previous record is
    more than STALL_LOSS below ln(10); None if it never is."""
    out = []
    for loss in rec.train_loss[arm]:
        hit = np.flatnonzero(loss < LN10 - STALL_LOSS)
        out.append(int(rec.step[hit[0]]) if hit.size else None)
    return out


def _report(quick, seeds, cfg, engine, runs, init_std, seconds) -> dict[str, Any]:
    checks = []
    layers = max(DEPTHS)
    expected = {"Xavier": -(layers - 1), "He": 0.0}
    shrink = {}
    for label, v in engine.items():
        m, se = _log2_shrink(v)
        shrink[label] = {"log2_ratio": m, "se": se}
        # 6 standard errors plus 0.1 bit: the per-layer ratio of a finite layer fluctuates (ReLU:
        # relative sd sqrt(5 / n) per layer)
        tol = 6 * se + 0.1
        checks.append({"check": f"engine at init, {label}: log2 Var[x^{layers}] / Var[x^1] = "
                                f"{expected[label]:g} (He et al. eq. 10: factor n Var[w] / 2 per layer)",
                       "measured": m, "tolerance": tol, "pass": abs(m - expected[label]) <= tol})
    rows = []
    for depth, rec in runs.items():
        for i, (label, _) in enumerate(INITS):
            acc = rec.test_accuracy[i, :, -1]
            loss = rec.train_loss[i, :, -1]
            rows.append({
                "depth": depth, "init": label,
                "final_test_accuracy": acc.tolist(),
                "final_train_accuracy": rec.train_accuracy[i, :, -1].tolist(),
                "final_train_loss": loss.tolist(),
                "median_test_accuracy": float(np.nanmedian(acc)),
                "median_train_loss": float(np.nanmedian(loss)),
                "steps_to_50pct_train_accuracy": _first_step(rec, i, 0.5),
                "stall_steps": _stall_steps(rec, i),
                "median_stall_steps": float(np.median([v if v is not None else math.inf
                                                       for v in _stall_steps(rec, i)])),
                "init_act_std_first_last": [float(np.median(init_std[depth][i, :, 0])),
                                            float(np.median(init_std[depth][i, :, -1]))],
                "diverged_seeds": int((rec.diverged_step[i] >= 0).sum()),
            })
    row = {(r["depth"], r["init"]): r for r in rows}
    x30, h30 = row[(30, "Xavier")], row[(30, "He")]
    x22, h22 = row[(22, "Xavier")], row[(22, "He")]
    rec30 = runs[30]
    # the record at which He's 30-layer net has converged (median train accuracy >= 90%)
    he_done = _first_step(rec30, 1, 0.9)
    at = int(np.flatnonzero(rec30.step == he_done)[0]) if he_done is not None else -1
    stall_loss_then = rec30.train_loss[0, :, at]
    stall_acc_then = rec30.test_accuracy[0, :, at]
    stalled_then = he_done is not None and bool(
        np.all(stall_loss_then >= LN10 - STALL_LOSS) and np.all(stall_acc_then < STALL_ACC))
    stalled_end = bool(np.all(rec30.train_loss[0, :, -1] >= LN10 - STALL_LOSS)
                       and np.all(rec30.test_accuracy[0, :, -1] < STALL_ACC))
    stall22, stall30 = x22["median_stall_steps"], x30["median_stall_steps"]
    checks += [
        {"check": f"30 layers, He learns: median final test accuracy >= {LEARN_ACC} (chance {CHANCE}) (Figure 3)",
         "measured": h30["median_test_accuracy"], "pass": h30["median_test_accuracy"] >= LEARN_ACC},
        {"check": f"30 layers, Xavier has not started learning when He has converged: at the first record "
                  f"with He's median train accuracy >= 90%, every Xavier seed's training loss is within "
                  f"{STALL_LOSS} of ln(10) = {LN10:.3f} and its test accuracy < {STALL_ACC} (Figure 3)",
         "measured": f"He converged at step {he_done}; Xavier then: losses "
                     + ", ".join(f"{v:.4f}" for v in stall_loss_then) + "; accuracies "
                     + ", ".join(f"{v:.3f}" for v in stall_acc_then),
         "pass": stalled_then},
        {"check": f"22 layers, both learn: median final test accuracy >= {LEARN_ACC} with Xavier and with He (Figure 2)",
         "measured": f"Xavier {x22['median_test_accuracy']:.3f}, He {h22['median_test_accuracy']:.3f}",
         "pass": x22["median_test_accuracy"] >= LEARN_ACC and h22["median_test_accuracy"] >= LEARN_ACC},
        {"check": "22 layers, He reaches 50% train accuracy sooner than Xavier (Figure 2)",
         "measured": f"He at step {h22['steps_to_50pct_train_accuracy']}, Xavier at step "
                     f"{x22['steps_to_50pct_train_accuracy']} (None: not within the run)",
         "pass": h22["steps_to_50pct_train_accuracy"] is not None and (
             x22["steps_to_50pct_train_accuracy"] is None
             or h22["steps_to_50pct_train_accuracy"] < x22["steps_to_50pct_train_accuracy"])},
        {"check": "Xavier stalls longer at 30 layers than at 22 (median step at which the training loss "
                  f"first falls {STALL_LOSS} below ln(10); never = beyond the run)",
         "measured": f"22 layers: {stall22}, 30 layers: {stall30}",
         "pass": stall30 > stall22},
    ]
    return {
        "name": NAME, "status": "done", "quick": quick, "seeds": seeds, "seconds": seconds,
        "setup": {"data": "digits (8x8, 1438 train / 359 test)", "model": "plain ReLU MLP",
                  "width": cfg["width"], "depths": list(DEPTHS), "batch": BATCH,
                  "optimizer": f"SGD, momentum {MOMENTUM}", "learning_rate": LEARNING_RATE,
                  "steps": cfg["steps"], "engine_width": cfg["engine_width"],
                  "engine_seeds": cfg["engine_seeds"]},
        "engine_log2_variance_ratio": shrink,
        "runs": rows,
        # reported, not a check: the issue asks that Xavier stall while He learns (checked above);
        # whether it stalls for a whole run depends on the run's length (see report.md)
        "finding_xavier30_stalls_whole_run": {
            "updates": int(rec30.step[-1]), "stalled": stalled_end,
            "final_train_loss": x30["final_train_loss"], "final_test_accuracy": x30["final_test_accuracy"],
            "first_step_loss_below_ln10_minus_stall": x30["stall_steps"]},
        "checks": checks,
        "all_pass": all(c["pass"] for c in checks),
    }


def _figures(out: Path, engine, runs, init_std) -> None:
    fig = plotting.new_figure(11.0, 4.0)
    a, b = fig.subplots(1, 2)
    for j, (label, v) in enumerate(engine.items()):
        layers = np.arange(1, v.shape[1] + 1)
        a.plot(layers, np.median(v, axis=0), "o-", ms=3, color=f"C{j}", label=f"{label} (engine, Gaussian input)")
    a.plot(layers, np.median(engine["Xavier"][:, 0]) * 2.0 ** -(layers - 1), "k--", lw=1, label="2^-(l-1): eq. 10")
    a.set_yscale("log", base=2)
    a.set_xlabel("layer")
    a.set_ylabel("Var[x^l] at init")
    a.set_title("30 ReLU layers at init: variance per layer", fontsize=9)
    a.legend(fontsize=7)
    for j, (label, _) in enumerate(INITS):
        s = np.median(init_std[max(DEPTHS)][j], axis=0)
        b.plot(np.arange(1, len(s) + 1), s, "o-", ms=3, color=f"C{j}", label=f"{label} (digits probe)")
    b.set_yscale("log", base=2)
    b.set_xlabel("layer")
    b.set_ylabel("std of activations at init")
    b.set_title("the same, measured on digits inside the trained nets", fontsize=9)
    b.legend(fontsize=7)
    _io.save_figure(fig, out / "variance-at-init")

    fig = plotting.new_figure(11.0, 7.0)
    axes = fig.subplots(2, 2)
    for col, depth in enumerate(DEPTHS):
        rec = runs[depth]
        for j, (label, _) in enumerate(INITS):
            for row, (field, name) in enumerate((("train_loss", "training loss"), ("test_accuracy", "test accuracy"))):
                ax = axes[row, col]
                v = getattr(rec, field)[j]
                with np.errstate(all="ignore"):
                    lo, med, hi = np.nanpercentile(v, [10, 50, 90], axis=0)
                ax.plot(rec.step, med, color=f"C{j}", label=label)
                ax.fill_between(rec.step, lo, hi, color=f"C{j}", alpha=0.2, lw=0)
                ax.set_ylabel(name)
                ax.set_title(f"{depth} layers: {name} (median, 10-90% over seeds)", fontsize=9)
        axes[0, col].axhline(LN10, color="k", ls=":", lw=1, label="ln(10)")
        axes[1, col].axhline(CHANCE, color="k", ls=":", lw=1, label="chance")
        axes[1, col].set_xlabel("updates")
        axes[0, col].legend(fontsize=7)
    _io.save_figure(fig, out / "curves")


def _whole_run(f: dict[str, Any]) -> str:
    if f["stalled"]:
        return f"in this run of {f['updates']} updates it never left ln(10) (every seed)."
    steps = ", ".join(str(v) for v in f["first_step_loss_below_ln10_minus_stall"])
    return (f"in this run of {f['updates']} updates it started to learn (loss {STALL_LOSS} below ln(10) at "
            f"steps {steps}, per seed; final test accuracy "
            + ", ".join(f"{v:.3f}" for v in f["final_test_accuracy"]) + ").")


def _markdown(r: dict[str, Any]) -> str:
    s = r["setup"]
    lines = [
        *_reports.header(
            "He et al. 2015, Figures 2-3: deep plain ReLU nets, Xavier vs He init",
            f"{r['seeds']} seeds; {s['model']} of width {s['width']}, depths {s['depths']}, on "
            f"{s['data']}; {s['optimizer']}, learning rate {s['learning_rate']}, batch {s['batch']}, "
            f"{s['steps']} updates; ", r),
        "",
        *_reports.checks_table(r["checks"]),
    ]
    e = r["engine_log2_variance_ratio"]
    lines += [
        "",
        "## At initialization",
        "",
        f"The engine ({s['engine_seeds']} seeds, width {s['engine_width']}, Gaussian inputs): "
        f"Var[x^30] / Var[x^1] = 2^{e['Xavier']['log2_ratio']:.2f} with Xavier (eq. 10: 2^-29) and "
        f"2^{e['He']['log2_ratio']:.2f} with He (eq. 10: 2^0).",
        "",
        "## Training",
        "",
        "| depth | init | median final test accuracy | median final training loss | first step with 50% train accuracy | "
        "first step with loss < ln(10) - 0.05, per seed | activation std at init, layer 1 -> last (digits) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["runs"]:
        f, l_ = row["init_act_std_first_last"]
        lines.append(f"| {row['depth']} | {row['init']} | {row['median_test_accuracy']:.3f} | "
                     f"{row['median_train_loss']:.4f} | {row['steps_to_50pct_train_accuracy']} | "
                     f"{', '.join(str(v) for v in row['stall_steps'])} | {f:.3g} -> {l_:.3g} |")
    lines += [
        "",
        "Paper (ImageNet, conv nets): 22 layers, both converge, He's init sooner (Figure 2); 30 layers, "
        "Xavier's init does not learn at all over the run shown, He's converges (Figure 3). Here "
        "(digits, MLPs) the numbers above say which of these hold; ln(10) = 2.303 is the loss of a "
        "uniform prediction over 10 classes. What the paper's two figures contrast as 'converges' vs "
        "'does not learn' appears here as a stall whose length grows with depth: Xavier's nets sit at "
        "ln(10) for hundreds of updates (longer at 30 layers than at 22) while He's learn at once; "
        "whether the 30-layer Xavier net stalls 'for the whole run' then depends on the run's length, "
        "so it is reported here, not checked: " + _whole_run(r["finding_xavier30_stalls_whole_run"]),
        "",
        "Departures from the paper: a small dataset and MLPs instead of ImageNet conv nets (the forward "
        "and backward variance factors per layer are the same, eq. 10 and 14); a short run at one "
        "learning rate; no weight decay; biases 0.",
        "",
        "Figures: `variance-at-init`, `curves` (PNG and PDF). Data: `records.npz`.",
        "",
    ]
    return "\n".join(lines)
