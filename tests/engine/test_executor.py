"""The executor (initjax.engine.executor): results do not depend on chunks, neighbours, jit or
devices; one compiled program per chunk capacity; no recompilation."""

import jax
import numpy as np

from initjax import propagate
from initjax.engine import LayerStats, MeasureOptions, seed_keys
from initjax.engine.executor import chunk_capacity, compiled_program
from initjax.engine.sampling import as_scaled

from .networks import assert_stats_equal, small


def test_results_identical_across_chunk_sizes_and_neighbours():
    config = small(activation="tanh", init="xavier_normal")
    ref = propagate(config, seeds=5, chunk_size=5).stats
    assert_stats_equal(ref, propagate(config, seeds=5, chunk_size=1).stats)
    assert_stats_equal(ref, propagate(config, seeds=5, chunk_size=2).stats)
    # a seed does not depend on how many seeds run beside it
    first3 = propagate(config, seeds=3).stats
    assert_stats_equal(first3, LayerStats(*(v[:3] for v in ref)))
    offset = propagate(config, seeds=2, seed_offset=3).stats
    assert_stats_equal(offset, LayerStats(*(v[3:] for v in ref)))


def test_unjitted_path_agrees():
    config = small(depth=3, width=16, batch=4, activation="tanh")
    a = propagate(config, seeds=2).stats
    b = propagate(config, seeds=2, jit=False).stats
    for field in ("preact_var", "act_var", "grad_preact_var", "weight_grad_var"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-5)


def test_second_call_does_not_recompile(compiles):
    config = small(depth=3, width=32, activation="softsign")
    propagate(config, seeds=3)
    assert not compiles(lambda: propagate(config, seeds=3))


def test_seed_counts_up_to_a_power_of_two_share_one_program(compiles):
    """Chunks hold the number of seeds rounded up to a power of two (within the memory budget), and
    the program stops after the real seeds: 5, 6 and 7 seeds run one program of capacity 8, whose
    padded slots are never computed (left at zero, where padding by repeating the last seed, as
    before, would have computed it again)."""
    assert [chunk_capacity(s, 100) for s in (1, 2, 3, 5, 8, 9, 100)] == [1, 2, 4, 8, 8, 16, 100]
    assert chunk_capacity(9, 5) == 5 and chunk_capacity(1, 0) == 1
    config = small(depth=3, width=32, activation="elu")
    propagate(config, seeds=5)
    found = compiles(lambda: (propagate(config, seeds=6), propagate(config, seeds=7)))
    assert not [m for m in found if "jit(run)" in m], found  # (key arrays of new lengths do compile)
    assert [m for m in compiles(lambda: propagate(config, seeds=9)) if "jit(run)" in m]  # capacity 16
    scaled, stds = as_scaled((config,))
    opts = MeasureOptions((-1.0, 1.0), (-1.0, 1.0), 40, "normal", True, 0.01)
    fn = compiled_program(scaled, opts, False, 1, "philox2x32", 1)
    keys = jax.random.key_data(seed_keys(jax.random.key(0, impl="philox2x32"), np.arange(4)))
    (out,) = fn(keys, None, stds, np.int32(2))
    assert np.all(np.asarray(out.preact_var)[:2] > 0) and np.all(np.asarray(out.preact_var)[2:] == 0)


MULTI_DEVICE_SCRIPT = """
import numpy as np, jax
from initjax import NetworkConfig, propagate
from initjax.engine import LayerStats
assert jax.device_count() == 4
c = NetworkConfig(depth=3, width=32, batch=4, init="xavier_normal", activation="tanh")
one = propagate(c, seeds=6, prng_impl="threefry2x32").stats
four = propagate(c, seeds=6, prng_impl="threefry2x32", devices="all").stats  # 2 slots per device, one idle
# one seed per device per chunk: the second chunk fills two of the four devices
chunked = propagate(c, seeds=6, prng_impl="threefry2x32", devices="all", chunk_size=1).stats
for f in LayerStats._fields:
    np.testing.assert_allclose(getattr(four, f), getattr(one, f), rtol=1e-5, atol=1e-7, err_msg=f)
    np.testing.assert_allclose(getattr(chunked, f), getattr(one, f), rtol=1e-5, atol=1e-7, err_msg=f)
try:
    propagate(c, seeds=2, devices=4)
    raise SystemExit("philox on 4 devices was not refused")
except ValueError as e:
    assert "threefry2x32" in str(e)
print("OK")
"""


def test_seeds_sharded_over_four_devices_match_one_device():
    """4 simulated CPU devices (XLA_FLAGS must be set before jax starts: a subprocess). The random
    numbers are identical; statistics agree to float summation order (the devices share threads)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", MULTI_DEVICE_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "OK" in done.stdout, done.stderr[-3000:]
