"""Smoke tests of the Fixup and signal-propagation-plot reproductions in their ``--quick`` mode.

Each runs end to end (compiles included) and must write ``report.json`` with status ``"done"``,
its figures (PNG and PDF), data and ``report.md``, with every check passing.
"""


import pytest
from reproduction_checks import check_listed, check_quick_run

from initjax import reproductions

# name -> files every run must write
EXPECTED_FILES = {
    "zhang2019-fixup": (
        "gradient-norms.png", "gradient-norms.pdf", "training.png", "training.pdf",
        "records.npz", "data/he-L4/stats.npz", "data/fixup-L12/stats.npz",
    ),
    "brock2021-spp": (
        "spp-bn.png", "spp-bn.pdf", "spp-nf.png", "spp-nf.pdf", "predicted.npz",
        "data/bn-relu/stats.npz", "data/relu-bn/stats.npz", "data/nf-he-init/stats.npz",
        "data/nf-scaled-ws/stats.npz", "spp-conv.png", "spp-conv.pdf",
        "data/conv-bn-relu/stats.npz", "data/conv-relu-bn/stats.npz",
        "data/conv-nf-he-init/stats.npz", "data/conv-nf-scaled-ws/stats.npz",
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_quick_reproduction(tmp_path, name):
    check_quick_run(tmp_path, name, EXPECTED_FILES[name], paper_heading="Departures from the paper")


def test_listed_in_cli(capsys):
    check_listed(capsys, EXPECTED_FILES)


def test_fixup_reproduction_refuses_one_seed(tmp_path):
    with pytest.raises(ValueError, match=r"zhang2019-fixup needs seeds >= 2"):
        reproductions.run("zhang2019-fixup", tmp_path, quick=True, seeds=1, progress=False)


def test_spp_prediction_matches_closed_forms():
    """The mean-field SPP statistics the report compares with reduce to the module docstring's
    closed forms. BN-ReLU's branch: squared mean 1/pi and variance 1 - 1/pi as B -> inf (O(1/B)
    corrections: batch-normalized examples have correlation -1/(B - 1)); ReLU-BN's: channel
    variance exactly 2 at any B (the BN'd units have biased batch variance 1), so the stream's is
    2 l + (1 - 1/B); NF with scaled WS: branch variance alpha^2 and stream (1 + l alpha^2), times
    the biased-variance factor 1 - 1/B."""
    import math

    import numpy as np

    from initjax.reproductions.brock2021_spp import NF_ALPHA, networks, predicted_spp

    depth, blocks = 5, np.arange(1, 6)
    big = networks(depth, 32, 4096)
    bn = predicted_spp(big["BN-ReLU"])
    np.testing.assert_allclose(bn["branch_chan_var"], 1 - 1 / math.pi, rtol=1e-3)
    np.testing.assert_allclose(bn["branch_sq_mean"], 1 / math.pi, rtol=1e-3)
    np.testing.assert_allclose(bn["act_chan_var"], 1 + (1 - 1 / math.pi) * blocks, rtol=1e-3)
    batch = 64
    nets = networks(depth, 32, batch)
    f = 1 - 1 / batch
    rb = predicted_spp(nets["ReLU-BN"])
    np.testing.assert_allclose(rb["branch_chan_var"], 2.0, rtol=1e-4)  # eps = 1e-5 in BN
    np.testing.assert_allclose(rb["act_chan_var"], 2 * blocks + f, rtol=1e-4)
    ws = predicted_spp(nets["NF, scaled WS"])
    a2 = NF_ALPHA**2
    np.testing.assert_allclose(ws["branch_chan_var"], a2 * f, rtol=1e-6)
    np.testing.assert_allclose(ws["act_chan_var"], (1 + a2 * blocks) * f, rtol=1e-6)
