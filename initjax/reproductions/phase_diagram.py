"""The order-to-chaos phase diagram and depth scales of deep tanh networks, beside measurement.

Poole et al. 2016 (https://arxiv.org/abs/1606.05340) and Schoenholz et al. 2017
(https://arxiv.org/abs/1611.01232): for weights N(0, sigma_w^2 / N) and biases N(0, sigma_b^2), the
slope chi_1 of the correlation map at c* = 1 splits the (sigma_w^2, sigma_b^2) plane into an ordered
phase (chi_1 < 1: inputs become perfectly correlated) and a chaotic one (chi_1 > 1: they decorrelate
to c* < 1), separated by the critical line chi_1 = 1 where the correlation depth scale xi_c diverges.

Written: ``phase-diagram.png/.pdf`` (chi_1 and xi_c over the plane with the critical line),
``depth-scales.png/.pdf`` (xi_q and xi_c against sigma_w^2 at sigma_b^2 = 0.05, Schoenholz et al.
Figure 2's setting), ``correlations.png/.pdf`` (the measured pairwise correlation c^l of sampled
networks against the predicted iterates, in the ordered phase, at the critical point and in the
chaotic phase), ``grid.npz`` and the reports.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initjax import _io, plotting, theory
from initjax.config import NetworkConfig
from initjax.engine import propagate
from initjax.reproductions import _reports

NAME = "phase-diagram"
ACTIVATION = "tanh"
SIGMA_B2 = 0.05
# the critical sigma_w^2 of tanh at sigma_b^2 = 0.05, from an independent scipy computation
# (brentq on q* and chi_1 with scipy.integrate.quad; tests/test_theory.py), and at sigma_b^2 = 0,
# where q* = 0 and chi_1 = sigma_w^2 tanh'(0)^2 = sigma_w^2 exactly
CRITICAL_AT_005 = 1.7609546
CRITICAL_AT_0 = 1.0


def run(out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    out, seeds, t0 = _reports.start(out, NAME, seeds, 4 if quick else 16)
    sw = np.linspace(0.5, 4.0, 12 if quick else 50)
    sb = np.linspace(0.0, 0.3, 5 if quick else 31)
    SW, SB = np.meshgrid(sw, sb)
    scales = jax.jit(jax.vmap(lambda a, b: theory.depth_scales(a, b, ACTIVATION)))(
        jnp.asarray(SW.ravel(), jnp.float32), jnp.asarray(SB.ravel(), jnp.float32)
    )
    chi = np.asarray(scales.chi_1).reshape(SW.shape)
    xi_c = np.asarray(scales.xi_c).reshape(SW.shape)
    critical = np.asarray(theory.critical_line(jnp.asarray(sb, jnp.float32), ACTIVATION))
    _io.write_npz(out / "grid.npz", sigma_w2=sw, sigma_b2=sb, chi_1=chi, xi_c=xi_c, critical_sigma_w2=critical)

    # depth scales along sigma_b^2 = 0.05
    line_sw = np.linspace(0.5, 4.0, 30 if quick else 120)
    line = jax.jit(jax.vmap(lambda a: theory.depth_scales(a, SIGMA_B2, ACTIVATION)))(jnp.asarray(line_sw, jnp.float32))
    crit_005 = float(theory.critical_line(jnp.float32(SIGMA_B2), ACTIVATION))

    # measurement: three points along sigma_b^2 = 0.05
    width, depth = (256, 12) if quick else (1024, 30)
    points = {"ordered": 1.0, "critical": crit_005, "chaotic": 3.0}
    measured = {}
    for name, s2 in points.items():
        config = NetworkConfig(
            depth=depth, width=width, batch=8, activation=ACTIVATION, input_correlation=0.5,
            init=f"normal:stddev={math.sqrt(s2 / width)}", bias_init=f"normal:stddev={math.sqrt(SIGMA_B2)}",
            label=f"{name} (sigma_w^2 = {s2:.3g})",
        )
        r = propagate(config, seeds=seeds, progress=progress)
        measured[name] = (config, r, theory.predict(config))
    report = _report(quick, seeds, sw, sb, chi, critical, crit_005, measured, time.perf_counter() - t0)
    _figures(out, sw, sb, chi, xi_c, critical, line_sw, line, crit_005, measured)
    return _reports.finish(out, report, _markdown(report))


def _report(quick, seeds, sw, sb, chi, critical, crit_005, measured, seconds) -> dict[str, Any]:
    checks = [
        {"check": "critical sigma_w^2 at sigma_b^2 = 0.05 (independent scipy value 1.7609546)",
         "measured": crit_005, "tolerance": 1e-3, "pass": abs(crit_005 - CRITICAL_AT_005) < 1e-3},
        {"check": "critical sigma_w^2 at sigma_b^2 = 0 is 1 (chi_1 = sigma_w^2 at q* = 0)",
         "measured": float(critical[0]), "tolerance": 1e-3, "pass": abs(float(critical[0]) - CRITICAL_AT_0) < 1e-3},
    ]
    # every grid cell away from the line is on the side its chi_1 says
    spacing = sw[1] - sw[0]
    side = np.sign(sw[None, :] - critical[:, None])
    away = np.abs(sw[None, :] - critical[:, None]) > spacing
    agree = (np.sign(chi - 1) == side) | ~away
    checks.append({"check": "chi_1 < 1 left of the critical line and > 1 right of it (cells > 1 grid step away)",
                   "measured": f"{int(agree.sum())}/{agree.size} cells", "pass": bool(agree.all())})
    rows = []
    for name, (config, r, p) in measured.items():
        c = np.asarray(r.stats.cosine, dtype=np.float64)
        mean, se = c.mean(0), c.std(0, ddof=1) / math.sqrt(c.shape[0])
        tol = 5 * se + 0.02  # sampling error plus the O(1/sqrt(width)) finite-width spread
        worst = float(np.max(np.abs(mean - p.cosine) - tol))
        rows.append({"point": name, "sigma_w2": float(p.sigma_w2[0]), "sigma_b2": float(p.sigma_b2[0]),
                     "c_measured": mean.tolist(), "c_predicted": p.cosine.tolist(),
                     "q_measured": np.asarray(r.stats.preact_second_moment).mean(0).tolist(),
                     "q_predicted": p.preact_second_moment.tolist()})
        checks.append({"check": f"{name}: measured c^l within 5 SE + 0.02 of the predicted iterates, every layer",
                       "measured": f"worst margin {worst:+.3f}", "pass": worst <= 0})
    ordered_last = rows[0]["c_measured"][-1]
    chaotic_last, chaotic_pred = rows[2]["c_measured"][-1], rows[2]["c_predicted"][-1]
    checks.append({"check": "ordered phase: inputs end perfectly correlated (c^L > 0.95)",
                   "measured": ordered_last, "pass": ordered_last > 0.95})
    checks.append({"check": "chaotic phase: inputs decorrelate towards c* < 1 (c^L < 0.9)",
                   "measured": chaotic_last, "pass": chaotic_last < 0.9 and chaotic_pred < 0.9})
    return {"name": NAME, "status": "done", "quick": quick, "seeds": seeds, "activation": ACTIVATION,
            "seconds": seconds, "critical_sigma_w2_at_0.05": crit_005, "points": rows, "checks": checks,
            "all_pass": all(c["pass"] for c in checks)}


def _figures(out, sw, sb, chi, xi_c, critical, line_sw, line, crit_005, measured) -> None:
    fig = plotting.new_figure(11.0, 4.2)
    a, b = fig.subplots(1, 2)
    plotting.phase_diagram(sw, sb, chi, critical_sigma_w2=critical, ax=a, label="chi_1", center=1.0)
    a.set_title(f"{ACTIVATION}: chi_1 (ordered < 1 < chaotic)", fontsize=9)
    plotting.phase_diagram(sw, sb, xi_c, critical_sigma_w2=critical, ax=b, label="xi_c (layers)", log=True)
    b.set_title("correlation depth scale xi_c", fontsize=9)
    _io.save_figure(fig, out / "phase-diagram")

    fig = plotting.new_figure(6.0, 4.0)
    ax = fig.subplots()
    for field, style in (("xi_q", "-"), ("xi_c", "-")):
        v = np.asarray(getattr(line, field), dtype=np.float64)
        ok = np.isfinite(v)
        ax.plot(line_sw[ok], v[ok], style, label=field)
    ax.axvline(crit_005, color="k", ls="--", lw=1, label=f"critical sigma_w^2 = {crit_005:.4f}")
    ax.set_yscale("log")
    plotting.label_axes(
        ax, "sigma_w^2", "depth scale (layers)",
        f"{ACTIVATION}, sigma_b^2 = {SIGMA_B2}: depth scales (Schoenholz et al. 2017, Fig. 2)",
        legend_size=8,
    )
    _io.save_figure(fig, out / "depth-scales")

    fig = plotting.new_figure(6.5, 4.0)
    ax = fig.subplots()
    for name, (config, r, p) in measured.items():
        c = np.asarray(r.stats.cosine, dtype=np.float64)
        layers = np.arange(1, c.shape[1] + 1)
        (line_,) = ax.plot(layers, c.mean(0), "o", ms=3, label=f"{config.label}: measured")
        ax.plot(layers, p.cosine, "-", color=line_.get_color(), lw=1, label="predicted")
    plotting.label_axes(
        ax, "layer", "correlation c^l between two inputs",
        "correlation propagation: sampled networks vs mean-field iterates", legend_size=6,
    )
    _io.save_figure(fig, out / "correlations")


def _markdown(report: dict[str, Any]) -> str:
    lines = [
        *_reports.header(
            "Order and chaos in deep tanh networks (Poole et al. 2016; Schoenholz et al. 2017)",
            f"{report['seeds']} seeds for the measurements; ",
            report,
            "quick mode: coarse grid, width 256, depth 12",
        ),
        "",
        f"Critical line of tanh at sigma_b^2 = 0.05: sigma_w^2 = {report['critical_sigma_w2_at_0.05']:.5f} "
        "(the papers draw the line through this region of the plane; the value is checked against an "
        "independent scipy computation, not a number printed in the papers, which give it only as a figure).",
        "",
        *_reports.checks_table(report["checks"]),
    ]
    lines += ["", "## Correlation c^l: measured (mean over seeds) vs predicted", ""]
    for row in report["points"]:
        lines.append(f"- {row['point']} (sigma_w^2 = {row['sigma_w2']:.4g}, sigma_b^2 = {row['sigma_b2']:.3g}): "
                     f"last layer measured {row['c_measured'][-1]:.4f}, predicted {row['c_predicted'][-1]:.4f}; "
                     f"q^L measured {row['q_measured'][-1]:.4g}, predicted {row['q_predicted'][-1]:.4g}")
    lines += ["", "Departures from the papers: the measured networks are finite (width 1024) and the "
              "measured correlation is the mean pairwise cosine of 8 inputs of initial correlation 0.5; "
              "the papers' figures are the infinite-width theory alone.", ""]
    return "\n".join(lines)
