"""initjax: how weight initialization, activations and batch norm shape the signal in deep networks.

The public API. Implementation lives in one module per concept: ``initializers``, ``activations``,
``gains``, ``config``, the engine (``propagate``), ``sweeps``, ``theory``, ``plotting``, ``data``,
``modules``, ``probing`` (``probe``), ``lsuv``, ``training`` (also exported as ``train``),
``reproductions``, ``cli``.

``import initjax`` is light: every name below is loaded on first use (PEP 562), so plotting
(matplotlib), the CLI, and the Flax/optax parts (``modules``, ``probe``, ``lsuv``, ``training``)
cost nothing until they are touched.

Keys: wherever initjax accepts an int seed, one rule turns it into a PRNG key: the int ``s`` means
``jax.random.key(s, impl="philox2x32")`` (``initjax._keys.as_key``). A typed key
(``jax.random.key(0)``, any implementation) is used as given; a legacy raw ``uint32[2]`` key
(``jax.random.PRNGKey(0)``) is wrapped as threefry, which is what made it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# The engine's public names. When the engine moves, change this one line.
_ENGINE = "initjax.engine"

# Submodules exported as attributes (initjax.<name>), and aliases of them.
_SUBMODULES = (
    "activations", "config", "coordcheck", "data", "gains", "initializers", "lsuv", "modules",
    "opprobe", "parametrization", "plotting", "probing", "reproductions", "sweeps", "theory",
    "training", "transfer",
)
_ALIASES = {"train": "training"}  # the README's name for the training module

# Names exported from a module: module path -> the names taken from it.
_EXPORTS = {
    "initjax.gains": ("calculate_gain",),
    "initjax.cli": ("enable_compilation_cache",),
    "initjax.config": ("NetworkConfig",),
    "initjax.probing": ("probe", "probe_linen", "ProbeResult"),
    _ENGINE: ("LayerStats", "NonFiniteWarning", "Propagation", "propagate", "propagate_shared",
              "trace"),
    "initjax.sweeps": ("Sweep", "grid", "sweep"),
}
_NAMES = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [*_SUBMODULES, *_ALIASES, *_NAMES, "__version__"]


def __getattr__(name: str) -> Any:
    """Load a public submodule or name on first access and cache it in the package namespace."""
    if name in _SUBMODULES or name in _ALIASES:
        value = importlib.import_module(f"initjax.{_ALIASES.get(name, name)}")
    elif name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    else:
        raise AttributeError(f"module 'initjax' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
