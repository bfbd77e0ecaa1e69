"""He et al. 2015, Figures 2-3: 22- and 30-layer plain ReLU nets, Xavier vs He init.

    python experiments/he2015_deep_relu.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce he2015-deep-relu``; see ``initjax/reproductions/he2015_deep_relu.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "he2015-deep-relu", *sys.argv[1:]]))
