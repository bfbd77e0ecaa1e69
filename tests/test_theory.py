"""Tests of initjax.theory against independent truths.

Truths used: closed-form kernels (arc-cosine for (leaky) ReLU, Williams' erf kernel, linear),
scipy.integrate.quad / scipy.optimize.brentq computations written here from the formulas,
Klambauer et al.'s SELU constants, Gaussian moments, Catalan / Fuss-Catalan numbers, and numpy
Monte-Carlo simulations of finite networks. High-precision comparisons run in float64
(``jax.enable_x64``) so that they test the quadrature, not float32 rounding.
"""

from __future__ import annotations

import contextlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize

from initjax import activations, theory

x64 = jax.enable_x64


@pytest.fixture
def one_blas_thread():
    with _one_blas_thread():
        yield


def _one_blas_thread():
    """numpy simulations below do many small matmuls; on a busy machine multi-threaded BLAS spins
    and runs them ~10x slower. threadpoolctl ships with scikit-learn (a test dependency)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")

# ------------------------------------------------------------------------------------------------
# independent references (scipy)
# ------------------------------------------------------------------------------------------------


def _pdf(z):
    return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)


def quad_expectation(f, q):
    """E f(sqrt(q) z) by adaptive quadrature, split at 0 where ReLU-type functions break."""
    s = math.sqrt(q)
    g = lambda z: f(s * z) * _pdf(z)  # noqa: E731
    opts = dict(epsabs=1e-13, epsrel=1e-13, limit=200)
    return integrate.quad(g, -np.inf, 0, **opts)[0] + integrate.quad(g, 0, np.inf, **opts)[0]


LAM, ALPHA = 1.0507009873554805, 1.6732632423543772  # Klambauer et al. 2017


def np_selu(u):
    return LAM * (u if u > 0 else ALPHA * math.expm1(u))


def np_gelu(u):
    return u * 0.5 * (1 + math.erf(u / math.sqrt(2)))


def scipy_tanh_critical(sigma_b2):
    """The tanh edge of chaos from scratch: q* by brentq on V(q) = q, then chi_1(sigma_w2) = 1."""

    def q_star(sw):
        def v(q):
            return sw * quad_expectation(lambda u: math.tanh(u) ** 2, q) + sigma_b2 - q

        return optimize.brentq(v, max(sigma_b2, 1e-12), 100.0, xtol=1e-14)

    def chi(sw):
        return sw * quad_expectation(lambda u: (1 - math.tanh(u) ** 2) ** 2, q_star(sw))

    return optimize.brentq(lambda sw: chi(sw) - 1, 1.2, 3.0, xtol=1e-12)


# ------------------------------------------------------------------------------------------------
# quadrature
# ------------------------------------------------------------------------------------------------


def test_split_rule_integrates_gaussian_moments_exactly():
    # E|z|^k = 2^(k/2) Gamma((k+1)/2) / sqrt(pi): odd k has a kink at 0 that plain Gauss-Hermite
    # cannot integrate exactly; the split rule with 50 half-line nodes is exact to degree 99.
    with x64():
        for k in (0, 1, 5, 12, 37):
            exact = 2 ** (k / 2) * math.gamma((k + 1) / 2) / math.sqrt(math.pi)
            got = float(theory.gaussian_expectation(lambda u, k=k: jnp.abs(u) ** k, 1.0))
            assert got == pytest.approx(exact, rel=1e-12)
        # plain Gauss-Hermite misses E|z| by more than 1e-4: the reason for the split rule
        herm = float(theory.gaussian_expectation(jnp.abs, 1.0, rule="hermite"))
        assert abs(herm - math.sqrt(2 / math.pi)) > 1e-4


@pytest.mark.parametrize(
    "name, jfn, npfn",
    [
        ("tanh^2", lambda u: jnp.tanh(u) ** 2, lambda u: math.tanh(u) ** 2),
        ("selu", activations.get("selu"), np_selu),
        ("selu^2", lambda u: activations.get("selu")(u) ** 2, lambda u: np_selu(u) ** 2),
        ("gelu", activations.get("gelu"), np_gelu),
        ("gelu^2", lambda u: activations.get("gelu")(u) ** 2, lambda u: np_gelu(u) ** 2),
    ],
)
def test_gaussian_expectation_matches_scipy_quad(name, jfn, npfn):
    q = np.array([0.3, 1.0, 4.0])
    with x64():
        got = np.asarray(theory.gaussian_expectation(jfn, q))
    want = [quad_expectation(npfn, float(qi)) for qi in q]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, err_msg=name)


def test_gaussian_expectation_2d_matches_closed_forms():
    with x64():
        c = jnp.linspace(-1.0, 1.0, 9)
        relu = theory.gaussian_expectation_2d(lambda a, b: jax.nn.relu(a) * jax.nn.relu(b), 2.0, c)
        want = 2.0 * (jnp.sqrt(1 - c**2) + (jnp.pi - jnp.arccos(c)) * c) / (2 * jnp.pi)
        np.testing.assert_allclose(relu, want, atol=1e-12)
        # E[step(u1) step(u2)] = (pi - arccos c) / (2 pi): discontinuous integrand, still exact
        steps = theory.gaussian_expectation_2d(lambda a, b: (a > 0) * (b > 0) * 1.0, 1.0, c)
        np.testing.assert_allclose(steps, (jnp.pi - jnp.arccos(c)) / (2 * jnp.pi), atol=1e-12)


# ------------------------------------------------------------------------------------------------
# mean-field maps vs closed forms (1e-6 demanded; float64 quadrature reaches ~1e-9)
# ------------------------------------------------------------------------------------------------

Q_GRID = np.array([0.05, 0.3, 1.0, 2.5, 10.0])
C_GRID = np.linspace(-1.0, 1.0, 11)
CLOSED = [
    ("relu", theory.relu_variance_map, theory.relu_correlation_map, {}),
    ("leaky_relu:negative_slope=0.2", theory.leaky_relu_variance_map,
     theory.leaky_relu_correlation_map, {"negative_slope": 0.2}),
    ("linear", theory.linear_variance_map, theory.linear_correlation_map, {}),
    ("erf", theory.erf_variance_map, theory.erf_correlation_map, {}),
]


@pytest.mark.parametrize("spec, vfun, cfun, kw", CLOSED, ids=[c[0] for c in CLOSED])
def test_maps_match_closed_forms(spec, vfun, cfun, kw):
    # grid: (sigma_w2, sigma_b2) in {(1.7, 0), (2.3, 0.4)} x q in Q_GRID x c in C_GRID
    sw, sb, qq, cc = np.broadcast_arrays(
        np.array([1.7, 2.3])[:, None, None], np.array([0.0, 0.4])[:, None, None],
        Q_GRID[None, :, None], C_GRID[None, None, :],
    )
    with x64():
        v_quad = theory.variance_map(qq, sw, sb, spec)
        np.testing.assert_allclose(v_quad, vfun(qq, sw, sb, **kw), rtol=1e-9, atol=1e-9)
        c_quad = theory.correlation_map(cc, qq, sw, sb, spec)
        np.testing.assert_allclose(c_quad, cfun(cc, qq, sw, sb, **kw), rtol=0, atol=1e-8)


def test_relu_correlation_map_formula_and_fixed_point():
    c = np.linspace(-1, 1, 7)
    want = (np.sqrt(1 - c**2) + (np.pi - np.arccos(c)) * c) / np.pi
    np.testing.assert_allclose(theory.relu_correlation_map(c), want, atol=1e-6)
    np.testing.assert_allclose(theory.relu_correlation_map(c, 3.0, 0.7), want, atol=1e-6)


def test_selu_fixed_point_is_zero_mean_unit_variance():
    selu = activations.get("selu")
    with x64():
        mean = float(theory.gaussian_expectation(selu, 1.0))
        second = float(theory.gaussian_expectation(lambda u: selu(u) ** 2, 1.0))
        assert abs(mean) < 1e-6 and abs(second - 1) < 1e-6
        assert float(theory.fixed_point_q(1.0, 0.0, "selu")) == pytest.approx(1.0, abs=1e-6)
        q_star = float(theory.fixed_point_q(1.0, 0.0, "selu", q_init=3.0))
        assert q_star == pytest.approx(1.0, abs=1e-6)
        assert float(theory.preserving_sigma_w2("selu")) == pytest.approx(1.0, abs=1e-6)
    # the same facts by scipy quad, with the constants typed in from the paper
    assert abs(quad_expectation(np_selu, 1.0)) < 1e-6
    assert abs(quad_expectation(lambda u: np_selu(u) ** 2, 1.0) - 1) < 1e-6


# ------------------------------------------------------------------------------------------------
# iterates and fixed points
# ------------------------------------------------------------------------------------------------


def test_variance_iterates_relu_closed_form_and_he_recursion():
    sw, sb, q0, depth = 1.8, 0.1, 2.0, 7
    q = np.asarray(theory.variance_iterates(q0, sw, sb, "relu", depth))
    want = [sw * q0 + sb]
    for _ in range(depth - 1):
        want.append(sw * want[-1] / 2 + sb)
    np.testing.assert_allclose(q, want, rtol=1e-6)
    # He et al.'s recursion is the sigma_b2 = 0 case, relative to the input's mean square
    fan = np.full(depth, 512)
    var = np.full(depth, sw / 512)
    np.testing.assert_allclose(
        theory.he_recursion(var, fan, "relu"),
        np.asarray(theory.variance_iterates(q0, sw, 0.0, "relu", depth)) / q0,
        rtol=1e-6,
    )
    # leaky slope a: factor (1 + a^2) / 2 from the second layer on
    a = 0.3
    assert theory.he_recursion([1 / 100, 2 / 50], [100, 50], f"leaky_relu:negative_slope={a}")[
        -1
    ] == pytest.approx(2 * (1 + a * a) / 2)


def test_glorot_recursion_is_small_q_limit_of_tanh():
    depth, q0 = 6, 1e-4
    var, fan = np.full(depth, 1.0 / 256), np.full(depth, 256)
    exact = np.asarray(theory.variance_iterates(q0, 1.0, 0.0, "tanh", depth)) / q0
    glorot = theory.glorot_recursion(var, fan, "tanh")
    np.testing.assert_allclose(glorot, np.ones(depth))
    # tanh's map is 1 - 2q + ... below the linear one: agreement to O(depth * q0)
    np.testing.assert_allclose(exact, glorot, rtol=20 * depth * q0)
    assert np.all(exact[1:] < glorot[1:])
    np.testing.assert_allclose(
        theory.glorot_recursion(var, fan, "linear"),
        np.asarray(theory.variance_iterates(q0, 1.0, 0.0, "linear", depth)) / q0,
        rtol=1e-6,
    )


def test_correlation_iterates_first_layer_and_linear_closed_form():
    sw, sb, q0, c0, depth = 1.3, 0.2, 0.7, 0.25, 6
    c = np.asarray(theory.correlation_iterates(c0, q0, sw, sb, "linear", depth))
    q, cc, want = sw * q0 + sb, (sw * c0 * q0 + sb) / (sw * q0 + sb), []
    for _ in range(depth):
        want.append(cc)
        cc = float(theory.linear_correlation_map(cc, q, sw, sb))
        q = sw * q + sb
    np.testing.assert_allclose(c, want, rtol=1e-6)


def _finite_net_moments(width, depth, phi, sw, sb, q0, c0, seeds):
    """numpy: two inputs with mean square q0 and cosine c0 through `seeds` random nets; per seed
    and layer, the mean over units of (h_a^2 + h_b^2) / 2 and of h_a h_b."""
    out = np.zeros((seeds, depth, 2))
    for seed in range(seeds):
        rng = np.random.default_rng(100 + seed)
        u, _ = np.linalg.qr(rng.standard_normal((width, 2)))
        xb = c0 * u[:, 0] + math.sqrt(1 - c0 * c0) * u[:, 1]
        x = math.sqrt(q0 * width) * np.stack([u[:, 0], xb])
        for layer in range(depth):
            w = rng.standard_normal((width, width), dtype=np.float32) * math.sqrt(sw / width)
            h = x @ w.T + math.sqrt(sb) * rng.standard_normal(width)[None, :]
            out[seed, layer] = (h[0] ** 2 + h[1] ** 2).mean() / 2, (h[0] * h[1]).mean()
            x = phi(h)
    return out


def test_iterates_match_finite_network_monte_carlo():
    # Width 512, 12 seeds. A mean of N squared Gaussians has relative sd sqrt(2/N) = 0.0625; it
    # compounds over layers, so the tolerance is 5 standard errors estimated from the 12 seeds,
    # plus 1% for O(1/N) finite-width bias.
    sw, sb, q0, c0, depth = 1.5, 0.05, 1.0, 0.3, 6
    with _one_blas_thread():
        m = _finite_net_moments(512, depth, np.tanh, sw, sb, q0, c0, seeds=12)
    q_mc, cov_mc = m[..., 0].mean(0), m[..., 1].mean(0)
    q_th = np.asarray(theory.variance_iterates(q0, sw, sb, "tanh", depth))
    c_th = np.asarray(theory.correlation_iterates(c0, q0, sw, sb, "tanh", depth))
    se_q = m[..., 0].std(0, ddof=1) / math.sqrt(12)
    se_c = (m[..., 1] / m[..., 0]).std(0, ddof=1) / math.sqrt(12)
    assert np.all(np.abs(q_mc - q_th) < 5 * se_q + 0.01 * q_th)
    assert np.all(np.abs(cov_mc / q_mc - c_th) < 5 * se_c + 0.01)


def test_fixed_point_q_special_values():
    assert float(theory.fixed_point_q(2.5, 0.0, "relu")) == math.inf  # chaotic ReLU explodes
    assert float(theory.fixed_point_q(2.0, 0.1, "relu")) == math.inf  # marginal, pushed by bias
    assert float(theory.fixed_point_q(1.5, 0.0, "relu")) == 0.0  # ordered ReLU dies out
    assert float(theory.fixed_point_q(2.0, 0.0, "relu", q_init=3.0)) == pytest.approx(3.0)
    # sigma_b2 / (1 - sigma_w2 / 2): the affine map's fixed point
    assert float(theory.fixed_point_q(1.5, 0.1, "relu")) == pytest.approx(0.4, rel=1e-5)
    assert float(theory.fixed_point_q(0.5, 0.0, "tanh")) == 0.0
    assert float(theory.fixed_point_q(0.0, 0.3, "tanh")) == pytest.approx(0.3)
    # GELU overflows towards inf where phi(-inf) * 0 would give NaN: never NaN
    for sw in (10.0, 40.0):
        assert float(theory.fixed_point_q(sw, 0.1, "gelu")) == math.inf
    # chaotic tanh at sigma_b2 = 0: q* from scipy
    def residual(q):
        return 2 * quad_expectation(lambda u: math.tanh(u) ** 2, q) - q

    ref = optimize.brentq(residual, 0.1, 10)
    assert float(theory.fixed_point_q(2.0, 0.0, "tanh")) == pytest.approx(ref, rel=1e-5)


DELTAS = np.array([0.3, 0.1, 0.03, 0.01])


@pytest.fixture(scope="module")
def tanh_scales():
    """One depth_scales call (one compilation) for the tanh tests: the critical sigma_w2 at
    sigma_b2 = 0.05 minus and plus DELTAS, then (2.5, 0) (chaotic, odd, no bias) and (1.2, 0.05)."""
    crit = float(theory.critical_line(np.array([0.0, 0.05]), "tanh")[1])
    sw = np.concatenate([crit - DELTAS, crit + DELTAS, [2.5, 1.2]])
    sb = np.concatenate([np.full(8, 0.05), [0.0, 0.05]])
    scales = theory.depth_scales(sw, sb, "tanh")
    return crit, theory.DepthScales(*(np.asarray(f) for f in scales))


def test_fixed_point_c(tanh_scales):
    _, s = tanh_scales
    # odd phi, sigma_b2 = 0: C(0) = 0, and in the chaotic phase 0 is the attracting fixed point
    assert abs(s.c_star[8]) < 1e-5
    assert s.c_star[9] == pytest.approx(1.0, abs=1e-4)  # ordered phase
    c = float(theory.fixed_point_c(3.0, 0.1, "tanh"))
    assert 0 < c < 0.9
    q_star = float(theory.fixed_point_q(3.0, 0.1, "tanh"))
    assert float(theory.correlation_map(c, q_star, 3.0, 0.1, "tanh")) == pytest.approx(c, abs=1e-5)


# ------------------------------------------------------------------------------------------------
# chi_1, depth scales, critical line
# ------------------------------------------------------------------------------------------------


def test_tanh_critical_line_matches_independent_scipy_computation():
    crit = np.asarray(theory.critical_line(np.array([0.0, 0.05]), "tanh"))
    # sigma_b2 = 0: exactly 1 with q* = 0. chi_1 - 1 = (4/3) q*^2 + ... touches 0 quadratically
    # there (q* ~ (sigma_w2 - 1) / 2), so bisection on chi_1 resolves it only to ~sqrt(float eps).
    assert crit[0] == pytest.approx(1.0, abs=1e-3)
    assert float(theory.fixed_point_q(1.0, 0.0, "tanh")) < 1e-6
    assert float(theory.chi_1(1.0, 0.0, "tanh")) == pytest.approx(1.0, abs=1e-6)
    ref = scipy_tanh_critical(0.05)  # 1.76095464 (Poole et al.'s diagram: ~1.76)
    assert ref == pytest.approx(1.76, abs=0.01)
    assert crit[1] == pytest.approx(ref, rel=1e-5)
    relu_line = theory.critical_line(np.array([0.0, 0.5]), "relu")
    np.testing.assert_allclose(relu_line, [2.0, 2.0], rtol=1e-5)


def test_chi_1_phases_and_relu_value():
    assert float(theory.chi_1(1.2, 0.05, "tanh")) < 1 < float(theory.chi_1(2.5, 0.05, "tanh"))
    # ReLU: chi_1 = sigma_w2 / 2 whatever q*, also where q* = 0 or inf
    for sw, sb in ((1.0, 0.0), (1.5, 0.3), (2.5, 0.0)):
        assert float(theory.chi_1(sw, sb, "relu")) == pytest.approx(sw / 2, rel=1e-6)
    assert float(theory.gradient_scale(1.5, 0.3, "relu", 10)) == pytest.approx(0.75**10, rel=1e-5)


def test_depth_scales_xi_q_and_xi_c_divergence(tanh_scales):
    # tanh: xi_c grows without bound as sigma_w2 approaches the critical line from either side
    crit, s = tanh_scales
    below = theory.DepthScales(*(f[:4] for f in s))
    above = theory.DepthScales(*(f[4:8] for f in s))
    for xi in (below.xi_c, above.xi_c):
        assert np.all(np.diff(xi) > 0) and xi[-1] > 50
    assert np.all(below.chi_1 < 1) and np.all(above.chi_1 > 1)
    # ordered phase: c* = 1 and chi_c = chi_1
    np.testing.assert_allclose(below.c_star, 1.0, atol=1e-4)
    np.testing.assert_allclose(below.chi_c, below.chi_1, rtol=1e-4)
    assert np.all(above.c_star < 1)
    # xi_q = -1 / log V'(q*), V' by a finite difference of scipy's V (no phi'' involved)
    sw = crit + DELTAS[1]

    def v(q):
        return sw * quad_expectation(lambda u: math.tanh(u) ** 2, q) + 0.05

    q_star = optimize.brentq(lambda q: v(q) - q, 0.05, 10.0, xtol=1e-14)
    slope = (v(q_star + 1e-5) - v(q_star - 1e-5)) / 2e-5
    assert above.q_star[1] == pytest.approx(q_star, rel=1e-5)
    assert above.xi_q[1] == pytest.approx(-1 / math.log(slope), rel=1e-4)


def test_vmap_and_jit_over_a_grid_equal_the_loop():
    grid_w, grid_b = jnp.meshgrid(jnp.array([0.8, 1.5, 2.5]), jnp.array([0.0, 0.05, 0.3]))

    def both(a, b):
        return theory.fixed_point_q(a, b, "tanh"), theory.chi_1(a, b, "tanh")

    q_grid, chi_grid = jax.jit(jax.vmap(jax.vmap(both)))(grid_w, grid_b)
    for i in range(3):
        for j in range(3):
            a, b = float(grid_w[i, j]), float(grid_b[i, j])
            q_one, chi_one = both(a, b)
            assert float(q_grid[i, j]) == pytest.approx(float(q_one), rel=1e-5, abs=1e-12)
            assert float(chi_grid[i, j]) == pytest.approx(float(chi_one), rel=1e-5)


def test_second_call_does_not_recompile(compiles):
    theory.fixed_point_q(1.45, 0.1, "tanh")  # warm-up: compiles unless an earlier test did
    assert compiles(lambda: theory.fixed_point_q(1.7, 0.2, "tanh")) == []
    assert compiles(lambda: theory.fixed_point_q(2.1, 0.0, activations.get("tanh"))) == []


def test_preserving_sigma_w2():
    assert float(theory.preserving_sigma_w2("relu")) == pytest.approx(2.0, rel=1e-6)
    assert float(theory.preserving_sigma_w2("linear", q=3.0)) == pytest.approx(1.0, rel=1e-6)
    ref = 1 / quad_expectation(lambda u: math.tanh(u) ** 2, 1.0)  # 2.5361754 (gain 1.5925)
    assert float(theory.preserving_sigma_w2("tanh")) == pytest.approx(ref, rel=1e-6)
    assert ref == pytest.approx(2.5362, abs=1e-4)
    # it is what it claims: one step of the variance map at that sigma_w2 keeps q
    q = 0.7
    sw = float(theory.preserving_sigma_w2("tanh", q))
    assert float(theory.variance_map(q, sw, 0.0, "tanh")) == pytest.approx(q, rel=1e-6)


# ------------------------------------------------------------------------------------------------
# Jacobian spectra
# ------------------------------------------------------------------------------------------------


def test_fuss_catalan_moments():
    np.testing.assert_array_equal(theory.gaussian_product_moments(1, 4), [1, 2, 5, 14])  # Catalan
    np.testing.assert_array_equal(theory.gaussian_product_moments(2, 4), [1, 3, 12, 55])
    for depth in range(1, 9):
        assert list(theory.gaussian_product_moments(depth)) == [1, depth + 1]


def _finite_width_product_moments(depth, n):
    """Exact E[m1^2] and E[m2] of J = W_L ... W_1, W_ij ~ N(0, 1/n) i.i.d., m_k = tr((J J^T)^k) / n.

    Wick's theorem for one more factor W on A = J J^T: E tr(W A W^T) = tr A and
    E tr((W A W^T)^2) = (tr A)^2 / n + (1 + 1/n) tr(A^2), Var[tr(W A W^T) / n | A] = 2 m2 / n^2:
    m2 <- m1^2 + (1 + 1/n) m2 and E[m1^2] <- E[m1^2] + 2 E[m2] / n^2, from m1 = m2 = 1.
    """
    m1_sq, m2 = 1.0, 1.0
    for _ in range(depth):
        m1_sq, m2 = m1_sq + 2 * m2 / n**2, m1_sq + (1 + 1 / n) * m2
    return m1_sq, m2


def test_gaussian_linear_jacobian_moments(one_blas_thread):
    # Width N = 256, 8 networks, depths 1..8 of each. m1 = mean s^2 has E = 1 exactly and
    # Var = E[m1^2] - 1 (exact recursion above, ~ L (L + 1) / N^2): we allow 5 sd of the mean of 8.
    # m2 = mean s^4 has the exact finite-N mean E[m2] = L + 1 + L (L + 1) / (2N) + O(N^-2); its sd
    # is estimated from the 8 nets and we allow 5 standard errors. The N -> inf limits are
    # gaussian_product_moments (Fuss-Catalan): the finite-N correction is checked to be O(L^2 / N).
    n, depths, seeds = 256, list(range(1, 9)), 8
    m1 = np.zeros((seeds, len(depths)))
    m2 = np.zeros((seeds, len(depths)))
    for s in range(seeds):
        sv = theory.jacobian_singular_values(jax.random.key(s), 8, n, depths=depths)
        for i, d in enumerate(depths):
            s2 = np.asarray(sv[d], dtype=np.float64) ** 2
            m1[s, i], m2[s, i] = s2.mean(), (s2**2).mean()
    for i, depth in enumerate(depths):
        mean, second = theory.gaussian_product_moments(depth)
        m1_sq, m2_exact = _finite_width_product_moments(depth, n)
        assert abs(m2_exact - second) < depth * (depth + 1) / n
        assert abs(m1[:, i].mean() - mean) < 5 * math.sqrt((m1_sq - 1) / seeds)
        se = m2[:, i].std(ddof=1) / math.sqrt(seeds)
        assert abs(m2[:, i].mean() - m2_exact) < 5 * se, depth
    # the spectrum spreads with depth (Saxe et al.): the largest singular value grows (the
    # Fuss-Catalan edge of s^2 is (L + 1)^(L + 1) / L^L: 4 at L = 1, 23.3 at L = 8)
    assert np.asarray(sv[8]).max() > 1.5 * np.asarray(sv[1]).max()


def test_orthogonal_linear_jacobian_is_isometric(one_blas_thread):
    sv = theory.jacobian_singular_values(
        jax.random.key(3), 8, 256, init="orthogonal", depths=[1, 8]
    )
    for d in (1, 8):
        np.testing.assert_allclose(sv[d], 1.0, atol=1e-4)
    sv = theory.jacobian_singular_values(
        jax.random.key(4), 8, 256, init="orthogonal", sigma_w2=1.44, depths=[1, 8]
    )
    np.testing.assert_allclose(sv[8], 1.2**8, rtol=1e-4)


def test_tanh_jacobian_mean_matches_gradient_factors(one_blas_thread):
    # E[mean s^2] = prod_l sigma_w2 E[phi'(h^l)^2] (forward-backward factorization at infinite
    # width). Width 256, 32 nets. One input per net, so the D_l = diag(tanh'(h^l)) of a net
    # fluctuate with its draw: m1 varies by ~15% from net to net (measured), far more than the
    # Gaussian-product spread sqrt(L (L + 1)) / N. So: 4 standard errors of the mean of 32,
    # estimated from the nets, plus 2% finite-width bias.
    sw, sb, q0, depth, n, nets = 1.5, 0.05, 1.0, 6, 256, 32
    pred = float(np.prod(theory.gradient_factors(q0, sw, sb, "tanh", depth)))
    kw = dict(activation="tanh", sigma_w2=sw, sigma_b2=sb, input_variance=q0)
    m1 = np.array([
        float(jnp.mean(theory.jacobian_singular_values(jax.random.key(s), depth, n, **kw) ** 2))
        for s in range(nets)
    ])
    se = m1.std(ddof=1) / math.sqrt(nets)
    assert se < 0.05 * pred  # the check below is tight enough to catch a wrong factor
    assert abs(m1.mean() - pred) < 4 * se + 0.02 * pred


# ------------------------------------------------------------------------------------------------
# batch norm
# ------------------------------------------------------------------------------------------------


def _bn_norm_ratio(ws, batch, phi, dphi, rng, skip_top=1, skip_bottom=3):
    """One input batch through a BN network with weights ``ws`` (no bias, BN eps = 0, then phi),
    one random cotangent back: |g|^2 after ``depth - skip_bottom`` layers over |g|^2 after
    ``skip_top`` (the top layers align the gradient with its leading direction, the bottom ones
    still carry the non-stationary input)."""
    x = rng.standard_normal((batch, ws[0].shape[0])).astype(np.float32)
    cache = []
    for w in ws:
        h = x @ w.T
        sd = h.std(0)
        y = (h - h.mean(0)) / sd
        cache.append((y, sd))
        x = phi(y)
    g = rng.standard_normal(x.shape).astype(np.float32)
    norms = [np.sum(g * g, dtype=np.float64)]
    for w, (y, sd) in zip(reversed(ws), reversed(cache)):
        v = dphi(y) * g
        g = ((v - v.mean(0) - y * (y * v).mean(0)) / sd) @ w  # the BN Jacobian, then W^T
        norms.append(np.sum(g * g, dtype=np.float64))
    return norms[len(ws) - skip_bottom] / norms[skip_top]


BN_SPAN = 12 - 1 - 3  # layers between the two measured gradients
BN_NETS = {  # name: (batch, phi, phi', input batches per weight draw, theory spec)
    "relu4": (4, lambda y: np.maximum(y, 0), lambda y: (y > 0) * 1.0, 8, "relu"),
    "relu16": (16, lambda y: np.maximum(y, 0), lambda y: (y > 0) * 1.0, 1, "relu"),
    "tanh16": (16, np.tanh, lambda y: 1 - np.tanh(y) ** 2, 1, "tanh"),
    "linear8": (8, lambda y: y, np.ones_like, 1, "linear"),
}


@pytest.fixture(scope="module")
def bn_simulation():
    """numpy simulation of wide BN networks (width 512, depth 12, 12 weight draws shared by the
    four settings): per setting, the |g_bottom|^2 / |g_top|^2 ratios of every run."""
    width, depth, seeds = 512, 12, 12
    ratios = {name: [] for name in BN_NETS}
    with _one_blas_thread():
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            scale = np.float32(1 / math.sqrt(width))
            ws = [rng.standard_normal((width, width), dtype=np.float32) * scale for _ in range(depth)]
            for name, (batch, phi, dphi, reps, _) in BN_NETS.items():
                ratios[name] += [_bn_norm_ratio(ws, batch, phi, dphi, rng) for _ in range(reps)]
    return {name: np.array(r) for name, r in ratios.items()}


@pytest.mark.parametrize("slope", [0.0, 0.2, 1.0])
def test_batchnorm_rate_quadrature_matches_closed_form(slope):
    spec = {0.0: "relu", 1.0: "linear"}.get(slope, f"leaky_relu:negative_slope={slope}")
    for batch in (4, 5, 8, 16, 64, 256):
        got = theory.batchnorm_gradient_rate(batch, spec)  # float32 quadrature
        assert got == pytest.approx(theory.relu_batchnorm_gradient_rate(batch, slope), rel=1e-6)


def test_batchnorm_rate_facts():
    # linear: (B - 2) / (B - 3); ReLU: > 1, decreasing in B, towards pi / (pi - 1)
    for b in (4, 5, 10, 100):
        assert theory.relu_batchnorm_gradient_rate(b, 1.0) == pytest.approx((b - 2) / (b - 3))
    rates = [theory.relu_batchnorm_gradient_rate(b) for b in (4, 5, 8, 16, 64, 256, 1024, 10**6)]
    assert all(r > 1 for r in rates) and all(np.diff(rates) < 0)
    assert rates[-1] == pytest.approx(math.pi / (math.pi - 1), rel=1e-5)
    assert rates[0] == pytest.approx(3.08406, rel=1e-5)
    assert rates[3] == pytest.approx(1.58995, rel=1e-5)
    assert theory.batchnorm_gradient_rate(2) == 0.0
    assert theory.batchnorm_gradient_rate(3) == math.inf


@pytest.mark.parametrize("name", ["relu16", "tanh16", "linear8"])
def test_batchnorm_rate_matches_finite_network(bn_simulation, name):
    # B >= 6: the per-unit 1 / sigma^2 (~ 1 / chi^2_{B-1}) has finite variance, so the mean of the
    # 12 runs' norm ratios is a regular sample mean: its relative standard error (estimated from
    # the runs, divided by the 8 layers) times 5, plus 1% for O(1/N) finite-width effects.
    batch, _, _, _, spec = BN_NETS[name]
    ratios = bn_simulation[name]
    rate = ratios.mean() ** (1 / BN_SPAN)
    se = ratios.std(ddof=1) / math.sqrt(len(ratios)) / ratios.mean() / BN_SPAN
    assert rate == pytest.approx(theory.batchnorm_gradient_rate(batch, spec), rel=5 * se + 0.01)


def test_batchnorm_rate_matches_finite_network_relu_b4(bn_simulation):
    # B = 4: 1 / sigma^2 ~ 1 / chi^2_3 has P(> t) ~ 0.27 t^(-3/2): finite mean, infinite variance.
    # A sum of n such terms deviates from n * mean by ~ (0.27 n)^(2/3), i.e. relatively by
    # 0.41 n^(-1/3); with n = 512 units x 12 weight draws x 8 batches = 49152 per layer that is
    # 1.1%; we allow 5x (5.5%).
    ratios = bn_simulation["relu4"]
    rate = ratios.mean() ** (1 / BN_SPAN)
    assert rate == pytest.approx(theory.batchnorm_gradient_rate(4, "relu"), rel=0.055)


# ------------------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: theory.variance_map(1.0, -1.0, 0.0, "tanh"), "sigma_w2"),
        (lambda: theory.variance_map(1.0, 1.0, -0.1, "tanh"), "sigma_b2"),
        (lambda: theory.variance_map(0.0, 1.0, 0.0, "tanh"), "q"),
        (lambda: theory.variance_map(np.array([1.0, -2.0]), 1.0, 0.0, "tanh"), "q"),
        (lambda: theory.variance_map(1.0, 1.0, 0.0, "nope"), "nope"),
        (lambda: theory.variance_map(1.0, 1.0, 0.0, "tanh", num=7), "even"),
        (lambda: theory.variance_iterates(1.0, 1.0, 0.0, "tanh", 0), "depth"),
        (lambda: theory.variance_iterates(-1.0, 1.0, 0.0, "tanh", 3), "q0_input"),
        (lambda: theory.correlation_map(1.5, 1.0, 1.0, 0.0, "tanh"), "c"),
        (lambda: theory.correlation_map(np.array([0.5, -1.01]), 1.0, 1.0, 0.0, "tanh"), "c"),
        (lambda: theory.correlation_iterates(0.5, 1.0, 1.0, 0.0, "tanh", 0), "depth"),
        (lambda: theory.relu_correlation_map(-2.0), "c"),
        (lambda: theory.erf_variance_map(-1.0), "q"),
        (lambda: theory.fixed_point_q(1.0, 0.0, "tanh", q_init=0.0), "q_init"),
        (lambda: theory.fixed_point_c(1.0, 0.0, "tanh", c_init=2.0), "c_init"),
        (lambda: theory.depth_scales(-1.0, 0.0, "tanh"), "sigma_w2"),
        (lambda: theory.chi_1(1.0, -1.0, "tanh"), "sigma_b2"),
        (lambda: theory.gradient_scale(1.0, 0.0, "tanh", 0), "depth"),
        (lambda: theory.gradient_factors(1.0, 1.0, 0.0, "tanh", 0), "depth"),
        (lambda: theory.critical_line(-0.1, "tanh"), "sigma_b2"),
        (lambda: theory.preserving_sigma_w2("tanh", q=-1.0), "q"),
        (lambda: theory.gaussian_expectation(jnp.tanh, -1.0), "q"),
        (lambda: theory.gaussian_expectation(jnp.tanh, 1.0, rule="simpson"), "rule"),
        (lambda: theory.gaussian_expectation_2d(jnp.multiply, 1.0, 1.1), "c"),
        (lambda: theory.he_recursion([1.0], [10], "tanh"), "he_recursion"),
        (lambda: theory.glorot_recursion([1.0], [10], "relu"), "glorot_recursion"),
        (lambda: theory.he_recursion([1.0, 1.0], [10], "relu"), "equal length"),
        (lambda: theory.he_recursion([-1.0], [10], "relu"), "variances"),
        (lambda: theory.jacobian_singular_values(jax.random.key(0), 2, 8, init="xavier"), "init"),
        (lambda: theory.jacobian_singular_values(jax.random.key(0), 0, 8), "depth"),
        (lambda: theory.jacobian_singular_values(jax.random.key(0), 2, 8, depths=[3]), "depths"),
        (lambda: theory.jacobian_singular_values(jax.random.key(0), 2, 8, sigma_w2=-1), "sigma_w2"),
        (lambda: theory.jacobian_singular_values(jax.random.key(0), 2, 8, activation="bad"), "bad"),
        (lambda: theory.gaussian_product_moments(0), "depth"),
        (lambda: theory.batchnorm_gradient_rate(1), "batch_size"),
        (lambda: theory.relu_batchnorm_gradient_rate(1), "batch_size"),
        (lambda: theory.batchnorm_gradient_rate(8, "unknown_act"), "unknown_act"),
    ],
)
def test_bad_input_raises_value_error_naming_it(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_traced_values_are_not_checked():
    # inside jit a negative value cannot be seen; the call must trace, not raise
    out = jax.jit(lambda s: theory.variance_map(1.0, s, 0.0, "relu"))(-1.0)
    assert float(out) == pytest.approx(-0.5)


def test_public_api_is_listed():
    for name in theory.__all__:
        assert hasattr(theory, name), name
    assert "batchnorm_gradient_rate" in theory.__all__ and "critical_line" in theory.__all__


def test_jacobian_takes_an_int_seed_by_the_one_key_rule():
    a = theory.jacobian_singular_values(3, 2, 16, activation="tanh")
    b = theory.jacobian_singular_values(jax.random.key(3, impl="philox2x32"), 2, 16,
                                        activation="tanh")
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(TypeError, match="key"):
        theory.jacobian_singular_values(1.5, 2, 16)


def test_depth_is_bounded_so_a_typo_cannot_hang():
    """`initjax theory --depth 1000000000` used to run for hours; a depth above MAX_DEPTH is
    refused at once, naming the bound and the depth scales that answer the question instead."""
    with pytest.raises(ValueError, match=r"depth must be <= 1000000 .* got 1000000000; .*depth_scales"):
        theory.variance_iterates(1.0, 1.5, 0.0, "tanh", 10**9)
    assert theory.MAX_DEPTH == 10**6
