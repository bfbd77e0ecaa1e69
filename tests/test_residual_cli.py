"""``initjax propagate --arch residual`` and ``initjax theory --arch residual`` (issue 14's CLI
contract), and sweeps over residual networks."""

import json
import math

import numpy as np
import pytest

from initjax.cli import main
from initjax.engine import BlockPropagation, Propagation
from initjax.network import Network
from initjax.sweeps import Sweep, sweep

CONTRACT = ["--arch", "residual", "--depth", "6", "--width", "64", "--batch", "8", "--seeds", "3",
            "--init", "he_normal", "--activation", "relu", "--branch-scale", "0.5", "--branch-layers", "1"]


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_propagate_residual_json_has_the_contract_keys_per_block(capsys):
    out = _json(capsys, ["propagate", *CONTRACT, "--json", "--quiet"])
    layers = out["layers"]
    assert len(layers) == 6
    for row in layers:
        for k in ("act_var", "branch_var", "cosine", "grad_var"):
            assert math.isfinite(row[k]), (k, row)
    # x <- x + A W relu(x), He: each block adds A^2 * 2 * E[relu^2] = A^2 Var x: Var grows by 1.25
    ratios = [b["act_var"] / a["act_var"] for a, b in zip(layers, layers[1:], strict=False)]
    assert all(abs(r - 1.25) < 0.1 for r in ratios), ratios
    assert all(abs(row["branch_var"] / row["act_var"] - 0.2) < 0.05 for row in layers)


@pytest.mark.parametrize("extra", [["--norm", "batch"], ["--norm", "rms", "--norm-position", "post"],
                                   ["--branch-layers", "2", "--norm", "layer"]])
def test_propagate_residual_norms_and_positions_run(capsys, extra):
    argv = ["propagate", *CONTRACT, *extra, "--json", "--quiet"]
    out = _json(capsys, argv)
    net = Network.from_dict(out["network"])
    block = net.stages[0].block
    assert block.norm == extra[extra.index("--norm") + 1]
    if "post" in extra:
        assert block.norm_position == "post"
        # a post RMS norm leaves every example at mean square 1
        assert all(abs(row["act_second_moment"] - 1.0) < 1e-3 for row in out["layers"])
    if "2" in extra:
        assert len(block.branch) == 2 and block.branch[1].norm == "layer"


def test_propagate_residual_writes_data_and_figures(tmp_path, capsys):
    assert main(["propagate", *CONTRACT, "--quiet", "--out", str(tmp_path / "r")]) == 0
    assert "block" in capsys.readouterr().out
    assert isinstance(BlockPropagation.load(tmp_path / "r"), BlockPropagation)
    assert (tmp_path / "r" / "variance.png").exists() and (tmp_path / "r" / "layers.json").exists()


@pytest.mark.parametrize("argv, message", [
    (["propagate", *CONTRACT[:-4], "--branch-scale", "-1"], "--branch-scale must be a finite number >= 0"),
    (["propagate", *CONTRACT[:-4], "--branch-scale", "nan"], "--branch-scale"),
    (["propagate", *CONTRACT[:-2], "--branch-layers", "3"], "branch_layers must be one of 1, 2"),
    (["propagate", "--branch-layers", "2"], "--branch-layers applies to --arch residual only"),
    (["propagate", *CONTRACT, "--method", "fast"], "--method does not apply to --arch residual"),
    (["propagate", "--arch", "residual", "--width", "8,16"], "one --width"),
    (["theory", "--arch", "residual", "--sigma-w2", "2"], "--sigma-w2 does not apply"),
    (["theory", "--activation", "tanh"], "--arch mlp needs --sigma-w2"),
    (["theory", "--sigma-w2", "1", "--norm", "batch"], "--norm applies to --arch residual only"),
])
def test_bad_flags_are_one_line_errors(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_residual_sweep_resumes_and_loads_per_kind(tmp_path):
    """Residual, plain and token networks in one sweep: each entry reloads as its own kind."""
    from initjax import NetworkConfig
    from initjax.engine.attention import AttentionPropagation

    nets = [Network.residual_mlp(3, 32, batch=4), Network.residual_mlp(3, 32, norm="batch", batch=4, label="bn"),
            NetworkConfig(depth=3, width=32, batch=4), Network.transformer(2, 16, 2, 4, batch=2)]
    first = sweep(nets, seeds=2, out=tmp_path)
    again = sweep(nets, seeds=2, out=tmp_path)  # every entry is loaded back, none is rerun
    loaded = Sweep.load(tmp_path)
    assert [type(r) for r in loaded] == [BlockPropagation, BlockPropagation, Propagation,
                                         AttentionPropagation]
    for a, b, c in zip(first, again, loaded, strict=True):
        np.testing.assert_array_equal(a.stats.act_var, b.stats.act_var)
        np.testing.assert_array_equal(a.stats.act_var, c.stats.act_var)
    assert loaded["bn"].network.stages[0].block.norm == "batch"
    with pytest.raises(ValueError, match="other settings"):
        sweep(nets, seeds=2, key=1, out=tmp_path)
