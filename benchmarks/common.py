"""Shared helpers for the benchmark scripts (timing, prompt batches)."""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def timed(fn, repeat: int = 3):
    """Best wall time of ``repeat`` calls (after one warm-up) and the last result."""
    out = fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def add_batches(model, n_per_task=8, shots=5, ks=(1, 2, 5, 10), batch_size=16, seed=0):
    from addk_interp.core.prompts import encode_examples, make_batches
    from addk_interp.core.tasks import arithmetic_family, sample_family

    fam = arithmetic_family("add", ks=list(ks))
    ex = sample_family(fam, fam.tasks, n_per_task, shots, seed=seed, kind="bench")
    return ex, make_batches(encode_examples(model, ex), batch_size)


def now():
    """(wall, this process's CPU time) in seconds, as a numpy pair; differences of two are
    durations on both clocks."""
    import numpy as np

    return np.array([time.perf_counter(), time.process_time()])


def machine_info() -> dict:
    """Cores, torch threads, load and versions, for benchmark records."""
    import platform

    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = None
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "torch_threads": torch.get_num_threads(),
        "loadavg": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
