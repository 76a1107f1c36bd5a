"""Per-head mean-output norm (training tasks) (report figure ``fig02_head_norms``, stage ``capture``).

Usage: python examples/fig02_head_norms.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig02_head_norms", __doc__))
