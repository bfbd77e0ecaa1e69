"""Atomic writes: a result file is either absent or complete, never half-written.

Each writer writes to a temporary file in the destination's directory and ``os.replace``-s it into
place (atomic on POSIX and Windows), so an interrupted run loses nothing already finished.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _atomic(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return _atomic(path, lambda f: f.write(text), "w")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; NaN/inf become null (strict JSON)."""
    return write_text(path, json.dumps(json_safe(obj), indent=2, sort_keys=False) + "\n")


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """Write arrays to a compressed ``.npz`` atomically."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return _atomic(path, lambda f: f.write(buf.getvalue()), "wb")


def save_figure(fig: Any, path_stem: str | os.PathLike, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Save a matplotlib figure as ``stem.png`` / ``stem.pdf`` atomically; returns the paths."""
    out = []
    for fmt in formats:
        target = Path(f"{path_stem}.{fmt}")

        def write(f: Any, fmt: str = fmt) -> None:
            fig.savefig(f, format=fmt, dpi=120, bbox_inches="tight")

        out.append(_atomic(target, write, "wb"))
    return out


def json_safe(obj: Any) -> Any:
    """Replace non-finite floats by None and numpy scalars/arrays by Python values, recursively."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def progress_bar(**kwargs: Any):
    """A tqdm bar that clears itself when done (tqdm is imported on first use)."""
    from tqdm.auto import tqdm

    return tqdm(leave=False, dynamic_ncols=True, **kwargs)


def check_out_dir(path: str | os.PathLike, name: str = "out") -> Path:
    """Check, before any work and without writing anything, that ``path`` is a directory that can
    be written or created: it exists as a writable directory, or its nearest existing ancestor
    is one. A bad output path then fails at once instead of after the computation.

    Raises:
      ValueError: ``path`` (or an ancestor) is a file, or the directory to write in is not
        writable; the message names it.
    """
    out = Path(path)
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        if probe == out:
            raise ValueError(f"{name} {str(out)!r} is a file, not a directory")
        raise ValueError(f"{name} {str(out)!r} cannot be a directory (its ancestor "
                         f"{str(probe)!r} is a file)")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {str(out)!r} cannot be written: {str(probe)!r} is not writable")
    return out
