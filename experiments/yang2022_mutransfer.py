"""Yang et al. 2022 (TP5), Figure 1: learning-rate transfer across width (SP vs muP) and depth.

    python experiments/yang2022_mutransfer.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce yang2022-mutransfer``;
see ``initjax/reproductions/yang2022_mutransfer.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "yang2022-mutransfer", *sys.argv[1:]]))
