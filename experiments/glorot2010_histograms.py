"""Glorot & Bengio 2010, Figs. 6-8: per-layer histograms at init, standard vs normalized init.

    python experiments/glorot2010_histograms.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce glorot2010-histograms``;
see ``initjax/reproductions/glorot2010_histograms.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "glorot2010-histograms", *sys.argv[1:]]))
