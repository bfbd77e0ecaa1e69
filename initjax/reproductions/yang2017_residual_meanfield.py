"""Yang & Schoenholz 2017: mean-field residual networks, measured against their recursions.

Paper: "Mean Field Residual Networks: On the Edge of Chaos", https://arxiv.org/abs/1712.08969.
Two residual architectures, ``N`` units wide, ``L`` blocks, ``x^0`` the input:

    full residual net (FRN):     h^l = W^l x^{l-1} + b^l,   x^l = x^{l-1} + V^l phi(h^l) + a^l
    reduced residual net (RRN):  h^l = W^l x^{l-1} + b^l,   x^l = x^{l-1} + phi(h^l)

with ``W_ij ~ N(0, sigma_w^2 / N)``, ``V_ij ~ N(0, sigma_v^2 / N)``, ``b ~ N(0, sigma_b^2)``,
``a ~ N(0, sigma_a^2)``. In initjax they are a :class:`~initjax.network.Residual` whose branch is
``Dense(phi, W, b)`` then ``Dense(identity, V, a)`` (FRN) or ``Dense(phi, W, b)`` alone (RRN).

Mean field (infinite width; ``p = E[x_i^2]``, ``gamma = E[x_i x'_i]`` for two inputs,
``mu = E[x_i]``, ``q = E[h_i^2]``, ``lambda = E[h_i h'_i]``; ``z ~ N(0, 1)``)::

    q^l = sigma_w^2 p^{l-1} + sigma_b^2,          lambda^l = sigma_w^2 gamma^{l-1} + sigma_b^2
    FRN: p^l = p^{l-1} + sigma_v^2 E[phi(sqrt(q^l) z)^2] + sigma_a^2
         gamma^l = gamma^{l-1} + sigma_v^2 E[phi(u) phi(u')] + sigma_a^2,
             (u, u') ~ N(0, [[q, lambda], [lambda, q]])
    RRN: p^l = p^{l-1} + E[phi(sqrt(q^l) z)^2] + 2 mu^{l-1} E[phi(sqrt(q^l) z)]
         gamma^l = gamma^{l-1} + E[phi(u) phi(u')] + 2 mu^{l-1} E[phi(sqrt(q^l) z)]
         mu^l = mu^{l-1} + E[phi(sqrt(q^l) z)]
    gradients (gradient independence), chi^l = E[(dE/dx^l_i)^2], chi^L = 1:
         chi^{l-1} = chi^l (1 + sigma_v^2 sigma_w^2 E[phi'(sqrt(q^l) z)^2])    (RRN: sigma_v^2 = 1)

The cosine between two inputs' streams is ``gamma^l / p^l``. The RRN's mean terms vanish for an
odd ``phi`` (tanh); for ReLU the stream accumulates a positive mean ``mu`` that the cross term
``E[x phi(h)] = mu E[phi]`` carries (initjax's own derivation: x and h are independent in the
limit, and every unit of ``x`` has mean ``mu``).

Laws (Yang & Schoenholz): with tanh, ``E[tanh^2] <= 1`` so ``p`` grows linearly in ``l``, and
``E[tanh'(sqrt(q) z)^2] ~ (4/3) (2 pi q)^(-1/2)``, so ``log chi^0 / chi^L = Theta(sqrt(L))``
(subexponential); with ReLU, ``p^l ~ (1 + sigma_v^2 sigma_w^2 / 2) p^{l-1}`` and the gradient grows
by the same factor per block: both exponential.

What this runs: the engine (:func:`initjax.propagate`, block statistics) on FRN and RRN with tanh
and ReLU; the recursions above in float64 (closed forms for ReLU, quadrature for tanh, here: an
independent derivation) and, when present, :func:`initjax.theory.predict` on the same networks.
Tolerances: 5 standard errors of the seed mean (from the seed spread) plus a finite-width
allowance (see :func:`_tolerance`).
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from initjax import _io, plotting
from initjax.engine import BlockPropagation, propagate
from initjax.network import Dense, Network, Repeat, Residual
from initjax.reproductions import _reports

__all__ = ["NAME", "ARMS", "Arm", "MeanField", "gaussian_covariance", "gaussian_moments",
           "network", "recursions", "run"]

NAME = "yang2017-residual-meanfield"
INPUT_CORRELATION = 0.5  # every pair of inputs: gamma^0 / p^0 (p^0 = 1)
SE_FACTOR = 5.0


class Arm(NamedTuple):
    """One residual architecture: ``kind`` "full" (FRN) or "reduced" (RRN), and its variances."""

    label: str
    kind: str
    activation: str
    sigma_w2: float
    sigma_v2: float  # FRN only (the RRN has no V: 1)
    sigma_b2: float
    sigma_a2: float  # FRN only (0 for the RRN)


ARMS = (
    Arm("FRN, tanh", "full", "tanh", 1.0, 1.0, 0.1, 0.1),
    Arm("FRN, ReLU", "full", "relu", 1.0, 0.5, 0.1, 0.1),
    Arm("RRN, tanh", "reduced", "tanh", 1.0, 1.0, 0.1, 0.0),
    Arm("RRN, ReLU", "reduced", "relu", 0.5, 1.0, 0.1, 0.0),
)


def _sizes(quick: bool) -> dict[str, int]:
    if quick:
        return {"width": 256, "depth": 24, "batch": 4, "seeds": 8}
    return {"width": 1024, "depth": 100, "batch": 4, "seeds": 12}


def _gauss(variance: float) -> Any:
    return ("variance_scaling", {"scale": variance, "mode": "fan_in", "distribution": "normal"})


def _bias(variance: float) -> Any:
    return ("normal", {"stddev": math.sqrt(variance)}) if variance > 0 else "zeros"


def network(arm: Arm, width: int, depth: int, batch: int,
            input_correlation: float = INPUT_CORRELATION) -> Network:
    """The arm as a Network: ``depth`` residual blocks on a ``width``-unit stream (the input is
    the stream, ``x^0 ~ N(0, 1)``, every pair of examples correlated ``input_correlation``)."""
    first = Dense(width, _gauss(arm.sigma_w2), arm.activation, _bias(arm.sigma_b2))
    branch = (first,) if arm.kind == "reduced" else (
        first, Dense(width, _gauss(arm.sigma_v2), "identity", _bias(arm.sigma_a2)))
    return Network(width, (Repeat(Residual(branch, alpha=1.0), depth),), batch=batch,
                   input_correlation=input_correlation, label=arm.label)


# -- the recursions, float64 ---------------------------------------------------------------------
@functools.cache
def _leggauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)  # an eigenproblem: computed once per n


def _legendre(a: float, b: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = _leggauss(n)
    return 0.5 * (b - a) * x + 0.5 * (b + a), 0.5 * (b - a) * w


def _pdf(u: np.ndarray, var: float) -> np.ndarray:
    # the exponent is floored at -80 (e^-80 ~ 2e-35 adds nothing): far tails would otherwise
    # produce subnormals, which are two orders of magnitude slower on CPUs
    return np.exp(np.maximum(-u * u / (2 * var), -80.0)) / math.sqrt(2 * math.pi * var)


_U, _WU = _legendre(-30.0, 30.0, 2000)  # sech^2, sech^4 < 4e-26 beyond |u| = 30
_T = np.concatenate([_legendre(-20.0, 0.0, 400)[0], _legendre(0.0, 20.0, 400)[0]])
_WT = np.concatenate([_legendre(-20.0, 0.0, 400)[1], _legendre(0.0, 20.0, 400)[1]])
_GZ, _GW = np.polynomial.hermite_e.hermegauss(80)
_GW = _GW / math.sqrt(2 * math.pi)


def _tanh_smoothed(a: np.ndarray, s2: float) -> np.ndarray:
    """``E tanh(a + y)``, ``y ~ N(0, s2)``: Gauss-Hermite for ``s <= 2`` (the integrand is smooth on
    the nodes' scale); otherwise ``tanh = sign - sign 2 / (e^{2|t|} + 1)``, the sign part in closed
    form and the fast-decaying rest by Gauss-Legendre on ``t in [-20, 0] u [0, 20]``."""
    from scipy.special import ndtr

    s = math.sqrt(max(s2, 0.0))
    if s <= 2.0:
        return (_GW * np.tanh(a[:, None] + s * _GZ)).sum(axis=1)
    rest = np.sign(_T) * 2.0 / (np.exp(2.0 * np.abs(_T)) + 1.0)
    dens = _pdf(_T - a[:, None], s2)
    return 1.0 - 2.0 * ndtr(-a / s) - (dens * rest * _WT).sum(axis=1)


def _tanh_moments(q: float) -> tuple[float, float, float]:
    """``(E tanh^2, E tanh, E tanh'^2)`` at ``u ~ N(0, q)``, integrating ``sech^2`` and ``sech^4``
    (which decay) over ``u`` directly, so large ``q`` costs nothing extra."""
    dens = _pdf(_U, q) * _WU
    return 1.0 - float(np.sum(dens / np.cosh(_U) ** 2)), 0.0, float(np.sum(dens / np.cosh(_U) ** 4))


def _tanh_cov(q: float, lam: float) -> float:
    """``E tanh(u) tanh(u')``, ``(u, u') ~ N(0, [[q, lam], [lam, q]])``: ``u = s + y``,
    ``u' = s + y'`` with ``s ~ N(0, lam)`` shared, so it is ``E_s T(s)^2`` with ``T`` the smoothed
    tanh (:func:`_tanh_smoothed`); ``1 - T^2`` decays, so it is integrated over ``s``."""
    sign = 1.0
    if lam < 0:  # tanh is odd
        lam, sign = -lam, -1.0
    if lam < 1e-14:
        return 0.0
    s2 = max(q - lam, 0.0)
    half = min(10.0 * math.sqrt(lam), 40.0 + 10.0 * math.sqrt(s2))
    s, w = _legendre(-half, half, 800)
    t = _tanh_smoothed(s, s2)
    return sign * (1.0 - float(np.sum(w * _pdf(s, lam) * (1.0 - t * t))))


def _relu_moments(q: float) -> tuple[float, float, float]:
    return q / 2.0, math.sqrt(q / (2 * math.pi)), 0.5


def _relu_cov(q: float, lam: float) -> float:
    """The arc-cosine kernel (Cho & Saul 2009): ``q (sin t + (pi - t) cos t) / (2 pi)``."""
    if q <= 0:
        return 0.0
    t = math.acos(min(max(lam / q, -1.0), 1.0))
    return q * (math.sin(t) + (math.pi - t) * math.cos(t)) / (2 * math.pi)


_PHI = {"tanh": (_tanh_moments, _tanh_cov), "relu": (_relu_moments, _relu_cov)}


def _phi(activation: str):
    if activation not in _PHI:
        raise ValueError(f"recursions know the activations {sorted(_PHI)}, got {activation!r}")
    return _PHI[activation]


def gaussian_moments(activation: str, q: float) -> tuple[float, float, float]:
    """``(E phi(u)^2, E phi(u), E phi'(u)^2)`` for ``u ~ N(0, q)``, float64: closed forms for
    ReLU (``q / 2``, ``sqrt(q / (2 pi))``, ``1 / 2``), quadrature for tanh that stays accurate at
    large ``q`` (where Gauss-Hermite in ``z`` fails: ``tanh(sqrt(q) z)`` is a step on its nodes).

    Raises:
      ValueError: for an activation other than ``"tanh"`` and ``"relu"``.
    """
    return _phi(activation)[0](float(q))


def gaussian_covariance(activation: str, q: float, lam: float) -> float:
    """``E phi(u) phi(u')`` for ``(u, u') ~ N(0, [[q, lam], [lam, q]])``, float64 (ReLU: the
    arc-cosine kernel; tanh: quadrature, see :func:`_tanh_cov`).

    Raises:
      ValueError: for an activation other than ``"tanh"`` and ``"relu"``.
    """
    return _phi(activation)[1](float(q), float(lam))


class MeanField(NamedTuple):
    """The recursions' values per block ``l = 1..L`` (index ``l - 1``), float64."""

    p: np.ndarray  # E[(x^l_i)^2]
    gamma: np.ndarray  # E[x^l_i x'^l_i]
    mu: np.ndarray  # E[x^l_i]
    q: np.ndarray  # E[(h^l_i)^2]
    cosine: np.ndarray  # gamma / p
    chi: np.ndarray  # E[(dE/dx^l_i)^2], 1 at l = L
    gradient_factor: np.ndarray  # chi^{l-1} / chi^l


def recursions(arm: Arm, depth: int, p0: float = 1.0, c0: float = INPUT_CORRELATION) -> MeanField:
    """Yang & Schoenholz's forward and backward recursions for ``arm`` (module docstring), from
    ``p^0 = p0``, ``gamma^0 = c0 p0``, ``mu^0 = 0``.

    Raises:
      ValueError: for an activation other than tanh and ReLU, an unknown kind, or depth < 1.
    """
    if arm.kind not in ("full", "reduced"):
        raise ValueError(f"an arm's kind must be 'full' (FRN) or 'reduced' (RRN), got {arm.kind!r}")
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    moments, cov = _phi(arm.activation)
    full = arm.kind == "full"
    sv2 = arm.sigma_v2 if full else 1.0
    sa2 = arm.sigma_a2 if full else 0.0
    p, gamma, mu = p0, c0 * p0, 0.0
    out = {k: [] for k in ("p", "gamma", "mu", "q", "factor")}
    for _ in range(depth):
        q = arm.sigma_w2 * p + arm.sigma_b2
        lam = arm.sigma_w2 * gamma + arm.sigma_b2
        v, m, d = moments(q)
        c = cov(q, lam)
        cross = 0.0 if full else 2.0 * mu * m
        p, gamma = p + sv2 * v + sa2 + cross, gamma + sv2 * c + sa2 + cross
        if not full:
            mu = mu + m
        for k, val in (("p", p), ("gamma", gamma), ("mu", mu), ("q", q),
                       ("factor", 1.0 + sv2 * arm.sigma_w2 * d)):
            out[k].append(val)
    factor = np.asarray(out["factor"])
    # chi^l = prod_{k = l+1}^{L} factor^k: block L's own factor acts on chi^{L-1}
    chi = np.concatenate([np.cumprod(factor[::-1])[::-1][1:], [1.0]])
    p_arr = np.asarray(out["p"])
    return MeanField(p_arr, np.asarray(out["gamma"]), np.asarray(out["mu"]), np.asarray(out["q"]),
                     np.asarray(out["gamma"]) / p_arr, chi, factor)


# -- the run ---------------------------------------------------------------------------------------
def run(
    out: str | Path, *, quick: bool = False, seeds: int | None = None, progress: bool | None = None
) -> dict[str, Any]:
    """Measure the four arms, compare with the recursions, write figures, data and reports."""
    size = _sizes(quick)
    out, seeds, t0 = _reports.start(out, NAME, seeds, size["seeds"], min_seeds=2)
    width, depth, batch = size["width"], size["depth"], size["batch"]
    measured: dict[str, BlockPropagation] = {}
    theory: dict[str, MeanField] = {}
    module: dict[str, dict[str, np.ndarray] | None] = {}
    for arm in ARMS:
        net = network(arm, width, depth, batch)
        result = propagate(net, seeds, key=0, progress=progress)
        result.save(out / "data" / _reports.slug(arm.label))
        measured[arm.label] = result
        theory[arm.label] = recursions(arm, depth)
        module[arm.label] = _theory_module(net)
    _io.write_npz(out / "mean_field.npz", **{
        f"{_reports.slug(label)}_{k}": v
        for label, mf in theory.items() for k, v in mf._asdict().items()})
    report = _report(quick, seeds, size, measured, theory, module, time.perf_counter() - t0)
    _figures(out, measured, theory, depth)
    return _reports.finish(out, report, _markdown(report))


def _theory_module(net: Network) -> dict[str, np.ndarray] | None:
    """``initjax.theory.predict(net)``'s per-block arrays, or None where it does not (yet) predict
    residual networks."""
    try:
        from initjax import theory

        pred = theory.predict(net)
    except (ImportError, NotImplementedError, TypeError, ValueError, AttributeError):
        return None
    fields = {}
    for name in ("q", "cosine", "grad"):
        value = getattr(pred, name, None)
        if value is None:
            return None
        fields[name] = np.asarray(value, np.float64)
    return fields


def _seed_mean(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds (finite values only) and its standard error, per block."""
    v = np.where(np.isfinite(values), values, np.nan).astype(np.float64)
    n = np.maximum(np.isfinite(v).sum(axis=0), 1)
    mean = np.nanmean(v, axis=0)
    sd = np.nanstd(v, axis=0, ddof=1) if v.shape[0] > 1 else np.full(v.shape[1], np.inf)
    return mean, sd / np.sqrt(n)


def _tolerance(se: np.ndarray, width: int) -> np.ndarray:
    """``SE_FACTOR`` standard errors plus ``4 / width``: the finite-width corrections of the
    mean-field recursions are O(1 / width) (zero for ReLU's forward pass, whose variance map is
    linear, so the recursion holds in expectation at any width)."""
    return SE_FACTOR * se + 4.0 / width


def _compare(measured: np.ndarray, predicted: np.ndarray, width: int,
             relative: bool) -> dict[str, Any]:
    """Worst block of ``|mean - predicted| / tolerance`` (relative deviations for ``relative``)."""
    mean, se = _seed_mean(measured)
    scale = predicted if relative else np.ones_like(predicted)
    dev = (mean - predicted) / scale
    tol = _tolerance(se / np.abs(scale), width)
    with np.errstate(invalid="ignore"):
        ratio = np.where(np.isfinite(dev), np.abs(dev) / tol, np.inf)
    worst = int(np.argmax(ratio))
    return {"worst_block": worst + 1, "deviation": float(dev[worst]),
            "tolerance": float(tol[worst]), "worst_ratio": float(ratio[worst]),
            "mean": mean.tolist(), "se": se.tolist(),
            "max_abs_deviation": float(np.nanmax(np.abs(dev)))}


def _log_rate(values: np.ndarray, lo: int, hi: int) -> tuple[float, float, np.ndarray]:
    """Per seed, the mean per-block change of ``log values`` from block ``lo`` to ``hi`` (1-based);
    returns its mean over seeds, standard error and the per-seed values (non-finite seeds out)."""
    with np.errstate(all="ignore"):
        logs = np.log(values.astype(np.float64))
        r = (logs[:, hi - 1] - logs[:, lo - 1]) / (hi - lo)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return float("nan"), float("inf"), r
    return float(r.mean()), float(r.std(ddof=1) / math.sqrt(r.size)), r


def _reference(mf: MeanField, pred: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """What the measurement is compared with: :func:`initjax.theory.predict`'s p, cosine and chi
    where it predicts residual networks, else this module's recursion."""
    if pred is None:
        return {"p": mf.p, "cosine": mf.cosine, "chi": mf.chi}
    return {"p": pred["q"], "cosine": pred["cosine"], "chi": pred["grad"]}


def _report(quick, seeds, size, measured, theory, module, seconds) -> dict[str, Any]:
    width, depth = size["width"], size["depth"]
    checks, arms = [], []
    for arm in ARMS:
        st, mf, pred = measured[arm.label].stats, theory[arm.label], module[arm.label]
        ref = _reference(mf, pred)
        res = {
            "p": _compare(st.act_second_moment, ref["p"], width, relative=True),
            "cosine": _compare(st.cosine, ref["cosine"], width, relative=False),
            "chi": _compare(st.grad_second_moment, ref["chi"], width, relative=True),
        }
        row = {"arm": arm._asdict(), "predicted": {k: v.tolist() for k, v in ref.items()},
               "recursion": {k: v.tolist() for k, v in mf._asdict().items()},
               "nonfinite_blocks": measured[arm.label].nonfinite_blocks, **res}
        source = "initjax.theory.predict" if pred is not None else "the recursion"
        for name, what, rel in (("p", "stream second moment p^l", True),
                                ("cosine", "cosine gamma^l / p^l", False),
                                ("chi", "gradient chi^l = E[(dE/dx^l)^2]", True)):
            r = res[name]
            checks.append({
                "check": f"{arm.label}: {what} within {SE_FACTOR:g} SE + 4 / width of {source} at "
                         f"every block ({'relative' if rel else 'absolute'}; worst block "
                         f"{r['worst_block']}, deviation {r['deviation']:+.4g})",
                "measured": r["worst_ratio"], "tolerance": 1.0, "pass": r["worst_ratio"] <= 1.0})
        if pred is not None:
            agree = {k: float(np.max(np.abs(pred[k2] / ref_ - 1))) for k, k2, ref_ in (
                ("p", "q", mf.p), ("cosine", "cosine", mf.cosine), ("chi", "grad", mf.chi))}
            row["theory_module_max_rel_diff"] = agree
            worst = max(agree.values())
            checks.append({"check": f"{arm.label}: initjax.theory.predict agrees with this "
                                    "module's float64 recursion (p, cosine, chi; max "
                                    "relative difference <= 1e-3)",
                           "measured": worst, "tolerance": 1e-3, "pass": worst <= 1e-3})
        arms.append(row)
    law_checks, laws = _law_checks(measured, theory, depth)
    checks += law_checks
    return {
        "name": NAME, "status": "done", "quick": quick, "seeds": seeds, "seconds": seconds,
        "setup": {**size, "seeds": seeds, "input_correlation": INPUT_CORRELATION,
                  "input_variance": 1.0, "cotangent": "N(0, 1) at the output"},
        "prng_impl": measured[ARMS[0].label].prng_impl,
        "reference": "initjax.theory.predict" if all(v is not None for v in module.values())
        else "this module's recursion",
        "arms": arms, "laws": laws, "checks": checks, "all_pass": all(c["pass"] for c in checks),
    }


LINEAR_BAND = 0.2  # |log-log slope - 1| allowed for "linear growth" (exponential: >> 1)


def _law_checks(measured, theory, depth) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Growth laws over the second half of the depth: tanh's p linear (log-log slope 1), ReLU's
    exponential at ``1 + sigma_v^2 sigma_w^2 / 2`` per block; the per-block gradient growth
    shrinking with depth for tanh (subexponential, ``exp(Theta(sqrt L))``) and constant for ReLU."""
    quarter, half = max(1, depth // 4), max(2, depth // 2)
    checks, laws = [], {"blocks": [quarter, half, depth]}
    for arm in ARMS:
        st, mf = measured[arm.label].stats, theory[arm.label]
        p = np.asarray(st.act_second_moment, np.float64)
        chi = np.asarray(st.grad_second_moment, np.float64)
        rate, se, _ = _log_rate(p, half, depth)
        slope = rate * (depth - half) / math.log(depth / half)  # d log p / d log l
        slope_se = se * (depth - half) / math.log(depth / half)
        pred_slope = math.log(mf.p[-1] / mf.p[half - 1]) / math.log(depth / half)
        g_late, g_late_se, late = _log_rate(chi, half, depth)
        g_early, g_early_se, early = _log_rate(chi, quarter, half)
        n = min(late.size, early.size)
        ratio = late[:n] / early[:n]
        r_mean = float(ratio.mean()) if n else float("nan")
        r_se = float(ratio.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
        law = {"p_loglog_slope": slope, "p_loglog_slope_se": slope_se,
               "p_loglog_slope_recursion": pred_slope, "p_log_rate": rate, "p_log_rate_se": se,
               "grad_log_rate_late": -g_late, "grad_log_rate_early": -g_early,
               "grad_rate_ratio": r_mean, "grad_rate_ratio_se": r_se,
               "grad_rate_ratio_recursion": float(
                   np.log(mf.chi[half - 1] / mf.chi[depth - 1]) / (depth - half)
                   / (np.log(mf.chi[quarter - 1] / mf.chi[half - 1]) / (half - quarter)))}
        laws[arm.label] = law
        if arm.activation == "tanh":
            checks.append({
                "check": f"{arm.label}: p grows linearly: log-log slope of p over blocks "
                         f"{half}-{depth} within {LINEAR_BAND} of 1 (the recursion: "
                         f"{pred_slope:.3f})",
                "measured": slope, "tolerance": LINEAR_BAND + SE_FACTOR * slope_se,
                "pass": abs(slope - 1) <= LINEAR_BAND + SE_FACTOR * slope_se})
            checks.append({
                "check": f"{arm.label}: gradients grow subexponentially: per-block growth of log "
                         f"chi over blocks {half}-{depth} / over {quarter}-{half} + {SE_FACTOR:g} "
                         "SE < 1 "
                         "(exp(Theta(sqrt L)) law: about 1/sqrt(2); exponential: 1)",
                "measured": r_mean, "tolerance": SE_FACTOR * r_se,
                "pass": r_mean + SE_FACTOR * r_se < 1})
        else:
            sv2 = arm.sigma_v2 if arm.kind == "full" else 1.0
            r = 1 + sv2 * arm.sigma_w2 / 2
            if arm.kind == "full":
                # the additive terms add (sigma_v^2 sigma_b^2 / 2 + sigma_a^2) / p to the factor
                extra = (arm.sigma_v2 * arm.sigma_b2 / 2 + arm.sigma_a2) / mf.p[half - 1]
                target, what = math.log(r), f"log(1 + sigma_v^2 sigma_w^2 / 2) = {math.log(r):.4f}"
            else:  # the mean's cross term makes the RRN's rate the recursion's, not a closed form
                extra = 0.0
                target = float(math.log(mf.p[-1] / mf.p[half - 1]) / (depth - half))
                what = f"the recursion's {target:.4f}"
            tol = SE_FACTOR * se + extra
            checks.append({
                "check": f"{arm.label}: p grows exponentially: per-block log growth over blocks "
                         f"{half}-{depth} = {what} ({SE_FACTOR:g} SE"
                         + (f" + the bias terms' {extra:.1e})" if extra else ")"),
                "measured": rate, "tolerance": tol, "pass": abs(rate - target) <= tol})
            checks.append({
                "check": f"{arm.label}: gradients grow exponentially: per-block growth of log "
                         f"chi over blocks {half}-{depth} = "
                         "log(1 + sigma_v^2 sigma_w^2 E[phi'^2]) = "
                         f"{math.log(r):.4f} ({SE_FACTOR:g} SE)",
                "measured": -g_late, "tolerance": SE_FACTOR * g_late_se,
                "pass": abs(-g_late - math.log(r)) <= SE_FACTOR * g_late_se})
            checks.append({
                "check": f"{arm.label}: gradient growth per block is constant over depth: growth "
                         f"over {half}-{depth} / over {quarter}-{half} = 1 within {SE_FACTOR:g} SE",
                "measured": r_mean, "tolerance": SE_FACTOR * r_se,
                "pass": abs(r_mean - 1) <= SE_FACTOR * r_se})
    return checks, laws


def _figures(out: Path, measured, theory, depth) -> None:
    runs = [measured[a.label] for a in ARMS]
    labels = [a.label for a in ARMS]
    fig = plotting.new_figure(12.0, 8.0)
    (ax_p, ax_lin), (ax_c, ax_g) = fig.subplots(2, 2)
    plotting.variance_curves(runs, "act_second_moment", ax=ax_p, labels=labels, theory=[
        plotting.theory_curve(theory[a.label].p) for a in ARMS])
    plotting.note_theory(ax_p, note="dashed: recursion")
    plotting.label_axes(ax_p, "block l", "p^l = E[(x^l)^2]", "stream second moment (log)",
                        legend_size=None)
    tanh_arms = [a for a in ARMS if a.activation == "tanh"]
    plotting.variance_curves([measured[a.label] for a in tanh_arms], "act_second_moment", ax=ax_lin,
                             labels=[a.label for a in tanh_arms], log=False,
                             theory=[theory[a.label].p for a in tanh_arms])
    plotting.label_axes(ax_lin, "block l", "p^l", "tanh: linear growth of p (linear axes)")
    plotting.variance_curves(runs, "cosine", ax=ax_c, labels=labels, log=False,
                             theory=[theory[a.label].cosine for a in ARMS])
    plotting.label_axes(ax_c, "block l", "cosine between inputs",
                        f"cosine gamma^l / p^l (input: {INPUT_CORRELATION})")
    plotting.variance_curves(runs, "grad_second_moment", ax=ax_g, labels=labels, theory=[
        plotting.theory_curve(theory[a.label].chi) for a in ARMS])
    plotting.label_axes(ax_g, "block l", "chi^l = E[(dE/dx^l)^2]",
                        "gradients (1 at the output): tanh subexponential, ReLU exponential")
    _io.save_figure(fig, out / "residual-meanfield")


def _markdown(report: dict[str, Any]) -> str:
    s = report["setup"]
    lines = [
        *_reports.header(
            "Mean field residual networks (Yang & Schoenholz 2017)",
            f"{report['seeds']} seeds; width {s['width']}, {s['depth']} blocks, batch {s['batch']} "
            f"Gaussian inputs (variance 1, pairwise correlation {s['input_correlation']}), N(0, 1) "
            "output cotangent; ", report),
        "",
        "| arm | sigma_w^2 | sigma_v^2 | sigma_b^2 | sigma_a^2 | p^L measured | p^L predicted | "
        "cosine^L measured | predicted | chi^1 measured | chi^1 predicted |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["arms"]:
        a, pred = row["arm"], row["predicted"]
        sv2, sa2 = ((f"{a['sigma_v2']:g}", f"{a['sigma_a2']:g}") if a["kind"] == "full"
                    else ("-", "-"))
        lines.append(
            f"| {a['label']} | {a['sigma_w2']:g} | {sv2} | {a['sigma_b2']:g} | {sa2} | "
            f"{_reports.fmt(row['p']['mean'][-1])} | "
            f"{_reports.fmt(pred['p'][-1])} | {_reports.fmt(row['cosine']['mean'][-1])} | "
            f"{_reports.fmt(pred['cosine'][-1])} | {_reports.fmt(row['chi']['mean'][0])} | "
            f"{_reports.fmt(pred['chi'][0])} |")
    laws = report["laws"]
    lines += ["", "## Growth laws (second half of the depth)", "",
              "| arm | log-log slope of p (1 = linear) | recursion | per-block log growth of p | "
              "gradient growth ratio late / early (1 = exponential, ~0.71 = exp(sqrt L)) | "
              "recursion |",
              "|---|---|---|---|---|---|"]
    for a in ARMS:
        w = laws[a.label]
        lines.append(f"| {a.label} | {w['p_loglog_slope']:.3f} +- {w['p_loglog_slope_se']:.3f} | "
                     f"{w['p_loglog_slope_recursion']:.3f} | {w['p_log_rate']:.4f} | "
                     f"{w['grad_rate_ratio']:.3f} +- {w['grad_rate_ratio_se']:.3f} | "
                     f"{w['grad_rate_ratio_recursion']:.3f} |")
    lines += [
        "",
        "Beside the paper: Yang & Schoenholz derive these recursions and show that skip "
        "connections make the forward and backward dynamics subexponential for tanh (p linear "
        "in l, log chi^0 / chi^L = Theta(sqrt L)) while ReLU full residual nets stay "
        "exponential. The predictions compared are `initjax.theory.predict`'s (reference: "
        f"{report['reference']}), cross-checked against this module's own float64 recursion "
        "(closed forms for ReLU, quadrature for tanh). Both are initjax derivations in the "
        "paper's setting (the FRN/RRN as above); the paper's own figures and exact exponents "
        "were not consulted, and its variance values are not known here: the sigmas above are "
        "this reproduction's choice. The RRN with ReLU is outside the paper's odd-activation RRN "
        "analysis: its stream accumulates a positive mean mu, whose cross term 2 mu E[phi] the "
        "recursion includes. Its forward pass matches; its gradient does not: with a "
        "mean-dominated stream the ReLU gates 1{Wx > 0} correlate with the row sums of W, so the "
        "gradient independence assumption fails and chi grows faster than predicted, up to "
        "about twice the predicted log rate per block (reported as failed checks, not hidden).",
        "",
        *_reports.checks_table(report["checks"]),
        "",
        "Figure: `residual-meanfield.png` (p^l log and linear, cosine, chi^l; solid: median over "
        "seeds with 10-90% band; dashed: recursion). Data: `data/<arm>/` (engine statistics), "
        "`mean_field.npz` (recursions).",
        "",
    ]
    return "\n".join(lines)
