"""The suite files: one per dataset, valid GX, every expectation commented, in step with the contract."""

from __future__ import annotations

import datetime as dt

import pytest

from expectations.columns import feature_columns
from expectations.datasets import DATASETS, SUITES_DIR
from expectations.results import mask_pii
from expectations.suites import expand_suite, expectation_parameters, load_suite
from features.contract import ACTIVITIES, RAW_LEADS, SCORES

pytestmark = pytest.mark.unit

CONTRACTS = {"raw_leads": RAW_LEADS, "activities": ACTIVITIES, "scores": SCORES}


def test_one_suite_file_per_dataset() -> None:
    assert sorted(p.stem for p in SUITES_DIR.glob("*.json")) == sorted(DATASETS)


@pytest.mark.parametrize("dataset", DATASETS)
def test_suites_are_valid_gx_and_every_expectation_says_what_it_guards(dataset: str) -> None:
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    suite = load_suite(dataset)
    assert suite["name"] == dataset
    expectations = expand_suite(suite)
    for exp in expectations:
        assert len(exp["meta"]["guards"]) > 15, exp
        assert exp["severity"] in ("critical", "warning")
        ExpectationConfiguration(**exp).to_domain_obj()  # raises on a bad type or kwargs


@pytest.mark.parametrize("dataset", [d for d in DATASETS if d != "features"])
def test_schema_checks_follow_the_contract(dataset: str) -> None:
    suite = load_suite(dataset)
    schema = CONTRACTS[suite["meta"]["prox"]["contract"]]
    exps = suite["expectations"]
    (columns,) = [e for e in exps if e["type"] == "expect_table_columns_to_match_set"]
    assert columns["kwargs"] == {"column_set": schema.names, "exact_match": True}
    typed = {e["kwargs"]["column"] for e in exps if e["type"] == "expect_column_values_to_be_of_type"}
    assert typed == set(schema.names)


def test_the_issue_s_checks_are_all_present() -> None:
    leads = {(e["type"], e["kwargs"].get("column")) for e in load_suite("raw_leads_hubspot")["expectations"]}
    for check in [
        ("expect_column_values_to_not_be_null", "lead_id"),
        ("expect_column_values_to_be_unique", "lead_id"),
        ("expect_column_values_to_be_between", "employees"),
        ("expect_column_values_to_be_between", "annual_revenue"),
        ("expect_column_values_to_be_between", "created_at"),
        ("expect_column_values_to_be_in_set", "status"),
        ("expect_column_values_to_match_regex", "email"),
        ("expect_column_pair_values_a_to_be_greater_than_b", None),
        ("expect_table_row_count_to_be_between", None),
        ("expect_column_max_to_be_between", "updated_at"),
    ]:
        assert check in leads
    acts = {(e["type"], e["kwargs"].get("column")) for e in load_suite("raw_activities")["expectations"]}
    assert {("expect_column_values_to_be_unique", "event_id"), ("expect_column_values_to_be_in_set", "channel"),
            ("expect_column_values_to_be_in_set", "action")} <= acts  # fmt: skip


def test_feature_checks_come_from_the_spec() -> None:
    from features.spec import FEATURE_NAMES

    groups = feature_columns()
    assert set(groups.required) == set(FEATURE_NAMES) | {"lead_id", "as_of"}
    assert "n_events_7d" in groups.counts and "engagement_decayed" in groups.required_floats
    assert "days_since_last_email" in groups.floats and "days_since_last_email" not in groups.required_floats
    expanded = expand_suite(load_suite("features"))
    checked = {e["kwargs"].get("column") for e in expanded}
    assert set(FEATURE_NAMES) <= checked


def test_volume_bounds_flag_a_10x_spike_and_a_90pc_drop() -> None:
    ref = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    prox = load_suite("raw_activities")["meta"]["prox"]
    params = expectation_parameters(prox, ref, {"rows": 1000})
    assert (params["min_rows"], params["max_rows"]) == (101, 9999)
    assert expectation_parameters(prox, ref, None)["max_rows"] is None
    assert params["latest_allowed"] == ref + dt.timedelta(hours=1)
    assert params["freshness_floor"] == ref - dt.timedelta(hours=72)


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("Jane.Doe@acme.com", "Xxxx.Xxx@acme.com"),
        ("jane@@acme.com", "xxxx@@acme.com"),
        ("jane doe at acme.com", "xxxx xxx xx xxxx.xxx"),
        ("j.doe42", "x.xxx99"),
        (None, None),
    ],
)
def test_pii_is_masked_to_its_shape(raw: str | None, masked: str | None) -> None:
    assert mask_pii(raw) == masked
