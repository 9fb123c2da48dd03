"""Dynamic batching: leads featurised and scored together get exactly what each gets alone."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest

from features.build import FeatureInputError, build_features
from features.contract import ACTIVITIES
from features.online import OnlineInput, lead_features, many_lead_features
from models.bundle import Calibrator, ModelBundle
from models.dataset import FeatureEncoder
from models.score import Scorer, score_quantiles
from serve.batching import Coalescer
from serve.scoring import ScoreJob, encode_row, run_jobs, score_rows
from tests.fixtures.synthetic_features import synthetic_inputs

pytestmark = pytest.mark.unit
AS_OF = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def world():
    leads, events, history = synthetic_inputs(90, 6_000, seed=11, end=AS_OF, dirt_rate=0.05)
    rows = leads.to_pylist()
    by_lead = {r["lead_id"]: r for r in rows}
    evs, hist, accounts = defaultdict(list), defaultdict(list), defaultdict(list)
    for e in events.to_pylist():
        evs[e["lead_id"]].append(e)
    for s in history.to_pylist():
        hist[s["lead_id"]].append(s)
    for r in rows:
        accounts[r["company_domain"]].append(r["lead_id"])
    return leads, events, history, by_lead, evs, hist, accounts


def _input(world, lead_id: str, *, with_peers: bool = True) -> OnlineInput:
    _, _, _, by_lead, evs, hist, accounts = world
    lead = by_lead[lead_id]
    peers = [p for p in accounts[lead["company_domain"]] if p != lead_id] if with_peers else []
    return OnlineInput(
        lead,
        evs[lead_id],
        status_history=hist[lead_id],
        peers=[by_lead[p] for p in peers] or None,
        peer_events=[e for p in peers for e in evs[p]] or None,
    )


def _late(lead: dict) -> dict:
    """A copy of ``lead`` created after AS_OF (it has no features yet)."""
    return {**lead, "lead_id": lead["lead_id"] + "9", "created_at": AS_OF + dt.timedelta(hours=1)}


def _alone(item: OnlineInput) -> dict:
    values, _ = lead_features(
        item.lead,
        item.events,
        AS_OF,
        status_history=item.status_history,
        peers=item.peers,
        peer_events=item.peer_events,
    )
    return values


def test_a_batch_keeps_each_request_apart_and_equals_each_alone(world):
    leads, events, *_ = world
    known = [r["lead_id"] for r in leads.to_pylist() if r["created_at"] < AS_OF]
    late = _late(leads.to_pylist()[0])
    inputs = [_input(world, lid) for lid in known[:24]]
    # the same lead twice (its events would be duplicates of each other if requests mixed),
    # the same lead without its account peers (account features must not leak in from the
    # request beside it), events as an Arrow table, and a lead too new to score
    inputs.append(inputs[0])
    inputs.append(_input(world, known[0], with_peers=False))
    as_table = inputs[1]
    inputs.append(
        OnlineInput(
            as_table.lead, pa.Table.from_pylist(as_table.events, schema=ACTIVITIES), as_table.status_history
        )
    )
    inputs.append(OnlineInput(late, []))
    assert any(item.peers for item in inputs[:24])  # account context is exercised
    batch = many_lead_features(inputs, AS_OF)
    for i, item in enumerate(inputs[:-1]):
        assert batch.values(i) == _alone(item), item.lead["lead_id"]
    assert batch.values(0) == batch.values(24)
    assert batch.values(0)["account_other_leads"] != batch.values(25)["account_other_leads"]  # peers matter
    assert isinstance(batch.rows[-1], FeatureInputError)
    with pytest.raises(FeatureInputError, match="created_at"):
        batch.values(len(inputs) - 1)
    # and what one lead gets online is what the batch builder gives it (the contract)
    table, _ = build_features(leads, events, world[2], AS_OF)
    row = table.filter(pa.compute.equal(table["lead_id"], known[3])).to_pylist()[0]
    assert {k: row[k] for k in batch.values(3)} == batch.values(3)


def test_a_batch_of_only_late_leads_errors_each(world):
    late = [_late(r) for r in world[0].to_pylist()[:2]]
    out = many_lead_features([OnlineInput(r, []) for r in late], AS_OF)
    assert len(out.rows) == 2 and all(isinstance(r, FeatureInputError) for r in out.rows)


@pytest.fixture(scope="module")
def scorer(world):
    """A small LightGBM champion on the spec's features (labels from engagement, seeded)."""
    leads, events, history, *_ = world
    encoder = FeatureEncoder.from_spec()
    tables = [build_features(leads, events, history, AS_OF - dt.timedelta(days=d))[0] for d in (0, 30, 60)]
    X = np.vstack([encoder.transform(t) for t in tables])
    rng = np.random.default_rng(0)
    signal = np.log1p(np.nan_to_num(X[:, encoder.features.index("engagement_decayed")]))
    y = (rng.random(len(X)) < 1 / (1 + np.exp(-(signal - signal.mean()) * 3))).astype(int)
    booster = lgb.train(
        {
            "objective": "binary",
            "num_leaves": 7,
            "max_depth": 3,
            "min_data_in_leaf": 5,
            "verbose": -1,
            "seed": 1,
        },
        lgb.Dataset(X, y, categorical_feature=encoder.categorical_indices),
        num_boost_round=40,
    )
    p = booster.predict(X)
    bundle = ModelBundle(
        "lightgbm",
        encoder,
        Calibrator(),
        booster=booster,
        score_quantiles=score_quantiles(p),
        tier_thresholds={
            "A": float(np.quantile(p, 0.9)),
            "B": float(np.quantile(p, 0.7)),
            "C": float(np.quantile(p, 0.5)),
        },
    )
    return Scorer("prox-test", "1", None, bundle)


def test_scores_of_a_batch_equal_each_lead_scored_alone_and_the_batch_path(world, scorer):
    leads, events, history, *_ = world
    known = [r["lead_id"] for r in leads.to_pylist() if r["created_at"] < AS_OF][:30]
    inputs = [_input(world, lid) for lid in known]
    batch = many_lead_features(inputs, AS_OF)
    together = score_rows(scorer, batch, known, AS_OF, with_features=[True] * len(known))
    table, _ = build_features(leads, events, history, AS_OF)
    table = table.filter(pa.compute.is_in(table["lead_id"], pa.array(known)))
    reference = scorer.score_table(table)  # the nightly job's scorer on the batch builder's table
    ref_row = {lid: i for i, lid in enumerate(table["lead_id"].to_pylist())}
    for i, item in enumerate(inputs):
        (alone,) = score_rows(scorer, many_lead_features([item], AS_OF), [known[i]], AS_OF)
        got = together[i]
        assert (got.probability, got.score, got.tier, got.reasons_positive, got.reasons_negative) == (
            alone.probability,
            alone.score,
            alone.tier,
            alone.reasons_positive,
            alone.reasons_negative,
        )
        assert alone.features is None and got.features == batch.values(i)
        assert np.array_equal(
            encode_row(scorer.bundle, got.features),
            scorer.encode(table.slice(ref_row[known[i]], 1)),
            equal_nan=True,
        )
        j = ref_row[known[i]]
        assert got.probability == float(reference.probability[j])
        assert "; ".join(got.reasons_positive) == reference.reasons_positive[j]
        assert "; ".join(got.reasons_negative) == reference.reasons_negative[j]
    assert len({s.tier for s in together}) >= 2  # the comparison is not trivial


def test_jobs_group_by_model_and_as_of_and_fall_back_to_now(world, scorer):
    known = [r["lead_id"] for r in world[0].to_pylist() if r["created_at"] < AS_OF][:6]
    other = Scorer("prox-test", "2", None, scorer.bundle)
    later = AS_OF + dt.timedelta(days=3)
    jobs = [
        ScoreJob(
            scorer if i % 2 else other, _input(world, lid).lead, AS_OF if i < 3 else None, _input(world, lid)
        )
        for i, lid in enumerate(known)
    ]
    out = run_jobs(jobs, state=None, now=lambda: later)
    assert [o.model_version for o in out] == [j.scorer.model_version for j in jobs]
    assert [o.as_of for o in out] == [AS_OF] * 3 + [later] * 3
    (alone,) = run_jobs([jobs[4]], state=None, now=lambda: later)
    assert alone == out[4]


def test_coalescer_batches_what_arrives_together_and_keeps_failures_apart():
    calls: list[list[int]] = []

    def work(items):
        calls.append(list(items))
        return [ValueError(f"bad {i}") if i == 13 else i * 10 for i in items]

    async def scenario():
        c = Coalescer(work, max_batch=64)
        together = await asyncio.gather(*(c.submit(i) for i in range(16)), return_exceptions=True)
        one = await c.submit(99)  # a lone request is served at once, alone
        two = await c.submit(98)
        return together, one, two

    together, one, two = asyncio.run(scenario())
    assert calls == [list(range(16)), [99], [98]]
    assert [r for i, r in enumerate(together) if i != 13] == [i * 10 for i in range(16) if i != 13]
    assert isinstance(together[13], ValueError) and str(together[13]) == "bad 13"
    assert (one, two) == (990, 980)


def test_coalescer_bounds_a_batch_and_a_failed_batch_fails_only_its_items():
    sizes: list[int] = []

    def work(items):
        if 0 in items:
            raise RuntimeError("boom")
        return list(items)

    async def scenario():
        c = Coalescer(work, max_batch=4, on_batch=sizes.append)
        return await asyncio.gather(*(c.submit(i) for i in range(10)), return_exceptions=True)

    out = asyncio.run(scenario())
    assert sizes == [4, 4, 2]
    assert all(isinstance(r, RuntimeError) for r in out[:4]) and out[4:] == list(range(4, 10))
    with pytest.raises(ValueError, match="max_batch"):
        Coalescer(work, max_batch=0)


def test_jobs_on_the_same_stored_lead_are_scored_once(world, scorer, tmp_path):
    from serve.sqlite_store import OnlineState

    _, _, _, by_lead, evs, _, _ = world
    known = [lid for lid, r in by_lead.items() if r["created_at"] < AS_OF and evs[lid]][:2]
    state = OnlineState(tmp_path / "online.sqlite")
    state.ingest([by_lead[lid] for lid in known], [e for lid in known for e in evs[lid]])
    reads: list[str] = []
    events = state.events

    def counted(lead_ids):
        lead_ids = list(lead_ids)
        reads.extend(lead_ids)
        return events(lead_ids)

    state.events = counted  # type: ignore[method-assign]
    lead, _ = state.lead(known[0])
    other, _ = state.lead(known[1])
    jobs = [ScoreJob(scorer, lead, AS_OF)] * 5 + [ScoreJob(scorer, other, AS_OF)]
    jobs.append(ScoreJob(scorer, {**lead, "title": "Chief Executive Officer"}, AS_OF))  # other fields
    out = run_jobs(jobs, state, now=lambda: AS_OF)
    assert reads.count(known[0]) == 2 and reads.count(known[1]) == 1  # the five share one read
    assert out[0] is out[4] and out[5].lead_id == known[1]
    alone = run_jobs([jobs[0]], state, now=lambda: AS_OF)[0]
    assert alone == out[0]
    state.close()
