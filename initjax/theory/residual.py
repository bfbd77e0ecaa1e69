"""Mean-field theory of residual networks at initialization: what the block engine is compared with.

:func:`predict_residual` follows a :class:`~initjax.network.Network` made of
:class:`~initjax.network.Dense` and :class:`~initjax.network.Residual` blocks block by block, in the
infinite-width limit, per stream coordinate ``x_i`` and for two distinct examples ``a`` and ``b``:

    m = E[x_i(a)]            the mean (non-zero where a branch ends without weights, e.g. relu)
    q = E[x_i(a)^2]          the second moment
    c = E[x_i(a) x_i(b)]     the cross moment; cosine = c / q
    chi = E[(dL/dx_i)^2]     the gradient second moment for an N(0, 1) output cotangent

Layer maps (``sigma_w2 = n_in E[W^2]`` and ``E[b]``, ``E[b^2]`` from the initializers, exactly as
:func:`initjax.theory.meanfield.predict`; ``mu`` = the multiplier):

* weights ``h = mu x W + b``: ``m' = E[b]``, ``q' = mu^2 sigma_w2 q + E[b^2]``,
  ``c' = mu^2 sigma_w2 c + E[b^2]`` (the bias is shared by the examples); backward
  ``chi = mu^2 sigma_w2 (n_out / n_in) chi'``. Zero-mean weights only. Scaled weight
  standardization (Brock et al. 2021) makes every unit's fan-in weights zero-mean with squared norm
  1, so ``sigma_w2 = 1`` whatever the init, and it removes the stream's mean exactly:
  ``q' = mu^2 (q - m^2) + E[b^2]``, ``c' = mu^2 (c - m^2) + E[b^2]``.
* an activation on a Gaussian ``u ~ N(m, [[v, k], [k, v]])`` (``v = q - m^2``, ``k = c - m^2``):
  ``m' = E phi(u)``, ``q' = E phi(u)^2``, ``c' = E phi(u_a) phi(u_b)``; backward
  ``chi = E[phi'(u)^2] chi'`` (gradient independence, Schoenholz et al. 2017). The quadrature is
  :func:`initjax.theory.gaussian_expectation` / ``gaussian_expectation_2d`` in float64 (exact for
  ReLU-type kinks when ``m = 0``; spectrally accurate for smooth activations; for a kinked
  activation on a shifted Gaussian, ``m != 0``, about 1e-4 relative with the default nodes).
* layer norm (per example over features; the feature mean and variance are ``m`` and ``v`` by the
  law of large numbers): ``m' = 0``, ``q' = v / (v + eps)``, ``c' = k / (v + eps)``; backward
  ``chi = chi' / (v + eps)`` (the projection removes 2 of ``n`` directions: dropped at large width).
* RMS norm: ``m' = m / sqrt(q + eps)``, ``q' = q / (q + eps)``, ``c' = c / (q + eps)``; backward
  ``chi = chi' / (q + eps)``.
* batch norm over the ``B = network.batch`` examples (biased variance), for a batch whose examples
  are exchangeable with equal pairwise covariance ``k`` (any ``k >= -v / (B - 1)``). Per feature the
  centred batch vector is ``P g`` with ``P = I - 11^T / B``, and only its within-batch part
  ``(v - k) P`` survives the centring; so, eps aside, ``y = sqrt(B) P g / |P g|`` lies on the sphere
  ``|y|^2 = B`` in the plane ``sum y = 0``, whence by exchangeability, exactly for any ``B >= 2``:
  ``E y_a = 0``, ``E y_a^2 = 1`` and ``E y_a y_b = -1 / (B - 1)``. ``eps`` enters through the
  plug-in factor ``r = s / (s + eps)`` on both (``s = (v - k)(B - 1) / B``, the expected batch
  variance; exact as eps -> 0, ``r = 0`` for a batch of identical examples). Backward, with the
  cotangent independent of ``y`` (gradient independence), the Jacobian ``(I - 11^T/B - y y^T/B)/sigma``
  is a rank ``B - 2`` projection over the batch standard deviation, and the Gaussian batch variance
  ``sigma^2 = (v - k) chi2_{B-1} / B`` is independent of its direction:
  ``chi = chi' (B - 2)/B E[1 / sigma^2] = chi' (B - 2) / ((v - k)(B - 3))`` (``B > 3``; eps is put in
  as ``1 / ((v - k)(B - 3) / B + eps)``, which gives 0 at ``B = 2`` and ``1/eps`` at ``B = 3``).
  When a batch-normalized value feeds an activation it is treated as Gaussian with these moments
  (exact as ``B -> inf``; an ``O(1/B)`` approximation otherwise); fed into weights, only the moments
  matter and the result is exact.
* a residual block ``x + alpha * f`` (``f = branch(norm(x) / beta)`` for ``"pre"``;
  ``norm(x + alpha * branch(x / beta))`` for ``"post"``): every branch holds a weight matrix with
  zero-mean weights drawn independently of ``x``, so at infinite width each branch coordinate
  ``f_i`` is independent of ``x_i`` and ``E[x f] = m m_f``:
  ``m' = m + alpha m_f``, ``q' = q + alpha^2 q_f + 2 alpha m m_f``,
  ``c' = c + alpha^2 c_f + 2 alpha m m_f``. The mean term is what a branch that ends with an
  activation adds (Yang & Schoenholz's reduced net with ReLU); it is 0 when the branch ends with
  weights and zero-mean biases. Backward, the cross term of ``dL/dx = g + alpha J_f^T g`` vanishes
  (the zero-mean branch weights again): ``chi = chi' (1 + alpha^2 F / beta^2)`` with ``F`` the
  product of the branch's backward factors; a post norm's factor multiplies first.

The stream is Gaussian when every branch ends with weights (a sum of independent Gaussian
branch outputs); where a branch ends with an activation the stream is not Gaussian, and an
activation or batch norm applied directly to it (a pre-activation layer) is computed as if it were
Gaussian with the same mean and covariance (an approximation; weights see only the moments, so
post-activation layers stay exact). Everything else is the usual mean-field limit: exact at
infinite width, ``O(1/sqrt(n))`` fluctuations and ``O(depth / n)`` biases at width ``n``.

Overflow is reported, never raised: once the stream's second moment is not finite the later
blocks report ``inf`` (``q``, ``branch_var``, ``grad``) and ``nan`` (``cosine``, ``branch_share``).

Named recursions and limits (cross-checks of :func:`predict_residual`):

* :func:`yang_schoenholz` -- the full and reduced residual nets of Yang & Schoenholz 2017 with their
  gradient recursion.
* :func:`de_smith_variance` -- De & Smith 2020: linear growth with a batch-normalized branch,
  doubling without one.
* :func:`residual_depth_limit` -- the ``1/sqrt(depth)`` branch scaling's depth limit, an ODE.

    >>> from initjax.network import Dense, Network, Repeat, Residual
    >>> net = Network(256, (Repeat(Residual(Dense(256, "he_normal", "relu", preactivation=True)),
    ...     4),))
    >>> predict_residual(net).q.round(6).tolist()   # x + W relu(x), He: the variance doubles
    [2.0, 4.0, 8.0, 16.0]

References:
  Yang & Schoenholz 2017, "Mean Field Residual Networks: On the Edge of Chaos",
  https://arxiv.org/abs/1712.08969.
  De & Smith 2020, "Batch Normalization Biases Residual Blocks Towards the Identity Function in
  Deep Networks", https://arxiv.org/abs/2002.10444.
  Hayou et al. 2021, "Stable ResNet", https://arxiv.org/abs/2010.12859; Hayou & Yang 2023,
  "Width and Depth Limits Commute in Residual Networks", https://arxiv.org/abs/2302.00453.
  Brock, De & Smith 2021, "Characterizing signal propagation to close the performance gap in
  unnormalized ResNets", https://arxiv.org/abs/2101.08692.
  Schoenholz et al. 2017, "Deep Information Propagation", https://arxiv.org/abs/1611.01232.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initjax import activations as _activations
from initjax import initializers as _initializers
from initjax._checks import check_choice, check_float, check_int
from initjax.network import Dense, Network, Residual
from initjax.theory.meanfield import (
    DEFAULT_NUM,
    DEFAULT_NUM_2D,
    gaussian_expectation,
    gaussian_expectation_2d,
)

__all__ = [
    "ResidualPrediction",
    "predict_residual",
    "YangSchoenholz",
    "yang_schoenholz",
    "de_smith_variance",
    "DepthLimit",
    "residual_depth_limit",
]

_MAX_DEPTH = 1_000_000


# ----------------------------------------------------------------------------------------------
# The state of a stream coordinate and the one-step maps
# ----------------------------------------------------------------------------------------------
class _State(NamedTuple):
    m: float  # E[x_i(a)]
    q: float  # E[x_i(a)^2]
    c: float  # E[x_i(a) x_i(b)], a != b

    @property
    def finite(self) -> bool:
        return math.isfinite(self.m) and math.isfinite(self.q) and math.isfinite(self.c)


_INF_STATE = _State(math.inf, math.inf, math.inf)


def _activation(spec: Any) -> _activations.Activation:
    if isinstance(spec, str | _activations.Activation):
        return _activations.get(spec)
    raise TypeError(f"activation must be a spec string such as 'tanh' or an Activation, got {spec!r}")


@functools.cache
def _moments_fn(act: _activations.Activation, num: int, num_2d: tuple[int, int]) -> Any:
    """A jitted ``(m, v, rho) -> [E phi, E phi^2, E phi(u_a) phi(u_b), E phi'^2]`` for
    ``u ~ N(m, v [[1, rho], [rho, 1]])``, compiled once per activation and rule size."""

    def dphi(u):
        return jax.jvp(act, (u,), (jnp.ones_like(u),))[1]

    def fn(m, v, rho):
        e1 = gaussian_expectation(lambda u: act(m + u), v, num)
        e2 = gaussian_expectation(lambda u: act(m + u) ** 2, v, num)
        e12 = gaussian_expectation_2d(lambda a, b: act(m + a) * act(m + b), v, rho, num_2d)
        d2 = gaussian_expectation(lambda u: dphi(m + u) ** 2, v, num)
        return jnp.stack([e1, e2, e12, d2])

    return jax.jit(fn)


def _phi(act: _activations.Activation, s: _State, num: int, num_2d: tuple[int, int]) -> tuple[_State, float]:
    """An activation on the Gaussian with the state's moments: (output state, E[phi'^2])."""
    if not s.finite:
        return _INF_STATE, math.inf
    v = max(s.q - s.m * s.m, 0.0)
    k = s.c - s.m * s.m
    rho = min(max(k / v, -1.0), 1.0) if v > 0 else 1.0
    with jax.enable_x64(True):
        e1, e2, e12, d2 = (float(x) for x in _moments_fn(act, num, num_2d)(
            np.float64(s.m), np.float64(v), np.float64(rho)))
    out = _State(e1, e2, e12)
    return (out if out.finite else _INF_STATE), d2


def _norm(kind: str, eps: float, s: _State, batch: int) -> tuple[_State, float]:
    """A norm's forward map and backward factor (module docstring)."""
    if kind == "none":
        return s, 1.0
    if not s.finite:
        return _INF_STATE, 0.0
    v = max(s.q - s.m * s.m, 0.0)
    k = s.c - s.m * s.m
    if kind == "rms":
        d = s.q + eps
        return (_State(s.m / math.sqrt(d), s.q / d, s.c / d), 1.0 / d) if d > 0 else (_State(0.0, 0.0, 0.0), 0.0)
    if kind == "layer":
        d = v + eps
        return (_State(0.0, v / d, k / d), 1.0 / d) if d > 0 else (_State(0.0, 0.0, 0.0), 0.0)
    # batch
    b = batch
    within = max(v - k, 0.0)  # the within-batch variance of a feature
    s_batch = within * (b - 1) / b
    r = s_batch / (s_batch + eps) if s_batch + eps > 0 else 0.0
    inv = within * (b - 3) / b + eps  # E[1 / sigma^2] = 1 / inv (module docstring)
    back = 0.0 if b == 2 else ((b - 2) / b / inv if inv > 0 else math.inf)
    return _State(0.0, r, -r / (b - 1)), back


def _first_moment(init: Any, field: str) -> float:
    """E[W_ij] of an initjax initializer (the schemes with a mean), 0 for the zero-mean ones."""
    kw = init.kwargs
    if init.name == "ones":
        return 1.0
    if init.name == "constant":
        return float(kw["value"])
    if init.name == "normal":
        return float(kw["mean"])
    if init.name == "uniform":
        return 0.0 if kw.get("low") is None else (kw["low"] + kw["high"]) / 2
    if init.name == "truncated_normal":
        if kw["mean"] == 0 and kw["lower"] == -kw["upper"]:
            return 0.0
        raise ValueError(f"{field}: the mean of {init.spec!r} (an asymmetric truncation) is not "
                         "implemented; use a symmetric truncation")
    if init.name == "identity":
        raise ValueError(f"{field}={init.spec!r} is not a random init: mean-field theory needs "
                         "i.i.d. zero-mean weights")
    return 0.0


class _Layer(NamedTuple):
    """A Dense layer's numbers: (sigma_w2, E[b], E[b^2], n_in, n_out)."""

    sw: float
    b_mean: float
    b2: float
    n_in: int
    n_out: int


def _layer_numbers(layer: Dense, n_in: int, where: str) -> _Layer:
    for f in ("init", "bias_init"):
        if not isinstance(getattr(layer, f), _initializers.Initializer):
            raise ValueError(
                f"{where}.{f} is a user function ({getattr(layer, f)!r}): its second moment is "
                "unknown, so nothing can be predicted; use an initjax initializer spec"
            )
    shape = (n_in, layer.width)
    if layer.weight_standardization:
        sw = 1.0  # every unit's fan-in weights: mean 0, squared norm 1 (gain 1 at init)
    else:
        w_mean = _first_moment(layer.init, f"{where}.init")
        if w_mean != 0.0:
            raise ValueError(
                f"{where}.init={layer.init.spec!r} has mean {w_mean}: mean-field theory needs "
                "zero-mean weights (a mean sums over the fan-in and dominates)"
            )
        sw = n_in * layer.init.second_moment(shape)
    b_mean = _first_moment(layer.bias_init, f"{where}.bias_init")
    b2 = layer.bias_init.second_moment((layer.width,))
    return _Layer(sw, b_mean, b2, n_in, layer.width)


def _weights(layer: Dense, nums: _Layer, s: _State) -> tuple[_State, float]:
    mu2 = layer.multiplier**2
    if not s.finite:
        return _INF_STATE, mu2 * nums.sw * nums.n_out / nums.n_in
    q, c = (s.q - s.m * s.m, s.c - s.m * s.m) if layer.weight_standardization else (s.q, s.c)
    out = _State(nums.b_mean, mu2 * nums.sw * q + nums.b2, mu2 * nums.sw * c + nums.b2)
    return out, mu2 * nums.sw * nums.n_out / nums.n_in


def _dense(layer: Dense, nums: _Layer, s: _State, batch: int, num: int, num_2d) -> tuple[_State, float]:
    """A Dense layer: (output state, backward factor chi_in / chi_out)."""
    act = layer.activation

    def pre(s):  # phi(norm(.)) or norm(phi(.))
        if layer.norm_position == "before":
            s, f1 = _norm(layer.norm, layer.norm_eps, s, batch)
            s, f2 = _phi(act, s, num, num_2d)
        else:
            s, f2 = _phi(act, s, num, num_2d)
            s, f1 = _norm(layer.norm, layer.norm_eps, s, batch)
        return s, f1 * f2

    if layer.preactivation:
        s, f_a = pre(s)
        s, f_w = _weights(layer, nums, s)
    else:
        s, f_w = _weights(layer, nums, s)
        s, f_a = pre(s)
    return s, _mul(f_a, f_w)


def _mul(a: float, b: float) -> float:
    return 0.0 if a == 0.0 or b == 0.0 else a * b  # 0 * inf: no gradient reaches it


# ----------------------------------------------------------------------------------------------
# The prediction
# ----------------------------------------------------------------------------------------------
class ResidualPrediction(NamedTuple):
    """Mean-field predictions per block ``l = 1..L`` (float64 arrays of shape ``(depth,)``).

    ``x^l`` is the stream after block ``l`` (after a post norm); for a Dense block it is the
    layer's output and the branch fields are ``nan``.
    """

    q: np.ndarray  # E[(x^l_i)^2], the stream's second moment
    mean: np.ndarray  # E[x^l_i]
    cross: np.ndarray  # E[x^l_i(a) x^l_i(b)], two distinct examples
    cosine: np.ndarray  # cross / q
    branch_var: np.ndarray  # Var[alpha f_i]: the scaled branch output's variance (E[(alpha f)^2] - E[alpha f]^2)
    branch_share: np.ndarray  # branch_var / Var[(x + alpha f)_i] (the sum, before a post norm)
    grad: np.ndarray  # E[(dL/dx^l_i)^2], N(0, 1) cotangent at the output: grad[-1] == 1
    grad_input: float  # E[(dL/dx^0_i)^2] at the input

    def layer_table(self) -> list[dict[str, Any]]:
        """One dict per block: ``{"block", "q", "mean", "branch_var", "branch_share", "cosine",
        "grad_var"}`` (Python floats; ``inf`` / ``nan`` where the theory overflowed or has none)."""
        return [
            {
                "block": i + 1,
                "q": float(self.q[i]),
                "mean": float(self.mean[i]),
                "branch_var": float(self.branch_var[i]),
                "branch_share": float(self.branch_share[i]),
                "cosine": float(self.cosine[i]),
                "grad_var": float(self.grad[i]),
            }
            for i in range(len(self.q))
        ]


def _check_num(num: Any, num_2d: Any) -> tuple[int, tuple[int, int]]:
    num = check_int("num", num, minimum=2)
    if num % 2:
        raise ValueError(f"num must be even (nodes come in +-x pairs), got {num}")
    try:
        nr, na = num_2d
    except (TypeError, ValueError) as err:
        raise ValueError(f"num_2d must be (radial nodes, nodes per arc), got {num_2d!r}") from err
    return num, (check_int("num_2d[0]", nr, minimum=1), check_int("num_2d[1]", na, minimum=1))


def predict_residual(
    network: Network, *, num: int = DEFAULT_NUM, num_2d: tuple[int, int] = DEFAULT_NUM_2D
) -> ResidualPrediction:
    """The mean-field prediction, block by block, for a network of Dense and Residual blocks.

    The maps are those of the module docstring: per block the stream's mean ``m``, second moment
    ``q`` and cross moment ``c`` forward from the input (``m = 0``, ``q = input_variance``,
    ``c = input_correlation * input_variance``), then ``chi = E[(dL/dx)^2]`` backward from
    ``chi = 1`` at the output under gradient independence. A residual block
    ``x + alpha f`` adds ``alpha^2 q_f + 2 alpha m m_f`` to ``q`` (Yang & Schoenholz 2017; the mean
    term is theirs for the reduced net with a non-odd activation) and multiplies ``chi`` by
    ``1 + alpha^2 F / beta^2``; ``alpha = network.branch_scale(block)`` (its initial value when
    learnable), ``beta^2 = network.expected_stream_variance()`` of the block for
    ``beta="expected"``. Fixup's scalar biases and multipliers are 0 and 1 at init: nothing.

    On a plain stack of Dense layers without norms this equals :func:`initjax.theory.meanfield.predict`:
    ``q`` is its ``out_second_moment`` and ``grad`` its ``grad_act_var`` (for zero-mean biases).

    Args:
      network: a :class:`~initjax.network.Network` of Dense and Residual blocks with initjax
        initializers (their exact second moments are used).
      num, num_2d: the quadrature sizes of :func:`initjax.theory.gaussian_expectation` (even) and
        :func:`initjax.theory.gaussian_expectation_2d`.

    Returns:
      A :class:`ResidualPrediction`.

    Raises:
      TypeError: if ``network`` is not a Network.
      ValueError: for a network with spatial axes (conv blocks: see the comment in the code), a
        block kind other than Dense and Residual, a user-function initializer (its
        second moment is unknown), non-zero-mean weights, or bad quadrature sizes.
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be an initjax Network, got {type(network).__name__}")
    num, num_2d = _check_num(num, num_2d)
    if network.depth > _MAX_DEPTH:  # before the blocks are expanded
        raise ValueError(f"depth must be <= {_MAX_DEPTH}, got {network.depth}")
    if network.spatial:
        # a stride-1 conv layer has, per position, the dense recursion with fan-in
        # prod(kernel_size) C_in, but only away from the SAME-padding border: at edge positions
        # fewer kernel taps see data, the border's lower variance spreads one position inward per
        # block, and a batch norm pooled over positions couples them. The per-position
        # recursion is not implemented; measure conv networks with the block engine instead.
        raise ValueError(
            f"predict_residual covers networks without spatial axes; this one has spatial={network.spatial} "
            "(conv blocks): the mean-field recursion holds per position only away from the SAME-padding "
            "border, so it is not predicted here; use initjax.propagate (the block engine) to measure it")
    blocks = network.blocks
    for i, stage in enumerate(network.stages):
        if not isinstance(stage.block, Dense | Residual) or any(
                not isinstance(layer, Dense) for layer in getattr(stage.block, "branch", ())):
            raise ValueError(f"stages[{i}] is a {type(stage.block).__name__} block; predict_residual "
                             "covers Dense and Residual blocks")
    # numbers per stage (repeats share them)
    stage_nums, width = [], network.in_width
    for i, stage in enumerate(network.stages):
        block = stage.block
        if isinstance(block, Dense):
            stage_nums.append(_layer_numbers(block, width, f"stages[{i}].block"))
        else:
            nums, w = [], width
            for j, layer in enumerate(block.branch):
                nums.append(_layer_numbers(layer, w, f"stages[{i}].block.branch[{j}]"))
                w = layer.width
            stage_nums.append(tuple(nums))
        width = block.out_width(width)
    per_block = [n for stage, n in zip(network.stages, stage_nums, strict=True) for _ in range(stage.count)]
    betas2 = network.expected_stream_variance()
    batch = network.batch

    depth = len(blocks)
    v0 = float(network.input_variance)
    s = _State(0.0, v0, float(network.input_correlation) * v0)
    q, mean, cross = np.empty(depth), np.empty(depth), np.empty(depth)
    bvar, share = np.full(depth, np.nan), np.full(depth, np.nan)
    factors = np.empty(depth)  # chi_{l-1} = factors[l - 1] chi_l
    for idx, (block, nums) in enumerate(zip(blocks, per_block, strict=True)):
        if isinstance(block, Dense):
            s, factor = _dense(block, nums, s, batch, num, num_2d)
        else:
            alpha = network.branch_scale(block)
            beta2 = betas2[idx] if block.beta == "expected" else 1.0
            u, f_pre = _norm(block.norm, block.norm_eps, s, batch) if block.norm_position == "pre" else (s, 1.0)
            u = _State(u.m / math.sqrt(beta2), u.q / beta2, u.c / beta2)
            f_branch = f_pre / beta2
            for layer, n in zip(block.branch, nums, strict=True):
                u, f = _dense(layer, n, u, batch, num, num_2d)
                f_branch = _mul(f_branch, f)
            if s.finite and u.finite:
                cross_term = 2 * alpha * s.m * u.m
                total = _State(s.m + alpha * u.m, s.q + alpha**2 * u.q + cross_term,
                               s.c + alpha**2 * u.c + cross_term)
                bvar[idx] = alpha**2 * (u.q - u.m * u.m)  # a variance, as the engine measures it
                total_var = total.q - total.m * total.m
                share[idx] = bvar[idx] / total_var if total_var > 0 else math.nan
            else:
                total = _INF_STATE
                bvar[idx] = math.inf if not u.finite else alpha**2 * u.q
            factor = 1.0 + _mul(alpha**2, f_branch)
            if block.norm_position == "post":
                total, f_post = _norm(block.norm, block.norm_eps, total, batch)
                factor = _mul(factor, f_post)
            s = total if total.finite else _INF_STATE
        q[idx], mean[idx], cross[idx], factors[idx] = s.q, s.m, s.c, factor
    with np.errstate(all="ignore"):
        cosine = np.where(np.isfinite(q) & (q > 0), cross / np.where(q > 0, q, 1.0), np.nan)
        cosine = np.where(np.isfinite(q) & (q == 0), 1.0, cosine)  # every example at the origin
        grad = np.empty(depth)
        grad[-1] = 1.0
        for idx in range(depth - 1, 0, -1):
            grad[idx - 1] = _mul(grad[idx], factors[idx])
        grad_input = _mul(grad[0], factors[0])
    grad = np.where(np.isnan(grad), np.inf, grad)
    mean = np.where(np.isfinite(q), mean, np.nan)
    return ResidualPrediction(q, mean, cross, cosine, bvar, share, grad, float(grad_input))


# ----------------------------------------------------------------------------------------------
# Yang & Schoenholz 2017: full and reduced residual nets
# ----------------------------------------------------------------------------------------------
class YangSchoenholz(NamedTuple):
    """Yang & Schoenholz's quantities per block ``l = 1..L`` (float64 arrays, shape ``(depth,)``)."""

    p: np.ndarray  # E[(x^l)^2], the stream
    gamma: np.ndarray  # E[x^l(a) x^l(b)]
    q: np.ndarray  # E[(h^l)^2], the pre-activation of block l (built from x^{l-1})
    lam: np.ndarray  # E[h^l(a) h^l(b)]
    chi: np.ndarray  # E[(dL/dx^l)^2], chi[-1] = 1
    chi_input: float  # E[(dL/dx^0)^2]


def yang_schoenholz(
    kind: str,
    activation: Any,
    depth: int,
    *,
    sigma_w2: float = 1.0,
    sigma_v2: float = 1.0,
    sigma_b2: float = 0.0,
    sigma_a2: float = 0.0,
    p0: float = 1.0,
    gamma0: float = 0.0,
    num: int = DEFAULT_NUM,
    num_2d: tuple[int, int] = DEFAULT_NUM_2D,
) -> YangSchoenholz:
    """The mean-field recursions of Yang & Schoenholz's residual nets (arXiv 1712.08969).

    Full net (FRN): ``h^l = W^l x^{l-1} + b^l``, ``x^l = V^l phi(h^l) + x^{l-1} + a^l`` with
    ``W ~ N(0, sigma_w2 / N)``, ``V ~ N(0, sigma_v2 / N)``, ``b ~ N(0, sigma_b2)``,
    ``a ~ N(0, sigma_a2)``. Reduced net (RRN): ``x^l = phi(h^l) + x^{l-1}``. With
    ``V(q) = E phi(sqrt(q) z)^2`` and ``W(q, lam) = E phi(u) phi(u')``,
    ``(u, u') ~ N(0, [[q, lam], [lam, q]])``:

        q^l = sigma_w2 p^{l-1} + sigma_b2            lam^l = sigma_w2 gamma^{l-1} + sigma_b2
        FRN:  p^l = p^{l-1} + sigma_v2 V(q^l) + sigma_a2,  gamma^l = gamma^{l-1} + sigma_v2 W(q^l, lam^l) + sigma_a2
        RRN:  p^l = p^{l-1} + V(q^l),                      gamma^l = gamma^{l-1} + W(q^l, lam^l)
        chi^{l-1} = chi^l (1 + sigma_v2 sigma_w2 E[phi'(sqrt(q^l) z)^2])   (RRN: sigma_v2 -> 1)

    The RRN form drops the cross term ``2 E[x^{l-1} phi(h^l)] = 2 E[x^{l-1}] E[phi(h^l)]``, which
    is exact for odd ``phi`` only; :func:`predict_residual` keeps it (it tracks the mean).
    The gradient recursion assumes gradient independence.

    Args:
      kind: ``"full"`` or ``"reduced"``.
      activation: an activation spec or :class:`~initjax.activations.Activation`.
      depth: number of blocks ``L`` (>= 1).
      sigma_w2, sigma_v2, sigma_b2, sigma_a2: the variances above (>= 0; ``sigma_v2`` and
        ``sigma_a2`` unused by the reduced net).
      p0, gamma0: the input's second moment (> 0) and cross moment (``|gamma0| <= p0``).

    Raises:
      ValueError: for an unknown ``kind``, a negative variance, ``p0 <= 0`` or ``|gamma0| > p0``.
    """
    check_choice("kind", kind, ("full", "reduced"))
    act = _activation(activation)
    depth = check_int("depth", depth, minimum=1)
    if depth > _MAX_DEPTH:
        raise ValueError(f"depth must be <= {_MAX_DEPTH}, got {depth}")
    sw, sv, sb, sa = (check_float(n, v, minimum=0.0) for n, v in (
        ("sigma_w2", sigma_w2), ("sigma_v2", sigma_v2), ("sigma_b2", sigma_b2), ("sigma_a2", sigma_a2)))
    p_prev = check_float("p0", p0, minimum=0.0, strict_minimum=True)
    g_prev = check_float("gamma0", gamma0, minimum=-p_prev, maximum=p_prev)
    num, num_2d = _check_num(num, num_2d)
    if kind == "reduced":
        sv, sa = 1.0, 0.0
    out = {k: np.empty(depth) for k in ("p", "gamma", "q", "lam", "d")}
    for block in range(depth):
        ql, lam = sw * p_prev + sb, sw * g_prev + sb
        out_state, d2 = _phi(act, _State(0.0, ql, lam), num, num_2d)
        e2, e12 = out_state.q, out_state.c
        p_prev, g_prev = p_prev + sv * e2 + sa, g_prev + sv * e12 + sa
        for k, v in (("p", p_prev), ("gamma", g_prev), ("q", ql), ("lam", lam), ("d", d2)):
            out[k][block] = v
    chi = np.empty(depth)
    chi[-1] = 1.0
    for block in range(depth - 1, 0, -1):
        chi[block - 1] = chi[block] * (1 + sv * sw * out["d"][block])
    chi_in = float(chi[0] * (1 + sv * sw * out["d"][0]))
    return YangSchoenholz(out["p"], out["gamma"], out["q"], out["lam"], chi, chi_in)


# ----------------------------------------------------------------------------------------------
# De & Smith 2020
# ----------------------------------------------------------------------------------------------
def de_smith_variance(
    depth: int, *, normalized: bool = True, input_variance: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """The stream variance and the branch's share per block, after De & Smith 2020 (arXiv 2002.10444).

    ``x_l = x_{l-1} + f_l(x_{l-1})`` with ``f_l`` uncorrelated with ``x_{l-1}``:

    * ``normalized=True``: a batch-normalized branch has ``Var f_l = 1`` whatever the stream, so
      ``Var x_l = v0 + l`` (linear growth) and the branch's share of block ``l``'s output variance
      is ``1 / (v0 + l)`` (``1/(l+1)`` for ``v0 = 1``): each block is close to the identity.
    * ``normalized=False``: a He-initialized ReLU branch ``W relu(x)`` has ``Var f_l = Var x_{l-1}``,
      so ``Var x_l = 2^l v0`` and the share is ``1/2`` at every block.

    Returns:
      ``(variance, share)``, float64 arrays of shape ``(depth,)`` over blocks ``l = 1..depth``.
    """
    depth = check_int("depth", depth, minimum=1)
    v0 = check_float("input_variance", input_variance, minimum=0.0, strict_minimum=True)
    if not isinstance(normalized, bool):
        raise TypeError(f"normalized must be a bool, got {normalized!r}")
    blocks = np.arange(1, depth + 1, dtype=np.float64)
    if normalized:
        var = v0 + blocks
        return var, 1.0 / var
    return v0 * 2.0**blocks, np.full(depth, 0.5)


# ----------------------------------------------------------------------------------------------
# The 1/sqrt(depth) branch scaling's depth limit
# ----------------------------------------------------------------------------------------------
class DepthLimit(NamedTuple):
    """The depth limit at the requested times ``t`` (float64 arrays of ``t``'s shape)."""

    t: np.ndarray
    q: np.ndarray  # K(t)_aa, the stream's second moment
    c: np.ndarray  # K(t)_ab, the cross moment
    cosine: np.ndarray  # c / q


@functools.cache
def _limit_fn(act: _activations.Activation, steps: int, num: int, num_2d: tuple[int, int]) -> Any:
    def field(k, sw, sb):
        q, c = k[0], k[1]
        rho = jnp.clip(c / q, -1.0, 1.0)
        e2 = gaussian_expectation(lambda u: act(u) ** 2, q, num)
        e12 = gaussian_expectation_2d(lambda a, b: act(a) * act(b), q, rho, num_2d)
        return jnp.stack([sw * e2 + sb, sw * e12 + sb])

    def solve(t, k0, sw, sb):
        h = t / steps

        def rk4(k, _):
            k1 = field(k, sw, sb)
            k2 = field(k + h / 2 * k1, sw, sb)
            k3 = field(k + h / 2 * k2, sw, sb)
            k4 = field(k + h * k3, sw, sb)
            return k + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), None

        return jax.lax.scan(rk4, k0, None, length=steps)[0]

    return jax.jit(jax.vmap(solve, in_axes=(0, None, None, None)))


def residual_depth_limit(
    activation: Any,
    sigma_w2: float,
    t: Any,
    q0: float = 1.0,
    c0: float = 0.0,
    *,
    sigma_b2: float = 0.0,
    steps: int = 1000,
    num: int = DEFAULT_NUM,
    num_2d: tuple[int, int] = DEFAULT_NUM_2D,
) -> DepthLimit:
    """The depth limit of a residual net with branches scaled by ``1/sqrt(L)``: an ODE in ``t = l/L``.

    The net ``x^l = x^{l-1} + L^{-1/2} (W^l phi(x^{l-1}) + b^l)``, ``W ~ (0, sigma_w2 / n)``,
    ``b ~ (0, sigma_b2)`` has the kernel recursion ``K^l = K^{l-1} + F(K^{l-1}) / L`` with
    ``F(K) = sigma_w2 E[phi(u_a) phi(u_b)] + sigma_b2``, ``u ~ N(0, K)``: Euler's method with step
    ``1/L`` for

        dK/dt = F(K),   K(0) = [[q0, c0], [c0, q0]],   t = l / L,

    so the ``L``-block network approaches ``K(t)`` with an error ``O(1/L)`` (Hayou et al. 2021;
    Hayou & Yang 2023: the width and depth limits commute under this scaling). Solved by RK4 with
    ``steps`` equal steps from 0 to each ``t`` (error ``O(steps^-4)``), in float64.

    Args:
      activation: an activation spec or Activation.
      sigma_w2, sigma_b2: the branch's weight and bias variances (>= 0).
      t: the times (>= 0; a number or an array).
      q0, c0: the input's second moment (> 0) and cross moment (``|c0| <= q0``).
      steps: RK4 steps per solve (>= 1).

    Returns:
      A :class:`DepthLimit` at ``t``.
    """
    act = _activation(activation)
    sw = check_float("sigma_w2", sigma_w2, minimum=0.0)
    sb = check_float("sigma_b2", sigma_b2, minimum=0.0)
    q0 = check_float("q0", q0, minimum=0.0, strict_minimum=True)
    c0 = check_float("c0", c0, minimum=-q0, maximum=q0)
    steps = check_int("steps", steps, minimum=1)
    num, num_2d = _check_num(num, num_2d)
    try:
        times = np.asarray(t, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"t must be a number or an array of numbers, got {t!r}") from err
    if not np.all(np.isfinite(times) & (times >= 0)):
        raise ValueError(f"t must be finite and >= 0, got {t!r}")
    with jax.enable_x64(True):
        k = np.asarray(_limit_fn(act, steps, num, num_2d)(
            times.reshape(-1), np.array([q0, c0]), np.float64(sw), np.float64(sb)), dtype=np.float64)
    q, c = k[:, 0].reshape(times.shape), k[:, 1].reshape(times.shape)
    with np.errstate(all="ignore"):
        cos = np.where(np.isfinite(q) & (q > 0), c / q, np.nan)
    return DepthLimit(times, q, c, cos)
