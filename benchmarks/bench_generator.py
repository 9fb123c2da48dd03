"""Benchmark: simulate a world of 1,000,000 leads (about 50 million events) to Parquet.

Reference, measured in the same run: a bare vectorised generator of the same number of
events (lead index, timestamp, type code; no sessions, no strings), written to Parquet: the
floor for any generator. Targets (issue 2): at most 60 s and 8 GB peak RSS on 2 cores.

    python benchmarks/bench_generator.py [--leads N] [--days D]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._measure import emit, measure


def run_world(n_leads: int, days: int, out: str) -> int:
    from sandbox.world import WorldSpec, write_world

    return write_world(WorldSpec(n_leads=n_leads, days=days, seed=1), out)["events"]


def run_bare(n_leads: int, n_events: int, out: str) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    lead = np.sort(rng.integers(0, n_leads, n_events, dtype=np.int32))
    ts = rng.integers(0, 730 * 86_400_000_000, n_events, dtype=np.int64)
    kind = rng.integers(0, 16, n_events, dtype=np.int8)
    table = pa.table({"lead": lead, "occurred_us": ts, "kind": kind})
    pq.write_table(table, Path(out) / "bare.parquet", compression="zstd", row_group_size=1_000_000)
    return table.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=730)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prox-bench-world-") as out:
        world = measure(run_world, args.leads, args.days, out)
        n_events = world["result"]
        size_mb = sum(p.stat().st_size for p in Path(out).iterdir()) / 1e6
    with tempfile.TemporaryDirectory(prefix="prox-bench-bare-") as out:
        bare = measure(run_bare, args.leads, n_events, out)
    figures = {
        "leads": args.leads,
        "events": n_events,
        "world_seconds": round(world["seconds"], 2),
        "world_peak_rss_gb": round(world["peak_rss_gb"], 2),
        "world_parquet_mb": round(size_mb, 1),
        "events_per_second": round(n_events / world["seconds"]),
        "bare_events_seconds": round(bare["seconds"], 2),
        "bare_peak_rss_gb": round(bare["peak_rss_gb"], 2),
        "ratio_vs_bare": round(world["seconds"] / bare["seconds"], 2),
        "target_seconds": 60,
        "target_peak_rss_gb": 8,
    }
    print(
        f"world: {args.leads:,} leads, {n_events:,} events in {figures['world_seconds']} s "
        f"(peak RSS {figures['world_peak_rss_gb']} GB, {figures['world_parquet_mb']} MB of Parquet)"
    )
    print(
        f"bare events to Parquet, same count: {figures['bare_events_seconds']} s; ratio {figures['ratio_vs_bare']}x"
    )
    emit(figures)


if __name__ == "__main__":
    main()
