"""The matmul precision policy: every statistic float32-exact on every backend by default.

JAX's default float32 matmul precision is backend-dependent: exact float32 on CPU, but on an
NVIDIA GPU (TF32-class passes) or a TPU (bfloat16 passes) ``x @ W`` keeps only 10 or 8 mantissa
bits of its inputs. On an H200 the default and ``"highest"`` differed by 5e-5..1e-4 relative in a
10 x 1024 tanh network's activation and gradient variances (issue 13). initjax's compiled
programs therefore trace every ``dot_general`` / convolution at the precision named here,
``"highest"`` unless the user asks otherwise:

- ``"highest"``: float32 inputs, float32 products (the default; CPU, GPU and TPU agree to float32
  rounding, 3e-7..8e-7 relative in the H200 comparison above).
- ``"high"``: three bfloat16 passes on a TPU; on an NVIDIA GPU XLA picks a TF32-class or
  bfloat16_3x algorithm. Its error was not measured in issue 13; on CPU it is ``"highest"``.
- ``"default"``: the backend's fastest float32 matmul (TF32 on NVIDIA GPUs, one bfloat16 pass on
  TPUs; exact on CPU): 5e-5..1e-4 relative from ``"highest"`` in the H200 run above.

On CPU the three give identical numbers (``tests/test_precision.py`` checks it), so a CPU run
cannot show the difference; the lowered programs can, and the same test reads them.

The policy is applied with :func:`jax.default_matmul_precision` around the trace of a compiled
program, so it reaches matmuls inside Flax modules and optax too, and it is part of ``jax.jit``'s
cache key: programs at two precisions are two programs. It is visible in the lowered program:
``stablehlo.dot_general ... precision = [HIGHEST, HIGHEST]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

from initjax._checks import check_choice

__all__ = ["PRECISIONS", "DEFAULT_PRECISION", "check_precision", "matmul_precision"]

PRECISIONS = ("highest", "high", "default")
DEFAULT_PRECISION = "highest"


def check_precision(value: str | None) -> str:
    """``value`` checked against :data:`PRECISIONS` (None gives :data:`DEFAULT_PRECISION`)."""
    if value is None:
        return DEFAULT_PRECISION
    check_choice("precision", value, PRECISIONS)
    return value


@contextlib.contextmanager
def matmul_precision(value: str | None = None) -> Iterator[str]:
    """Trace (and call) compiled programs inside this context to give their matmuls ``value``'s
    precision (see the module docstring); yields the checked value."""
    value = check_precision(value)
    with jax.default_matmul_precision(value):
        yield value
