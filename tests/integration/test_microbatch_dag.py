"""The 15-minute micro-batch DAG in real Airflow against the CRM sandbox, read back from the CRMs.

On the nightly test's world and champion (its module fixture), after night 1's push:
1. a micro-batch with no new engagement scores and pushes nothing;
2. fresh pricing visits for a few leads arrive in the CRMs; the next micro-batch re-scores
   exactly those leads, as the batch feature code scores them at the interval's end, and
   pushes exactly the ones whose score or tier changed; the CRMs hold those values, with
   their exact reasons, and every other record keeps night 1's values;
3. a rerun of that interval pushes nothing and changes nothing;
4. the next night pushes only against the shared ledger: no lead the micro-batch already
   sent is re-sent unless its score or tier moved again.
"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from features.contract import ACTIVITIES
from tests.integration.test_nightly_dag import WORLD_END, _crm_values, _run, _scores, nightly  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.dags, pytest.mark.slow]


def _run_at(moment: dt.datetime) -> str:
    from prox.airflow_env import run_in_process, run_state

    return run_state(run_in_process("prox_microbatch", moment))


def _micro_report(settings, moment: dt.datetime) -> dict:
    from pipelines.microbatch import Interval

    run = Interval.of(moment, "x")
    path = settings.lake_dir / "reports" / "microbatch" / f"run_date={run.run_date}" / f"{run.label}.json"
    return json.loads(path.read_text())


def _micro_scores(settings, moment: dt.datetime) -> pa.Table:
    from features.lake import Lake, Partition
    from pipelines.microbatch import SCORES_TABLE, Interval

    run = Interval.of(moment, "x")
    return Lake(settings.lake_dir).read(Partition("scores", SCORES_TABLE, run.label, run.run_date))


def _fresh_visits(lead_ids: list[str], start: dt.datetime) -> pa.Table:
    return pa.table(
        {
            "event_id": [
                f"wt-mb-{i}" if lid.startswith("salesforce") else f"8{i:011d}"
                for i, lid in enumerate(lead_ids)
            ],
            "lead_id": lead_ids,
            "source": ["file" if lid.startswith("salesforce") else "hubspot" for lid in lead_ids],
            "occurred_at": [start + dt.timedelta(minutes=i) for i in range(len(lead_ids))],
            "channel": ["web"] * len(lead_ids),
            "action": ["visit"] * len(lead_ids),
            "detail": ["/pricing"] * len(lead_ids),
            "value": [60.0] * len(lead_ids),
        },
        schema=ACTIVITIES,
    )


def _batch_scores(settings, snapshot: dt.date, extra: pa.Table, as_of: dt.datetime, ids: list[str]) -> dict:
    """The batch path's scores of ``ids`` at ``as_of``: one full feature build over every lead."""
    from features.build import build_features
    from features.lake import Lake, Partition
    from models.score import load_scorer

    lake = Lake(settings.lake_dir)
    leads = lake.read(Partition("clean", "leads", "all", snapshot))
    history = lake.read(Partition("clean", "lead_status_history", "all", snapshot))
    events = pa.concat_tables([lake.read_all("clean", "activities"), extra])
    features, _ = build_features(leads, events, history, as_of)
    features = features.filter(pc.is_in(features["lead_id"], value_set=pa.array(ids)))
    out = load_scorer(settings.tracking_uri, settings.model_name).score_table(features)
    return {
        lid: (float(p), int(s), str(t))
        for lid, p, s, t in zip(
            features["lead_id"].to_pylist(), out.probability, out.score, out.tier, strict=True
        )
    }


def test_microbatch_rescores_new_engagement_pushes_changes_once(nightly):  # noqa: F811
    from sandbox import server
    from tests.integration.test_crm_push import _expected

    settings, info, world = nightly
    night1 = WORLD_END
    assert _run("prox_nightly", night1) == "success"
    scores1 = _scores(settings, night1)
    crm1 = _crm_values(info, settings)

    # 1. nothing new: nothing scored, nothing pushed
    quiet = dt.datetime.combine(night1, dt.time(8, 0), tzinfo=dt.UTC)
    assert _run_at(quiet) == "success"
    assert _micro_report(settings, quiet)["scored"] == 0
    assert sum(_micro_report(settings, quiet)["pushed"].values()) == 0

    # 2. fresh pricing visits for a few open leads of both CRMs
    hot = scores1.sort_by("probability").slice(0, 16)["lead_id"].to_pylist()
    assert {h.split(":")[0] for h in hot} == {"salesforce", "hubspot"}
    visits = _fresh_visits(hot, dt.datetime.combine(night1, dt.time(9, 0), tzinfo=dt.UTC))
    server.load_tables(info.directory, raw_leads=world.raw_leads.slice(0, 0), activities=visits)

    moment = dt.datetime.combine(night1, dt.time(9, 30), tzinfo=dt.UTC)
    assert _run_at(moment) == "success"
    micro = _micro_scores(settings, moment)
    report = _micro_report(settings, moment)
    assert sorted(micro["lead_id"].to_pylist()) == sorted(hot)  # exactly the engaged leads
    assert report["engaged"] == len(hot) and report["scored"] == len(hot)

    # the same scores as the batch feature code over every lead at the interval's end
    expected = _batch_scores(settings, night1, visits, moment, hot)
    got = {r["lead_id"]: (r["probability"], r["score"], r["tier"]) for r in micro.to_pylist()}
    assert got.keys() == expected.keys()
    for lid, (p, s, t) in got.items():
        assert (s, t) == expected[lid][1:] and p == pytest.approx(expected[lid][0], abs=1e-12), lid

    before = {r["lead_id"]: (r["score"], r["tier"]) for r in scores1.to_pylist()}
    changed = {r["lead_id"] for r in micro.to_pylist() if before[r["lead_id"]] != (r["score"], r["tier"])}
    assert changed, "fresh pricing visits should move some scores"
    assert sum(report["pushed"].values()) == len(changed)
    assert sum(report["skipped_unchanged"].values()) == len(hot) - len(changed)
    crm2 = _crm_values(info, settings)
    pushed_rows = micro.filter(pc.is_in(micro["lead_id"], value_set=pa.array(sorted(changed))))
    for lid, values in _expected(pushed_rows).items():
        assert crm2[lid] == values  # score, tier, probability, exact reasons, version, time
        assert pushed_rows.filter(pc.equal(pushed_rows["lead_id"], lid))["reasons_positive"][0].as_py()
    assert {lid for lid in crm2 if crm2[lid] != crm1.get(lid)} == changed

    # 3. a rerun of the same interval pushes nothing new and changes nothing
    assert _run_at(moment) == "success"
    assert sum(_micro_report(settings, moment)["pushed"].values()) == 0
    assert _crm_values(info, settings) == crm2

    # 4. the next night: a lead the micro-batch sent is re-sent only if its score or tier moved again
    night2 = night1 + dt.timedelta(days=1)
    assert _run("prox_nightly", night2) == "success"
    scores2 = {r["lead_id"]: (r["score"], r["tier"]) for r in _scores(settings, night2).to_pylist()}
    ledger = {lid: v[:2] for lid, v in crm2.items()}
    moved = {lid for lid, st in scores2.items() if ledger.get(lid) != st}
    night_report = json.loads(
        (settings.lake_dir / "reports" / "nightly" / f"run_date={night2}" / "report.json").read_text()
    )
    assert sum(c["pushed"] for c in night_report["per_crm"].values()) == len(moved)
