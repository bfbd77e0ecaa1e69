"""Benchmark: a 16-learning-rate x 4-seed grid of one width in one program, against 1 x 1.

    python benchmarks/lr_grid.py                         # width 256, batch 32, 200 Adam steps
    python benchmarks/lr_grid.py --width 1024 --steps 100

Issue 16's target: the 16 x 4 grid of :func:`initjax.transfer.lr_sweep` compiles once and costs at
most 3x the time of one learning rate x one seed. Measured in this process, one after the other:

* compile time (``jit(...).lower(...).compile()``) of the 1 x 1 and the 16 x 4 program;
* steady-state seconds of a call of each (median of ``--repeats`` interleaved rounds, after a
  warm-up call),
  their ratio, and the grid's time per member against 1 x 1 (the grid's saving over running its
  64 members one at a time), with the learning rates ``vmap``-ped beside the seeds and mapped
  (``lr_loop="map"``, the CPU default);
* that a second grid of other learning-rate values does not compile again (the jit cache).

The MLP is the reproduction's: 64 -> width -> width -> 10, ReLU, muP for Adam where
:mod:`initjax.parametrization` exists (hand-built SP otherwise), on the digits.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def _network(width: int):
    try:
        from initjax import parametrization

        return parametrization.mlp(64, width, 3, 10, parametrization="mup", optimizer="adam",
                                   base_width=64), "muP (initjax.parametrization)"
    except ImportError:
        from initjax.network import Dense, Network

        return Network(64, (Dense(width, "lecun_normal", "relu"), Dense(width, "lecun_normal", "relu"),
                            Dense(10, "lecun_normal", "identity"))), "SP (hand-built)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    import jax
    import jax.numpy as jnp
    import numpy as np
    from _machine import MachineLoad

    from initjax import data, modules, transfer
    from initjax._precision import matmul_precision

    load = MachineLoad().start()
    ds = data.digits()
    net, kind = _network(a.width)
    x = jnp.asarray(ds.x_train.reshape(len(ds.x_train), -1), jnp.float32)
    y = jnp.asarray(ds.y_train)
    rows = np.arange(len(x), dtype=np.int32)
    it = data.batches(rows, rows, a.batch, seed=0)
    idx = jnp.asarray(np.stack([next(it)[0] for _ in range(a.steps)]))
    out: dict = {"width": a.width, "batch": a.batch, "steps": a.steps, "network": kind,
                 "backend": jax.default_backend(), "devices": jax.device_count()}
    # 1x1, then the 16x4 grid with the learning rates vmapped beside the seeds and mapped
    grids = {"1x1": (1, 1, "vmap"), "16x4_vmap": (16, 4, "vmap"), "16x4_map": (16, 4, "map")}
    calls = {}
    with matmul_precision("highest"):
        for name, (n_lr, seeds, loop) in grids.items():
            program = transfer.sweep_program(net, "adam", loop)
            args = (modules.ensemble_keys(0, seeds),
                    jnp.asarray(2.0 ** np.linspace(-12, -4, n_lr), jnp.float32), x, y, idx)
            t = time.perf_counter()
            compiled = program.lower(*args).compile()
            out[f"compile_s_{name}"] = time.perf_counter() - t
            jax.block_until_ready(compiled(*args))  # warm-up
            calls[name] = (compiled, args)
        # interleaved rounds, so that a change of the machine's load hits every variant alike
        times: dict[str, list[float]] = {name: [] for name in grids}
        for _ in range(a.repeats):
            for name, (compiled, args) in calls.items():
                t = time.perf_counter()
                jax.block_until_ready(compiled(*args))
                times[name].append(time.perf_counter() - t)
        for name in grids:
            out[f"run_s_{name}"] = statistics.median(times[name])
        # the jitted path (lr_sweep's): two grids of other values, one compilation
        program = transfer.sweep_program(net, "adam", "auto")
        keys = modules.ensemble_keys(0, 4)
        before = program._cache_size()
        for shift in (0.0, 0.5):
            lrs = jnp.asarray(2.0 ** (np.linspace(-12, -4, 16) + shift), jnp.float32)
            jax.block_until_ready(program(keys, lrs, x, y, idx))
        out["jit_compilations_for_two_16x4_grids"] = program._cache_size() - before
    for g in ("16x4_vmap", "16x4_map"):
        out[f"ratio_run_{g}_over_1x1"] = out[f"run_s_{g}"] / out["run_s_1x1"]
        out[f"ratio_compile_{g}_over_1x1"] = out[f"compile_s_{g}"] / out["compile_s_1x1"]
        out[f"ratio_total_{g}_over_1x1"] = ((out[f"run_s_{g}"] + out[f"compile_s_{g}"])
                                            / (out["run_s_1x1"] + out["compile_s_1x1"]))
        out[f"s_per_member_{g}_over_1x1"] = out[f"run_s_{g}"] / 64 / out["run_s_1x1"]
    load.stop()
    out.update(load.as_dict())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
