"""Ioffe & Szegedy 2015, Figure 1: a 3 x 100 sigmoid MLP with and without batch norm.

    python experiments/ioffe2015_mnist.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce ioffe2015-mnist``; see ``initjax/reproductions/ioffe2015_mnist.py``.
It trains on scikit-learn's digits (no download); for MNIST (the paper's data, 50,000 steps), point
``--data-dir`` at a directory holding its four IDX files (``initjax.data.mnist``):

    python experiments/ioffe2015_mnist.py --data-dir ~/data/mnist
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "ioffe2015-mnist", *sys.argv[1:]]))
