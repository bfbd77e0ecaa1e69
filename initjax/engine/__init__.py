"""The propagation engine: per-layer activation and gradient statistics of sampled networks.

One concept per module; this package re-exports what a researcher imports:

* :mod:`~initjax.engine.propagation`: :func:`propagate`, :func:`propagate_shared`, :func:`trace`,
  the :class:`Propagation` result and its warnings;
* :mod:`~initjax.engine.stats`: :class:`LayerStats`, :func:`measure_layers`, :func:`histogram`;
* :mod:`~initjax.engine.sampling`: the network and its keys (:func:`seed_keys`);
* :mod:`~initjax.engine.dense`, :mod:`~initjax.engine.fast`: the two samplers, one protocol
  (:class:`Sampler`);
* :mod:`~initjax.engine.executor`: chunks, lanes, devices and the memory budget;
* :mod:`~initjax.engine.blocks`: residual networks, per block (:func:`propagate_blocks`).

>>> from initjax.engine import propagate
>>> from initjax import NetworkConfig
>>> propagate(NetworkConfig(depth=3, width=8, batch=4), seeds=2).stats.act_var.shape
(2, 3)
"""

from initjax.engine.blocks import BlockPropagation as BlockPropagation
from initjax.engine.blocks import BlockStats as BlockStats
from initjax.engine.blocks import propagate_blocks as propagate_blocks
from initjax.engine.executor import default_lanes as default_lanes
from initjax.engine.propagation import COTANGENTS as COTANGENTS
from initjax.engine.propagation import METHODS as METHODS
from initjax.engine.propagation import PRNG_IMPLS as PRNG_IMPLS
from initjax.engine.propagation import FallbackWarning as FallbackWarning
from initjax.engine.propagation import NonFiniteWarning as NonFiniteWarning
from initjax.engine.propagation import Propagation as Propagation
from initjax.engine.propagation import estimate_memory as estimate_memory
from initjax.engine.propagation import propagate as propagate
from initjax.engine.propagation import propagate_shared as propagate_shared
from initjax.engine.propagation import shareable as shareable
from initjax.engine.propagation import trace as trace
from initjax.engine.sampler import Sampler as Sampler
from initjax.engine.sampling import seed_keys as seed_keys
from initjax.engine.stats import LayerStats as LayerStats
from initjax.engine.stats import MeasureOptions as MeasureOptions
from initjax.engine.stats import histogram as histogram
from initjax.engine.stats import measure_layers as measure_layers

__all__ = [
    "BlockPropagation",
    "BlockStats",
    "COTANGENTS",
    "METHODS",
    "PRNG_IMPLS",
    "FallbackWarning",
    "LayerStats",
    "MeasureOptions",
    "NonFiniteWarning",
    "Propagation",
    "Sampler",
    "default_lanes",
    "estimate_memory",
    "histogram",
    "measure_layers",
    "propagate",
    "propagate_blocks",
    "propagate_shared",
    "seed_keys",
    "shareable",
    "trace",
]
