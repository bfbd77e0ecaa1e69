"""Reproductions of the papers' and the classic demos' figures, one function (and command) each.

Each reproduction is ``run(out, *, quick=False, seeds=None, progress=None) -> dict`` that writes
figures (PNG and PDF), raw data, ``report.json`` (measured numbers and pass/fail of its checks, a
status of ``"done"``) and ``report.md`` (the numbers beside the paper's) into ``out``, and returns
the report dict. ``initjax reproduce NAME`` runs one; ``initjax reproduce --list`` lists them.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["Reproduction", "names", "get", "run"]


class Reproduction(NamedTuple):
    name: str
    module: str  # initjax.reproductions.<module> defines run(out, quick, seeds, progress)
    summary: str


_REPRODUCTIONS = {
    r.name: r
    for r in (
        Reproduction(
            "seed-demo",
            "seed_demo",
            "The classic demo: 10-layer, 4096-wide tanh/ReLU MLP with N(0, 0.01^2), N(0, 1), Xavier "
            "and He weights, zero init and a 6-layer tanh MLP at std 0.05; per-layer histograms.",
        ),
        Reproduction(
            "phase-diagram",
            "phase_diagram",
            "Poole 2016 / Schoenholz 2017: chi_1 and xi_c over (sigma_w^2, sigma_b^2) for tanh with "
            "the critical line; measured correlation propagation in the ordered, critical and chaotic phases.",
        ),
        Reproduction(
            "glorot2010-histograms",
            "glorot2010_histograms",
            "Glorot & Bengio 2010, Figs. 6-8: per-layer histograms at init of activations and "
            "back-propagated gradients (and weight-gradient variances) of a 5x1000 tanh net on "
            "Shapeset, standard U[-1/sqrt(n), 1/sqrt(n)] vs normalized (Xavier) init.",
        ),
        Reproduction(
            "saxe2014-spectra",
            "saxe2014_spectra",
            "Saxe et al. 2014 / Pennington et al. 2017: singular values of the input-output Jacobian, "
            "Gaussian vs orthogonal weights, linear and critical tanh, over depth (Fuss-Catalan moments, isometry).",
        ),
        Reproduction(
            "yang2019-bn-gradients",
            "yang2019_bn_gradients",
            "Yang et al. 2019: gradient explosion at init in deep ReLU nets with batch norm; measured "
            "per-layer growth vs batch size against the mean-field rate (-> pi/(pi-1)); no BN: rate 1.",
        ),
        Reproduction(
            "selu-fixed-point",
            "selu_fixed_point",
            "Klambauer et al. 2017: SELU with Var[w] = 1/n drives activation mean/variance to the "
            "fixed point (0, 1) from other starting points; tanh and ReLU do not.",
        ),
    )
}


def names() -> tuple[str, ...]:
    """The names of the available reproductions."""
    return tuple(_REPRODUCTIONS)


def get(name: str) -> Reproduction:
    """The reproduction called ``name``; unknown names raise ValueError listing the known ones."""
    if name not in _REPRODUCTIONS:
        raise ValueError(f"unknown reproduction {name!r}; known: {', '.join(names())}")
    return _REPRODUCTIONS[name]


def run(
    name: str,
    out: str | os.PathLike | None = None,
    *,
    quick: bool = False,
    seeds: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run reproduction ``name``, writing into ``out`` (default ``results/<name>``)."""
    rep = get(name)
    module = importlib.import_module(f"initjax.reproductions.{rep.module}")
    run_fn: Callable[..., dict[str, Any]] = module.run
    target = Path(out) if out is not None else Path("results") / name
    return run_fn(target, quick=quick, seeds=seeds, progress=progress)
