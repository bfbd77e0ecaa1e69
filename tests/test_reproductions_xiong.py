"""The ``xiong2020-layernorm`` reproduction: quick mode end to end (every check passes), its
numbers re-derived in float64 from the saved engine statistics and training records, Theorem 1's
closed form, the warm-up schedule's closed form, the paper's values as the reference sheet states
them, and its listing."""

import json
import math

import numpy as np
import pytest
from reproduction_checks import check_listed, check_quick_run

from initjax.reproductions import xiong2020_layernorm as xiong

NAME = "xiong2020-layernorm"
FILES = ("gradient-norms.png", "gradient-norms.pdf", "data/pre-ln/stats.npz", "data/post-ln/stats.npz",
         "training.png", "training.pdf", "data/training.npz")


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


# -- the training arm --------------------------------------------------------------------------
QUICK_ARMS = ("Post-LN, no warm-up", "Post-LN, warm-up", "Pre-LN, no warm-up")
SLUGS = dict(zip(QUICK_ARMS, ("post-ln-no-warm-up", "post-ln-warm-up", "pre-ln-no-warm-up")))  # npz prefixes


def _records(out):
    with np.load(out / "data" / "training.npz") as f:
        return {k: np.asarray(v) for k, v in f.items()}


def test_training_setup_and_arms(quick):
    _, report = quick
    tr = report["training"]
    s = tr["setup"]
    assert tuple(tr["arms"]) == QUICK_ARMS and s["arms"] == list(QUICK_ARMS)
    assert (s["depth"], s["width"], s["seeds"], s["steps"], s["warmup_steps"]) == (4, 32, 3, 200, 50)
    assert s["learning_rate"] == 2e-2 and s["b2"] == 0.98 and s["task"] == "sort"
    assert tr["log_vocab"] == pytest.approx(math.log(10), rel=1e-12)
    assert tr["fail_loss"] == pytest.approx(xiong.FAIL_FRACTION * math.log(10), rel=1e-12)


def test_training_numbers_rederived_from_saved_records(quick):
    out, report = quick
    rec = _records(out)
    tr = report["training"]
    fail = xiong.FAIL_FRACTION * math.log(10)
    for label, arm in tr["arms"].items():
        r = {k.split(".", 1)[1]: v for k, v in rec.items() if k.split(".", 1)[0] == SLUGS[label]}
        final = r["train_loss"][:, -1].astype(np.float64)
        assert r["train_loss"].shape == (3, 5)  # records at 0, 50, ..., 200
        np.testing.assert_allclose(arm["final_train_loss"]["per_seed"], final, rtol=1e-9)
        np.testing.assert_allclose(arm["final_train_loss"]["mean"], final.mean(), rtol=1e-9)
        np.testing.assert_allclose(arm["final_test_loss"]["se"],
                                   r["test_loss"][:, -1].astype(np.float64).std(ddof=1) / math.sqrt(3),
                                   rtol=1e-9)
        failed = np.flatnonzero(~np.isfinite(final) | (final > fail) | (r["diverged_step"] >= 0))
        assert arm["failed_seeds"] == failed.tolist()
        collapsed = np.flatnonzero(r["token_cosine"][:, -1, -1] > xiong.COLLAPSED)
        assert arm["collapsed_seeds"] == collapsed.tolist()
        np.testing.assert_allclose(arm["grad_norm_step0"]["mean"], r["grad_norm"][:, 0].astype(np.float64).mean(0),
                                   rtol=1e-9)
        # every seed starts near log V or above (Pre-LN without a final LN starts higher)
        assert np.all(r["train_loss"][:, 0] > 0.9 * math.log(10))
    # the warm-up gap check from the records, and the reported arms' failure counts
    nw = rec["post-ln-no-warm-up.test_loss"][:, -1].astype(np.float64)
    w = rec["post-ln-warm-up.test_loss"][:, -1].astype(np.float64)
    gap_check = next(c for c in report["checks"] if c["check"].startswith("warm-up lowers"))
    assert gap_check["measured"] == pytest.approx(nw.mean() - w.mean(), rel=1e-9)
    se = math.hypot(nw.std(ddof=1), w.std(ddof=1)) / math.sqrt(3)
    assert gap_check["tolerance"] == pytest.approx(xiong.GAP_SE * se, rel=1e-9)


def test_warmup_schedule_closed_form(quick):
    out, report = quick
    rec = _records(out)
    eta, w = 2e-2, 50
    steps = rec["post-ln-warm-up.step"]
    np.testing.assert_array_equal(steps, [0, 50, 100, 150, 200])
    # linear warm-up then constant: eta min(t / w, 1); no warm-up: eta throughout
    np.testing.assert_allclose(rec["post-ln-warm-up.learning_rate"], eta * np.minimum(steps / w, 1.0),
                               rtol=1e-6, atol=0)
    for arm in ("post-ln-no-warm-up", "pre-ln-no-warm-up"):
        np.testing.assert_allclose(rec[f"{arm}.learning_rate"], eta, rtol=1e-6)


def test_train_configs():
    full, quick = xiong.train_configs(), xiong.train_configs(quick=True)
    assert [c.label for c in full] == [xiong.arm_label(p, w) for p, w in xiong.TRAIN_ARMS]
    assert [c.label for c in quick] == list(QUICK_ARMS)
    for c, (pos, warm) in zip(full, xiong.TRAIN_ARMS):
        b = c.network.stages[0].block
        assert (b.norm_position, b.heads, b.mlp_width, c.network.depth, c.network.tokens) == (pos, 4, 128, 6, 8)
        assert (c.optimizer, c.learning_rate, c.b2, c.batch_size, c.steps) == ("adam", 1e-2, 0.98, 64, 500)
        assert c.schedule == ("warmup_cosine" if warm else "constant")
        if warm:
            assert (c.warmup_steps, c.final_lr_fraction) == (100, 1.0)
    assert all(c.network.depth == 4 and c.learning_rate == 2e-2 for c in quick)
