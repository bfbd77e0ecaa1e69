"""The blog posts' batch norm: a 6-layer tanh MLP at three weight scales without and with BN, and
eval-mode running averages vs test-batch statistics (Flax and PyTorch conventions).

    python experiments/seed_batchnorm.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce seed-batchnorm``; see ``initjax/reproductions/seed_batchnorm.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "seed-batchnorm", *sys.argv[1:]]))
