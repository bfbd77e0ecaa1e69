"""Glorot & Bengio 2010, Table 1: test error of 5-hidden-layer nets by activation and init.

    python experiments/glorot2010_table1.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce glorot2010-table1``; see ``initjax/reproductions/glorot2010_table1.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "glorot2010-table1", *sys.argv[1:]]))
