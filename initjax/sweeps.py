"""Sweeps: many network configs (init x activation x depth x ...), each over many seeds.

    >>> base = NetworkConfig(depth=10, width=64, batch=16)
    >>> configs = grid(base, activation=["tanh", "relu"], init=["xavier_normal", "he_normal"])
    >>> configs[3].name
    'activation=relu, init=he_normal'
    >>> result = sweep(configs, seeds=8)  # out="results/my-sweep": resumable, written as it goes
    >>> result["activation=relu, init=he_normal"].stats.act_var.shape
    (8, 10)

With ``out``, each finished config is saved at once (atomically) under ``out/NNN/`` and recorded in
``out/sweep.json``; running the same sweep again skips what is already done, so an interrupted sweep
loses nothing it had finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from initjax import _io
from initjax._checks import check_int
from initjax._precision import check_precision
from initjax.config import NetworkConfig
from initjax.engine import BlockPropagation, Propagation, propagate, propagate_shared, shareable
from initjax.engine.attention import AttentionPropagation
from initjax.engine.propagation import check_configs
from initjax.engine.propagation import propagate as engine_propagate
from initjax.network import Network

__all__ = ["grid", "sweep", "Sweep"]


def grid(base: NetworkConfig, **axes: Sequence[Any]) -> list[NetworkConfig]:
    """The cartesian product of ``axes`` (field name -> values) applied to ``base``.

    Each config is labelled with the values that vary, e.g. ``"activation=relu, init=he_normal"``,
    unless ``label`` is itself an axis.

    Raises:
      ValueError: for a name that is not a :class:`NetworkConfig` field or an empty axis.
    """
    if not isinstance(base, NetworkConfig):
        raise TypeError(f"base must be a NetworkConfig, got {type(base).__name__}")
    fields = {f.name for f in dataclasses.fields(NetworkConfig)}
    for name, values in axes.items():
        if name not in fields:
            raise ValueError(f"unknown config field {name!r} in grid; fields: {sorted(fields)}")
        if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
            raise ValueError(f"grid axis {name!r} must be a non-empty list of values, got {values!r}")
    names = list(axes)
    configs = []
    for combo in itertools.product(*(axes[n] for n in names)):
        changes = dict(zip(names, combo, strict=True))
        if "label" not in changes:
            changes["label"] = ", ".join(f"{n}={_short(v)}" for n, v in changes.items())
        configs.append(base.replace(**changes))
    return configs


def _short(value: Any) -> str:
    spec = getattr(value, "spec", None)
    return spec if isinstance(spec, str) else str(value)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Results of a sweep, in config order; index by position or by label."""

    results: tuple[Propagation | BlockPropagation, ...]

    @property
    def labels(self) -> list[str]:
        return [r.config.name for r in self.results]

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self):
        return iter(self.results)

    def __getitem__(self, item: int | str) -> Propagation:
        if isinstance(item, str):
            for r in self.results:
                if r.config.name == item:
                    return r
            raise KeyError(f"no config labelled {item!r}; labels: {self.labels}")
        return self.results[item]

    def save(self, directory: str | os.PathLike) -> Path:
        """Save every result under ``directory/NNN/`` and the index ``sweep.json``."""
        d = Path(directory)
        for i, r in enumerate(self.results):
            r.save(d / f"{i:03d}")
        _write_index(d, [r.config for r in self.results], done=set(range(len(self.results))))
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Sweep:
        """Read a saved sweep; raises if some entry is not finished."""
        d = Path(directory)
        index = _read_index(d)
        if index is None:
            raise FileNotFoundError(f"{d / 'sweep.json'} is missing: not a saved sweep directory")
        missing = [e["dir"] for e in index["entries"] if e["status"] != "done"]
        if missing:
            raise ValueError(f"sweep in {d} is incomplete: entries {missing} are not done")
        return cls(tuple(_load_entry(d / e["dir"]) for e in index["entries"]))


def _write_index(d: Path, configs: Sequence[NetworkConfig], done: set[int], extra: dict | None = None) -> None:
    entries = [
        {
            "dir": f"{i:03d}",
            "label": c.name,
            "config": c.to_dict(),
            "status": "done" if i in done else "incomplete",
        }
        for i, c in enumerate(configs)
    ]
    status = "done" if len(done) == len(configs) else "incomplete"
    _io.write_json(d / "sweep.json", {"status": status, "entries": entries, **(extra or {})})


def _check_same_run(d: Path, stored: Any, identity: dict[str, Any]) -> None:
    """Refuse to resume into ``d`` a sweep whose seeds, key or measurement options differ from
    the one that wrote it (its numbers would be returned as if they were this call's)."""
    if stored == identity:
        return
    if not isinstance(stored, dict):
        raise ValueError(f"{d / 'sweep.json'} records no run identity (an older initjax wrote it), "
                         "so its results cannot be matched to this call; use a new out folder")
    diffs = [f"{k}: stored {stored.get(k)!r}, asked {identity[k]!r}"
             for k in ("seeds", "key") if stored.get(k) != identity[k]]
    s_opts, opts = stored.get("options") or {}, identity["options"]
    diffs += [f"{k}: stored {s_opts.get(k)!r}, asked {opts.get(k)!r}"
              for k in sorted(set(s_opts) | set(opts)) if s_opts.get(k) != opts.get(k)]
    raise ValueError(f"{d} holds a sweep run with other settings ({'; '.join(diffs)}); resuming "
                     "would return its numbers as this call's: use a new out folder")


def _read_index(d: Path) -> dict | None:
    path = d / "sweep.json"
    if not path.exists():
        return None
    index = _io.read_json(path, "sweep index")
    entries = index.get("entries")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "status" in e and "config" in e
                                                for e in entries):
        raise ValueError(f"{path}: unreadable or incomplete sweep index (its 'entries' are not a list "
                         "of {status, config} records); use a new out folder")
    return index


# propagate's arguments that are not part of a run's identity (how it shows progress, not what it
# measures)
_NOT_IDENTITY = ("config", "seeds", "key", "progress")


def _identity(seeds: int, key: Any, propagate_kwargs: dict[str, Any]) -> dict[str, Any]:
    """What a sweep's numbers depend on besides the configs: the seeds, the key and every
    measurement option of :func:`~initjax.propagate`, defaults filled in (so passing a default
    explicitly is the same run)."""
    params = inspect.signature(engine_propagate).parameters  # not the module name tests patch
    unknown = sorted(set(propagate_kwargs) - set(params) - set(_NOT_IDENTITY))
    if unknown:
        raise TypeError(f"sweep got unknown propagate arguments {unknown}; known: "
                        f"{sorted(set(params) - set(_NOT_IDENTITY))}")
    options = {name: p.default for name, p in params.items() if name not in _NOT_IDENTITY}
    options.update(propagate_kwargs)
    # None and "highest" are one run; the precision is stored: on a GPU the numbers depend on it
    options["precision"] = check_precision(options.get("precision"))
    options = {k: _fingerprint(v) if isinstance(v, jax.Array | np.ndarray) else v
               for k, v in options.items()}
    if isinstance(key, int):
        key_id: Any = key
    else:  # a JAX key: its data and implementation
        key_id = {"key_data": jax.random.key_data(key).tolist(),
                  "impl": str(jax.random.key_impl(key))}
    return _io.json_safe({"seeds": seeds, "key": key_id, "options": options})


def _fingerprint(array: Any) -> dict[str, Any]:
    """An array option (``inputs``) as its shape, dtype and a digest of its bytes, not its
    values: the index stays small, and a different batch is a different run."""
    a = np.ascontiguousarray(np.asarray(array))
    return {"shape": list(a.shape), "dtype": a.dtype.name,
            "sha1": hashlib.sha1(a.tobytes()).hexdigest()}


def _descriptions(configs: Iterable[Any]) -> list[NetworkConfig | Network]:
    """The sweep's networks: configs and plain Networks as :class:`NetworkConfig` (the engine's
    plain path), Networks with residual blocks as they are (the block engine)."""
    configs = list(configs)
    if not configs:
        raise ValueError("sweep needs at least one config, got none")
    plain = [i for i, c in enumerate(configs) if not (isinstance(c, Network) and not c.is_plain)]
    as_configs = check_configs([configs[i] for i in plain], "sweep") if plain else ()
    for i, c in zip(plain, as_configs, strict=True):
        configs[i] = c
    return configs


def _load_entry(directory: Path) -> Propagation | BlockPropagation | AttentionPropagation:
    """A saved entry: a plain network's :class:`Propagation` (``config.json``), a residual
    network's :class:`BlockPropagation` or a token network's :class:`AttentionPropagation`
    (``network.json``)."""
    if (directory / "network.json").exists():
        tokens = _io.read_json(directory / "network.json", "saved network description").get("tokens")
        return (BlockPropagation if tokens is None else AttentionPropagation).load(directory)
    return Propagation.load(directory)


def _groups(configs: Sequence[Any], todo: Sequence[int], share: bool) -> list[list[int]]:
    """Indices of ``todo`` grouped so each group can share weight draws (same shapes and input,
    Gaussian inits); without ``share``, one config per group. Residual networks run alone."""
    groups: list[list[int]] = []
    for i in todo:
        if isinstance(configs[i], Network):
            groups.append([i])
            continue
        for g in groups if share else ():
            if isinstance(configs[g[0]], Network):
                continue
            if shareable([configs[g[0]], configs[i]]):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def sweep(
    configs: Iterable[NetworkConfig],
    seeds: int = 1,
    key: int = 0,
    *,
    out: str | os.PathLike | None = None,
    quiet: bool = False,
    share_draws: bool = True,
    **propagate_kwargs: Any,
) -> Sweep:
    """Run :func:`~initjax.propagate` for every config, with the same seeds and key.

    Args:
      configs: the configs (e.g. from :func:`grid`), or :class:`~initjax.network.Network`
        descriptions; one with residual blocks is measured per block by the block engine (its
        result is a :class:`~initjax.engine.BlockPropagation`, saved with its ``network.json``).
      seeds, key: as in :func:`~initjax.propagate`; every config sees the same seed indices.
      out: a directory: each finished config is written at once and the sweep resumes from it.
      quiet: no progress bar (it is shown only on a terminal in any case).
      share_draws: run configs that differ only in Gaussian scale, activation or norm together on
        one standard-normal draw per layer and seed (:func:`~initjax.propagate_shared`): the
        random numbers, the dominant cost, are drawn once for the group (common random numbers),
        and every config's weights are exactly those of its solo run (statistics bitwise, or to
        float32 rounding where configs equal up to scale share one traced body).
      **propagate_kwargs: passed to :func:`~initjax.propagate` (cotangent, bins, ranges, devices,
        ``precision``...). The matmul ``precision`` (default ``"highest"``, float32-exact on every
        backend; ``"default"`` moved a 10 x 1024 tanh network's variances by 5e-5..1e-4 relative
        on issue 13's H200) is stored with the sweep's options in ``sweep.json``, and resuming a
        folder at another precision is refused like any other changed option.
    """
    configs = _descriptions(configs)
    seeds = check_int("seeds", seeds, minimum=1)
    identity = _identity(seeds, key, propagate_kwargs)
    if out is None:
        return _sweep(configs, seeds, key, None, quiet, share_draws, identity, propagate_kwargs)
    d = _io.check_out_dir(out, "out")
    with _io.claim_dir(d, "sweep folder"):  # one writer per folder: a second process is refused
        return _sweep(configs, seeds, key, d, quiet, share_draws, identity, propagate_kwargs)


def _sweep(configs, seeds, key, d: Path | None, quiet, share_draws, identity, propagate_kwargs) -> Sweep:
    results: list[Propagation | None] = [None] * len(configs)
    done: set[int] = set()
    if d is not None:
        index = _read_index(d)
        # an index with nothing finished (a call refused by propagate after the index was
        # written) holds no numbers to mistake for this call's: it is simply rewritten
        if index is not None and any(e.get("status") == "done" for e in index["entries"]):
            _check_same_run(d, index.get("identity"), identity)
            for i, e in enumerate(index["entries"]):
                if i < len(configs) and e.get("status") == "done" and e.get("config") == configs[i].to_dict():
                    loaded = _load_entry(d / f"{i:03d}")
                    if loaded.config != configs[i]:
                        raise ValueError(
                            f"{d / f'{i:03d}' / 'config.json'} holds {loaded.config.name!r} but "
                            f"the sweep index {d / 'sweep.json'} says {configs[i].name!r}: the "
                            "folder was written by two runs; use a new out folder"
                        )
                    results[i] = loaded
                    done.add(i)
        _write_index(d, configs, done, {"identity": identity})
    show = not quiet and sys.stderr.isatty()
    todo = [i for i in range(len(configs)) if i not in done]
    with _io.progress_bar(total=len(configs), desc="sweep", unit="config", disable=not show) as bar:
        bar.update(len(done))
        for group in _groups(configs, todo, share_draws):
            members = [configs[i] for i in group]
            if len(members) > 1:
                measured = propagate_shared(members, seeds, key, progress=show, **propagate_kwargs)
            else:
                measured = [propagate(members[0], seeds, key, progress=show, **propagate_kwargs)]
            for i, res in zip(group, measured, strict=True):
                results[i] = res
                if d is not None:
                    res.save(d / f"{i:03d}")
                    done.add(i)
            if d is not None:
                _write_index(d, configs, done, {"identity": identity})
            bar.update(len(group))
    return Sweep(tuple(results))  # type: ignore[arg-type]
