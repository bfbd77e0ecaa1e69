"""Layer-sequential unit-variance (LSUV) initialization, Mishkin & Matas 2016.

LSUV is a data-driven initialization: start from orthonormal kernels, then, layer by layer in the
order the forward pass reaches them, divide each kernel by the standard deviation of that layer's
output on a batch of data until the output variance is 1 within a tolerance. Where the
mean-field schemes (Xavier, He) fix the variance in expectation for an assumed input law and
activation, LSUV fixes it on the actual data, for any activation and architecture.

    >>> import jax
    >>> from flax import nnx
    >>> from initjax.modules import MLP
    >>> net = MLP(64, (128,) * 5, 10, activation="tanh", kernel_init="normal:stddev=0.01",
    ...           rngs=nnx.Rngs(0))
    >>> x_batch = jax.random.normal(jax.random.key(0), (256, 64))
    >>> net, report = lsuv(net, x_batch)          # every layer's Var[h^l] on x_batch is now ~1
    >>> bool(report.converged.all())
    True

References:
  Mishkin & Matas 2016, "All you need is a good init", ICLR, Algorithm 1,
  https://arxiv.org/abs/1511.06422. Orthonormal pre-initialization: Saxe et al. 2014,
  https://arxiv.org/abs/1312.6120.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from initjax import initializers as _initializers
from initjax._checks import check_float, check_int
from initjax._keys import as_key
from initjax._precision import DEFAULT_PRECISION, check_precision, matmul_precision
from initjax.probing import NNXRunner, discover_layers, layer_modules, nnx_setup, path_name

__all__ = ["LSUVReport", "lsuv"]


class LSUVReport(NamedTuple):
    """What :func:`lsuv` did, one entry per layer (each ``nnx.Linear``/``nnx.Conv`` module, in
    the order of its first call in the forward pass).

    Attributes:
      layer_names: module paths, e.g. ``("layers.0", "layers.1", "readout")``.
      iterations: ``(layer,)`` int, rescalings applied (0 when the start was already within
        ``tol``; at most ``max_iter``).
      initial_variance: ``(layer,)`` output variance after the orthonormal pre-init (or at the
        start, with ``orthogonal=False``), before any rescaling of this layer.
      variance: ``(layer,)`` output variance after the last rescaling: the final state.
      converged: ``(layer,)`` bool, ``|variance - 1| < tol``.
      tol: the tolerance used.
      max_iter: the iteration cap used.
      precision: the matmul precision of the forward passes that measured the variances.
    """

    layer_names: tuple[str, ...]
    iterations: np.ndarray  # (layer,) int32
    initial_variance: np.ndarray  # (layer,) float64
    variance: np.ndarray  # (layer,) float64
    converged: np.ndarray  # (layer,) bool
    tol: float
    max_iter: int
    precision: str = DEFAULT_PRECISION

    @property
    def all_converged(self) -> bool:
        """True if every layer ended within ``tol`` of unit variance."""
        return bool(np.all(self.converged))

    def table(self) -> list[dict[str, Any]]:
        """One dict per layer: ``layer`` (1-based), ``name``, ``iterations``,
        ``initial_variance``, ``variance``, ``converged``."""
        return [
            {
                "layer": i + 1,
                "name": name,
                "iterations": int(self.iterations[i]),
                "initial_variance": float(self.initial_variance[i]),
                "variance": float(self.variance[i]),
                "converged": bool(self.converged[i]),
            }
            for i, name in enumerate(self.layer_names)
        ]


def _output_variances(
    runner: NNXRunner, model: nnx.Module, x: jax.Array, calls: list[int]
) -> list[float]:
    """Variance (all entries pooled, ddof 0) of the output of the given layer calls on ``x``.

    Runs on a private copy of ``model`` (``nnx.split``), so batch-norm running averages of the
    model are not updated by LSUV's forward passes.
    """
    _, params, rest = nnx.split(model, nnx.Param, ...)
    _, aux = runner.forward(params, rest, x, None, [])
    return [float(jnp.var(aux.outputs[k].astype(jnp.float32))) for k in calls]


def lsuv(
    model: nnx.Module,
    x: Any,
    *,
    tol: float = 0.1,
    max_iter: int = 10,
    orthogonal: bool = True,
    key: int | jax.Array = 0,
    precision: str | None = None,
) -> tuple[nnx.Module, LSUVReport]:
    """Layer-sequential unit-variance initialization (Mishkin & Matas 2016, Algorithm 1).

    1. Unless ``orthogonal=False``, every ``nnx.Linear``/``nnx.Conv`` kernel ``W_l`` is replaced by
       an orthonormal matrix (:func:`initjax.initializers.orthogonal`, gain 1, on the kernel
       flattened to ``(prod(shape[:-1]), out)``), drawn from ``fold_in(key, l)``.
    2. For each layer ``l`` in the order of the forward pass: with ``B_l = x^{l-1} W_l + b_l`` the
       layer's output (its pre-activation) on the batch ``x`` and ``v = Var[B_l]`` over all its
       entries (batch, positions and units pooled), while ``|v - 1| >= tol`` and fewer than
       ``max_iter`` rescalings were done::

           W_l <- W_l / sqrt(v)

       and ``v`` is measured again. The bias is left as it is, so with a non-zero bias (or batch
       statistics) one rescaling need not be enough, hence the loop. Every layer's rescaling
       changes the inputs of the layers after it; that is why the order matters.

    Non-convergence never raises: a layer still outside the tolerance after ``max_iter``
    rescalings, or whose output has zero or non-finite variance (nothing to rescale), is recorded
    with ``converged=False``. The model's kernels are updated **in place** (NNX modules are
    mutable) and the same model is returned; biases, batch-norm parameters and running averages
    are untouched. Forward passes run eagerly on a private copy of the model.

    Args:
      model: an initjax ``MLP``/``PlainCNN`` or any NNX model whose forward pass ``model(x)``
        calls ``nnx.Linear``/``nnx.Conv`` layers (all of them, readout and classifier included,
        are initialized). Stacked ensembles are refused: apply LSUV to each member.
      x: a batch of data, as ``model(x)`` takes it.
      tol: tolerance on ``|Var - 1|``, > 0 (0.1 in the paper).
      max_iter: the most rescalings per layer, >= 1 (the paper's ``T_max``, 10 by default).
      orthogonal: pre-initialize the kernels with orthonormal matrices (the paper's step 1).
      key: PRNG key of the orthonormal draws, or an int seed meaning
        ``jax.random.key(seed, impl="philox2x32")`` (as in :func:`initjax.propagate`).
      precision: the precision of the forward passes' matmuls and convolutions (and of the
        orthonormal draws): ``"highest"`` (None, the default: float32-exact on every backend),
        ``"high"`` or ``"default"`` (the backend's fastest: TF32-class on an NVIDIA GPU, where
        issue 13's H200 measured 5e-5..1e-4 relative in a 10 x 1024 tanh network's variances,
        far inside LSUV's ``tol``). Identical on CPU. See :mod:`initjax._precision`.

    Returns:
      ``(model, report)``: the same model, initialized, and an :class:`LSUVReport`.

    Raises:
      ValueError: ``tol <= 0``, ``max_iter < 1``, a model without Linear/Conv layers, a batch of the
        wrong shape, a stacked ensemble.
      TypeError: a non-NNX model, a non-bool ``orthogonal``, a bad ``key``.

    References:
      Mishkin & Matas 2016, "All you need is a good init", https://arxiv.org/abs/1511.06422.
    """
    tol = check_float("tol", tol, minimum=0.0, strict_minimum=True)
    max_iter = check_int("max_iter", max_iter, minimum=1)
    if not isinstance(orthogonal, bool):
        raise TypeError(f"orthogonal must be True or False, got {orthogonal!r}")
    precision = check_precision(precision)
    base_key = as_key(key)
    with matmul_precision(precision):
        report = _lsuv(model, x, tol, max_iter, orthogonal, base_key)
    return model, report._replace(precision=precision)


def _lsuv(model: nnx.Module, x: Any, tol: float, max_iter: int, orthogonal: bool,
          base_key: jax.Array) -> LSUVReport:
    """:func:`lsuv`'s steps on checked arguments, at the caller's matmul precision."""
    x, setup_runner, params, rest, stack_size, expect = nnx_setup(model, x, None)
    if stack_size is not None:
        raise ValueError(
            f"lsuv got a stacked ensemble of {stack_size} members; apply it to each member "
            "(initjax.modules.ensemble_member) and stack them again"
        )
    runner = NNXRunner(setup_runner.graphdef, None)
    _, _, meta = discover_layers(runner, params, rest, x, type(model).__name__, expect)
    if not meta:
        raise ValueError(
            f"{type(model).__name__} called no nnx.Linear / nnx.Conv layer in its forward pass; "
            "lsuv needs at least one"
        )
    modules = dict(layer_modules(model))
    first_call: dict[tuple, int] = {}
    for k, call in enumerate(meta):
        first_call.setdefault(call.path, k)
    order = list(first_call)

    if orthogonal:
        ortho = _initializers.orthogonal()
        for i, path in enumerate(order):
            kernel = modules[path].kernel
            w = kernel[...]
            kernel[...] = ortho(jax.random.fold_in(base_key, i), w.shape, w.dtype)

    iterations, initial, final, converged = [], [], [], []
    for path in order:
        k = first_call[path]
        kernel = modules[path].kernel
        v = _output_variances(runner, model, x, [k])[0]
        initial.append(v)
        n = 0
        while not abs(v - 1.0) < tol and n < max_iter:
            if not (math.isfinite(v) and v > 0.0):
                break  # nothing to rescale: a dead or overflowing layer is reported, not fixed
            w = kernel[...]
            kernel[...] = (w / jnp.sqrt(jnp.asarray(v, jnp.float32))).astype(w.dtype)
            n += 1
            v = _output_variances(runner, model, x, [k])[0]
        iterations.append(n)
        final.append(v)
        converged.append(bool(math.isfinite(v) and abs(v - 1.0) < tol))

    report = LSUVReport(
        layer_names=tuple(path_name(p) for p in order),
        iterations=np.asarray(iterations, np.int32),
        initial_variance=np.asarray(initial, np.float64),
        variance=np.asarray(final, np.float64),
        converged=np.asarray(converged, bool),
        tol=tol,
        max_iter=max_iter,
    )
    return report
