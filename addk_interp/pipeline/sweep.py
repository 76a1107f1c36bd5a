"""Sweeps: one cached ``Run`` per (model, family, seed) cell, submitted through ``submitit``,
gathered into one comparison table (``sweep.md`` / ``sweep.csv`` / ``sweep.json`` / ``sweep.html``).

Not a step of the method: it schedules the pipeline. Every cell is an ordinary run directory
``OUT/cells/<model>__<family>__seed<seed>/`` (its stages cached there, so re-submitting the same
sweep reuses every finished stage and recomputes only what is missing or stale); the table is
read back from those directories' files (``clean_eval/accuracy.csv``, ``fv_eval/fv_summary.csv``,
``localize/selected.json``, ``scan/headsets.json``, ``subspaces/subspaces.json``,
``manifest.json``), so every number in it has a file it comes from.

Executors (``submitit.AutoExecutor(folder=OUT/submitit, cluster=...)``):

- ``local``: one subprocess per cell on this machine, all started at once (each with
  ``threads`` torch threads, default 1, so N cells use about N cores);
- ``slurm``: one Slurm job per cell (a job array), submitted from a login node with ``sbatch``;
- ``debug``: every cell in this process, one after the other (for debugging).

submitit transports the cell function and its arguments as pickles under ``OUT/submitit`` (its
internal job mechanism, with the job logs); the results of a sweep are the cells' safetensors /
JSON / CSV files and the tables here.

On a Slurm cluster (the README's invocation)::

    addk-interp sweep --model default --model smollm2-135m --family add --family sub \\
        --seed 42 --seed 43 --executor slurm --slurm-partition gpu --slurm-gpus-per-node 1 \\
        --timeout-min 120 --device cuda --dtype bfloat16 --out sweeps/gemma_smollm

and on this machine::

    addk-interp sweep --model organism-fv --model organism --family add --family sub \\
        --seed 42 --quick --out /tmp/sweep

Refused before anything is submitted or written (one-line ``AddkError``): no model / family /
seed, an unknown model spec or family, k outside the family, duplicate cells, negative seeds,
an ``OUT`` that cannot be written or holds something other than a sweep, Slurm options without
``--executor slurm``, ``--executor slurm`` without ``sbatch`` / ``srun`` or, with
``--device cuda``, without ``--slurm-gpus-per-node``, a device this machine lacks
(local / debug). A cell that fails (a model that cannot be loaded, a stage error, a job
killed) is a ``failed`` row carrying its error line; its full trace is in
``OUT/errors/<cell>.txt``. Cost: the cells' runs; the bookkeeping is negligible.
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import re
import shutil
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace

from addk_interp.core.errors import AddkError
from addk_interp.core.heads import head_str
from addk_interp.core.store import atomic_write_text, read_json, write_json
from addk_interp.core.validate import FLOAT_DTYPES, check_count, check_seed, check_writable_dir

EXECUTORS = ("local", "slurm", "debug")
REQUEST = "sweep_request.json"  # written at submission: marks OUT as a sweep directory
# what a sweep directory may hold (a re-submission into it is allowed)
SWEEP_ENTRIES = frozenset(
    {"cells", "submitit", "errors", REQUEST, "sweep.json", "sweep.csv", "sweep.md", "sweep.html"}
)


@dataclass(frozen=True)
class SweepSpec:
    """What to sweep and how to run it (the ``addk-interp sweep`` flags)."""

    models: tuple[str, ...]
    families: tuple[str, ...] = ("add",)
    seeds: tuple[int, ...] = (42,)
    preset: str = "default"
    quick: bool = False
    k: str | None = None
    n_eval: int | None = None
    n_capture: int | None = None
    shots: int = 5
    batch_size: int = 32
    device: str = "cpu"
    dtype: str = "float32"
    executor: str = "local"
    slurm_partition: str | None = None
    slurm_gpus_per_node: int | None = None
    timeout_min: int = 240
    threads: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SweepCell:
    """One (model, family, seed) run: its config and its run directory."""

    model: str
    family: str
    seed: int
    name: str  # <model>__<family>__seed<seed>, the directory under OUT/cells
    config: object  # pipeline.run.RunConfig
    out: str  # absolute run directory


@dataclass(frozen=True)
class CellOutcome:
    """What a cell job returns: ``ok``, or ``failed`` with its error line and trace."""

    name: str
    status: str
    error: str | None = None
    trace: str | None = None
    wall_s: float = 0.0


@dataclass(frozen=True)
class SweepRow:
    """One cell of the comparison table (None / empty where the cell failed).

    ``clean_accuracy``: the run's n-shot accuracy (n = ``--shots``), mean over every task of the
    family (``clean_eval/accuracy.csv``). ``fv_heldout`` / ``zero_shot_heldout``: held-out
    tasks, the task's FV of all heads at unit coefficient / no FV, zero-shot prompts
    (``fv_eval/fv_summary.csv``); ``fv_recovery`` = (FV − zero-shot) / (clean − zero-shot) on
    the held-out tasks, None when the clean accuracy does not exceed zero-shot. ``selected`` /
    ``significant`` / ``main``: heads as ``L{l}H{h}`` (``localize/selected.json``,
    ``scan/headsets.json``). ``analysis_head``, ``pcs_95``, ``peak_periods``: the first head
    of ``subspaces/subspaces.json``. ``cached_stages`` of ``n_stages``: stages this submission
    reused (``manifest.json``)."""

    model: str
    family: str
    seed: int
    cell: str
    status: str
    error: str | None = None
    clean_accuracy: float | None = None
    fv_heldout: float | None = None
    zero_shot_heldout: float | None = None
    fv_recovery: float | None = None
    selected: tuple[str, ...] = ()
    significant: tuple[str, ...] = ()
    main: tuple[str, ...] = ()
    verdict: str | None = None
    analysis_head: str | None = None
    pcs_95: int | None = None
    peak_periods: tuple[float, ...] = ()
    cached_stages: int = 0
    n_stages: int = 0
    wall_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


_LISTS = ("selected", "significant", "main", "peak_periods")
_FLOATS = ("clean_accuracy", "fv_heldout", "zero_shot_heldout", "fv_recovery", "wall_s")
_INTS = ("seed", "pcs_95", "cached_stages", "n_stages")


def _row_from_dict(d: dict) -> SweepRow:
    names = {f.name for f in fields(SweepRow)}
    unknown = set(d) - names
    if unknown:
        raise AddkError(f"sweep table has unknown columns {sorted(unknown)}")
    d = dict(d)
    for k in _LISTS:
        if k in d:
            v = d[k]
            items = v.split() if isinstance(v, str) else list(v or [])
            d[k] = tuple(float(x) for x in items) if k == "peak_periods" else tuple(items)
    for k in _FLOATS:
        if k in d:
            d[k] = None if d[k] in (None, "") else float(d[k])
    for k in _INTS:
        if k in d:
            d[k] = None if d[k] in (None, "") else int(d[k])
    for k in ("error", "verdict", "analysis_head"):
        if k in d and d[k] == "":
            d[k] = None
    return SweepRow(**d)


@dataclass
class SweepResult:
    """The rows of a sweep (one per cell, in submission order) and where it lives."""

    rows: list[SweepRow]
    out: str
    spec: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[SweepRow]:
        return [r for r in self.rows if not r.ok]

    # ------------------------------------------------------------------ tables
    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        names = [f.name for f in fields(SweepRow)]
        w.writerow(names)
        for r in self.rows:
            vals = []
            for n in names:
                v = getattr(r, n)
                if n in _LISTS:
                    v = " ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v)
                vals.append("" if v is None else v)
            w.writerow(vals)
        return buf.getvalue()

    def table(self) -> list[tuple[str, ...]]:
        """Header + one display row per cell (the markdown / HTML tables)."""
        head = (
            "cell",
            "status",
            "clean acc",
            "FV held-out / zero-shot (recovery)",
            "selected heads",
            "significant",
            "main",
            "verdict",
            "analysis head: PCs 95% / peak periods",
            "stages cached",
            "wall s",
            "error",
        )
        out = [head]
        for r in self.rows:
            fv = (
                f"{_fmt(r.fv_heldout)} / {_fmt(r.zero_shot_heldout)} ({_fmt(r.fv_recovery)})"
                if r.ok
                else ""
            )
            sub = (
                f"{r.analysis_head}: {r.pcs_95} / {', '.join(f'{p:g}' for p in r.peak_periods)}"
                if r.analysis_head
                else ("none" if r.ok else "")
            )
            out.append(
                (
                    f"{r.model} · {r.family} · seed {r.seed}",
                    r.status,
                    _fmt(r.clean_accuracy) if r.ok else "",
                    fv,
                    (f"{len(r.selected)}: " + ", ".join(r.selected)) if r.ok else "",
                    (", ".join(r.significant) or "none") if r.ok else "",
                    (", ".join(r.main) or "none") if r.ok else "",
                    r.verdict or "",
                    sub,
                    f"{r.cached_stages}/{r.n_stages}" if r.ok else "",
                    "" if r.wall_s is None else f"{r.wall_s:.1f}",
                    r.error or "",
                )
            )
        return out

    def to_markdown(self) -> str:
        t = self.table()
        lines = [
            f"# Sweep: {len(self.rows)} cells, {len(self.failed)} failed",
            "",
            "FV: held-out tasks, the task's all-heads FV at unit coefficient vs zero-shot; "
            "recovery = (FV − zero-shot) / (clean − zero-shot). Clean acc: n-shot, mean over "
            "every task. Files: each cell's run directory `cells/<cell>/`.",
            "",
            "| " + " | ".join(t[0]) + " |",
            "|" + "---|" * len(t[0]),
        ]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in t[1:]]
        return "\n".join(lines) + "\n"

    def to_html(self) -> str:
        t = self.table()
        esc = html.escape
        head = "".join(f"<th>{esc(c)}</th>" for c in t[0])
        body = "\n".join(
            f'<tr class="{esc(r.status)}">' + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>"
            for r, row in zip(self.rows, t[1:], strict=True)
        )
        return (
            '<!doctype html>\n<html><head><meta charset="utf-8"><title>addk-interp sweep'
            "</title>\n<style>body{font-family:sans-serif;margin:1.5em}"
            "table{border-collapse:collapse;font-size:13px}"
            "th,td{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top}"
            "th{background:#eee}tr.failed td{background:#fde8e8}</style></head><body>\n"
            f'<section id="sweep"><h2>Sweep: {len(self.rows)} cells, {len(self.failed)} '
            "failed</h2>\n<p>FV: held-out tasks, the task's all-heads FV at unit coefficient vs "
            "zero-shot; recovery = (FV − zero-shot) / (clean − zero-shot). Each cell's files: "
            "<code>cells/&lt;cell&gt;/</code>.</p>\n"
            f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"
            "</section>\n</body></html>\n"
        )

    # ------------------------------------------------------------------ persistence
    def save(self, out: str | Path | None = None) -> dict[str, Path]:
        """``sweep.json`` (typed rows), ``sweep.csv``, ``sweep.md``, ``sweep.html`` in ``out``
        (default: the sweep directory), written atomically."""
        d = Path(out or self.out)
        rows = [asdict(r) for r in self.rows]
        return {
            "json": write_json(
                d / "sweep.json", {"version": 1, "out": self.out, "spec": self.spec, "rows": rows}
            ),
            "csv": atomic_write_text(d / "sweep.csv", self.to_csv()),
            "md": atomic_write_text(d / "sweep.md", self.to_markdown()),
            "html": atomic_write_text(d / "sweep.html", self.to_html()),
        }

    @classmethod
    def load(cls, path: str | Path) -> SweepResult:
        """From a sweep directory (its ``sweep.json``), a ``sweep.json`` or a ``sweep.csv``."""
        p = Path(path)
        if p.is_dir():
            p = p / "sweep.json"
        if p.suffix == ".csv":
            try:
                text = p.read_text()
            except FileNotFoundError:
                raise AddkError(f"missing file {p}") from None
            rows = [_row_from_dict(r) for r in csv.DictReader(io.StringIO(text))]
            return cls(rows=rows, out=str(p.parent))
        d = read_json(p)
        if not isinstance(d, dict) or not isinstance(d.get("rows"), list):
            raise AddkError(f"{p}: not a sweep table (no rows)")
        return cls(
            rows=[_row_from_dict(r) for r in d["rows"]],
            out=str(d.get("out", p.parent)),
            spec=d.get("spec") or {},
        )


def _fmt(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f}"


# ====================================================================== validation


def cell_name(model: str, family: str, seed: int) -> str:
    """``<model>__<family>__seed<seed>`` with the model spec made a safe directory name."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.") or "model"
    return f"{safe}__{family}__seed{seed}"


def check_model_spec(spec: str) -> None:
    """A spec ``load_model`` knows, without loading it: a built-in name, an existing ``.gguf``
    file, a local HF directory (with config.json) or a hub name ``org/name``."""
    from addk_interp.models.loading import BUILTIN_SPECS

    if not isinstance(spec, str) or not spec.strip():
        raise AddkError(f"empty model spec {spec!r}")
    if spec in BUILTIN_SPECS:
        return
    p = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not p.is_file():
            raise AddkError(f"GGUF file not found: {p}")
        return
    if p.is_dir():
        if not (p / "config.json").exists():
            raise AddkError(f"{p} is not a Hugging Face model directory (no config.json)")
        return
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec):
        return  # a hub name: whether it loads is known only when a cell loads it
    raise AddkError(
        f"unknown model spec {spec!r}. Valid: {', '.join(BUILTIN_SPECS)}, a hub name like "
        "'org/name', a local HF directory or a .gguf file"
    )


def _check_device(device: str, executor: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise AddkError(f"unknown device {device!r} (e.g. cpu, cuda, cuda:1)") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise AddkError(f"device {device!r} is not supported (cpu, cuda, mps)")
    if executor == "slurm":
        return  # the cells run on the cluster's nodes, not here
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AddkError(
            f"device {device!r}: CUDA is not available on this machine (executor {executor})"
        )
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise AddkError(f"device {device!r}: MPS is not available on this machine")


def _check_out(out: Path) -> None:
    check_writable_dir(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise AddkError(f"--out {out} exists and is not a directory")
    entries = {p.name for p in out.iterdir()}
    if entries and REQUEST not in entries:
        raise AddkError(
            f"--out {out} is not empty and holds no addk-interp sweep (no {REQUEST}); "
            "choose another --out, nothing was written"
        )
    if entries - SWEEP_ENTRIES:
        raise AddkError(
            f"--out {out} holds files that are not a sweep's: {sorted(entries - SWEEP_ENTRIES)}"
        )
    if not os.access(out, os.W_OK | os.X_OK):
        raise AddkError(f"--out {out} is not writable; nothing was written")


def plan_sweep(spec: SweepSpec, out: str | Path) -> list[SweepCell]:
    """Validate ``spec`` and ``out`` and return the cells, in (model, family, seed) order.
    Nothing is written; every refusal is a one-line ``AddkError``."""
    from addk_interp.core.tasks import arithmetic_family, parse_k_range
    from addk_interp.pipeline.run import config_from_args

    out = Path(out).expanduser()
    for what, vals in (
        ("--model", spec.models),
        ("--family", spec.families),
        ("--seed", spec.seeds),
    ):
        if not vals:
            raise AddkError(f"a sweep needs at least one {what}")
    from addk_interp.pipeline.presets import PRESETS

    if spec.preset not in PRESETS:
        raise AddkError(f"unknown preset {spec.preset!r}: use {', '.join(sorted(PRESETS))}")
    if spec.executor not in EXECUTORS:
        raise AddkError(f"unknown executor {spec.executor!r}: use {', '.join(EXECUTORS)}")
    if spec.executor != "slurm":
        given = [
            n
            for n, v in (
                ("--slurm-partition", spec.slurm_partition),
                ("--slurm-gpus-per-node", spec.slurm_gpus_per_node),
            )
            if v is not None
        ]
        if given:
            raise AddkError(f"{', '.join(given)} needs --executor slurm")
    else:
        missing = [t for t in ("sbatch", "srun") if shutil.which(t) is None]
        if missing:
            raise AddkError(
                f"--executor slurm needs Slurm's {' and '.join(missing)} on PATH "
                "(run it on a login node)"
            )
    if spec.slurm_gpus_per_node is not None:
        check_count(spec.slurm_gpus_per_node, "--slurm-gpus-per-node", lo=0, hi=64)
    if (
        spec.executor == "slurm"
        and str(spec.device).startswith("cuda")
        and not spec.slurm_gpus_per_node
    ):
        raise AddkError("--device cuda with --executor slurm needs --slurm-gpus-per-node ≥ 1")
    check_count(spec.timeout_min, "--timeout-min", hi=100_000)
    check_count(spec.threads, "--threads", hi=1024)
    if spec.dtype not in FLOAT_DTYPES:
        raise AddkError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {spec.dtype!r}")
    for s in spec.seeds:
        check_seed(s)
    for m in spec.models:
        check_model_spec(m)
    _check_device(spec.device, spec.executor)
    _check_out(out)

    cells: list[SweepCell] = []
    seen: dict[str, tuple] = {}
    root = out.absolute() / "cells"
    for m in spec.models:
        for f in spec.families:
            for s in spec.seeds:
                name = cell_name(m, f, s)
                if name in seen:
                    raise AddkError(
                        f"duplicate cell {name} ({m!r}, {f!r}, seed {s} repeats {seen[name]})"
                    )
                seen[name] = (m, f, s)
                args = SimpleNamespace(
                    model=m,
                    family=f,
                    k=spec.k,
                    task_file=None,
                    heldout=None,
                    format="arrow",
                    shots=spec.shots,
                    n_eval=spec.n_eval,
                    n_capture=spec.n_capture,
                    seed=s,
                    layer=None,
                    batch_size=spec.batch_size,
                    quick=spec.quick,
                    preset=spec.preset,
                    device=spec.device,
                    dtype=spec.dtype,
                )
                cfg = config_from_args(args)
                arithmetic_family(f, ks=parse_k_range(cfg.k) if cfg.k else None)  # family, k
                cells.append(SweepCell(m, f, s, name, cfg, str(root / name)))
    return cells


# ====================================================================== the cell job


def run_cell(cell: SweepCell, threads: int = 1) -> CellOutcome:
    """The job each executor runs: ``Run(cell.config, cell.out).execute()`` with ``threads``
    torch threads. Never raises: a failure is returned with its error line and trace (so the
    debug executor does not stop in a debugger and a Slurm array keeps going)."""
    t0 = time.time()
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        from addk_interp.pipeline.run import Run

        Run(cell.config, Path(cell.out), verbose=False).execute()
        return CellOutcome(cell.name, "ok", wall_s=round(time.time() - t0, 2))
    except Exception as e:
        return CellOutcome(
            cell.name,
            "failed",
            error=_one_line(f"{type(e).__name__}: {e}" if not isinstance(e, AddkError) else str(e)),
            trace=traceback.format_exc(),
            wall_s=round(time.time() - t0, 2),
        )
    finally:
        torch.set_num_threads(prev)


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[0] if lines else "unknown error"
    return line if len(line) <= 300 else line[:297] + "..."


def _job_error_line(text: str) -> str:
    """The exception line of a submitit job failure (its message ends with log paths)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    exc = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b", ln)]
    return _one_line(exc[-1] if exc else (lines[0] if lines else "job failed"))


# ====================================================================== gathering


def _heads(items) -> tuple[str, ...]:
    return tuple(head_str(h) for h in items)


def read_cell_row(cell: SweepCell) -> SweepRow:
    """A finished cell's row, read from its run directory's files."""
    from addk_interp.report.results import RunResults

    d = Path(cell.out)
    st = d / "stages"
    man = read_json(d / "manifest.json")
    shots = int(man["config"]["shots"])
    res = RunResults(d)

    def table(frame, p):
        if frame is None:
            raise AddkError(f"missing file {p}")
        return frame

    acc = table(res.clean, st / "clean_eval" / "accuracy.csv")
    acc = acc[acc["shots"] == shots]
    clean = float(acc["accuracy"].mean()) if len(acc) else None
    fv = table(res.fv, st / "fv_eval" / "fv_summary.csv")
    held = fv[fv["split"] == "heldout"]

    def cond(name):
        r = held[held["condition"] == name]
        return float(r["fv_accuracy"].iloc[0]) if len(r) else None

    fv_acc, zs = cond("all_heads_unit"), cond("zero_shot_no_fv")
    clean_held = float(held["clean_accuracy"].iloc[0]) if len(held) else None
    recovery = None
    if None not in (fv_acc, zs, clean_held) and clean_held > zs:
        recovery = (fv_acc - zs) / (clean_held - zs)
    sel, scan, sub = res.selection, res.scan, res.subspaces
    if sel is None or scan is None:
        raise AddkError(f"{d}: the localize / scan stages left no results")
    first = sub.per_head[0] if sub and sub.per_head else None
    stages = [s for s in man.get("stages", []) if s.get("name") != "report"]
    return SweepRow(
        model=cell.model,
        family=cell.family,
        seed=cell.seed,
        cell=cell.name,
        status="ok",
        clean_accuracy=clean,
        fv_heldout=fv_acc,
        zero_shot_heldout=zs,
        fv_recovery=recovery,
        selected=_heads(sel.heads),
        significant=_heads(scan.significant),
        main=_heads(scan.main),
        verdict=str(scan.verdict),
        analysis_head=head_str(first.head) if first else None,
        pcs_95=None if first is None or first.pcs_to_95 is None else int(first.pcs_to_95),
        peak_periods=tuple(float(p) for p in first.peak_periods) if first else (),
        cached_stages=sum(1 for s in stages if s.get("status") == "cached"),
        n_stages=len(stages),
        wall_s=float(man["wall_s"]) if man.get("wall_s") is not None else None,
    )


def _failed_row(cell: SweepCell, error: str, wall_s: float | None = None) -> SweepRow:
    return SweepRow(
        model=cell.model,
        family=cell.family,
        seed=cell.seed,
        cell=cell.name,
        status="failed",
        error=error,
        wall_s=wall_s,
    )


def make_executor(spec: SweepSpec, folder: Path):
    """The ``submitit.AutoExecutor`` for ``spec.executor`` with the sweep's parameters."""
    import submitit

    ex = submitit.AutoExecutor(folder=folder, cluster=spec.executor)
    setup = [f"export OMP_NUM_THREADS={spec.threads}", f"export MKL_NUM_THREADS={spec.threads}"]
    params = dict(
        name="addk-sweep",
        timeout_min=spec.timeout_min,
        cpus_per_task=spec.threads,
        local_setup=setup,
        slurm_setup=setup,
    )
    if spec.slurm_gpus_per_node is not None:
        params["gpus_per_node"] = spec.slurm_gpus_per_node
    elif spec.executor == "local" and str(spec.device).startswith("cuda"):
        import torch

        # submitit's local jobs get CUDA_VISIBLE_DEVICES from gpus_per_node ("" for 0, which
        # would hide every GPU): every local cell sees all of this machine's GPUs
        params["gpus_per_node"] = torch.cuda.device_count()
    if spec.slurm_partition is not None:
        params["slurm_partition"] = spec.slurm_partition
    ex.update_parameters(**params)
    return ex


def run_sweep(spec: SweepSpec, out: str | Path, *, on_submit=None, on_cell=None) -> SweepResult:
    """Validate, submit one job per cell, wait, gather the table and save it in ``out``.

    ``on_submit(cells)`` is called once every job is submitted, ``on_cell(row)`` as each
    cell's row is gathered (the CLI prints both). Cells that
    fail are rows with ``status="failed"``; this function raises only ``AddkError`` for bad
    input, before anything is written or submitted."""
    cells = plan_sweep(spec, out)
    out = Path(out).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / REQUEST,
        {"spec": spec.to_dict(), "cells": [c.name for c in cells]},
    )
    ex = make_executor(spec, out / "submitit")
    with ex.batch():
        jobs = [ex.submit(run_cell, c, spec.threads) for c in cells]
    if on_submit is not None:
        on_submit(cells)
    rows = []
    for cell, job in zip(cells, jobs, strict=True):
        err_file = out / "errors" / f"{cell.name}.txt"
        try:
            outcome = job.result()
        except Exception as e:  # the job itself died: timeout, killed, unpicklable result
            outcome = CellOutcome(cell.name, "failed", _job_error_line(str(e)), str(e))
        if outcome.status == "ok":
            try:
                row = read_cell_row(cell)
            except (AddkError, KeyError, ValueError) as e:
                row = _failed_row(cell, _one_line(f"reading the run's files: {e}"))
        else:
            atomic_write_text(err_file, outcome.trace or outcome.error or "")
            row = _failed_row(cell, outcome.error or "failed", outcome.wall_s)
        if row.ok and err_file.exists():
            err_file.unlink()  # a previous submission's failure, now fixed
        rows.append(row)
        if on_cell is not None:
            on_cell(row)
    result = SweepResult(rows=rows, out=str(out), spec=spec.to_dict())
    result.save()
    return result
