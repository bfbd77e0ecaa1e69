"""Tests of initjax.training.compare: the vmapped trainer of configs, its records, checkpoints, plots.

XLA compiles dominate the cost here, so the tests share a few small architectures, each compiled
once: "A" (digits, 64-100-100-100-10 sigmoid MLP, momentum SGD, 4 seeds, 100-step intervals),
"B" (A with batch norm, 2 seeds) and "C" (a 1-hidden-layer learnable-PReLU MLP, 2 seeds).
Configs differing only in label, steps, probe sizes or record count reuse those compilations.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from initjax import data, modules, training
from initjax.training import TrainConfig

from .configs import CFG_A, CFG_B, CFG_C

# ----------------------------------------------------------------------------------------------
# shared configs and runs
# ----------------------------------------------------------------------------------------------

SEEDS_A = 4


@pytest.fixture(scope="module")
def digits():
    return data.digits()


@pytest.fixture(scope="module")
def linear_task():
    # Labels of a linear teacher: a PReLU net does best by becoming more linear (slope -> 1).
    return data.teacher_student(0, 512, 256, 8, 2, hidden=())


@pytest.fixture(scope="module")
def run_a(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("run_a")
    return training.compare(CFG_A, digits, seeds=SEEDS_A, key=0, out=out, progress=False)


# ----------------------------------------------------------------------------------------------
# learning on digits (measured: see the comment on the thresholds)
# ----------------------------------------------------------------------------------------------


def test_sigmoid_mlp_learns_digits(run_a):
    rec = run_a["sigmoid"]
    assert rec.test_accuracy.shape == (SEEDS_A, 5)
    np.testing.assert_array_equal(rec.step, [0, 100, 200, 300, 400])
    # Measured (4 seeds, median test accuracy at steps 0/100/200/300/400):
    # 0.10 / 0.43 / 0.86 / 0.92 / 0.94; the seeds span 0.91-0.93 at step 300 and 0.936-0.942 at
    # 400; train loss 2.4 -> 0.11-0.14. Chance is 0.10.
    assert np.all(rec.test_accuracy[:, 0] < 0.25)
    assert np.all(rec.test_accuracy[:, 3] > 0.8)
    assert np.all(rec.test_accuracy[:, -1] > 0.85)
    assert np.all(rec.train_accuracy[:, -1] > 0.85)
    assert np.all(rec.train_loss[:, -1] < 0.5 * rec.train_loss[:, 0])
    assert np.all(rec.diverged_step == -1)
    assert rec.test_accuracy_batch_stats is None and rec.prelu_slope is None
    for name, axes in training.RECORD_FIELDS.items():
        v = getattr(rec, name)
        if v is None:
            continue
        sizes = {"seed": SEEDS_A, "record": 5, "layer": 3, "percentile": 3}
        assert v.shape == tuple(sizes[a] for a in axes), name
    # Sigmoid outputs are in (0, 1) and its saturation counts y < 0.01 or y > 0.99.
    assert np.all((rec.act_percentiles > 0) & (rec.act_percentiles < 1))
    assert np.all((rec.saturated >= 0) & (rec.saturated <= 1))
    assert np.all(rec.dead_fraction == 0)  # sigmoid is never exactly 0
    assert np.all(rec.grad_norm > 0) and np.all(np.isfinite(rec.readout_grad_norm))
    np.testing.assert_allclose(rec.learning_rate, 0.1)


# ----------------------------------------------------------------------------------------------
# vmapped seeds == seeds trained one by one (a hand-written optax loop)
# ----------------------------------------------------------------------------------------------


def _hand_trained(ds, seed, key, steps, lr, momentum):
    """The digits MLP of CFG_A trained alone with optax, from modules and data only."""
    model = modules.MLP(64, (100, 100, 100), 10, activation="sigmoid",
                        kernel_init="normal:stddev=0.1",
                        rngs=nnx.Rngs(jax.random.fold_in(jax.random.key(key, impl="philox2x32"), seed)))
    graphdef, params = nnx.split(model)
    tx = optax.sgd(lr, momentum=momentum)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss(p):
            logits = nnx.merge(graphdef, p)(x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    losses = []
    stream = data.batches(ds.x_train, ds.y_train, 60, seed=key)  # same_batches: seed = key
    # the trainer's matmuls are float32-exact ("highest") on every backend; so are the reference's
    # (on a GPU the default TF32-class passes drift by 1e-4 relative over 100 steps)
    with jax.default_matmul_precision("highest"):
        for xb, yb in itertools.islice(stream, steps):
            params, opt_state, value = step(params, opt_state, jnp.asarray(xb), jnp.asarray(yb))
            losses.append(float(value))
    return params, np.asarray(losses)


def test_vmapped_seeds_equal_seeds_trained_alone(digits):
    cfg = dataclasses.replace(CFG_A, steps=100)
    result = training.compare(cfg, digits, seeds=SEEDS_A, key=0, progress=False)
    rec = result[0]
    for seed in (0, SEEDS_A - 1):
        params, losses = _hand_trained(digits, seed, 0, 100, 0.1, 0.9)
        np.testing.assert_allclose(rec.train_loss[seed, 1], losses.mean(), rtol=1e-5)
        member = modules.ensemble_member(result.final_models[0], seed)
        mine = nnx.state(member, nnx.Param)
        for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(params), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_sequential_path_equals_vmapped(linear_task):
    cfg = dataclasses.replace(CFG_C, steps=100)
    arms = [cfg, dataclasses.replace(cfg, label="slow", learning_rate=0.02)]  # two arms
    vec = training.compare(arms, linear_task, seeds=2, key=3, progress=False)
    seq = training.compare(arms, linear_task, seeds=2, key=3, progress=False, sequential=True)
    for i in range(2):
        np.testing.assert_allclose(seq[i].train_loss, vec[i].train_loss, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(nnx.state(seq.final_models[i])),
                        jax.tree.leaves(nnx.state(vec.final_models[i])), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert not np.allclose(vec[0].train_loss[:, -1], vec[1].train_loss[:, -1])


# ----------------------------------------------------------------------------------------------
# one SGD step by hand; PReLU slopes learn
# ----------------------------------------------------------------------------------------------


def test_sgd_step_equals_hand_computation(linear_task):
    lr = 0.1
    # same_batches=False: seed s draws its own stream, data.batches with seed
    # SeedSequence([key, s]).generate_state(1)[0] (the documented rule).
    cfg = dataclasses.replace(CFG_C, steps=1, record_every=1, learning_rate=lr, same_batches=False)
    result = training.compare(cfg, linear_task, seeds=2, key=5, progress=False)
    first_rows = []
    for seed in range(2):
        stream_seed = int(np.random.SeedSequence([5, seed]).generate_state(1)[0])
        xb, yb = next(data.batches(linear_task.x_train, linear_task.y_train, 32, seed=stream_seed))
        first_rows.append(xb[0])
        m0 = modules.MLP(8, (16,), 2, activation="prelu_learned", kernel_init="he_normal",
                         rngs=nnx.Rngs(jax.random.fold_in(jax.random.key(5, impl="philox2x32"), seed)))
        p0 = {"w1": m0.layers[0].kernel[...], "b1": m0.layers[0].bias[...],
              "a": m0.prelus[0].slope[...], "w2": m0.readout.kernel[...],
              "b2": m0.readout.bias[...]}

        def loss(p, x=xb, y=yb):
            z = x @ p["w1"] + p["b1"][None, :]
            h = jnp.where(z >= 0, z, p["a"][None, :] * z)
            logits = h @ p["w2"] + p["b2"][None, :]
            return jnp.mean(jax.nn.logsumexp(logits, axis=1) - logits[jnp.arange(len(y)), y])

        # The hand-written loss against plain numpy (float64).
        q = {k: np.asarray(v, np.float64) for k, v in p0.items()}
        z = xb @ q["w1"] + q["b1"]
        logits = np.where(z >= 0, z, q["a"] * z) @ q["w2"] + q["b2"]
        lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        np_loss = np.mean(lse - logits[np.arange(len(yb)), yb])
        with jax.default_matmul_precision("highest"):  # float32-exact, as compare's own matmuls
            np.testing.assert_allclose(float(loss(p0)), np_loss, rtol=1e-5)
            grads = jax.grad(loss)(p0)
        member = modules.ensemble_member(result.final_models[0], seed)
        got = {"w1": member.layers[0].kernel[...], "b1": member.layers[0].bias[...],
               "a": member.prelus[0].slope[...], "w2": member.readout.kernel[...],
               "b2": member.readout.bias[...]}
        for k in p0:
            np.testing.assert_allclose(got[k], p0[k] - lr * grads[k], rtol=1e-5, atol=1e-7)
        # The loss of the single update (record 1) is the loss of the initial parameters.
        np.testing.assert_allclose(result[0].train_loss[seed, 1], np_loss, rtol=1e-5)
    assert not np.array_equal(first_rows[0], first_rows[1])  # the seeds' batches differ


def test_prelu_slope_is_learned(linear_task):
    rec = training.compare(CFG_C, linear_task, seeds=2, key=0, progress=False)[0]
    assert rec.prelu_slope.shape == (2, 4, 1)
    np.testing.assert_allclose(rec.prelu_slope[:, 0], 0.25)
    # Measured (seeds 0/1): mean slope 0.25 -> 0.41 / 0.38 after 300 steps, rising at every
    # record; minibatch loss 1.09 -> 0.066 / 0.83 -> 0.056; test accuracy 0.98 / 0.99.
    assert np.all(rec.prelu_slope[:, -1, 0] > 0.32)
    assert np.all(rec.train_loss[:, -1] < 0.6 * rec.train_loss[:, 0])
    assert np.all(rec.test_accuracy[:, -1] > 0.85)


# ----------------------------------------------------------------------------------------------
# batch norm: running averages vs batch statistics
# ----------------------------------------------------------------------------------------------


def _numpy_bn_mlp(member, x, stats):
    """Forward pass of a Linear -> BN -> sigmoid MLP in numpy, with the running averages
    (``stats="running"``) or each batch's own biased statistics (``"batch"``)."""
    h = np.asarray(x, np.float64)
    for layer, bn in zip(member.layers, member.norms, strict=True):
        z = h @ np.asarray(layer.kernel[...], np.float64) + np.asarray(layer.bias[...], np.float64)
        if stats == "running":
            mean, var = np.asarray(bn.mean[...], np.float64), np.asarray(bn.var[...], np.float64)
        else:
            mean, var = z.mean(0), z.var(0)
        n = (z - mean) / np.sqrt(var + bn.epsilon)
        n = n * np.asarray(bn.scale[...], np.float64) + np.asarray(bn.bias[...], np.float64)
        h = 1.0 / (1.0 + np.exp(-n))
    return h @ np.asarray(member.readout.kernel[...], np.float64) + np.asarray(
        member.readout.bias[...], np.float64)


def test_batchnorm_eval_uses_running_averages(digits):
    result = training.compare(CFG_B, digits, seeds=2, key=0, progress=False)
    rec = result[0]
    assert rec.test_accuracy_batch_stats.shape == (2, 2)
    # Measured: test accuracy 0.10 -> 0.955 / 0.961 in 100 steps (0.30-0.46 without BN).
    assert np.all(rec.test_accuracy[:, -1] > 0.8)
    m = len(digits.y_test) // 60 * 60  # batch statistics: test batches of 60, remainder dropped
    for seed in range(2):
        final = modules.ensemble_member(result.final_models[0], seed)
        # The pytorch convention: momentum 0.1 of each new batch, unbiased running variance.
        assert final.norms[0].momentum == 0.1 and final.norms[0].running_var == "unbiased"
        # 100 updates moved the running averages away from their start (mean 0, var 1).
        assert np.abs(np.asarray(final.norms[0].var[...]) - 1.0).max() > 0.1
        initial = modules.MLP(64, (100, 100, 100), 10, activation="sigmoid",
                              kernel_init="normal:stddev=0.1", norm="batch",
                              batchnorm_kwargs={"momentum": 0.1, "momentum_convention": "pytorch",
                                                "running_var": "unbiased"},
                              rngs=nnx.Rngs(jax.random.fold_in(jax.random.key(0, impl="philox2x32"), seed)))
        for record, member in ((0, initial), (1, final)):
            # Eval mode: the numpy forward pass with the stored running averages.
            logits = _numpy_bn_mlp(member, digits.x_test, "running")
            acc = np.mean(logits.argmax(1) == digits.y_test)
            np.testing.assert_allclose(rec.test_accuracy[seed, record], acc,
                                       atol=1.5 / len(digits.y_test))
            correct = [
                _numpy_bn_mlp(member, digits.x_test[i : i + 60], "batch").argmax(1)
                == digits.y_test[i : i + 60]
                for i in range(0, m, 60)
            ]
            np.testing.assert_allclose(rec.test_accuracy_batch_stats[seed, record],
                                       np.mean(np.concatenate(correct)), atol=1.5 / m)


# ----------------------------------------------------------------------------------------------
# divergence
# ----------------------------------------------------------------------------------------------


def test_huge_learning_rate_diverges_without_raising(digits, run_a):
    boom = dataclasses.replace(CFG_A, label="boom", learning_rate=1e36, steps=100)
    fine = dataclasses.replace(CFG_A, label="fine", steps=100)
    result = training.compare([boom, fine], digits, seeds=SEEDS_A, key=0, progress=False)
    bad, good = result["boom"], result["fine"]
    assert np.all(bad.diverged_step >= 1) and np.all(bad.diverged_step <= 100)
    np.testing.assert_array_equal(result.diverged, [[True] * SEEDS_A, [False] * SEEDS_A])
    np.testing.assert_array_equal(result.diverged_step[0], bad.diverged_step)
    # Measured: the loss is non-finite from update 3 on, for every seed (at lr = 1e30 it stays
    # finite, ~1e31: sigmoid saturates, so that is not divergence).
    # Step 0 is recorded before any update: finite; the record after divergence is NaN.
    assert np.all(np.isfinite(bad.test_accuracy[:, 0]))
    assert np.all(np.isnan(bad.test_accuracy[:, 1]))
    assert np.all(np.isnan(bad.act_percentiles[:, 1])) and np.all(np.isnan(bad.train_loss[:, 1]))
    # The other arm of the same program is untouched: the numbers of the first 100 steps of run
    # A, trained alone (to float rounding: the arms are one batched program).
    np.testing.assert_allclose(good.test_accuracy, run_a[0].test_accuracy[:, :2], atol=1.5e-3)
    np.testing.assert_allclose(good.train_loss, run_a[0].train_loss[:, :2], rtol=1e-4)
    # Plots skip and mark the non-finite records.
    ax = training.plot_curves(result, "test_accuracy")
    assert any(line.get_marker() == "x" for line in ax.get_lines())
    assert any("non-finite in 4 of 4 seeds" in t.get_text() for t in ax.get_legend().get_texts())


# ----------------------------------------------------------------------------------------------
# checkpoints and resume
# ----------------------------------------------------------------------------------------------


def _assert_same_records(a, b):
    for name in training.Record._fields:
        x, y = getattr(a, name), getattr(b, name)
        if x is None or y is None:
            assert x is None and y is None, name
        else:
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_resume_equals_uninterrupted_run(digits, run_a, tmp_path):
    short = dataclasses.replace(CFG_A, label="short", steps=200)
    configs = [short, CFG_A]
    # Interrupted after 3 intervals: "short" is finished (2), CFG_A has done 1 of 4.
    with pytest.raises(training.Interrupted):
        training.compare(configs, digits, seeds=SEEDS_A, key=0, out=tmp_path, progress=False,
                         _stop_after=3)
    index = json.loads((tmp_path / "compare.json").read_text())
    dirs = [tmp_path / r["dir"] for r in index["runs"]]
    status = [json.loads((d / "status.json").read_text()) for d in dirs]
    assert [s["status"] for s in status] == ["done", "incomplete"]
    assert [s["step"] for s in status] == [200, 100]
    done_ckpt = dirs[0] / "checkpoint.npz"
    stamp = done_ckpt.stat().st_mtime_ns

    result = training.compare(configs, digits, seeds=SEEDS_A, key=0, out=tmp_path,
                              progress=False)
    assert done_ckpt.stat().st_mtime_ns == stamp  # the finished config was not retrained
    _assert_same_records(result["sigmoid"], run_a["sigmoid"])
    full = run_a["sigmoid"]
    np.testing.assert_array_equal(result["short"].test_accuracy, full.test_accuracy[:, :3])
    for a, b in zip(jax.tree.leaves(nnx.state(result.final_models[1])),
                    jax.tree.leaves(nnx.state(run_a.final_models[0])), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert json.loads((dirs[1] / "status.json").read_text())["status"] == "done"
    assert (dirs[1] / "records.npz").exists()

    # A third call finds everything finished: nothing retrained, the same numbers.
    stamps = [(d / "checkpoint.npz").stat().st_mtime_ns for d in dirs]
    again = training.compare(configs, digits, seeds=SEEDS_A, key=0, out=tmp_path,
                             progress=False)
    assert [(d / "checkpoint.npz").stat().st_mtime_ns for d in dirs] == stamps
    _assert_same_records(again["sigmoid"], result["sigmoid"])


def test_checkpoint_holds_config_and_records(run_a):
    (run_dir,) = [p for p in run_a.out.iterdir() if p.is_dir()]
    stored = json.loads((run_dir / "config.json").read_text())
    assert TrainConfig.from_dict(stored["config"]) == CFG_A
    assert stored["seeds"] == SEEDS_A and stored["key"] == 0
    with np.load(run_dir / "records.npz") as z:
        np.testing.assert_array_equal(z["test_accuracy"], run_a[0].test_accuracy)
    assert json.loads((run_dir / "status.json").read_text())["status"] == "done"


# ----------------------------------------------------------------------------------------------
# recorded statistics recomputed independently
# ----------------------------------------------------------------------------------------------


def test_percentiles_and_layer_stats_match_numpy(digits, run_a):
    rec = run_a[0]
    probe = digits.x_train[run_a.probe_index[: CFG_A.probe_size]]
    for record, seed in ((0, 0), (-1, 0), (-1, SEEDS_A - 1)):
        if record == 0:  # the initial model, built here from modules alone
            model = modules.MLP(64, (100, 100, 100), 10, activation="sigmoid",
                                kernel_init="normal:stddev=0.1",
                                rngs=nnx.Rngs(jax.random.fold_in(jax.random.key(0, impl="philox2x32"), seed)))
        else:
            model = modules.ensemble_member(run_a.final_models[0], seed)
        with jax.default_matmul_precision("highest"):  # float32-exact, as compare's measurements
            _, inter = model.forward_with_intermediates(jnp.asarray(probe))
        for layer in range(3):
            act = np.asarray(inter["act"][layer])
            pre = np.asarray(inter["preact"][layer])
            np.testing.assert_allclose(rec.act_percentiles[seed, record, layer],
                                       np.percentile(act, [15, 50, 85]), rtol=1e-5)
            np.testing.assert_allclose(rec.input_percentiles[seed, record, layer],
                                       np.percentile(pre, [15, 50, 85]), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(rec.act_mean[seed, record, layer], act.mean(), rtol=1e-5)
            np.testing.assert_allclose(rec.act_std[seed, record, layer], act.std(), rtol=1e-4)
            np.testing.assert_allclose(rec.saturated[seed, record, layer],
                                       np.mean((act <= 0.01) | (act >= 0.99)), atol=1e-7)


# ----------------------------------------------------------------------------------------------
# progress bar and plots
# ----------------------------------------------------------------------------------------------


def test_progress_bar_only_when_asked(digits, capsys):
    cfg = dataclasses.replace(CFG_A, steps=100)
    training.compare(cfg, digits, seeds=SEEDS_A, key=0, progress=False)
    assert capsys.readouterr().err == ""
    training.compare(cfg, digits, seeds=SEEDS_A, key=0, progress=True)
    assert "100/100" in capsys.readouterr().err
    training.compare(cfg, digits, seeds=SEEDS_A, key=0)  # None: pytest's stderr is no terminal
    assert capsys.readouterr().err == ""


def test_plots(run_a):
    from matplotlib.figure import Figure

    ax = training.plot_curves(run_a, "test_accuracy")
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "sigmoid"]
    np.testing.assert_allclose(line.get_ydata(), np.median(run_a[0].test_accuracy, axis=0))
    assert isinstance(ax.figure, Figure)
    ax = training.plot_curves(run_a, "grad_norm", layer=-1)
    ax = training.plot_percentiles(run_a, -1)
    medians = np.median(run_a[0].input_percentiles[:, :, -1, :], axis=0)
    ys = [ln.get_ydata() for ln in ax.get_lines()]
    assert len(ys) == 3
    for k in range(3):
        np.testing.assert_allclose(ys[k], medians[:, k])
    with pytest.raises(ValueError, match="layer"):
        training.plot_curves(run_a, "grad_norm")
    with pytest.raises(ValueError, match="field must be one of"):
        training.plot_curves(run_a, "nope")
    with pytest.raises(ValueError, match="out of range"):
        training.plot_percentiles(run_a, 3)
    with pytest.raises(KeyError, match="labels are"):
        training.plot_curves(run_a, configs="nope")


# ----------------------------------------------------------------------------------------------
# configs and errors
# ----------------------------------------------------------------------------------------------


def test_compare_argument_errors(digits, tmp_path):
    cfg = dataclasses.replace(CFG_A, steps=100)
    bad_calls = [
        (dict(configs=cfg, seeds=0), ValueError, "seeds must be >= 1"),
        (dict(configs=cfg, seeds=2.0), TypeError, "seeds must be an integer"),
        (dict(configs=cfg, key=-1), ValueError, "key must be >= 0"),
        (dict(configs=[]), TypeError, "non-empty sequence"),
        (dict(configs=["sgd"]), TypeError, r"configs\[0\] must be a TrainConfig"),
        (dict(configs=[cfg, cfg]), ValueError, "duplicates"),
        (dict(configs=dataclasses.replace(cfg, batch_size=5000)), ValueError,
         "batch_size=5000 exceeds the training set size 1438"),
        (dict(configs=dataclasses.replace(cfg, model="cnn")), ValueError, "NHWC"),
        (dict(configs=cfg, progress="yes"), TypeError, "progress"),
        (dict(configs=cfg, resume=1), TypeError, "resume"),
        (dict(configs=cfg, out=3), TypeError, "out must be a directory"),
    ]
    for kwargs, error, match in bad_calls:
        with pytest.raises(error, match=match):
            training.compare(data=digits, **kwargs)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        training.compare(cfg, digits, out=tmp_path / "file")

    d = digits
    bad_data = [
        (d._replace(y_train=d.y_train.astype(np.float32)), ValueError, "integer class labels"),
        (d._replace(y_train=d.y_train[:-1]), ValueError, r"shape \(1438,\)"),
        (d._replace(x_test=d.x_test[:, :10]), ValueError, "x_train examples have shape"),
        (d._replace(x_train=d.x_train[:, 0]), ValueError, r"\(n, features\)"),
        (d._replace(y_test=d.y_test + 10), ValueError, r"labels outside \[0, 10\)"),
        (d._replace(x_train=np.where(d.x_train > 3, np.nan, d.x_train)), ValueError, "non-finite"),
        ((d.x_train, d.y_train), TypeError, "Dataset"),
    ]
    for ds, error, match in bad_data:
        with pytest.raises(error, match=match):
            training.compare(cfg, ds)


def test_public_api():
    for name in training.__all__:
        assert hasattr(training, name), name
    assert training.PERCENTILES == (15.0, 50.0, 85.0)
    assert set(training.RECORD_FIELDS) == set(training.Record._fields)


# ----------------------------------------------------------------------------------------------
# arms: configs that differ only in numbers are one compiled program
# ----------------------------------------------------------------------------------------------

SWEEP = TrainConfig(label="lr", widths=(12, 11), activation="tanh", optimizer="momentum",
                    momentum=0.8, batch_size=32, steps=20, record_every=10, probe_size=64,
                    train_eval_size=128)


class _CompileLog(logging.Handler):
    """Collects the names of the programs jax compiles (``jax.log_compiles``)."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def emit(self, record):
        message = record.getMessage()
        if message.startswith("Compiling "):
            self.names.append(message.split(" ")[1])


def test_learning_rate_sweep_compiles_one_training_program(digits):
    lrs = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    configs = [dataclasses.replace(SWEEP, label=f"lr={lr}", learning_rate=lr) for lr in lrs]
    log, logger = _CompileLog(), logging.getLogger("jax")
    logger.addHandler(log)
    try:
        with jax.log_compiles(True):
            result = training.compare(configs, digits, seeds=2, key=1, progress=False)
    finally:
        logger.removeHandler(log)
    assert log.names.count("jit(train_interval)") == 1, log.names
    assert log.names.count("jit(measure_one)") == 1, log.names
    np.testing.assert_allclose([r.learning_rate[0] for r in result.records], lrs, rtol=1e-6)
    # The rates are really different runs: the final losses differ from arm to arm.
    finals = [float(np.mean(r.train_loss[:, -1])) for r in result.records]
    assert len(set(finals)) == len(lrs)


def test_arm_in_a_sweep_equals_the_config_trained_alone(digits):
    configs = [dataclasses.replace(SWEEP, label=f"lr={lr}", learning_rate=lr,
                                   kernel_init=init)
               for lr, init in ((0.05, "lecun_normal"), (0.2, "he_normal"), (0.5, "lecun_normal"))]
    sweep = training.compare(configs, digits, seeds=2, key=1, progress=False)
    alone = training.compare(configs[1], digits, seeds=2, key=1, progress=False)
    for name in ("train_loss", "test_loss", "act_std", "act_percentiles", "grad_norm"):
        np.testing.assert_allclose(getattr(sweep[1], name), getattr(alone[0], name), rtol=2e-4,
                                   atol=1e-6, err_msg=name)
    np.testing.assert_allclose(sweep[1].test_accuracy, alone[0].test_accuracy, atol=1.5e-3)
    for a, b in zip(jax.tree.leaves(nnx.state(sweep.final_models[1])),
                    jax.tree.leaves(nnx.state(alone.final_models[0])), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=1e-6)
    # ... and differs from its neighbours (other rate, other initializer).
    assert not np.allclose(sweep[0].train_loss[:, -1], sweep[1].train_loss[:, -1])


# ----------------------------------------------------------------------------------------------
# a network description, trained
# ----------------------------------------------------------------------------------------------


def test_a_residual_network_description_trains_as_arms(digits):
    """The one description is trainable: a ReLU net with three residual blocks (learnable
    1/sqrt(depth) branch scale, batch norm before the branch) trains on digits, two learning
    rates as arms of one program; records run over the blocks."""
    from initjax.network import Dense, Network, Repeat, Residual

    net = Network(64, (Repeat(Dense(32, "he_normal", "relu"), 1),
                       Repeat(Residual((Dense(32, "he_normal", "relu"),), alpha="1/sqrt(depth)",
                                       learnable=True, norm="batch"), 3)))
    cfgs = [TrainConfig(label=f"lr={lr}", model="network", network=net, optimizer="sgd",
                        learning_rate=lr, steps=200, record_every=100, batch_size=32,
                        probe_size=64, train_eval_size=256) for lr in (0.05, 0.2)]
    assert TrainConfig.from_json(cfgs[0].to_json()) == cfgs[0]
    result = training.compare(cfgs, digits, seeds=2, progress=False)
    rec = result["lr=0.2"]
    assert rec.act_std.shape == rec.grad_norm.shape == (2, 3, net.depth)
    np.testing.assert_array_equal(rec.saturated, 0.0)  # ReLU is unbounded: never saturates
    assert np.all(rec.grad_norm[:, 0] > 0) and rec.test_accuracy_batch_stats is not None
    assert np.all(rec.test_accuracy[:, -1] > 0.8), rec.test_accuracy  # measured 0.95-0.97
    assert np.all(rec.test_accuracy[:, 0] < 0.3)  # chance is 0.1 at init


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(model="network"), "model='network' and a network description go together"),
        (dict(network="net"), "model='network' and a network description go together"),
        (dict(model="network", network="net", norm="batch"), "states its norms and skips"),
        (dict(model="network", network="net", residual=True), "residual=True needs model='mlp'"),
    ],
)
def test_network_config_refuses_bad_combinations(kwargs, match):
    from initjax.network import Dense, Network

    kwargs = {k: Network(8, (Dense(8),)) if v == "net" else v for k, v in kwargs.items()}
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_network_input_width_is_checked_against_the_data(digits):
    from initjax.network import Dense, Network

    cfg = TrainConfig(model="network", network=Network(63, (Dense(8),)), steps=1, record_every=1)
    with pytest.raises(ValueError, match=r"configs\[0\].network takes 63 inputs, but the examples have 64"):
        training.compare([cfg], digits, seeds=1, progress=False)


def test_network_lr_multipliers_reach_the_trainer(digits):
    """A hidden layer with lr_multiplier 1e-6 barely moves: its activations on the fixed probe
    batch at the last record equal those at init to 1e-4 relative (the readout, multiplier 1,
    learns: the loss falls). Without the multiplier the first layer's statistics move by > 1%."""
    from initjax.network import Dense, Network

    frozen = Network(64, (Dense(32, "he_normal", "tanh", lr_multiplier=1e-6),))
    cfg = TrainConfig(label="frozen", model="network", network=frozen, optimizer="sgd",
                      learning_rate=0.5, steps=100, record_every=50, batch_size=32,
                      probe_size=64, train_eval_size=256)
    free = dataclasses.replace(cfg, label="free", network=Network(64, (Dense(32, "he_normal", "tanh"),)))
    result = training.compare([cfg, free], digits, seeds=1, progress=False)
    a, b = result["frozen"], result["free"]
    np.testing.assert_allclose(a.act_std[:, -1], a.act_std[:, 0], rtol=1e-4)
    assert a.train_loss[0, -1] < 0.8 * a.train_loss[0, 0]
    assert np.all(np.abs(b.act_std[:, -1] / b.act_std[:, 0] - 1) > 0.01)


def test_cnn_arms_run_in_turn_and_equal_configs_trained_alone():
    """A CNN's arms run one after the other inside one program (a vmapped convolution is slow
    on XLA:CPU); each arm's records equal its config trained alone."""
    ds = data.digits(flatten=False)
    base = TrainConfig(model="cnn", widths=(4, 4), activation="relu", kernel_init="he_normal",
                       optimizer="momentum", batch_size=16, steps=20, record_every=10,
                       probe_size=16, train_eval_size=64)
    cfgs = [dataclasses.replace(base, label=f"lr={lr}", learning_rate=lr) for lr in (0.01, 0.1)]
    together = training.compare(cfgs, ds, seeds=2, progress=False)
    alone = training.compare(cfgs[1], ds, seeds=2, progress=False)
    for field in ("train_loss", "test_accuracy", "grad_norm"):
        np.testing.assert_allclose(getattr(together["lr=0.1"], field),
                                   getattr(alone["lr=0.1"], field), rtol=2e-4, atol=1e-6)
    assert not np.allclose(together["lr=0.01"].train_loss, together["lr=0.1"].train_loss)


def test_readout_false_trains_the_networks_own_readout_with_its_multipliers(digits):
    """``readout=False``: the network's last Dense layer is the readout (no extra layer), and its
    learning-rate multipliers, bias ones included, reach the trainer: with every kernel and bias
    at multiplier 1e-6 the test loss does not move (1e-4 relative); with the biases' own multiplier set
    back to 1 (``bias_lr_multiplier``, muP's separate bias rule) the biases learn and the loss
    falls. A last width other than the number of classes is refused by name."""
    from initjax.network import Dense, Network

    def net(bias_lr):
        return Network(64, (Dense(32, "he_normal", "tanh", lr_multiplier=1e-6,
                                  bias_lr_multiplier=bias_lr),
                            Dense(10, "lecun_normal", "identity", lr_multiplier=1e-6,
                                  bias_lr_multiplier=bias_lr)))

    frozen = TrainConfig(label="frozen", model="network", network=net(None), readout=False,
                         optimizer="sgd", learning_rate=0.5, steps=60, record_every=30,
                         batch_size=32, probe_size=64, train_eval_size=256)
    biases = dataclasses.replace(frozen, label="biases", network=net(1.0))
    model = frozen.build((64,), 10, rngs=nnx.Rngs(0))
    assert model.readout is None and model(jnp.ones((2, 64))).shape == (2, 10)
    assert "readout" not in TrainConfig(model="network", network=net(None)).to_dict()
    assert TrainConfig.from_json(frozen.to_json()) == frozen
    result = training.compare([frozen, biases], digits, seeds=1, progress=False)
    a, b = result["frozen"], result["biases"]
    np.testing.assert_allclose(a.test_loss[0, -1], a.test_loss[0, 0], rtol=1e-4)
    assert b.test_loss[0, -1] < b.test_loss[0, 0] - 0.03  # measured: 2.711 -> 2.650
    with pytest.raises(ValueError, match="width is 12 and there are 10 classes"):
        dataclasses.replace(frozen, network=Network(64, (Dense(12),))).build(
            (64,), 10, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="readout=False needs model='network'"):
        TrainConfig(readout=False)
