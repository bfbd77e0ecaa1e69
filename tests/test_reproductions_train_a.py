"""Smoke tests of the training reproductions in quick mode: they finish, write their files and
every check passes (quick sizes: 2 seeds, a few hundred steps on scikit-learn's digits)."""

import json

import numpy as np
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


def test_ioffe_trains_on_mnist_from_data_dir(tmp_path):
    """--data-dir reaches the reproduction: a stand-in MNIST (random 28x28 images in the IDX
    format) is read, trained on, and named in the report; chance-level data cannot pass the
    accuracy checks, so only the plumbing is asserted."""
    from test_data import _write_mnist

    from initjax.cli import main

    _write_mnist(tmp_path / "mnist", np.random.default_rng(0), n_train=120, n_test=60, rows=28, cols=28)
    code = main(["reproduce", "ioffe2015-mnist", "--quick", "--quiet", "--seeds", "2",
                 "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "mnist")])
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["status"] == "done" and report["data"] == "mnist"
    assert (report["n_train"], report["n_test"]) == (120, 60)
