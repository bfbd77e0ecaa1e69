"""The engine's public face: :func:`propagate`, :func:`propagate_shared`, :func:`trace` and
the :class:`Propagation` result.

:func:`propagate` draws a fully connected network (:class:`~initjax.config.NetworkConfig`) for each
of ``seeds`` seeds, pushes a batch forward, back-propagates a cotangent, and returns per-layer
statistics with axes ``(seed, layer, ...)``. It is the classic demo of CS231n (a 10-layer, 4096-wide
MLP with N(0, 0.01^2), N(0, 1), Xavier and He weights) and the at-init measurements of Glorot &
Bengio (2010, Figures 6-8), made exact, fast and reusable.

How it runs (each part is its own module of :mod:`initjax.engine`):

* :mod:`~initjax.engine.sampling`: the network and its keys (seed ``s`` uses ``fold_in(key, s)``).
* :mod:`~initjax.engine.dense` and :mod:`~initjax.engine.fast`: the two samplers, one protocol
  (:class:`~initjax.engine.sampler.Sampler`), chosen by ``method``.
* :mod:`~initjax.engine.stats`: the per-layer statistics of the sampled tensors.
* :mod:`~initjax.engine.executor`: seeds in chunks sized to a memory budget, lanes, devices and
  the compiled programs (one per scale-free config group and chunk capacity).

References:
  Glorot & Bengio 2010, https://proceedings.mlr.press/v9/glorot10a.html;
  He et al. 2015, https://arxiv.org/abs/1502.01852; CS231n, "Training Neural Networks I".
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initjax import _io
from initjax._checks import check_choice, check_float, check_int
from initjax._precision import DEFAULT_PRECISION, check_precision, matmul_precision
from initjax.config import NetworkConfig, as_config
from initjax.engine.blocks import BlockPropagation, propagate_blocks
from initjax.engine.dense import estimate_memory
from initjax.engine.executor import (
    SAMPLERS,
    check_host_memory,
    default_lanes,
    describe_widths,
    plan_chunks,
    run_chunks,
    run_unjitted,
)
from initjax.engine.sampling import (
    COTANGENTS,
    PRNG_IMPLS,
    as_scaled,
    base_key,
    draw_cotangent,
    layer_params,
    seed_keys,
    split_seed_key,
)
from initjax.engine.stats import (
    LayerStats,
    MeasureOptions,
    check_range,
    histogram_edges,
    seed_mean_sd,
)
from initjax.network import Network

__all__ = [
    "COTANGENTS",
    "METHODS",
    "PRNG_IMPLS",
    "FallbackWarning",
    "NonFiniteWarning",
    "Propagation",
    "check_configs",
    "default_lanes",
    "estimate_memory",
    "propagate",
    "propagate_shared",
    "shareable",
    "trace",
]

METHODS = tuple(SAMPLERS)  # ("dense", "fast")


@dataclasses.dataclass(frozen=True)
class Propagation:
    """The result of :func:`propagate`: the config, the statistics and how they were measured.

    Attributes:
      config: the network.
      stats: :class:`LayerStats`, numpy arrays with axes ``(seed, layer, ...)``.
      act_edges: the ``bins + 1`` edges of the activation histograms.
      grad_edges: the edges of the gradient histograms.
      key: the integer seed of the base key (or None if a key array was given).
      cotangent: how the output gradient was drawn (see :data:`COTANGENTS`).
      prng_impl: the PRNG implementation that drew every random number.
      seconds: wall time of the run (compile included).
      method: ``"dense"`` or ``"fast"`` (see :func:`propagate`).
      precision: the matmul precision the statistics were computed at (see
        :mod:`initjax._precision`; ``"highest"`` unless asked otherwise).
      memory_budget: the bytes of temporaries per chunk and device the seeds were chunked to
        (:func:`initjax.engine.executor.resolve_budget`; NaN if not recorded).
      memory_budget_source: where it came from: ``"argument"``, ``"environment"``, ``"device"``
        (the accelerator's free memory), ``"host-ram"`` (a share of the host's available RAM) or
        ``"fallback"`` (2 GiB); ``"unknown"`` for results saved before it was recorded.
    """

    config: NetworkConfig
    stats: LayerStats
    act_edges: np.ndarray
    grad_edges: np.ndarray
    key: int | None = 0
    cotangent: str = "normal"
    prng_impl: str = "threefry2x32"
    seconds: float = float("nan")
    method: str = "dense"
    precision: str = DEFAULT_PRECISION
    memory_budget: float = float("nan")
    memory_budget_source: str = "unknown"

    @property
    def seeds(self) -> int:
        return int(self.stats.act_var.shape[0])

    @property
    def nonfinite_layers(self) -> list[int]:
        """1-based layers in which some seed had a non-finite value, forward or backward, or a
        variance too large for float32 (finite values whose squares overflow)."""
        st = self.stats
        bad = (np.asarray(st.nonfinite) + np.asarray(st.grad_nonfinite)).sum(axis=0) > 0
        for field in _OVERFLOW_FIELDS:
            bad |= np.isinf(np.asarray(getattr(st, field))).any(axis=0)
        return [int(i) + 1 for i in np.flatnonzero(bad)]

    def layer_table(self) -> list[dict[str, Any]]:
        """One dict per layer: each scalar statistic's mean over seeds (NaN-ignoring; inf where a
        seed's value overflowed to inf) and, as ``<name>_sd``, its standard deviation over seeds. ``nonfinite`` sums forward and
        backward counts over seeds. This is the JSON schema of ``initjax propagate --json``."""
        rows = []
        for i in range(self.config.depth):
            row: dict[str, Any] = {"layer": i + 1}
            for name, (field, reducer) in _TABLE_FIELDS.items():
                values = np.asarray(getattr(self.stats, field))[:, i].astype(np.float64)
                if reducer == "sum":
                    row[name] = int(values.sum())
                    continue
                row[name], row[name + "_sd"] = seed_mean_sd(values)
            row["nonfinite"] = int(
                np.asarray(self.stats.nonfinite)[:, i].sum() + np.asarray(self.stats.grad_nonfinite)[:, i].sum()
            )
            rows.append(row)
        return rows

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "seeds": self.seeds,
            "key": self.key,
            "cotangent": self.cotangent,
            "prng_impl": self.prng_impl,
            "method": self.method,
            "precision": self.precision,
            "memory_budget": {"bytes": self.memory_budget, "source": self.memory_budget_source},
            "layers": self.layer_table(),
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json``, ``stats.npz`` and ``meta.json`` into ``directory``, atomically."""
        d = Path(directory)
        arrays = {k: np.asarray(v) for k, v in self.stats._asdict().items()}
        _io.write_npz(d / "stats.npz", act_edges=self.act_edges, grad_edges=self.grad_edges, **arrays)
        meta = {
            "key": self.key,
            "cotangent": self.cotangent,
            "prng_impl": self.prng_impl,
            "method": self.method,
            "precision": self.precision,
            "memory_budget": self.memory_budget,
            "memory_budget_source": self.memory_budget_source,
            "seconds": self.seconds,
            "seeds": self.seeds,
        }
        _io.write_json(d / "meta.json", meta)
        _io.write_json(d / "config.json", self.config.to_dict())
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Propagation:
        """Read what :meth:`save` wrote.

        Raises:
          FileNotFoundError: a file is missing; ValueError: a file is truncated, garbage or
            holds other fields (the message names the file).
        """
        d = Path(directory)
        for name in ("config.json", "stats.npz", "meta.json"):
            if not (d / name).exists():
                raise FileNotFoundError(f"{d / name} is missing: not a saved Propagation directory")
        with _io.reading(d / "config.json", "saved network config"):
            config = NetworkConfig.from_dict(_io.read_json(d / "config.json"))
        meta = _io.read_json(d / "meta.json", "saved run metadata")
        z = _io.load_npz(d / "stats.npz", (*LayerStats._fields, "act_edges", "grad_edges"), "saved statistics")
        stats = LayerStats(**{f: z[f] for f in LayerStats._fields})
        act_edges, grad_edges = z["act_edges"], z["grad_edges"]
        seconds = meta.get("seconds")
        return cls(
            config=config,
            stats=stats,
            act_edges=act_edges,
            grad_edges=grad_edges,
            key=meta.get("key"),
            cotangent=meta.get("cotangent", "normal"),
            prng_impl=meta.get("prng_impl", "threefry2x32"),
            seconds=float("nan") if seconds is None else float(seconds),
            method=meta.get("method", "dense"),
            # saved before the precision policy: the backend's default (exact on CPU)
            precision=meta.get("precision", "default"),
            memory_budget=float("nan") if meta.get("memory_budget") is None else float(meta["memory_budget"]),
            memory_budget_source=meta.get("memory_budget_source", "unknown"),
        )


# statistics that overflow float32 (inf) while every value is finite, e.g. ReLU with N(0, 1) weights
_OVERFLOW_FIELDS = ("preact_var", "act_var", "grad_preact_var", "grad_act_var", "weight_grad_var")

# name in the table -> (LayerStats field, how to reduce over seeds)
_TABLE_FIELDS = {
    "preact_mean": ("preact_mean", "mean"),
    "preact_var": ("preact_var", "mean"),
    "act_mean": ("act_mean", "mean"),
    "act_var": ("act_var", "mean"),
    "grad_var": ("grad_preact_var", "mean"),
    "weight_grad_var": ("weight_grad_var", "mean"),
    "saturated": ("saturated", "mean"),
    "zero_fraction": ("zero_fraction", "mean"),
    "dead_fraction": ("dead_fraction", "mean"),
    "cosine": ("cosine", "mean"),
}


def _check_inputs(config: NetworkConfig, inputs: Any, seeds: int) -> jax.Array | None:
    if inputs is None:
        return None
    x = jnp.asarray(inputs)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"inputs must be a float array, got dtype {x.dtype}")
    want = (config.batch, config.widths[0])
    if x.shape == want:
        return jnp.broadcast_to(x, (seeds, *want))
    if x.shape == (seeds, *want):
        return x
    raise ValueError(
        f"inputs must have shape (batch, in_width) = {want} or (seeds, batch, in_width) = "
        f"{(seeds, *want)} for this config; got {x.shape}"
    )


def propagate(
    config: NetworkConfig,
    seeds: int = 1,
    key: int | jax.Array = 0,
    *,
    inputs: Any = None,
    cotangent: str = "normal",
    act_range: tuple[float, float] = (-1.0, 1.0),
    grad_range: tuple[float, float] = (-1.0, 1.0),
    bins: int = 40,
    saturation_tolerance: float = 0.01,
    chunk_size: int | None = None,
    memory_budget: float | None = None,
    remat: bool = True,
    jit: bool = True,
    prng_impl: str = "philox2x32",
    progress: bool | None = None,
    seed_offset: int = 0,
    devices: int | str | None = None,
    method: str = "dense",
    precision: str | None = None,
) -> Propagation | BlockPropagation:
    """Measure per-layer activation and gradient statistics of ``seeds`` sampled networks.

    >>> result = propagate(NetworkConfig(depth=3, width=16, batch=4, activation="tanh"), seeds=2)
    >>> result.stats.act_var.shape  # (seed, layer)
    (2, 3)

    Args:
      config: the network: a :class:`~initjax.config.NetworkConfig` or a
        :class:`~initjax.network.Network`. A network with residual blocks (or preactivation or
        weight-standardized layers) runs on the block engine
        (:func:`initjax.engine.blocks.propagate_blocks`) and returns its
        :class:`~initjax.engine.blocks.BlockPropagation` (per-block stream and branch statistics);
        the histogram options, ``method`` and ``devices`` must keep their defaults there.
      seeds: number of independent networks (>= 1); seed s draws from ``fold_in(key, s)``.
      key: an int seed or a JAX PRNG key.
      inputs: optional input batch, ``(batch, in_width)`` shared by all seeds or
        ``(seeds, batch, in_width)``; by default each seed draws Gaussian inputs as the config says.
      cotangent: the output gradient: ``"normal"`` (i.i.d. N(0, 1), default), ``"mse"`` (squared
        error to random N(0, 1) targets) or ``"xent"`` (softmax cross-entropy to random labels).
      act_range, grad_range: the ranges of the activation and pre-activation-gradient histograms.
      bins: number of histogram bins (40, as the classic demo).
      saturation_tolerance: a bounded activation's output counts as saturated within this fraction
        of its range from a bound.
      chunk_size: seeds per compiled call; by default the number of seeds rounded up to a power
        of two, at most as many as fit in ``memory_budget`` (the padding is skipped, not computed).
      memory_budget: bytes of temporaries a chunk may use on each device. By default the
        environment variable ``INITJAX_MEMORY_BUDGET``, else 3/4 of an accelerator's free memory
        or 1/4 of the host's available RAM on CPU (2 GiB where neither is known); the result
        records it (``memory_budget``, ``memory_budget_source``). A single seed above it raises
        with the estimate and a summary of the network.
      remat: redraw each layer's weights in the backward pass instead of storing them all.
      jit: False runs seed by seed without compilation (slow; for debugging).
      prng_impl: the PRNG implementation of an int ``key``. The default, ``"philox2x32"``, drew
        normals 2.8x faster than jax's default ``"threefry2x32"`` on the 2-core development
        machine and, like it, gives every seed the same numbers however seeds are batched
        (``"rbg"``/``"unsafe_rbg"`` do not, so they are refused).
      progress: show a progress bar (default: only if stderr is a terminal and seeds > 1 chunk).
      seed_offset: the first seed index (seeds ``seed_offset .. seed_offset + seeds - 1``).
      method: ``"dense"`` (default) samples every weight matrix; ``"fast"`` samples each layer's
        outputs and gradients exactly in distribution with O(batch x width) random numbers
        (:mod:`initjax.engine.fast`, i.i.d. zero-mean Gaussian weights only). Where the fast path does
        not apply, the dense path runs instead and a :class:`FallbackWarning` says why.
      devices: split the seeds of each chunk over this many devices (or ``"all"``) with
        ``jax.shard_map`` on a one-axis mesh; None uses the default device. Every seed draws the
        same random numbers as on one device and its statistics agree to float summation order
        (<= 1e-6 relative measured on 4 simulated CPU devices, whose matmuls share the host's
        threads). Needs a shardable PRNG (``"threefry2x32"``): philox cannot be partitioned in
        current jax and is refused with that explanation.
      precision: the precision of every matmul in the compiled program (forward, backward and
        the statistics), one of ``"highest"``, ``"high"``, ``"default"``; None means
        ``"highest"``: float32-exact on every backend (:mod:`initjax._precision`). On the H200
        of issue 13 (tanh Xavier, 10 x 1024, 8 seeds), ``"default"`` (TF32-class passes) moved
        act_var and the gradient variances by 5e-5..1e-4 relative from ``"highest"``, while
        ``"highest"`` on the GPU agreed with the CPU to 3e-7..8e-7. On CPU all three are the same
        float32 matmul and give identical numbers.

    Returns:
      :class:`Propagation` with :class:`LayerStats` as numpy arrays of axes ``(seed, layer, ...)``
      (a :class:`~initjax.engine.blocks.BlockPropagation` for a residual network).

    Raises:
      ValueError / TypeError: for bad arguments; the message names the value and what is allowed.
    """
    args = dict(locals())  # first statement: exactly the arguments, by name
    if isinstance(config, Network) and not config.is_plain:
        return _propagate_blocks(args)
    return _propagate((args.pop("config"),), args, shared=False)[0]


# propagate's options that the block engine measures no differently: anything else must keep its
# default for a residual network (histograms and the fast sampler are plain-MLP features)
_BLOCK_OPTIONS = ("seeds", "key", "inputs", "cotangent", "chunk_size", "memory_budget", "remat", "jit",
                  "prng_impl", "progress", "seed_offset", "precision")


def _propagate_blocks(args: dict[str, Any]) -> BlockPropagation:
    """:func:`propagate` of a network with residual (or other non-Dense) blocks: the block engine."""
    defaults = inspect.signature(propagate).parameters
    for name, value in args.items():
        if name == "config" or name in _BLOCK_OPTIONS:
            continue
        default = defaults[name].default
        if not (value is default or (type(value) is type(default) and value == default)):
            raise ValueError(
                f"{name}={value!r} does not apply to a network with residual blocks: the block engine "
                f"(initjax.engine.blocks) measures per-block moments without histograms on the dense "
                f"path; leave {name} at its default {default!r}"
            )
    result = propagate_blocks(args["config"], **{k: args[k] for k in _BLOCK_OPTIONS})
    bad = result.nonfinite_blocks
    if bad:
        warnings.warn(
            f"{result.network.name}: overflow in blocks {bad}: non-finite values (statistics there "
            "use the finite entries only; see BlockStats.nonfinite / grad_nonfinite) or second "
            "moments beyond float32 (reported as inf)", NonFiniteWarning, stacklevel=3)
    return result


def shareable(configs: Sequence[NetworkConfig]) -> bool:
    """True if ``configs`` can share one standard-normal weight draw per layer and seed.

    They must agree on every shape and on the input and biases (widths, batch, input law, dtype,
    bias init), and every weight init must be a zero-mean Gaussian ``std * normal(key)`` (see
    ``Initializer.gaussian_std``). Activations, norms and the Gaussian scales may differ.

    Raises:
      ValueError / TypeError: for no configs or an entry that is not a NetworkConfig.
    """
    configs = check_configs(configs, "shareable")
    first = configs[0]
    same = ("widths", "batch", "input_variance", "input_correlation", "dtype", "bias_init")
    for c in configs:
        if any(getattr(c, f) != getattr(first, f) for f in same):
            return False
        std = getattr(c.init, "gaussian_std", None)
        if std is None or any(std(shape) is None for shape in c.weight_shapes):
            return False
    return True


def propagate_shared(
    configs: Sequence[NetworkConfig], seeds: int = 1, key: int | jax.Array = 0, **kwargs: Any
) -> list[Propagation]:
    """:func:`propagate` for several configs that share one weight draw per layer and seed.

    Schemes that differ only in the scale of Gaussian weights (N(0, 0.01^2), Xavier, He, N(0, 1))
    and in activation or normalization draw the same standard normals ``z`` per layer and seed and
    use ``W = std * z``: the random numbers, the dominant cost, are drawn once for all of them
    (common random numbers), and each config's weights are exactly those of its solo
    :func:`propagate` call. Configs that also agree on everything but the scale (activation, norm)
    run through one traced body, so compile time does not grow with their number. Each layer's
    products ``x_i W_i`` of all configs are one matmul of their stacked inputs with the shared draw
    (the ``n x n`` draw is read once, not once per config: the five-scheme demo at width 4096 went
    from 4.8 to 2.3 s per seed). Statistics equal the solo runs' to float32 rounding (XLA may order
    a reduction or a matmul with more rows differently); they were bitwise in every case tested.
    Configs that cannot share (see :func:`shareable`) raise ValueError.
    """
    configs = check_configs(configs, "propagate_shared")
    if not shareable(configs):
        raise ValueError(
            "these configs cannot share weight draws: they need equal widths, batch, input law, "
            "dtype and bias init, and zero-mean Gaussian weight inits; run them with propagate()"
        )
    # propagate's own signature names and defaults the options (a TypeError for an unknown one)
    bound = inspect.signature(propagate).bind(configs[0], seeds, key, **kwargs)
    bound.apply_defaults()
    args = dict(bound.arguments)
    del args["config"]
    return _propagate(configs, args, shared=True)


def check_configs(configs: Any, who: str) -> tuple[NetworkConfig, ...]:
    """``configs`` as a non-empty tuple of :class:`~initjax.config.NetworkConfig`, or an error
    naming ``who`` (the caller) and the offending entry."""
    configs = tuple(configs)
    if not configs:
        raise ValueError(f"{who} needs at least one config, got none")
    return tuple(as_config(c, f"configs[{i}]") for i, c in enumerate(configs))


def _propagate(
    configs: tuple[NetworkConfig, ...], args: dict[str, Any], *, shared: bool
) -> list[Propagation]:
    """:func:`propagate` of ``configs`` (one, or a shareable group); ``args``: propagate's
    arguments but ``config``, by name."""
    seeds = check_int("seeds", args["seeds"], minimum=1)
    bins = check_int("bins", args["bins"], minimum=1)
    precision = check_precision(args["precision"])
    for c in configs:  # before the configs are lowered: a huge depth is refused, not expanded
        depth = getattr(c, "depth", None)
        if isinstance(depth, int):
            check_host_memory(seeds, depth, len(LayerStats._fields) + 2 * bins, f"{len(configs)} config(s)")
    configs = tuple(as_config(c) for c in configs)
    seed_offset = check_int("seed_offset", args["seed_offset"], minimum=0)
    cotangent = check_choice("cotangent", args["cotangent"], COTANGENTS)
    opts = MeasureOptions(
        act_range=check_range("act_range", args["act_range"]),
        grad_range=check_range("grad_range", args["grad_range"]),
        bins=bins,
        cotangent=cotangent,
        remat=bool(args["remat"]),
        saturation_tolerance=check_float("saturation_tolerance", args["saturation_tolerance"], minimum=0.0),
    )
    method = check_choice("method", args["method"], METHODS)
    sampler = SAMPLERS[method]
    reason = sampler.applicable(configs[0])
    if shared and method != "dense":
        reason = "propagate_shared draws weight matrices"
    if reason is not None:
        method, sampler = "dense", SAMPLERS["dense"]
        warnings.warn(f"method={args['method']!r} does not apply ({reason}); running the dense path",
                      FallbackWarning, stacklevel=3)
    opts = opts._replace(method=method)
    key = args["key"]
    root = base_key(key, args["prng_impl"])
    impl_name = str(jax.random.key_impl(root))
    first = configs[0]
    x = _check_inputs(first, args["inputs"], seeds)
    per_seed = sampler.estimate_memory(first, remat=opts.remat, group=len(configs))
    chunk_size, n_devices, budget = plan_chunks(
        seeds, per_seed, chunk_size=args["chunk_size"], memory_budget=args["memory_budget"],
        devices=args["devices"], impl=impl_name,
        what=f"{describe_widths(first.widths)}, batch {first.batch}, {len(configs)} config(s)",
    )

    start = time.perf_counter()
    keys = seed_keys(root, np.arange(seed_offset, seed_offset + seeds))
    with matmul_precision(precision):  # traced and called at it: jit's cache keys on the precision
        if args["jit"]:
            stats = run_chunks(configs, opts, keys, x, chunk_size, args["progress"], default_lanes(), n_devices)
        else:
            stats = run_unjitted(configs, opts, keys, x)
    seconds = time.perf_counter() - start
    results = []
    for config, st in zip(configs, stats, strict=True):
        result = Propagation(
            config=config,
            stats=st,
            act_edges=histogram_edges(opts.act_range, bins),
            grad_edges=histogram_edges(opts.grad_range, bins),
            key=int(key) if isinstance(key, int | np.integer) else None,
            cotangent=cotangent,
            prng_impl=impl_name,
            seconds=seconds / len(configs),
            method=method,
            precision=precision,
            memory_budget=budget.nbytes,
            memory_budget_source=budget.source,
        )
        bad = result.nonfinite_layers
        if bad:
            warnings.warn(
                f"{config.name}: overflow in layers {bad}: non-finite values (statistics there use "
                "the finite entries only; see LayerStats.nonfinite / grad_nonfinite) or variances "
                "beyond float32 (reported as inf)",
                NonFiniteWarning,
                stacklevel=3,
            )
        results.append(result)
    return results

class NonFiniteWarning(RuntimeWarning):
    """A propagation produced inf or NaN values (measured and reported, not an error)."""


class FallbackWarning(UserWarning):
    """``method="fast"`` was asked for a network it does not apply to; the dense path ran."""


def trace(
    config: NetworkConfig,
    seed: int = 0,
    key: int | jax.Array = 0,
    *,
    inputs: Any = None,
    cotangent: str = "normal",
    prng_impl: str = "philox2x32",
    precision: str | None = None,
) -> dict[str, list[np.ndarray]]:
    """The raw per-layer tensors of one seed's network, exactly as :func:`propagate` draws it.

    For debugging and for checking statistics by hand: returns lists (one ``(batch, units)`` array
    per layer) under ``"x_prev"`` (the layer's input), ``"h"`` (pre-activation), ``"y"`` (activation
    output), ``"out"`` (layer output), ``"dh"`` (dL/dh) and ``"dx"`` (dL/dx); the weights ``"w"``
    ``(n_{l-1}, n_l)`` and biases ``"b"`` per layer; and the output ``"cotangent"`` (dL/dx^L). With
    Gaussian weights the engine computes ``h = (x z) std + b`` from the standard-normal draw ``z``,
    so ``h`` equals ``x_prev @ w + b`` to float32 rounding, not bitwise. ``precision``: the matmul
    precision, as in :func:`propagate` (None: ``"highest"``).
    """
    config = as_config(config)
    seed = check_int("seed", seed, minimum=0)
    check_choice("cotangent", cotangent, COTANGENTS)
    precision = check_precision(precision)
    opts = MeasureOptions((-1.0, 1.0), (-1.0, 1.0), 1, cotangent, False, 0.01)
    k = seed_keys(base_key(key, prng_impl), [seed])[0]
    x = _check_inputs(config, inputs, 1)
    scaled, stds = as_scaled((config,))
    with matmul_precision(precision):
        run = jax.jit(lambda kk, xx: SAMPLERS["dense"].seed_tensors(scaled, opts, kk, xx, stds)[0])
        tensors = run(k, None if x is None else x[0])
        names = ("x_prev", "h", "y", "out", "dh", "dx")
        result = {n: [np.asarray(a) for a in t] for n, t in zip(names, tensors, strict=True)}
        keys = split_seed_key(k)
        params = [layer_params(config, keys, layer, shape, None if stds is None else stds[0, layer])
                  for layer, shape in enumerate(config.weight_shapes)]
        result["w"] = [np.asarray(w) for w, _ in params]
        result["b"] = [np.asarray(b) for _, b in params]
        result["cotangent"] = np.asarray(
            draw_cotangent(config, cotangent, jnp.asarray(result["out"][-1]), keys.cotangent))
    return result
