"""Tests of the trainer on token networks (transformers): compare() against a float64 re-derivation.

One tiny pre-LN transformer (width 16, 2 heads, T = 4 tokens of F = 3 features, 2 blocks with a
GELU MLP) is compiled once per label kind (pooled: one class per sequence; per token: one class
per token) and optimizer; every numeric check compares compare()'s float32 numbers with a float64
jax forward written here from the formulas (the attention loop over heads by hand, layer norm,
exact GELU), on the same initial weights (built with the seed's documented key).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.scipy.special import erf

from initjax import data, modules, training
from initjax.network import Network
from initjax.training import TrainConfig

T, F, C, D, H = 4, 3, 3, 16, 2
SEEDS, KEY = 2, 3
NET = Network.transformer(depth=2, width=D, heads=H, tokens=T, batch=2, mlp=True, mlp_width=32)
BASE = TrainConfig(label="3 steps", model="network", network=NET, optimizer="sgd",
                   learning_rate=0.1, batch_size=32, steps=3, record_every=1, probe_size=32,
                   train_eval_size=96)
ADAM = dataclasses.replace(BASE, optimizer="adam", learning_rate=0.01)


def _step_configs(first: TrainConfig) -> tuple[TrainConfig, ...]:
    """3 and 1 updates of ``first`` and of an arm "b" of it (half the rate, the stem drawn
    otherwise: he_normal W_e, zero positions): configs that differ only in numbers and
    initializers are arms of one program, and the two run lengths share it (no cosine schedule)."""
    b = dataclasses.replace(first, label="b 3 steps", learning_rate=first.learning_rate / 2,
                            embed_init="he_normal", position_std=0.0)
    return (first, dataclasses.replace(first, label="1 step", steps=1),
            b, dataclasses.replace(b, label="b 1 step", steps=1))


# An optimizer per label kind (the loss does not depend on the optimizer, nor the update on the
# labels): SGD for per-token labels, Adam for pooled ones.
STEP_CONFIGS = {True: _step_configs(BASE), False: _step_configs(ADAM)}


def _task(per_token: bool, n_train: int = 192, n_test: int = 32, seed: int = 0) -> data.Dataset:
    """Token t of a sequence carries class c_t in {0, 1, 2} (one-hot, centred, plus noise). Per
    token: label c_t (copy the token); pooled: label c_0 (the first token's class)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    c = rng.integers(0, C, (n, T))
    x = 1.5 * (np.eye(C)[c] - 1.0 / C) + 0.5 * rng.standard_normal((n, T, F))
    x = x.reshape(n, T * F).astype(np.float32)  # flattened examples, read as (T, F) by compare
    y = (c if per_token else c[:, 0]).astype(np.int32)
    return data.Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], C,
                        "tokens" if per_token else "first-token")


# ----------------------------------------------------------------------------------------------
# the float64 reference
# ----------------------------------------------------------------------------------------------


def _weights(model) -> dict:
    """The trained parameters of a built (single-member) token network, by name."""
    p = {"We": model.embed.kernel[...], "P": model.positions[...],
         "Wr": model.readout.kernel[...], "br": model.readout.bias[...]}
    for i, b in enumerate(model.blocks):
        p.update({f"{i}.{k}": v for k, v in {
            "s1": b.attn_norm.scale[...], "b1": b.attn_norm.bias[...],
            "Wq": b.query.kernel[...], "Wk": b.key.kernel[...], "Wv": b.value.kernel[...],
            "Wo": b.out.kernel[...], "s2": b.mlp_norm.scale[...], "b2": b.mlp_norm.bias[...],
            "W1": b.mlp_in.kernel[...], "W2": b.mlp_out.kernel[...]}.items()})
    return {k: np.asarray(v) for k, v in p.items()}


@functools.lru_cache(maxsize=None)
def _initial(cfg: TrainConfig, seed: int) -> dict:
    """Seed ``seed``'s initial weights: the config's network built with fold_in(key, seed)."""
    key = jax.random.fold_in(jax.random.key(KEY, impl="philox2x32"), seed)
    return _weights(cfg.build((T * F,), C, rngs=nnx.Rngs(key)))


def _layer_norm(u, s, b):
    mu = u.mean(-1, keepdims=True)
    var = ((u - mu) ** 2).mean(-1, keepdims=True)
    return (u - mu) / jnp.sqrt(var + 1e-5) * s[None, None] + b[None, None]


def _forward(p, x, scale=None):
    """x (batch, T, F) -> (logits per token (batch, T, C), streams after each block, stream
    entering block 0, attention probabilities (batch, H, T, T) per block), all float64; the
    logit scale ``scale`` (None: 1/sqrt(d_head))."""
    h = x @ p["We"] + p["P"][None]
    h0, streams, probs = h, [], []
    dh = D // H
    for i in range(NET.depth):
        u = _layer_norm(h, p[f"{i}.s1"], p[f"{i}.b1"])
        heads, pl = [], []
        for j in range(H):
            cols = slice(j * dh, (j + 1) * dh)
            q, k, v = (u @ p[f"{i}.{w}"][:, cols] for w in ("Wq", "Wk", "Wv"))
            logits = jnp.einsum("btd,bsd->bts", q, k) * (1 / math.sqrt(dh) if scale is None
                                                          else scale)
            a = jnp.exp(logits - logits.max(-1, keepdims=True))
            a = a / a.sum(-1, keepdims=True)
            heads.append(a @ v)
            pl.append(a)
        h = h + jnp.concatenate(heads, axis=-1) @ p[f"{i}.Wo"]
        u = _layer_norm(h, p[f"{i}.s2"], p[f"{i}.b2"])
        z = u @ p[f"{i}.W1"]
        h = h + (0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))) @ p[f"{i}.W2"]
        streams.append(h)
        probs.append(jnp.stack(pl, axis=1))
    return h @ p["Wr"] + p["br"][None, None], streams, h0, probs


def _loss(p, x, y, scale=None):
    logits, streams, _, _ = _forward(p, x, scale)
    if y.ndim == 1:  # one label per sequence: the readout of the token mean (linear: the same)
        logits = streams[-1].mean(axis=1) @ p["Wr"] + p["br"][None]
    logz = jax.scipy.special.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, y[..., None], axis=-1)[..., 0]
    return jnp.mean(logz - picked)


_grad = jax.jit(jax.value_and_grad(_loss), static_argnums=3)  # under jax.enable_x64: float64


def _reference_run(cfg: TrainConfig, ds: data.Dataset, seed: int, lr_factor=None, scale=None):
    """The minibatch loss of each update and the parameters after it, in float64, for the
    batches compare() documents (``data.batches(x_train, y_train, batch_size, seed=key)``);
    parameter ``k``'s update times ``lr_factor[k]`` (default 1), the logit scale ``scale``."""
    p = {k: jnp.asarray(v, jnp.float64) for k, v in _initial(cfg, seed).items()}
    m = {k: jnp.zeros_like(v) for k, v in p.items()}
    v2 = {k: jnp.zeros_like(v) for k, v in p.items()}
    batches = data.batches(ds.x_train, ds.y_train, cfg.batch_size, seed=KEY)
    losses, params = [], []
    for t in range(1, cfg.steps + 1):
        xb, yb = next(batches)
        loss, g = _grad(p, jnp.asarray(xb.reshape(-1, T, F), jnp.float64), jnp.asarray(yb),
                        scale)
        losses.append(float(loss))
        eta = {k: cfg.learning_rate * (1.0 if lr_factor is None else lr_factor[k]) for k in p}
        if cfg.optimizer == "sgd":
            p = {k: p[k] - eta[k] * g[k] for k in p}
        else:  # Kingma & Ba 2015, bias-corrected, eps outside the square root (optax)
            m = {k: cfg.b1 * m[k] + (1 - cfg.b1) * g[k] for k in p}
            v2 = {k: cfg.b2 * v2[k] + (1 - cfg.b2) * g[k] ** 2 for k in p}
            p = {k: p[k] - eta[k] * (m[k] / (1 - cfg.b1 ** t))
                 / (jnp.sqrt(v2[k] / (1 - cfg.b2 ** t)) + cfg.eps) for k in p}
        params.append({k: np.asarray(v) for k, v in p.items()})
    return losses, params


class _CompileLog(logging.Handler):
    """The names of the programs jax compiles (``jax.log_compiles``)."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def emit(self, record):
        if record.getMessage().startswith("Compiling "):
            self.names.append(record.getMessage().split(" ")[1])


@pytest.fixture(scope="module", params=[True, False], ids=["per_token", "pooled"])
def stepped(request):
    ds = _task(request.param)
    configs = STEP_CONFIGS[request.param]
    log, logger = _CompileLog(), logging.getLogger("jax")
    logger.addHandler(log)
    try:
        with jax.log_compiles(True):
            result = training.compare(configs, ds, seeds=SEEDS, key=KEY, progress=False)
    finally:
        logger.removeHandler(log)
    return ds, configs, result, log.names


def test_four_configs_are_arms_of_one_compiled_program(stepped):
    *_, compiled = stepped
    assert compiled.count("jit(train_interval)") == 1, compiled
    assert compiled.count("jit(measure_one)") == 1, compiled


def test_steps_equal_float64_reference(stepped):
    ds, configs, result, _ = stepped
    with jax.enable_x64(True):
        for seed in range(SEEDS):
            reference = {c.label: _reference_run(c, ds, seed) for c in configs if c.steps == 3}
            for ci, cfg in enumerate(configs):
                losses, params = reference[cfg.label.replace("1 step", "3 steps")]
                rec = result.records[ci]
                # record k's train_loss: the loss of update k, on the parameters before it
                np.testing.assert_allclose(rec.train_loss[seed, 1:], losses[: cfg.steps],
                                           rtol=2e-5, err_msg=cfg.label)
                got = _weights(modules.ensemble_member(result.final_models[ci], seed))
                want = params[cfg.steps - 1]
                for k in want:
                    scale = np.abs(want[k]).max()
                    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5 * scale,
                                               err_msg=f"{cfg.label} seed {seed} {k}")


def test_initial_records_equal_float64_reference(stepped):
    ds, _, result, _ = stepped
    rec = result.records[0]
    rows = result.probe_index[: BASE.probe_size]
    xp = ds.x_train[rows].reshape(-1, T, F).astype(np.float64)
    yp = ds.y_train[rows]
    with jax.enable_x64(True):
        for seed in range(SEEDS):
            p = {k: jnp.asarray(v, jnp.float64) for k, v in _initial(BASE, seed).items()}
            loss, g = _grad(p, jnp.asarray(xp), jnp.asarray(yp))
            _, streams, h0, probs = _forward(p, jnp.asarray(xp))
            np.testing.assert_allclose(rec.train_loss[seed, 0], float(loss), rtol=1e-5)
            test_loss, _ = _grad(p, jnp.asarray(ds.x_test.reshape(-1, T, F), jnp.float64),
                                 jnp.asarray(ds.y_test))
            np.testing.assert_allclose(rec.test_loss[seed, 0], float(test_loss), rtol=1e-5)
            for i, (s, a) in enumerate(zip(streams, probs)):
                s, a = np.asarray(s), np.asarray(a)
                u = s / np.linalg.norm(s, axis=-1, keepdims=True)
                gram = np.einsum("btd,bsd->bts", u, u)
                cos = ((gram.sum((1, 2)) - np.trace(gram, axis1=1, axis2=2)) / (T * (T - 1))).mean()
                ent = -(a * np.log(a)).sum(-1).mean()
                np.testing.assert_allclose(rec.token_cosine[seed, 0, i], cos, rtol=1e-5, atol=1e-6)
                np.testing.assert_allclose(rec.attn_entropy[seed, 0, i], ent, rtol=1e-5)
                np.testing.assert_allclose(rec.act_std[seed, 0, i], s.std(), rtol=1e-5)
                kernels = [f"{i}.{w}" for w in ("Wq", "Wk", "Wv", "Wo", "W1", "W2")]
                gnorm = math.sqrt(sum(float(jnp.sum(g[k] ** 2)) for k in kernels))
                np.testing.assert_allclose(rec.grad_norm[seed, 0, i], gnorm, rtol=1e-4)
            np.testing.assert_allclose(rec.input_percentiles[seed, 0, 0],
                                       np.percentile(np.asarray(h0), training.PERCENTILES),
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(rec.input_percentiles[seed, 0, 1],
                                       np.percentile(np.asarray(streams[0]), training.PERCENTILES),
                                       rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(rec.readout_grad_norm[seed, 0],
                                       float(jnp.linalg.norm(g["Wr"])), rtol=1e-4)
    assert rec.token_cosine.shape == rec.attn_entropy.shape == (SEEDS, 4, NET.depth)
    assert np.all(rec.saturated == 0)
    assert np.all(rec.dead_fraction == 0) and rec.prelu_slope is None


# ----------------------------------------------------------------------------------------------
# learning, uniform attention, resume
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_token", [True, False], ids=["per_token", "pooled"])
def test_each_label_kind_learns(per_token):
    # the two arms of the reference test's program (the steps enter only a cosine schedule's
    # code), so only its 75-update scan is compiled anew; the first arm is checked
    arms = [dataclasses.replace(c, steps=150, record_every=75)
            for c in STEP_CONFIGS[per_token] if c.steps == 3]
    rec = training.compare(arms, _task(per_token), seeds=SEEDS, key=KEY, progress=False)[0]
    assert np.all(rec.diverged_step == -1)
    # chance is log 3 = 1.10 and 1/3; copying a token is near perfect, the first token's class
    # through a mean-pooled readout needs attention (or position) to single it out
    assert np.all(rec.test_loss[:, -1] < 0.7 * rec.test_loss[:, 0])
    assert np.all(rec.test_accuracy[:, -1] > (0.9 if per_token else 0.6))


def test_zero_query_key_kernels_give_uniform_attention():
    net = Network.transformer(depth=1, width=D, heads=H, tokens=T, batch=2, qk_init="zeros")
    cfg = dataclasses.replace(BASE, network=net, steps=1)
    result = training.compare(cfg, _task(False), seeds=SEEDS, key=KEY, progress=False)
    rec = result[0]
    # Q = K = 0: every logit is 0, every attention row uniform, entropy log T (to float32
    # rounding of the log and of the mean over 32 x 2 x 4 rows)
    np.testing.assert_allclose(rec.attn_entropy[:, 0], math.log(T), rtol=1e-5)
    # dL/dW_Q is proportional to K = 0 and dL/dW_K to Q = 0 (Noci et al. 2022): the first update
    # leaves them zero and attention uniform, while the other weights moved
    np.testing.assert_allclose(rec.attn_entropy[:, 1], math.log(T), rtol=1e-5)
    key = jax.random.fold_in(jax.random.key(KEY, impl="philox2x32"), 0)  # seed 0's
    init = cfg.build((T, F), C, rngs=nnx.Rngs(key)).blocks[0]
    final = modules.ensemble_member(result.final_models[0], 0).blocks[0]
    assert not np.any(final.query.kernel[...]) and not np.any(final.key.kernel[...])
    assert not np.allclose(final.value.kernel[...], init.value.kernel[...], atol=0.0, rtol=1e-3)


def test_resume_of_a_token_run_equals_the_uninterrupted_run(stepped, tmp_path):
    ds, configs, full, _ = stepped
    # interrupted after the first interval: arms "3 steps" and "b 3 steps" have done 1 of 3
    with pytest.raises(training.Interrupted):
        training.compare(configs, ds, seeds=SEEDS, key=KEY, out=tmp_path, progress=False,
                         _stop_after=1)
    index = json.loads((tmp_path / "compare.json").read_text())
    run_dir = tmp_path / index["runs"][0]["dir"]
    assert json.loads((run_dir / "status.json").read_text())["step"] == 1
    resumed = training.compare(configs, ds, seeds=SEEDS, key=KEY, out=tmp_path, progress=False)
    for i in range(len(configs)):
        for name in training.Record._fields:
            a, b = getattr(resumed[i], name), getattr(full[i], name)
            if a is None or b is None:
                assert a is None and b is None, name
            else:
                np.testing.assert_array_equal(a, b, err_msg=f"{configs[i].label} {name}")
    with np.load(run_dir / "records.npz") as z:
        assert z["token_cosine"].shape == (SEEDS, 4, NET.depth) and "prelu_slope" not in z.files


# ----------------------------------------------------------------------------------------------
# the stem, the config and refusals (no compilation)
# ----------------------------------------------------------------------------------------------


def test_stem_is_embedding_plus_positions_and_leaves_the_blocks_alone():
    model = modules.build(NET, C, rngs=nnx.Rngs(0), embed_features=F, position_std=0.5)
    plain = modules.build(NET, C, rngs=nnx.Rngs(0))
    x = np.random.default_rng(1).standard_normal((5, T, F)).astype(np.float32)
    with jax.default_matmul_precision("highest"):
        want = x.astype(np.float64) @ np.asarray(model.embed.kernel[...], np.float64)
        want = want + np.asarray(model.positions[...], np.float64)[None]
        np.testing.assert_allclose(model.stem(x), want, rtol=1e-5, atol=1e-6)
    assert model.positions[...].shape == (T, D) and model.embed.kernel[...].shape == (F, D)
    for a, b in zip(jax.tree.leaves(nnx.state((model.blocks, model.readout))),
                    jax.tree.leaves(nnx.state((plain.blocks, plain.readout))), strict=True):
        np.testing.assert_array_equal(a, b)
    # positions ~ N(0, 0.5^2): 64 entries, std of the sample std ~ 0.5 / sqrt(128) = 0.044
    assert abs(float(np.std(model.positions[...])) - 0.5) < 0.15
    with pytest.raises(ValueError, match=r"raw tokens \(batch, 4, 3\)"):
        model.stem(np.zeros((5, T, F + 1), np.float32))
    with pytest.raises(ValueError, match="embed_features=3 is for a token network"):
        modules.build(Network.mlp(1, 8, in_width=12), C, rngs=nnx.Rngs(0), embed_features=F)
    with pytest.raises(ValueError, match="position_std must be >= 0"):
        modules.build(NET, C, rngs=nnx.Rngs(0), embed_features=F, position_std=-1.0)
    with pytest.raises(ValueError, match="readout_lr_multiplier must be > 0"):
        modules.build(NET, C, rngs=nnx.Rngs(0), readout_lr_multiplier=0.0)
    with pytest.raises(ValueError, match="readout_lr_multiplier=2.0 needs a readout"):
        modules.build(NET, None, rngs=nnx.Rngs(0), readout_lr_multiplier=2.0)
    with pytest.raises(ValueError, match="embed_lr_multiplier=2.0"):
        modules.build(NET, C, rngs=nnx.Rngs(0), embed_lr_multiplier=2.0)  # no stem
    with pytest.raises(ValueError, match="embed_lr_multiplier must be > 0"):
        modules.build(NET, C, rngs=nnx.Rngs(0), embed_features=F, embed_lr_multiplier=-1.0)
    with pytest.raises(ValueError, match="lr_multiplier must be > 0"):
        dataclasses.replace(NET.blocks[0], lr_multiplier=0.0)


def test_attention_blocks_have_unit_lr_multipliers():
    model = BASE.build((T, F), C, rngs=nnx.Rngs(0))
    leaves = jax.tree.leaves(model.lr_multipliers())
    assert len(leaves) == len(jax.tree.leaves(nnx.state(model, nnx.Param))) and set(leaves) == {1.0}
    # set ones, by path: an Attention block's kernels, the readout kernel, the stem
    blocks = tuple(dataclasses.replace(b, lr_multiplier=0.5) for b in NET.blocks[:1]) + NET.blocks[1:]
    net = NET.replace(stages=tuple(dataclasses.replace(NET.stages[0], block=b, count=1)
                                   for b in blocks))
    cfg = dataclasses.replace(BASE, network=net, readout_lr_multiplier=0.25,
                              embed_lr_multiplier=2.0)
    mult = cfg.build((T, F), C, rngs=nnx.Rngs(0)).lr_multipliers()
    assert float(mult["blocks"][0]["query"]["kernel"]) == 0.5
    assert float(mult["blocks"][0]["mlp_out"]["kernel"]) == 0.5
    assert float(mult["blocks"][0]["attn_norm"]["scale"]) == 1.0
    assert float(mult["blocks"][1]["query"]["kernel"]) == 1.0
    assert float(mult["readout"]["kernel"]) == 0.25 and float(mult["readout"]["bias"]) == 1.0
    assert float(mult["embed"]["kernel"]) == 2.0 and float(mult["positions"]) == 2.0


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_mup_transformer_steps_equal_reference(optimizer):
    # parametrize + token_heads (muP, base width 8, m = 2), trained by compare(), against the
    # float64 reference with TP5 Table 3's factors written out by hand: Adam: hidden kernels
    # (Q, K, V, O, W_1, W_2) and the readout kernel at lr / m, the rest at lr; SGD: the stem at
    # lr * m, the readout kernel at lr / m, the rest at lr. Logit scale sqrt(d_head0) / d_head.
    from initjax import parametrization

    m, base = 2.0, D // 2
    net = parametrization.parametrize(NET, "mup", base_width=base, optimizer=optimizer)
    heads = parametrization.token_heads("mup", width=D, base_width=base, optimizer=optimizer)
    first = BASE if optimizer == "sgd" else ADAM
    cfg = dataclasses.replace(first, label=f"muP {optimizer}", network=net, **heads)
    assert heads["readout_lr_multiplier"] == 1 / m and heads["kernel_init"].startswith(
        "variance_scaling") and heads["embed_lr_multiplier"] == (m if optimizer == "sgd" else 1.0)
    hidden = ("Wq", "Wk", "Wv", "Wo", "W1", "W2")
    ds = _task(True)
    result = training.compare([cfg], ds, seeds=1, key=KEY, progress=False)
    with jax.enable_x64(True):
        keys = _initial(cfg, 0).keys()
        if optimizer == "adam":
            factor = {k: 1 / m if k.endswith(hidden) or k == "Wr" else 1.0 for k in keys}
        else:
            factor = {k: m if k in ("We", "P") else 1 / m if k == "Wr" else 1.0 for k in keys}
        scale = math.sqrt(base // H) / (D // H)
        assert net.blocks[0].scale(D) == pytest.approx(scale, rel=1e-12)
        losses, params = _reference_run(cfg, ds, 0, factor, scale)
        # without the factors the parameters differ (the check can fail)
        _, plain = _reference_run(cfg, ds, 0, None, scale)
    np.testing.assert_allclose(result.records[0].train_loss[0, 1:], losses, rtol=2e-5)
    got = _weights(modules.ensemble_member(result.final_models[0], 0))
    for k, want in params[-1].items():
        tol = 1e-5 * np.abs(want).max()
        np.testing.assert_allclose(got[k], want, rtol=1e-5, atol=tol, err_msg=k)
    assert max(np.abs(plain[-1][k] - params[-1][k]).max() for k in params[-1]) > 1e-4


def test_warmup_then_constant_schedule():
    cfg = dataclasses.replace(BASE, schedule="warmup_cosine", warmup_steps=4, steps=10,
                              final_lr_fraction=1.0)
    t = np.arange(11)
    np.testing.assert_allclose(cfg.make_schedule()(t), 0.1 * np.minimum(t / 4, 1.0), rtol=1e-6)


def test_new_fields_serialize_and_keep_old_run_identity():
    assert "embed_init" not in BASE.to_dict() and "position_std" not in BASE.to_dict()
    cfg = dataclasses.replace(BASE, embed_init="he_normal", position_std=0.0)
    d = cfg.to_dict()
    assert d["embed_init"] == "he_normal" and d["position_std"] == 0.0
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    # initializers only: the two configs train as arms of one program
    assert training.structure_key(cfg) == training.structure_key(BASE)


@pytest.mark.parametrize("kwargs, match", [
    (dict(position_std=-0.5), "position_std must be >= 0"),
    (dict(embed_init="he_normal", model="mlp", network=None),
     "embed_init='he_normal' needs a token"),
    (dict(position_std=2.0, model="mlp", network=None), "position_std=2.0 needs a token"),
    (dict(readout=False), "readout=False is not available for a token network"),
    (dict(embed_init="nonsense"), "nonsense"),
    (dict(readout_lr_multiplier=0.0), "readout_lr_multiplier must be > 0"),
    (dict(readout_lr_multiplier=0.5, model="mlp", network=None),
     "readout_lr_multiplier=0.5 needs model='network' with readout=True"),
    (dict(embed_lr_multiplier=2.0, model="mlp", network=None), "embed_lr_multiplier=2.0 needs a token"),
    (dict(embed_lr_multiplier=float("nan")), "embed_lr_multiplier"),
])
def test_config_refuses_bad_token_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(BASE, **kwargs)


def test_compare_refuses_bad_token_data():
    ds = _task(True)
    bad_size = ds._replace(x_train=ds.x_train[:, :10], x_test=ds.x_test[:, :10])
    with pytest.raises(ValueError, match="tokens=4, which does not divide the 10 values"):
        training.compare(BASE, bad_size, progress=False)
    mlp = TrainConfig(widths=(8,), batch_size=32, steps=1, record_every=1)
    with pytest.raises(ValueError, match=r"labels of shape \(n, 4\).*model='mlp' without a token"):
        training.compare(mlp, ds, progress=False)
    wrong_t = ds._replace(y_train=ds.y_train[:, :2], y_test=ds.y_test[:, :2])
    with pytest.raises(ValueError, match="tokens=2.*tokens=4"):
        training.compare(BASE, wrong_t, progress=False)
    mixed = ds._replace(y_test=ds.y_test[:, 0])
    with pytest.raises(ValueError, match="one label per example, or both one per token"):
        training.compare(BASE, mixed, progress=False)


def test_token_fields_plot(stepped):
    _, configs, result, _ = stepped
    ax = training.plot_curves(result, "attn_entropy", layer=1)  # a bare Figure: no pyplot state
    assert len(ax.lines) == len(configs)
    np.testing.assert_allclose(ax.lines[0].get_ydata(),
                               np.median(result[0].attn_entropy[:, :, 1], axis=0))
