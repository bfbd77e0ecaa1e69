"""The reliability audit (issue 17) as data: bad inputs and the one-line message each must get.

Each case is ``(id, kind, spec, expected, message regex)``:

* ``"cli"``: ``spec`` is the argv of ``initjax``; ``expected`` the exit code (2). The run must
  print exactly one stderr line ``initjax: error: ...`` matching the regex, and no traceback.
  ``{file}`` in an argument is replaced by the path of an existing file, ``{tmp}`` by a fresh
  temporary directory.
* ``"api"``: ``spec`` is a zero-argument callable; ``expected`` the exception class it must raise,
  whose message (one line) must match the regex.
* ``"file"``: ``spec(tmp)`` damages a saved file under the directory ``tmp`` and returns the
  callable that reads it; as ``"api"``, and the message must name the file.

Most cases fail before any compile, so the whole table runs in seconds (tests/test_audit.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

# small sizes shared by the CLI cases: each fails before any work
P = ["propagate", "--depth", "2", "--width", "8", "--batch", "4", "--seeds", "1", "--quiet"]
R = ["propagate", "--arch", "residual", "--depth", "2", "--width", "8", "--batch", "4", "--seeds", "1",
     "--quiet"]
T = ["theory", "--sigma-w2", "1.5"]
TR = ["theory", "--arch", "residual", "--depth", "2", "--width", "8"]
HUGE = "1000000000000"  # 1e12: a seed count or depth no machine holds

CLI = [
    # propagate, plain MLP
    ("p-depth-0", P + ["--depth", "0"], r"depth must be >= 1, got 0"),
    ("p-depth-neg", P + ["--depth", "-3"], r"depth must be >= 1, got -3"),
    ("p-depth-text", P + ["--depth", "abc"], r"--depth: invalid int value: 'abc'"),
    ("p-depth-huge", P + ["--depth", "1000000000"], r"seeds=1 of depth 1000000000 .* GiB .*host"),
    ("p-width-0", P + ["--width", "0"], r"width must be >= 1, got 0"),
    ("p-width-text", P + ["--width", "abc"], r"width must be an int or a comma list of ints, got 'abc'"),
    ("p-width-empty", P + ["--width", ""], r"width must be an int or a comma list of ints, got ''"),
    ("p-width-list-0", P + ["--width", "8,0"], r"width\[1\] must be >= 1, got 0"),
    ("p-width-list-len", P + ["--width", "8,8,8"], r"width has 3 entries .* but depth is 2"),
    ("p-width-huge", P + ["--width", "1000000000"], r"one seed of this config needs about .* GiB"),
    ("p-in-width-0", P + ["--in-width", "0"], r"in_width must be >= 1, got 0"),
    ("p-in-width-neg", P + ["--in-width", "-4"], r"in_width must be >= 1, got -4"),
    ("p-batch-0", P + ["--batch", "0"], r"batch must be >= 1, got 0"),
    ("p-seeds-0", P + ["--seeds", "0"], r"seeds must be >= 1, got 0"),
    ("p-seeds-neg", P + ["--seeds", "-1"], r"seeds must be >= 1, got -1"),
    ("p-seeds-float", P + ["--seeds", "1.5"], r"--seeds: invalid int value: '1.5'"),
    ("p-seeds-huge", P + ["--seeds", HUGE], r"seeds=1000000000000 .* GiB .*host"),
    ("p-key-neg", P + ["--key", "-1"], r"key as an int seed must be in \[0, 2\*\*63\), got -1"),
    ("p-key-huge", P + ["--key", "99999999999999999999999"], r"key as an int seed must be in \[0, 2\*\*63\)"),
    ("p-key-2-63", P + ["--key", str(2**63)], r"key as an int seed must be in \[0, 2\*\*63\)"),
    ("p-init-unknown", P + ["--init", "nope"], r"unknown initializer 'nope'; known initializers: .*he_normal"),
    ("p-init-arg-text", P + ["--init", "normal:stddev=abc"], r"stddev must be a real number, got 'abc'"),
    ("p-init-arg-neg", P + ["--init", "normal:stddev=-1"], r"stddev must be >= 0.0, got -1.0"),
    ("p-init-arg-unknown", P + ["--init", "normal:foo=1"], r"initializer 'normal': bad arguments \{'foo': 1\}"),
    ("p-act-unknown", P + ["--activation", "nope"], r"unknown activation 'nope'; known activations: .*relu"),
    ("p-act-arg-text", P + ["--activation", "leaky_relu:negative_slope=x"],
     r"negative_slope must be a real number, got 'x'"),
    ("p-bias-unknown", P + ["--bias-init", "nope"], r"unknown initializer 'nope'"),
    ("p-norm-unknown", P + ["--norm", "nope"], r"--norm: invalid choice: 'nope' \(choose from"),
    ("p-norm-rms-mlp", P + ["--norm", "rms"], r"norm must be one of 'none', 'batch', 'layer'; got 'rms'"),
    ("p-placement", P + ["--placement", "middle"], r"--placement: invalid choice: 'middle'"),
    ("p-input-var-neg", P + ["--input-variance", "-1"], r"input_variance must be > 0.0, got -1.0"),
    ("p-input-var-nan", P + ["--input-variance", "nan"], r"input_variance must be finite, got nan"),
    ("p-input-corr-2", P + ["--input-correlation", "2"], r"input_correlation must be <= 1.0, got 2.0"),
    ("p-input-corr-nan", P + ["--input-correlation", "nan"], r"input_correlation must be finite, got nan"),
    ("p-cotangent", P + ["--cotangent", "foo"], r"--cotangent: invalid choice: 'foo'"),
    ("p-bins-0", P + ["--bins", "0"], r"bins must be >= 1, got 0"),
    ("p-bins-neg", P + ["--bins", "-1"], r"bins must be >= 1, got -1"),
    ("p-method", P + ["--method", "slow"], r"--method: invalid choice: 'slow'"),
    ("p-budget-0", P + ["--memory-budget", "0"], r"memory_budget must be > 0.0, got 0.0"),
    ("p-budget-neg", P + ["--memory-budget", "-5"], r"memory_budget must be > 0.0, got -5.0"),
    ("p-budget-nan", P + ["--memory-budget", "nan"], r"memory_budget must be finite, got nan"),
    ("p-budget-inf", P + ["--memory-budget", "inf"], r"memory_budget must be finite, got inf"),
    ("p-budget-tiny", P + ["--memory-budget", "1"], r"one seed of this config needs about .* memory budget"),
    ("p-devices-0", P + ["--devices", "0"], r"devices must be >= 1, got 0"),
    ("p-devices-text", P + ["--devices", "two"], r"--devices must be a positive integer or 'all', got 'two'"),
    ("p-devices-many", P + ["--devices", "1000"], r"devices=1000 but only \d+ are visible"),
    ("p-prng-rbg", P + ["--prng-impl", "rbg"], r"prng_impl must be one of .*; got 'rbg'"),
    ("p-prng-unknown", P + ["--prng-impl", "nope"], r"prng_impl must be one of .*; got 'nope'"),
    ("p-out-file", P + ["--out", "{file}"], r"--out '.*' is a file, not a directory"),
    ("p-out-below-file", P + ["--out", "{file}/sub"], r"its ancestor '.*' is a file"),
    ("p-branch-scale", P + ["--branch-scale", "0.5"], r"--branch-scale applies to --arch residual only"),
    ("p-branch-layers", P + ["--branch-layers", "2"], r"--branch-layers applies to --arch residual only"),
    ("p-norm-position", P + ["--norm-position", "post"], r"--norm-position applies to --arch residual only"),
    ("p-unknown-flag", P + ["--foo"], r"unrecognized arguments: --foo"),
    ("p-arch-unknown", P + ["--arch", "cnn"], r"--arch: invalid choice: 'cnn'"),
    # propagate --arch residual
    ("r-scale-neg", R + ["--branch-scale", "-1"], r"--branch-scale must be a finite number >= 0 .*got '-1'"),
    ("r-scale-nan", R + ["--branch-scale", "nan"], r"--branch-scale must be a finite number >= 0 .*got 'nan'"),
    ("r-scale-inf", R + ["--branch-scale", "inf"], r"--branch-scale must be a finite number >= 0 .*got 'inf'"),
    ("r-scale-text", R + ["--branch-scale", "abc"], r"--branch-scale must be a finite number >= 0 .*got 'abc'"),
    ("r-layers-3", R + ["--branch-layers", "3"], r"branch_layers must be one of 1, 2; got 3"),
    ("r-layers-0", R + ["--branch-layers", "0"], r"branch_layers must be one of 1, 2; got 0"),
    ("r-norm-position", R + ["--norm-position", "middle"], r"--norm-position: invalid choice: 'middle'"),
    ("r-width-list", R + ["--width", "8,8"], r"--arch residual takes one --width .*got \(8, 8\)"),
    ("r-in-width", R + ["--in-width", "8"], r"--in-width does not apply to --arch residual"),
    ("r-bias-init", R + ["--bias-init", "ones"], r"--bias-init does not apply to --arch residual"),
    ("r-input-var", R + ["--input-variance", "2"], r"--input-variance does not apply to --arch residual"),
    ("r-bins", R + ["--bins", "10"], r"--bins does not apply to --arch residual"),
    ("r-method", R + ["--method", "fast"], r"--method does not apply to --arch residual"),
    ("r-devices", R + ["--devices", "1"], r"--devices does not apply to --arch residual"),
    ("r-placement", R + ["--placement", "after"], r"--placement does not apply to --arch residual"),
    ("r-depth-0", R + ["--depth", "0"], r"depth must be >= 1, got 0"),
    ("r-depth-huge", R + ["--depth", "1000000000"], r"seeds=1 of depth 1000000000 .* GiB .*host"),
    ("r-width-0", R + ["--width", "0"], r"width must be >= 1, got 0"),
    ("r-width-huge", R + ["--width", "100000000"], r"one seed of this network needs about .* GiB"),
    ("r-batchnorm-1", R + ["--batch", "1", "--norm", "batch"], r"batch norm needs batch >= 2"),
    ("r-init", R + ["--init", "nope"], r"unknown initializer 'nope'"),
    ("r-act", R + ["--activation", "nope"], r"unknown activation 'nope'"),
    ("r-seeds-0", R + ["--seeds", "0"], r"seeds must be >= 1, got 0"),
    ("r-seeds-huge", R + ["--seeds", HUGE], r"seeds=1000000000000 .* GiB .*host"),
    ("r-key-neg", R + ["--key", "-1"], r"key as an int seed must be in \[0, 2\*\*63\), got -1"),
    ("r-key-2-63", R + ["--key", str(2**63)], r"key as an int seed must be in \[0, 2\*\*63\)"),
    ("r-budget-tiny", R + ["--memory-budget", "1"], r"one seed of this network needs about .* memory budget"),
    ("r-out-file", R + ["--out", "{file}"], r"--out '.*' is a file, not a directory"),
    ("r-prng", R + ["--prng-impl", "rbg"], r"prng_impl must be one of .*; got 'rbg'"),
    ("r-cotangent", R + ["--cotangent", "nope"], r"--cotangent: invalid choice: 'nope'"),
    # theory, plain MLP
    ("t-no-sigma", ["theory"], r"--arch mlp needs --sigma-w2"),
    ("t-sigma-neg", T + ["--sigma-w2", "-1"], r"--sigma-w2 must be >= 0.0, got -1.0"),
    ("t-sigma-nan", T + ["--sigma-w2", "nan"], r"--sigma-w2 must be finite, got nan"),
    ("t-sigma-inf", T + ["--sigma-w2", "inf"], r"--sigma-w2 must be finite, got inf"),
    ("t-sigma-text", ["theory", "--sigma-w2", "abc"], r"--sigma-w2: invalid float value: 'abc'"),
    ("t-sigmab-neg", T + ["--sigma-b2", "-1"], r"--sigma-b2 must be >= 0.0, got -1.0"),
    ("t-sigmab-inf", T + ["--sigma-b2", "inf"], r"--sigma-b2 must be finite, got inf"),
    ("t-depth-0", T + ["--depth", "0"], r"--depth must be >= 1, got 0"),
    ("t-depth-huge", T + ["--depth", "1000000000"], r"depth must be <= 1000000"),
    ("t-q0-0", T + ["--q0", "0"], r"--q0 must be > 0.0, got 0.0"),
    ("t-q0-neg", T + ["--q0", "-1"], r"--q0 must be > 0.0, got -1.0"),
    ("t-q0-nan", T + ["--q0", "nan"], r"--q0 must be finite, got nan"),
    ("t-act", T + ["--activation", "nope"], r"unknown activation 'nope'"),
    ("t-init-mlp", T + ["--init", "lecun_normal"], r"--init applies to --arch residual only"),
    ("t-width-mlp", T + ["--width", "8"], r"--width applies to --arch residual only"),
    ("t-norm-mlp", T + ["--norm", "layer"], r"--norm applies to --arch residual only"),
    ("t-batch-mlp", T + ["--batch", "3"], r"--batch applies to --arch residual only"),
    ("t-scale-mlp", T + ["--branch-scale", "2"], r"--branch-scale applies to --arch residual only"),
    # theory --arch residual
    ("tr-sigma", TR + ["--sigma-w2", "1"], r"--sigma-w2 does not apply to --arch residual"),
    ("tr-depth-0", TR + ["--depth", "0"], r"depth must be >= 1, got 0"),
    ("tr-depth-huge", TR + ["--depth", "1000000000"], r"--depth must be <= 1000000 .*got 1000000000"),
    ("tr-scale-neg", TR + ["--branch-scale", "-1"], r"--branch-scale must be a finite number >= 0"),
    ("tr-scale-nan", TR + ["--branch-scale", "nan"], r"--branch-scale must be a finite number >= 0"),
    ("tr-layers-3", TR + ["--branch-layers", "3"], r"branch_layers must be one of 1, 2; got 3"),
    ("tr-width-0", TR + ["--width", "0"], r"width must be >= 1, got 0"),
    ("tr-width-list", TR + ["--width", "8,8"], r"--width: invalid int value: '8,8'"),
    ("tr-batch-0", TR + ["--batch", "0"], r"batch must be >= 1, got 0"),
    ("tr-init", TR + ["--init", "nope"], r"unknown initializer 'nope'"),
    ("tr-act", TR + ["--activation", "nope"], r"unknown activation 'nope'"),
    ("tr-batchnorm-1", TR + ["--batch", "1", "--norm", "batch"], r"batch norm needs batch >= 2"),
    ("tr-norm", TR + ["--norm", "nope"], r"--norm: invalid choice: 'nope'"),
    # reproduce, list, the command itself
    ("rep-no-name", ["reproduce"], r"reproduce needs a NAME or --list; known: .*seed-demo"),
    ("rep-unknown", ["reproduce", "nope"], r"unknown reproduction 'nope'; known: .*seed-demo"),
    ("rep-out-file", ["reproduce", "seed-demo", "--out", "{file}"], r"--out '.*' is a file, not a directory"),
    ("rep-seeds-0", ["reproduce", "seed-demo", "--seeds", "0", "--out", "{tmp}"], r"seed-demo needs seeds >= 1, got 0"),
    ("rep-seeds-neg", ["reproduce", "seed-demo", "--seeds", "-2", "--out", "{tmp}"],
     r"seed-demo needs seeds >= 1, got -2"),
    ("rep-seeds-text", ["reproduce", "seed-demo", "--seeds", "abc"], r"--seeds: invalid int value: 'abc'"),
    ("rep-data-missing", ["reproduce", "ioffe2015-mnist", "--data-dir", "{tmp}/missing", "--out", "{tmp}/o"],
     r"directory '.*missing' does not exist"),
    ("rep-data-file", ["reproduce", "ioffe2015-mnist", "--data-dir", "{file}", "--out", "{tmp}/o"],
     r"is a file, not a directory"),
    ("no-command", [], r"the following arguments are required: command"),
    ("unknown-command", ["nope"], r"invalid choice: 'nope'"),
    ("list-flag", ["list", "--foo"], r"unrecognized arguments: --foo"),
]


# -- Python API ----------------------------------------------------------------------------------
def _cfg(**kw):
    from initjax.config import NetworkConfig

    return NetworkConfig(**{"depth": 2, "width": 8, "batch": 4, **kw})


def _res(**kw):
    from initjax.network import Network

    return Network.residual_mlp(2, 8, batch=4, **kw)


def _propagate(config=None, **kw):
    from initjax import propagate

    return propagate(_cfg() if config is None else config, **kw)


def _rpropagate(**kw):
    from initjax import propagate

    return propagate(_res(), **kw)


def _dense(*a, **kw):
    from initjax.network import Dense

    return Dense(*a, **kw)


def _residual(branch=None, **kw):
    from initjax.network import Dense, Residual

    return Residual((Dense(8, "he_normal", "relu"),) if branch is None else branch, **kw)


def _network(*a, **kw):
    from initjax.network import Network

    return Network(*a, **kw)


def _repeat(*a, **kw):
    from initjax.network import Repeat

    return Repeat(*a, **kw)


def _fixup(net, **kw):
    from initjax.network import fixup

    return fixup(net, **kw)


def _plain_net():
    from initjax.network import Network

    return Network.mlp(2, 8, batch=4)


def _probe(x_shape=(4, 8), **kw):
    import numpy as np
    from flax import nnx

    from initjax import modules
    from initjax.probing import probe_blocks

    model = modules.build(_res(), rngs=nnx.Rngs(0))
    return probe_blocks(model, np.zeros(x_shape, np.float32), **kw)


def _probe_not_model():
    import numpy as np

    from initjax.probing import probe_blocks

    return probe_blocks("model", np.zeros((4, 8), np.float32))


def _sweep(**kw):
    from initjax import sweep

    return sweep([_cfg()], **kw)


def _predict(net):
    from initjax import theory

    return theory.predict(net)


def _key(value):
    from initjax._keys import as_key

    return as_key(value)


API = [
    # propagate on a plain config
    ("propagate-seeds-0", lambda: _propagate(seeds=0), ValueError, r"seeds must be >= 1, got 0"),
    ("propagate-seeds-float", lambda: _propagate(seeds=1.5), TypeError, r"seeds must be an integer, got 1.5"),
    ("propagate-seeds-bool", lambda: _propagate(seeds=True), TypeError, r"seeds must be an integer, got True"),
    ("propagate-seeds-huge", lambda: _propagate(seeds=10**12), MemoryError, r"seeds=1000000000000 .* GiB .*host"),
    ("propagate-key-neg", lambda: _propagate(key=-1), ValueError, r"key as an int seed must be in \[0, 2\*\*63\)"),
    ("propagate-key-huge", lambda: _propagate(key=2**64), ValueError, r"key as an int seed must be in \[0, 2\*\*63\)"),
    ("propagate-key-str", lambda: _propagate(key="a"), TypeError, r"key must be a non-negative int seed or"),
    ("propagate-key-float", lambda: _propagate(key=1.5), TypeError, r"key must be a non-negative int seed or"),
    ("propagate-cotangent", lambda: _propagate(cotangent="x"), ValueError, r"cotangent must be one of .*got 'x'"),
    ("propagate-bins-0", lambda: _propagate(bins=0), ValueError, r"bins must be >= 1, got 0"),
    ("propagate-range-reversed", lambda: _propagate(act_range=(1.0, 0.0)), ValueError, r"act_range"),
    ("propagate-range-nan", lambda: _propagate(grad_range=(float("nan"), 1.0)), ValueError, r"grad_range"),
    ("propagate-saturation-neg", lambda: _propagate(saturation_tolerance=-1.0), ValueError,
     r"saturation_tolerance must be >= 0.0"),
    ("propagate-chunk-0", lambda: _propagate(chunk_size=0), ValueError, r"chunk_size must be >= 1, got 0"),
    ("propagate-budget-0", lambda: _propagate(memory_budget=0), ValueError, r"memory_budget must be > 0.0"),
    ("propagate-method", lambda: _propagate(method="x"), ValueError, r"method must be one of .*got 'x'"),
    ("propagate-prng", lambda: _propagate(prng_impl="rbg"), ValueError, r"prng_impl must be one of"),
    ("propagate-inputs-shape", lambda: _propagate(inputs=[[0.0] * 3]), ValueError, r"inputs must have shape"),
    ("propagate-inputs-int", lambda: _propagate(inputs=[[0] * 8] * 4), TypeError, r"inputs must be a float array"),
    ("propagate-devices-0", lambda: _propagate(devices=0), ValueError, r"devices must be >= 1, got 0"),
    ("propagate-seed-offset", lambda: _propagate(seed_offset=-1), ValueError, r"seed_offset must be >= 0"),
    ("propagate-config-str", lambda: _propagate(config="abc"), TypeError, r"NetworkConfig"),
    ("propagate-depth-huge", lambda: _propagate(config=_cfg(depth=10**9)), MemoryError,
     r"depth 1000000000 .* GiB .*host"),
    # propagate on a residual network (the block engine)
    ("rpropagate-bins", lambda: _rpropagate(bins=10), ValueError, r"bins=10 does not apply to a network with residual"),
    ("rpropagate-method", lambda: _rpropagate(method="fast"), ValueError, r"method='fast' does not apply"),
    ("rpropagate-devices", lambda: _rpropagate(devices=1), ValueError, r"devices=1 does not apply"),
    ("rpropagate-range", lambda: _rpropagate(act_range=(0.0, 2.0)), ValueError, r"act_range=.* does not apply"),
    ("rpropagate-seeds-0", lambda: _rpropagate(seeds=0), ValueError, r"seeds must be >= 1, got 0"),
    ("rpropagate-seeds-huge", lambda: _rpropagate(seeds=10**12), MemoryError, r"seeds=1000000000000 .* GiB .*host"),
    ("rpropagate-key-neg", lambda: _rpropagate(key=-1), ValueError, r"key as an int seed must be in"),
    ("rpropagate-inputs-shape", lambda: _rpropagate(inputs=[[0.0] * 3]), ValueError, r"inputs must have shape"),
    ("rpropagate-chunk-0", lambda: _rpropagate(chunk_size=0), ValueError, r"chunk_size must be >= 1, got 0"),
    ("rpropagate-budget-tiny", lambda: _rpropagate(memory_budget=1), MemoryError,
     r"one seed of this network needs about"),
    ("rpropagate-cotangent", lambda: _rpropagate(cotangent="x"), ValueError, r"cotangent must be one of"),
    ("rpropagate-depth-huge", lambda: __import__("initjax").propagate(_res().replace(
        stages=(_repeat(_residual(), 10**9),))), MemoryError, r"depth 1000000000 .* GiB .*host"),
    # initjax.network: Dense
    ("dense-width-0", lambda: _dense(0), ValueError, r"width must be >= 1, got 0"),
    ("dense-width-float", lambda: _dense(8.5), TypeError, r"width must be an integer, got 8.5"),
    ("dense-init", lambda: _dense(8, init="nope"), ValueError, r"unknown initializer 'nope'"),
    ("dense-act", lambda: _dense(8, activation="nope"), ValueError, r"unknown activation 'nope'"),
    ("dense-norm", lambda: _dense(8, norm="x"), ValueError, r"norm must be one of .*got 'x'"),
    ("dense-norm-position", lambda: _dense(8, norm_position="x"), ValueError, r"norm_position must be one of"),
    ("dense-multiplier-0", lambda: _dense(8, multiplier=0.0), ValueError, r"multiplier must be > 0.0, got 0.0"),
    ("dense-multiplier-nan", lambda: _dense(8, multiplier=float("nan")), ValueError, r"multiplier must be finite"),
    ("dense-lr-mult-neg", lambda: _dense(8, lr_multiplier=-1.0), ValueError, r"lr_multiplier must be > 0.0"),
    ("dense-eps-neg", lambda: _dense(8, norm_eps=-1.0), ValueError, r"norm_eps must be >= 0.0"),
    ("dense-preact-str", lambda: _dense(8, preactivation="yes"), TypeError, r"preactivation must be a bool"),
    ("dense-ws-int", lambda: _dense(8, weight_standardization=1), TypeError, r"weight_standardization must be a bool"),
    # Residual
    ("residual-empty", lambda: _residual(()), TypeError, r"branch must be a non-empty sequence of Dense layers"),
    ("residual-not-dense", lambda: _residual(("x",)), TypeError, r"branch\[0\] must be a Dense layer"),
    ("residual-alpha-neg", lambda: _residual(alpha=-1.0), ValueError, r"alpha"),
    ("residual-alpha-nan", lambda: _residual(alpha=float("nan")), ValueError, r"alpha"),
    ("residual-alpha-str", lambda: _residual(alpha="x"), ValueError, r"alpha"),
    ("residual-norm", lambda: _residual(norm="x"), ValueError, r"norm must be one of"),
    ("residual-norm-position", lambda: _residual(norm_position="middle"), ValueError, r"norm_position must be one of"),
    ("residual-beta", lambda: _residual(beta="x"), ValueError, r"beta must be one of"),
    ("residual-learnable-str", lambda: _residual(learnable="yes"), TypeError, r"learnable must be a bool"),
    ("residual-scalar-biases", lambda: _residual(scalar_biases="x"), TypeError, r"scalar_biases must be a bool"),
    # Repeat, Network
    ("repeat-count-0", lambda: _repeat(_residual(), 0), ValueError, r"count must be >= 1, got 0"),
    ("repeat-not-block", lambda: _repeat("x"), TypeError, r"block must be one of the registered block kinds"),
    ("network-in-width-0", lambda: _network(0, (_repeat(_dense(8)),)), ValueError, r"in_width must be >= 1"),
    ("network-no-stages", lambda: _network(8, ()), TypeError, r"stages must be a non-empty sequence"),
    ("network-batch-0", lambda: _network(8, (_repeat(_dense(8)),), batch=0), ValueError, r"batch must be >= 1"),
    ("network-batchnorm-1", lambda: _network(8, (_repeat(_dense(8, norm="batch")),), batch=1), ValueError,
     r"batch norm needs batch >= 2"),
    ("network-input-var-0", lambda: _network(8, (_repeat(_dense(8)),), input_variance=0.0), ValueError,
     r"input_variance must be > 0.0"),
    ("network-input-corr-2", lambda: _network(8, (_repeat(_dense(8)),), input_correlation=2.0), ValueError,
     r"input_correlation must be <= 1.0"),
    ("network-dtype-int", lambda: _network(8, (_repeat(_dense(8)),), dtype="int32"), TypeError,
     r"dtype must be a floating dtype"),
    ("network-width-mismatch", lambda: _network(4, (_repeat(_residual()),)), ValueError, r"stages\[0\]: "),
    ("network-from-dict-str", lambda: __import__("initjax.network").network.Network.from_dict("x"), TypeError,
     r"a Network dict must be a mapping"),
    ("network-from-dict-unknown", lambda: __import__("initjax.network").network.Network.from_dict(
        {"in_width": 8, "stages": [], "colour": 1}), ValueError, r"unknown Network fields \['colour'\]"),
    ("network-from-json-garbage", lambda: __import__("initjax.network").network.Network.from_json("{not json"),
     ValueError, r"."),
    ("residual-mlp-depth-0", lambda: _res(depth=0) if False else __import__("initjax.network").network.Network
     .residual_mlp(0, 8), ValueError, r"depth must be >= 1, got 0"),
    ("residual-mlp-layers-3", lambda: _res(branch_layers=3), ValueError, r"branch_layers must be one of 1, 2; got 3"),
    ("residual-mlp-norm", lambda: _res(norm="x"), ValueError, r"norm must be one of"),
    ("residual-mlp-scale-neg", lambda: _res(branch_scale=-1.0), ValueError, r"alpha"),
    ("residual-mlp-position", lambda: _res(norm_position="x"), ValueError, r"norm_position must be one of"),
    # fixup
    ("fixup-plain", lambda: _fixup(_plain_net()), ValueError, r"Fixup needs residual blocks"),
    ("fixup-not-network", lambda: _fixup("x"), TypeError, r"network must be an initjax Network"),
    ("fixup-base-init", lambda: _fixup(_res(branch_layers=2), base_init="lecun_normal"), ValueError,
     r"base_init must be 'he_normal'"),
    ("fixup-one-layer", lambda: _fixup(_res()), ValueError, r"Fixup scales branches of m >= 2 layers"),
    # probing.probe_blocks
    ("probe-blocks-x-shape", lambda: _probe((4, 3)), ValueError, r"."),
    ("probe-blocks-cotangent", lambda: _probe(cotangent="x"), ValueError, r"cotangent"),
    ("probe-blocks-key", lambda: _probe(key=-1), ValueError, r"key as an int seed must be in"),
    ("probe-blocks-model", _probe_not_model, TypeError, r"NetworkModule"),
    # theory
    ("predict-not-network", lambda: _predict("x"), TypeError, r"."),
    # sweeps
    ("sweep-no-configs", lambda: __import__("initjax").sweep([]), ValueError, r"sweep needs at least one config"),
    ("sweep-unknown-kwarg", lambda: _sweep(colour=1), TypeError, r"sweep got unknown propagate arguments \['colour'\]"),
    ("sweep-seeds-0", lambda: _sweep(seeds=0), ValueError, r"seeds must be >= 1, got 0"),
    # keys
    ("key-bool", lambda: _key(True), TypeError, r"key must be a non-negative int seed"),
    ("key-batch", lambda: _key(__import__("jax").random.split(__import__("jax").random.key(0), 2)), TypeError,
     r"key must be a non-negative int seed"),
    ("key-neg", lambda: _key(-5), ValueError, r"key as an int seed must be in \[0, 2\*\*63\), got -5"),
]


# -- files that are read: damaged, each error names the file ------------------------------------
def _saved_propagation(tmp: Path) -> Path:
    from initjax import propagate

    d = tmp / "run"
    propagate(_cfg(depth=1, width=4, batch=2), seeds=1).save(d)
    return d


def _saved_blocks(tmp: Path) -> Path:
    from initjax import propagate
    from initjax.network import Network

    d = tmp / "blocks"
    propagate(Network.residual_mlp(1, 4, batch=2), seeds=1).save(d)
    return d


def _damage(path: Path, how: str) -> None:
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"\x00garbage\xff{")
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "wrong-json":
        path.write_text(json.dumps([1, 2, 3]))
    elif how == "missing":
        os.unlink(path)


def _load_damaged(saver, loader, name, how):
    def spec(tmp: Path):
        d = saver(tmp)
        _damage(d / name, how)
        return lambda: loader(d)

    return spec


def _prop_load(d):
    from initjax import Propagation

    return Propagation.load(d)


def _block_load(d):
    from initjax.engine import BlockPropagation

    return BlockPropagation.load(d)


def _sweep_resume(how: str):
    def spec(tmp: Path):
        from initjax import sweep

        out = tmp / "sweep"
        sweep([_cfg(depth=1, width=4, batch=2)], out=out, quiet=True)
        _damage(out / "sweep.json", how)
        return lambda: sweep([_cfg(depth=1, width=4, batch=2)], out=out, quiet=True)

    return spec


def _sweep_entry(name: str, how: str):
    def spec(tmp: Path):
        from initjax import sweep

        out = tmp / "sweep"
        sweep([_cfg(depth=1, width=4, batch=2)], out=out, quiet=True)
        _damage(out / "000" / name, how)
        return lambda: sweep([_cfg(depth=1, width=4, batch=2)], out=out, quiet=True)

    return spec


def _sweep_other(**changes):
    def spec(tmp: Path):
        from initjax import sweep

        out = tmp / "sweep"
        sweep([_cfg(depth=1, width=4, batch=2)], out=out, quiet=True)
        return lambda: sweep([_cfg(depth=1, width=4, batch=2)], out=out, quiet=True, **changes)

    return spec


def _entry_swapped(tmp: Path):
    """Another sweep's entry copied into this sweep's folder: its config.json disagrees."""
    from initjax import sweep

    out = tmp / "sweep"
    sweep([_cfg(depth=1, width=4, batch=2)], out=out, quiet=True)
    (out / "000" / "config.json").write_text(json.dumps(_cfg(depth=1, width=4, batch=2, activation="relu").to_dict()))
    return lambda: sweep([_cfg(depth=1, width=4, batch=2)], out=out, quiet=True)


FILES = [
    # silent wrong answers: a resume with other settings returned the first run's numbers
    ("sweep-resume-other-key", _sweep_other(key=1), ValueError, r"other settings \(key: stored 0, asked 1\)"),
    ("sweep-resume-other-seeds", _sweep_other(seeds=2), ValueError, r"seeds: stored 1, asked 2"),
    ("sweep-resume-other-cotangent", _sweep_other(cotangent="mse"), ValueError,
     r"cotangent: stored 'normal', asked 'mse'"),
    ("sweep-entry-swapped", _entry_swapped, ValueError, r"000/config\.json holds .* but the sweep index"),
    ("load-stats-truncated", _load_damaged(_saved_propagation, _prop_load, "stats.npz", "truncate"), ValueError,
     r"stats\.npz"),
    ("load-stats-garbage", _load_damaged(_saved_propagation, _prop_load, "stats.npz", "garbage"), ValueError,
     r"stats\.npz"),
    ("load-config-garbage", _load_damaged(_saved_propagation, _prop_load, "config.json", "garbage"), ValueError,
     r"config\.json"),
    ("load-config-empty", _load_damaged(_saved_propagation, _prop_load, "config.json", "empty"), ValueError,
     r"config\.json"),
    ("load-config-wrong", _load_damaged(_saved_propagation, _prop_load, "config.json", "wrong-json"), ValueError,
     r"config\.json"),
    ("load-meta-truncated", _load_damaged(_saved_propagation, _prop_load, "meta.json", "truncate"), ValueError,
     r"meta\.json"),
    ("load-meta-missing", _load_damaged(_saved_propagation, _prop_load, "meta.json", "missing"), FileNotFoundError,
     r"meta\.json is missing"),
    ("bload-stats-truncated", _load_damaged(_saved_blocks, _block_load, "stats.npz", "truncate"), ValueError,
     r"stats\.npz"),
    ("bload-network-garbage", _load_damaged(_saved_blocks, _block_load, "network.json", "garbage"), ValueError,
     r"network\.json"),
    ("bload-network-wrong", _load_damaged(_saved_blocks, _block_load, "network.json", "wrong-json"), ValueError,
     r"network\.json"),
    ("bload-meta-empty", _load_damaged(_saved_blocks, _block_load, "meta.json", "empty"), ValueError,
     r"meta\.json"),
    ("sweep-index-truncated", _sweep_resume("truncate"), ValueError, r"sweep\.json"),
    ("sweep-index-garbage", _sweep_resume("garbage"), ValueError, r"sweep\.json"),
    ("sweep-index-wrong", _sweep_resume("wrong-json"), ValueError, r"sweep\.json"),
    ("sweep-entry-stats", _sweep_entry("stats.npz", "garbage"), ValueError, r"stats\.npz"),
    ("sweep-entry-config", _sweep_entry("config.json", "truncate"), ValueError, r"config\.json"),
]

CASES = (
    [(f"cli:{i}", "cli", argv, 2, rx) for i, argv, rx in CLI]
    + [(f"api:{i}", "api", fn, exc, rx) for i, fn, exc, rx in API]
    + [(f"file:{i}", "file", fn, exc, rx) for i, fn, exc, rx in FILES]
)
