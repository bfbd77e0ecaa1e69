"""The yang2022-mutransfer reproduction: quick mode end to end and its report's contract.

The quick run must write ``report.json`` (status ``"done"``), the figures, the sweeps' data and
``report.md``, every check passing, and list ``optimal_log2_lr`` for every (parametrization,
width) and every (depth arm, depth).
"""

import json

import numpy as np
import pytest
from reproduction_checks import check_listed, check_quick_run

from initjax import transfer
from initjax.reproductions import yang2022_mutransfer as mut

NAME = "yang2022-mutransfer"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mutransfer")
    size = mut.sizes(quick=True)
    files = ["width_transfer.png", "width_transfer.pdf", "depth_transfer.png",
             "depth_transfer.pdf"]
    files += [f"data/width-{p}-{w}.npz" for p in ("sp", "mup") for w in size["widths"]]
    files += [f"data/depth-{p}-{d}.npz" for p in ("depth-mup", "mup-no-depth-scaling")
              for d in size["depths"]]
    check_quick_run(out, NAME, files, paper_heading="Beside the paper")
    return out, size


def test_report_lists_every_optimum(quick_run):
    out, size = quick_run
    report = json.loads((out / "report.json").read_text())
    assert set(report["optimal_log2_lr"]) == {"SP", "muP"}
    for arm in ("SP", "muP"):
        assert set(report["optimal_log2_lr"][arm]) == {str(w) for w in size["widths"]}
    assert set(report["optimal_log2_lr_depth"]) == {"depth-muP", "muP, no depth scaling"}
    for arm, optima in report["optimal_log2_lr_depth"].items():
        assert set(optima) == {str(d) for d in size["depths"]}
    log2 = report["setup"]["log2_learning_rates"]
    for optima in (*report["optimal_log2_lr"].values(), *report["optimal_log2_lr_depth"].values()):
        for v in optima.values():
            assert log2[0] <= v <= log2[-1]
    # at the base width SP and muP are the same network: the same optimum
    base = str(min(size["widths"]))
    assert report["optimal_log2_lr"]["SP"][base] == report["optimal_log2_lr"]["muP"][base]
    # the report's optimum is the saved sweep's (data and report agree)
    sw = transfer.LRSweep.load(out / "data" / f"width-mup-{max(size['widths'])}.npz")
    assert report["optimal_log2_lr"]["muP"][str(max(size["widths"]))] == pytest.approx(
        sw.optimal_log2_lr())
    assert sw.steps == size["steps"] and sw.batch_size == size["batch"]
    shift = report["width"]["muP"]["shift"]
    vals = np.array(list(report["optimal_log2_lr"]["muP"].values()))
    assert shift == pytest.approx(vals.max() - vals.min())


def test_listed(capsys):
    check_listed(capsys, [NAME])
