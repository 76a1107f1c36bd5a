"""``addk-interp sweep``: one cached run per (model, family, seed) cell through submitit, then one
comparison table (``OUT/sweep.md`` / ``.csv`` / ``.json`` / ``.html``).

Not a step of the method: the parser stays free of heavy imports (``--help`` is fast); the
library is ``addk_interp.pipeline.sweep`` (its docstring has the Slurm invocation). Exit code 0
when every cell finished, 1 when any cell failed (the table still lists it), 2 for bad input
(nothing submitted or written). Cost: the cells' runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from addk_interp.cli.run import PRESET_NAMES


def add_parser(sub) -> None:
    sp = sub.add_parser(
        "sweep",
        help="one run per (model, family, seed) via submitit -> DIR/sweep.md",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sp.add_argument(
        "--model", action="append", required=True, help="model spec (repeat for several)"
    )
    sp.add_argument("--family", action="append", default=None, help="add | sub | mul (repeat)")
    sp.add_argument("--seed", action="append", type=int, default=None, help="seed (repeat)")
    sp.add_argument("--out", required=True, help="sweep directory (cells/, submitit/, tables)")
    sp.add_argument("--quick", action="store_true", help="smoke preset for every cell")
    sp.add_argument("--preset", choices=PRESET_NAMES, default="default", help="run preset")
    sp.add_argument("--k", default=None, help="k values, e.g. 1-10 (preset's by default)")
    sp.add_argument("--n-eval", type=int, default=None, help="evaluation prompts per task")
    sp.add_argument("--n-capture", type=int, default=None, help="prompts per task for means")
    sp.add_argument("--shots", type=int, default=5, help="demonstrations per prompt")
    sp.add_argument("--batch-size", type=int, default=32, help="prompts per forward")
    sp.add_argument("--device", default="cpu", help="torch device of every cell, e.g. cuda")
    sp.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")
    sp.add_argument(
        "--executor",
        choices=("local", "slurm", "debug"),
        default="local",
        help="local: subprocesses here; slurm: sbatch jobs; debug: in this process",
    )
    sp.add_argument("--slurm-partition", default=None, help="Slurm partition (slurm only)")
    sp.add_argument(
        "--slurm-gpus-per-node", type=int, default=None, help="GPUs per cell job (slurm only)"
    )
    sp.add_argument("--timeout-min", type=int, default=240, help="per-cell job time limit")
    sp.add_argument("--threads", type=int, default=1, help="torch threads per cell job")
    sp.set_defaults(func=_sweep_cmd)


def _status_line(row) -> str:
    if not row.ok:
        return f"  {row.cell:<44} failed  {row.error}"
    main = ", ".join(row.main) or "none"
    fv = "n/a" if row.fv_heldout is None else f"{row.fv_heldout:.2f}"
    zs = "n/a" if row.zero_shot_heldout is None else f"{row.zero_shot_heldout:.2f}"
    clean = "n/a" if row.clean_accuracy is None else f"{row.clean_accuracy:.2f}"
    wall = "" if row.wall_s is None else f", {row.wall_s:.0f} s"
    return (
        f"  {row.cell:<44} ok      clean {clean}  FV {fv} vs zero-shot {zs}  main {main}  "
        f"{row.verdict}  ({row.cached_stages}/{row.n_stages} stages cached{wall})"
    )


def _sweep_cmd(args) -> int:
    from addk_interp.pipeline.sweep import SweepSpec, run_sweep

    spec = SweepSpec(
        models=tuple(args.model or ()),
        families=tuple(args.family or ("add",)),
        seeds=tuple(args.seed if args.seed is not None else (42,)),
        preset=args.preset,
        quick=args.quick,
        k=args.k,
        n_eval=args.n_eval,
        n_capture=args.n_capture,
        shots=args.shots,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        executor=args.executor,
        slurm_partition=args.slurm_partition,
        slurm_gpus_per_node=args.slurm_gpus_per_node,
        timeout_min=args.timeout_min,
        threads=args.threads,
    )

    def submitted(cells):
        print(f"submitted {len(cells)} cells via submitit ({spec.executor}); waiting", flush=True)

    result = run_sweep(
        spec,
        Path(args.out),
        on_submit=submitted,
        on_cell=lambda r: print(_status_line(r), flush=True),
    )
    d = Path(result.out)
    print(f"wrote {d / 'sweep.md'} (and sweep.csv, sweep.json, sweep.html)")
    if result.failed:
        print(f"{len(result.failed)} of {len(result.rows)} cells failed (traces in {d / 'errors'})")
        return 1
    return 0
