from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

from features.contract import ACTIVITIES, LEADS, RAW_LEADS, TABLES, ContractError, conform
from features.lake import Lake, LakeError, Partition

pytestmark = pytest.mark.unit

UTC = dt.UTC


def _activities(n: int = 3) -> pa.Table:
    return pa.table(
        {
            "event_id": [f"e{i}" for i in range(n)],
            "lead_id": ["hubspot:1"] * n,
            "source": ["hubspot"] * n,
            "occurred_at": [dt.datetime(2026, 1, 1, tzinfo=UTC)] * n,
            "channel": ["web"] * n,
            "action": ["visit"] * n,
            "detail": ["/pricing"] * n,
            "value": [1.0] * n,
        }
    )


def test_every_table_has_timestamps_in_utc():
    for name, schema in TABLES.items():
        for field in schema:
            if pa.types.is_timestamp(field.type):
                assert field.type.tz == "UTC", f"{name}.{field.name}"


def test_raw_pii_never_in_canonical_leads():
    assert {"first_name", "last_name", "email", "phone"} <= set(RAW_LEADS.names)
    assert not {"first_name", "last_name", "email", "phone"} & set(LEADS.names)


def test_conform_orders_and_casts_columns():
    table = _activities().select(
        ["value", "lead_id", "event_id", "source", "occurred_at", "channel", "action", "detail"]
    )
    out = conform(table, ACTIVITIES)
    assert out.schema.equals(ACTIVITIES, check_metadata=False)


def test_conform_names_missing_and_unexpected_columns():
    table = _activities().drop_columns(["channel"]).append_column("colour", pa.array(["x"] * 3))
    with pytest.raises(ContractError, match="activities.*missing: channel.*unexpected: colour"):
        conform(table, ACTIVITIES)


def test_conform_rejects_nulls_in_required_columns_and_bad_types():
    table = _activities().set_column(0, "event_id", pa.array(["a", None, "c"]))
    with pytest.raises(ContractError, match="activities.event_id: 1 null"):
        conform(table, ACTIVITIES)
    bad = _activities().set_column(7, "value", pa.array(["1.0", "lots", "2"]))
    with pytest.raises(ContractError, match="activities.value"):
        conform(bad, ACTIVITIES)


def test_lake_round_trip_and_manifest(tmp_path: Path):
    lake = Lake(tmp_path)
    part = Partition("raw", "activities", "hubspot", dt.date(2026, 1, 2))
    path = lake.write(_activities(5), part)
    assert path == tmp_path / "raw/activities/source=hubspot/run_date=2026-01-02"
    assert lake.read(part).num_rows == 5
    manifest = json.loads((path / "_manifest.json").read_text())
    assert manifest["rows"] == 5 and len(manifest["sha256"]) == 64
    assert lake.partitions("raw", "activities") == [part]


def test_lake_rewrite_is_identical_and_replaces(tmp_path: Path):
    lake = Lake(tmp_path)
    part = Partition("raw", "activities", "hubspot", dt.date(2026, 1, 2))
    lake.write(_activities(5), part)
    digest = lake.manifest(part)["sha256"]
    lake.write(_activities(5), part)
    assert lake.manifest(part)["sha256"] == digest  # idempotent rewrite
    lake.write(_activities(2), part)
    assert lake.read(part).num_rows == 2
    assert [p.name for p in lake.path(part).parent.iterdir()] == ["run_date=2026-01-02"]  # no leftovers


def test_a_failed_write_leaves_the_previous_partition_whole(tmp_path: Path, monkeypatch):
    lake = Lake(tmp_path)
    part = Partition("raw", "activities", "hubspot", dt.date(2026, 1, 2))
    lake.write(_activities(4), part)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        lake.write(_activities(9), part)
    monkeypatch.undo()
    assert lake.read(part).num_rows == 4
    assert not [p for p in lake.path(part).parent.iterdir() if p.name.startswith(".")]


def test_half_written_partitions_are_invisible(tmp_path: Path):
    lake = Lake(tmp_path)
    part = Partition("raw", "activities", "hubspot", dt.date(2026, 1, 3))
    lake.path(part).mkdir(parents=True)
    (lake.path(part) / "part-00000.parquet").write_bytes(b"PAR1 truncated")
    assert lake.partitions("raw", "activities") == []
    with pytest.raises(LakeError, match="no complete partition"):
        lake.read(part)


def test_unknown_zone_is_refused(tmp_path: Path):
    with pytest.raises(LakeError, match="unknown zone"):
        Lake(tmp_path).write(_activities(), Partition("bronze", "activities", "hubspot", dt.date(2026, 1, 1)))


def test_latest_per_key_keeps_the_newest_row_and_the_later_of_equals():
    from features.lake import latest_per_key

    table = pa.table({"lead_id": ["a", "b", "a", "a"], "updated_at": [1, 5, 3, 3], "v": [0, 1, 2, 3]})
    assert latest_per_key(table, "lead_id", "updated_at").to_pylist() == [
        {"lead_id": "a", "updated_at": 3, "v": 3},
        {"lead_id": "b", "updated_at": 5, "v": 1},
    ]
    assert latest_per_key(table.slice(0, 0), "lead_id", "updated_at").num_rows == 0
