"""Benchmark: the classic demo per seed, initjax vs the plain numpy loop, in the same process.

    python benchmarks/seed_demo.py                 # width 4096, 10 layers, batch 16, 5 schemes
    python benchmarks/seed_demo.py --width 1024    # smaller, for a quick look

The five Gaussian schemes of the demo (tanh with std 0.01, 1 and Xavier; ReLU with Xavier and He).
numpy: for each scheme, a fresh float32 draw per layer (``default_rng().standard_normal``), the
forward pass, an N(0, 1) cotangent back-propagated, and the weight gradient's variance formed
explicitly, as a plain script would. PyTorch eager (if installed: ``pip install -e ".[bench]"``):
the same with ``torch.randn`` and autograd. initjax: ``propagate_shared`` over the five schemes (one draw
per layer shared by the schemes, all of :class:`~initjax.LayerStats` measured). The time per seed is
marginal: (time of S2 seeds - time of S1 seeds) / (S2 - S1), after a warm-up call that compiles;
compile time is reported separately. Prints seconds per seed and the ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np

from initjax import NetworkConfig, propagate_shared

SCHEMES = [
    ("tanh", "normal:stddev=0.01", lambda n: 0.01),
    ("tanh", "normal:stddev=1.0", lambda n: 1.0),
    ("tanh", "xavier_normal", lambda n: np.sqrt(1.0 / n)),
    ("relu", "xavier_normal", lambda n: np.sqrt(1.0 / n)),
    ("relu", "he_normal", lambda n: np.sqrt(2.0 / n)),
]


def numpy_seed(rng: np.random.Generator, width: int, depth: int, batch: int, backward: bool) -> float:
    """One seed of the five schemes with plain numpy; returns a checksum so nothing is skipped."""
    total = 0.0
    for act, _, std in SCHEMES:
        x = rng.standard_normal((batch, width), dtype=np.float32)
        ws, hs, xs = [], [], [x]
        for _ in range(depth):
            w = rng.standard_normal((width, width), dtype=np.float32) * np.float32(std(width))
            h = xs[-1] @ w
            xs.append(np.tanh(h) if act == "tanh" else np.maximum(h, 0))
            ws.append(w)
            hs.append(h)
            np.histogram(xs[-1], 40, (-1, 1))
        if backward:
            g = rng.standard_normal((batch, width), dtype=np.float32)
            for layer in reversed(range(depth)):
                dh = g * ((1 - xs[layer + 1] ** 2) if act == "tanh" else (hs[layer] > 0))
                total += float((xs[layer].T @ dh).var())  # the weight gradient, formed explicitly
                g = dh @ ws[layer].T
        total += float(xs[-1].var())
    return total


def time_numpy(width, depth, batch, seeds, backward) -> float:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(seeds):
        numpy_seed(rng, width, depth, batch, backward)
    return (time.perf_counter() - start) / seeds


def torch_seed(width: int, depth: int, batch: int) -> float:
    """One seed of the five schemes in PyTorch eager, forward and backward with autograd."""
    import torch

    total = 0.0
    for act, _, std in SCHEMES:
        x = torch.randn(batch, width)
        ws = [(torch.randn(width, width) * std(width)).requires_grad_() for _ in range(depth)]
        h = x
        for w in ws:
            h = h @ w
            h = torch.tanh(h) if act == "tanh" else torch.relu(h)
        h.backward(torch.randn(batch, width))
        total += sum(float(w.grad.var()) for w in ws) + float(h.detach().var())
    return total


def time_torch(width, depth, batch, seeds) -> float:
    torch_seed(width, depth, batch)  # warm up
    start = time.perf_counter()
    for _ in range(seeds):
        torch_seed(width, depth, batch)
    return (time.perf_counter() - start) / seeds


def time_initjax(width, depth, batch, s1, s2) -> tuple[float, float]:
    configs = [NetworkConfig(depth=depth, width=width, batch=batch, init=init, activation=act) for act, init, _ in SCHEMES]
    start = time.perf_counter()
    propagate_shared(configs, seeds=1, progress=False)  # compile
    compile_s = time.perf_counter() - start
    times = {}
    for s in (s1, s2):
        start = time.perf_counter()
        propagate_shared(configs, seeds=s, progress=False, chunk_size=1)
        times[s] = time.perf_counter() - start
    return (times[s2] - times[s1]) / (s2 - s1), compile_s


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--numpy-seeds", type=int, default=2)
    p.add_argument("--seeds", type=int, nargs=2, default=(2, 6), metavar=("S1", "S2"))
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    np_fwd = time_numpy(a.width, a.depth, a.batch, a.numpy_seeds, backward=False)
    np_full = time_numpy(a.width, a.depth, a.batch, a.numpy_seeds, backward=True)
    ij, compile_s = time_initjax(a.width, a.depth, a.batch, *a.seeds)
    try:
        pt = time_torch(a.width, a.depth, a.batch, a.numpy_seeds)
    except ImportError:
        pt = float("nan")
    result = {
        "machine": f"{platform.machine()}, {jax.device_count()} x {jax.devices()[0].device_kind}",
        "jax": jax.__version__,
        "width": a.width,
        "depth": a.depth,
        "batch": a.batch,
        "schemes": len(SCHEMES),
        "numpy_forward_s_per_seed": np_fwd,
        "numpy_forward_backward_s_per_seed": np_full,
        "initjax_forward_backward_s_per_seed": ij,
        "torch_forward_backward_s_per_seed": pt,
        "initjax_compile_s": compile_s,
        "speedup_vs_numpy_forward_backward": np_full / ij,
        "speedup_vs_torch": pt / ij,
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine: {result['machine']}, jax {jax.__version__}")
    print(f"classic demo, {len(SCHEMES)} schemes, {a.depth} layers x {a.width}, batch {a.batch}; seconds per seed:")
    print(f"  numpy loop, forward only         {np_fwd:8.3f}")
    print(f"  numpy loop, forward + backward   {np_full:8.3f}")
    print(f"  PyTorch eager, forward + backward {pt:7.3f}")
    print(f"  initjax, forward + backward      {ij:8.3f}   (compile {compile_s:.1f} s, once)")
    print(f"  ratio numpy / initjax (fwd+bwd)  {np_full / ij:8.2f}x")
    print(f"  ratio PyTorch / initjax          {pt / ij:8.2f}x")


if __name__ == "__main__":
    main()
