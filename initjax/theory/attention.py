"""Mean-field theory of transformers at initialization with uniform attention.

When the query and key weights are zero (``qk_init="zeros"``, Xiong et al. 2020's assumption) or
the logit scale is 0, every attention row is uniform, and in the wide limit of muP's logit scale
``1/d_head`` the logits vanish as ``O(d_head^-1/2)``, so the same holds up to that error. Then::

    Attn(U) = P U W_V W_O,   P = 11^T / T   (causal: P_ij = 1/i for j <= i, else 0)

Non-causal, every token gets the mean token times ``W_V W_O``. :func:`predict_attention` follows
a :class:`~initjax.network.Network` of :class:`~initjax.network.Attention` blocks (``tokens=T``)
block by block, exactly in ``T`` and in the infinite-width limit ``D -> inf``, by the token
covariance of one stream coordinate::

    K_tt' = E[x_ti x_t'i]   (T x T; the input's K = v ((1 - c) I + c 11^T))

with ``v, c`` the network's ``input_variance`` and ``input_correlation``. With ``sigma_v^2 = D
E[W_V^2]``, ``sigma_o^2 = D E[W_O^2]`` (the initializers' exact second moments, as
:mod:`initjax.theory.residual` reads Dense layers), ``sigma_1^2 = D E[W_1^2]``, ``sigma_2^2 =
m E[W_2^2]`` (``m`` the MLP width) the maps are:

* norm (layer or RMS, per token over channels; the channel mean of a token vanishes as ``D ->
  inf``): ``K_u = N^-1/2 K N^-1/2``, ``N = diag(K_tt + eps)``; ``norm="none"``: ``K_u = K``.
* attention branch: ``(W_V W_O)_ij`` has variance ``sigma_v^2 sigma_o^2 / D`` and independent
  entries, so ``K_f = A^2 sigma_v^2 sigma_o^2 P K_u P^T``. Non-causal, every entry of ``K_f`` is
  ``A^2 sigma_v^2 sigma_o^2 E|ubar|^2 / D = A^2 sigma_v^2 sigma_o^2 (q_u + (T - 1) k_u) / T``
  (``q_u``, ``k_u`` the normalized tokens' diagonal and off-diagonal): the mean token has
  squared norm ``k_u D`` plus the finite-``T`` term ``(q_u - k_u) D / T``, and the branch is the
  same vector for all tokens.
* MLP branch ``phi(u W_1) W_2``: with ``h ~ N(0, sigma_1^2 K_u)`` per hidden unit, ``K_f = A^2
  sigma_2^2 Phi``, ``Phi_tt' = E phi(h_t) phi(h_t')`` (:func:`initjax.theory.gaussian_expectation`
  / ``gaussian_expectation_2d``, the mean-field kernel maps of Poole et al. 2016), pair by pair
  with each pair's own variances and correlation: after causal attention the tokens are not
  exchangeable (token ``t`` averages ``t`` tokens); the zero-mean ``W_2`` makes the output's
  mean 0, while ``Phi`` keeps ``E phi(h_t) E phi(h_t')`` off the diagonal.
* residual sum: the branch's last weights are zero-mean and independent of ``x``, so
  ``K' = K + K_f`` (pre: ``x + A f(norm(x))``; post: ``norm(x + A f(x))``: the norm acts on
  the sum ``S = K + K_f``); without residual ``K' = K_f`` (then ``norm(K_f)`` for post).

Reported per block: ``q`` the mean of ``diag K`` (the engine's ``act_second_moment``),
``cosine`` the mean over ``t != t'`` of ``K_tt' / sqrt(K_tt K_t't')`` (the engine's ``cosine``),
``branch_var`` / ``mlp_branch_var`` the mean of ``diag K_f`` (the engine's), ``sum_q`` the
sum's second moment before a post norm (of the block's last sub-block), ``attn_entropy`` = ``log
T`` (causal: ``log(T!) / T``).

Pre-LN, non-causal, no MLP, ``sigma_v = sigma_o = A = 1``: ``q_l = q_{l-1} + r_l``, ``k_l =
k_{l-1} + r_l`` with ``r_l = (q_{l-1} + (T - 1) k_{l-1}) / (T (q_{l-1} + eps))``: ``q - k`` stays
``(1 - c_0) q_0``, so the token cosine rises to 1 as ``1 - cos_l = (1 - c_0) q_0 / q_l`` exactly,
and since ``r_l -> 1``, only like ``1 / l`` (no rank collapse with the skip, Dong et al. 2021).

Backward, under gradient independence (Schoenholz et al. 2017), the token covariance ``G`` of
``dL/dx`` (``G = I`` at the output: the engine's N(0, 1) cotangent) goes back through each
sub-block as ``G <- G + A^2 N^-1/2 sigma_v^2 sigma_o^2 P^T G P N^-1/2`` (attention, pre) and
``G <- G + A^2 N^-1/2 sigma_1^2 sigma_2^2 (Psi o G) N^-1/2`` (MLP, ``Psi_tt' = E phi'(h_t)
phi'(h_t')``), a post norm first multiplying ``G`` by ``N^-1/2 . N^-1/2`` (the projections of the
norm's Jacobian remove ``O(1/D)``). The weight gradients ``sum_{b,t} u_bt^T d_bt`` then have
``E||dL/dW||_F^2 = B n_in n_out sum_tt' (K_in o G_out)_tt'`` (:func:`predict_attention`);
``dL/dW_Q = dL/dW_K = 0`` exactly (the keys and queries are 0).

Xiong et al. 2020 (their Lemma 2, with Xavier weights, one head, ``W_Q = W_K = 0`` and a ReLU
FFN of width ``d``): Post-LN's sum before the FFN's norm has ``E||x||^2 = (3/2) d`` (``d`` from
the normalized stream plus ``d/2`` from ``ReLU``), and Pre-LN's stream ``(1 + l/2) d <=
E||x_l||^2 <= (1 + 3l/2) d`` (each FFN adds ``d/2``, each attention between 0 and ``d``):
:func:`xiong_network` builds that setting and :func:`xiong_bounds` gives the bounds; the exact
value in between is :func:`predict_attention`'s ``q``.

    >>> from initjax.network import Network
    >>> net = Network.transformer(3, 256, 1, 8, qk_init="zeros", norm_eps=0.0)
    >>> p = predict_attention(net)
    >>> p.q.round(4).tolist()     # 1 + 1/8, then + (q + 7 k) / (8 q): q - k stays 1
    [1.125, 1.3472, 1.6977]
    >>> p.cosine.round(4).tolist()  # 1 - 1 / q
    [0.1111, 0.2577, 0.411]

References:
  Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture",
  https://arxiv.org/abs/2002.04745 (Lemma 2, Theorem 1).
  Noci et al. 2022, "Signal Propagation in Transformers: Theoretical Perspectives and the Role of
  Rank Collapse", https://arxiv.org/abs/2206.03126.
  Dong, Cordonnier & Loukas 2021, https://arxiv.org/abs/2103.03404.
  Poole et al. 2016, https://arxiv.org/abs/1606.05340; Schoenholz et al. 2017,
  https://arxiv.org/abs/1611.01232.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initjax import initializers as _initializers
from initjax._checks import check_choice, check_int
from initjax.network import Attention, Network
from initjax.theory.meanfield import (
    DEFAULT_NUM,
    DEFAULT_NUM_2D,
    gaussian_expectation,
    gaussian_expectation_2d,
)

__all__ = ["AttentionPrediction", "predict_attention", "uniform_attention_matrix", "xiong_bounds",
           "xiong_network"]


class AttentionPrediction(NamedTuple):
    """Mean-field predictions per block ``l = 1..L`` (float64 arrays of shape ``(depth,)``
    unless said otherwise); the matching :class:`~initjax.engine.attention.AttentionStats` field
    is named in each comment."""

    q: np.ndarray  # mean_t E[x_ti^2] after block l (act_second_moment, ~act_var)
    cosine: np.ndarray  # mean over t != t' of K_tt' / sqrt(K_tt K_t't') (cosine)
    branch_var: np.ndarray  # mean_t E[(A Attn)_ti^2] (branch_var)
    mlp_branch_var: np.ndarray  # mean_t E[(A MLP)_ti^2] (mlp_branch_var; nan without MLP)
    sum_q: np.ndarray  # second moment of the last sub-block's sum before a post norm (nan for pre)
    attn_entropy: np.ndarray  # log T (causal: log(T!) / T) (attn_entropy)
    grad: np.ndarray  # mean_t E[(dL/dx_ti)^2] after block l, N(0, 1) cotangent (grad_second_moment)
    grad_norm_v: np.ndarray  # sqrt(E ||dL/dW_V||_F^2) (grad_norm_v); q and k are exactly 0
    grad_norm_o: np.ndarray  # (grad_norm_o)
    grad_norm_mlp_in: np.ndarray  # (grad_norm_mlp_in; nan without MLP)
    grad_norm_mlp_out: np.ndarray  # (grad_norm_mlp_out; nan without MLP)
    cov: np.ndarray  # (depth, T, T): the token covariance K of one stream coordinate after block l
    exact: bool  # True when attention is exactly uniform (zero Q/K or logit scale 0); False: wide limit


def uniform_attention_matrix(tokens: int, causal: bool = False) -> np.ndarray:
    """The ``(T, T)`` attention matrix of constant logits: ``11^T / T``, or causal ``P_ij = 1/i``
    for ``j <= i`` (1-based) and 0 otherwise.

    >>> uniform_attention_matrix(3, causal=True).round(3).tolist()
    [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.333, 0.333, 0.333]]
    """
    t = check_int("tokens", tokens, minimum=1)
    if not isinstance(causal, bool):
        raise TypeError(f"causal must be a bool, got {causal!r}")
    if not causal:
        return np.full((t, t), 1.0 / t)
    mask = np.tril(np.ones((t, t)))
    return mask / mask.sum(axis=1, keepdims=True)


def xiong_bounds(depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Xiong et al. 2020, Lemma 2 (Pre-LN): ``(1 + l/2) <= E||x_l||^2 / d <= (1 + 3l/2)`` for
    ``l = 1..depth`` (an input with ``E||x_0||^2 = d``); returns ``(lower, upper)`` float64 arrays.
    Post-LN's sum before the FFN's norm is ``(3/2) d`` at every layer.

    >>> [b.tolist() for b in xiong_bounds(2)]
    [[1.5, 2.0], [2.5, 4.0]]
    """
    depth = check_int("depth", depth, minimum=1)
    l = np.arange(1, depth + 1, dtype=np.float64)
    return 1.0 + l / 2.0, 1.0 + 1.5 * l


def xiong_network(depth: int, width: int, tokens: int, batch: int = 8, *, norm_position: str = "pre",
                  norm_eps: float = 1e-5, **network_fields: Any) -> Network:
    """Xiong et al. 2020's setting as a :class:`~initjax.network.Network`: one head, Xavier
    (``glorot_normal``) weights, ``W_Q = W_K = 0`` (uniform attention), a ReLU FFN of width
    ``d = width``, layer norm ``"pre"`` or ``"post"``, branch scale 1.

    >>> xiong_network(2, 64, 4).stages[0].block.mlp_width
    64
    """
    check_choice("norm_position", norm_position, ("pre", "post"))
    return Network.transformer(depth, width, 1, tokens, batch, mlp=True, mlp_width=width, mlp_activation="relu",
                               init="glorot_normal", mlp_init="glorot_normal", qk_init="zeros",
                               norm="layer", norm_position=norm_position, norm_eps=norm_eps,
                               **network_fields)


# -- the maps -------------------------------------------------------------------------------------
def _second_moment(init: Any, shape: tuple[int, int], where: str) -> float:
    if not isinstance(init, _initializers.Initializer):
        raise ValueError(f"{where} is a user function ({init!r}): its second moment is unknown, so "
                         "nothing can be predicted; use an initjax initializer spec")
    return float(init.second_moment(shape))


def _norm(kind: str, eps: float, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normalized covariance, per-token factor 1/sqrt(K_tt + eps))."""
    if kind == "none":
        return k, np.ones(k.shape[0])
    d = np.diag(k) + eps
    inv = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)
    return k * np.outer(inv, inv), inv


@functools.cache
def _pair_moments_fn(act, num: int, num_2d: tuple[int, int]) -> Any:
    """A jitted ``(s, s', rho) -> [E phi(h) phi(h'), E phi'(h) phi'(h')]`` for ``h = s z``,
    ``h' = s' z'`` with ``(z, z')`` unit Gaussians of correlation ``rho`` (``rho = 1`` and ``s =
    s'``: the one-dimensional rule, ``E phi(h)^2``), compiled once per activation and rule size."""

    def dphi(u):
        return jax.jvp(act, (u,), (jnp.ones_like(u),))[1]

    def fn(s1, s2, rho, diagonal):
        one = jnp.ones((), s1.dtype)
        pair = jnp.stack([
            gaussian_expectation_2d(lambda a, b: act(s1 * a) * act(s2 * b), one, rho, num_2d),
            gaussian_expectation_2d(lambda a, b: dphi(s1 * a) * dphi(s2 * b), one, rho, num_2d)])
        diag = jnp.stack([gaussian_expectation(lambda u: act(s1 * u) ** 2, one, num),
                          gaussian_expectation(lambda u: dphi(s1 * u) ** 2, one, num)])
        return jnp.where(diagonal, diag, pair)

    return jax.jit(fn)


def _mlp_kernels(act, k_h: np.ndarray, num: int, num_2d) -> tuple[np.ndarray, np.ndarray]:
    """``(Phi, Psi)``, ``Phi_tt' = E phi(h_t) phi(h_t')`` and ``Psi_tt' = E phi'(h_t) phi'(h_t')``
    for one hidden unit's tokens ``h ~ N(0, k_h)`` (``T x T``), pair by pair: any token
    covariance (causal attention makes the tokens' variances and correlations differ); pairs with
    the same ``(K_tt, K_t't', K_tt')`` are computed once (all of them for exchangeable tokens)."""
    t = k_h.shape[0]
    s = np.sqrt(np.maximum(np.diag(k_h), 0.0))
    phi, psi = np.empty((t, t)), np.empty((t, t))
    fn, done = _pair_moments_fn(act, num, tuple(num_2d)), {}
    with jax.enable_x64(True):
        for i in range(t):
            for j in range(i, t):
                with np.errstate(all="ignore"):
                    rho = k_h[i, j] / (s[i] * s[j]) if s[i] > 0 and s[j] > 0 else 0.0
                rho = min(max(float(rho), -1.0), 1.0)
                key = (float(s[i]), float(s[j]), rho, i == j)
                if key not in done:
                    done[key] = np.asarray(fn(np.float64(s[i]), np.float64(s[j]), np.float64(rho),
                                              i == j), np.float64)
                phi[i, j] = phi[j, i] = done[key][0]
                psi[i, j] = psi[j, i] = done[key][1]
    return phi, psi


def _mean_cosine(k: np.ndarray) -> float:
    t = k.shape[0]
    d = np.sqrt(np.diag(k))
    with np.errstate(all="ignore"):
        cos = k / np.outer(d, d)
    off = ~np.eye(t, dtype=bool)
    return float(cos[off].mean())


def _check(network: Network) -> bool:
    if not isinstance(network, Network):
        raise TypeError(f"network must be an initjax Network, got {type(network).__name__}")
    if network.tokens is None:
        raise ValueError("predict_attention needs a token network (Network(tokens=T)); got tokens=None")
    exact = True
    for i, stage in enumerate(network.stages):
        block = stage.block
        if not isinstance(block, Attention):
            raise ValueError(f"stages[{i}] is a {type(block).__name__} block; predict_attention covers "
                             "Attention blocks only")
        w = network.in_width
        qk = block.init if block.qk_init is None else block.qk_init
        zero_qk = isinstance(qk, _initializers.Initializer) and qk.second_moment((w, w)) == 0.0
        if zero_qk or block.logit_scale == 0.0:
            continue
        if block.logit_scale == "1/d_head":
            exact = False  # logits O(d_head^-1/2): uniform in the wide limit only
            continue
        raise ValueError(
            f"stages[{i}]: attention at init is uniform only with qk_init='zeros', logit_scale=0 or (in the "
            f"wide limit) logit_scale='1/d_head'; got qk_init={getattr(qk, 'spec', qk)!r}, "
            f"logit_scale={block.logit_scale!r}, whose logits stay O(1)")
    return exact


def predict_attention(network: Network, *, final_norm: str | None = None, num: int = DEFAULT_NUM,
                      num_2d: tuple[int, int] = DEFAULT_NUM_2D) -> AttentionPrediction:
    """The uniform-attention mean-field prediction, block by block (module docstring), exact in the
    number of tokens ``T`` and in the limit ``D -> inf``.

    Forward the token covariance ``K``; backward ``G`` from ``G = I`` at the output. The weight
    gradients ``dL/dW = sum_{b,t} u_bt^T d_bt`` (``B = network.batch`` independent sequences,
    ``u`` and ``d`` independent by gradient independence) have
    ``E||dL/dW||_F^2 = B n_in n_out sum_tt' (K_in o G_out)_tt'``, with per coordinate
    ``K_in`` the covariance of the product's input and ``G_out`` that of its output gradient:
    ``W_V``: ``K_u`` and ``A^2 sigma_o^2 P^T G P``; ``W_O``: ``sigma_v^2 P K_u P^T`` and ``A^2 G``;
    ``W_1``: ``K_u`` and ``A^2 sigma_2^2 (D/m) Psi o G``; ``W_2``: ``Phi`` and ``A^2 G``
    (``G`` of the sub-block's output: the stream after it (pre) or the sum before its norm (post)).
    The fields report ``sqrt`` of these (the engine's ``||.||_F`` concentrates at large width).

    Xiong et al. 2020's Theorem 1 compares the last FFN's weight gradient ``dL/dW^{2,L}`` of
    Post-LN and of Pre-LN, whose output passes a final layer norm. With ``final_norm="layer"`` the
    N(0, 1) cotangent enters before such a final norm (``G = N^-1/2 I N^-1/2`` at ``x_L``, so
    ``grad[-1] = mean_t 1 / (K_tt + eps)``; the forward fields stay those of ``x_L``). Then, ``G``
    being diagonal and ``E relu(h)^2 = 1/2`` (Xavier, normalized input, eps 0), exactly
    ``E||dL/dW^{2,L}||_F^2 = B d m T / (2 q_L)`` for Pre-LN and ``B d m T / (2 * 3/2)`` for
    Post-LN (whose last norm sees ``q = 3/2``): the ratio Post/Pre is ``sqrt(q_L / (3/2))``, between
    ``sqrt((2 + L) / 3)`` and ``sqrt((2 + 3L) / 3)`` by Lemma 2, which is Theorem 1's
    ``sqrt(L)``. Their ``sqrt(ln d)`` factor bounds the softmax loss's gradient and is not modelled
    (the engine's cotangent is N(0, 1)). The engine has no final norm: the ``final_norm`` numbers
    are theory only.

    Args:
      network: a :class:`~initjax.network.Network` with ``tokens`` and Attention blocks whose
        attention is uniform at init: ``qk_init="zeros"`` or ``logit_scale=0`` (exact), or
        ``logit_scale="1/d_head"`` (the wide limit; ``exact=False``).
      final_norm: None (the network as the engine runs it), or ``"layer"`` / ``"rms"``: a final
        norm after the last block, in the backward pass only (above).
      num, num_2d: quadrature sizes of :func:`initjax.theory.gaussian_expectation` and
        :func:`initjax.theory.gaussian_expectation_2d` (the MLP's kernel maps).

    Returns:
      An :class:`AttentionPrediction`.

    Raises:
      TypeError: if ``network`` is not a Network.
      ValueError: no token axis, a non-Attention block, attention that is not uniform at init,
        or a user-function initializer (its second moment is unknown).
    """
    exact = _check(network)
    if final_norm is not None:
        check_choice("final_norm", final_norm, ("layer", "rms"))
    t, d, batch = network.tokens, network.in_width, network.batch
    v0, c0 = float(network.input_variance), float(network.input_correlation)
    k = v0 * ((1.0 - c0) * np.eye(t) + c0 * np.ones((t, t)))
    depth = network.depth
    out = {name: np.full(depth, np.nan) for name in AttentionPrediction._fields
           if name not in ("cov", "exact")}
    covs = np.empty((depth, t, t))
    tapes = []  # per block, what the backward pass needs
    for idx, block in enumerate(network.blocks):
        where = f"block {idx + 1}"
        alpha = network.branch_scale(block) if block.residual else 1.0
        sv = d * _second_moment(block.init, (d, d), f"{where}.init")
        so = sv
        p = uniform_attention_matrix(t, block.causal)
        pre = block.norm_position == "pre"
        tape = {"alpha": alpha, "sv": sv, "so": so, "p": p, "pre": pre, "residual": block.residual}

        def sub_block(k_in, branch, tape_key):
            if pre:
                k_u, inv_u = _norm(block.norm, block.norm_eps, k_in)
            else:
                k_u, inv_u = k_in, np.ones(t)
            k_f, extra = branch(k_u)
            k_f = alpha**2 * k_f
            total = k_in + k_f if block.residual else k_f
            if pre:
                k_new, inv_post = total, None
            else:
                k_new, inv_post = _norm(block.norm, block.norm_eps, total)
            tape[tape_key] = {"k_u": k_u, "inv_u": inv_u, "inv_post": inv_post, **extra}
            return k_new, k_f, total

        k, k_f, total = sub_block(k, lambda ku: (sv * so * p @ ku @ p.T, {}), "attn")
        out["branch_var"][idx] = float(np.mean(np.diag(k_f)))
        if block.mlp_width is not None:
            m = block.mlp_width
            s1 = d * _second_moment(block.mlp_init, (d, m), f"{where}.mlp_init")
            s2 = m * _second_moment(block.mlp_init, (m, d), f"{where}.mlp_init")

            def mlp(ku, s1=s1, s2=s2):
                phi, psi = _mlp_kernels(block.mlp_activation, s1 * ku, num, num_2d)
                return s2 * phi, {"phi": phi, "psi": psi, "s1": s1, "s2": s2, "m": m}

            k, k_f2, total = sub_block(k, mlp, "mlp")
            out["mlp_branch_var"][idx] = float(np.mean(np.diag(k_f2)))
        if not pre:
            out["sum_q"][idx] = float(np.mean(np.diag(total)))
        covs[idx] = k
        out["q"][idx] = float(np.mean(np.diag(k)))
        out["cosine"][idx] = _mean_cosine(k) if t > 1 else 1.0
        out["attn_entropy"][idx] = (math.lgamma(t + 1) / t) if block.causal else math.log(t)
        tapes.append(tape)

    # backward
    g = np.eye(t)
    if final_norm is not None:
        inv_final = _norm(final_norm, network.blocks[-1].norm_eps, covs[-1])[1]
        g = g * np.outer(inv_final, inv_final)
    for idx in range(depth - 1, -1, -1):
        out["grad"][idx] = float(np.mean(np.diag(g)))
        tape = tapes[idx]
        a2, pre, res = tape["alpha"] ** 2, tape["pre"], tape["residual"]
        p = tape["p"]

        def back(g_out, sub, branch_back):
            g_sum = g_out if pre else g_out * np.outer(sub["inv_post"], sub["inv_post"])
            g_u = branch_back(g_sum)
            g_in = a2 * g_u * np.outer(sub["inv_u"], sub["inv_u"])
            return (g_sum + g_in) if res else g_in, g_sum

        if "mlp" in tape:
            sub = tape["mlp"]
            g, g_sum = back(g, sub, lambda gs, sub=sub: sub["s1"] * sub["s2"] * sub["psi"] * gs)
            m = sub["m"]
            out["grad_norm_mlp_out"][idx] = math.sqrt(batch * m * d * a2 * np.sum(sub["phi"] * g_sum))
            out["grad_norm_mlp_in"][idx] = math.sqrt(
                batch * d * m * a2 * sub["s2"] * (d / m) * np.sum(sub["k_u"] * sub["psi"] * g_sum))
        sub = tape["attn"]
        sv, so = tape["sv"], tape["so"]
        g, g_sum = back(g, sub, lambda gs: sv * so * p.T @ gs @ p)
        k_u = sub["k_u"]
        out["grad_norm_v"][idx] = math.sqrt(batch * d * d * a2 * so * np.sum(k_u * (p.T @ g_sum @ p)))
        out["grad_norm_o"][idx] = math.sqrt(batch * d * d * a2 * sv * np.sum((p @ k_u @ p.T) * g_sum))
    return AttentionPrediction(**out, cov=covs, exact=exact)
