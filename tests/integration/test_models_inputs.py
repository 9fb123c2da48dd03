"""The training set from the lake's clean zone equals the one from the world it was extracted from."""

from __future__ import annotations

import datetime as dt

import pyarrow.compute as pc
import pytest

pytestmark = pytest.mark.integration


def test_lake_and_world_sources_give_the_same_training_set(settings, tmp_path):
    from features.lake import Lake, Partition
    from pipelines.retrain import RunOptions, build_training_set, load_inputs, read_training_set
    from sandbox.world import WorldSpec, write_world

    world = tmp_path / "world"
    write_world(WorldSpec(n_leads=800, days=240, seed=2), world)
    inputs = load_inputs(settings, f"world:{world}")
    assert set(inputs.sources) == {"raw_leads", "activities", "status_history"}
    assert all(len(s["digest"]) == 64 for s in inputs.sources.values())
    assert "email" not in inputs.leads.column_names  # pseudonymised on the way in
    lake = Lake(settings.lake_dir)
    day = dt.date(2026, 11, 1)
    for name, table in (
        ("leads", inputs.leads),
        ("activities", inputs.activities),
        ("lead_status_history", inputs.status_history),
    ):
        for source in ("salesforce", "hubspot"):
            part = table.filter(pc.starts_with(table.column("lead_id"), f"{source}:"))
            lake.write(part, Partition("clean", name, source, day))
    options = RunOptions(every_days=30, lookback_days=120, horizon_days=60)
    from_world = build_training_set(settings, day, source=f"world:{world}", options=options)
    from_lake = build_training_set(settings, day, source="auto", options=options)
    assert from_lake["source"] == "lake" and from_lake["sources"]["leads"]["partitions"] == 2
    assert from_world["snapshots"] == from_lake["snapshots"]
    a = read_training_set(from_world).sort_by([("as_of", "ascending"), ("lead_id", "ascending")])
    b = read_training_set(from_lake).sort_by([("as_of", "ascending"), ("lead_id", "ascending")])
    assert a.num_rows == b.num_rows > 0
    assert a.column("label").to_pylist() == b.column("label").to_pylist()
    assert a.column("engagement_decayed").to_pylist() == b.column("engagement_decayed").to_pylist()
