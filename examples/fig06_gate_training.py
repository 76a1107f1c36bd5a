"""Gate training curves (report figure ``fig06_gate_training``, stage ``localize``).

Usage: python examples/fig06_gate_training.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig06_gate_training", __doc__))
