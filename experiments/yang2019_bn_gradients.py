"""Yang et al. 2019: batch norm's gradient explosion rate at initialization vs batch size.

    python experiments/yang2019_bn_gradients.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce yang2019-bn-gradients``;
see ``initjax/reproductions/yang2019_bn_gradients.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "yang2019-bn-gradients", *sys.argv[1:]]))
