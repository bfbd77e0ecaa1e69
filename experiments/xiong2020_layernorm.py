"""Xiong et al. 2020: Pre-LN vs Post-LN transformers, per-layer gradient norms at initialization,
and Post-LN needing learning-rate warm-up in training where Pre-LN does not (sorting digits).

    python experiments/xiong2020_layernorm.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce xiong2020-layernorm``;
see ``initjax/reproductions/xiong2020_layernorm.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "xiong2020-layernorm", *sys.argv[1:]]))
