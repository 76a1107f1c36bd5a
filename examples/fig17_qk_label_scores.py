"""QK: score at a label vs its number (report figure ``fig17_qk_label_scores``, stage ``circuits``).

Usage: python examples/fig17_qk_label_scores.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig17_qk_label_scores", __doc__))
