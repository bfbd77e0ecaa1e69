"""How busy the machine was while a benchmark ran: the share of CPU time the hypervisor gave to
other guests ("steal", from ``/proc/stat``) and the load average. On a shared VM a run with a high
steal share is slower for reasons outside the code; the benchmarks print it beside their numbers
so that readers can tell a slow machine from a slow program. Linux only; elsewhere NaN.
"""

from __future__ import annotations

import os
from pathlib import Path

_STAT = Path("/proc/stat")


def _cpu_ticks() -> tuple[int, int] | None:
    """``(total, steal)`` jiffies summed over all CPUs since boot, or None without /proc/stat."""
    try:
        fields = _STAT.read_text().splitlines()[0].split()
    except OSError:
        return None
    ticks = [int(v) for v in fields[1:]]
    # user nice system idle iowait irq softirq steal [guest guest_nice]: guest time is already
    # counted in user/nice, so the total is the first eight fields
    return sum(ticks[:8]), ticks[7] if len(ticks) > 7 else 0


class MachineLoad:
    """Measures ``steal`` (fraction of all CPU time stolen between :meth:`start` and :meth:`stop`)
    and ``loadavg`` (1-minute load average at the stop); also a context manager."""

    def start(self) -> MachineLoad:
        self._start = _cpu_ticks()
        self.steal = float("nan")
        self.loadavg = float("nan")
        return self

    def stop(self) -> None:
        end = _cpu_ticks()
        if self._start is not None and end is not None and end[0] > self._start[0]:
            self.steal = (end[1] - self._start[1]) / (end[0] - self._start[0])
        if hasattr(os, "getloadavg"):
            self.loadavg = os.getloadavg()[0]

    def __enter__(self) -> MachineLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def as_dict(self) -> dict[str, float]:
        return {"cpu_steal_fraction": self.steal, "loadavg_1min": self.loadavg}

    def describe(self) -> str:
        return f"CPU time stolen by other guests: {100 * self.steal:.0f}%, load average {self.loadavg:.2f}"


def peak_rss_kib() -> int:
    """This process's peak resident memory in KiB: ``VmHWM`` from ``/proc/self/status``, which
    belongs to the process's own memory image. ``ru_maxrss`` is not used: Linux carries it over an
    ``exec`` from the image it replaces, so a child spawned by a large parent reports the parent's
    size (the earlier 2.7-2.8 GiB "peaks" of the seed demo were the benchmark parent's)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
