"""The sampler protocol: how the executor asks a sampler for one seed's tensors or statistics.

A sampler turns a group of configs and one seed's key into per-layer tensors
``(x_prev, h, y, out, dh, dx)`` (each ``(batch, units)``, stacked ``(layer, batch, units)`` when
the network is uniform) and their :class:`~initjax.engine.stats.LayerStats`. Two exist:
:data:`initjax.engine.dense.SAMPLER` (every weight matrix drawn) and
:data:`initjax.engine.fast.SAMPLER` (exact in distribution, O(batch x width) random numbers).
The executor (:mod:`initjax.engine.executor`) picks one by the ``method`` of
:class:`~initjax.engine.stats.MeasureOptions` and never looks inside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

__all__ = ["Sampler"]


class Sampler(NamedTuple):
    """A sampler: a name and five pure functions (a NamedTuple, like an optax transformation).

    Attributes:
      name: the ``method`` that selects it (``"dense"``, ``"fast"``).
      applicable: ``applicable(config) -> str | None``: None if the sampler can draw ``config``,
        else the reason it cannot (shown in the fallback warning).
      estimate_memory: ``estimate_memory(config, *, remat, group) -> int``: peak bytes of
        temporaries for one seed of ``group`` configs sharing a draw (sizes chunks of seeds).
      prepare: ``prepare(configs) -> (configs, stds)``: the configs the compiled program is keyed
        by and the ``(config, layer)`` scales it takes as data (or None).
      seed_tensors: ``seed_tensors(configs, opts, seed_key, inputs, stds) -> list``: per config,
        the per-layer tensors ``(x_prev, h, y, out, dh, dx)`` of one seed.
      seed_stats: ``seed_stats(configs, opts, seed_key, inputs, stds) -> tuple``: per config, its
        :class:`~initjax.engine.stats.LayerStats` (axes ``(layer, ...)``) of one seed.
    """

    name: str
    applicable: Callable[[Any], str | None]
    estimate_memory: Callable[..., int]
    prepare: Callable[[tuple], tuple[tuple, Any]]
    seed_tensors: Callable[..., list]
    seed_stats: Callable[..., tuple]
