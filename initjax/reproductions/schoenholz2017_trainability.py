"""Schoenholz et al. 2017: deep tanh networks train only when their depth is below about 6 xi_c.

Paper: "Deep Information Propagation", ICLR 2017, https://arxiv.org/abs/1611.01232. For weights
``N(0, sigma_w^2 / N)`` and biases ``N(0, sigma_b^2)``, the correlation between two inputs'
pre-activations approaches its fixed point ``c*`` over ``xi_c`` layers, ``xi_c^-1 = -log(chi_c)``
(:func:`initjax.theory.depth_scales`); ``xi_c`` diverges at the order-to-chaos transition
(``sigma_w^2 ~ 1.76`` for tanh at ``sigma_b^2 = 0.05``). Their Figure 5 trains fully connected tanh
nets on MNIST and CIFAR-10 over a grid of ``(sigma_w^2, L)`` and finds the trainable region bounded
by ``L ~ 6 xi_c``: deeper networks stay at chance, shallower ones train.

What this runs: tanh MLPs of width 100 (quick: 32) on the 8x8 digits, weights
``variance_scaling(scale=sigma_w^2, mode=fan_in, distribution=normal)`` (exactly ``N(0, sigma_w^2 /
fan_in)``) in every layer, biases ``N(0, 0.05)``, over a grid of ``sigma_w^2`` (1.0 to 4.0) and depths
(10 to 90 hidden layers), trained briefly with SGD + momentum 0.9 at learning rate 0.1 / width; a
heat map of test accuracy with ``6 xi_c(sigma_w^2)`` overlaid, and the fraction of cells on the side
of the boundary that the theory predicts. A cell's accuracy is, per seed, the mean test accuracy
over the last third of the records (deep nets on the chaotic side fluctuate from record to
record), then the median over seeds; it "trains" when that reaches 0.5 (chance is 0.1); a seed
whose loss becomes non-finite counts as not trained. Departures: the paper's nets are
wider and its runs longer (it also shows the boundary moving as training goes on); ours are a few
hundred updates, so "trainable" here means "trains quickly", a stricter reading near the boundary.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initjax import _io, data, plotting, theory
from initjax.reproductions import _reports
from initjax.training.arms import Arm, Ensemble, epoch_batches, train_and_record

NAME = "schoenholz2017-trainability"
ACTIVATION = "tanh"
SIGMA_B2 = 0.05
TRAINED = 0.5  # test accuracy at which a cell counts as trained (chance: 0.1)
MOMENTUM = 0.9
BATCH = 64
AGREEMENT = 0.8


def _setup(quick: bool) -> dict[str, Any]:
    # groups: depths trained as one ensemble (shallower nets skip the deepest one's last layers:
    # one compilation for the group, paid for with the skipped layers' compute)
    if quick:
        return {"sigma_w2": (1.0, 1.75, 4.0), "groups": ((8, 48),), "width": 32, "steps": 300,
                "record_every": 50, "seeds": 2}
    return {"sigma_w2": (1.0, 1.5, 2.0, 2.5, 3.0, 4.0), "groups": ((10, 20), (40,), (60,), (90,)),
            "width": 100, "steps": 600, "record_every": 50, "seeds": 2}


def learning_rate(width: int) -> float:
    """0.1 / width: SGD's step in standard parameterization moves the outputs by an amount that
    grows with the width, so the rate is scaled down with it (0.003 at width 32, 0.001 at 100)."""
    return 0.1 / width


def _arm(sw2: float, lr: float, depth: int) -> Arm:
    return Arm(f"sigma_w^2={sw2:g}, L={depth}", ACTIVATION,
               f"variance_scaling:scale={sw2},mode=fan_in,distribution=normal",
               f"normal:stddev={math.sqrt(SIGMA_B2)}", learning_rate=lr, depth=depth)


def six_xi_c(sigma_w2: np.ndarray) -> np.ndarray:
    """``6 xi_c`` of tanh at ``sigma_b^2 = 0.05`` (Schoenholz et al.'s trainability depth)."""
    scales = jax.jit(jax.vmap(lambda a: theory.depth_scales(a, SIGMA_B2, ACTIVATION)))(
        jnp.asarray(sigma_w2, jnp.float32))
    return 6.0 * np.asarray(scales.xi_c, np.float64)


def run(out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Train the (sigma_w^2, depth) grid on digits; write the heat map with 6 xi_c, ``grid.npz``,
    ``report.json`` and ``report.md`` into ``out``."""
    t0 = time.perf_counter()
    cfg = _setup(quick)
    seeds = seeds if seeds is not None else cfg["seeds"]
    out = _reports.begin(out, NAME)
    sw = np.asarray(cfg["sigma_w2"], np.float64)
    depths = np.asarray([d for group in cfg["groups"] for d in group])
    ds = data.digits()
    lr = learning_rate(cfg["width"])
    acc = np.full((len(depths), len(sw), seeds), np.nan)  # (depth, sigma_w2, seed)
    loss = np.full_like(acc, np.nan)
    diverged = np.zeros((len(depths), len(sw), seeds), bool)
    curves = {}
    j = 0
    for group in cfg["groups"]:
        arms = [_arm(float(s), lr, int(d)) for d in group for s in sw]
        ens = Ensemble(arms, in_dim=ds.x_train.shape[1], width=cfg["width"], depth=max(group),
                       classes=ds.num_classes, seeds=seeds, key=0, momentum=MOMENTUM)
        rec = train_and_record(
            ens, epoch_batches(ds.x_train, ds.y_train, BATCH, seed=0), steps=cfg["steps"],
            record_steps=range(0, cfg["steps"] + 1, cfg["record_every"]),
            test=(ds.x_test, ds.y_test), train_eval=(ds.x_train[:500], ds.y_train[:500]), progress=progress)
        # a cell's accuracy: the mean over the last third of the records (deep nets near the
        # chaotic side fluctuate from record to record), per seed
        last = rec.test_accuracy[:, :, -max(1, len(rec.step) // 3):]
        cell = np.where(np.isfinite(last), last, 0.0).mean(axis=-1).reshape(len(group), len(sw), seeds)
        for g, depth in enumerate(group):
            sl = slice(g * len(sw), (g + 1) * len(sw))
            acc[j] = cell[g]
            loss[j] = rec.train_loss[sl, :, -1]
            diverged[j] = rec.diverged_step[sl] >= 0
            curves[int(depth)] = rec.test_accuracy[sl]
            j += 1
    fine = np.linspace(min(sw.min(), 1.0), max(sw.max(), 4.0), 121)
    both = six_xi_c(np.concatenate([sw, fine]))  # one compilation for the grid and the curve
    boundary, fine_boundary = both[: len(sw)], both[len(sw):]
    _io.write_npz(out / "grid.npz", sigma_w2=sw, depths=depths, test_accuracy=acc, train_loss=loss,
                  diverged=diverged, six_xi_c=boundary, fine_sigma_w2=fine, fine_six_xi_c=fine_boundary,
                  **{f"curve_depth{d}": v for d, v in curves.items()})
    report = _report(quick, seeds, cfg, sw, depths, acc, diverged, boundary, time.perf_counter() - t0)
    _figures(out, sw, depths, acc, fine, fine_boundary, curves, cfg)
    return _reports.finish(out, report, _markdown(report))


def _report(quick, seeds, cfg, sw, depths, acc, diverged, boundary, seconds) -> dict[str, Any]:
    med = np.median(np.where(np.isfinite(acc), acc, 0.0), axis=-1)  # (depth, sigma_w2)
    trained = med >= TRAINED
    predicted = depths[:, None] < boundary[None, :]
    deep = ~predicted
    well_below = depths[:, None] < boundary[None, :] / 2
    agree = trained == predicted
    cells = []
    for j, d in enumerate(depths):
        for i, s in enumerate(sw):
            cells.append({"depth": int(d), "sigma_w2": float(s), "six_xi_c": float(boundary[i]),
                          "median_test_accuracy": float(med[j, i]), "per_seed": acc[j, i].tolist(),
                          "diverged_seeds": int(diverged[j, i].sum()), "trained": bool(trained[j, i]),
                          "predicted_trainable": bool(predicted[j, i])})

    def frac(mask, ok):
        n = int(mask.sum())
        return (float((ok & mask).sum() / n) if n else math.nan), n

    f_deep, n_deep = frac(deep, ~trained)
    f_below, n_below = frac(well_below, trained)
    f_all, n_all = frac(np.ones_like(trained), agree)
    checks = [
        {"check": f"cells deeper than 6 xi_c fail to train (median test accuracy < {TRAINED}): "
                  f">= {AGREEMENT:.0%} of them",
         "measured": f"{f_deep:.0%} of {n_deep} cells", "pass": n_deep > 0 and f_deep >= AGREEMENT},
        {"check": f"cells shallower than 3 xi_c (well below the boundary) train: >= {AGREEMENT:.0%} of them",
         "measured": f"{f_below:.0%} of {n_below} cells", "pass": n_below > 0 and f_below >= AGREEMENT},
        {"check": f"all cells: trained iff depth < 6 xi_c, agreement >= {AGREEMENT:.0%}",
         "measured": f"{f_all:.0%} of {n_all} cells", "pass": f_all >= AGREEMENT},
    ]
    return {
        "name": NAME, "status": "done", "quick": quick, "seeds": seeds, "seconds": seconds,
        "setup": {"activation": ACTIVATION, "sigma_b2": SIGMA_B2, "sigma_w2": sw.tolist(),
                  "depths": depths.tolist(), "width": cfg["width"], "steps": cfg["steps"],
                  "batch": BATCH, "optimizer": f"SGD, momentum {MOMENTUM}",
                  "learning_rate": learning_rate(cfg["width"]), "trained_threshold": TRAINED,
                  "data": "digits (8x8, 1438 train / 359 test)"},
        "six_xi_c": dict(zip([f"{s:g}" for s in sw], boundary.tolist(), strict=True)),
        "cells": cells,
        "agreement": f_all,
        "checks": checks,
        "all_pass": all(c["pass"] for c in checks),
    }


def _figures(out: Path, sw, depths, acc, fine, fine_boundary, curves, cfg) -> None:
    from matplotlib import colors

    med = np.median(np.where(np.isfinite(acc), acc, 0.0), axis=-1)
    fig = plotting.new_figure(6.5, 4.5)
    ax = fig.subplots()
    mesh = ax.pcolormesh(sw, depths, med, shading="nearest", cmap="viridis",
                         norm=colors.Normalize(0.0, 1.0))
    fig.colorbar(mesh, ax=ax, label="test accuracy (median over seeds)")
    ok = np.isfinite(fine_boundary)
    top = depths.max() * 1.15
    ax.plot(fine[ok], np.minimum(fine_boundary[ok], top), "w--", lw=1.5, label="6 xi_c (mean-field theory)")
    for j, d in enumerate(depths):
        for i, s in enumerate(sw):
            ax.text(s, d, f"{med[j, i]:.2f}", ha="center", va="center", fontsize=6,
                    color="k" if med[j, i] > 0.6 else "w")
    ax.set_ylim(0, top)
    ax.set_xlabel("sigma_w^2")
    ax.set_ylabel("depth L (hidden layers)")
    ax.set_title(f"tanh, sigma_b^2 = {SIGMA_B2}: test accuracy, last third of {cfg['steps']} updates "
                 "(Schoenholz et al. 2017, Fig. 5)", fontsize=8)
    ax.legend(fontsize=7, loc="upper right")
    _io.save_figure(fig, out / "trainability")


def _markdown(r: dict[str, Any]) -> str:
    s = r["setup"]
    lines = [
        "# Schoenholz et al. 2017: trainability against 6 xi_c",
        "",
        f"tanh MLPs of width {s['width']}, weights N(0, sigma_w^2 / fan_in), biases N(0, {s['sigma_b2']}); "
        f"{s['optimizer']}, learning rate {s['learning_rate']}, batch {s['batch']}, {s['steps']} updates on "
        f"{s['data']}; {r['seeds']} seeds per cell; {r['seconds']:.0f} s"
        + (" (quick mode)" if r["quick"] else "") + ".",
        "",
        *_reports.checks_table(r["checks"]),
    ]
    sw = s["sigma_w2"]
    lines += [
        "",
        "## Median test accuracy (rows: depth; columns: sigma_w^2; * = deeper than 6 xi_c)",
        "",
        "| depth | " + " | ".join(f"{v:g}" for v in sw) + " |",
        "|---|" + "---|" * len(sw),
        "| 6 xi_c | " + " | ".join(f"{r['six_xi_c'][f'{v:g}']:.1f}" for v in sw) + " |",
    ]
    by = {(c["depth"], c["sigma_w2"]): c for c in r["cells"]}
    for d in s["depths"]:
        row = []
        for v in sw:
            c = by[(d, v)]
            mark = "" if c["predicted_trainable"] else "*"
            div = f" ({c['diverged_seeds']} diverged)" if c["diverged_seeds"] else ""
            row.append(f"{c['median_test_accuracy']:.2f}{mark}{div}")
        lines.append(f"| {d} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Paper (MNIST, CIFAR-10): networks train where L < ~6 xi_c and not beyond, the boundary following "
        "6 xi_c on both sides of the critical point. Here: the table and checks above; the mismatched "
        "cells, if any, are those where the measured accuracy and the * disagree.",
        "",
        "Departures: digits instead of MNIST; narrower nets; a few hundred updates (the paper's Figure 5 "
        "trains longer), so near the boundary our runs can fail for lack of time rather than of "
        "trainability; the boundary itself is the mean-field 6 xi_c from `initjax.theory.depth_scales`.",
        "",
        "Figure: `trainability` (PNG and PDF). Data: `grid.npz`.",
        "",
    ]
    return "\n".join(lines)
