"""The executor: seeds in chunks, lanes, devices and the memory budget, above the samplers.

* Seeds are a vmapped key axis: seed ``s`` uses ``fold_in(key, s)``, so its numbers do not depend
  on how many seeds run beside it or on the chunk size. Seeds run in chunks sized to a memory
  budget (:func:`plan_chunks`); every chunk has the same size (the last is padded, and the program
  stops before the padding), so one compiled program serves them all, and any other number of
  seeds up to the same power of two (:func:`chunk_capacity`).
* Inside a chunk, seeds are vmapped :func:`default_lanes` at a time and a loop walks over the
  lane groups (:func:`compiled_program`); with several devices the chunk is split over a
  one-axis mesh by ``jax.shard_map``, each device running that same program on its share.
* The sampler (:data:`SAMPLERS`, by ``MeasureOptions.method``) supplies one seed's statistics;
  the executor never looks inside it.
"""

from __future__ import annotations

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from initjax._checks import check_float, check_int
from initjax._io import progress_bar
from initjax.config import NetworkConfig
from initjax.engine import dense, fast
from initjax.engine.stats import LayerStats, MeasureOptions

__all__ = [
    "DEFAULT_BUDGET",
    "SAMPLERS",
    "check_host_memory",
    "lane_loop",
    "chunk_capacity",
    "compiled_program",
    "default_lanes",
    "device_count",
    "plan_chunks",
    "resolve_budget",
    "run_chunks",
    "run_unjitted",
    "shard_seeds",
    "to_host",
]

DEFAULT_BUDGET = 2 * 2**30  # bytes of temporaries per chunk of seeds; INITJAX_MEMORY_BUDGET overrides

# the samplers by MeasureOptions.method (the ``method`` argument of propagate)
SAMPLERS = {s.name: s for s in (dense.SAMPLER, fast.SAMPLER)}


@functools.lru_cache(maxsize=64)
def compiled_program(
    configs: tuple[NetworkConfig, ...],
    opts: MeasureOptions,
    with_inputs: bool,
    lanes: int,
    impl: str,
    n_devices: int,
):
    """One jit-compiled program per (configs, options): seeds are vmapped ``lanes`` at a time, and
    a loop walks over groups of lanes. Every seed therefore runs through the same compiled
    ``lanes``-wide program whatever the chunk size (XLA compiles a size-1 and a size-5 batched
    matmul differently, so vmapping a whole chunk would tie a seed's last bits to its chunk).
    The program takes ``valid``, the number of real seeds in the chunk, and stops after their
    lane groups: a padded chunk costs nothing for its padding, and one program (per capacity, see
    :func:`chunk_capacity`) serves every number of seeds up to it.
    With ``n_devices > 1`` the seed axis is split over a one-axis device mesh by ``shard_map``:
    each device runs that same program on its share, so the numbers do not change.
    Keys enter as raw key data (uint32), which every sharding API accepts. Cached, so a second
    call with the same configs does not recompile."""

    sampler = SAMPLERS[opts.method]

    def one(args, stds):
        k, x = args
        return sampler.seed_stats(configs, opts, k, x if with_inputs else None, stds)

    # jitted so that the output shapes (eval_shape) and the loop body share one trace of the network
    lane_group = jax.jit(jax.vmap(one, in_axes=(0, None)))

    def run(key_data, x, stds, valid):
        keys = jax.random.wrap_key_data(key_data, impl=impl)
        if n_devices > 1:  # this device's seeds are [offset, offset + its share) of the chunk
            valid = valid - jax.lax.axis_index("seeds") * keys.size
        return lane_loop(lambda k, xx: lane_group((k, xx), stds), keys, x if with_inputs else None,
                         valid, lanes)

    if n_devices == 1:
        return jax.jit(run)
    from jax.sharding import PartitionSpec

    mesh = jax.make_mesh((n_devices,), ("seeds",), devices=jax.devices()[:n_devices])
    spec, replicated = PartitionSpec("seeds"), PartitionSpec()
    # check_vma=False: every device's work is independent. With the check on, the zero probes
    # that jax.vjp differentiates against count as replicated over the mesh, and the transpose
    # would psum every device's gradients together.
    if with_inputs:
        return jax.jit(jax.shard_map(run, mesh=mesh, in_specs=(spec, spec, replicated, replicated),
                                     out_specs=spec, check_vma=False))
    return jax.jit(jax.shard_map(lambda k, s, v: run(k, None, s, v), mesh=mesh,
                                 in_specs=(spec, replicated, replicated), out_specs=spec, check_vma=False))


def lane_loop(lane_group, keys: jax.Array, x: jax.Array | None, valid, lanes: int):
    """``lane_group(keys, inputs)`` (one seed per lane) over ``keys`` ``lanes`` at a time, in a
    ``fori_loop`` that stops after the lane groups holding the ``valid`` real seeds (the padding
    of a chunk costs nothing); ``x`` is None or one input batch per seed. Returns the outputs with
    a leading seed axis (zeros past ``valid``): the loop of every compiled chunk program."""
    groups = keys.shape[0] // lanes
    keys = keys.reshape(groups, lanes)
    xs = jnp.zeros((groups, lanes)) if x is None else x.reshape(groups, lanes, *x.shape[1:])
    count = jnp.clip((valid + lanes - 1) // lanes, 0, groups)

    def body(i, acc):
        out = lane_group(keys[i], xs[i])
        return jax.tree.map(lambda a, o: jax.lax.dynamic_update_index_in_dim(a, o, i, 0), acc, out)

    shapes = jax.eval_shape(lane_group, keys[0], xs[0])
    init = jax.tree.map(lambda v: jnp.zeros((groups, *v.shape), v.dtype), shapes)
    out = jax.lax.fori_loop(0, count, body, init)
    return jax.tree.map(lambda v: v.reshape(groups * lanes, *v.shape[2:]), out)


def chunk_capacity(seeds: int, fits: int) -> int:
    """Seeds per compiled call when the caller sets no chunk size: the number of seeds rounded up
    to a power of two, at most the ``fits`` seeds the memory budget allows. The program skips a
    chunk's padding (:func:`compiled_program`), so rounding up costs no work, and a session that asks
    for 3, 5, 6, then 8 seeds compiles once (capacity 8), not four times."""
    return int(max(1, min(fits, 1 << max(seeds - 1, 0).bit_length())))


def default_lanes() -> int:
    """Seeds vmapped side by side: 1 on CPU (a wider vmap gains nothing there), 8 on accelerators."""
    return 1 if jax.default_backend() == "cpu" else 8


def resolve_budget(memory_budget: float | None) -> float:
    """Bytes of temporaries a chunk may use: ``memory_budget``, else ``INITJAX_MEMORY_BUDGET``,
    else :data:`DEFAULT_BUDGET`."""
    if memory_budget is None:
        env = os.environ.get("INITJAX_MEMORY_BUDGET")
        return float(env) if env else float(DEFAULT_BUDGET)
    return check_float("memory_budget", memory_budget, minimum=0.0, strict_minimum=True)


def host_budget() -> float:
    """Bytes of per-seed results a call may keep in host memory: ``INITJAX_HOST_BUDGET``, else
    half of this machine's physical memory (8 GiB where it cannot be read)."""
    env = os.environ.get("INITJAX_HOST_BUDGET")
    if env:
        return check_float("INITJAX_HOST_BUDGET", float(env), minimum=0.0, strict_minimum=True)
    try:
        return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return 8.0 * 2**30


def check_host_memory(seeds: int, depth: int, values_per_layer: int, what: str) -> int:
    """Refuse, before any work, a call whose per-seed results would not fit in host memory.

    Every seed keeps ``values_per_layer`` 4-byte numbers for each of ``depth`` layers (or blocks),
    plus its key and index (24 bytes); the chunks' pieces and their concatenation coexist for a
    moment, so the results are counted twice. The device side is bounded separately, per chunk
    (:func:`plan_chunks`). Returns the estimated bytes.

    Raises:
      MemoryError: with the estimate, the budget (:func:`host_budget`) and the largest seed count
        that fits.
    """
    per_seed = 2 * (4 * depth * values_per_layer + 24)
    need = seeds * per_seed
    budget = host_budget()
    if need > budget:
        fits = int(budget // per_seed)
        raise MemoryError(
            f"seeds={seeds} of depth {depth} ({what}) would keep about {need / 2**30:.3g} GiB of "
            f"per-seed statistics in host memory ({per_seed} bytes a seed), over the "
            f"{budget / 2**30:.3g} GiB allowed (half of this machine's memory, or INITJAX_HOST_BUDGET): "
            + (f"run at most {fits} seeds per call (seed_offset continues a run)" if fits else
               "even one seed does not fit; use fewer layers"))
    return need


def plan_chunks(
    seeds: int,
    per_seed: int,
    *,
    chunk_size: int | None,
    memory_budget: float | None,
    devices: int | str | None,
    impl: str,
    what: str,
) -> tuple[int, int]:
    """``(seeds per compiled call, devices)`` for ``seeds`` seeds of ``per_seed`` bytes each.

    Without ``chunk_size``: each device's share of the seeds rounded up to a power of two, at most
    what the budget holds (:func:`chunk_capacity`). A chunk then holds that many seeds on every
    device. ``what`` describes the network in the MemoryError raised when one seed exceeds the
    budget.
    """
    budget = resolve_budget(memory_budget)
    n_devices = device_count(devices, impl)
    if chunk_size is None:
        if per_seed > budget:
            raise MemoryError(
                f"one seed of this config needs about {per_seed / 2**30:.2f} GiB of temporaries "
                f"({what}); the memory budget is {budget / 2**30:.2f} GiB: raise memory_budget or "
                "INITJAX_MEMORY_BUDGET, or reduce width, depth or batch"
            )
        # per device: each device's share of the seeds, rounded up (the budget is per device)
        chunk_size = chunk_capacity(-(-seeds // n_devices), int(budget // per_seed))
    else:
        chunk_size = min(check_int("chunk_size", chunk_size, minimum=1), seeds)
    # a chunk holds whole lane groups on every device
    return chunk_size * n_devices, n_devices


def run_chunks(configs, opts, keys, x, chunk_size, progress, lanes, n_devices) -> list[LayerStats]:
    """Per config, the :class:`LayerStats` (axes ``(seed, layer, ...)``) of every key of ``keys``,
    ``chunk_size`` seeds per call of one compiled program (:func:`compiled_program`)."""
    impl = str(jax.random.key_impl(keys))
    configs, stds = SAMPLERS[opts.method].prepare(configs)
    fn = compiled_program(configs, opts, x is not None, lanes, impl, n_devices)
    key_data = jax.random.key_data(keys)
    seeds = keys.shape[0]
    step = lanes * n_devices
    chunk_size = -(-chunk_size // step) * step  # whole lane groups on every device
    pieces = []
    show = sys.stderr.isatty() and seeds > chunk_size if progress is None else bool(progress)
    desc = configs[0].name if len(configs) == 1 else f"{len(configs)} configs"
    with progress_bar(total=seeds, desc=desc, unit="seed", disable=not show) as bar:
        for lo in range(0, seeds, chunk_size):
            hi = min(lo + chunk_size, seeds)
            idx = np.minimum(np.arange(lo, lo + chunk_size), seeds - 1)  # pad the last chunk
            args = (key_data[idx],) if x is None else (key_data[idx], x[idx])
            valid = np.int32(hi - lo)  # the program skips the padding
            if n_devices > 1:
                args = shard_seeds(args, n_devices)
                out = fn(*args, stds, valid)
            else:
                out = fn(args[0], None if x is None else args[1], stds, valid)
            pieces.append([LayerStats(*(to_host(v)[: hi - lo] for v in st)) for st in out])
            bar.update(hi - lo)
    return [
        LayerStats(*(np.concatenate(parts) for parts in zip(*(p[i] for p in pieces), strict=True)))
        for i in range(len(configs))
    ]


def shard_seeds(arrays, n_devices: int):
    """Place each array's leading (seed) axis across the first ``n_devices`` devices. Built with
    ``make_array_from_callback``, which also works when the devices span several hosts
    (``jax.distributed``): each process supplies the shards its devices hold."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((n_devices,), ("seeds",), devices=jax.devices()[:n_devices])
    sharding = NamedSharding(mesh, PartitionSpec("seeds"))
    out = []
    for a in arrays:
        host = np.asarray(a)
        out.append(jax.make_array_from_callback(host.shape, sharding, lambda index, h=host: h[index]))
    return tuple(out)


def to_host(v: jax.Array) -> np.ndarray:
    """A (possibly multi-host) array as a numpy array on this host."""
    if getattr(v, "is_fully_addressable", True):
        return np.asarray(v)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(v, tiled=True))


def device_count(devices: int | str | None, impl: str) -> int:
    """How many devices the seeds are split over: None -> 1, ``"all"``, or an int up to the
    visible number; philox keys cannot be split (raises, naming the reason)."""
    if devices is None:
        return 1
    available = len(jax.devices())
    if devices == "all":
        n = available
    else:
        n = check_int("devices", devices, minimum=1)
        if n > available:
            raise ValueError(f"devices={n} but only {available} are visible: {jax.devices()}")
    if n > 1 and impl.startswith("philox"):
        raise ValueError(
            f"prng_impl={impl!r} cannot be split across devices: in jax {jax.__version__} XLA fails "
            "to lower philox's mulhi under sharding. Use prng_impl='threefry2x32' (it draws the "
            "same numbers on 1 device and on many), or devices=None"
        )
    return n


def run_unjitted(configs, opts, keys, x) -> list[LayerStats]:
    """:func:`run_chunks` seed by seed without compilation (slow; for debugging)."""
    per_seed = []
    sampler = SAMPLERS[opts.method]
    configs, stds = sampler.prepare(configs)
    with jax.disable_jit():
        for s in range(keys.shape[0]):
            out = sampler.seed_stats(configs, opts, keys[s], None if x is None else x[s], stds)
            per_seed.append([LayerStats(*(np.asarray(v) for v in st)) for st in out])
    return [
        LayerStats(*(np.stack(parts) for parts in zip(*(p[i] for p in per_seed), strict=True)))
        for i in range(len(configs))
    ]

