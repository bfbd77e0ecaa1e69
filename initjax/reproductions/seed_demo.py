"""The classic demo (CS231n "Training Neural Networks I" and the blog posts it spawned), made exact.

``x = randn(16, 4096)``; ten layers ``x = act(x @ W)`` with ``W = scale * randn(4096, 4096)``; a
40-bin histogram of each layer's activations over (-1, 1). The schemes and what the demo shows:

=============================  ===================  ==============================================
scheme                         weights              the demo's verdict
=============================  ===================  ==============================================
tanh, N(0, 0.01^2)             std 0.01             collapses toward 0
tanh, N(0, 1)                  std 1                saturates at +-1
tanh, Xavier                   std sqrt(1/n_in)     stays spread
ReLU, Xavier                   std sqrt(1/n_in)     collapses (the variance halves per layer)
ReLU, He                       std sqrt(2/n_in)     stays spread
tanh, zero init                0                    symmetric: every unit computes the same thing
6-layer tanh, std 0.01/0.05/1  width 500            collapses / stays spread / saturates
=============================  ===================  ==============================================

The five 4096-wide Gaussian schemes share their standard-normal draws (one draw per layer and seed,
scaled per scheme), so they are compared on the same random matrices. The 6-layer net's width is not
stated by the blog post it comes from (shared/seeds, 003); we take 500, CS231n's width, where
std 0.05 gives sigma_w^2 = 500 * 0.05^2 = 1.25, the only one of the three that neither collapses
nor saturates, as the post reports.

Verdict rules (on the activation outputs, medians over seeds):
* symmetric: the spread across units is 0 in every layer, up to float rounding
  (``unit_std <= 1e-5 * act_std``: constant weights differ between units only in summation order);
* saturates: more than half of the last layer's outputs lie within 1% of the range from a bound;
* collapses: the last layer's std is below 1/10 of the first layer's;
* explodes: the last layer's std is above 10 times the first layer's;
* stays spread: none of the above.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from initjax import _io, plotting
from initjax.config import NetworkConfig
from initjax.engine import Propagation, propagate, propagate_shared, shareable
from initjax.reproductions import _reports

NAME = "seed-demo"


class Scheme(NamedTuple):
    label: str
    init: str
    activation: str
    depth: int
    width: int
    expected: str


def schemes(quick: bool) -> list[Scheme]:
    """The demo's schemes; ``quick`` shrinks widths (4096 -> 256, 500 -> 250) but keeps depths."""
    wide, narrow = (256, 250) if quick else (4096, 500)
    return [
        Scheme("tanh, N(0, 0.01^2)", "normal:stddev=0.01", "tanh", 10, wide, "collapses"),
        Scheme("tanh, N(0, 1)", "normal:stddev=1.0", "tanh", 10, wide, "saturates"),
        Scheme("tanh, Xavier", "xavier_normal", "tanh", 10, wide, "stays spread"),
        Scheme("ReLU, Xavier", "xavier_normal", "relu", 10, wide, "collapses"),
        Scheme("ReLU, He", "he_normal", "relu", 10, wide, "stays spread"),
        Scheme("tanh, zero init", "zeros", "tanh", 10, wide, "symmetric"),
        Scheme("6-layer tanh, N(0, 0.01^2)", "normal:stddev=0.01", "tanh", 6, narrow, "collapses"),
        Scheme("6-layer tanh, N(0, 0.05^2)", "normal:stddev=0.05", "tanh", 6, narrow, "stays spread"),
        Scheme("6-layer tanh, N(0, 1)", "normal:stddev=1.0", "tanh", 6, narrow, "saturates"),
    ]


def verdict(result: Propagation) -> str:
    """The one-word verdict of a scheme by the rules in the module docstring."""
    st = result.stats
    unit_std = np.asarray(st.unit_std)
    if np.all(unit_std <= 1e-5 * np.sqrt(np.asarray(st.act_var))):
        return "symmetric"
    if np.nanmedian(np.asarray(st.saturated)[:, -1]) > 0.5:
        return "saturates"
    std = np.nanmedian(np.asarray(st.act_std), axis=0)
    ratio = std[-1] / std[0] if std[0] > 0 else math.inf
    if ratio < 0.1:
        return "collapses"
    if ratio > 10:
        return "explodes"
    return "stays spread"


def variance_ratio(result: Propagation) -> tuple[float, float]:
    """Geometric-mean per-layer ratio Var[x^{l+1}] / Var[x^l] of the activations over layers 1..L,
    with a tolerance of 6 standard errors: a layer's variance ratio has relative sd about
    sqrt(2 / n) at width n (chi-square with n degrees of freedom), averaged over seeds x (L - 1)."""
    v = np.asarray(result.stats.act_var, dtype=np.float64)
    depth, seeds = v.shape[1], v.shape[0]
    with np.errstate(all="ignore"):
        log_ratios = np.log(v[:, 1:] / v[:, :-1])
    finite = log_ratios[np.isfinite(log_ratios)]  # zero init: 0 / 0 everywhere, no ratio
    ratio = float(np.exp(finite.mean())) if finite.size else float("nan")
    width = result.config.widths[-1]
    tol = 6 * math.sqrt(2 / width) / math.sqrt(seeds * (depth - 1))
    return ratio, max(tol, 0.01)


def gradient_ratio(result: Propagation) -> float:
    """Geometric-mean factor by which Var[dL/dh] grows per layer going backwards (layer L to 1)."""
    g = np.nanmedian(np.asarray(result.stats.grad_preact_var, dtype=np.float64), axis=0)
    if not (np.isfinite(g[[0, -1]]).all() and g[-1] > 0 and g[0] > 0):
        return float("nan")
    return float((g[0] / g[-1]) ** (1.0 / (len(g) - 1)))


def predicted_curves(result: Propagation) -> tuple[np.ndarray, np.ndarray] | None:
    """The mean-field prediction of the variance-curves figure's two statistics, per layer:
    ``Var[x^l] = E[phi(h)^2] - E[phi(h)]^2`` with ``h ~ N(0, q^l)`` and ``Var[dL/dh^l]``
    (:func:`initjax.theory.predict`, float64); None where the theory has no prediction (a
    normalized network, a user-function init). Overflow comes back as inf (drawn as a gap)."""
    import jax

    from initjax import theory

    try:
        with jax.enable_x64(True):
            pred = theory.predict(result.config)
            act = result.config.activation
            q = np.where(np.isfinite(pred.preact_second_moment), pred.preact_second_moment, 0.0)
            mean = np.asarray(theory.gaussian_expectation(lambda u: act(u), q), dtype=np.float64)
    except ValueError:
        return None
    with np.errstate(all="ignore"):
        act_var = np.where(np.isfinite(pred.preact_second_moment), pred.out_second_moment - mean**2, np.inf)
    return act_var, np.asarray(pred.grad_preact_var, dtype=np.float64)


def _config(s: Scheme) -> NetworkConfig:
    return NetworkConfig(depth=s.depth, width=s.width, batch=16, init=s.init, activation=s.activation, label=s.label)


def run(out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Run the demo and write figures, data, ``report.json`` and ``report.md`` into ``out``."""
    out, seeds, t0 = _reports.start(out, NAME, seeds, 2 if quick else 16)
    all_schemes = schemes(quick)
    configs = [_config(s) for s in all_schemes]
    # group the schemes that can share draws: same depth and width, Gaussian weights
    groups: dict[tuple[int, int, bool], list[int]] = {}
    for i, c in enumerate(configs):
        groups.setdefault((c.depth, c.widths[0], shareable([c])), []).append(i)
    results: list[Propagation | None] = [None] * len(configs)
    options = {"grad_range": (-2.0, 2.0), "progress": progress}
    for idx in groups.values():
        group = [configs[i] for i in idx]
        if shareable(group):
            measured = propagate_shared(group, seeds, key=0, **options)
        else:
            measured = [propagate(c, seeds, key=0, **options) for c in group]
        for i, r in zip(idx, measured, strict=True):
            results[i] = r
            r.save(out / "data" / _reports.slug(all_schemes[i].label))
    elapsed = time.perf_counter() - t0
    report = _report(all_schemes, results, seeds, quick, elapsed)  # type: ignore[arg-type]
    _figures(out, all_schemes, results)  # type: ignore[arg-type]
    return _reports.finish(out, report, _markdown(report, results))  # type: ignore[arg-type]



def _report(all_schemes, results, seeds, quick, elapsed) -> dict[str, Any]:
    rows, checks = [], []
    for s, r in zip(all_schemes, results, strict=True):
        v = verdict(r)
        ratio, tol = variance_ratio(r)
        rows.append({
            "scheme": s.label,
            "init": r.config.init.spec,
            "activation": s.activation,
            "depth": s.depth,
            "width": s.width,
            "verdict": v,
            "expected": s.expected,
            "variance_ratio_per_layer": ratio,
            "gradient_growth_per_layer_backward": gradient_ratio(r),
            "nonfinite_layers": r.nonfinite_layers,
            "layers": r.layer_table(),
        })
        checks.append({"check": f"{s.label}: {s.expected}", "measured": v, "pass": v == s.expected})
    # the two quantitative facts of He et al. 2015 that the demo shows
    for label, target in (("ReLU, He", 1.0), ("ReLU, Xavier", 0.5)):
        r = results[[s.label for s in all_schemes].index(label)]
        ratio, tol = variance_ratio(r)
        checks.append({
            "check": f"{label}: Var ratio per layer = {target} (He et al. 2015, eq. 10)",
            "measured": ratio,
            "tolerance": tol,
            "pass": abs(ratio - target) <= tol,
        })
    return {
        "name": NAME,
        "status": "done",
        "quick": quick,
        "seeds": seeds,
        "batch": 16,
        "prng_impl": results[0].prng_impl,
        "seconds": elapsed,
        "schemes": rows,
        "checks": checks,
        "all_pass": all(c["pass"] for c in checks),
    }


def _figures(out: Path, all_schemes, results) -> None:
    for s, r in zip(all_schemes, results, strict=True):
        fig = plotting.new_figure(max(8.0, 1.6 * r.config.depth), 4.4)
        top, bottom = fig.subfigures(2, 1)
        plotting.hist_strip(r, "act", fig=top, title=f"{s.label}: activations")
        plotting.hist_strip(r, "grad", fig=bottom, title=f"{s.label}: gradients dL/dh", color="C3")
        _io.save_figure(fig, out / f"hist-{_reports.slug(s.label)}")
    fig = plotting.new_figure(12.0, 4.2)
    ax_act, ax_grad = fig.subplots(1, 2)
    # zero init is all zeros: nothing to draw on a log axis (its verdict is in the report)
    ten = [r for s, r in zip(all_schemes, results, strict=True) if s.depth == 10 and s.init != "zeros"]
    predicted = [predicted_curves(r) for r in ten]
    missing = [r.config.name for r, p in zip(ten, predicted, strict=True) if p is None]
    plotting.variance_curves(ten, "act_var", ax=ax_act,
                             theory=[None if p is None else plotting.theory_curve(p[0]) for p in predicted])
    plotting.variance_curves(ten, "grad_preact_var", ax=ax_grad,
                             theory=[None if p is None else plotting.theory_curve(p[1]) for p in predicted])
    for ax in (ax_act, ax_grad):
        plotting.note_theory(ax, missing=missing)
    ax_act.set_title("activation variance (median, 10-90% over seeds)", fontsize=9)
    ax_grad.set_title("gradient variance dL/dh (zero init: all 0, not drawn)", fontsize=9)
    _io.save_figure(fig, out / "variance-curves")


def _fmt(x: float) -> str:
    if x is None or not np.isfinite(x):
        return "n/a"
    return f"{x:.3g}"


def _markdown(report: dict[str, Any], results) -> str:
    lines = [
        *_reports.header(
            "The classic demo: activations and gradients layer by layer",
            f"{report['seeds']} seeds, batch 16, PRNG {report['prng_impl']}, ",
            report,
            "quick mode: widths 256/250",
        ),
        "Input x ~ N(0, 1); layer l: h = x W, x = act(h); an N(0, 1) cotangent at the output.",
        "",
        "| scheme | verdict | the demo's | Var[x] ratio / layer | Var[dL/dh] growth / layer backwards | non-finite layers |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["schemes"]:
        ok = "yes" if row["verdict"] == row["expected"] else "**NO**"
        lines.append(
            f"| {row['scheme']} | {row['verdict']} | {row['expected']} ({ok}) | "
            f"{_fmt(row['variance_ratio_per_layer'])} | {_fmt(row['gradient_growth_per_layer_backward'])} | "
            f"{row['nonfinite_layers'] or '-'} |"
        )
    lines += [
        "",
        "Where the measurement departs from the demo's story: the saturated tanh nets (N(0, 1)) are",
        "said to have vanishing gradients; measured, Var[dL/dh] *grows* going backwards, by the",
        "factor in the table, which is the mean-field chi_1 = sigma_w^2 E[tanh'(h)^2] (about 34 at",
        "width 4096): the weights are so large that the few unsaturated units carry huge gradients",
        "(the gradient histograms: a spike at 0 and rare huge values outside the range).",
    ]
    lines += [
        "",
        *_reports.checks_table(report["checks"]),
        "",
        "## Per-layer tables (means over seeds)",
        "",
        "Where the measurement departs from the demo: the demo draws one network; we draw "
        f"{report['seeds']} per scheme and report the mean over seeds. The 6-layer net's width (500) "
        "is our choice; the blog post gives none.",
    ]
    for row in report["schemes"]:
        lines += [
            "",
            f"### {row['scheme']} ({row['init']}, {row['activation']}, width {row['width']})",
            "",
            "| layer | act mean | act std | saturated | zero | Var[dL/dh] | Var[dL/dW] |",
            "|---|---|---|---|---|---|---|",
        ]
        for lay in row["layers"]:
            lines.append(
                f"| {lay['layer']} | {_fmt(lay['act_mean'])} | {_fmt(math.sqrt(lay['act_var']) if lay['act_var'] >= 0 else float('nan'))} | "
                f"{lay['saturated']:.2f} | {lay['zero_fraction']:.2f} | {_fmt(lay['grad_var'])} | "
                f"{_fmt(lay['weight_grad_var'])} |"
            )
    lines += ["", "Figures: `hist-*.png` (activation and gradient histograms per layer), "
              "`variance-curves.png` (all 10-layer schemes, measured with the mean-field prediction "
              "of `initjax.theory.predict` dashed beside each). Data: `data/*/stats.npz`.", ""]
    return "\n".join(lines)
