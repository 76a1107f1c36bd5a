"""Figure 1: clean accuracy vs k at 0 and 5 shots, with bootstrap 95% CIs."""

import pandas as pd
from _common import run_dir, save

from addk_interp.plots import accuracy_vs_k

run = run_dir(__doc__)
table = pd.read_csv(run.out / "stages" / "clean_eval" / "accuracy.csv")
save(accuracy_vs_k(table), run, "fig01_accuracy_vs_k")
