"""Parts of the hot scoring service that need no server: tokens, online state, metrics."""

from __future__ import annotations

import datetime as dt

import pytest

from serve.auth import TokenError, TokenStore, allowed, hash_token, new_token
from serve.metrics import Metrics
from serve.sqlite_store import OnlineState

pytestmark = pytest.mark.unit
T0 = dt.datetime(2026, 5, 1, 12, tzinfo=dt.UTC)


def test_tokens_are_stored_hashed_and_roles_decide_401_403(tmp_path):
    path = tmp_path / "tokens"
    scorer = new_token(path, "score", "crm-webhook")
    admin = new_token(path, "admin")
    text = path.read_text()
    assert scorer not in text and admin not in text and hash_token(scorer) in text  # only hashes at rest
    store = TokenStore.load(path, environ={})
    assert allowed(store, f"Bearer {scorer}", "score") == 200
    assert allowed(store, f"Bearer {scorer}", "ingest") == 403
    assert allowed(store, f"Bearer {admin}", "ingest") == 200  # admin implies every role
    assert allowed(store, "Bearer wrong", "score") == 401
    assert allowed(store, None, "score") == 401
    assert allowed(store, scorer, "score") == 401  # not a bearer header
    env = TokenStore.load(
        None, environ={"PROX_SERVE_TOKENS": f"{hash_token('t1')} ingest;{hash_token('t2')} score"}
    )
    assert allowed(env, "Bearer t1", "ingest") == 200 and allowed(env, "Bearer t2", "ingest") == 403


def test_malformed_token_entries_are_named_without_echoing_them():
    with pytest.raises(TokenError, match="entry 2: roles must be among") as err:
        TokenStore.parse(f"{hash_token('a')} score\n{hash_token('b')} superuser", origin="tokens")
    assert hash_token("b") not in str(err.value)
    with pytest.raises(TokenError, match="entry 1: expected"):
        TokenStore.parse("plaintext-token score", origin="tokens")


def _event(i: int, lead: str = "hubspot:1") -> dict:
    return {
        "event_id": f"e{i}",
        "lead_id": lead,
        "source": "hubspot",
        "occurred_at": T0 + dt.timedelta(minutes=i),
        "channel": "web",
        "action": "visit",
        "detail": "/pricing",
        "value": None,
    }


def test_state_dedupes_by_event_id_and_survives_reopening(tmp_path):
    lead = {
        "lead_id": "hubspot:1",
        "source": "hubspot",
        "crm_id": "1",
        "created_at": T0 - dt.timedelta(days=9),
        "updated_at": T0,
        "company_domain": "WWW.Acme.com/about",
    }
    state = OnlineState(tmp_path / "s.sqlite")
    assert state.ingest([lead], [_event(1), _event(2)]) == (2, 0, {"hubspot:1"})
    assert state.ingest([], [_event(2), _event(3), _event(3)]) == (1, 2, {"hubspot:1"})
    state.close()
    again = OnlineState(tmp_path / "s.sqlite")
    assert again.count_events("hubspot:1") == 3
    assert sorted(again.events(["hubspot:1"])["event_id"].to_pylist()) == ["e1", "e2", "e3"]
    stored, tier = again.lead("hubspot:1")
    assert stored["created_at"] == lead["created_at"] and tier is None
    peer = {**lead, "lead_id": "hubspot:2", "crm_id": "2", "company_domain": "acme.com"}
    again.ingest([peer], [])
    assert [p["lead_id"] for p in again.peers("hubspot:1", "acme.com")] == ["hubspot:2"]  # same account


def test_metrics_render_prometheus_text():
    m = Metrics()
    m.observe("POST", "/v1/score", 200, 0.0007)
    m.observe("POST", "/v1/score", 200, 3.0)
    text = m.render("prox-lead-scoring", "7", False, {"push_outbox": 0})
    assert 'prox_http_requests_total{method="POST",route="/v1/score",status="200"} 2' in text
    assert 'prox_http_request_duration_seconds_bucket{route="/v1/score",le="0.001"} 1' in text
    assert 'prox_http_request_duration_seconds_bucket{route="/v1/score",le="+Inf"} 2' in text
    assert 'prox_model_info{model_name="prox-lead-scoring",model_version="7",cold_start="false"} 1' in text
