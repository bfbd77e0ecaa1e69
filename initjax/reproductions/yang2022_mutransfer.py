"""Yang et al. 2022 (Tensor Programs V), Figure 1: the optimal learning rate under SP and muP.

Paper: "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter Transfer",
https://arxiv.org/abs/2203.03466. Figure 1 trains Transformers of widths 128..8192 with Adam
over a grid of learning rates and plots the training loss against log2 learning rate, one line
per width: under the standard parametrization (SP) the optimum drifts from about 2^-10 to 2^-16
as the width grows (and wider is not always better); under muP it stays at about 2^-10 and the
loss falls monotonically with width.

What this runs, on the 8x8 digits that ship with initjax (no download):

(a) Width: MLPs ``64 -> width -> width -> 10`` (ReLU, He-normal hidden layers, a linear
    ``lecun_normal`` readout, zero biases: :func:`initjax.parametrization.mlp`), under SP and
    under muP for Adam (TP5 Table 3) with the base width the smallest width (so at that width
    the two are the same network), over a 16x range of widths; Adam at every learning rate of a
    log2 grid, several seeds; the training loss is the training objective (mean softmax
    cross-entropy of the training minibatches) averaged over the last tenth of the updates.
(b) Depth: residual MLPs ``64 -> width`` (input layer), ``L`` pre-activation blocks
    ``x + alpha W relu(x)``, a linear readout, at a fixed width, over depths ``L``: depth-muP
    (TP6: ``alpha = alpha0 (L / L0)^-1/2`` and the hidden layers' Adam learning rate times
    ``(L / L0)^-1/2``) against muP without depth scaling (``alpha = alpha0`` at every depth),
    ``alpha0 = 1 / sqrt(L0)``, ``L0`` the smallest depth.

Every (learning rate, seed) pair of one network is one compiled program
(:func:`initjax.transfer.lr_sweep`). Checks: muP's optimal log2 learning rate (the parabola
refinement of :meth:`~initjax.transfer.LRSweep.optimal_log2_lr`) moves by at most 1 over the
widths while SP's moves by more; depth-muP's moves by at most 1 over the depths while the
unscaled one's moves by more; no optimum on the grid's edge (a shift measured against an edge
would be cut short).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from initjax import data
from initjax.network import Dense, Network, Repeat, Residual
from initjax.reproductions import _reports

__all__ = ["NAME", "WIDTH_ARMS", "DEPTH_ARMS", "sizes", "width_network", "depth_network", "run"]

NAME = "yang2022-mutransfer"
WIDTH_ARMS = (("SP", "sp"), ("muP", "mup"))
DEPTH_ARMS = (("depth-muP", "depth_mup"), ("muP, no depth scaling", "mup"))
MAX_SHIFT = 1.0  # the transfer criterion: the optimum moves by at most 1 in log2 lr
OPTIMIZER = "adam"
IN_WIDTH, CLASSES = 64, 10


def sizes(quick: bool) -> dict[str, Any]:
    """The run's sizes (stated in the report)."""
    if quick:
        return {"widths": (16, 256), "log2_lrs": (-11.0, 0.0, 1.0), "seeds": 2, "steps": 100,
                "batch": 32, "depth_width": 16, "depths": (2, 8), "depth_steps": 100}
    return {"widths": (64, 128, 256, 512, 1024), "log2_lrs": (-14.0, -1.0, 1.0), "seeds": 3,
            "steps": 200, "batch": 32, "depth_width": 128, "depths": (2, 4, 8, 16),
            "depth_steps": 200}


def _grid(spec: tuple[float, float, float]) -> np.ndarray:
    lo, hi, step = spec
    return 2.0 ** np.arange(lo, hi + step / 2, step)


def width_network(width: int, parametrization: str, base_width: int) -> Network:
    """Part (a)'s MLP ``64 -> width -> width -> 10`` under ``parametrization`` for Adam."""
    from initjax import parametrization as P

    return P.mlp(IN_WIDTH, width, 3, CLASSES, parametrization=parametrization,
                 optimizer=OPTIMIZER, base_width=base_width)


def depth_network(width: int, depth: int, parametrization: str, base_depth: int) -> Network:
    """Part (b)'s residual MLP: ``64 -> width`` (ReLU, He), ``depth`` blocks
    ``x + alpha W relu(x)`` (He-normal ``W``, ``alpha = 1 / sqrt(base_depth)`` at the base
    depth), a linear ``lecun_normal`` readout; under ``parametrization`` for Adam (base width
    ``width``, so only depth scaling acts)."""
    from initjax import parametrization as P

    block = Residual((Dense(width, "he_normal", "relu", preactivation=True),),
                     alpha=1.0 / math.sqrt(base_depth))
    net = Network(IN_WIDTH, (Dense(width, "he_normal", "relu"), Repeat(block, depth),
                             Dense(CLASSES, "lecun_normal", "identity")))
    uses_depth = P.get(parametrization, OPTIMIZER).uses_depth
    return P.parametrize(net, parametrization, base_width=width, optimizer=OPTIMIZER,
                         base_depth=base_depth if uses_depth else None)


def _sweeps(arms, sizes_, make, ds, lrs, size, steps, progress, what):
    from initjax import transfer

    out = {}
    for label, par in arms:
        out[label] = transfer.transfer(
            sizes_, lambda n, par=par: make(n, par), ds, learning_rates=lrs, seeds=size["seeds"],
            optimizer=OPTIMIZER, steps=steps, batch_size=size["batch"], progress=progress,
            label=f"{label}, {what}")
    return out


def run(
    out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """(a) SP vs muP over widths, (b) depth-muP vs unscaled over depths; figures, data, reports."""
    from initjax import transfer

    size = sizes(quick)
    out, seeds, t0 = _reports.start(out, NAME, seeds, size["seeds"])
    size = {**size, "seeds": seeds}
    ds = data.digits()
    lrs = _grid(size["log2_lrs"])
    base_width, base_depth = min(size["widths"]), min(size["depths"])
    widths = _sweeps(WIDTH_ARMS, size["widths"],
                     lambda w, par: width_network(w, par, base_width),
                     ds, lrs, size, size["steps"], progress, "width")
    depths = _sweeps(DEPTH_ARMS, size["depths"],
                     lambda d, par: depth_network(size["depth_width"], d, par, base_depth),
                     ds, lrs, size, size["depth_steps"], progress, "depth")
    for part, panels in (("width", widths), ("depth", depths)):
        for label, sweeps in panels.items():
            for n, sw in sweeps.items():
                sw.save(out / "data" / f"{part}-{_reports.slug(label)}-{n}.npz")
    report = _report(quick, size, lrs, widths, depths, time.perf_counter() - t0)
    _figures(out, widths, depths, transfer)
    return _reports.finish(out, report, _markdown(report))


def _arm_summary(sweeps: dict[int, Any]) -> dict[str, Any]:
    opt = {str(n): sw.optimal_log2_lr() for n, sw in sweeps.items()}
    vals = np.array([v for v in opt.values()], np.float64)
    finite = vals[np.isfinite(vals)]
    return {
        "optimal_log2_lr": opt,
        "optimal_log2_lr_grid": {str(n): sw.optimal_log2_lr("argmin") for n, sw in sweeps.items()},
        "best_loss": {str(n): float(np.min(sw.seed_mean_loss())) for n, sw in sweeps.items()},
        "best_loss_se": {str(n): float(sw.seed_se()[sw.best_index()]) if sw.best_index() >= 0
                         else float("nan") for n, sw in sweeps.items()},
        "at_edge": [int(n) for n, sw in sweeps.items() if sw.optimum_at_edge()],
        "diverged_members": {str(n): int(sw.diverged.sum()) for n, sw in sweeps.items()},
        "seed_mean_loss": {str(n): sw.seed_mean_loss().tolist() for n, sw in sweeps.items()},
        "shift": float(finite.max() - finite.min()) if finite.size == len(vals) else float("nan"),
        "seconds": {str(n): sw.seconds for n, sw in sweeps.items()},
    }


def _moves_more(summary: dict[str, Any], stable: str, unstable: str) -> bool:
    a, b = summary[stable]["shift"], summary[unstable]["shift"]
    return bool(np.isfinite(a) and np.isfinite(b) and b > a)


def _transfer_checks(summary: dict[str, Any], stable: str, unstable: str, what: str,
                     span: str, compare: bool) -> list[dict[str, Any]]:
    """The stable arm's shift <= MAX_SHIFT; with ``compare`` also the unstable arm's shift above
    it; both arms' optima inside the grid."""
    a, b = summary[stable], summary[unstable]
    checks = [
        {"check": f"{stable}: optimal log2 learning rate moves by at most {MAX_SHIFT:g} across "
                  f"the {span} (max - min over {what}, parabola-refined)",
         "measured": a["shift"], "tolerance": MAX_SHIFT,
         "pass": bool(np.isfinite(a["shift"]) and a["shift"] <= MAX_SHIFT)},
    ]
    if compare:
        checks.append(
            {"check": f"{unstable}: its optimal log2 learning rate moves more than {stable}'s "
                      f"across the {span} (measured: {unstable}'s shift; {stable}'s "
                      f"{a['shift']:.2f})",
             "measured": b["shift"], "pass": _moves_more(summary, stable, unstable)})
    for label in (stable, unstable):
        edge = summary[label]["at_edge"]
        checks.append({
            "check": f"{label}: every optimum inside the learning-rate grid (not at its edge; "
                     f"{what} at the edge: {edge or 'none'})",
            "measured": len(edge), "tolerance": 0, "pass": not edge})
    return checks


def _report(quick, size, lrs, widths, depths, seconds) -> dict[str, Any]:
    wsum = {label: _arm_summary(sw) for label, sw in widths.items()}
    dsum = {label: _arm_summary(sw) for label, sw in depths.items()}
    ws, ds_ = size["widths"], size["depths"]
    # Width: the criterion (muP <= 1, SP more). Depth: depth-muP <= 1 is checked; whether
    # the unscaled arm moves more is reported, not checked (with Adam its optimum need not move:
    # it trains worse at every rate instead, see the report's best losses).
    checks = (_transfer_checks(wsum, "muP", "SP", "widths",
                               f"{max(ws) // min(ws)}x width range {min(ws)}-{max(ws)}", True)
              + _transfer_checks(dsum, "depth-muP", "muP, no depth scaling", "depths",
                                 f"{max(ds_) // min(ds_)}x depth range {min(ds_)}-{max(ds_)}",
                                 False))
    return {
        "name": NAME, "status": "done", "quick": quick, "seeds": size["seeds"],
        "seconds": seconds,
        "setup": {
            "data": "digits (1437 training images, 64 standardized pixels, 10 classes)",
            "optimizer": "adam (optax defaults b1 0.9, b2 0.999, eps 1e-8), constant rate",
            "loss": "training objective: mean softmax cross-entropy of the training minibatches, "
                    "averaged over the last tenth of the updates",
            "learning_rates": lrs.tolist(), "log2_learning_rates": np.log2(lrs).tolist(),
            "widths": list(ws), "base_width": min(ws), "width_steps": size["steps"],
            "depths": list(ds_), "base_depth": min(ds_), "depth_width": size["depth_width"],
            "depth_steps": size["depth_steps"], "batch": size["batch"], "seeds": size["seeds"],
            "width_network": "64 -> width -> width -> 10, ReLU (initjax.parametrization.mlp)",
            "depth_network": "64 -> width, L blocks x + alpha W relu(x), -> 10; "
                             "alpha = 1/sqrt(L0) (x (L/L0)^-1/2 under depth-muP)",
        },
        "optimal_log2_lr": {label: s["optimal_log2_lr"] for label, s in wsum.items()},
        "optimal_log2_lr_depth": {label: s["optimal_log2_lr"] for label, s in dsum.items()},
        "width": wsum,
        "depth": dsum,
        "sp_moves_more_than_mup": _moves_more(wsum, "muP", "SP"),
        "mup_best_loss_falls_with_width": bool(np.all(np.diff(
            [wsum["muP"]["best_loss"][str(w)] for w in ws]) <= 0)),
        "unscaled_moves_more_than_depth_mup": _moves_more(dsum, "depth-muP",
                                                          "muP, no depth scaling"),
        "checks": checks,
        "all_pass": all(c["pass"] for c in checks),
    }


def _figures(out: Path, widths, depths, transfer) -> None:
    from initjax._io import save_figure

    top = 1.5 * math.log(CLASSES)  # above chance level (ln 10), below the blown-up rates
    fig = transfer.plot_transfer(widths, size_name="width", top=top)
    fig.suptitle("Training loss vs learning rate, MLPs on digits, Adam (TP5 Fig. 1)", fontsize=10)
    save_figure(fig, out / "width_transfer")
    fig = transfer.plot_transfer(depths, size_name="depth", top=top)
    fig.suptitle("Training loss vs learning rate, residual MLPs on digits, Adam", fontsize=10)
    save_figure(fig, out / "depth_transfer")


def _markdown(report: dict[str, Any]) -> str:
    s = report["setup"]
    fmt = _reports.fmt
    lines = [
        *_reports.header(
            "The optimal learning rate under SP and muP (Yang et al. 2022, TP5 Figure 1)",
            f"digits, Adam, log2 learning rates {s['log2_learning_rates'][0]:g} to "
            f"{s['log2_learning_rates'][-1]:g} step "
            f"{s['log2_learning_rates'][1] - s['log2_learning_rates'][0]:g}, {s['seeds']} seeds, "
            f"batch {s['batch']}; (a) MLPs 64 -> w -> w -> 10, widths {s['widths']} (base "
            f"{s['base_width']}), {s['width_steps']} updates; (b) residual MLPs of width "
            f"{s['depth_width']}, depths {s['depths']} (base {s['base_depth']}), "
            f"{s['depth_steps']} updates; ", report),
        "",
    ]
    for part, title, size_name in (("width", "(a) Width", "width"), ("depth", "(b) Depth", "depth")):
        arms = report[part]
        lines += [f"## {title}", "",
                  f"| parametrization | {size_name} | optimal log2 lr (parabola) | grid argmin | "
                  "best loss (seed mean) | diverged members |", "|---|---|---|---|---|---|"]
        for label, a in arms.items():
            for n, v in a["optimal_log2_lr"].items():
                edge = " (edge)" if int(n) in a["at_edge"] else ""
                lines.append(f"| {label} | {n} | {fmt(v, 3)}{edge} | "
                             f"{fmt(a['optimal_log2_lr_grid'][n], 3)} | {fmt(a['best_loss'][n])} | "
                             f"{a['diverged_members'][n]} |")
            lines.append(f"| {label} | shift (max - min) | {fmt(a['shift'], 3)} | | | |")
        lines.append("")
    d = report["depth"]
    deep = str(max(s["depths"]))
    lines.append(
        f"Depth, unscaled against depth-muP: the unscaled arm's optimum moved by "
        f"{fmt(d['muP, no depth scaling']['shift'], 3)} (depth-muP's by "
        f"{fmt(d['depth-muP']['shift'], 3)}): it "
        + ("moved more" if report["unscaled_moves_more_than_depth_mup"] else
           "did **not** move more on this task (not a check: with Adam the unscaled optimum need "
           "not move)")
        + f"; best loss at depth {deep}: depth-muP {fmt(d['depth-muP']['best_loss'][deep])}, "
        f"unscaled {fmt(d['muP, no depth scaling']['best_loss'][deep])}.")
    if not report["sp_moves_more_than_mup"]:
        lines.append("Width: SP's optimum did **not** move more than muP's on this task.")
    best = report["width"]["muP"]["best_loss"]
    lines.append(
        "muP's best loss per width: " + ", ".join(f"{w}: {fmt(v, 3)}" for w, v in best.items())
        + (" (falls with width, as in TP5)." if report["mup_best_loss_falls_with_width"] else
           " (does **not** fall monotonically with width, unlike TP5: the best losses are all "
           "near 0, the small training set being nearly memorized, so seed noise decides "
           "their order)."))
    lines += ["", *_reports.checks_table(report["checks"])]
    lines += [
        "",
        "Beside the paper: TP5 Figure 1 (Transformers on WikiText-2, widths 128-8192) shows the "
        "SP optimum moving from about log2 lr -10 to -16 while muP's stays near -10 and its loss "
        "falls monotonically with width. Here the models are MLPs on the 8x8 digits, a task "
        "small enough for 2 CPU cores, trained for a few epochs; the training loss is the "
        "objective on the training minibatches. muP is TP5 Table 3's Adam rule relative to the "
        "smallest width (so the smallest width is the same network under both). The depth part "
        "follows TP6 / Bordelon et al. 2023 (branch multiplier 1/sqrt(L), hidden Adam learning "
        "rate x (L/L0)^-1/2) on 1-layer residual branches, against muP without depth scaling "
        "(alpha fixed at its base-depth value). Not done: the Transformer of Figure 1 (needs the "
        "attention blocks of issue 15) and widths beyond 1024.",
    ]
    return "\n".join(lines) + "\n"
