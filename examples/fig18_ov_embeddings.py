"""OV map of number embeddings into the fitted subspace (report figure ``fig18_ov_embeddings``, stage ``circuits``).

Usage: python examples/fig18_ov_embeddings.py [--model organism] [--quick] [--out DIR]
"""

import sys

from _common import main

sys.exit(main("fig18_ov_embeddings", __doc__))
