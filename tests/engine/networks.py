"""Small networks and an exact comparison shared by the engine tests."""

import numpy as np

from initjax import NetworkConfig
from initjax.engine import LayerStats


def small(**kw) -> NetworkConfig:
    """A 4-layer, 64-wide ReLU/He network of batch 8, with ``kw`` changed."""
    base = dict(depth=4, width=64, batch=8, init="he_normal", activation="relu")
    base.update(kw)
    return NetworkConfig(**base)


def assert_stats_equal(a: LayerStats, b: LayerStats) -> None:
    """Every field bitwise equal (NaN equal to NaN)."""
    for field in LayerStats._fields:
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
