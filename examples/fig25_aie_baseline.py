"""AIE baseline (Todd et al.) top-k FV (report figure ``fig25_aie_baseline``, stage ``aie``).

Usage: python examples/fig25_aie_baseline.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig25_aie_baseline", __doc__))
