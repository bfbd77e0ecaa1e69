"""Benchmark: the attention engine on transformers against depth, and against a hand-written vmap.

    python benchmarks/transformer_depth.py              # width 256, 8 heads, 32 tokens, batch 8, 8 seeds
    python benchmarks/transformer_depth.py --quick      # width 64, 4 heads, 16 tokens, batch 4, 4 seeds

Two figures (issue 15's speed target):

* compile time of a 4-block and a 48-block pre-LN transformer (``Network.transformer``, no MLP):
  each ``Repeat`` stage is one ``lax.scan``, so it should not grow with depth;
* seconds per seed of the 48-block transformer (forward + backward + every per-block statistic)
  against a hand-written ``jax.jit(jax.vmap(...))`` over the seeds of the same forward and
  backward (the same weights drawn from the same keys, the blocks unrolled in Python, the
  gradients of W_Q, W_K, W_V, W_O and of the stream after every block, no statistics), measured in
  this process one after the other, each warmed up first; medians of ``--repeats`` runs. Its
  compile time is printed too.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="width 64, 4 heads, 16 tokens, batch 4, 4 seeds")
    a = p.parse_args()
    if a.quick:
        a.width, a.heads, a.tokens, a.batch, a.seeds, a.repeats = 64, 4, 16, 4, 4, 2
    import jax
    import jax.numpy as jnp
    import numpy as np
    from _machine import MachineLoad

    from initjax._precision import matmul_precision
    from initjax.engine import attention as eng
    from initjax.engine.executor import default_lanes
    from initjax.engine.sampling import base_key, seed_keys, split_seed_key
    from initjax.network import Network

    def network(depth):
        return Network.transformer(depth, a.width, a.heads, a.tokens, a.batch)

    load = MachineLoad().start()
    out: dict = {"width": a.width, "heads": a.heads, "tokens": a.tokens, "batch": a.batch,
                 "seeds": a.seeds, "backend": jax.default_backend()}
    root = base_key(0, "philox2x32")
    keys = seed_keys(root, np.arange(a.seeds))
    key_data = jax.random.key_data(keys)
    with matmul_precision("highest"):
        for depth in (4, 48):
            fn = eng.compiled_program(network(depth), "normal", True, False, default_lanes(),
                                       "philox2x32", "highest")
            t = time.perf_counter()
            fn.lower(key_data, jnp.zeros(a.seeds), np.int32(a.seeds)).compile()
            out[f"compile_s_engine_{depth}"] = time.perf_counter() - t

        net = network(48)
        block = net.stages[0].block
        scale = block.scale(a.width)

        def hand_written(seed_key):
            """The same network, forward and backward, written as a user would: no statistics."""
            k = split_seed_key(seed_key)
            x0 = eng.draw_tokens(net, k.inputs)
            ws = [eng.attention_params(block, k, b, a.width, jnp.float32) for b in range(net.depth)]
            probes = [jnp.zeros_like(x0) for _ in range(net.depth)]

            def loss(ws, probes):
                x = x0
                for w, pr in zip(ws, probes, strict=True):
                    u = eng.normalize_tokens("layer", x, block.norm_eps)
                    zero = {n: 0.0 for n in ("q", "k", "v", "o")}
                    x = x + eng.attend(block, u, w, zero, scale)[0] + pr
                return x

            x_out, vjp = jax.vjp(loss, ws, probes)
            return vjp(jax.random.normal(k.cotangent, x_out.shape, x_out.dtype))

        baseline = jax.jit(jax.vmap(hand_written))
        t = time.perf_counter()
        baseline.lower(keys).compile()
        out["compile_s_hand_written_48"] = time.perf_counter() - t

        def timed(run):
            jax.block_until_ready(run())  # warm: compile
            times = []
            for _ in range(a.repeats):
                t = time.perf_counter()
                jax.block_until_ready(run())
                times.append((time.perf_counter() - t) / a.seeds)
            return statistics.median(times)

        out["s_per_seed_engine_48"] = timed(
            lambda: eng.propagate_attention(net, seeds=a.seeds, progress=False).stats)
        out["s_per_seed_hand_written_48"] = timed(lambda: baseline(keys))
    out["ratio_engine_over_hand_written"] = out["s_per_seed_engine_48"] / out["s_per_seed_hand_written_48"]
    load.stop()
    out.update(load.as_dict())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
