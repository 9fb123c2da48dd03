"""Benchmark: point-in-time features for 1,000,000 leads from ~50,000,000 events, against DuckDB.

The input is the simulated world (``sandbox.world.write_world``, 1,000,000 leads over 540
days, about 48 events a lead), generated once and cached under ``$PROX_BENCH_DIR``
(default ``/tmp/prox-bench``), with the leads pseudonymised as the pipeline does.

In the same run, each in its own process (so each peak RSS is its own):

* ``prox``: ``features.build.build_features`` at one as-of time, reading the Parquet files;
* ``duckdb``: a reference query over the same files computing the equivalent engagement,
  velocity, status and account aggregates (same windows, the same deduplication by
  event_id, the same join to the leads known at T), 2 threads;
* ``duckdb_plain36``: the orientation query of the issue (36 plain aggregates per lead over
  the events, no join to the leads, no deduplication), to relate the figures to it.

Prints each time, the ratio prox/duckdb and the peak RSS; the last line is one JSON object.
Run it alone on the machine: ``flock /tmp/prox-heavy.lock .venv/bin/python benchmarks/bench_features.py``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

AS_OF = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
BENCH_KEY = b"prox-benchmark-key-not-a-secret"


def bench_dir(n_leads: int) -> Path:
    root = Path(os.environ.get("PROX_BENCH_DIR", "/tmp/prox-bench"))
    return root / f"features-world-{n_leads}"


def prepare(n_leads: int) -> Path:
    """Generate (once) the world's Parquet files and the pseudonymised leads."""
    import pyarrow.parquet as pq

    from features.privacy import pseudonymise_leads
    from sandbox.world import WorldSpec, world_exists, write_world

    out = bench_dir(n_leads)
    if not world_exists(out):
        started = time.perf_counter()
        summary = write_world(WorldSpec(n_leads=n_leads, days=540, seed=11), out)
        print(
            f"generated world: {summary['leads']:,} leads, {summary['events']:,} events "
            f"in {time.perf_counter() - started:.1f} s -> {out}",
            flush=True,
        )
    leads_path = out / "leads.parquet"
    if not leads_path.exists():
        raw = pq.read_table(out / "raw_leads.parquet")
        tmp = out / ".leads.parquet.tmp"
        pq.write_table(pseudonymise_leads(raw, BENCH_KEY), tmp, compression="zstd")
        tmp.replace(leads_path)
    return out


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def run_prox(folder: Path) -> dict:
    import logging

    import pyarrow.parquet as pq

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    from features.build import build_features

    started = time.perf_counter()
    leads = pq.read_table(folder / "leads.parquet")
    history = pq.read_table(folder / "lead_status_history.parquet")
    table, report = build_features(leads, folder / "activities.parquet", history, AS_OF)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": table.num_rows,
        "columns": table.num_columns,
        "events_used": report.events_used,
        "events_read": report.events_read,
    }


def reference_sql(folder: Path, dedup: bool) -> str:
    """DuckDB SQL computing the engagement/velocity/status/account aggregates of the builder.

    Written the way an analyst tuning DuckDB would: events are first counted per (lead,
    channel, action, intent, window bucket) and per (lead, channel), then pivoted.
    """
    from features.contract import CHANNELS
    from features.spec import DECAY_HALF_LIFE_DAYS, EVENT_KINDS, HIGH_INTENT_KINDS, INTENT_DETAILS

    day = 86_400_000_000
    as_of = f"TIMESTAMPTZ '{AS_OF.isoformat()}'"
    upto = {7: 0, 28: 1, 30: 2, 90: 3}  # cumulative window -> last bucket
    counts: list[str] = []
    for w in (7, 30, 90):
        b = upto[w]
        counts.append(f"sum(n) FILTER (b <= {b}) AS n_events_{w}d")
        counts += [f"sum(n) FILTER (b <= {b} AND channel = '{c}') AS n_{c}_{w}d" for c in CHANNELS]
        counts += [
            f"sum(n) FILTER (b <= {b} AND channel = '{c}' AND action = '{a}') AS n_{c}_{a}_{w}d"
            for c, a, _ in EVENT_KINDS
        ]
    for i, (stem, *_rest) in enumerate(INTENT_DETAILS):
        counts += [f"sum(n) FILTER (b <= {upto[w]} AND intent = {i}) AS n_{stem}_{w}d" for w in (7, 30)]
    high_kinds = " OR ".join(f"(channel = '{c}' AND action = '{a}')" for c, a in HIGH_INTENT_KINDS)
    high_intents = ", ".join(str(i) for i, d in enumerate(INTENT_DETAILS) if d[4])
    counts += [
        f"sum(n) FILTER (b <= {upto[w]} AND (intent IN ({high_intents}) OR {high_kinds})) AS n_high_intent_{w}d"
        for w in (7, 30)
    ]
    counts.append(
        "coalesce(sum(n) FILTER (b <= 0), 0) - coalesce(sum(n) FILTER (b <= 1), 0) / 3.0 "
        "+ coalesce(sum(n) FILTER (b <= 0), 0) / 3.0 AS trend_7d_vs_prior_21d"
    )
    recency = [f"min(newest) FILTER (channel = '{c}') / 86400.0 AS days_since_last_{c}" for c in CHANNELS]
    recency += ["min(newest) / 86400.0 AS days_since_last_event", "max(oldest) AS oldest_s"]
    kind_w = " ".join(f"WHEN channel = '{c}' AND action = '{a}' THEN {wt}" for c, a, wt in EVENT_KINDS)
    intent_w = " ".join(f"WHEN intent = {i} THEN {d[3]}" for i, d in enumerate(INTENT_DETAILS))

    def subject(channel: str) -> str:
        return "page" if channel == "web" else "lower(trim(coalesce(detail, '')))"

    intent_case = " ".join(
        f"WHEN channel = '{ch}' AND ({' OR '.join(f'starts_with({subject(ch)}, {p!r})' for p in prefixes)}) THEN {i}"
        for i, (_, ch, prefixes, _, _) in enumerate(INTENT_DETAILS)
    )
    acts = f"read_parquet('{folder / 'activities.parquet'}')"
    events = (
        f"(SELECT * FROM {acts} WHERE occurred_at < {as_of} "
        f"QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY occurred_at) = 1)"
        if dedup
        else f"(SELECT * FROM {acts} WHERE occurred_at < {as_of})"
    )
    return f"""
    WITH known AS (
        SELECT lead_id, created_at,
               CASE WHEN lower(company_domain) IN ('gmail.com','yahoo.com','hotmail.com','outlook.com')
                    THEN NULL ELSE lower(company_domain) END AS domain,
               lower(trim(industry)) AS industry,
               CASE WHEN employees IS NULL OR employees <= 0 THEN 'unknown' WHEN employees < 11 THEN '1-10'
                    WHEN employees < 51 THEN '11-50' WHEN employees < 201 THEN '51-200'
                    WHEN employees < 1001 THEN '201-1000' WHEN employees < 5001 THEN '1001-5000'
                    ELSE '5000+' END AS size_band
        FROM read_parquet('{folder / "leads.parquet"}') WHERE created_at < {as_of}
    ),
    ev AS (
        SELECT e.lead_id, lower(trim(e.channel)) AS channel, lower(trim(e.action)) AS action, e.detail,
               CASE WHEN lower(trim(e.channel)) = 'web'
                    THEN regexp_replace(lower(trim(coalesce(e.detail, ''))), '^(https?://)?[^/]*', '') END AS page,
               epoch_us({as_of}) - epoch_us(e.occurred_at) AS age
        FROM {events} e SEMI JOIN known k ON e.lead_id = k.lead_id
    ),
    ev2 AS (SELECT lead_id, channel, action, age, CASE {intent_case} ELSE -1 END AS intent FROM ev),
    cnt AS (
        SELECT lead_id, channel, action, intent,
               CASE WHEN age < {7 * day} THEN 0 WHEN age < {28 * day} THEN 1 WHEN age < {30 * day} THEN 2
                    ELSE 3 END AS b,
               count(*) AS n
        FROM ev2 WHERE age < {90 * day} GROUP BY ALL
    ),
    counts AS (SELECT lead_id, {", ".join(counts)} FROM cnt GROUP BY lead_id),
    rec0 AS (SELECT lead_id, channel, min(age // 1000000) AS newest, max(age // 1000000) AS oldest
             FROM ev2 GROUP BY ALL),
    rec AS (SELECT lead_id, {", ".join(recency)} FROM rec0 GROUP BY lead_id),
    dec AS (
        SELECT lead_id, sum(round((CASE {kind_w} ELSE 0.5 END + CASE {intent_w} ELSE 0 END)
                   * pow(2, -((age // 60000000) / 1440.0) / {DECAY_HALF_LIFE_DAYS}) * 16777216)) AS decayed_q
        FROM ev2 WHERE age < {365 * day} GROUP BY lead_id
    ),
    days AS (
        SELECT lead_id, count(*) FILTER (d < 7) AS active_days_7d, count(*) FILTER (d < 30) AS active_days_30d,
               count(*) AS active_days_90d
        FROM (SELECT DISTINCT lead_id, age // {day} AS d FROM ev2 WHERE age < {90 * day}) GROUP BY lead_id
    ),
    status AS (
        SELECT lead_id, arg_max(status, changed_at) AS status, max(changed_at) AS since
        FROM read_parquet('{folder / "lead_status_history.parquet"}') WHERE changed_at < {as_of}
        GROUP BY lead_id
    ),
    per_lead AS (
        SELECT k.*, c.* EXCLUDE (lead_id), r.* EXCLUDE (lead_id), d.* EXCLUDE (lead_id), s.status, s.since,
               coalesce(c.n_events_30d, 0) AS e30, coalesce(c.n_high_intent_30d, 0) AS h30,
               coalesce(x.decayed_q, 0) AS dq
        FROM known k LEFT JOIN counts c USING (lead_id) LEFT JOIN rec r USING (lead_id)
             LEFT JOIN dec x USING (lead_id) LEFT JOIN days d USING (lead_id) LEFT JOIN status s USING (lead_id)
    ),
    acct AS (
        SELECT domain, count(*) AS n, count(*) FILTER (e30 > 0) AS engaged, sum(e30) AS e30,
               sum(h30) AS h30, sum(dq) AS dq
        FROM per_lead WHERE domain IS NOT NULL GROUP BY domain
    )
    SELECT p.* EXCLUDE (e30, h30, dq, status, trend_7d_vs_prior_21d),
           coalesce(p.status, 'open') AS status, coalesce(p.trend_7d_vs_prior_21d, 0) AS trend_7d_vs_prior_21d,
           p.dq / 16777216.0 AS engagement_decayed,
           (epoch_us({as_of}) - epoch_us(p.created_at)) / {day}.0 AS lead_age_days,
           (epoch_us({as_of}) - p.oldest_s * 1000000 - epoch_us(p.created_at)) / {day}.0 AS days_to_first_engagement,
           (epoch_us({as_of}) - epoch_us(coalesce(p.since, p.created_at))) / {day}.0 AS days_in_status,
           coalesce(c.n - 1, 0) AS account_other_leads,
           coalesce(c.engaged - (p.e30 > 0)::INT, 0) AS account_other_engaged_leads_30d,
           coalesce(c.e30 - p.e30, 0) AS account_other_events_30d,
           coalesce(c.h30 - p.h30, 0) AS account_other_high_intent_30d,
           coalesce(c.dq - p.dq, 0) / 16777216.0 AS account_other_engagement_decayed
    FROM per_lead p LEFT JOIN acct c USING (domain)
    """


def plain_sql(folder: Path) -> str:
    """The orientation query of the issue: 36 plain aggregates per lead, no join, no dedup."""
    from features.contract import CHANNELS

    day = 86_400_000_000
    as_of = f"TIMESTAMPTZ '{AS_OF.isoformat()}'"
    aggs = [f"count(*) FILTER (age < {w * day} AND channel = '{c}')" for c in CHANNELS for w in (7, 30, 90)]
    aggs += [f"min(age) FILTER (channel = '{c}')" for c in CHANNELS]
    aggs += [f"count(*) FILTER (age < {w * day})" for w in (7, 30, 90)] + ["max(age)"]
    return f"""
    SELECT lead_id, {", ".join(f"{a} AS a{i}" for i, a in enumerate(aggs))}
    FROM (SELECT lead_id, channel, epoch_us({as_of}) - epoch_us(occurred_at) AS age
          FROM read_parquet('{folder / "activities.parquet"}') WHERE occurred_at < {as_of})
    GROUP BY lead_id
    """


def run_duckdb(folder: Path, variant: str) -> dict:
    import duckdb

    con = duckdb.connect(config={"threads": 2})
    sql = plain_sql(folder) if variant == "plain36" else reference_sql(folder, dedup=True)
    started = time.perf_counter()
    table = con.sql(sql).to_arrow_table()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "rows": table.num_rows, "columns": table.num_columns}


def child(role: str, folder: Path) -> dict:
    """Run one side in a fresh process and return its figures (with its own peak RSS)."""
    proc = subprocess.run(
        [sys.executable, __file__, "--role", role, "--folder", str(folder)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    if proc.returncode != 0:
        raise SystemExit(f"{role} failed:\n{proc.stderr[-4000:]}")
    if proc.stderr.strip():
        print(f"[{role}] {proc.stderr.strip()[-600:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--role", choices=("prox", "duckdb", "duckdb_plain36"))
    parser.add_argument("--folder", type=Path)
    parser.add_argument("--prepare-only", action="store_true")
    args = parser.parse_args()
    if args.role:  # child process
        if args.role == "prox":
            result = run_prox(args.folder)
        else:
            result = run_duckdb(args.folder, "plain36" if args.role == "duckdb_plain36" else "equivalent")
        result["peak_rss_gb"] = round(peak_rss_gb(), 3)
        print(json.dumps(result))
        return
    folder = prepare(args.leads)
    if args.prepare_only:
        return
    load_before = os.getloadavg()[0]
    results = {role: child(role, folder) for role in ("prox", "duckdb", "duckdb_plain36")}
    load_after = os.getloadavg()[0]
    prox, ref, plain = results["prox"], results["duckdb"], results["duckdb_plain36"]
    print(
        f"input: {prox['rows']:,} leads known at {AS_OF.date()}, {prox['events_read']:,} events "
        f"({prox['events_used']:,} before T), {prox['columns']} feature-table columns"
    )
    print(f"prox build_features:      {prox['seconds']:7.2f} s  peak RSS {prox['peak_rss_gb']:.2f} GB")
    print(
        f"DuckDB equivalent query:  {ref['seconds']:7.2f} s  peak RSS {ref['peak_rss_gb']:.2f} GB  "
        f"({ref['columns']} columns)"
    )
    print(
        f"DuckDB 36 plain aggregates (no join, no dedup): {plain['seconds']:7.2f} s  "
        f"peak RSS {plain['peak_rss_gb']:.2f} GB"
    )
    ratio = prox["seconds"] / ref["seconds"]
    ratio_plain = prox["seconds"] / plain["seconds"]
    print(
        f"ratio prox/duckdb equivalent: {ratio:.2f} (aim <= 1.5); prox/duckdb 36 plain aggregates: {ratio_plain:.2f}"
    )
    print(
        json.dumps(
            {
                "benchmark": "features",
                "leads": prox["rows"],
                "events": prox["events_read"],
                "prox_seconds": round(prox["seconds"], 2),
                "prox_peak_rss_gb": prox["peak_rss_gb"],
                "duckdb_seconds": round(ref["seconds"], 2),
                "duckdb_peak_rss_gb": ref["peak_rss_gb"],
                "duckdb_plain36_seconds": round(plain["seconds"], 2),
                "duckdb_plain36_peak_rss_gb": plain["peak_rss_gb"],
                "load_avg_before": round(load_before, 2),
                "load_avg_after": round(load_after, 2),
                "ratio": round(ratio, 3),
                "ratio_vs_plain36": round(ratio_plain, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
