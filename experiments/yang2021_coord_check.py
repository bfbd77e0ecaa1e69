"""Yang et al. 2021 (TP5): coordinate checks of SP and muP, MLP and residual MLP, SGD and Adam.

    python experiments/yang2021_coord_check.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce yang2021-coord-check``;
see ``initjax/reproductions/yang2021_coord_check.py``. One coordinate check from the command
line: ``initjax coord-check --parametrization mup --optimizer adam --lr 0.01 --steps 4``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "yang2021-coord-check", *sys.argv[1:]]))
