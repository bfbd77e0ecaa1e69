"""Saxe et al. 2014; Pennington et al. 2017: the singular values of the input-output Jacobian.

For ``J = D_L W_L ... D_1 W_1`` (``D_l = diag(phi'(h^l))``, square layers of width N):

* linear, Gaussian ``W ~ N(0, 1/N)``: the squared singular values have mean 1 but spread with
  depth; as N -> inf their moments are the Fuss-Catalan numbers, mean 1 and second moment L + 1,
  so ``Var[s^2] = L`` (Saxe et al. 2014: products of random Gaussian matrices are badly
  conditioned);
* linear, orthogonal ``W``: J is orthogonal, every singular value is 1 at any depth (isometry);
* tanh at the edge of chaos (Pennington et al. 2017, "Resurrecting the sigmoid"): with
  ``chi_1 = 1`` the mean of s^2 stays 1, and with orthogonal weights and a small fixed point q*
  the spread stays small (dynamical isometry) while Gaussian weights spread as in the linear case.

Free probability gives the spread at the fixed point (the S-transforms of free factors multiply,
so their normalized variances add; Pennington et al. 2017, Sec. 2):

    Var[s^2] / E[s^2]^2 = L (kappa + [Gaussian]),   kappa = sigma_w2^2 E[phi'(h)^4] / chi_1^2 - 1

(``[Gaussian] = 1``, the Marchenko-Pastur variance of ``W^T W``; 0 for orthogonal weights;
kappa = 0 for linear nets).

At finite N the Gaussian linear moments are known exactly (Wick's theorem, one layer at a time
with ``A = J J^T``, ``m_k = tr(A^k) / N``): ``E[m2'] = m1^2 + (1 + 1/N) m2`` and
``E[m1'^2] = E[m1^2] + 2 E[m2] / N^2``, from ``m1 = m2 = 1``; so ``E[m1] = 1`` exactly and
``E[m2] = L + 1 + L (L + 1) / (2N) + O(N^-2)``. The checks use these exact finite-N values.

The tanh point: ``sigma_w2 = 1.05`` and the ``sigma_b2`` that puts it on the critical line
(``chi_1 = 1``), with the input scaled so that the first layer already sits at q*
(Pennington et al. use this sigma_w2 with sigma_b2 ~ 2e-5 and q* ~ 1/40).

Numerics: J is formed in float32, so its singular values are resolved only down to about 1e-6 of
the largest; the smallest ones of deep Gaussian products (exp(-3.4 L) at N = 256) are far below,
and their histogram shows a rounding floor there, which the figure shades. The spread is
measured by ``Var[s^2]`` (Pennington et al.'s sigma^2_JJ^T), which the large singular values
dominate and float32 resolves.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np

from initjax import _io, plotting, theory
from initjax.reproductions import _reports

NAME = "saxe2014-spectra"
TANH_SIGMA_W2 = 1.05


class Case(NamedTuple):
    label: str
    init: str  # "normal" or "orthogonal" (theory.jacobian_singular_values)
    activation: str
    sigma_w2: float
    sigma_b2: float
    input_variance: float


@functools.lru_cache(maxsize=None)
def _hermite_nodes(n: int = 160) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / math.sqrt(2 * math.pi)


def _gauss(f, q: float) -> float:
    """E f(sqrt(q) z), z ~ N(0, 1), float64 Gauss-Hermite (f smooth)."""
    x, w = _hermite_nodes()
    return float(np.sum(w * f(math.sqrt(q) * x)))


def _dtanh(u):
    return 1.0 / np.cosh(u) ** 2


def critical_tanh(sigma_w2: float = TANH_SIGMA_W2) -> dict[str, float]:
    """The point on tanh's critical line with this sigma_w2: q* from ``sigma_w2 E[tanh'^2] = 1``
    (bisection; ``E[tanh'(sqrt(q) z)^2]`` decreases in q), then
    ``sigma_b2 = q* - sigma_w2 E[tanh^2]`` from the fixed-point equation; and the kappa of the
    free-probability spread."""
    return dict(_critical_tanh(float(sigma_w2)))


@functools.lru_cache(maxsize=8)
def _critical_tanh(sigma_w2: float) -> tuple[tuple[str, float], ...]:
    lo, hi = 1e-12, 10.0
    for _ in range(80):  # log-bisection: 80 halvings of a 1e13 bracket reach float64 precision
        mid = math.sqrt(lo * hi)
        if sigma_w2 * _gauss(lambda u: _dtanh(u) ** 2, mid) > 1:
            lo = mid
        else:
            hi = mid
    q = math.sqrt(lo * hi)
    sigma_b2 = q - sigma_w2 * _gauss(lambda u: np.tanh(u) ** 2, q)
    chi = sigma_w2 * _gauss(lambda u: _dtanh(u) ** 2, q)
    kappa = sigma_w2**2 * _gauss(lambda u: _dtanh(u) ** 4, q) / chi**2 - 1
    return (("sigma_w2", sigma_w2), ("sigma_b2", sigma_b2), ("q_star", q), ("chi_1", chi),
            ("kappa", kappa), ("input_variance", (q - sigma_b2) / sigma_w2))


def cases() -> list[Case]:
    crit = critical_tanh()
    tanh = (crit["sigma_w2"], crit["sigma_b2"], crit["input_variance"])
    return [
        Case("linear, Gaussian", "normal", "linear", 1.0, 0.0, 1.0),
        Case("linear, orthogonal", "orthogonal", "linear", 1.0, 0.0, 1.0),
        Case("tanh (critical), Gaussian", "normal", "tanh", *tanh),
        Case("tanh (critical), orthogonal", "orthogonal", "tanh", *tanh),
    ]


def finite_width_moments(depth: int, width: int) -> tuple[float, float]:
    """Exact ``E[m1^2]`` and ``E[m2]`` for a product of ``depth`` N(0, 1/width) square matrices
    (module docstring)."""
    m1_sq, m2 = 1.0, 1.0
    for _ in range(depth):
        m1_sq, m2 = m1_sq + 2 * m2 / width**2, m1_sq + (1 + 1 / width) * m2
    return m1_sq, m2


def _sizes(quick: bool) -> tuple[tuple[int, ...], int, int]:
    """(depths, width, default seeds)."""
    return ((1, 4, 8), 64, 8) if quick else ((1, 4, 16, 64), 256, 8)


def run(
    out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """Sample the spectra, write figures, ``spectra.npz``, ``report.json`` and ``report.md``.
    (``progress`` is accepted for the common signature; the sampling loop is short.)"""
    depths, width, default_seeds = _sizes(quick)
    out, seeds, t0 = _reports.start(out, NAME, seeds, default_seeds, min_seeds=2)
    all_cases = cases()
    base = jax.random.key(0)
    spectra: dict[str, dict[int, np.ndarray]] = {}
    for i, case in enumerate(all_cases):
        per_seed = []
        for s in range(seeds):
            # one network per seed, its spectrum read at every depth (its first layers are shared)
            key = jax.random.fold_in(jax.random.fold_in(base, i), s)
            sv = theory.jacobian_singular_values(
                key, max(depths), width, init=case.init, activation=case.activation,
                sigma_w2=case.sigma_w2, sigma_b2=case.sigma_b2,
                input_variance=case.input_variance, depths=depths,
            )
            per_seed.append({d: np.asarray(sv[d], dtype=np.float64) for d in depths})
        # (seed, width) per depth
        spectra[case.label] = {d: np.stack([p[d] for p in per_seed]) for d in depths}
    arrays = {f"{_reports.slug(c.label)}_L{d}": spectra[c.label][d] for c in all_cases for d in depths}
    _io.write_npz(out / "spectra.npz", depths=np.asarray(depths), **arrays)
    report = _report(quick, seeds, depths, width, all_cases, spectra, time.perf_counter() - t0)
    _figures(out, depths, width, all_cases, spectra, report)
    return _reports.finish(out, report, _markdown(report))



def _moments(sv: np.ndarray) -> dict[str, np.ndarray]:
    """Per-seed m1 = mean s^2, m2 = mean s^4 and the spread Var[s^2] = m2 - m1^2."""
    s2 = sv**2
    m1, m2 = s2.mean(axis=1), (s2**2).mean(axis=1)
    return {"m1": m1, "m2": m2, "var_s2": m2 - m1**2}


def _se(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / math.sqrt(len(x)))


def _report(quick, seeds, depths, width, all_cases, spectra, seconds) -> dict[str, Any]:
    crit = critical_tanh()
    rows: dict[str, Any] = {}
    for case in all_cases:
        per_depth = []
        for d in depths:
            sv = spectra[case.label][d]
            mo = _moments(sv)
            kappa = crit["kappa"] if case.activation == "tanh" else 0.0
            per_depth.append({
                "depth": d,
                "mean_s2": float(mo["m1"].mean()), "mean_s2_se": _se(mo["m1"]),
                "mean_s4": float(mo["m2"].mean()), "mean_s4_se": _se(mo["m2"]),
                "var_s2": float(mo["var_s2"].mean()), "var_s2_se": _se(mo["var_s2"]),
                "var_s2_free_probability": d * (kappa + (1.0 if case.init == "normal" else 0.0)),
                "s_max": float(sv.max()), "s_min": float(sv.min()),
                "max_abs_s_minus_1": float(np.abs(sv - 1).max()),
            })
        rows[case.label] = {
            "init": case.init, "activation": case.activation, "sigma_w2": case.sigma_w2,
            "sigma_b2": case.sigma_b2, "input_variance": case.input_variance, "depths": per_depth,
        }

    checks: list[dict[str, Any]] = []
    orth = rows["linear, orthogonal"]["depths"]
    worst = max(r["max_abs_s_minus_1"] for r in orth)
    checks.append({
        "check": "linear, orthogonal: every singular value = 1 at every depth (Saxe et al. 2014)",
        "measured": worst, "tolerance": 1e-4, "pass": worst <= 1e-4,
    })
    for r in rows["linear, Gaussian"]["depths"]:
        d = r["depth"]
        m1_sq, m2_exact = finite_width_moments(d, width)
        fc = theory.gaussian_product_moments(d)
        # mean s^2: E = 1 exactly; its sd over networks is sqrt(E[m1^2] - 1), exact (Wick)
        tol1 = 5 * math.sqrt((m1_sq - 1) / seeds)
        checks.append({
            "check": f"linear, Gaussian, L = {d}: mean s^2 = {fc[0]:g} "
                     f"(5 exact sd of the mean of {seeds})",
            "measured": r["mean_s2"], "tolerance": tol1, "pass": abs(r["mean_s2"] - 1) <= tol1,
        })
        tol2 = 5 * r["mean_s4_se"]
        checks.append({
            "check": f"linear, Gaussian, L = {d}: mean s^4 = Fuss-Catalan L + 1 = {fc[1]:g} "
                     f"+ finite-N {m2_exact - fc[1]:.3g} = {m2_exact:.4g} (5 SE over seeds)",
            "measured": r["mean_s4"], "tolerance": tol2,
            "pass": abs(r["mean_s4"] - m2_exact) <= tol2,
        })
    for label in ("linear, Gaussian", "tanh (critical), Gaussian"):
        spread = [r["var_s2"] for r in rows[label]["depths"]]
        checks.append({"check": f"{label}: the spread Var[s^2] grows with depth",
                       "measured": ", ".join(f"{v:.3g}" for v in spread),
                       "pass": bool(np.all(np.diff(spread) > 0))})
    spread = max(r["var_s2"] for r in orth)
    checks.append({
        "check": "linear, orthogonal: the spread Var[s^2] stays 0 (< 1e-6) at every depth",
        "measured": spread, "tolerance": 1e-6, "pass": spread < 1e-6,
    })
    # Pennington et al. 2017 at the edge of chaos
    for label in ("tanh (critical), Gaussian", "tanh (critical), orthogonal"):
        deep = rows[label]["depths"][-1]
        # E[m1] = chi_1^L = 1: 5 SE over seeds plus the O(L / N) drift of q^l around q*
        tol = 5 * deep["mean_s2_se"] + deep["depth"] / width
        checks.append({
            "check": f"{label}, L = {deep['depth']}: mean s^2 = chi_1^L = 1 (5 SE + L / N)",
            "measured": deep["mean_s2"], "tolerance": tol,
            "pass": abs(deep["mean_s2"] - 1) <= tol,
        })
    g_deep = rows["tanh (critical), Gaussian"]["depths"][-1]
    o_deep = rows["tanh (critical), orthogonal"]["depths"][-1]
    checks.append({
        "check": f"tanh (critical), L = {o_deep['depth']}: orthogonal weights keep the spectrum "
                 "concentrated (dynamical isometry): Var[s^2] orthogonal < 1/10 of Gaussian",
        "measured": f"{o_deep['var_s2']:.3g} vs {g_deep['var_s2']:.3g}",
        "pass": o_deep["var_s2"] < 0.1 * g_deep["var_s2"],
    })
    # kappa ~ 8 q*^2 is quadratic in q^l, whose layer-to-layer fluctuation at width N is
    # ~ sqrt(2 / N) (9% at N = 256, 18% at N = 64): 25% allows for that, plus 5 SE
    pred = o_deep["var_s2_free_probability"]
    tol = 5 * o_deep["var_s2_se"] + 0.25 * pred
    checks.append({
        "check": f"tanh (critical), orthogonal, L = {o_deep['depth']}: Var[s^2] = L kappa = "
                 f"{pred:.3g} (free probability; 5 SE + 25% for finite width)",
        "measured": o_deep["var_s2"], "tolerance": tol,
        "pass": abs(o_deep["var_s2"] - pred) <= tol,
    })
    return {
        "name": NAME, "status": "done", "quick": quick, "seeds": seeds, "width": width,
        "depths": list(depths), "tanh_point": crit, "seconds": seconds, "cases": rows,
        "checks": checks, "all_pass": all(c["pass"] for c in checks),
    }


def _figures(out: Path, depths, width, all_cases, spectra, report) -> None:
    fig = plotting.new_figure(3.2 * len(depths), 3.6)
    axes = fig.subplots(1, len(depths), sharey=True)
    lo, hi = -8.0, 2.0
    bins = np.linspace(lo, hi, 81)
    for ax, d in zip(axes, depths, strict=True):
        for i, case in enumerate(all_cases):
            logs = np.log10(np.maximum(spectra[case.label][d].ravel(), 10**lo))
            counts, _ = np.histogram(logs, bins)
            ax.stairs(counts / logs.size, bins, lw=1.2, color=f"C{i}", label=case.label,
                      ls="-" if case.init == "normal" else "--")
        # float32: singular values below ~1e-6 of the largest are rounding noise
        ax.axvspan(lo, -6, color="0.9", zorder=0)
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_xlabel("log10 singular value of J")
        ax.set_title(f"L = {d}", fontsize=9)
    axes[0].set_ylabel("fraction of singular values")
    axes[0].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"Input-output Jacobian spectra, width {width} "
                 "(grey: below float32 resolution)", fontsize=10)
    _io.save_figure(fig, out / "spectra")

    fig = plotting.new_figure(10.0, 4.0)
    ax_v, ax_s = fig.subplots(1, 2)
    d_arr = np.asarray(depths, dtype=float)
    for i, case in enumerate(all_cases):
        rows = report["cases"][case.label]["depths"]
        var = np.array([r["var_s2"] for r in rows])
        ls = "-" if case.init == "normal" else "--"
        ax_v.plot(d_arr, np.maximum(var, 1e-12), "o" + ls, color=f"C{i}", label=case.label)
        pred = np.array([r["var_s2_free_probability"] for r in rows])
        if np.all(pred > 0):
            ax_v.plot(d_arr, pred, ":", color=f"C{i}", lw=1)
        ax_s.plot(d_arr, [r["s_max"] for r in rows], "o" + ls, color=f"C{i}", label=case.label)
    exact = [finite_width_moments(int(d), width) for d in depths]
    # E[Var[s^2]] = E[m2] - E[m1^2], both exact at finite N
    ax_v.plot(d_arr, [m2 - m1_sq for m1_sq, m2 in exact], "kx",
              label=f"Gaussian linear, exact at N = {width}")
    for ax in (ax_v, ax_s):
        ax.set_xscale("log")
        ax.set_xticks(d_arr, [str(d) for d in depths])
        ax.minorticks_off()
        ax.set_xlabel("depth L")
    ax_v.set_yscale("log")
    ax_v.set_ylabel("Var[s^2] (mean over seeds; floored at 1e-12)")
    ax_v.set_title("spread of the squared singular values (dotted: free probability)", fontsize=9)
    ax_v.legend(fontsize=6)
    ax_s.set_yscale("log")
    ax_s.set_ylabel("largest singular value (over seeds)")
    ax_s.set_title("the largest singular value", fontsize=9)
    _io.save_figure(fig, out / "spread")



def _markdown(report: dict[str, Any]) -> str:
    crit = report["tanh_point"]
    lines = [
        *_reports.header(
            "Jacobian spectra: Gaussian vs orthogonal weights "
            "(Saxe et al. 2014; Pennington et al. 2017)",
            f"Width {report['width']}, depths {report['depths']}, {report['seeds']} networks per "
            "case; ",
            report,
        ),
        f"tanh point: sigma_w^2 = {crit['sigma_w2']}, sigma_b^2 = {crit['sigma_b2']:.4g} (on the "
        f"critical line), q* = {crit['q_star']:.4g}, chi_1 = {crit['chi_1']:.6f}, "
        f"kappa = {crit['kappa']:.4g}; Pennington et al. 2017 use sigma_w^2 = 1.05 with "
        "sigma_b^2 ~ 2e-5 (q* ~ 1/40).",
        "",
        "## Beside the papers",
        "",
        "| case | L | mean s^2 (theory) | mean s^4 (Fuss-Catalan L + 1; exact at N) | "
        "Var[s^2] (free prob.) | max s |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in report["cases"].items():
        for r in row["depths"]:
            if row["activation"] == "linear" and row["init"] == "normal":
                _, m2 = finite_width_moments(r["depth"], report["width"])
                s4 = f"{r['mean_s4']:.4g} +- {r['mean_s4_se']:.2g} ({r['depth'] + 1}; {m2:.4g})"
            else:
                s4 = f"{r['mean_s4']:.4g}"
            lines.append(
                f"| {label} | {r['depth']} | {r['mean_s2']:.4g} +- {r['mean_s2_se']:.2g} (1) | "
                f"{s4} | {r['var_s2']:.4g} ({r['var_s2_free_probability']:.3g}) | "
                f"{r['s_max']:.4g} |"
            )
    deep, n = report["depths"][-1], report["width"]
    m1_sq_deep, m2_deep = finite_width_moments(deep, n)
    lin = report["cases"]["linear, Gaussian"]["depths"][-1]
    tg = report["cases"]["tanh (critical), Gaussian"]["depths"][-1]
    lines += [
        "",
        "Saxe et al. 2014 state the isometry of orthogonal products and the spreading of Gaussian "
        "ones qualitatively; Pennington et al. 2017 give the spectra as densities and the spread "
        "through the S-transform. The numbers in parentheses are those theories' values, not "
        "numbers printed in the papers.",
        "",
        "Where and why the measurement departs from the theory:",
        "",
        "- Finite width: for Gaussian products E[s^4] exceeds the Fuss-Catalan L + 1, to first "
        f"order by L (L + 1) / (2N) ({deep * (deep + 1) / (2 * n):.3g} at L = {deep}, N = {n}); "
        f"the exact Wick recursion gives {m2_deep - deep - 1:.3g}, and the checks use the exact "
        "finite-N value.",
        f"- Heavy tails at depth: at L = {deep} the fourth moment of a Gaussian product is "
        "carried by rare large singular values, so the mean over a few networks is skewed low "
        f"and its standard error is itself uncertain: measured {lin['mean_s4']:.4g} +- "
        f"{lin['mean_s4_se']:.2g} against {m2_deep:.4g} (within the 5 SE of the check).",
        f"- Gaussian tanh at L = {deep}: Var[s^2] = {tg['var_s2']:.4g} against the infinite-width "
        f"{tg['var_s2_free_probability']:.3g}, and mean s^2 = {tg['mean_s2']:.3g}: finite-width "
        "effects of order L^2 / N (linear Gaussian: exact E[Var[s^2]] "
        f"{m2_deep - m1_sq_deep:.3g} vs {deep}) are amplified by the fluctuations of q^l; no "
        "check compares this case with the free-probability value.",
        "- The smallest singular values of deep Gaussian products lie below float32's resolution "
        "(about 1e-6 of the largest); their histogram bins are rounding noise (shaded grey in "
        "`spectra.png`), so the spread is measured by Var[s^2], not by the smallest singular "
        "value.",
        "- tanh: finite width moves q^l around q*, so chi_1^L = 1 holds to O(L / N); the "
        "orthogonal tanh spread is compared with the free-probability L kappa within 25% for the "
        "same reason.",
        "",
        *_reports.checks_table(report["checks"]),
    ]
    lines += ["", "Figures: `spectra.png` (histograms of log10 s per depth), `spread.png` "
              "(Var[s^2] and the largest singular value against depth). Data: `spectra.npz` (per "
              "case and depth, (seed, width)).", ""]
    return "\n".join(lines)
