"""Token-group shares of the task signal (report figure ``fig20_group_shares``, stage ``extraction``).

Usage: python examples/fig20_group_shares.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig20_group_shares", __doc__))
