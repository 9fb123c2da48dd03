"""The sandbox's rules in isolation: SOQL subset, value checks, fault configuration, rate window."""

from __future__ import annotations

import pytest

from sandbox.faults import FaultConfig, Faults
from sandbox.salesforce_api import SfError, check_value, parse_soql

pytestmark = [pytest.mark.unit]


def test_soql_subset_parses_what_the_connector_sends() -> None:
    q = parse_soql(
        "SELECT Id, Email, SystemModstamp FROM lead WHERE SystemModstamp >= 2026-01-01T00:00:00.000Z "
        "AND IsConverted = false AND Id IN ('a', 'b') ORDER BY SystemModstamp, Id DESC LIMIT 10"
    )
    assert q.obj == "Lead" and q.fields == ["Id", "Email", "SystemModstamp"]
    assert [w[:2] for w in q.where] == [("SystemModstamp", ">="), ("IsConverted", "="), ("Id", "IN")]
    assert q.order == [("SystemModstamp", False), ("Id", True)] and q.limit == 10


def test_unknown_fields_and_objects_fail_like_salesforce() -> None:
    with pytest.raises(SfError) as err:
        parse_soql("SELECT Id, Foo__c FROM Lead")
    assert err.value.code == "INVALID_FIELD" and "Column:12" in err.value.message
    with pytest.raises(SfError) as err:
        parse_soql("SELECT Id FROM Account")
    assert err.value.code == "INVALID_TYPE"
    with pytest.raises(SfError) as err:
        parse_soql("SELECT Id FROM Lead WHERE")
    assert err.value.code == "MALFORMED_QUERY"


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("ProX_Score__c", "high", "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        ("ProX_Tier__c", "E", "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ("ProX_Model_Version__c", "v" * 81, "STRING_TOO_LONG"),
        ("ProX_Scored_At__c", "yesterday", "INVALID_TYPE_ON_FIELD_IN_RECORD"),
    ],
)
def test_written_values_are_checked_against_the_field_type(field: str, value: object, code: str) -> None:
    assert check_value("Lead", field, value)[1][0] == code


def test_good_values_are_coerced() -> None:
    assert check_value("Lead", "ProX_Score__c", 42) == (42.0, None)
    assert (
        check_value("Lead", "ProX_Scored_At__c", "2026-11-02T03:00:00Z")[0] == "2026-11-02T03:00:00.000+0000"
    )


def test_fault_config_rejects_nonsense_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        FaultConfig.from_dict({"error_rate": 1.5})
    with pytest.raises(ValueError, match="unknown fault setting"):
        FaultConfig.from_dict({"errors": 0.1})


def test_hubspot_rolling_window_admits_the_limit_then_says_when_to_retry() -> None:
    faults = Faults(FaultConfig(hubspot_rate_limit=100, hubspot_window_seconds=10))
    admitted = [faults.hubspot_admit("app", now=1000.0 + i * 0.01)[0] for i in range(100)]
    assert all(admitted)
    ok, remaining, retry_after = faults.hubspot_admit("app", now=1001.5)
    assert (ok, remaining, retry_after) == (False, 0, 9)
    assert faults.hubspot_admit("app", now=1010.001)[0]  # the oldest call left the window
    assert faults.hubspot_admit("other-app", now=1001.5)[0]  # limits are per app


def test_hubspot_search_has_its_own_per_second_limit() -> None:
    faults = Faults(FaultConfig(hubspot_rate_limit=100, hubspot_search_per_second=5))
    assert all(faults.hubspot_admit("app", now=5.0 + i * 0.01, search=True)[0] for i in range(5))
    assert faults.hubspot_admit("app", now=5.2, search=True) == (False, 0, 1)
    assert faults.hubspot_admit("app", now=5.2)[0]  # other endpoints are not held back
    assert faults.hubspot_admit("app", now=6.01, search=True)[0]


def test_faults_are_deterministic_for_a_seed() -> None:
    def draws() -> list:
        f = Faults(FaultConfig(seed=4, error_rate=0.3, drop_rate=0.2, partial_failure_rate=0.1))
        return [(d.fail_status, d.drop_after) for d in (f.decide(is_write=True) for _ in range(50))] + [
            f.record_fails(20)
        ]

    assert draws() == draws()
