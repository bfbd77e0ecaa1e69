"""The engine measures a plain Network description exactly as the NetworkConfig that constructs it."""

import numpy as np
import pytest

from initjax import NetworkConfig, propagate, propagate_shared, trace
from initjax.network import Dense, Network, Repeat, Residual

CONFIG = NetworkConfig(depth=3, width=(32, 16, 16), in_width=8, batch=4, init="he_normal",
                       activation="relu", bias_init="normal:stddev=0.1")


def test_a_plain_network_is_measured_as_its_config():
    by_config = propagate(CONFIG, seeds=2, key=3)
    by_network = propagate(CONFIG.network, seeds=2, key=3)
    assert by_network.config == CONFIG
    for field in by_config.stats._fields:
        np.testing.assert_array_equal(getattr(by_network.stats, field), getattr(by_config.stats, field))
    shared = propagate_shared([CONFIG.network, CONFIG.replace(activation="tanh")], seeds=2, key=3)
    # shared configs multiply one stacked draw: equal to float32 rounding, as documented
    np.testing.assert_allclose(shared[0].stats.act_var, by_config.stats.act_var, rtol=1e-5)
    np.testing.assert_array_equal(trace(CONFIG.network, key=3)["h"][2], trace(CONFIG, key=3)["h"][2])


def test_a_residual_description_goes_to_the_block_engine_and_bad_entries_are_refused_by_name():
    residual = Network(8, (Repeat(Residual((Dense(8),)), 2),))
    assert type(propagate(residual, seeds=1)).__name__ == "BlockPropagation"
    with pytest.raises(ValueError, match="block 0 is a residual block"):
        propagate_shared([residual], seeds=1)
    with pytest.raises(TypeError, match=r"configs\[1\] must be an initjax NetworkConfig or Network"):
        propagate_shared([CONFIG, "mlp"], seeds=1)
