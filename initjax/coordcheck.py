"""Coordinate checks: the size of every layer's output coordinates against width, during training.

A coordinate check (Yang et al. 2021, TP5 Section 7.1 and ``mup/coord_check.py``) trains the
same network at several widths for a few steps on one fixed batch and records, per layer and
step, a statistic of the layer's output coordinates::

    l1  = mean |x|                      (mup's statistic, the default)
    l2  = sqrt(mean x^2)                (the coordinates' root mean square)
    std = sqrt(mean (x - mean x)^2)     (over all the output's entries)

taken over the whole output ``x`` of shape ``(batch, width)``. Step ``t = 1`` is the
initialization; step ``t``'s statistic comes from the forward pass before update ``t`` (so step
``t`` has seen ``t - 1`` updates). A parametrization is width-stable when every curve is flat in
width (slope ~0 on log2-log2 axes) at every step: muP's are; SP's grow after the first update
(its readout like ``width^1`` under Adam, its hidden layers like ``width^{1/2..1}``).

The layer outputs are the linear maps' outputs ``multiplier * x W + b`` of every Dense block
(mup hooks ``nn.Linear`` modules the same way; named ``hidden<i>`` for block ``i``, and
``readout`` for the last block), and for a residual block its stream output (``res<i>``) and its
branch's last linear output before the branch scale (``res<i>/branch``). With
``activations=True`` the activation outputs of the Dense blocks are recorded too
(``hidden<i>/act``). The last layer is always ``readout``.

Two compiled programs per width: the initialization (seeds ``vmap``-ped) and the training
(seeds ``vmap``-ped, steps a ``lax.scan``). The learning rate, the learning-rate multipliers and
the initial parameters are data, so a second learning rate at the same width compiles nothing,
and SP and muP (which differ only in init and learning-rate multipliers) share the training
program; the three statistics are all computed, so the choice compiles nothing either. Updates are
``optax.sgd`` or ``optax.adam`` (optax's defaults) times each parameter's learning-rate multiplier
(``NetworkModule.lr_multipliers()``, the parametrization's rule: what
:func:`initjax.training.core.scale_by_multipliers` applies, here with the multipliers passed as
data), on the mean softmax cross-entropy (integer labels) or the mean squared error (float
targets), through :func:`initjax.training.core.make_step`.

    >>> from initjax.network import Dense, Network, Repeat
    >>> def mlp(width):
    ...     return Network(8, (Dense(width, "he_normal", "relu"),
    ...                        Dense(3, "lecun_normal", "identity")))
    >>> x = jnp.ones((4, 8)); y = jnp.array([0, 1, 2, 0])
    >>> cc = coord_check(mlp, (x, y), widths=(16, 32), steps=2, seeds=2, optimizer="sgd",
    ...                  lr=0.1, key=0)
    >>> cc.layers, cc.stat.shape          # stat: (width, step, layer), seed mean
    (('hidden1', 'readout'), (2, 2, 2))
    >>> cc.slopes().shape                 # (step, layer)
    (2, 2)

References:
  Yang et al. 2021, "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter
  Transfer", Section 7.1 and Appendix H, https://arxiv.org/abs/2203.03466.
  ``microsoft/mup``, ``mup/coord_check.py``, https://github.com/microsoft/mup.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from initjax import _io
from initjax._checks import check_choice, check_float, check_int
from initjax._keys import as_key
from initjax._precision import check_precision, matmul_precision

__all__ = ["STATISTICS", "OPTIMIZERS", "CoordCheck", "coord_check", "fit_slope", "statistic",
           "layer_names", "plot", "add_parser", "main"]

STATISTICS = ("l1", "l2", "std")
OPTIMIZERS = ("sgd", "adam")


def statistic(x: Any, name: str = "l1") -> jax.Array:
    """The coordinate statistic of ``x`` over all its entries (module docstring): ``"l1"`` mean
    |x|, ``"l2"`` sqrt(mean x^2), ``"std"`` the standard deviation (ddof 0). Returns a scalar in
    at least float32."""
    check_choice("statistic", name, STATISTICS)
    x = jnp.asarray(x)
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    if name == "l1":
        return jnp.mean(jnp.abs(x))
    if name == "l2":
        return jnp.sqrt(jnp.mean(jnp.square(x)))
    return jnp.sqrt(jnp.mean(jnp.square(x - jnp.mean(x))))


def fit_slope(widths: Sequence[float], values: Any) -> np.ndarray:
    """The least-squares slope of ``log2 values`` against ``log2 widths`` along axis 0::

        slope = sum_i (u_i - u_bar)(v_i - v_bar) / sum_i (u_i - u_bar)^2,
        u = log2 width,  v = log2 value

    so ``values = c * width^p`` gives ``p`` exactly. A column with any non-finite or
    non-positive value gets NaN (its curve has no log; reported, never hidden).

    Args:
      widths: ``(W,)`` positive widths, at least two distinct ones.
      values: ``(W, ...)``.

    Returns:
      float64 slopes of shape ``values.shape[1:]``.

    Raises:
      ValueError: fewer than two distinct widths, a non-positive width, or a shape mismatch.
    """
    u = np.asarray(widths, np.float64)
    v = np.asarray(values, np.float64)
    if u.ndim != 1 or v.ndim < 1 or v.shape[0] != u.shape[0]:
        raise ValueError(f"values must have a leading axis of len(widths) = {u.shape[0]}, got "
                         f"shape {v.shape}")
    if not np.all(np.isfinite(u)) or np.any(u <= 0):
        raise ValueError(f"widths must be finite and > 0, got {u.tolist()}")
    if np.unique(u).size < 2:
        raise ValueError(f"a slope needs at least two distinct widths, got {u.tolist()}")
    lu = np.log2(u)
    good = np.all(np.isfinite(v) & (v > 0), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        lv = np.log2(np.where(good, v, 1.0))
    du = (lu - lu.mean()).reshape((-1,) + (1,) * (v.ndim - 1))
    slope = np.sum(du * (lv - lv.mean(axis=0)), axis=0) / np.sum(du**2)
    return np.where(good, slope, np.nan)


def layer_names(network: Any, activations: bool = False) -> tuple[str, ...]:
    """The recorded layers of ``network`` in order (module docstring); the last is
    ``"readout"``.

    Raises:
      ValueError: the network's last block is not a Dense layer (the readout), or it has a block
        kind without a coordinate-check rule.
    """
    from initjax.network import Dense, Residual

    blocks = network.blocks
    if not isinstance(blocks[-1], Dense) or network.spatial:
        raise ValueError(f"a coordinate check needs a non-spatial network whose last block is a "
                         f"Dense readout; the last block of {network.name!r} is a "
                         f"{blocks[-1].kind!r} block")
    names = []
    for i, block in enumerate(blocks[:-1], start=1):
        if isinstance(block, Dense):
            names.append(f"hidden{i}")
            if activations and not block.preactivation:
                names.append(f"hidden{i}/act")
        elif isinstance(block, Residual):
            names += [f"res{i}/branch", f"res{i}"]
        else:
            raise ValueError(f"block {i} is a {block.kind!r} block, which a coordinate check "
                             "does not record yet (Dense and Residual blocks only)")
    return (*names, "readout")


def _taps(network: Any, inter: Mapping[str, list], out: Any, activations: bool) -> list:
    """The tensors of :func:`layer_names`, in the same order."""
    from initjax.network import Dense

    taps = []
    for i, block in enumerate(network.blocks[:-1]):
        if isinstance(block, Dense):
            taps.append(inter["preact"][i])
            if activations and not block.preactivation:
                taps.append(inter["act"][i])
        else:
            taps += [inter["preact"][i], inter["hidden"][i]]
    taps.append(out)
    return taps


def _replace_layers(network: Any, **changes: Any) -> Any:
    """``network`` with ``changes`` applied to every Dense/Conv layer (residual branches too),
    equal consecutive blocks grouped into one stage (so two networks that differ only in the
    changed fields become equal, whatever their stages were)."""
    from initjax.network import Repeat, Residual

    def layer(x):
        return dataclasses.replace(x, **changes)

    stages: list[Repeat] = []
    for stage in network.stages:
        block = stage.block
        if isinstance(block, Residual):
            block = dataclasses.replace(block, branch=tuple(layer(x) for x in block.branch))
        else:
            block = layer(block)
        if stages and stages[-1].block == block:
            stages[-1] = Repeat(block, stages[-1].count + stage.count)
        else:
            stages.append(Repeat(block, stage.count))
    return network.replace(stages=tuple(stages))


def _init_view(network: Any) -> Any:
    """What the initialization depends on: the learning-rate and forward multipliers reset (so
    the SGD and Adam forms of one parametrization share one compiled initialization)."""
    return _replace_layers(network, multiplier=1.0, lr_multiplier=1.0, bias_lr_multiplier=None)


def _train_view(network: Any) -> Any:
    """What the training program depends on: the initializers and learning-rate multipliers
    reset (the parameters and the multipliers are data), so SP and muP at one width, which
    differ only there, share one compiled program."""
    return _replace_layers(network, init="zeros", bias_init="zeros", lr_multiplier=1.0,
                           bias_lr_multiplier=None)


def _init_members(network, keys):
    """Per seed key: the module's parameters and the rest of its state (``nnx.State``)."""
    from flax import nnx

    from initjax import modules

    def one(key):
        return nnx.split(modules.build(network, None, rngs=nnx.Rngs(key)), nnx.Param, ...)[1:]

    return jax.vmap(one)(keys)


def _train_members(network, params, rest, multipliers, x, y, lr, *, steps, optimizer):
    """Per seed (leading axis of ``params`` / ``rest``): ``(steps, statistic, layer)``
    statistics of every :data:`STATISTICS` and of ``layer_names(network, activations=True)``
    (all of them: they cost nothing beside the step, and one program then serves every choice)
    and ``(steps,)`` losses. ``multipliers`` is the learning-rate multiplier tree (float32 arrays
    shaped like one member's parameters): the update of parameter ``p`` is ``optimizer(lr)``'s
    times ``multipliers[p]``, as :func:`initjax.training.core.scale_by_multipliers` gives it
    (here as data, so a different parametrization does not compile again)."""
    import optax
    from flax import nnx

    from initjax import modules
    from initjax.training.core import init_state, make_step

    abstract = nnx.eval_shape(lambda: modules.build(network, None, rngs=nnx.Rngs(0)))
    graphdef = nnx.split(abstract, nnx.Param, ...)[0]
    base = optax.sgd(lr) if optimizer == "sgd" else optax.adam(lr)
    tx = optax.chain(base, optax.stateless(
        lambda updates, params: jax.tree.map(lambda u, m: u * m.astype(u.dtype), updates,
                                             multipliers)))
    n_layers = len(layer_names(network, activations=True))

    def loss_fn(params, model_state, batch):
        rest, _ = model_state
        xb, yb = batch
        model = nnx.merge(graphdef, params, rest, copy=True)
        out, inter = model.forward_with_intermediates(xb)
        if jnp.issubdtype(yb.dtype, jnp.integer):
            loss = optax.softmax_cross_entropy_with_integer_labels(out, yb).mean()
        else:
            loss = jnp.mean(jnp.square(out - yb))
        taps = _taps(network, inter, out, activations=True)
        stats = jnp.stack([jnp.stack([statistic(t, name) for t in taps]) for name in STATISTICS])
        new_rest = nnx.split(model, nnx.Param, ...)[2]
        return loss, (new_rest, jax.lax.stop_gradient(stats))

    step = make_step(loss_fn, tx)

    def member(params, rest):
        state = init_state(params, tx, (rest, jnp.zeros((len(STATISTICS), n_layers),
                                                         jnp.float32)))

        def body(state, _):
            state, loss = step(state, (x, y))
            return state, (state.model_state[1], loss)  # the forward before this update

        _, (stats, losses) = jax.lax.scan(body, state, None, length=steps)
        return stats, losses

    return jax.vmap(member)(params, rest)


_TRAIN_STATIC = ("network", "steps", "optimizer")
# On CPU, XLA's LLVM optimization level 0 compiles these small programs in 0.7 s instead of 1.05 s
# (a 3-layer MLP, Adam, 4 steps; the run itself is milliseconds, and the statistics agreed to
# 1e-7 relative); other backends keep their defaults.
_CPU_OPTIONS = {"xla_backend_optimization_level": 0}
_COMPILED = {
    "cpu": (jax.jit(_init_members, static_argnames=("network",), compiler_options=_CPU_OPTIONS),
            jax.jit(_train_members, static_argnames=_TRAIN_STATIC,
                    compiler_options=_CPU_OPTIONS)),
    "other": (jax.jit(_init_members, static_argnames=("network",)),
              jax.jit(_train_members, static_argnames=_TRAIN_STATIC)),
}


def _compiled() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """The jitted ``(init, train)`` programs for the default backend."""
    return _COMPILED["cpu" if jax.default_backend() == "cpu" else "other"]


def _multipliers(network: Any) -> Any:
    """The module's learning-rate multipliers as float32 arrays (checked: finite, > 0)."""
    from flax import nnx

    from initjax import modules
    from initjax.training.core import scale_by_multipliers

    abstract = nnx.eval_shape(lambda: modules.build(network, None, rngs=nnx.Rngs(0)))
    tree = abstract.lr_multipliers()
    scale_by_multipliers(tree)  # validates every multiplier, naming a bad one's path
    return jax.tree.map(lambda m: jnp.asarray(m, jnp.float32), tree)


@dataclasses.dataclass(frozen=True)
class CoordCheck:
    """A coordinate check's measurements (see :func:`coord_check`).

    Attributes:
      widths: ``(W,)`` the widths, increasing.
      steps: ``(K,)`` ``1..K``; step ``t`` is measured before update ``t`` (1: at init).
      layers: the recorded layers (:func:`layer_names`); the last is ``"readout"``.
      statistic: one of :data:`STATISTICS`.
      values: ``(width, seed, step, layer)`` float64 per-seed statistics.
      losses: ``(width, seed, step)`` float64 training losses of the same forward passes.
      setup: what was run (optimizer, learning rate, seeds, batch...), JSON-ready.
    """

    widths: tuple[int, ...]
    steps: tuple[int, ...]
    layers: tuple[str, ...]
    statistic: str
    values: np.ndarray
    losses: np.ndarray
    setup: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def stat(self) -> np.ndarray:
        """``(width, step, layer)`` the mean over seeds (NaN where any seed is non-finite: a
        diverged member is reported, not averaged away)."""
        v = self.values
        with np.errstate(invalid="ignore", over="ignore"):
            return np.where(np.all(np.isfinite(v), axis=1), v.mean(axis=1), np.nan)

    @property
    def first_nonfinite_step(self) -> np.ndarray:
        """``(width, seed)`` the first step with a non-finite statistic or loss, -1 if none."""
        bad = ~np.isfinite(self.values).all(axis=-1) | ~np.isfinite(self.losses)
        first = np.argmax(bad, axis=-1) + 1
        return np.where(bad.any(axis=-1), first, -1)

    @property
    def diverged(self) -> int:
        """How many (width, seed) members had a non-finite statistic or loss at some step."""
        return int((self.first_nonfinite_step >= 0).sum())

    def slopes(self) -> np.ndarray:
        """``(step, layer)``: the log2-log2 least-squares slope of the seed-mean statistic
        against width (:func:`fit_slope`); NaN where a width's value is non-finite or 0."""
        return fit_slope(self.widths, self.stat)

    def slope(self, layer: str, step: int) -> float:
        """The slope of ``layer`` at ``step`` (1-based)."""
        check_choice("layer", layer, self.layers)
        check_choice("step", step, self.steps)
        return float(self.slopes()[step - 1, self.layers.index(layer)])

    def to_json_dict(self) -> dict[str, Any]:
        """``{"widths", "steps", "layers", <statistic>: stat[w][t][layer], "slope":
        slope[t][layer], ...}`` (non-finite numbers as null), plus the per-seed values, losses,
        the diverged count and the setup."""
        return _io.json_safe({
            "widths": list(self.widths), "steps": list(self.steps), "layers": list(self.layers),
            "statistic": self.statistic, self.statistic: self.stat, "slope": self.slopes(),
            "per_seed": self.values, "loss": self.losses, "diverged": self.diverged,
            "first_nonfinite_step": self.first_nonfinite_step, "setup": self.setup,
        })

    def save(self, out: str | Path, *, figure: bool = True) -> Path:
        """Write ``coord_check.json``, ``coord_check.npz`` and (``figure``) ``coord_check.png``
        / ``.pdf`` into ``out`` (atomically); returns ``out``."""
        out = Path(out)
        _io.write_json(out / "coord_check.json", self.to_json_dict())
        _io.write_npz(out / "coord_check.npz", widths=np.asarray(self.widths),
                      steps=np.asarray(self.steps), layers=np.asarray(self.layers),
                      values=self.values, losses=self.losses)
        if figure:
            _io.save_figure(plot(self), out / "coord_check")
        return out


def _check_data(data: Any, network: Any, batch: int | None) -> tuple[np.ndarray, np.ndarray]:
    from initjax.data import Dataset

    if isinstance(data, Dataset):
        n = len(data.x_train) if batch is None else check_int("batch", batch, minimum=1)
        if n > len(data.x_train):
            raise ValueError(f"batch {n} exceeds the {len(data.x_train)} training examples of "
                             f"{data.name!r}")
        x, y = data.x_train[:n], data.y_train[:n]
    elif isinstance(data, tuple | list) and len(data) == 2:
        if batch is not None:
            raise ValueError("batch selects the first examples of a Dataset; data given as "
                             f"(x, y) is used whole, got batch={batch!r}")
        x, y = data
    else:
        raise TypeError(f"data must be an initjax Dataset or an (x, y) pair, got "
                        f"{type(data).__name__}")
    x, y = np.asarray(x), np.asarray(y)
    out_width = network.widths[-1]
    if x.ndim != 2 or x.shape[1] != network.in_width or x.shape[0] < 1:
        raise ValueError(f"x must have shape (batch, {network.in_width}), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x has non-finite entries")
    if np.issubdtype(y.dtype, np.integer):
        if y.shape != (x.shape[0],) or y.min() < 0 or y.max() >= out_width:
            raise ValueError(f"integer labels y must have shape ({x.shape[0]},) and values in "
                             f"[0, {out_width}), got shape {y.shape}, range "
                             f"[{y.min()}, {y.max()}]")
        return x.astype(np.float32), y.astype(np.int32)
    if y.shape != (x.shape[0], out_width) or not np.all(np.isfinite(y)):
        raise ValueError(f"float targets y must be finite with shape ({x.shape[0]}, "
                         f"{out_width}), got shape {y.shape}")
    return x.astype(np.float32), y.astype(np.float32)


def coord_check(
    networks: Callable[[int], Any] | Mapping[int, Any],
    data: Any,
    *,
    widths: Sequence[int] | None = None,
    steps: int = 4,
    seeds: int = 4,
    optimizer: str = "sgd",
    lr: float = 0.1,
    statistic: str = "l1",
    key: Any = 0,
    batch: int | None = None,
    activations: bool = False,
    precision: str | None = "highest",
    progress: bool | None = False,
) -> CoordCheck:
    """Train each width's network ``steps`` steps on one fixed batch and record its layers'
    coordinate statistic before every update (module docstring).

    Args:
      networks: ``width -> Network`` (with ``widths``), or a mapping ``{width: Network}``. Each
        network is a non-spatial stack whose last block is a Dense readout (e.g.
        :func:`initjax.parametrization.mlp`), carrying its parametrization's init, forward
        multipliers and learning-rate multipliers.
      data: an ``(x, y)`` pair (``x: (batch, in_width)``; ``y`` integer labels ``(batch,)`` for
        the softmax cross-entropy or float targets ``(batch, out)`` for the mean squared error),
        or an :class:`initjax.data.Dataset` whose first ``batch`` training examples are used.
      widths: the widths (at least two, distinct, increasing) when ``networks`` is a function.
      steps: ``K >= 1`` measured steps (``K`` forward passes; step 1 at init).
      seeds: networks per width; seed ``s``'s network at every width is
        ``modules.build(network, None, rngs=nnx.Rngs(jax.random.fold_in(as_key(key), s)))``
        (the same draws however many seeds run beside it).
      optimizer: ``"sgd"`` or ``"adam"`` (optax defaults: Adam b1 0.9, b2 0.999, eps 1e-8).
      lr: the base learning rate (> 0), multiplied per parameter by the module's
        ``lr_multipliers()``.
      statistic: one of :data:`STATISTICS`.
      key: an int seed or a typed key (:func:`initjax._keys.as_key`).
      batch: with a Dataset, how many of its first training examples (default all).
      activations: also record the Dense blocks' activation outputs.
      precision: the matmul precision of the compiled programs (:mod:`initjax._precision`).
      progress: a progress bar over widths (None: only on a terminal).

    Returns:
      A :class:`CoordCheck`.

    Raises:
      ValueError / TypeError: bad widths (fewer than two, not increasing), steps, seeds, lr,
        optimizer, statistic or data (shape, labels out of range, non-finite), naming the value.
    """
    if isinstance(networks, Mapping):
        if widths is not None:
            raise ValueError("widths come from the mapping's keys; pass widths only with a "
                             "width -> Network function")
        widths = tuple(networks)
        get = networks.__getitem__
    elif callable(networks):
        if widths is None:
            raise ValueError("widths are needed with a width -> Network function")
        get = networks
    else:
        raise TypeError(f"networks must be a width -> Network function or a {{width: Network}} "
                        f"mapping, got {type(networks).__name__}")
    widths = tuple(check_int(f"widths[{i}]", w, minimum=1) for i, w in enumerate(widths))
    if len(widths) < 2 or any(b <= a for a, b in zip(widths, widths[1:], strict=False)):
        raise ValueError(f"widths must be at least two increasing widths, got {list(widths)}")
    steps = check_int("steps", steps, minimum=1)
    seeds = check_int("seeds", seeds, minimum=1)
    check_choice("optimizer", optimizer, OPTIMIZERS)
    lr = check_float("lr", lr, minimum=0.0, strict_minimum=True)
    check_choice("statistic", statistic, STATISTICS)
    precision = check_precision(precision)
    root = as_key(key)
    from initjax.network import Network

    nets = []
    for w in widths:
        net = get(w)
        if not isinstance(net, Network):
            raise TypeError(f"the network of width {w} must be an initjax Network, got "
                            f"{type(net).__name__}")
        nets.append(net)
    names = layer_names(nets[0], activations)
    every = layer_names(nets[0], activations=True)
    pick = np.array([every.index(n) for n in names])
    for w, net in zip(widths, nets, strict=True):
        if layer_names(net, activations) != names:
            raise ValueError(f"every width needs the same layers; width {w} has "
                             f"{layer_names(net, activations)}, width {widths[0]} {names}")
    x, y = _check_data(data, nets[0], batch)
    keys = jax.vmap(lambda s: jax.random.fold_in(root, s))(jnp.arange(seeds))
    values, losses = [], []
    show = sys.stderr.isatty() if progress is None else bool(progress)
    bar = _io.progress_bar(total=len(widths), desc="coord check") if show else None
    for w, net in zip(widths, nets, strict=True):
        if net.in_width != x.shape[1] or net.widths[-1] != nets[0].widths[-1]:
            raise ValueError(f"every width's network needs in_width {x.shape[1]} and "
                             f"{nets[0].widths[-1]} outputs; width {w}'s has {net.in_width} "
                             f"and {net.widths[-1]}")
    with matmul_precision(precision):
        for net in nets:
            init, train = _compiled()
            params, rest = init(_init_view(net), keys)
            stats, loss = train(_train_view(net), params, rest, _multipliers(net),
                                jnp.asarray(x), jnp.asarray(y), jnp.asarray(lr, jnp.float32),
                                steps=steps, optimizer=optimizer)
            stats = np.asarray(stats)[:, :, STATISTICS.index(statistic), pick]
            values.append(np.asarray(stats, np.float64))
            losses.append(np.asarray(loss, np.float64))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    setup = {"optimizer": optimizer, "lr": lr, "seeds": seeds, "batch": int(x.shape[0]),
             "loss": "cross_entropy" if np.issubdtype(y.dtype, np.integer) else "mse",
             "precision": precision, "network": nets[0].name}
    return CoordCheck(widths, tuple(range(1, steps + 1)), names, statistic, np.stack(values),
                      np.stack(losses), setup)


def plot(result: CoordCheck, *, axes: Sequence[Any] | None = None, title: str | None = None
         ) -> Any:
    """mup's coordinate-check figure: one panel per step, the statistic against width on
    log2-log2 axes, one line per layer (seed mean; the panel's title lists the layers' slopes
    in legend order; one legend beside the last panel). Non-finite or zero
    values are not drawn silently: the panel says how many members were non-finite, and the
    widths without a value are marked by a red ``x`` along the top.

    Args:
      result: a :class:`CoordCheck`.
      axes: one matplotlib Axes per step to draw into (a row of a larger figure); None: a new
        figure.
      title: the figure's title (new figure), or the first panel's y label prefix (``axes``).

    Returns:
      The Figure drawn on.
    """
    from initjax import plotting

    k = len(result.steps)
    if axes is None:
        fig = plotting.new_figure(min(3.2 * k, 16.0), 3.4)
        axes = np.atleast_1d(fig.subplots(1, k, sharey=True))
        if title:
            fig.suptitle(title, fontsize=10)
        ylabel = result.statistic
    else:
        if len(axes) != k:
            raise ValueError(f"axes must hold one Axes per step ({k}), got {len(axes)}")
        fig = axes[0].figure
        ylabel = f"{title}: {result.statistic}" if title else result.statistic
    stat, slopes = result.stat, result.slopes()
    w = np.asarray(result.widths, np.float64)
    handles = []
    for t, ax in enumerate(axes):
        for j in range(len(result.layers)):
            v = stat[:, t, j]
            ok = np.isfinite(v) & (v > 0)
            line, = ax.plot(w[ok], v[ok], "o-", ms=3, color=f"C{j % 10}")
            if t == 0:
                handles.append(line)
            if not ok.all():
                ax.plot(w[~ok], np.ones(int((~ok).sum())), "x", color="red",
                        transform=ax.get_xaxis_transform(), clip_on=False)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        bad = int((~np.isfinite(result.values[:, :, t]).all(axis=-1)).sum())
        if bad:
            ax.text(0.02, 0.02, f"{bad} member(s) non-finite", color="red", fontsize=7,
                    transform=ax.transAxes)
        shown = " ".join("n/a" if not np.isfinite(x) else f"{x:+.2f}" for x in slopes[t])
        plotting.label_axes(ax, "width", ylabel if t == 0 else "",
                            f"t = {t + 1}; slopes {shown}", title_size=7, legend_size=None)
    axes[-1].legend(handles=handles, labels=list(result.layers), fontsize=6, loc="upper left",
                    bbox_to_anchor=(1.0, 1.0))
    return fig


# -- command line --------------------------------------------------------------------------------
def _widths_arg(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--widths must be a comma list of ints such as "
                                         f"64,128,256, got {text!r}") from None
    return widths


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``coord-check`` subcommand to an argparse ``subparsers`` object; returns it::

        initjax coord-check --parametrization sp|ntk|mup --widths 64,128,256,512,1024 --depth 3
                            --optimizer sgd|adam --lr LR --steps K --seeds S [--json] [--out DIR]
    """
    p = subparsers.add_parser(
        "coord-check", help="coordinate check: per-layer mean |x| vs width over training steps")
    p.add_argument("--parametrization", choices=CLI_PARAMETRIZATIONS, default="mup",
                   help="initjax.parametrization's rule, relative to --base-width (default mup)")
    p.add_argument("--widths", type=_widths_arg, default=(64, 128, 256, 512, 1024),
                   help="comma list of increasing widths (default 64,128,256,512,1024)")
    p.add_argument("--depth", type=int, default=3,
                   help="Dense layers: input -> (depth - 1) hidden -> readout (default 3)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--lr", type=float, default=None,
                   help=f"base learning rate (default {DEFAULT_LR['sgd']} for sgd, "
                        f"{DEFAULT_LR['adam']} for adam)")
    p.add_argument("--steps", type=int, default=4, help="measured steps, the first at init")
    p.add_argument("--seeds", type=int, default=4, help="networks per width (default 4)")
    p.add_argument("--base-width", type=int, default=None,
                   help="the parametrization's base width (default: the smallest width)")
    p.add_argument("--batch", type=int, default=BATCH,
                   help=f"the fixed batch: the first digits training examples (default {BATCH})")
    p.add_argument("--statistic", choices=STATISTICS, default="l1")
    p.add_argument("--key", type=int, default=0, help="base PRNG seed (default 0)")
    p.add_argument("--json", action="store_true",
                   help='print {"widths", "steps", "layers", "l1", "slope"} as one JSON object')
    p.add_argument("--out", type=Path, default=None, help="write the JSON, data and figure here")
    return p


BATCH = 64  # the CLI's fixed batch: the first 64 digits training images
CLI_PARAMETRIZATIONS = ("sp", "ntk", "mup")
# the CLI's default learning rates: Adam the contract value; SGD 0.5, at which SP's readout
# visibly outgrows its Theta(1) initial value within the widths 64..1024 on digits (at mup's 0.1
# its slope stays below 0.3 for 4 steps), as the yang2021-coord-check reproduction uses
DEFAULT_LR = {"sgd": 0.5, "adam": 0.01}


def mlp_networks(parametrization: str, widths: Sequence[int], depth: int, *,
                 optimizer: str, base_width: int | None = None, in_width: int = 64,
                 out_width: int = 10) -> dict[int, Any]:
    """``{width: initjax.parametrization.mlp(in_width, width, depth, out_width, ...)}``: the CLI's
    ReLU MLPs (base width: the smallest width unless given)."""
    from initjax import parametrization as _param

    base = min(widths) if base_width is None else base_width
    return {w: _param.mlp(in_width, w, depth, out_width, activation="relu",
                          parametrization=parametrization, optimizer=optimizer, base_width=base)
            for w in widths}


def main(args: argparse.Namespace) -> int:
    """Run ``initjax coord-check`` for parsed ``args`` (:func:`add_parser`); prints the table or
    the JSON. Raises ValueError/TypeError on bad arguments (the CLI prints them as one line)."""
    import json

    from initjax import data as _data

    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    if args.out is not None:
        _io.check_out_dir(args.out, "--out")
    nets = mlp_networks(args.parametrization, args.widths, args.depth, optimizer=args.optimizer,
                        base_width=args.base_width)
    ds = _data.digits()
    claim = (_io.claim_dir(args.out, "--out") if args.out is not None
             else contextlib.nullcontext())
    with claim:
        result = coord_check(nets, ds, steps=args.steps, seeds=args.seeds,
                             optimizer=args.optimizer, lr=lr, statistic=args.statistic,
                             key=args.key, batch=args.batch)
        result.setup.update({"parametrization": args.parametrization, "depth": args.depth,
                             "base_width": (min(args.widths) if args.base_width is None
                                            else args.base_width), "data": "digits"})
        if args.out is not None:
            result.save(args.out)
    payload = result.to_json_dict()
    if args.json:
        print(json.dumps(payload))
    else:
        slopes = result.slopes()
        print(f"coord check: {args.parametrization}, {args.optimizer} lr {lr:g}, widths "
              f"{list(result.widths)}, {result.setup['seeds']} seeds; log2-log2 slope of "
              f"{result.statistic} vs width")
        print(f"{'step':>4} " + " ".join(f"{n:>10}" for n in result.layers))
        for t in result.steps:
            print(f"{t:>4} " + " ".join(f"{s:>+10.3f}" for s in slopes[t - 1]))
        if result.diverged:
            print(f"initjax: warning: {result.diverged} (width, seed) members had non-finite "
                  "values", file=sys.stderr)
    if args.out is not None:
        print(f"wrote {args.out}", file=sys.stderr)
    return 0

