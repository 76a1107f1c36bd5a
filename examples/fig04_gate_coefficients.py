"""Gate coefficients [layer × head] (report figure ``fig04_gate_coefficients``, stage ``localize``).

Usage: python examples/fig04_gate_coefficients.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig04_gate_coefficients", __doc__))
