"""Figure 2: heatmap of per-head mean-output norms [layer × head] on training tasks."""

from _common import run_dir, save

from addk_interp.plots import head_norm_heatmap

run = run_dir(__doc__)
train, _ = run.load_means()
save(head_norm_heatmap(train.means), run, "fig02_head_norms")
