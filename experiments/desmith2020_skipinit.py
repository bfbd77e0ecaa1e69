"""De & Smith 2020: stream and branch variance with and without batch norm; SkipInit training.

    python experiments/desmith2020_skipinit.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce desmith2020-skipinit``;
see ``initjax/reproductions/desmith2020_skipinit.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "desmith2020-skipinit", *sys.argv[1:]]))
