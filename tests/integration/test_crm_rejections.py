"""The sandbox rejects what the real APIs reject, the way they do, and the connectors report it.

Unknown fields and properties, oversized batches, bad values and bad auth, through the real
client libraries; plus per-record rejections reaching the push outcomes with the CRM's reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.contract import SCORES, conform
from plugins.crm.base import ConnectorError

pytestmark = [pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def loaded(sandbox, crm, small_world, tmp_path):
    crm.load(sandbox, small_world.raw_leads, small_world.activities)
    sf, hs, _ = crm.connectors(sandbox, tmp_path)
    return sandbox, sf, hs, small_world


def test_salesforce_rejects_like_the_real_api(loaded) -> None:
    from simple_salesforce import Salesforce
    from simple_salesforce.exceptions import SalesforceExpiredSession, SalesforceMalformedRequest

    sandbox, sf, _, world = loaded
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.call(lambda s: s.query("SELECT Id, Score__c FROM Lead"), "query")
    assert err.value.content[0]["errorCode"] == "INVALID_FIELD" and "No such column 'Score__c'" in str(
        err.value
    )
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.call(lambda s: s.query("SELECT Id FROM Leed"), "query")
    assert err.value.content[0]["errorCode"] == "INVALID_TYPE"

    ids = world.raw_leads.filter(pc.equal(world.raw_leads["source"], "salesforce"))["crm_id"].to_pylist()
    too_many = {
        "allOrNone": False,
        "records": [{"attributes": {"type": "Lead"}, "id": i, "ProX_Score__c": 5} for i in (ids * 2)[:201]],
    }
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.call(lambda s: s.restful("composite/sobjects", method="PATCH", json=too_many), "collections")
    assert err.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"

    unknown = {"allOrNone": False, "records": [{"attributes": {"type": "Lead"}, "id": ids[0], "Score__c": 5}]}
    with pytest.raises(SalesforceMalformedRequest) as err:
        sf.call(lambda s: s.restful("composite/sobjects", method="PATCH", json=unknown), "collections")
    assert err.value.content[0]["errorCode"] == "INVALID_FIELD"

    mixed = {
        "allOrNone": False,
        "records": [
            {"attributes": {"type": "Lead"}, "id": ids[0], "ProX_Tier__c": "Z"},
            {"attributes": {"type": "Lead"}, "id": ids[1], "ProX_Score__c": "high"},
            {"attributes": {"type": "Lead"}, "id": ids[2], "IsConverted": True},
            {"attributes": {"type": "Lead"}, "id": ids[3], "ProX_Score__c": 42},
        ],
    }
    answer = sf.call(lambda s: s.restful("composite/sobjects", method="PATCH", json=mixed), "collections")
    assert [r["success"] for r in answer] == [False, False, False, True]
    assert [r["errors"][0]["statusCode"] for r in answer[:3]] == [
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        "INVALID_FIELD_FOR_INSERT_UPDATE",
    ]
    all_or_none = {**mixed, "allOrNone": True}
    answer = sf.call(
        lambda s: s.restful("composite/sobjects", method="PATCH", json=all_or_none), "collections"
    )
    assert answer[3]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"

    # bad auth: a forged session, and a wrong client secret
    forged = Salesforce(instance_url=sandbox.salesforce_url, session_id="00D!forged", session=sf._http())
    with pytest.raises(SalesforceExpiredSession):
        forged.query("SELECT Id FROM Lead LIMIT 1")
    from dataclasses import replace

    from plugins.crm.salesforce import SalesforceConnector

    wrong = SalesforceConnector(replace(sf.credentials, client_secret="wrong"), sf.state)
    with pytest.raises(ConnectorError, match="invalid_client"):
        wrong.login()
    # the username-password flow: right password logs in, a wrong one is an invalid grant
    user = sandbox.credentials["salesforce"]
    SalesforceConnector(
        replace(sf.credentials, username=user["username"], password=user["password"]), sf.state
    ).login()
    with pytest.raises(ConnectorError, match="invalid_grant"):
        SalesforceConnector(
            replace(sf.credentials, username=user["username"], password="nope"), sf.state
        ).login()
    assert "usage" in sandbox.stats() and sf.sf.api_usage["api-usage"].total == 100_000  # Sforce-Limit-Info


def test_hubspot_rejects_like_the_real_api(loaded) -> None:
    from hubspot import HubSpot
    from hubspot.crm.contacts import BatchInputSimplePublicObjectBatchInput, PublicObjectSearchRequest

    sandbox, _, hs, world = loaded
    ids = world.raw_leads.filter(pc.equal(world.raw_leads["source"], "hubspot"))["crm_id"].to_pylist()
    api = hs.api("crm.contacts.batch_api")

    def status_of(fn) -> tuple[int, dict]:
        try:
            fn()
        except Exception as exc:
            import json

            return exc.status, json.loads(exc.body)
        return 200, {}

    oversized = BatchInputSimplePublicObjectBatchInput(
        inputs=[{"id": i, "properties": {"firstname": "x"}} for i in (ids * 2)[:101]]
    )
    status, body = status_of(lambda: api.update(oversized))
    assert status == 400 and body["category"] == "VALIDATION_ERROR" and "101" in body["message"]

    unknown = BatchInputSimplePublicObjectBatchInput(
        inputs=[{"id": ids[0], "properties": {"prox_scor": "5"}}]
    )
    status, body = status_of(lambda: api.update(unknown))
    assert status == 400 and "PROPERTY_DOESNT_EXIST" in body["message"]

    hs.ensure_properties()
    bad_option = BatchInputSimplePublicObjectBatchInput(
        inputs=[{"id": ids[0], "properties": {"prox_tier": "Z"}}]
    )
    status, body = status_of(lambda: api.update(bad_option))
    assert status == 400 and "INVALID_OPTION" in body["message"]
    read_only = BatchInputSimplePublicObjectBatchInput(
        inputs=[{"id": ids[0], "properties": {"createdate": "1"}}]
    )
    assert status_of(lambda: api.update(read_only))[0] == 400

    missing = BatchInputSimplePublicObjectBatchInput(
        inputs=[
            {"id": ids[0], "properties": {"prox_tier": "A"}},
            {"id": "999999999", "properties": {"prox_tier": "A"}},
        ]
    )
    answer, status, _ = api.update_with_http_info(missing)
    assert status == 207 and answer.errors[0].category == "OBJECT_NOT_FOUND"

    search = hs.api("crm.contacts.search_api")
    status, _ = status_of(lambda: search.do_search(PublicObjectSearchRequest(limit=201)))
    assert status == 400
    status, body = status_of(lambda: search.do_search(PublicObjectSearchRequest(limit=200, after="9900")))
    assert status == 400 and "10000" in body["message"]

    bad = HubSpot(access_token="pat-na1-forged", host=sandbox.hubspot_url, ssl_ca_cert=str(sandbox.cert))
    status, body = status_of(lambda: bad.crm.contacts.basic_api.get_page(limit=1))
    assert status == 401 and body["category"] == "INVALID_AUTHENTICATION"
    anonymous = HubSpot(host=sandbox.hubspot_url, ssl_ca_cert=str(sandbox.cert))
    assert status_of(lambda: anonymous.crm.contacts.basic_api.get_page(limit=1))[0] == 401


def test_push_records_each_rejection_with_the_crms_reason(loaded, crm) -> None:
    _sandbox, sf, hs, world = loaded
    lead_ids = world.raw_leads.filter(
        pc.is_in(world.raw_leads["source"], pa.array(["salesforce", "hubspot"]))
    )
    good = [lid for lid in lead_ids["lead_id"].to_pylist()][:300]
    ghosts = ["salesforce:00Q999999999999ZZZ", "hubspot:999999999"]
    scores = crm.make_scores(good + ghosts, seed=9)
    rows = scores.to_pylist()
    rows[0]["score"] = 0  # invalid on our side: never sent
    huge = next(r for r in rows if r["lead_id"].startswith("hubspot:"))
    huge["reasons_positive"] = [
        "x" * 70_000
    ]  # too long for a HubSpot text property: the CRM refuses the batch
    scores = conform(pa.Table.from_pylist(rows, schema=SCORES), SCORES)

    for conn in (sf, hs):
        report = conn.push(scores)
        outcomes = conn.state.outcomes(report.run_id, conn.crm)
        ghost = next(g for g in ghosts if g.startswith(conn.crm))
        assert outcomes[ghost][0] == "rejected"
        assert outcomes[ghost][1].startswith(
            "ENTITY_IS_DELETED" if conn.crm == "salesforce" else "OBJECT_NOT_FOUND"
        )
        expected_rejected = {ghost} | (
            {rows[0]["lead_id"]} if rows[0]["lead_id"].startswith(conn.crm) else set()
        )
        if conn.crm == "hubspot":
            expected_rejected.add(huge["lead_id"])
            assert "INVALID_STRING_LENGTH" in outcomes[huge["lead_id"]][1]  # isolated by splitting the batch
        assert {lid for lid, (o, _) in outcomes.items() if o == "rejected"} == expected_rejected
        assert report.pushed == sum(1 for lid in good if lid.startswith(conn.crm)) - len(
            expected_rejected - {ghost}
        )
        if rows[0]["lead_id"].startswith(conn.crm):
            reason = outcomes[rows[0]["lead_id"]][1]
            assert rows[0]["lead_id"] in reason and "score 0 outside 1-99" in reason  # names record and field
        # unchanged scores are skipped; a full push sends every valid one again
        assert conn.push(scores).to_push == 1 + (conn.crm == "hubspot")  # only the CRM-rejected ones retry
        full = conn.push(scores, full=True)
        assert full.to_push == sum(1 for lid in good + ghosts if lid.startswith(conn.crm)) - (
            rows[0]["lead_id"].startswith(conn.crm)
        )


@pytest.mark.slow
def test_prox_sandbox_cli_up_status_load_down(tmp_path) -> None:
    env = {**os.environ, "PROX_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}
    prox = (
        [sys.executable, "-m", "prox.cli"]
        if not (Path(sys.executable).parent / "prox").exists()
        else [str(Path(sys.executable).parent / "prox")]
    )

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prox, *args], env=env, capture_output=True, text=True, timeout=120)

    assert run("sandbox", "status").returncode == 1
    bad = run("sandbox", "up", "--faults", '{"error_rate": 2}')
    assert bad.returncode == 2 and "error_rate" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    up = run("sandbox", "up")
    try:
        assert up.returncode == 0, up.stderr
        assert "https://127.0.0.1:" in up.stdout
        status = run("sandbox", "status")
        assert status.returncode == 0 and "Salesforce:" in status.stdout
        assert run("simulate", "--leads", "200", "--days", "60").returncode == 0
        loaded = run("sandbox", "load")
        assert loaded.returncode == 0 and '"salesforce_leads"' in loaded.stdout
        records = next(
            line for line in run("sandbox", "status").stdout.splitlines() if line.startswith("records:")
        )
        # state lives in SQLite: a restart keeps every record
        assert run("sandbox", "down").returncode == 0
        assert run("sandbox", "up").returncode == 0
        assert records in run("sandbox", "status").stdout
        missing = run("sandbox", "load", "--world", str(tmp_path / "nowhere"))
        assert missing.returncode == 2 and "prox simulate" in missing.stderr
    finally:
        down = run("sandbox", "down")
    assert down.returncode == 0 and "stopped" in down.stdout
    assert run("sandbox", "status").returncode == 1


def test_connectors_take_credentials_from_airflow_connections(loaded, monkeypatch, tmp_path) -> None:
    import datetime as dt

    from features.lake import Lake
    from plugins.crm import open_connectors

    sandbox, _, _, world = loaded
    for key, value in sandbox.airflow_connections().items():
        monkeypatch.setenv(key, value)
    for key in sandbox.connection_env():
        monkeypatch.delenv(key, raising=False)
    found = open_connectors(
        tmp_path / "af", conn_ids={"salesforce": "prox_salesforce", "hubspot": "prox_hubspot"}
    )
    lake = Lake(tmp_path / "af" / "lake")
    rows = sum(
        found[c].extract(lake, dt.date(2026, 11, 2), tables=("raw_leads",))[0].rows
        for c in ("salesforce", "hubspot")
    )
    assert rows == world.raw_leads.num_rows
    with pytest.raises(ConnectorError, match="prox_nowhere"):
        open_connectors(tmp_path / "af", conn_ids={"salesforce": "prox_nowhere"})
