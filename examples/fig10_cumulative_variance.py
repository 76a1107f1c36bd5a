"""PCA cumulative variance per head (report figure ``fig10_cumulative_variance``, stage ``subspaces``).

Usage: python examples/fig10_cumulative_variance.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig10_cumulative_variance", __doc__))
