"""The executor: seeds in chunks, lanes, devices and the memory budget, above the samplers.

* Seeds are a vmapped key axis: seed ``s`` uses ``fold_in(key, s)``, so its numbers do not depend
  on how many seeds run beside it or on the chunk size. Seeds run in chunks sized to a memory
  budget (:func:`plan_chunks`; :func:`resolve_budget`: the argument, ``INITJAX_MEMORY_BUDGET``,
  else measured from the device or the host's free RAM); every chunk has the same size (the
  last is padded, and the program stops before the padding), so one compiled program serves them
  all, and any other number of seeds up to the same power of two (:func:`chunk_capacity`).
* Inside a chunk, seeds are vmapped :func:`default_lanes` at a time and a loop walks over the
  lane groups (:func:`compiled_program`); with several devices the chunk is split over a
  one-axis mesh by ``jax.shard_map``, each device running that same program on its share.
* The sampler (:data:`SAMPLERS`, by ``MeasureOptions.method``) supplies one seed's statistics;
  the executor never looks inside it.
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initjax._checks import check_float, check_int
from initjax._io import progress_bar
from initjax.config import NetworkConfig
from initjax.engine import dense, fast
from initjax.engine.stats import LayerStats, MeasureOptions

__all__ = [
    "BUDGET_FLOOR",
    "BUDGET_SOURCES",
    "DEFAULT_BUDGET",
    "DEVICE_FRACTION",
    "HOST_FRACTION",
    "SAMPLERS",
    "ChunkPlan",
    "MemoryBudget",
    "check_host_memory",
    "check_seed_fits",
    "describe_widths",
    "format_bytes",
    "device_memory_stats",
    "host_available_memory",
    "lane_loop",
    "chunked_seed_stats",
    "unjitted_seed_stats",
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

# bytes of temporaries per chunk of seeds when nothing is known about the device (the budget
# before issue 13; an accelerator without memory_stats(), a host without /proc/meminfo or sysconf)
DEFAULT_BUDGET = 2 * 2**30
# An accelerator's share: 3/4 of what its allocator can still hand out (bytes_limit - bytes_in_use).
# The per-seed estimates (dense.estimate_memory and the others) count the big buffers only; XLA
# adds its own temporaries, the allocator fragments, the chunk's inputs and results are on the
# device too, and the user may allocate between calls. On the H200 (139 GiB, of which
# XLA's allocator allows 75% by default) 3/4 is about 75 GiB, above the 64 GB that ran its dense
# demo at 2.2 ms/seed, and a 4 GiB fast-path seed at width 65,536 x depth 100 fits.
DEVICE_FRACTION = 0.75
# The host's share on CPU: 1/4 of MemAvailable. The CPU backend's buffers live in the same RAM as
# the Python process, the per-seed results kept on the host (check_host_memory: up to half of
# physical memory) and whatever else runs on the machine (shared CI runners, other jobs).
HOST_FRACTION = 0.25
BUDGET_FLOOR = 256 * 2**20  # a measured budget never goes below this (tiny or busy machines)
# where a budget came from (MemoryBudget.source)
BUDGET_SOURCES = ("argument", "environment", "device", "host-ram", "fallback")
MEMINFO = Path("/proc/meminfo")  # read by host_available_memory (a test points it elsewhere)

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


def chunked_seed_stats(fn, keys: jax.Array, x: jax.Array | None, chunk_size: int, *, desc: str,
                       progress: bool | None) -> dict[str, np.ndarray]:
    """A block engine's chunk loop: call the compiled chunk program ``fn(key_data, xs, valid)``
    (:func:`lane_loop` inside) on ``keys``' seeds ``chunk_size`` at a time, the last chunk padded
    with copies of the last seed (not computed: ``valid`` stops the lane loop; their rows are
    dropped), and concatenate its ``{name: (seed, ...)}`` outputs on the host. ``x``: per-seed
    inputs or None. A progress bar shows on a terminal with more than one chunk (``progress``
    forces it on or off)."""
    seeds = keys.shape[0]
    key_data = jax.random.key_data(keys)
    pieces = []
    show = sys.stderr.isatty() and seeds > chunk_size if progress is None else bool(progress)
    with progress_bar(total=seeds, desc=desc, unit="seed", disable=not show) as bar:
        for lo in range(0, seeds, chunk_size):
            hi = min(lo + chunk_size, seeds)
            idx = np.minimum(np.arange(lo, lo + chunk_size), seeds - 1)
            xs = jnp.zeros((chunk_size,)) if x is None else x[idx]
            out = fn(key_data[idx], xs, np.int32(hi - lo))
            pieces.append({k: np.asarray(v)[: hi - lo] for k, v in out.items()})
            bar.update(hi - lo)
    return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}


def unjitted_seed_stats(one, keys: jax.Array, x: jax.Array | None) -> dict[str, np.ndarray]:
    """``one(key, x_or_None)`` seed by seed without compilation (``jit=False``, for debugging),
    stacked into ``{name: (seed, ...)}``."""
    per = []
    with jax.disable_jit():
        for s in range(keys.shape[0]):
            out = one(keys[s], None if x is None else x[s])
            per.append({k: np.asarray(v) for k, v in out.items()})
    return {k: np.stack([p[k] for p in per]) for k in per[0]}


def chunk_capacity(seeds: int, fits: int) -> int:
    """Seeds per compiled call when the caller sets no chunk size: the number of seeds rounded up
    to a power of two, at most the ``fits`` seeds the memory budget allows. The program skips a
    chunk's padding (:func:`compiled_program`), so rounding up costs no work, and a session that asks
    for 3, 5, 6, then 8 seeds compiles once (capacity 8), not four times."""
    return int(max(1, min(fits, 1 << max(seeds - 1, 0).bit_length())))


def default_lanes() -> int:
    """Seeds vmapped side by side: 1 on CPU (a wider vmap gains nothing there), 8 on accelerators."""
    return 1 if jax.default_backend() == "cpu" else 8


class MemoryBudget(NamedTuple):
    """The bytes of temporaries one chunk of seeds may use on each device, and their origin."""

    nbytes: float  # bytes per device
    source: str  # one of BUDGET_SOURCES
    detail: str  # how it was obtained, in words (for error messages)

    def describe(self) -> str:
        return f"{format_bytes(self.nbytes)} ({self.detail})"


def format_bytes(nbytes: float) -> str:
    """``nbytes`` in GiB: two decimals, or three significant digits and the bytes below 0.01 GiB."""
    if nbytes >= 0.01 * 2**30:
        return f"{nbytes / 2**30:.2f} GiB"
    return f"{nbytes / 2**30:.3g} GiB ({nbytes:,.0f} bytes)"


def resolve_budget(
    memory_budget: float | None = None, devices: Sequence[Any] | None = None
) -> MemoryBudget:
    """The memory budget of a chunk of seeds, per device, and where it came from.

    In order: ``memory_budget`` if given (source ``"argument"``); else the environment variable
    ``INITJAX_MEMORY_BUDGET`` (bytes, optionally with a unit: ``"64e9"``, ``"8GiB"``, ``"500MB"``;
    ``"environment"``); else measured on the ``devices`` the chunk runs on (default: JAX's first
    device):

    * an accelerator: :data:`DEVICE_FRACTION` (3/4) of ``bytes_limit - bytes_in_use`` from its
      ``memory_stats()``, the smallest over the devices (``"device"``);
    * CPU: :data:`HOST_FRACTION` (1/4) of the host's available RAM (``MemAvailable``), shared by
      the CPU devices (``"host-ram"``);

    a measured budget is never below :data:`BUDGET_FLOOR` (256 MiB) and is rounded down to 1/16 of
    its power of two, so that small changes of free memory between calls rarely change the chunk
    capacity (a new compiled program). Where nothing can be measured: :data:`DEFAULT_BUDGET`
    (2 GiB, ``"fallback"``).

    Raises:
      ValueError / TypeError: for a bad ``memory_budget`` or ``INITJAX_MEMORY_BUDGET``, naming it.
    """
    if memory_budget is not None:
        value = check_float("memory_budget", memory_budget, minimum=0.0, strict_minimum=True)
        return MemoryBudget(value, "argument", "the memory_budget argument")
    env = os.environ.get("INITJAX_MEMORY_BUDGET", "").strip()
    if env:
        nbytes = _parse_bytes("INITJAX_MEMORY_BUDGET", env)
        return MemoryBudget(nbytes, "environment", "INITJAX_MEMORY_BUDGET")
    devices = list(devices) if devices is not None else jax.devices()[:1]
    if devices and all(getattr(d, "platform", "cpu") != "cpu" for d in devices):
        free = []
        for d in devices:
            stats = device_memory_stats(d)
            if not stats or "bytes_limit" not in stats:
                free = []
                break
            free.append(float(stats["bytes_limit"]) - float(stats.get("bytes_in_use", 0)))
        if free:
            name = f"{devices[0].platform}:{getattr(devices[0], 'id', 0)}"
            if len(devices) > 1:
                name = f"the least free of {len(devices)} {devices[0].platform} devices"
            free_bytes = max(min(free), 0.0)
            detail = (f"{DEVICE_FRACTION:g} x the {free_bytes / 2**30:.1f} GiB free on {name}, "
                      "bytes_limit - bytes_in_use")
            return MemoryBudget(_measured(DEVICE_FRACTION * free_bytes), "device", detail)
        return MemoryBudget(float(DEFAULT_BUDGET), "fallback",
                            f"the default: {devices[0].platform} reports no memory_stats()")
    available = host_available_memory()
    if available is None:
        return MemoryBudget(float(DEFAULT_BUDGET), "fallback",
                            "the default: the host's free RAM is unknown")
    share = max(1, len(devices))
    detail = f"{HOST_FRACTION:g} x the {available / 2**30:.1f} GiB of RAM available"
    if share > 1:
        detail += f", shared by {share} CPU devices"
    return MemoryBudget(_measured(HOST_FRACTION * available / share), "host-ram", detail)


def _measured(nbytes: float) -> float:
    """A measured budget: at least the floor, rounded down to 1/16 of its power of two."""
    nbytes = max(float(nbytes), float(BUDGET_FLOOR))
    step = 2.0 ** (math.floor(math.log2(nbytes)) - 4)
    return math.floor(nbytes / step) * step


_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _parse_bytes(name: str, text: str) -> float:
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    try:
        if match is None or unit not in _UNITS:
            raise ValueError
        value = float(match.group(1)) * _UNITS[unit]
    except ValueError:
        raise ValueError(f"{name}={text!r} is not a number of bytes: use e.g. '64e9', '8GiB' or "
                         f"'500MB' (units {', '.join(u for u in _UNITS if u)})") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={text!r} must be a finite number of bytes > 0")
    return value


def device_memory_stats(device: Any) -> dict[str, Any] | None:
    """``device.memory_stats()`` (``bytes_limit``, ``bytes_in_use``, ...), or None where the
    backend reports none (JAX's CPU devices) or fails to."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - any backend failure means "unknown", not a crash
        return None
    return dict(stats) if stats else None


def host_available_memory() -> float | None:
    """Bytes of RAM available to a new allocation: ``MemAvailable`` of ``/proc/meminfo`` (Linux),
    else the free pages of ``os.sysconf``; None where neither can be read."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                value, *unit = line.split()[1:]
                return float(value) * (1024 if unit and unit[0].lower() == "kb" else 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None
    return float(pages * size) if pages > 0 and size > 0 else None


def describe_widths(widths: Sequence[int], unit: str = "layer") -> str:
    """A network's widths in a few words, for messages: ``"100 layers of width 65,536 (input 784)"``
    when every layer has one width, else the widths (input first) with repeats as runs:
    ``"4 layers, widths 784, 1000 x 3, 10 (input first)"``. ``widths``: ``(n_0, n_1, ..., n_L)``."""
    widths = [int(w) for w in widths]
    depth = len(widths) - 1
    units = f"{depth} {unit}{'' if depth == 1 else 's'}"
    if depth >= 1 and len(set(widths[1:])) == 1:
        return f"{units} of width {widths[1]:,} (input {widths[0]:,})"
    runs: list[list[int]] = []
    for w in widths:
        if runs and runs[-1][0] == w:
            runs[-1][1] += 1
        else:
            runs.append([w, 1])
    text = ", ".join(str(w) if n == 1 else f"{w} x {n}" for w, n in runs)
    return f"{units}, widths {text} (input first)"


def check_seed_fits(per_seed: float, budget: MemoryBudget, what: str, noun: str = "config") -> None:
    """Raise MemoryError when one seed's estimated temporaries (``per_seed`` bytes) exceed the
    budget; ``what`` describes the network (e.g. :func:`describe_widths` and the batch), ``noun``
    names it (``"config"``, ``"network"``)."""
    if per_seed > budget.nbytes:
        raise MemoryError(
            f"one seed of this {noun} needs about {format_bytes(per_seed)} of temporaries "
            f"({what}); the memory budget is {budget.describe()}: raise memory_budget or "
            "INITJAX_MEMORY_BUDGET, or reduce width, depth or batch")


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


class ChunkPlan(NamedTuple):
    """How :func:`plan_chunks` splits the seeds."""

    chunk_size: int  # seeds per compiled call, over all devices
    n_devices: int
    budget: MemoryBudget  # the per-device budget it was sized to


def plan_chunks(
    seeds: int,
    per_seed: int,
    *,
    chunk_size: int | None,
    memory_budget: float | None,
    devices: int | str | None,
    impl: str,
    what: str,
    noun: str = "config",
) -> ChunkPlan:
    """``(seeds per compiled call, devices, budget)`` for ``seeds`` seeds of ``per_seed`` bytes.

    Without ``chunk_size``: each device's share of the seeds rounded up to a power of two, at most
    what the budget (:func:`resolve_budget`, per device) holds (:func:`chunk_capacity`). A chunk
    then holds that many seeds on every device. ``what`` describes the network in the MemoryError
    raised when one seed exceeds the budget (:func:`check_seed_fits`, "one seed of this
    ``noun``"). The block engines call it with ``devices=None`` (one device).
    """
    n_devices = device_count(devices, impl)
    budget = resolve_budget(memory_budget, jax.devices()[:n_devices])
    if chunk_size is None:
        check_seed_fits(per_seed, budget, what, noun)
        # per device: each device's share of the seeds, rounded up (the budget is per device)
        chunk_size = chunk_capacity(-(-seeds // n_devices), int(budget.nbytes // per_seed))
    else:
        chunk_size = min(check_int("chunk_size", chunk_size, minimum=1), seeds)
    # a chunk holds whole lane groups on every device
    return ChunkPlan(chunk_size * n_devices, n_devices, budget)


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

