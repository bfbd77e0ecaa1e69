"""Schoenholz et al. 2017: trainability of deep tanh nets against 6 xi_c.

    python experiments/schoenholz2017_trainability.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce schoenholz2017-trainability``; see ``initjax/reproductions/schoenholz2017_trainability.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "schoenholz2017-trainability", *sys.argv[1:]]))
