"""Benchmark: the exact fast path for Gaussian weights vs the dense path vs the numpy loop.

    python benchmarks/fast_path.py                     # classic demo size, then width 65,536 x depth 100
    python benchmarks/fast_path.py --skip-huge

Per seed, one scheme (ReLU, He), 10 layers x 4096, batch 16, forward + backward with every
statistic: ``propagate(method="fast")`` vs ``propagate(method="dense")`` vs a plain numpy loop
(forward and backward with the weight gradient formed). Marginal seconds per seed after a warm-up
call (compile reported apart), with the engine's default chunking (chunk_size=1 adds a dispatch and
a host transfer per seed: 0.077 instead of 0.056 s/seed for the fast path). Then the fast path
alone at width 65,536 and depth 100, which the dense path cannot hold (a single 65,536^2 float32
matrix is 16 GiB).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from initjax import NetworkConfig, propagate


def numpy_seed(rng, width, depth, batch):
    x = rng.standard_normal((batch, width), dtype=np.float32)
    ws, hs, xs = [], [], [x]
    for _ in range(depth):
        w = rng.standard_normal((width, width), dtype=np.float32) * np.float32(np.sqrt(2.0 / width))
        hs.append(xs[-1] @ w)
        xs.append(np.maximum(hs[-1], 0))
        ws.append(w)
    g = rng.standard_normal((batch, width), dtype=np.float32)
    for layer in reversed(range(depth)):
        dh = g * (hs[layer] > 0)
        (xs[layer].T @ dh).var()
        g = dh @ ws[layer].T


def per_seed(config, method, s1, s2, **kw):
    """Marginal seconds per seed between runs of s1 and s2 seeds, chunked as the engine chunks
    them by default (what a run of many seeds costs per seed), and the first call's seconds."""
    start = time.perf_counter()
    propagate(config, seeds=1, method=method, progress=False, **kw)
    compile_s = time.perf_counter() - start
    for s in (s1, s2):  # the chunk capacities of s1 and s2 seeds may be other programs: compile them
        propagate(config, seeds=s, method=method, progress=False, **kw)
    times = {}
    for s in (s1, s2):
        start = time.perf_counter()
        propagate(config, seeds=s, method=method, progress=False, **kw)
        times[s] = time.perf_counter() - start
    return (times[s2] - times[s1]) / (s2 - s1), compile_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--skip-huge", action="store_true")
    a = p.parse_args()
    from _machine import MachineLoad

    load = MachineLoad().start()
    config = NetworkConfig(depth=a.depth, width=a.width, batch=16, init="he_normal", activation="relu")
    rng = np.random.default_rng(0)
    numpy_seed(rng, a.width, a.depth, 16)
    start = time.perf_counter()
    for _ in range(3):
        numpy_seed(rng, a.width, a.depth, 16)
    np_s = (time.perf_counter() - start) / 3
    dense_s, dense_c = per_seed(config, "dense", 2, 6)
    fast_s, fast_c = per_seed(config, "fast", 10, 50)
    out = {"width": a.width, "depth": a.depth, "numpy_s_per_seed": np_s, "dense_s_per_seed": dense_s,
           "fast_s_per_seed": fast_s, "fast_compile_s": fast_c, "dense_compile_s": dense_c,
           "fast_vs_numpy": np_s / fast_s, "fast_vs_dense": dense_s / fast_s}
    print(f"ReLU + He, {a.depth} x {a.width}, batch 16, forward + backward, s/seed: numpy {np_s:.3f}, "
          f"dense {dense_s:.3f}, fast {fast_s:.4f} -> fast is {np_s / fast_s:.0f}x numpy, {dense_s / fast_s:.0f}x dense")
    if not a.skip_huge:
        huge = NetworkConfig(depth=100, width=65536, batch=16, init="he_normal", activation="relu")
        start = time.perf_counter()
        r = propagate(huge, seeds=2, method="fast", progress=False, memory_budget=12 * 2**30)
        out["huge_seconds_2_seeds"] = time.perf_counter() - start
        out["huge_act_var_first_last"] = [float(np.mean(r.stats.act_var[:, 0])), float(np.mean(r.stats.act_var[:, -1]))]
        print(f"width 65,536 x depth 100, 2 seeds, fast: {out['huge_seconds_2_seeds']:.1f} s (compile included); "
              f"Var[x] layer 1 {out['huge_act_var_first_last'][0]:.3f}, layer 100 {out['huge_act_var_first_last'][1]:.3f}")
    load.stop()
    out.update(load.as_dict())
    print(load.describe())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
