"""Periodogram (which periods each head uses) (report figure ``fig13_periodogram``, stage ``subspaces``).

Usage: python examples/fig13_periodogram.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig13_periodogram", __doc__))
