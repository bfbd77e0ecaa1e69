"""Zhang et al. 2019 (Fixup): per-layer gradient norms at init, and deep residual nets trained
without normalization with standard vs Fixup init.

    python experiments/zhang2019_fixup.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce zhang2019-fixup``;
see ``initjax/reproductions/zhang2019_fixup.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "zhang2019-fixup", *sys.argv[1:]]))
