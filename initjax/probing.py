"""Probe an existing Flax model: the engine's per-layer statistics of any network, at any time.

:func:`initjax.propagate` samples its own networks from a :class:`~initjax.NetworkConfig`.
:func:`probe` measures a network that already exists (an initjax :class:`~initjax.modules.MLP` or
:class:`~initjax.modules.PlainCNN`, a stacked ensemble of them, or any Flax NNX model built from
``nnx.Linear``/``nnx.Conv`` layers) and :func:`probe_linen` does the same for a Flax Linen model.
Both hand the model's per-layer tensors to :func:`initjax.engine.measure_layers`, the very
code the engine uses, so a probed network and the same network propagated by the engine give the
same :class:`~initjax.LayerStats` (the tests check it field by field).

How the gradients are taken: one forward pass with zero "probes" added to each layer's
pre-activation ``h^l`` and layer output ``x^l`` and one ``jax.vjp``; the cotangents of the probes
are ``dL/dh^l`` and ``dL/dx^l`` exactly (no finite differences). The probes are added by routing
the calls of the layer modules through a hook for the duration of the forward pass: the hook is
keyed by the identity of the module instances of a private copy of the model (``nnx.split`` /
``nnx.merge``), so the caller's model is never modified (batch-norm running averages included).
Like ``nnx.capture(method_outputs=...)``, this swaps ``__call__`` on the layer classes while the
forward pass runs; a lock serializes probes in one process.

What is measured (layer ``l = 1..L``; every tensor is reshaped to ``(rows, channels)`` with
``rows = prod(all axes but the last)``, so a CNN's NHWC maps become ``(batch*H*W, channels)`` and
every spatial position counts as one example for the moments, histograms and cosines):

* initjax ``MLP``/``PlainCNN`` (their ``forward_with_intermediates``): ``x_prev`` the block input,
  ``h`` = ``"preact"`` (the Linear/Conv output), ``y`` = ``"act"`` (the activation function's
  output), ``out`` = ``"hidden"`` (what the next block receives: after a norm placed after the
  activation and after a residual addition), ``dh = dL/dh``, ``dx = dL/dout``. The readout
  (``MLP(out_features=...)``) and the classifier of a ``PlainCNN`` are not layers: as in the engine,
  only hidden blocks are measured, and the cotangent is applied at the model's output.
* any other NNX model: each *call* of an ``nnx.Linear`` or ``nnx.Conv`` (subclasses included) is a
  layer, in call order. ``x_prev`` is the tensor that call receives, ``h`` its output;
  ``out`` is the tensor that the *next* Linear/Conv call receives (for the last layer: the model's
  output), and ``dx`` is the gradient with respect to it *as that call receives it* (the path
  through the next layer only: for a purely sequential model it is the full ``dL/dx^l``; where
  ``x^l`` also feeds a skip connection, the skip path is not included). ``y`` is ``out`` when
  ``activation`` is None (whatever the model does between two linear layers: activation, norm,
  pooling, flattening), else ``activation(h)``. The activation whose bounds define ``saturated`` is
  ``activation`` when given; otherwise it is inferred per layer as the first registered activation
  ``phi`` with ``phi(h) == y`` (allclose; ``identity`` if none matches or the shapes differ).
* Conv layers: the weight-gradient statistics (``weight_grad_*``) are those of the true
  ``dL/dkernel`` (the Gram identity of the engine holds for dense layers only); a Conv module
  called more than once gets NaN there (its kernel gradient sums all calls).

Costs: the forward/backward pass is compiled once per architecture (probing another model of the
same structure reuses it) and the statistics once per layer shape and activation. The pairwise
cosines and the dense weight-gradient norm use ``rows x rows`` Gram matrices, so a layer may have
at most :data:`MAX_ROWS` rows (batch x spatial positions).

References:
  Glorot & Bengio 2010 (histograms of activations and back-propagated gradients at init, Figures
  6-8), https://proceedings.mlr.press/v9/glorot10a.html; Schoenholz et al. 2017 (signal
  propagation), https://arxiv.org/abs/1611.01232.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from initjax import activations as _activations
from initjax._checks import check_float, check_int
from initjax._keys import as_key
from initjax._precision import DEFAULT_PRECISION, check_precision, matmul_precision
from initjax.engine import LayerStats, Propagation, measure_layers
from initjax.engine.blocks import BlockPropagation, BlockStats, forward_stats
from initjax.engine.stats import check_range, finite_moments, overflowed_rows
from initjax.modules import MLP, DenseLayer, NetworkModule, PlainCNN, ResidualBlock

__all__ = [
    "ProbeConfig",
    "ProbeResult",
    "probe",
    "probe_linen",
    "probe_blocks",
    "find_layers",
    "COTANGENTS",
    "MAX_ROWS",
]

COTANGENTS = ("normal",)  # the string forms; an array or a loss callable are accepted too
# measure_layers forms rows x rows Gram matrices (pairwise cosines, weight-gradient norms); above
# this many rows per layer (batch x spatial positions) one Gram alone needs over 1 GiB.
MAX_ROWS = 2**14

Array = jax.Array


# ----------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------
class ProbeConfig(NamedTuple):
    """What :mod:`initjax.plotting` reads from ``result.config``: a name and the layer count."""

    name: str
    depth: int


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """The statistics of a probed model, shaped like :class:`~initjax.Propagation`'s.

    ``hist_strip(result)`` works as for a :class:`~initjax.Propagation`; ``variance_curves`` takes
    it inside a list (``variance_curves([result])``).

    Attributes:
      stats: :class:`~initjax.LayerStats`, numpy arrays with axes ``(seed, layer, ...)``; the seed
        axis has size 1, or S for a stacked ensemble (member ``s`` is seed ``s``).
      act_edges: the ``bins + 1`` edges of the activation histograms.
      grad_edges: the edges of the ``dL/dh`` histograms.
      layer_names: the module path of each layer (``"layers.0"``; ``"name#2"`` for a module's
        second call).
      activations: per layer, the :class:`~initjax.activations.Activation` whose bounds define
        ``saturated`` (given, the model's own, or inferred; see the module docstring).
      model_name: the probed model's class name (``"MLP"``, ``"ensemble of 4 MLP"``).
      cotangent: how the output gradient was set: ``"normal"``, ``"array"`` or ``"loss"``.
      precision: the matmul precision of the model's forward/backward pass and the statistics
        (see :mod:`initjax._precision`).
    """

    stats: LayerStats
    act_edges: np.ndarray
    grad_edges: np.ndarray
    layer_names: tuple[str, ...]
    activations: tuple[_activations.Activation, ...]
    model_name: str
    cotangent: str = "normal"
    precision: str = DEFAULT_PRECISION

    @property
    def config(self) -> ProbeConfig:
        """``(name, depth)``, for the plotting functions that label by ``result.config``."""
        return ProbeConfig(self.model_name, len(self.layer_names))

    @property
    def depth(self) -> int:
        return len(self.layer_names)

    @property
    def seeds(self) -> int:
        return int(np.shape(self.stats.act_var)[0])

    @property
    def nonfinite_layers(self) -> list[int]:
        """1-based layers with a non-finite value or a float32-overflowing variance in some seed."""
        return Propagation.nonfinite_layers.fget(self)  # same definition as the engine's

    def layer_table(self) -> list[dict[str, Any]]:
        """One dict per layer, as :meth:`initjax.Propagation.layer_table` (seed means and ``_sd``),
        plus ``"name"`` (the module path) and ``"activation"`` (the spec used for saturation)."""
        rows = Propagation.layer_table(self)  # reads only .config.depth and .stats
        for row, name, act in zip(rows, self.layer_names, self.activations, strict=True):
            row["name"] = name
            row["activation"] = act.spec
        return rows

    table = layer_table


# ----------------------------------------------------------------------------------------------
# Routing module calls through hooks
# ----------------------------------------------------------------------------------------------
_LOCK = threading.RLock()
_HOOKS: dict[int, Callable[..., Any]] = {}
_BUSY: set[int] = set()
_MISSING = object()


def _patched_call(orig: Callable[..., Any]) -> Callable[..., Any]:
    def __call__(self, *args, **kwargs):
        key = id(self)
        hook = _HOOKS.get(key)
        # _BUSY: a subclass's __call__ that calls super().__call__ is hooked once, not twice
        if hook is None or key in _BUSY:
            return orig(self, *args, **kwargs)
        _BUSY.add(key)
        try:
            return hook(lambda *a, **k: orig(self, *a, **k), args, kwargs)
        finally:
            _BUSY.discard(key)

    return __call__


@contextlib.contextmanager
def _hooked(hooks: Mapping[int, tuple[Any, Callable[..., Any]]]):
    """Route calls of the given module instances (``id -> (module, hook)``) through
    ``hook(call, args, kwargs)`` while the block runs; other instances are untouched."""
    with _LOCK:
        saved = []
        try:
            for cls in {type(m) for m, _ in hooks.values()}:
                saved.append((cls, cls.__dict__.get("__call__", _MISSING)))
                cls.__call__ = _patched_call(cls.__call__)
            _HOOKS.update({k: fn for k, (_, fn) in hooks.items()})
            yield
        finally:
            for k in hooks:
                _HOOKS.pop(k, None)
            for cls, orig in reversed(saved):
                if orig is _MISSING:
                    delattr(cls, "__call__")
                else:
                    cls.__call__ = orig


class _Probes(NamedTuple):
    h: list[Array]  # one zero per layer, added to the Linear/Conv output
    x: list[Array]  # one zero per layer, added to the layer output


class _Call(NamedTuple):
    name: str
    path: tuple  # the module's path in the parameter tree
    is_conv: bool


class _Recorder:
    """Collects each call of a tracked layer (its input and output) and, when probes are given,
    adds them: ``probes.h[k]`` to call k's output, and (``probe_inputs``) ``probes.x[k-1]`` to
    call k's input."""

    def __init__(self, probes: _Probes | None, probe_inputs: bool):
        self.probes = probes
        self.probe_inputs = probe_inputs
        self.meta: list[_Call] = []
        self.inputs: list[Array] = []
        self.outputs: list[Array] = []
        self.activation_calls = 0

    def _probe(self, kind: str, k: int, value: Array) -> Array:
        probes = getattr(self.probes, kind)
        if k >= len(probes) or jnp.shape(value) != probes[k].shape:
            raise RuntimeError(
                "the model ran differently in the probed pass than in the discovery pass (more "
                "layer calls or other shapes); probe needs a forward pass whose layer calls do not "
                "depend on the values of the data"
            )
        return value + probes[k]

    def layer_hook(self, name: str, path: tuple, is_conv: bool) -> Callable[..., Any]:
        def hook(call, args, kwargs):
            if not args:
                raise TypeError(f"layer {name!r} was called without a positional input")
            k = len(self.meta)
            x = args[0]
            if self.probes is not None and self.probe_inputs and k > 0:
                x = self._probe("x", k - 1, x)
            h = call(x, *args[1:], **kwargs)
            if self.probes is not None:
                h = self._probe("h", k, h)
            self.meta.append(_Call(name, path, is_conv))
            self.inputs.append(x)
            self.outputs.append(h)
            return h

        return hook

    def output_hook(self, index: int) -> Callable[..., Any]:
        def hook(call, args, kwargs):
            out = call(*args, **kwargs)
            return out if self.probes is None else self._probe("x", index, out)

        return hook


class _CountingActivation:
    """Stands in for a stack's shared activation function: the i-th call adds ``probes.x[i]``."""

    def __init__(self, fn: Callable[[Array], Array], recorder: _Recorder):
        self.fn = fn
        self.recorder = recorder

    def __call__(self, z: Array) -> Array:
        i = self.recorder.activation_calls
        self.recorder.activation_calls += 1
        out = self.fn(z)
        return out if self.recorder.probes is None else self.recorder._probe("x", i, out)


# ----------------------------------------------------------------------------------------------
# Models: a forward pass with probes, and how its tensors map to the engine's
# ----------------------------------------------------------------------------------------------
_LAYER_TYPES = (nnx.Linear, nnx.Conv)


def path_name(path: Sequence[Any]) -> str:
    """A module path as the dotted name :func:`find_layers` reports (``"layers.0"``)."""
    return ".".join(str(p) for p in path) or "<root>"


def layer_modules(model: nnx.Module) -> list[tuple[tuple, nnx.Module]]:
    """The model's ``nnx.Linear``/``nnx.Conv`` submodules (attribute order, each once)."""
    return [(tuple(p), m) for p, m in nnx.iter_modules(model) if isinstance(m, _LAYER_TYPES)]


def _set_running_average(model: nnx.Module, value: bool) -> None:
    for _, sub in nnx.iter_modules(model):
        if hasattr(sub, "use_running_average"):
            sub.use_running_average = value


class _OutputError(TypeError):
    """The model's forward pass did not return one array (not a shape problem of ``x``)."""


def _as_output(result: Any, who: str) -> Array:
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping):
        result = result[0]  # Linen apply(..., mutable=[...]) returns (output, updated variables)
    if not isinstance(result, jax.Array | np.ndarray) or jnp.ndim(result) == 0:
        shape = f" of shape {result.shape}" if hasattr(result, "shape") else ""
        raise _OutputError(
            f"probe needs {who} to return one array with a batch axis; got "
            f"{type(result).__name__}{shape}"
        )
    return result


class _Aux(NamedTuple):
    inputs: list[Array]
    outputs: list[Array]
    inter: dict[str, list[Array]] | None


class _Runner:
    """One model kind: ``forward(params, rest, x, probes, meta)`` -> ``(output, _Aux)`` (``meta``
    gets the layers' static facts at trace time), and the map from its tensors to the engine's."""

    stack = False

    def _key(self) -> tuple:
        return (id(self),)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash((type(self), self._key()))

    def forward(self, params, rest, x, probes, meta):  # pragma: no cover - interface
        raise NotImplementedError

    def probe_x_shapes(self, out, aux: _Aux) -> list[Any]:
        """Shapes of the probes on the layer outputs: each next call's input, then the output."""
        return [*aux.inputs[1:], out]

    def tensors(self, x, out, aux: _Aux, dprobes: _Probes) -> dict[str, list[Array]]:
        return {
            "x_prev": list(aux.inputs),
            "h": list(aux.outputs),
            "act_in": list(aux.outputs),
            "y": None,  # chosen later: out, or activation(h)
            "out": [*aux.inputs[1:], out],
            "dh": list(dprobes.h),
            "dx": list(dprobes.x),
        }


class NNXRunner(_Runner):
    """Runs an NNX model's forward pass from its split state (graph definition, params, rest)
    with probes hooked into its Linear/Conv calls; shared with :mod:`initjax.lsuv`."""

    def __init__(self, graphdef, use_running_average: bool | None):
        self.graphdef = graphdef
        self.ura = use_running_average

    def _key(self) -> tuple:
        return (self.graphdef, self.ura)

    def _merge(self, params, rest):
        # nnx.merge reuses the Variable objects of the states it is given; rebuilding the states
        # (tree.map) gives the copy its own Variables, so running averages updated by a
        # training-mode batch norm never reach the caller's model (nor leak tracers into it).
        params, rest = jax.tree.map(lambda a: a, (params, rest))
        model = nnx.merge(self.graphdef, params, rest)
        if self.ura is not None:
            _set_running_average(model, self.ura)
        return model

    def forward(self, params, rest, x, probes, meta):
        model = self._merge(params, rest)
        rec = _Recorder(probes, probe_inputs=True)
        hooks = {
            id(m): (m, rec.layer_hook(path_name(p), p, isinstance(m, nnx.Conv)))
            for p, m in layer_modules(model)
        }
        with _hooked(hooks):
            out = _as_output(model(x), f"{type(model).__name__}.__call__")
        if probes is not None:
            out = rec._probe("x", len(rec.meta) - 1, out)
        meta[:] = _unique_names(rec.meta)
        return out, _Aux(rec.inputs, rec.outputs, None)


class _StackRunner(NNXRunner):
    """initjax MLP / PlainCNN: hidden blocks only, through ``forward_with_intermediates``."""

    stack = True

    def __init__(self, graphdef, use_running_average: bool | None, norm_placement: str):
        super().__init__(graphdef, use_running_average)
        self.norm_placement = norm_placement

    def _key(self) -> tuple:
        return (self.graphdef, self.ura, self.norm_placement)

    def forward(self, params, rest, x, probes, meta):
        model = self._merge(params, rest)
        rec = _Recorder(probes, probe_inputs=False)
        hooks = {
            id(m): (m, rec.layer_hook(f"layers.{i}", ("layers", i), isinstance(m, nnx.Conv)))
            for i, m in enumerate(model.layers)
        }
        # The probe on the block output goes on the op that produces it: adding it before the
        # residual addition h + block gives the same cotangent as adding it after.
        if model.norm is not None and model.norm_placement == "after":
            producers = list(model.norms)
        elif model.prelus is not None:
            producers = list(model.prelus)
        else:
            producers = []
            model.activation = _CountingActivation(model.activation, rec)
        hooks.update({id(m): (m, rec.output_hook(i)) for i, m in enumerate(producers)})
        with _hooked(hooks):
            out, inter = model.forward_with_intermediates(x, use_running_average=self.ura)
        meta[:] = rec.meta
        return out, _Aux(rec.inputs, rec.outputs, inter)

    def probe_x_shapes(self, out, aux: _Aux) -> list[Any]:
        return list(aux.inter["hidden"])

    def tensors(self, x, out, aux: _Aux, dprobes: _Probes) -> dict[str, list[Array]]:
        inter = aux.inter
        before = "postnorm" in inter and self.norm_placement == "before"
        return {
            "x_prev": [x, *inter["hidden"][:-1]],
            "h": list(inter["preact"]),
            "act_in": list(inter["postnorm"] if before else inter["preact"]),
            "y": list(inter["act"]),
            "out": list(inter["hidden"]),
            "dh": list(dprobes.h),
            "dx": list(dprobes.x),
        }


class _LinenRunner(_Runner):
    def __init__(self, apply_fn, apply_kwargs: Mapping[str, Any]):
        self.apply_fn = apply_fn
        self.apply_kwargs = dict(apply_kwargs)

    def forward(self, params, rest, x, probes, meta):
        import flax.linen as nn

        rec = _Recorder(probes, probe_inputs=True)
        busy: set[int] = set()

        def interceptor(next_fun, args, kwargs, context):
            mod = context.module
            hooked = isinstance(mod, nn.Dense | nn.Conv) and context.method_name == "__call__"
            if not hooked or id(mod) in busy:
                return next_fun(*args, **kwargs)
            path = tuple(mod.scope.path) if mod.scope is not None else ()
            hook = rec.layer_hook(path_name(path), path, isinstance(mod, nn.Conv))
            busy.add(id(mod))
            try:
                return hook(next_fun, args, kwargs)
            finally:
                busy.discard(id(mod))

        with _LOCK, nn.intercept_methods(interceptor):
            result = self.apply_fn({**rest, "params": params}, x, **self.apply_kwargs)
        out = _as_output(result, "apply_fn")
        if probes is not None:
            out = rec._probe("x", len(rec.meta) - 1, out)
        meta[:] = _unique_names(rec.meta)
        return out, _Aux(rec.inputs, rec.outputs, None)


def _unique_names(meta: list[_Call]) -> list[_Call]:
    """``name``, ``name#2``, ... for repeated calls of one module."""
    seen: dict[str, int] = {}
    result = []
    for call in meta:
        seen[call.name] = seen.get(call.name, 0) + 1
        n = seen[call.name]
        result.append(call._replace(name=call.name if n == 1 else f"{call.name}#{n}"))
    return result


# ----------------------------------------------------------------------------------------------
# The measurement
# ----------------------------------------------------------------------------------------------
def _rows(a: Array) -> Array:
    a = jnp.asarray(a)
    return a.reshape(-1, 1) if a.ndim == 1 else a.reshape(-1, a.shape[-1])


def _flat(tree: Any) -> dict[tuple, Any]:
    """path -> leaf for an nnx.State or a nested dict of arrays."""
    if isinstance(tree, nnx.State):
        return {tuple(k): jnp.asarray(v[...]) for k, v in nnx.to_flat_state(tree)}
    from flax import traverse_util

    return {tuple(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def _kernel_grad_stats(g: Array) -> tuple[Array, Array, Array]:
    """Mean, variance (ddof 0) and Frobenius norm of a kernel gradient, max-abs rescaled so that
    squares of huge-but-finite values do not overflow."""
    g = g.astype(jnp.float32).ravel()
    s = jnp.maximum(jnp.max(jnp.abs(g)), jnp.float32(1e-30))
    u = g / s
    mean = u.mean()
    return mean * s, jnp.mean((u - mean) ** 2) * s * s, jnp.sqrt(jnp.sum(u * u)) * s


@functools.partial(
    jax.jit, static_argnames=("runner", "conv_paths", "loss", "stacked", "per_member_cot")
)
def _tensors_of(params, rest, x, zeros, ct, *, runner, conv_paths, loss, stacked, per_member_cot):
    """Forward with zero probes, one vjp, and every layer's tensors as ``(seed, rows, channels)``.

    Compiled once per model structure (the runner compares by graph definition and options) and
    cotangent kind, so probing a model again, or another model of the same architecture, reuses
    the program.
    """

    def member(params, rest, ct):
        def f(p, probes):
            return runner.forward(p, rest, x, probes, [])

        out, vjp_fn, aux = jax.vjp(f, params, zeros, has_aux=True)
        ct = jax.grad(loss)(out) if loss is not None else ct.astype(out.dtype)
        dparams, dprobes = vjp_fn(ct)
        tensors = runner.tensors(x, out, aux, dprobes)
        tensors = {k: (None if v is None else [_rows(a) for a in v]) for k, v in tensors.items()}
        flat = _flat(dparams)
        keys = [None if p is None else (*p, "kernel") for p in conv_paths]
        kgrads = [_kernel_grad_stats(flat[k]) if k in flat else None for k in keys]
        return tensors, kgrads

    if not stacked:
        return jax.tree.map(lambda a: a[None], member(params, rest, ct))
    return jax.vmap(member, in_axes=(0, 0, 0 if per_member_cot else None))(params, rest, ct)


@functools.lru_cache(maxsize=64)
def _layer_measure(act, act_range, grad_range, bins, saturation_tolerance):
    """measure_layers for one layer, vmapped over the seed axis and compiled once per options (and
    per shapes: equal layers share one program)."""

    def one(xp, h, y, out, dh, dx):
        return measure_layers(
            act, [xp], [h], [y], [out], [dh], [dx], act_range=act_range, grad_range=grad_range,
            bins=bins, saturation_tolerance=saturation_tolerance,
        )

    return jax.jit(jax.vmap(one))


def _check_x(x: Any) -> Array:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"x must be an array (a batch of inputs), got {type(x).__name__}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x must be a float array, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(
            f"x must be a batch with a leading batch axis (rank >= 2), got shape {x.shape}"
        )
    return x


def _check_cotangent(cotangent: Any) -> tuple[str, Any]:
    if isinstance(cotangent, str):
        if cotangent not in COTANGENTS:
            raise ValueError(
                f"cotangent must be 'normal', an array of the model output's shape or a callable "
                f"loss(output) -> scalar; got {cotangent!r}"
            )
        return "normal", None
    if callable(cotangent):
        return "loss", cotangent
    if hasattr(cotangent, "shape"):
        c = jnp.asarray(cotangent)
        if not jnp.issubdtype(c.dtype, jnp.floating):
            raise TypeError(f"a cotangent array must be float, got dtype {c.dtype}")
        return "array", c
    raise TypeError(
        "cotangent must be 'normal', an array or a callable loss(output) -> scalar; "
        f"got {cotangent!r}"
    )


def _stack_size(model: nnx.Module, layers: list[tuple[tuple, nnx.Module]]) -> int | None:
    """S if ``model`` is a stacked ensemble (every kernel has one extra leading axis), else None."""
    extra = set()
    for _, m in layers:
        kernel = getattr(m, "kernel", None)
        if kernel is None:
            continue
        shape = tuple(jnp.shape(kernel[...]))
        if isinstance(m, nnx.Linear):
            want = (m.in_features, m.out_features)
        else:
            want = tuple(m.kernel_shape)
        if shape == want:
            extra.add(None)
        elif len(shape) == len(want) + 1 and shape[1:] == want:
            extra.add(shape[0])
        else:
            raise ValueError(
                f"kernel of shape {shape} matches neither its layer's {want} nor a stacked "
                f"(S, *{want})"
            )
    if len(extra) > 1:
        raise ValueError(
            f"some layers are stacked and some are not (leading sizes {sorted(map(str, extra))})"
        )
    return extra.pop() if extra else None


def _member(tree: Any, s: int) -> Any:
    return jax.tree.map(lambda a: a[s], tree)


def discover_layers(runner: _Runner, params, rest, x, model_desc: str, expect: str):
    """Shapes of the output and of every layer tensor, and the layers' static facts, from an
    abstract forward pass (``jax.eval_shape``: nothing is computed)."""
    meta: list[_Call] = []
    try:
        out, aux = jax.eval_shape(lambda p, r: runner.forward(p, r, x, None, meta), params, rest)
    except _OutputError:
        raise
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"x of shape {tuple(x.shape)} does not fit {model_desc}: {expect}. The forward pass "
            f"failed with: {err}"
        ) from err
    return out, aux, meta


def _infer_activation(act_in: np.ndarray, y: np.ndarray) -> _activations.Activation:
    identity = _activations.get("identity")
    if act_in.shape != y.shape:
        return identity
    names = ["identity", *(n for n in _activations.names(aliases=False) if n != "identity")]
    candidates = [_activations.get(n) for n in names]
    candidates.append(_activations.get("gelu", approximate=True))  # jax.nn.gelu's default
    for phi in candidates:
        got = np.asarray(phi(jnp.asarray(act_in)))
        if np.allclose(got, y, rtol=1e-5, atol=1e-6, equal_nan=True):
            return phi
    return identity


def _measure(runner: _Runner, params: Any, rest: Any, x: Array, *, precision: str,
             **options: Any) -> ProbeResult:
    """:func:`probe`'s measurement (:func:`_measure_at`), every matmul (the model's and the
    statistics') traced and run at ``precision``."""
    with matmul_precision(precision):
        result = _measure_at(runner, params, rest, x, **options)
    return dataclasses.replace(result, precision=precision)


def _measure_at(
    runner: _Runner,
    params: Any,
    rest: Any,
    x: Array,
    *,
    stack_size: int | None,
    model_desc: str,
    expect: str,
    cotangent: Any,
    key: Any,
    act_range: tuple[float, float],
    grad_range: tuple[float, float],
    bins: int,
    saturation_tolerance: float,
    activation: Any,
    model_activation: Any,
    model_name: str,
) -> ProbeResult:
    kind, cot_value = _check_cotangent(cotangent)
    base_key = as_key(key)
    given_act = None if activation is None else _activations.get(activation)
    bins = check_int("bins", bins, minimum=1)
    saturation_tolerance = check_float("saturation_tolerance", saturation_tolerance, minimum=0.0)

    p0, r0 = (params, rest) if stack_size is None else (_member(params, 0), _member(rest, 0))
    out_s, aux_s, meta = discover_layers(runner, p0, r0, x, model_desc, expect)
    if not meta:
        raise ValueError(
            f"{model_name} called no probe-able layer (nnx.Linear / nnx.Conv, or Linen nn.Dense / "
            "nn.Conv) in its forward pass; probe supports initjax MLP and PlainCNN, and models "
            "built from those layers"
        )
    out_shape = tuple(out_s.shape)
    if kind == "array":
        ok = [out_shape] + ([(stack_size, *out_shape)] if stack_size else [])
        if tuple(cot_value.shape) not in ok:
            raise ValueError(
                f"cotangent array has shape {tuple(cot_value.shape)}; expected the model output's "
                f"shape {out_shape}" + (f" or (members, *output) = {ok[1]}" if stack_size else "")
            )
    if kind == "loss":
        try:
            loss_shape = jax.eval_shape(cot_value, out_s).shape
        except Exception as err:  # noqa: BLE001 - any failure of the user's loss is reported
            raise ValueError(
                f"cotangent loss failed on an output of shape {out_shape}: {err}"
            ) from err
        if loss_shape != ():
            raise ValueError(f"cotangent loss must return a scalar, got shape {loss_shape}")

    zeros = _Probes(
        h=[jnp.zeros(a.shape, a.dtype) for a in aux_s.outputs],
        x=[jnp.zeros(a.shape, a.dtype) for a in runner.probe_x_shapes(out_s, aux_s)],
    )
    for call, h in zip(meta, aux_s.outputs, strict=True):
        rows = math.prod(h.shape[:-1]) if len(h.shape) > 1 else h.shape[0]
        if rows > MAX_ROWS:
            raise ValueError(
                f"layer {call.name!r} has {rows} rows (batch x spatial positions; output shape "
                f"{h.shape}); the cosine and weight-gradient statistics form rows x rows Gram "
                f"matrices, so probe allows at most {MAX_ROWS}: use a smaller batch or inputs"
            )

    if kind == "normal":
        members = stack_size or 1
        draws = [
            jax.random.normal(jax.random.fold_in(base_key, m), out_shape, jnp.float32)
            for m in range(members)
        ]
        ct = jnp.stack(draws).astype(out_s.dtype) if stack_size else draws[0].astype(out_s.dtype)
    elif kind == "array":
        ct = cot_value.astype(out_s.dtype)
    else:
        ct = jnp.zeros((), out_s.dtype)
    per_member_cot = stack_size is not None and ct.ndim == len(out_shape) + 1
    tensors, kgrads = _tensors_of(
        params, rest, x, zeros, ct, runner=runner,
        conv_paths=tuple(c.path if c.is_conv else None for c in meta),
        loss=cot_value if kind == "loss" else None, stacked=stack_size is not None,
        per_member_cot=per_member_cot,
    )

    calls_per_path: dict[tuple, int] = {}
    for c in meta:
        calls_per_path[c.path] = calls_per_path.get(c.path, 0) + 1
    layer_stats, acts = [], []
    for i, call in enumerate(meta):
        h = tensors["h"][i]
        if tensors["y"] is not None:
            y = tensors["y"][i]
        elif given_act is not None:
            y = given_act(h)
        else:
            y = tensors["out"][i]
        if given_act is not None:
            act = given_act
        elif isinstance(model_activation, _activations.Activation):
            act = model_activation
        else:
            act = _infer_activation(np.asarray(tensors["act_in"][i]), np.asarray(y))
        acts.append(act)
        x_prev = tensors["x_prev"][i]
        dh = tensors["dh"][i]
        if call.is_conv:  # x^T dh is not a conv's weight gradient; its rows may even differ
            x_prev = jnp.zeros((*dh.shape[:2], 1), dh.dtype)

        measure = _layer_measure(act, act_range, grad_range, bins, saturation_tolerance)
        st = measure(x_prev, h, y, tensors["out"][i], dh, tensors["dx"][i])
        st = LayerStats(*(np.asarray(v) for v in st))
        if call.is_conv:
            nan = np.full(st.weight_grad_mean.shape, np.nan, np.float32)
            g = kgrads[i]
            shared = calls_per_path[call.path] > 1 or g is None
            st = st._replace(
                weight_grad_mean=nan if shared else np.asarray(g[0])[:, None],
                weight_grad_var=nan if shared else np.asarray(g[1])[:, None],
                weight_grad_norm=nan if shared else np.asarray(g[2])[:, None],
            )
        layer_stats.append(st)
    stats = LayerStats(*(np.concatenate(p, axis=1) for p in zip(*layer_stats, strict=True)))
    edges = (
        np.linspace(act_range[0], act_range[1], bins + 1).astype(np.float32),
        np.linspace(grad_range[0], grad_range[1], bins + 1).astype(np.float32),
    )
    return ProbeResult(
        stats=stats,
        act_edges=edges[0],
        grad_edges=edges[1],
        layer_names=tuple(c.name for c in meta),
        activations=tuple(acts),
        model_name=model_name if stack_size is None else f"ensemble of {stack_size} {model_name}",
        cotangent=kind,
    )


def nnx_setup(model: Any, x: Any, use_running_average: Any):
    """Validate an NNX model and its batch; return what :func:`_measure` and LSUV need."""
    if not isinstance(model, nnx.Module):
        raise TypeError(
            "model must be a Flax NNX Module (for Linen use probe_linen), got "
            f"{type(model).__name__}"
        )
    if use_running_average is not None and not isinstance(use_running_average, bool):
        raise TypeError(
            f"use_running_average must be None, True or False, got {use_running_average!r}"
        )
    x = _check_x(x)
    layers = layer_modules(model)
    name = type(model).__name__
    if not layers:
        raise ValueError(
            f"{name} has no probe-able layers: probe supports initjax MLP and PlainCNN and any NNX "
            "model built from nnx.Linear / nnx.Conv layers (subclasses included)"
        )
    stack_size = _stack_size(model, layers)
    stack = isinstance(model, MLP | PlainCNN)
    shape = tuple(x.shape)
    if isinstance(model, MLP):
        expect = f"MLP expects (batch, {model.in_features})"
        if len(shape) != 2 or shape[-1] != model.in_features:
            raise ValueError(f"x has shape {shape}; {expect}")
    elif isinstance(model, PlainCNN):
        expect = f"PlainCNN expects NHWC (batch, H, W, {model.in_channels})"
        if len(shape) != 4 or shape[-1] != model.in_channels:
            raise ValueError(f"x has shape {shape}; {expect}")
    else:
        path, first = layers[0]
        n_in = first.in_features
        expect = (
            f"its first Linear/Conv in attribute order ({path_name(path)}) takes inputs "
            f"(batch, ..., {n_in})"
        )
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if stack:
        runner = _StackRunner(graphdef, use_running_average, model.norm_placement)
    else:
        runner = NNXRunner(graphdef, use_running_average)
    return x, runner, params, rest, stack_size, expect


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------
def probe(
    model: nnx.Module,
    x: Any,
    *,
    cotangent: str | Any | Callable[[Array], Array] = "normal",
    key: int | Array = 0,
    act_range: tuple[float, float] = (-1.0, 1.0),
    grad_range: tuple[float, float] = (-1.0, 1.0),
    bins: int = 40,
    saturation_tolerance: float = 0.01,
    activation: str | _activations.Activation | None = None,
    use_running_average: bool | None = None,
    precision: str | None = None,
) -> ProbeResult | BlockPropagation:
    """The engine's per-layer statistics (:class:`~initjax.LayerStats`) of an existing NNX model.

    For each layer ``l`` the model's tensors ``x^{l-1}`` (input), ``h^l`` (Linear/Conv output),
    ``y^l`` (activation output), ``x^l`` (layer output) and the gradients ``dL/dh^l``,
    ``dL/dx^l`` of ``L = <cotangent, f(x)>`` (or of the given loss) go to
    :func:`initjax.engine.measure_layers`. The gradients come from one ``jax.vjp`` with zero
    probes added to ``h^l`` and ``x^l``. The model is not modified (batch-norm running averages
    stay as they are). What exactly is measured for each kind of model is in the module docstring;
    tensors with spatial axes are reshaped to ``(batch * H * W, channels)``.

    Example::

        net = MLP(784, (256,) * 5, activation="tanh", kernel_init="xavier_normal", rngs=nnx.Rngs(0))
        result = probe(net, x)                  # result.stats.act_var: (1, 5)
        plotting.hist_strip(result)             # the classic demo's strip for this network

    A :class:`~initjax.modules.NetworkModule` (``initjax.modules.build``) is probed per block by
    :func:`probe_blocks` (its result is a :class:`~initjax.engine.BlockPropagation`).

    Args:
      model: an initjax ``MLP`` / ``PlainCNN``, a stacked ensemble of one
        (:func:`initjax.modules.create_ensemble`: statistics get a seed axis of size S), or any NNX
        module whose forward pass ``model(x)`` calls ``nnx.Linear`` / ``nnx.Conv`` layers and
        returns one array.
      x: the input batch: ``(batch, in_features)`` for an MLP, NHWC for a PlainCNN, whatever
        ``model(x)`` takes otherwise (rank >= 2, leading batch axis).
      cotangent: ``dL/d(output)``: ``"normal"`` (i.i.d. N(0, 1) drawn from ``fold_in(key, s)``
        for member ``s``), an array of the output's shape (or ``(S, *output)`` for an ensemble),
        or a callable ``loss(output) -> scalar`` whose gradient is used.
      key: PRNG key, or an int seed meaning ``jax.random.key(seed, impl="philox2x32")`` (the
        engine's default implementation), for ``"normal"``.
      act_range, grad_range: ranges of the activation and ``dL/dh`` histograms.
      bins: number of histogram bins.
      saturation_tolerance: a bounded activation's output within this fraction of its range from a
        bound counts as saturated.
      activation: the activation spec (``"tanh"``) for saturation bookkeeping. For a generic model
        it also defines ``y = activation(h)``; by default ``y`` is the tensor the next linear layer
        receives and the activation is inferred. For ``MLP``/``PlainCNN`` the model's own
        activation is the default and ``y`` is always its ``"act"`` intermediate.
      use_running_average: None keeps every batch norm's mode; True/False sets it for this probe
        (on a private copy: the model's mode is unchanged).
      precision: the precision of every matmul and convolution of the model's forward and
        backward pass and of the statistics: ``"highest"`` (None, the default: float32-exact on
        every backend), ``"high"`` or ``"default"`` (the backend's fastest; on issue 13's H200,
        TF32-class passes moved the variances of a 10 x 1024 tanh network by 5e-5..1e-4
        relative, while ``"highest"`` agreed with the CPU to 3e-7..8e-7). The same numbers on
        CPU for all three. See :mod:`initjax._precision`.

    Returns:
      :class:`ProbeResult` with ``stats`` (axes ``(seed, layer, ...)``), the histogram edges and
      the layers' module paths.

    Raises:
      TypeError: ``model`` not an NNX module, a non-float ``x``, a bad ``cotangent``/``key`` type.
      ValueError: a model without Linear/Conv layers (naming the model type), an ``x`` of the
        wrong shape (naming it and the expected one), a cotangent array of the wrong shape, a loss
        that does not return a scalar, an unknown activation name, a bad range or bin count, a
        layer with more than :data:`MAX_ROWS` rows.

    References:
      Glorot & Bengio 2010, https://proceedings.mlr.press/v9/glorot10a.html.
    """
    if isinstance(model, NetworkModule):
        given = {"act_range": act_range, "grad_range": grad_range, "bins": bins,
                 "saturation_tolerance": saturation_tolerance, "activation": activation}
        defaults = inspect.signature(probe).parameters  # the histogram options' own defaults
        for name, value in given.items():
            if value != defaults[name].default:
                raise ValueError(f"{name}={value!r} does not apply to a NetworkModule: it is probed per "
                                 "block (probe_blocks), without histograms")
        return probe_blocks(model, x, cotangent=cotangent, key=key, use_running_average=use_running_average,
                            precision=precision)
    precision = check_precision(precision)
    act_range = check_range("act_range", act_range)
    grad_range = check_range("grad_range", grad_range)
    if activation is not None:
        _activations.get(activation)  # unknown names fail before any work
    x, runner, params, rest, stack_size, expect = nnx_setup(model, x, use_running_average)
    model_act = getattr(model, "activation", None) if runner.stack else None
    return _measure(
        runner, params, rest, x, stack_size=stack_size, model_desc=type(model).__name__,
        expect=expect, cotangent=cotangent, key=key, act_range=act_range, grad_range=grad_range,
        bins=bins, saturation_tolerance=saturation_tolerance, activation=activation,
        model_activation=model_act, model_name=type(model).__name__, precision=precision,
    )


def probe_blocks(
    model: nnx.Module,
    x: Any,
    *,
    cotangent: str | Any | Callable[[Array], Array] = "normal",
    key: int | Array = 0,
    use_running_average: bool | None = None,
    precision: str | None = None,
) -> BlockPropagation:
    """The block engine's per-block statistics of an existing :class:`~initjax.modules.NetworkModule`.

    For a model built from a :class:`~initjax.network.Network` (``initjax.modules.build``), at
    initialization or after training: the same :class:`~initjax.engine.blocks.BlockStats` that
    :func:`initjax.propagate` measures on sampled networks, for the residual stream after every
    block and for the scaled branch output before the add (Brock et al.'s channel statistics,
    the branch share, cosines), with ``dL/dx`` of the stream (skip path included: a zero probe is
    added to each block's output and one ``jax.vjp`` gives its cotangent) and the Frobenius norm of
    ``dL/dkernel`` of every layer (the stored kernel: with weight standardization, the raw one).
    The readout, if any, is not a block: the cotangent is applied at the model's output. The
    model is not modified (a training-mode batch norm runs on a private copy).

    Args:
      model: an initjax ``NetworkModule``.
      x: the input batch ``(batch, in_width)``.
      cotangent: ``"normal"`` (N(0, 1) from ``fold_in(key, 0)``), an array of the output's shape,
        or a callable ``loss(output) -> scalar``.
      key: PRNG key or int seed (philox2x32) for ``"normal"``.
      use_running_average: None keeps every batch norm's mode; True/False sets it for this probe.
      precision: the matmul precision, ``"highest"`` by default, as in :func:`probe`.

    Returns:
      :class:`~initjax.engine.blocks.BlockPropagation` with a seed axis of size 1 and the model's
      description as its ``network``.

    Raises:
      TypeError / ValueError: for another kind of model, a bad ``x`` (shape named), cotangent or key.
    """
    if not isinstance(model, NetworkModule):
        raise TypeError(f"probe_blocks takes an initjax NetworkModule (initjax.modules.build), "
                        f"got {type(model).__name__}")
    if model.description.spatial:
        raise ValueError(f"probe_blocks takes networks without spatial axes; this one has "
                         f"spatial={model.description.spatial} (conv blocks): measure it at "
                         "initialization with initjax.propagate(network)")
    x = _check_x(x)
    n0 = model.description.in_width
    if x.ndim != 2 or x.shape[1] != n0:
        raise ValueError(f"x must have shape (batch, {n0}) for this network, got {x.shape}")
    kind, given = _check_cotangent(cotangent)
    precision = check_precision(precision)
    start = time.perf_counter()
    with matmul_precision(precision):
        stats = _block_stats(model, x, kind, given, key, use_running_average)
    return BlockPropagation(
        network=model.description,
        stats=stats,
        key=int(key) if isinstance(key, int | np.integer) and kind == "normal" else None,
        cotangent=kind,
        prng_impl="philox2x32",
        seconds=time.perf_counter() - start,
        precision=precision,
    )


def _block_stats(model: NetworkModule, x: Array, kind: str, given: Any, key: Any,
                 use_running_average: bool | None) -> BlockStats:
    """:func:`probe_blocks`' statistics (seed axis of size 1), at the caller's matmul precision."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    runner = NNXRunner(graphdef, use_running_average)

    def forward(params, probes):
        m = runner._merge(params, rest)
        h, stats = x, []
        for i, blk in enumerate(m.blocks):
            if isinstance(blk, ResidualBlock):
                out, _, f, total = blk.forward_parts(h, runner.ura)
                stats.append((forward_stats(out, f, total), overflowed_rows([out, f])))
            else:
                out, _ = blk.forward(h, runner.ura)
                stats.append((forward_stats(out, None, None), overflowed_rows([out])))
            h = out + probes[i]
        y = m.readout(h) if m.readout is not None else h
        return y, stats

    widths = model.description.widths[1:]
    zeros = [jnp.zeros((x.shape[0], w), x.dtype) for w in widths]
    y, vjp, stats = jax.vjp(forward, params, zeros, has_aux=True)
    if kind == "normal":
        ct = jax.random.normal(jax.random.fold_in(as_key(key, "key"), 0), y.shape, y.dtype)
    elif kind == "array":
        if given.shape != y.shape:
            raise ValueError(f"cotangent must have the output's shape {y.shape}, got {given.shape}")
        ct = given.astype(y.dtype)
    else:
        loss_value, ct = jax.value_and_grad(given)(y)
        if jnp.ndim(loss_value) != 0:
            raise ValueError(f"the loss must return a scalar, got shape {jnp.shape(loss_value)}")
    d_params, d_probes = vjp(ct)
    # an example that overflowed anywhere has no meaningful gradient anywhere (see the engine)
    rows_bad = jnp.stack([rows for _, rows in stats]).any(axis=0)
    d_probes = [jnp.where(rows_bad[:, None], jnp.nan, d) for d in d_probes]
    m_max = max((len(b.branch) if isinstance(b, ResidualBlock) else 1) for b in model.blocks)
    grads = nnx.merge(graphdef, d_params, rest)
    fields: dict[str, list[Any]] = {}
    for i, ((s, _), d) in enumerate(zip(stats, d_probes, strict=True)):
        for name, v in s.items():
            fields.setdefault(name, []).append(v)
        _, g_var, g_m2, g_count = finite_moments(d)
        fields.setdefault("grad_var", []).append(g_var)
        fields.setdefault("grad_second_moment", []).append(g_m2)
        fields.setdefault("grad_nonfinite", []).append((d.size - g_count).astype(jnp.int32))
        blk = grads.blocks[i]
        layers = [blk] if isinstance(blk, DenseLayer) else list(blk.branch)
        norms = [jnp.linalg.norm(layer.kernel[...].astype(jnp.float32)) for layer in layers]
        norms += [jnp.float32(jnp.nan)] * (m_max - len(norms))
        fields.setdefault("weight_grad_norm", []).append(jnp.stack(norms))
    return BlockStats(**{k: np.asarray(jnp.stack(v))[None] for k, v in fields.items()})


def probe_linen(
    apply_fn: Callable[..., Any],
    variables: Mapping[str, Any],
    x: Any,
    *,
    apply_kwargs: Mapping[str, Any] | None = None,
    cotangent: str | Any | Callable[[Array], Array] = "normal",
    key: int | Array = 0,
    act_range: tuple[float, float] = (-1.0, 1.0),
    grad_range: tuple[float, float] = (-1.0, 1.0),
    bins: int = 40,
    saturation_tolerance: float = 0.01,
    activation: str | _activations.Activation | None = None,
    precision: str | None = None,
) -> ProbeResult:
    """:func:`probe` for a Flax Linen model: ``apply_fn(variables, x, **apply_kwargs)``.

    Each call of an ``nn.Dense`` or ``nn.Conv`` (subclasses included) is a layer, found with
    ``nn.intercept_methods``, and measured exactly as the generic NNX path of :func:`probe`
    describes (``x_prev`` the call's input, ``h`` its output, ``out`` the next call's input or the
    model output, zero probes on both and one ``jax.vjp``). Layer names are the modules' scope
    paths (``"Dense_0"``).

    Args:
      apply_fn: usually ``module.apply``.
      variables: the variables dict, with a ``"params"`` collection.
      x: the input batch (rank >= 2, leading batch axis).
      apply_kwargs: further keyword arguments of ``apply_fn`` (``train=True``,
        ``mutable=["batch_stats"]``: with ``mutable`` the ``(output, updates)`` pair is accepted
        and the updates are dropped).
      cotangent, key, act_range, grad_range, bins, saturation_tolerance, activation, precision:
        as in :func:`probe`.

    Returns:
      :class:`ProbeResult` with a seed axis of size 1.

    Raises:
      TypeError / ValueError: as :func:`probe`; also ``variables`` without ``"params"``.
    """
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable (e.g. module.apply), got {apply_fn!r}")
    if not isinstance(variables, Mapping) or "params" not in variables:
        raise ValueError(
            "variables must be a mapping with a 'params' collection (what module.init returns), "
            f"got {type(variables).__name__}"
            + (f" with keys {sorted(variables)}" if isinstance(variables, Mapping) else "")
        )
    if apply_kwargs is not None and not isinstance(apply_kwargs, Mapping):
        raise TypeError(f"apply_kwargs must be a dict or None, got {apply_kwargs!r}")
    precision = check_precision(precision)
    act_range = check_range("act_range", act_range)
    grad_range = check_range("grad_range", grad_range)
    if activation is not None:
        _activations.get(activation)
    x = _check_x(x)
    params = variables["params"]
    rest = {k: v for k, v in variables.items() if k != "params"}
    runner = _LinenRunner(apply_fn, apply_kwargs or {})
    owner = getattr(apply_fn, "__self__", None)
    name = type(owner).__name__ if owner is not None else getattr(apply_fn, "__name__", "apply_fn")
    return _measure(
        runner, params, rest, x, stack_size=None, model_desc=name,
        expect="see the error below", cotangent=cotangent, key=key, act_range=act_range,
        grad_range=grad_range, bins=bins, saturation_tolerance=saturation_tolerance,
        activation=activation, model_activation=None, model_name=name, precision=precision,
    )


def find_layers(model: nnx.Module, x: Any) -> tuple[str, ...]:
    """The module paths of the ``nnx.Linear``/``nnx.Conv`` calls of ``model(x)``, in call order.

    An abstract forward pass (``jax.eval_shape``): nothing is computed and the model is unchanged.
    These are the layers of :func:`probe`'s generic path and of :func:`initjax.lsuv.lsuv` (for an
    ``MLP`` the readout is included, e.g. ``("layers.0", "layers.1", "readout")``).

    Raises:
      TypeError / ValueError: as :func:`probe` (no layers, a batch of the wrong shape).
    """
    x, setup_runner, params, rest, stack_size, expect = nnx_setup(model, x, None)
    runner = NNXRunner(setup_runner.graphdef, None)
    if stack_size is not None:
        params, rest = _member(params, 0), _member(rest, 0)
    _, _, meta = discover_layers(runner, params, rest, x, type(model).__name__, expect)
    return tuple(c.name for c in meta)
