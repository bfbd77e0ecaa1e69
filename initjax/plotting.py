"""Figures of signal propagation: histogram strips, variance-vs-depth curves, sweep grids.

Every function takes an optional ``ax`` (or ``axes``/``fig``) and returns what it drew on, so figure
scripts compose them. New figures are ``matplotlib.figure.Figure`` objects (no pyplot state), safe
in scripts, threads and notebooks alike (a returned Figure displays in Jupyter).

Non-finite values are never drawn silently: a histogram panel whose layer had inf/NaN values says
so in red, and a curve skips non-finite or (on a log axis) non-positive points and marks those
layers with a red ``x`` along the top of the axes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from initjax.engine import Propagation

__all__ = [
    "hist_strip", "variance_curves", "sweep_grid", "phase_diagram", "new_figure", "label_axes",
    "theory_curve", "note_theory",
]

_STAT_LABELS = {
    "act_var": "Var[activation]",
    "act_std": "std[activation]",
    "act_mean": "mean[activation]",
    "preact_var": "Var[pre-activation]",
    "preact_second_moment": "E[h^2] (q^l)",
    "grad_preact_var": "Var[dL/dh]",
    "grad_act_var": "Var[dL/dx]",
    "weight_grad_var": "Var[dL/dW]",
    "weight_grad_norm": "||dL/dW||_F",
    "saturated": "fraction saturated",
    "zero_fraction": "fraction zero",
    "dead_fraction": "fraction dead",
    "cosine": "mean cosine (pre-activations)",
}


def new_figure(width: float = 10.0, height: float = 3.0) -> Figure:
    """A fresh Figure not attached to pyplot."""
    return Figure(figsize=(width, height), layout="constrained")


def label_axes(
    ax: Axes,
    xlabel: str,
    ylabel: str,
    title: str,
    *,
    title_size: float = 9,
    legend_size: float | None = 7,
    **legend_kwargs,
) -> Axes:
    """Finish a panel: axis labels, a title at ``title_size`` points and, unless ``legend_size`` is
    None, a legend at ``legend_size`` points (``legend_kwargs`` go to ``ax.legend``). Returns
    ``ax``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=title_size)
    if legend_size is not None:
        ax.legend(fontsize=legend_size, **legend_kwargs)
    return ax


def hist_strip(
    result: Propagation,
    kind: str = "act",
    *,
    seed: int | None = None,
    axes: Sequence[Axes] | None = None,
    fig: Figure | None = None,
    title: str | None = None,
    color: str = "C0",
) -> np.ndarray:
    """The classic demo's strip: one histogram panel per layer.

    Args:
      result: a :class:`~initjax.Propagation`.
      kind: ``"act"`` (activation outputs, over ``result.act_edges``) or ``"grad"`` (dL/dh).
      seed: one seed's histograms, or None to pool the counts of all seeds.
      axes: ``depth`` axes to draw on; by default a new row of panels in ``fig`` (or a new figure).
      title: the strip's title (default: the config's name).

    Returns:
      The array of axes drawn on.
    """
    if kind not in ("act", "grad"):
        raise ValueError(f"kind must be 'act' or 'grad', got {kind!r}")
    st = result.stats
    counts = np.asarray(st.act_hist if kind == "act" else st.grad_hist)
    outside = np.asarray(st.act_outside if kind == "act" else st.grad_outside)
    nonfinite = np.asarray(st.nonfinite if kind == "act" else st.grad_nonfinite)
    edges = result.act_edges if kind == "act" else result.grad_edges
    if seed is not None:
        if not 0 <= seed < result.seeds:
            raise ValueError(f"seed must be in [0, {result.seeds}), got {seed}")
        counts, outside, nonfinite = counts[seed : seed + 1], outside[seed : seed + 1], nonfinite[seed : seed + 1]
    counts, outside, nonfinite = counts.sum(0), outside.sum(0), nonfinite.sum(0)
    depth = counts.shape[0]
    if axes is None:
        fig = fig or new_figure(max(8.0, 1.6 * depth), 2.4)
        axes = fig.subplots(1, depth, sharey=True, squeeze=False)[0]
    axes = np.asarray(axes).ravel()
    if axes.size != depth:
        raise ValueError(f"need {depth} axes (one per layer), got {axes.size}")
    total = counts.sum(axis=1, keepdims=True) + outside.sum(axis=1, keepdims=True)
    frac = counts / np.maximum(total, 1)
    for layer, ax in enumerate(axes):
        ax.stairs(frac[layer], edges, fill=True, color=color, alpha=0.8)
        ax.set_xlabel(f"layer {layer + 1}")
        ax.set_xlim(edges[0], edges[-1])
        notes = []
        below, above = outside[layer]
        if below or above:
            notes.append(f"out of range: {below / max(total[layer, 0], 1):.0%} < | > {above / max(total[layer, 0], 1):.0%}")
        if nonfinite[layer]:
            notes.append(f"{int(nonfinite[layer])} non-finite")
        if notes:
            ax.text(
                0.5, 0.97, "\n".join(notes), transform=ax.transAxes, ha="center", va="top",
                fontsize=6, color="red" if nonfinite[layer] else "0.3",
            )
        if layer:
            ax.tick_params(labelleft=False)
    axes[0].set_ylabel("fraction" if kind == "act" else "fraction (dL/dh)")
    if title is None:
        title = f"{result.config.name}: {'activations' if kind == 'act' else 'gradients dL/dh'}"
    axes[0].figure.suptitle(title, fontsize=10)
    return axes


def _mark_bad(ax: Axes, layers: np.ndarray, color: str) -> None:
    if layers.size:
        ax.plot(layers, np.ones_like(layers, dtype=float), "x", color="red", ms=7, mew=2,
                transform=ax.get_xaxis_transform(), clip_on=False, markeredgecolor=color)


def variance_curves(
    results: Propagation | Sequence[Propagation],
    stat: str = "act_var",
    *,
    ax: Axes | None = None,
    labels: Sequence[str] | None = None,
    band: tuple[float, float] = (0.1, 0.9),
    log: bool = True,
    theory: Sequence[np.ndarray | None] | None = None,
) -> Axes:
    """A statistic against depth, one curve per result: the median over seeds and a band of the
    ``band`` quantiles over seeds (10%-90% by default), on a log axis by default.

    Args:
      results: one or several results with ``.stats`` (:class:`~initjax.Propagation`,
        :class:`~initjax.ProbeResult`).
      stat: a :class:`~initjax.LayerStats` field with axes (seed, layer), e.g. ``"act_var"``,
        ``"grad_preact_var"``, ``"weight_grad_var"``.
      labels: curve labels (default: the configs' names).
      theory: optional predicted per-layer values, one array (or None) per result, drawn dashed.

    Layers whose value is non-finite (or <= 0 on a log axis) in some seed are left out of the curve
    and marked with a red ``x`` at the top, and the label says how many such points there were.
    """
    if hasattr(results, "stats"):  # one result (a Propagation, a ProbeResult, ...)
        results = [results]
    results = list(results)
    if ax is None:
        ax = new_figure(6.0, 4.0).subplots()
    labels = list(labels) if labels is not None else [r.config.name for r in results]
    if len(labels) != len(results):
        raise ValueError(f"got {len(labels)} labels for {len(results)} results")
    drawn: list[np.ndarray] = []  # every plotted y value, to check the log axis has one
    for i, r in enumerate(results):
        if not hasattr(r.stats, stat) or np.asarray(getattr(r.stats, stat)).ndim != 2:
            allowed = [f for f in r.stats._fields if np.asarray(getattr(r.stats, f)).ndim == 2]
            raise ValueError(f"stat must be a (seed, layer) statistic, one of {allowed}; got {stat!r}")
        v = np.asarray(getattr(r.stats, stat), dtype=np.float64)
        layers = np.arange(1, v.shape[1] + 1)
        ok = np.isfinite(v) & ((v > 0) if log else True)
        bad_layers = layers[~ok.all(axis=0)]
        masked = np.where(ok, v, np.nan)
        with np.errstate(all="ignore"):
            has = ok.any(axis=0)
            med = np.full(v.shape[1], np.nan)
            lo = np.full(v.shape[1], np.nan)
            hi = np.full(v.shape[1], np.nan)
            if has.any():
                med[has] = np.nanmedian(masked[:, has], axis=0)
                lo[has] = np.nanquantile(masked[:, has], band[0], axis=0)
                hi[has] = np.nanquantile(masked[:, has], band[1], axis=0)
        label = labels[i]
        n_bad = int((~ok).sum())
        if n_bad:
            label += f" ({n_bad} non-finite{' or <= 0' if log else ''} points marked x)"
        (line,) = ax.plot(layers, med, "o-", ms=3, label=label)
        ax.fill_between(layers, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        _mark_bad(ax, bad_layers, line.get_color())
        drawn.extend(v for v in (med, lo, hi) if v is not None)
        if theory is not None and theory[i] is not None:
            predicted = theory_curve(theory[i], log=log)
            drawn.append(predicted)
            ax.plot(layers, predicted, "--", color=line.get_color(), lw=1)
    if log:
        ax.set_yscale("log")
        _fix_empty_log_axis(ax, drawn)
    ax.set_xlabel("layer")
    ax.set_ylabel(_STAT_LABELS.get(stat, stat))
    ax.legend(fontsize=7)
    return ax


def _fix_empty_log_axis(ax: Axes, drawn: Sequence[np.ndarray]) -> None:
    """A log axis with no finite positive value to show (every point overflowed, or is 0) cannot
    autoscale: matplotlib raises "Data cannot be log-scaled" when the figure is drawn. Give it
    fixed limits and say why it is empty, so the figure still renders."""
    values = np.concatenate([np.ravel(np.asarray(v, dtype=np.float64)) for v in drawn]) if drawn else np.zeros(0)
    if np.any(np.isfinite(values) & (values > 0)):
        return
    ax.set_ylim(0.1, 10.0)
    ax.text(0.5, 0.5, "no finite positive value to show\n(every point overflowed or is <= 0)",
            transform=ax.transAxes, ha="center", va="center", fontsize=8, color="red")


def theory_curve(values: Sequence[float] | np.ndarray | None, *, log: bool = True) -> np.ndarray | None:
    """Predicted per-layer values made safe to draw (``variance_curves(..., theory=[...])``):
    non-finite entries (an overflowing prediction) and, on a log axis, entries <= 0 become NaN, so
    the dashed curve has a gap there instead of breaking the axis. ``None`` stays ``None`` (no
    prediction for that curve)."""
    if values is None:
        return None
    v = np.array(values, dtype=np.float64)
    bad = ~np.isfinite(v) | ((v <= 0) if log else False)
    v[bad] = np.nan
    return v


def note_theory(ax: Axes, *, missing: Sequence[str] = (), note: str = "dashed: mean-field theory") -> Axes:
    """Add one legend entry saying what the dashed curves are, and one naming the curves that have
    no prediction (``missing``, e.g. a batch-normalized scheme), then redraw the legend."""
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], color="gray", ls="--", lw=1))
    labels.append(note)
    if missing:
        handles.append(Line2D([], [], color="none"))
        labels.append("no theory for: " + ", ".join(missing))
    legend = ax.get_legend()
    ax.legend(handles, labels, fontsize=legend.get_texts()[0].get_fontsize() if legend and legend.get_texts() else 7)
    return ax


def sweep_grid(
    results: Sequence[Propagation],
    stat: str = "act_var",
    *,
    ncols: int = 4,
    fig: Figure | None = None,
    log: bool = True,
) -> Figure:
    """Small multiples: one :func:`variance_curves` panel per result of a sweep."""
    results = list(results)
    if not results:
        raise ValueError("sweep_grid needs at least one result")
    ncols = max(1, min(ncols, len(results)))
    nrows = -(-len(results) // ncols)
    fig = fig or new_figure(3.2 * ncols, 2.6 * nrows)
    axes = np.asarray(fig.subplots(nrows, ncols, squeeze=False, sharex=True)).ravel()
    for ax, r in zip(axes, results, strict=False):
        variance_curves(r, stat, ax=ax, log=log)
        ax.set_title(r.config.name, fontsize=8)
        ax.get_legend().remove()
    for ax in axes[len(results):]:
        ax.set_visible(False)
    return fig



def phase_diagram(
    sigma_w2: np.ndarray,
    sigma_b2: np.ndarray,
    values: np.ndarray,
    *,
    critical_sigma_w2: np.ndarray | None = None,
    ax: Axes | None = None,
    label: str = "chi_1",
    log: bool = False,
    center: float | None = None,
) -> Axes:
    """The order-to-chaos diagram (Poole et al. 2016; Schoenholz et al. 2017): ``values`` over the
    ``(sigma_w2, sigma_b2)`` plane as a colour map, with the critical line ``chi_1 = 1`` drawn.

    Args:
      sigma_w2, sigma_b2: 1-d grids (x and y axes).
      values: array ``(len(sigma_b2), len(sigma_w2))``, e.g. chi_1 or xi_c. Non-finite cells
        (xi_c is infinite on the critical line) are drawn in grey and said in the colour bar label.
      critical_sigma_w2: the critical ``sigma_w2`` for each ``sigma_b2`` (NaN where none).
      log: colour on a log scale; center: a value to centre a diverging map on (1 for chi_1).
    """
    from matplotlib import colors

    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(sigma_b2), len(sigma_w2)):
        raise ValueError(f"values must have shape (len(sigma_b2), len(sigma_w2)) = "
                         f"{(len(sigma_b2), len(sigma_w2))}, got {values.shape}")
    if ax is None:
        ax = new_figure(5.5, 4.0).subplots()
    finite = np.isfinite(values) & ((values > 0) if log else True)
    masked = np.ma.masked_where(~finite, values)
    if center is not None and finite.any():
        lo, hi = np.nanmin(values[finite]), np.nanmax(values[finite])
        norm = colors.TwoSlopeNorm(vcenter=center, vmin=min(lo, center * 0.999), vmax=max(hi, center * 1.001))
        cmap = "RdBu_r"
    else:
        norm = colors.LogNorm() if log else None
        cmap = "viridis"
    cmap_obj = _cmap(cmap).with_extremes(bad="0.8")
    mesh = ax.pcolormesh(sigma_w2, sigma_b2, masked, shading="nearest", cmap=cmap_obj, norm=norm)
    n_bad = int((~finite).sum())
    ax.figure.colorbar(mesh, ax=ax, label=label + (f" ({n_bad} non-finite cells grey)" if n_bad else ""))
    if critical_sigma_w2 is not None:
        crit = np.asarray(critical_sigma_w2, dtype=np.float64)
        ok = np.isfinite(crit)
        ax.plot(crit[ok], np.asarray(sigma_b2)[ok], "k--", lw=1.5, label="critical line (chi_1 = 1)")
        ax.legend(fontsize=7, loc="upper left")
    ax.set_xlabel("sigma_w^2")
    ax.set_ylabel("sigma_b^2")
    return ax



def _cmap(name: str):
    """A registered colour map by name."""
    import matplotlib

    return matplotlib.colormaps[name]
