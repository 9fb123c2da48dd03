"""The validation gate on every bad input the issue lists: decision, quarantined rows, message.

Each case starts from a clean synthetic table (which passes), plants one kind of dirt and
runs the real GX suite through :func:`expectations.runner.validate` (nothing written).
"""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from expectations.datasets import DATASETS
from expectations.runner import ValidationError, validate
from prox.settings import Settings
from tests.fixtures import synthetic_validation as syn

pytestmark = pytest.mark.unit

REF = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
N = 200


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("validation-unit"))


def run(dataset: str, table: pa.Table, cfg: Settings, **kw):
    return validate(dataset, table, run_id="unit", settings=cfg, reference_time=REF, write=False, **kw)


@pytest.fixture(scope="module")
def leads() -> pa.Table:
    return syn.clean_raw_leads(N, "salesforce")


def quarantined(outcome, column: str | None = None) -> set[str]:
    q = outcome.quarantine
    if column is not None:
        q = q.filter(pc.equal(q["column"], column))
    return set(q["record_id"].to_pylist())


def only_message(outcome, needle: str) -> str:
    hits = [m for m in outcome.messages if needle in m]
    assert hits, f"no message with {needle!r} in {outcome.messages}"
    return hits[0]


# ---- clean data passes ------------------------------------------------------------------------
CLEAN = {
    "raw_leads_salesforce": lambda: syn.clean_raw_leads(N, "salesforce"),
    "raw_leads_hubspot": lambda: syn.clean_raw_leads(N, "hubspot"),
    "raw_leads_file": lambda: syn.clean_raw_leads(N, "file"),
    "raw_activities": lambda: syn.clean_activities(1000),
    "features": lambda: syn.clean_features(N),
    "scores": lambda: syn.clean_scores(N),
}


def test_every_dataset_has_a_clean_case() -> None:
    assert set(CLEAN) == set(DATASETS)


@pytest.mark.parametrize("dataset", DATASETS)
def test_clean_data_passes_every_suite(dataset: str, cfg: Settings) -> None:
    table = CLEAN[dataset]()
    outcome = run(dataset, table, cfg)
    assert outcome.decision == "passed", outcome.messages
    assert outcome.quarantined_rows == 0 and outcome.clean.num_rows == table.num_rows
    assert not [c for c in outcome.checks if c.skipped]
    assert len(outcome.checks) >= 10


# ---- row-level dirt: quarantined, the rest continues ---------------------------------------------
def test_null_ids_are_quarantined(leads: pa.Table, cfg: Settings) -> None:
    table = syn.set_values(leads, "lead_id", {3: None, 7: None})
    out = run("raw_leads_salesforce", table, cfg)
    assert out.decision == "warned"
    nulls = out.quarantine.filter(
        pc.equal(out.quarantine["expectation"], "expect_column_values_to_not_be_null")
    )
    assert nulls.num_rows == 2 and nulls["record_id"].null_count == 2
    assert out.clean.num_rows == N - 2 and out.clean["lead_id"].null_count == 0
    msg = only_message(out, "raw_leads_salesforce.lead_id: 2 row(s)")
    assert "null" in msg


def test_duplicate_ids_quarantine_every_copy(leads: pa.Table, cfg: Settings) -> None:
    dup = leads["lead_id"][5].as_py()
    table = syn.set_values(leads, "lead_id", {6: dup})
    out = run("raw_leads_salesforce", table, cfg)
    assert out.decision == "warned"
    assert quarantined(out, "lead_id") == {dup}
    assert out.quarantined_rows == 2
    assert dup not in out.clean["lead_id"].to_pylist()
    msg = only_message(out, "duplicated")
    assert "raw_leads_salesforce.lead_id" in msg and dup in msg


def test_future_dates_are_quarantined(leads: pa.Table, cfg: Settings) -> None:
    future = REF + dt.timedelta(days=3)
    table = syn.set_values(leads, "created_at", {10: future})
    table = syn.set_values(table, "updated_at", {10: future})
    out = run("raw_leads_salesforce", table, cfg)
    assert out.decision == "warned"
    lead = leads["lead_id"][10].as_py()
    assert quarantined(out, "created_at") == {lead}
    values = out.quarantine.filter(pc.equal(out.quarantine["column"], "created_at"))["value"].to_pylist()
    assert values == ["2026-11-04T00:00:00Z"]
    msg = only_message(out, "raw_leads_salesforce.created_at")
    assert "above 2026-11-01T01:00:00+00:00" in msg and "2026-11-04" in msg


def test_negative_revenue_is_quarantined(leads: pa.Table, cfg: Settings) -> None:
    table = syn.set_values(leads, "annual_revenue", {4: -5000.0})
    out = run("raw_leads_salesforce", table, cfg)
    assert quarantined(out, "annual_revenue") == {leads["lead_id"][4].as_py()}
    assert out.quarantine["value"].to_pylist() == ["-5000"]
    msg = only_message(out, "raw_leads_salesforce.annual_revenue")
    assert "examples: -5000.0" in msg and "outside [0.0, " in msg


def test_impossible_employee_counts_are_quarantined(leads: pa.Table, cfg: Settings) -> None:
    table = syn.set_values(leads, "employees", {1: -20, 2: 5_000_000_000})
    out = run("raw_leads_salesforce", table, cfg)
    assert quarantined(out, "employees") == {leads["lead_id"][1].as_py(), leads["lead_id"][2].as_py()}
    assert "-20" in only_message(out, "raw_leads_salesforce.employees")


def test_unknown_enum_values_are_quarantined(leads: pa.Table, cfg: Settings) -> None:
    table = syn.set_values(leads, "status", {0: "zombie"})
    out = run("raw_leads_salesforce", table, cfg)
    assert quarantined(out, "status") == {leads["lead_id"][0].as_py()}
    assert out.quarantine["value"].to_pylist() == ["zombie"]
    assert "'zombie'" in only_message(out, "raw_leads_salesforce.status")


def test_malformed_emails_are_quarantined_with_the_value_masked(leads: pa.Table, cfg: Settings) -> None:
    bad = {0: "jane.doe@@acme.com", 1: "Jane Doe at acme.com", 2: "janedoe", 3: " JANE.DOE@ACME,COM"}
    out = run("raw_leads_salesforce", syn.set_values(leads, "email", bad), cfg)
    assert out.decision == "warned"
    assert quarantined(out, "email") == {leads["lead_id"][i].as_py() for i in bad}
    values = set(out.quarantine["value"].to_pylist())
    assert values == {"xxxx.xxx@@acme.com", "Xxxx Xxx xx xxxx.xxx", "xxxxxxx", " XXXX.XXX@ACME,COM"}
    msg = only_message(out, "raw_leads_salesforce.email: 4 row(s)")
    assert "xxxx.xxx@@acme.com" in msg and "jane" not in msg.lower()
    assert "jane" not in str(out.gx_result).lower() and "jane" not in out.docs_html.lower()


def test_conversion_before_creation_is_quarantined(leads: pa.Table, cfg: Settings) -> None:
    created = leads["created_at"][8].as_py()
    table = syn.set_values(leads, "converted_at", {8: created - dt.timedelta(days=2)})
    table = syn.set_values(table, "converted", {8: True})
    out = run("raw_leads_salesforce", table, cfg)
    assert quarantined(out, "converted_at, created_at") == {leads["lead_id"][8].as_py()}
    (value,) = out.quarantine["value"].to_pylist()
    assert value.startswith("converted_at=") and "; created_at=" in value
    msg = only_message(out, "raw_leads_salesforce.converted_at, created_at")
    assert "converted_at before created_at" in msg


# ---- table-level failures: the run stops ---------------------------------------------------------
def test_wrong_types_fail_the_run(leads: pa.Table, cfg: Settings) -> None:
    as_text = leads.set_column(
        leads.schema.get_field_index("employees"), "employees", pc.cast(leads["employees"], pa.string())
    )
    out = run("raw_leads_salesforce", as_text, cfg)
    assert out.decision == "failed" and out.clean is None
    assert "raw_leads_salesforce.employees: wrong type: expected int64, found str" in out.messages
    skipped = [c for c in out.checks if c.skipped]
    assert [c.column for c in skipped] == ["employees"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.drop_columns(["email"]), "missing: email"),
        (
            lambda t: t.rename_columns(["e_mail" if c == "email" else c for c in t.column_names]),
            "missing: email; unexpected: e_mail",
        ),
        (
            lambda t: t.append_column("favourite_colour", pa.array(["blue"] * t.num_rows)),
            "unexpected: favourite_colour",
        ),
    ],
    ids=["missing", "renamed", "extra"],
)
def test_column_drift_fails_the_run(leads: pa.Table, cfg: Settings, change, expected: str) -> None:
    out = run("raw_leads_salesforce", change(leads), cfg)
    assert out.decision == "failed"
    assert f"raw_leads_salesforce: columns do not match the contract; {expected}" in out.messages


def test_an_empty_extract_fails_the_run(leads: pa.Table, cfg: Settings) -> None:
    out = run("raw_leads_salesforce", leads.slice(0, 0), cfg)
    assert out.decision == "failed"
    assert out.messages[0] == "raw_leads_salesforce: empty extract (0 rows)"


@pytest.mark.parametrize(
    ("previous_rows", "decision", "needle"),
    [
        (N // 10, "failed", f"volume spike: {N} rows vs {N // 10} in the previous run (10.00x)"),
        (N * 10, "failed", f"volume drop: {N} rows vs {N * 10} in the previous run (0.10x)"),
        (N // 9, "passed", None),  # 9x: a big day, not an anomaly
        (N * 9, "passed", None),  # an 89% drop
    ],
    ids=["spike-10x", "drop-90pc", "9x", "89pc-drop"],
)
def test_volume_anomalies_against_the_previous_run(leads, cfg, previous_rows, decision, needle) -> None:
    out = run("raw_leads_salesforce", leads, cfg, previous_run_stats={"rows": previous_rows})
    assert out.decision == decision, out.messages
    if needle:
        assert any(needle in m for m in out.messages), out.messages


def test_stale_extract_warns_and_goes_on(leads: pa.Table, cfg: Settings) -> None:
    later = REF + dt.timedelta(days=10)
    out = validate("raw_leads_salesforce", leads, run_id="u", settings=cfg, reference_time=later, write=False)
    assert out.decision == "warned" and out.clean.num_rows == N
    assert "stale data" in only_message(out, "raw_leads_salesforce.updated_at")


def test_bad_share_above_the_threshold_fails_the_run(leads: pa.Table, cfg: Settings) -> None:
    bad = dict.fromkeys(range(0, N, 10), "not-an-email")  # 10%
    table = syn.set_values(leads, "email", bad)
    out = run("raw_leads_salesforce", table, cfg)
    assert out.decision == "failed" and out.quarantined_rows == len(bad)
    assert math.isclose(out.bad_share, 0.10)
    assert out.messages[0] == (
        "raw_leads_salesforce: 20 of 200 rows (10.0%) failed row-level checks, above the quarantine threshold of 5.0%"
    )
    lenient = cfg.with_changes(quarantine_threshold=0.2)
    assert run("raw_leads_salesforce", table, lenient).decision == "warned"


def test_rows_failing_two_checks_count_once(leads: pa.Table, cfg: Settings) -> None:
    table = syn.set_values(syn.set_values(leads, "email", {9: "nope"}), "status", {9: "zombie"})
    out = run("raw_leads_salesforce", table, cfg)
    assert out.quarantine.num_rows == 2 and out.quarantined_rows == 1 and out.clean.num_rows == N - 1


def test_source_mismatch_and_id_style_are_checked_per_source(cfg: Settings) -> None:
    hubspot = syn.clean_raw_leads(N, "hubspot")
    out = run("raw_leads_salesforce", hubspot, cfg)
    assert out.decision == "failed"  # every row fails the salesforce id style: far above the threshold
    assert any("raw_leads_salesforce.lead_id" in m and "hubspot:100001" in m for m in out.messages)


# ---- activities, scores, features ------------------------------------------------------------
def test_activity_dirt(cfg: Settings) -> None:
    acts = syn.clean_activities(1000)
    table = syn.set_values(acts, "channel", {0: "fax"})
    table = syn.set_values(table, "event_id", {2: acts["event_id"][1].as_py()})
    table = syn.set_values(table, "occurred_at", {3: REF + dt.timedelta(days=1)})
    out = run("raw_activities", table, cfg)
    assert out.decision == "warned"
    assert set(out.quarantine["column"].to_pylist()) == {"channel", "event_id", "occurred_at"}
    assert "'fax'" in only_message(out, "raw_activities.channel")
    assert "'ev-1'" in only_message(out, "raw_activities.event_id")
    assert out.clean.num_rows == 1000 - 4


def test_score_dirt(cfg: Settings) -> None:
    scores = syn.clean_scores(N)
    table = syn.set_values(scores, "probability", {0: 1.5})
    table = syn.set_values(table, "score", {1: 0, 2: 100})
    table = syn.set_values(table, "tier", {3: "E"})
    out = run("scores", table, cfg)
    assert out.decision == "warned"
    assert set(out.quarantine["column"].to_pylist()) == {"probability", "score", "tier"}
    assert "1.5" in only_message(out, "scores.probability")
    assert "'E'" in only_message(out, "scores.tier")


def test_a_tier_holding_nearly_everything_fails(cfg: Settings) -> None:
    scores = syn.clean_scores(N)
    table = scores.set_column(
        scores.schema.get_field_index("tier"), "tier", pa.array(["A"] * (N - 10) + ["D"] * 10)
    )
    out = run("scores", table, cfg)
    assert out.decision == "failed" and out.quarantined_rows == 0
    msg = only_message(out, "scores.tier")
    assert "95.0%" in msg and "['A']" in msg and "at most 90% tolerated" in msg
    small = table.slice(0, 50)  # a hot-path batch: too few rows to judge a distribution
    assert run("scores", small, cfg).decision == "passed"
    # D ("below average") is the majority by design: 95% passes, 99.5% does not
    mostly_d = scores.set_column(
        scores.schema.get_field_index("tier"), "tier", pa.array(["D"] * (N - 10) + ["A"] * 10)
    )
    assert run("scores", mostly_d, cfg).decision == "passed"
    all_d = scores.set_column(
        scores.schema.get_field_index("tier"), "tier", pa.array(["D"] * (N - 1) + ["A"])
    )
    out = run("scores", all_d, cfg)
    assert out.decision == "failed" and "at most 98% tolerated" in only_message(out, "scores.tier")


def test_feature_dirt(cfg: Settings) -> None:
    feats = syn.clean_features(N)
    table = syn.set_values(feats, "n_events_7d", {0: -1})
    table = syn.set_values(table, "lead_age_days", {1: float("inf"), 2: float("nan")})
    table = syn.set_values(table, "industry", {3: "alchemy"})
    table = syn.set_values(table, "lead_id", {5: feats["lead_id"][4].as_py()})  # same as_of: duplicate key
    out = run("features", table, cfg)
    assert out.decision == "warned"
    by_col = {(r["column"], r["expectation"]) for r in out.quarantine.to_pylist()}
    assert ("n_events_7d", "expect_column_values_to_be_between") in by_col
    assert ("lead_age_days", "expect_column_values_to_be_between") in by_col  # infinite
    assert ("lead_age_days", "expect_column_values_to_not_be_null") in by_col  # NaN
    assert ("industry", "expect_column_values_to_be_in_set") in by_col
    assert ("lead_id, as_of", "expect_compound_columns_to_be_unique") in by_col
    assert out.quarantined_rows == 6 and out.clean.num_rows == N - 6
    assert "inf" in only_message(out, "features.lead_age_days: 1 row(s) (0.5%) outside")
    assert "duplicated" in only_message(out, "features.lead_id, as_of")


def test_features_missing_a_spec_column_fail(cfg: Settings) -> None:
    out = run("features", syn.clean_features(N).drop_columns(["engagement_decayed"]), cfg)
    assert out.decision == "failed"
    assert "features: columns do not match the contract; missing: engagement_decayed" in out.messages


# ---- inputs ------------------------------------------------------------------------------------
def test_unknown_dataset_and_missing_path_are_clear_errors(cfg: Settings, tmp_path) -> None:
    with pytest.raises(ValidationError, match="unknown dataset 'leads'"):
        run("leads", syn.clean_scores(5), cfg)
    with pytest.raises(ValidationError, match="raw_activities: no such file or directory"):
        validate("raw_activities", tmp_path / "nope.parquet", run_id="u", settings=cfg, reference_time=REF)


def test_csv_text_that_does_not_fit_the_contract_is_a_type_failure(
    leads: pa.Table, cfg: Settings, tmp_path
) -> None:
    import pyarrow.csv as pacsv

    table = syn.set_values(leads, "email", {0: "bad"}).drop_columns(["converted_at"])  # csv: keep it simple
    path = tmp_path / "leads.csv"
    pacsv.write_csv(table, path)
    text = path.read_text().replace(",1200,", ",lots,", 1)
    path.write_text(text.replace(f",{leads['employees'][0].as_py()},", ",lots,", 1))
    out = validate("raw_leads_salesforce", path, run_id="u", settings=cfg, reference_time=REF, write=False)
    assert out.decision == "failed"
    assert "raw_leads_salesforce.employees: wrong type: expected int64, found str" in out.messages
    assert "raw_leads_salesforce: columns do not match the contract; missing: converted_at" in out.messages
