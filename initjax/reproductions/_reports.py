"""What every reproduction writes besides its figures: ``report.json`` and ``report.md``.

A run marks ``report.json`` ``{"status": "incomplete"}`` first (:func:`begin`, or :func:`start`,
which also settles the seed count and starts the clock), so an interrupted run is never mistaken
for a finished one, and writes both reports atomically at the end (:func:`finish`);
``report.md`` opens with :func:`header`. A check is a dict
``{"check": text, "measured": value, "pass": bool}`` with an optional ``"tolerance"``;
:func:`checks_table` renders a list of them as the report's Markdown table, a failed check as
``**FAIL**``.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from initjax import _io

__all__ = ["Started", "begin", "start", "finish", "header", "checks_table", "fmt", "slug"]


# the output folders this process holds (:func:`begin` claims, :func:`finish` releases)
_CLAIMS: dict[Path, contextlib.ExitStack] = {}


def begin(out: str | Path, name: str) -> Path:
    """Claim ``out`` for this process (``_io.claim_dir``: a second process writing the same folder
    is refused, naming this one's pid) and mark ``out/report.json`` as an incomplete run of
    ``name``; returns ``out`` as a Path. :func:`finish` releases the folder; a run that raises
    keeps it until this process ends (a later run in this process takes it over, another process
    once this one is gone)."""
    out = Path(out)
    key = out.resolve()
    if key not in _CLAIMS:
        stack = contextlib.ExitStack()
        stack.enter_context(_io.claim_dir(out, f"{name} output folder"))
        _CLAIMS[key] = stack
    _io.write_json(out / "report.json", {"name": name, "status": "incomplete"})
    return out


class Started(NamedTuple):
    """What :func:`start` hands a reproduction's ``run``."""

    out: Path  # the output directory, its report.json marked incomplete
    seeds: int  # the seed count in use
    t0: float  # time.perf_counter() at the start, for the report's "seconds"


def start(
    out: str | Path, name: str, seeds: Any, default_seeds: int, *, min_seeds: int = 1
) -> Started:
    """Begin a run of ``name``: take ``seeds`` (``default_seeds`` when None), check that it is an
    int >= ``min_seeds`` (2 where tolerances use the seed spread), mark ``out`` incomplete
    (:func:`begin`) and start the clock.

    Raises:
      TypeError: for a seed count that is not an int.
      ValueError: for fewer than ``min_seeds`` seeds.
    """
    t0 = time.perf_counter()
    seeds = default_seeds if seeds is None else seeds
    if isinstance(seeds, bool) or not isinstance(seeds, numbers.Integral):
        raise TypeError(f"{name} needs an int number of seeds, got {seeds!r}")
    if seeds < min_seeds:
        why = " (tolerances use the seed spread)" if min_seeds > 1 else ""
        raise ValueError(f"{name} needs seeds >= {min_seeds}{why}, got {seeds}")
    return Started(begin(out, name), int(seeds), t0)


def finish(out: Path, report: dict[str, Any], markdown: str) -> dict[str, Any]:
    """Write ``report.md`` then ``report.json`` (atomically, the latter last); returns ``report``."""
    _io.write_text(out / "report.md", markdown)
    _io.write_json(out / "report.json", report)
    stack = _CLAIMS.pop(Path(out).resolve(), None)
    if stack is not None:
        stack.close()
    return report


def header(
    title: str, setup: str, report: dict[str, Any], quick_note: str = "quick mode"
) -> list[str]:
    """The opening lines of ``report.md``: ``# title``, a blank line, and ``setup`` followed by the
    run's duration in seconds (``report["seconds"]``) and, in quick mode (``report["quick"]``),
    ``quick_note`` in parentheses: ``"...; 12 s (quick mode)."``."""
    quick = f" ({quick_note})" if report["quick"] else ""
    return [f"# {title}", "", f"{setup}{report['seconds']:.0f} s{quick}."]


def fmt(x: Any, digits: int = 4) -> str:
    """A measured value for a table: numbers to ``digits`` significant digits, ``n/a`` for None
    and NaN, ``inf`` for infinities; anything else as ``str``."""
    if x is None:
        return "n/a"
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return "n/a"
    return f"{x:.{digits}g}"


def checks_table(checks: Sequence[dict[str, Any]], title: str = "## Checks") -> list[str]:
    """The Markdown lines of ``title`` and a table of ``checks`` (a tolerance column where any
    check has one), each failure marked ``**FAIL**``."""
    tolerance = any("tolerance" in c for c in checks)
    head = "| check | measured |" + (" tolerance |" if tolerance else "") + " pass |"
    lines = [title, "", head, "|---" * head.count(" |") + "|"]
    for c in checks:
        cells = [str(c["check"]), fmt(c["measured"])]
        if tolerance:
            cells.append(fmt(c["tolerance"]) if "tolerance" in c else "")
        cells.append("pass" if c["pass"] else "**FAIL**")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def slug(label: str) -> str:
    """A file-name-safe lower-case form of ``label``: ``"N(0, 1), BN"`` -> ``"n-0-1-bn"``."""
    keep = "".join(ch if ch.isalnum() else "-" for ch in label.lower())
    return "-".join(filter(None, keep.split("-")))
