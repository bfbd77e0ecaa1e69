"""The classic demo: per-layer activation and gradient histograms of a 10-layer, 4096-wide MLP.

    python experiments/seed_demo.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce seed-demo``; see ``initjax/reproductions/seed_demo.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "seed-demo", *sys.argv[1:]]))
