"""This machine's fp32 matmul peak (GFLOP/s) with torch: square matmuls, best of several.

    python benchmarks/bench_peak.py [--threads 1] [--sizes 1024,1536,2048] [--repeat 5]

``matmul_peak_gflops()`` is imported by ``bench_stages.py`` so that achieved FLOP/s of the hot
loops can be reported as a fraction of a peak measured in the same run (same load, same number
of torch threads). An n×n @ n×n matmul counts 2n³ FLOPs.
"""

from __future__ import annotations

import argparse
import time

import torch


def matmul_peak_gflops(
    sizes=(1024, 1536, 2048), repeat: int = 5, threads: int | None = None, clock: str = "wall"
) -> dict:
    """Best achieved fp32 GFLOP/s over square matmuls of ``sizes`` (``repeat`` timed calls
    each, after one warm-up); ``threads`` sets ``torch.set_num_threads`` for the measurement
    and restores it afterwards. ``clock``: ``wall`` (``perf_counter``) or ``cpu`` (this
    process's CPU time: with one thread, the rate while actually running, insensitive to
    other processes taking the core). Returns ``{"peak_gflops", "per_size", "threads",
    "clock"}``."""
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    tick = time.perf_counter if clock == "wall" else time.process_time
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        per_size = {}
        with torch.no_grad():
            for n in sizes:
                g = torch.Generator().manual_seed(n)
                a = torch.randn(n, n, generator=g)
                b = torch.randn(n, n, generator=g)
                out = torch.empty(n, n)
                torch.mm(a, b, out=out)  # warm-up
                best = float("inf")
                for _ in range(repeat):
                    t = tick()
                    torch.mm(a, b, out=out)
                    best = min(best, tick() - t)
                per_size[int(n)] = 2.0 * n**3 / best / 1e9
        return {
            "peak_gflops": max(per_size.values()),
            "per_size": per_size,
            "threads": torch.get_num_threads(),
            "clock": clock,
        }
    finally:
        torch.set_num_threads(old)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="default: torch's default")
    ap.add_argument("--sizes", default="1024,1536,2048")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    r = matmul_peak_gflops(sizes, args.repeat, args.threads, args.clock)
    print(
        f"fp32 matmul peak, {r['threads']} torch thread(s), {r['clock']} clock: "
        f"{r['peak_gflops']:.1f} GFLOP/s"
    )
    for n, v in r["per_size"].items():
        print(f"  {n}x{n}: {v:.1f} GFLOP/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
