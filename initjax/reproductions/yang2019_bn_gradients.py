"""Yang et al. 2019: batch norm makes gradients explode at initialization, at a batch-set rate.

A deep fully connected ReLU network with batch norm in training mode before every activation
(``x^l = relu(BN(x^{l-1} W^l))``, He-normal weights, no biases, gamma 1, beta 0) back-propagates
gradients that grow geometrically towards the input, whatever the weight scale (BN removes it).
In the mean-field limit the per-layer factor is :func:`initjax.theory.batchnorm_gradient_rate`
``lambda(B)``: 3.08 at B = 4, 1.59 at B = 16, decreasing to ``pi / (pi - 1) = 1.467`` as
``B -> inf`` (Yang et al. 2019, "A Mean Field Theory of Batch Normalization",
https://arxiv.org/abs/1902.08129: the explosion cannot be removed by choosing the init).
Without batch norm the same He-initialized ReLU net keeps the gradient variance (rate 1,
He et al. 2015).

Measured: ``Var[dL/dh^l]`` per layer for ``seeds`` networks per batch size (an N(0, 1) output
cotangent); each batch size runs the BN net and the plain net on the same weight draws
(:func:`initjax.propagate_shared`). The rate is taken over the middle layers ``lo .. hi`` (three
layers away from the input, whose Gram matrix needs a few layers to reach BN's symmetric fixed
point, and three from the output, where the cotangent needs a few layers to align with the
leading direction) as ``(mean_s g_s[lo] / g_s[hi]) ** (1 / (hi - lo))``: the mean over seeds of
the span's growth, the estimator of ``E`` of a product of independent layer factors, which is
what ``lambda`` describes. (A geometric mean over seeds would be biased low by Jensen's
inequality, noticeably so at small B.)

Tolerance: 5 standard errors of that estimate (from the seed spread of the per-seed growth) plus
2/width for the O(1/width) finite-width corrections. At B = 4 and 5 a unit's gradient factor
carries ``1 / chi^2_{B-1}``, whose variance is infinite (tail ``P(> t) ~ 0.27 t^(-3/2)`` at
B = 4), so the seed spread understates the error: there the standard error is at least the
generalized-CLT scale ``0.41 n^(-1/3) / sqrt(hi - lo)`` of ``n = width x seeds`` such terms per
layer.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from initjax import _io, plotting, theory
from initjax.config import NetworkConfig
from initjax.engine import Propagation, propagate_shared
from initjax.reproductions import _reports

NAME = "yang2019-bn-gradients"
LARGE_BATCH = math.pi / (math.pi - 1)
SKIP_INPUT, SKIP_OUTPUT = 3, 3


def _sizes(quick: bool) -> tuple[tuple[int, ...], int, int, int]:
    """(batch sizes, width, depth, default seeds)."""
    return ((4, 16), 128, 12, 16) if quick else ((4, 8, 16, 32, 64), 512, 20, 32)


def configs(batch: int, width: int, depth: int) -> tuple[NetworkConfig, NetworkConfig]:
    """The BN network and the plain one (same weights) for one batch size."""
    bn = NetworkConfig(depth=depth, width=width, batch=batch, init="he_normal", activation="relu",
                       norm="batch", norm_placement="before", label=f"BN, B = {batch}")
    return bn, bn.replace(norm="none", label=f"no BN, B = {batch}")


def growth_rate(
    result: Propagation, lo: int, hi: int, heavy_tail: bool = False
) -> dict[str, float]:
    """The per-layer growth of Var[dL/dh] going backwards over layers ``lo < hi`` (0-based), its
    relative standard error, and the per-layer ratios (means over seeds) for the record."""
    g = np.asarray(result.stats.grad_preact_var, dtype=np.float64)
    seeds, span = g.shape[0], hi - lo
    r = g[:, lo] / g[:, hi]
    rate = float(r.mean() ** (1 / span))
    se = float(r.std(ddof=1) / math.sqrt(seeds) / r.mean() / span)
    if heavy_tail:
        n = result.config.widths[-1] * seeds
        se = max(se, 0.41 * n ** (-1 / 3) / math.sqrt(span))
    return {"rate": rate, "rel_se": se, "per_layer": (g[:, :-1] / g[:, 1:]).mean(0).tolist()}


def run(
    out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """Measure the growth rates, write figures, data, ``report.json`` and ``report.md``."""
    batches, width, depth, default_seeds = _sizes(quick)
    out, seeds, t0 = _reports.start(out, NAME, seeds, default_seeds, min_seeds=2)
    results: dict[int, tuple[Propagation, Propagation]] = {}
    for b in batches:
        bn, plain = propagate_shared(configs(b, width, depth), seeds, key=0, progress=progress)
        bn.save(out / "data" / f"bn-B{b}")
        plain.save(out / "data" / f"no-bn-B{b}")
        results[b] = (bn, plain)
    report = _report(quick, seeds, batches, width, depth, results, time.perf_counter() - t0)
    _figures(out, batches, results, report)
    return _reports.finish(out, report, _markdown(report))


def _report(quick, seeds, batches, width, depth, results, seconds) -> dict[str, Any]:
    lo, hi = SKIP_INPUT, depth - 1 - SKIP_OUTPUT
    allowance = 2 / width
    rows, checks = [], []
    for b in batches:
        bn, plain = results[b]
        m = growth_rate(bn, lo, hi, heavy_tail=b <= 5)
        p = growth_rate(plain, lo, hi)
        pred = theory.batchnorm_gradient_rate(b, "relu")
        rows.append({
            "batch": b, "rate": m["rate"], "rel_se": m["rel_se"], "predicted": pred,
            "closed_form": theory.relu_batchnorm_gradient_rate(b), "per_layer": m["per_layer"],
            "no_bn_rate": p["rate"], "no_bn_rel_se": p["rel_se"], "no_bn_per_layer": p["per_layer"],
            "nonfinite_layers": bn.nonfinite_layers,
        })
        tol = 5 * m["rel_se"] + allowance
        checks.append({
            "check": f"BN, B = {b}: growth per layer = lambda(B) = {pred:.4f} "
                     "(relative, 5 SE + 2 / width" + (", heavy-tailed SE" if b <= 5 else "") + ")",
            "measured": m["rate"], "tolerance": tol, "pass": abs(m["rate"] / pred - 1) <= tol,
        })
    rates = [r["rate"] for r in rows]
    listed = ", ".join(f"{x:.3f}" for x in rates)
    checks.append({"check": "BN: gradients explode (rate > 1) at every batch size",
                   "measured": listed, "pass": all(x > 1 for x in rates)})
    checks.append({"check": "BN: the rate decreases with the batch size",
                   "measured": listed, "pass": bool(np.all(np.diff(rates) < 0))})
    for r in rows:
        tol = 5 * r["no_bn_rel_se"] + allowance
        checks.append({
            "check": f"no BN (He init), B = {r['batch']}: growth per layer = 1 (5 SE + 2 / width)",
            "measured": r["no_bn_rate"], "tolerance": tol, "pass": abs(r["no_bn_rate"] - 1) <= tol,
        })
    return {
        "name": NAME, "status": "done", "quick": quick, "seeds": seeds, "width": width,
        "depth": depth, "layers_used": [lo + 1, hi + 1], "large_batch_limit": LARGE_BATCH,
        "seconds": seconds, "prng_impl": results[batches[0]][0].prng_impl, "batches": rows,
        "checks": checks, "all_pass": all(c["pass"] for c in checks),
    }


def _figures(out: Path, batches, results, report) -> None:
    fig = plotting.new_figure(12.0, 4.2)
    ax_g, ax_r = fig.subplots(1, 2)
    runs = [results[b][0] for b in batches] + [results[batches[-1]][1]]
    labels = [f"BN, B = {b}" for b in batches] + [f"no BN (He), B = {batches[-1]}"]
    plotting.variance_curves(runs, "grad_preact_var", ax=ax_g, labels=labels)
    lo, hi = report["layers_used"]
    ax_g.axvspan(lo, hi, color="0.93", zorder=0)
    ax_g.set_title(f"Var[dL/dh] per layer (grey: layers {lo}-{hi} give the rate)", fontsize=9)

    grid = np.unique(np.round(np.geomspace(4, 4 * max(batches), 60)).astype(int))
    curve = [theory.relu_batchnorm_gradient_rate(int(b)) for b in grid]
    ax_r.plot(grid, curve, "-", color="C0", label="mean field lambda(B)")
    b_arr = np.asarray(batches)
    rows = report["batches"]
    rate = np.array([r["rate"] for r in rows])
    err = np.array([5 * r["rel_se"] * r["rate"] for r in rows])
    ax_r.errorbar(b_arr, rate, yerr=err, fmt="o", color="C1", capsize=3,
                  label="measured, BN (bars: 5 SE)")
    ax_r.errorbar(b_arr, [r["no_bn_rate"] for r in rows],
                  yerr=[5 * r["no_bn_rel_se"] for r in rows],
                  fmt="s", color="C2", capsize=3, label="measured, no BN (He)")
    ax_r.axhline(LARGE_BATCH, color="k", ls="--", lw=1, label="B -> inf: pi / (pi - 1)")
    ax_r.axhline(1.0, color="0.5", ls=":", lw=1)
    ax_r.set_xscale("log", base=2)
    plotting.label_axes(ax_r, "batch size B", "growth of Var[dL/dh] per layer (backwards)",
                        "gradient explosion rate vs batch size")
    _io.save_figure(fig, out / "bn-gradients")


def _markdown(report: dict[str, Any]) -> str:
    lo, hi = report["layers_used"]
    lines = [
        *_reports.header(
            "Batch norm makes gradients explode at initialization (Yang et al. 2019)",
            f"ReLU, width {report['width']}, depth {report['depth']}, BN before the activation in "
            f"training mode, He-normal weights, no biases; {report['seeds']} seeds per batch size, "
            f"N(0, 1) output cotangent; rate over layers {lo}-{hi}; ",
            report,
        ),
        "",
        "| B | measured rate (BN) | mean field lambda(B) | deviation | no BN (He) |",
        "|---|---|---|---|---|",
    ]
    for r in report["batches"]:
        lines.append(
            f"| {r['batch']} | {r['rate']:.4f} +- {r['rel_se'] * r['rate']:.4f} | "
            f"{r['predicted']:.4f} | {r['rate'] / r['predicted'] - 1:+.2%} | "
            f"{r['no_bn_rate']:.4f} +- {r['no_bn_rel_se']:.4f} |"
        )
    lines += [
        "",
        f"Large-batch limit: pi / (pi - 1) = {report['large_batch_limit']:.4f}.",
        "",
        "Beside the paper: Yang et al. show that BN's gradient explosion at initialization cannot "
        "be removed by choosing the weight variance, for ReLU at a per-layer rate that depends on "
        "the batch size. The finite-B rates here are initjax's own mean-field derivation in the "
        "paper's setting (`theory.batchnorm_gradient_rate`; the paper's own finite-B formula was "
        "not consulted), whose B -> inf limit pi / (pi - 1) for ReLU is the large-batch factor "
        "associated with their result. The measurement is a finite network (width above) with "
        "eps = 1e-5 in the BN denominator (the theory has eps = 0); at B = 4 the per-unit "
        "1 / chi^2_3 factor has infinite variance, so that rate converges slowly (its tolerance "
        "uses the heavy-tail error scale, see the module docstring).",
        "",
        *_reports.checks_table(report["checks"]),
    ]
    lines += ["", "Figure: `bn-gradients.png` (Var[dL/dh] per layer for each B; measured vs "
              "predicted rate). Data: `data/bn-B*/`, `data/no-bn-B*/`.", ""]
    return "\n".join(lines)
