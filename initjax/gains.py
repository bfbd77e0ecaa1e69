"""Recommended gains of activation functions, PyTorch's ``torch.nn.init.calculate_gain`` table.

A gain multiplies the **standard deviation** of a weight initializer (PyTorch's convention, used by
:func:`initjax.initializers.he_normal` and :func:`initjax.initializers.xavier_normal`), so a layer
with gain ``g`` has ``Var[W] = g^2 / fan``. jax's ``variance_scaling`` instead takes
``scale = g^2``, a factor on the variance.

    >>> calculate_gain("relu")                 # sqrt(2)
    1.4142135623730951
    >>> calculate_gain("leaky_relu", 0.2)      # sqrt(2 / (1 + 0.2^2))
    1.3867504905630728
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["NONLINEARITIES", "calculate_gain"]

# Linear maps (and the identity) leave the variance of a zero-mean signal unchanged: gain 1.
_LINEAR = (
    "linear",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "identity",
)

NONLINEARITIES: tuple[str, ...] = (*_LINEAR, "sigmoid", "tanh", "relu", "leaky_relu", "selu")
"""The names :func:`calculate_gain` accepts."""

# Maas et al. 2013's slope, PyTorch's ``nn.LeakyReLU`` default and ``calculate_gain``'s fallback.
_LEAKY_DEFAULT_SLOPE = 0.01


def _leaky_slope(param: Any) -> float:
    if param is None:
        return _LEAKY_DEFAULT_SLOPE
    # bool is an Integral in Python; PyTorch rejects it too ("negative_slope True not a valid
    # number").
    if isinstance(param, bool) or not isinstance(param, numbers.Real):
        raise ValueError(
            f"leaky_relu's param is its negative slope, a real number; got {param!r} "
            f"({type(param).__name__})"
        )
    slope = float(param)
    if not math.isfinite(slope):
        raise ValueError(f"leaky_relu's negative slope must be finite, got {slope}")
    return slope


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain that keeps the forward variance of ``nonlinearity`` layers constant with depth.

    PyTorch's table (``torch.nn.init.calculate_gain``):

    ======================================================  =======================
    nonlinearity                                            gain
    ======================================================  =======================
    linear, conv{1,2,3}d, conv_transpose{1,2,3}d, identity  1
    sigmoid                                                 1
    tanh                                                    5/3
    relu                                                    sqrt(2)
    leaky_relu                                              sqrt(2 / (1 + a^2))
    selu                                                    3/4
    ======================================================  =======================

    ReLU's ``sqrt(2)`` and leaky ReLU's ``sqrt(2 / (1 + a^2))`` are exact: He et al. 2015 show that
    ``Var[y_l] = (1 + a^2) / 2 * n_l * Var[w_l] * Var[y_{l-1}]`` for slope a
    (https://arxiv.org/abs/1502.01852, sec. 2.2). tanh's 5/3 and selu's 3/4 are empirical values
    chosen by PyTorch, not derived from a variance argument. For SELU in particular the paper
    (Klambauer et al. 2017, https://arxiv.org/abs/1706.02515) uses weights with ``Var = 1/n``, i.e.
    gain 1, which is what makes (mean, variance) = (0, 1) its fixed point; pass ``gain=1.0``
    explicitly for that.

    Args:
      nonlinearity: one of :data:`NONLINEARITIES`.
      param: the negative slope ``a`` of ``leaky_relu`` (default 0.01 when None). Ignored for the
        other nonlinearities, as in PyTorch.

    Returns:
      The gain, a Python float (it multiplies the weight standard deviation).

    Raises:
      ValueError: for a nonlinearity not in the table (the message lists the supported ones), or a
        leaky_relu ``param`` that is not a finite real number (a bool is rejected).
    """
    if not isinstance(nonlinearity, str) or nonlinearity not in NONLINEARITIES:
        raise ValueError(
            f"unsupported nonlinearity {nonlinearity!r}; supported: {', '.join(NONLINEARITIES)}"
        )
    if nonlinearity in _LINEAR or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = _leaky_slope(param)
        return math.sqrt(2.0 / (1.0 + slope**2))
    # selu: PyTorch's empirical 3/4 (see docstring); the SELU paper's choice would be 1.
    return 0.75
