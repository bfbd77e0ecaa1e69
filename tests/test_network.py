"""The network description: validation, derived widths, JSON round trips, and NetworkConfig as
the constructor of its plain-MLP case."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from initjax import initializers, modules
from initjax.config import NetworkConfig, as_config
from initjax.network import (
    Dense,
    Network,
    Repeat,
    Residual,
    block_from_dict,
    fixup,
    register_block,
)


def _residual(depth=6, width=32, **kwargs):
    branch = (Dense(width, "he_normal", "relu"), Dense(width, "he_normal", "identity"))
    return Network(width, (Repeat(Residual(branch, **kwargs), depth),))


CONFIGS = [
    NetworkConfig(depth=10, width=64),
    NetworkConfig(depth=3, width=(8, 16, 16), in_width=4, init="normal:stddev=0.05",
                  activation="leaky_relu:negative_slope=0.2", bias_init="normal:stddev=0.1",
                  norm="batch", norm_placement="after", norm_eps=1e-3, batch=4,
                  input_variance=2.0, input_correlation=0.5, dtype="float64", label="x"),
    NetworkConfig(depth=1, width=7, norm="layer"),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_config_is_the_constructor_of_a_plain_network(config):
    network = config.network
    assert network.is_plain and network.depth == config.depth
    assert network.widths == config.widths
    for block, shape in zip(network.blocks, config.weight_shapes):
        assert block.width == shape[1]
        assert (block.init, block.activation, block.bias_init) == (
            config.init, config.activation, config.bias_init)
        assert (block.norm, block.norm_position, block.norm_eps) == (
            config.norm, config.norm_placement, config.norm_eps)
    assert NetworkConfig.from_network(network) == config
    assert as_config(network) == config and as_config(config) is config
    assert Network.from_json(network.to_json()) == network


def test_equal_widths_are_one_repeated_stage():
    """Depth is a scan over a repeated block: 100 equal layers are one stage, not 100."""
    network = NetworkConfig(depth=100, width=32).network
    assert len(network.stages) == 1 and network.stages[0].count == 100
    ragged = NetworkConfig(depth=4, width=32, in_width=8).network
    assert [s.count for s in ragged.stages] == [4]
    assert Network.mlp(4, 32, in_width=8).widths == (8, 32, 32, 32, 32)


def test_residual_network_round_trips_and_hashes():
    net = _residual(alpha="1/sqrt(depth)", learnable=True, norm="rms", norm_position="post")
    again = Network.from_dict(json.loads(json.dumps(net.to_dict())))
    assert again == net and hash(again) == hash(net)
    assert {net, again} == {net}
    assert net.widths == (32,) * 7 and net.residual_depth == 6 and not net.is_plain
    assert net.branch_scale(net.stages[0].block) == pytest.approx(1 / math.sqrt(6), rel=1e-15)
    assert _residual(alpha=0.0).branch_scale(_residual(alpha=0.0).stages[0].block) == 0.0


def test_multipliers_are_part_of_the_description():
    layer = Dense(16, multiplier=0.25, lr_multiplier=4.0)
    assert Dense.from_dict(layer.to_dict()) == layer
    assert layer != dataclasses.replace(layer, lr_multiplier=1.0)
    net = Network(16, (Repeat(layer, 3),))
    with pytest.raises(ValueError, match="multiplier 0.25"):
        NetworkConfig.from_network(net)


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: Dense(0), ValueError, "width must be >= 1, got 0"),
        (lambda: Dense(4, norm="group"), ValueError, "norm must be one of .*'group'"),
        (lambda: Dense(4, norm_position="pre"), ValueError, "norm_position must be one of"),
        (lambda: Dense(4, multiplier=0.0), ValueError, "multiplier must be > 0.0"),
        (lambda: Dense(4, lr_multiplier=float("nan")), ValueError, "lr_multiplier must be finite"),
        (lambda: Dense(4, init="no_such_init"), ValueError, "no_such_init"),
        (lambda: Dense(4, activation="no_such_act"), ValueError, "no_such_act"),
        (lambda: Residual(()), TypeError, "non-empty sequence of Dense"),
        (lambda: Residual((Dense(4), "dense")), TypeError, r"branch\[1\] must be a Dense"),
        (lambda: Residual((Dense(4),), alpha="1/depth"), ValueError, "alpha must be one of"),
        (lambda: Residual((Dense(4),), alpha=math.inf), ValueError, "alpha must be finite"),
        (lambda: Residual((Dense(4),), norm_position="before"), ValueError, "'pre', 'post'"),
        (lambda: Residual((Dense(4),), learnable=1), TypeError, "learnable must be a bool"),
        (lambda: Repeat(Dense(4), 0), ValueError, "count must be >= 1, got 0"),
        (lambda: Repeat("dense", 2), TypeError, "block must be one of"),
        (lambda: Network(0, (Dense(4),)), ValueError, "in_width must be >= 1"),
        (lambda: Network(4, ()), TypeError, "non-empty sequence of Repeat"),
        (lambda: Network(4, (Repeat(Residual((Dense(8),)), 2),)), ValueError,
         r"stages\[0\]: a residual branch must end at the stream width 4, .* width 8"),
        (lambda: Network(4, (Dense(4, norm="batch"),), batch=1), ValueError, "batch >= 2"),
        (lambda: Network(4, (Dense(4),), input_correlation=1.5), ValueError, "input_correlation"),
        (lambda: Network(4, (Dense(4),), dtype="int32"), TypeError, "floating dtype"),
        (lambda: as_config("mlp"), TypeError, "NetworkConfig or Network, got str"),
        (lambda: as_config(_residual()), ValueError, "block 0 is a residual block"),
        (lambda: Network.from_dict({"in_width": 4, "stages": [], "depth": 3}), ValueError,
         r"unknown Network fields \['depth'\]"),
        (lambda: block_from_dict({"kind": "mamba"}), ValueError, "kind' must be one of"),
        # issue 14's list: a negative or NaN branch scale, Fixup without residual blocks, an unknown
        # norm position; and the new fields
        (lambda: Residual((Dense(4),), alpha=-0.5), ValueError, "alpha must be >= 0.0, got -0.5"),
        (lambda: Residual((Dense(4),), alpha=math.nan), ValueError, "alpha must be finite, got nan"),
        (lambda: fixup(Network.mlp(3, 4)), ValueError, "Fixup needs residual blocks"),
        (lambda: fixup(Network.residual_mlp(2, 4)), ValueError, "m >= 2 layers"),
        (lambda: fixup(Network.residual_mlp(2, 4, branch_layers=2), base_init="xavier_normal"),
         ValueError, "base_init must be 'he_normal' or 'he_uniform'"),
        (lambda: Residual((Dense(4),), norm_position="middle"), ValueError, "norm_position must be one of 'pre', 'post'"),
        (lambda: Residual((Dense(4),), beta="measured"), ValueError, "beta must be one of 'none', 'expected'"),
        (lambda: Residual((Dense(4),), scalar_biases="yes"), TypeError, "scalar_biases must be a bool"),
        (lambda: Dense(4, preactivation=None), TypeError, "preactivation must be a bool"),
        (lambda: Network.residual_mlp(3, 4, branch_layers=3), ValueError, "branch_layers must be one of 1, 2"),
        (lambda: as_config(Network(4, (Dense(4, preactivation=True),))), ValueError, "preactivation=True"),
    ],
)
def test_bad_descriptions_are_refused_naming_the_value(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_mixed_layers_cannot_be_a_config():
    net = Network(8, (Repeat(Dense(8, activation="tanh"), 2), Repeat(Dense(8, activation="relu"), 2)))
    with pytest.raises(ValueError, match="layer 2 has activation=Activation\\('relu'\\)"):
        NetworkConfig.from_network(net)
    rms = Network(8, (Repeat(Dense(8, norm="rms"), 2),))
    with pytest.raises(ValueError, match="norm must be one of"):
        NetworkConfig.from_network(rms)


def test_user_initializer_is_usable_but_not_serializable():
    def my_init(key, shape, dtype=None):
        return initializers.get("he_normal")(key, shape, dtype)

    net = Network(4, (Dense(4, init=my_init),))
    data = net.to_dict()
    assert data["stages"][0]["block"]["init"] == "custom:my_init"
    with pytest.raises(ValueError, match="cannot be rebuilt from JSON"):
        Network.from_dict(data)


def test_a_new_block_kind_plugs_in():
    """The slot the attention block (issue 15) takes: a registered kind is a valid stage and
    round-trips through JSON; an unregistered or malformed class is refused."""

    @dataclasses.dataclass(frozen=True)
    class Scale:
        kind = "test_scale"
        factor: float = 2.0

        def out_width(self, in_width):
            return in_width

        def to_dict(self):
            return {"kind": self.kind, "factor": self.factor}

        @classmethod
        def from_dict(cls, data):
            return cls(data["factor"])

    with pytest.raises(TypeError, match="block must be one of"):
        Repeat(Scale())
    register_block(Scale)
    net = Network(4, (Repeat(Dense(4), 2), Repeat(Scale(0.5), 3)))
    assert Network.from_json(net.to_json()) == net and net.depth == 5
    with pytest.raises(ValueError, match="block 2 is a test_scale block"):
        NetworkConfig.from_network(net)
    with pytest.raises(ValueError, match="kind 'dense' is taken"):
        register_block(type("Other", (Scale,), {"kind": "dense"}))
    with pytest.raises(TypeError, match="class attribute 'kind'"):
        register_block(type("NoKind", (), {}))


# -- built: initjax.modules.build -------------------------------------------------------------


def _np_norm(kind, x, eps):
    x = np.asarray(x, np.float64)
    if kind == "layer":
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    if kind == "rms":
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps)
    assert kind == "none"
    return x


def _np_dense(layer, p, x):
    h = layer.multiplier * (x @ np.asarray(p.kernel[...], np.float64)) + np.asarray(p.bias[...])
    act = {"relu": lambda u: np.maximum(u, 0), "tanh": np.tanh, "identity": lambda u: u}
    if layer.norm_position == "before":
        return act[layer.activation.spec](_np_norm(layer.norm, h, layer.norm_eps))
    return _np_norm(layer.norm, act[layer.activation.spec](h), layer.norm_eps)


@pytest.mark.parametrize("norm, position", [("layer", "pre"), ("rms", "post"), ("none", "pre")])
def test_built_residual_network_equals_a_float64_rederivation(norm, position):
    branch = (Dense(16, "he_normal", "relu", bias_init="normal:stddev=0.1", multiplier=0.5),
              Dense(16, "he_normal", "identity", norm="layer", norm_position="after"))
    net = Network(16, (Repeat(Dense(16, "lecun_normal", "tanh"), 1),
                       Repeat(Residual(branch, alpha="1/sqrt(depth)", norm=norm,
                                       norm_position=position), 4)))
    model = modules.build(net, out_features=3, rngs=nnx.Rngs(1))
    x = np.asarray(jax.random.normal(jax.random.key(2), (5, 16)), np.float64)
    with jax.default_matmul_precision("highest"):
        y, inter = model(jnp.asarray(x, jnp.float32), return_intermediates=True)
    h = _np_dense(net.blocks[0], model.blocks[0], x)
    for block in model.blocks[1:]:
        z = _np_norm(norm, h, 1e-5) if position == "pre" else h
        for layer, p in zip(branch, block.branch):
            z = _np_dense(layer, p, z)
        h = h + z / 2.0  # alpha = 1/sqrt(4 residual blocks)
        h = _np_norm(norm, h, 1e-5) if position == "post" else h
    want = h @ np.asarray(model.readout.kernel[...], np.float64)
    np.testing.assert_allclose(inter["hidden"][-1], h, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(y, want, rtol=2e-5, atol=2e-5)
    assert len(inter["hidden"]) == net.depth


def test_built_kernels_follow_the_layers_initializers():
    """Var of a he_normal kernel is 2/fan_in: 512 x 256 entries, sd of the sample variance
    sqrt(2/n) = 0.4% relative; 5 sd."""
    net = Network(512, (Dense(256, "he_normal", "relu"), Dense(256, "normal:stddev=0.05", "tanh")))
    model = modules.build(net, rngs=nnx.Rngs(0))
    k0, k1 = (np.asarray(b.kernel[...]) for b in model.blocks)
    assert k0.shape == (512, 256) and k1.shape == (256, 256)
    assert np.var(k0) == pytest.approx(2 / 512, rel=5 * math.sqrt(2 / k0.size))
    assert np.var(k1) == pytest.approx(0.05**2, rel=5 * math.sqrt(2 / k1.size))


def test_learnable_branch_scale_is_a_parameter_starting_at_alpha():
    skipinit = Network(8, (Repeat(Residual((Dense(8, "he_normal", "relu"),), alpha=0.0,
                                           learnable=True), 2),))
    model = modules.build(skipinit, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 8))
    np.testing.assert_array_equal(model(x), x)  # alpha = 0: every block is the identity
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    assert float(jnp.abs(grads.blocks[0].alpha[...])) > 0
    fixed = modules.build(skipinit.replace(stages=(Repeat(Residual(
        (Dense(8, "he_normal", "relu"),), alpha=0.0), 2),)), rngs=nnx.Rngs(0))
    n_params = lambda m: sum(v.size for v in jax.tree.leaves(nnx.state(m, nnx.Param)))  # noqa: E731
    assert n_params(model) == n_params(fixed) + 2


def test_a_config_builds_the_same_layers():
    config = NetworkConfig(depth=3, width=32, in_width=8, init="he_normal", activation="relu",
                           norm="batch", batch=4)
    model = modules.build(config, out_features=2, rngs=nnx.Rngs(0))
    assert [b.kernel[...].shape for b in model.blocks] == list(config.weight_shapes)
    assert all(isinstance(b.norm, modules.BatchNorm) for b in model.blocks)
    assert model(jnp.ones((4, 8))).shape == (4, 2)


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (("mlp",), {}, TypeError, "Network or NetworkConfig, got str"),
        ((Network(4, (Dense(4),)), 0), {}, ValueError, "out_features must be >= 1"),
        ((Network(4, (Dense(4),)),), {"batchnorm_kwargs": {"momentum": 0.9}}, ValueError,
         "need norm='batch'"),
    ],
)
def test_build_refuses_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        modules.build(*args, rngs=nnx.Rngs(0), **kwargs)


def test_build_rejects_input_of_the_wrong_width():
    model = modules.build(Network(4, (Dense(4),)), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"expects inputs \(\.\.\., 4\), got shape \(2, 5\)"):
        model(jnp.ones((2, 5)))
