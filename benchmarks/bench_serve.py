"""Hot scoring service latency and throughput, next to the floor and the usual tool, in one run.

Three HTTP services on 127.0.0.1, each one uvicorn worker, the same registered champion:
- ``prox``: ``/v1/score`` (features from the lead's fields and its events with the shared
  feature code, booster, TreeSHAP reasons), ``/v1/score`` from the stored online state, and
  ``/v1/events`` (a new event committed durably -- synchronous=FULL -- then re-scored);
- ``bare``: a FastAPI endpoint calling ``booster.predict`` on a posted NumPy row (the floor);
- ``mlflow``: ``mlflow models serve`` of the same model version (one feature row as
  ``dataframe_records``), when it starts within 120 s.
For each: sequential p50/p99 over N requests, then throughput at concurrency 16 (asyncio
httpx client in this process: the client shares the 2 cores, alike for every target).

    flock /tmp/prox-heavy.lock .venv/bin/python benchmarks/bench_serve.py [--data-dir DIR] [-n 1000]

Without ``--data-dir`` (holding a champion) a 2,500-lead world is simulated and a champion
trained first (~45 s). The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi import Request

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"
WORLD_END = dt.date(2026, 6, 1)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, seconds: float) -> bool:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            httpx.get(url, timeout=1)
            return True
        except httpx.TransportError:
            time.sleep(0.2)
    return False


def _champion(data_dir: Path) -> None:
    from models.retrain import build_training_set, run_all
    from prox.settings import Settings
    from sandbox.world import WorldSpec, save_world, simulate_world

    settings = Settings.from_env({"PROX_DATA_DIR": str(data_dir)}).ensure_dirs()
    save_world(simulate_world(WorldSpec(n_leads=2_500, days=420, seed=21, end=WORLD_END)), settings.world_dir)
    info = build_training_set(settings, WORLD_END, source="world")
    run_all(settings, info, config=_train_config())


def _train_config():
    from models.train import TrainConfig

    return TrainConfig(max_trials=2, time_budget_s=60, max_num_leaves=31)


def bare_app(bundle_dir: str):
    """The floor: FastAPI + booster.predict on one posted row, nothing else."""
    import lightgbm as lgb
    from fastapi import FastAPI

    booster = lgb.Booster(model_file=str(Path(bundle_dir) / "model.txt"))
    app = FastAPI()

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        x = np.asarray((await request.json())["x"], dtype=np.float64).reshape(1, -1)
        return {"probability": float(booster.predict(x)[0])}

    return app


def _lat(fn, n: int) -> dict:
    times = []
    for i in range(n):
        t = time.perf_counter()
        r = fn(i)
        times.append(time.perf_counter() - t)
        assert r.status_code == 200, r.text[:300]
    ms = np.array(times) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
    }


async def _throughput(url: str, bodies, headers: dict, total: int, concurrency: int = 16) -> float:
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=60) as client:
        counter = iter(range(total))

        async def worker() -> None:
            for i in counter:
                r = await client.post(url, json=bodies(i))
                assert r.status_code == 200, r.text[:300]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return total / (time.perf_counter() - started)


def main() -> int:
    import httpx

    from models.score import load_scorer
    from models.serve.auth import hash_token
    from prox.privacy import pseudonymise_leads
    from prox.settings import Settings
    from sandbox.world import load_world

    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("-n", type=int, default=1000, help="sequential requests per target")
    parser.add_argument("--total", type=int, default=3000, help="requests per throughput run")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-serve-")) / "data"
    settings = Settings.from_env({"PROX_DATA_DIR": str(data_dir)})
    scorer = load_scorer(settings.tracking_uri, settings.model_name)
    if scorer.cold_start:
        print("training a champion on a 2,500-lead world ...", flush=True)
        _champion(data_dir)
        scorer = load_scorer(settings.tracking_uri, settings.model_name)
    assert scorer.bundle is not None and scorer.bundle.kind == "lightgbm", (
        "the benchmark needs a LightGBM champion"
    )
    booster = scorer.bundle.booster
    print(
        f"model {settings.model_name} v{scorer.model_version}: {booster.num_trees()} trees, "
        f"{booster.num_feature()} features",
        flush=True,
    )

    # a typical engaged lead and its events (as JSON)
    world = load_world(settings.world_dir)
    leads = pseudonymise_leads(world.raw_leads, b"bench-key").to_pylist()
    as_of = dt.datetime.combine(WORLD_END, dt.time(), tzinfo=dt.UTC)
    events: dict[str, list] = {}
    for e in world.activities.to_pylist():
        if e["occurred_at"] < as_of:
            events.setdefault(e["lead_id"], []).append(e)
    counts = sorted(len(v) for v in events.values())
    median_n = counts[len(counts) // 2]
    lead = next(
        r
        for r in leads
        if len(events.get(r["lead_id"], [])) == median_n
        and r["created_at"] < as_of
        and r["consent_processing"]
        and not r["opted_out"]
    )
    enc = lambda o: json.loads(json.dumps(o, default=lambda v: v.isoformat()))  # noqa: E731
    lead_j, events_j = enc(lead), enc(events[lead["lead_id"]])
    score_body = {"lead": lead_j, "events": events_j, "as_of": as_of.isoformat(), "include_features": True}

    procs = []
    env = {
        **os.environ,
        "PROX_DATA_DIR": str(data_dir),
        "PROX_SERVE_PUSH": "0",
        "PROX_SERVE_STATE": str(data_dir / "serve" / f"bench-{os.getpid()}.sqlite"),
        "PROX_SERVE_TOKENS": f"{hash_token(TOKEN)} admin",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    try:
        port = _port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "models.serve.app:app_from_env",
                    "--port",
                    str(port),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                env=env,
                cwd=ROOT,
            )
        )
        prox = f"http://127.0.0.1:{port}"
        assert _wait(f"{prox}/healthz", procs[-1], 120), "prox service did not start"
        bundle_dir = Path(tempfile.mkdtemp(prefix="bench-bare-"))
        booster.save_model(str(bundle_dir / "model.txt"))  # the very booster the champion holds
        bport = _port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "--factory",
                    "benchmarks.bench_serve:bare_factory",
                    "--port",
                    str(bport),
                    "--no-access-log",
                    "--log-level",
                    "warning",
                ],
                env={**env, "BENCH_BUNDLE": str(bundle_dir)},
                cwd=ROOT,
            )
        )
        bare = f"http://127.0.0.1:{bport}"
        assert _wait(f"{bare}/docs", procs[-1], 60), "bare service did not start"
        mport = _port()
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "models",
                    "serve",
                    "-m",
                    f"models:/{settings.model_name}/{scorer.model_version}",
                    "-p",
                    str(mport),
                    "--env-manager",
                    "local",
                    "-w",
                    "1",
                ],
                env={
                    **env,
                    "MLFLOW_TRACKING_URI": settings.tracking_uri,  # it execs `uvicorn`
                    "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
                },
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        mlf = f"http://127.0.0.1:{mport}"
        mlflow_up = _wait(f"{mlf}/ping", procs[-1], 120)

        H = {"Authorization": f"Bearer {TOKEN}"}
        c = httpx.Client(headers=H, timeout=60)
        first = c.post(f"{prox}/v1/score", json=score_body).json()
        features = first["features"]
        x = scorer.bundle.encoder.transform(features)[0].tolist()
        x = [None if np.isnan(v) else v for v in x]
        x_bare = [float("nan") if v is None else v for v in x]
        c.post(f"{prox}/v1/events", json={"leads": [lead_j], "events": events_j, "as_of": as_of.isoformat()})
        state_body = {"lead": lead_j, "as_of": as_of.isoformat()}
        ev0 = events_j[-1]

        def new_event(i: int) -> dict:
            return {
                "event": {**ev0, "event_id": f"bench-{os.getpid()}-{i}-{time.perf_counter_ns()}"},
                "as_of": as_of.isoformat(),
            }

        for _ in range(50):  # warm up
            c.post(f"{prox}/v1/score", json=score_body)
        figures: dict = {
            "model_trees": booster.num_trees(),
            "model_features": booster.num_feature(),
            "events_per_lead": len(events_j),
        }
        n = args.n
        figures["prox_score"] = _lat(lambda i: c.post(f"{prox}/v1/score", json=score_body), n)
        figures["prox_score_state"] = _lat(lambda i: c.post(f"{prox}/v1/score", json=state_body), n)
        figures["prox_events"] = _lat(lambda i: c.post(f"{prox}/v1/events", json=new_event(i)), n)
        bare_body = json.loads(json.dumps({"x": x_bare}).replace("NaN", "null"))
        figures["bare"] = _lat(lambda i: c.post(f"{bare}/predict", json=bare_body), n)
        mlflow_body = {"dataframe_records": [features]}
        if mlflow_up:
            ok = c.post(f"{mlf}/invocations", json=mlflow_body)
            mlflow_up = ok.status_code == 200
            if not mlflow_up:
                print("mlflow models serve answered", ok.status_code, ok.text[:300])
        if mlflow_up:
            figures["mlflow"] = _lat(
                lambda i: c.post(f"{mlf}/invocations", json=mlflow_body), max(100, n // 5)
            )
        total = args.total
        figures["prox_score"]["rps_c16"] = round(
            asyncio.run(_throughput(f"{prox}/v1/score", lambda i: score_body, H, total)), 1
        )
        figures["prox_score_state"]["rps_c16"] = round(
            asyncio.run(_throughput(f"{prox}/v1/score", lambda i: state_body, H, total)), 1
        )
        figures["prox_events"]["rps_c16"] = round(
            asyncio.run(_throughput(f"{prox}/v1/events", new_event, H, total)), 1
        )
        figures["bare"]["rps_c16"] = round(
            asyncio.run(_throughput(f"{bare}/predict", lambda i: bare_body, {}, total)), 1
        )
        if mlflow_up:
            figures["mlflow"]["rps_c16"] = round(
                asyncio.run(_throughput(f"{mlf}/invocations", lambda i: mlflow_body, {}, 300)), 1
            )
        figures["ratio_score_rps_vs_bare"] = round(
            figures["prox_score"]["rps_c16"] / figures["bare"]["rps_c16"], 3
        )
        if mlflow_up:
            figures["ratio_score_rps_vs_mlflow"] = round(
                figures["prox_score"]["rps_c16"] / figures["mlflow"]["rps_c16"], 1
            )
        for name, value in figures.items():
            print(f"{name}: {value}")
        print(json.dumps(figures, sort_keys=True))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
    return 0


def bare_factory():
    return bare_app(os.environ["BENCH_BUNDLE"])


if __name__ == "__main__":
    sys.exit(main())
