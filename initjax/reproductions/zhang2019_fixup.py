"""Zhang, Dauphin & Ma 2019 (Fixup): gradient norms of deep residual nets at init, and training.

Paper: "Fixup Initialization: Residual Learning Without Normalization", ICLR 2019,
https://arxiv.org/abs/1901.09321. A residual net without normalization and with a standard (He)
initialization has an output whose variance grows exponentially with the number of blocks ``L``,
and the gradients explode with it. Fixup (:func:`initjax.network.fixup`): zero-init the last layer
of every branch and the classifier, scale the other branch layers' He weights by
``L^(-1/(2m-2))`` (``m`` layers per branch), and add scalar biases and a scalar multiplier per
branch; deep residual nets then train without normalization.

What this runs, on residual MLPs with pre-activation branches of ``m = 2`` layers
(``x + W2 relu(W1 relu(x))``, :meth:`initjax.network.Network.residual_mlp`, no norm, zero biases):

(a) At initialization (the block engine, :func:`initjax.propagate`, Gaussian inputs, an N(0, 1)
    output cotangent), standard He init vs :func:`~initjax.network.fixup` of the same net, at two
    depths. Closed forms, with ``q^l = E[(x^l)^2]`` and ``chi^l = E[(dL/dx^l)^2]``:

    - He: the branch output has ``E[(W2 u)^2] = 2 E[relu(h1)^2] = E[h1^2] = q^(l-1)`` (He's
      ``Var w = 2 / fan_in`` against ReLU's halving, twice), so ``q^l = 2 q^(l-1) = 2^l`` and,
      backwards, ``chi^(l-1) = 2 chi^l``: ``chi^l = 2^(L-l)`` (Yang & Schoenholz's full-residual
      recursion with ``sigma_v^2 sigma_w^2 E[phi'^2] = 1`` per layer). Every block's weight
      gradient scales as ``sqrt(q^(l-1) chi^l) ~ 2^(L/2)``: it explodes with the depth.
    - Fixup: ``W2 = 0``, so the net is the identity: ``q^l = q^0``, ``chi^l = chi^L`` exactly
      (every block sees the output cotangent ``g`` itself), and the first branch layer's gradient
      ``dL/dW1`` is exactly 0 (it flows through ``W2``). The second layer's gradient
      ``G2 = relu(h1)^T g`` has ``E ||G2||_F^2 = n^2 B E[relu(h1)^2] = n^2 B / (2 L)``
      (``h1 = W1 relu(x^0)`` with ``Var w = 2 / (n L)``; ``g`` independent N(0, 1)), so the total
      over the ``L`` blocks, ``n^2 B / 2``, does not depend on the depth: each block's share of an
      SGD step shrinks as ``1/L``.

(b) Training on digits (1438 training images, 10 classes, no download): a stem
    ``Dense(64 -> width)``, ``L`` such residual blocks, a linear classifier, SGD with momentum 0.9
    at one learning rate; He init (classifier LeCun-normal) vs Fixup (classifier zero). The
    Fixup net starts as a uniform predictor: its initial loss is ``ln 10`` exactly.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from initjax import _io, data, plotting, training
from initjax.engine import BlockPropagation, propagate
from initjax.network import Dense, Network, Repeat, Residual, fixup
from initjax.reproductions import _reports

NAME = "zhang2019-fixup"
LN10 = math.log(10.0)
CHANCE = 0.1
LEARN_ACC = 0.8  # Fixup "trains": every seed's final test accuracy at least this (chance 0.1)
FAIL_ACC = 0.5  # standard init "fails": every seed diverged or ends below this
MOMENTUM = 0.9
LEARNING_RATE = 0.01
BATCH = 64


def _setup(quick: bool) -> dict[str, Any]:
    if quick:
        return {"width": 64, "batch": 32, "depths": (4, 12), "seeds": 4,
                "train_width": 32, "train_depth": 12, "steps": 120, "record_every": 30,
                "train_seeds": 2}
    return {"width": 256, "batch": 64, "depths": (10, 100), "seeds": 8,
            "train_width": 64, "train_depth": 50, "steps": 800, "record_every": 50,
            "train_seeds": 3}


def init_networks(depth: int, width: int, batch: int) -> tuple[Network, Network]:
    """The He-initialized residual MLP (2-layer pre-activation ReLU branches, no norm) and its
    Fixup version, ``depth`` blocks on a stream of ``width`` units."""
    he = Network.residual_mlp(depth, width, init="he_normal", activation="relu", branch_layers=2,
                              batch=batch, label=f"He, L = {depth}")
    return he, fixup(he).replace(label=f"Fixup, L = {depth}")


def train_networks(depth: int, width: int, in_width: int = 64) -> tuple[Network, Network]:
    """The trained nets: a linear stem ``in_width -> width`` (He), then ``depth`` residual blocks
    as :func:`init_networks`; Fixup rescales the blocks only (the stem keeps its He init)."""
    branch = tuple(Dense(width, "he_normal", "relu", preactivation=True) for _ in range(2))
    he = Network(in_width, (Repeat(Dense(width, "he_normal", "identity"), 1),
                            Repeat(Residual(branch), depth)), batch=BATCH, label="He")
    return he, fixup(he).replace(label="Fixup")


def run(
    out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """Measure gradient norms at init, train He vs Fixup on digits; write figures, data,
    ``report.json`` and ``report.md`` into ``out``. ``seeds`` sets the seeds at init (>= 2: the
    tolerances use their spread); training uses the mode's own seed count."""
    cfg = _setup(quick)
    out, seeds, t0 = _reports.start(out, NAME, seeds, cfg["seeds"], min_seeds=2)
    init: dict[tuple[str, int], BlockPropagation] = {}
    for depth in cfg["depths"]:
        for arm, net in zip(("He", "Fixup"), init_networks(depth, cfg["width"], cfg["batch"]),
                            strict=True):
            r = propagate(net, seeds, key=0, progress=progress)
            r.save(out / "data" / f"{arm.lower()}-L{depth}")
            init[(arm, depth)] = r

    ds = data.digits()
    he, fx = train_networks(cfg["train_depth"], cfg["train_width"], ds.x_train.shape[1])
    common = dict(model="network", optimizer="momentum", momentum=MOMENTUM,
                  learning_rate=LEARNING_RATE, steps=cfg["steps"], record_every=cfg["record_every"],
                  batch_size=BATCH, probe_size=128, train_eval_size=512)
    configs = [training.TrainConfig(label="He", network=he, kernel_init="lecun_normal", **common),
               training.TrainConfig(label="Fixup", network=fx, kernel_init="zeros", **common)]
    result = training.compare(configs, ds, seeds=cfg["train_seeds"], key=0, progress=progress)
    records = {c.label: result[c.label] for c in configs}
    arrays = {f"{label}_{k}": np.asarray(v) for label, rec in records.items()
              for k, v in rec._asdict().items() if v is not None}
    _io.write_npz(out / "records.npz", **arrays)

    report = _report(quick, seeds, cfg, init, records, time.perf_counter() - t0)
    _figures(out, cfg, init, records)
    return _reports.finish(out, report, _markdown(report))


# -- measurements ---------------------------------------------------------------------------------
def _log2_slope(v: np.ndarray) -> tuple[float, float]:
    """Per seed, ``log2(v[last] / v[first]) / (blocks - 1)``: the mean over seeds and its standard
    error (seeds with a non-finite or non-positive end are dropped)."""
    with np.errstate(all="ignore"):
        s = np.log2(v[:, -1] / v[:, 0]) / (v.shape[1] - 1)
    s = s[np.isfinite(s)]
    if len(s) < 2:
        return float("nan"), float("inf")
    return float(s.mean()), float(s.std(ddof=1) / math.sqrt(len(s)))


def _total_norm(r: BlockPropagation) -> np.ndarray:
    """(seed,) the Frobenius norm of the gradient of every branch weight matrix together."""
    w = np.asarray(r.stats.weight_grad_norm, np.float64)
    return np.sqrt(np.nansum(w * w, axis=(1, 2)))


def _report(quick, seeds, cfg, init, records, seconds) -> dict[str, Any]:
    n, b = cfg["width"], cfg["batch"]
    shallow, deep = cfg["depths"]
    allowance = 2 / n  # O(1/width) finite-width corrections to the mean-field rates
    checks, rows = [], []
    for depth in cfg["depths"]:
        he, fx = init[("He", depth)], init[("Fixup", depth)]
        q_slope = _log2_slope(np.asarray(he.stats.act_second_moment, np.float64))
        g_slope = _log2_slope(np.asarray(he.stats.grad_second_moment, np.float64))
        w_fx = np.asarray(fx.stats.weight_grad_norm, np.float64)  # (seed, block, layer)
        w_he = np.asarray(he.stats.weight_grad_norm, np.float64)
        g_fx = np.asarray(fx.stats.grad_second_moment, np.float64)
        # per seed, the mean over blocks of ||G2||^2 (the blocks of a seed share its cotangent)
        sq2 = (w_fx[:, :, 1] ** 2).mean(axis=1)
        pred2 = n * n * b / (2 * depth)
        rel2, se2 = sq2.mean() / pred2, sq2.std(ddof=1) / math.sqrt(len(sq2)) / pred2
        spread = float(np.max(np.abs(g_fx / g_fx[:, -1:] - 1)))
        g_mean = float(g_fx[:, -1].mean())
        g_tol = 5 * math.sqrt(2 / (n * b * len(g_fx)))  # sd of a mean of n B S squared N(0, 1)
        rows.append({
            "depth": depth,
            "he_q_log2_slope": q_slope[0], "he_q_log2_slope_se": q_slope[1],
            "he_grad_log2_slope": g_slope[0], "he_grad_log2_slope_se": g_slope[1],
            "he_total_grad_norm": _total_norm(he).tolist(),
            "fixup_total_grad_norm": _total_norm(fx).tolist(),
            "fixup_total_predicted": n * math.sqrt(b / 2),
            "he_weight_grad_norm_median": np.nanmedian(w_he, axis=0).tolist(),
            "fixup_weight_grad_norm_median": np.nanmedian(w_fx, axis=0).tolist(),
            "fixup_layer2_sq_ratio": float(rel2), "fixup_layer2_sq_ratio_se": float(se2),
            "he_nonfinite_blocks": he.nonfinite_blocks,
            "fixup_nonfinite_blocks": fx.nonfinite_blocks,
        })
        tol_q = 5 * q_slope[1] + allowance
        tol_g = 5 * g_slope[1] + allowance
        checks += [
            {"check": f"L = {depth}, He: stream E[x^2] doubles per block (log2 slope 1; "
                      "5 SE + 2 / width)",
             "measured": q_slope[0], "tolerance": tol_q, "pass": abs(q_slope[0] - 1) <= tol_q},
            {"check": f"L = {depth}, He: E[(dL/dx)^2] doubles per block going back (log2 slope "
                      "-1; 5 SE + 2 / width)",
             "measured": g_slope[0], "tolerance": tol_g, "pass": abs(g_slope[0] + 1) <= tol_g},
            {"check": f"L = {depth}, Fixup: dL/dW1 of every branch is exactly 0 (W2 = 0)",
             "measured": float(np.nanmax(np.abs(w_fx[:, :, 0]))),
             "pass": bool(np.all(w_fx[:, :, 0] == 0))},
            {"check": f"L = {depth}, Fixup: E[(dL/dx^l)^2] is the same at every block (identity; "
                      "relative spread <= 1e-5)",
             "measured": spread, "pass": spread <= 1e-5},
            {"check": f"L = {depth}, Fixup: E[(dL/dx)^2] = 1 (the N(0, 1) cotangent; 5 sd of a "
                      "mean of n B S squares)",
             "measured": g_mean, "tolerance": g_tol, "pass": abs(g_mean - 1) <= g_tol},
            {"check": f"L = {depth}, Fixup: norm(dL/dW2)^2 per block = n^2 B / (2L) = {pred2:.4g} "
                      "(ratio 1; 5 SE)",
             "measured": float(rel2), "tolerance": 5 * float(se2),
             "pass": abs(rel2 - 1) <= 5 * se2},
        ]
    row = {r["depth"]: r for r in rows}
    def rms_log2(d: int) -> tuple[float, float]:
        """log2 of He's RMS total gradient norm over seeds (E||G||^2 is what the mean field
        predicts) and its standard error (delta method)."""
        x2 = np.asarray(row[d]["he_total_grad_norm"], np.float64) ** 2
        se = x2.std(ddof=1) / math.sqrt(len(x2)) / x2.mean()
        return 0.5 * math.log2(x2.mean()), 0.5 * se / math.log(2)

    (he_lo, se_lo), (he_hi, se_hi) = rms_log2(shallow), rms_log2(deep)
    he_ratio = he_hi - he_lo
    he_pred = (deep - shallow) / 2 + 0.5 * math.log2(deep / shallow)
    he_tol = 5 * math.hypot(se_lo, se_hi) + allowance * (deep - shallow)
    fx_ratio = np.log2(np.mean(row[deep]["fixup_total_grad_norm"])
                       / np.mean(row[shallow]["fixup_total_grad_norm"]))
    fx_se = math.sqrt(sum((np.std(row[d]["fixup_total_grad_norm"], ddof=1)
                           / np.mean(row[d]["fixup_total_grad_norm"])) ** 2 / seeds
                          for d in cfg["depths"])) / math.log(2)
    checks += [
        {"check": f"He: the total branch-weight gradient norm explodes with depth: log2 of its "
                  f"growth (RMS over seeds) from L = {shallow} to {deep} = mean field "
                  f"{he_pred:.2f} (2^(L/2) sqrt(L); 5 SE + 2 / width per block)",
         "measured": float(he_ratio), "tolerance": he_tol,
         "pass": bool(abs(he_ratio - he_pred) <= he_tol)},
        {"check": f"Fixup: the total branch-weight gradient norm does not depend on depth "
                  f"(log2 ratio L = {deep} / L = {shallow} is 0; 5 SE)",
         "measured": float(fx_ratio), "tolerance": 5 * fx_se,
         "pass": bool(abs(fx_ratio) <= 5 * fx_se)},
    ]

    train_rows = {}
    for label, rec in records.items():
        acc = np.asarray(rec.test_accuracy[:, -1], np.float64)
        train_rows[label] = {
            "final_test_accuracy": acc.tolist(),
            "final_train_loss": np.asarray(rec.train_loss[:, -1], np.float64).tolist(),
            "initial_test_loss": np.asarray(rec.test_loss[:, 0], np.float64).tolist(),
            "diverged_step": np.asarray(rec.diverged_step).tolist(),
            "nonfinite_train_loss_records": int((~np.isfinite(rec.train_loss)).sum()),
            "median_final_test_accuracy": (float(np.nanmedian(acc)) if np.isfinite(acc).any()
                                           else None),
        }
    he_t, fx_t = train_rows["He"], train_rows["Fixup"]
    fx_acc = np.asarray(fx_t["final_test_accuracy"])
    he_acc = np.asarray(he_t["final_test_accuracy"])
    he_fails = bool(np.all((np.asarray(he_t["diverged_step"]) >= 0)
                           | ~np.isfinite(he_acc) | (np.nan_to_num(he_acc) < FAIL_ACC)))
    ln10_dev = float(np.max(np.abs(np.asarray(fx_t["initial_test_loss"]) - LN10)))
    depth_t = cfg["train_depth"]
    checks += [
        {"check": f"training, Fixup ({depth_t} blocks): every seed ends with test accuracy >= "
                  f"{LEARN_ACC} (chance {CHANCE}) and none diverges",
         "measured": ", ".join(f"{a:.3f}" for a in fx_acc),
         "pass": bool(np.all(fx_acc >= LEARN_ACC) and all(s < 0 for s in fx_t["diverged_step"]))},
        {"check": f"training, He without normalization ({depth_t} blocks): every seed diverges "
                  f"(non-finite loss) or ends below {FAIL_ACC} test accuracy",
         "measured": "diverged at steps " + ", ".join(str(s) for s in he_t["diverged_step"])
                     + " (-1: never)",
         "pass": he_fails},
        {"check": "training, Fixup: the initial test loss is ln 10 (zero classifier: uniform "
                  "prediction; |deviation| <= 1e-5)",
         "measured": ln10_dev, "pass": ln10_dev <= 1e-5},
    ]
    return {
        "name": NAME, "status": "done", "quick": quick, "seeds": seeds, "seconds": seconds,
        "setup": {"width": n, "batch": b, "depths": list(cfg["depths"]),
                  "branch": "x + W2 relu(W1 relu(x)), He normal, zero biases, no norm",
                  "train": {"data": "digits (1438 train / 359 test)", "width": cfg["train_width"],
                            "blocks": depth_t, "optimizer": f"SGD, momentum {MOMENTUM}",
                            "learning_rate": LEARNING_RATE, "batch": BATCH, "steps": cfg["steps"],
                            "seeds": cfg["train_seeds"]}},
        "init": rows,
        "he_total_log2_growth": float(he_ratio), "he_total_log2_growth_mean_field": he_pred,
        "fixup_total_log2_ratio": float(fx_ratio),
        "training": train_rows,
        "checks": checks,
        "all_pass": all(c["pass"] for c in checks),
    }


# -- figures --------------------------------------------------------------------------------------
def _positive(v: np.ndarray) -> np.ndarray:
    """``v`` with non-finite and non-positive entries masked (NaN) for a log axis."""
    v = np.asarray(v, np.float64)
    return np.where(np.isfinite(v) & (v > 0), v, np.nan)


def _figures(out: Path, cfg, init, records) -> None:
    with warnings.catch_warnings():  # medians of all-NaN columns (diverged runs) are masked
        warnings.simplefilter("ignore", RuntimeWarning)
        _draw(out, cfg, init, records)


def _draw(out: Path, cfg, init, records) -> None:
    fig = plotting.new_figure(14.0, 4.2)
    ax_w, ax_g, ax_t = fig.subplots(1, 3)
    styles = {cfg["depths"][0]: "--", cfg["depths"][1]: "-"}
    for depth, ls in styles.items():
        he, fx = init[("He", depth)], init[("Fixup", depth)]
        blocks = np.arange(1, depth + 1)
        w_he = np.asarray(he.stats.weight_grad_norm, np.float64)
        w_fx = np.asarray(fx.stats.weight_grad_norm, np.float64)
        with np.errstate(all="ignore"):
            ax_w.plot(blocks, _positive(np.nanmedian(w_he[:, :, 0], 0)), ls, color="C3",
                      label=f"He, W1, L = {depth}")
            ax_w.plot(blocks, _positive(np.nanmedian(w_he[:, :, 1], 0)), ls, color="C1",
                      label=f"He, W2, L = {depth}")
            ax_w.plot(blocks, _positive(np.nanmedian(w_fx[:, :, 1], 0)), ls, color="C0",
                      label=f"Fixup, W2, L = {depth}")
            g_he = np.asarray(he.stats.grad_second_moment, np.float64)
            g_fx = np.asarray(fx.stats.grad_second_moment, np.float64)
            ax_g.plot(blocks, _positive(np.median(g_he, 0)), ls, color="C1",
                      label=f"He, L = {depth}")
            ax_g.plot(blocks, _positive(np.median(g_fx, 0)), ls, color="C0",
                      label=f"Fixup, L = {depth}")
            ax_g.plot(blocks, 2.0 ** (depth - blocks), ":", color="k", lw=1)
        ax_w.axhline(cfg["width"] * math.sqrt(cfg["batch"] / (2 * depth)), ls=ls, color="0.6", lw=1)
    ax_w.set_yscale("log")
    plotting.label_axes(ax_w, "block", "||dL/dW||_F at init (median over seeds)",
                        "per-layer weight gradients (Fixup's W1: exactly 0, not drawn;\n"
                        "grey: Fixup's sqrt(n^2 B / 2L))")
    ax_g.set_yscale("log", base=2)
    plotting.label_axes(ax_g, "block l", "E[(dL/dx^l)^2] (median over seeds)",
                        "stream gradient (dotted: He's 2^(L-l))")
    depths = np.asarray(cfg["depths"])
    for arm, color in (("He", "C1"), ("Fixup", "C0")):
        tot = [np.median(_total_norm(init[(arm, d)])) for d in depths]
        ax_t.plot(depths, _positive(tot), "o-", color=color, label=arm)
    ax_t.axhline(cfg["width"] * math.sqrt(cfg["batch"] / 2), color="k", ls=":", lw=1,
                 label="Fixup: n sqrt(B / 2)")
    ax_t.set_yscale("log")
    plotting.label_axes(ax_t, "blocks L", "||dL/dW|| over all branch weights",
                        "total gradient norm at init vs depth")
    _io.save_figure(fig, out / "gradient-norms")

    fig = plotting.new_figure(11.0, 4.0)
    ax_l, ax_a = fig.subplots(1, 2)
    colors = {"He": "C1", "Fixup": "C0"}
    for label, rec in records.items():
        color = colors[label]
        for ax, field in ((ax_l, "train_loss"), (ax_a, "test_accuracy")):
            v = np.asarray(getattr(rec, field), np.float64)
            with np.errstate(all="ignore"):
                lo, med, hi = np.nanpercentile(v, [10, 50, 90], axis=0)
            ax.plot(rec.step, med, "o-", ms=3, color=color, label=label)
            ax.fill_between(rec.step, lo, hi, color=color, alpha=0.2, lw=0)
            bad = np.flatnonzero(~np.isfinite(v).all(axis=0))
            if bad.size:
                ax.plot(rec.step[bad], np.zeros(bad.size), "x", color="r",
                        transform=ax.get_xaxis_transform(),
                        label=f"{label}: non-finite")
    ax_l.axhline(LN10, color="k", ls=":", lw=1, label="ln(10)")
    ax_l.set_yscale("log")
    ax_a.axhline(CHANCE, color="k", ls=":", lw=1, label="chance")
    plotting.label_axes(ax_l, "updates", "training loss",
                        "training loss (median, 10-90% over seeds; x: non-finite records)")
    plotting.label_axes(ax_a, "updates", "test accuracy", "test accuracy")
    _io.save_figure(fig, out / "training")


# -- report.md ------------------------------------------------------------------------------------
def _markdown(r: dict[str, Any]) -> str:
    s, t = r["setup"], r["setup"]["train"]
    lines = [
        *_reports.header(
            "Fixup: gradient norms at initialization and training without normalization "
            "(Zhang, Dauphin & Ma 2019)",
            f"Residual MLPs, {s['branch']}; at init width {s['width']}, batch {s['batch']}, depths "
            f"{', '.join(str(d) for d in s['depths'])} blocks, {r['seeds']} seeds, N(0, 1) inputs "
            f"and output cotangent; training: {t['blocks']} blocks of width {t['width']} on "
            f"{t['data']}, {t['optimizer']}, lr {t['learning_rate']}, batch {t['batch']}, "
            f"{t['steps']} updates, {t['seeds']} seeds; ",
            r,
        ),
        "",
        "## At initialization",
        "",
        "| L | He: log2 E[x^2] per block | He: log2 E[(dL/dx)^2] per block | "
        "He: total norm(dL/dW) (median) | Fixup: total norm(dL/dW) (median; predicted) | "
        "Fixup: norm(dL/dW2)^2 / (n^2 B / 2L) |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["init"]:
        lines.append(
            f"| {row['depth']} | {row['he_q_log2_slope']:.3f} +- {row['he_q_log2_slope_se']:.3f} | "
            f"{row['he_grad_log2_slope']:.3f} +- {row['he_grad_log2_slope_se']:.3f} | "
            f"{_reports.fmt(np.median(row['he_total_grad_norm']))} | "
            f"{_reports.fmt(np.median(row['fixup_total_grad_norm']))} "
            f"({row['fixup_total_predicted']:.4g}) | "
            f"{row['fixup_layer2_sq_ratio']:.3f} +- {row['fixup_layer2_sq_ratio_se']:.3f} |")
    lines += [
        "",
        f"He's total gradient norm grows by 2^{r['he_total_log2_growth']:.1f} between the two "
        "depths "
        f"(RMS over seeds; mean field 2^{r['he_total_log2_growth_mean_field']:.1f}: 2^(L/2) "
        "sqrt(L)); Fixup's by "
        f"2^{r['fixup_total_log2_ratio']:+.3f}. Non-finite blocks: "
        + "; ".join(f"L = {row['depth']}: He {row['he_nonfinite_blocks'] or 'none'}, Fixup "
                    f"{row['fixup_nonfinite_blocks'] or 'none'}" for row in r["init"]) + ".",
        "",
        "What the figure shows: `gradient-norms` plots, per block, the Frobenius norm of dL/dW of "
        "each branch layer. Under He init both layers' gradients are of the same size in every "
        "block of a net, and that size explodes with the depth (2^(L/2)): the stream's variance "
        "doubles per block forwards and its gradient doubles per block backwards. Under Fixup the "
        "last branch layer W2 is zero, so the net is the identity and the first layer's gradient "
        "dL/dW1 (it flows through W2) is exactly 0 at init: it is not drawn on the log axis. "
        "W2's gradient is relu(h1)^T g, of squared norm n^2 B / (2L) per block, so the total over "
        "the blocks does not depend on the depth; after the first update W2 is non-zero and W1 "
        "learns too.",
        "",
        "## Training",
        "",
        "| init | final test accuracy (per seed) | final train loss | diverged at step | "
        "non-finite loss records |",
        "|---|---|---|---|---|",
    ]
    for label, row in r["training"].items():
        lines.append(
            f"| {label} | {', '.join(_reports.fmt(a, 3) for a in row['final_test_accuracy'])} | "
            f"{', '.join(_reports.fmt(v) for v in row['final_train_loss'])} | "
            f"{', '.join(str(v) for v in row['diverged_step'])} | "
            f"{row['nonfinite_train_loss_records']} |")
    lines += [
        "",
        "Paper: Fixup trains residual nets of up to 10,000 layers without normalization, and a "
        "ResNet without normalization under standard init suffers exploding gradients at "
        "initialization (the motivation of Section 2) [verified from the abstract]. The exact "
        "figures and tables (per-layer gradient norms at init, the CIFAR-10 / ImageNet accuracies "
        "and which standard-init runs diverge) were not consulted here [U].",
        "",
        "Departures from the paper: residual MLPs on 8x8 digits instead of conv ResNets on "
        "CIFAR-10 / ImageNet; pre-activation branches `x + W2 relu(W1 relu(x))` (ResNet v2 order) "
        "instead of Fixup's post-activation basic block `relu(x + W2 relu(W1 x + b) + b)`; the "
        "scalar biases and multiplier are present (0 and 1 at init) and trained; short runs at one "
        "learning rate, no weight decay, no mixup; no batch-norm reference arm (a 50-block "
        "batch-norm net compiles for minutes on CPU). The at-init closed forms are derived here "
        "(module docstring), not taken from the paper.",
        "",
        *_reports.checks_table(r["checks"]),
        "",
        "Figures: `gradient-norms`, `training` (PNG and PDF). Data: `data/<he|fixup>-L<depth>/` "
        "(engine statistics), `records.npz` (training records).",
        "",
    ]
    return "\n".join(lines)
