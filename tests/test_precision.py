"""The matmul precision policy (initjax._precision, issue 13): every public entry point traces its
compiled programs at ``precision`` ("highest" by default), refuses other values by name, and
records what it used.

What the programs really contain is read from the StableHLO that jax lowers while the entry point
runs (``jax_dump_ir_to``, switched on around each call only): every ``dot_general`` and
``convolution`` must carry ``precision = [HIGHEST, HIGHEST]`` by default and ``[DEFAULT,
DEFAULT]`` with ``precision="default"``. The lowered text is the same on every backend, so this
holds for a GPU run without one (the optimized HLO is not: on a GPU its dots become cuBLAS custom
calls). The networks have odd shapes found in no other test, so their programs are lowered here,
not taken from a cache that an earlier test filled at another precision.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import initjax
from initjax import data, lsuv, modules, training
from initjax.engine import propagate_blocks, propagate_shared
from initjax.network import Network
from initjax.probing import probe, probe_blocks
from initjax.sweeps import sweep
from initjax.training.arms import Arm, Ensemble

# a dot_general's ``precision = [A, B]`` or a convolution's ``precision_config``
_DOT = re.compile(r"precision = \[(\w+), (\w+)\]")
_CONV = re.compile(r"precision_config = \[#stablehlo<precision (\w+)>, "
                   r"#stablehlo<precision (\w+)>\]")

CONFIG = initjax.NetworkConfig(depth=3, width=13, batch=5, activation="tanh", init="xavier_normal")
RESIDUAL = Network.residual_mlp(2, 11, batch=3)
CONV = Network.residual_cnn(1, 3, (5, 5), batch=2)
TRAIN = training.TrainConfig(label="p", widths=(9,), activation="tanh", kernel_init="xavier_normal",
                             optimizer="sgd", learning_rate=0.1, batch_size=17, steps=4,
                             record_every=2, probe_size=19, train_eval_size=23)
ARMS = (Arm("tanh", "tanh", "xavier_normal"), Arm("relu", "relu", "he_normal", learning_rate=0.05))


@contextlib.contextmanager
def lowered(directory: Path):
    """Dump every module jax lowers inside the block into ``directory``; yields a list that holds
    afterwards, per ``dot_general``/``convolution``, its (lhs, rhs) precisions (None: none set)."""
    directory.mkdir(parents=True)
    found: list[tuple[str, str] | None] = []
    old = jax.config.values["jax_dump_ir_to"]
    jax.config.update("jax_dump_ir_to", str(directory))
    try:
        yield found
    finally:
        jax.config.update("jax_dump_ir_to", old)
    for path in sorted(directory.glob("*.mlir")):
        for line in path.read_text().splitlines():
            if "stablehlo.dot_general" in line:
                m = _DOT.search(line)
            elif "stablehlo.convolution" in line:
                m = _CONV.search(line)
            else:
                continue
            found.append(m.groups() if m else None)


def _mlp():
    return modules.MLP(7, (11, 11), activation="tanh", kernel_init="xavier_normal",
                       rngs=nnx.Rngs(0))


X_MLP = jax.random.normal(jax.random.key(1), (6, 7))
X_RES = jax.random.normal(jax.random.key(2), (3, 11))


def _ensemble_numbers(precision):
    ens = Ensemble(ARMS, in_dim=7, width=10, depth=2, classes=4, seeds=2, precision=precision)
    x = np.asarray(jax.random.normal(jax.random.key(3), (2, 8, 7)))
    y = np.arange(16).reshape(2, 8) % 4
    return {"loss": ens.train(x, y), "params": np.asarray(ens.params.w_hid)}


# entry point -> precision -> (numbers to compare, the result's recorded precision or None)
ENTRIES = {
    "propagate": lambda p: _stats(initjax.propagate(CONFIG, seeds=2, precision=p)),
    "trace": lambda p: (
        {k: np.stack(v) for k, v in initjax.engine.trace(CONFIG, precision=p).items()}, None),
    "propagate_blocks": lambda p: _stats(initjax.propagate(RESIDUAL, seeds=2, precision=p)),
    "propagate_blocks_conv": lambda p: _stats(propagate_blocks(CONV, seeds=1, precision=p)),
    "probe": lambda p: _stats(probe(_mlp(), X_MLP, precision=p)),
    "probe_blocks": lambda p: _stats(probe_blocks(
        modules.build(RESIDUAL, 4, rngs=nnx.Rngs(0)), X_RES, precision=p)),
    "lsuv": lambda p: _lsuv(p),
    "ensemble": lambda p: (_ensemble_numbers(p), None),
}


def _stats(*results):
    numbers = {f"{i}.{k}": np.asarray(v) for i, r in enumerate(results)
               for k, v in r.stats._asdict().items()}
    recorded = {r.precision for r in results}
    assert len(recorded) == 1
    return numbers, recorded.pop()


def _lsuv(p):
    model, report = lsuv.lsuv(_mlp(), X_MLP, precision=p)
    numbers = {"variance": report.variance, **{f"k{i}": np.asarray(layer.kernel[...])
                                                for i, layer in enumerate(model.layers)}}
    return numbers, report.precision


# each precision is another compiled program: the default everywhere, the other two where the
# brief of issue 13 asks (propagate dense and block, probe; compare has its own fixture)
PRECISIONS = {name: (None,) for name in ENTRIES} | {
    "propagate": (None, "default", "high"),
    "propagate_blocks": (None, "default"),
    "probe": (None, "default"),
}
ON_CPU = pytest.mark.skipif(jax.default_backend() != "cpu",
                            reason="only CPU matmuls are float32-exact at every precision")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Per entry point and precision: (numbers, recorded precision, lowered dot precisions)."""
    root = tmp_path_factory.mktemp("ir")
    out = {}
    for name, fn in ENTRIES.items():
        for p in PRECISIONS[name]:
            with lowered(root / f"{name}-{p}") as found:
                numbers, recorded = fn(p)
            out[name, p] = (numbers, recorded, found)
    return out


@pytest.fixture(scope="module")
def compare_runs(tmp_path_factory):
    """training.compare at the default and at "default" precision (the trainer is the slowest
    entry point: two runs, not three)."""
    ds = data.digits()
    root = tmp_path_factory.mktemp("ir-compare")
    out = {}
    for p in (None, "default"):
        with lowered(root / str(p)) as found:
            result = training.compare(TRAIN, ds, seeds=2, progress=False, precision=p,
                                      out=root / f"run-{p}")
        out[p] = (result, found)
    return out


@pytest.mark.parametrize("name", list(ENTRIES))
def test_programs_are_highest_by_default_and_default_on_request(runs, name):
    for p in PRECISIONS[name]:
        want = (p or "highest").upper()
        _, recorded, found = runs[name, p]
        assert found, f"{name}: no dot_general/convolution was lowered at precision={p!r}"
        assert set(found) == {(want, want)}, (name, p, sorted(set(found), key=str))
        if recorded is not None:
            assert recorded == (p or "highest")


def test_compare_programs_follow_the_precision(compare_runs):
    for p, want in ((None, "HIGHEST"), ("default", "DEFAULT")):
        _, found = compare_runs[p]
        assert found, f"compare lowered no dot_general at precision={p!r}"
        assert set(found) == {(want, want)}, f"precision={p!r}: {sorted(set(found), key=str)}"


def test_compare_keeps_precision_out_of_the_run_identity(compare_runs):
    """The run folders' names hash the run's identity: the same at both precisions."""
    names = {}
    for p, (result, _) in compare_runs.items():
        index = json.loads((result.out / "compare.json").read_text())
        assert index["precision"] == (p or "highest")
        names[p] = [r["dir"] for r in index["runs"]]
    assert names[None] == names["default"]


@ON_CPU
@pytest.mark.parametrize("name", [n for n in ENTRIES if len(PRECISIONS[n]) > 1])
def test_on_cpu_the_three_precisions_give_identical_numbers(runs, name):
    base = runs[name, None][0]
    for p in PRECISIONS[name][1:]:
        other = runs[name, p][0]
        assert base.keys() == other.keys()
        for k in base:
            np.testing.assert_array_equal(base[k], other[k], err_msg=f"{name} {k} precision={p}")


@ON_CPU
def test_on_cpu_compare_is_identical_at_both_precisions(compare_runs):
    a, b = compare_runs[None][0], compare_runs["default"][0]
    for field, x in a[TRAIN.label]._asdict().items():
        y = getattr(b[TRAIN.label], field)
        if x is None:
            assert y is None, field
            continue
        np.testing.assert_array_equal(x, y, err_msg=field)


def test_results_save_and_load_their_precision(runs, tmp_path):
    res = initjax.propagate(CONFIG, seeds=2, precision="default")
    again = initjax.Propagation.load(res.save(tmp_path / "dense"))
    assert again.precision == "default" and res.to_json_dict()["precision"] == "default"
    blocks = initjax.propagate(RESIDUAL, seeds=2, precision="default")
    assert type(blocks).load(blocks.save(tmp_path / "blocks")).precision == "default"


BAD = ("HIGHEST", "tf32", jax.lax.Precision.HIGHEST)


@pytest.mark.parametrize("bad", BAD)
def test_bad_precisions_are_refused_by_name(bad, tmp_path):
    calls = {
        "propagate": lambda: initjax.propagate(CONFIG, precision=bad),
        "propagate_shared": lambda: propagate_shared([CONFIG], precision=bad),
        "propagate (blocks)": lambda: initjax.propagate(RESIDUAL, precision=bad),
        "propagate_blocks": lambda: propagate_blocks(RESIDUAL, precision=bad),
        "trace": lambda: initjax.engine.trace(CONFIG, precision=bad),
        "probe": lambda: probe(_mlp(), X_MLP, precision=bad),
        "probe_blocks": lambda: probe_blocks(modules.build(RESIDUAL, 4, rngs=nnx.Rngs(0)), X_RES,
                                             precision=bad),
        "lsuv": lambda: lsuv.lsuv(_mlp(), X_MLP, precision=bad),
        "sweep": lambda: sweep([CONFIG], precision=bad, out=tmp_path / "sweep"),
        "compare": lambda: training.compare(TRAIN, data.digits(), precision=bad, progress=False),
        "Ensemble": lambda: Ensemble(ARMS, in_dim=7, width=10, depth=3, classes=4, seeds=1,
                                     precision=bad),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="precision must be one of 'highest', 'high', 'def"):
            call()
        assert not (tmp_path / "sweep" / "sweep.json").exists(), name


def test_sweep_stores_its_precision_and_refuses_to_resume_at_another(tmp_path):
    first = sweep([CONFIG], seeds=2, out=tmp_path, precision=None)
    assert first[0].precision == "highest"
    stored = json.loads((tmp_path / "sweep.json").read_text())["identity"]["options"]
    assert stored["precision"] == "highest"
    sweep([CONFIG], seeds=2, out=tmp_path, precision="highest")  # the same run: resumes
    with pytest.raises(ValueError, match="precision: stored 'highest', asked 'default'"):
        sweep([CONFIG], seeds=2, out=tmp_path, precision="default")


def test_no_global_precision_is_set_by_the_library():
    """The policy is scoped to initjax's own calls: after them, jax's global default is untouched
    (a user's own matmuls keep their backend default, which lowers as DEFAULT)."""
    initjax.propagate(CONFIG, seeds=2)
    assert jax.config.values["jax_default_matmul_precision"] is None
    text = jax.jit(lambda a: a @ a).lower(jnp.ones((3, 3))).as_text()
    assert "precision = [DEFAULT, DEFAULT]" in text and "HIGHEST" not in text
