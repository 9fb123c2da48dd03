"""The hot scoring service, started for real (uvicorn subprocess on 127.0.0.1), over HTTP.

One world and one champion (trained with the nightly code) for the module:
1. parity: online features and scores of random leads equal the batch path's at the same as-of;
2. durability: an acknowledged event survives kill -9 and restart; a duplicate event_id counts once;
3. champion switch under load: no request fails, each answers with one whole model version;
4. auth 401/403, validation 422 naming the field, 413 over the size limit; metrics.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from serve.auth import hash_token

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WORLD_END = dt.date(2026, 6, 1)
AS_OF = dt.datetime.combine(WORLD_END, dt.time(), tzinfo=dt.UTC) - dt.timedelta(days=20)
TOKENS = {"score": "tok-score-only", "ingest": "tok-ingest-only", "admin": "tok-admin"}
PARITY_LEADS = 1_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A ``prox serve``-equivalent uvicorn process on a free port."""

    def __init__(self, data_dir: Path, state: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir, self.state, self.extra_env = data_dir, state, env or {}
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> Service:
        port = _free_port()
        env = {
            **os.environ,
            "PROX_DATA_DIR": str(self.data_dir),
            "PROX_SERVE_STATE": str(self.state),
            "PROX_SERVE_PUSH": "0",
            # this world lies months before the wall clock: pruning relative to now would drop
            # events that these tests' as-of times still see
            "PROX_SERVE_PRUNE_HOURS": "0",
            "PROX_SERVE_MAX_BODY_BYTES": str(4 * 1024 * 1024),
            "PROX_SERVE_TOKENS": ";".join(f"{hash_token(t)} {role}" for role, t in TOKENS.items()),
            **self.extra_env,
        }
        self.log = open(self.data_dir / f"serve-{port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "serve.app:app_from_env",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.data_dir / f"serve-{port}.log").read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("service did not become ready in 90 s")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def _auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def _json(obj):
    return json.loads(json.dumps(obj, default=lambda v: v.isoformat()))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(settings, world, leads table, running service) with a champion trained on the world."""
    from features.privacy import pseudonymise_leads
    from models.train import TrainConfig
    from pipelines.retrain import build_training_set, run_all
    from prox.settings import Settings
    from sandbox.world import WorldSpec, save_world, simulate_world

    data_dir = tmp_path_factory.mktemp("serve") / "data"
    settings = Settings.from_env({"PROX_DATA_DIR": str(data_dir)}).ensure_dirs()
    world = simulate_world(WorldSpec(n_leads=2_500, days=420, seed=21, end=WORLD_END))
    save_world(world, settings.world_dir)
    training = build_training_set(settings, WORLD_END, source="world")
    result = run_all(
        settings, training, config=TrainConfig(max_trials=2, time_budget_s=60, max_num_leaves=31)
    )
    assert result["gate"]["promoted"], result["gate"]
    service = Service(data_dir, data_dir / "serve" / "online.sqlite").start()
    yield settings, world, pseudonymise_leads(world.raw_leads, b"serve-test-key"), service
    service.stop()


@pytest.fixture(scope="module")
def parity_cases(served):
    """(request body, what the batch path gives) for PARITY_LEADS random consenting leads."""
    from features.build import build_features
    from features.spec import FEATURE_NAMES
    from models.score import load_scorer

    settings, world, leads, _ = served
    batch, _ = build_features(leads, world.activities, world.status_history, AS_OF)
    scorer = load_scorer(settings.tracking_uri, settings.model_name)
    scored = scorer.score_table(batch)
    rows = batch.to_pylist()
    by_lead = {r["lead_id"]: r for r in leads.to_pylist()}
    events, history, accounts = defaultdict(list), defaultdict(list), defaultdict(list)
    for row in world.activities.to_pylist():
        events[row["lead_id"]].append(row)
    for row in world.status_history.to_pylist():
        history[row["lead_id"]].append(row)
    for lid, row in by_lead.items():
        accounts[(row["company_domain"] or "").lower()].append(lid)
    consenting = [i for i, r in enumerate(rows) if _consents(by_lead[r["lead_id"]])]
    sample = random.Random(3).sample(consenting, min(PARITY_LEADS, len(consenting)))
    cases = []
    for i in sample:
        lid = rows[i]["lead_id"]
        lead = by_lead[lid]
        peers = (
            [p for p in accounts[(lead["company_domain"] or "").lower()] if p != lid]
            if lead["company_domain"]
            else []
        )
        body = {
            "lead": lead,
            "events": events[lid],
            "status_history": history[lid],
            "peers": [by_lead[p] for p in peers],
            "peer_events": [e for p in peers for e in events[p]],
            "as_of": AS_OF,
            "include_features": True,
        }
        want = {
            "features": {n: rows[i][n] for n in FEATURE_NAMES},
            "probability": float(scored.probability[i]),
            "score": int(scored.score[i]),
            "tier": str(scored.tier[i]),
            "reasons": (scored.reasons_positive[i], scored.reasons_negative[i]),
            "model_version": scorer.model_version,
        }
        cases.append((lid, _json(body), want))
    refused = next(i for i in range(len(rows)) if not _consents(by_lead[rows[i]["lead_id"]]))
    return cases, by_lead[rows[refused]["lead_id"]]


def _mismatch(got: dict, want: dict) -> dict:
    from features.spec import FEATURE_NAMES

    have = {
        "features": {n: got["features"][n] for n in FEATURE_NAMES},
        "probability": got["probability"],
        "score": got["score"],
        "tier": got["tier"],
        "reasons": ("; ".join(got["reasons_positive"]), "; ".join(got["reasons_negative"])),
        "model_version": got["model_version"],
    }
    return {k: (want[k], have[k]) for k in want if want[k] != have[k]}


def test_online_scores_equal_the_batch_path_on_random_leads(served, parity_cases):
    *_, service = served
    cases, refused = parity_cases
    mismatches, tiers = [], set()
    with httpx.Client(base_url=service.url, headers=_auth("score"), timeout=30) as client:
        for lid, body, want in cases:
            r = client.post("/v1/score", json=body)
            assert r.status_code == 200, r.text
            if diff := _mismatch(r.json(), want):
                mismatches.append((lid, diff))
            tiers.add(r.json()["tier"])
    assert not mismatches, mismatches[:2]
    r = httpx.post(
        f"{service.url}/v1/score",
        headers=_auth("score"),
        timeout=30,
        json=_json({"lead": refused, "events": [], "as_of": AS_OF}),
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == [
        "body",
        "lead",
    ]  # no consent, no score
    assert len(tiers) >= 3  # the sample spans the tiers, so the comparison is not trivial


def _batch_counts(url: str) -> tuple[int, int]:
    text = httpx.get(f"{url}/metrics").text
    values = dict(line.split(" ", 1) for line in text.splitlines() if line.startswith("prox_score_batch"))
    return int(values.get("prox_score_batches_total", 0)), int(values.get("prox_score_batch_leads_total", 0))


def test_concurrent_requests_are_batched_and_each_answer_equals_the_batch_path(served, parity_cases):
    """16 clients at once: the service coalesces their leads into shared passes of the feature
    code and one booster call per pass, and every lead still gets exactly its own answer."""
    import asyncio

    *_, service = served
    cases, _ = parity_cases
    cases = cases[:400]
    batches_before, leads_before = _batch_counts(service.url)

    async def run() -> list[tuple[str, int, dict]]:
        queue = list(reversed(cases))
        out = []
        async with httpx.AsyncClient(base_url=service.url, headers=_auth("score"), timeout=60) as client:

            async def worker() -> None:
                while queue:
                    lid, body, want = queue.pop()
                    r = await client.post("/v1/score", json=body)
                    out.append(
                        (lid, r.status_code, _mismatch(r.json(), want) if r.status_code == 200 else r.text)
                    )

            await asyncio.gather(*(worker() for _ in range(16)))
        return out

    out = asyncio.run(run())
    assert len(out) == len(cases) and all(status == 200 for _, status, _ in out), out[:2]
    mismatches = [(lid, diff) for lid, _, diff in out if diff]
    assert not mismatches, mismatches[:2]
    batches, leads = _batch_counts(service.url)
    assert leads - leads_before == len(cases)
    assert batches - batches_before < len(cases)  # some requests shared a pass


def _consents(lead: dict) -> bool:
    return bool(lead["consent_processing"]) and not lead["opted_out"]


def _lead_payload(leads: pa.Table, world) -> tuple[dict, list[dict]]:
    """A lead known before AS_OF with a handful of events before it."""
    by_lead = {r["lead_id"]: r for r in leads.to_pylist()}
    evs = defaultdict(list)
    for e in world.activities.to_pylist():
        if e["occurred_at"] < AS_OF:
            evs[e["lead_id"]].append(e)
    lid = next(
        lid
        for lid, es in sorted(evs.items())
        if len(es) >= 5 and by_lead[lid]["created_at"] < AS_OF and _consents(by_lead[lid])
    )
    return by_lead[lid], evs[lid]


def test_acknowledged_events_survive_kill_9_and_duplicates_count_once(served):
    settings, world, leads, _ = served
    lead, evs = _lead_payload(leads, world)
    service = Service(settings.data_dir, settings.data_dir / "serve" / "durable.sqlite").start()
    try:
        with httpx.Client(base_url=service.url, headers=_auth("ingest"), timeout=30) as client:
            r = client.post("/v1/events", json=_json({"leads": [lead], "events": evs[:-1], "as_of": AS_OF}))
            assert r.status_code == 200, r.text
            assert r.json()["accepted"] == len(evs) - 1 and r.json()["duplicates"] == 0
            r = client.post("/v1/events", json=_json({"event": evs[-1], "as_of": AS_OF}))  # a single event
            assert r.json()["accepted"] == 1
            before = r.json()["scored"][0]
        service.kill9()  # no shutdown, no flush: only what was committed before the 200 exists
        service.start()
        with httpx.Client(base_url=service.url, timeout=30) as client:
            r = client.post(
                "/v1/events", headers=_auth("ingest"), json=_json({"events": evs, "as_of": AS_OF})
            )
            assert r.status_code == 200, r.text
            assert (r.json()["accepted"], r.json()["duplicates"]) == (
                0,
                len(evs),
            )  # every event was kept, once
            assert r.json()["scored"] == []  # nothing new: nothing re-scored
            # the stored state scores like the same lead sent with its events explicitly
            stored = client.post(
                "/v1/score",
                headers=_auth("score"),
                json=_json({"lead": lead, "as_of": AS_OF, "include_features": True}),
            ).json()
            explicit = client.post(
                "/v1/score",
                headers=_auth("score"),
                json=_json({"lead": lead, "events": evs, "as_of": AS_OF, "include_features": True}),
            ).json()
            assert stored == explicit  # same features (every event once) and same score
            assert (stored["probability"], stored["tier"]) == (before["probability"], before["tier"])
    finally:
        service.stop()


def test_concurrent_webhooks_share_commits_count_each_event_once_and_survive_kill_9(served):
    """32 webhook calls at once (each event sent twice, by two callers): the service commits
    them in groups, acknowledges each after its group's commit, counts every event once, and
    kill -9 right after the last answer loses none of them."""
    import asyncio

    settings, world, leads, _ = served
    lead, evs = _lead_payload(leads, world)
    service = Service(settings.data_dir, settings.data_dir / "serve" / "grouped.sqlite").start()
    try:
        r = httpx.post(
            f"{service.url}/v1/events", headers=_auth("ingest"), json=_json({"leads": [lead], "as_of": AS_OF})
        )
        assert r.status_code == 200, r.text
        calls = [_json({"event": e, "as_of": AS_OF}) for e in evs[:16] for _ in range(2)]

        async def run() -> list[dict]:
            async with httpx.AsyncClient(base_url=service.url, headers=_auth("ingest"), timeout=60) as c:
                answers = await asyncio.gather(*(c.post("/v1/events", json=body) for body in calls))
            assert all(a.status_code == 200 for a in answers), answers[0].text
            return [a.json() for a in answers]

        answers = asyncio.run(run())
        assert sum(a["accepted"] for a in answers) == 16 and sum(a["duplicates"] for a in answers) == 16
        counters = dict(
            line.split(" ", 1)
            for line in httpx.get(f"{service.url}/metrics").text.splitlines()
            if line.startswith("prox_ingest_")
        )
        assert int(counters["prox_ingest_requests_total"]) == 33  # the lead upsert and 32 webhooks
        assert int(counters["prox_ingest_commits_total"]) < 33  # ... in fewer commits
        assert all(a["scored"][0]["lead_id"] == lead["lead_id"] for a in answers if a["accepted"])
        service.kill9()
        service.start()
        r = httpx.post(
            f"{service.url}/v1/events", headers=_auth("ingest"), timeout=30, json=_json({"events": evs[:16]})
        )
        assert (r.json()["accepted"], r.json()["duplicates"]) == (0, 16)  # all 16 were durable
    finally:
        service.stop()


def test_champion_switch_under_load_fails_no_request(served):
    from mlflow import MlflowClient

    settings, world, leads, service = served
    lead, evs = _lead_payload(leads, world)
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    old = client.get_model_version_by_alias(settings.model_name, "champion")
    new = client.create_model_version(settings.model_name, old.source, run_id=old.run_id)
    body = _json({"lead": lead, "events": evs, "as_of": AS_OF})
    seen: list[tuple[int, str]] = []
    errors: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=service.url, headers=_auth("score"), timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/score", json=body)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                    continue
                seen.append((r.status_code, r.json().get("model_version")))

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    try:
        while len(seen) < 100 and time.monotonic() < deadline and not errors:
            time.sleep(0.01)
        client.set_registered_model_alias(settings.model_name, "champion", new.version)
        r = httpx.post(f"{service.url}/v1/admin/reload", headers=_auth("admin"), timeout=60)
        assert r.status_code == 200 and r.json()["model_version"] == str(new.version), r.text
        switched_at = len(seen)
        while len(seen) < switched_at + 100 and time.monotonic() < deadline and not errors:
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
        client.set_registered_model_alias(settings.model_name, "champion", old.version)
        httpx.post(f"{service.url}/v1/admin/reload", headers=_auth("admin"), timeout=60)
    assert not errors and {s for s, _ in seen} == {200}
    versions = [v for _, v in seen]
    assert set(versions) == {str(old.version), str(new.version)}
    assert set(versions[switched_at + 8 :]) == {str(new.version)}  # after the swap only the new one answers
    metrics = httpx.get(f"{service.url}/metrics").text
    assert "prox_model_switches" in metrics


def test_auth_validation_size_limit_and_metrics(served):
    settings, world, leads, service = served
    lead, evs = _lead_payload(leads, world)
    good = _json({"lead": lead, "events": evs[:3], "as_of": AS_OF})
    with httpx.Client(base_url=service.url, timeout=30) as c:
        assert c.post("/v1/score", json=good).status_code == 401
        assert c.post("/v1/score", json={"lead": {}}).status_code == 401  # no token: no validation hints
        assert c.post("/v1/score", json=good, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert (
            c.post("/v1/events", json={"events": good["events"]}, headers=_auth("score")).status_code == 403
        )
        assert c.post("/v1/admin/reload", headers=_auth("ingest")).status_code == 403
        assert c.post("/v1/score", json=good, headers=_auth("admin")).status_code == 200  # admin may do all

        bad_event = {**good["events"][0], "channel": "pigeon"}
        r = c.post("/v1/events", json={"events": [good["events"][1], bad_event]}, headers=_auth("ingest"))
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "events", 1, "channel"]
        r = c.post(
            "/v1/score",
            json={**good, "lead": {**good["lead"], "email": "jane@example.com"}},
            headers=_auth("score"),
        )  # raw PII is refused, not stored
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "lead", "email"]
        r = c.post(
            "/v1/score",
            json={**good, "lead": {**good["lead"], "created_at": "yesterday"}},
            headers=_auth("score"),
        )
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "lead", "created_at"]
        r = c.post(
            "/v1/score",
            content=b'{"pad": "' + b"x" * (5 * 1024 * 1024) + b'"}',
            headers={**_auth("score"), "content-type": "application/json"},
        )
        assert r.status_code == 413
        spec = c.get("/openapi.json").json()
        assert {"/v1/score", "/v1/events", "/v1/admin/reload"} <= set(spec["paths"])
        metrics = c.get("/metrics").text
    assert 'prox_http_requests_total{method="POST",route="/v1/score",status="200"}' in metrics
    assert 'prox_http_requests_total{method="POST",route="/v1/score",status="401"}' in metrics
    assert 'prox_http_request_duration_seconds_bucket{route="/v1/score",le="+Inf"}' in metrics
    assert f'prox_model_info{{model_name="{settings.model_name}",model_version=' in metrics
    log = "".join(p.read_text(errors="replace") for p in settings.data_dir.glob("serve-*.log"))
    assert "jane@example.com" not in log and not any(t in log for t in TOKENS.values())


def test_a_lead_rising_to_tier_a_is_pushed_to_its_crm(served, sandbox_session, monkeypatch):
    from features.build import build_features
    from models.score import load_scorer
    from plugins.crm import open_connectors
    from sandbox import server
    from tests.integration.test_crm_push import _hubspot_values, _salesforce_values

    settings, world, leads, _ = served
    info = sandbox_session
    store = server.open_store(info.directory)
    try:
        store.reset()
    finally:
        store.close()
    server.load_tables(info.directory, world.raw_leads, world.activities.slice(0, 0))
    batch, _ = build_features(leads, world.activities, world.status_history, AS_OF)
    tiers = load_scorer(settings.tracking_uri, settings.model_name).score_table(batch).tier
    by_lead = {r["lead_id"]: r for r in leads.to_pylist()}
    lid = next(
        lid
        for lid, t in zip(batch["lead_id"].to_pylist(), tiers, strict=True)
        if t == "A" and _consents(by_lead[lid])
    )  # a consenting lead the batch puts in tier A
    lead = by_lead[lid]
    evs = [e for e in world.activities.to_pylist() if e["lead_id"] == lid]
    hist = [h for h in world.status_history.to_pylist() if h["lead_id"] == lid]
    env = {**info.connection_env(), "PROX_SERVE_PUSH": "1"}
    service = Service(settings.data_dir, settings.data_dir / "serve" / "push.sqlite", env).start()
    try:
        r = httpx.post(
            f"{service.url}/v1/events",
            headers=_auth("ingest"),
            timeout=30,
            json=_json({"leads": [lead], "events": evs, "status_history": hist, "as_of": AS_OF}),
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["queued_pushes"] == [lid] and body["scored"][0]["tier"] == "A"
        for key, value in info.connection_env().items():
            monkeypatch.setenv(key, value)
        reader = open_connectors(settings.data_dir / "reader")[lid.split(":")[0]]
        read = _salesforce_values if lid.startswith("salesforce") else _hubspot_values
        deadline = time.monotonic() + 60
        while lid not in (values := read(reader)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert values[lid][:3] == (body["scored"][0]["score"], "A", body["scored"][0]["probability"])
        assert len(values) == 1  # only the lead that rose to A was pushed
        # the same events again change nothing and queue nothing
        again = httpx.post(
            f"{service.url}/v1/events",
            headers=_auth("ingest"),
            timeout=30,
            json=_json({"events": evs, "as_of": AS_OF}),
        ).json()
        assert again["queued_pushes"] == [] and again["accepted"] == 0
    finally:
        service.stop()
