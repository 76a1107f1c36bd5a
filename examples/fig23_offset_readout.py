"""Offset read-out from each label (report figure ``fig23_offset_readout``, stage ``demos``).

Usage: python examples/fig23_offset_readout.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig23_offset_readout", __doc__))
