"""The ``xiong2020-layernorm`` reproduction: quick mode end to end (every check passes), its
numbers re-derived in float64 from the saved engine statistics, Theorem 1's closed form, the
paper's values as the reference sheet states them, and its listing."""

import json
import math

import numpy as np
import pytest
from reproduction_checks import check_listed, check_quick_run

from initjax.reproductions import xiong2020_layernorm as xiong

NAME = "xiong2020-layernorm"
FILES = ("gradient-norms.png", "gradient-norms.pdf", "data/pre-ln/stats.npz", "data/post-ln/stats.npz")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("xiong2020")
    check_quick_run(out, NAME, FILES, paper_heading="Beside the paper")
    return out, json.loads((out / "report.json").read_text())


def test_quick_run_passes(quick):
    _, report = quick
    assert report["all_pass"] and report["quick"] and report["seeds"] == 4
    assert report["setup"]["depth"] == 6 and report["setup"]["width"] == 64


def test_report_numbers_rederived_from_saved_data(quick):
    out, report = quick
    pre = {k: np.asarray(v, np.float64) for k, v in np.load(out / "data" / "pre-ln" / "stats.npz").items()}
    post = {k: np.asarray(v, np.float64) for k, v in np.load(out / "data" / "post-ln" / "stats.npz").items()}
    seeds = report["seeds"]
    for arm, st in (("pre", pre), ("post", post)):
        for f in xiong.PARAMS:
            v = st[f]
            assert v.shape == (seeds, 6)
            np.testing.assert_allclose(report["arms"][arm][f]["mean"], v.mean(0), rtol=1e-9)
            np.testing.assert_allclose(report["arms"][arm][f]["se"], v.std(0, ddof=1) / math.sqrt(seeds),
                                       rtol=1e-9)
        assert np.all(st["grad_norm_q"] == 0) and np.all(st["grad_norm_k"] == 0)
    # Pre-LN's final LN: per seed, divide by sqrt(q_L + eps); the Post/Pre ratio per seed, then the mean
    w2_final = pre["grad_norm_mlp_out"] / np.sqrt(pre["act_second_moment"][:, -1:] + 1e-5)
    np.testing.assert_allclose(report["arms"]["pre"]["grad_norm_mlp_out_final_ln"]["mean"], w2_final.mean(0),
                               rtol=1e-9)
    ratio = (post["grad_norm_mlp_out"] / w2_final).mean(0)
    np.testing.assert_allclose(report["post_over_pre_w2"]["mean"], ratio, rtol=1e-9)
    # Post-LN's stream is normalized: E x^2 = 1 - eps/(var + eps), to float32 rounding
    np.testing.assert_allclose(post["act_second_moment"], 1.0, atol=1e-4)


def test_theory_closed_forms(quick):
    _, report = quick
    t = report["setup"]["tokens"]
    q = np.asarray(report["arms"]["pre"]["q"]["theory"])
    # block 1 from x0 ~ N(0, 1): uniform attention adds |mean token|^2 / d = 1/T, the ReLU FFN 1/2
    assert q[0] == pytest.approx(1.0 + 1.0 / t + 0.5, rel=1e-4)
    lo, hi = math.sqrt((2 + 6) / 3), math.sqrt((2 + 18) / 3)
    assert report["post_over_pre_w2"]["theorem1_bounds"] == pytest.approx([lo, hi], rel=1e-12)
    # Theorem 1 at the last layer: G is diagonal, E relu(h)^2 = 1/2, so Post/Pre = sqrt(q_L / (3/2))
    assert report["post_over_pre_w2"]["theory"][-1] == pytest.approx(math.sqrt(q[-1] / 1.5), rel=1e-3)
    # and the Pre-LN (final LN) W_2 theory at the last layer is sqrt(B d m T / (2 q_L))
    s = report["setup"]
    want = math.sqrt(s["batch"] * s["width"] ** 2 * t / (2 * q[-1]))
    assert report["arms"]["pre"]["grad_norm_mlp_out_final_ln"]["theory"][-1] == pytest.approx(want, rel=1e-3)


def test_paper_values_as_the_sheet_states():
    assert xiong.PAPER_FIG3B["pre"] == (0.56, 0.43, 0.41, 0.37, 0.31, 0.29)
    assert xiong.PAPER_FIG3B["post"] == (0.13, 0.20, 0.37, 0.58, 1.10, 1.66)


def test_network_is_the_lemma_setting():
    for pos in xiong.POSITIONS:
        net = xiong.network(pos, depth=2, width=16, tokens=4, batch=2)
        b = net.stages[0].block
        assert (b.heads, b.norm, b.norm_position, b.mlp_width) == (1, "layer", pos, 16)
        assert net.depth == 2 and net.tokens == 4
    with pytest.raises(ValueError, match="norm_position"):
        xiong.network("middle", depth=2, width=16, tokens=4, batch=2)


def test_rejects_one_seed(tmp_path):
    with pytest.raises(ValueError, match="seeds >= 2"):
        xiong.run(tmp_path, quick=True, seeds=1)


def test_listed(capsys):
    check_listed(capsys, [NAME])
