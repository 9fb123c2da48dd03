"""Benchmark: the nightly DAG end to end in real Airflow at 100,000 leads, each task's share.

1. A simulated world (``--leads``, 540 days; cached under ``$PROX_BENCH_DIR``) loaded into a
   fresh CRM sandbox whose HubSpot portal has the Pro/Enterprise limit (190 requests per 10 s;
   ``--hubspot-rate-limit``), and a champion trained on it (the retraining steps, not timed).
2. Night 1, the first full load, then night 2, the next day (increments only), each run with
   ``dag.test()`` as ``make demo`` does: one process, tasks one after another.
3. Per night: wall time, and each task's time (mapped tasks summed over their map indexes)
   and share, read from Airflow's own task instances; API calls per CRM from the run report.
   The reference in the same run is the scoring step's raw ``Booster.predict`` over the
   night's feature rows, to show how much of a night is scoring versus moving data.

Run alone: ``flock /tmp/prox-heavy.lock .venv/bin/python benchmarks/bench_nightly.py``.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def world_dir(n_leads: int, seed: int) -> Path:
    root = Path(os.environ.get("PROX_BENCH_DIR", "/tmp/prox-bench"))
    return root / f"nightly-world-{n_leads}-{seed}"


def task_times(dag_id: str, run_id: str) -> dict[str, float]:
    """Seconds per task of one DAG run (mapped tasks summed), from Airflow's metadata DB."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    out: dict[str, float] = {}
    with create_session() as session:
        rows = (
            session.query(TaskInstance.task_id, TaskInstance.start_date, TaskInstance.end_date)
            .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .all()
        )
    for task_id, start, end in rows:
        if start and end:
            out[task_id] = out.get(task_id, 0.0) + (end - start).total_seconds()
    return out


def run_night(day: dt.date) -> tuple[str, float, dict[str, float]]:
    from prox.airflow_env import run_in_process, run_state

    started = time.perf_counter()
    run = run_in_process("prox_nightly", dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC))
    seconds = time.perf_counter() - started
    return run_state(run), seconds, task_times("prox_nightly", run.run_id)


def print_night(name: str, state: str, seconds: float, tasks: dict[str, float], report: dict) -> None:
    total = sum(tasks.values()) or 1.0
    print(f"{name}: {state} in {seconds:.1f} s wall ({total:.1f} s in tasks)", flush=True)
    for task, secs in sorted(tasks.items(), key=lambda kv: -kv[1]):
        print(f"  {task:<16} {secs:8.1f} s  {secs / total:6.1%}", flush=True)
    per_crm = report.get("per_crm", {})
    calls = {crm: c.get("api_calls_extract", 0) + c.get("api_calls_push", 0) for crm, c in per_crm.items()}
    pushed = {crm: c.get("pushed", 0) for crm, c in per_crm.items()}
    print(f"  scored {report.get('scored', 0):,}, pushed {pushed}, API calls {calls}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--hubspot-rate-limit", type=int, default=190, help="requests per 10 s")
    parser.add_argument("--buckets", type=int, default=4)
    args = parser.parse_args()

    from benchmarks._measure import emit

    data = Path(tempfile.mkdtemp(prefix="prox-bench-nightly-"))
    os.environ.update(
        {
            "PROX_DATA_DIR": str(data),
            "PROX_SCORE_BUCKETS": str(args.buckets),
            "GX_ANALYTICS_ENABLED": "False",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        }
    )
    from prox.airflow_env import airflow_environ
    from prox.settings import Settings

    settings = Settings.from_env().ensure_dirs()
    os.environ.update(airflow_environ(settings))  # before Airflow is first imported

    from models.train import TrainConfig
    from pipelines.demo import migrate_airflow
    from pipelines.retrain import build_training_set, run_all
    from sandbox import server
    from sandbox.world import WorldSpec, world_exists, write_world

    world = world_dir(args.leads, args.seed)
    if not world_exists(world):
        write_world(WorldSpec(n_leads=args.leads, days=540, seed=args.seed), world)
    summary = json.loads((world / "spec.json").read_text())["summary"]
    end = dt.datetime.fromisoformat(summary["end"]).date()
    migrate_airflow(settings)

    sandbox_dir = data / "sandbox"
    limit = args.hubspot_rate_limit or None  # 0: no limit
    info = server.start(sandbox_dir, faults={"hubspot_rate_limit": limit})
    try:
        t0 = time.perf_counter()
        counts = server.load_world_dir(sandbox_dir, world, reset=True)
        print(f"sandbox loaded in {time.perf_counter() - t0:.0f} s: {counts}", flush=True)
        os.environ.update(info.connection_env())
        os.environ["PROX_WEB_TRACKING_DIR"] = str(info.web_tracking_dir)
        settings = Settings.from_env()
        t0 = time.perf_counter()
        training = build_training_set(settings, end, source=f"world:{world}")
        trained = run_all(settings, training, config=TrainConfig(max_trials=2, time_budget_s=300))
        assert trained["gate"]["promoted"], trained["gate"]
        print(f"champion trained in {time.perf_counter() - t0:.0f} s (not part of the nights)", flush=True)

        figures: dict = {"leads": summary["leads"], "events": summary["events"], "buckets": args.buckets}
        for name, day in (("night1", end), ("night2", end + dt.timedelta(days=1))):
            state, seconds, tasks = run_night(day)
            report_path = (
                settings.lake_dir / "reports" / "nightly" / f"run_date={day.isoformat()}" / "report.json"
            )
            report = json.loads(report_path.read_text()) if report_path.is_file() else {}
            print_night(name, state, seconds, tasks, report)
            total = sum(tasks.values()) or 1.0
            figures[f"{name}_state"] = state
            figures[f"{name}_s"] = round(seconds, 1)
            figures[f"{name}_scored"] = report.get("scored")
            figures[f"{name}_share"] = {t: round(s / total, 4) for t, s in tasks.items()}
            figures[f"{name}_task_s"] = {t: round(s, 1) for t, s in tasks.items()}
            figures[f"{name}_api_calls"] = {
                crm: c.get("api_calls_extract", 0) + c.get("api_calls_push", 0)
                for crm, c in report.get("per_crm", {}).items()
            }

        # reference: raw predict over night 2's feature rows, in this process
        from features.lake import Lake
        from models.score import load_scorer

        lake = Lake(settings.lake_dir)
        day2 = end + dt.timedelta(days=1)
        import pyarrow as pa

        parts = [p for p in lake.partitions("features", "features") if p.run_date == day2]
        features = pa.concat_tables([lake.read(p) for p in parts])
        scorer = load_scorer(settings.tracking_uri, settings.model_name)
        X = scorer.encode(features)
        t0 = time.perf_counter()
        scorer.bundle.booster.predict(X)
        raw = time.perf_counter() - t0
        figures["reference_raw_predict_s"] = round(raw, 3)
        figures["ratio_night2_to_raw_predict"] = round(figures["night2_s"] / raw, 1)
        print(
            f"reference: raw predict over night 2's {X.shape[0]:,} feature rows {raw:.2f} s; "
            f"night 2 takes {figures['ratio_night2_to_raw_predict']}x that",
            flush=True,
        )
    finally:
        server.stop(sandbox_dir)
    figures["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    emit(figures)


if __name__ == "__main__":
    main()
