"""The attention engine: per-block statistics of sampled transformers (token networks).

:func:`propagate_attention` draws ``seeds`` networks from a :class:`~initjax.network.Network`
with a token axis (``tokens=T``) made of :class:`~initjax.network.Attention` blocks, pushes
``batch`` sequences of ``T`` tokens through them, back-propagates a cotangent and returns
per-block statistics (:class:`AttentionStats`, axes ``(seed, block)``).
:func:`initjax.propagate` (through :func:`initjax.engine.blocks.propagate_blocks`) sends every
network with a token axis here. The blocks are defined in :class:`~initjax.network.Attention`::

    pre:          x <- x + A Attn(norm(x));   x <- x + A MLP(norm(x))   (MLP if mlp_width)
    post:         x <- norm(x + A Attn(x));   x <- norm(x + A MLP(x))
    no residual:  x <- Attn(norm(x))  (pre) or norm(Attn(x))  (post), then the MLP likewise
    Attn(X) = concat_h softmax(s Q_h K_h^T [+ causal mask]) V_h  W_O,   MLP(u) = phi(u W_1) W_2

Norms act per token over its channels, without affine part (layer norm centred, biased variance;
RMS norm by the root mean square). The input tokens are Gaussian: ``x_bt = sqrt(v) (sqrt(c) s_b +
sqrt(1 - c) e_bt)`` with ``s_b, e_bt`` i.i.d. N(0, I), ``v`` the network's ``input_variance`` and
``c`` its ``input_correlation`` (here between the tokens of one sequence; sequences independent).

Statistics of the stream ``X`` after block ``l`` (one sequence ``X: (T, D)``, tokens as rows):

* ``cosine``: the mean over pairs ``t != t'`` of ``<x_t, x_t'> / (|x_t| |x_t'|)``, averaged over
  sequences (Noci et al. 2022, Fig. 1).
* ``rel_residual``: Dong et al.'s ``||res(X)||_{1,inf} / ||X||_{1,inf}`` with ``res(X) = X - 1
  xbar^T`` (``xbar`` the token mean, as their plotting code takes it in place of the argmin) and
  ``||M||_{1,inf} = sqrt(||M||_1 ||M||_inf)``, ``||M||_1`` the largest absolute column sum and
  ``||M||_inf`` the largest absolute row sum; averaged over sequences. 0 iff all tokens are equal.
* ``attn_entropy``: ``-sum_j P_ij log P_ij`` in nats, averaged over heads, queries and
  sequences (``log T`` for uniform attention; ``log(T!) / T`` for uniform causal attention).
* ``act_mean`` / ``act_var`` / ``act_second_moment``: moments of every entry of ``X`` (ddof 0);
  ``branch_var`` the variance of ``A Attn(.)`` (the attention branch before the add),
  ``mlp_branch_var`` that of ``A MLP(.)`` (NaN without MLP).
* ``grad_var`` / ``grad_second_moment``: moments of ``dL/dX`` of the stream after the block, for
  ``L = <cotangent, output>`` (the cotangent N(0, 1) by default).
* ``grad_norm_q/k/v/o``: ``||dL/dW_Q||_F`` ..., and ``grad_norm_mlp_in/out`` those of ``W_1`` and
  ``W_2`` (NaN without MLP); each ``G = sum_{b,t} u_bt^T d_bt`` from the product's input ``u``
  and the gradient ``d`` of the product ``u W`` (a zero probe carries it back).

How it runs: as the block engine (:mod:`initjax.engine.blocks`): each
:class:`~initjax.network.Repeat` stage is one ``lax.scan`` (compile time flat in depth); block
``b``'s weights ``W_Q, W_K, W_V, W_O, W_1, W_2`` come from ``fold_in(fold_in(weights, b), j)`` with
``j = 0..5``, drawn again in the backward pass with ``remat`` (only the products are kept); seeds
are vmapped in chunks inside one compiled program per network and chunk capacity. Non-finite
entries are counted (``nonfinite``, ``grad_nonfinite``) and skipped by the moments.

References:
  Dong, Cordonnier & Loukas 2021, "Attention is Not All You Need: Pure Attention Loses Rank
  Doubly Exponentially with Depth", https://arxiv.org/abs/2103.03404.
  Noci et al. 2022, "Signal Propagation in Transformers: Theoretical Perspectives and the Role of
  Rank Collapse", https://arxiv.org/abs/2206.03126.
  Xiong et al. 2020, "On Layer Normalization in the Transformer Architecture",
  https://arxiv.org/abs/2002.04745.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from initjax._checks import check_choice, check_int
from initjax._precision import DEFAULT_PRECISION, check_precision, matmul_precision
from initjax.engine.block_results import BlockResult
from initjax.engine.executor import (
    check_host_memory,
    chunked_seed_stats,
    default_lanes,
    lane_loop,
    plan_chunks,
    unjitted_seed_stats,
)
from initjax.engine.sampling import (
    REMAT_POLICY,
    base_key,
    draw_cotangent,
    product,
    seed_keys,
    split_seed_key,
)
from initjax.engine.stats import finite_moments, mean_cosine, seed_mean_sd
from initjax.network import Attention, Network

__all__ = [
    "AttentionPropagation",
    "AttentionStats",
    "TOKEN_COTANGENTS",
    "attend",
    "attention_entropy",
    "attention_params",
    "compiled_program",
    "draw_tokens",
    "estimate_memory",
    "normalize_tokens",
    "propagate_attention",
    "rel_residual",
    "token_cosine",
    "trace_attention",
]

TOKEN_COTANGENTS = ("normal", "mse")  # "xent" needs logits per example, not per token stream


class AttentionStats(NamedTuple):
    """Per-block statistics of sampled transformers; every field has axes ``(seed, block)``
    (see the module docstring for the definitions)."""

    act_mean: Any  # mean of the stream x^l after block l
    act_var: Any  # variance of x^l over sequences, tokens and channels
    act_second_moment: Any  # mean of (x^l)^2
    cosine: Any  # mean pairwise cosine between the tokens of a sequence
    rel_residual: Any  # Dong et al.'s ||X - 1 xbar^T||_{1,inf} / ||X||_{1,inf}
    attn_entropy: Any  # mean softmax row entropy (nats)
    branch_var: Any  # variance of A Attn(.)
    mlp_branch_var: Any  # variance of A MLP(.) (NaN without MLP)
    nonfinite: Any  # int32 count of non-finite entries of x^l
    grad_var: Any  # variance of dL/dx^l
    grad_second_moment: Any  # mean of (dL/dx^l)^2
    grad_nonfinite: Any  # int32 count of non-finite entries of dL/dx^l
    grad_norm_q: Any  # ||dL/dW_Q||_F
    grad_norm_k: Any
    grad_norm_v: Any
    grad_norm_o: Any
    grad_norm_mlp_in: Any  # ||dL/dW_1||_F (NaN without MLP)
    grad_norm_mlp_out: Any  # ||dL/dW_2||_F (NaN without MLP)


_TABLE_FIELDS = ("cosine", "rel_residual", "attn_entropy", "act_mean", "act_var", "act_second_moment",
                 "branch_var", "mlp_branch_var", "grad_var", "grad_second_moment", "grad_norm_q",
                 "grad_norm_k", "grad_norm_v", "grad_norm_o", "grad_norm_mlp_in", "grad_norm_mlp_out")


@dataclasses.dataclass(frozen=True)
class AttentionPropagation(BlockResult):
    """The result of :func:`propagate_attention` (and of :func:`initjax.propagate` for a network
    with a token axis). Fields as :class:`~initjax.engine.blocks.BlockPropagation`'s; ``stats``
    is an :class:`AttentionStats` of numpy arrays ``(seed, block)``."""

    STATS = AttentionStats  # not a field: the statistics' type, for load()

    network: Network
    stats: AttentionStats
    key: int | None = 0
    cotangent: str = "normal"
    prng_impl: str = "philox2x32"
    seconds: float = float("nan")
    precision: str = DEFAULT_PRECISION
    memory_budget: float = float("nan")
    memory_budget_source: str = "unknown"

    @property
    def nonfinite_blocks(self) -> list[int]:
        """1-based blocks in which some seed had a non-finite value, forward or backward."""
        st = self.stats
        bad = (np.asarray(st.nonfinite) + np.asarray(st.grad_nonfinite)).sum(axis=0) > 0
        for field in ("act_second_moment", "grad_second_moment"):
            bad |= np.isinf(np.asarray(getattr(st, field))).any(axis=0)
        return [int(i) + 1 for i in np.flatnonzero(bad)]

    def layer_table(self) -> list[dict[str, Any]]:
        """One dict per block (``"layer"``, ``"block"``: 1-based): each statistic's mean over seeds
        (finite values only; NaN if none) and its standard deviation as ``<name>_sd``;
        ``nonfinite`` sums the forward and backward counts. The JSON ``layers`` of ``initjax
        propagate --arch transformer --json``."""
        rows = []
        for i in range(self.network.depth):
            row: dict[str, Any] = {"layer": i + 1, "block": i + 1}
            for name in _TABLE_FIELDS:
                values = np.asarray(getattr(self.stats, name))[:, i].astype(np.float64)
                row[name], row[name + "_sd"] = seed_mean_sd(values)
            row["nonfinite"] = int(np.asarray(self.stats.nonfinite)[:, i].sum()
                                   + np.asarray(self.stats.grad_nonfinite)[:, i].sum())
            rows.append(row)
        return rows


# -- the sampled network --------------------------------------------------------------------------
def draw_tokens(network: Network, key: jax.Array) -> jax.Array:
    """The input ``(batch, tokens, in_width)``: ``sqrt(v) (sqrt(c) s_b + sqrt(1 - c) e_bt)``."""
    shape = (network.batch, network.tokens, network.in_width)
    k_shared, k_own = jax.random.split(key)
    shared = jax.random.normal(k_shared, (shape[0], 1, shape[2]), jnp.float32)
    own = jax.random.normal(k_own, shape, jnp.float32)
    c, v = network.input_correlation, network.input_variance
    return (math.sqrt(v) * (math.sqrt(c) * shared + math.sqrt(1.0 - c) * own)).astype(network.jnp_dtype)


def attention_params(block: Attention, keys, index, width: int, dtype) -> dict[str, jax.Array]:
    """Block ``index``'s weights: ``"q", "k", "v", "o"`` ``(D, D)`` and, with an MLP, ``"mlp_in"``
    ``(D, mlp_width)`` and ``"mlp_out"`` ``(mlp_width, D)``; weight ``j`` from
    ``fold_in(fold_in(keys.weights, index), j)``."""
    base = jax.random.fold_in(keys.weights, index)
    qk = block.init if block.qk_init is None else block.qk_init
    w = {name: init(jax.random.fold_in(base, j), (width, width), dtype)
         for j, (name, init) in enumerate((("q", qk), ("k", qk), ("v", block.init), ("o", block.init)))}
    if block.mlp_width is not None:
        w["mlp_in"] = block.mlp_init(jax.random.fold_in(base, 4), (width, block.mlp_width), dtype)
        w["mlp_out"] = block.mlp_init(jax.random.fold_in(base, 5), (block.mlp_width, width), dtype)
    return w


def normalize_tokens(norm: str, x: jax.Array, eps: float) -> jax.Array:
    """``norm`` (``"layer"``, ``"rms"`` or ``"none"``): layer or RMS norm of each token over its channels (last axis), in float32 at least."""
    if norm == "none":
        return x
    xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if norm == "rms":
        out = xf * jax.lax.rsqrt((xf * xf).mean(axis=-1, keepdims=True) + eps)
    else:
        mean = xf.mean(axis=-1, keepdims=True)
        var = ((xf - mean) ** 2).mean(axis=-1, keepdims=True)
        out = (xf - mean) * jax.lax.rsqrt(var + eps)
    return out.astype(x.dtype)


def attend(block: Attention, u, w, probes, scale: float):
    """Multi-head softmax self-attention of ``u`` (batch, T, D) with weights ``w``
    (:func:`attention_params`) and logit scale ``scale``; ``probes`` (``"q", "k", "v", "o"``:
    zeros, or 0.0) are added to the four products to carry their gradients back. Returns
    ``(output, o, P)`` with ``o`` the heads' concatenated ``P V`` (the input of ``W_O``) and
    ``P`` (batch, H, T, T)."""
    b, t, d = u.shape
    heads = block.heads
    q = product(u @ w["q"]) + probes["q"]
    k = product(u @ w["k"]) + probes["k"]
    v = product(u @ w["v"]) + probes["v"]
    split = (b, t, heads, d // heads)
    logits = scale * jnp.einsum("bqhd,bkhd->bhqk", q.reshape(split), k.reshape(split))
    if block.causal:
        mask = jnp.tril(jnp.ones((t, t), bool))
        logits = jnp.where(mask, logits, -jnp.inf)
    p = jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
    p = p.astype(u.dtype)
    o = jnp.einsum("bhqk,bkhd->bqhd", p, v.reshape(split)).reshape(b, t, d)
    return product(o @ w["o"]) + probes["o"], o, p


def token_cosine(x: jax.Array) -> jax.Array:
    """The mean pairwise cosine between the tokens of each sequence of ``x`` (batch, T, D),
    averaged over sequences."""
    return jax.vmap(mean_cosine)(x).mean()


def rel_residual(x: jax.Array) -> jax.Array:
    """Dong et al.'s ``||X - 1 xbar^T||_{1,inf} / ||X||_{1,inf}`` per sequence ``X`` (T, D) of
    ``x`` (batch, T, D), averaged over sequences (``||M||_{1,inf} = sqrt(max column abs sum *
    max row abs sum)``). Overflow-safe: each sequence is first divided by its max-abs."""
    xf = x.astype(jnp.float32)
    xf = xf / jnp.maximum(jnp.max(jnp.abs(xf), axis=(1, 2), keepdims=True), jnp.float32(1e-30))

    def norm_1inf(m):
        a = jnp.abs(m)
        return jnp.sqrt(a.sum(axis=1).max(axis=-1) * a.sum(axis=2).max(axis=-1))

    res = xf - xf.mean(axis=1, keepdims=True)
    return (norm_1inf(res) / norm_1inf(xf)).mean()


def attention_entropy(p: jax.Array) -> jax.Array:
    """The mean entropy of the attention rows, ``-sum_j P_ij log P_ij`` in nats (``0 log 0 = 0``),
    over every leading axis (sequences, heads, queries) of ``p`` ``(..., T, T)``: ``log T`` for
    uniform attention, 0 for one-hot rows."""
    pf = p.astype(jnp.float32)
    return -jnp.where(pf > 0, pf * jnp.log(jnp.where(pf > 0, pf, 1.0)), 0.0).sum(axis=-1).mean()


def _weight_grad_norm(u: jax.Array, d: jax.Array) -> jax.Array:
    """``||sum_{b,t} u_bt^T d_bt||_F``, both factors divided by their max-abs first (no overflow
    of huge-but-finite values); non-finite entries count as 0."""
    uf = u.astype(jnp.float32).reshape(-1, u.shape[-1])
    df = d.astype(jnp.float32).reshape(-1, d.shape[-1])
    uf = jnp.where(jnp.isfinite(uf), uf, 0.0)
    df = jnp.where(jnp.isfinite(df), df, 0.0)
    su = jnp.maximum(jnp.max(jnp.abs(uf)), jnp.float32(1e-30))
    sd = jnp.maximum(jnp.max(jnp.abs(df)), jnp.float32(1e-30))
    g = (uf / su).T @ (df / sd)
    return jnp.sqrt(jnp.sum(g * g)) * (su * sd)


def _probe_shapes(block: Attention, batch: int, tokens: int, width: int) -> dict[str, tuple[int, ...]]:
    shapes = {name: (batch, tokens, width) for name in ("out", "q", "k", "v", "o")}
    if block.mlp_width is not None:
        shapes["mlp_in"] = (batch, tokens, block.mlp_width)
        shapes["mlp_out"] = (batch, tokens, width)
    return shapes


def _stage_plan(network: Network) -> list[tuple[Attention, int, int]]:
    plan, start = [], 0
    for i, stage in enumerate(network.stages):
        if not isinstance(stage.block, Attention):
            raise ValueError(f"stages[{i}] is a {type(stage.block).__name__} block: the attention engine "
                             "measures token networks of Attention blocks only")
        plan.append((stage.block, stage.count, start))
        start += stage.count
    return plan


def seed_attention_stats(network: Network, cotangent: str, remat: bool, seed_key: jax.Array,
                         inputs: jax.Array | None, raw: bool = False) -> dict[str, jax.Array]:
    """One seed's per-block statistics (a dict of :class:`AttentionStats` fields, axis ``block``);
    with ``raw``, the tensors instead (see :func:`trace_attention`)."""
    keys = split_seed_key(seed_key)
    dtype = network.jnp_dtype
    x0 = draw_tokens(network, keys.inputs) if inputs is None else inputs.astype(dtype)
    batch, tokens, width = x0.shape
    plan = _stage_plan(network)
    nan = jnp.float32(jnp.nan)

    def stage_fn(block: Attention):
        alpha = network.branch_scale(block) if block.residual else 1.0
        scale = block.scale(width)
        pre = block.norm_position == "pre"

        def norm(v):
            return normalize_tokens(block.norm, v, block.norm_eps)

        def sub_block(x, branch):
            """One residual sub-block around ``branch``: returns (new stream, scaled branch, extras)."""
            u = norm(x) if pre else x
            y, extra = branch(u)
            f = alpha * y
            total = x + f if block.residual else f
            return (total if pre else norm(total)), f, u, extra

        def body(x, inp):
            index, probes = inp
            w = attention_params(block, keys, index, width, dtype)

            def attn(u):
                y, o, p = attend(block, u, w, probes, scale)
                return y, (o, p)

            x1, f, u, (o, p) = sub_block(x, attn)
            ins = {"u": u, "o": o}
            out, g = x1, None
            if block.mlp_width is not None:
                def mlp(u2):
                    h = product(u2 @ w["mlp_in"]) + probes["mlp_in"]
                    a = block.mlp_activation(h)
                    return product(a @ w["mlp_out"]) + probes["mlp_out"], a

                out, g, u2, a = sub_block(x1, mlp)
                ins.update(u2=u2, a=a)
            if raw:
                stats = {"x": out, "p": p, "branch": f}
            else:
                stats = {}
                stats["act_mean"], stats["act_var"], stats["act_second_moment"], count = finite_moments(out)
                stats["nonfinite"] = (out.size - count).astype(jnp.int32)
                stats["cosine"] = token_cosine(out)
                stats["rel_residual"] = rel_residual(out)
                stats["attn_entropy"] = attention_entropy(p)
                stats["branch_var"] = finite_moments(f)[1]
                stats["mlp_branch_var"] = nan if g is None else finite_moments(g)[1]
            return out + probes["out"], (stats, ins)

        if remat:
            body = jax.checkpoint(body, policy=REMAT_POLICY)
        return body

    def forward(all_probes):
        x, per_stage = x0, []
        for (block, count, start), probes in zip(plan, all_probes, strict=True):
            x, aux = jax.lax.scan(stage_fn(block), x, (jnp.arange(start, start + count), probes))
            per_stage.append(aux)
        return x, per_stage

    zeros = [{name: jnp.zeros((count, *shape), dtype)
              for name, shape in _probe_shapes(block, batch, tokens, width).items()}
             for block, count, _ in plan]
    x_out, vjp, per_stage = jax.vjp(forward, zeros, has_aux=True)
    cot = draw_cotangent(network, cotangent, x_out, keys.cotangent)
    (d_probes,) = vjp(cot)

    if raw:
        return {"x0": x0, "cotangent": cot,
                "x": [t for stats, _ in per_stage for t in stats["x"]],
                "p": [t for stats, _ in per_stage for t in stats["p"]],
                "branch": [t for stats, _ in per_stage for t in stats["branch"]],
                "dx": [t for d in d_probes for t in d["out"]]}
    result: dict[str, list[jax.Array]] = {}
    for (stats, ins), d, (block, count, _) in zip(per_stage, d_probes, plan, strict=True):
        for name, v in stats.items():
            result.setdefault(name, []).append(v)
        _, g_var, g_m2, g_count = jax.vmap(finite_moments)(d["out"])
        result.setdefault("grad_var", []).append(g_var)
        result.setdefault("grad_second_moment", []).append(g_m2)
        result.setdefault("grad_nonfinite", []).append((d["out"][0].size - g_count).astype(jnp.int32))
        norm = jax.vmap(_weight_grad_norm)
        for name, u in (("q", "u"), ("k", "u"), ("v", "u"), ("o", "o")):
            result.setdefault(f"grad_norm_{name}", []).append(norm(ins[u], d[name]))
        if block.mlp_width is None:
            for name in ("mlp_in", "mlp_out"):
                result.setdefault(f"grad_norm_{name}", []).append(jnp.full((count,), nan))
        else:
            result.setdefault("grad_norm_mlp_in", []).append(norm(ins["u2"], d["mlp_in"]))
            result.setdefault("grad_norm_mlp_out", []).append(norm(ins["a"], d["mlp_out"]))
    return {k: jnp.concatenate(v) for k, v in result.items()}


def estimate_memory(network: Network, *, remat: bool = True) -> int:
    """Estimated peak bytes of temporaries for one seed: about four copies of a block's weights
    while they are drawn (all blocks' without ``remat``), and per block the kept products, layer
    inputs and probes (about 12 ``(batch, T, D)`` tensors, 4 of ``(batch, T, mlp_width)``) and
    two attention matrices ``(batch, H, T, T)``."""
    itemsize = max(network.jnp_dtype.itemsize, 4)
    d, bt = network.in_width, network.batch * network.tokens
    total_w, max_w, kept = 0, 0, 0
    for block in network.blocks:
        m = block.mlp_width or 0
        wb = 4 * d * d + 2 * d * m
        total_w, max_w = total_w + wb, max(max_w, wb)
        kept += 12 * bt * d + 4 * bt * m + 2 * network.batch * block.heads * network.tokens ** 2
    return int((4 * max_w + (0 if remat else total_w) + kept) * itemsize)


_COMPILED: dict[tuple, Any] = {}


def compiled_program(network: Network, cotangent: str, remat: bool, with_inputs: bool, lanes: int,
                     impl: str, precision: str):
    """The compiled program of a chunk (seeds vmapped ``lanes`` at a time, the padding of the
    last chunk skipped), cached per network and options: a second call does not compile again.
    Trace and call it inside ``matmul_precision(precision)``."""
    cache_key = (network, cotangent, remat, with_inputs, lanes, impl, precision)
    if cache_key not in _COMPILED:
        def one(k, x):
            return seed_attention_stats(network, cotangent, remat, k, x if with_inputs else None)

        lane_group = jax.vmap(one)

        def run(key_data, x, valid):
            keys = jax.random.wrap_key_data(key_data, impl=impl)
            return lane_loop(lane_group, keys, x if with_inputs else None, valid, lanes)

        _COMPILED[cache_key] = jax.jit(run)
    return _COMPILED[cache_key]


def _check_network(network: Network, cotangent: str) -> None:
    if not isinstance(network, Network):
        raise TypeError(f"network must be an initjax Network, got {type(network).__name__}")
    if network.tokens is None:
        raise ValueError("the attention engine needs a token stream (Network(tokens=T)); got tokens=None")
    check_choice("cotangent", cotangent, TOKEN_COTANGENTS)
    _stage_plan(network)


def _check_inputs(network: Network, inputs: Any, seeds: int) -> jax.Array | None:
    if inputs is None:
        return None
    x = jnp.asarray(inputs)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"inputs must be a float array, got dtype {x.dtype}")
    want = (network.batch, network.tokens, network.in_width)
    if x.shape == want:
        return jnp.broadcast_to(x, (seeds, *want))
    if x.shape == (seeds, *want):
        return x
    raise ValueError(f"inputs must have shape (batch, tokens, in_width) = {want} or (seeds, batch, "
                     f"tokens, in_width) = {(seeds, *want)} for this network; got {x.shape}")


def propagate_attention(
    network: Network,
    seeds: int = 1,
    key: int | jax.Array = 0,
    *,
    inputs: Any = None,
    cotangent: str = "normal",
    chunk_size: int | None = None,
    memory_budget: float | None = None,
    remat: bool = True,
    jit: bool = True,
    prng_impl: str = "philox2x32",
    progress: bool | None = None,
    seed_offset: int = 0,
    precision: str | None = None,
) -> AttentionPropagation:
    """Per-block statistics of ``seeds`` sampled transformers (see the module docstring).

    >>> net = Network.transformer(depth=3, width=32, heads=4, tokens=8, batch=2)
    >>> result = propagate_attention(net, seeds=2)
    >>> result.stats.attn_entropy.shape  # (seed, block)
    (2, 3)

    Args:
      network: a :class:`~initjax.network.Network` with ``tokens`` and Attention blocks only.
      seeds, key, chunk_size, memory_budget, remat, jit, prng_impl, progress, seed_offset,
        precision: as in :func:`initjax.engine.blocks.propagate_blocks`.
      inputs: ``(batch, tokens, in_width)`` shared by all seeds or ``(seeds, batch, tokens,
        in_width)``; by default each seed draws tokens as the network says.
      cotangent: ``"normal"`` (N(0, 1) on every output entry) or ``"mse"``.

    Raises:
      ValueError / TypeError: for bad arguments, naming the value; MemoryError when one seed
        exceeds the budget (with the estimate).
    """
    _check_network(network, cotangent)
    seeds = check_int("seeds", seeds, minimum=1)
    check_host_memory(seeds, network.depth, len(AttentionStats._fields), "attention engine")
    seed_offset = check_int("seed_offset", seed_offset, minimum=0)
    precision = check_precision(precision)
    remat, jit = bool(remat), bool(jit)
    root = base_key(key, prng_impl)
    impl = str(jax.random.key_impl(root))
    x = _check_inputs(network, inputs, seeds)
    per_seed = estimate_memory(network, remat=remat)
    plan = plan_chunks(seeds, per_seed, chunk_size=chunk_size, memory_budget=memory_budget,
                       devices=None, impl=impl, noun="network",
                       what=f"{network.depth} attention blocks of width {network.in_width}, "
                            f"{network.batch} x {network.tokens} tokens")
    budget, lanes = plan.budget, default_lanes()
    chunk_size = -(-plan.chunk_size // lanes) * lanes

    start = time.perf_counter()
    keys = seed_keys(root, np.arange(seed_offset, seed_offset + seeds))
    with matmul_precision(precision):  # traced and called at it: jit's cache keys on it
        if jit:
            fn = compiled_program(network, cotangent, remat, x is not None, lanes, impl, precision)
            stats = chunked_seed_stats(fn, keys, x, chunk_size, desc=network.name, progress=progress)
        else:
            stats = unjitted_seed_stats(
                lambda k, xs: seed_attention_stats(network, cotangent, remat, k, xs), keys, x)
    return AttentionPropagation(
        network=network,
        stats=AttentionStats(**stats),
        key=int(key) if isinstance(key, int | np.integer) else None,
        cotangent=cotangent,
        prng_impl=impl,
        seconds=time.perf_counter() - start,
        precision=precision,
        memory_budget=budget.nbytes,
        memory_budget_source=budget.source,
    )


def trace_attention(
    network: Network,
    seed: int = 0,
    key: int | jax.Array = 0,
    *,
    inputs: Any = None,
    cotangent: str = "normal",
    prng_impl: str = "philox2x32",
    precision: str | None = None,
) -> dict[str, Any]:
    """The raw tensors of one seed's transformer, exactly as :func:`propagate_attention` draws it.

    Returns numpy arrays: ``"x0"`` (the input tokens), ``"cotangent"``; per block ``"x"`` (the
    stream after it), ``"p"`` (the attention probabilities ``(batch, H, T, T)``), ``"branch"``
    (``A Attn(.)``), ``"dx"`` (dL/dx of the stream after it) and ``"w"`` (a dict of the weights,
    :func:`attention_params`).
    """
    _check_network(network, cotangent)
    seed = check_int("seed", seed, minimum=0)
    precision = check_precision(precision)
    k = seed_keys(base_key(key, prng_impl), [seed])[0]
    x = _check_inputs(network, inputs, 1)
    with matmul_precision(precision):
        run = jax.jit(lambda kk, xx: seed_attention_stats(network, cotangent, False, kk, xx, raw=True))
        out = jax.tree.map(np.asarray, run(k, None if x is None else x[0]))
        keys = split_seed_key(k)
        out["w"] = [jax.tree.map(np.asarray, attention_params(block, keys, b, network.in_width,
                                                             network.jnp_dtype))
                    for b, block in enumerate(network.blocks)]
    return out
