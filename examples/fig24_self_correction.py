"""Self-correction curves (report figure ``fig24_self_correction``, stage ``demos``).

Usage: python examples/fig24_self_correction.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig24_self_correction", __doc__))
