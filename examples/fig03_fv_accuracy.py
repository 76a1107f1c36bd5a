"""Figure 3: function-vector accuracy (all heads at unit coefficient, mean-of-tasks control,
zero-shot without FV) beside clean n-shot accuracy, held-out and training tasks."""

import pandas as pd
from _common import run_dir, save

from addk_interp.plots import fv_bars

run = run_dir(__doc__)
summary = pd.read_csv(run.out / "stages" / "fv_eval" / "fv_summary.csv")
save(fv_bars(summary), run, "fig03_fv_accuracy")
