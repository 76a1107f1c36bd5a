"""Principal angles between head subspaces (report figure ``fig14_principal_angles``, stage ``subspaces``).

Usage: python examples/fig14_principal_angles.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig14_principal_angles", __doc__))
