"""Clean accuracy vs k (report figure ``fig01_accuracy_vs_k``, stage ``clean_eval``).

Usage: python examples/fig01_accuracy_vs_k.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig01_accuracy_vs_k", __doc__))
