"""Connector parts without a CRM: retries, deduplication, score validation, the ledger,
credentials and the flat-file mapping (on the real bank-marketing export)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pytest

from features.contract import ACTIVITIES, SCORES, conform
from features.lake import Lake
from plugins.crm.base import ConnectorError, dedupe, format_reasons, score_records
from plugins.crm.retry import FAIL, REFRESH, RETRY, CallStats, RetriesExhausted, RetryPolicy, call_with_retry
from plugins.crm.state import ConnectorState, PushedValues

pytestmark = [pytest.mark.unit]
# ../shared/ beside the checkout holds the product's reference datasets
BANK = next(
    (
        p
        for p in (
            Path(__file__).resolve().parents[3] / "shared" / "data" / "bank-marketing" / "bank-full.csv",
            Path("/work/shared/data/bank-marketing/bank-full.csv"),
        )
        if p.exists()
    ),
    Path("bank-full.csv (not found beside the checkout)"),
)


class Flaky(Exception):
    def __init__(self, kind: str, delay: float | None = None) -> None:
        super().__init__(kind)
        self.kind, self.delay = kind, delay


def _policy(waits: list[float]) -> RetryPolicy:
    return RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=8.0, seed=1, sleep=waits.append)


def test_retry_honours_retry_after_exactly_and_jitters_otherwise() -> None:
    answers = iter([Flaky(RETRY, 7.0), Flaky(RETRY), Flaky(RETRY), "ok"])
    waits: list[float] = []
    stats = CallStats()

    def call() -> str:
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    assert call_with_retry(call, lambda e: (e.kind, e.delay), _policy(waits), stats, what="x") == "ok"
    assert (
        waits[0] == 7.0 and all(0 <= w <= 8.0 for w in waits[1:]) and stats.calls == 4 and stats.retries == 3
    )


def test_retry_refreshes_credentials_and_stops_on_final_errors() -> None:
    refreshed = []
    answers = iter([Flaky(REFRESH), "ok"])

    def call() -> str:
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    assert (
        call_with_retry(
            call,
            lambda e: (e.kind, None),
            _policy([]),
            CallStats(),
            what="x",
            refresh=lambda: refreshed.append(1),
        )
        == "ok"
    )
    assert refreshed == [1]
    with pytest.raises(Flaky):
        call_with_retry(
            lambda: (_ for _ in ()).throw(Flaky(FAIL)),
            lambda e: (e.kind, None),
            _policy([]),
            CallStats(),
            what="x",
        )
    with pytest.raises(RetriesExhausted, match="gave up after 5 attempts"):
        call_with_retry(
            lambda: (_ for _ in ()).throw(Flaky(RETRY)),
            lambda e: (e.kind, None),
            _policy([]),
            CallStats(),
            what="x",
        )


def test_dedupe_keeps_the_latest_version_of_each_record() -> None:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    rows = [
        {
            "event_id": "e1",
            "lead_id": "hubspot:1",
            "source": "hubspot",
            "occurred_at": t0,
            "channel": "web",
            "action": "visit",
            "detail": "/a",
            "value": None,
        },
        {
            "event_id": "e1",
            "lead_id": "hubspot:1",
            "source": "hubspot",
            "occurred_at": t0 + dt.timedelta(1),
            "channel": "web",
            "action": "visit",
            "detail": "/b",
            "value": None,
        },
    ]
    out = dedupe(conform(pa.Table.from_pylist(rows, schema=ACTIVITIES), ACTIVITIES), "activities")
    assert out.num_rows == 1 and out["detail"].to_pylist() == ["/b"]


def _scores(rows: list[dict]) -> pa.Table:
    base = {
        "scored_at": dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
        "model_name": "m",
        "model_version": "3",
        "probability": 0.5,
        "score": 50,
        "tier": "B",
        "reasons_positive": ["a"],
        "reasons_negative": [],
        "run_id": "r",
    }
    return conform(pa.Table.from_pylist([{**base, **r} for r in rows], schema=SCORES), SCORES)


def test_score_records_take_the_latest_score_and_name_bad_values() -> None:
    later = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
    records, problems = score_records(
        _scores(
            [
                {"lead_id": "hubspot:1"},
                {"lead_id": "hubspot:1", "scored_at": later, "score": 80, "tier": "A"},
                {"lead_id": "hubspot:2", "tier": "E"},
                {"lead_id": "hubspot:3", "probability": 1.5},
                {"lead_id": "salesforce:00Q1", "score": 0},
            ]
        ),
        "hubspot",
    )
    assert [(r.lead_id, r.score, r.tier) for r in records] == [("hubspot:1", 80, "A")]
    assert set(problems) == {"hubspot:2", "hubspot:3"}
    assert "hubspot:2: tier 'E'" in problems["hubspot:2"] and "probability 1.5" in problems["hubspot:3"]
    assert format_reasons(["Visited pricing"], ["No opens"]) == "+ Visited pricing\n- No opens"


def test_ledger_keeps_in_flight_batches_until_their_outcome_is_recorded(tmp_path: Path) -> None:
    state = ConnectorState.for_data_dir(tmp_path)
    state.begin_batch("hubspot", "b1", "run", ["hubspot:1", "hubspot:2"])
    assert state.inflight("hubspot") == {"b1": ["hubspot:1", "hubspot:2"]}
    values = PushedValues(50, "B", 0.5, "3", "2026-11-02T00:00:00+00:00")
    state.finish_batch(
        "hubspot",
        "b1",
        "run",
        [("hubspot:1", "pushed", None, 1), ("hubspot:2", "rejected", "why", 1)],
        [("hubspot:1", values)],
    )
    reopened = ConnectorState.for_data_dir(tmp_path)  # durable
    assert reopened.inflight("hubspot") == {} and reopened.pushed_values("hubspot") == {"hubspot:1": values}
    assert reopened.outcomes("run", "hubspot") == {
        "hubspot:1": ("pushed", None),
        "hubspot:2": ("rejected", "why"),
    }


def test_credentials_come_from_the_environment_or_an_airflow_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from plugins.crm import credentials

    with pytest.raises(ConnectorError, match="PROX_SALESFORCE_URL"):
        credentials.salesforce_from_env({})
    sf = credentials.salesforce_from_env(
        {
            "PROX_SALESFORCE_URL": "https://x.my.salesforce.com/",
            "PROX_SALESFORCE_CLIENT_ID": "id",
            "PROX_SALESFORCE_CLIENT_SECRET": "s3cret",
        }
    )
    assert sf.url == "https://x.my.salesforce.com" and "s3cret" not in repr(sf)
    monkeypatch.setenv(
        "AIRFLOW_CONN_PROX_HUBSPOT",
        json.dumps(
            {
                "conn_type": "http",
                "host": "https://api.hubapi.com",
                "password": "pat-na1-xyz",
                "extra": {"ca_bundle": "/etc/ca.pem"},
            }
        ),
    )
    hs = credentials.resolve_hubspot("prox_hubspot")
    assert (hs.url, hs.access_token, hs.ca_bundle) == ("https://api.hubapi.com", "pat-na1-xyz", "/etc/ca.pem")
    with pytest.raises(ConnectorError, match="not found"):
        credentials.resolve_salesforce("prox_missing")


@pytest.mark.skipif(not BANK.exists(), reason="bank-marketing data not present")
def test_flat_file_maps_the_bank_marketing_export_to_raw_leads(tmp_path: Path) -> None:
    import shutil

    from plugins.crm.flatfile import BANK_MARKETING_MAPPING, FlatFileSource

    (tmp_path / "in").mkdir()
    shutil.copy(BANK, tmp_path / "in" / "bank-full.csv")
    state = ConnectorState.for_data_dir(tmp_path)
    source = FlatFileSource(
        tmp_path / "in", "raw_leads", BANK_MARKETING_MAPPING, state, delimiter=";", name="file.bank"
    )
    lake = Lake(tmp_path / "lake")
    (result,) = source.extract(lake, dt.date(2026, 11, 2))
    leads = lake.read_all("raw", "raw_leads")
    assert result.rows == leads.num_rows == 45_211
    assert leads["converted"].to_pylist().count(True) == 5_289  # "y" == "yes" in the UCI file
    assert set(leads["title"].to_pylist()) >= {"management", "technician", "blue-collar"}
    # the same file is not read twice; a new export is
    (again,) = source.extract(lake, dt.date(2026, 11, 3))
    assert again.rows == 0


def test_flat_file_mapping_errors_name_the_column(tmp_path: Path) -> None:
    from plugins.crm.flatfile import FlatFileSource, web_tracking_source

    with pytest.raises(ConnectorError, match="missing"):
        FlatFileSource(tmp_path, "activities", {"event_id": "id"}, ConnectorState.for_data_dir(tmp_path))
    (tmp_path / "x.csv").write_text("event_id,when\n1,2026-01-01T00:00:00Z\n")
    source = web_tracking_source(tmp_path, ConnectorState.for_data_dir(tmp_path))
    with pytest.raises(ConnectorError, match=r"x.csv: mapping of 'lead_id' needs column 'crm'"):
        source.read(tmp_path / "x.csv")


def test_the_ledger_keeps_the_reasons_text_and_upgrades_an_older_ledger(tmp_path: Path) -> None:
    import sqlite3

    from plugins.crm.base import parse_reasons

    path = tmp_path / "state" / "crm_state.db"
    path.parent.mkdir(parents=True)
    old = sqlite3.connect(path)  # the ledger as written before reasons were kept
    old.execute(
        "CREATE TABLE pushed (crm TEXT NOT NULL, lead_id TEXT NOT NULL, score INTEGER NOT NULL, tier TEXT NOT NULL,"
        " probability REAL NOT NULL, model_version TEXT NOT NULL, scored_at TEXT NOT NULL, pushed_at TEXT NOT NULL,"
        " PRIMARY KEY (crm, lead_id)) WITHOUT ROWID"
    )
    old.execute("INSERT INTO pushed VALUES ('hubspot','hubspot:1',40,'C',0.1,'2','2026-11-01','2026-11-01')")
    old.commit()
    old.close()
    state = ConnectorState.for_data_dir(tmp_path)
    assert state.pushed_values("hubspot")["hubspot:1"].reasons is None
    text = format_reasons(["visited pricing twice", "works in software"], ["no opens"])
    values = PushedValues(50, "B", 0.5, "3", "2026-11-02T00:00:00+00:00", text)
    state.begin_batch("hubspot", "b1", "run", ["hubspot:2"])
    state.finish_batch("hubspot", "b1", "run", [("hubspot:2", "pushed", None, 1)], [("hubspot:2", values)])
    assert state.pushed_values("hubspot", ["hubspot:2"]) == {"hubspot:2": values}
    assert parse_reasons(text) == (["visited pricing twice", "works in software"], ["no opens"])
