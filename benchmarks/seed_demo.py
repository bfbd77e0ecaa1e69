"""Benchmark: the classic demo per seed, initjax vs the plain numpy loop, in the same process.

    python benchmarks/seed_demo.py                 # width 4096, 10 layers, batch 16, 5 schemes
    python benchmarks/seed_demo.py --width 1024    # smaller, for a quick look

The five Gaussian schemes of the demo (tanh with std 0.01, 1 and Xavier; ReLU with Xavier and He).
numpy: for each scheme, a fresh float32 draw per layer (``default_rng().standard_normal``), the
forward pass, an N(0, 1) cotangent back-propagated, and the weight gradient's variance formed
explicitly, as a plain script would. PyTorch eager (if installed: ``pip install -e ".[bench]"``):
the same with ``torch.randn`` and autograd. initjax: ``propagate_shared`` over the five schemes (one draw
per layer shared by the schemes, all of :class:`~initjax.LayerStats` measured). The same for one
scheme alone (ReLU with He weights; ``propagate``). The time per seed is marginal: (time of S2
seeds - time of S1 seeds) / (S2 - S1), after a warm-up call that compiles, the median of three such
estimates (numpy and PyTorch: the mean over three seeds); compile time (the first
call, no persistent cache) is reported separately, and the peak resident memory of a fresh process
running 32 seeds of the five-scheme sweep. Prints seconds per seed and the ratios.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

from initjax import NetworkConfig, propagate, propagate_shared

SCHEMES = [
    ("tanh", "normal:stddev=0.01", lambda n: 0.01),
    ("tanh", "normal:stddev=1.0", lambda n: 1.0),
    ("tanh", "xavier_normal", lambda n: np.sqrt(1.0 / n)),
    ("relu", "xavier_normal", lambda n: np.sqrt(1.0 / n)),
    ("relu", "he_normal", lambda n: np.sqrt(2.0 / n)),
]


ONE = SCHEMES[-1:]  # ReLU, He


def numpy_seed(rng: np.random.Generator, width: int, depth: int, batch: int, backward: bool,
               schemes=SCHEMES) -> float:
    """One seed of the schemes with plain numpy; returns a checksum so nothing is skipped."""
    total = 0.0
    for act, _, std in schemes:
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


def time_numpy(width, depth, batch, seeds, backward, schemes=SCHEMES) -> float:
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(seeds):
        numpy_seed(rng, width, depth, batch, backward, schemes)
    return (time.perf_counter() - start) / seeds


def torch_seed(width: int, depth: int, batch: int, schemes=SCHEMES) -> float:
    """One seed of the schemes in PyTorch eager, forward and backward with autograd."""
    import torch

    total = 0.0
    for act, _, std in schemes:
        x = torch.randn(batch, width)
        ws = [(torch.randn(width, width) * std(width)).requires_grad_() for _ in range(depth)]
        h = x
        for w in ws:
            h = h @ w
            h = torch.tanh(h) if act == "tanh" else torch.relu(h)
        h.backward(torch.randn(batch, width))
        total += sum(float(w.grad.var()) for w in ws) + float(h.detach().var())
    return total


def time_torch(width, depth, batch, seeds, schemes=SCHEMES) -> float:
    torch_seed(width, depth, batch, schemes)  # warm up
    start = time.perf_counter()
    for _ in range(seeds):
        torch_seed(width, depth, batch, schemes)
    return (time.perf_counter() - start) / seeds


def _configs(width, depth, batch, schemes):
    return [NetworkConfig(depth=depth, width=width, batch=batch, init=init, activation=act) for act, init, _ in schemes]


def time_initjax(width, depth, batch, s1, s2, schemes=SCHEMES, repeats=3) -> tuple[float, float]:
    """(median over ``repeats`` of the marginal seconds per seed between runs of s1 and s2 seeds,
    compile seconds). The median, because on a shared VM single runs varied by +-20%."""
    configs = _configs(width, depth, batch, schemes)
    run = (lambda **k: propagate(configs[0], **k)) if len(configs) == 1 else (lambda **k: propagate_shared(configs, **k))
    start = time.perf_counter()
    run(seeds=1, progress=False, chunk_size=1)  # compile
    compile_s = time.perf_counter() - start
    marginal = []
    for _ in range(repeats):
        times = {}
        for s in (s1, s2):
            start = time.perf_counter()
            run(seeds=s, progress=False, chunk_size=1)
            times[s] = time.perf_counter() - start
        marginal.append((times[s2] - times[s1]) / (s2 - s1))
    per_seed = float(np.median(marginal))
    return per_seed, compile_s - per_seed  # the first call ran one seed besides compiling


def peak_memory_gib(width, depth, batch, seeds) -> float:
    """Peak resident memory (GiB) of a fresh process running ``seeds`` seeds of the five schemes
    with the default memory budget (chunks sized by the engine)."""
    code = (
        "import sys; sys.path.insert(0, '.'); sys.path.insert(0, 'benchmarks');"
        "from benchmarks.seed_demo import _configs, SCHEMES; from initjax import propagate_shared;"
        f"propagate_shared(_configs({width}, {depth}, {batch}, SCHEMES), seeds={seeds}, progress=False);"
        "from _machine import peak_rss_kib; print(peak_rss_kib())"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=root)
    return int(out.stdout.split()[-1]) / 2**20  # KiB -> GiB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=4096)
    p.add_argument("--depth", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--numpy-seeds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="initjax: median of this many marginal estimates")
    p.add_argument("--seeds", type=int, nargs=2, default=(2, 6), metavar=("S1", "S2"))
    p.add_argument("--json", action="store_true")
    p.add_argument("--memory-seeds", type=int, default=32, help="seeds of the peak-memory run (0: skip)")
    a = p.parse_args()
    from _machine import MachineLoad

    load = MachineLoad().start()
    shape = (a.width, a.depth, a.batch)
    np_fwd = time_numpy(*shape, a.numpy_seeds, backward=False)
    np_full = time_numpy(*shape, a.numpy_seeds, backward=True)
    np_one = time_numpy(*shape, a.numpy_seeds, backward=True, schemes=ONE)
    ij, compile_s = time_initjax(*shape, *a.seeds, repeats=a.repeats)
    ij_one, compile_one = time_initjax(*shape, *a.seeds, schemes=ONE, repeats=a.repeats)
    try:
        pt = time_torch(*shape, a.numpy_seeds)
        pt_one = time_torch(*shape, a.numpy_seeds, schemes=ONE)
    except ImportError:
        pt = pt_one = float("nan")
    mem = peak_memory_gib(*shape, a.memory_seeds) if a.memory_seeds else float("nan")
    load.stop()
    result = {
        "machine": f"{platform.machine()}, {jax.device_count()} x {jax.devices()[0].device_kind}",
        "jax": jax.__version__,
        "width": a.width,
        "depth": a.depth,
        "batch": a.batch,
        "schemes": len(SCHEMES),
        "numpy_forward_s_per_seed": np_fwd,
        "numpy_forward_backward_s_per_seed": np_full,
        "numpy_one_scheme_s_per_seed": np_one,
        "initjax_forward_backward_s_per_seed": ij,
        "initjax_one_scheme_s_per_seed": ij_one,
        "torch_forward_backward_s_per_seed": pt,
        "torch_one_scheme_s_per_seed": pt_one,
        "initjax_compile_s": compile_s,
        "initjax_one_scheme_compile_s": compile_one,
        "speedup_vs_numpy_forward_backward": np_full / ij,
        "speedup_vs_torch": pt / ij,
        "one_scheme_speedup_vs_numpy": np_one / ij_one,
        "one_scheme_speedup_vs_torch": pt_one / ij_one,
        "peak_memory_gib": mem,
        "memory_seeds": a.memory_seeds,
        **load.as_dict(),
    }
    if a.json:
        print(json.dumps(result, indent=2))
        return
    print(f"machine: {result['machine']}, jax {jax.__version__}")
    print(f"classic demo, {a.depth} layers x {a.width}, batch {a.batch}; seconds per seed, forward + backward:")
    print(f"  numpy loop, forward only, 5 schemes    {np_fwd:8.3f}")
    print("                                   one scheme  five schemes")
    print(f"  numpy loop                        {np_one:9.3f}  {np_full:12.3f}")
    print(f"  PyTorch eager                     {pt_one:9.3f}  {pt:12.3f}")
    print(f"  initjax                           {ij_one:9.3f}  {ij:12.3f}")
    print(f"  ratio numpy / initjax             {np_one / ij_one:8.2f}x  {np_full / ij:11.2f}x")
    print(f"  ratio PyTorch / initjax           {pt_one / ij_one:8.2f}x  {pt / ij:11.2f}x")
    print(f"  initjax compile (first call - 1 seed) {compile_one:5.2f}s  {compile_s:11.2f}s")
    print(f"  peak RSS, {a.memory_seeds} seeds, five schemes: {mem:.2f} GiB")
    print(f"  {load.describe()}")


if __name__ == "__main__":
    main()
