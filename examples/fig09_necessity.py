"""Necessity of the main heads (report figure ``fig09_necessity``, stage ``headsets``).

Usage: python examples/fig09_necessity.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig09_necessity", __doc__))
