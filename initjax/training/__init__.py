"""Train networks over many seeds and arms at once and record how their signal evolves.

One trainer, in three rooms:

- :mod:`initjax.training.core`: the pure core: a :class:`TrainState`, a step built from a loss and
  an ``optax`` transformation (:func:`make_step`), a ``lax.scan`` over steps (:func:`run_steps`),
  ``vmap``-ped over arms and seeds (:func:`vmap_arms_seeds`);
- :mod:`initjax.training.config` and :mod:`initjax.training.trainer`: :class:`TrainConfig` and
  :func:`compare`, which trains configs that differ only in numbers (learning rate, momentum...)
  as arms of one compiled program, with records, checkpoints and resume;
- the statistics the records are made of are the engine's (:mod:`initjax.engine.stats`:
  :func:`percentiles`, :func:`moments`), re-exported here;
- :mod:`initjax.training.arms`: deep plain MLPs (a ``lax.scan`` over layers) whose arms differ in
  activation, initializer, learning rate and depth, on the same core (the Glorot, He and
  Schoenholz reproductions).

    >>> import dataclasses
    >>> from initjax import data, training
    >>> ds = data.digits()
    >>> plain = training.TrainConfig(label="sigmoid", widths=(100, 100, 100), activation="sigmoid",
    ...                              kernel_init="normal:stddev=0.1", optimizer="momentum",
    ...                              learning_rate=0.05, steps=2000, record_every=100)
    >>> bn = dataclasses.replace(plain, label="sigmoid + BN", norm="batch")
    >>> result = training.compare([plain, bn], ds, seeds=8, out="runs/bn")   # doctest: +SKIP
    >>> result["sigmoid + BN"].test_accuracy.shape                          # doctest: +SKIP
    (8, 21)
    >>> training.plot_curves(result, "test_accuracy")                       # doctest: +SKIP

References:
  Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
  networks", AISTATS, https://proceedings.mlr.press/v9/glorot10a.html.
  He et al. 2015, "Delving Deep into Rectifiers", https://arxiv.org/abs/1502.01852.
  Ioffe & Szegedy 2015, "Batch Normalization", https://arxiv.org/abs/1502.03167.
"""

from __future__ import annotations

from initjax.engine.stats import moments as moments
from initjax.engine.stats import percentiles as percentiles
from initjax.training.config import MODELS as MODELS
from initjax.training.config import NUMERIC_FIELDS as NUMERIC_FIELDS
from initjax.training.config import OPTIMIZERS as OPTIMIZERS
from initjax.training.config import SCHEDULES as SCHEDULES
from initjax.training.config import TrainConfig as TrainConfig
from initjax.training.config import make_optimizer as make_optimizer
from initjax.training.config import structure_key as structure_key
from initjax.training.core import TrainState as TrainState
from initjax.training.core import init_state as init_state
from initjax.training.core import make_step as make_step
from initjax.training.core import map_arms_vmap_seeds as map_arms_vmap_seeds
from initjax.training.core import run_steps as run_steps
from initjax.training.core import scale_by_multipliers as scale_by_multipliers
from initjax.training.core import vmap_arms_seeds as vmap_arms_seeds
from initjax.training.plots import plot_curves as plot_curves
from initjax.training.plots import plot_percentiles as plot_percentiles
from initjax.training.records import PERCENTILES as PERCENTILES
from initjax.training.records import RECORD_FIELDS as RECORD_FIELDS
from initjax.training.records import CompareResult as CompareResult
from initjax.training.records import Record as Record
from initjax.training.trainer import Interrupted as Interrupted
from initjax.training.trainer import compare as compare

__all__ = [
    "TrainConfig",
    "Record",
    "CompareResult",
    "compare",
    "plot_curves",
    "plot_percentiles",
    "MODELS",
    "OPTIMIZERS",
    "SCHEDULES",
    "PERCENTILES",
    "RECORD_FIELDS",
    "NUMERIC_FIELDS",
    "Interrupted",
    "TrainState",
    "init_state",
    "make_step",
    "run_steps",
    "vmap_arms_seeds",
    "map_arms_vmap_seeds",
    "scale_by_multipliers",
    "make_optimizer",
    "structure_key",
    "percentiles",
    "moments",
]
