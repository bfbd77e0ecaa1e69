"""The ``dong2021-rank-collapse`` reproduction: quick mode end to end (every check passes: pure
attention collapses doubly exponentially, the skip connection cures it), its numbers against
float64 numpy re-derivations from the saved data, its helpers on closed forms, and its listing."""

import json
import math

import numpy as np
import pytest
from reproduction_checks import check_listed, check_quick_run

from initjax.reproductions import dong2021_rank_collapse as dong

NAME = "dong2021-rank-collapse"
ARM_DIRS = ("pure-attention", "attention-skip", "attention-mlp", "full-blocks-skip-mlp-pre-ln")
FILES = ("rank-collapse.png", "rank-collapse.pdf", "inputs.npz",
         *(f"data/{d}/stats.npz" for d in ARM_DIRS))


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("dong2021")
    check_quick_run(out, NAME, FILES, paper_heading="Beside the paper")
    return out, json.loads((out / "report.json").read_text())


def test_quick_run_passes_and_collapses(quick):
    out, report = quick
    assert report["all_pass"] and report["quick"] and report["seeds"] == 3
    arms = {a["label"]: a for a in report["arms"]}
    assert list(arms) == [a.label for a in dong.ARMS]
    pure, skip = (arms[a.label]["rel_residual"] for a in dong.ARMS[:2])
    # block 0 is the input, shared by every arm; pure attention falls to float32 rounding
    assert len({a["rel_residual"][0] for a in report["arms"]}) == 1
    assert pure[-1] < 1e-5 < 0.1 < skip[-1]
    # the local exponent of pure attention's map r -> c r^k is near the bound's 3
    local = np.asarray(report["pure_exponents"]["local"], np.float64)
    assert np.isfinite(local).any() and 2.0 < np.nanmean(local[:, 2:]) < 4.5


def test_report_numbers_rederived_from_saved_data(quick):
    out, report = quick
    x0 = np.load(out / "inputs.npz")["tokens"].astype(np.float64)  # (seed, batch, T, D)
    seeds, _, t, _ = x0.shape
    # block 0 from the tokens in float64, by loops (independent of the vectorized helpers)
    r0, c0 = [], []
    for s in range(seeds):
        rs, cs = [], []
        for x in x0[s]:
            res = x - x.mean(axis=0)
            n = lambda m: math.sqrt(np.abs(m).sum(axis=0).max() * np.abs(m).sum(axis=1).max())  # noqa: E731
            rs.append(n(res) / n(x))
            u = x / np.linalg.norm(x, axis=1, keepdims=True)
            cs.append(np.mean([u[i] @ u[j] for i in range(t) for j in range(t) if i != j]))
        r0.append(np.mean(rs))
        c0.append(np.mean(cs))
    pure = np.asarray(report["arms"][0]["rel_residual_per_seed"], np.float64)
    np.testing.assert_allclose(pure[:, 0], r0, rtol=1e-12)
    np.testing.assert_allclose(report["arms"][0]["cosine"][0], np.mean(c0), rtol=1e-9, atol=1e-12)
    # blocks >= 1 are the engine's saved statistics; the exponents follow from them
    saved = np.load(out / "data" / "pure-attention" / "stats.npz")["rel_residual"]
    np.testing.assert_allclose(pure[:, 1:], saved, rtol=1e-6)
    pe = report["pure_exponents"]
    floor = float(np.median(pure[:, -1]))
    assert report["noise_floor"] == pytest.approx(floor, rel=1e-12)
    lr = np.log(pure)
    for s in range(seeds):
        n = pe["usable_blocks"][s]
        assert np.all(pure[s, :n] > dong.NOISE_FACTOR * floor)
        assert n == pure.shape[1] or pure[s, n] <= dong.NOISE_FACTOR * floor
        for b in range(n - 1):
            assert pe["ratio"][s][b] == pytest.approx(lr[s, b + 1] / lr[s, b], rel=1e-9)
        for b in range(1, n - 1):
            want = (lr[s, b + 1] - lr[s, b]) / (lr[s, b] - lr[s, b - 1])
            assert pe["local"][s][b] == pytest.approx(want, rel=1e-9)


def test_exponents_on_closed_forms():
    # r_l = c^(-1/2) (c^(1/2) r_0)^(3^l) solves r' = c r^3: local exponent exactly 3
    c, r0 = 4.0, 0.3
    r = np.array([[c ** -0.5 * (c ** 0.5 * r0) ** (3 ** b) for b in range(5)]])
    ex = dong.exponents(r, threshold=1e-30)
    assert ex["usable"].tolist() == [5]
    np.testing.assert_allclose(ex["local"][0, 1:4], 3.0, rtol=1e-9)
    assert np.isnan(ex["local"][0, 0])
    # geometric decay r_l = rho^(l+1): ratio (l + 2) / (l + 1), local exponent 1
    rho = 0.5
    g = np.array([[rho ** (b + 1) for b in range(6)]])
    ex = dong.exponents(g, threshold=0.1)  # 0.5, 0.25, 0.125 usable; 0.0625 not
    assert ex["usable"].tolist() == [3]
    np.testing.assert_allclose(ex["ratio"][0, :2], [2.0, 1.5], rtol=1e-12)
    assert np.isnan(ex["ratio"][0, 2:]).all()
    np.testing.assert_allclose(ex["local"][0, 1], 1.0, rtol=1e-12)
    assert np.isnan(ex["local"][0, 2:]).all()
    with pytest.raises(ValueError, match=r"at least 2 blocks, got \(5,\)"):
        dong.exponents(r[0], threshold=0.0)
    with pytest.raises(ValueError, match="threshold must be a finite number >= 0, got -1"):
        dong.exponents(r, threshold=-1.0)


def test_numpy_statistics_closed_forms():
    # equal tokens: residual 0, cosine 1; orthogonal one-hot tokens: cosine 0 and, for T = D = 2,
    # res = [[1/2, -1/2], [-1/2, 1/2]] with both norms 1, ||X|| both norms 1: ratio 1
    x = np.ones((1, 3, 4))
    assert dong.rel_residual_np(x)[()] == 0.0 and dong.token_cosine_np(x)[()] == pytest.approx(1.0)
    e = np.eye(2)[None]
    assert dong.rel_residual_np(e)[()] == pytest.approx(1.0)
    assert dong.token_cosine_np(e)[()] == pytest.approx(0.0)


def test_networks_are_the_four_cuts():
    nets = [dong.network(a, depth=3, width=16, heads=2, tokens=4, batch=2) for a in dong.ARMS]
    blocks = [n.stages[0].block for n in nets]
    assert [(b.residual, b.mlp_width is not None, b.norm) for b in blocks] == [
        (False, False, "none"), (True, False, "none"), (False, True, "none"), (True, True, "layer")]
    assert all(n.tokens == 4 and n.depth == 3 for n in nets)


def test_rejects_one_seed(tmp_path):
    with pytest.raises(ValueError, match="seeds >= 2"):
        dong.run(tmp_path, quick=True, seeds=1)


def test_listed(capsys):
    check_listed(capsys, [NAME])
