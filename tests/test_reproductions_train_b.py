"""Tests of the Glorot 2010 (Figures 2-4, Table 1), He 2015 (Figures 2-3) and Schoenholz 2017
(trainability) reproductions: their quick modes finish, write their files and pass their checks,
and the ensemble trainer they share computes what a plain unrolled network computes."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from initjax import activations
from initjax.reproductions import (
    glorot2010_saturation,
    glorot2010_table1,
    he2015_deep_relu,
    schoenholz2017_trainability,
)
from initjax.training.arms import Arm, Ensemble, layer_stats

CASES = [
    (glorot2010_saturation, ("fig2-sigmoid.png", "fig2-sigmoid.pdf", "fig3-tanh-softsign.png",
                             "fig4-histograms.png", "records.npz")),
    (glorot2010_table1, ("test-error.png", "test-error.pdf", "records.npz")),
    (he2015_deep_relu, ("variance-at-init.png", "curves.png", "curves.pdf", "records.npz")),
    (schoenholz2017_trainability, ("trainability.png", "trainability.pdf", "grid.npz")),
]

# Checks whose outcome these tests do not assert, and why. They are still computed and reported
# (a failure shows as **FAIL** in report.md, asserted below).
NOT_ASSERTED = {
    # At the quick budget (100k images) the standard-init networks have not left chance, so the
    # order among them (Sigmoid vs Tanh vs Softsign, all ~88.9%) is noise; the full run decides.
    "glorot2010-table1": ("Shapeset: Softsign (standard init)", "Shapeset: Sigmoid has the highest"),
}


@pytest.mark.parametrize("module, files", CASES, ids=[m.NAME for m, _ in CASES])
def test_quick_run_passes_its_checks(tmp_path, module, files):
    report = module.run(tmp_path, quick=True, progress=False)
    skip = NOT_ASSERTED.get(module.NAME, ())
    for prefix in skip:  # every exemption names a check that exists
        assert any(c["check"].startswith(prefix) for c in report["checks"]), prefix
    failed = [(c["check"], c["measured"]) for c in report["checks"]
              if not c["pass"] and not c["check"].startswith(skip)]
    assert report["status"] == "done"
    assert report["checks"] and not failed, failed
    assert report["all_pass"] == all(c["pass"] for c in report["checks"])
    stored = json.loads((tmp_path / "report.json").read_text())
    assert stored["status"] == "done" and stored["name"] == module.NAME
    assert stored["all_pass"] == report["all_pass"]
    for name in ("report.md", *files):
        assert (tmp_path / name).is_file(), name
    text = (tmp_path / "report.md").read_text()
    assert "## Checks" in text
    assert text.count("**FAIL**") == sum(not c["pass"] for c in report["checks"])


# ----------------------------------------------------------------------------------------------
# The shared trainer
# ----------------------------------------------------------------------------------------------

ARMS = (
    Arm("tanh N", "tanh", "xavier_uniform", learning_rate=0.05),
    Arm("sigmoid", "sigmoid", "glorot2010_standard", learning_rate=0.2),
    Arm("relu b", "relu", "he_normal", "normal:stddev=0.1", learning_rate=0.1),
)
SHAPE = {"in_dim": 7, "width": 5, "depth": 3, "classes": 4}


def _unrolled_loss(p, act, x, y):
    """The same network written out layer by layer, for one arm and seed."""
    phi = activations.get(act)
    h = phi(x @ p.w_in + p.b_in[None, :])
    for l in range(p.w_hid.shape[0]):
        h = phi(h @ p.w_hid[l] + p.b_hid[l][None, :])
    out = h @ p.w_out + p.b_out[None, :]
    return jnp.mean(jax.nn.logsumexp(out, -1) - out[jnp.arange(len(y)), y]), h


def _batch(seed, n=6):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, SHAPE["in_dim"])).astype(np.float32), rng.integers(0, 4, n).astype(np.int32)


@jax.jit
def _reference_sgd(p, xs, ys, lr, act_index):
    """Two updates of SGD with momentum 0.5 (v <- mu v + g, p <- p - lr v) on the unrolled net."""
    def loss(q, x, y):
        return jax.lax.switch(act_index, [lambda q, x, y, a=a.activation: _unrolled_loss(q, a, x, y)
                                          for a in ARMS], q, x, y)

    _, last_hidden = loss(p, xs[0], ys[0])
    v = jax.tree.map(jnp.zeros_like, p)
    losses = []
    for i in range(2):
        (val, _), g = jax.value_and_grad(loss, has_aux=True)(p, xs[i], ys[i])
        v = jax.tree.map(lambda vv, gg: 0.5 * vv + gg, v, g)
        p = jax.tree.map(lambda pp, vv: pp - lr * vv, p, v)
        losses.append(val)
    return p, jnp.mean(jnp.stack(losses)), last_hidden


def test_ensemble_matches_unrolled_network_and_sgd():
    ens = Ensemble(ARMS, seeds=2, momentum=0.5, **SHAPE)
    x, y = _batch(0)
    before = jax.tree.map(np.asarray, ens.params)
    acts = ens.activations(x)  # (arm, seed, layer, batch, width)
    assert acts.shape == (3, 2, 3, 6, 5)
    xs, ys = np.stack([x, _batch(1)[0]]), np.stack([y, _batch(1)[1]])
    losses = ens.train(xs, ys)
    assert ens.step == 2 and np.all(ens.diverged_step == -1)
    for a, arm in enumerate(ARMS):
        for s in range(2):
            p = jax.tree.map(lambda v, a=a, s=s: jnp.asarray(v[a, s]), before)
            with jax.default_matmul_precision("highest"):  # as the Ensemble's own programs
                want, want_loss, last = _reference_sgd(p, xs, ys, arm.learning_rate, a)
            np.testing.assert_allclose(acts[a, s, -1], last, rtol=1e-5, atol=1e-6)
            got = jax.tree.map(lambda w, a=a, s=s: w[a, s], ens.params)
            for want_leaf, got_leaf in zip(jax.tree.leaves(want), jax.tree.leaves(got), strict=True):
                np.testing.assert_allclose(got_leaf, want_leaf, rtol=1e-4, atol=1e-6)
            np.testing.assert_allclose(losses[a, s], want_loss, rtol=1e-5)


def test_ensemble_draws_depend_on_seed_and_layer_only():
    """A seed's network is the same whatever runs beside it (other seeds, other arms), and layers
    are drawn from (seed, layer), so a deeper net shares its first layers' weights."""
    two = Ensemble(ARMS, seeds=2, **SHAPE)
    one = Ensemble(ARMS[1:2], seeds=1, **SHAPE)
    deep = Ensemble(ARMS[1:2], seeds=1, **{**SHAPE, "depth": 5})
    for field in ("w_in", "w_hid", "b_hid", "w_out"):
        np.testing.assert_array_equal(getattr(two.params, field)[1, 0], getattr(one.params, field)[0, 0])
    np.testing.assert_array_equal(deep.params.w_hid[0, 0, :2], one.params.w_hid[0, 0])
    assert not np.array_equal(two.params.w_in[0, 0], two.params.w_in[0, 1])  # seeds differ
    # the laws: standard U[-1/sqrt(n), 1/sqrt(n)], Xavier uniform, N(0, 0.1^2) biases
    assert np.abs(two.params.w_in[1]).max() <= 1 / np.sqrt(7)
    assert np.abs(two.params.w_hid[0]).max() <= np.sqrt(6 / 10)
    assert np.all(two.params.b_in[:2] == 0) and np.any(two.params.b_in[2] != 0)


def test_divergence_is_recorded_and_counts_as_error():
    # the same activations, momentum and shapes as above: the compiled programs are reused
    huge = Arm("huge", "relu", "normal:stddev=1e10")  # logits overflow float32 at once
    ens = Ensemble((*ARMS[:2], huge), seeds=2, momentum=0.5, **SHAPE)
    x, y = _batch(2)
    ens.train(np.stack([x] * 2), np.stack([y] * 2))
    np.testing.assert_array_equal(ens.diverged_step[2], [1, 1])
    assert np.all(ens.diverged_step[:2] == -1)
    _, acc = ens.evaluate(x, y)
    np.testing.assert_array_equal(acc[2], [0.0, 0.0])  # non-finite logits count as errors


def test_layer_stats_saturation_and_percentiles():
    acts = np.zeros((2, 1, 1, 10, 10), np.float32)
    acts[0, 0, 0, :5] = 0.995  # half of the tanh outputs within 1% of the range from +1
    acts[1, 0, 0] = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    arms = [Arm("t", "tanh", "zeros"), Arm("r", "relu", "zeros")]
    st = layer_stats(acts, arms, (50.0, 98.0))
    assert st["saturated"][0, 0, 0] == pytest.approx(0.5)
    assert st["saturated"][1, 0, 0] == 0.0  # ReLU is unbounded: never saturated
    np.testing.assert_allclose(st["percentiles"][1, 0, 0], np.percentile(acts[1, 0, 0], [50, 98]), rtol=1e-6)
    assert st["mean"][1, 0, 0] == pytest.approx(0.5, abs=1e-6)
