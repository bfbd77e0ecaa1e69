"""Plots of :func:`initjax.training.compare` results (matplotlib, imported on first use)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from initjax._checks import check_choice, check_int
from initjax.training.records import PERCENTILES, RECORD_FIELDS, CompareResult

__all__ = ["plot_curves", "plot_percentiles"]


def _new_ax(ax: Any) -> Any:
    if ax is not None:
        return ax
    from matplotlib.figure import Figure

    return Figure(figsize=(5, 3.5)).add_subplot()


def _select(result: CompareResult, configs: Any) -> list[int]:
    if not isinstance(result, CompareResult):
        raise TypeError(f"result must be a CompareResult, got {type(result).__name__}")
    if configs is None:
        return list(range(len(result.configs)))
    if isinstance(configs, (int, str)):
        configs = [configs]
    return [result.index(c) for c in configs]


def _seed_quantiles(values: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """(len(qs), record) percentiles over seeds (axis 0) of the finite entries; NaN where none."""
    out = np.full((len(qs), values.shape[1]), np.nan)
    for r in range(values.shape[1]):
        col = values[:, r][np.isfinite(values[:, r])]
        if col.size:
            out[:, r] = np.percentile(col, qs)
    return out


def _mark_nonfinite(ax: Any, x: np.ndarray, values: np.ndarray, med: np.ndarray, color: Any,
                    label: str | None) -> None:
    """Mark records where some seeds are non-finite: ``x`` on the median where it exists, else at
    the bottom of the axes (x in data, y in axes coordinates), and say how many seeds in the
    legend."""
    bad = ~np.isfinite(values).all(axis=0)
    if not bad.any():
        return
    on = bad & np.isfinite(med)
    ax.plot(x[on], med[on], "x", color=color, ms=6)
    off = bad & ~np.isfinite(med)
    if off.any():
        ax.plot(x[off], np.zeros(int(off.sum())), "x", color=color, ms=6,
                transform=ax.get_xaxis_transform(), clip_on=False)
    if label is not None:
        n_bad = int((~np.isfinite(values)).any(axis=1).sum())
        ax.plot([], [], "x", color=color,
                label=f"{label}: non-finite in {n_bad} of {values.shape[0]} seeds")


def plot_curves(
    result: CompareResult,
    field: str = "test_accuracy",
    ax: Any = None,
    *,
    layer: int | None = None,
    configs: Any = None,
) -> Any:
    """Median over seeds of a recorded field against steps, with a 10-90% band, one line per config.

    Records where some seeds are non-finite (diverged) are marked with ``x`` and counted in the
    legend; the median and band are taken over the finite seeds only.

    Args:
      result: from :func:`compare`.
      field: a ``(seed, record)`` field of :class:`Record` (``"test_accuracy"``, ``"train_loss"``,
        ...), or a ``(seed, record, layer)`` one with ``layer``.
      ax: a matplotlib Axes; None makes a new ``matplotlib.figure.Figure``.
      layer: hidden-layer index for per-layer fields.
      configs: indices or labels of the configs to draw (all by default).

    Returns:
      The Axes.
    """
    idx = _select(result, configs)
    axes = RECORD_FIELDS.get(field)
    if axes is None or axes[:2] != ("seed", "record") or len(axes) > 3:
        allowed = [f for f, a in RECORD_FIELDS.items() if a[:2] == ("seed", "record")
                   and len(a) <= 3]
        raise ValueError(f"field must be one of {allowed}, got {field!r}")
    if (len(axes) == 3) != (layer is not None):
        raise ValueError(f"field {field!r} has axes {axes}: "
                         + ("give layer=" if len(axes) == 3 else "layer= does not apply"))
    ax = _new_ax(ax)
    for j, i in enumerate(idx):
        rec = result.records[i]
        values = getattr(rec, field)
        if values is None:
            continue
        if layer is not None:
            n_layers = values.shape[2]
            li = check_int("layer", layer)
            if not -n_layers <= li < n_layers:
                raise ValueError(f"layer {li} out of range for {n_layers} hidden layers")
            values = values[:, :, li]
        lo, med, hi = _seed_quantiles(values, (10.0, 50.0, 90.0))
        color = f"C{j}"
        ax.plot(rec.step, med, color=color, label=result.labels[i])
        ax.fill_between(rec.step, lo, hi, color=color, alpha=0.2, linewidth=0)
        _mark_nonfinite(ax, rec.step, values, med, color, result.labels[i])
    ax.set_xlabel("step")
    ax.set_ylabel(field if layer is None else f"{field} (layer {layer})")
    ax.legend(fontsize="small")
    return ax


def plot_percentiles(
    result: CompareResult,
    layer: int,
    ax: Any = None,
    *,
    field: str = "input_percentiles",
    configs: Any = None,
) -> Any:
    """The 15th, 50th and 85th percentiles of one layer over training (Ioffe & Szegedy Fig. 1b,c).

    Each curve is the median over seeds of that percentile (dashed 15/85, solid 50), one colour per
    config. Non-finite records are skipped and marked with ``x``.

    Args:
      result: from :func:`compare`.
      layer: hidden-layer index (negative counts from the last; ``-1`` is Ioffe & Szegedy's).
      ax: a matplotlib Axes; None makes a new ``matplotlib.figure.Figure``.
      field: ``"input_percentiles"`` (the nonlinearity's input, as in the paper) or
        ``"act_percentiles"`` (its output).
      configs: indices or labels of the configs to draw (all by default).

    Returns:
      The Axes.
    """
    check_choice("field", field, ("input_percentiles", "act_percentiles"))
    idx = _select(result, configs)
    ax = _new_ax(ax)
    layer = check_int("layer", layer)
    for j, i in enumerate(idx):
        rec = result.records[i]
        values = getattr(rec, field)
        n_layers = values.shape[2]
        if not -n_layers <= layer < n_layers:
            raise ValueError(f"layer {layer} out of range for {n_layers} hidden layers")
        color = f"C{j}"
        for p, q in enumerate(PERCENTILES):
            v = values[:, :, layer, p]
            (med,) = _seed_quantiles(v, (50.0,))
            ax.plot(rec.step, med, "-" if q == 50.0 else "--", color=color,
                    label=f"{result.labels[i]} (15/50/85th)" if p == 0 else None)
            _mark_nonfinite(ax, rec.step, v, med, color, result.labels[i] if p == 0 else None)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{'input' if field == 'input_percentiles' else 'output'} of phi, layer "
                  f"{layer} (15/50/85th pct)")
    ax.legend(fontsize="small")
    return ax
