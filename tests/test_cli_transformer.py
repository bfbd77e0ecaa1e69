"""``initjax propagate --arch transformer``: the CLI contract of issue 15, in-process."""

import json
import math

import pytest

from initjax.cli import main

BASE = ["propagate", "--arch", "transformer", "--depth", "3", "--width", "16", "--heads", "2",
        "--tokens", "4", "--batch", "2", "--seeds", "2", "--quiet"]
KEYS = {"cosine", "rel_residual", "attn_entropy", "act_var", "grad_var", "grad_norm_q", "grad_norm_k",
        "grad_norm_v", "grad_norm_o"}


def _run_json(capsys, *extra):
    assert main([*BASE, *extra, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_json_keys_defaults_and_post_ln_closed_form(capsys):
    """Post-LN: every token of the stream is layer-normalized, so Var[x] = 1 / (1 + eps / s^2)
    up to float32 rounding (s^2 the token's variance, O(1) here); entropies lie in (0, log T]."""
    out = _run_json(capsys, "--norm-position", "post", "--branch-scale", "inv-sqrt-depth")
    block = out["network"]["stages"][0]["block"]
    assert (block["kind"], block["norm"], block["norm_position"], block["residual"],
            block["mlp_width"], block["alpha"], block["heads"]) == ("attention", "layer", "post", True,
                                                                    None, "1/sqrt(depth)", 2)
    assert block["init"].startswith("lecun_normal")  # Q, K, V, O weights of variance 1/D
    assert out["network"]["tokens"] == 4 and out["network"]["input_variance"] == 1.0
    assert len(out["layers"]) == 3
    for row in out["layers"]:
        assert KEYS <= set(row)
        assert abs(row["act_var"] - 1.0) < 1e-3
        assert 0.0 < row["attn_entropy"] <= math.log(4) + 1e-6
        assert row["grad_norm_q"] > 0 and row["grad_norm_v"] > 0


def test_no_residual_is_pure_attention_and_flags(capsys):
    out = _run_json(capsys, "--no-residual", "--mlp")
    block = out["network"]["stages"][0]["block"]
    assert (block["residual"], block["norm"], block["mlp_width"], block["alpha"]) == (False, "none", 64, 1.0)
    assert {"grad_norm_mlp_in", "grad_norm_mlp_out"} <= set(out["layers"][0])


@pytest.mark.parametrize("extra, message", [
    (["--heads", "3"], "heads=3 must divide the stream width 16"),
    (["--tokens", "1"], "tokens must be >= 2, got 1"),
    (["--no-residual", "--branch-scale", "0.5"], "--branch-scale does not apply with --no-residual"),
    (["--activation", "relu"], "--activation does not apply to --arch transformer"),
    (["--norm", "batch"], "norm must be one of 'layer', 'rms', 'none'; got 'batch'"),
])
def test_bad_transformer_flags(capsys, extra, message):
    assert main([*BASE, *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["propagate", "--arch", "residual", "--causal"], "--causal masks attention and applies to --arch "
                                                      "transformer only"),
    (["propagate", "--heads", "4"], "--heads applies to --arch transformer only"),
    (["propagate", "--arch", "residual", "--tokens", "8"], "--tokens applies to --arch transformer only"),
    (["propagate", "--arch", "transformer", "--width", "16", "--heads", "2"], "needs --heads H and --tokens T"),
])
def test_transformer_flags_refused_elsewhere(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_theory_beside_uniform_attention_and_refused_otherwise(capsys):
    """``--qk-init zeros --theory``: with W_Q = W_K = 0 attention is uniform, so the predicted
    entropy is log T exactly and the measured one equals it; a pre-LN block without MLP adds
    ``A^2 s_v^2 s_o^2 |xbar_norm|^2`` per coordinate: at block 1 from i.i.d. N(0, 1) tokens the
    normalized mean token has second moment 1/T, so q_1 = 1 + 1/T (1.25 at T = 4, eps aside),
    which the theory must state. Without --qk-init zeros --theory is refused by name."""
    out = _run_json(capsys, "--qk-init", "zeros", "--theory")
    first = out["layers"][0]
    assert abs(first["attn_entropy"] - math.log(4)) < 1e-5
    assert abs(first["attn_entropy_pred"] - math.log(4)) < 1e-9
    assert abs(first["act_second_moment_pred"] - 1.25) < 1e-4
    assert first["grad_norm_q"] == 0.0 or first["grad_norm_q"] < 1e-6
    assert main([*BASE, "--theory"]) == 2
    assert "qk_init='zeros'" in capsys.readouterr().err
    assert main(["propagate", "--qk-init", "zeros"]) == 2
    assert "--qk-init applies to --arch transformer only" in capsys.readouterr().err
