"""Benchmark: the nightly scoring step over 1,000,000 open leads, exact reasons included.

What runs is the DAG's own step, :func:`pipelines.nightly.score`, bucket by bucket, against a lake
and a push ledger laid out as the nightly job leaves them:

1. **Champion**: the retraining steps on the cached 100,000-lead world (the model-quality
   benchmark's, generated if missing) with the default search shape, registered in a fresh
   MLflow store as ``@champion``.
2. **Population**: feature rows of open leads from the cached 1,000,000-lead world (the
   features benchmark's), built at as-of dates 0, 60, 120 ... days before its end until there
   are ``--leads`` open-lead rows; each row gets its own lead_id. All consent to processing.
3. **Night 1, the first full load**: nothing was pushed before, so every lead is explained.
   Its scores then become the push ledger and the previous run's scores.
4. **Night 2, a typical night**: ``--change`` of the leads (20%) get another lead's feature
   row (new engagement, a status change); the step scores everyone and computes exact
   TreeSHAP reasons only for leads whose score or tier differs from what was pushed.
5. **References on night 2's matrix in the same run**: raw ``Booster.predict`` (probabilities,
   no calibration) and raw ``pred_contrib=True`` (exact TreeSHAP for every row).

Buckets run one after another in this process; LightGBM uses both cores (OpenMP) inside each.
Run alone: ``flock /tmp/prox-heavy.lock .venv/bin/python benchmarks/bench_scoring.py``.
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def train_champion(settings, threads: int, trials: int) -> dict:
    """The retraining steps on the model-quality benchmark's world; returns the gate's decision."""
    from benchmarks.bench_model_quality import world_dir
    from models.train import TrainConfig
    from pipelines import retrain
    from sandbox.world import WorldSpec, world_exists, write_world

    world = world_dir(100_000, 540, 11)
    if not world_exists(world):
        write_world(WorldSpec(n_leads=100_000, days=540, seed=11), world)
    options = retrain.RunOptions(every_days=21, lookback_days=365)
    info = retrain.build_training_set(settings, dt.date(2100, 1, 1), source=f"world:{world}", options=options)
    config = TrainConfig(max_trials=trials, time_budget_s=600, num_threads=threads)
    out = retrain.run_all(settings, info, config=config, options=options, run_label="bench-scoring")
    return {"gate": out["gate"]["decision"], "winner": out["trained"].get("winner")}


def population(n_rows: int, world_leads: int, seed: int) -> pa.Table:
    """``n_rows`` open-lead feature rows of the features benchmark's world, at as-of dates 60
    days apart."""
    from benchmarks.bench_features import prepare
    from features.build import build_features, is_open

    folder = prepare(world_leads)
    leads = pq.read_table(folder / "leads.parquet")
    history = pq.read_table(folder / "lead_status_history.parquet")
    end = dt.datetime.fromisoformat(json.loads((folder / "spec.json").read_text())["summary"]["end"])
    parts, have = [], 0
    for k in range(12):
        as_of = end - dt.timedelta(days=60 * k)
        table, _ = build_features(leads, folder / "activities.parquet", history, as_of)
        table = table.filter(is_open(table))
        ids = pc.binary_join_element_wise(table.column("lead_id"), pa.scalar(f"@{k}"), "")
        table = table.set_column(table.schema.get_field_index("lead_id"), "lead_id", ids)
        parts.append(table.slice(0, n_rows - have))
        have += parts[-1].num_rows
        print(f"  as-of {as_of:%Y-%m-%d}: {table.num_rows:,} open leads (have {have:,})", flush=True)
        if have >= n_rows:
            break
    out = pa.concat_tables(parts).combine_chunks()
    rng = np.random.default_rng(seed)
    return out.take(pa.array(rng.permutation(out.num_rows)))


def write_night(lake, features: pa.Table, run_date: dt.date, n_buckets: int) -> None:
    from features.lake import Partition
    from features.partition import bucket_of
    from pipelines.nightly import ALL, _bucket_label

    buckets = bucket_of(features.column("lead_id"), n_buckets)
    for b in range(n_buckets):
        part = features.filter(pa.array(buckets == b))
        lake.write(
            part, Partition("features", "features", _bucket_label(b, n_buckets), run_date), table_name=""
        )
    n = features.num_rows
    leads = pa.table(
        {
            "lead_id": features.column("lead_id"),
            "source": pa.array(["hubspot"] * n),
            "consent_processing": pa.array(np.ones(n, dtype=bool)),
            "opted_out": pa.array(np.zeros(n, dtype=bool)),
        }
    )
    lake.write(leads, Partition("clean", "leads", ALL, run_date), table_name="")


def run_night(settings, ctx, n_buckets: int) -> dict:
    from pipelines.nightly import score

    started = time.perf_counter()
    parts = [score(settings, ctx, b, n_buckets) for b in range(n_buckets)]
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "scored": sum(p["scored"] for p in parts),
        "explained": sum(p["explained"] for p in parts),
    }


def remember_push(settings, lake, ctx, n_buckets: int) -> pa.Table:
    """What the push step leaves behind: the ledger of pushed values and the merged scores."""
    from features.lake import Partition
    from pipelines.nightly import ALL, _scores_of
    from plugins.crm.state import ConnectorState, PushedValues

    scores = _scores_of(lake, ctx.run_date, n_buckets)
    lake.write(scores, Partition("scores", "scores", ALL, ctx.run_date))
    from plugins.crm.base import format_reasons

    names = [
        "lead_id",
        "score",
        "tier",
        "probability",
        "model_version",
        "reasons_positive",
        "reasons_negative",
    ]
    cols = scores.select(names).to_pydict()
    at = ctx.as_of.isoformat()
    pushed = [
        (lid, PushedValues(int(s), str(t), float(p), str(v), at, format_reasons(plus, minus)))
        for lid, s, t, p, v, plus, minus in zip(*(cols[n] for n in names), strict=True)
    ]
    state = ConnectorState.for_data_dir(settings.data_dir)
    try:
        for start in range(0, len(pushed), 100_000):
            chunk = pushed[start : start + 100_000]
            state.finish_batch("hubspot", f"bench-{start}", ctx.run_id, [], chunk)
    finally:
        state.close()
    return scores


def perturb(features: pa.Table, share: float, seed: int) -> tuple[pa.Table, int]:
    """Give ``share`` of the rows another row's features (their lead_id stays)."""
    rng = np.random.default_rng(seed)
    n = features.num_rows
    chosen = rng.choice(n, size=int(n * share), replace=False)
    source = np.arange(n)
    source[chosen] = rng.permutation(chosen)
    moved = features.take(pa.array(source))
    at = features.schema.get_field_index("lead_id")
    return moved.set_column(at, "lead_id", features.column("lead_id")), len(chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=1_000_000)
    parser.add_argument("--world-leads", type=int, default=1_000_000, help="world the rows come from")
    parser.add_argument("--buckets", type=int, default=8)
    parser.add_argument("--change", type=float, default=0.2)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    from benchmarks._measure import emit
    from features.lake import Lake
    from models.score import load_scorer
    from pipelines.nightly import RunContext
    from prox.settings import Settings

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    data = Path(tempfile.mkdtemp(prefix="prox-bench-scoring-"))
    os.environ["PROX_DATA_DIR"] = str(data)
    settings = Settings.from_env({"PROX_DATA_DIR": str(data)}).ensure_dirs()
    lake = Lake(settings.lake_dir)

    t0 = time.perf_counter()
    champion = train_champion(settings, args.threads, args.trials)
    scorer = load_scorer(settings.tracking_uri, settings.model_name)
    assert scorer.bundle is not None, f"no champion: {champion['gate']}"
    booster = scorer.bundle.booster
    champion["params"] = scorer.bundle.meta.get("params") or {}
    print(
        f"champion v{scorer.model_version} in {time.perf_counter() - t0:.0f} s: {booster.num_trees()} trees, "
        f"{champion['params'].get('num_leaves')} leaves, depth {champion['params'].get('max_depth')}, "
        f"{len(scorer.features)} features",
        flush=True,
    )

    t0 = time.perf_counter()
    night1_features = population(args.leads, args.world_leads, args.seed)
    print(
        f"population: {night1_features.num_rows:,} open-lead rows in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    day1, day2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    ctx1 = RunContext.of(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), "bench-night-1")
    ctx2 = RunContext.of(dt.datetime(2026, 3, 2, tzinfo=dt.UTC), "bench-night-2")
    write_night(lake, night1_features, day1, args.buckets)
    night1 = run_night(settings, ctx1, args.buckets)
    print(
        f"night 1 (first full load): {night1['scored']:,} scored, {night1['explained']:,} explained "
        f"in {night1['seconds']:.1f} s ({night1['scored'] / night1['seconds']:,.0f} leads/s)",
        flush=True,
    )
    remember_push(settings, lake, ctx1, args.buckets)

    night2_features, moved = perturb(night1_features, args.change, args.seed + 1)
    write_night(lake, night2_features, day2, args.buckets)
    del night1_features
    night2 = run_night(settings, ctx2, args.buckets)
    share = night2["explained"] / max(night2["scored"], 1)
    print(
        f"night 2 ({moved:,} leads given new features): {night2['scored']:,} scored, "
        f"{night2['explained']:,} explained ({share:.1%}) in {night2['seconds']:.1f} s (target < 300 s)",
        flush=True,
    )

    X = scorer.encode(night2_features)
    t0 = time.perf_counter()
    booster.predict(X)
    t_predict = time.perf_counter() - t0
    t0 = time.perf_counter()
    booster.predict(X, pred_contrib=True)
    t_contrib = time.perf_counter() - t0
    n = X.shape[0]
    print(
        f"reference on the same {n:,} x {X.shape[1]} matrix: raw predict {t_predict:.1f} s ({n / t_predict:,.0f} rows/s), "
        f"raw pred_contrib {t_contrib:.1f} s ({n / t_contrib:,.0f} rows/s)",
        flush=True,
    )
    print(
        f"ratios: night 2 / raw predict {night2['seconds'] / t_predict:.1f}x, "
        f"night 2 / raw pred_contrib {night2['seconds'] / t_contrib:.2f}x, "
        f"night 1 / raw pred_contrib {night1['seconds'] / t_contrib:.2f}x",
        flush=True,
    )
    emit(
        {
            "leads": n,
            "buckets": args.buckets,
            "trees": booster.num_trees(),
            "num_leaves": champion["params"].get("num_leaves"),
            "max_depth": champion["params"].get("max_depth"),
            "features": X.shape[1],
            "night1_s": round(night1["seconds"], 2),
            "night1_explained": night1["explained"],
            "night2_s": round(night2["seconds"], 2),
            "night2_explained": night2["explained"],
            "night2_explained_share": round(share, 4),
            "raw_predict_s": round(t_predict, 2),
            "raw_pred_contrib_s": round(t_contrib, 2),
            "ratio_night2_to_raw_contrib": round(night2["seconds"] / t_contrib, 3),
            "ratio_night2_to_raw_predict": round(night2["seconds"] / t_predict, 2),
            "peak_rss_gb": round(peak_rss_gb(), 2),
        }
    )


if __name__ == "__main__":
    main()
