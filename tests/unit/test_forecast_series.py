"""Weekly series from canonical leads: week boundaries, point-in-time cut-off, segments, errors."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from models.forecast.series import SeriesError, build_weekly_series, region_of, series_frame

pytestmark = pytest.mark.unit

UTC = dt.UTC


def _leads(rows: list[dict]) -> pd.DataFrame:
    base = {"converted_at": None, "converted": False, "lead_source": "Web", "country": "US"}
    df = pd.DataFrame([{**base, **r} for r in rows])
    for col in ("created_at", "converted_at", "updated_at"):
        if col in df:
            df[col] = pd.to_datetime(df[col], utc=True)
    return df


def _by_id(series):
    return {s.series_id: s for s in series}


def _weekly_world() -> pd.DataFrame:
    """One lead every day for 20 weeks from Monday 2026-01-05; every 4th converts 10 days later."""
    rows = []
    for i in range(140):
        created = dt.datetime(2026, 1, 5, 12, tzinfo=UTC) + dt.timedelta(days=i)
        conv = created + dt.timedelta(days=10) if i % 4 == 0 else None
        rows.append(
            {
                "lead_id": f"salesforce:{i}",
                "created_at": created,
                "converted": conv is not None,
                "converted_at": conv,
                "lead_source": ["Web", "Event", "web "][i % 3],
                "country": ["US", "germany", None][i % 3],
            }
        )
    return _leads(rows)


def test_counts_complete_weeks_only_and_labels_them_by_monday():
    s = _by_id(build_weekly_series(_weekly_world(), as_of=dt.date(2026, 3, 4)))  # a Wednesday
    leads = s["leads/overall"].values
    # weeks of 2026-01-05 .. 2026-02-23 are complete before Wed 2026-03-04; that week is not
    assert leads.index[0] == pd.Timestamp("2026-01-05")
    assert leads.index[-1] == pd.Timestamp("2026-02-23")
    assert (leads == 7).all()
    assert all(ts.weekday() == 0 for ts in leads.index)


def test_nothing_after_as_of_leaks_in():
    df = _weekly_world()
    early = _by_id(build_weekly_series(df, as_of=dt.date(2026, 2, 2)))
    # a conversion after as_of must not count, even in a week before it
    late_conv = df.copy()
    late_conv.loc[5, ["converted", "converted_at"]] = [True, pd.Timestamp("2026-02-10", tz="UTC")]
    again = _by_id(build_weekly_series(late_conv, as_of=dt.date(2026, 2, 2)))
    pd.testing.assert_series_equal(early["conversions/overall"].values, again["conversions/overall"].values)


def test_conversions_by_week_of_conversion_with_warm_up_dropped():
    s = _by_id(build_weekly_series(_weekly_world(), as_of=dt.date(2026, 5, 25)))
    conv = s["conversions/overall"]
    assert conv.notes and "warm-up" in conv.notes[0]
    assert conv.values.index[0] > s["leads/overall"].values.index[0]
    assert conv.values.sum() > 0


def test_segments_are_normalised_and_small_ones_pooled():
    s = _by_id(build_weekly_series(_weekly_world(), as_of=dt.date(2026, 5, 25), max_segments=1))
    # "Web" and "web " are one source; Event is pooled into "other"
    assert "leads/lead_source=web" in s and "leads/lead_source=other" in s
    assert "leads/region=north_america" in s  # US
    total = s["leads/overall"].values.sum()
    assert s["leads/lead_source=web"].values.sum() + s["leads/lead_source=other"].values.sum() == total


def test_region_mapping_handles_codes_names_and_missing():
    assert region_of(["US", "germany", None, "", "Atlantis"]) == [
        "north america",
        "europe",
        "unknown",
        "unknown",
        "other",
    ]


def test_incremental_extracts_keep_the_latest_state():
    df = _leads(
        [
            {"lead_id": "hubspot:1", "created_at": "2026-01-05T10:00Z", "updated_at": "2026-01-05T10:00Z"},
            {
                "lead_id": "hubspot:1",
                "created_at": "2026-01-05T10:00Z",
                "updated_at": "2026-01-20T10:00Z",
                "converted": True,
                "converted_at": "2026-01-20T10:00Z",
            },
            {"lead_id": "hubspot:2", "created_at": "2026-01-13T10:00Z", "updated_at": "2026-01-13T10:00Z"},
        ]
    )
    s = _by_id(build_weekly_series(df, as_of=dt.date(2026, 2, 2)))
    assert s["leads/overall"].values.sum() == 2
    frame = series_frame(list(s.values()))
    assert set(frame.columns) >= {"series_id", "week", "value"}


def test_bad_input_names_the_column_and_the_lead():
    df = _weekly_world()
    with pytest.raises(SeriesError, match=r"missing column.*country"):
        build_weekly_series(df.drop(columns="country"), as_of=dt.date(2026, 3, 1))
    df.loc[3, "created_at"] = pd.NaT
    with pytest.raises(SeriesError, match=r"created_at.*salesforce:3"):
        build_weekly_series(df, as_of=dt.date(2026, 3, 1))
    with pytest.raises(SeriesError, match="no lead created before"):
        build_weekly_series(_weekly_world(), as_of=dt.date(2025, 1, 1))
