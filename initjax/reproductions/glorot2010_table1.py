"""Glorot & Bengio 2010, Table 1: test error of 5-hidden-layer nets by activation and init.

Paper: "Understanding the difficulty of training deep feedforward neural networks", AISTATS 2010,
https://proceedings.mlr.press/v9/glorot10a.html. Five hidden layers of 1000 units, softmax output,
SGD on minibatches of 10, biases 0; "N" marks the normalized initialization
``U[-sqrt(6 / (n_in + n_out)), +sqrt(6 / (n_in + n_out))]`` (``xavier_uniform``), the others use the
standard ``U[-1/sqrt(n), 1/sqrt(n)]`` (``glorot2010_standard``). Test error % (Table 1, 5 hidden
layers; the learning rate was chosen per network on validation error, and Shapeset was trained
online for many epochs of 20k updates):

==========  ========  =====
network     Shapeset  MNIST
==========  ========  =====
Softsign    16.27     1.64
Softsign N  16.06     1.72
Tanh        27.15     1.76
Tanh N      15.60     1.64
Sigmoid     82.61     2.21
==========  ========  =====

What this runs, on a 2-core CPU: the same five networks on online Shapeset-3x2 and on
scikit-learn's 8x8 digits (the bundled stand-in for MNIST: 1438 training and 359 test images of 64
pixels instead of 60,000 and 10,000 of 784, so its errors are neither comparable to the MNIST
column nor resolved below 1/359 = 0.28%). Budget: a fixed number of updates at one learning rate
for all networks (0.1), not the paper's long runs with tuned rates; hidden width 128 (quick: 32)
instead of 1000; on Shapeset minibatches of 100 (six times more images per second on a CPU than
10; digits keep the paper's 10). The report puts mean test errors over seeds beside the paper's and
checks the orderings the paper draws from the table: normalized init helps tanh, softsign is robust
to the standard init where tanh is not, and sigmoid is worst.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from initjax import _io, data, plotting
from initjax.reproductions import _reports
from initjax.training.arms import Arm, Ensemble, Records, epoch_batches, train_and_record

NAME = "glorot2010-table1"
DEPTH = 5
LEARNING_RATE = 0.1
# (label, activation, kernel init); "N" = normalized (Xavier uniform)
NETWORKS = (
    ("Softsign", "softsign", "glorot2010_standard"),
    ("Softsign N", "softsign", "xavier_uniform"),
    ("Tanh", "tanh", "glorot2010_standard"),
    ("Tanh N", "tanh", "xavier_uniform"),
    ("Sigmoid", "sigmoid", "glorot2010_standard"),
)
# Table 1 of the paper, test error %, 5 hidden layers
PAPER = {
    "shapeset": {"Softsign": 16.27, "Softsign N": 16.06, "Tanh": 27.15, "Tanh N": 15.60, "Sigmoid": 82.61},
    "mnist": {"Softsign": 1.64, "Softsign N": 1.72, "Tanh": 1.76, "Tanh N": 1.64, "Sigmoid": 2.21},
}


def _setup(quick: bool) -> dict[str, Any]:
    if quick:
        return {"width": 32, "seeds": 2,
                "shapeset": {"batch": 100, "steps": 1000, "record_every": 250, "n_test": 1000},
                "digits": {"batch": 10, "steps": 1000, "record_every": 250}}
    return {"width": 128, "seeds": 3,
            "shapeset": {"batch": 100, "steps": 10000, "record_every": 500, "n_test": 5000},
            "digits": {"batch": 10, "steps": 6000, "record_every": 250}}


def run(out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Train the five networks of Table 1 on Shapeset-3x2 and digits; write the table beside the
    paper's, error curves, ``report.json`` and ``report.md`` into ``out``."""
    t0 = time.perf_counter()
    cfg = _setup(quick)
    seeds = seeds if seeds is not None else cfg["seeds"]
    out = _reports.begin(out, NAME)
    arms = [Arm(label, act, init, learning_rate=LEARNING_RATE) for label, act, init in NETWORKS]
    runs: dict[str, Records] = {}

    s = cfg["shapeset"]
    test = next(data.shapeset_stream(1, s["n_test"], split="test"))
    held_out = next(data.shapeset_stream(2, 1000, split="test"))
    ens = Ensemble(arms, in_dim=data.SHAPESET_IMAGE_SIZE ** 2, width=cfg["width"], depth=DEPTH,
                   classes=len(data.SHAPESET_CLASSES), seeds=seeds, key=0)
    runs["shapeset"] = train_and_record(
        ens, data.shapeset_stream(0, s["batch"]), steps=s["steps"],
        record_steps=range(0, s["steps"] + 1, s["record_every"]), test=test, train_eval=held_out,
        progress=progress)

    d = cfg["digits"]
    ds = data.digits()
    ens = Ensemble(arms, in_dim=ds.x_train.shape[1], width=cfg["width"], depth=DEPTH,
                   classes=ds.num_classes, seeds=seeds, key=0)
    runs["digits"] = train_and_record(
        ens, epoch_batches(ds.x_train, ds.y_train, d["batch"], seed=0), steps=d["steps"],
        record_steps=range(0, d["steps"] + 1, d["record_every"]), test=(ds.x_test, ds.y_test),
        train_eval=(ds.x_train, ds.y_train), progress=progress)

    _io.write_npz(out / "records.npz", **{f"{name}_{k}": v for name, rec in runs.items()
                                         for k, v in rec._asdict().items() if v is not None})
    report = _report(quick, seeds, cfg, runs, time.perf_counter() - t0)
    _figures(out, runs, cfg)
    return _reports.finish(out, report, _markdown(report))


def _errors(rec: Records) -> tuple[np.ndarray, np.ndarray]:
    """Final test error % per network: mean over seeds and its standard error."""
    err = 100.0 * (1.0 - rec.test_accuracy[:, :, -1])  # (arm, seed)
    n = err.shape[1]
    se = err.std(axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.full(err.shape[0], np.nan)
    return err.mean(axis=1), se


def _report(quick, seeds, cfg, runs, seconds) -> dict[str, Any]:
    labels = [n[0] for n in NETWORKS]
    table = {}
    for name, rec in runs.items():
        mean, se = _errors(rec)
        table[name] = {lab: {"error_percent": float(m), "se": float(e),
                             "per_seed": (100 * (1 - rec.test_accuracy[i, :, -1])).tolist(),
                             "diverged_seeds": int((rec.diverged_step[i] >= 0).sum())}
                       for i, (lab, m, e) in enumerate(zip(labels, mean, se, strict=True))}

    def err(name: str, lab: str) -> float:
        return table[name][lab]["error_percent"]

    def fmt(name: str, *labs: str) -> str:
        return ", ".join(f"{lab} {err(name, lab):.2f} (SE {table[name][lab]['se']:.2f})" for lab in labs)

    others = [lab for lab in labels if lab != "Sigmoid"]
    checks = [
        {"check": "Shapeset: Tanh N has lower test error than Tanh (paper 15.60 vs 27.15)",
         "measured": fmt("shapeset", "Tanh N", "Tanh"),
         "pass": err("shapeset", "Tanh N") < err("shapeset", "Tanh")},
        {"check": "Shapeset: Softsign (standard init) has lower test error than Tanh (standard init): "
                  "softsign is robust to the init (paper 16.27 vs 27.15)",
         "measured": fmt("shapeset", "Softsign", "Tanh"),
         "pass": err("shapeset", "Softsign") < err("shapeset", "Tanh")},
        {"check": "Shapeset: Sigmoid has the highest test error (paper 82.61, the others <= 27.15)",
         "measured": fmt("shapeset", "Sigmoid", *others),
         "pass": all(err("shapeset", "Sigmoid") > err("shapeset", lab) for lab in others)},
        {"check": "digits: Sigmoid has the highest test error (paper, MNIST: 2.21, the others <= 1.76)",
         "measured": fmt("digits", "Sigmoid", *others),
         "pass": all(err("digits", "Sigmoid") > err("digits", lab) for lab in others)},
    ]
    return {
        "name": NAME, "status": "done", "quick": quick, "seeds": seeds, "seconds": seconds,
        "setup": {"depth": DEPTH, "width": cfg["width"], "learning_rate": LEARNING_RATE, "optimizer": "sgd",
                  "shapeset": {**cfg["shapeset"], "data": "online Shapeset-3x2 stream"},
                  "digits": {**cfg["digits"], "data": "scikit-learn digits, 1438 train / 359 test"}},
        "table": table,
        "paper": PAPER,
        "checks": checks,
        "all_pass": all(c["pass"] for c in checks),
    }


def _figures(out: Path, runs, cfg) -> None:
    fig = plotting.new_figure(11.0, 4.0)
    for ax, (name, rec) in zip(fig.subplots(1, 2), runs.items(), strict=True):
        for i, (label, _, _) in enumerate(NETWORKS):
            err = 100 * (1 - rec.test_accuracy[i])
            with np.errstate(all="ignore"):
                lo, med, hi = np.nanpercentile(err, [10, 50, 90], axis=0)
            ax.plot(rec.step, med, color=f"C{i}", label=label)
            ax.fill_between(rec.step, lo, hi, color=f"C{i}", alpha=0.15, lw=0)
        batch = cfg[name]["batch"]
        plotting.label_axes(ax, f"updates (minibatch {batch})", "test error %",
                            f"{name}: test error, 5 hidden layers (median, 10-90% over seeds)")
    _io.save_figure(fig, out / "test-error")


def _markdown(r: dict[str, Any]) -> str:
    s = r["setup"]
    sh, dg = s["shapeset"], s["digits"]
    lines = [
        "# Glorot & Bengio 2010, Table 1: test error %, 5 hidden layers",
        "",
        f"{r['seeds']} seeds; width {s['width']}; plain SGD at learning rate {s['learning_rate']} for all networks; "
        f"Shapeset: {sh['steps']} updates of minibatch {sh['batch']} from the online stream "
        f"({sh['steps'] * sh['batch']:,} images), {sh['n_test']} test images; digits: {dg['steps']} updates of "
        f"minibatch {dg['batch']}; {r['seconds']:.0f} s" + (" (quick mode)" if r["quick"] else "") + ".",
        "",
        "| network | Shapeset (ours) | Shapeset (paper) | digits (ours) | MNIST (paper) |",
        "|---|---|---|---|---|",
    ]
    for label, _, _ in NETWORKS:
        a, b = r["table"]["shapeset"][label], r["table"]["digits"][label]
        lines.append(f"| {label} | {a['error_percent']:.2f} +- {a['se']:.2f} | {r['paper']['shapeset'][label]:.2f} | "
                     f"{b['error_percent']:.2f} +- {b['se']:.2f} | {r['paper']['mnist'][label]:.2f} |")
    lines += [
        "",
        "Ours: mean over seeds +- standard error. Chance is 88.9% on Shapeset (9 classes) and 90% on digits.",
        "",
        *_reports.checks_table(r["checks"], "## Checks (the orderings the paper reads from the table)"),
    ]
    lines += [
        "",
        "## Why the numbers differ from the paper's",
        "",
        f"- Budget: the paper trains Shapeset online for millions of updates and picks each network's "
        f"learning rate on validation error; we stop after {sh['steps'] * sh['batch']:,} images at one "
        "learning rate, so our Shapeset errors are far higher, and networks that start learning late "
        "(the standard-init ones) are furthest from their final error. The orderings, not the values, "
        "are what this short run can test.",
        f"- Size: width {s['width']} instead of 1000; Shapeset minibatch {sh['batch']} instead of 10.",
        "- digits is not MNIST: 1438 training images of 8x8 pixels; one test image is 0.28%, so "
        "differences of the MNIST column's size (0.1%) are below its resolution.",
        "",
        "Figure: `test-error` (PNG and PDF). Data: `records.npz`.",
        "",
    ]
    return "\n".join(lines)
