"""The Yang & Schoenholz and De & Smith reproductions: quick modes end to end, and their own
recursions against closed forms and independent quadrature.

Quick runs must write ``report.json`` with status ``"done"``, the figures (PNG and PDF), data and
``report.md``, with every check passing except the findings that do not reproduce, listed here
with the reason: the test fails if one of them starts to pass as well as if any other check fails.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from reproduction_checks import check_quick_run

from initjax import theory
from initjax.reproductions import desmith2020_skipinit as desmith
from initjax.reproductions import yang2017_residual_meanfield as yang

EXPECTED_FILES = {
    "yang2017-residual-meanfield": (
        "residual-meanfield.png", "residual-meanfield.pdf", "mean_field.npz",
        "data/frn-tanh/stats.npz", "data/rrn-relu/stats.npz",
    ),
    "desmith2020-skipinit": (
        "variance-at-init.png", "variance-at-init.pdf", "training.png", "training.pdf",
        "training.npz", "data/bn-in-the-branch/stats.npz", "data/no-norm-he/stats.npz",
    ),
}

# The reduced residual net with ReLU (outside the paper's odd-activation RRN analysis): its stream
# accumulates a positive mean, the ReLU gates then correlate with W's row sums, the gradient
# independence assumption fails and chi grows about twice as fast per block as the recursion says
# (its forward pass matches). See the report.
KNOWN_FAILURES = {
    "yang2017-residual-meanfield": {"RRN, ReLU: gradient"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_FILES))
def test_quick_reproduction(tmp_path, name):
    check_quick_run(tmp_path, name, EXPECTED_FILES[name], KNOWN_FAILURES.get(name, ()),
                    paper_heading="Beside the paper")


def test_relu_frn_recursion_is_geometric():
    # no biases: p^l = (1 + sv2 sw2 / 2)^l exactly, the cosine follows the arc-cosine map, and
    # every gradient factor is 1 + sv2 sw2 / 2
    arm = yang.Arm("FRN, ReLU", "full", "relu", 2.0, 0.5, 0.0, 0.0)
    mf = yang.recursions(arm, 10, p0=1.0, c0=0.3)
    r = 1 + 0.5 * 2.0 / 2
    np.testing.assert_allclose(mf.p, r ** np.arange(1, 11), rtol=1e-12)
    np.testing.assert_allclose(mf.chi, r ** np.arange(9, -1, -1), rtol=1e-12)
    c1 = (0.3 + 0.5 * float(theory.relu_correlation_map(0.3, sigma_w2=2.0))) / r
    assert mf.cosine[0] == pytest.approx(c1, rel=1e-6)


@pytest.mark.parametrize("q", [0.5, 1.0, 4.0])
def test_tanh_quadrature_matches_gauss_hermite_at_moderate_q(q):
    # at moderate q the plain Gauss-Hermite rule of initjax.theory is exact to ~1e-10
    v, m, d = yang.gaussian_moments("tanh", q)
    assert v == pytest.approx(float(theory.gaussian_expectation(lambda u: jnp.tanh(u) ** 2, q,
                                                                rule="hermite", num=200)), abs=1e-6)
    assert d == pytest.approx(float(theory.gaussian_expectation(lambda u: jnp.cosh(u) ** -4, q,
                                                                rule="hermite", num=200)), abs=1e-6)
    assert m == 0.0
    # the covariance at correlation 1 is the variance, at 0 it vanishes (tanh is odd), and it
    # matches theory's 2-d quadrature at an intermediate correlation
    assert yang.gaussian_covariance("tanh", q, q) == pytest.approx(v, abs=1e-7)
    assert yang.gaussian_covariance("tanh", q, 0.0) == 0.0
    ref = float(theory.gaussian_expectation_2d(lambda a, b: jnp.tanh(a) * jnp.tanh(b), q, 0.4))
    assert yang.gaussian_covariance("tanh", q, 0.4 * q) == pytest.approx(ref, abs=1e-6)


def test_tanh_quadrature_at_large_q_against_monte_carlo():
    # q = 100, where Gauss-Hermite in z fails (tanh(10 z) is a step on its node spacing): 10^6
    # samples, tolerance 5 standard errors
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 1_000_000))
    q, c = 100.0, 0.6
    u, w = math.sqrt(q) * z[0], math.sqrt(q) * (c * z[0] + math.sqrt(1 - c * c) * z[1])
    prod = np.tanh(u) * np.tanh(w)
    assert abs(yang.gaussian_covariance("tanh", q, c * q) - prod.mean()) < 5 * prod.std() / 1000
    sq = np.tanh(u) ** 2
    assert abs(yang.gaussian_moments("tanh", q)[0] - sq.mean()) < 5 * sq.std() / 1000


def test_recursions_reject_bad_input():
    with pytest.raises(ValueError, match="activations .*'relu'.*got 'gelu'"):
        yang.recursions(yang.Arm("x", "full", "gelu", 1, 1, 0, 0), 3)
    with pytest.raises(ValueError, match="activations .*got 'elu'"):
        yang.gaussian_moments("elu", 1.0)
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        yang.recursions(yang.ARMS[0], 0)
    with pytest.raises(ValueError, match="kind must be 'full'.*got 'half'"):
        yang.recursions(yang.Arm("x", "half", "tanh", 1, 1, 0, 0), 3)


def test_desmith_laws():
    bn, none = desmith.laws("batch", 4), desmith.laws("none", 4)
    np.testing.assert_array_equal(bn["stream"], [2, 3, 4, 5])
    np.testing.assert_allclose(bn["share"], 1 / np.array([2, 3, 4, 5]))
    np.testing.assert_array_equal(none["stream"], [2, 4, 8, 16])
    np.testing.assert_array_equal(none["share"], [0.5] * 4)


def test_train_rejects_bad_input():
    from initjax import data

    net = desmith.train_network(desmith.TRAIN_ARMS[0], 2)
    ds = data.digits()
    with pytest.raises(ValueError, match="learning_rate"):
        desmith.train(net, ds, seeds=1, steps=2, record_every=1, learning_rate=0.0)
    with pytest.raises(ValueError, match="seeds"):
        desmith.train(net, ds, seeds=0, steps=2, record_every=1, learning_rate=0.1)
    with pytest.raises(TypeError, match="initjax Network"):
        desmith.train("net", ds, seeds=1, steps=2, record_every=1, learning_rate=0.1)
