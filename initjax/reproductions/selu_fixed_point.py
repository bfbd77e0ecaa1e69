"""Klambauer et al. 2017: SELU networks normalize themselves; the fixed point (0, 1).

``selu(x) = lambda x`` for ``x > 0`` and ``lambda alpha (e^x - 1)`` otherwise, with
``lambda = 1.0507009873554805`` and ``alpha = 1.6732632423543772`` chosen so that a unit
pre-activation ``z ~ N(0, 1)`` gives ``E[selu(z)] = 0`` and ``E[selu(z)^2] = 1``. With weights of
variance 1/n (``lecun_normal``) the map from one layer's activation mean and variance to the next
has the stable fixed point (0, 1) ("Self-Normalizing Neural Networks",
https://arxiv.org/abs/1706.02515, Theorem 1): activations started at another mean and variance
are drawn to (0, 1) layer by layer. The paper's map, for weights with sum ``omega = 0`` and
squared sum ``tau = 1`` per unit, is ``(mu, nu) -> (E[selu(z)], Var[selu(z)])`` with
``z ~ N(mu omega, nu tau) = N(0, nu)``; its Jacobian at (0, 1) has spectral norm 0.7877 < 1.

Mean field of what the engine measures. The engine pools a layer's statistics over the batch and
the units. For random weights ``W ~ N(0, 1/n)``, the pre-activation of unit j,
``h_j = sum_i W_ij x_i``, pooled over units, is exactly ``N(0, E[x^2])`` whatever the inputs'
mean (a unit's offset ``mu sum_i W_ij`` is itself N(0, mu^2) across units). So with
``q^1 = E[(x^0)^2] = mu_0^2 + nu_0`` and ``q^{l+1} = E[selu(sqrt(q^l) z)^2]``
(:func:`initjax.theory.variance_iterates` with sigma_w^2 = 1, sigma_b^2 = 0), layer l's pooled
activation mean is ``E[selu(sqrt(q^l) z)]`` and its variance ``E[selu^2] - mean^2``. The fixed
point is q* = 1, where (mean, variance) = (0, 1); the map's slope there, ``V'(1) = 0.783``, is the
contraction per layer.

Starts: inputs of mean 0 and variance 0.25 or 4, and inputs of mean 1 and variance 1 (drawn per
seed from ``numpy.random.default_rng([start, seed])``, passed to the engine as arrays). tanh and
ReLU with the same 1/n weights are run on the same weight draws: tanh's variance decays towards 0
(its only fixed point at sigma_w^2 = 1), ReLU's halves per layer; neither reaches (0, 1).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from initjax import _io, activations, plotting, theory
from initjax.config import NetworkConfig
from initjax.engine import Propagation, propagate_shared
from initjax.reproductions import _reports

NAME = "selu-fixed-point"
ACTIVATIONS = ("selu", "tanh", "relu")
STARTS = ((0.0, 0.25), (0.0, 4.0), (1.0, 1.0))  # (input mean, input variance)
PAPER_JACOBIAN_NORM = 0.7877  # Klambauer et al. 2017: spectral norm of the map's Jacobian at (0, 1)


def _sizes(quick: bool) -> tuple[int, int, int, int]:
    """(depth, width, batch, default seeds). Quick mode keeps depth 24: from q = 4 the mean-field
    iterate needs ~20 layers to come within 1% of the fixed point (contraction 0.78 per layer)."""
    return (24, 256, 16, 4) if quick else (32, 1024, 64, 8)


def inputs(
    mean: float, variance: float, seeds: int, batch: int, width: int, start: int
) -> np.ndarray:
    """``(seeds, batch, width)`` i.i.d. N(mean, variance) inputs; seed s draws from
    ``numpy.random.default_rng([start, s])``, so it does not depend on how many seeds run."""
    shape = (batch, width)
    draws = [np.random.default_rng([start, s]).standard_normal(shape) for s in range(seeds)]
    return (mean + math.sqrt(variance) * np.stack(draws)).astype(np.float32)


def mean_field(activation: str, q1: Any, depth: int) -> dict[str, np.ndarray]:
    """Per-layer pooled activation mean and variance predicted from ``q^1`` (module docstring);
    ``q1`` may be an array of starts (one compiled call for all), giving arrays ``(..., depth)``."""
    act = activations.get(activation)
    q = theory.variance_iterates(np.asarray(q1, np.float32), 1.0, 0.0, act, depth)
    mean = np.asarray(theory.gaussian_expectation(act, q), dtype=np.float64)
    second = np.asarray(theory.gaussian_expectation(lambda u: act(u) ** 2, q), dtype=np.float64)
    return {"q": np.asarray(q, dtype=np.float64), "mean": mean, "var": second - mean**2}


def fixed_point_quadrature() -> dict[str, float]:
    """By adaptive quadrature in float64 (scipy.integrate.quad, split at the kink), independent of
    initjax's own rules: ``E[selu(z)]``, ``E[selu(z)^2] - 1``, the slope ``V'(1)`` of the variance
    map and the spectral norm of the Jacobian of the paper's (mean, variance) map at (0, 1) (with
    omega = 0 the mean does not enter, so the Jacobian is ``[[0, dmu/dnu], [0, dnu/dnu]]``)."""
    from scipy import integrate

    lam, alpha = activations.SELU_LAMBDA, activations.SELU_ALPHA

    def selu(x):
        return lam * x if x > 0 else lam * alpha * math.expm1(x)

    def square(x):
        return selu(x) ** 2

    def expect(f, q=1.0):
        def g(z):
            return f(math.sqrt(q) * z) * math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

        kw = {"epsabs": 1e-14, "epsrel": 1e-13, "limit": 200}
        return integrate.quad(g, -np.inf, 0, **kw)[0] + integrate.quad(g, 0, np.inf, **kw)[0]

    def variance(q):
        return expect(square, q) - expect(selu, q) ** 2

    step = 1e-4
    slope = (expect(square, 1 + step) - expect(square, 1 - step)) / (2 * step)
    dmean = (expect(selu, 1 + step) - expect(selu, 1 - step)) / (2 * step)
    dvar = (variance(1 + step) - variance(1 - step)) / (2 * step)
    jacobian = np.array([[0.0, dmean], [0.0, dvar]])
    return {"mean": expect(selu), "second_moment_minus_1": expect(square) - 1, "slope": slope,
            "jacobian_norm": float(np.linalg.norm(jacobian, 2))}


def run(
    out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """Propagate every start through SELU, tanh and ReLU nets; write figures, data and reports."""
    depth, width, batch, default_seeds = _sizes(quick)
    out, seeds, t0 = _reports.start(out, NAME, seeds, default_seeds, min_seeds=2)
    configs = [
        NetworkConfig(depth=depth, width=width, batch=batch, init="lecun_normal", activation=a,
                      label=a)
        for a in ACTIVATIONS
    ]
    results: dict[tuple[float, float], dict[str, Propagation]] = {}
    q1 = []
    for i, (mu, nu) in enumerate(STARTS):
        x = inputs(mu, nu, seeds, batch, width, start=i)
        # one compiled program serves every start: the inputs are an argument, not in the config
        measured = propagate_shared(configs, seeds, key=i, inputs=x, progress=progress)
        results[(mu, nu)] = dict(zip(ACTIVATIONS, measured, strict=True))
        q1.append(float((x.astype(np.float64) ** 2).mean()))  # the realized E[x^2] ~ mu^2 + nu
        for a, r in results[(mu, nu)].items():
            r.save(out / "data" / f"{a}-mean{mu:g}-var{nu:g}")
    predicted = {a: mean_field(a, q1, depth) for a in ACTIVATIONS}
    theory_ = {
        start: {a: {k: v[i] for k, v in predicted[a].items()} for a in ACTIVATIONS}
        for i, start in enumerate(STARTS)
    }
    quad = fixed_point_quadrature()
    seconds = time.perf_counter() - t0
    report = _report(quick, seeds, depth, width, batch, results, theory_, quad, seconds)
    _figures(out, results, theory_)
    return _reports.finish(out, report, _markdown(report))


def _report(quick, seeds, depth, width, batch, results, theory_, quad, seconds) -> dict[str, Any]:
    worst = max(abs(quad["mean"]), abs(quad["second_moment_minus_1"]))
    checks: list[dict[str, Any]] = [
        {"check": "fixed point by quadrature: |E[selu(z)]| and |E[selu(z)^2] - 1| <= 1e-6",
         "measured": worst, "tolerance": 1e-6, "pass": worst <= 1e-6},
        {"check": "the fixed point is stable: slope of the variance map V'(1) < 1",
         "measured": quad["slope"], "pass": quad["slope"] < 1},
        {"check": f"spectral norm of the (mean, variance) map's Jacobian at (0, 1) = "
                  f"{PAPER_JACOBIAN_NORM} (the paper's value, to its 4 digits)",
         "measured": quad["jacobian_norm"], "tolerance": 5e-5,
         "pass": abs(quad["jacobian_norm"] - PAPER_JACOBIAN_NORM) <= 5e-5},
    ]
    # 5 standard errors over seeds (the O(1/sqrt(n)) fluctuation that each layer's weight draw
    # passes on is in the seed spread) plus 4 / width for the finite-width bias: q^l fluctuates
    # around 1 with variance ~ 2 / (n (1 - V'(1)^2)) ~ 5 / n, which biases the next layer by
    # V''(1) / 2 = -0.09 times that, well below 4 / n
    allowance = 4 / width
    rows = []
    for (mu, nu), per_act in results.items():
        row: dict[str, Any] = {"input_mean": mu, "input_var": nu}
        for a, r in per_act.items():
            m = np.asarray(r.stats.act_mean, dtype=np.float64)
            v = np.asarray(r.stats.act_var, dtype=np.float64)
            mf = theory_[(mu, nu)][a]
            row[a] = {
                "act_mean": m.mean(0).tolist(), "act_var": v.mean(0).tolist(),
                "act_mean_sd": m.std(0, ddof=1).tolist(), "act_var_sd": v.std(0, ddof=1).tolist(),
                "mean_field_mean": mf["mean"].tolist(), "mean_field_var": mf["var"].tolist(),
                "last_mean": float(m[:, -1].mean()), "last_var": float(v[:, -1].mean()),
                "last_mean_se": float(m[:, -1].std(ddof=1) / math.sqrt(seeds)),
                "last_var_se": float(v[:, -1].std(ddof=1) / math.sqrt(seeds)),
            }
        rows.append(row)
        s = row["selu"]
        tol_m = 5 * s["last_mean_se"] + allowance
        tol_v = 5 * s["last_var_se"] + allowance
        start = f"start (mean {mu:g}, var {nu:g})"
        checks.append({
            "check": f"SELU, {start}: last layer's activation mean = 0 (5 SE + 4 / width)",
            "measured": s["last_mean"], "tolerance": tol_m, "pass": abs(s["last_mean"]) <= tol_m,
        })
        checks.append({
            "check": f"SELU, {start}: last layer's activation variance = 1 (5 SE + 4 / width)",
            "measured": s["last_var"], "tolerance": tol_v, "pass": abs(s["last_var"] - 1) <= tol_v,
        })
        far = {a: row[a]["last_var"] for a in ("tanh", "relu")}
        checks.append({
            "check": f"tanh and ReLU (same 1/n weights), {start}: do not reach (0, 1): "
                     "last variance < 0.5",
            "measured": f"tanh {far['tanh']:.3g}, relu {far['relu']:.3g}",
            "pass": all(v < 0.5 for v in far.values()),
        })
    return {
        "name": NAME, "status": "done", "quick": quick, "seeds": seeds, "depth": depth,
        "width": width, "batch": batch, "init": "lecun_normal (Var = 1/n)", "quadrature": quad,
        "seconds": seconds, "prng_impl": next(iter(results.values()))["selu"].prng_impl,
        "starts": rows, "checks": checks, "all_pass": all(c["pass"] for c in checks),
    }


def _figures(out: Path, results, theory_) -> None:
    fig = plotting.new_figure(12.0, 7.5)
    axes = fig.subplots(2, len(ACTIVATIONS), sharex=True)
    for col, a in enumerate(ACTIVATIONS):
        for i, ((mu, nu), per_act) in enumerate(results.items()):
            r, mf = per_act[a], theory_[(mu, nu)][a]
            layers = np.arange(1, r.config.depth + 1)
            for row, (field, key) in enumerate((("act_mean", "mean"), ("act_var", "var"))):
                v = np.asarray(getattr(r.stats, field), dtype=np.float64)
                ax = axes[row, col]
                ax.plot(layers, v.mean(0), "o", ms=3, color=f"C{i}",
                        label=f"input mean {mu:g}, var {nu:g}" if row == 0 else None)
                ax.fill_between(layers, v.min(0), v.max(0), color=f"C{i}", alpha=0.15, lw=0)
                ax.plot(layers, mf[key], "-", color=f"C{i}", lw=1)
        axes[0, col].axhline(0, color="k", ls=":", lw=1)
        axes[1, col].axhline(1, color="k", ls=":", lw=1)
        axes[1, col].set_yscale("log")
        axes[0, col].set_title(f"{a}, weights N(0, 1/n)", fontsize=9)
        axes[1, col].set_xlabel("layer")
    axes[0, 0].set_ylabel("activation mean")
    axes[1, 0].set_ylabel("activation variance")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Klambauer et al. 2017: (mean, variance) per layer; dots measured (band: seed "
                 "range), lines mean field, dotted: the SELU fixed point (0, 1)", fontsize=9)
    _io.save_figure(fig, out / "fixed-point")

    fig = plotting.new_figure(5.5, 4.5)
    ax = fig.subplots()
    for i, ((mu, nu), per_act) in enumerate(results.items()):
        r, mf = per_act["selu"], theory_[(mu, nu)]["selu"]
        m = np.asarray(r.stats.act_mean, dtype=np.float64).mean(0)
        v = np.asarray(r.stats.act_var, dtype=np.float64).mean(0)
        ax.plot(m, v, "o-", ms=3, color=f"C{i}", lw=0.8,
                label=f"start: mean {mu:g}, var {nu:g} (measured)")
        ax.plot(mf["mean"], mf["var"], "--", color=f"C{i}", lw=1)
    ax.plot([0], [1], "k*", ms=12, label="fixed point (0, 1)")
    plotting.label_axes(ax, "activation mean", "activation variance",
                        "SELU: trajectories in the (mean, variance) plane (dashed: mean field)")
    _io.save_figure(fig, out / "selu-trajectories")


def _markdown(report: dict[str, Any]) -> str:
    q = report["quadrature"]
    lines = [
        *_reports.header(
            "SELU's fixed point (0, 1) (Klambauer et al. 2017)",
            f"Depth {report['depth']}, width {report['width']}, batch {report['batch']}, "
            f"{report['init']}, no biases, {report['seeds']} seeds per start; ",
            report,
        ),
        "",
        f"Quadrature (scipy, float64): E[selu(z)] = {q['mean']:.2e}, "
        f"E[selu(z)^2] - 1 = {q['second_moment_minus_1']:.2e}; the slope of the variance map at "
        f"the fixed point V'(1) = {q['slope']:.4f}; the spectral norm of the Jacobian of the "
        f"paper's (mean, variance) map at (0, 1) = {q['jacobian_norm']:.5f} (paper: "
        f"{PAPER_JACOBIAN_NORM}).",
        "",
        "## Last layer, measured (mean over seeds +- SE) and mean field",
        "",
        "| start (mean, var) | SELU mean | SELU var | tanh mean / var | ReLU mean / var |",
        "|---|---|---|---|---|",
    ]
    for row in report["starts"]:
        s, t, r = row["selu"], row["tanh"], row["relu"]
        lines.append(
            f"| ({row['input_mean']:g}, {row['input_var']:g}) | "
            f"{s['last_mean']:+.4f} +- {s['last_mean_se']:.4f} ({s['mean_field_mean'][-1]:+.4f}) | "
            f"{s['last_var']:.4f} +- {s['last_var_se']:.4f} ({s['mean_field_var'][-1]:.4f}) | "
            f"{t['last_mean']:+.3g} / {t['last_var']:.3g} ({t['mean_field_var'][-1]:.3g}) | "
            f"{r['last_mean']:.3g} / {r['last_var']:.3g} ({r['mean_field_var'][-1]:.3g}) |"
        )
    lines += [
        "",
        "Beside the paper: Klambauer et al. show (Theorem 1) that (0, 1) is an attracting fixed "
        "point of the mean/variance map for normalized weights; here sampled networks started at "
        "variance 0.25 or 4, or at mean 1, arrive there within the tolerance and follow the "
        "mean-field iterates on the way (figures). The paper assumes weights with sum 0 and "
        "squared sum 1 per unit; random N(0, 1/n) weights have neither exactly, which the pooled "
        "mean field absorbs (a unit's offset becomes part of the pooled variance, see the module "
        "docstring). tanh and ReLU with the same weights do not self-normalize: tanh's variance "
        "decays slowly towards 0 (marginal fixed point q* = 0), ReLU's halves per layer.",
        "",
        *_reports.checks_table(report["checks"]),
    ]
    lines += ["", "Figures: `fixed-point.png` (mean and variance per layer for each activation and "
              "start), `selu-trajectories.png` (the (mean, variance) plane). Data: "
              "`data/<act>-mean*-var*/`.", ""]
    return "\n".join(lines)
