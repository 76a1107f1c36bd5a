"""Sorted |coef| with the selection cut (report figure ``fig05_sorted_coef``, stage ``localize``).

Usage: python examples/fig05_sorted_coef.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig05_sorted_coef", __doc__))
