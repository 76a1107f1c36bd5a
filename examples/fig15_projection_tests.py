"""Causal projection tests with error decomposition (report figure ``fig15_projection_tests``, stage ``projections``).

Usage: python examples/fig15_projection_tests.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig15_projection_tests", __doc__))
