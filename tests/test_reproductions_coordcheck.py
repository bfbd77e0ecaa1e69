"""The ``yang2021-coord-check`` reproduction: quick mode end to end (every check passes: muP flat,
SP growing, for MLPs and residual MLPs under SGD and Adam), its networks, and its listing.

Its quick mode runs the MLP at the widths 64, 256, 1024 that ``tests/test_coordcheck.py`` also
uses, so in one pytest process the two files share their compiled programs.
"""

import json

import numpy as np
import pytest
from reproduction_checks import check_listed, check_quick_run

from initjax import coordcheck, parametrization
from initjax.reproductions import yang2021_coord_check as yang

NAME = "yang2021-coord-check"
FILES = ("coord-check-mlp.png", "coord-check-mlp.pdf", "coord-check-resmlp.png",
         "coord-check-resmlp.pdf", "data/mlp-adam-mup/coord_check.json",
         "data/resmlp-sgd-sp/coord_check.npz")


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("yang2021")
    check_quick_run(out, NAME, FILES, paper_heading="Beside the paper")
    return json.loads((out / "report.json").read_text())


def test_quick_run_passes_every_check(quick):
    assert quick["all_pass"] and quick["quick"] and quick["seeds"] == 4
    arms = {(a["arch"], a["optimizer"], a["parametrization"]) for a in quick["arms"]}
    assert arms == {(a, o, p) for a in ("mlp", "resmlp") for o in ("sgd", "adam")
                    for p in ("sp", "mup")}
    # every arm's slopes are the fitter's, of the saved statistic
    for a in quick["arms"]:
        np.testing.assert_allclose(a["slope"], coordcheck.fit_slope(a["widths"], a["l1"]),
                                   rtol=1e-12)
        assert a["layers"][-1] == "readout" and a["diverged"] == 0
    # the README comparison is reported with its figure
    readme = [c for c in quick["checks"] if "mup README" in c["check"]]
    assert len(readme) == 1 and 0.5 <= readme[0]["measured"] <= 1.5


def test_residual_network_is_parametrized_per_role():
    net = yang.network("resmlp", "mup", 256, optimizer="adam", base_width=64, blocks=2)
    assert coordcheck.layer_names(net) == ("hidden1", "res2/branch", "res2", "res3/branch",
                                           "res3", "readout")
    input_layer, *_, readout = net.dense_layers
    branch = net.blocks[1].branch[0]
    # muP with Adam (TP5 Table 3): input lr 1, hidden and readout lr 1/m, readout init var / m
    assert (input_layer.lr_multiplier, branch.lr_multiplier, readout.lr_multiplier) == (
        1.0, 0.25, 0.25)
    assert net == parametrization.parametrize(
        yang.network("resmlp", "sp", 256, optimizer="adam", base_width=256, blocks=2), "mup",
        base_width=64, optimizer="adam")
    with pytest.raises(ValueError, match="arch must be 'mlp' or 'resmlp', got 'cnn'"):
        yang.network("cnn", "mup", 64, optimizer="sgd", base_width=64)


def test_listed(capsys):
    check_listed(capsys, [NAME])
