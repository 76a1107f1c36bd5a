"""PC coordinates vs k (first analysis head) (report figure ``fig11_pc_coordinates``, stage ``subspaces``).

Usage: python examples/fig11_pc_coordinates.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig11_pc_coordinates", __doc__))
