"""The pure training core: a state, a step built from a loss and an optax transformation, a scan.

One member (one network of one arm and one seed) is trained by pure functions of its
:class:`TrainState`; a sweep stacks members along leading ``(arm, seed)`` axes and ``vmap``-s the
same functions (:func:`vmap_arms_seeds`). What differs between arms is *data* (learning rate,
momentum, multipliers... passed as arrays with an arm axis), so a sweep over 8 learning rates is one
compiled program, while what differs in structure (widths, activation, optimizer kind) is code.

    >>> import optax
    >>> def loss(params, model_state, batch):
    ...     x, y = batch
    ...     return jnp.mean((x * params["w"] - y) ** 2), model_state
    >>> tx = optax.sgd(0.25)
    >>> state = init_state({"w": jnp.zeros(())}, tx)
    >>> xs, ys = jnp.ones((20, 4)), 2 * jnp.ones((20, 4))          # 20 minibatches of 4
    >>> state, losses = run_steps(make_step(loss, tx), state, (xs, ys))
    >>> int(state.step), bool(abs(state.params["w"] - 2.0) < 1e-3)
    (20, True)

Divergence: the first update whose loss or new parameters are non-finite is kept in
``diverged_step``; the member goes on (its numbers are NaN from then on) and, vmapped, the other
members are untouched.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = ["TrainState", "LossFn", "init_state", "make_step", "run_steps", "all_finite",
           "vmap_arms_seeds", "map_arms_vmap_seeds", "scale_by_multipliers"]

# loss_fn(params, model_state, batch) -> (scalar loss, new model_state)
LossFn = Callable[[Any, Any, Any], tuple[jax.Array, Any]]


class TrainState(NamedTuple):
    """One member's training state; a sweep stacks members on leading ``(arm, seed)`` axes."""

    params: Any  # pytree of the trained parameters (e.g. an nnx.State of nnx.Param)
    opt_state: Any  # the optax state of params (layout fixed by the transformation's kind)
    model_state: Any  # pytree of non-trained state (batch-norm running averages); () if none
    step: jax.Array  # shape=(), dtype=int32: updates done
    diverged_step: jax.Array  # shape=(), dtype=int32: first update with a non-finite loss or
    #                           non-finite parameters, -1 if none


def all_finite(tree: Any) -> jax.Array:
    """() bool: every entry of every leaf of ``tree`` is finite (True for an empty tree)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
    return jnp.stack(leaves).all() if leaves else jnp.array(True)


def init_state(params: Any, tx: optax.GradientTransformation, model_state: Any = ()) -> TrainState:
    """The state of a member before its first update (step 0, not diverged).

    Raises:
      TypeError: ``tx`` is not an ``optax.GradientTransformation``.
    """
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(f"tx must be an optax.GradientTransformation, got {type(tx).__name__}")
    return TrainState(params=params, opt_state=tx.init(params), model_state=model_state,
                      step=jnp.zeros((), jnp.int32), diverged_step=jnp.full((), -1, jnp.int32))


def make_step(loss_fn: LossFn, tx: optax.GradientTransformation
              ) -> Callable[[TrainState, Any], tuple[TrainState, jax.Array]]:
    """``step(state, batch) -> (state, loss)``: one update of ``tx`` on ``loss_fn``'s gradient.

    ``loss_fn(params, model_state, batch)`` returns the scalar loss and the new model state (batch
    statistics); the gradient is taken with respect to ``params`` only. The loss returned is that
    of the parameters before the update. ``diverged_step`` becomes ``step + 1`` at the first update
    whose loss or updated parameters are non-finite.

    Raises:
      TypeError: ``loss_fn`` not callable or ``tx`` not a transformation.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
    if not isinstance(tx, optax.GradientTransformation):
        raise TypeError(f"tx must be an optax.GradientTransformation, got {type(tx).__name__}")

    def step(state: TrainState, batch: Any) -> tuple[TrainState, jax.Array]:
        (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, state.model_state, batch)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        t = state.step + 1
        finite = jnp.isfinite(loss) & all_finite(params)
        bad = jnp.where((state.diverged_step < 0) & ~finite, t, state.diverged_step)
        return TrainState(params, opt_state, model_state, t, bad), loss

    return step


def run_steps(step: Callable[[TrainState, Any], tuple[TrainState, jax.Array]], state: TrainState,
              batches: Any) -> tuple[TrainState, jax.Array]:
    """``k`` updates as one ``lax.scan``: ``batches`` is a pytree whose leaves have a leading axis
    of ``k`` (minibatches, or minibatch row indices). Returns the state and the ``(k,)`` losses."""
    return jax.lax.scan(step, state, batches)


def vmap_arms_seeds(fn: Callable[..., Any], arm_axes: Sequence[Any],
                    seed_axes: Sequence[Any]) -> Callable[..., Any]:
    """``fn`` over members stacked on ``(arm, seed)``: ``vmap`` over seeds inside arms.

    ``arm_axes`` / ``seed_axes`` are the ``in_axes`` of each positional argument for the arm and
    the seed axis (0 or None), e.g. state ``(0, 0)``, per-arm numbers ``(0, None)``, shared data
    ``(None, None)``, per-seed batch indices ``(None, 0)``.

    Raises:
      ValueError: the two axis lists differ in length.
    """
    arm_axes, seed_axes = tuple(arm_axes), tuple(seed_axes)
    if len(arm_axes) != len(seed_axes):
        raise ValueError(f"arm_axes {arm_axes} and seed_axes {seed_axes} need one entry per "
                         "argument each")
    return jax.vmap(jax.vmap(fn, in_axes=seed_axes), in_axes=arm_axes)


def map_arms_vmap_seeds(fn: Callable[..., Any], arm_axes: Sequence[Any],
                        seed_axes: Sequence[Any]) -> Callable[..., Any]:
    """Like :func:`vmap_arms_seeds`, but the arms run one after the other (``lax.map``) inside
    the one compiled program, each ``vmap``-ped over its seeds.

    For models whose batched form is slow on the backend: a convolution ``vmap``-ped over arms x
    seeds becomes one grouped convolution, which XLA:CPU ran 2.9x slower for 8 arms of a small
    CNN than the 8 arms' convolutions one after the other. Same arguments and results as
    :func:`vmap_arms_seeds`; arm axes must be 0 or None.

    Raises:
      ValueError: the two axis lists differ in length, or an arm axis is neither 0 nor None.
    """
    arm_axes, seed_axes = tuple(arm_axes), tuple(seed_axes)
    if len(arm_axes) != len(seed_axes):
        raise ValueError(f"arm_axes {arm_axes} and seed_axes {seed_axes} need one entry per "
                         "argument each")
    if any(ax not in (0, None) for ax in arm_axes):
        raise ValueError(f"arm_axes must be 0 or None, got {arm_axes}")
    per_arm = jax.vmap(fn, in_axes=seed_axes)

    @functools.wraps(fn)
    def run(*args: Any) -> Any:
        mapped = tuple(a for a, ax in zip(args, arm_axes, strict=True) if ax == 0)

        def one_arm(arm_args: tuple) -> Any:
            it = iter(arm_args)
            return per_arm(*(next(it) if ax == 0 else a
                             for a, ax in zip(args, arm_axes, strict=True)))

        return jax.lax.map(one_arm, mapped)

    return run

def scale_by_multipliers(multipliers: Any) -> optax.GradientTransformation:
    """An optax transformation that multiplies each update by its parameter's multiplier.

    ``multipliers`` is a tree shaped like the parameters with float (or scalar array) leaves, for
    example :meth:`initjax.modules.NetworkModule.lr_multipliers`. Chained after an optimizer whose
    last step scales by the learning rate, it gives parameter ``p`` the learning rate
    ``eta * multipliers[p]`` (a parametrization's per-layer rule; with Adam it scales the
    normalized update, as muP's Adam rule does).

    Raises:
      ValueError: a multiplier that is not a finite scalar > 0, naming its path.

        >>> tx = optax.chain(optax.sgd(0.1), scale_by_multipliers({"a": 1.0, "b": 10.0}))
        >>> g = {"a": jnp.ones(()), "b": jnp.ones(())}
        >>> u, _ = tx.update(g, tx.init(g))
        >>> round(float(u["a"]), 6), round(float(u["b"]), 6)
        (-0.1, -1.0)
    """

    for path, m in jax.tree_util.tree_leaves_with_path(multipliers):
        value = np.asarray(m)
        if value.shape != () or not np.issubdtype(value.dtype, np.number) or not (
                np.isfinite(value) and value > 0):
            raise ValueError(f"multiplier {jax.tree_util.keystr(path) or '(root)'} must be a finite "
                             f"number > 0, got {m!r}")

    def init(params: Any) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update(updates: Any, state: optax.EmptyState, params: Any = None) -> tuple[Any, Any]:
        del params
        return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, multipliers), state

    return optax.GradientTransformation(init, update)
