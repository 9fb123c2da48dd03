"""CRM connector benchmark: extract and push throughput against the sandbox, and API calls.

Starts the CRM sandbox on free ports in a temporary directory, loads a simulated world with
``--leads`` leads split evenly between Salesforce and HubSpot (100,000 each by default), then:

* extracts every lead (and the little engagement) from both CRMs with the connectors, and
  HubSpot's again as a first load through the CRM exports API (the default for first loads),
* pushes one score per lead to each CRM (Bulk API 2.0 on Salesforce, batches of 100 on
  HubSpot) and, as the small-set path, 2,000 Salesforce scores through sObject Collections,

and prints records/s and API calls per 100,000 pushed records next to the minimum the batch
limits allow. The reference measured in the same run is a bare HTTP read of the same HubSpot
pages with ``requests`` (no client library, no mapping, no lake): the connector's extraction
rate is quoted as a ratio of it. The last line is one JSON object with every figure.

    flock /tmp/prox-heavy.lock .venv/bin/python benchmarks/bench_crm.py [--leads 200000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.contract import SCORES, conform
from features.lake import Lake

SF_COLLECTION, HS_BATCH, SF_BULK_JOB_CALLS = 200, 100, 6  # create, upload, close, poll, ok, failed


def make_scores(lead_ids: list[str], seed: int) -> pa.Table:
    rng = random.Random(seed)
    at = dt.datetime(2026, 11, 2, 3, tzinfo=dt.UTC)
    rows = []
    for lid in lead_ids:
        p = rng.random()
        s = min(99, max(1, round(p * 100)))
        rows.append(
            {
                "lead_id": lid,
                "scored_at": at,
                "model_name": "prox-lead-scoring",
                "model_version": "1",
                "probability": p,
                "score": s,
                "tier": "A" if s >= 75 else "B" if s >= 50 else "C" if s >= 25 else "D",
                "reasons_positive": ["Visited the pricing page twice this week", "Director-level title"],
                "reasons_negative": ["No email opened in 30 days"],
                "run_id": "bench",
            }
        )
    return conform(pa.Table.from_pylist(rows, schema=SCORES), SCORES)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=200_000, help="leads in the world (half per CRM)")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()

    import psutil
    import requests

    from plugins.crm.credentials import hubspot_from_env, salesforce_from_env
    from plugins.crm.hubspot import HubSpotConnector
    from plugins.crm.retry import RetryPolicy
    from plugins.crm.salesforce import SalesforceConnector
    from plugins.crm.state import ConnectorState
    from sandbox import server
    from sandbox.world import WorldSpec, simulate_world

    figures: dict[str, float | int | str] = {}
    with tempfile.TemporaryDirectory(prefix="prox-bench-crm-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        world = simulate_world(WorldSpec(n_leads=args.leads, days=365, seed=args.seed, events_per_lead=0.2))
        server.load_tables(root / "sandbox", world.raw_leads, world.activities)
        figures["load_seconds"] = round(time.perf_counter() - t0, 1)
        info = server.start(
            root / "sandbox", faults={"hubspot_rate_limit": None, "salesforce_daily_limit": 10**7}
        )
        try:
            env = info.connection_env()
            state = ConnectorState.for_data_dir(root / "data")
            policy = RetryPolicy(base_delay=0.05, seed=1)
            sf = SalesforceConnector(
                salesforce_from_env(env),
                state,
                policy=policy,
                bulk_poll_seconds=0.05,
                bulk_batch_size=100_000,
                bulk_query_page=50_000,
                commit_rows=50_000,
            )
            hs = HubSpotConnector(
                hubspot_from_env(env), state, policy=policy, commit_rows=50_000, use_exports=False
            )
            lake = Lake(root / "data" / "lake")
            run = dt.date(2026, 11, 2)
            n_sf = pc.sum(pc.equal(world.raw_leads["source"], "salesforce")).as_py()
            n_hs = world.raw_leads.num_rows - n_sf

            # ---- reference: bare HTTP reads of HubSpot contact pages ----------------------------
            session = requests.Session()
            session.trust_env = False
            session.verify = str(info.cert)
            headers = {"Authorization": f"Bearer {env['PROX_HUBSPOT_ACCESS_TOKEN']}"}
            from plugins.crm.fields import HS_CONTACT_PROPERTIES

            t0 = time.perf_counter()
            after, read = None, 0
            while read < min(20_000, n_hs):
                params = {
                    "limit": 100,
                    "properties": ",".join(HS_CONTACT_PROPERTIES),
                    **({"after": after} if after else {}),
                }
                page = session.get(
                    f"{info.hubspot_url}/crm/v3/objects/contacts", params=params, headers=headers
                ).json()
                read += len(page["results"])
                after = (page.get("paging") or {}).get("next", {}).get("after")
                if not after:
                    break
            ref_rate = read / (time.perf_counter() - t0)
            figures["reference_raw_http_hubspot_records_per_s"] = round(ref_rate)

            # ---- extraction ---------------------------------------------------------------------
            for name, conn, n in (("salesforce", sf, n_sf), ("hubspot", hs, n_hs)):
                calls0 = conn.stats.calls
                t0 = time.perf_counter()
                (leads,) = conn.extract(lake, run, tables=("raw_leads",))
                secs = time.perf_counter() - t0
                assert leads.rows == n, (name, leads.rows, n)
                figures[f"extract_{name}_leads"] = n
                figures[f"extract_{name}_records_per_s"] = round(n / secs)
                figures[f"extract_{name}_api_calls"] = conn.stats.calls - calls0
            figures["extract_min_calls_hubspot_list"] = math.ceil(n_hs / 100)
            # the same first load through the CRM exports API (own state: no watermark yet)
            hs_export = HubSpotConnector(
                hubspot_from_env(env),
                ConnectorState.for_data_dir(root / "data-export"),
                policy=policy,
                commit_rows=50_000,
                export_poll_seconds=0.05,
            )
            t0 = time.perf_counter()
            (leads,) = hs_export.extract(Lake(root / "data-export" / "lake"), run, tables=("raw_leads",))
            secs = time.perf_counter() - t0
            assert leads.rows == n_hs, ("hubspot export", leads.rows, n_hs)
            figures["extract_hubspot_export_records_per_s"] = round(n_hs / secs)
            figures["extract_hubspot_export_api_calls"] = hs_export.stats.calls
            figures["extract_hubspot_vs_raw_http"] = round(
                figures["extract_hubspot_records_per_s"] / ref_rate, 2
            )

            # ---- push -----------------------------------------------------------------------------
            ids = world.raw_leads["lead_id"]
            for name, conn, n, min_calls in (
                ("salesforce_bulk", sf, n_sf, SF_BULK_JOB_CALLS),
                ("hubspot", hs, n_hs, math.ceil(n_hs / HS_BATCH)),
            ):
                crm = "salesforce" if name.startswith("salesforce") else "hubspot"
                scores = make_scores(ids.filter(pc.starts_with(ids, f"{crm}:")).to_pylist(), seed=1)
                t0 = time.perf_counter()
                report = conn.push(scores)
                secs = time.perf_counter() - t0
                assert report.pushed == n and report.rejected == 0, report.as_dict()
                figures[f"push_{name}_records"] = n
                figures[f"push_{name}_records_per_s"] = round(n / secs)
                figures[f"push_{name}_api_calls"] = report.api_calls
                figures[f"push_{name}_calls_per_100k"] = round(report.api_calls * 100_000 / n, 1)
                figures[f"push_{name}_min_calls_per_100k"] = round(min_calls * 100_000 / n, 1)
            # small-set path: 2,000 changed Salesforce scores through sObject Collections
            sample = ids.filter(pc.starts_with(ids, "salesforce:")).to_pylist()[:2_000]
            t0 = time.perf_counter()
            report = sf.push(make_scores(sample, seed=2))
            secs = time.perf_counter() - t0
            changed = report.to_push
            figures["push_salesforce_collections_records"] = changed
            figures["push_salesforce_collections_records_per_s"] = round(changed / secs)
            figures["push_salesforce_collections_calls_per_100k"] = round(
                report.api_calls * 100_000 / changed, 1
            )
            figures["push_salesforce_collections_min_calls_per_100k"] = round(100_000 / SF_COLLECTION, 1)
            figures["sandbox_peak_rss_mb"] = round(psutil.Process(info.pid).memory_info().rss / 2**20)
        finally:
            server.stop(root / "sandbox")
    figures["client_peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    print(f"world: {args.leads:,} leads, loaded into the sandbox in {figures['load_seconds']} s")
    print(
        f"reference (bare HTTP, HubSpot contact pages): {figures['reference_raw_http_hubspot_records_per_s']:,} records/s"
    )
    for crm in ("salesforce", "hubspot"):
        print(
            f"extract {crm}: {figures[f'extract_{crm}_leads']:,} leads at {figures[f'extract_{crm}_records_per_s']:,} "
            f"records/s with {figures[f'extract_{crm}_api_calls']} API calls"
        )
    print(
        f"extract hubspot by export (first load): {n_hs:,} leads at "
        f"{figures['extract_hubspot_export_records_per_s']:,} records/s with "
        f"{figures['extract_hubspot_export_api_calls']} calls (start, status, download)"
    )
    print(
        f"extract hubspot / bare HTTP: {figures['extract_hubspot_vs_raw_http']}x "
        f"(minimum list calls: {figures['extract_min_calls_hubspot_list']})"
    )
    for name in ("salesforce_bulk", "hubspot", "salesforce_collections"):
        print(
            f"push {name}: {figures[f'push_{name}_records']:,} records at {figures[f'push_{name}_records_per_s']:,} "
            f"records/s; {figures[f'push_{name}_calls_per_100k']} API calls per 100,000 "
            f"(minimum by batch limits: {figures[f'push_{name}_min_calls_per_100k']})"
        )
    print(f"peak RSS: client {figures['client_peak_rss_mb']} MB, sandbox {figures['sandbox_peak_rss_mb']} MB")
    print(json.dumps(figures, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
