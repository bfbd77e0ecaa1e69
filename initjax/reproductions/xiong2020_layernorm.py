"""Xiong et al. 2020: Pre-LN vs Post-LN transformers, per-layer gradient norms at initialization
and learning-rate warm-up in training.

Paper: "On Layer Normalization in the Transformer Architecture", https://arxiv.org/abs/2002.04745.
Post-LN is ``x <- LN(x + F(x))``, Pre-LN ``x <- x + F(LN(x))`` with a final LN. Their Lemma 2
(Xavier weights, one head, ``W_Q = W_K = 0``: uniform attention, a ReLU FFN of width ``d``): the
Post-LN sum before the FFN's norm has ``E||x||^2 = (3/2) d``, the Pre-LN stream ``(1 + l/2) d <=
E||x_l||^2 <= (1 + 3l/2) d``; Theorem 1: the last FFN weight's gradient ``||dL/dW^{2,L}||_F`` is
``O(d sqrt(ln d))`` for Post-LN and ``O(d sqrt(ln d / L))`` for Pre-LN. Their Fig. 3(b) plots, for
layers 1-6, a "gradient expectation" that grows with the layer for Post-LN and is flat to
decreasing for Pre-LN (values in :data:`PAPER_FIG3B`, as the reference sheet reads them).

What this runs: :func:`initjax.theory.xiong_network` (their Lemma setting exactly: one head,
``glorot_normal`` weights, ``qk_init="zeros"``, a ReLU FFN of width ``d``, layer norm pre or post,
branch scale 1) at initialization, through :func:`initjax.propagate` (an N(0, 1) cotangent on the
last block's output, ``L = <g, x_L>``), per block the Frobenius norms of the gradients of ``W_2``
(FFN out, the theorem's ``W^{2,l}``), ``W_1``, ``W_V`` and ``W_O`` (``W_Q``, ``W_K`` get exactly 0),
beside :func:`initjax.theory.predict_attention`, exact for uniform attention in the number of
tokens and in the wide limit. The engine has no final LN; Pre-LN's final LN is put in by
rescaling its gradients by ``1 / sqrt(q_L)`` (``q_L`` the measured stream second moment of the
seed at the last block): in the wide limit the final LN's Jacobian on an N(0, 1) cotangent is
``1 / sqrt(q_L + eps)`` times the identity up to ``O(1/D)`` projections, which is what
``predict_attention(..., final_norm="layer")`` uses. Then Post/Pre at the last block is
``sqrt(q_L / (3/2))``, between ``sqrt((2 + L) / 3)`` and ``sqrt((2 + 3L) / 3)`` by Lemma 2
(Theorem 1's ``sqrt(L)``).

Training (the paper's claim that Post-LN needs a learning-rate warm-up with Adam and Pre-LN does
not): :func:`train_configs` trains, through :func:`initjax.training.compare` on
:func:`initjax.data.sequences` (sort 8 digits of 10, a per-token label, shipped with initjax),
Post-LN without and with a linear warm-up and Pre-LN without (and, in full mode, with) one: a
transformer of :data:`TRAIN` (6 blocks of width 32, 4 heads, a ReLU MLP of width 4D, Xavier
kernels, Adam with ``b2 = 0.98`` as in the paper at a learning rate of 1e-2, 500 updates of 64
sequences, 100 warm-up updates, 8 seeds; quick mode :data:`TRAIN_QUICK`, 4 blocks at 2e-2, 200
updates, 50 warm-up updates, 3 seeds). Post-LN without warm-up collapses within a few dozen
updates: every token of its last block becomes the same vector (token cosine 1, uniform
attention), the per-token readout can only predict the label marginal, and the loss stays at
``log V``. With warm-up it trains, as Pre-LN does without. The report gives final losses and
token accuracies per arm and seed, non-finite seeds, and the per-block gradient norm of the task
loss at step 0 beside the engine's. Note: initjax's Pre-LN blocks have no final LN (the paper's
Pre-LN has one), so Pre-LN starts from a larger loss.

How the setting was chosen (a scratch search of the same model, 3-8 seeds per cell, Adam b2 0.98,
final training loss per seed; log V = 2.30): 6 blocks, width 32, 500 updates: at 1e-2 Post-LN
without warm-up 2.17-2.30 (8 of 8 seeds stuck), with 100 warm-up updates 0.04-0.29, Pre-LN
0.003-0.42; at 3e-3 all three trained (Post-LN without warm-up 0.005-0.12). 4 blocks, 200
updates: at 1e-2 Post-LN without warm-up trained worse (0.31-0.59) than with 50 warm-up updates
(0.07-0.21) but did not collapse; at 2e-2 it collapsed (2.31, 3 of 3) while warm-up (0.26-0.40)
and Pre-LN (0.09-0.20) trained; at 4e-2 Post-LN collapsed even with warm-up. The effect needs a
learning rate that grows as the depth shrinks (4 blocks need about twice the rate of 6).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from initjax import _io, data, plotting, training
from initjax.engine import propagate
from initjax.network import Network
from initjax.reproductions import _reports
from initjax.theory.attention import predict_attention, xiong_bounds, xiong_network
from initjax.training import TrainConfig

__all__ = ["NAME", "POSITIONS", "PARAMS", "PAPER_FIG3B", "TRAIN", "TRAIN_QUICK", "TRAIN_ARMS",
           "network", "train_configs", "arm_label", "run"]

NAME = "xiong2020-layernorm"
POSITIONS = ("pre", "post")
# engine field -> the weight it names
PARAMS = {"grad_norm_mlp_out": "W_2 (FFN out)", "grad_norm_mlp_in": "W_1 (FFN in)",
          "grad_norm_v": "W_V", "grad_norm_o": "W_O"}
# Fig. 3(b) of the paper as the reference sheet reads it (bars, layers 1-6, "Gradient
# Expectation"); which parameter (likely W^{FF,2}) and which model (likely the 6-layer IWSLT
# Transformer) are [U] (unverified), as is Fig. 3(a).
PAPER_FIG3B = {
    "pre": (0.56, 0.43, 0.41, 0.37, 0.31, 0.29),
    "post": (0.13, 0.20, 0.37, 0.58, 1.10, 1.66),
    "post_after_warmup": 0.01,
}
SE_FACTOR = 4.0  # engine vs theory: |mean - theory| <= SE_FACTOR x standard error + WIDTH_FACTOR / D
WIDTH_FACTOR = 4.0  # the mean-field prediction's finite-width bias allowance, relative, x 1/D
GROWTH = 1.2  # Post-LN: last / first of W_V, W_O, W_1 gradient norms above this (theory 1.45 at d 64, T 8; ~1.7-1.9 at d 256, T 16)


def _sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"width": 64, "tokens": 8, "batch": 4, "depth": 6, "seeds": 4}
    return {"width": 512, "tokens": 16, "batch": 8, "depth": 6, "seeds": 16}


def network(position: str, *, depth: int, width: int, tokens: int, batch: int) -> Network:
    """Xiong et al.'s Lemma setting (:func:`initjax.theory.xiong_network`) with layer norm
    ``position`` ("pre" or "post")."""
    return xiong_network(depth, width, tokens, batch, norm_position=position,
                         label=f"{position.capitalize()}-LN")


def run(out: str | Path, *, quick: bool = False, seeds: int | None = None,
        progress: bool | None = None) -> dict[str, Any]:
    """Pre-LN and Post-LN at initialization (per-block weight-gradient norms, measured and
    predicted) and in training with and without warm-up (:func:`train_configs`); figures,
    ``data/``, ``report.json`` and ``report.md``. ``seeds`` (>= 2) is the initialization part's
    seed count; the training part trains a fixed 3 (quick) or 8 (full) seeds per arm."""
    size = _sizes(quick)
    out, seeds, t0 = _reports.start(out, NAME, seeds, size["seeds"], min_seeds=2)
    shape = {k: size[k] for k in ("depth", "width", "tokens", "batch")}
    arms: dict[str, dict[str, Any]] = {}
    for pos in POSITIONS:
        net = network(pos, **shape)
        result = propagate(net, seeds, key=0, progress=progress)
        result.save(out / "data" / f"{pos}-ln")
        st = result.stats
        meas = {f: np.asarray(getattr(st, f), np.float64) for f in (*PARAMS, "grad_norm_q", "grad_norm_k",
                                                                    "act_second_moment")}
        theory = predict_attention(net)
        final = predict_attention(net, final_norm="layer") if pos == "pre" else theory
        arms[pos] = {"meas": meas, "theory": theory, "final": final, "seconds": result.seconds,
                     "nonfinite": result.nonfinite_blocks}
    report = _report(quick, seeds, size, arms, time.perf_counter() - t0)
    train = _train(out, quick, progress)
    report["training"], train_checks = _train_report(train)
    report["checks"] += train_checks
    report["all_pass"] = all(c["pass"] for c in report["checks"])
    report["seconds"] = time.perf_counter() - t0
    _figures(out, report)
    _train_figures(out, report["training"])
    return _reports.finish(out, report, _markdown(report))


def _mean_se(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return v.mean(axis=0), v.std(axis=0, ddof=1) / math.sqrt(v.shape[0])


def _report(quick, seeds, size, arms, total) -> dict[str, Any]:
    depth, width = size["depth"], size["width"]
    eps = 1e-5  # xiong_network's norm_eps
    checks: list[dict[str, Any]] = []
    out_arms = {}
    for pos in POSITIONS:
        a = arms[pos]
        m, th = a["meas"], a["theory"]
        entry: dict[str, Any] = {"label": f"{pos.capitalize()}-LN", "seconds": a["seconds"],
                                 "nonfinite_blocks": a["nonfinite"]}
        worst, worst_name = 0.0, ""
        for f in PARAMS:
            mean, se = _mean_se(m[f])
            pred = np.asarray(getattr(th, f), np.float64)
            entry[f] = {"mean": mean.tolist(), "se": se.tolist(), "theory": pred.tolist()}
            excess = (np.abs(mean - pred) - SE_FACTOR * se) / pred  # relative, past the noise allowance
            b = int(np.argmax(excess))
            if excess[b] > worst or not worst_name:
                worst, worst_name = float(excess[b]), f"{PARAMS[f]}, block {b + 1}"
        checks.append({
            "check": f"{pos.capitalize()}-LN: measured gradient norms of W_2, W_1, W_V, W_O per block = "
                     f"predict_attention (uniform attention, exact in T, wide limit) within "
                     f"{SE_FACTOR:g} standard errors of the seed mean + {WIDTH_FACTOR:g}/D relative "
                     f"(largest excess beyond {SE_FACTOR:g} SE, relative: {worst_name})",
            "measured": worst, "tolerance": WIDTH_FACTOR / width, "pass": bool(worst <= WIDTH_FACTOR / width)})
        qk = float(max(np.max(np.abs(m["grad_norm_q"])), np.max(np.abs(m["grad_norm_k"]))))
        checks.append({"check": f"{pos.capitalize()}-LN: dL/dW_Q = dL/dW_K = 0 exactly (W_Q = W_K = 0)",
                       "measured": qk, "tolerance": 0.0, "pass": qk == 0.0})
        q_mean, q_se = _mean_se(m["act_second_moment"])
        entry["q"] = {"mean": q_mean.tolist(), "se": q_se.tolist(), "theory": th.q.tolist()}
        if pos == "post":
            entry["sum_q_theory"] = th.sum_q.tolist()
        out_arms[pos] = entry
    pre, post = arms["pre"], arms["post"]
    # Lemma 2 on the Pre-LN stream (E||x_l||^2 / d = act_second_moment)
    lower, upper = xiong_bounds(depth)
    q_pre = pre["meas"]["act_second_moment"]
    qm, qse = _mean_se(q_pre)
    inside = float(np.min((np.minimum(qm - lower, upper - qm) + SE_FACTOR * qse) / qm))
    checks.append({"check": "Pre-LN: Lemma 2, (1 + l/2) <= E||x_l||^2 / d <= (1 + 3l/2) at every block (seed mean, "
                            f"within {SE_FACTOR:g} standard errors; measured: smallest relative distance to a "
                            "bound, plus that allowance)",
                   "measured": inside, "tolerance": 0.0, "pass": inside > 0})
    post_sum = np.asarray(post["theory"].sum_q, np.float64)
    checks.append({"check": "Post-LN: Lemma 2, the sum before the FFN's norm has E||x||^2 / d = 3/2 "
                            "(predict_attention's sum_q, largest deviation)",
                   "measured": float(np.max(np.abs(post_sum - 1.5))), "tolerance": 1e-4,
                   "pass": bool(np.max(np.abs(post_sum - 1.5)) < 1e-4)})
    # Pre-LN with its final LN: gradients / sqrt(q_L + eps), per seed
    scale = 1.0 / np.sqrt(q_pre[:, -1:] + eps)
    w2_pre_final = pre["meas"]["grad_norm_mlp_out"] * scale
    w2_post = post["meas"]["grad_norm_mlp_out"]
    ratio = w2_post / w2_pre_final  # (seed, block)
    r_mean, r_se = _mean_se(ratio)
    r_theory = np.asarray(post["theory"].grad_norm_mlp_out) / np.asarray(pre["final"].grad_norm_mlp_out)
    final_mean, final_se = _mean_se(w2_pre_final)
    out_arms["pre"]["grad_norm_mlp_out_final_ln"] = {
        "mean": final_mean.tolist(), "se": final_se.tolist(),
        "theory": np.asarray(pre["final"].grad_norm_mlp_out).tolist()}
    lo, hi = math.sqrt((2 + depth) / 3), math.sqrt((2 + 3 * depth) / 3)
    checks.append({"check": f"Theorem 1: ||dL/dW_2|| Post-LN / Pre-LN (final LN) at block {depth}, seed mean, "
                            f"within Lemma 2's [sqrt((2 + L)/3), sqrt((2 + 3L)/3)] = [{lo:.3f}, {hi:.3f}] "
                            f"(theory sqrt(q_L / 1.5) = {r_theory[-1]:.3f})",
                   "measured": float(r_mean[-1]), "tolerance": f"[{lo:.3f}, {hi:.3f}]",
                   "pass": bool(lo <= r_mean[-1] <= hi)})
    d_ratio = np.diff(r_mean)
    checks.append({"check": "Post-LN / Pre-LN W_2 gradient ratio grows with the layer, as in Fig. 3(b) "
                            "(seed mean, every block; smallest increase)",
                   "measured": float(np.min(d_ratio)), "tolerance": 0.0, "pass": bool(np.min(d_ratio) > 0)})
    pre_drop = pre["meas"]["grad_norm_mlp_out"][:, -1] / pre["meas"]["grad_norm_mlp_out"][:, 0]
    paper_pre = PAPER_FIG3B["pre"][-1] / PAPER_FIG3B["pre"][0]
    checks.append({"check": f"Pre-LN: W_2 gradient norm decreases from block 1 to block {depth} (paper "
                            f"Fig. 3(b): {paper_pre:.2f}); largest last/first over seeds",
                   "measured": float(np.max(pre_drop)), "tolerance": 1.0, "pass": bool(np.max(pre_drop) < 1)})
    growth = {}
    for f in ("grad_norm_v", "grad_norm_o", "grad_norm_mlp_in"):
        mean = post["meas"][f].mean(axis=0)
        growth[f] = float(mean[-1] / mean[0])
    g_min = min(growth.values())
    checks.append({"check": f"Post-LN: W_V, W_O, W_1 gradient norms grow towards the last layer, last/first of "
                            f"the seed means > {GROWTH:g} (smallest of the three)",
                   "measured": g_min, "tolerance": GROWTH, "pass": g_min > GROWTH})
    w2_post_flat = np.asarray(post["theory"].grad_norm_mlp_out)
    flat = float(w2_post_flat.max() / w2_post_flat.min() - 1)
    bad = {p: arms[p]["nonfinite"] for p in POSITIONS if arms[p]["nonfinite"]}
    checks.append({"check": "no non-finite values", "measured": str(bad or "none"), "pass": not bad})
    return {
        "name": NAME, "status": "done", "quick": quick, "seeds": seeds, "seconds": total,
        "setup": {**size, "seeds": seeds, "heads": 1, "init": "glorot_normal (Xavier) V, O, W_1, W_2",
                  "qk_init": "zeros (uniform attention)", "mlp": "ReLU, width d", "norm": "layer, eps 1e-5",
                  "cotangent": "N(0, 1) on the last block's output",
                  "inputs": "i.i.d. N(0, 1) tokens drawn by the engine per seed"},
        "arms": out_arms, "paper_fig3b": PAPER_FIG3B,
        "post_over_pre_w2": {"mean": r_mean.tolist(), "se": r_se.tolist(), "theory": r_theory.tolist(),
                             "theorem1_bounds": [lo, hi]},
        "post_growth_last_over_first": growth,
        "post_w2_theory_spread": flat,
        "checks": checks, "all_pass": all(c["pass"] for c in checks),
    }


def _figures(out: Path, report: dict[str, Any]) -> None:
    fig = plotting.new_figure(13.0, 4.0)
    ax_w2, ax_o, ax_p = fig.subplots(1, 3)
    depth = report["setup"]["depth"]
    layers = np.arange(1, depth + 1)
    arms = report["arms"]
    norm = arms["pre"]["grad_norm_mlp_out_final_ln"]["mean"][-1]
    curves = (("Post-LN", arms["post"]["grad_norm_mlp_out"], "C3"),
              ("Pre-LN (final LN)", arms["pre"]["grad_norm_mlp_out_final_ln"], "C0"),
              ("Pre-LN (no final LN)", arms["pre"]["grad_norm_mlp_out"], "C9"))
    for label, c, color in curves:
        ax_w2.errorbar(layers, np.asarray(c["mean"]) / norm, yerr=2 * np.asarray(c["se"]) / norm, fmt="o",
                       ms=4, color=color, label=f"{label}, measured")
        ax_w2.plot(layers, np.asarray(c["theory"]) / norm, "--", color=color, lw=1)
    plotting.label_axes(ax_w2, "layer l", "||dL/dW_2|| / Pre-LN's at layer L",
                        "W_2 gradient at init (dashed: uniform-attention theory)")
    for pos, color in (("post", "C3"), ("pre", "C0")):
        for f, marker in (("grad_norm_v", "o"), ("grad_norm_mlp_in", "s")):
            c = arms[pos][f]
            ax_o.plot(layers, c["mean"], marker + "-", ms=4, color=color,
                      label=f"{arms[pos]['label']}, {PARAMS[f]}")
            ax_o.plot(layers, c["theory"], "--", color=color, lw=1)
    plotting.label_axes(ax_o, "layer l", "||dL/dW||_F (no final LN)", "W_V and W_1 gradients")
    w = 0.4
    ax_p.bar(layers - w / 2, PAPER_FIG3B["pre"], w, color="C0", label="Pre-LN (init)")
    ax_p.bar(layers + w / 2, PAPER_FIG3B["post"], w, color="C3", label="Post-LN (init)")
    plotting.label_axes(ax_p, "layer", "gradient expectation", "paper Fig. 3(b) (as read; parameter [U])")
    _io.save_figure(fig, out / "gradient-norms")


def _row(values, digits=4):
    return " | ".join(_reports.fmt(v, digits) for v in values)


def _markdown(report: dict[str, Any]) -> str:
    s = report["setup"]
    depth = s["depth"]
    arms = report["arms"]
    pre, post = arms["pre"], arms["post"]
    head = "| | " + " | ".join(f"layer {b}" for b in range(1, depth + 1)) + " |"
    sep = "|---" * (depth + 1) + "|"
    norm = pre["grad_norm_mlp_out_final_ln"]["mean"][-1]
    norm_th = pre["grad_norm_mlp_out_final_ln"]["theory"][-1]
    p_pre, p_post = PAPER_FIG3B["pre"], PAPER_FIG3B["post"]
    ratio = report["post_over_pre_w2"]
    lines = [
        *_reports.header(
            "Pre-LN vs Post-LN: gradient norms at initialization, warm-up in training "
            "(Xiong et al. 2020)",
            f"{report['seeds']} seeds, width d = {s['width']}, 1 head, {s['tokens']} tokens, "
            f"{s['batch']} sequences, {depth} layers; Xavier V, O, W_1, W_2, W_Q = W_K = 0 "
            "(uniform attention), ReLU FFN of width d, layer norm eps 1e-5, N(0, 1) cotangent; ",
            report),
        "",
        "## ||dL/dW_2|| per layer, relative to Pre-LN's (with final LN) at the last layer",
        "",
        "Measured: seed mean; theory: `predict_attention` (uniform attention, exact in T, wide limit). "
        "Paper: Fig. 3(b) as the reference sheet reads it, divided by its Pre-LN layer 6 (0.29); "
        "the parameter (likely W^{FF,2}) and the model are [U].",
        "",
        head, sep,
        f"| Post-LN measured | {_row(np.asarray(post['grad_norm_mlp_out']['mean']) / norm, 3)} |",
        f"| Post-LN theory | {_row(np.asarray(post['grad_norm_mlp_out']['theory']) / norm_th, 3)} |",
        f"| Post-LN paper | {_row(np.asarray(p_post) / p_pre[-1], 3)} |",
        f"| Pre-LN (final LN) measured | {_row(np.asarray(pre['grad_norm_mlp_out_final_ln']['mean']) / norm, 3)} |",
        f"| Pre-LN (final LN) theory | {_row(np.asarray(pre['grad_norm_mlp_out_final_ln']['theory']) / norm_th, 3)} |",
        f"| Pre-LN paper | {_row(np.asarray(p_pre) / p_pre[-1], 3)} |",
        f"| Post / Pre measured | {_row(ratio['mean'], 3)} |",
        f"| Post / Pre theory | {_row(ratio['theory'], 3)} |",
        f"| Post / Pre paper | {_row(np.asarray(p_post) / np.asarray(p_pre), 3)} |",
        "",
        "## Other weights' gradient norms ||dL/dW||_F (no final LN; measured seed mean, theory)",
        "",
        head, sep,
    ]
    for pos in ("post", "pre"):
        for f in PARAMS:
            c = arms[pos][f]
            lines.append(f"| {arms[pos]['label']} {PARAMS[f]} measured | {_row(c['mean'])} |")
            lines.append(f"| {arms[pos]['label']} {PARAMS[f]} theory | {_row(c['theory'])} |")
    lo, hi = xiong_bounds(depth)
    lines += [
        "", "## Pre-LN stream E||x_l||^2 / d and Lemma 2's bounds", "", head, sep,
        f"| measured | {_row(pre['q']['mean'])} |", f"| theory | {_row(pre['q']['theory'])} |",
        f"| lower 1 + l/2 | {_row(lo)} |", f"| upper 1 + 3l/2 | {_row(hi)} |",
        "",
        "## Beside the paper",
        "",
        "Reproduced: (i) Lemma 2, the Pre-LN stream grows between the bounds, and Post-LN's sum "
        "before the FFN's norm is 3/2 d; (ii) Theorem 1, at the last layer Post-LN's W_2 gradient is "
        f"larger than Pre-LN's (with its final LN) by {_reports.fmt(ratio['mean'][-1], 3)} (theory "
        f"sqrt(q_L / 1.5) = {_reports.fmt(ratio['theory'][-1], 3)}, the theorem's sqrt(L) between "
        f"{_reports.fmt(ratio['theorem1_bounds'][0], 3)} and {_reports.fmt(ratio['theorem1_bounds'][1], 3)}); "
        "(iii) Fig. 3(b)'s Pre-LN bars decrease with the layer (paper 0.56 -> 0.29, ratio "
        f"{p_pre[-1] / p_pre[0]:.2f}; here {_reports.fmt(pre['grad_norm_mlp_out_final_ln']['mean'][-1] / pre['grad_norm_mlp_out_final_ln']['mean'][0], 3)}), "
        "and the Post/Pre ratio grows with the layer. Not reproduced: in this Lemma setting the "
        "Post-LN W_2 gradient is flat in the layer, not growing 13x as in Fig. 3(b) (paper 0.13 -> "
        "1.66): the mean-field recursion shows why, each Post-LN FFN sub-block divides the backward "
        "covariance by its sum's 3/2 and its ReLU branch multiplies it by 1 + 1/2, and each attention "
        "sub-block (uniform, 1 + ~1/T both ways) likewise, so the gradient reaching every layer is the "
        f"same (theory's spread over layers: {100 * report['post_w2_theory_spread']:.1f}%). Post-LN's "
        "W_V, W_O and W_1 gradients do grow towards the last layers (last/first at least "
        f"{min(report['post_growth_last_over_first'].values()):.2f}), because the tokens of the "
        "normalized stream align with depth (uniform attention adds the mean token) and those weights "
        "see that alignment. The paper's figure is of a trained-loss gradient (softmax cross-entropy "
        "after the output projection) of a real translation model, whose attention is not uniform "
        "[U]; the engine's loss is a random linear functional of the last block, so only the "
        "theorem's setting is compared here (the training section below gives the task loss's).",
        "",
        *_train_markdown(report),
        *_reports.checks_table(report["checks"]),
        "",
        "Figures: `gradient-norms` (W_2 per layer, relative; W_V and W_1; the paper's Fig. 3(b) bars), "
        "`training` (training loss and test token accuracy per arm, seed mean and min-max band, "
        "non-finite seeds marked x; the step-0 gradient per block). "
        "Data: `data/pre-ln/`, `data/post-ln/` (engine statistics per seed and block), "
        "`data/training.npz` (every arm's training records, `<arm>.<field>`).",
        "",
    ]
    return "\n".join(lines)


# -- the training arm: Post-LN needs warm-up, Pre-LN does not --------------------------------------
# The full mode's task and model (chosen by the search in the module docstring): sort 8 digits
# (data.sequences), 6 blocks of width 32, 4 heads, a ReLU MLP of width 4D, Xavier kernels, layer
# norm eps 1e-5, Adam with b2 = 0.98 as in the paper, a learning rate of 1e-2, batch 64.
TRAIN: dict[str, Any] = {"task": "sort", "tokens": 8, "vocab": 10, "depth": 6, "width": 32,
                         "heads": 4, "batch": 64, "learning_rate": 1e-2, "b1": 0.9, "b2": 0.98,
                         "n_train": 4096}
# (norm position, warm-up) per arm; quick mode trains the first three
TRAIN_ARMS = (("post", False), ("post", True), ("pre", False), ("pre", True))
# a seed fails when its final training loss is above this fraction of log V (the loss of the
# uniform prediction; trained seeds of the search ended below 0.25, stuck ones at 2.17-2.30 of 2.30)
FAIL_FRACTION = 0.5
GAP_SE = 4.0  # warm-up's effect on Post-LN: test-loss gap above this many standard errors
COLLAPSED = 0.99  # a last block whose mean pairwise token cosine is above this: rank collapse


# quick mode: 4 blocks at twice the learning rate (clean in the search; at 1e-2, 4 blocks were not:
# Post-LN without warm-up reached 0.3-0.6), 200 updates, 3 seeds, 3 arms
TRAIN_QUICK = {"depth": 4, "learning_rate": 2e-2}


def _train_setup(quick: bool) -> dict[str, Any]:
    """:data:`TRAIN` (:data:`TRAIN_QUICK` over it in quick mode) with the run's sizes."""
    if quick:
        return {**TRAIN, **TRAIN_QUICK, "steps": 200, "warmup_steps": 50, "seeds": 3,
                "record_every": 50, "n_test": 256, "probe_size": 64, "train_eval_size": 256,
                "arms": 3}
    return {**TRAIN, "steps": 500, "warmup_steps": 100, "seeds": 8, "record_every": 50,
            "n_test": 512, "probe_size": 128, "train_eval_size": 256, "arms": 4}


def arm_label(position: str, warmup: bool) -> str:
    """``"Post-LN, warm-up"``, ``"Pre-LN, no warm-up"``, ..."""
    return f"{position.capitalize()}-LN, {'warm-up' if warmup else 'no warm-up'}"


def train_configs(quick: bool = False) -> list[TrainConfig]:
    """The training arms (:data:`TRAIN_ARMS`; the first three in quick mode) as
    :class:`initjax.training.TrainConfig`.

    Each is the :data:`TRAIN` transformer (:data:`TRAIN_QUICK` over it in quick mode) with layer
    norm pre or post, trained as ``model="network"``: the trainer's embedding ``x W_e + p``
    (``W_e`` lecun_normal, ``p ~ N(0, 1)``, both trained), a per-token readout, Adam
    (``b2 = 0.98``) at a constant learning rate ``eta`` (``schedule="constant"``) or after a
    linear warm-up (``"warmup_cosine"`` with ``final_lr_fraction=1``: ``eta t / w`` for ``t < w``,
    then ``eta``).

    >>> [c.label for c in train_configs(quick=True)]
    ['Post-LN, no warm-up', 'Post-LN, warm-up', 'Pre-LN, no warm-up']
    """
    s = _train_setup(quick)
    configs = []
    for pos, warm in TRAIN_ARMS[: s["arms"]]:
        net = Network.transformer(
            s["depth"], s["width"], s["heads"], s["tokens"], s["batch"], mlp=True,
            mlp_width=4 * s["width"], mlp_activation="relu", init="glorot_normal",
            mlp_init="glorot_normal", norm="layer", norm_position=pos, label=f"{pos.capitalize()}-LN")
        sched = ({"schedule": "warmup_cosine", "warmup_steps": s["warmup_steps"], "final_lr_fraction": 1.0}
                 if warm else {"schedule": "constant"})
        configs.append(training.TrainConfig(
            label=arm_label(pos, warm), model="network", network=net, readout=True,
            kernel_init="lecun_normal", optimizer="adam", learning_rate=s["learning_rate"],
            b1=s["b1"], b2=s["b2"], batch_size=s["batch"], steps=s["steps"],
            record_every=s["record_every"], probe_size=s["probe_size"],
            train_eval_size=s["train_eval_size"], **sched))
    return configs


def _train(out: Path, quick: bool, progress: bool | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    s = _train_setup(quick)
    ds = data.sequences(s["task"], s["n_train"], s["n_test"], tokens=s["tokens"], vocab=s["vocab"],
                        seed=0)
    configs = train_configs(quick)
    result = training.compare(configs, ds, seeds=s["seeds"], key=0, progress=progress)
    records = {c.label: result[c.label] for c in configs}
    arrays = {f"{_reports.slug(label)}.{k}": np.asarray(v) for label, rec in records.items()
              for k, v in rec._asdict().items() if v is not None}
    _io.write_npz(out / "data" / "training.npz", **arrays)
    return {"records": records, "seconds": time.perf_counter() - t0, "sizes": s}


def _nanmean(v: np.ndarray) -> np.ndarray:
    """The mean over seeds (axis 0) of the finite entries (NaN where none)."""
    with np.errstate(all="ignore"):
        finite = np.isfinite(v)
        return np.where(finite, v, 0.0).sum(0) / finite.sum(0)


def _per_seed(v: np.ndarray) -> dict[str, Any]:
    finite = v[np.isfinite(v)]
    return {"mean": float(finite.mean()) if finite.size else float("nan"),
            "se": float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else float("nan"),
            "per_seed": v.tolist()}


def _train_report(train: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    records, s = train["records"], train["sizes"]
    log_v = math.log(s["vocab"])
    fail_at = FAIL_FRACTION * log_v
    arms: dict[str, Any] = {}
    for label, rec in records.items():
        final = np.asarray(rec.train_loss[:, -1], np.float64)
        div = np.asarray(rec.diverged_step)
        failed = ~np.isfinite(final) | (final > fail_at) | (div >= 0)
        g0 = np.asarray(rec.grad_norm[:, 0], np.float64)  # (seed, block) at step 0
        g0_mean, g0_se = _mean_se(g0)
        arms[label] = {
            "final_train_loss": _per_seed(final),
            "final_test_loss": _per_seed(np.asarray(rec.test_loss[:, -1], np.float64)),
            "final_test_token_accuracy": _per_seed(np.asarray(rec.test_accuracy[:, -1], np.float64)),
            "diverged_seeds": [int(i) for i in np.flatnonzero(div >= 0)],
            "diverged_step": div.tolist(),
            "failed_seeds": [int(i) for i in np.flatnonzero(failed)],
            "grad_norm_step0": {"mean": g0_mean.tolist(), "se": g0_se.tolist(),
                                "per_seed": g0.tolist()},
            "initial_loss": _per_seed(np.asarray(rec.train_loss[:, 0], np.float64)),
            "final_token_cosine": _nanmean(np.asarray(rec.token_cosine[:, -1], np.float64)).tolist(),
            # seeds whose last block ends with every token the same vector (rank collapse)
            "collapsed_seeds": [int(i) for i in np.flatnonzero(np.asarray(rec.token_cosine[:, -1, -1]) > COLLAPSED)],
            "final_attn_entropy": _nanmean(np.asarray(rec.attn_entropy[:, -1], np.float64)).tolist(),
            "curve": {"step": np.asarray(rec.step).tolist(),
                      "train_loss": np.asarray(rec.train_loss, np.float64).tolist(),
                      "test_accuracy": np.asarray(rec.test_accuracy, np.float64).tolist(),
                      "token_cosine_last_block": np.asarray(rec.token_cosine[:, :, -1], np.float64).tolist(),
                      "learning_rate": np.asarray(rec.learning_rate, np.float64).tolist()},
        }
    seeds = s["seeds"]
    checks: list[dict[str, Any]] = []
    nw, w = arms[arm_label("post", False)], arms[arm_label("post", True)]
    need = math.ceil(seeds / 2)
    checks.append({
        "check": f"Post-LN without warm-up fails: seeds whose final training loss is above "
                 f"{FAIL_FRACTION:g} log V = {fail_at:.3f} (the uniform prediction's loss is log V = "
                 f"{log_v:.3f}) or that diverged, out of {seeds}; at least {need}",
        "measured": len(nw["failed_seeds"]), "tolerance": need, "pass": len(nw["failed_seeds"]) >= need})
    for pos, warm in TRAIN_ARMS[: s["arms"]]:
        if (pos, warm) == ("post", False):
            continue
        a = arms[arm_label(pos, warm)]
        worst = float(np.max(np.nan_to_num(a["final_train_loss"]["per_seed"], nan=np.inf)))
        checks.append({
            "check": f"{arm_label(pos, warm)} trains: every seed's final training loss below "
                     f"{FAIL_FRACTION:g} log V = {fail_at:.3f}, none diverged (largest over seeds)",
            "measured": worst, "tolerance": fail_at,
            "pass": bool(worst < fail_at and not a["diverged_seeds"])})
    gap = nw["final_test_loss"]["mean"] - w["final_test_loss"]["mean"]
    se = math.hypot(nw["final_test_loss"]["se"], w["final_test_loss"]["se"])
    text = (f"warm-up lowers Post-LN's final test loss by more than {GAP_SE:g} standard errors of "
            f"the difference of the seed means (finite seeds; measured: the gap; tolerance: "
            f"{GAP_SE:g} SE)")
    if not np.isfinite(nw["final_test_loss"]["per_seed"]).any():  # every seed without warm-up diverged
        ok = bool(np.isfinite(w["final_test_loss"]["per_seed"]).all())
        checks.append({"check": text, "measured": "no finite seed without warm-up", "pass": ok})
    else:
        checks.append({"check": text, "measured": gap, "tolerance": GAP_SE * se,
                       "pass": bool(gap > GAP_SE * se)})
    post_g = np.asarray(nw["grad_norm_step0"]["mean"])
    pre_g = np.asarray(arms[arm_label("pre", False)]["grad_norm_step0"]["mean"])
    ratio = post_g / pre_g
    checks.append({
        "check": "step 0 of training (the task's loss, probe batch): the Post-LN / Pre-LN per-block "
                 "gradient norm ratio grows from block 1 to the last block, as in Fig. 3(b) (seed "
                 "means; last / first of the ratio > 1)",
        "measured": float(ratio[-1] / ratio[0]), "tolerance": 1.0, "pass": bool(ratio[-1] > ratio[0])})
    checks.append({
        "check": "step 0 of training: Pre-LN's per-block gradient norm decreases from block 1 to the "
                 "last block, as in Fig. 3(b) (seed means; last / first < 1)",
        "measured": float(pre_g[-1] / pre_g[0]), "tolerance": 1.0, "pass": bool(pre_g[-1] < pre_g[0])})
    report = {"setup": {**{k: v for k, v in s.items() if k != "arms"},
                        "arms": [arm_label(p, wu) for p, wu in TRAIN_ARMS[: s["arms"]]],
                        "mlp": "ReLU, width 4D", "init": "glorot_normal (Xavier) kernels",
                        "embedding": "x W_e + p, W_e lecun_normal, p ~ N(0, 1), both trained",
                        "readout": "per token, lecun_normal", "norm": "layer, eps 1e-5",
                        "optimizer": "Adam (b1 0.9, b2 0.98, eps 1e-8)",
                        "warm-up": "linear from 0 over warmup_steps, then constant"},
              "fail_loss": fail_at, "log_vocab": log_v, "seconds": train["seconds"], "arms": arms}
    return report, checks


def _train_figures(out: Path, train: dict[str, Any]) -> None:
    fig = plotting.new_figure(17.0, 4.0)
    ax_l, ax_a, ax_g, ax_c = fig.subplots(1, 4)
    colors = {arm_label("post", False): "C3", arm_label("post", True): "C1",
              arm_label("pre", False): "C0", arm_label("pre", True): "C9"}
    log_v = train["log_vocab"]
    for label, a in train["arms"].items():
        c = a["curve"]
        steps = np.asarray(c["step"])
        for key, ax in (("train_loss", ax_l), ("test_accuracy", ax_a),
                        ("token_cosine_last_block", ax_c)):
            v = np.asarray(c[key], np.float64)
            with np.errstate(all="ignore"):
                mean = np.nanmean(v, axis=0)
                lo, hi = np.nanmin(v, axis=0), np.nanmax(v, axis=0)
            n_div = len(a["diverged_seeds"])
            tag = f" ({n_div} non-finite)" if n_div else ""
            ax.plot(steps, mean, color=colors[label], label=label + tag)
            ax.fill_between(steps, lo, hi, color=colors[label], alpha=0.2, lw=0)
            for seed in a["diverged_seeds"]:  # mark where a seed went non-finite
                ax.plot(a["diverged_step"][seed], np.nanmax(v), "x", color=colors[label], ms=7)
    ax_l.axhline(log_v, color="grey", ls=":", lw=1, label="log V (uniform prediction)")
    plotting.label_axes(ax_l, "update", "training loss (per token)",
                        "loss: seed mean, band min-max; x = non-finite")
    ax_l.legend(fontsize=7)
    plotting.label_axes(ax_a, "update", "test token accuracy", "test accuracy (sorting 8 digits)")
    blocks = np.arange(1, train["setup"]["depth"] + 1)
    for label in (arm_label("post", False), arm_label("pre", False)):
        g = train["arms"][label]["grad_norm_step0"]
        ax_g.errorbar(blocks, g["mean"], yerr=2 * np.asarray(g["se"]), fmt="o-", ms=4,
                      color=colors[label], label=label.split(",")[0])
    plotting.label_axes(ax_g, "block", "||dL/dW|| over the block's kernels",
                        "gradient per block at step 0 (task loss)")
    ax_g.set_xticks(blocks)
    plotting.label_axes(ax_c, "update", "mean pairwise token cosine",
                        "last block's tokens (1: all one vector)")
    ax_g.legend(fontsize=7)
    _io.save_figure(fig, out / "training")


def _train_markdown(report: dict[str, Any]) -> list[str]:
    tr = report["training"]
    s = tr["setup"]
    depth = s["depth"]
    lines = [
        "## Training: Post-LN needs warm-up, Pre-LN does not",
        "",
        f"Task: sort {s['tokens']} digits (`data.sequences('{s['task']}')`, vocabulary V = {s['vocab']}, "
        f"{s['n_train']} training and {s['n_test']} test sequences, one label per token). Model: "
        f"{depth} blocks of width {s['width']}, {s['heads']} heads, {s['mlp']}, {s['init']}, "
        f"{s['norm']}, embedding {s['embedding']}, readout {s['readout']}. {s['optimizer']}, learning "
        f"rate {s['learning_rate']:g}, batch {s['batch']}, {s['steps']} updates; warm-up: "
        f"{s['warm-up']} ({s['warmup_steps']} updates). {s['seeds']} seeds per arm (the same initial "
        f"networks and minibatches in every arm); {tr['seconds']:.0f} s. A seed *fails* when its "
        f"final training loss (mean over the last {s['record_every']} updates) is above "
        f"{FAIL_FRACTION:g} log V = {tr['fail_loss']:.3f} or it diverged.",
        "",
        "| arm | initial loss | final train loss, mean (per seed) | final test loss | test token "
        "accuracy, mean (per seed) | last block's token cosine | failed seeds | non-finite seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, a in tr["arms"].items():
        per = ", ".join(_reports.fmt(v, 3) for v in a["final_train_loss"]["per_seed"])
        lines.append(
            f"| {label} | {_reports.fmt(a['initial_loss']['mean'], 3)} | "
            f"{_reports.fmt(a['final_train_loss']['mean'], 3)} ({per}) | "
            f"{_reports.fmt(a['final_test_loss']['mean'], 3)} | "
            f"{_reports.fmt(a['final_test_token_accuracy']['mean'], 3)} "
            f"({', '.join(_reports.fmt(v, 3) for v in a['final_test_token_accuracy']['per_seed'])}) | "
            f"{_reports.fmt(a['final_token_cosine'][-1], 3)} | "
            f"{len(a['failed_seeds'])} / {s['seeds']} | {len(a['diverged_seeds'])} |")
    head = "| | " + " | ".join(f"block {b}" for b in range(1, depth + 1)) + " | last / first |"
    lines += [
        "",
        "Gradient norm per block at step 0 of training, sqrt(sum ||dL/dW||_F^2) over the block's "
        "W_Q, W_K, W_V, W_O, W_1, W_2 on the task's loss (a probe batch of training sequences), seed "
        "mean" + (
            "; beside it the initialization part's engine figure (Lemma setting: uniform attention, "
            "random linear loss) for W_1 (other units: compare the last column):"
            if depth == report["setup"]["depth"] else
            f" (the initialization part's engine figures above are for {report['setup']['depth']} "
            "blocks):"),
        "",
        head, "|---" * (depth + 2) + "|",
    ]
    for pos in ("post", "pre"):
        g = np.asarray(tr["arms"][arm_label(pos, False)]["grad_norm_step0"]["mean"])
        lines.append(f"| {pos.capitalize()}-LN, task loss | {_row(g, 3)} | {g[-1] / g[0]:.3f} |")
        if len(g) == len(report["arms"][pos]["grad_norm_mlp_in"]["mean"]):
            m = np.asarray(report["arms"][pos]["grad_norm_mlp_in"]["mean"])
            lines.append(f"| {pos.capitalize()}-LN, engine W_1 | {_row(m, 3)} | {m[-1] / m[0]:.3f} |")
    nw, w = tr["arms"][arm_label("post", False)], tr["arms"][arm_label("post", True)]
    post_g = np.asarray(nw["grad_norm_step0"]["mean"])
    pre_g = np.asarray(tr["arms"][arm_label("pre", False)]["grad_norm_step0"]["mean"])
    lines += [
        "",
        "Paper (Xiong et al. 2020, abstract [V]): the Post-LN Transformer needs a learning-rate "
        "warm-up stage with Adam, without it it trains much worse (their Fig. 2, IWSLT14 De-En "
        "translation [U]); Pre-LN trains without warm-up. Here, on a task that ships with initjax: "
        "Post-LN without "
        f"warm-up failed in {len(nw['failed_seeds'])} of {s['seeds']} seeds (final training loss "
        f"{_reports.fmt(nw['final_train_loss']['mean'], 3)}, log V = {tr['log_vocab']:.3f}: the "
        "uniform prediction; "
        f"{len(nw['diverged_seeds'])} non-finite), "
        + ("while the other arms trained (table above). " if all(
            not a["failed_seeds"] for label, a in tr["arms"].items() if label != arm_label("post", False))
           else "and other arms failed too (table above): the effect is not clean in this run. ")
        + "In "
        f"{len(nw['collapsed_seeds'])} of {s['seeds']} Post-LN seeds without warm-up the last "
        f"block's tokens ended as one vector (mean pairwise token cosine above {COLLAPSED:g}; "
        "seed mean "
        f"{_reports.fmt(nw['final_token_cosine'][-1], 3)}, attention entropy "
        f"{_reports.fmt(nw['final_attn_entropy'][-1], 3)} nats of log T = "
        f"{math.log(s['tokens']):.3f}): Dong et al.'s rank collapse, reached in training, and a "
        "per-token readout of identical tokens can only predict the label marginal. With warm-up "
        "Post-LN's last-block token cosine ends at "
        f"{_reports.fmt(w['final_token_cosine'][-1], 3)} (figure `training`, last panel). At "
        "step 0 the task loss's gradient per block "
        f"{'decreases' if pre_g[-1] < pre_g[0] else 'does not decrease'} with the block for Pre-LN "
        f"(last / first {pre_g[-1] / pre_g[0]:.3f}) and changes by {post_g[-1] / post_g[0]:.3f}x for "
        f"Post-LN, so the Post/Pre ratio grows {(post_g[-1] / pre_g[-1]) / (post_g[0] / pre_g[0]):.3f}x "
        "from the first block to the last (the paper's Fig. 3(b), as read: "
        f"{PAPER_FIG3B['post'][-1] / PAPER_FIG3B['post'][0]:.1f}x for Post-LN, "
        f"{PAPER_FIG3B['pre'][-1] / PAPER_FIG3B['pre'][0]:.2f}x for Pre-LN, a "
        f"{(PAPER_FIG3B['post'][-1] / PAPER_FIG3B['pre'][-1]) / (PAPER_FIG3B['post'][0] / PAPER_FIG3B['pre'][0]):.0f}x "
        "ratio). "
        "How clean the warm-up effect is "
        "depends on the setting (the module docstring gives the search): 6 blocks at a learning rate "
        "of 3e-3 all trained, and 4 blocks at 1e-2 trained worse without warm-up but did not collapse. "
        "Not done: the paper's Pre-LN final LN (initjax's Pre-LN blocks have none, hence Pre-LN's "
        "larger initial loss), its translation task and BLEU.",
        "",
    ]
    return lines
