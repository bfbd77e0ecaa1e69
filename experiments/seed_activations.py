"""The blog posts' activations (sigmoid, tanh, ReLU, LeakyReLU, PReLU, ELU): per-layer
distributions at init, training curves on digits, and dead ReLUs vs the learning rate.

    python experiments/seed_activations.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce seed-activations``; see ``initjax/reproductions/seed_activations.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "seed-activations", *sys.argv[1:]]))
