"""What the block engines' results share: the network, its per-(seed, block) statistics, and how
they are written, read and shown as JSON.

:class:`~initjax.engine.blocks.BlockPropagation` (residual networks) and
:class:`~initjax.engine.attention.AttentionPropagation` (token networks) are frozen dataclasses
with the fields ``network, stats, key, cotangent, prng_impl, seconds, precision, memory_budget,
memory_budget_source``; each names its statistics' NamedTuple in ``STATS`` and gives its own
``layer_table()``. This mixin gives them ``config``, ``seeds``, ``to_json_dict``, ``save`` and
``load`` (``network.json``, ``stats.npz``, ``meta.json``, written atomically).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from initjax import _io
from initjax.network import Network

__all__ = ["BlockResult"]


class BlockResult:
    """Mixin for a block engine's result dataclass (see the module docstring)."""

    STATS: ClassVar[type]  # the NamedTuple of the statistics, axes (seed, block, ...)

    @property
    def config(self) -> Network:
        """The network (named as :class:`~initjax.engine.Propagation` names its config)."""
        return self.network

    @property
    def seeds(self) -> int:
        return int(self.stats.act_var.shape[0])

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "network": self.network.to_dict(),
            "seeds": self.seeds,
            "key": self.key,
            "cotangent": self.cotangent,
            "prng_impl": self.prng_impl,
            "precision": self.precision,
            "memory_budget": {"bytes": self.memory_budget, "source": self.memory_budget_source},
            "layers": self.layer_table(),
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``network.json``, ``stats.npz`` and ``meta.json`` into ``directory``, atomically."""
        d = Path(directory)
        _io.write_npz(d / "stats.npz", **{k: np.asarray(v) for k, v in self.stats._asdict().items()})
        meta = {"key": self.key, "cotangent": self.cotangent, "prng_impl": self.prng_impl,
                "seconds": self.seconds, "seeds": self.seeds, "precision": self.precision,
                "memory_budget": self.memory_budget, "memory_budget_source": self.memory_budget_source}
        _io.write_json(d / "meta.json", meta)
        _io.write_json(d / "network.json", self.network.to_dict())
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Any:
        """Read what :meth:`save` wrote; a missing or unreadable file is named in the error."""
        d = Path(directory)
        for name in ("network.json", "stats.npz", "meta.json"):
            if not (d / name).exists():
                raise FileNotFoundError(f"{d / name} is missing: not a saved {cls.__name__} directory")
        with _io.reading(d / "network.json", "saved network description"):
            network = Network.from_dict(_io.read_json(d / "network.json"))
        meta = _io.read_json(d / "meta.json", "saved run metadata")
        stats = cls.STATS(**_io.load_npz(d / "stats.npz", cls.STATS._fields, "saved statistics"))
        nan = float("nan")
        return cls(network, stats, meta.get("key"), meta.get("cotangent", "normal"),
                   meta.get("prng_impl", "philox2x32"),
                   nan if meta.get("seconds") is None else float(meta["seconds"]),
                   # saved before the precision policy: the backend's default (exact on CPU)
                   meta.get("precision", "default"),
                   nan if meta.get("memory_budget") is None else float(meta["memory_budget"]),
                   meta.get("memory_budget_source", "unknown"))
