"""Tests of initjax.initializers against the closed forms of REFERENCES.md, scipy's distributions
and jax's own initializers; never against the module's own output.

One table (``RECS``) of schemes drives the parametrized tests: each record names a factory and its
arguments, the shapes to try, the expected ``E[W^2]`` as a formula of the shape, and, for schemes
that are a scaled standard normal, the expected std.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx

from initjax import initializers as inits
from initjax.initializers import Initializer

# Std of a standard normal truncated to (-2, 2), the literal jax uses in variance_scaling.
JAX_TN_CONST = 0.87962566103423978

DENSE = (64, 32)
WIDE = (16, 64)
CONV = (3, 3, 16, 32)
CONV1D = (5, 8, 16)
CONV3D = (3, 3, 3, 8, 16)
VEC = (7,)
FAN_SHAPES = (DENSE, CONV)
ANY_SHAPES = (DENSE, CONV, VEC)
# The shape every sampling test draws (27,648 entries, enough for KS and moment tests; a conv
# kernel every scheme accepts). XLA compiles of the random programs dominate the run time, and one
# shared shape keeps them cached across tests.
BIG = (3, 3, 48, 64)


def fans(shape):
    """Flax layout, written out independently: (*spatial, in, out)."""
    rf = math.prod(shape[:-2])
    return shape[-2] * rf, shape[-1] * rf


def fan_in(shape):
    return fans(shape)[0]


def fan_out(shape):
    return fans(shape)[1]


def tn_m2(a, b, loc=0.0, scale=1.0):
    """E[X^2] of scipy's truncated normal (bounds a, b in units of scale)."""
    return float(scipy.stats.truncnorm(a, b, loc=loc, scale=scale).moment(2))


LEAKY_GAIN = math.sqrt(2.0 / (1.0 + 0.2**2))


class Rec(NamedTuple):
    name: str
    kwargs: dict[str, Any]
    shapes: tuple[tuple[int, ...], ...]
    m2: Callable[[tuple[int, ...]], float]  # expected E[W^2], from the paper's formula
    std: Callable[[tuple[int, ...]], float] | None = None  # expected std if a scaled N(0, 1)
    random: bool = True

    def make(self) -> Initializer:
        return inits.get(self.name, **self.kwargs)

    def id(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.name}({args})"


RECS = [
    Rec("zeros", {}, ANY_SHAPES, lambda s: 0.0, random=False),
    Rec("ones", {}, ANY_SHAPES, lambda s: 1.0, random=False),
    Rec("constant", {"value": -0.5}, ANY_SHAPES, lambda s: 0.25, random=False),
    Rec("normal", {"stddev": 0.5}, ANY_SHAPES, lambda s: 0.25, std=lambda s: 0.5),
    Rec("normal", {"stddev": 0.5, "mean": 1.0}, ANY_SHAPES, lambda s: 0.25 + 1.0),
    Rec("uniform", {}, ANY_SHAPES, lambda s: 1.0 / 3.0),
    Rec("uniform", {"scale": 0.3}, ANY_SHAPES, lambda s: 0.09 / 3.0),
    Rec("uniform", {"low": -0.2, "high": 0.6}, ANY_SHAPES, lambda s: (0.04 - 0.12 + 0.36) / 3.0),
    Rec("truncated_normal", {"stddev": 0.5}, ANY_SHAPES, lambda s: tn_m2(-2, 2, scale=0.5)),
    Rec(
        "truncated_normal",
        {"stddev": 0.5, "mean": 0.1, "lower": -1.0, "upper": 3.0, "rescale": True},
        ANY_SHAPES,
        # rescale: the variance is exactly stddev^2, so E[X^2] = var + E[X]^2.
        lambda s: 0.25
        + scipy.stats.truncnorm(
            -1, 3, loc=0.1, scale=0.5 / scipy.stats.truncnorm(-1, 3).std()
        ).mean()
        ** 2,
    ),
    Rec("variance_scaling", {}, FAN_SHAPES, lambda s: 1.0 / fan_in(s)),
    Rec(
        "variance_scaling",
        {"scale": 3.0, "mode": "fan_avg", "distribution": "normal"},
        FAN_SHAPES,
        lambda s: 3.0 / ((fan_in(s) + fan_out(s)) / 2),
        std=lambda s: math.sqrt(3.0 / ((fan_in(s) + fan_out(s)) / 2)),
    ),
    Rec(
        "variance_scaling",
        {"scale": 2.0, "mode": "fan_out", "distribution": "uniform"},
        FAN_SHAPES,
        lambda s: 2.0 / fan_out(s),
    ),
    Rec(
        "xavier_normal",
        {},
        FAN_SHAPES,
        lambda s: 2.0 / (fan_in(s) + fan_out(s)),
        std=lambda s: math.sqrt(2.0 / (fan_in(s) + fan_out(s))),
    ),
    Rec(
        "glorot_normal",
        {"gain": 5.0 / 3.0},
        FAN_SHAPES,
        lambda s: (5 / 3) ** 2 * 2.0 / (fan_in(s) + fan_out(s)),
        std=lambda s: 5 / 3 * math.sqrt(2.0 / (fan_in(s) + fan_out(s))),
    ),
    Rec("xavier_normal", {"truncated": True}, FAN_SHAPES, lambda s: 2.0 / (fan_in(s) + fan_out(s))),
    Rec("xavier_uniform", {"gain": 2.0}, FAN_SHAPES, lambda s: 8.0 / (fan_in(s) + fan_out(s))),
    Rec(
        "he_normal",
        {},
        FAN_SHAPES,
        lambda s: 2.0 / fan_in(s),
        std=lambda s: math.sqrt(2.0 / fan_in(s)),
    ),
    Rec(
        "kaiming_normal",
        {"nonlinearity": "leaky_relu", "param": 0.2, "mode": "fan_out"},
        FAN_SHAPES,
        lambda s: LEAKY_GAIN**2 / fan_out(s),
        std=lambda s: LEAKY_GAIN / math.sqrt(fan_out(s)),
    ),
    Rec(
        "he_normal",
        {"gain": 1.5, "nonlinearity": "tanh"},  # an explicit gain wins over the nonlinearity
        FAN_SHAPES,
        lambda s: 2.25 / fan_in(s),
        std=lambda s: 1.5 / math.sqrt(fan_in(s)),
    ),
    Rec("he_normal", {"truncated": True}, FAN_SHAPES, lambda s: 2.0 / fan_in(s)),
    Rec("he_uniform", {}, FAN_SHAPES, lambda s: 2.0 / fan_in(s)),
    Rec(
        "kaiming_uniform",
        {"nonlinearity": "tanh", "mode": "fan_out"},
        FAN_SHAPES,
        lambda s: (5 / 3) ** 2 / fan_out(s),
    ),
    Rec(
        "lecun_normal",
        {},
        FAN_SHAPES,
        lambda s: 1.0 / fan_in(s),
        std=lambda s: math.sqrt(1.0 / fan_in(s)),
    ),
    Rec("lecun_normal", {"truncated": True}, FAN_SHAPES, lambda s: 1.0 / fan_in(s)),
    Rec("lecun_uniform", {}, FAN_SHAPES, lambda s: 1.0 / fan_in(s)),
    Rec("glorot2010_standard", {}, FAN_SHAPES, lambda s: 1.0 / (3.0 * fan_in(s))),
    Rec(
        "orthogonal",
        {"gain": 2.0},
        (DENSE, WIDE, CONV),
        lambda s: 4.0 / max(math.prod(s[:-1]), s[-1]),
    ),
    Rec(
        "delta_orthogonal",
        {},
        (CONV, CONV1D, CONV3D),
        # the centre (in x out) has in orthonormal rows: sum of squares = in, over prod(s) entries
        lambda s: s[-2] / math.prod(s),
    ),
    Rec(
        "identity",
        {"gain": 3.0},
        (DENSE, WIDE, CONV),
        lambda s: 9.0 * min(s[-2], s[-1]) / math.prod(s),
        random=False,
    ),
    Rec("sparse", {"k": 5, "stddev": 0.5}, (DENSE, CONV), lambda s: 5 / math.prod(s[:-1]) * 0.25),
]
REC_IDS = [r.id() for r in RECS]
GAUSSIAN_RECS = [r for r in RECS if r.std is not None]


def rec_shape_params(recs):
    return [pytest.param(r, s, id=f"{r.id()}-{s}") for r in recs for s in r.shapes]


# One record per scheme: variants differ in numbers, not in code paths.
SCHEME_RECS = list({r.name: r for r in reversed(RECS)}.values())[::-1]
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float64": jnp.float64}


@functools.cache
def _draw_every_scheme(dtype_name: str) -> dict[str, np.ndarray]:
    """Every scheme drawn at BIG. float32 eagerly (the programs are shared with the moment and KS
    tests); the other dtypes in one jitted program per dtype, which also checks that every scheme
    traces under jit. XLA compiles of the random programs (~1 s each on CPU) dominate the run
    time, so the number of distinct programs is kept small."""
    dtype = DTYPES[dtype_name]

    def draw(k):
        return {r.id(): r.make()(k, BIG, dtype) for r in SCHEME_RECS}

    with jax.enable_x64(dtype_name == "float64"):
        if dtype_name != "float32":
            draw = jax.jit(draw)
        return {name: np.asarray(w) for name, w in draw(jax.random.key(1)).items()}


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("rec", SCHEME_RECS, ids=[r.id() for r in SCHEME_RECS])
def test_shape_and_dtype(rec, dtype_name):
    w = _draw_every_scheme(dtype_name)[rec.id()]
    assert w.shape == BIG
    assert w.dtype == jnp.dtype(DTYPES[dtype_name])
    assert np.all(np.isfinite(w.astype(np.float64)))
    if rec.random:
        assert len(np.unique(w)) > 1


def test_eager_float64_and_float16(key):
    with jax.enable_x64(True):
        w = inits.he_normal()(key, DENSE, jnp.float64)
        assert w.dtype == jnp.float64
        expected = math.sqrt(2 / 64) * jax.random.normal(key, DENSE, jnp.float64)
        np.testing.assert_allclose(w, expected)
    w = inits.xavier_uniform()(key, DENSE, jnp.float16)
    assert w.dtype == jnp.float16 and w.shape == DENSE
    assert float(jnp.max(jnp.abs(w))) <= math.sqrt(6 / 96) * (1 + 2**-10)  # float16 rounding


@pytest.mark.parametrize("rec, shape", rec_shape_params(RECS))
def test_second_moment_matches_formula(rec, shape):
    assert rec.make().second_moment(shape) == pytest.approx(rec.m2(shape), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("rec", RECS, ids=REC_IDS)
def test_empirical_second_moment(rec):
    """mean(W^2) over n entries is within 6 standard errors of E[W^2]."""
    init = rec.make()
    w = np.asarray(init(jax.random.key(1), BIG, jnp.float32), dtype=np.float64).ravel()
    n = w.size
    sq = w**2
    # Standard error of a sample mean of W^2, from the sample itself (for a Gaussian this is
    # sqrt(2/n) * sigma^2). Entries of an orthogonal or sparse kernel are negatively correlated, so
    # assuming independence only makes the bound looser. The relative floor covers the float32
    # rounding of each entry (2^-24 relative on W, twice that on W^2).
    se = sq.std(ddof=1) / math.sqrt(n)
    expected = init.second_moment(BIG)
    assert expected == pytest.approx(rec.m2(BIG), rel=1e-12, abs=1e-15)
    assert abs(sq.mean() - expected) <= 6 * se + 2.0**-22 * expected


# ---------------------------------------------------------------------------------------------
# Same-key identities: scaled standard normals
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rec, shape", rec_shape_params(GAUSSIAN_RECS))
def test_same_key_identity(rec, shape, key):
    """e.g. he_normal(key, s) == sqrt(2/fan_in) * normal(key, s), with the same key."""
    init = rec.make()
    expected_std = rec.std(shape)
    np.testing.assert_allclose(
        init(key, shape), expected_std * jax.random.normal(key, shape), rtol=1e-5
    )
    assert init.gaussian_std(shape) == pytest.approx(expected_std, rel=1e-12)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("rec", GAUSSIAN_RECS, ids=[r.id() for r in GAUSSIAN_RECS])
def test_gaussian_std_reproduces_the_draw_exactly(rec, dtype, key):
    """The engine relies on it: normal(key) * asarray(gaussian_std, dtype) is the draw, bitwise."""
    init = rec.make()
    std = init.gaussian_std(BIG)
    assert isinstance(std, float)
    shared = jax.random.normal(key, BIG, dtype) * jnp.asarray(std, dtype)
    np.testing.assert_array_equal(np.asarray(init(key, BIG, dtype)), np.asarray(shared))


OTHER_RECS = [r for r in RECS if r.std is None]


@pytest.mark.parametrize("rec", OTHER_RECS, ids=[r.id() for r in OTHER_RECS])
def test_gaussian_std_is_none_for_other_laws(rec):
    shape = rec.shapes[0]
    assert rec.make().gaussian_std(shape) is None


# ---------------------------------------------------------------------------------------------
# Distributions: KS tests with fixed keys
# ---------------------------------------------------------------------------------------------

# BIG: 27,648 samples, fan_in 432, fan_out 576 (the moment test's shape, so compiles are shared).
FI, FO = fan_in(BIG), fan_out(BIG)
_a_tn_rescale = 0.5 / scipy.stats.truncnorm(-1, 3).std()

KS_CASES = [
    ("normal", {"stddev": 0.5, "mean": 0.2}, scipy.stats.norm(0.2, 0.5)),
    ("uniform", {}, scipy.stats.uniform(-1.0, 2.0)),
    ("uniform", {"scale": 0.3}, scipy.stats.uniform(-0.3, 0.6)),
    ("uniform", {"low": -0.2, "high": 0.6}, scipy.stats.uniform(-0.2, 0.8)),
    ("truncated_normal", {"stddev": 0.5}, scipy.stats.truncnorm(-2, 2, scale=0.5)),
    (
        "truncated_normal",
        {"stddev": 0.5, "mean": 0.1, "lower": -1.0, "upper": 3.0, "rescale": True},
        scipy.stats.truncnorm(-1, 3, loc=0.1, scale=_a_tn_rescale),
    ),
    (
        "variance_scaling",
        {"scale": 2.0},
        scipy.stats.truncnorm(-2, 2, scale=math.sqrt(2.0 / FI) / JAX_TN_CONST),
    ),
    ("he_normal", {}, scipy.stats.norm(0, math.sqrt(2.0 / FI))),
    (
        "xavier_normal",
        {"truncated": True},
        scipy.stats.truncnorm(-2, 2, scale=math.sqrt(2.0 / (FI + FO)) / JAX_TN_CONST),
    ),
    (
        "xavier_uniform",
        {"gain": 2.0},
        scipy.stats.uniform(-2 * math.sqrt(6 / (FI + FO)), 4 * math.sqrt(6 / (FI + FO))),
    ),
    ("he_uniform", {}, scipy.stats.uniform(-math.sqrt(6 / FI), 2 * math.sqrt(6 / FI))),
    (
        "he_uniform",
        {"nonlinearity": "leaky_relu", "mode": "fan_out"},
        # gain sqrt(2 / (1 + 0.01^2)) at the default slope, bound gain * sqrt(3 / fan_out)
        scipy.stats.uniform(-math.sqrt(6 / 1.0001 / FO), 2 * math.sqrt(6 / 1.0001 / FO)),
    ),
    ("lecun_uniform", {}, scipy.stats.uniform(-math.sqrt(3 / FI), 2 * math.sqrt(3 / FI))),
    ("glorot2010_standard", {}, scipy.stats.uniform(-1 / math.sqrt(FI), 2 / math.sqrt(FI))),
]


@pytest.mark.parametrize("name, kwargs, dist", KS_CASES, ids=[f"{c[0]}({c[1]})" for c in KS_CASES])
def test_distribution_ks(name, kwargs, dist):
    w = np.asarray(inits.get(name, **kwargs)(jax.random.key(2), BIG), np.float64).ravel()
    assert w.size >= 10_000
    assert scipy.stats.kstest(w, dist.cdf).pvalue > 0.01


# ---------------------------------------------------------------------------------------------
# Agreement with jax's own initializers (jax conventions: truncated, scale on the variance)
# ---------------------------------------------------------------------------------------------

JAX_CASES = [
    ("he_normal", {"truncated": True}, jax.nn.initializers.he_normal()),
    (
        "variance_scaling",
        {"scale": 2.5, "mode": "fan_avg", "distribution": "normal"},
        jax.nn.initializers.variance_scaling(2.5, "fan_avg", "normal"),
    ),
    ("orthogonal", {"gain": 2.0}, jax.nn.initializers.orthogonal(scale=2.0)),
    ("delta_orthogonal", {}, jax.nn.initializers.delta_orthogonal()),
]


@pytest.mark.parametrize(
    "name, kwargs, reference", JAX_CASES, ids=[c[0] + str(c[1]) for c in JAX_CASES]
)
def test_matches_jax(name, kwargs, reference, key):
    """Same key, same law as jax.nn.initializers (odd kernels: jax centres delta at (k-1)//2).

    This also pins orthogonal's sign correction by sign(diag R), which jax applies too."""
    ours = inits.get(name, **kwargs)(key, BIG)
    theirs = jax.jit(reference, static_argnums=(1, 2))(key, BIG, jnp.float32)  # one compile
    scale = float(jnp.max(jnp.abs(theirs)))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6 * scale)


# ---------------------------------------------------------------------------------------------
# Structured schemes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, gain", [(DENSE, 1.0), ((32, 32), 1.0), (WIDE, 1.0), ((1, 1, 8, 64), 1.0), (BIG, 2.0)]
)
def test_orthogonal(shape, gain, key):
    w = inits.orthogonal(gain=gain)(key, shape)
    q = np.asarray(w).reshape(math.prod(shape[:-1]), shape[-1]) / gain
    rows, cols = q.shape
    if rows >= cols:
        np.testing.assert_allclose(q.T @ q, np.eye(cols), atol=1e-5)
    else:
        np.testing.assert_allclose(q @ q.T, np.eye(rows), atol=1e-5)


@pytest.mark.parametrize(
    "shape, centre",
    [
        (BIG, (1, 1)),
        ((4, 8, 16), (2,)),  # even kernels: k // 2
        ((5, 3, 3, 8, 8), (2, 1, 1)),
    ],
)
def test_delta_orthogonal(shape, centre, key):
    gain = 1.0 if shape == BIG else 1.5  # BIG with gain 1 reuses the moment test's compile
    w = np.asarray(inits.delta_orthogonal(gain=gain)(key, shape))
    c = w[centre]
    rest = w.copy()
    rest[centre] = 0.0
    assert not np.any(rest)
    np.testing.assert_allclose(c @ c.T, gain**2 * np.eye(shape[-2]), atol=1e-5)


def test_identity_dense():
    w = inits.identity(gain=3.0)(jax.random.key(0), (5, 7))
    np.testing.assert_array_equal(np.asarray(w), 3.0 * np.eye(5, 7))


def test_identity_conv_is_a_dirac_kernel(key):
    w = inits.identity()(key, (3, 3, 4, 4))
    x = np.sin(np.arange(2 * 8 * 8 * 4, dtype=np.float32)).reshape(2, 8, 8, 4)
    y = jax.lax.conv_general_dilated(  # float32-exact: a GPU's default conv rounds x to TF32
        x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest"
    )
    np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-6)
    w = np.array(inits.identity(gain=2.0)(key, (3, 5, 4, 6)))
    np.testing.assert_array_equal(w[1, 2], 2.0 * np.eye(4, 6))
    w[1, 2] = 0.0
    assert not np.any(w)


@pytest.mark.parametrize("shape, k", [((40, 2000), 10), (BIG, 5)])
def test_sparse_exact_k_per_column_at_uniform_rows(shape, k, key):
    w = np.asarray(inits.sparse(k=k, stddev=0.5)(key, shape), np.float64).reshape(-1, shape[-1])
    nonzero = w != 0
    np.testing.assert_array_equal(nonzero.sum(axis=0), np.full(shape[-1], k))
    assert len({tuple(np.flatnonzero(col)) for col in nonzero.T}) > 1  # rows differ by column
    # Each row is hit with probability k / fan_in per column: Binomial counts, within 6 sigma.
    rows, cols = w.shape
    p = k / rows
    counts = nonzero.sum(axis=1)
    assert np.all(np.abs(counts - cols * p) <= 6 * math.sqrt(cols * p * (1 - p)))
    if w[nonzero].size >= 10_000:  # the non-zero values are N(0, stddev^2)
        assert scipy.stats.kstest(w[nonzero], scipy.stats.norm(0, 0.5).cdf).pvalue > 0.01


# ---------------------------------------------------------------------------------------------
# Fans and the truncated normal constant
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, expected",
    [
        ((64, 32), (64, 32)),
        ((5, 8, 16), (40, 80)),
        ((3, 3, 16, 32), (144, 288)),
        ((3, 3, 3, 8, 16), (216, 432)),
        ((1, 1, 8, 4), (8, 4)),
    ],
)
def test_compute_fans(shape, expected):
    assert inits.compute_fans(shape) == expected


def test_truncated_normal_constant():
    assert inits.truncated_normal_std(-2.0, 2.0) == pytest.approx(JAX_TN_CONST, rel=1e-15)
    assert inits.TRUNCATED_NORMAL_STD_2SIGMA == pytest.approx(JAX_TN_CONST, rel=1e-15)


@pytest.mark.parametrize("bounds", [(-1.0, 1.0), (-1.0, 3.0), (0.0, 5.0), (2.0, 4.0), (-6.0, -3.0)])
def test_truncated_normal_std_any_bounds(bounds):
    expected = scipy.stats.truncnorm(*bounds).std()
    assert inits.truncated_normal_std(*bounds) == pytest.approx(expected, rel=1e-10)


def test_rescaled_truncated_normal_has_target_variance():
    init = inits.truncated_normal(stddev=0.7, lower=-1.5, upper=1.5, rescale=True)
    assert init.second_moment((4,)) == pytest.approx(0.49, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Registry, spec strings, hashing, jit
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rec", RECS, ids=REC_IDS)
def test_spec_round_trip_and_hash(rec):
    init = rec.make()
    again = inits.get(init.spec)
    assert again == init
    assert hash(again) == hash(init)
    assert inits.get(init) is init
    assert init.name in inits.names(aliases=False)
    assert repr(init) == f"Initializer({init.spec!r})"


def test_params_include_defaults_and_are_sorted():
    init = inits.he_normal()
    assert init.params == (
        ("gain", None),
        ("mode", "fan_in"),
        ("nonlinearity", "relu"),
        ("param", None),
        ("truncated", False),
    )
    assert inits.get("he_normal:mode=fan_out") == inits.he_normal(mode="fan_out")
    assert inits.get("he_normal:gain=2") == inits.he_normal(gain=2.0)


def test_aliases_resolve_to_canonical_names():
    assert inits.get("kaiming_normal") == inits.he_normal()
    assert inits.get("kaiming_uniform").name == "he_uniform"
    assert inits.get("glorot_normal", gain=2.0) == inits.xavier_normal(gain=2.0)
    assert inits.get("glorot_uniform").name == "xavier_uniform"
    assert inits.glorot_normal is inits.xavier_normal
    assert inits.kaiming_uniform is inits.he_uniform
    assert {"kaiming_normal", "glorot_uniform"} <= set(inits.names())
    assert not {"kaiming_normal", "glorot_uniform"} & set(inits.names(aliases=False))


def test_get_rebuilds_with_kwargs():
    init = inits.he_normal()
    assert inits.get(init, mode="fan_out") == inits.he_normal(mode="fan_out")
    assert inits.get(init, gain=1.0).kwargs["gain"] == 1.0


def test_every_scheme_is_registered_and_public():
    expected = {
        "zeros", "ones", "constant", "normal", "uniform", "truncated_normal", "variance_scaling",
        "xavier_normal", "xavier_uniform", "he_normal", "he_uniform", "lecun_normal",
        "lecun_uniform", "orthogonal", "delta_orthogonal", "identity", "glorot2010_standard",
        "sparse",
    }  # fmt: skip
    assert set(inits.names(aliases=False)) == expected
    assert expected <= set(inits.__all__)
    for name in inits.__all__:
        assert hasattr(inits, name)


def test_works_under_jit_without_recompiling(key):
    init = inits.he_normal(mode="fan_out")
    f = jax.jit(lambda k: init(k, DENSE))
    np.testing.assert_array_equal(f(key), init(key, DENSE))
    f(jax.random.key(7))
    assert f._cache_size() == 1
    # As a static argument (hashable by value): an equal initializer hits the same cache entry.
    g = jax.jit(lambda i, k: i(k, DENSE), static_argnums=0)
    g(init, key)
    g(inits.get(init.spec), key)
    assert g._cache_size() == 1


# ---------------------------------------------------------------------------------------------
# Flax
# ---------------------------------------------------------------------------------------------


def _rel_std_tolerance(n: int) -> float:
    # The sample std of n Gaussian draws has relative standard error ~ 1 / sqrt(2 n); 6 of them.
    return 6.0 / math.sqrt(2.0 * n)


def test_flax_linen_dense():
    model = linen.Dense(8, kernel_init=inits.get("he_normal"))
    params = model.init(jax.random.key(0), jnp.ones((1, 512)))
    kernel = params["params"]["kernel"]
    assert kernel.shape == (512, 8)
    expected = math.sqrt(2.0 / 512)
    assert float(jnp.std(kernel)) == pytest.approx(expected, rel=_rel_std_tolerance(kernel.size))


def test_flax_nnx_linear():
    layer = nnx.Linear(4, 8, kernel_init=inits.get("he_normal"), rngs=nnx.Rngs(0))
    assert layer.kernel[...].shape == (4, 8)
    eye = nnx.Linear(4, 8, kernel_init=inits.identity(gain=2.0), rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(np.asarray(eye.kernel[...]), 2.0 * np.eye(4, 8))
    wide = nnx.Linear(512, 8, kernel_init=inits.get("he_normal"), rngs=nnx.Rngs(1))
    kernel = wide.kernel[...]
    expected = math.sqrt(2.0 / 512)
    assert float(jnp.std(kernel)) == pytest.approx(expected, rel=_rel_std_tolerance(kernel.size))


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="unknown initializer 'he_norml'") as err:
        inits.get("he_norml")
    for name in ("he_normal", "xavier_uniform", "kaiming_normal", "orthogonal"):
        assert name in str(err.value)


def test_unknown_parameter():
    with pytest.raises(ValueError, match="bad arguments"):
        inits.get("he_normal", stdev=1.0)


@pytest.mark.parametrize(
    "name",
    ["he_normal", "xavier_uniform", "lecun_normal", "variance_scaling", "glorot2010_standard"],
)
def test_rank_one_shape_for_fan_based(name, key):
    init = inits.get(name)
    with pytest.raises(ValueError, match=re.escape("(7,)")) as err:
        init(key, (7,))
    assert "rank >= 2" in str(err.value) and name in str(err.value)
    with pytest.raises(ValueError, match="rank >= 2"):
        init.second_moment((7,))
    with pytest.raises(ValueError, match="rank >= 2"):
        init.gaussian_std(())
    with pytest.raises(ValueError, match="rank >= 2"):
        inits.compute_fans((7,))


@pytest.mark.parametrize(
    "factory, kwargs, match",
    [
        (inits.normal, {"stddev": -0.1}, "stddev must be >= 0"),
        (inits.truncated_normal, {"stddev": -1.0}, "stddev must be >= 0"),
        (inits.sparse, {"stddev": -1.0}, "stddev must be >= 0"),
        (inits.xavier_normal, {"gain": -1.0}, "gain must be >= 0"),
        (inits.he_uniform, {"gain": -2.0}, "gain must be >= 0"),
        (inits.orthogonal, {"gain": -1.0}, "gain must be >= 0"),
        (inits.variance_scaling, {"scale": -1.0}, "scale must be >= 0"),
        (inits.uniform, {"scale": -1.0}, "scale must be >= 0"),
        (inits.variance_scaling, {"mode": "fan_sum"}, "mode must be one of .*fan_avg.*'fan_sum'"),
        (inits.he_normal, {"mode": "fan_avg"}, "mode must be one of 'fan_in', 'fan_out'"),
        (
            inits.variance_scaling,
            {"distribution": "cauchy"},
            "distribution must be one of .*'uniform'.*'cauchy'",
        ),
        (inits.he_normal, {"nonlinearity": "gelu"}, "unsupported nonlinearity 'gelu'.*leaky_relu"),
        (inits.he_normal, {"nonlinearity": "leaky_relu", "param": True}, "leaky_relu"),
        (inits.uniform, {"scale": 1.0, "low": 0.0, "high": 1.0}, "not both"),
        (inits.uniform, {"low": 0.0}, "both low and high"),
        (inits.uniform, {"low": 1.0, "high": 1.0}, "low < high"),
        (inits.truncated_normal, {"lower": 2.0, "upper": -2.0}, "lower < upper"),
        (inits.sparse, {"k": 0}, "k must be >= 1"),
    ],
)
def test_bad_arguments(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_bad_argument_types():
    with pytest.raises(TypeError, match="truncated must be True or False"):
        inits.he_normal(truncated=1)
    with pytest.raises(TypeError, match="k must be an integer"):
        inits.sparse(k=2.5)


@pytest.mark.parametrize("name", ["he_normal", "normal", "uniform", "orthogonal", "zeros"])
def test_int_dtype_is_a_type_error(name, key):
    with pytest.raises(TypeError, match="int32"):
        inits.get(name)(key, DENSE, jnp.int32)


@pytest.mark.parametrize("shape", [(7,), ()])
def test_orthogonal_needs_rank_two(shape, key):
    with pytest.raises(ValueError, match="orthogonal needs a kernel shape of rank >= 2"):
        inits.orthogonal()(key, shape)


def test_sparse_k_larger_than_fan_in(key):
    with pytest.raises(ValueError, match="k=20 > fan_in=16"):
        inits.sparse(k=20)(key, (16, 32))
    with pytest.raises(ValueError, match="k=20 > fan_in=16"):
        inits.sparse(k=20).second_moment((16, 32))


def test_delta_orthogonal_errors(key):
    with pytest.raises(ValueError, match="in=32 > out=16"):
        inits.delta_orthogonal()(key, (3, 3, 32, 16))
    with pytest.raises(ValueError, match="rank 3, 4 or 5"):
        inits.delta_orthogonal()(key, (16, 32))
    with pytest.raises(ValueError, match="rank 3, 4 or 5"):
        inits.delta_orthogonal()(key, (1, 3, 3, 3, 16, 32))
