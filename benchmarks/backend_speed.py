"""Benchmark: initjax on whatever backend JAX runs on (CPU, GPU, TPU), against the draw + matmul
floor and PyTorch on the same device, at the exact default precision ("highest").

    python benchmarks/backend_speed.py                   # accelerator: 10 x 4096, batch 16
    python benchmarks/backend_speed.py                   # CPU: 10 x 512 by default (~1 minute)
    python benchmarks/backend_speed.py --width 1024 --seeds 9 16
    python benchmarks/backend_speed.py --skip-torch --out results/speed.json

One network per seed, forward + backward, milliseconds per seed (marginal: the time of S2 seeds
minus the time of S1 seeds over S2 - S1, the median of ``--repeats`` such estimates, after warm-up
calls that compile every program; compile times are not counted):

* initjax dense, one scheme (ReLU, He): ``propagate`` with the memory budget it measures on this
  device (recorded in the JSON with its source);
* the floor, measured in the same run: only what the dense path cannot avoid, each layer's
  weights drawn twice (forward, and again in the backward pass, as ``remat`` does) and the two
  products ``x W`` and ``g W^T``, seeds vmapped ``lanes`` at a time (the engine's lanes), with
  philox2x32 (the engine's PRNG) and threefry2x32 (jax's default);
* five schemes sharing one draw per layer (``propagate_shared``, the classic demo), per seed of
  all five;
* the fast path (``method="fast"``) and, as compiled programs of their own (the engine's lane
  loop without the executor), the fast path with each orthonormalization of
  :mod:`initjax.engine.fast` (``householder``: LAPACK / cuSOLVER; ``householder_wy``: in JAX);
* PyTorch on the same device, if installed (``pip install -e ".[bench]"``): one seed at a time
  with autograd, and the seeds batched with ``bmm`` (8 at a time, weights and activations only:
  no statistics), for one scheme and for the five, with float32 matmuls at "highest".

Prints a table and the issue-13 targets (dense within 1.3x the philox floor; fast path >= 10x
dense on an accelerator; five schemes >= 4x PyTorch batched), and writes everything as JSON.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from seed_demo import ONE, SCHEMES  # the classic demo's five (activation, init, std(n)) schemes

from initjax import NetworkConfig, propagate, propagate_shared
from initjax._io import write_json
from initjax._precision import matmul_precision
from initjax.engine import MeasureOptions, default_lanes, fast
from initjax.engine.executor import lane_loop

PRECISION = "highest"  # the engine's default: float32-exact on every backend


def marginal_ms(run, s1: int, s2: int, repeats: int) -> float:
    """Median over ``repeats`` of (time of ``run(s2)`` - time of ``run(s1)``) / (s2 - s1), in ms;
    ``run(s1)`` and ``run(s2)`` are called once each first (compiles)."""
    run(s1)
    run(s2)
    estimates = []
    for _ in range(repeats):
        times = {}
        for s in (s1, s2):
            start = time.perf_counter()
            run(s)
            times[s] = time.perf_counter() - start
        estimates.append((times[s2] - times[s1]) / (s2 - s1))
    return 1e3 * float(np.median(estimates))


def _configs(width, depth, batch, schemes):
    return [NetworkConfig(depth=depth, width=width, batch=batch, init=i, activation=a)
            for a, i, _ in schemes]


def _seed_key_data(seeds: int, impl: str, lanes: int) -> jax.Array:
    count = -(-seeds // lanes) * lanes
    return jax.random.key_data(jax.random.split(jax.random.key(0, impl=impl), count))


def floor_program(width: int, depth: int, batch: int, impl: str, lanes: int):
    """Draws x 2 and matmuls only, per seed: each layer's weights drawn in the forward pass and
    again in the backward pass, ``x W`` forward and ``g W^T`` backward (ReLU masks between), seeds
    vmapped ``lanes`` at a time in the engine's loop over lane groups (:func:`lane_program`)."""
    std = float(np.sqrt(2.0 / width))
    layers = jnp.arange(depth)

    def weights(k_w, layer):
        # materialized, as the engine does: a generator fused into a matmul ran ~15x slower on CPU
        w = jax.random.normal(jax.random.fold_in(k_w, layer), (width, width)) * std
        return jax.lax.optimization_barrier(w)

    def one(key):
        k_x, k_w, k_c = jax.random.split(key, 3)

        def forward(x, layer):
            h = x @ weights(k_w, layer)
            return jax.nn.relu(h), h

        out, hs = jax.lax.scan(forward, jax.random.normal(k_x, (batch, width)), layers)

        def backward(g, inputs):
            layer, h = inputs
            g = (g * (h > 0)) @ weights(k_w, layer).T
            return g, jnp.sum(g * g)

        g = jax.random.normal(k_c, (batch, width))
        _, norms = jax.lax.scan(backward, g, (layers, hs), reverse=True)
        return jnp.sum(out * out) + jnp.sum(norms)

    return lane_program(one, impl, lanes)


def lane_program(one, impl: str, lanes: int):
    """``one(key)`` over the seeds of ``key_data``, ``lanes`` vmapped at a time, in the engine's
    loop that stops after the lane groups of the ``valid`` first seeds (``executor.lane_loop``):
    one compiled program serves both seed counts of the marginal time."""

    def run(key_data, valid):
        keys = jax.random.wrap_key_data(key_data, impl=impl)
        return lane_loop(lambda k, _: jax.vmap(one)(k), keys, None, valid, lanes)

    return jax.jit(run)


def fast_program(config: NetworkConfig, orthonormalization: str, lanes: int):
    """The fast path's statistics for a batch of seeds with the given orthonormalization, in the
    engine's shape (lanes vmapped, a loop over lane groups) but without the executor."""
    opts = MeasureOptions((-1.0, 1.0), (-1.0, 1.0), 40, "normal", True, 0.01, method="fast")

    def one(key):
        return fast.sample_stats(config, opts, key, None, orthonormalization=orthonormalization)

    return lane_program(one, "philox2x32", lanes)


def time_program(make, s1, s2, repeats, impl, lanes) -> float:
    program = make()
    data = _seed_key_data(max(s1, s2), impl, lanes)

    def run(s):
        with matmul_precision(PRECISION):
            jax.block_until_ready(program(data, np.int32(s)))

    return marginal_ms(run, s1, s2, repeats)


# --- PyTorch -------------------------------------------------------------------------------
def torch_times(width, depth, batch, s1, s2, repeats, jax_platform) -> dict:
    """ms per seed of PyTorch on the device JAX uses (CUDA where JAX runs on a GPU and torch sees
    one, else its CPU), one scheme and five: a loop over seeds with autograd, and 8 seeds batched
    with ``bmm``. Empty if torch is not installed."""
    try:
        import torch
    except ImportError:
        return {}
    torch.set_float32_matmul_precision("highest")  # exact float32, as initjax's default
    torch.backends.cuda.matmul.allow_tf32 = False
    use_cuda = jax_platform == "gpu" and torch.cuda.is_available()
    device = torch.device("cuda" if use_cuda else "cpu")
    sync = torch.cuda.synchronize if use_cuda else (lambda: None)

    def act(name, h):
        return torch.tanh(h) if name == "tanh" else torch.relu(h)

    def loop(schemes, seeds):
        for _ in range(seeds):
            for a, _, std in schemes:
                x = torch.randn(batch, width, device=device)
                ws = [(torch.randn(width, width, device=device) * std(width)).requires_grad_()
                      for _ in range(depth)]
                h = x
                for w in ws:
                    h = act(a, h @ w)
                h.backward(torch.randn(batch, width, device=device))
                float(h.detach().var())  # one statistic, so nothing is skipped
        sync()

    def batched(schemes, seeds, group=8):
        with torch.no_grad():
            for lo in range(0, seeds, group):
                n = min(group, seeds - lo)
                for a, _, std in schemes:
                    h = torch.randn(n, batch, width, device=device)
                    hs = []
                    for _ in range(depth):
                        w = torch.randn(n, width, width, device=device) * std(width)
                        h = act(a, torch.bmm(h, w))
                        hs.append(h)
                    g = torch.randn(n, batch, width, device=device)
                    # the weights are drawn again: nothing is kept but the activations
                    for layer in reversed(range(depth)):
                        d = g * ((1 - hs[layer] ** 2) if a == "tanh" else (hs[layer] > 0))
                        w = torch.randn(n, width, width, device=device) * std(width)
                        g = torch.bmm(d, w.transpose(1, 2))
        sync()

    out = {"torch": torch.__version__, "torch_device": str(device)}
    for name, schemes in (("one", ONE), ("five", SCHEMES)):
        out[f"torch_loop_{name}_ms"] = marginal_ms(lambda s, c=schemes: loop(c, s), s1, s2, repeats)
        out[f"torch_bmm_{name}_ms"] = marginal_ms(lambda s, c=schemes: batched(c, s), s1, s2,
                                                  repeats)
    return out


def main() -> None:
    backend = jax.default_backend()
    accelerator = backend != "cpu"
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4096 if accelerator else 512)
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    # both counts round up to one chunk capacity (a power of two), so propagate compiles once
    p.add_argument("--seeds", type=int, nargs=2, default=(72, 128) if accelerator else (5, 8),
                   metavar=("S1", "S2"), help="the two seed counts of the marginal time per seed")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lanes", type=int, default=default_lanes(),
                   help="seeds vmapped side by side (floor, fast programs)")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument("--out", default=f"results/backend_speed_{backend}.json")
    a = p.parse_args()
    from _machine import MachineLoad

    s1, s2 = a.seeds
    shape = (a.width, a.depth, a.batch)
    dev = jax.devices()[0]
    load = MachineLoad().start()
    one, five = _configs(*shape, ONE)[0], _configs(*shape, SCHEMES)
    kw = dict(progress=False, precision=PRECISION)
    budget = propagate(one, seeds=s1, **kw)
    rows: dict[str, float] = {}
    rows["initjax dense, one scheme"] = marginal_ms(
        lambda s: propagate(one, seeds=s, **kw), s1, s2, a.repeats)
    for impl in ("philox2x32", "threefry2x32"):
        rows[f"floor: draws x2 + matmuls, {impl}"] = time_program(
            lambda impl=impl: floor_program(*shape, impl, a.lanes),
            s1, s2, a.repeats, impl, a.lanes)
    rows["initjax five schemes, shared draws"] = marginal_ms(
        lambda s: propagate_shared(five, seeds=s, **kw), s1, s2, a.repeats)
    rows["initjax fast path (propagate)"] = marginal_ms(
        lambda s: propagate(one, seeds=s, method="fast", **kw), s1, s2, a.repeats)
    for ortho in fast.ORTHONORMALIZATIONS:
        rows[f"fast path program, {ortho}"] = time_program(
            lambda o=ortho: fast_program(one, o, a.lanes), s1, s2, a.repeats, "philox2x32", a.lanes)
    torch = {} if a.skip_torch else torch_times(*shape, s1, s2, a.repeats, backend)
    names = {"torch_loop_one_ms": "PyTorch, loop over seeds, one scheme",
             "torch_bmm_one_ms": "PyTorch, 8 seeds batched with bmm (no statistics), one scheme",
             "torch_loop_five_ms": "PyTorch, loop over seeds, five schemes",
             "torch_bmm_five_ms": "PyTorch, 8 seeds batched with bmm (no statistics), five schemes"}
    for key, label in names.items():
        if key in torch:
            rows[label] = torch[key]
    load.stop()

    dense, floor = rows["initjax dense, one scheme"], rows["floor: draws x2 + matmuls, philox2x32"]
    best_fast = min(rows[f"fast path program, {o}"] for o in fast.ORTHONORMALIZATIONS)
    targets = {
        "dense_over_philox_floor": dense / floor,  # target <= 1.3
        # target >= 10 on a GPU
        "dense_over_fast_propagate": dense / rows["initjax fast path (propagate)"],
        "dense_over_best_fast_program": dense / best_fast,
        "torch_bmm_five_over_initjax_five": torch.get("torch_bmm_five_ms", float("nan"))
        / rows["initjax five schemes, shared draws"],  # target >= 4
    }
    result = {
        "device": {"platform": dev.platform, "device_kind": dev.device_kind,
                   "count": jax.device_count()},
        "host": platform.machine(),
        "jax": jax.__version__,
        "width": a.width, "depth": a.depth, "batch": a.batch, "seeds": [s1, s2], "lanes": a.lanes,
        "precision": PRECISION,
        "memory_budget": {"bytes": budget.memory_budget, "source": budget.memory_budget_source},
        "ms_per_seed": rows,
        "targets": targets,
        **{k: v for k, v in torch.items() if not k.endswith("_ms")},
        **load.as_dict(),
    }
    print(f"device: {dev.platform}, {dev.device_kind} (x{jax.device_count()}), "
          f"jax {jax.__version__}, precision {PRECISION!r}, "
          f"memory budget {budget.memory_budget / 2**30:.1f} GiB ({budget.memory_budget_source})")
    print(f"{a.depth} layers x {a.width}, batch {a.batch}, forward + backward, ms per seed "
          f"(marginal {s1} -> {s2} seeds, median of {a.repeats}):")
    for label, ms in rows.items():
        print(f"  {label:<66s} {ms:9.3f}")
    print(f"  dense / philox floor {targets['dense_over_philox_floor']:.2f} (target <= 1.3); "
          f"dense / fast {targets['dense_over_fast_propagate']:.1f} (best fast program "
          f"{targets['dense_over_best_fast_program']:.1f}; target >= 10 on an accelerator); "
          f"PyTorch bmm five / initjax five "
          f"{targets['torch_bmm_five_over_initjax_five']:.2f} (target >= 4)")
    print(f"  {load.describe()}")
    print(f"wrote {write_json(Path(a.out), result)}")


if __name__ == "__main__":
    main()
