"""QK: attention by token role (report figure ``fig16_qk_roles``, stage ``circuits``).

Usage: python examples/fig16_qk_roles.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig16_qk_roles", __doc__))
