"""Mean-field theory of signal propagation at initialization: what the engine is compared with.

Conventions (Poole et al. 2016, Schoenholz et al. 2017). Weights ``W_ij ~ (0, sigma_w2 / N_in)``,
biases ``(0, sigma_b2)``; the pre-activations are

    h^1 = W^1 x + b^1                   (the raw input x, no activation on it)
    h^l = W^l phi(h^{l-1}) + b^l        l = 2..L

and ``q^l = E[(h^l_i)^2]`` is the pre-activation second moment of layer ``l``. Arrays with a
layer axis put layer ``l`` at index ``l - 1``, as the engine does (index 0 = first weight layer).
``q0_input`` is the mean square of the raw input coordinates, so
``q^1 = sigma_w2 q0_input + sigma_b2``.

What is here:

* Gaussian quadrature (:func:`gaussian_expectation`, :func:`gaussian_expectation_2d`) and the
  mean-field maps built on it: :func:`variance_map`, :func:`correlation_map`, their iterates and
  fixed points, :func:`chi_1`, :func:`depth_scales`, :func:`gradient_factors`,
  :func:`critical_line`, :func:`preserving_sigma_w2`.
* Closed forms used as cross-checks (ReLU/leaky ReLU arc-cosine kernels, linear, erf) and the
  papers' special cases (:func:`he_recursion`, :func:`glorot_recursion`).
* Jacobian spectra of sampled networks (:func:`jacobian_singular_values`) and the Fuss-Catalan
  moments of Gaussian products (:func:`gaussian_product_moments`).
* The batch-norm gradient explosion rate (:func:`batchnorm_gradient_rate`,
  :func:`relu_batchnorm_gradient_rate`).

Quadrature. Every activation in :mod:`initjax.activations` is smooth except at 0 (ReLU, leaky
ReLU, PReLU, ELU, SELU have a kink or a jump of the derivative there). Plain Gauss-Hermite
converges slowly across a kink (``E|z|`` is off by 3e-3 with 100 nodes), so the rules here put
the breaks on the boundary of the cells they integrate over: in 1-d a Gauss rule for the
half-Gaussian weight on ``(0, inf)`` applied to ``f(x) + f(-x)``; in 2-d polar coordinates, with
the circle cut into four arcs at the directions where ``u1 = 0`` or ``u2 = 0`` and a Gauss rule
for the radial weight ``r exp(-r^2 / 2)``. Both rules are computed once (numpy, float64, by the
Lanczos/Golub-Welsch method on a finely discretized weight, weights from the Christoffel
function so that tiny weights keep their relative accuracy) and cached. The result is exact for
ReLU-type integrands and spectrally accurate for smooth ones; a plain probabilists' Gauss-Hermite
rule (``numpy.polynomial.hermite_e.hermegauss``) is available as ``rule="hermite"``.

    >>> float(preserving_sigma_w2("relu"))           # He et al. 2015: sigma_w^2 = 2 keeps q
    2.0
    >>> round(float(chi_1(2.0, 0.0, "relu")), 6)     # ... and is critical: chi_1 = 1
    1.0
    >>> float(relu_variance_map(1.0, sigma_w2=2.0))  # q^{l+1} = sigma_w2 q^l / 2 + sigma_b2
    1.0

Every function is pure and takes the activation (a spec string such as ``"tanh"`` or an
:class:`~initjax.activations.Activation`) and the quadrature sizes as static arguments; the
numeric arguments may be arrays (they broadcast), and the functions work under ``jax.jit`` and
``jax.vmap``. Bad concrete values raise ``ValueError``; traced values are not checked.

References:
  Poole et al. 2016, "Exponential expressivity in deep neural networks through transient chaos",
  https://arxiv.org/abs/1606.05340.
  Schoenholz et al. 2017, "Deep Information Propagation", https://arxiv.org/abs/1611.01232.
  Saxe et al. 2014, https://arxiv.org/abs/1312.6120; Pennington et al. 2017,
  https://arxiv.org/abs/1711.04735; Klambauer et al. 2017, https://arxiv.org/abs/1706.02515;
  Yang et al. 2019, "A Mean Field Theory of Batch Normalization", https://arxiv.org/abs/1902.08129.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from initjax import activations as _activations
from initjax import initializers as _initializers
from initjax._checks import check_choice, check_float, check_int
from initjax._keys import as_key
from initjax._precision import matmul_precision

__all__ = [
    "DEFAULT_NUM",
    "DEFAULT_NUM_2D",
    "DepthScales",
    "gaussian_expectation",
    "gaussian_expectation_2d",
    "variance_map",
    "variance_iterates",
    "fixed_point_q",
    "correlation_map",
    "correlation_iterates",
    "fixed_point_c",
    "chi_1",
    "depth_scales",
    "gradient_scale",
    "gradient_factors",
    "critical_line",
    "preserving_sigma_w2",
    "relu_variance_map",
    "relu_correlation_map",
    "leaky_relu_variance_map",
    "leaky_relu_correlation_map",
    "linear_variance_map",
    "linear_correlation_map",
    "erf_variance_map",
    "erf_correlation_map",
    "he_recursion",
    "glorot_recursion",
    "jacobian_singular_values",
    "gaussian_product_moments",
    "batchnorm_gradient_rate",
    "relu_batchnorm_gradient_rate",
    "Prediction",
    "predict",
]

DEFAULT_NUM = 100
MAX_DEPTH = 1_000_000  # layers of a per-layer recursion (a bound, so a typo cannot hang)
"""1-d quadrature points: 50 half-line nodes, each used at +x and -x."""

DEFAULT_NUM_2D = (32, 32)
"""2-d quadrature: (radial nodes, angular nodes per arc); 32 x 4 x 32 = 4096 points."""

DEFAULT_ITERATIONS = 500
_NEWTON_STEPS = 64
# q below this is reported as 0 (the map's fixed point at the origin); q above _Q_BIG is treated
# as infinite when an activation must be evaluated there (its q -> inf limit).
_Q_ZERO = 1e-20
_Q_TINY = 1e-30
_Q_BIG = 1e20
# A fixed-point iterate whose residual V(q) - q exceeds this fraction of q is still moving.
_RTOL = 1e-4
_MARGINAL = 1e-5

# ----------------------------------------------------------------------------------------------
# Quadrature rules (numpy float64, computed once)
# ----------------------------------------------------------------------------------------------


def _composite_legendre(a: float, b: float, panels: int, per: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(per)
    edges = np.linspace(a, b, panels + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    return (lo + (hi - lo) * (x + 1) / 2).ravel(), ((hi - lo) / 2 * w).ravel()


def _gauss_rule(x: np.ndarray, w: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n-point Gauss rule of the discrete measure sum_j w_j delta(x_j).

    Lanczos with full reorthogonalization gives the Jacobi matrix; its eigenvalues are the nodes.
    The weights are 1 / sum_k p_k(x)^2 (orthonormal polynomials by the three-term recurrence)
    rather than Golub-Welsch's squared eigenvector entries, which are only accurate in absolute
    terms and lose the ~1e-40 weights of the outermost nodes.
    """
    mu0 = float(w.sum())
    basis = np.zeros((n + 1, x.size))
    basis[0] = np.sqrt(w / mu0)
    alpha, beta = np.zeros(n), np.zeros(n)
    for k in range(n):
        v = x * basis[k]
        alpha[k] = basis[k] @ v
        v -= alpha[k] * basis[k]
        if k:
            v -= beta[k - 1] * basis[k - 1]
        for _ in range(2):
            v -= basis[: k + 1].T @ (basis[: k + 1] @ v)
        beta[k] = np.linalg.norm(v)
        basis[k + 1] = v / beta[k]
    jacobi = np.diag(alpha) + np.diag(beta[:-1], 1) + np.diag(beta[:-1], -1)
    nodes = np.linalg.eigvalsh(jacobi)
    p_prev, p = np.zeros_like(nodes), np.full_like(nodes, 1 / math.sqrt(mu0))
    christoffel = p * p
    for k in range(n - 1):
        p_next = ((nodes - alpha[k]) * p - (beta[k - 1] * p_prev if k else 0.0)) / beta[k]
        p_prev, p = p, p_next
        christoffel += p * p
    return nodes, 1 / christoffel


@functools.lru_cache(maxsize=None)
def _half_gauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes x > 0, weights summing to 1/2: E f(z) = sum_i w_i (f(x_i) + f(-x_i)), z ~ N(0, 1)."""
    x, w = _composite_legendre(0.0, 40.0, 160, 40)
    return _gauss_rule(x, w * np.exp(-x * x / 2) / math.sqrt(2 * math.pi), n)


@functools.lru_cache(maxsize=None)
def _radial_gauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes r > 0, weights summing to 1, for the weight r exp(-r^2 / 2) (a 2-d Gaussian radius)."""
    x, w = _composite_legendre(0.0, 40.0, 160, 40)
    return _gauss_rule(x, w * x * np.exp(-x * x / 2), n)


@functools.lru_cache(maxsize=None)
def _hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.hermite_e.hermegauss(n)
    return x, w / w.sum()


@functools.lru_cache(maxsize=None)
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(n)


def _fdtype() -> Any:
    return jnp.result_type(float)


def _const(a: np.ndarray) -> jax.Array:
    return jnp.asarray(a, dtype=_fdtype())


def _e1z(g: Callable[[jax.Array], jax.Array], num: int) -> jax.Array:
    """E g(z), z ~ N(0, 1), by the split rule (exact across a break at z = 0)."""
    x, w = _half_gauss(num // 2)
    x, w = _const(x), _const(w)
    return jnp.sum(w * (g(x) + g(-x)))


def _e1(f: Callable[[jax.Array], jax.Array], q: jax.Array, num: int) -> jax.Array:
    """E f(sqrt(q) z) for a scalar q."""
    s = jnp.sqrt(q)
    return _e1z(lambda z: f(s * z), num)


def _polar_nodes(c: jax.Array, num_2d: tuple[int, int]) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Nodes (z1, z2) and weights of a rule for the standard 2-d Gaussian, cut at u1 = 0, u2 = 0.

    With u1 ~ z1 and u2 ~ c z1 + sqrt(1 - c^2) z2 and z = r (cos t, sin t), u1 vanishes at
    t = pi/2, 3pi/2 and u2 at t = arccos(c) + pi/2, arccos(c) + 3pi/2: four arcs of lengths
    a, pi - a, a, pi - a (a = arccos c), each with a Gauss-Legendre rule.
    """
    nr, na = num_2d
    r, wr = (_const(v) for v in _radial_gauss(nr))
    g, wg = (_const(v) for v in _legendre(na))
    a = jnp.arccos(c)
    half_pi = math.pi / 2
    starts = jnp.stack([half_pi + 0 * a, half_pi + a, 3 * half_pi + 0 * a, 3 * half_pi + a])
    lengths = jnp.stack([a, math.pi - a, a, math.pi - a])
    theta = (starts[:, None] + lengths[:, None] * (g[None, :] + 1) / 2).reshape(-1)
    wt = (lengths[:, None] * wg[None, :] / (4 * math.pi)).reshape(-1)
    z1 = r[:, None] * jnp.cos(theta)[None, :]
    z2 = r[:, None] * jnp.sin(theta)[None, :]
    return z1, z2, wr[:, None] * wt[None, :]


def _e2(
    f2: Callable[[jax.Array, jax.Array], jax.Array],
    q: jax.Array,
    c: jax.Array,
    num_2d: tuple[int, int],
) -> jax.Array:
    """E f2(u1, u2) for (u1, u2) ~ N(0, q [[1, c], [c, 1]]), scalars q and c."""
    c = jnp.clip(c, -1.0, 1.0)
    z1, z2, w = _polar_nodes(c, num_2d)
    s = jnp.sqrt(q)
    u1 = s * z1
    u2 = s * (c * z1 + jnp.sqrt(jnp.maximum(1 - c * c, 0.0)) * z2)
    return jnp.sum(w * f2(u1, u2))


# ----------------------------------------------------------------------------------------------
# Argument handling
# ----------------------------------------------------------------------------------------------


def _resolve(activation: Any) -> _activations.Activation:
    if isinstance(activation, (str, _activations.Activation)):
        return _activations.get(activation)
    raise TypeError(
        f"activation must be a spec string such as 'tanh' or an Activation, got {activation!r}"
    )


def _concrete(value: Any) -> np.ndarray | None:
    """The value as a float64 numpy array, or None for traced values (not checked)."""
    if isinstance(value, jax.core.Tracer):
        return None
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got {value!r}")
    if isinstance(value, numbers.Real):
        return np.asarray(float(value))
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"expected a number or an array of numbers, got {value!r}") from err


def _check_range(
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    strict_lo: bool = False,
) -> None:
    arr = _concrete(value)
    if arr is None:
        return
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        check_float(name, value, minimum=lo, maximum=hi, strict_minimum=strict_lo)
        return
    bad = ~np.isfinite(arr)
    if lo is not None:
        bad |= (arr <= lo) if strict_lo else (arr < lo)
    if hi is not None:
        bad |= arr > hi
    if np.any(bad):
        allowed = " and ".join(
            s
            for s in (
                None if lo is None else f"{'>' if strict_lo else '>='} {lo}",
                None if hi is None else f"<= {hi}",
            )
            if s
        )
        raise ValueError(
            f"{name} must be finite and {allowed} everywhere; got {arr[bad].ravel()[:5].tolist()} "
            f"in {value!r}"
        )


def _check_sigmas(sigma_w2: Any, sigma_b2: Any) -> None:
    _check_range("sigma_w2", sigma_w2, lo=0.0)
    _check_range("sigma_b2", sigma_b2, lo=0.0)


def _check_q(name: str, q: Any) -> None:
    _check_range(name, q, lo=0.0, strict_lo=True)


def _check_c(name: str, c: Any) -> None:
    _check_range(name, c, lo=-1.0, hi=1.0)


def _check_num(num: Any) -> int:
    num = check_int("num", num, minimum=2)
    if num % 2:
        raise ValueError(f"num must be even (nodes come in +-x pairs), got {num}")
    return num


def _check_num_2d(num_2d: Any) -> tuple[int, int]:
    try:
        nr, na = num_2d
    except (TypeError, ValueError) as err:
        raise ValueError(f"num_2d must be (radial nodes, nodes per arc), got {num_2d!r}") from err
    return check_int("num_2d[0]", nr, minimum=1), check_int("num_2d[1]", na, minimum=1)


def _checked(
    activation: Any,
    num: Any,
    *,
    num_2d: Any = None,
    iterations: Any = None,
    depth: Any = None,
    sigmas: tuple[Any, Any] | None = None,
    q: dict[str, Any] | None = None,
    c: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Check a public function's arguments; return the static ones of its jitted core.

    Static (returned as keyword arguments): ``act`` (the resolved activation), ``num`` and, where
    given, ``num_2d``, ``iterations`` (>= 0) and ``depth`` (>= 1). Numeric (concrete values only;
    traced values pass): each ``c`` in [-1, 1], each ``q`` > 0, ``sigmas = (sigma_w2, sigma_b2)``
    >= 0; ``q`` and ``c`` map the argument's name to its value.
    """
    static: dict[str, Any] = {"act": _resolve(activation), "num": _check_num(num)}
    if num_2d is not None:
        static["num_2d"] = _check_num_2d(num_2d)
    if iterations is not None:
        static["iterations"] = check_int("iterations", iterations, minimum=0)
    if depth is not None:
        static["depth"] = check_int("depth", depth, minimum=1)
        if static["depth"] > MAX_DEPTH:
            raise ValueError(
                f"depth must be <= {MAX_DEPTH} (one value per layer is computed and kept), got "
                f"{static['depth']}; for the behaviour at any depth see depth_scales (xi_q, xi_c)"
            )
    for name, value in (c or {}).items():
        _check_c(name, value)
    for name, value in (q or {}).items():
        _check_q(name, value)
    if sigmas is not None:
        _check_sigmas(*sigmas)
    return static


def _floats(*values: Any) -> tuple[jax.Array, ...]:
    return tuple(_f(v) for v in values)


def _d1(f: Callable[[jax.Array], jax.Array]) -> Callable[[jax.Array], jax.Array]:
    """The elementwise derivative of an elementwise f (one forward-mode pass)."""
    return lambda u: jax.jvp(f, (u,), (jnp.ones_like(u),))[1]


def _f(x: Any) -> jax.Array:
    return jnp.asarray(x, dtype=_fdtype())


def _clamp_q(q: jax.Array) -> jax.Array:
    """q at which to evaluate an activation: 0 -> its q -> 0+ limit, inf (or NaN) -> large."""
    return jnp.clip(jnp.where(jnp.isnan(q), _Q_BIG, q), _Q_TINY, _Q_BIG)


# ----------------------------------------------------------------------------------------------
# Public quadrature
# ----------------------------------------------------------------------------------------------


def gaussian_expectation(
    f: Callable[[jax.Array], jax.Array], q: Any, num: int = DEFAULT_NUM, *, rule: str = "split"
) -> jax.Array:
    """``E_{z ~ N(0, 1)} f(sqrt(q) z)`` by Gaussian quadrature.

    Args:
      f: an elementwise function of an array (e.g. ``lambda u: jnp.tanh(u) ** 2``).
      q: the variance (>= 0); an array gives one expectation per entry.
      num: number of quadrature points (even).
      rule: ``"split"`` (default): a Gauss rule on the half-line applied to ``f(x) + f(-x)``,
        exact for piecewise polynomials with a break at 0 and spectrally accurate for functions
        smooth on each side of 0. ``"hermite"``: plain probabilists' Gauss-Hermite
        (``numpy.polynomial.hermite_e.hermegauss``), accurate only for smooth ``f``.

    Returns:
      An array of ``q``'s shape.

    Raises:
      ValueError: for a negative or non-finite ``q``, an odd ``num`` or an unknown ``rule``.
    """
    check_choice("rule", rule, ("split", "hermite"))
    num = _check_num(num)
    _check_range("q", q, lo=0.0)
    q = _f(q)
    if rule == "split":
        x, w = _half_gauss(num // 2)
    else:
        x, w = _hermite(num)

    @jax.jit  # one compilation per call instead of op-by-op dispatch
    def run(q, x, w):
        shape = (1,) * q.ndim + (-1,)
        s = jnp.sqrt(q)[..., None]
        vals = f(s * x.reshape(shape))
        if rule == "split":
            vals = vals + f(-s * x.reshape(shape))
        return jnp.sum(w.reshape(shape) * vals, axis=-1)

    return run(q, _const(x), _const(w))


def gaussian_expectation_2d(
    f: Callable[[jax.Array, jax.Array], jax.Array],
    q: Any,
    c: Any,
    num_2d: tuple[int, int] = DEFAULT_NUM_2D,
) -> jax.Array:
    """``E f(u1, u2)`` with ``u1 = sqrt(q) z1``, ``u2 = sqrt(q) (c z1 + sqrt(1 - c^2) z2)``.

    ``(u1, u2)`` is a centred Gaussian pair with variances ``q`` and correlation ``c``. The rule is
    polar: four arcs cut where ``u1 = 0`` or ``u2 = 0`` (Gauss-Legendre on each) times a Gauss rule
    for the radial weight ``r exp(-r^2/2)``, so products of ReLU-type functions (breaks at 0) are
    integrated exactly and smooth ones spectrally (error < 1e-9 for erf at q <= 10 by default).

    Args:
      f: an elementwise function of two arrays.
      q: variance (>= 0), c: correlation in [-1, 1]; they broadcast.
      num_2d: (radial nodes, angular nodes per arc).

    Returns:
      An array of the broadcast shape of ``q`` and ``c``.
    """
    num_2d = _check_num_2d(num_2d)
    _check_range("q", q, lo=0.0)
    _check_c("c", c)
    return jax.jit(jnp.vectorize(lambda q_, c_: _e2(f, q_, c_, num_2d)))(_f(q), _f(c))


# ----------------------------------------------------------------------------------------------
# Mean-field maps (scalar cores; the public functions vectorize them)
# ----------------------------------------------------------------------------------------------


def _vmap_q(q, sw, sb, act, num):
    """V(q) = sigma_w2 E[phi(sqrt(q) z)^2] + sigma_b2."""
    return sw * _e1(lambda u: act(u) ** 2, q, num) + sb


def _vmap_slope(q, sw, act, num):
    """dV/dq = sigma_w2 E[phi(u) phi'(u) z] / sqrt(q) (= sigma_w2 E[phi'^2 + phi phi''], Stein)."""
    s = jnp.sqrt(q)
    d = _d1(act)
    return sw * _e1z(lambda z: act(s * z) * d(s * z) * z, num) / s


def _chi(q, sw, act, num):
    d = _d1(act)
    return sw * _e1(lambda u: d(u) ** 2, _clamp_q(q), num)


def _cmap(c, q, sw, sb, act, num, num_2d):
    cov = sw * _e2(lambda a, b: act(a) * act(b), q, c, num_2d) + sb
    var = _vmap_q(q, sw, sb, act, num)
    return jnp.where(var > _Q_TINY, jnp.clip(cov / jnp.where(var > _Q_TINY, var, 1.0), -1, 1), c)


def _cmap_slope(c, q, sw, sb, act, num, num_2d):
    """dC/dc = sigma_w2 q E[phi'(u1) phi'(u2)] / V(q) (Price's theorem); chi_c at q = q*."""
    d = _d1(act)
    var = _vmap_q(q, sw, sb, act, num)
    return sw * q * _e2(lambda a, b: d(a) * d(b), q, c, num_2d) / jnp.maximum(var, _Q_TINY)


def _step_q(q, sw, sb, act, num):
    qn = _vmap_q(q, sw, sb, act, num)
    return jnp.where(jnp.isinf(q) | jnp.isnan(qn), jnp.inf, qn)


def _fixed_q(sw, sb, q0, act, num, iterations):
    q, _ = lax.scan(lambda q, _: (_step_q(q, sw, sb, act, num), None), q0, None, length=iterations)

    def newton(q, _):
        usable = jnp.isfinite(q) & (q > _Q_TINY)
        q_safe = jnp.where(usable, q, 1.0)
        g = _vmap_q(q_safe, sw, sb, act, num) - q_safe
        slope = _vmap_slope(q_safe, sw, act, num)
        step = g / jnp.where(slope < 1, 1 - slope, 1.0)
        q_new = jnp.maximum(q_safe + step, q_safe / 16)  # stay positive
        q_new = jnp.where(jnp.isfinite(q_new), q_new, q_safe)
        g_new = _vmap_q(q_new, sw, sb, act, num) - q_new
        # accept only a sufficient decrease of |V(q) - q|: near-marginal divergent maps (V(q) - q
        # tending to a positive constant) would otherwise be pushed to huge q whose *relative*
        # residual looks converged
        ok = usable & (slope < 1) & (jnp.abs(g_new) < 0.9 * jnp.abs(g))
        return jnp.where(ok, q_new, q), None

    q, _ = lax.scan(newton, q, None, length=_NEWTON_STEPS)
    finite_q = jnp.where(jnp.isfinite(q), q, 1.0)
    g = _vmap_q(finite_q, sw, sb, act, num) - finite_q
    slope = _vmap_slope(jnp.maximum(finite_q, _Q_TINY), sw, act, num)
    diverging = (
        ~jnp.isfinite(q) | (g > _RTOL * q) | ((g > _MARGINAL * q) & (slope > 1 + _MARGINAL))
    )
    q = jnp.where(diverging, jnp.inf, q)
    return jnp.where(q < _Q_ZERO, 0.0, q)


def _fixed_c(sw, sb, q_star, c0, act, num, num_2d, iterations):
    q = _clamp_q(q_star)
    c, _ = lax.scan(
        lambda c, _: (_cmap(c, q, sw, sb, act, num, num_2d), None), c0, None, length=iterations
    )

    def newton(c, _):
        g = _cmap(c, q, sw, sb, act, num, num_2d) - c
        slope = _cmap_slope(c, q, sw, sb, act, num, num_2d)
        ok = slope < 1
        step = g / jnp.where(ok, 1 - slope, 1.0)
        return jnp.where(ok & jnp.isfinite(step), jnp.clip(c + step, -1.0, 1.0), c), None

    c, _ = lax.scan(newton, c, None, length=_NEWTON_STEPS // 2)
    # q* = 0: the correlation map is the identity to leading order (c* undefined); report the
    # ordered-phase value 1, where chi_c = chi_1.
    return jnp.where(q_star == 0, 1.0, c)


@functools.partial(jax.jit, static_argnames=("act", "num"))
def _variance_map_jit(q, sw, sb, act, num):
    return jnp.vectorize(lambda q_, sw_, sb_: _vmap_q(q_, sw_, sb_, act, num))(q, sw, sb)


def variance_map(
    q: Any, sigma_w2: Any, sigma_b2: Any, activation: Any, *, num: int = DEFAULT_NUM
) -> jax.Array:
    """The length map ``V(q) = sigma_w2 * E[phi(sqrt(q) z)^2] + sigma_b2``, z ~ N(0, 1).

    ``V(q^{l-1}) = q^l``: the pre-activation second moment of the next layer (Poole et al. 2016,
    eq. 3; https://arxiv.org/abs/1606.05340).

    Args:
      q: current pre-activation second moment (> 0); sigma_w2, sigma_b2 (>= 0). They broadcast.
      activation: spec string or Activation (static).
      num: 1-d quadrature points.

    Returns:
      ``V(q)``, of the broadcast shape.

    Raises:
      ValueError: for q <= 0, negative variances, an unknown activation or an odd ``num``.
    """
    static = _checked(activation, num, q={"q": q}, sigmas=(sigma_w2, sigma_b2))
    return _variance_map_jit(*_floats(q, sigma_w2, sigma_b2), **static)


@functools.partial(jax.jit, static_argnames=("act", "depth", "num"))
def _variance_iterates_jit(q0, sw, sb, act, depth, num):
    def one(q0_, sw_, sb_):
        q1 = sw_ * q0_ + sb_

        def step(q, _):
            qn = _step_q(q, sw_, sb_, act, num)
            return qn, qn

        _, rest = lax.scan(step, q1, None, length=depth - 1)
        return jnp.concatenate([q1[None], rest])

    return jnp.vectorize(one, signature="(),(),()->(d)")(q0, sw, sb)


def variance_iterates(
    q0_input: Any,
    sigma_w2: Any,
    sigma_b2: Any,
    activation: Any,
    depth: int,
    *,
    num: int = DEFAULT_NUM,
) -> jax.Array:
    """``q^1..q^depth`` of a network fed inputs of mean square ``q0_input``.

    ``q^1 = sigma_w2 q0_input + sigma_b2`` (the first layer sees the raw input, no activation) and
    ``q^l = V(q^{l-1})`` for ``l >= 2`` (:func:`variance_map`), by ``lax.scan``. A sequence that
    overflows stays ``inf``.

    Args:
      q0_input: mean square of the raw input coordinates (> 0).
      sigma_w2, sigma_b2: weight and bias variances (>= 0); the three broadcast.
      activation: spec string or Activation (static).
      depth: number of layers L (>= 1, static).

    Returns:
      Array ``(..., depth)``; index ``l - 1`` holds ``q^l`` (layer axis as in the engine).
    """
    static = _checked(
        activation, num, depth=depth, q={"q0_input": q0_input}, sigmas=(sigma_w2, sigma_b2)
    )
    return _variance_iterates_jit(*_floats(q0_input, sigma_w2, sigma_b2), **static)


@functools.partial(jax.jit, static_argnames=("act", "num", "iterations"))
def _fixed_point_q_jit(sw, sb, q0, act, num, iterations):
    return jnp.vectorize(lambda a, b, c: _fixed_q(a, b, c, act, num, iterations))(sw, sb, q0)


def fixed_point_q(
    sigma_w2: Any,
    sigma_b2: Any,
    activation: Any,
    *,
    q_init: Any = 1.0,
    iterations: int = DEFAULT_ITERATIONS,
    num: int = DEFAULT_NUM,
) -> jax.Array:
    """The fixed point ``q* = V(q*)`` that the length map reaches from ``q_init``.

    Method: ``iterations`` steps of ``q <- V(q)`` (which selects the stable fixed point whose basin
    holds ``q_init``), then 64 safeguarded Newton steps on ``V(q) - q`` with
    ``V'(q) = sigma_w2 E[phi(u) phi'(u) z] / sqrt(q)``, taken only where ``V' < 1`` (a stable
    point), never shrinking q by more than 16x, and kept only if they cut ``|V(q) - q|`` by 10%. Newton converges quadratically at a simple fixed
    point and linearly (halving) at the marginal one of criticality, e.g. tanh with
    ``sigma_w2 = 1, sigma_b2 = 0``, where plain iteration creeps as ``1 / (2 l)``.

    Special values (never NaN):
      * ``inf`` where the map diverges: the iterate overflowed, or its residual ``V(q) - q`` is
        still above ``1e-4 q``, or it grows at a marginal point (``V(q) > q`` with
        ``V'(q) > 1``), e.g. ReLU with ``sigma_w2 > 2`` (or ``= 2`` with ``sigma_b2 > 0``). A growth
        below ``1e-5`` per layer is indistinguishable from marginal and counts as a fixed point.
      * ``0`` where the iterate falls below ``1e-20``: the fixed point at the origin, e.g. tanh or
        ReLU with ``sigma_b2 = 0`` in the ordered phase (``sigma_w2 < 1`` resp. ``< 2``).
      * ReLU with ``sigma_w2 = 2, sigma_b2 = 0`` has every q fixed and returns ``q_init``.

    Where the map has several attractors the answer depends on ``q_init``: e.g. GELU and SiLU with
    ``sigma_b2 = 0`` and ``2 < sigma_w2 < 4`` keep both ``q = 0`` and ``q = inf``. A divergence
    slower than geometric whose per-layer growth ``V(q) - q`` stays below ``1e-4 q`` after the
    iterations (e.g. softplus near ``sigma_w2 = 2``) cannot be told from convergence in finite
    precision.

    Args:
      sigma_w2, sigma_b2: variances (>= 0), broadcasting.
      activation: spec string or Activation (static).
      q_init: starting point (> 0).
      iterations: plain iterations before the Newton polish (static).

    Returns:
      ``q*`` of the broadcast shape.

    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340 (Fig. 1).
    """
    static = _checked(
        activation, num, iterations=iterations, q={"q_init": q_init}, sigmas=(sigma_w2, sigma_b2)
    )
    return _fixed_point_q_jit(*_floats(sigma_w2, sigma_b2, q_init), **static)


@functools.partial(jax.jit, static_argnames=("act", "num", "num_2d"))
def _correlation_map_jit(c, q, sw, sb, act, num, num_2d):
    return jnp.vectorize(lambda *a: _cmap(*a, act, num, num_2d))(c, q, sw, sb)


def correlation_map(
    c: Any,
    q: Any,
    sigma_w2: Any,
    sigma_b2: Any,
    activation: Any,
    *,
    num: int = DEFAULT_NUM,
    num_2d: tuple[int, int] = DEFAULT_NUM_2D,
) -> jax.Array:
    """The correlation map ``c -> (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / V(q)``.

    ``u1 = sqrt(q) z1``, ``u2 = sqrt(q) (c z1 + sqrt(1 - c^2) z2)``: two inputs whose
    pre-activations have second moment ``q`` and correlation ``c``; the result is the correlation
    of the next layer's pre-activations. At ``q = q*`` the denominator ``V(q*) = q*`` and this is
    Poole et al.'s map (eq. 5, dividing by ``q*``); elsewhere dividing by ``V(q)`` keeps it the
    exact correlation at finite depth. Where ``V(q)`` is 0 (no signal) ``c`` is returned
    unchanged. Not differentiable in ``c`` at ``|c| = 1``.

    Args:
      c: correlation in [-1, 1]; q: second moment (> 0); sigma_w2, sigma_b2 (>= 0). Broadcasting.
      activation: spec string or Activation (static).
      num, num_2d: 1-d and 2-d quadrature sizes.

    Returns:
      The next layer's correlation, of the broadcast shape.

    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340.
    """
    static = _checked(
        activation, num, num_2d=num_2d, c={"c": c}, q={"q": q}, sigmas=(sigma_w2, sigma_b2)
    )
    return _correlation_map_jit(*_floats(c, q, sigma_w2, sigma_b2), **static)


@functools.partial(jax.jit, static_argnames=("act", "depth", "num", "num_2d"))
def _correlation_iterates_jit(c0, q0, sw, sb, act, depth, num, num_2d):
    def one(c0_, q0_, sw_, sb_):
        q1 = sw_ * q0_ + sb_
        c1 = jnp.where(q1 > 0, (sw_ * c0_ * q0_ + sb_) / jnp.where(q1 > 0, q1, 1.0), c0_)

        def step(carry, _):
            q, c = carry
            cn = _cmap(c, _clamp_q(q), sw_, sb_, act, num, num_2d)
            return (_step_q(q, sw_, sb_, act, num), cn), cn

        _, rest = lax.scan(step, (q1, c1), None, length=depth - 1)
        return jnp.concatenate([c1[None], rest])

    return jnp.vectorize(one, signature="(),(),(),()->(d)")(c0, q0, sw, sb)


def correlation_iterates(
    c0: Any,
    q0_input: Any,
    sigma_w2: Any,
    sigma_b2: Any,
    activation: Any,
    depth: int,
    *,
    num: int = DEFAULT_NUM,
    num_2d: tuple[int, int] = DEFAULT_NUM_2D,
) -> jax.Array:
    """``c^1..c^depth``: the correlation of two inputs' pre-activations, layer by layer.

    The two raw inputs both have mean square ``q0_input`` and cosine similarity ``c0``. The first
    layer is linear in them: ``c^1 = (sigma_w2 c0 q0 + sigma_b2) / (sigma_w2 q0 + sigma_b2)``; then
    ``c^l = C(c^{l-1}; q^{l-1})`` (:func:`correlation_map`) along the :func:`variance_iterates`.

    Returns:
      Array ``(..., depth)``; index ``l - 1`` holds ``c^l``.
    """
    static = _checked(
        activation,
        num,
        num_2d=num_2d,
        depth=depth,
        c={"c0": c0},
        q={"q0_input": q0_input},
        sigmas=(sigma_w2, sigma_b2),
    )
    return _correlation_iterates_jit(*_floats(c0, q0_input, sigma_w2, sigma_b2), **static)


class DepthScales(NamedTuple):
    """Mean-field depth scales at the fixed point (Schoenholz et al. 2017); all of one shape."""

    q_star: jax.Array  # fixed point of the length map (0 or inf where it collapses / diverges)
    c_star: jax.Array  # fixed point of the correlation map at q*
    chi_1: jax.Array  # sigma_w2 E[phi'(sqrt(q*) z)^2]: per-layer gradient variance factor
    chi_c: jax.Array  # sigma_w2 E[phi'(u1) phi'(u2)] at c*: slope of the correlation map
    xi_q: jax.Array  # 1 / |log V'(q*)|: depth over which q approaches q*
    xi_c: jax.Array  # 1 / |log chi_c|: depth over which c approaches c*; inf at criticality


def _scales(sw, sb, q0, c0, act, num, num_2d, iterations):
    q_star = _fixed_q(sw, sb, q0, act, num, iterations)
    c_star = _fixed_c(sw, sb, q_star, c0, act, num, num_2d, iterations)
    q = _clamp_q(q_star)
    chi1 = _chi(q, sw, act, num)
    d = _d1(act)
    d2 = _d1(d)
    slope_q = chi1 + sw * _e1(lambda u: d2(u) * act(u), q, num)
    chic = sw * _e2(lambda a, b: d(a) * d(b), q, c_star, num_2d)

    def xi(x):
        lg = jnp.abs(jnp.log(x))
        return jnp.where(lg > 0, 1 / jnp.where(lg > 0, lg, 1.0), jnp.inf)

    return DepthScales(q_star, c_star, chi1, chic, xi(slope_q), xi(chic))


@functools.partial(jax.jit, static_argnames=("act", "num", "num_2d", "iterations"))
def _depth_scales_jit(sw, sb, q0, c0, act, num, num_2d, iterations):
    fn = jnp.vectorize(lambda a, b, c, e: tuple(_scales(a, b, c, e, act, num, num_2d, iterations)))
    return DepthScales(*fn(sw, sb, q0, c0))


def _checked_fixed_point(activation, num, num_2d, iterations, sigma_w2, sigma_b2, q_init, c_init):
    """The checks shared by :func:`fixed_point_c` and :func:`depth_scales` (the same arguments)."""
    return _checked(
        activation,
        num,
        num_2d=num_2d,
        iterations=iterations,
        c={"c_init": c_init},
        q={"q_init": q_init},
        sigmas=(sigma_w2, sigma_b2),
    )


@functools.partial(jax.jit, static_argnames=("act", "num", "num_2d", "iterations"))
def _fixed_point_c_jit(sw, sb, q0, c0, act, num, num_2d, iterations):
    def one(a, b, q0_, c0_):
        q_star = _fixed_q(a, b, q0_, act, num, iterations)
        return _fixed_c(a, b, q_star, c0_, act, num, num_2d, iterations)

    return jnp.vectorize(one)(sw, sb, q0, c0)


def fixed_point_c(
    sigma_w2: Any,
    sigma_b2: Any,
    activation: Any,
    *,
    c_init: Any = 0.5,
    q_init: Any = 1.0,
    iterations: int = DEFAULT_ITERATIONS,
    num: int = DEFAULT_NUM,
    num_2d: tuple[int, int] = DEFAULT_NUM_2D,
) -> jax.Array:
    """The fixed point ``c*`` of :func:`correlation_map` at ``q = q*`` reached from ``c_init``.

    Iteration then Newton on ``C(c) - c`` with slope ``C'(c) = sigma_w2 E[phi'(u1) phi'(u2)]``
    (Price's theorem), clipped to [-1, 1]. In the ordered phase ``c* = 1``; in the chaotic phase
    ``c* < 1`` (``c = 1`` is then unstable, so start below it). Where ``q* = 0`` the map is the
    identity to leading order and ``c* = 1`` is reported; where ``q* = inf`` the map is evaluated at
    ``q = 1e20`` (its large-q limit).

    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340; Schoenholz et al. 2017,
      https://arxiv.org/abs/1611.01232.
    """
    values = (sigma_w2, sigma_b2, q_init, c_init)
    static = _checked_fixed_point(activation, num, num_2d, iterations, *values)
    return _fixed_point_c_jit(*_floats(*values), **static)


def depth_scales(
    sigma_w2: Any,
    sigma_b2: Any,
    activation: Any,
    *,
    q_init: Any = 1.0,
    c_init: Any = 0.5,
    iterations: int = DEFAULT_ITERATIONS,
    num: int = DEFAULT_NUM,
    num_2d: tuple[int, int] = DEFAULT_NUM_2D,
) -> DepthScales:
    """``q*``, ``c*``, ``chi_1``, ``chi_c`` and the depth scales ``xi_q``, ``xi_c``.

    Formulas (Schoenholz et al. 2017, eqs. 6-9; https://arxiv.org/abs/1611.01232), with
    ``u = sqrt(q*) z`` and ``(u1, u2)`` correlated at ``c*``::

        chi_1  = sigma_w2 E[phi'(u)^2]
        xi_q^-1 = -log(chi_1 + sigma_w2 E[phi''(u) phi(u)])      (= -log V'(q*))
        chi_c  = sigma_w2 E[phi'(u1) phi'(u2)]
        xi_c^-1 = -log(chi_c)

    ``chi_1 < 1``: ordered phase; ``> 1``: chaotic; ``= 1``: critical, where ``xi_c`` diverges. This
    returns ``xi = 1 / |log x|`` (``inf`` at ``x = 1``), which is the paper's ``-1 / log x`` at a
    stable fixed point (``x < 1``) and the e-folding depth of the departure from an unstable one
    (``x > 1``). ``phi'`` and ``phi''`` come from forward-mode autodiff; at the kink of ReLU-type
    activations ``phi'' phi`` vanishes because ``phi(0) = 0``. Where ``q* = 0`` the derivatives are
    taken at ``q = 1e-30`` (the q -> 0+ limit, so ReLU's ``chi_1`` is ``sigma_w2 / 2``, not 0);
    where ``q* = inf`` at ``q = 1e20``.

    Args:
      sigma_w2, sigma_b2: variances (>= 0), broadcasting.
      activation: spec string or Activation (static).
      q_init, c_init: starting points of the fixed-point searches.

    Returns:
      A :class:`DepthScales` of arrays of the broadcast shape.
    """
    values = (sigma_w2, sigma_b2, q_init, c_init)
    static = _checked_fixed_point(activation, num, num_2d, iterations, *values)
    return _depth_scales_jit(*_floats(*values), **static)


@functools.partial(jax.jit, static_argnames=("act", "num", "iterations"))
def _chi_1_jit(sw, sb, q0, act, num, iterations):
    def one(a, b, c):
        return _chi(_fixed_q(a, b, c, act, num, iterations), a, act, num)

    return jnp.vectorize(one)(sw, sb, q0)


def chi_1(
    sigma_w2: Any,
    sigma_b2: Any,
    activation: Any,
    *,
    q_init: Any = 1.0,
    iterations: int = DEFAULT_ITERATIONS,
    num: int = DEFAULT_NUM,
) -> jax.Array:
    """``chi_1 = sigma_w2 E[phi'(sqrt(q*) z)^2]``: the per-layer factor of back-propagated gradient
    variance (and the slope of the correlation map at ``c = 1``).

    ``q*`` from :func:`fixed_point_q`; at ``q* = 0`` the ``q -> 0+`` limit, at ``q* = inf`` the
    value at ``q = 1e20``. ``chi_1 = 1`` defines the critical line (order-to-chaos transition).

    References:
      Poole et al. 2016, https://arxiv.org/abs/1606.05340; Schoenholz et al. 2017,
      https://arxiv.org/abs/1611.01232.
    """
    static = _checked(
        activation, num, iterations=iterations, q={"q_init": q_init}, sigmas=(sigma_w2, sigma_b2)
    )
    return _chi_1_jit(*_floats(sigma_w2, sigma_b2, q_init), **static)


def gradient_scale(
    sigma_w2: Any,
    sigma_b2: Any,
    activation: Any,
    depth: int,
    *,
    q_init: Any = 1.0,
    iterations: int = DEFAULT_ITERATIONS,
    num: int = DEFAULT_NUM,
) -> jax.Array:
    """``chi_1 ** depth``: the predicted ratio of back-propagated gradient variance across
    ``depth`` layers of a network whose pre-activations sit at ``q*``.

    ``E[(d L / d h^l)^2] = chi_1 E[(d L / d h^{l+1})^2]`` at the fixed point (Schoenholz et al.
    2017, eq. 11). For a network fed inputs far from ``q*`` use :func:`gradient_factors`.
    """
    depth = check_int("depth", depth, minimum=1)
    chi = chi_1(sigma_w2, sigma_b2, activation, q_init=q_init, iterations=iterations, num=num)
    return chi**depth


@functools.partial(jax.jit, static_argnames=("act", "depth", "num"))
def _gradient_factors_jit(q0, sw, sb, act, depth, num):
    qs = _variance_iterates_jit(q0, sw, sb, act=act, depth=depth, num=num)
    return jnp.vectorize(lambda q, s: _chi(q, s, act, num))(qs, sw[..., None])


def gradient_factors(
    q0_input: Any,
    sigma_w2: Any,
    sigma_b2: Any,
    activation: Any,
    depth: int,
    *,
    num: int = DEFAULT_NUM,
) -> jax.Array:
    """Per-layer gradient factors ``sigma_w2 E[phi'(sqrt(q^l) z)^2]`` along the iterates ``q^l``.

    With ``delta^l = dL / dh^l`` and back-propagation
    ``delta^l = phi'(h^l) * (W^{l+1 T} delta^{l+1})``, gradient independence gives
    ``E[(delta^l)^2] = factor_l * E[(delta^{l+1})^2]`` with
    ``factor_l = sigma_w2 E[phi'(h^l)^2]`` (equal widths). Unlike ``chi_1`` this uses the actual
    ``q^l`` (:func:`variance_iterates`) of a network fed inputs of mean square ``q0_input``, so it
    is what a finite-depth measurement should be compared with. The squared singular values of
    the input-output Jacobian ``prod_l D_l W_l`` have mean ``prod_l factor_l`` (see the tests).

    Returns:
      Array ``(..., depth)``; index ``l - 1`` holds ``factor_l``. ``cumprod`` from the top gives the
      gradient variance of each layer relative to the last one.
    """
    static = _checked(
        activation, num, depth=depth, q={"q0_input": q0_input}, sigmas=(sigma_w2, sigma_b2)
    )
    q0, sw, sb = jnp.broadcast_arrays(*_floats(q0_input, sigma_w2, sigma_b2))
    return _gradient_factors_jit(q0, sw, sb, **static)


@functools.partial(jax.jit, static_argnames=("act", "num", "iterations", "steps"))
def _critical_line_jit(sb, hi, act, num, iterations, steps):
    one = jnp.asarray(1.0, sb.dtype)

    def chi_minus_1(sw, sb_):
        return _chi(_fixed_q(sw, sb_, one, act, num, iterations), sw, act, num) - 1

    def solve(sb_, hi_):
        def body(_, bracket):
            lo, up = bracket
            mid = (lo + up) / 2
            above = chi_minus_1(mid, sb_) > 0
            return jnp.where(above, lo, mid), jnp.where(above, mid, up)

        lo, up = lax.fori_loop(0, steps, body, (jnp.zeros_like(hi_), hi_))
        found = chi_minus_1(hi_, sb_) > 0
        return jnp.where(found, (lo + up) / 2, jnp.nan)

    return jnp.vectorize(solve)(sb, hi)


def critical_line(
    sigma_b2: Any,
    activation: Any,
    *,
    sigma_w2_max: float = 64.0,
    steps: int = 48,
    iterations: int = DEFAULT_ITERATIONS,
    num: int = DEFAULT_NUM,
) -> jax.Array:
    """``sigma_w2`` with ``chi_1(sigma_w2, sigma_b2) = 1`` for each ``sigma_b2``: the edge of chaos.

    Bisection on ``[0, sigma_w2_max]`` (``steps`` halvings; ``chi_1(0) = 0 < 1``) with ``q*`` from
    :func:`fixed_point_q` at every step; vmappable and jittable. NaN where ``chi_1`` stays below 1
    on the whole bracket. tanh: exactly 1 at ``sigma_b2 = 0``; ReLU: 2 for every ``sigma_b2``.

    References:
      Poole et al. 2016 (Fig. 1), Schoenholz et al. 2017 (Fig. 1).
    """
    static = _checked(activation, num, iterations=iterations)
    steps = check_int("steps", steps, minimum=1)
    check_float("sigma_w2_max", sigma_w2_max, minimum=0.0, strict_minimum=True)
    _check_range("sigma_b2", sigma_b2, lo=0.0)
    sb = _f(sigma_b2)
    hi = jnp.full_like(sb, sigma_w2_max)
    return _critical_line_jit(sb, hi, steps=steps, **static)


def preserving_sigma_w2(activation: Any, q: Any = 1.0, *, num: int = DEFAULT_NUM) -> jax.Array:
    """``sigma_w2 = q / E[phi(sqrt(q) z)^2]``: the weight variance that keeps ``q`` fixed.

    With ``sigma_b2 = 0``, one step of :func:`variance_map` then maps ``q`` to itself.

    ReLU: 2 (He et al. 2015); linear: 1; tanh at ``q = 1``: 2.5366 (its square root, 1.5927, is the
    matching gain on the std); SELU at ``q = 1``: 1 (Klambauer et al. 2017).

    Raises:
      ValueError: for q <= 0 or an unknown activation.
    """
    static = _checked(activation, num, q={"q": q})
    act, q = static["act"], _f(q)
    return q / gaussian_expectation(lambda u: act(u) ** 2, q, static["num"])


# ----------------------------------------------------------------------------------------------
# Closed forms
# ----------------------------------------------------------------------------------------------


def _closed_args(c, q, sigma_w2, sigma_b2):
    if c is not None:
        _check_c("c", c)
    _check_q("q", q)
    _check_sigmas(sigma_w2, sigma_b2)
    return (None if c is None else _f(c)), *_floats(q, sigma_w2, sigma_b2)


def _arccos_kernel(c: jax.Array) -> jax.Array:
    """E[relu(z1) relu(z2)] for unit Gaussians with correlation c (Cho & Saul 2009, degree 1)."""
    c = jnp.clip(c, -1.0, 1.0)
    return (jnp.sqrt(jnp.maximum(1 - c * c, 0.0)) + (jnp.pi - jnp.arccos(c)) * c) / (2 * jnp.pi)


def relu_variance_map(q: Any, sigma_w2: Any = 2.0, sigma_b2: Any = 0.0) -> jax.Array:
    """ReLU length map in closed form: ``E[relu(sqrt(q) z)^2] = q / 2``, so
    ``V(q) = sigma_w2 q / 2 + sigma_b2``."""
    _, q, sw, sb = _closed_args(None, q, sigma_w2, sigma_b2)
    return sw * q / 2 + sb


def relu_correlation_map(
    c: Any, q: Any = 1.0, sigma_w2: Any = 2.0, sigma_b2: Any = 0.0
) -> jax.Array:
    """ReLU correlation map from the arc-cosine kernel (Cho & Saul 2009).

    ``E[relu(u1) relu(u2)] = q (sqrt(1 - c^2) + (pi - arccos c) c) / (2 pi)``, hence
    ``C(c) = (sigma_w2 E[relu relu] + sigma_b2) / (sigma_w2 q / 2 + sigma_b2)``; with
    ``sigma_b2 = 0`` this is ``(sqrt(1 - c^2) + (pi - arccos c) c) / pi``, whatever q and sigma_w2.
    """
    c, q, sw, sb = _closed_args(c, q, sigma_w2, sigma_b2)
    return (sw * q * _arccos_kernel(c) + sb) / (sw * q / 2 + sb)


def leaky_relu_variance_map(
    q: Any, sigma_w2: Any = 2.0, sigma_b2: Any = 0.0, *, negative_slope: float = 0.01
) -> jax.Array:
    """Leaky ReLU (slope a): ``E[phi(sqrt(q) z)^2] = q (1 + a^2) / 2`` (He et al. 2015)."""
    a = check_float("negative_slope", negative_slope)
    _, q, sw, sb = _closed_args(None, q, sigma_w2, sigma_b2)
    return sw * q * (1 + a * a) / 2 + sb


def leaky_relu_correlation_map(
    c: Any, q: Any = 1.0, sigma_w2: Any = 2.0, sigma_b2: Any = 0.0, *, negative_slope: float = 0.01
) -> jax.Array:
    """Leaky ReLU correlation map.

    With ``phi(u) = relu(u) - a relu(-u)`` and ``k(c)`` the arc-cosine kernel of
    :func:`relu_correlation_map`, ``E[phi(u1) phi(u2)] = q ((1 + a^2) k(c) - 2 a k(-c))``.
    """
    a = check_float("negative_slope", negative_slope)
    c, q, sw, sb = _closed_args(c, q, sigma_w2, sigma_b2)
    cov = q * ((1 + a * a) * _arccos_kernel(c) - 2 * a * _arccos_kernel(-c))
    return (sw * cov + sb) / (sw * q * (1 + a * a) / 2 + sb)


def linear_variance_map(q: Any, sigma_w2: Any = 1.0, sigma_b2: Any = 0.0) -> jax.Array:
    """Identity activation: ``V(q) = sigma_w2 q + sigma_b2``."""
    _, q, sw, sb = _closed_args(None, q, sigma_w2, sigma_b2)
    return sw * q + sb


def linear_correlation_map(
    c: Any, q: Any = 1.0, sigma_w2: Any = 1.0, sigma_b2: Any = 0.0
) -> jax.Array:
    """Identity activation: ``C(c) = (sigma_w2 q c + sigma_b2) / (sigma_w2 q + sigma_b2)``."""
    c, q, sw, sb = _closed_args(c, q, sigma_w2, sigma_b2)
    return (sw * q * c + sb) / (sw * q + sb)


def _erf_cov(k12, k11, k22):
    """Williams 1997: E[erf(u1) erf(u2)] = (2/pi) arcsin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22)))."""
    return 2 / jnp.pi * jnp.arcsin(2 * k12 / jnp.sqrt((1 + 2 * k11) * (1 + 2 * k22)))


def erf_variance_map(q: Any, sigma_w2: Any = 1.0, sigma_b2: Any = 0.0) -> jax.Array:
    """erf: ``V(q) = sigma_w2 (2/pi) arcsin(2q / (1 + 2q)) + sigma_b2`` (Williams 1997)."""
    _, q, sw, sb = _closed_args(None, q, sigma_w2, sigma_b2)
    return sw * _erf_cov(q, q, q) + sb


def erf_correlation_map(
    c: Any, q: Any = 1.0, sigma_w2: Any = 1.0, sigma_b2: Any = 0.0
) -> jax.Array:
    """erf activation: ``C(c) = (sigma_w2 (2/pi) arcsin(2 q c / (1 + 2 q)) + sigma_b2) / V(q)``
    (Williams 1997, "Computing with infinite networks")."""
    c, q, sw, sb = _closed_args(c, q, sigma_w2, sigma_b2)
    return (sw * _erf_cov(q * c, q, q) + sb) / (sw * _erf_cov(q, q, q) + sb)


def _recursion_args(variances, fan_ins):
    v = np.atleast_1d(np.asarray(variances, dtype=np.float64))
    n = np.atleast_1d(np.asarray(fan_ins, dtype=np.float64))
    if v.ndim != 1 or n.ndim != 1 or v.size == 0 or v.shape != n.shape:
        raise ValueError(
            f"variances and fan_ins must be 1-d sequences of equal length (one per layer), got "
            f"shapes {v.shape} and {n.shape}"
        )
    if np.any(~np.isfinite(v)) or np.any(v < 0):
        raise ValueError(f"variances must be finite and >= 0, got {v.tolist()}")
    if np.any(n < 1) or np.any(n != np.round(n)):
        raise ValueError(f"fan_ins must be positive integers, got {n.tolist()}")
    return v, n


# The factor E[phi(u)^2] / q (He: exact for these piecewise-linear activations) or phi'(0)^2
# (Glorot: the linear regime), as a function of the activation's parameters.
_HE = {"relu": lambda p: 0.5, "leaky_relu": lambda p: (1 + p["negative_slope"] ** 2) / 2,
       "prelu": lambda p: (1 + p["slope"] ** 2) / 2, "identity": lambda p: 1.0}
_GLOROT = {"identity": lambda p: 1.0, "tanh": lambda p: 1.0, "softsign": lambda p: 1.0,
           "erf": lambda p: 4 / math.pi}


def _linear_recursion(name, factor, other, variances, fan_ins, activation) -> np.ndarray:
    """``cumprod`` of ``n_l Var[w_l]``, times the activation's ``factor`` from layer 2 on."""
    act = _resolve(activation)
    if act.name not in factor:
        raise ValueError(f"{name} covers {', '.join(factor)}; got {act.spec!r} (see {other})")
    v, n = _recursion_args(variances, fan_ins)
    factors = n * v
    factors[1:] *= factor[act.name](act.kwargs)
    return np.cumprod(factors)


def he_recursion(
    variances: Sequence[float], fan_ins: Sequence[int], activation: Any = "relu"
) -> np.ndarray:
    """He et al. 2015's forward variance recursion: ``Var[h^l] / E[x_0^2]`` for each layer.

    Layer 1 acts on the raw input: ``Var[h^1] = n_1 Var[w_1] E[x_0^2]``. For ``l >= 2``,
    ``Var[h^l] = (1 + a^2) / 2 * n_l Var[w_l] Var[h^{l-1}]`` (eq. 10 for ReLU, ``a = 0``; the PReLU
    section for slope ``a``). It is the special case of :func:`variance_iterates` with
    ``sigma_w2 = n_l Var[w_l]`` and ``sigma_b2 = 0``, for which the ReLU-type map is linear in q.

    Args:
      variances: ``Var[w_l]`` per layer; fan_ins: ``n_l`` (inputs of layer l) per layer.
      activation: ``relu``, ``leaky_relu``, ``prelu`` or ``identity`` (spec or Activation).

    Returns:
      float64 array ``(L,)``: the cumulative product of the per-layer factors.

    References:
      He et al. 2015, "Delving Deep into Rectifiers", https://arxiv.org/abs/1502.01852.
    """
    return _linear_recursion("he_recursion", _HE, "glorot_recursion", variances, fan_ins,
                             activation)


def glorot_recursion(
    variances: Sequence[float], fan_ins: Sequence[int], activation: Any = "tanh"
) -> np.ndarray:
    """Glorot & Bengio 2010's linear-regime recursion: ``Var[h^l] / E[x_0^2]`` for each layer.

    Near 0 a symmetric activation with ``phi(0) = 0`` acts as ``phi'(0) u``, so
    ``Var[h^l] = n_l Var[w_l] phi'(0)^2 Var[h^{l-1}]`` (``phi'(0) = 1`` for tanh, softsign,
    identity; ``2 / sqrt(pi)`` for erf), and ``Var[h^1] = n_1 Var[w_1] E[x_0^2]``. It is the small-q
    limit of :func:`variance_iterates` with ``sigma_w2 = n_l Var[w_l]``, ``sigma_b2 = 0``; exact for
    the identity, an approximation elsewhere (tanh's map is below it: ``E[tanh(u)^2] < q``).

    References:
      Glorot & Bengio 2010, https://proceedings.mlr.press/v9/glorot10a.html (eqs. 5-10).
    """
    return _linear_recursion("glorot_recursion", _GLOROT, "he_recursion", variances, fan_ins,
                             activation)


# ----------------------------------------------------------------------------------------------
# Jacobian spectra
# ----------------------------------------------------------------------------------------------

# Unit-scale schemes (E[W^2] = 1 / width for a square kernel); a layer's kernel is
# sqrt(sigma_w2) times their draw, so sigma_w2 stays data (no recompilation per value).
_INITS = {"normal": _initializers.lecun_normal(), "orthogonal": _initializers.orthogonal()}


def _layer_weights(key, layer, width, sw, init):
    """Layer ``layer``'s ``(in, out)`` kernel (Flax's layout), from ``fold_in(key, layer)``."""
    unit = _INITS[init](jax.random.fold_in(key, layer), (width, width), _fdtype())
    return jnp.sqrt(sw) * unit


@functools.partial(jax.jit, static_argnames=("act", "init", "width", "depths"))
def _jacobian_svals(key, sw, sb, q0, act, init, width, depths):
    k_in, k_w, k_b = jax.random.split(key, 3)
    x = jnp.sqrt(q0) * jax.random.normal(k_in, (width,), dtype=_fdtype())
    # jac[i, j] = d x^l_j / d x^0_i: the transpose of J, in the row-vector convention of
    # h = x W (same singular values)
    jac = jnp.eye(width, dtype=_fdtype())
    d = _d1(act)

    def layer(carry, l):
        x, jac = carry
        w = _layer_weights(k_w, l, width, sw, init)
        b = jnp.sqrt(sb) * jax.random.normal(jax.random.fold_in(k_b, l), (width,), dtype=_fdtype())
        h = x @ w + b
        return (act(h), (jac @ w) * d(h)[None, :]), None

    out, start = [], 0
    for depth in depths:
        (x, jac), _ = lax.scan(layer, (x, jac), jnp.arange(start, depth))
        out.append(jnp.linalg.svd(jac, compute_uv=False))
        start = depth
    return tuple(out)


def jacobian_singular_values(
    key: jax.Array,
    depth: int,
    width: int,
    *,
    init: str = "normal",
    activation: Any = "linear",
    sigma_w2: float = 1.0,
    sigma_b2: float = 0.0,
    input_variance: float = 1.0,
    depths: Sequence[int] | None = None,
) -> jax.Array | dict[int, jax.Array]:
    """Singular values of the input-output Jacobian ``dx^L / dx^0`` of a sampled net.

    One network of ``depth`` square layers ``h^l = x^{l-1} W^l + b^l``, ``x^l = phi(h^l)``, is
    drawn, with kernels ``W^l`` in Flax's ``(in, out)`` layout, and a single input
    ``x^0 ~ N(0, input_variance I)`` is pushed through; the Jacobian is
    ``J = D_L W_L^T ... D_1 W_1^T`` with ``D_l = diag(phi'(h^l))``.
    Weights are ``sqrt(sigma_w2)`` times a unit-scale :mod:`initjax.initializers` draw:
    ``"normal"``: ``lecun_normal()``, i.i.d. ``N(0, 1 / width)``; ``"orthogonal"``:
    ``orthogonal()``, a Haar-distributed orthogonal matrix. Biases ``N(0, sigma_b2)``. Layer ``l``
    draws from ``fold_in(key, l)``, so a network's first layers do not depend on its depth. ``J``
    is formed exactly (``width x width``).

    Linear Gaussian products have squared singular values with moments
    :func:`gaussian_product_moments` (mean 1, second moment ``L + 1``); orthogonal linear products
    are isometries, all singular values ``sigma_w2 ** (L / 2)`` (Saxe et al. 2014; dynamical
    isometry, Pennington et al. 2017).

    Args:
      key: a PRNG key, or an int seed (``jax.random.key(seed, impl="philox2x32")``).
      depth: number of layers (>= 1); width: layer width (>= 1).
      init: ``"normal"`` or ``"orthogonal"``.
      activation: spec string or Activation.
      sigma_w2, sigma_b2 (>= 0), input_variance (> 0).
      depths: if given, the depths (1..depth) at which to return the spectrum.

    Returns:
      The singular values (``(width,)``, descending), or a dict ``depth -> singular values``.

    References:
      Saxe et al. 2014, https://arxiv.org/abs/1312.6120; Pennington et al. 2017,
      https://arxiv.org/abs/1711.04735.
    """
    act = _resolve(activation)
    key = as_key(key)
    check_choice("init", init, tuple(_INITS))
    depth = check_int("depth", depth, minimum=1)
    width = check_int("width", width, minimum=1)
    _check_sigmas(sigma_w2, sigma_b2)
    _check_q("input_variance", input_variance)
    if depths is None:
        wanted = (depth,)
    else:
        wanted = tuple(sorted({check_int("depths[i]", d, minimum=1) for d in depths}))
        if not wanted or wanted[-1] > depth:
            raise ValueError(
                f"depths must be a non-empty list of ints in 1..{depth}, got {depths!r}"
            )
    with matmul_precision():  # float32-exact products on every backend (issue 13: 1.0004 on a GPU)
        svals = _jacobian_svals(key, _f(sigma_w2), _f(sigma_b2), _f(input_variance), act=act,
                                init=init, width=width, depths=wanted)
    if depths is None:
        return svals[0]
    return dict(zip(wanted, svals))


def gaussian_product_moments(depth: int, num_moments: int = 2) -> np.ndarray:
    """Moments ``E[s^(2k)]``, k = 1..num_moments, of the squared singular values of a product of
    ``depth`` i.i.d. ``N(0, 1/N)`` square matrices as N -> infinity.

    They are the Fuss-Catalan numbers ``binom((L + 1) k, k) / (L k + 1)``: mean 1, second moment
    ``L + 1``; ``L = 1`` gives the Catalan numbers 1, 2, 5, 14 (Marchenko-Pastur). Penson &
    Zyczkowski 2011, https://arxiv.org/abs/1103.3453.
    """
    depth = check_int("depth", depth, minimum=1)
    num_moments = check_int("num_moments", num_moments, minimum=1)
    return np.array(
        [math.comb((depth + 1) * k, k) / (depth * k + 1) for k in range(1, num_moments + 1)]
    )


# ----------------------------------------------------------------------------------------------
# Batch norm at initialization
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _sphere_rules(batch_size: int, n1: int, nr: int) -> tuple[np.ndarray, ...]:
    """Rules for one and two coordinates of y uniform on {y : sum y = 0, |y|^2 = B}.

    A coordinate is ``sqrt(B - 1) t`` with density of t proportional to (1 - t^2)^((B - 4) / 2) on
    [-1, 1]; a pair is ``sqrt(B - 1) (s1, rho s1 + sqrt(1 - rho^2) s2)``, ``rho = -1 / (B - 1)``,
    with (s1, s2) of density proportional to (1 - |s|^2)^((B - 5) / 2) on the unit disk
    (projections of the uniform measure on the (B - 2)-sphere of the (B - 1)-dim subspace).
    Substituting t = sin(psi) (r = sin(psi)) makes both weights smooth for every B >= 4, so a
    composite Gauss-Legendre discretization in psi is accurate.
    """
    m = batch_size - 3  # (1 - t^2)^((B-4)/2) dt = cos(psi)^(B-3) dpsi
    top = min(math.pi / 2, 12 * math.sqrt((2 * max(n1, nr) + 2) / m))
    psi, w = _composite_legendre(0.0, top, 200, 40)
    t, wt = _gauss_rule(np.sin(psi), w * np.cos(psi) ** m, n1)
    wt = wt / (2 * wt.sum())
    r, wr = _gauss_rule(np.sin(psi), w * np.sin(psi) * np.cos(psi) ** (m - 1), nr)
    return t, wt, r, wr / wr.sum()


def relu_batchnorm_gradient_rate(batch_size: int, negative_slope: float = 0.0) -> float:
    """Closed form of :func:`batchnorm_gradient_rate` for (leaky) ReLU with slope ``a``.

    For positively homogeneous ``phi`` the sphere expectations reduce to Gaussian orthant integrals
    (the direction of ``P z`` is independent of its length): with ``rho = -1 / (B - 1)``,
    ``p = 1/4 + arcsin(rho) / (2 pi)`` (both coordinates positive) and ``k`` the arc-cosine kernel,
    ``E1 = A1 = E3 = (1 + a^2) / 2``, ``E2 = (1 + a^2) p + 2 a (1/2 - p)``,
    ``A2 = E4 = (1 + a^2) k(rho) - 2 a k(-rho)``; then
    ``lambda = ((B - 1) E1 + E2 - A1 + A2) / ((A1 - A2) (B - 3))``. ``a = 1`` (linear) gives
    ``(B - 2) / (B - 3)``; ReLU tends to ``pi / (pi - 1)`` as ``B -> inf``.
    """
    b = check_int("batch_size", batch_size, minimum=2)
    a = check_float("negative_slope", negative_slope)
    if b == 2:
        return 0.0
    if b == 3:
        return math.inf

    def k(c):
        return (math.sqrt(1 - c * c) + (math.pi - math.acos(c)) * c) / (2 * math.pi)

    rho = -1 / (b - 1)
    p = 0.25 + math.asin(rho) / (2 * math.pi)
    e1 = a1 = (1 + a * a) / 2
    e2 = (1 + a * a) * p + 2 * a * (0.5 - p)
    a2 = (1 + a * a) * k(rho) - 2 * a * k(-rho)
    return ((b - 1) * e1 + e2 - a1 + a2) / ((a1 - a2) * (b - 3))


@functools.lru_cache(maxsize=None)
def _bn_nodes(batch_size: int, num: int, num_2d: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Nodes and weights (numpy): one coordinate (y, w1) and two coordinates (y1, y2, w2)."""
    b = batch_size
    t, wt, r, wr = _sphere_rules(b, num // 2, num_2d[0])
    scale = math.sqrt(b - 1)
    y = scale * t
    rho = -1.0 / (b - 1)
    g, wg = _legendre(num_2d[1])
    a = math.acos(rho)
    starts = np.array([math.pi / 2, math.pi / 2 + a, 3 * math.pi / 2, 3 * math.pi / 2 + a])
    lengths = np.array([a, math.pi - a, a, math.pi - a])
    theta = (starts[:, None] + lengths[:, None] * (g[None, :] + 1) / 2).ravel()
    wth = (lengths[:, None] * wg[None, :] / (4 * math.pi)).ravel()
    s1 = r[:, None] * np.cos(theta)[None, :]
    s2 = r[:, None] * np.sin(theta)[None, :]
    y1 = scale * s1
    y2 = scale * (rho * s1 + math.sqrt(1 - rho * rho) * s2)
    return y, wt, y1.ravel(), y2.ravel(), (wr[:, None] * wth[None, :]).ravel()


@functools.partial(jax.jit, static_argnames=("act",))
def _bn_moments(y, w1, y1, y2, w2, act):
    d = _d1(act)

    def one(f):
        return jnp.sum(w1 * (f(y) + f(-y)))

    def two(f):
        return jnp.sum(w2 * f(y1, y2))

    e1 = one(lambda u: d(u) ** 2)
    e3 = one(lambda u: (d(u) * u) ** 2)
    a1 = one(lambda u: act(u) ** 2)
    e2 = two(lambda u, v: d(u) * d(v))
    e4 = two(lambda u, v: d(u) * u * d(v) * v)
    a2 = two(lambda u, v: act(u) * act(v))
    return e1, e2, e3, e4, a1, a2


def batchnorm_gradient_rate(
    batch_size: int,
    activation: Any = "relu",
    *,
    num: int = DEFAULT_NUM,
    num_2d: tuple[int, int] = DEFAULT_NUM_2D,
) -> float:
    """Per-layer growth of the back-propagated squared gradient norm in a deep batch-normed net.

    Network: ``h^l = W^l x^{l-1}`` (no bias, ``W ~ N(0, sigma_w2 / N)``), batch norm over the batch
    of ``B`` examples in training mode (``gamma = 1, beta = 0, eps = 0``), then
    ``x^l = phi(BN(h^l))``. The result does not depend on ``sigma_w2`` (BN removes the scale).

    Derivation (infinite width, gradient independence: the setting of Yang et al. 2019).
    Let ``P = I - 11^T / B``. Per unit, ``h`` is a Gaussian B-vector with covariance
    ``sigma_w2 K``, ``K`` the previous layer's batch Gram matrix.

    1. Forward fixed point. If ``K = a I + b 11^T``, then ``P h`` is isotropic in the
       (B - 1)-dim subspace ``1^perp``, so ``y = BN(h)`` is uniform on the sphere
       ``S = {y in 1^perp : |y|^2 = B}`` and independent of ``|P h|^2 = sigma_w2 a chi^2_{B-1}``.
       The next Gram ``K* = E_S[phi(y) phi(y)^T]`` has the same form, with ``a = A1 - A2``,
       ``A1 = E[phi(y_1)^2]``, ``A2 = E[phi(y_1) phi(y_2)]``.
    2. Backward. The BN Jacobian is ``J = (P - y y^T / B) / sigma = Q / sigma``, ``Q`` the
       projector onto ``1^perp`` and ``y^perp`` (rank B - 2), ``sigma^2 = |P h|^2 / B``. The batch
       covariance of the gradient, ``G = sum_units g g^T``, obeys
       ``G^{l-1} = sigma_w2 E[J D G^l D J]`` with ``D = diag(phi'(y))``; since
       ``E[1 / chi^2_{B-1}] = 1 / (B - 3)``, ``G^{l-1} = B / (a (B - 3)) E_S[Q D G^l D Q]``.
    3. Rate. By permutation symmetry the leading eigenvector of this linear map is ``G = P``, so
       ``lambda = tr T(P) / (B - 1)``. Expanding the trace::

           lambda(B) = ((B - 1) E1 + E2 - E3 + E4) / ((A1 - A2) (B - 3))

       with ``E1 = E[phi'(y_1)^2]``, ``E2 = E[phi'(y_1) phi'(y_2)]``,
       ``E3 = E[(phi'(y_1) y_1)^2]``, ``E4 = E[phi'(y_1) y_1 phi'(y_2) y_2]``, y uniform on S.

    What is exact and what is assumed or computed: the reduction is exact in the mean-field
    limit once the forward Gram sits at the permutation-symmetric fixed point and the gradient
    has aligned with ``P``; that the network reaches this fixed point from a generic input batch
    is assumed (Yang et al. analyse it; the simulation in the tests reaches it within ~3 layers).
    The six sphere expectations are computed by deterministic quadrature on the exact 1- and
    2-coordinate marginals of the sphere (nothing is sampled); for (leaky) ReLU
    :func:`relu_batchnorm_gradient_rate` gives them in closed form and the two agree to float
    precision. The tests check both against a numpy simulation of wide BN networks (B = 4, 8,
    16; ReLU, tanh, linear) to within 1-2%.

    Special cases: ``B = 2``: the BN outputs are +-1 whatever the input, no gradient passes: 0.
    ``B = 3``: ``E[1 / chi^2_2]`` diverges: ``inf`` (with ``eps > 0`` finite but large).
    Values: linear ``(B - 2) / (B - 3)``; ReLU 3.0841 at B = 4, 1.5900 at B = 16, decreasing to
    ``pi / (pi - 1) = 1.4669`` as ``B -> inf``, the large-batch ReLU factor associated with Yang et
    al.'s result (the paper's own formula for finite B could not be consulted here).

    Args:
      batch_size: B (>= 2).
      activation: spec string or Activation (smooth except possibly at 0).
      num, num_2d: quadrature sizes on the sphere marginals.

    Returns:
      ``lambda(B)``: the limit with depth of ``E |dL/dx^{l-1}|^2 / E |dL/dx^l|^2``.

    Raises:
      ValueError: for ``batch_size < 2`` or an unknown activation.

    References:
      Yang et al. 2019, "A Mean Field Theory of Batch Normalization",
      https://arxiv.org/abs/1902.08129.
    """
    act = _resolve(activation)
    b = check_int("batch_size", batch_size, minimum=2)
    num, num_2d = _check_num(num), _check_num_2d(num_2d)
    if b == 2:
        return 0.0
    if b == 3:
        return math.inf
    nodes = (_const(v) for v in _bn_nodes(b, num, num_2d))
    e1, e2, e3, e4, a1, a2 = (float(v) for v in _bn_moments(*nodes, act=act))
    return ((b - 1) * e1 + e2 - e3 + e4) / ((a1 - a2) * (b - 3))


# ----------------------------------------------------------------------------------------------
# Prediction for an engine config: the same network, seen by the theory.
# ----------------------------------------------------------------------------------------------
class Prediction(NamedTuple):
    """Mean-field predictions per layer for a :class:`~initjax.config.NetworkConfig`.

    Every field is a float64 numpy array of shape ``(depth,)``, aligned with the engine's layer
    axis and named after the :class:`~initjax.engine.LayerStats` field it predicts.
    """

    preact_second_moment: np.ndarray  # q^l = E[(h^l)^2]
    out_second_moment: np.ndarray  # E[phi(h^l)^2]: the layer output's mean square
    cosine: np.ndarray  # c^l: correlation between two examples' pre-activations
    grad_preact_var: np.ndarray  # E[(dL/dh^l)^2] for an N(0, 1) output cotangent
    grad_act_var: np.ndarray  # E[(dL/dx^l)^2]
    sigma_w2: np.ndarray  # n_{l-1} E[W^2] of each layer's init
    sigma_b2: np.ndarray  # E[b^2] of each layer's bias init


def predict(config: Any, *, num: int = DEFAULT_NUM, num_2d: tuple[int, int] = DEFAULT_NUM_2D) -> Prediction:
    """The mean-field prediction for the network :func:`initjax.propagate` samples from ``config``.

    Per layer ``l`` with fan-in ``n_{l-1}`` and width ``n_l``: ``sigma_w2 = n_{l-1} E[W^2]`` and
    ``sigma_b2 = E[b^2]`` from the initializers' exact second moments, and

        q^1 = sigma_w2 v + sigma_b2,          q^l = sigma_w2 E[phi(sqrt(q^{l-1}) z)^2] + sigma_b2
        c^1 = (sigma_w2 c0 v + sigma_b2) / q^1,   c^l = correlation_map(c^{l-1}, q^{l-1})
        E[(dL/dx^L)^2] = 1,   E[(dL/dh^l)^2] = E[(dL/dx^l)^2] E[phi'(sqrt(q^l) z)^2],
        E[(dL/dx^{l-1})^2] = sigma_w2^l (n_l / n_{l-1}) E[(dL/dh^l)^2]

    (v = input_variance, c0 = input_correlation; the backward recursion assumes gradient
    independence, Schoenholz et al. 2017). Only the weights' second moment enters, so the
    prediction is the same for Gaussian, uniform and orthogonal weights of equal variance; for the
    latter two it is the large-width limit. Exact at infinite width; at width n the measured
    per-layer second moments fluctuate by O(1/sqrt(n)) around it.

    (:func:`initjax.theory.predict` sends any other network to
    :func:`initjax.theory.residual.predict_residual`.)

    Args:
      config: an :class:`~initjax.config.NetworkConfig`, or a plain
        :class:`~initjax.network.Network` (a stack of Dense layers), with ``norm="none"`` (for
        batch norm see :func:`batchnorm_gradient_rate`; ``predict_residual`` also takes plain
        stacks with layer, RMS or batch norm); or any other Network of Dense and Residual blocks.

    Raises:
      ValueError: for a normalized plain network, or an initializer whose second moment is unknown.
    """
    from initjax.config import as_config

    config = as_config(config)
    if config.norm != "none":
        raise ValueError(
            f"predict covers norm='none'; got norm={config.norm!r}. For batch norm's gradient rate "
            "see initjax.theory.batchnorm_gradient_rate"
        )
    act = config.activation
    moments = []
    for f in ("init", "bias_init"):
        if not hasattr(getattr(config, f), "second_moment"):
            raise ValueError(f"{f} is a user function: its second moment is unknown, so nothing can be predicted")
        moments.append(getattr(config, f).second_moment)
    w_moment, b_moment = moments
    widths = config.widths
    sw = np.array([widths[i] * w_moment(shape) for i, shape in enumerate(config.weight_shapes)])
    sb = np.array([b_moment((shape[1],)) for shape in config.weight_shapes])
    phi2 = lambda u: act(u) ** 2  # noqa: E731
    dphi = jax.vmap(jax.grad(lambda u: act(u)))
    dphi2 = lambda u: dphi(u.ravel()).reshape(u.shape) ** 2  # noqa: E731

    v, c0 = config.input_variance, config.input_correlation
    q = np.empty(config.depth)
    c = np.empty(config.depth)
    q[0] = sw[0] * v + sb[0]
    c[0] = (sw[0] * c0 * v + sb[0]) / q[0] if q[0] > 0 else 1.0
    for layer in range(1, config.depth):
        q[layer] = float(variance_map(q[layer - 1], sw[layer], sb[layer], act, num=num))
        if q[layer - 1] > 0 and q[layer] > 0:
            c[layer] = float(correlation_map(c[layer - 1], q[layer - 1], sw[layer], sb[layer], act, num=num, num_2d=num_2d))
        else:
            c[layer] = 1.0  # all examples at the origin: identical
    out2 = np.array([float(gaussian_expectation(phi2, qi, num)) for qi in q])
    dphi_sq = np.array([float(gaussian_expectation(dphi2, qi, num)) for qi in q])
    grad_x = np.empty(config.depth)
    grad_h = np.empty(config.depth)
    grad_x[-1] = 1.0
    for layer in range(config.depth - 1, -1, -1):
        grad_h[layer] = grad_x[layer] * dphi_sq[layer]
        if layer:
            grad_x[layer - 1] = sw[layer] * widths[layer + 1] / widths[layer] * grad_h[layer]
    return Prediction(q, out2, c, grad_h, grad_x, sw, sb)
