"""Dong, Cordonnier & Loukas 2021: pure attention loses rank doubly exponentially with depth.

    python experiments/dong2021_rank_collapse.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce dong2021-rank-collapse``;
see ``initjax/reproductions/dong2021_rank_collapse.py``. One architecture from the command line:
``initjax propagate --arch transformer --depth 8 --width 64 --heads 4 --tokens 16 --no-residual
--norm none --json``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "dong2021-rank-collapse", *sys.argv[1:]]))
