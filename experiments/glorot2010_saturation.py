"""Glorot & Bengio 2010, Figures 2-4: per-layer activations of sigmoid, tanh and softsign nets during training.

    python experiments/glorot2010_saturation.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce glorot2010-saturation``; see ``initjax/reproductions/glorot2010_saturation.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "glorot2010-saturation", *sys.argv[1:]]))
