"""Head-set FV accuracy (report figure ``fig08_headset_fv``, stage ``headsets``).

Usage: python examples/fig08_headset_fv.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig08_headset_fv", __doc__))
