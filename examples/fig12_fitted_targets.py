"""Fitted periodic / magnitude targets vs k, with R² (report figure ``fig12_fitted_targets``, stage ``subspaces``).

Usage: python examples/fig12_fitted_targets.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig12_fitted_targets", __doc__))
