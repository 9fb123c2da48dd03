"""Hot scoring service latency and throughput, next to the floor and the usual tool, in one run.

Three HTTP services on 127.0.0.1, each one uvicorn worker, the same registered champion:
- ``prox``: ``/v1/score`` (features from the lead's fields and its events with the shared
  feature code, booster, TreeSHAP reasons), ``/v1/score`` from the stored online state, and
  ``/v1/events`` (a new event committed durably -- synchronous=FULL -- then re-scored),
  spread over 1,000 stored leads, and all sent to one lead (whose history grows by every
  event of the run: the worst case);
- ``bare``: a FastAPI endpoint calling ``booster.predict`` on a posted NumPy row (the floor);
- ``mlflow``: ``mlflow models serve`` of the same model version (one feature row as
  ``dataframe_records``), when it starts within 120 s.
For each: sequential latency p50/p90/p99 over N requests (concurrency 1), then throughput at
concurrency 16, both measured by ``benchmarks/loadgen.c``: a one-thread epoll HTTP/1.1
keep-alive client in C, compiled here with the system ``cc`` at the start of the run (about
0.2 s; the Python httpx client is the fallback without a compiler, and caps at a few hundred
requests/s). The servers are pinned to CPU 0 and the client to CPU 1 with ``taskset`` (when
there are two CPUs; ``--no-pin`` turns it off), so every target gets the same one core and
the client never competes with it. Each /v1/events request carries a new event_id.

    flock /tmp/prox-heavy.lock .venv/bin/python benchmarks/bench_serve.py [--data-dir DIR] [-n 2000]

Without ``--data-dir`` (holding a champion) a 2,500-lead world is simulated and a champion
trained first (~45 s). The last line is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
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
SPREAD = 1_000  # leads the spread /v1/events target sends to (request number mod SPREAD)
KEY = "%%%%"  # the load generator writes the request number mod SPREAD there
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


def _champion(data_dir: Path, n_leads: int) -> None:
    from pipelines.retrain import build_training_set, run_all
    from prox.settings import Settings
    from sandbox.world import WorldSpec, save_world, simulate_world

    settings = Settings.from_env({"PROX_DATA_DIR": str(data_dir)}).ensure_dirs()
    save_world(
        simulate_world(WorldSpec(n_leads=n_leads, days=420, seed=21, end=WORLD_END)), settings.world_dir
    )
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
    """Python fallback (no C compiler): sequential latency with a keep-alive httpx client."""
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
    """Python fallback (no C compiler): asyncio httpx client; it caps at a few hundred req/s."""
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


def build_loadgen(out_dir: Path) -> Path | None:
    """Compile benchmarks/loadgen.c (a C epoll keep-alive client) with the system cc; None without one."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    exe = out_dir / "prox-loadgen"
    done = subprocess.run(
        [cc, "-O2", "-o", str(exe), str(ROOT / "benchmarks" / "loadgen.c")], capture_output=True, text=True
    )
    if done.returncode != 0:
        print("cc failed, falling back to the Python client:", done.stderr[-500:], flush=True)
        return None
    return exe


def request_bytes(path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One raw HTTP/1.1 keep-alive POST, as the load generator replays it."""
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Loadgen:
    """Runs the compiled client (pinned to ``cpus`` with taskset when given) and parses its JSON."""

    def __init__(self, exe: Path, work: Path, cpus: str | None) -> None:
        self.exe, self.work, self.cpus, self.seq = exe, work, cpus, 0

    def run(
        self, port: int, path: str, body: bytes, headers: dict, total: int, concurrency: int, keys: int = 0
    ) -> dict:
        req = self.work / f"req-{self.seq}.http"
        req.write_bytes(request_bytes(path, body, headers))
        cmd = [str(self.exe), str(port), str(concurrency), str(total), str(req), "300", str(self.seq)]
        cmd.append(str(keys))  # "%%%%" -> request number mod keys (0: the default, 10,000)
        if self.cpus:
            cmd = ["taskset", "-c", self.cpus, *cmd]
        self.seq += 10**7  # event ids stay unique across runs
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
        if done.returncode != 0:
            raise RuntimeError(f"load generator failed on {path}: {done.stderr[-500:]}")
        return json.loads(done.stdout)


def _server(cmd: list[str], env: dict, cpus: str | None, quiet: bool = False) -> subprocess.Popen:
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=out)


def _batches(port: int) -> tuple[int, int]:
    """(scoring passes, leads scored in them) so far, from the service's /metrics."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    values = dict(line.split(" ", 1) for line in text.splitlines() if line.startswith("prox_score_batch"))
    return int(values.get("prox_score_batches_total", 0)), int(values.get("prox_score_batch_leads_total", 0))


def _uvicorn(factory: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        factory,
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def main() -> int:
    import httpx

    from features.privacy import pseudonymise_leads
    from models.score import load_scorer
    from prox.settings import Settings
    from sandbox.world import load_world
    from serve.auth import hash_token

    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument(
        "--leads",
        type=int,
        default=20_000,
        help="world size when a champion is trained here (20,000 gives a model of about the "
        "reference's size; 2,500 a much smaller one)",
    )
    parser.add_argument("-n", type=int, default=2000, help="sequential requests per target")
    parser.add_argument("--total", type=int, default=6000, help="requests per throughput run (c16)")
    parser.add_argument("--mlflow-total", type=int, default=600, help="requests per mlflow throughput run")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin servers to CPU 0 and the client to CPU 1"
    )
    parser.add_argument("--python-client", action="store_true", help="use the httpx client, not the C one")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-serve-")) / "data"
    settings = Settings.from_env({"PROX_DATA_DIR": str(data_dir)})
    scorer = load_scorer(settings.tracking_uri, settings.model_name)
    if scorer.cold_start:
        print(f"training a champion on a {args.leads:,}-lead world ...", flush=True)
        _champion(data_dir, args.leads)
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
    work = Path(tempfile.mkdtemp(prefix="bench-serve-work-"))
    pin = not args.no_pin and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    server_cpus, client_cpus = ("0", "1") if pin else (None, None)
    exe = None if args.python_client else build_loadgen(work)
    client = "C loadgen (benchmarks/loadgen.c, epoll, keep-alive)" if exe else "Python httpx (keep-alive)"
    print(
        f"client: {client}; " + ("servers pinned to CPU 0, client to CPU 1" if pin else "no CPU pinning"),
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
    # what a CRM or sales tool sends: the lead and its recent events (no feature dump back)
    score_body = {"lead": lead_j, "events": events_j, "as_of": as_of.isoformat()}

    procs = []
    env = {
        **os.environ,
        "PROX_DATA_DIR": str(data_dir),
        "PROX_SERVE_PUSH": "0",
        "PROX_SERVE_STATE": str(work / "online.sqlite"),
        "PROX_SERVE_TOKENS": f"{hash_token(TOKEN)} admin",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    }
    try:
        port = _port()
        procs.append(_server(_uvicorn("serve.app:app_from_env", port), env, server_cpus))
        prox = f"http://127.0.0.1:{port}"
        assert _wait(f"{prox}/healthz", procs[-1], 120), "prox service did not start"
        bundle_dir = work / "bare"
        bundle_dir.mkdir()
        booster.save_model(str(bundle_dir / "model.txt"))  # the very booster the champion holds
        bport = _port()
        procs.append(
            _server(
                _uvicorn("benchmarks.bench_serve:bare_factory", bport),
                {**env, "BENCH_BUNDLE": str(bundle_dir)},
                server_cpus,
            )
        )
        bare = f"http://127.0.0.1:{bport}"
        assert _wait(f"{bare}/docs", procs[-1], 60), "bare service did not start"
        mport = _port()
        procs.append(
            _server(
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
                {
                    **env,
                    "MLFLOW_TRACKING_URI": settings.tracking_uri,  # it execs `uvicorn`
                    "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
                },
                server_cpus,
                quiet=True,
            )
        )
        mlf = f"http://127.0.0.1:{mport}"
        mlflow_up = _wait(f"{mlf}/ping", procs[-1], 120)

        H = {"Authorization": f"Bearer {TOKEN}"}
        c = httpx.Client(headers=H, timeout=60)
        first = c.post(f"{prox}/v1/score", json={**score_body, "include_features": True}).json()
        features = first["features"]
        x = scorer.bundle.encoder.transform(features)[0].tolist()
        x_bare = [None if np.isnan(v) else v for v in x]
        r = c.post(
            f"{prox}/v1/events", json={"leads": [lead_j], "events": events_j, "as_of": as_of.isoformat()}
        )
        assert r.status_code == 200, r.text[:300]
        ev0 = events_j[-1]
        marker = "@" * 12  # the C client writes each request's number there

        def new_event(i: int | str) -> dict:
            return {"event": {**ev0, "event_id": f"bench-{os.getpid()}-{i}"}, "as_of": as_of.isoformat()}

        # SPREAD copies of the lead, each with its events: webhooks spread over many leads
        for start in range(0, SPREAD, 100):
            copies = [  # each its own company: one account of 1,000 leads would be another benchmark
                {
                    **lead_j,
                    "lead_id": f"{lead_j['lead_id']}K{k:04d}",
                    "company_domain": f"k{k:04d}.example.com",
                }
                for k in range(start, start + 100)
            ]
            copied = [
                {**e, "event_id": f"pre-{k}-{j}", "lead_id": f"{lead_j['lead_id']}K{k:04d}"}
                for k in range(start, start + 100)
                for j, e in enumerate(events_j)
            ]
            r = c.post(
                f"{prox}/v1/events", json={"leads": copies, "events": copied, "as_of": as_of.isoformat()}
            )
            assert r.status_code == 200, r.text[:300]

        # /v1/score from the stored state, spread over the stored copies: identical concurrent
        # requests for one lead would be scored once per pass, which flatters the figure
        def spread_key(i: int | str) -> str:
            return KEY if i == marker else f"{sum(map(ord, str(i))) % SPREAD:04d}"  # Python client: any

        def state_body(i: int | str) -> dict:
            key = spread_key(i)
            lead = {
                **lead_j,
                "lead_id": f"{lead_j['lead_id']}K{key}",
                "company_domain": f"k{key}.example.com",
            }
            return {"lead": lead, "as_of": as_of.isoformat()}

        def spread_event(i: int | str) -> dict:
            key = spread_key(i)
            event = {**ev0, "event_id": f"bench-{os.getpid()}-s{i}", "lead_id": f"{lead_j['lead_id']}K{key}"}
            return {"event": event, "as_of": as_of.isoformat()}

        bare_body = {"x": x_bare}
        mlflow_body = {"dataframe_records": [features]}
        if mlflow_up:
            ok = c.post(f"{mlf}/invocations", json=mlflow_body)
            mlflow_up = ok.status_code == 200
            if not mlflow_up:
                print("mlflow models serve answered", ok.status_code, ok.text[:300])
        for _ in range(200):  # warm up
            c.post(f"{prox}/v1/score", json=score_body)
            c.post(f"{bare}/predict", json=bare_body)
        figures: dict = {
            "model_trees": booster.num_trees(),
            "model_features": booster.num_feature(),
            "events_per_lead": len(events_j),
            "client": "c-loadgen" if exe else "python-httpx",
            "pinned": pin,
        }
        # name -> (port, path, JSON body or a function of the request number, headers, n, total)
        targets = {
            "prox_score": (port, "/v1/score", score_body, H, args.n, args.total),
            "prox_score_state": (port, "/v1/score", state_body, H, args.n, args.total),
            "prox_events": (port, "/v1/events", spread_event, H, args.n, args.total),
            "prox_events_one_lead": (port, "/v1/events", new_event, H, args.n, args.total),
            "bare": (bport, "/predict", bare_body, {}, args.n, args.total),
        }
        if mlflow_up:
            targets["mlflow"] = (
                mport,
                "/invocations",
                mlflow_body,
                {},
                max(200, args.n // 5),
                args.mlflow_total,
            )
        for name, (tport, path, body, headers, n, total) in targets.items():
            print(f"measuring {name} ...", flush=True)
            if exe:
                gen = Loadgen(exe, work, client_cpus)
                raw = json.dumps(body(marker) if callable(body) else body).encode()
                seq = gen.run(tport, path, raw, headers, n, 1, SPREAD)
                before = _batches(tport) if tport == port else None
                thr = gen.run(tport, path, raw, headers, total, 16, SPREAD)
                figures[name] = {
                    "p50_ms": seq["p50_ms"],
                    "p90_ms": seq["p90_ms"],
                    "p99_ms": seq["p99_ms"],
                    "max_ms": seq["max_ms"],
                    "rps_c16": thr["rps"],
                    "c16_p50_ms": thr["p50_ms"],
                    "c16_p99_ms": thr["p99_ms"],
                }
                if before is not None:  # leads per feature/booster pass while 16 clients wait
                    after = _batches(tport)
                    passes = after[0] - before[0]
                    figures[name]["c16_leads_per_pass"] = round((after[1] - before[1]) / max(1, passes), 2)
            else:
                url = f"http://127.0.0.1:{tport}{path}"
                bodies = body if callable(body) else (lambda i, b=body: b)
                hc = httpx.Client(headers=headers, timeout=60)
                figures[name] = _lat(lambda i, hc=hc, url=url, bodies=bodies: hc.post(url, json=bodies(i)), n)
                figures[name]["rps_c16"] = round(
                    asyncio.run(_throughput(url, lambda i, b=bodies: b(f"t{i}"), headers, total)), 1
                )
        sc, bare_f = figures["prox_score"], figures["bare"]
        figures["ratio_score_rps_vs_bare"] = round(sc["rps_c16"] / bare_f["rps_c16"], 3)
        figures["ratio_events_rps_vs_bare"] = round(figures["prox_events"]["rps_c16"] / bare_f["rps_c16"], 3)
        if mlflow_up:
            figures["ratio_score_rps_vs_mlflow"] = round(sc["rps_c16"] / figures["mlflow"]["rps_c16"], 1)
            figures["ratio_events_rps_vs_mlflow"] = round(
                figures["prox_events"]["rps_c16"] / figures["mlflow"]["rps_c16"], 1
            )
        figures["target_score_p99_under_5ms"] = sc["p99_ms"] < 5.0
        figures["target_rps_20x_mlflow"] = bool(mlflow_up and figures["ratio_score_rps_vs_mlflow"] >= 20)
        figures["target_rps_quarter_of_bare"] = figures["ratio_score_rps_vs_bare"] >= 0.25
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
        shutil.rmtree(work, ignore_errors=True)
    return 0


def bare_factory():
    return bare_app(os.environ["BENCH_BUNDLE"])


if __name__ == "__main__":
    sys.exit(main())
