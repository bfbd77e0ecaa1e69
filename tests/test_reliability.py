"""Reliability (issue 17) beyond the bad-input table (tests/test_audit.py): overflowed runs still
print and plot, sizes are bounded up front, interrupted writes leave no temporary files, one
writer per output folder (two real processes), and a training resumes only its own run."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from initjax import _io, propagate
from initjax.cli import main
from initjax.config import NetworkConfig
from initjax.network import Network

TINY = NetworkConfig(depth=2, width=8, batch=4)


# -- overflow: tables print inf, --theory and plots survive ---------------------------------------
OVERFLOW = ["--init", "normal:stddev=30", "--activation", "relu", "--depth", "12", "--width", "64",
            "--batch", "4", "--seeds", "2", "--quiet"]


def test_overflowing_run_prints_inf_theory_and_figures(tmp_path, capsys):
    """ReLU with N(0, 30^2) weights at width 64 multiplies the variance by 64 * 900 / 2 = 28,800 a
    layer: float32 (3.4e38) overflows after ~9 layers. The table shows inf there (it showed nan), --theory prints the
    table and says the prediction overflowed (it died with "q must be finite, got nan"), and the
    log-scale figures are written (an all-overflowed curve died with "Data cannot be log-scaled")."""
    out = tmp_path / "run"
    assert main(["propagate", *OVERFLOW, "--theory", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    last = lines[-1].split()
    assert last[0] == "12" and last[1] == "inf", lines[-1]  # Var[h] of the last layer
    assert not any(" nan" in line for line in lines[2:]), "an inf statistic printed as nan"
    assert "the mean-field prediction overflowed" in captured.err
    assert (out / "variance.png").stat().st_size > 0 and (out / "histograms.png").exists()
    assert not list(out.glob(".*.tmp")) and not (out / _io.LOCK_NAME).exists()


@pytest.fixture(scope="module")
def tiny():
    return propagate(TINY, seeds=2)


def test_overflowing_residual_run_prints_and_plots(tmp_path, capsys):
    """The same weights in residual blocks (--arch residual): the stream overflows to inf; the table
    shows inf and the log-scale figure is written."""
    out = tmp_path / "res"
    assert main(["propagate", "--arch", "residual", *OVERFLOW, "--theory", "--out", str(out)]) == 0
    last_block = [line for line in capsys.readouterr().out.splitlines() if line.startswith("   12 ")]
    assert last_block and last_block[0].split()[1] == "inf", last_block
    assert (out / "variance.png").stat().st_size > 0


def test_layer_table_keeps_inf(tiny):
    r = tiny
    inf = np.full_like(np.asarray(r.stats.preact_var), np.inf)
    mixed = np.asarray(r.stats.act_var).copy()
    mixed[0, :] = np.nan  # one seed without a finite entry: ignored
    rows = dataclasses.replace(r, stats=r.stats._replace(preact_var=inf, act_var=mixed)).layer_table()
    assert all(row["preact_var"] == np.inf for row in rows)
    np.testing.assert_allclose([row["act_var"] for row in rows], np.asarray(r.stats.act_var)[1], rtol=1e-6)


@pytest.mark.parametrize("fill", [np.inf, np.nan, 0.0])
def test_variance_curves_all_overflowed(fill, tiny, tmp_path):
    """A log-scale curve with no finite positive point (plain and block results, measured and
    predicted) renders with a note instead of raising when the figure is drawn."""
    from initjax import plotting

    plain = tiny
    block = propagate(Network.residual_mlp(2, 8, batch=4), seeds=2)
    fig = plotting.new_figure(8.0, 3.0)
    a, b = fig.subplots(1, 2)
    for ax, r, stat in ((a, plain, "preact_second_moment"), (b, block, "act_second_moment")):
        bad = np.full_like(np.asarray(getattr(r.stats, stat)), fill)
        r = dataclasses.replace(r, stats=r.stats._replace(**{stat: bad}))
        plotting.variance_curves(r, stat, ax=ax, theory=[np.full(2, np.inf)])
    paths = _io.save_figure(fig, tmp_path / "curves", formats=("png",))
    assert paths[0].stat().st_size > 0


# -- sizes bounded before any work ------------------------------------------------------------------
def test_seed_count_bounded_by_host_memory(monkeypatch):
    """The estimate counts 4 bytes per statistic per layer per seed, twice (pieces + their
    concatenation), plus 24 bytes of key and index: a budget of exactly 2 seeds admits 2, refuses 3
    with the largest count that fits."""
    from initjax.engine import LayerStats

    bins = 40
    per_seed = 2 * (4 * TINY.depth * (len(LayerStats._fields) + 2 * bins) + 24)
    monkeypatch.setenv("INITJAX_HOST_BUDGET", str(2 * per_seed))
    with pytest.raises(MemoryError, match=r"seeds=3 of depth 2 .*run at most 2 seeds"):
        propagate(TINY, seeds=3)
    assert propagate(TINY, seeds=2).seeds == 2


# -- interrupted writes ------------------------------------------------------------------------------
_KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from initjax import _io

    def stall(fd):  # the temporary file is written, not yet renamed: wait for the kill
        Path(sys.argv[2]).write_text("ready")
        time.sleep(600)

    _io.write_text(sys.argv[1], "never")  # the same folder, a finished file first
    os.fsync = stall
    _io.write_text(Path(sys.argv[1]).with_name("target.json"), "partial")
""")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.05)


def test_killed_write_leaves_temp_file_that_next_write_removes(tmp_path):
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path / "other.txt"), str(ready)],
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(ready, proc)
        live = list(tmp_path.glob(".target.json.*.tmp"))
        assert len(live) == 1
        _io.write_json(tmp_path / "target.json", {"a": 1})  # a live writer's file is kept
        assert live[0].exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert live[0].exists()  # SIGKILL skips the cleanup: the orphan is there
    old = tmp_path / ".target.json.abc123.tmp"  # an older initjax's name (no pid)
    old.write_text("x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    fresh = tmp_path / ".target.json.def456.tmp"
    fresh.write_text("x")
    _io.write_json(tmp_path / "target.json", {"a": 2})
    assert not live[0].exists() and not old.exists()
    assert fresh.exists()  # too recent to tell: kept
    assert json.loads((tmp_path / "target.json").read_text()) == {"a": 2}
    assert (tmp_path / "other.txt").read_text() == "never"


# -- one writer per folder -----------------------------------------------------------------------
_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from initjax import _io

    with _io.claim_dir(sys.argv[1]):
        Path(sys.argv[2]).write_text("ready")
        time.sleep(600)
""")


def test_second_writer_refused_and_stale_lock_taken_over(tmp_path, capsys):
    out, ready = tmp_path / "out", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out), str(ready)],
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(ready, proc)
        with pytest.raises(_io.DirectoryLocked, match=rf"in use by process {proc.pid}"):
            with _io.claim_dir(out):
                pass
        from initjax import sweep

        with pytest.raises(ValueError, match=rf"sweep folder '.*out' is in use by process {proc.pid}"):
            sweep([TINY], out=out, quiet=True)
        capsys.readouterr()
        assert main(["propagate", "--depth", "1", "--width", "4", "--batch", "2", "--seeds", "1", "--quiet",
                     "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by process {proc.pid}" in err[0], err
        assert not (out / "stats.npz").exists()  # refused before writing anything
        from initjax import reproductions

        with pytest.raises(_io.DirectoryLocked, match=rf"seed-demo output folder .* process {proc.pid}"):
            reproductions.run("seed-demo", out, quick=True, progress=False)
        assert not (out / "report.json").exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert (out / _io.LOCK_NAME).exists()  # the killed holder left its lock: stale
    with _io.claim_dir(out):  # taken over
        assert json.loads((out / _io.LOCK_NAME).read_text())["pid"] == os.getpid()
        with _io.claim_dir(out):  # nested in this process: shared
            pass
        assert (out / _io.LOCK_NAME).exists()
    assert not (out / _io.LOCK_NAME).exists()


# -- a training resumes only its own run ----------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from initjax import data, training
    from initjax.training import TrainConfig

    cfg = TrainConfig(label="tiny", widths=(8,), activation="relu", kernel_init="he_normal", optimizer="sgd",
                      learning_rate=0.1, batch_size=16, steps=2, record_every=1, probe_size=16,
                      train_eval_size=32)
    ds = data.teacher_student(0, 64, 32, 4, 2, hidden=())
    out = tmp_path_factory.mktemp("train")
    training.compare(cfg, ds, seeds=2, key=0, out=out, progress=False)
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return cfg, ds, out, run_dir


def test_training_resume_refuses_another_runs_checkpoint(trained):
    from initjax import training

    cfg, ds, out, run_dir = trained
    ident = run_dir / "config.json"
    text = ident.read_text()
    try:
        stored = json.loads(text)
        stored["seeds"] = 5  # a folder copied from another run
        ident.write_text(json.dumps(stored))
        with pytest.raises(ValueError, match=r"config\.json records another run \(seeds differ\)"):
            training.compare(cfg, ds, seeds=2, key=0, out=out, progress=False)
    finally:
        ident.write_text(text)


def test_training_checkpoint_damage_names_the_file(trained):
    from initjax import training

    cfg, ds, out, run_dir = trained
    ckpt = run_dir / "checkpoint.npz"
    data = ckpt.read_bytes()
    try:
        ckpt.write_bytes(data[: len(data) // 3])
        with pytest.raises(ValueError, match=r"checkpoint\.npz: unreadable or incomplete training checkpoint"):
            training.compare(cfg, ds, seeds=2, key=0, out=out, progress=False)
        (run_dir / "config.json").write_text("{trunc")
        with pytest.raises(ValueError, match=r"config\.json: unreadable or incomplete"):
            training.compare(cfg, ds, seeds=2, key=0, out=out, progress=False)
    finally:
        ckpt.write_bytes(data)


def test_sweep_refused_by_propagate_leaves_folder_usable(tmp_path):
    """A sweep whose propagate arguments are refused wrote its index first; the corrected call
    runs there (nothing was finished, so nothing can be mistaken for its numbers), while a
    finished entry still pins the folder's identity."""
    from initjax import sweep

    out = tmp_path / "s"
    with pytest.raises(ValueError, match="cotangent must be one of"):
        sweep([TINY], out=out, quiet=True, cotangent="x")
    assert sweep([TINY], seeds=2, out=out, quiet=True)[0].seeds == 2
    with pytest.raises(ValueError, match=r"seeds: stored 2, asked 1"):
        sweep([TINY], seeds=1, out=out, quiet=True)
