"""A float64 numpy reference of the block engine's networks, shared by the engine's block tests.

Written from the block definitions in initjax.network's docstring, not from the engine: a
forward pass and a hand-written backward pass (norm Jacobians included) on the weights and inputs
the engine drew (``trace_blocks``). The layer itself is passed in (dense in test_blocks.py,
convolution in test_blocks_conv.py); norms reduce per example over every axis but the batch, or
(batch norm) per channel over every axis but the last.
"""

import math

import numpy as np

from initjax.network import Residual


def norm_with_backward(kind, x, eps):
    """(y, backward) of a norm without affine part on (batch, ..., channels)."""
    if kind == "none":
        return x, lambda dy: dy
    per_example = tuple(range(1, x.ndim))
    if kind == "rms":
        r = np.sqrt((x * x).mean(per_example, keepdims=True) + eps)
        y = x / r
        return y, lambda dy: (dy - y * (dy * y).mean(per_example, keepdims=True)) / r
    axis = tuple(range(x.ndim - 1)) if kind == "batch" else per_example
    mu = x.mean(axis, keepdims=True)
    s = np.sqrt(((x - mu) ** 2).mean(axis, keepdims=True) + eps)
    y = (x - mu) / s
    return y, lambda dy: (dy - dy.mean(axis, keepdims=True)
                          - y * (dy * y).mean(axis, keepdims=True)) / s


def reference(network, tr, betas, layer_fn):
    """Per block: stream x, branch f (None for a plain block), dL/dx, layer inputs and
    dL/d(product), in float64. ``layer_fn(layer, x, w, b) -> (out, u, backward)`` with
    ``backward(dout) -> (dx, dL/d(product))``."""
    x = tr["x0"].astype(np.float64)
    xs, fs, backs, ins = [], [], [], []
    for i, block in enumerate(network.blocks):
        ws = [w.astype(np.float64) for w in tr["w"][i]]
        bs = [b.astype(np.float64) for b in tr["b"][i]]
        if not isinstance(block, Residual):
            out, u, back = layer_fn(block, x, ws[0], bs[0])
            xs.append(out)
            fs.append(None)
            ins.append((u,))
            backs.append(lambda d, back=back: (lambda r: (r[0], (r[1],)))(back(d)))
            x = out
            continue
        alpha = network.branch_scale(block)
        pre = block.norm_position == "pre"
        z, nb_pre = norm_with_backward(block.norm, x, block.norm_eps) if pre else (x, lambda d: d)
        u = z / betas[i]
        layer_backs, layer_ins = [], []
        for layer, w, b in zip(block.branch, ws, bs, strict=True):
            u, u_in, back = layer_fn(layer, u, w, b)
            layer_backs.append(back)
            layer_ins.append(u_in)
        f = alpha * u
        total = x + f
        out, nb_post = ((total, lambda d: d) if pre
                        else norm_with_backward(block.norm, total, block.norm_eps))

        def back(dout, nb_pre=nb_pre, nb_post=nb_post, layer_backs=layer_backs, alpha=alpha,
                 beta=betas[i]):
            dtotal = nb_post(dout)
            du, dps = alpha * dtotal, []
            for lb in reversed(layer_backs):
                du, dp = lb(du)
                dps.append(dp)
            return dtotal + nb_pre(du / beta), tuple(reversed(dps))

        xs.append(out)
        fs.append(f)
        ins.append(tuple(layer_ins))
        backs.append(back)
        x = out
    dxs, dps = [None] * len(xs), [None] * len(xs)
    d = tr["cotangent"].astype(np.float64)
    for i in reversed(range(len(xs))):
        dxs[i] = d
        d, dps[i] = backs[i](d)
    return xs, fs, dxs, ins, dps


def nf_betas(network):
    """NF's beta_l from its definition: sqrt(v + k alpha^2), k blocks into the residual run."""
    out, v = [], network.input_variance
    for block in network.blocks:
        if isinstance(block, Residual):
            a = network.branch_scale(block)
            out.append(math.sqrt(v) if block.beta == "expected" else 1.0)
            v = v + a * a
        else:
            out.append(1.0)
            v = 1.0
    return out


def assert_close(a, b, what, rtol=2e-4):
    """Max absolute error below ``rtol`` of the largest entry of ``b``."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    err = np.abs(a - b).max() / (np.abs(b).max() + 1e-30)
    assert err < rtol, f"{what}: max error {err:.2e} of the largest entry"
