"""Smoke tests of the init/activation/BN reproductions in their ``--quick`` mode.

Each runs end to end (compiles included, so these are the slow tests of the suite) and must
write ``report.json`` with status ``"done"``, its figures (PNG and PDF), data and ``report.md``,
with every check passing, except the findings that do not reproduce, which are listed here with
the reason: the test fails if one of them starts to pass as well as if any other check fails, so
the list and the reports stay true.
"""

import json

import pytest
from reproduction_checks import check_listed, check_quick_run

# name -> files every run must write
EXPECTED_FILES = {
    "glorot2010-histograms": (
        "fig6-activations.png", "fig6-activations.pdf", "fig7-gradients.png", "fig7-gradients.pdf",
        "fig8-weight-gradients.png", "fig8-weight-gradients.pdf",
        "mean_field.npz", "data/standard/stats.npz", "data/normalized/stats.npz",
    ),
    "saxe2014-spectra": ("spectra.png", "spectra.pdf", "spread.png", "spread.pdf", "spectra.npz"),
    "yang2019-bn-gradients": (
        "bn-gradients.png", "bn-gradients.pdf", "data/bn-B4/stats.npz", "data/no-bn-B16/stats.npz",
    ),
    "selu-fixed-point": (
        "fixed-point.png", "fixed-point.pdf", "selu-trajectories.png", "selu-trajectories.pdf",
        "data/selu-mean1-var1/stats.npz",
    ),
}

# Findings that do not reproduce (see each report.md). Glorot & Bengio 2010 describe the
# back-propagated gradients under normalized init as roughly constant across layers (their
# linear-regime argument); on Shapeset pixels in [-1, 1] tanh' < 1 removes ~20% of the gradient
# variance per layer (predicted by the mean field, which the measurement matches), so the
# bottom/top ratio is ~0.3-0.4, outside [1/2, 2].
KNOWN_FAILURES = {
    "glorot2010-histograms": {"normalized (Fig. 7 bottom)"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_quick_reproduction(tmp_path, name):
    check_quick_run(tmp_path, name, EXPECTED_FILES[name], KNOWN_FAILURES.get(name, ()))


def test_listed_in_cli(capsys):
    check_listed(capsys, EXPECTED_FILES)


def test_reports_start_settles_seeds_and_marks_the_run_incomplete(tmp_path):
    from initjax.reproductions import _reports

    started = _reports.start(tmp_path / "run", "demo", None, 8, min_seeds=2)
    assert started.out == tmp_path / "run" and started.seeds == 8 and started.t0 > 0
    assert json.loads((tmp_path / "run" / "report.json").read_text()) == {
        "name": "demo", "status": "incomplete"}
    assert _reports.start(tmp_path, "demo", 3, 8).seeds == 3
    too_few = r"demo needs seeds >= 2 \(tolerances use the seed spread\), got 1"
    with pytest.raises(ValueError, match=too_few):
        _reports.start(tmp_path, "demo", 1, 8, min_seeds=2)
    with pytest.raises(TypeError, match="demo needs an int number of seeds, got 2.5"):
        _reports.start(tmp_path, "demo", 2.5, 8)


def test_reports_header():
    from initjax.reproductions import _reports

    report = {"seconds": 12.4, "quick": False}
    assert _reports.header("Title", "4 seeds; ", report) == ["# Title", "", "4 seeds; 12 s."]
    quick = _reports.header("Title", "4 seeds; ", {**report, "quick": True}, "quick: width 64")
    assert quick[-1] == "4 seeds; 12 s (quick: width 64)."


def test_label_axes_sets_labels_title_and_legend():
    from initjax import plotting

    ax = plotting.new_figure().subplots()
    ax.plot([0, 1], [0, 1], label="line")
    assert plotting.label_axes(ax, "x", "y", "t", title_size=8, legend_size=6) is ax
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("x", "y", "t")
    assert ax.title.get_fontsize() == 8 and ax.get_legend().get_texts()[0].get_fontsize() == 6
    bare = plotting.new_figure().subplots()
    plotting.label_axes(bare, "x", "y", "t", legend_size=None)
    assert bare.get_legend() is None
