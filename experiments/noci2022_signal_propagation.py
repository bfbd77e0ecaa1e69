"""Noci et al. 2022: rank collapse at initialization and the vanishing query/key gradients.

    python experiments/noci2022_signal_propagation.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce noci2022-signal-propagation``;
see ``initjax/reproductions/noci2022_signal_propagation.py``. One architecture from the command
line: ``initjax propagate --arch transformer --depth 32 --width 128 --heads 4 --tokens 16
--norm-position post --json``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "noci2022-signal-propagation", *sys.argv[1:]]))
