"""Time to validate 1,000,000 leads and 10,000,000 activities through the GX gate.

Each dataset runs in its own child process (so peak RSS is per dataset): build a synthetic
contract-shaped table with ~1% planted dirt (NumPy/Arrow), run a reference (the same row
checks written as plain ``pyarrow.compute`` expressions: what a hand-rolled validator would
cost) and then the full runner (``expectations.runner.validate``: Arrow -> pandas, every GX
expectation with row indices, quarantine table, scrubbed evidence and Data Docs; no lake
writes). Prints the figures, the GX/reference ratio, and ends with one JSON line.

    flock /tmp/prox-heavy.lock .venv/bin/python benchmarks/bench_validation.py [--leads N] [--activities N]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the child imports tests.fixtures

REF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(dataset: str, rows: int):
    """A clean synthetic table with about 1% planted dirt, vectorised."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from tests.fixtures import synthetic_validation as syn

    rng = np.random.default_rng(1)
    if dataset == "raw_leads_salesforce":
        table = syn.clean_raw_leads(rows, "salesforce")
        bad_email = pa.array(rng.random(rows) < 0.005)
        bad_rev = pa.array(rng.random(rows) < 0.005)
        email = pc.if_else(bad_email, pc.replace_substring(table["email"], "@", " at "), table["email"])
        revenue = pc.if_else(bad_rev, pc.negate(table["annual_revenue"]), table["annual_revenue"])
        table = table.set_column(table.schema.get_field_index("email"), "email", email)
        return table.set_column(table.schema.get_field_index("annual_revenue"), "annual_revenue", revenue)
    table = syn.clean_activities(rows, n_leads=max(rows // 10, 1), source="hubspot")
    bad_channel = pa.array(rng.random(rows) < 0.005)
    channel = pc.if_else(bad_channel, pa.scalar("fax"), table["channel"])
    dup = rng.random(rows) < 0.005
    event_id = pc.if_else(
        pa.array(dup), table["event_id"].take(pa.array(np.maximum(np.arange(rows) - 1, 0))), table["event_id"]
    )
    table = table.set_column(table.schema.get_field_index("channel"), "channel", channel)
    return table.set_column(table.schema.get_field_index("event_id"), "event_id", event_id)


def reference_checks(dataset: str, table) -> int:
    """The suite's row checks as plain pyarrow.compute; returns the number of bad rows."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from features.contract import ACTIONS, CHANNELS, SOURCES, STATUSES

    latest = pa.scalar(REF + dt.timedelta(hours=1), pa.timestamp("us", tz="UTC"))
    masks = []

    def bad(expr) -> None:
        masks.append(pc.fill_null(expr, False).to_numpy(zero_copy_only=False))

    def not_unique(col) -> None:
        counts = pc.value_counts(col)
        dups = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
        bad(pc.is_in(col, value_set=dups))

    if dataset.startswith("raw_leads"):
        bad(pc.is_null(table["lead_id"]))
        not_unique(table["lead_id"])
        bad(pc.invert(pc.match_substring_regex(table["lead_id"], r"^salesforce:00Q[A-Za-z0-9]{15}$")))
        bad(pc.invert(pc.match_substring_regex(table["crm_id"], r"^00Q[A-Za-z0-9]{15}$")))
        bad(pc.invert(pc.is_in(table["source"], value_set=pa.array(["salesforce"]))))
        bad(pc.greater(table["created_at"], latest))
        bad(pc.greater(table["updated_at"], latest))
        bad(pc.less(table["updated_at"], table["created_at"]))
        bad(pc.greater(table["converted_at"], latest))
        bad(pc.less(table["converted_at"], table["created_at"]))
        bad(pc.or_(pc.less(table["employees"], 0), pc.greater(table["employees"], 5_000_000)))
        bad(pc.or_(pc.less(table["annual_revenue"], 0), pc.greater(table["annual_revenue"], 1e13)))
        bad(pc.invert(pc.match_substring_regex(table["email"], r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")))
        bad(pc.invert(pc.is_in(table["status"], value_set=pa.array(STATUSES))))
        pc.mean(pc.cast(pc.match_substring_regex(table["country"], r"^[A-Z]{2}$"), pa.float64()))
        pc.max(table["updated_at"])
    else:
        bad(pc.is_null(table["event_id"]))
        not_unique(table["event_id"])
        bad(pc.is_null(table["lead_id"]))
        bad(pc.invert(pc.match_substring_regex(table["lead_id"], r"^(?:" + "|".join(SOURCES) + r"):\S+$")))
        bad(pc.invert(pc.is_in(table["source"], value_set=pa.array(SOURCES))))
        bad(pc.greater(table["occurred_at"], latest))
        bad(pc.invert(pc.is_in(table["channel"], value_set=pa.array(CHANNELS))))
        bad(pc.invert(pc.is_in(table["action"], value_set=pa.array(ACTIONS))))
        bad(pc.or_(pc.less(table["value"], 0), pc.greater(table["value"], 1e9)))
        pc.max(table["occurred_at"])
    return int(np.logical_or.reduce(masks).sum())


def child(dataset: str, rows: int) -> dict:
    """Build, run the reference, run the GX gate; one dataset, figures as a dict."""
    t0 = time.perf_counter()
    table = build(dataset, rows)
    build_s = time.perf_counter() - t0
    rss_data = _rss_mb()

    t0 = time.perf_counter()
    ref_bad = reference_checks(dataset, table)
    reference_s = time.perf_counter() - t0

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401  (import cost reported apart: paid once per worker)

    import_s = time.perf_counter() - t0
    from expectations.runner import validate
    from prox.settings import Settings

    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="bench-validation-")))
    t0 = time.perf_counter()
    outcome = validate(dataset, table, run_id="bench", settings=settings, reference_time=REF, write=False)
    gx_s = time.perf_counter() - t0
    return {
        "dataset": dataset,
        "rows": rows,
        "build_s": round(build_s, 2),
        "reference_pyarrow_s": round(reference_s, 2),
        "gx_validate_s": round(gx_s, 2),
        "gx_import_s": round(import_s, 2),
        "ratio_gx_vs_reference": round(gx_s / reference_s, 1),
        "gx_rows_per_s": round(rows / gx_s),
        "decision": outcome.decision,
        "quarantined_rows": outcome.quarantined_rows,
        "reference_bad_rows": ref_bad,
        "checks": len(outcome.checks),
        "rss_after_build_mb": round(rss_data),
        "peak_rss_mb": round(_peak_mb()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--activities", type=int, default=10_000_000)
    parser.add_argument("--child", nargs=2, metavar=("DATASET", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    results = {}
    for dataset, rows in (("raw_leads_salesforce", args.leads), ("raw_activities", args.activities)):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", dataset, str(rows)],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results[dataset] = r
        print(
            f"{dataset}: {rows:,} rows  GX gate {r['gx_validate_s']:.1f} s ({r['gx_rows_per_s']:,} rows/s)  "
            f"reference pyarrow {r['reference_pyarrow_s']:.2f} s  ratio {r['ratio_gx_vs_reference']}x  "
            f"(GX import {r['gx_import_s']:.1f} s once)  peak RSS {r['peak_rss_mb']:,} MB "
            f"(data alone {r['rss_after_build_mb']:,} MB)  decision {r['decision']}, "
            f"quarantined {r['quarantined_rows']:,} (reference finds {r['reference_bad_rows']:,}), {r['checks']} checks"
        )
    from benchmarks._measure import emit

    emit({f"{d}.{k}": v for d, r in results.items() for k, v in r.items() if k != "dataset"})


if __name__ == "__main__":
    main()
