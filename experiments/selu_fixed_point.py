"""Klambauer et al. 2017: SELU's (0, 1) fixed point of the activation mean and variance.

    python experiments/selu_fixed_point.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce selu-fixed-point``; see ``initjax/reproductions/selu_fixed_point.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "selu-fixed-point", *sys.argv[1:]]))
