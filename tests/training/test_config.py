"""Tests of initjax.training.config: TrainConfig, its JSON, schedules, optimizers and errors."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from initjax.training import TrainConfig, make_optimizer, structure_key
from initjax.training.config import NUMERIC_FIELDS

from .configs import CFG_A, CFG_B, CFG_C


def test_config_json_round_trip_and_hashable():
    cfgs = [CFG_A, CFG_B, CFG_C,
            TrainConfig(model="cnn", widths=(8, 8), downsample_at=(1,), norm="batch",
                        optimizer="adam", schedule="warmup_cosine", warmup_steps=10,
                        bn_momentum=0.9),
            TrainConfig(schedule="step", decay_every=100, decay_rate=0.5)]
    for cfg in cfgs:
        assert TrainConfig.from_json(cfg.to_json()) == cfg
        assert hash(TrainConfig.from_dict(json.loads(cfg.to_json()))) == hash(cfg)
    assert TrainConfig(widths=[5, 6]).widths == (5, 6)


def test_schedules_and_optimizers():
    step = TrainConfig(learning_rate=1.0, schedule="step", decay_every=10, decay_rate=0.5)
    sched = step.make_schedule()
    assert [float(sched(t)) for t in (0, 9, 10, 25)] == [1.0, 1.0, 0.5, 0.25]
    expo = dataclasses.replace(step, schedule="exponential").make_schedule()
    np.testing.assert_allclose(float(expo(5)), 0.5**0.5, rtol=1e-6)
    cos = TrainConfig(learning_rate=2.0, schedule="cosine", steps=100).make_schedule()
    np.testing.assert_allclose([float(cos(t)) for t in (0, 50, 100)], [2.0, 1.0, 0.0], atol=1e-6)
    warm = TrainConfig(learning_rate=1.0, schedule="warmup_cosine", warmup_steps=10,
                       steps=110).make_schedule()
    np.testing.assert_allclose([float(warm(t)) for t in (0, 5, 10, 60, 110)],
                               [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)
    # Momentum SGD by hand: v <- 0.9 v + g, p <- p - lr v.
    tx = TrainConfig(optimizer="momentum", learning_rate=0.5, momentum=0.9).make_optimizer()
    p, s = jnp.array([1.0]), None
    s = tx.init(p)
    u1, s = tx.update(jnp.array([2.0]), s, p)
    u2, s = tx.update(jnp.array([2.0]), s, p)
    np.testing.assert_allclose([float(u1[0]), float(u2[0])], [-1.0, -0.5 * 3.8], rtol=1e-6)
    np.testing.assert_array_equal(TrainConfig(steps=250, record_every=100).record_steps,
                                  [0, 100, 200, 250])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"optimizer": "rmsprop"}, ValueError, "'sgd', 'momentum', 'nesterov', 'adam'"),
        ({"schedule": "linear"}, ValueError, "schedule must be one of"),
        ({"steps": 0}, ValueError, "steps must be >= 1"),
        ({"record_every": 0}, ValueError, "record_every must be >= 1"),
        ({"steps": 10, "record_every": 11}, ValueError, "record_every must be <= steps=10"),
        ({"learning_rate": 0.0}, ValueError, "learning_rate must be > 0"),
        ({"learning_rate": float("nan")}, ValueError, "learning_rate must be finite"),
        ({"momentum": 1.0}, ValueError, r"momentum must be in \[0, 1\)"),
        ({"widths": ()}, ValueError, "widths must not be empty"),
        ({"widths": (10, 0)}, ValueError, r"widths\[1\] must be >= 1"),
        ({"widths": 10}, TypeError, "widths must be a sequence"),
        ({"activation": "swoosh"}, ValueError, "prelu_learned"),
        ({"activation": "prelu_learned:slope=2"}, ValueError, "init_slope"),
        ({"kernel_init": "nope"}, ValueError, "nope"),
        ({"kernel_init": jnp.zeros}, TypeError, "registry spec string"),
        ({"norm": "group"}, ValueError, "norm"),
        ({"model": "cnn", "norm": "layer"}, ValueError, "norm"),
        ({"model": "resnet"}, ValueError, "model must be one of 'mlp', 'cnn'"),
        ({"downsample_at": (0,)}, ValueError, "needs model='cnn'"),
        ({"norm": "batch", "batch_size": 1}, ValueError, "batch_size >= 2"),
        ({"bn_momentum": 0.9}, ValueError, "need norm='batch'"),
        ({"norm": "batch", "bn_momentum": 1.5}, ValueError, r"bn_momentum must be in \(0, 1\)"),
        ({"bn_convention": "keras"}, ValueError, "'flax', 'pytorch'"),
        ({"schedule": "step"}, ValueError, "needs decay_every"),
        ({"decay_every": 10}, ValueError, "needs schedule 'step' or 'exponential'"),
        ({"warmup_steps": 5}, ValueError, "needs schedule='warmup_cosine'"),
        ({"schedule": "warmup_cosine", "warmup_steps": 10, "steps": 10}, ValueError, "< steps"),
        ({"same_batches": 1}, TypeError, "same_batches"),
        ({"label": 3}, TypeError, "label"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an integer"),
    ],
)
def test_config_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**kwargs)


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"lr": 0.1})




def test_structure_key_ignores_numbers_label_and_initializers():
    a = TrainConfig(label="a", learning_rate=0.1, momentum=0.5, kernel_init="he_normal")
    b = dataclasses.replace(a, label="b", learning_rate=3.0, momentum=0.0, b1=0.5, eps=1e-3,
                            kernel_init="normal:stddev=0.1", bias_init="ones")
    assert structure_key(a) == structure_key(b)
    for change in ({"widths": (5,)}, {"activation": "tanh"}, {"optimizer": "adam"},
                   {"steps": 2000}, {"record_every": 50}, {"norm": "batch"},
                   {"schedule": "cosine"}, {"probe_size": 100}, {"same_batches": False}):
        assert structure_key(dataclasses.replace(a, **change)) != structure_key(a), change
    assert set(a.numbers()) == set(NUMERIC_FIELDS)
    assert a.numbers()["learning_rate"] == 0.1


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
@pytest.mark.parametrize("schedule", ["constant", "cosine", "warmup_cosine", "step"])
def test_optimizer_with_traced_numbers_equals_optax(optimizer, schedule):
    """make_optimizer with the numbers as (jitted) arrays gives optax's own optimizer's updates."""
    extra = {"warmup_cosine": {"warmup_steps": 3}, "step": {"decay_every": 2, "decay_rate": 0.5}}
    cfg = TrainConfig(optimizer=optimizer, schedule=schedule, learning_rate=0.3, momentum=0.8,
                      b1=0.7, b2=0.9, eps=1e-3, steps=8, record_every=1,
                      final_lr_fraction=0.1, **extra.get(schedule, {}))
    lr = {"constant": optax.constant_schedule(0.3),
          "cosine": optax.cosine_decay_schedule(0.3, 8, alpha=0.1),
          "warmup_cosine": optax.warmup_cosine_decay_schedule(0.0, 0.3, 3, 8, end_value=0.03),
          "step": optax.exponential_decay(0.3, 2, 0.5, staircase=True)}[schedule]
    ref = {"sgd": lambda: optax.sgd(lr), "momentum": lambda: optax.sgd(lr, momentum=0.8),
           "nesterov": lambda: optax.sgd(lr, momentum=0.8, nesterov=True),
           "adam": lambda: optax.adam(lr, b1=0.7, b2=0.9, eps=1e-3)}[optimizer]()

    def run(numbers, p):
        tx = make_optimizer(cfg, numbers)
        s = tx.init(p)
        out = []
        for t in range(8):
            u, s = tx.update(jnp.sin(p + t), s, p)
            p = optax.apply_updates(p, u)
            out.append(p)
        return jnp.stack(out)

    p0 = jnp.array([0.5, -1.0, 2.0])
    got = jax.jit(run)({k: jnp.float32(v) for k, v in cfg.numbers().items()}, p0)
    s, p, want = ref.init(p0), p0, []
    for t in range(8):
        u, s = ref.update(jnp.sin(p + t), s, p)
        p = optax.apply_updates(p, u)
        want.append(p)
    np.testing.assert_allclose(got, jnp.stack(want), rtol=2e-5, atol=1e-6)


def test_an_mlp_config_states_its_network_and_builds_the_same_model():
    """The trainer's MLP is stated in the one description: built from ``cfg.network`` and given
    the MLP's parameters, it computes the same function as ``cfg.build`` (the two draw their
    parameters in another order: the MLP draws every Linear layer before its norms)."""
    import jax
    import numpy as np
    from flax import nnx

    from initjax import modules
    from initjax.network import Dense, Residual

    cfg = TrainConfig(widths=(32, 32, 16), activation="tanh", kernel_init="he_normal",
                      norm="layer", residual=True, batch_size=8)
    net = cfg.as_network(12)
    assert [type(b) for b in net.blocks] == [Dense, Residual, Dense]
    assert net.widths == (12, 32, 32, 16)
    built = modules.build(net, 10, readout_init=cfg.kernel_init, rngs=nnx.Rngs(3))
    mlp = cfg.build((12,), 10, rngs=nnx.Rngs(3))
    for block, linear in zip(built.blocks, mlp.layers):
        dense = block.branch[0] if isinstance(block, modules.ResidualBlock) else block
        dense.kernel[...], dense.bias[...] = linear.kernel[...], linear.bias[...]
    built.readout.kernel[...], built.readout.bias[...] = mlp.readout.kernel[...], mlp.readout.bias[...]
    x = jax.random.normal(jax.random.key(0), (8, 12))
    with jax.default_matmul_precision("highest"):
        # float32: the two layer norms round their variance differently (~1e-6 per layer)
        np.testing.assert_allclose(built(x), mlp(x), rtol=1e-4, atol=2e-5)
    assert TrainConfig(norm="none") == TrainConfig(norm=None)
    with pytest.raises(ValueError, match="only model='mlp'"):
        TrainConfig(model="cnn", widths=(4,)).as_network(3)
    with pytest.raises(ValueError, match="in_features must be >= 1"):
        cfg.as_network(0)


def test_networks_the_trainer_does_not_take_yet_are_refused_by_name():
    """A spatial network (conv blocks) is refused with what it has, not with a misleading
    input-width mismatch later; a token network is refused only with readout=False."""
    from initjax.network import Conv, Network

    with pytest.raises(ValueError, match="readout=False is not available for a token network"):
        TrainConfig(model="network", network=Network.transformer(2, 8, 2, 8, batch=4),
                    readout=False)
    with pytest.raises(ValueError, match="spatial"):
        TrainConfig(model="network", network=Network(3, (Conv(4, 3),), spatial=(4, 4)))
