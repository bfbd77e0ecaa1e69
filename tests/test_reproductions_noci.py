"""The ``noci2022-signal-propagation`` reproduction: quick mode end to end (every check passes:
post-LN and pre-LN tokens align over depth, 1/sqrt(L) keeps them apart, the Q/K gradients vanish
as the input's tokens become equal), its numbers against float64 re-derivations from the saved
data and against the closed-form uniform-attention recursion, and its helpers."""

import json

import numpy as np
import pytest
from reproduction_checks import check_listed, check_quick_run

from initjax.reproductions import noci2022_signal_propagation as noci

NAME = "noci2022-signal-propagation"
ARM_DIRS = ("post-ln", "pre-ln", "pre-ln-1-sqrt-l")
FILES = ("signal-propagation.png", "signal-propagation.pdf", "inputs.npz",
         *(f"data/{d}-measured/stats.npz" for d in ARM_DIRS), "data/post-ln-uniform/stats.npz",
         *(f"data/correlation-{c:g}/stats.npz" for c in noci.CORRELATIONS))


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("noci2022")
    check_quick_run(out, NAME, FILES, paper_heading="Beside the paper")
    return out, json.loads((out / "report.json").read_text())


def test_quick_run_passes(quick):
    out, report = quick
    assert report["all_pass"] and report["quick"] and report["seeds"] == 3
    assert [a["label"] for a in report["arms"]] == [a.label for a in noci.ARMS]
    # quick mode measures uniform attention for post-LN only (full: all three arms)
    assert [a["uniform_cosine"] is not None for a in report["arms"]] == [True, False, False]
    assert not (out / "data" / "pre-ln-uniform").exists()
    post, pre, scaled = (a["cosine"] for a in report["arms"])
    assert post[0] == pre[0] == scaled[0]  # the same input tokens
    assert post[-1] > pre[-1] > scaled[-1] + 0.3
    sweep = report["gradient_sweep"]
    assert [g["correlation"] for g in sweep] == list(noci.CORRELATIONS)
    assert sweep[-1]["ratio_q"][0] < 1e-5 < 0.1 < sweep[0]["ratio_q"][0]


def test_gradient_ratios_rederived_from_saved_stats(quick):
    out, report = quick
    for g in report["gradient_sweep"]:
        st = np.load(out / "data" / f"correlation-{g['correlation']:g}" / "stats.npz")
        q, k, v = (st[f"grad_norm_{f}"].astype(np.float64) for f in "qkv")  # (seed, block)
        np.testing.assert_allclose(g["ratio_q"], (q / v).mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(g["ratio_k"], (k / v).mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(g["grad_norm_v"], v.mean(axis=0), rtol=1e-12)
    for a, d in zip(report["arms"], ARM_DIRS):
        st = np.load(out / "data" / f"{d}-measured" / "stats.npz")
        cos = st["cosine"].astype(np.float64)
        np.testing.assert_allclose(np.asarray(a["cosine_per_seed"])[:, 1:], cos, rtol=1e-12)
        ratio = st["grad_norm_q"].astype(np.float64) / st["grad_norm_v"]
        np.testing.assert_allclose(a["ratio_q"], ratio.mean(axis=0), rtol=1e-6)
    # the slope check is the least-squares slope of log ratio against log(1 - c)
    near = [g for g in report["gradient_sweep"] if 0.5 < g["correlation"] < 1.0]
    x = np.log([1 - g["correlation"] for g in near])
    y = np.log([g["ratio_q"][0] for g in near])
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    check = next(c for c in report["checks"] if "log-log slope" in c["check"])
    assert check["measured"] == pytest.approx(slope, rel=1e-9)


def test_input_cosine_by_loops(quick):
    out, report = quick
    x0 = np.load(out / "inputs.npz")["tokens"].astype(np.float64)  # (seed, batch, T, D)
    seeds, batch, t, _ = x0.shape
    per_seed = []
    for s in range(seeds):
        vals = []
        for x in x0[s]:
            u = x / np.linalg.norm(x, axis=1, keepdims=True)
            vals.append(np.mean([u[i] @ u[j] for i in range(t) for j in range(t) if i != j]))
        per_seed.append(np.mean(vals))
    got = np.asarray(report["arms"][0]["cosine_per_seed"])[:, 0]
    np.testing.assert_allclose(got, per_seed, rtol=1e-9, atol=1e-12)


def _uniform_recursion(post, scale, depth, tokens, eps=1e-5):
    """Closed-form wide-limit recursion (q diagonal, k off-diagonal of the token covariance),
    Q, K = 0, sigma_v^2 = sigma_o^2 = 1, i.i.d. unit-variance input tokens."""
    q, k, out = 1.0, 0.0, []
    for _ in range(depth):
        if post:  # x <- LN(x + A Attn(x))
            f = scale ** 2 * (q + (tokens - 1) * k) / tokens
            q, k = (q + f) / (q + f + eps), (k + f) / (q + f + eps)
        else:  # x <- x + A Attn(LN(x))
            f = scale ** 2 * (q + (tokens - 1) * k) / (tokens * (q + eps))
            q, k = q + f, k + f
        out.append(k / q)
    return np.array(out)


def test_theory_is_the_closed_form_recursion(quick):
    _, report = quick
    s = report["setup"]
    scales = {"post-LN": (True, 1.0), "pre-LN": (False, 1.0),
              "pre-LN, 1/sqrt(L)": (False, s["depth"] ** -0.5)}
    for a in report["arms"]:
        post, scale = scales[a["label"]]
        want = _uniform_recursion(post, scale, s["depth"], s["tokens"])
        np.testing.assert_allclose(a["theory_cosine"][1:], want, rtol=1e-6, atol=1e-9)
    # pre-LN, scale 1: 1 - cos_l = (1 - c_0) q_0 / q_l exactly, and q_l grows by at most 1 per
    # block (f <= 1 as k <= q): the cosine approaches 1 only like 1 / l
    assert 1 - _uniform_recursion(False, 1.0, 200, 8)[-1] >= 1 / 201


def test_draw_inputs():
    x1 = noci.draw_inputs(2, 3, 4, 5, correlation=1.0)
    assert x1.shape == (2, 3, 4, 5) and x1.dtype == np.float32
    np.testing.assert_array_equal(x1, np.broadcast_to(x1[:, :, :1], x1.shape))
    x0, xh = noci.draw_inputs(2, 3, 4, 5), noci.draw_inputs(2, 3, 4, 5, correlation=0.5)
    # the same draws s, e for every c: x_c = sqrt(c) s + sqrt(1 - c) e
    np.testing.assert_allclose(xh, np.sqrt(0.5) * x1 + np.sqrt(0.5) * x0, rtol=1e-5, atol=1e-6)
    for bad in (-0.1, 1.5, float("nan"), "0.5", True):
        with pytest.raises(ValueError, match="correlation must be a number in"):
            noci.draw_inputs(2, 3, 4, 5, correlation=bad)


def test_networks_are_the_three_arms():
    nets = [noci.network(a, depth=4, width=16, heads=2, tokens=4, batch=2) for a in noci.ARMS]
    blocks = [n.stages[0].block for n in nets]
    assert [(b.norm, b.norm_position, b.residual, b.mlp_width) for b in blocks] == [
        ("layer", "post", True, None), ("layer", "pre", True, None),
        ("layer", "pre", True, None)]
    assert [round(n.branch_scale(b), 6) for n, b in zip(nets, blocks)] == [1.0, 1.0, 0.5]
    u = noci.network(noci.ARMS[0], depth=4, width=16, heads=2, tokens=4, batch=2, uniform=True)
    assert "zeros" in str(u.stages[0].block.qk_init)
    assert nets[0].stages[0].block.qk_init is None


def test_rejects_one_seed(tmp_path):
    with pytest.raises(ValueError, match="seeds >= 2"):
        noci.run(tmp_path, quick=True, seeds=1)


def test_listed(capsys):
    check_listed(capsys, [NAME])
