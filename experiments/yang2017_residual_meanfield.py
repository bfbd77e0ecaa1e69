"""Yang & Schoenholz 2017: mean-field residual nets (FRN, RRN; tanh, ReLU) vs their recursions.

    python experiments/yang2017_residual_meanfield.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce yang2017-residual-meanfield``;
see ``initjax/reproductions/yang2017_residual_meanfield.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "yang2017-residual-meanfield", *sys.argv[1:]]))
