"""The hot path's shortcuts give what the general path gives: same features, same JSON body."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pyarrow as pa
import pytest

import features.build as build
from features.build import build_features
from features.contract import ACTIVITIES, LEAD_STATUS_HISTORY, LEADS
from features.online import lead_features
from serve.app import _json
from serve.schemas import ScoreResponse
from tests.fixtures.synthetic_features import synthetic_inputs

pytestmark = pytest.mark.unit
AS_OF = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def _inputs() -> tuple[pa.Table, pa.Table, pa.Table]:
    leads, events, history = synthetic_inputs(60, 3_000, seed=5, end=AS_OF)
    return leads, events, history


def test_status_history_inline_equals_the_threaded_run(monkeypatch):
    leads, events, history = _inputs()
    assert history.num_rows > 0
    monkeypatch.setattr(build, "_PARALLEL_MIN_ROWS", 0)  # always a thread
    threaded, threaded_report = build_features(leads, events, history, AS_OF)
    monkeypatch.setattr(build, "_PARALLEL_MIN_ROWS", 10**12)  # always inline
    inline, inline_report = build_features(leads, events, history, AS_OF)
    assert inline.equals(threaded)
    assert inline_report.leads_without_status == threaded_report.leads_without_status


def test_online_features_with_no_status_rows_equal_an_empty_status_table():
    leads, events, _ = _inputs()
    lead = leads.slice(0, 1).to_pylist()[0]
    mine = events.filter(pa.compute.equal(events["lead_id"], lead["lead_id"])).to_pylist()
    a, _ = lead_features(lead, mine, AS_OF, status_history=[])
    b, _ = lead_features(lead, mine, AS_OF, status_history=LEAD_STATUS_HISTORY.empty_table())
    c, _ = lead_features(lead, pa.Table.from_pylist(mine, schema=ACTIVITIES), AS_OF)
    assert a == b == c
    assert LEADS.empty_table().num_rows == 0


def test_score_body_is_what_fastapi_response_model_would_send():
    from fastapi.responses import JSONResponse
    from fastapi.routing import serialize_response
    from fastapi.utils import create_model_field

    model = ScoreResponse(
        lead_id="hubspot:1",
        as_of=AS_OF,
        probability=1e-7,
        score=3,
        tier="D",
        reasons_positive=["visited the pricing page 3 times in the last 7 days", "é ✓"],
        reasons_negative=[],
        model_name="prox",
        model_version="4",
        features={"a": None, "b": 0.1 + 0.2, "c": "x", "d": 7},
    )
    field = create_model_field(name="r", type_=ScoreResponse, mode="serialization")
    content = asyncio.run(
        serialize_response(field=field, response_content=model, exclude_none=True, is_coroutine=True)
    )
    fastapi_body = json.loads(JSONResponse(content).body)
    ours = _json(model)
    assert ours.media_type == "application/json"
    assert json.loads(ours.body) == fastapi_body
    assert "features" in fastapi_body and fastapi_body["features"]["a"] is None
    no_features = model.model_copy(update={"features": None})
    assert "features" not in json.loads(_json(no_features).body)
