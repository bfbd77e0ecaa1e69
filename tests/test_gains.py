"""initjax.gains.calculate_gain against PyTorch's table (REFERENCES.md), written out by hand."""

from __future__ import annotations

import math

import pytest

from initjax import gains
from initjax import initializers as inits

# (nonlinearity, param, expected gain): the closed forms of torch.nn.init.calculate_gain.
GAIN_TABLE = [
    ("linear", None, 1.0),
    ("conv1d", None, 1.0),
    ("conv2d", None, 1.0),
    ("conv3d", None, 1.0),
    ("conv_transpose1d", None, 1.0),
    ("conv_transpose2d", None, 1.0),
    ("conv_transpose3d", None, 1.0),
    ("identity", None, 1.0),
    ("sigmoid", None, 1.0),
    ("tanh", None, 5.0 / 3.0),
    ("relu", None, math.sqrt(2.0)),
    # He et al. 2015: the forward factor of a leaky/PReLU layer is (1 + a^2) / 2.
    ("leaky_relu", None, math.sqrt(2.0 / (1.0 + 0.01**2))),  # default slope a = 0.01
    ("leaky_relu", 0.2, math.sqrt(2.0 / 1.04)),
    ("leaky_relu", 0.0, math.sqrt(2.0)),  # a = 0 is ReLU
    ("leaky_relu", 1.0, 1.0),  # a = 1 is linear
    ("leaky_relu", 1, 1.0),  # an int slope is fine
    ("leaky_relu", -0.5, math.sqrt(2.0 / 1.25)),
    ("selu", None, 0.75),  # PyTorch's empirical 3/4, not the paper's 1
    ("tanh", 0.3, 5.0 / 3.0),  # param is ignored outside leaky_relu, as in PyTorch
]


@pytest.mark.parametrize("nonlinearity, param, expected", GAIN_TABLE)
def test_gain_table(nonlinearity, param, expected):
    gain = gains.calculate_gain(nonlinearity, param)
    assert isinstance(gain, float)
    assert gain == pytest.approx(expected, rel=1e-15)


def test_every_supported_name_is_in_the_table():
    assert set(gains.NONLINEARITIES) == {row[0] for row in GAIN_TABLE}


def test_leaky_default_is_001():
    assert gains.calculate_gain("leaky_relu") == gains.calculate_gain("leaky_relu", 0.01)


@pytest.mark.parametrize("bad", ["gelu", "ReLU", "softplus", "", None, 3])
def test_unknown_nonlinearity_lists_supported(bad):
    with pytest.raises(ValueError, match="unsupported nonlinearity") as err:
        gains.calculate_gain(bad)
    for name in ("linear", "conv_transpose3d", "tanh", "relu", "leaky_relu", "selu"):
        assert name in str(err.value)


@pytest.mark.parametrize("param", [True, False, "0.1", [0.1], math.inf, math.nan])
def test_bad_leaky_param(param):
    with pytest.raises(ValueError, match="leaky_relu"):
        gains.calculate_gain("leaky_relu", param)


@pytest.mark.parametrize(
    "nonlinearity, param, gain",
    [
        ("relu", None, math.sqrt(2.0)),
        ("tanh", None, 5.0 / 3.0),
        ("leaky_relu", 0.2, math.sqrt(2.0 / 1.04)),
        ("selu", None, 0.75),
    ],
)
def test_he_normal_uses_the_gain(nonlinearity, param, gain):
    """he_normal, gain=None: std = calculate_gain(...) / sqrt(fan_in), E[W^2] = gain^2 / fan_in."""
    init = inits.he_normal(nonlinearity=nonlinearity, param=param)
    assert init.second_moment((100, 10)) == pytest.approx(gain**2 / 100, rel=1e-12)
    assert init.gaussian_std((100, 10)) == pytest.approx(gain / 10, rel=1e-12)
