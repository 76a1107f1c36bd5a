"""Run presets: prompt counts per task (``PRESETS``) and the localization / analysis budget of
each stage (``STAGE_PRESETS``; a stage names the budget keys it reads in ``pipeline.stages``).

``default`` is sized so that a default run of Gemma-3-270m fits in about ten minutes of stage
time on 2 CPU cores; ``quick`` is a smoke test; ``paper`` is the original protocol's sizes (for
a GPU and a model that solves the task; docs/method.md §3, §4).
"""

PRESETS = {
    "default": dict(k="1-30", n_eval=10, n_capture=10),
    "quick": dict(k="1-10", n_eval=4, n_capture=4),
    # the paper's protocol sizes (spec §3.3, §4): for a GPU and a model that solves the task
    "paper": dict(k="1-30", n_eval=100, n_capture=100),
}
# localization / analysis budgets per preset (gate preset, scan size, c grid, prompts), sized
# so that a default run of Gemma-3-270m fits in ≈10 minutes on 2 CPU cores (README)
STAGE_PRESETS = {
    "default": dict(
        gates="default",
        gate_overrides={},
        n_scan=3,
        c_max=6,
        n_random=20,
        n_extract=4,
        max_scan_heads=6,
        n_necessity=4,
        n_proj=3,
        max_proj_heads=2,
        n_circuit=2,
        n_aie=10,
        n_demo=12,
        max_demo_heads=1,
        max_single_heads=96,
    ),
    "quick": dict(
        gates="default",
        gate_overrides=dict(epochs=2, n_items=64, n_monitor=2),
        n_scan=2,
        c_max=4,
        n_random=5,
        n_extract=2,
        max_scan_heads=2,
        n_necessity=1,
        n_proj=2,
        max_proj_heads=1,
        n_circuit=1,
        n_aie=1,
        n_demo=2,
        max_demo_heads=1,
        max_single_heads=0,
    ),
    "paper": dict(
        gates="paper",
        gate_overrides={},
        n_scan=100,
        c_max=20,
        n_random=20,
        n_extract=40,
        max_scan_heads=64,
        n_necessity=100,
        n_proj=100,
        max_proj_heads=3,
        n_circuit=20,
        n_aie=625,
        n_demo=200,
        max_demo_heads=3,
        max_single_heads=4096,
    ),
}
