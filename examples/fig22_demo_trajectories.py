"""Per-demonstration signal trajectories (report figure ``fig22_demo_trajectories``, stage ``demos``).

Usage: python examples/fig22_demo_trajectories.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig22_demo_trajectories", __doc__))
