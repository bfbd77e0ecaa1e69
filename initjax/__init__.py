"""initjax: how weight initialization, activations and batch norm shape the signal in deep networks.

The public API. Implementation lives in one module per concept: ``initializers``, ``activations``,
``gains``, ``config``, ``propagation``, ``sweeps``, ``theory``, ``plotting``, ``data``,
``modules``, ``probing`` (``probe``), ``lsuv``, ``training`` (exported as ``train``),
``reproductions``, ``cli``.
"""

from initjax import activations as activations
from initjax import data as data
from initjax import initializers as initializers
from initjax import lsuv as lsuv
from initjax import modules as modules
from initjax import plotting as plotting
from initjax import theory as theory
from initjax import training as train
from initjax.cli import enable_compilation_cache as enable_compilation_cache
from initjax.config import NetworkConfig as NetworkConfig
from initjax.gains import calculate_gain as calculate_gain
from initjax.probing import ProbeResult as ProbeResult
from initjax.probing import probe as probe
from initjax.probing import probe_linen as probe_linen
from initjax.propagation import LayerStats as LayerStats
from initjax.propagation import NonFiniteWarning as NonFiniteWarning
from initjax.propagation import Propagation as Propagation
from initjax.propagation import propagate as propagate
from initjax.propagation import propagate_shared as propagate_shared
from initjax.propagation import trace as trace
from initjax.sweeps import Sweep as Sweep
from initjax.sweeps import grid as grid
from initjax.sweeps import sweep as sweep

__version__ = "0.1.0"

__all__ = [
    "activations",
    "data",
    "initializers",
    "modules",
    "plotting",
    "theory",
    "train",
    "calculate_gain",
    "enable_compilation_cache",
    "lsuv",
    "probe",
    "probe_linen",
    "ProbeResult",
    "NetworkConfig",
    "LayerStats",
    "NonFiniteWarning",
    "Propagation",
    "propagate",
    "propagate_shared",
    "trace",
    "Sweep",
    "grid",
    "sweep",
    "__version__",
]
