"""Benchmark: training steps per second over seeds, initjax (vmapped) vs a PyTorch loop over seeds.

    python benchmarks/training_throughput.py            # 8 seeds, 784-100-100-100-10 sigmoid, batch 60
    python benchmarks/training_throughput.py --lr-sweep # 8 learning rates as one compare call
    pip install -e ".[bench]"                          # PyTorch (CPU) for the baseline

Both train the same MLP with SGD (lr 0.1, batch 60) on the same synthetic 60,000 x 784 data set
(10 classes) and take the same record every 100 steps: on a 500-example probe batch, the loss,
the mean, std and 15/50/85th percentiles of each hidden activation, the percentiles of its
pre-activation, the saturated and dead fractions and each layer's gradient norm; the accuracy on
1,000 training examples and the loss and accuracy on the 1,000 test examples. The rate is marginal: seed-steps per second between a short and a
long run after both have compiled/warmed up, so compile time is reported apart.

``--lr-sweep`` times one ``training.compare`` of 8 configs that differ only in the learning rate
(the same network, 8 seeds, 500 steps, records every 100; data: ``--data digits`` or the synthetic
set) and counts the XLA compilations (``jax.log_compiles``): the trainer runs them as arms of one
program. Run it against another checkout with ``PYTHONPATH=<checkout>`` to compare.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import jax
import numpy as np

from initjax import data as data_lib
from initjax import training

WIDTHS = (100, 100, 100)


def synthetic(n_train=60000, n_test=1000, dim=784, classes=10, seed=0) -> data_lib.Dataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_train + n_test, dim), dtype=np.float32)
    w = rng.standard_normal((dim, classes), dtype=np.float32)
    y = np.argmax(x @ w, axis=1).astype(np.int32)
    return data_lib.Dataset(x[:n_train], y[:n_train], x[n_train:], y[n_train:], classes, "synthetic")


def time_initjax(ds, seeds: int, short: int, long: int) -> tuple[float, float]:
    def cfg(steps):
        return training.TrainConfig(label=f"s{steps}", widths=WIDTHS, activation="sigmoid",
                                    kernel_init="normal:stddev=0.1", optimizer="sgd", learning_rate=0.1,
                                    batch_size=60, steps=steps, record_every=100, probe_size=500,
                                    train_eval_size=1000)
    start = time.perf_counter()
    training.compare(cfg(100), ds, seeds=seeds, progress=False)  # compiles
    compile_s = time.perf_counter() - start
    times = {}
    for steps in (short, long):
        start = time.perf_counter()
        training.compare(cfg(steps), ds, seeds=seeds, progress=False)
        times[steps] = time.perf_counter() - start
    return seeds * (long - short) / (times[long] - times[short]), compile_s


def time_torch(ds, seeds: int, short: int, long: int) -> float:
    import torch

    x = torch.from_numpy(ds.x_train)
    y = torch.from_numpy(ds.y_train.astype(np.int64))
    probe, probe_y = x[:500], y[:500]
    train_eval, train_eval_y = x[500:1500], y[500:1500]
    x_test, y_test = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test.astype(np.int64))

    def run(steps: int) -> None:
        for seed in range(seeds):
            torch.manual_seed(seed)
            layers, width_in = [], x.shape[1]
            for w in WIDTHS:
                lin = torch.nn.Linear(width_in, w)
                torch.nn.init.normal_(lin.weight, std=0.1)
                torch.nn.init.zeros_(lin.bias)
                layers += [lin, torch.nn.Sigmoid()]
                width_in = w
            layers.append(torch.nn.Linear(width_in, 10))
            model = torch.nn.Sequential(*layers)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            perm = torch.randperm(x.shape[0])
            for step in range(steps):
                idx = perm[(step * 60) % (x.shape[0] - 60):][:60]
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                if step % 100 == 0:
                    record(model, probe)

    def record(model, probe) -> None:
        """What an initjax record holds: on the probe batch the loss, each hidden layer's
        pre-activation and activation percentiles, mean, std, saturated and dead fractions and
        every weight's gradient norm; the train-eval accuracy and the test loss and accuracy."""
        acts, pre, h = [], [], probe
        for layer in model:
            h = layer(h)
            (acts if isinstance(layer, torch.nn.Sigmoid) else pre).append(h)
        loss = torch.nn.functional.cross_entropy(h, probe_y)
        grads = torch.autograd.grad(loss, [m.weight for m in model if isinstance(m, torch.nn.Linear)])
        q = torch.tensor([0.15, 0.5, 0.85])
        with torch.no_grad():
            for a, z in zip(acts, pre):
                a.mean(), a.std(), torch.quantile(a.flatten(), q), torch.quantile(z.flatten(), q)
                ((a < 0.01) | (a > 0.99)).float().mean(), (a == 0).all(0).float().mean()
            [g.norm() for g in grads]
            (model(train_eval).argmax(1) == train_eval_y).float().mean()
            out = model(x_test)
            torch.nn.functional.cross_entropy(out, y_test), (out.argmax(1) == y_test).float().mean()

    run(10)  # warm up
    times = {}
    for steps in (short, long):
        start = time.perf_counter()
        run(steps)
        times[steps] = time.perf_counter() - start
    return seeds * (long - short) / (times[long] - times[short])


LRS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


def time_lr_sweep(ds, seeds: int, steps: int, depth: int = len(WIDTHS), cnn: bool = False) -> dict:
    """Wall time and compile counts of one compare() over the 8 learning rates of :data:`LRS`,
    for ``depth`` hidden layers of 100 units."""
    import logging

    if cnn:  # 3 x 16-channel 3x3 convs, ReLU, momentum: digits as 8x8 images
        base = training.TrainConfig(model="cnn", widths=(16,) * depth, activation="relu",
                                    kernel_init="he_normal", optimizer="momentum", batch_size=32,
                                    steps=steps, record_every=100, probe_size=64,
                                    train_eval_size=256)
    else:
        base = training.TrainConfig(widths=(100,) * depth, activation="sigmoid",
                                    kernel_init="normal:stddev=0.1", optimizer="sgd",
                                    batch_size=60, steps=steps, record_every=100, probe_size=500,
                                    train_eval_size=1000)
    configs = [dataclasses.replace(base, label=f"lr={lr}", learning_rate=lr / 10 if cnn else lr)
               for lr in LRS]
    names: list[str] = []

    class Log(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Compiling "):
                names.append(message.split(" ")[1])

    handler = Log()
    logging.getLogger("jax").addHandler(handler)
    try:
        start = time.perf_counter()
        with jax.log_compiles(True):
            training.compare(configs, ds, seeds=seeds, progress=False)
        wall = time.perf_counter() - start
    finally:
        logging.getLogger("jax").removeHandler(handler)
    # the training program: run_one (one per config, before the one trainer) / train_interval
    train = [n for n in names if "run_one" in n or "train_interval" in n]
    return {"wall_s": wall, "compiles": len(names), "training_program_compiles": len(train)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, nargs=2, default=(500, 2500), metavar=("SHORT", "LONG"))
    p.add_argument("--lr-sweep", action="store_true",
                   help="time one compare() of 8 learning rates and count its compilations")
    p.add_argument("--data", choices=("synthetic", "digits"), default="synthetic")
    p.add_argument("--depth", type=int, default=len(WIDTHS), help="--lr-sweep: hidden layers")
    p.add_argument("--cnn", action="store_true",
                   help="--lr-sweep: a small CNN on digits images instead of the MLP")
    a = p.parse_args()
    from _machine import MachineLoad

    if a.cnn:
        ds = data_lib.digits(flatten=False)
    else:
        ds = synthetic() if a.data == "synthetic" else data_lib.digits()
    if a.lr_sweep:
        with MachineLoad() as load:
            res = time_lr_sweep(ds, a.seeds, a.steps[0], a.depth, a.cnn)
        print(f"{len(LRS)} learning rates x {a.seeds} seeds, depth {a.depth}, {a.steps[0]} steps "
              f"on {'digits images (CNN)' if a.cnn else a.data}: "
              f"{res['wall_s']:.1f} s, {res['compiles']} compilations, "
              f"{res['training_program_compiles']} of the training program")
        print(f"  {load.describe()}")
        print(json.dumps({**res, **load.as_dict()}))
        return
    with MachineLoad() as load:
        ij, compile_s = time_initjax(ds, a.seeds, *a.steps)
        try:
            tt = time_torch(ds, a.seeds, *a.steps)
        except ImportError:
            tt = float("nan")
    out = {"machine": f"{platform.machine()}, {jax.devices()[0].device_kind}", "seeds": a.seeds,
           "initjax_seed_steps_per_s": ij, "initjax_compile_s": compile_s,
           "torch_seed_steps_per_s": tt, "ratio": ij / tt, **load.as_dict()}
    print(f"machine {out['machine']}; {a.seeds} seeds, 784-100-100-100-10 sigmoid, batch 60, SGD, stats every 100 steps")
    print(f"  initjax (vmapped over seeds) {ij:10.0f} seed-steps/s   (compile {compile_s:.1f} s)")
    print(f"  PyTorch loop over seeds      {tt:10.0f} seed-steps/s")
    print(f"  ratio                        {ij / tt:10.2f}x")
    print(f"  {load.describe()}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
