"""Brock, De & Smith 2021: signal propagation plots of BN-ReLU, ReLU-BN, NF with He init and
NF with scaled WS.

    python experiments/brock2021_spp.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce brock2021-spp``;
see ``initjax/reproductions/brock2021_spp.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "brock2021-spp", *sys.argv[1:]]))
