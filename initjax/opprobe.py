"""Per-operation forward and backward statistics of any JAX function, read from its jaxpr.

:func:`probe_ops` traces ``fn(*args)`` to a jaxpr (``jax.make_jaxpr``) and evaluates it again with
its own small interpreter (the pattern of JAX's "Writing custom Jaxpr interpreters"): every
equation is re-bound as it was, and the outputs of the equations worth recording are kept. The
model is never edited, no class is patched and nothing global changes: a Flax NNX model, a Linen
``apply`` or a plain ``jax`` function are all just functions here.

What is recorded (each record is one array; its statistics are one row of :class:`OpStats`):

* every output of a primitive named in ``include``: by default every ``dot_general`` (matmuls,
  einsums, attention logits) and ``conv_general_dilated``;
* every :func:`tag` (JAX's ``checkpoint_name``: an identity the user inserts,
  ``x = tag(x, "attn_out")``) whose name matches one of the ``names`` patterns (``fnmatch`` globs,
  default ``"*"``: every tag);
* every output of a *named scope* whose path matches one of the ``scopes`` patterns (default none):
  a value computed inside ``jax.named_scope("block3")`` and used outside it is that scope's
  output. Linen modules push their path as a scope (``"MLP/Dense_0"``; ``flax_profile`` is on by
  default), so ``scopes=("MLP/*",)`` records every Linen module output. Scopes are off by default
  because libraries push their own (``jnp.einsum`` pushes its subscripts, ``"BTNH,BSNH->BNTS"``);
  transformation markers (``vmap(...)``) are never scopes here;
* with ``params`` patterns on input paths (``"*.bias"``), the output of every operation that takes
  a matching input (a reshape, cast or slice of it passes the path on and is not recorded).

Why ``checkpoint_name`` as the tag: it is JAX's own named identity primitive, free at run time
(XLA removes it), already present in many models to steer ``jax.checkpoint`` policies, and it
survives ``jit``, ``vmap`` and ``grad``; a new primitive of ours would need lowering rules and would
be a foreign body in the user's model. Flax NNX modules push no names, and NNX's own way to
capture module outputs (``nnx.capture(method_outputs=...)``) patches the classes' methods: so an
NNX model's records are named by data flow instead. Each operand of a recorded operation that is
(a view of) an input of ``fn`` carries that input's path, and for ``fn`` an NNX module the inputs
are its state: the Q projection of an ``nnx.MultiHeadAttention`` is
``dot_general(blocks.0.attn.query.kernel)`` without any help from the model. The same data flow
gives NNX module outputs on request: ``params=("*.bias",)`` records every operation that takes a
bias, i.e. each Linear's, LayerNorm's and projection's output after its bias
(``add(blocks.0.ln1.bias)``); ``tag`` marks any other value.

The backward statistics are those of the cotangent of each recorded value: the interpreter adds a
zero "probe" to every recorded value and ``d loss / d probe`` at probe = 0 is exactly
``d loss / d value`` (one ``jax.value_and_grad``, no finite differences). The loss is the scalar
output of ``fn`` (``cotangent="loss"``) or ``<cotangent, fn(*args)>`` summed over the inexact
output leaves, with an array cotangent or a Gaussian one (``"normal"``: leaf ``i`` gets
``N(0, 1)`` from ``jax.random.fold_in(key, i)``).

What the interpreter enters, and what it cannot:

* ``jit`` (pjit), ``closed_call``, ``core_call``: entered (inlined into the probed program).
* ``checkpoint`` / ``remat``: entered and inlined: values and gradients are the same, but the
  rematerialization (memory) policy is not kept inside the probe.
* ``scan``: entered. A record inside a scan body has one row per iteration (``OpInfo.context``
  ``"scan[i]"``, in the order of the scanned inputs also for ``reverse=True``), with the probes fed
  as scanned inputs so the backward pass stays linear in the length.
* ``cond`` / ``switch``: entered; ``"cond[i]"`` is branch ``i`` of ``lax.switch`` (``lax.cond``'s
  false branch is ``cond[0]``). Records of a branch that did not run are NaN (``nonfinite`` =
  size). Under ``vmap`` with a batched predicate, JAX runs every branch and selects per example,
  so each example's non-taken branch is NaN too.
* ``custom_jvp_call`` / ``custom_vjp_call``: by default the call is re-bound unchanged (the model's
  own derivative rule is kept: ``jax.nn.relu``, softmax, fused attention kernels) and the
  operations inside are recorded forward only (``OpInfo.has_grad`` False, gradient statistics
  NaN): a cotangent of an inner value is not defined by a custom rule. ``inline_custom=True``
  inlines them and differentiates the primal instead (equal for every rule that is the derivative
  of its primal, e.g. ``relu`` away from 0, ``softmax``; different for straight-through or
  clipping rules).
* ``while`` (a ``fori_loop`` with a traced trip count; one with static bounds is a ``scan`` and
  is entered), ``shard_map``, ``pallas_call`` and any other primitive: evaluated as one opaque
  operation; nothing inside is recorded (a ``while`` has no static trip count to stack records
  over and no reverse-mode derivative anyway).

Every compiled program is traced and called inside
:func:`initjax._precision.matmul_precision` (``"highest"`` by default), so the recorded matmuls are
float32-exact on GPUs and TPUs too.

Example::

    import flax.nnx as nnx
    layer = nnx.MultiHeadAttention(num_heads=2, in_features=16, decode=False, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 8, 16))
    st = probe_ops(layer, x, key=0)
    st.names[:3]          # ('dot_general(query.kernel)', 'dot_general(key.kernel)', ...)
    st.var, st.grad_var   # (op,) each: 6 ops, Q K V, logits, weighted values, O
    st.hist               # (op, bin) counts in st.edges
    # seeds as an axis: probe_ops is a pure function of (args, key)
    many = jax.jit(jax.vmap(lambda k: probe_ops(layer, x, key=k)))(
        jax.random.split(jax.random.key(0), 8))   # many.var: (8, 6)

References:
  JAX, "Writing custom Jaxpr interpreters",
  https://docs.jax.dev/en/latest/notebooks/Writing_custom_interpreters_in_Jax.html;
  Glorot & Bengio 2010 (histograms of activations and back-propagated gradients at init),
  https://proceedings.mlr.press/v9/glorot10a.html.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

from initjax._checks import check_int
from initjax._keys import as_key
from initjax._precision import check_precision, matmul_precision
from initjax.engine.stats import check_range, histogram_edges

__all__ = ["OpInfo", "OpStats", "probe_ops", "tag", "DEFAULT_INCLUDE", "COTANGENTS"]

DEFAULT_INCLUDE = ("dot_general", "conv_general_dilated")
COTANGENTS = ("normal", "loss")  # the string forms; an array (pytree) of the output's shape too

Array = jax.Array

_INLINE = ("jit", "pjit", "closed_call", "core_call")
_REMAT = ("remat2", "remat", "checkpoint")
_CUSTOM = ("custom_jvp_call", "custom_vjp_call")
# operations that only re-view their first operand: an operand reached through them keeps the
# path of the input it came from (the kernel of a Linear cast to the compute dtype, a reshaped one)
# or a slice of it (one layer of stacked weights)
_VIEWS = frozenset({"convert_element_type", "reshape", "transpose", "broadcast_in_dim", "squeeze",
                    "expand_dims", "copy", "copy_p", "reduce_precision", "name", "slice",
                    "dynamic_slice", "gather"})


def tag(x: Array, name: str) -> Array:
    """Mark ``x`` as a named output for :func:`probe_ops`: returns ``x`` unchanged.

    This is ``jax.ad_checkpoint.checkpoint_name``: an identity primitive that XLA removes, so a
    tagged model runs as fast as an untagged one; ``probe_ops`` records every tag whose name
    matches its ``names`` patterns (and ``jax.checkpoint`` policies see the same names).

    >>> float(tag(jnp.float32(2.0), "x"))
    2.0
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"tag name must be a non-empty string, got {name!r}")
    return checkpoint_name(x, name)


# ----------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------
class OpInfo(NamedTuple):
    """The static description of one recorded value (one row of :class:`OpStats`)."""

    name: str  # unique display name: the tag / scope, else scope/primitive or primitive(param)
    primitive: str  # the primitive that computed the value ("dot_general", "name", "add", ...)
    scope: str  # the named-scope path of that equation ("MLP/Dense_0"; "" if none)
    output_of: str  # the tag name or scope path this value is the output of ("" for an operation)
    operands: tuple[str, ...]  # per operand: the path of the fn input it views ("" if none)
    shape: tuple[int, ...]  # the value's shape (one iteration's, inside a scan)
    dtype: str
    context: str  # control flow around it: "", "scan[3]", "cond[1]", "custom_jvp_call", "/"-nested
    has_grad: bool  # False inside a kept custom_jvp/custom_vjp call: gradient fields are NaN


_FIELDS = ("mean", "var", "second_moment", "mean_abs", "hist", "outside", "nonfinite")


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[*_FIELDS, *("grad_" + f for f in _FIELDS), "loss", "values", "cotangents"],
    meta_fields=["ops", "value_range", "grad_range", "bins"],
)
@dataclasses.dataclass(frozen=True)
class OpStats:
    """Statistics of every recorded value of a probed function, one row per :class:`OpInfo`.

    Axes ``(..., op)``: ``...`` is empty for one call and ``(seed,)`` under a ``jax.vmap`` over
    seeds. Moments pool all entries of a value and skip non-finite ones (``nonfinite`` counts them;
    a value with no finite entry has NaN moments). ``grad_*`` are the same statistics of
    ``d loss / d value``.

    Attributes:
      mean, var, second_moment, mean_abs: ``(..., op)`` float32: the mean, variance (ddof 0),
        mean square and mean absolute value.
      hist: ``(..., op, bin)`` int32 counts in :attr:`edges` (``numpy.histogram``'s convention).
      outside: ``(..., op, 2)`` int32 counts of finite values below / above the range.
      nonfinite: ``(..., op)`` int32.
      grad_mean, grad_var, grad_second_moment, grad_mean_abs, grad_hist, grad_outside,
        grad_nonfinite: the same for the cotangents, histograms in :attr:`grad_edges`.
      loss: ``(...)`` the scalar that was differentiated.
      values, cotangents: with ``return_tensors=True``, one array per row (the value and its
        cotangent); else None.
      ops: the rows' :class:`OpInfo`, in evaluation order.
      value_range, grad_range, bins: the histogram settings.
    """

    mean: Array
    var: Array
    second_moment: Array
    mean_abs: Array
    hist: Array
    outside: Array
    nonfinite: Array
    grad_mean: Array
    grad_var: Array
    grad_second_moment: Array
    grad_mean_abs: Array
    grad_hist: Array
    grad_outside: Array
    grad_nonfinite: Array
    loss: Array
    values: tuple[Array, ...] | None
    cotangents: tuple[Array, ...] | None
    ops: tuple[OpInfo, ...]
    value_range: tuple[float, float]
    grad_range: tuple[float, float]
    bins: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(op.name for op in self.ops)

    @property
    def edges(self) -> np.ndarray:
        """The ``bins + 1`` edges of :attr:`hist`."""
        return histogram_edges(self.value_range, self.bins)

    @property
    def grad_edges(self) -> np.ndarray:
        """The ``bins + 1`` edges of :attr:`grad_hist`."""
        return histogram_edges(self.grad_range, self.bins)

    def index(self, name: str) -> int:
        """The row of the op called ``name``; a ValueError listing the names if there is none."""
        names = self.names
        if name not in names:
            raise ValueError(f"no recorded op named {name!r}; the ops are {list(names)}")
        return names.index(name)

    def select(self, pattern: str = "*", primitive: str | None = None) -> list[int]:
        """Rows whose name matches the glob ``pattern`` (and whose primitive is ``primitive``)."""
        return [i for i, op in enumerate(self.ops) if fnmatch.fnmatchcase(op.name, pattern)
                and (primitive is None or op.primitive == primitive)]

    def table(self) -> list[dict[str, Any]]:
        """One dict per row: the name, primitive, shape and the moments (averaged over any
        leading seed axes, NaN ignored)."""
        rows = []
        for i, op in enumerate(self.ops):
            row: dict[str, Any] = {"name": op.name, "primitive": op.primitive,
                                   "shape": op.shape, "context": op.context}
            for f in ("mean", "var", "second_moment", "mean_abs", "grad_var", "grad_second_moment"):
                v = np.asarray(getattr(self, f))[..., i]
                row[f] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            rows.append(row)
        return rows


# ----------------------------------------------------------------------------------------------
# The interpreter
# ----------------------------------------------------------------------------------------------
class _Opts(NamedTuple):
    include: tuple[str, ...]
    names: tuple[str, ...]
    scopes: tuple[str, ...]
    params: tuple[str, ...]
    value_range: tuple[float, float]
    grad_range: tuple[float, float]
    bins: int
    cotangent: str  # "normal" | "loss" | "array"
    inline_custom: bool
    return_tensors: bool
    precision: str


class _Rec(NamedTuple):
    """A record while interpreting: its info without the loop indices, and the loop lengths."""

    info: OpInfo
    loop: tuple[int, ...]  # lengths of the enclosing scans, outermost first
    contexts: tuple[str, ...]  # one entry per enclosing construct, "scan" filled in later


class _Interp:
    """One evaluation: hands out probes in record order and collects the recorded values.

    ``probes`` None: no probes are added (discovery, or a forward-only region). ``connected``
    False: the probes are taken (to keep the order) but not added (inside a kept custom call)."""

    def __init__(self, opts: _Opts, probes: Sequence[Array] | None, connected: bool = True):
        self.opts = opts
        self.probes = probes
        self.connected = connected
        self.cursor = 0
        self.recs: list[_Rec] = []
        self.values: list[Array] = []

    def take(self, n: int) -> list[Array] | None:
        if self.probes is None:
            self.cursor += n
            return None
        out = list(self.probes[self.cursor:self.cursor + n])
        self.cursor += n
        return out

    def record(self, value: Array, rec: _Rec) -> Array:
        probe = self.take(1)
        self.recs.append(rec)
        self.values.append(value)
        if probe is not None and self.connected:
            value = value + probe[0]
        return value

    def absorb(self, recs: Sequence[_Rec], values: Sequence[Array]) -> None:
        """Records of a sub-evaluation whose probes were already taken with :meth:`take`."""
        self.recs.extend(recs)
        self.values.extend(values)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _stack_of(eqn: Any) -> tuple[str, ...]:
    """The named scopes of an equation (transformation markers such as ``vmap(...)`` dropped)."""
    ns = eqn.source_info.name_stack
    entries = getattr(ns, "stack", None)
    if entries is None:  # another representation: its string form
        return tuple(p for p in str(ns).split("/") if p)
    return tuple(e.name for e in entries if type(e).__name__ == "Scope" and e.name)


def _scope_outputs(jaxpr: Any, stack: tuple[str, ...], patterns: tuple[str, ...]) -> dict[Any, str]:
    """``var -> scope path`` for the values computed inside a matching named scope and used
    outside it (by a later equation outside the scope or as an output of this jaxpr). Scopes that
    enclose the whole jaxpr (``stack``) are the caller's business."""
    if not patterns:
        return {}
    defined: dict[Any, tuple[str, ...]] = {}
    for eqn in jaxpr.eqns:
        s = stack + _stack_of(eqn)
        for v in eqn.outvars:
            defined[v] = s
    found: dict[Any, str] = {}

    def leaves(v: Any, consumer: tuple[str, ...] | None) -> None:
        s = defined.get(v) if isinstance(v, jex.core.Var) else None
        if s is None:
            return
        for k in range(len(s), len(stack), -1):  # innermost scope first
            if consumer is None or consumer[:k] != s[:k]:
                path = "/".join(s[:k])
                if v not in found and _matches(path, patterns):
                    found[v] = path

    for eqn in jaxpr.eqns:
        c = stack + _stack_of(eqn)
        for v in eqn.invars:
            leaves(v, c)
    for v in jaxpr.outvars:
        leaves(v, None)
    return found


def _eval(it: _Interp, jaxpr: Any, consts: Sequence[Any], args: Sequence[Any],
          stack: tuple[str, ...], srcs: Sequence[str], contexts: tuple[str, ...],
          loop: tuple[int, ...]) -> list[Any]:
    env: dict[Any, Any] = {}
    src: dict[Any, str] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jex.core.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts, strict=True):
        env[v] = x
    for v, x, s in zip(jaxpr.invars, args, srcs, strict=True):
        env[v] = x
        if s:
            src[v] = s
    scope_out = _scope_outputs(jaxpr, stack, it.opts.scopes)
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        insrc = ["" if isinstance(v, jex.core.Literal) else src.get(v, "") for v in eqn.invars]
        estack = stack + _stack_of(eqn)
        outs = _apply(it, eqn, invals, estack, insrc, contexts, loop)
        prim = eqn.primitive.name
        for i, (v, x) in enumerate(zip(eqn.outvars, outs, strict=True)):
            if isinstance(v, jex.core.DropVar):
                continue
            if prim in _VIEWS and i == 0 and insrc and insrc[0]:
                src[v] = insrc[0]
            output_of = scope_out.get(v, "")
            if prim == "name" and _matches(eqn.params["name"], it.opts.names):
                output_of = eqn.params["name"]
            # an operation (not a mere view) that takes a matching input: a bias add, a norm's scale
            consumes = bool(it.opts.params) and prim not in _VIEWS and any(
                path and _matches(path, it.opts.params) for path in insrc)
            wanted = output_of or prim in it.opts.include or consumes
            if wanted and jnp.issubdtype(jnp.result_type(x), jnp.floating):
                info = OpInfo(name="", primitive=prim, scope="/".join(estack), output_of=output_of,
                              operands=tuple(insrc), shape=tuple(np.shape(x)),
                              dtype=str(jnp.result_type(x)), context="",
                              has_grad=it.connected)
                x = it.record(x, _Rec(info, loop, contexts))
            env[v] = x
    return [read(v) for v in jaxpr.outvars]


def _closed(j: Any) -> tuple[Any, list[Any]]:
    """(jaxpr, consts) of a ClosedJaxpr or an open Jaxpr."""
    if hasattr(j, "jaxpr") and hasattr(j, "consts"):
        return j.jaxpr, list(j.consts)
    return j, []


def _bind(eqn: Any, invals: Sequence[Any]) -> list[Any]:
    got = eqn.primitive.get_bind_params(eqn.params)
    # jax < 0.7 returned (subfuns, params); newer versions fold the subfuns into the params
    subfuns, params = got if isinstance(got, tuple) else ((), got)
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _apply(it: _Interp, eqn: Any, invals: list[Any], stack: tuple[str, ...], srcs: list[str],
           contexts: tuple[str, ...], loop: tuple[int, ...]) -> list[Any]:
    prim = eqn.primitive.name
    p = eqn.params
    if prim in _INLINE or prim in _REMAT:
        sub = p.get("jaxpr", p.get("call_jaxpr"))
        if sub is not None:
            jaxpr, consts = _closed(sub)
            return _eval(it, jaxpr, consts, invals, stack, srcs, contexts, loop)
    if prim in _CUSTOM and "call_jaxpr" in p:
        jaxpr, consts = _closed(p["call_jaxpr"])
        if it.opts.inline_custom:
            return _eval(it, jaxpr, consts, invals, stack, srcs, contexts, loop)
        # forward-only records of the inside; the call itself, with its own rule, gives the outputs
        sub = _Interp(it.opts, None, connected=False)
        _eval(sub, jaxpr, consts, invals, stack, srcs, contexts + (prim,), loop)
        it.take(len(sub.recs))
        it.absorb([r._replace(info=r.info._replace(has_grad=False)) for r in sub.recs], sub.values)
        return _bind(eqn, invals)
    if prim == "scan":
        return _scan(it, eqn, invals, stack, srcs, contexts, loop)
    if prim == "cond":
        return _cond(it, eqn, invals, stack, srcs, contexts, loop)
    return _bind(eqn, invals)


def _discover(it: _Interp, fn: Callable[[_Interp, Any], Any], *args: Any) -> list[_Rec]:
    """The records ``fn(sub_interp, *args)`` makes, found by an abstract evaluation."""
    sub = _Interp(it.opts, None, it.connected)
    jax.eval_shape(lambda *a: fn(sub, *a), *args)
    return sub.recs


def _scan(it, eqn, invals, stack, srcs, contexts, loop):
    p = eqn.params
    nc, ncar, length = p["num_consts"], p["num_carry"], p["length"]
    jaxpr, bconsts = _closed(p["jaxpr"])
    consts, init, xs = invals[:nc], invals[nc:nc + ncar], invals[nc + ncar:]
    bsrc = [*srcs[:nc], *[""] * ncar, *srcs[nc + ncar:]]
    inner_ctx, inner_loop = contexts + ("scan",), loop + (length,)

    def body(sub, carry, x):
        return _eval(sub, jaxpr, bconsts, [*consts, *carry, *x], stack, bsrc, inner_ctx, inner_loop)

    x0 = [jax.ShapeDtypeStruct(np.shape(x)[1:], jnp.result_type(x)) for x in xs]
    recs = _discover(it, body, list(init), x0)
    probes = it.take(len(recs))

    def step(carry, xp):
        x, pr = xp
        sub = _Interp(it.opts, pr, it.connected)
        outs = body(sub, carry, x)
        return outs[:ncar], (outs[ncar:], sub.values)

    unroll = p.get("unroll", 1)
    carry, (ys, values) = jax.lax.scan(step, list(init), (list(xs), probes), length=length,
                                       reverse=p["reverse"], unroll=unroll)
    it.absorb(recs, values)
    return [*carry, *ys]


def _cond(it, eqn, invals, stack, srcs, contexts, loop):
    index, ops = invals[0], invals[1:]
    osrc = srcs[1:]
    branches = [_closed(b) for b in eqn.params["branches"]]

    def run(b, sub, *x):
        jaxpr, consts = branches[b]
        return _eval(sub, jaxpr, consts, list(x), stack, osrc, contexts + (f"cond[{b}]",), loop)

    recs = [_discover(it, functools.partial(run, b), *ops) for b in range(len(branches))]
    probes = [it.take(len(r)) for r in recs]

    def branch_fn(b):
        def fn(*x):
            sub = _Interp(it.opts, probes[b], it.connected)
            outs = run(b, sub, *x)
            vals = []
            for b2, r2 in enumerate(recs):
                if b2 == b:
                    vals.extend(sub.values)
                else:  # a branch that did not run has no values
                    vals.extend(jnp.full(r.loop[len(loop):] + r.info.shape, jnp.nan, r.info.dtype)
                                for r in r2)
            return outs, vals
        return fn

    outs, values = jax.lax.switch(index, [branch_fn(b) for b in range(len(branches))], *ops)
    it.absorb([r for rs in recs for r in rs], values)
    return list(outs)


# ----------------------------------------------------------------------------------------------
# Statistics and the compiled program
# ----------------------------------------------------------------------------------------------
def _block_stats(x: Array, length: np.ndarray, kind: np.ndarray,
                 edges: np.ndarray) -> dict[str, Array]:
    """The statistics of every row of ``x`` (rows, width): row ``r``'s first ``length[r]`` entries
    are its values, the rest padding; its histogram uses ``edges[kind[r]]``.

    The same algorithm as :func:`initjax.engine.stats.finite_moments` (finite entries only, a
    max-abs rescaling so squares of huge values do not overflow, NaN for no finite entry) and
    :func:`~initjax.engine.stats.histogram` (``numpy.histogram``'s bins: the edges decide), written
    for a padded batch of rows so that one program serves every recorded value."""
    rows, width = x.shape
    bins = edges.shape[1] - 1
    x = x.astype(jnp.float32)
    valid = jnp.arange(width)[None, :] < jnp.asarray(length)[:, None]
    finite = valid & jnp.isfinite(x)
    count = finite.sum(axis=1)
    xz = jnp.where(finite, x, 0.0)
    scale = jnp.max(jnp.abs(xz), axis=1)
    scale = jnp.where(scale > 0, scale, 1.0)
    y = xz / scale[:, None]
    n = jnp.maximum(count, 1).astype(jnp.float32)
    m1 = y.sum(axis=1) / n
    centred = jnp.where(finite, y - m1[:, None], 0.0)
    nan = jnp.float32(jnp.nan)
    empty = count == 0
    out = {
        "mean": jnp.where(empty, nan, m1 * scale),
        "var": jnp.where(empty, nan, (centred * centred).sum(axis=1) / n * scale * scale),
        "second_moment": jnp.where(empty, nan, (y * y).sum(axis=1) / n * scale * scale),
        "mean_abs": jnp.where(empty, nan, jnp.abs(y).sum(axis=1) / n * scale),
        "nonfinite": (jnp.asarray(length) - count).astype(jnp.int32),
    }
    e = jnp.asarray(edges)[jnp.asarray(kind)]  # (rows, bins + 1)
    lo, hi = e[:, :1], e[:, -1:]
    idx = jnp.floor((x - lo) / (hi - lo) * bins).astype(jnp.int32)
    idx = jnp.clip(idx, 0, bins - 1)
    idx = jnp.where(x < jnp.take_along_axis(e, idx, axis=1), idx - 1, idx)
    upper = jnp.take_along_axis(e, jnp.clip(idx + 1, 0, bins), axis=1)
    idx = jnp.clip(jnp.where((x >= upper) & (idx != bins - 1), idx + 1, idx), 0, bins - 1)
    inside = finite & (x >= lo) & (x <= hi)
    flat = (jnp.arange(rows)[:, None] * bins + idx).reshape(-1)
    out["hist"] = jnp.zeros(rows * bins, jnp.int32).at[flat].add(
        inside.reshape(-1).astype(jnp.int32)).reshape(rows, bins)
    out["outside"] = jnp.stack([(finite & (x < lo)).sum(axis=1), (finite & (x > hi)).sum(axis=1)],
                               axis=1).astype(jnp.int32)
    return out


def _stats_rows(rows: Sequence[Array], kinds: Sequence[int], edges: np.ndarray) -> dict[str, Array]:
    """:func:`_block_stats` of every row (1-D arrays), stacked ``(row, ...)`` in the given order.

    Rows are padded into a few blocks (a row joins a block if it is at least half as long as the
    block's longest), so the statistics compile once or a few times rather than once per value
    and the padding at most doubles the memory."""
    order = sorted(range(len(rows)), key=lambda i: -int(rows[i].shape[0]))
    blocks: list[list[int]] = []
    for i in order:
        if blocks and 2 * int(rows[i].shape[0]) >= int(rows[blocks[-1][0]].shape[0]):
            blocks[-1].append(i)
        else:
            blocks.append([i])
    parts, placed = [], []
    for block in blocks:
        width = max(int(rows[block[0]].shape[0]), 1)
        x = jnp.stack([jnp.pad(rows[i].astype(jnp.float32), (0, width - rows[i].shape[0]))
                       for i in block])
        length = np.asarray([rows[i].shape[0] for i in block], np.int32)
        parts.append(_block_stats(x, length, np.asarray([kinds[i] for i in block]), edges))
        placed.extend(block)
    inverse = np.argsort(np.asarray(placed))
    return {k: jnp.concatenate([p[k] for p in parts])[inverse] for k in parts[0]}


def _expand(recs: Sequence[_Rec]) -> tuple[OpInfo, ...]:
    """One :class:`OpInfo` per row (a scan record gives one per iteration), with unique names."""
    infos = []
    for r in recs:
        for idx in np.ndindex(*r.loop) if r.loop else [()]:
            it = iter(idx)
            ctx = "/".join(f"scan[{next(it)}]" if c == "scan" else c for c in r.contexts)
            info = r.info
            if info.output_of:
                base = info.output_of
            elif info.scope:
                base = f"{info.scope}/{info.primitive}"
            else:
                param = next((s for s in reversed(info.operands) if s), "")
                base = f"{info.primitive}({param})" if param else info.primitive
            infos.append(info._replace(name=base + (f"@{ctx}" if ctx else ""), context=ctx))
    seen: dict[str, int] = {}
    unique = []
    for info in infos:
        n = seen.get(info.name, 0) + 1
        seen[info.name] = n
        unique.append(info._replace(name=info.name if n == 1 else f"{info.name}#{n}"))
    return tuple(unique)


def _arg_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The names of ``fn``'s positional parameters, as far as its signature tells."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _input_paths(arg_names: tuple[str, ...], args: tuple[Any, ...], is_nnx: bool) -> list[str]:
    """The dotted path of every leaf of ``args`` (``"params.w1"``; an NNX state's own paths)."""
    paths = []
    for i, a in enumerate(args):
        if is_nnx and i == 0:
            prefix = ""
        else:
            j = i - 1 if is_nnx else i
            prefix = arg_names[j] if j < len(arg_names) else f"arg{j}"
        for path, _ in jax.tree_util.tree_flatten_with_path(a)[0]:
            keys = []
            for k in path:
                for attr in ("key", "name", "idx"):
                    if hasattr(k, attr):
                        keys.append(str(getattr(k, attr)))
                        break
                else:
                    keys.append(str(k))
            if keys and keys[-1] == "value" and is_nnx and i == 0:
                keys = keys[:-1]  # an nnx Variable's payload: name the variable
            paths.append(".".join([prefix, *keys]) if prefix else ".".join(keys))
    return paths


class _Static:
    """The probed function as a static jit argument: its own hash, else its identity. For an NNX
    module only its graph definition is kept (the jit cache then holds no parameter arrays)."""

    def __init__(self, fn: Callable[..., Any] | None, nnx_graph: Any = None,
                 arg_names: tuple[str, ...] = ()):
        self.fn = fn
        self.nnx_graph = nnx_graph
        self.arg_names = arg_names
        try:
            self._hash = hash(self._target())
            self._by_value = True
        except TypeError:  # e.g. a bound method of an unhashable Linen module: no reuse by value
            self._hash = id(self._target())
            self._by_value = False

    def _target(self) -> Any:
        return self.nnx_graph if self.nnx_graph is not None else self.fn

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Static) or (self.nnx_graph is None) != (other.nnx_graph is None):
            return False
        a, b = self._target(), other._target()
        return a is b or (self._by_value and other._by_value and bool(a == b))

    def __call__(self, *args: Any) -> Any:
        if self.nnx_graph is None:
            return self.fn(*args)
        from flax import nnx

        return nnx.merge(self.nnx_graph, args[0])(*args[1:])  # a fresh copy: the model is untouched


@functools.cache
def _known_primitives() -> frozenset[str]:
    prims = vars(jex.core.primitives).values()
    names = {p.name for p in prims if isinstance(p, jex.core.Primitive)}
    return frozenset(names | {"name", *_REMAT, *_INLINE, *_CUSTOM})


def _used_primitives(jaxpr: Any, out: set[str]) -> set[str]:
    for eqn in jaxpr.eqns:
        out.add(eqn.primitive.name)
        for sub in jex.core.jaxprs_in_params(eqn.params):
            _used_primitives(sub, out)
    return out


def _loss(opts: _Opts, out: Any, key: Array, cot: Any) -> Array:
    leaves, treedef = jax.tree_util.tree_flatten(out)
    if opts.cotangent == "loss":
        if len(leaves) != 1 or np.shape(leaves[0]) != () or not jnp.issubdtype(
                jnp.result_type(leaves[0]), jnp.floating):
            shapes = [np.shape(x) for x in leaves]
            raise ValueError(f"cotangent='loss' needs fn to return one float scalar, got "
                             f"{len(leaves)} output(s) of shapes {shapes}")
        return leaves[0].astype(jnp.float32)
    if opts.cotangent == "array":
        cot_leaves, cot_tree = jax.tree_util.tree_flatten(cot)
        if cot_tree != treedef or any(np.shape(c) != np.shape(x)
                                      for c, x in zip(cot_leaves, leaves, strict=True)):
            want = jax.tree_util.tree_unflatten(treedef, [np.shape(x) for x in leaves])
            got = jax.tree_util.tree_unflatten(cot_tree, [np.shape(c) for c in cot_leaves])
            raise ValueError(f"cotangent must have fn's output structure and shapes {want}, "
                             f"got {got}")
    else:
        cot_leaves = [jax.random.normal(jax.random.fold_in(key, i), np.shape(x), jnp.float32)
                      for i, x in enumerate(leaves)]
    total = jnp.float32(0.0)
    for c, x in zip(cot_leaves, leaves, strict=True):
        if jnp.issubdtype(jnp.result_type(x), jnp.floating):
            total = total + jnp.sum(jnp.asarray(c, jnp.float32) * x.astype(jnp.float32))
    return total


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run(static: _Static, opts: _Opts, args: tuple[Any, ...], key: Array, cot: Any) -> OpStats:
    closed, out_shape = jax.make_jaxpr(static, return_shape=True)(*args)
    unknown = [p for p in opts.include
               if p not in _known_primitives() and p not in _used_primitives(closed.jaxpr, set())]
    if unknown:
        known = sorted(_known_primitives() | _used_primitives(closed.jaxpr, set()))
        close = {p: difflib.get_close_matches(p, known, n=3) for p in unknown}
        raise ValueError(f"unknown primitive name(s) {unknown} in include (closest known: "
                         f"{close}); include takes JAX primitive names, e.g. {DEFAULT_INCLUDE}, "
                         "'add', 'tanh'")
    flat_args = jax.tree_util.tree_leaves(args)
    srcs = _input_paths(static.arg_names, args, static.nnx_graph is not None)
    if len(srcs) != len(flat_args):  # defensive: paths are a naming aid only
        srcs = [""] * len(flat_args)
    jaxpr, consts = closed.jaxpr, list(closed.consts)

    def evaluate(it: _Interp, flat: list[Any]) -> list[Any]:
        return _eval(it, jaxpr, consts, flat, (), srcs, (), ())

    recs = _discover(_Interp(opts, None), evaluate, flat_args)
    if not recs:
        prims = sorted(_used_primitives(jaxpr, set()))
        raise ValueError(f"nothing to record in fn: no output of {list(opts.include)}, no named "
                         f"scope matching scopes={list(opts.scopes)}, no tag matching "
                         f"names={list(opts.names)} "
                         f"and no consumer of params={list(opts.params)} "
                         f"(fn's primitives: {prims})")
    zeros = [jnp.zeros(r.loop + r.info.shape, r.info.dtype) for r in recs]

    def loss_fn(probes):
        it = _Interp(opts, probes)
        flat_out = evaluate(it, flat_args)
        out = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), flat_out)
        return _loss(opts, out, key, cot), it.values

    (loss, values), grads = jax.value_and_grad(loss_fn, has_aux=True)(zeros)
    vals_rows, cot_rows, has_grad = [], [], []
    for r, v, g in zip(recs, values, grads, strict=True):
        lead = int(np.prod(r.loop, dtype=np.int64))
        # a NaN value (a cond branch that did not run, an overflow) has no meaningful cotangent,
        # and inside a kept custom rule no cotangent exists at all
        g = jnp.where(jnp.isnan(v) | (not r.info.has_grad), jnp.nan, g)
        vals_rows.extend(v.reshape((lead, *r.info.shape)))
        cot_rows.extend(g.reshape((lead, *r.info.shape)))
        has_grad.extend([r.info.has_grad] * lead)
    edges = np.stack([histogram_edges(opts.value_range, opts.bins),
                      histogram_edges(opts.grad_range, opts.bins)])
    both = _stats_rows([v.reshape(-1) for v in vals_rows] + [g.reshape(-1) for g in cot_rows],
                       [0] * len(vals_rows) + [1] * len(cot_rows), edges)
    m = len(vals_rows)
    fields = {k: v[:m] for k, v in both.items()}
    fields.update({"grad_" + k: v[m:] for k, v in both.items()})
    if not all(has_grad):  # no cotangent: NaN moments, empty histograms, no non-finite count
        missing = jnp.asarray(~np.asarray(has_grad))
        fields["grad_hist"] = jnp.where(missing[:, None], 0, fields["grad_hist"])
        fields["grad_outside"] = jnp.where(missing[:, None], 0, fields["grad_outside"])
        fields["grad_nonfinite"] = jnp.where(missing, 0, fields["grad_nonfinite"])
    return OpStats(**fields, loss=loss,
                   values=tuple(vals_rows) if opts.return_tensors else None,
                   cotangents=tuple(cot_rows) if opts.return_tensors else None,
                   ops=_expand(recs), value_range=opts.value_range, grad_range=opts.grad_range,
                   bins=opts.bins)


def probe_ops(
    fn: Callable[..., Any],
    *args: Any,
    cotangent: str | Any = "normal",
    key: int | Array = 0,
    include: Sequence[str] = DEFAULT_INCLUDE,
    names: Sequence[str] = ("*",),
    scopes: Sequence[str] = (),
    params: Sequence[str] = (),
    value_range: tuple[float, float] = (-3.0, 3.0),
    grad_range: tuple[float, float] = (-3.0, 3.0),
    histogram_bins: int = 40,
    inline_custom: bool = False,
    return_tensors: bool = False,
    precision: str = "highest",
) -> OpStats:
    """Forward and backward statistics of every matmul/conv and named output of ``fn(*args)``.

    ``fn`` is traced to a jaxpr and re-evaluated by an interpreter that records the outputs of the
    equations it is asked for (see the module docstring for what it enters), adds a zero probe to
    each, and differentiates

        loss = <cotangent, fn(*args)>   (or fn's scalar output, cotangent="loss")

    with respect to the probes: ``d loss / d probe_k`` at 0 is the cotangent of recorded value
    ``k``. Every value then gets its mean, variance, second moment, mean ``|x|``, non-finite
    count and a histogram, and so does its cotangent. The model is not modified, and the result
    is a pure function of ``(args, key)``: ``jax.vmap`` it over keys or over stacked parameters to
    get a seed axis. Compiled once per function, argument shapes and options.

    Args:
      fn: a callable of ``args`` returning an array or a pytree of arrays; a Flax NNX module is
        called as ``module(*args)`` on a private copy (``nnx.split``/``nnx.merge``), its state
        being an input (its records are named by the paths of its parameters). For Linen pass
        ``module.apply`` and the variables as the first argument.
      *args: ``fn``'s positional arguments (pytrees of arrays).
      cotangent: ``"normal"`` (output leaf ``i`` gets i.i.d. ``N(0, 1)`` from
        ``jax.random.fold_in(key, i)``), ``"loss"`` (``fn`` returns the scalar loss), or an array
        pytree of ``fn``'s output structure and shapes.
      key: PRNG key, or an int seed (``jax.random.key(seed, impl="philox2x32")``), for ``"normal"``.
      include: primitive names whose outputs are recorded (JAX's names: ``"dot_general"``,
        ``"conv_general_dilated"``, ``"tanh"``, ``"add"``...).
      names: ``fnmatch`` patterns: the :func:`tag` (``checkpoint_name``) outputs whose names
        match are recorded. ``()`` records none.
      scopes: ``fnmatch`` patterns on named-scope paths (``"MLP/Dense_0"``): the outputs of
        matching scopes (Linen modules, ``jax.named_scope`` blocks) are recorded.
      params: ``fnmatch`` patterns on input paths (``"*.bias"``): the output of every operation
        (not a reshape/cast/slice view) that takes a matching input is recorded. With ``"*.bias"``
        an NNX model's Linear, LayerNorm and attention-projection outputs after their bias
        (``"add(blocks.0.ln1.bias)"``): module outputs named by data flow, without patching.
      value_range, grad_range: the ranges of the value and cotangent histograms.
      histogram_bins: the number of histogram bins (>= 1).
      inline_custom: differentiate through the primal of ``custom_jvp``/``custom_vjp`` calls to
        record cotangents inside them (default: keep their rules, record inside forward only).
      return_tensors: also return every recorded value and its cotangent (``OpStats.values``).
      precision: matmul precision of the probed program, one of ``"highest"``, ``"high"``,
        ``"default"`` (see :mod:`initjax._precision`).

    Returns:
      :class:`OpStats`: one row per recorded value (per iteration inside a ``scan``), axes
      ``(op,)``, ``(op, bin)``; the rows' :class:`OpInfo` in ``.ops``.

    Raises:
      TypeError: ``fn`` not callable; ``include``/``names``/``scopes``/``params`` not sequences
        of strings; a bad key.
      ValueError: an unknown primitive name in ``include``; ``histogram_bins < 1``; a bad range,
        cotangent or precision; a cotangent of the wrong shape; nothing to record.

    >>> w = jnp.ones((3, 2)); x = jnp.ones((4, 3))
    >>> st = probe_ops(lambda w, x: jnp.tanh(x @ w), w, x)
    >>> st.names, st.var.shape
    (('dot_general(w)',), (1,))
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable (a function, a Flax NNX module or module.apply), "
                        f"got {fn!r} ({type(fn).__name__})")
    include = _check_names("include", include)
    names = _check_names("names", names)
    scopes = _check_names("scopes", scopes)
    params = _check_names("params", params)
    bins = check_int("histogram_bins", histogram_bins, minimum=1)
    value_range = check_range("value_range", value_range)
    grad_range = check_range("grad_range", grad_range)
    precision = check_precision(precision)
    if isinstance(cotangent, str):
        if cotangent not in COTANGENTS:
            raise ValueError(f"cotangent must be one of {COTANGENTS} or an array pytree, "
                             f"got {cotangent!r}")
        kind, cot = cotangent, None
    else:
        kind, cot = "array", jax.tree_util.tree_map(jnp.asarray, cotangent)
    key = as_key(key, "key")
    for flag_name, flag in (("inline_custom", inline_custom), ("return_tensors", return_tensors)):
        if not isinstance(flag, bool):
            raise TypeError(f"{flag_name} must be True or False, got {flag!r}")
    static, state = _static_fn(fn)
    if state is not None:
        args = (state, *args)
    opts = _Opts(include, names, scopes, params, value_range, grad_range, bins, kind, inline_custom,
                 return_tensors, precision)
    with matmul_precision(precision):
        return _run(static, opts, tuple(args), key, cot)


def _static_fn(fn: Callable[..., Any]) -> tuple[_Static, Any]:
    """The static part of ``fn`` and, for an NNX module, its state (an input of the probe)."""
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a dependency
        return _Static(fn, arg_names=_arg_names(fn)), None
    if isinstance(fn, nnx.Module):
        graphdef, state = nnx.split(fn)
        return _Static(None, nnx_graph=graphdef, arg_names=_arg_names(fn)), state
    return _Static(fn, arg_names=_arg_names(fn)), None


def _check_names(what: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"{what} must be a sequence of strings, e.g. ({value!r},), "
                        f"got the string {value!r}")
    try:
        items = tuple(value)
    except TypeError as err:
        raise TypeError(f"{what} must be a sequence of strings, got {value!r}") from err
    bad = [v for v in items if not isinstance(v, str) or not v]
    if bad:
        raise TypeError(f"{what} must hold non-empty strings, got {bad!r}")
    return items
