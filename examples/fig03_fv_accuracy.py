"""Function-vector accuracy (report figure ``fig03_fv_accuracy``, stage ``fv_eval``).

Usage: python examples/fig03_fv_accuracy.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig03_fv_accuracy", __doc__))
