"""Dose-response (recovery) curves (report figure ``fig07_dose_response``, stage ``scan``).

Usage: python examples/fig07_dose_response.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig07_dose_response", __doc__))
