"""This machine's fp32 matmul peak (GFLOP/s) with torch: square matmuls, best of several; its
streaming memory bandwidth; and the unembedding product's rate vs rows (its roofline).

    python benchmarks/bench_peak.py [--threads 1] [--sizes 1024,1536,2048] [--repeat 5]
        [--unembed 640x262144]

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


def memory_bandwidth_gbs(mib: int = 512, repeat: int = 5, threads: int | None = None) -> dict:
    """This machine's streaming memory bandwidth (GB/s, wall clock) with torch: the best of
    ``repeat`` full reads (``sum`` of a ``mib`` MiB fp32 tensor: bytes read / time) and copies
    (``copy_`` into a second tensor: bytes read + written / time). Far larger than any cache."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        n = mib * 2**20 // 4
        a = torch.randn(n, generator=torch.Generator().manual_seed(0))
        b = torch.empty_like(a)
        best_read = best_copy = float("inf")
        with torch.no_grad():
            a.sum()
            b.copy_(a)
            for _ in range(repeat):
                t = time.perf_counter()
                a.sum()
                best_read = min(best_read, time.perf_counter() - t)
                t = time.perf_counter()
                b.copy_(a)
                best_copy = min(best_copy, time.perf_counter() - t)
        nbytes = 4.0 * n
        return {
            "read_gbs": nbytes / best_read / 1e9,
            "copy_gbs": 2 * nbytes / best_copy / 1e9,
            "mib": mib,
            "threads": torch.get_num_threads(),
        }
    finally:
        torch.set_num_threads(old)


def unembed_roofline(
    d_model: int, d_vocab: int, rows=(1, 8, 32, 96, 256), repeat: int = 3, threads: int = 1
) -> list[dict]:
    """The unembedding product x[r, d_model] @ W[d_model, d_vocab] (fp32, as ``F.linear`` with
    a [vocab, d_model] weight) for ``r`` rows: CPU seconds, GFLOP/s, and the rate at which it
    streams W (W bytes / time, GB/s). With few rows each weight is used r times per read, so the
    product is bound by reading W (arithmetic intensity r/2 FLOP per byte)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        w = torch.randn(d_vocab, d_model, generator=g) * 0.02
        out = []
        with torch.no_grad():
            for r in rows:
                x = torch.randn(r, d_model, generator=g)
                torch.nn.functional.linear(x, w)
                best = float("inf")
                for _ in range(repeat):
                    t = time.process_time()
                    torch.nn.functional.linear(x, w)
                    best = min(best, time.process_time() - t)
                out.append(
                    {
                        "rows": int(r),
                        "seconds": best,
                        "gflops": 2.0 * r * d_model * d_vocab / best / 1e9,
                        "weight_gbs": 4.0 * d_model * d_vocab / best / 1e9,
                    }
                )
        return out
    finally:
        torch.set_num_threads(old)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="default: torch's default")
    ap.add_argument("--sizes", default="1024,1536,2048")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    ap.add_argument(
        "--unembed", default="", help="D_MODELxD_VOCAB: also time the unembedding vs rows"
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    r = matmul_peak_gflops(sizes, args.repeat, args.threads, args.clock)
    print(
        f"fp32 matmul peak, {r['threads']} torch thread(s), {r['clock']} clock: "
        f"{r['peak_gflops']:.1f} GFLOP/s"
    )
    for n, v in r["per_size"].items():
        print(f"  {n}x{n}: {v:.1f} GFLOP/s")
    bw = memory_bandwidth_gbs(threads=args.threads)
    print(
        f"memory bandwidth, {bw['threads']} thread(s): read {bw['read_gbs']:.1f} GB/s, "
        f"copy {bw['copy_gbs']:.1f} GB/s"
    )
    if args.unembed:
        d, v = (int(x) for x in args.unembed.split("x"))
        for row in unembed_roofline(d, v):
            print(
                f"  unembedding [{row['rows']}, {d}] @ [{d}, {v}]: {row['gflops']:.1f} GFLOP/s, "
                f"W streamed at {row['weight_gbs']:.1f} GB/s"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
