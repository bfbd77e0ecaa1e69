"""Ioffe & Szegedy 2015, Figure 1: a 3 x 100 sigmoid MLP with and without batch norm.

    python experiments/ioffe2015_mnist.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce ioffe2015-mnist``; see ``initjax/reproductions/ioffe2015_mnist.py``.
It trains on scikit-learn's digits (no download). For MNIST, call the module's ``run`` with
``data_dir`` pointing at the four IDX files (``initjax.data.mnist``), e.g.

    python -c "from initjax.reproductions import ioffe2015_mnist as m; m.run('results/ioffe2015-mnist', data_dir='~/data/mnist')"
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "ioffe2015-mnist", *sys.argv[1:]]))
