"""Sweeps (atomic, resumable), saving and loading, the CLI, the plots and the seed-demo smoke test."""

import json
import re

import numpy as np
import pytest

import initjax
from initjax import NetworkConfig, Propagation, grid, plotting, propagate, reproductions, sweep
from initjax.cli import main
from initjax.engine import LayerStats

BASE = NetworkConfig(depth=3, width=16, batch=4, activation="tanh")


def _equal(a: Propagation, b: Propagation, exact: bool = True):
    """Equal statistics: bitwise, or (``exact=False``: configs that shared a traced body with
    others, whose reductions XLA may order differently) floats within float32 rounding of the
    layer's scale and histogram counts within one value moved across a bin edge."""
    assert a.config == b.config
    for f in LayerStats._fields:
        x, y = np.asarray(getattr(a.stats, f)), np.asarray(getattr(b.stats, f))
        if exact:
            np.testing.assert_array_equal(x, y, err_msg=f)
        elif np.issubdtype(x.dtype, np.integer):
            assert np.abs(x - y).sum() <= 2, f
        else:
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6 * np.nanmax(np.abs(y)), err_msg=f)


def test_grid_is_the_cartesian_product_with_labels():
    configs = grid(BASE, activation=["tanh", "relu"], init=["xavier_normal", "he_normal", "zeros"])
    assert len(configs) == 6
    assert configs[4].name == "activation=relu, init=he_normal"  # the values as given
    assert {c.activation.name for c in configs} == {"tanh", "relu"}
    with pytest.raises(ValueError, match="unknown config field 'colour'"):
        grid(BASE, colour=[1])
    with pytest.raises(ValueError, match="non-empty list"):
        grid(BASE, depth=[])


def test_save_load_round_trip(tmp_path):
    r = propagate(BASE, seeds=2)
    r.save(tmp_path / "r")
    _equal(r, Propagation.load(tmp_path / "r"))
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporaries
    with pytest.raises(FileNotFoundError, match="not a saved Propagation"):
        Propagation.load(tmp_path / "nothing")


def test_sweep_writes_as_it_goes_and_resumes(tmp_path, monkeypatch):
    configs = [BASE.replace(label="a"), BASE.replace(init="he_normal", label="b"), BASE.replace(activation="relu", label="c")]
    import initjax.sweeps as sweep_module

    calls = []
    real = sweep_module.propagate

    def interrupted(config, *args, **kwargs):
        calls.append(config.label)
        if config.label == "b":
            raise KeyboardInterrupt  # the run is interrupted in the middle of the second config
        return real(config, *args, **kwargs)

    monkeypatch.setattr(sweep_module, "propagate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sweep(configs, seeds=2, out=tmp_path, share_draws=False)
    index = json.loads((tmp_path / "sweep.json").read_text())
    assert [e["status"] for e in index["entries"]] == ["done", "incomplete", "incomplete"]
    assert index["status"] == "incomplete"

    calls.clear()
    monkeypatch.setattr(sweep_module, "propagate", lambda config, *a, **k: (calls.append(config.label), real(config, *a, **k))[1])
    result = sweep(configs, seeds=2, out=tmp_path, share_draws=False)
    assert calls == ["b", "c"]  # "a" was finished and is not recomputed
    assert json.loads((tmp_path / "sweep.json").read_text())["status"] == "done"
    loaded = initjax.Sweep.load(tmp_path)
    for x, y in zip(result, loaded):
        _equal(x, y)
    _equal(result["a"], propagate(configs[0], seeds=2))
    with pytest.raises(KeyError, match="no config labelled 'z'"):
        result["z"]


def test_cli_json_schema(capsys):
    code = main(["propagate", "--init", "normal:stddev=0.5", "--activation", "tanh", "--depth", "3",
                 "--width", "16", "--batch", "4", "--seeds", "2", "--json", "--quiet"])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["seeds"] == 2 and data["config"]["depth"] == 3
    keys = {"layer", "preact_mean", "preact_var", "act_mean", "act_var", "grad_var", "weight_grad_var",
            "saturated", "zero_fraction", "dead_fraction", "nonfinite", "cosine"}
    assert len(data["layers"]) == 3
    for i, layer in enumerate(data["layers"]):
        assert keys <= set(layer) and layer["layer"] == i + 1
    # the values are the seed means of propagate's statistics
    r = propagate(NetworkConfig(depth=3, width=16, batch=4, init="normal:stddev=0.5", activation="tanh"), seeds=2)
    assert data["layers"][2]["act_var"] == pytest.approx(float(np.mean(r.stats.act_var[:, 2])), rel=1e-6)


def test_cli_table_out_and_warning(tmp_path, capsys):
    code = main(["propagate", "--init", "normal:stddev=1.0", "--activation", "relu", "--depth", "40",
                 "--width", "32", "--batch", "4", "--seeds", "1", "--quiet", "--out", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0
    assert "initjax: warning:" in captured.err and "overflow" in captured.err
    assert "layer" in captured.out.splitlines()[1]
    for name in ("stats.npz", "config.json", "layers.json", "histograms.png", "variance.pdf"):
        assert (tmp_path / name).exists(), name


@pytest.mark.parametrize(
    "argv,match",
    [
        (["propagate", "--depth", "0"], "depth must be >= 1, got 0"),
        (["propagate", "--init", "nope"], "unknown initializer 'nope'"),
        (["propagate", "--seeds", "0"], "seeds must be >= 1"),
        (["propagate", "--devices", "two"], "--devices must be a positive integer or 'all', got 'two'"),
        (["propagate", "--devices", "64", "--prng-impl", "threefry2x32"], "devices=64 but only"),
        (["propagate", "--prng-impl", "rbg"], "prng_impl"),
        (["reproduce", "nope"], "unknown reproduction 'nope'; known: seed-demo"),
        (["reproduce", "seed-demo", "--data-dir", "/nowhere"],
         "reproduction 'seed-demo' takes no data_dir (got '/nowhere'); those that do: ioffe2015-mnist"),
        (["reproduce", "ioffe2015-mnist", "--quick", "--data-dir", "/nowhere/mnist"], "/nowhere/mnist"),
    ],
)
def test_cli_errors_exit_2(argv, match, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a default --out (results/NAME) must not touch the checkout
    assert main(argv) == 2
    assert match in capsys.readouterr().err
    # input errors are raised before anything is written
    assert not (tmp_path / "results").exists()


def test_cli_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "he_normal" in out and "leaky_relu" in out and "seed-demo" in out
    assert main(["reproduce", "--list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == len(reproductions.names()) >= 13
    # one aligned column of names, then the summary
    starts = {line.index(line.split()[1]) for line in listed}
    assert len(starts) == 1, starts


def test_plots_flag_non_finite_values():
    config = NetworkConfig(depth=60, width=64, batch=4, init="normal:stddev=1.0", activation="relu")
    with pytest.warns(initjax.NonFiniteWarning):
        bad = propagate(config, seeds=2)
    ok = propagate(BASE, seeds=2)
    ax = plotting.variance_curves([ok, bad], "act_var")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "non-finite" not in labels[0] and "non-finite" in labels[1]
    v = np.asarray(bad.stats.act_var)
    expected = np.flatnonzero(~(np.isfinite(v) & (v > 0)).all(axis=0)) + 1
    assert expected.size > 0
    red_x = [ln for ln in ax.lines if ln.get_marker() == "x"]
    assert len(red_x) == 1
    np.testing.assert_array_equal(red_x[0].get_xdata(), expected)
    axes = plotting.hist_strip(bad, "act")
    assert len(axes) == 60
    flagged = [i + 1 for i, a in enumerate(axes) if any("non-finite" in t.get_text() for t in a.texts)]
    np.testing.assert_array_equal(flagged, np.flatnonzero(np.asarray(bad.stats.nonfinite).sum(0)) + 1)
    assert flagged
    with pytest.raises(ValueError, match="stat must be a"):
        plotting.variance_curves(ok, "act_hist")
    with pytest.raises(ValueError, match="kind must be 'act' or 'grad'"):
        plotting.hist_strip(ok, "weights")


def test_seed_demo_quick(tmp_path):
    from initjax import reproductions

    report = reproductions.run("seed-demo", tmp_path, quick=True)
    assert report["status"] == "done"
    failed = [c for c in report["checks"] if not c["pass"]]
    assert not failed, failed
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["all_pass"] and len(saved["schemes"]) == 9
    for name in ("report.md", "variance-curves.png", "variance-curves.pdf", "hist-relu-he.png"):
        assert (tmp_path / name).exists(), name


def test_sweep_shares_draws_and_matches_solo_runs(monkeypatch):
    """The five-scheme demo as one sweep: Gaussian schemes run as one shared-draw group, the zero
    init alone; every result equals its solo propagate call (bit for bit, or to float32 rounding
    for the configs that share a traced body)."""
    import initjax.sweeps as sweep_module

    base = NetworkConfig(depth=3, width=16, batch=4)
    configs = [base.replace(init="normal:stddev=0.01", activation="tanh"), base.replace(init="zeros"),
               base.replace(init="xavier_normal", activation="relu"), base.replace(init="he_normal", activation="relu")]
    groups = []
    real_shared = sweep_module.propagate_shared
    monkeypatch.setattr(sweep_module, "propagate_shared",
                        lambda cs, *a, **k: (groups.append(len(cs)), real_shared(cs, *a, **k))[1])
    result = sweep(configs, seeds=2)
    assert groups == [3]
    for c, r in zip(configs, result):
        # the two ReLU schemes differ only in scale: one traced body, equal to rounding
        _equal(r, propagate(c, seeds=2), exact=c.activation.name != "relu")


def test_cli_persistent_compilation_cache(tmp_path):
    """The CLI stores its compiled programs in INITJAX_CACHE_DIR (an empty value turns it off)."""
    import os
    import subprocess
    import sys

    argv = [sys.executable, "-m", "initjax.cli", "propagate", "--depth", "2", "--width", "8",
            "--batch", "2", "--seeds", "1", "--json"]
    env = {**os.environ, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    on, off = tmp_path / "cache", tmp_path / "off"
    subprocess.run(argv, env={**env, "INITJAX_CACHE_DIR": str(on)}, check=True, capture_output=True)
    assert any(p.name.startswith("jit_run") for p in on.iterdir())
    subprocess.run(argv, env={**env, "INITJAX_CACHE_DIR": "", "HOME": str(off)}, check=True,
                   capture_output=True)
    assert not (off / ".cache" / "initjax").exists()


def test_takes_data_dir():
    assert reproductions.takes_data_dir("ioffe2015-mnist")
    assert not reproductions.takes_data_dir("seed-demo")
    with pytest.raises(ValueError, match="unknown reproduction 'nope'; known: seed-demo"):
        reproductions.takes_data_dir("nope")


def test_resume_refuses_a_folder_written_with_other_settings(tmp_path):
    """Resuming into a folder with another key, seed count or measurement option would return
    the first run's numbers as this call's (issue 17): refused, naming the difference. Passing
    a default explicitly is the same run."""
    configs = [BASE.replace(label="a")]
    first = sweep(configs, seeds=2, key=0, out=tmp_path)
    again = sweep(configs, seeds=2, key=0, out=tmp_path, bins=40, prng_impl="philox2x32")
    _equal(first["a"], again["a"])
    for kwargs, match in [(dict(key=1), "key: stored 0, asked 1"),
                          (dict(seeds=3), "seeds: stored 2, asked 3"),
                          (dict(bins=20), "bins: stored 40, asked 20"),
                          (dict(cotangent="mse"), "cotangent: stored 'normal', asked 'mse'")]:
        args = {"seeds": 2, "key": 0, **kwargs}
        with pytest.raises(ValueError, match=match):
            sweep(configs, out=tmp_path, **args)
    assert sweep(configs, seeds=2, key=1, out=tmp_path / "other")["a"].key == 1


def test_resume_checks_each_entry_against_the_index(tmp_path):
    configs = [BASE.replace(label="a")]
    sweep(configs, seeds=2, out=tmp_path)
    entry = tmp_path / "000" / "config.json"
    entry.write_text(json.dumps(BASE.replace(label="a", depth=BASE.depth + 1).to_dict()))
    with pytest.raises(ValueError, match="000/config.json holds .* written by two runs"):
        sweep(configs, seeds=2, out=tmp_path)
    index = json.loads((tmp_path / "sweep.json").read_text())
    del index["identity"]
    (tmp_path / "sweep.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="records no run identity"):
        sweep(configs, seeds=2, out=tmp_path)
    with pytest.raises(TypeError, match=r"unknown propagate arguments \['bogus'\]"):
        sweep(configs, seeds=2, bogus=1)


@pytest.mark.parametrize("command", [["propagate", "--depth", "2", "--width", "4"],
                                     ["reproduce", "selu-fixed-point", "--quick"]])
def test_cli_refuses_an_out_that_is_a_file_before_any_work(command, tmp_path, capsys, monkeypatch):
    """--out naming a file (or a path below one) is refused in one line before the computation
    (it used to surface as a traceback after the whole run)."""
    import initjax.engine as engine
    from initjax import reproductions as repro

    def never(*args, **kwargs):
        raise AssertionError("the computation started")

    monkeypatch.setattr(engine, "propagate", never)
    monkeypatch.setattr(repro, "run", never)
    afile = tmp_path / "a-file"
    afile.write_text("x")
    for out, match in [(afile, "is a file, not a directory"),
                       (afile / "below", "its ancestor .* is a file")]:
        assert main([*command, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert re.search(match, err) and err.count("\n") == 1, err


def test_resume_identity_takes_input_arrays_by_fingerprint(tmp_path):
    """A sweep over given inputs (a jax array) records them by digest: the index stays small, the
    same inputs resume, other inputs are another run."""
    import jax
    import jax.numpy as jnp

    configs = [BASE.replace(label="a")]
    x = jax.random.normal(jax.random.key(3), (BASE.batch, BASE.widths[0]))
    first = sweep(configs, seeds=2, out=tmp_path, inputs=x)
    _equal(first["a"], sweep(configs, seeds=2, out=tmp_path, inputs=np.asarray(x))["a"])
    stored = json.loads((tmp_path / "sweep.json").read_text())["identity"]["options"]["inputs"]
    assert stored["shape"] == list(x.shape) and len(stored["sha1"]) == 40
    with pytest.raises(ValueError, match="inputs: stored"):
        sweep(configs, seeds=2, out=tmp_path, inputs=jnp.asarray(x) + 1.0)
