"""Benchmark: compile time, run time and peak memory of ``propagate`` against depth.

    python benchmarks/depth_scaling.py                       # width 1024, depths 10..1000
    python benchmarks/depth_scaling.py --width 256 --depths 10 100

Each depth runs in a fresh process, so its peak resident memory (``VmHWM``) is its own. With
``lax.scan`` over layers and weights redrawn in the backward pass, compile time and memory should be
flat in depth except for the per-layer tensors kept for the statistics and the backward pass
(measured at width 1024, batch 16: 1.43 MiB per layer, about 23 (batch, width) float32 tensors with
the statistics' temporaries).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, sys, time
sys.path.insert(0, ".")  # run from benchmarks/
from _machine import peak_rss_kib
import numpy as np
from initjax import NetworkConfig
from initjax.engine import MeasureOptions, default_lanes, propagate, seed_keys
from initjax.engine.executor import compiled_program
from initjax.engine.sampling import as_scaled, base_key
depth, width, batch, seeds = map(int, sys.argv[1:5])
c = NetworkConfig(depth=depth, width=width, batch=batch, init="he_normal", activation="relu")
opts = MeasureOptions((-1.0, 1.0), (-1.0, 1.0), 40, "normal", True, 0.01)
keys = seed_keys(base_key(0, "philox2x32"), np.arange(seeds))
import jax
scaled, stds = as_scaled((c,))
fn = compiled_program(scaled, opts, False, default_lanes(), "philox2x32", 1)
t = time.perf_counter()
compiled = fn.lower(jax.random.key_data(keys), None, stds, np.int32(seeds)).compile()
compile_s = time.perf_counter() - t
propagate(c, seeds=seeds, chunk_size=seeds, progress=False)  # warm (compiles through the cache)
t = time.perf_counter()
propagate(c, seeds=seeds, chunk_size=seeds, progress=False)
run_s = time.perf_counter() - t
print(json.dumps({"depth": depth, "compile_s": compile_s, "run_s_per_seed": run_s / seeds,
                  "peak_rss_mib": peak_rss_kib() / 1024}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--depths", type=int, nargs="+", default=[10, 100, 300, 1000])
    a = p.parse_args()
    from _machine import MachineLoad

    load = MachineLoad().start()
    rows = []
    for depth in a.depths:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, str(depth), str(a.width), str(a.batch), str(a.seeds)],
            capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"depth {depth:5d}: compile {r['compile_s']:6.2f} s, run {r['run_s_per_seed']:7.3f} s/seed, "
              f"peak RSS {r['peak_rss_mib']:7.0f} MiB", flush=True)
    load.stop()
    print(load.describe())
    print(json.dumps({"width": a.width, "batch": a.batch, "seeds": a.seeds, "rows": rows, **load.as_dict()}))


if __name__ == "__main__":
    main()
