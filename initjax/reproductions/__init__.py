"""Reproductions of the papers' and the classic demos' figures, one function (and command) each.

Each reproduction is ``run(out, *, quick=False, seeds=None, progress=None) -> dict`` that writes
figures (PNG and PDF), raw data, ``report.json`` (measured numbers and pass/fail of its checks, a
status of ``"done"``) and ``report.md`` (the numbers beside the paper's) into ``out``, and returns
the report dict. ``initjax reproduce NAME`` runs one; ``initjax reproduce --list`` lists them.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["Reproduction", "names", "get", "run", "takes_data_dir"]


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
            "seed-batchnorm",
            "seed_batchnorm",
            "The blog posts' 6-layer tanh MLP at std 0.01, 0.05 and 1 without and with batch norm "
            "(with BN the init no longer matters), and eval with running averages vs batch statistics.",
        ),
        Reproduction(
            "seed-activations",
            "seed_activations",
            "Sigmoid, tanh, ReLU, LeakyReLU, PReLU, ELU: per-layer distributions at init, training "
            "curves on digits, and the fraction of dead ReLUs vs learning rate.",
        ),
        Reproduction(
            "phase-diagram",
            "phase_diagram",
            "Poole 2016 / Schoenholz 2017: chi_1 and xi_c over (sigma_w^2, sigma_b^2) for tanh with "
            "the critical line; measured correlation propagation in the ordered, critical and chaotic phases.",
        ),
        Reproduction(
            "schoenholz2017-trainability",
            "schoenholz2017_trainability",
            "Schoenholz et al. 2017: trainability of deep tanh nets over (sigma_w^2, depth) on a coarse "
            "grid, against the 6 xi_c line of the mean-field theory.",
        ),
        Reproduction(
            "glorot2010-histograms",
            "glorot2010_histograms",
            "Glorot & Bengio 2010, Figs. 6-8: per-layer histograms at init of activations and "
            "back-propagated gradients (and weight-gradient variances) of a 5x1000 tanh net on "
            "Shapeset, standard U[-1/sqrt(n), 1/sqrt(n)] vs normalized (Xavier) init.",
        ),
        Reproduction(
            "glorot2010-saturation",
            "glorot2010_saturation",
            "Glorot & Bengio 2010, Figs. 2-4: per-layer activation mean/std (sigmoid) and percentiles "
            "(tanh, softsign) during training on Shapeset-3x2, and the final histograms.",
        ),
        Reproduction(
            "glorot2010-table1",
            "glorot2010_table1",
            "Glorot & Bengio 2010, Table 1 (short run): test error of Softsign, Softsign N, Tanh, "
            "Tanh N and Sigmoid 5-hidden-layer nets on Shapeset-3x2 and digits; whether the ordering holds.",
        ),
        Reproduction(
            "he2015-deep-relu",
            "he2015_deep_relu",
            "He et al. 2015, Figs. 2-3 analogue: 22- and 30-layer plain ReLU nets, Xavier vs He init, "
            "on digits; the 30-layer Xavier net stalls while He learns.",
        ),
        Reproduction(
            "ioffe2015-mnist",
            "ioffe2015_mnist",
            "Ioffe & Szegedy 2015, Fig. 1: 3 x 100 sigmoid MLP with and without batch norm, batch 60: "
            "test accuracy and the 15/50/85th percentiles of a last-layer input (digits; MNIST via --data-dir).",
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
        Reproduction(
            "yang2017-residual-meanfield",
            "yang2017_residual_meanfield",
            "Yang & Schoenholz 2017: tanh and ReLU residual nets at init, stream variance, "
            "correlation and gradients over depth, measured against the full and reduced recursions.",
        ),
        Reproduction(
            "desmith2020-skipinit",
            "desmith2020_skipinit",
            "De & Smith 2020: stream and branch variance per block with and without batch norm (linear "
            "growth vs 2^l, branch share vs 1/(l+1)); 100-block residual MLPs trained with SkipInit vs "
            "alpha = 1 without norm vs batch norm.",
        ),
        Reproduction(
            "zhang2019-fixup",
            "zhang2019_fixup",
            "Zhang et al. 2019 (Fixup): per-layer gradient norms at init of deep residual nets, standard "
            "vs Fixup init, and a deep residual net trained without normalization with each.",
        ),
        Reproduction(
            "brock2021-spp",
            "brock2021_spp",
            "Brock, De & Smith 2021: signal propagation plots (channel squared mean, channel variance, "
            "branch variance per block) of BN-ReLU, ReLU-BN, NF with He init and NF with scaled WS.",
        ),
        Reproduction(
            "yang2022-mutransfer",
            "yang2022_mutransfer",
            "Yang et al. 2022 (TP5), Fig. 1: training loss vs log2 learning rate of MLPs on digits over "
            "a 16x width range, SP vs muP with Adam (the optimum moves under SP, not under muP); and "
            "residual MLPs over depth, depth-muP vs unscaled.",
        ),
        Reproduction(
            "yang2021-coord-check",
            "yang2021_coord_check",
            "Yang et al. 2021 (TP5): coordinate checks, mean |x| per layer vs width over training "
            "steps, SP vs muP, MLP and residual MLP, SGD and Adam; log2-log2 slopes (muP flat); a "
            "transformer with SP, muP and muP with a 1/sqrt(d) logit (the attention entropy).",
        ),
        Reproduction(
            "dong2021-rank-collapse",
            "dong2021_rank_collapse",
            "Dong et al. 2021: relative residual and token cosine over depth at init for pure "
            "attention, + skip, + MLP and full pre-LN blocks; pure attention's doubly exponential "
            "collapse (local exponent near 3); skip connections leave a slow geometric decay.",
        ),
        Reproduction(
            "noci2022-signal-propagation",
            "noci2022_signal_propagation",
            "Noci et al. 2022: token cosine over depth at init for post-LN, pre-LN and pre-LN with "
            "1/sqrt(L) branches, beside the uniform-attention theory; the Q/K to V gradient-norm "
            "ratio vanishes (~ 1 - c) as the input's tokens become equal.",
        ),
        Reproduction(
            "xiong2020-layernorm",
            "xiong2020_layernorm",
            "Xiong et al. 2020: Pre-LN vs Post-LN transformers at init (Lemma 2 setting, uniform "
            "attention): per-layer weight-gradient norms measured beside the mean-field theory, "
            "Lemma 2's stream bounds, Theorem 1's Post/Pre ratio, and Fig. 3(b)'s values. Training "
            "on sorted digit sequences: Post-LN needs learning-rate warm-up with Adam, Pre-LN does "
            "not (loss curves, failed and collapsed seeds, step-0 gradient per block).",
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
    data_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run reproduction ``name``, writing into ``out`` (default ``results/<name>``).

    ``data_dir`` is passed to the reproductions that can train on a downloaded dataset (see
    :func:`takes_data_dir`); the others reject it.
    """
    rep = get(name)
    run_fn = _run_fn(rep)
    target = Path(out) if out is not None else Path("results") / name
    extra: dict[str, Any] = {}
    if data_dir is not None:
        if not takes_data_dir(name):
            known = [n for n in names() if takes_data_dir(n)]
            raise ValueError(f"reproduction {name!r} takes no data_dir (got {str(data_dir)!r}); "
                             f"those that do: {', '.join(known)}")
        extra["data_dir"] = data_dir
    return run_fn(target, quick=quick, seeds=seeds, progress=progress, **extra)


def _run_fn(rep: Reproduction) -> Callable[..., dict[str, Any]]:
    return importlib.import_module(f"initjax.reproductions.{rep.module}").run


def takes_data_dir(name: str) -> bool:
    """Whether reproduction ``name`` can read a dataset from a directory (``--data-dir``)."""
    return "data_dir" in inspect.signature(_run_fn(get(name))).parameters
