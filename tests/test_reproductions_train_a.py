"""Smoke tests of the training reproductions in quick mode: they finish, write their files and
every check passes (quick sizes: 2 seeds, a few hundred steps on scikit-learn's digits)."""

import json

import pytest

from initjax.reproductions import ioffe2015_mnist, seed_activations, seed_batchnorm

CASES = [
    (ioffe2015_mnist, ("figure1.png", "figure1.pdf", "loss-and-saturation.png", "data.npz")),
    (seed_batchnorm, ("hist-bn.png", "hist-bn.pdf", "std-by-layer.png", "bn-eval.png",
                      "data/training.npz")),
    (seed_activations, ("hist-activations.png", "hist-activations.pdf", "moments-by-layer.png",
                        "curves.png", "prelu-slopes.png", "dead-relu.png", "data/training.npz")),
]


@pytest.mark.parametrize("module, files", CASES, ids=[m.NAME for m, _ in CASES])
def test_quick_run_passes_its_checks(tmp_path, module, files):
    report = module.run(tmp_path, quick=True, progress=False)
    failed = [(c["check"], c["measured"]) for c in report["checks"] if not c["pass"]]
    assert report["status"] == "done"
    assert not failed, failed
    assert report["all_pass"] and report["checks"]
    stored = json.loads((tmp_path / "report.json").read_text())
    assert stored["status"] == "done" and stored["all_pass"]
    assert stored["name"] == module.NAME
    for name in ("report.md", *files):
        assert (tmp_path / name).is_file(), name
    text = (tmp_path / "report.md").read_text()
    assert "## Checks" in text and "**FAIL**" not in text
