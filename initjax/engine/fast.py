"""An exact fast path for i.i.d. zero-mean Gaussian weights: O(B n) random numbers per layer.

The dense sampler (:mod:`initjax.engine.dense`) draws every entry of every ``n_in x n_out`` weight matrix,
yet each tensor it returns sees a layer's ``W`` only through two products: ``H = X W + b`` forward
and ``dL/dX = D W^T`` backward (``X``: the layer input, ``B x n_in``; ``D = dL/dH``, ``B x n_out``;
the weight gradient ``X^T D`` does not involve ``W``). When ``W`` has i.i.d. ``N(0, s^2)`` entries,
those two products can be sampled directly from their exact joint law with ``O(B (n_in + n_out))``
random numbers instead of ``n_in n_out``. :func:`sample_tensors` does that; its tensors can be
fed to the engine's statistics (:mod:`initjax.engine.stats`) unchanged. :data:`SAMPLER` is this
sampler in the engine's protocol (``propagate(..., method="fast")``).

Algorithm, one layer of one seed (``P = V V^T``):

* Forward. ``V`` (``n_in x k``, ``k = min(B, n_in)``) has orthonormal columns whose span contains
  the rows of ``X`` (the Q factor of ``X^T``, see *Rank deficiency* below). Draw ``G``
  (``k x n_out``) i.i.d. ``N(0, s^2)`` and set ``H = (X V) G + b``. This is the engine's
  ``sampling.layer_forward`` called with ``(X V, G)`` in place of ``(X, W)``, so activation,
  normalization and their placement are the engine's own code.
* Backward. ``D = dL/dH`` is ``jax.vjp`` of that same call with respect to a zero probe on ``H``
  (as the engine does), given ``dL/d out``. Then, with ``V_D`` (``n_out x k_D``) orthonormal,
  its span containing the rows of ``D`` (Q factor of ``D^T``), and ``F`` (``k_D x n_in``) fresh
  i.i.d. ``N(0, s^2)``::

      E     = (D V_D) F                          # a sample of D W~^T, W~ a fresh copy of W
      dL/dX = (D G^T) V^T + E (I - P)            # = D W^T with W conditioned on H

  Layers run forward as a ``lax.scan`` when all weight shapes agree (a Python loop otherwise) and
  backward as a reverse scan (loop). ``G`` and ``F`` of layer ``l`` come from
  ``fold_in(fold_in(weights_key, l), 0)`` and ``(..., 1)``; inputs, biases and the output cotangent
  use the engine's own keys and code, so a seed's numbers depend only on its key and layer, never on
  how many seeds run beside it.

Why it is exact. Everything returned (``x_prev, h, y, out, dh, dx`` of every layer) has, jointly
over layers, the law of the dense path's tensors; it is *not* bitwise equal (other random numbers).
The fast path *is* the dense path, run with weight matrices that are never formed::

    W^l := V G + (I - P) W~,        W~^T := V_D F + (I - P_D) Z,

``P_D = V_D V_D^T`` and ``Z`` (``n_out x n_in``, i.i.d. ``N(0, s^2)``) never drawn. Since
``span(V)`` contains the rows of ``X``, ``X (I - P) = 0`` and ``X W^l = (X V) G`` exactly; likewise
``D (I - P_D) = 0`` gives ``D W~^T = (D V_D) F = E`` and so ``D W^{lT} = D G^T V^T + E (I - P)``,
exactly the fast path's arithmetic. All else (inputs, biases, activation, norm, vjp, cotangent) is
the engine's own code. So the fast tensors are ``Phi(x^0, b, c, W^1..W^L)`` with ``Phi`` the dense
path's map and ``c`` the cotangent's key, and it suffices that ``(x^0, b, c, W^1..W^L)`` has the
dense law: independent, each ``W^l`` i.i.d. ``N(0, s^2)``.

1. *Rotational invariance.* For a fixed ``V`` with orthonormal columns and independent ``G``, ``W~``
   with i.i.d. ``N(0, s^2)`` entries, ``V G + (I - P) W~`` has i.i.d. ``N(0, s^2)`` entries: its
   columns are independent Gaussians with covariance ``s^2 (V V^T + (I - P)(I - P)^T) = s^2 I``.
   Read backwards this is the conditioning on ``V^T W``: for ``W`` i.i.d., ``G = V^T W`` and
   ``(I - P) W`` are jointly Gaussian with cross-covariance ``s^2 V^T (I - P) = 0``, hence
   independent, so ``W`` given ``V^T W = G`` is ``V G + (I - P) W~`` with ``W~`` fresh. The forward
   pass reveals only ``G`` (as ``H``); the backward pass reuses that ``G`` and a fresh ``W~``.
2. *The complement, and why ``D`` depends on ``W^l`` only through ``H^l``.* ``D^l = J_{f_l}(H^l)^T
   dx^l`` (``f_l``: activation and normalization, row-coupled for batch norm); ``dx^l = D^{l+1}
   W^{(l+1)T}`` involves layer ``l + 1``'s weights; later layers see only ``x^l = f_l(H^l)``; and
   ``H^l = (X V) G + b``. So ``D^l`` is a function of ``(x^0, b, c, every G, W~^m for m > l)``, not
   of ``W~^l``, ``F^l``, ``Z^l``. Given all of those, ``W~^{lT} = V_D F + (I - P_D) Z`` is i.i.d.
   ``N(0, s^2)`` by 1 (``V_D`` is fixed by ``D^l``; ``F^l``, ``Z^l`` are fresh). A conditional law
   that does not depend on the condition means independence: by induction from ``l = L`` down,
   the ``W~^l`` are i.i.d. Gaussian, independent of one another and of ``(x^0, b, c, every G)``.
3. *Independence of layers.* ``V^l`` is a function of ``x^{l-1}``, hence of
   ``(x^0, b, W^1..W^{l-1})``. ``G^l`` and ``W~^l`` are independent of
   ``(x^0, b, c, G^{<l}, W~^{<l})`` and of each other (2, and distinct ``fold_in`` keys: ``G`` and
   ``F`` of layer ``l`` come from ``fold_in(fold_in(weights_key, l), 0 | 1)``), so by 1, given
   ``(x^0, b, c, W^1..W^{l-1})``, ``W^l`` is i.i.d. ``N(0, s^2)``: a fresh Gaussian matrix
   independent of the inputs, biases, cotangent key and earlier layers, as in the dense path. QED.

Only ``span(V) ⊇ rowspace(X)`` and orthonormality were used: ``V`` may span more than that.

The layer-1 input gradient ``dL/dx^0`` is not returned by the engine, so it is not computed.

Rank deficiency (dead ReLUs, zero or duplicated inputs, batch > width). The argument needs only an
orthonormal ``V`` with ``span(V) ⊇ rowspace(X)``, and ``V`` may span more. ``V`` is the Q
factor of the Householder QR of ``X^T`` (``n_in x k``, all ``k = min(B, n_in)`` columns kept). It is
orthonormal to working precision for every input, rank-deficient or zero included (a zero column
gives an identity reflector), and each row ``x_b`` lies in its span up to ``c eps ||x_b||``
(Householder QR's columnwise backward error, Higham 2002, Thm 19.4): a relative error per example
at the level of float32 rounding, as in the dense product. So no tolerance is needed and none is
used: dropping a direction of the row space would be wrong, keeping one outside it is harmless.
``X V`` is computed from ``X`` itself, so a zero row of ``X`` gives an exactly zero row of
``H - b``, an all-zero ``X`` gives ``H = b`` exactly and an all-zero ``D`` gives ``dL/dX = 0``
exactly; nothing is divided by a singular value or a diagonal of ``R``, so nothing is NaN.

Why QR and not an SVD with a rank tolerance: the law depends only on ``span(V)``, but the *sample*
``(X V) G`` depends on the basis itself. Singular vectors are defined only up to sign (and rotation
within clusters of equal singular values), and a batched and an unbatched SVD of the same ``X``
were measured to pick different signs, so a seed's tensors changed by O(1) with the number of
seeds beside it; with sign fixing they still differed by up to 4e-4 (singular vectors are
accurate only to ``eps / gap``). The Householder Q is a continuous function of ``X`` (of full
rank), and a seed's tensors came out bitwise identical batched and alone. QR is also cheaper.

Non-finite values (overflowed networks, e.g. deep ReLU with N(0, 1) weights). A row of ``X`` (or
``D``) with an inf or NaN entry is left out of the basis and its row of ``H`` (``dL/dX``) is NaN;
the dense path makes that row inf or NaN. Non-finite counts therefore agree, every finite row is
exact, and only values downstream of an overflowed row may differ (``tanh(inf) = 1`` vs NaN).

Cost per layer and seed, with ``k = min(B, n_in)``, ``k_D = min(B, n_out)``:

* random numbers: ``k n_out + k_D n_in <= B (n_in + n_out)`` normals, against ``n_in n_out`` dense
  (twice that with ``remat``, which redraws ``W`` in the backward pass);
* flops: two thin QRs of ``n_in x B`` and ``n_out x B`` matrices, ``O(B^2 (n_in + n_out))``, and
  matmuls of the same order (``X V``, ``(XV) G``, ``D V_D``, ``(D V_D) F``, ``D G^T V^T``, the
  projection, and the forward recomputed once for the vjp), against ``4 B n_in n_out`` dense;
* memory: kept per layer ``V`` (``k n_in``), ``G`` (``k n_out``) and ``X V`` (``B k``), the same
  order as the ``(batch, units)`` tensors the engine keeps anyway; no ``n_in x n_out`` buffer ever
  exists (dense: about four per live matrix, see ``dense.estimate_memory``).

Measured (``_demo``: width 8192, depth 20, batch 16, tanh, jit, one seed, on a 2-core CPU shared
with other jobs, so +-50%): fast 1.1 s per seed with the engine's statistics (0.3 s for the
tensors alone), dense 35-68 s. On a busy CPU, ``OPENBLAS_NUM_THREADS=1`` matters: the QRs go
through LAPACK, whose threads made them 40x slower under contention (1.7 s per seed).

Only zero-mean, untruncated i.i.d. Gaussian inits qualify (:func:`applicable`): orthogonal,
uniform, truncated, sparse or non-zero-mean weights lack the rotational invariance of point 1.

The orthonormalization on accelerators (issue 13). On an H200 the fast path measured 3.7 ms per
seed at 10 x 4096, batch 16, slower than the dense path's 2.2 ms: its 20 small QRs per seed go
through cuSOLVER one matrix at a time. Two ways out were weighed; ``orthonormalization=`` of
:func:`sample_tensors` selects among the exact ones (:data:`ORTHONORMALIZATIONS`):

* ``"householder"`` (the default on every backend): ``jnp.linalg.qr``, LAPACK on CPU, cuSOLVER on
  GPU.
* ``"householder_wy"``: the same Householder QR written in JAX: ``k`` reflector steps of
  vector operations on the ``n x k`` panel (each step a few fused operations over all vmapped
  seeds at once, where cuSOLVER loops over the matrices), and ``V`` formed from the compact WY
  representation ``I - Y T Y^T`` (Schreiber & Van Loan 1989) by two matmuls at ``"highest"``
  precision. It is
  Householder QR, so the exactness argument above holds unchanged (backward error ``c eps``
  per row, every rank; zero columns give ``tau = 0``); measured on float32 inputs with exact
  rank deficiency (duplicated rows, rows 1 - 1e-8 correlated): orthonormality 2e-6, span
  residual 2e-6 relative per row, against 7e-7 and 6e-7 for LAPACK. On this CPU it is 4x slower
  than LAPACK (3.0 vs 0.7 ms per 4096 x 16 QR); its GPU speed is not yet measured
  (``benchmarks/backend_speed.py`` times it), so it is not a default anywhere.
* CholeskyQR2 (``R = chol(X X^T)``, ``V = X^T R^{-1}``, twice) and the shifted CholeskyQR3 of
  Fukaya et al. (2020, https://doi.org/10.1137/18M1218212), made of matmuls, were **not** adopted.
  ``V = X^T R^{-1}`` has the rank of ``X``: when the rows of ``X`` are linearly dependent (dead
  ReLUs leaving fewer live units than examples, zero or duplicated examples, a collapsed deep
  network whose examples are nearly parallel) it cannot have ``k`` orthonormal columns. Without
  a shift the Cholesky factorization of the singular Gram matrix breaks down; a shift keeps the
  first pass finite but leaves the singular values of ``V`` at ``sigma / sqrt(sigma^2 + s)``,
  strictly between 0 and 1 for directions with ``sigma`` near ``sqrt(s)``, so ``V V^T`` is not a
  projector and ``H`` has the wrong covariance; and the unshifted passes that follow break down on
  the (near-)null directions. Measured in float32 at 4096 x 16: both returned NaN for duplicated
  rows, zero rows, 3 live units and rows correlated at 1 - 1e-8 (while exact to 3e-7 on Gaussian
  rows). A per-seed fallback to Householder would run both paths under ``vmap`` (a batched
  ``lax.cond`` is a select), costing more than Householder alone. float64 Gram matrices would
  rescue most cases on GPU but need ``jax_enable_x64`` and do not exist on TPU.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from initjax._precision import matmul_precision
from initjax.config import NetworkConfig
from initjax.engine.sampler import Sampler
from initjax.engine.sampling import (
    draw_bias,
    draw_cotangent,
    draw_inputs,
    layer_forward,
    split_seed_key,
)
from initjax.engine.stats import LayerStats, MeasureOptions, stats_of_layers

__all__ = [
    "ORTHONORMALIZATIONS",
    "SAMPLER",
    "applicable",
    "estimate_memory",
    "linear_backward",
    "orthonormal_basis",
    "sample_stats",
    "sample_tensors",
]

# fold_in tags under fold_in(weights_key, layer): the forward factor G and the complement factor F
_TAG_G = 0
_TAG_F = 1
_DTYPES = ("float32", "float64")
# how V is computed (module docstring, "The orthonormalization on accelerators"); first: default
ORTHONORMALIZATIONS = ("householder", "householder_wy")
_HIGHEST = jax.lax.Precision.HIGHEST


def applicable(config: NetworkConfig) -> str | None:
    """None if :func:`sample_tensors` applies to ``config``, else the reason it does not.

    It applies when every weight init is literally ``std * normal(key, shape)`` for every weight
    shape (``Initializer.gaussian_std(shape)`` is not None: zero-mean, untruncated i.i.d. Gaussian,
    e.g. ``normal``, ``he_normal``, ``xavier_normal``, ``lecun_normal``) and the dtype is float32 or
    float64 (the factorizations are not defined in half precision).

    Raises:
      TypeError: if ``config`` is not a :class:`~initjax.config.NetworkConfig`.
    """
    if not isinstance(config, NetworkConfig):
        raise TypeError(f"config must be an initjax NetworkConfig, got {type(config).__name__}")
    if config.dtype not in _DTYPES:
        return f"dtype {config.dtype!r}: the fast path factorizes in float32 or float64 only"
    init = config.init
    spec = getattr(init, "spec", None) or getattr(init, "__name__", type(init).__name__)
    gaussian_std = getattr(init, "gaussian_std", None)
    if gaussian_std is None:
        return f"init {spec!r} is a custom function: not known to be i.i.d. Gaussian"
    for shape in config.weight_shapes:
        try:
            std = gaussian_std(shape)
        except (TypeError, ValueError) as err:
            return f"init {spec!r} cannot fill weight shape {shape}: {err}"
        if std is None:
            return f"init {spec!r} is not an i.i.d. zero-mean untruncated Gaussian (shape {shape})"
    return None


class _Basis(NamedTuple):
    """An orthonormal basis whose span contains the rows of a ``(batch, n)`` matrix ``X``."""

    coords: jax.Array  # (batch, k) X V, k = min(batch, n): NaN rows where X has a non-finite entry
    vt: jax.Array  # (k, n) V^T: orthonormal rows


def _row_basis(x: jax.Array, orthonormalization: str = "householder") -> _Basis:
    """``V`` = the orthonormal factor of the Householder QR of ``x^T``, all ``min(batch, n)``
    columns kept (module docstring, *Rank deficiency*)."""
    bad = ~jnp.all(jnp.isfinite(x), axis=1, keepdims=True)  # (batch, 1)
    xc = jnp.where(bad, 0.0, x).astype(x.dtype)
    scale = jnp.max(jnp.abs(xc))
    # max-abs scaling first: the span is unchanged, and no reflector norm can overflow
    scaled = xc / jnp.where(scale > 0, scale, 1.0).astype(x.dtype)
    q = orthonormal_basis(scaled.T, orthonormalization)  # (n, k)
    coords = jnp.where(bad, jnp.nan, xc @ q).astype(x.dtype)
    return _Basis(coords, q.T)


def orthonormal_basis(a: jax.Array, orthonormalization: str = "householder") -> jax.Array:
    """The Q factor (``n x min(n, k)``, orthonormal columns) of the Householder QR of ``a``
    (``n x k``): every column of ``a`` lies in its span to ``c eps`` of its norm, whatever the
    rank of ``a`` (Higham 2002, Thm 19.4). ``orthonormalization``: ``"householder"``
    (``jnp.linalg.qr``) or ``"householder_wy"`` (in JAX, see the module docstring; with
    ``k >= n`` it returns the identity, an exact basis of ``R^n``).

    Raises:
      ValueError: for another ``orthonormalization``, naming the allowed ones.
    """
    _check_orthonormalization(orthonormalization)
    if orthonormalization == "householder":
        return jnp.linalg.qr(a)[0]
    if a.shape[1] >= a.shape[0]:  # k >= n (batch >= width): the identity is an exact basis of R^n
        return jnp.eye(a.shape[0], dtype=a.dtype)
    return _householder_wy(a)


def _householder_wy(a: jax.Array) -> jax.Array:
    """Householder QR of ``a`` (``n x k``, ``k <= n``) in JAX: ``k`` reflectors ``H_j = I -
    tau_j v_j v_j^T`` (``v_j[j] = 1``, zero above; LAPACK's sign convention, ``tau = 0`` for a
    zero column), accumulated as ``H_0 ... H_{k-1} = I - Y T Y^T`` with ``T`` upper triangular
    (Schreiber & Van Loan 1989); returns the first ``k`` columns of that product."""
    n, k = a.shape
    dtype = a.dtype
    rows = jnp.arange(n)

    def step(j, carry):
        panel, y, t = carry
        col = panel[:, j]
        x = jnp.where(rows >= j, col, 0.0)
        alpha = col[j]
        norm = jnp.sqrt(jnp.sum(x * x))
        nonzero = norm > 0
        beta = -jnp.where(alpha >= 0, norm, -norm)
        denom = jnp.where(nonzero, alpha - beta, 1.0)  # |alpha - beta| >= norm: no cancellation
        v = jnp.where(rows > j, x / denom, 0.0) + (rows == j).astype(dtype)
        tau = jnp.where(nonzero, (beta - alpha) / jnp.where(nonzero, beta, 1.0), 0.0).astype(dtype)
        panel = panel - tau * v[:, None] * jnp.dot(v, panel, precision=_HIGHEST)[None, :]
        # T's column j: -tau T Y^T v above the diagonal (Y's columns >= j are still zero), tau on it
        tcol = -tau * jnp.dot(t, jnp.dot(v, y, precision=_HIGHEST), precision=_HIGHEST)
        t = t.at[:, j].set(jnp.where(jnp.arange(k) == j, tau, tcol))
        return panel, y.at[:, j].set(v), t

    init = (a, jnp.zeros((n, k), dtype), jnp.zeros((k, k), dtype))
    _, y, t = jax.lax.fori_loop(0, k, step, init, unroll=True)
    t_yk = jnp.dot(t, y[:k].T, precision=_HIGHEST)
    return jnp.eye(n, k, dtype=dtype) - jnp.dot(y, t_yk, precision=_HIGHEST)


def _check_orthonormalization(value: str) -> None:
    if value not in ORTHONORMALIZATIONS:
        raise ValueError(f"orthonormalization must be one of {ORTHONORMALIZATIONS}; got {value!r}")


def _layer_std(config: NetworkConfig, shape: tuple[int, int]) -> float:
    std = config.init.gaussian_std(shape)
    if std is None:  # applicable() was checked first; keep the invariant loud
        raise ValueError(f"init {config.init!r} has no Gaussian std for shape {shape}")
    return std


def _normal(key: jax.Array, shape: tuple[int, int], std: float, dtype: Any) -> jax.Array:
    # the engine's Gaussian expression: normal(key, shape, dtype) * std
    return jax.random.normal(key, shape, dtype) * jnp.asarray(std, dtype)


def _forward_layer(config: NetworkConfig, keys: Any, layer: Any, x: jax.Array, shape: tuple,
                   orthonormalization: str = "householder"):
    """``(h, y, out, coords, vt, g)`` of one layer: the engine's forward with ``X W = (X V) G``."""
    dtype = config.jnp_dtype
    basis = _row_basis(x, orthonormalization)
    k_w = jax.random.fold_in(keys.weights, layer)
    std = _layer_std(config, shape)
    g = _normal(jax.random.fold_in(k_w, _TAG_G), (basis.vt.shape[0], shape[1]), std, dtype)
    b = draw_bias(config, keys, layer, shape[1])
    zeros = jnp.zeros((x.shape[0], shape[1]), dtype)
    h, y, out = layer_forward(config, basis.coords, g, b, zeros, zeros)
    return h, y, out, basis.coords, basis.vt, g


def _nonlinear_backward(config: NetworkConfig, keys: Any, layer: Any, coords, g, dout) -> jax.Array:
    """``dL/dh`` from ``dL/d out``: the vjp of the engine's layer through a zero probe on ``h``."""
    b = draw_bias(config, keys, layer, g.shape[1])
    zeros = jnp.zeros_like(dout)

    def out_of_probe(probe_h):
        return layer_forward(config, coords, g, b, probe_h, zeros)[2]

    _, pull = jax.vjp(out_of_probe, zeros)
    return pull(dout)[0]


def linear_backward(keys: Any, layer: Any, dh, vt, g, std: float, n_in: int,
                    orthonormalization: str = "householder") -> jax.Array:
    """A sample of ``dL/dX = D W^T`` given the forward draw: ``D G^T V^T + (D W~^T)(I - V V^T)``."""
    d = _row_basis(dh, orthonormalization)
    k_f = jax.random.fold_in(jax.random.fold_in(keys.weights, layer), _TAG_F)
    f = _normal(k_f, (d.vt.shape[0], n_in), std, dh.dtype)
    e = d.coords @ f  # (batch, n_in): exactly a sample of D W~^T
    inside = (dh @ g.T) @ vt  # D (V G)^T: the part of W that H revealed
    return inside + (e - (e @ vt.T) @ vt)


def sample_tensors(
    config: NetworkConfig,
    opts: Any,
    seed_key: jax.Array,
    inputs: jax.Array | None,
    *,
    orthonormalization: str = "householder",
):
    """One seed's per-layer tensors ``(x_prev, h, y, out, dh, dx)``, sampled by the exact fast path.

    The conventions are those of ``dense.seed_tensors`` for one config: stacked
    ``(layer, batch, units)`` arrays when ``config.uniform``, else lists of ``(batch, units)``
    arrays; ``dh`` is ``dL/dh^l`` and ``dx`` is ``dL/dx^l`` (the layer's output). Inputs (drawn from
    ``seed_key`` unless given), biases and the cotangent are the engine's own, from the same keys;
    the weights enter only through the products ``X W`` and ``D W^T``, sampled from their exact
    joint law (module docstring). Works under ``jax.jit`` and ``jax.vmap`` over ``seed_key``.

    Args:
      config: a network for which :func:`applicable` returns None.
      opts: the engine's :class:`~initjax.engine.stats.MeasureOptions` (only ``opts.cotangent``
        is used here).
      seed_key: this seed's PRNG key (``fold_in(base_key, seed)`` in the engine).
      inputs: optional ``(batch, in_width)`` input; None draws it as the config says.
      orthonormalization: how the bases ``V`` are computed, one of :data:`ORTHONORMALIZATIONS`
        (module docstring): ``"householder"`` (default) or ``"householder_wy"``. Both are exact;
        they give different samples of the same law.

    Returns:
      ``(x_prev, h, y, out, dh, dx)``, ready for :func:`~initjax.engine.stats.stats_of_layers`.

    Raises:
      ValueError: if the fast path does not apply to ``config``, or for an unknown
        ``orthonormalization``.
    """
    reason = applicable(config)
    if reason is not None:
        raise ValueError(f"the fast path does not apply: {reason}")
    _check_orthonormalization(orthonormalization)
    keys = split_seed_key(seed_key)
    dtype = config.jnp_dtype
    x0 = draw_inputs(config, keys.inputs) if inputs is None else inputs.astype(dtype)
    if config.uniform:
        return _uniform_tensors(config, opts, keys, x0, orthonormalization)
    return _ragged_tensors(config, opts, keys, x0, orthonormalization)


def _uniform_tensors(config: NetworkConfig, opts: Any, keys: Any, x0: jax.Array, ortho: str):
    n, depth = config.widths[0], config.depth
    shape = (n, n)
    std = _layer_std(config, shape)
    layers = jnp.arange(depth)

    def forward(x, layer):
        h, y, out, coords, vt, g = _forward_layer(config, keys, layer, x, shape, ortho)
        return out, (h, y, out, coords, vt, g)

    x_out, (h, y, out, coords, vt, g) = jax.lax.scan(forward, x0, layers)
    cot = draw_cotangent(config, opts.cotangent, x_out, keys.cotangent)

    def backward(dout, inp):  # layers depth-1 .. 1: each also passes dL/dx^{l-1} down
        layer, c, v, gg = inp
        dh = _nonlinear_backward(config, keys, layer, c, gg, dout)
        return linear_backward(keys, layer, dh, v, gg, std, n, ortho), (dh, dout)

    rest = (layers[1:], coords[1:], vt[1:], g[1:])
    dx0, (dh_rest, dx_rest) = jax.lax.scan(backward, cot, rest, reverse=True)
    dh0 = _nonlinear_backward(config, keys, 0, coords[0], g[0], dx0)  # dL/dx^0 is not needed
    dh = jnp.concatenate([dh0[None], dh_rest], axis=0)
    dx = jnp.concatenate([dx0[None], dx_rest], axis=0)
    x_prev = jnp.concatenate([x0[None], out[:-1]], axis=0)
    return x_prev, h, y, out, dh, dx


def _ragged_tensors(config: NetworkConfig, opts: Any, keys: Any, x0: jax.Array, ortho: str):
    shapes = config.weight_shapes
    x, hs, ys, outs, saved = x0, [], [], [], []
    for layer, shape in enumerate(shapes):
        h, y, x, coords, vt, g = _forward_layer(config, keys, layer, x, shape, ortho)
        hs.append(h)
        ys.append(y)
        outs.append(x)
        saved.append((coords, vt, g))
    dout = draw_cotangent(config, opts.cotangent, x, keys.cotangent)
    dhs, dxs = [None] * len(shapes), [None] * len(shapes)
    for layer in reversed(range(len(shapes))):
        coords, vt, g = saved[layer]
        dxs[layer] = dout
        dhs[layer] = _nonlinear_backward(config, keys, layer, coords, g, dout)
        if layer:
            std = _layer_std(config, shapes[layer])
            dout = linear_backward(keys, layer, dhs[layer], vt, g, std, shapes[layer][0], ortho)
    return [x0, *outs[:-1]], hs, ys, outs, dhs, dxs


def sample_stats(
    config: NetworkConfig, opts: MeasureOptions, seed_key: jax.Array, inputs: jax.Array | None, *,
    orthonormalization: str = "householder",
) -> LayerStats:
    """:class:`~initjax.engine.stats.LayerStats` (axes ``(layer, ...)``) of one seed by the fast
    path: :func:`~initjax.engine.stats.stats_of_layers` on :func:`sample_tensors`."""
    tensors = sample_tensors(config, opts, seed_key, inputs, orthonormalization=orthonormalization)
    return stats_of_layers(config.activation, opts, *tensors)


def estimate_memory(config: NetworkConfig, *, remat: bool = True, group: int = 1) -> int:
    """Estimated peak bytes of temporaries for one seed of the fast path (cf.
    ``dense.estimate_memory``; ``remat`` changes nothing here, and the fast path runs one config,
    ``group`` 1).

    About eight ``(batch, width)`` tensors per layer kept for the statistics (as the engine), plus
    per layer ``V`` (``k n_in``), ``G`` (``k n_out``) and ``X V`` (``B k``), plus a few
    ``(batch, width)`` work buffers of the QRs and the backward projection.
    """
    itemsize = max(jnp.dtype(config.dtype).itemsize, 4)
    b = config.batch
    kept = 8 * b * sum(config.widths)
    factors = 0
    for n_in, n_out in config.weight_shapes:
        k = min(b, n_in)
        factors += k * n_in + k * n_out + b * k
    work = 8 * b * max(config.widths) + 2 * b * b
    return int((kept + factors + work) * itemsize)


def _seed_tensors(configs, opts, seed_key, inputs, stds=None) -> list:
    """The protocol's ``seed_tensors``: the fast path runs one config and takes no scales."""
    del stds  # the scale is read from the config's init (sample_tensors)
    return [sample_tensors(configs[0], opts, seed_key, inputs)]


def _seed_stats(configs, opts, seed_key, inputs, stds=None) -> tuple:
    """The protocol's ``seed_stats``: one :class:`LayerStats` for the one config."""
    del stds
    return (sample_stats(configs[0], opts, seed_key, inputs),)


def _prepare(configs: tuple) -> tuple[tuple, None]:
    return configs, None  # the scales stay in the configs: the fast path compiles per config


# the protocol's fields in order: name, applicable, estimate_memory, prepare, seed_tensors, seed_stats
SAMPLER = Sampler("fast", applicable, estimate_memory, _prepare, _seed_tensors, _seed_stats)


def _demo(width: int = 8192, depth: int = 20, batch: int = 16, repeats: int = 2,
          precision: str | None = None) -> dict:
    """Seconds per seed, fast vs dense, for one jit-compiled seed (compile time excluded).

    Prints and returns ``{"fast": s, "dense": s, "fast_compile": s, "dense_compile": s}``.
    Run as ``python -m initjax.engine.fast``.
    """
    import time

    config = NetworkConfig(
        depth=depth, width=width, batch=batch, init="lecun_normal", activation="tanh"
    )
    from initjax.engine import dense as dense_sampler

    opts = MeasureOptions((-1.0, 1.0), (-1.0, 1.0), 40, "normal", True, 0.01)
    base = jax.random.key(0, impl="philox2x32")  # the engine's default PRNG
    fast = jax.jit(lambda k: sample_stats(config, opts, k, None))
    dense = jax.jit(lambda k: dense_sampler.seed_stats((config,), opts, k, None)[0])
    result: dict[str, float] = {}
    for name, fn in (("fast", fast), ("dense", dense)):
        with matmul_precision(precision):  # traced and called at the policy's precision
            t0 = time.perf_counter()
            jax.block_until_ready(fn(jax.random.fold_in(base, 0)))
            result[name + "_compile"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for s in range(1, repeats + 1):
                jax.block_until_ready(fn(jax.random.fold_in(base, s)))
            result[name] = (time.perf_counter() - t0) / repeats
    print(
        f"width {width}, depth {depth}, batch {batch} on {jax.default_backend()}: "
        f"fast {result['fast']:.4f} s/seed, dense {result['dense']:.3f} s/seed "
        f"(x{result['dense'] / result['fast']:.0f}); first call incl. compile: "
        f"fast {result['fast_compile']:.2f} s, dense {result['dense_compile']:.2f} s"
    )
    return result


if __name__ == "__main__":  # pragma: no cover
    _demo()
