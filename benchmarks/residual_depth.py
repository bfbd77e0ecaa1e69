"""Benchmark: the block engine on residual MLPs against depth, and against a plain MLP.

    python benchmarks/residual_depth.py                  # width 1024, batch 16, 8 seeds
    python benchmarks/residual_depth.py --width 512 --seeds 4

Two figures (issue 14's targets):

* compile time of a 10-block and a 100-block residual MLP (1-layer pre-activation ReLU branches,
  He init, ``x + A W relu(x)``): each ``Repeat`` stage is one ``lax.scan``, so it should not grow
  with depth;
* seconds per seed (forward + backward + every per-block statistic) of the 100-block residual MLP
  against a plain 100-layer MLP of the same width (``propagate``'s dense path, one scheme): the
  same number of ``n x n`` weight layers. Target: within 1.3x. Both run in this process, one after
  the other, each warmed up first; the ratio is of medians of ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    import jax
    import numpy as np
    from _machine import MachineLoad

    from initjax import NetworkConfig, propagate
    from initjax.engine.blocks import compiled_program, propagate_blocks
    from initjax.engine.executor import default_lanes
    from initjax.engine.sampling import base_key, seed_keys
    from initjax.network import Network

    load = MachineLoad().start()
    out: dict = {"width": a.width, "batch": a.batch, "seeds": a.seeds, "backend": jax.default_backend()}
    keys = jax.random.key_data(seed_keys(base_key(0, "philox2x32"), np.arange(a.seeds)))
    for depth in (10, 100):
        net = Network.residual_mlp(depth, a.width, batch=a.batch, branch_scale="1/sqrt(depth)")
        fn = compiled_program(net, "normal", True, False, default_lanes(), "philox2x32")
        t = time.perf_counter()
        fn.lower(keys, np.zeros(a.seeds), np.int32(a.seeds)).compile()
        out[f"compile_s_residual_{depth}"] = time.perf_counter() - t

    res = Network.residual_mlp(100, a.width, batch=a.batch, branch_scale="1/sqrt(depth)")
    plain = NetworkConfig(depth=100, width=a.width, batch=a.batch, init="he_normal", activation="relu")

    def timed(run):
        run()  # warm: compile
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            run()
            times.append((time.perf_counter() - t) / a.seeds)
        return statistics.median(times)

    out["s_per_seed_residual_100"] = timed(lambda: propagate_blocks(res, seeds=a.seeds, progress=False))
    out["s_per_seed_plain_100"] = timed(lambda: propagate(plain, seeds=a.seeds, progress=False))
    out["ratio_residual_over_plain"] = out["s_per_seed_residual_100"] / out["s_per_seed_plain_100"]
    load.stop()
    out.update(load.as_dict())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
