"""Saxe et al. 2014 / Pennington et al. 2017: input-output Jacobian spectra, Gaussian vs orthogonal.

    python experiments/saxe2014_spectra.py [--quick] [--seeds N] [--out DIR]

Same as ``initjax reproduce saxe2014-spectra``; see ``initjax/reproductions/saxe2014_spectra.py``.
"""

import sys

from initjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["reproduce", "saxe2014-spectra", *sys.argv[1:]]))
