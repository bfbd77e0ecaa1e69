"""What every reproduction writes besides its figures: ``report.json`` and ``report.md``.

A run marks ``report.json`` ``{"status": "incomplete"}`` first (:func:`begin`), so an interrupted
run is never mistaken for a finished one, and writes both reports atomically at the end
(:func:`finish`). A check is a dict ``{"check": text, "measured": value, "pass": bool}`` with an
optional ``"tolerance"``; :func:`checks_table` renders a list of them as the report's Markdown table,
a failed check as ``**FAIL**``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from initjax import _io

__all__ = ["begin", "finish", "checks_table", "fmt", "slug"]


def begin(out: str | Path, name: str) -> Path:
    """Mark ``out/report.json`` as an incomplete run of ``name``; returns ``out`` as a Path."""
    out = Path(out)
    _io.write_json(out / "report.json", {"name": name, "status": "incomplete"})
    return out


def finish(out: Path, report: dict[str, Any], markdown: str) -> dict[str, Any]:
    """Write ``report.md`` then ``report.json`` (atomically, the latter last); returns ``report``."""
    _io.write_text(out / "report.md", markdown)
    _io.write_json(out / "report.json", report)
    return report


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
