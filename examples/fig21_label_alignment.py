"""Label peaking, alignment and weighting gain (report figure ``fig21_label_alignment``, stage ``extraction``).

Usage: python examples/fig21_label_alignment.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig21_label_alignment", __doc__))
