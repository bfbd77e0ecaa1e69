"""Result files: written atomically, read with errors that name them, one writer per folder.

* Writes: each writer writes to a temporary file ``.NAME.PID.*.tmp`` in the destination's
  directory and ``os.replace``-s it into place (atomic on POSIX and Windows), so an interrupted run
  loses nothing already finished. A killed writer (SIGKILL skips every cleanup) leaves its
  temporary file behind; the next write of the same target removes it once its pid is gone.
* Reads (:func:`read_json`, :func:`load_npz`, :func:`reading`): a truncated or garbage file raises
  one line that names it, never a bare ``JSONDecodeError`` or ``BadZipFile``.
* Folders (:func:`claim_dir`): a lock file claims an output folder for one process; a second
  writer is refused naming the holder's pid, a dead holder's lock is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import socket
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "LOCK_NAME", "DirectoryLocked", "check_out_dir", "claim_dir", "json_safe", "load_npz", "progress_bar",
    "read_json", "reading", "save_figure", "write_json", "write_npz", "write_text",
]

# a temporary file without a live writer is removed once it is this old (an interrupted write of
# an older initjax, whose temporary names carry no pid)
_STALE_TMP_S = 600.0


def _pid_alive(pid: int) -> bool:
    """True if a process ``pid`` exists on this machine (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as err:
        return err.errno != errno.ESRCH
    return True


def _clean_stale_tmp(path: Path) -> list[Path]:
    """Remove the temporary files an interrupted write of ``path`` left behind (a SIGKILL skips
    the cleanup in :func:`_atomic`): ``.NAME.PID.*.tmp`` whose process is gone, and older
    pid-less ``.NAME.*.tmp`` files more than :data:`_STALE_TMP_S` seconds old. Files of live
    writers are kept. Returns the removed paths."""
    removed = []
    prefix = f".{path.name}."
    try:
        candidates = [p for p in path.parent.iterdir() if p.name.startswith(prefix) and p.name.endswith(".tmp")]
    except OSError:
        return removed
    for p in candidates:
        middle = p.name[len(prefix):-len(".tmp")]
        pid_text = middle.split(".", 1)[0]
        if pid_text.isdigit() and "." in middle:
            stale = not _pid_alive(int(pid_text))
        else:
            try:
                stale = time.time() - p.stat().st_mtime > _STALE_TMP_S
            except OSError:
                continue
        if stale:
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def _atomic(path: str | os.PathLike, write: Callable[[Any], None], mode: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(path)
    # the writer's pid in the name: a later write can tell an orphan from a live writer's file
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
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


# -- reading: every error names the file -----------------------------------------------------------
# what a damaged file raises while it is parsed: truncated or garbage JSON (JSONDecodeError is a
# ValueError), a truncated or garbage npz (BadZipFile, EOFError, zlib.error, OSError), a missing
# or mistyped field (KeyError, TypeError)
_READ_ERRORS = (ValueError, KeyError, TypeError, EOFError, OSError, zipfile.BadZipFile, zlib.error,
                UnicodeDecodeError)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str = "file") -> Iterator[None]:
    """Turn any error raised while reading or parsing ``path`` into one line that names it.

    A missing file stays a :class:`FileNotFoundError` (naming the path); anything else (a
    truncated or garbage file, a missing or mistyped field) becomes a :class:`ValueError`
    ``"PATH: unreadable or incomplete WHAT (the error)"``."""
    try:
        yield
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path} is missing ({what})") from err
    except _READ_ERRORS as err:
        if str(path) in str(err) and "\n" not in str(err):  # already names the file
            raise
        raise ValueError(f"{path}: unreadable or incomplete {what} ({_one_line(err)})") from None


def read_json(path: str | os.PathLike, what: str = "JSON file", *, kind: type | None = dict) -> Any:
    """Parse the JSON file ``path``; an unreadable, truncated or garbage file (or, with ``kind``,
    a document of another type) raises one line naming it (see :func:`reading`)."""
    path = Path(path)
    with reading(path, what):
        obj = json.loads(path.read_text())
        if kind is not None and not isinstance(obj, kind):
            raise TypeError(f"expected a JSON {kind.__name__}, got {type(obj).__name__}")
    return obj


def load_npz(path: str | os.PathLike, fields: Sequence[str] | None = None,
             what: str = "array file") -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` file ``path`` (or only ``fields``, each required), read in
    full; a truncated or garbage file raises one line naming it (see :func:`reading`)."""
    path = Path(path)
    # the file is opened here, not by np.load: np.load leaks its handle on a damaged zip
    with reading(path, what), open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
        names = z.files if fields is None else fields
        missing = [f for f in names if f not in z.files]
        if missing:
            raise KeyError(f"fields {missing} missing")
        return {f: np.asarray(z[f]) for f in names}


# -- one writer per folder ---------------------------------------------------------------------------
LOCK_NAME = ".initjax.lock"


class DirectoryLocked(ValueError):
    """Another live process holds the folder's lock."""


def _read_lock(lock: Path) -> dict[str, Any]:
    try:
        data = json.loads(lock.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def claim_dir(directory: str | os.PathLike, what: str = "output folder") -> Iterator[Path]:
    """Hold ``directory`` for this process while the block runs, so two processes never
    interleave their writes in one folder.

    The claim is the file ``directory/.initjax.lock`` (pid, host, time), created atomically
    (``O_CREAT | O_EXCL``). A second process is refused at once with :class:`DirectoryLocked`
    naming the folder and the holder's pid. A lock whose process is gone (a killed run) is taken
    over; one held by this same process (a nested claim, or an earlier call that raised) is
    shared, and only the outermost claim removes it (and the folder, if the claim created it
    and nothing was written).

    Raises:
      DirectoryLocked: a live process (on this host) holds the folder.
    """
    d = Path(directory)
    created = []  # the folders this claim makes, innermost first
    probe = d
    while not probe.exists() and probe.parent != probe:
        created.append(probe)
        probe = probe.parent
    d.mkdir(parents=True, exist_ok=True)
    lock = d / LOCK_NAME
    me, host = os.getpid(), socket.gethostname()
    mine = False
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(lock)
            pid = holder.get("pid")
            if not isinstance(pid, int):  # being written right now, or damaged
                if time.time() - _mtime(lock) < 5.0:
                    time.sleep(0.05)
                    continue
            elif pid == me and holder.get("host") == host:
                break  # this process holds it already
            elif holder.get("host", host) == host and _pid_alive(pid):
                raise DirectoryLocked(
                    f"{what} {str(d)!r} is in use by process {pid} (lock {lock}, since "
                    f"{holder.get('time', '?')}): wait for it to finish, or use another folder") from None
            elif holder.get("host", host) != host:
                raise DirectoryLocked(
                    f"{what} {str(d)!r} is in use by process {pid} on host {holder.get('host')!r} "
                    f"(lock {lock}); remove the lock if that run is over") from None
            with contextlib.suppress(FileNotFoundError):  # stale: its process is gone
                lock.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": me, "host": host, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}, f)
        mine = True
        break
    else:
        raise DirectoryLocked(f"{what} {str(d)!r}: could not take its lock {lock}")
    try:
        yield d
    finally:
        if mine and _read_lock(lock).get("pid") == me:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
            for folder in created:  # a run refused before writing leaves no empty folder behind
                try:
                    folder.rmdir()
                except OSError:
                    break


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
