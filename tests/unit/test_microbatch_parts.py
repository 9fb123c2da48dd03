"""The micro-batch's extraction on the connectors' engine: its own watermarks, reruns reuse."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from features.contract import ACTIVITIES
from features.lake import Lake
from pipelines.microbatch import Interval, extract_increment
from plugins.crm.base import Page, extract_table
from plugins.crm.state import ConnectorState

pytestmark = pytest.mark.unit
T0 = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)


class FakeEvents:
    """A CRM engagement stream: events stamped by occurrence, read since a stamp."""

    name = "fake.events"
    table = "activities"

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.reads = 0

    def add(self, n: int, start: int) -> None:
        for i in range(start, start + n):
            self.rows.append(
                {
                    "event_id": f"e{i:04d}",
                    "lead_id": f"hubspot:{i % 7}",
                    "source": "hubspot",
                    "occurred_at": T0 + dt.timedelta(minutes=i),
                    "channel": "web",
                    "action": "visit",
                    "detail": "/pricing",
                    "value": None,
                }
            )

    def pages(self, since, resume):
        self.reads += 1
        rows = [r for r in self.rows if since is None or r["occurred_at"].isoformat() >= since]
        if rows:
            yield Page(
                pa.Table.from_pylist(rows, schema=ACTIVITIES),
                [r["event_id"] for r in rows],
                [r["occurred_at"].isoformat() for r in rows],
            )


def test_increments_start_at_the_nightly_watermark_and_never_move_it(tmp_path):
    state, lake, stream = ConnectorState(tmp_path / "state.db"), Lake(tmp_path / "lake"), FakeEvents()
    stream.add(10, 0)
    nightly = extract_table(state, lake, "hubspot", "activities", [stream], T0.date())
    assert nightly.rows == 10
    nightly_mark = state.watermark("fake.events")

    stream.add(3, 10)  # engagement after the nightly extraction
    first = Interval.of(T0 + dt.timedelta(minutes=30), "mb-1")
    got = extract_increment(state, lake, "hubspot", [stream], first)
    assert got.rows == 3 and got.source == "hubspot.mb-093000"
    assert sorted(lake.read_all("raw", "activities", sources=[got.source])["event_id"].to_pylist()) == [
        "e0010",
        "e0011",
        "e0012",
    ]
    assert state.watermark("fake.events") == nightly_mark  # the nightly still gets every event

    reads = stream.reads
    again = extract_increment(state, lake, "hubspot", [stream], first)  # a retry of the interval
    assert again.reused and again.rows == 3 and stream.reads == reads  # same partition, no CRM call

    stream.add(2, 13)
    second = Interval.of(T0 + dt.timedelta(minutes=45), "mb-2")
    assert extract_increment(state, lake, "hubspot", [stream], second).rows == 2  # only what is new

    later = extract_table(state, lake, "hubspot", "activities", [stream], T0.date() + dt.timedelta(days=1))
    assert later.rows == 5  # the next nightly extracts everything since its own watermark


def test_interval_identity():
    run = Interval.of("2026-06-01T09:15:00+00:00", "r")
    assert run.as_of == dt.datetime(2026, 6, 1, 9, 15, tzinfo=dt.UTC) and run.label == "mb-091500"
    assert run.context().as_of == run.as_of and run.context().run_date == dt.date(2026, 6, 1)
    assert Interval.of(dt.datetime(2026, 6, 1, 9, 15), "r").as_of.tzinfo is not None  # naive means UTC
