"""OV map of label residuals into the fitted subspace (report figure ``fig19_ov_labels``, stage ``circuits``).

Usage: python examples/fig19_ov_labels.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig19_ov_labels", __doc__))
