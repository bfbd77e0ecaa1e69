"""The exact Gaussian fast path against the dense engine: equal laws (two-sample KS per layer and
statistic, with fixed keys and disjoint seed sets), exact identities of the conditional sampling,
rank deficiency, and applicability.

Compiles dominate the run time on the 2-core CI machine, so every program is compiled once (cached
here) at XLA optimization level 0, which halves compile time and does not change what is computed.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats as sps

from initjax import NetworkConfig
from initjax.engine import MeasureOptions, estimate_memory, fast, seed_keys
from initjax.engine.dense import SAMPLER as DENSE
from initjax.engine.fast import SAMPLER as FAST
from initjax.engine.fast import applicable
from initjax.engine.sampling import split_seed_key
from initjax.engine.stats import stats_of_layers

OPTS = MeasureOptions((-1.0, 1.0), (-1.0, 1.0), 40, "normal", False, 0.01)
# the engine's default PRNG; threefry's normals compiled 8x slower here
KEY = jax.random.key(0, impl="philox2x32")
SEEDS = 200
FAST_START, DENSE_START = 0, 10_000  # disjoint seed sets for the two paths
FIELDS = ("act_var", "cosine", "grad_preact_var", "weight_grad_var")
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _compile(fn, *args):
    # traced at the engine's precision policy ("highest", as propagate runs the samplers): on a
    # GPU the default (TF32-class) matmuls break the 1e-4 identities below
    with jax.default_matmul_precision("highest"):
        return jax.jit(fn).lower(*args).compile(compiler_options=_FAST_COMPILE)


def _keys(start: int, count: int = SEEDS) -> jax.Array:
    return seed_keys(KEY, np.arange(start, start + count))


def _fast_one(config, k, x):
    # through the sampler protocol; fast.linear_backward is looked up at call time, so a
    # monkeypatched one is what gets compiled
    return FAST.seed_tensors((config,), OPTS, k, x)[0]


def _dense_one(config, k, x):
    return DENSE.seed_tensors((config,), OPTS, k, x)[0]


@functools.cache
def _stats_program(config):
    """One compiled ``stats_of_layers`` per config, shared by both paths (same tensor shapes)."""
    example = jax.eval_shape(jax.vmap(lambda k: _fast_one(config, k, None)), _keys(0))
    stats = functools.partial(stats_of_layers, config.activation, OPTS)
    return _compile(jax.vmap(stats), *example)


def _per_seed_stats(config, one, start: int):
    tensors = _compile(jax.vmap(lambda k: one(config, k, None)), _keys(start))(_keys(start))
    st = _stats_program(config)(*tensors)
    return {f: np.asarray(getattr(st, f), np.float64) for f in FIELDS}, tensors


@functools.cache
def _dense_stats(config):
    return _per_seed_stats(config, _dense_one, DENSE_START)


@functools.cache
def _fast_stats(config):
    return _per_seed_stats(config, _fast_one, FAST_START)


def _law_mismatches(fast, dense, depth):
    """(field, layer, KS p, z of the means) for every statistic whose laws look different."""
    bad = []
    for f in FIELDS:
        for layer in range(depth):
            a, b = fast[f][:, layer], dense[f][:, layer]
            assert np.isfinite(a).all() and np.isfinite(b).all(), (f, layer)
            p = sps.ks_2samp(a, b).pvalue
            se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
            z = abs(a.mean() - b.mean()) / max(se, 1e-30)
            if p <= 1e-3 or z >= 5:
                bad.append((f, layer + 1, p, z))
    return bad


def small(**kw):
    base = dict(depth=4, width=64, batch=8, init="lecun_normal", activation="tanh")
    base.update(kw)
    return NetworkConfig(**base)


TANH = small(init="normal:stddev=0.125")  # N(0, 1/n) at n = 64
LAW_CONFIGS = {
    "tanh-N(0,1/n)": TANH,
    "relu-he": small(init="he_normal", activation="relu"),
    "tanh-bn-before": small(norm="batch", norm_placement="before", init="xavier_normal"),
    "ragged": small(width=(48, 32, 32, 16), in_width=40, init="xavier_normal", activation="relu"),
    "tanh-corr0.5-ln-after": small(input_correlation=0.5, norm="layer", norm_placement="after"),
}


# --- the law of everything measured equals the dense path's ------------------------------------
@pytest.mark.parametrize("config", list(LAW_CONFIGS.values()), ids=list(LAW_CONFIGS))
def test_fast_path_has_the_dense_law(config):
    fast, ft = _fast_stats(config)
    dense, dt = _dense_stats(config)
    # the engine's conventions: stacked arrays when uniform, lists otherwise; same shapes and dtypes
    assert jax.tree.structure(ft) == jax.tree.structure(dt)
    for a, b in zip(jax.tree.leaves(ft), jax.tree.leaves(dt), strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
    assert _law_mismatches(fast, dense, config.depth) == []


def test_the_law_test_can_fail(monkeypatch):
    """Dropping the complement term (I - V V^T) W~ of the backward sample is caught at once."""

    def no_complement(keys, layer, dh, vt, g, std, n_in, *rest):
        return (dh @ g.T) @ vt

    monkeypatch.setattr(fast, "linear_backward", no_complement)
    broken, _ = _per_seed_stats(TANH, _fast_one, FAST_START)  # not cached: compiled with the mutant
    dense, _ = _dense_stats(TANH)
    bad = {(f, layer) for f, layer, _, _ in _law_mismatches(broken, dense, TANH.depth)}
    # the last layer's gradients do not go through any W^T; every layer below does
    assert {("grad_preact_var", layer) for layer in (1, 2, 3)} <= bad
    assert ("grad_preact_var", 4) not in bad


# --- exact identities of the conditional sampling ----------------------------------------------
@functools.cache
def _one_seed_program(config, with_inputs: bool):
    x = jnp.zeros((config.batch, config.widths[0]), jnp.float32) if with_inputs else None
    return _compile(lambda k, x: _fast_one(config, k, x), _keys(0, 1)[0], x)


def _one_seed(config, inputs=None, seed=3):
    out = _one_seed_program(config, inputs is not None)(_keys(seed, 1)[0], inputs)
    return [[np.asarray(a, np.float64) for a in t] for t in out]


def _conditioning_error(t, layer):
    """Relative error of ``dx^{l-1} P == dh^l (X^+ (h^l - b))^T``, ``P = X^+ X`` the projection on
    the row space of ``X = x^{l-1}``: since ``X^+ H = P W``, the part of ``dL/dX = D W^T`` inside
    the row space is fixed by the forward pass. True of the dense path by linear algebra; the fast
    path must reuse its forward G to satisfy it (biases are zero here)."""
    x_prev, h, _, _, dh, dx = t
    pinv = np.linalg.pinv(x_prev[layer], rcond=1e-6)
    proj = pinv @ x_prev[layer]
    lhs = dx[layer - 1] @ proj
    rhs = dh[layer] @ (pinv @ h[layer]).T
    return np.abs(lhs - rhs).max() / np.abs(rhs).max()


DUPLICATED = np.tile(np.random.default_rng(0).normal(size=(4, 64)), (2, 1)).astype(np.float32)


@pytest.mark.parametrize(
    "config, inputs",
    [
        (TANH, None),
        (TANH, DUPLICATED),  # rank 4 < batch 8
        # batch > width: P = I, W is fixed by the forward pass
        (small(width=8, batch=16, init="he_normal", activation="relu"), None),
    ],
    ids=["tanh", "duplicated-rows", "batch>width"],
)
def test_backward_is_conditioned_on_the_forward(config, inputs):
    t = _one_seed(config, inputs)
    for layer in range(1, config.depth):
        assert _conditioning_error(t, layer) < 1e-4
        assert np.isfinite(np.concatenate([np.ravel(a[layer]) for a in t])).all()
    if config.batch < config.width:  # the complement (I - P) W~ must be there too
        x_prev, dx = t[0], t[5]
        proj = np.linalg.pinv(x_prev[1], rcond=1e-6) @ x_prev[1]
        assert np.linalg.norm(dx[0] - dx[0] @ proj) > 0.5 * np.linalg.norm(dx[0])
    if inputs is not None:  # duplicated examples stay duplicated through the forward pass
        for a in t[1]:
            np.testing.assert_allclose(a[:4], a[4:], rtol=1e-5, atol=1e-6)


def test_the_conditioning_test_can_fail(monkeypatch):
    """A backward pass that redraws G (ignores what H revealed about W) breaks the identity."""
    orig = fast.linear_backward

    def fresh_g(keys, layer, dh, vt, g, std, n_in, *rest):
        k_new = jax.random.fold_in(keys.weights, 10_000 + layer)
        g2 = jax.random.normal(k_new, g.shape, g.dtype) * std
        return orig(keys, layer, dh, vt, g2, std, n_in, *rest)

    monkeypatch.setattr(fast, "linear_backward", fresh_g)
    out = _compile(lambda k: _fast_one(TANH, k, None), _keys(0, 1)[0])(_keys(3, 1)[0])
    t = [[np.asarray(a, np.float64) for a in x] for x in out]
    assert min(_conditioning_error(t, layer) for layer in (1, 2, 3)) > 0.1


def test_batch_of_one_is_norm_times_a_gaussian():
    """B = 1: the basis is x/|x|, so h = |x| G with G the layer's N(0, s^2) draw, to rounding; and
    h/(s |x|) over 16384 units passes a KS test against N(0, 1)."""
    s, n = 0.5, 16384
    config = NetworkConfig(
        depth=1, width=n, in_width=32, batch=1, init=f"normal:stddev={s}", activation="identity"
    )
    x = np.random.default_rng(1).normal(size=(1, 32)).astype(np.float32)
    k = _keys(7, 1)[0]
    with jax.default_matmul_precision("highest"):  # the engine's policy (see _compile)
        h = np.asarray(jax.jit(lambda k, x: fast.sample_tensors(config, OPTS, k, x)[1])(k, x))[0, 0]
    keys = split_seed_key(k)
    k_g = jax.random.fold_in(jax.random.fold_in(keys.weights, 0), 0)  # layer 0, tag G
    g = np.asarray(jax.random.normal(k_g, (1, n)))[0]
    norm = np.linalg.norm(x.astype(np.float64))
    np.testing.assert_allclose(np.abs(h), norm * s * np.abs(g), rtol=1e-5, atol=1e-6)
    assert sps.kstest(h / (s * norm), "norm").pvalue > 0.01


def test_first_layer_covariance_is_s2_x_xt():
    """Columns of H are i.i.d. N(0, s^2 X X^T): the empirical covariance over n_out units matches
    within 5 standard errors, sd(C_bc) = sqrt((S_bb S_cc + S_bc^2) / n_out). X has rank 2 (row 2 is
    row 0 + row 1) and a zero row, whose covariance entries must be exactly 0."""
    s, n_out = 0.3, 8192
    config = NetworkConfig(
        depth=1, width=n_out, in_width=24, batch=4, init=f"normal:stddev={s}", activation="tanh"
    )
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 24))
    x = np.stack([a, b, a + b, np.zeros(24)]).astype(np.float32)
    first_h = jax.jit(lambda k, x: fast.sample_tensors(config, OPTS, k, x)[1])
    with jax.default_matmul_precision("highest"):  # the engine's policy (see _compile)
        h = np.asarray(first_h(_keys(5, 1)[0], x))[0].astype(np.float64)
    cov = h @ h.T / n_out
    x64 = x.astype(np.float64)
    sigma = s**2 * x64 @ x64.T
    sd = np.sqrt((np.outer(np.diag(sigma), np.diag(sigma)) + sigma**2) / n_out)
    assert np.all(np.abs(cov - sigma) <= 5 * sd + 1e-12)
    assert np.all(h[3] == 0.0)
    np.testing.assert_allclose(h[2], h[0] + h[1], rtol=1e-4, atol=1e-4 * np.abs(h).max())


# --- rank deficiency: zeros stay exactly zero, nothing is NaN -----------------------------------
def test_zero_rows_and_zero_input():
    x = np.random.default_rng(3).normal(size=(8, 64)).astype(np.float32)
    x[[1, 5]] = 0.0
    t = _one_seed(TANH, x)
    for a in t:
        assert np.isfinite(np.concatenate([np.ravel(v) for v in a])).all()
    for h in t[1]:
        assert np.all(h[[1, 5]] == 0.0) and np.all(h[[0, 2, 3, 4, 6, 7]] != 0.0)
    # an all-zero input: every h is exactly 0 (tanh(0) = 0), gradients finite
    t = _one_seed(TANH, np.zeros((8, 64), np.float32))
    assert all(np.all(h == 0.0) for h in t[1])
    assert all(np.isfinite(v).all() for a in t for v in a)


def test_an_overflowed_example_poisons_only_its_own_row():
    """An inf in one example: its rows of h, dh and dx are non-finite in every layer, as in the
    dense path, and the other examples are untouched (finite)."""
    x = np.random.default_rng(4).normal(size=(8, 64)).astype(np.float32)
    x[2, 7] = np.inf
    t = _one_seed(TANH, x)
    others = [0, 1, 3, 4, 5, 6, 7]
    for name, i in (("h", 1), ("dh", 4), ("dx", 5)):
        for layer, v in enumerate(t[i]):
            if not (name == "dx" and layer == TANH.depth - 1):  # the drawn output cotangent
                assert not np.isfinite(v[2]).any(), (name, layer)
            assert np.isfinite(v[others]).all(), (name, layer)


def test_dead_relu_layers_give_exact_zeros():
    """Bias -100 kills every ReLU: layer 1's output is 0, so h^l = b exactly above it, and every
    gradient below the output is exactly 0 (the output cotangent itself is not)."""
    config = small(activation="relu", init="he_normal", bias_init="constant:value=-100.0", depth=3)
    x_prev, h, y, out, dh, dx = _one_seed(config)
    assert all(np.all(v == 0.0) for v in y)
    assert all(np.all(v == -100.0) for v in h[1:])
    assert all(np.all(v == 0.0) for v in dh)
    assert all(np.all(v == 0.0) for v in dx[:-1])
    assert np.all(np.isfinite(dx[-1])) and np.abs(dx[-1]).max() > 0
    for xp, d in zip(x_prev, dh, strict=True):  # the weight gradient X^T D
        assert np.all(xp.T @ d == 0.0)


# --- jit, vmap, determinism ---------------------------------------------------------------------
def test_a_seed_does_not_depend_on_its_neighbours():
    """Seed s vmapped among 200 seeds (the law test's run) equals seed s run alone, and a second
    run repeats it bit for bit. (Bitwise equal on the CPU here; compared to float32 rounding, as a
    batched and a single matmul may round differently. An SVD basis failed this by O(1).)"""
    _, batched = _fast_stats(TANH)
    single = _one_seed_program(TANH, False)
    for s in (0, 3, 199):
        a = single(_keys(s, 1)[0], None)
        again = single(_keys(s, 1)[0], None)
        leaves = zip(*(jax.tree.leaves(t) for t in (a, batched, again)), strict=True)
        for u, v, w in leaves:
            np.testing.assert_array_equal(u, w)
            np.testing.assert_allclose(u, v[s], rtol=1e-5, atol=1e-6 * np.abs(u).max())


# --- applicability -------------------------------------------------------------------------------
APPLICABLE = [
    "normal",
    "normal:stddev=0.01",
    "he_normal",
    "xavier_normal",
    "lecun_normal",
    "glorot_normal",
]
NOT_APPLICABLE = [
    "orthogonal",
    "uniform",
    "he_uniform",
    "truncated_normal",
    "he_normal:truncated=True",
    "sparse:k=4",
    "normal:mean=0.1",
    "zeros",
    "identity",
]


@pytest.mark.parametrize("init", APPLICABLE)
def test_fast_applicable_accepts_iid_gaussians(init):
    assert applicable(small(init=init)) is None
    assert applicable(small(init=init, width=(48, 32, 32, 16), in_width=40)) is None


@pytest.mark.parametrize("init", NOT_APPLICABLE)
def test_fast_applicable_refuses_the_rest(init):
    reason = applicable(small(init=init))
    assert isinstance(reason, str) and "init" in reason
    with pytest.raises(ValueError, match="does not apply"):
        fast.sample_tensors(small(init=init), OPTS, _keys(0, 1)[0], None)


def test_fast_applicable_other_refusals():
    assert "dtype" in applicable(small(dtype="bfloat16"))
    assert "custom" in applicable(small(init=jax.nn.initializers.normal(0.1)))
    assert "cannot fill" in applicable(small(init="sparse:k=100"))  # k > fan_in
    with pytest.raises(TypeError):
        applicable("he_normal")


def test_memory_estimate_has_no_weight_matrix():
    """Width 8192, depth 20, batch 16: the kept (batch, width) tensors dominate, with no n x n
    buffer, so the estimate is a tenth of the dense one (whose 4 matrix buffers are 1 GiB)."""
    config = small(width=8192, depth=20, batch=16)
    kept = 8 * 16 * 8192 * 21 * 4
    assert kept < fast.estimate_memory(config) < 1.5 * kept
    assert fast.estimate_memory(config) * 8 < estimate_memory(config)


# --- the in-graph Householder QR (orthonormalization="householder_wy") --------------------------
def _basis_inputs(n=256, b=16):
    """(batch, n) inputs of every rank: V must be orthonormal and span each row, whatever it is."""
    rng = np.random.default_rng(11)
    z = rng.normal(size=(b, n))
    return {
        "gaussian": z,
        "duplicated-rows": np.tile(z[: b // 2], (2, 1)),  # rank b/2
        "zero-rows": np.concatenate([z[:12], np.zeros((b - 12, n))]),
        "3-live-units": np.concatenate([z[:, :3], np.zeros((b, n - 3))], axis=1),  # rank 3
        "correlated-1e-8": np.sqrt(1 - 1e-8) * z[:1] + 1e-4 * z,  # a collapsed deep network
        "tiny-row": np.concatenate([z[:15], 1e-6 * z[15:]]),
        "batch>width": z[:, :8],  # k = n: any orthonormal basis of R^8
    }


def _basis_errors(x, q):
    """(max |V^T V - I|, max over nonzero rows of |x - x V V^T| / |x|) in float64."""
    x, q = np.asarray(x, np.float64), np.asarray(q, np.float64)
    orth = np.abs(q.T @ q - np.eye(q.shape[1])).max()
    norms = np.linalg.norm(x, axis=1)
    resid = np.linalg.norm(x - (x @ q) @ q.T, axis=1)[norms > 0] / norms[norms > 0]
    return orth, resid.max()


@pytest.mark.parametrize("method", fast.ORTHONORMALIZATIONS)
def test_bases_are_orthonormal_and_span_the_rows_at_every_rank(method):
    programs = {}

    def basis(a, method):
        if a.shape not in programs:
            programs[a.shape] = _compile(lambda a: fast.orthonormal_basis(a, method), a)
        return programs[a.shape](a)

    for name, x in _basis_inputs().items():
        x32 = x.astype(np.float32)
        q = basis(jnp.asarray(x32.T), method)
        assert q.shape == (x.shape[1], min(x.shape))
        orth, resid = _basis_errors(x32, q)
        assert orth < 1e-5 and resid < 1e-5, (name, orth, resid)
    # the check has power: a basis missing one direction of the Gaussian rows fails it
    x32 = _basis_inputs()["gaussian"].astype(np.float32)
    assert _basis_errors(x32, basis(jnp.asarray(x32.T), method)[:, :-1])[1] > 0.01
    with pytest.raises(ValueError, match="orthonormalization must be one of"):
        fast.orthonormal_basis(jnp.asarray(x32.T), "cholesky_qr2")


def _fast_wy_one(config, k, x):
    return fast.sample_tensors(config, OPTS, k, x, orthonormalization="householder_wy")


def test_householder_wy_path_has_the_law_of_the_householder_and_dense_paths():
    """Statistics over 200 seeds of the in-graph Householder path, on seeds disjoint from both
    references, are within sampling error of the LAPACK Householder path and of the dense path."""
    wy, _ = _per_seed_stats(TANH, _fast_wy_one, 20_000)
    assert _law_mismatches(wy, _fast_stats(TANH)[0], TANH.depth) == []
    assert _law_mismatches(wy, _dense_stats(TANH)[0], TANH.depth) == []


def test_householder_wy_backward_is_conditioned_on_a_rank_deficient_forward():
    """Duplicated examples (rank 4 < batch 8): the exact identity of the conditioning holds and
    every tensor is finite, as on the LAPACK path."""
    x = jnp.asarray(DUPLICATED)
    program = _compile(lambda k, x: _fast_wy_one(TANH, k, x), _keys(0, 1)[0], x)
    t = [[np.asarray(a, np.float64) for a in v] for v in program(_keys(3, 1)[0], x)]
    for layer in range(1, TANH.depth):
        assert _conditioning_error(t, layer) < 1e-4
        assert np.isfinite(np.concatenate([np.ravel(a[layer]) for a in t])).all()
    with pytest.raises(ValueError, match="orthonormalization must be one of"):
        fast.sample_tensors(TANH, OPTS, _keys(0, 1)[0], None, orthonormalization="qr")
