"""A float64 numpy reference of the attention engine's transformers (initjax.engine.attention).

Written from the block definition in initjax.network.Attention's docstring, not from the engine:
a forward pass and a hand-written backward pass (softmax, norm and activation Jacobians), in
float64, on the weights, input tokens and cotangent the engine drew (``trace_attention``). Also
the statistics' definitions (token cosine, Dong et al.'s relative residual, attention entropy).
"""

import math

import numpy as np
from scipy.special import erf

from .block_reference import norm_with_backward


def _token_norm(kind, x, eps):
    """Per-token norm of (B, T, D) and its backward, through the per-row reference."""
    shape = x.shape
    y, back = norm_with_backward(kind, x.reshape(-1, shape[-1]), eps)
    return y.reshape(shape), lambda dy: back(dy.reshape(-1, shape[-1])).reshape(shape)


def _activation(name):
    if name == "relu":
        return lambda h: np.maximum(h, 0.0), lambda h: (h > 0).astype(np.float64)
    if name == "gelu":  # exact gelu: h Phi(h); derivative Phi(h) + h phi(h)
        def cdf(h):
            return 0.5 * (1.0 + erf(h / math.sqrt(2.0)))

        def pdf(h):
            return np.exp(-0.5 * h * h) / math.sqrt(2.0 * math.pi)

        return lambda h: h * cdf(h), lambda h: cdf(h) + h * pdf(h)
    raise ValueError(f"no reference for activation {name!r}")


def _attention(block, u, w, scale):
    """(y, P, backward(dy) -> (du, grads)) of multi-head softmax self-attention on (B, T, D)."""
    b, t, d = u.shape
    h = block.heads

    def split(m):  # (B, T, D) -> (B, H, T, d_head)
        return m.reshape(b, t, h, d // h).transpose(0, 2, 1, 3)

    def merge(m):
        return m.transpose(0, 2, 1, 3).reshape(b, t, d)

    q, k, v = (u @ w[n] for n in ("q", "k", "v"))
    qh, kh, vh = split(q), split(k), split(v)
    s = scale * qh @ kh.transpose(0, 1, 3, 2)
    if block.causal:
        s = np.where(np.tril(np.ones((t, t), bool)), s, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    p = e / e.sum(-1, keepdims=True)
    o = merge(p @ vh)
    y = o @ w["o"]

    def back(dy):
        grads = {"o": np.einsum("btd,bte->de", o, dy)}
        doh = split(dy @ w["o"].T)
        dp = doh @ vh.transpose(0, 1, 3, 2)
        dvh = p.transpose(0, 1, 3, 2) @ doh
        ds = p * (dp - (dp * p).sum(-1, keepdims=True))
        dqh = scale * ds @ kh
        dkh = scale * ds.transpose(0, 1, 3, 2) @ qh
        du = 0.0
        for name, dm in (("q", merge(dqh)), ("k", merge(dkh)), ("v", merge(dvh))):
            grads[name] = np.einsum("btd,bte->de", u, dm)
            du = du + dm @ w[name].T
        return du, grads

    return y, p, back


def _mlp(block, u, w):
    f, df = _activation(block.mlp_activation.name)
    h = u @ w["mlp_in"]
    a = f(h)
    y = a @ w["mlp_out"]

    def back(dy):
        grads = {"mlp_out": np.einsum("btd,bte->de", a, dy)}
        dh = (dy @ w["mlp_out"].T) * df(h)
        grads["mlp_in"] = np.einsum("btd,bte->de", u, dh)
        return dh @ w["mlp_in"].T, grads

    return y, back


def reference(network, tr):
    """Per block: the stream after it, its attention probabilities, dL/dx of the stream after it
    and the weight gradients (a dict per block), in float64."""
    x = tr["x0"].astype(np.float64)
    width = x.shape[-1]
    xs, ps, backs = [], [], []
    for i, block in enumerate(network.blocks):
        w = {n: np.asarray(m, np.float64) for n, m in tr["w"][i].items()}
        alpha = network.branch_scale(block) if block.residual else 1.0
        pre = block.norm_position == "pre"
        eps = block.norm_eps

        def sub_block(x, branch, pre=pre, alpha=alpha, block=block, eps=eps):
            u, nb_pre = _token_norm(block.norm, x, eps) if pre else (x, lambda d: d)
            y, extra, branch_back = branch(u)
            total = x + alpha * y if block.residual else alpha * y
            out, nb_post = (total, lambda d: d) if pre else _token_norm(block.norm, total, eps)

            def back(dout):
                dtotal = nb_post(dout)
                du, grads = branch_back(alpha * dtotal)
                return (dtotal if block.residual else 0.0) + nb_pre(du), grads

            return out, extra, back

        def attn(u, block=block, w=w):
            y, p, back = _attention(block, u, w, block.scale(width))
            return y, p, back

        x, p, back_a = sub_block(x, attn)
        back_m = None
        if block.mlp_width is not None:
            def mlp(u, block=block, w=w):
                y, back = _mlp(block, u, w)
                return y, None, back

            x, _, back_m = sub_block(x, mlp)

        def back(d, back_a=back_a, back_m=back_m):
            grads = {}
            if back_m is not None:
                d, grads = back_m(d)
            d, g = back_a(d)
            return d, {**g, **grads}

        xs.append(x)
        ps.append(p)
        backs.append(back)
    dxs, grads = [None] * len(xs), [None] * len(xs)
    d = tr["cotangent"].astype(np.float64)
    for i in reversed(range(len(xs))):
        dxs[i] = d
        d, grads[i] = backs[i](d)
    return xs, ps, dxs, grads


def token_cosine(x):
    """Mean over sequences of the mean pairwise cosine between tokens."""
    u = x / np.linalg.norm(x, axis=-1, keepdims=True)
    g = u @ u.transpose(0, 2, 1)
    t = x.shape[1]
    return float(((g.sum((1, 2)) - np.trace(g, axis1=1, axis2=2)) / (t * (t - 1))).mean())


def rel_residual(x):
    """Mean over sequences of ||X - 1 mean^T||_{1,inf} / ||X||_{1,inf} (Dong et al. 2021)."""
    def n1inf(m):
        a = np.abs(m)
        return math.sqrt(a.sum(0).max() * a.sum(1).max())

    return float(np.mean([n1inf(s - s.mean(0)) / n1inf(s) for s in x]))


def entropy(p):
    """Mean over sequences, heads and queries of the softmax row entropy (nats)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return float(-terms.sum(-1).mean())
