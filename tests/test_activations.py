"""Activations against their closed forms (numpy/scipy), their stated bounds, and the registry."""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, special

from initjax import activations as A

X = np.linspace(-6, 6, 2001)

# name, kwargs, numpy formula (independent of the implementation)
TABLE = [
    ("identity", {}, lambda x: x),
    ("linear", {}, lambda x: x),
    ("sigmoid", {}, lambda x: 1 / (1 + np.exp(-x))),
    ("tanh", {}, np.tanh),
    ("softsign", {}, lambda x: x / (1 + np.abs(x))),
    ("relu", {}, lambda x: np.maximum(x, 0)),
    ("leaky_relu", {}, lambda x: np.where(x >= 0, x, 0.01 * x)),
    ("leaky_relu", {"negative_slope": 0.2}, lambda x: np.where(x >= 0, x, 0.2 * x)),
    ("prelu", {}, lambda x: np.where(x >= 0, x, 0.25 * x)),
    ("elu", {}, lambda x: np.where(x > 0, x, np.expm1(x))),
    ("elu", {"alpha": 0.5}, lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    # Klambauer et al. 2017: lambda = 1.0507009873554805, alpha = 1.6732632423543772
    ("selu", {}, lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x))),
    ("gelu", {}, lambda x: x * special.ndtr(x)),
    ("gelu", {"approximate": True}, lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))),
    ("silu", {}, lambda x: x / (1 + np.exp(-x))),
    ("swish", {}, lambda x: x / (1 + np.exp(-x))),
    ("softplus", {}, lambda x: np.log1p(np.exp(x))),
    ("erf", {}, special.erf),
]


@pytest.mark.parametrize("name,kwargs,formula", TABLE, ids=[f"{t[0]}{t[1] or ''}" for t in TABLE])
def test_matches_closed_form(name, kwargs, formula):
    act = A.get(name, **kwargs)
    got = np.asarray(act(jnp.asarray(X, jnp.float32)), np.float64)
    np.testing.assert_allclose(got, formula(X), rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("name,kwargs,formula", TABLE, ids=[f"{t[0]}{t[1] or ''}" for t in TABLE])
def test_outputs_within_stated_bounds(name, kwargs, formula):
    act = A.get(name, **kwargs)
    lo, hi = act.bounds
    grid = np.concatenate([np.linspace(-40, 40, 20001), [-1e6, 1e6]])  # softsign needs the far ends
    with np.errstate(over="ignore"):
        y = formula(grid)
    assert y.min() >= lo - 1e-9 and y.max() <= hi + 1e-9
    # the bounds are tight: approached within 1e-3 of the range where finite
    if math.isfinite(lo):
        assert y.min() - lo < 1e-3 * max(1.0, abs(lo))
    if math.isfinite(hi):
        assert hi - y.max() < 1e-3


def test_lower_bounds_of_silu_and_gelu_are_their_minima():
    silu = optimize.minimize_scalar(lambda x: x / (1 + np.exp(-x)), bracket=(-3, -1, 0), tol=1e-12)
    gelu = optimize.minimize_scalar(lambda x: x * special.ndtr(x), bracket=(-3, -0.7, 0), tol=1e-12)
    assert A.get("silu").bounds[0] == pytest.approx(silu.fun, abs=1e-12)
    assert A.get("gelu").bounds[0] == pytest.approx(gelu.fun, abs=1e-12)
    f = lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))  # noqa: E731
    approx = optimize.minimize_scalar(f, bracket=(-3, -0.75, 0), tol=1e-12)
    assert A.get("gelu", approximate=True).bounds[0] == pytest.approx(approx.fun, abs=1e-12)


def test_kinds_of_activation():
    assert {n for n in A.names(aliases=False) if A.get(n).bounded} == {"sigmoid", "tanh", "softsign", "erf"}
    assert {n for n in A.names(aliases=False) if A.get(n).rectifier} == {"relu"}
    assert A.get("leaky_relu", negative_slope=0.0).rectifier
    assert not A.get("leaky_relu").rectifier


def test_saturation_mask_is_one_percent_of_the_range():
    y = jnp.asarray([-1.0, -0.985, -0.975, 0.0, 0.975, 0.985, 1.0])
    np.testing.assert_array_equal(A.get("tanh").saturated(y), [1, 1, 0, 0, 0, 1, 1])
    s = jnp.asarray([0.0, 0.009, 0.011, 0.5, 0.989, 0.991])
    np.testing.assert_array_equal(A.get("sigmoid").saturated(s), [1, 1, 0, 0, 0, 1])
    assert not np.any(A.get("relu").saturated(jnp.asarray([0.0, 1e9])))


def test_selu_fixed_point_by_quadrature():
    """Klambauer et al. 2017: for z ~ N(0, 1), E[selu(z)] = 0 and E[selu(z)^2] = 1."""
    # Gauss-Legendre on each half-line, so the kink at 0 is an endpoint and each integrand is
    # analytic: 200 nodes on [0, 12] are exact to float64 (the mass beyond |z| = 12 is 1e-33).
    # A fixed rule, not scipy's adaptive quad: selu is evaluated in float32, whose rounding noise
    # (1e-7) made newer scipy's quad warn (IntegrationWarning) that epsabs=1e-10 was not reached.
    selu = A.get("selu")
    t, w = np.polynomial.legendre.leggauss(200)
    z = 6.0 * (t + 1.0)  # [0, 12]
    w = 6.0 * w * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    halves = [np.asarray(selu(jnp.asarray(sign * z, jnp.float32)), np.float64) for sign in (1.0, -1.0)]
    m1 = sum(float(w @ f) for f in halves)
    m2 = sum(float(w @ f**2) for f in halves)
    assert abs(m1) < 1e-6 and m2 == pytest.approx(1.0, abs=1e-6)
    assert A.SELU_LAMBDA == pytest.approx(1.0507009873554805, rel=1e-15)
    assert A.SELU_ALPHA == pytest.approx(1.6732632423543772, rel=1e-15)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_dtype_preserved(dtype):
    for name in A.names():
        y = A.get(name)(jnp.ones(4, dtype))
        assert y.dtype == dtype, name


def test_registry_round_trip_and_hashing():
    act = A.get("leaky_relu:negative_slope=0.1")
    assert act == A.get("leaky_relu", negative_slope=0.1)
    assert hash(act) == hash(A.get(act.spec))
    assert A.get(act, negative_slope=0.3).kwargs == {"negative_slope": 0.3}
    assert A.get("swish") == A.get("silu")
    assert "linear" in A.names() and "linear" not in A.names(aliases=False)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: A.get("swishy"), ValueError, "unknown activation 'swishy'; known activations: elu, erf"),
        (lambda: A.get("relu", slope=1), ValueError, r"unknown parameter\(s\) \['slope'\]; allowed: none"),
        (lambda: A.get("elu", alpha=0.0), ValueError, "alpha must be > 0.0, got 0.0"),
        (lambda: A.get("elu", alpha="big"), TypeError, "alpha must be a real number"),
        (lambda: A.get("gelu", approximate=1), TypeError, "approximate must be True or False"),
        (lambda: A.get("leaky_relu:negative_slope"), ValueError, "is not 'key=value'"),
    ],
)
def test_errors_name_the_value(call, error, match):
    with pytest.raises(error, match=match):
        call()
