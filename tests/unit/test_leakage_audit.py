"""The leakage audit on simulated lead files with planted post-outcome fields, and its parts."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from models.dataset import FeatureEncoder, labels, nullify_placeholders, read_flat_file
from models.leakage import AuditConfig, audit, missing_mask
from tests.unit.simulated_leads import HONEST, PLANTED, lead_world

pytestmark = pytest.mark.unit


def audited(table: pa.Table, **kwargs):
    table = nullify_placeholders(table)
    enc = FeatureEncoder.infer(table)
    return audit(enc.transform(table), labels(table), enc, **kwargs)


@pytest.mark.parametrize(("seed", "strength"), [(11, 0.5), (12, 0.7), (13, 1.0)])
def test_every_planted_field_is_flagged_and_no_honest_one(seed, strength):
    result = audited(lead_world(seed=seed, strength=strength))
    assert set(result.flagged) == set(PLANTED)  # every planted field, no honest one
    assert set(result.excluded) == set(PLANTED) and result.kept == []
    for finding in result.findings:
        if finding.flagged:
            assert finding.rule and finding.fired()  # each flag carries its evidence


def test_planted_fields_pass_the_old_single_auc_threshold():
    """The fields the old audit let through: single-feature AUCs well below 0.9."""
    result = audited(lead_world(seed=11, strength=0.5))
    aucs = {f.feature: f.single_auc for f in result.findings}
    assert all(0.6 < aucs[name] < 0.9 for name in PLANTED), aucs
    assert all(not any(e.check == "single_auc" and e.fired for e in f.evidence) for f in result.findings)


def test_a_world_without_planted_fields_has_no_flag():
    result = audited(lead_world(seed=14, planted=False))
    assert result.flagged == [] and result.model_auc is not None and 0.65 < result.model_auc < 0.85
    assert {f.feature for f in result.findings} >= set(HONEST)


def test_empty_cells_and_placeholders_are_missing_not_a_category(tmp_path):
    path = tmp_path / "leads.csv"
    rows = ["rating,score,y"]
    for i in range(100):
        rating = ["", "Select", " NA ", "select"][i % 4] if i < 52 else "High"  # 52% empty
        rows.append(f"{rating},{'Select' if i % 10 == 0 else i},{'yes' if i % 3 == 0 else 'no'}")
    path.write_text("\n".join(rows) + "\n")
    table = read_flat_file(path, "y")
    assert table.column("rating").null_count == 52
    assert pa.types.is_floating(table.column("score").type) and table.column("score").null_count == 10
    enc = FeatureEncoder.infer(table)
    assert enc.categories["rating"] == ("High",)
    result = audit(enc.transform(table), labels(table), enc, config=AuditConfig(model_checks=False))
    rating = next(f for f in result.findings if f.feature == "rating")
    assert rating.filled_share == pytest.approx(0.48)
    # the placeholders are configurable: "High" read as empty too when asked
    custom = read_flat_file(path, "y", missing_tokens=("", "select", "na", "high"))
    assert custom.column("rating").null_count == 100


def test_placeholders_in_the_encoder_vocabulary_count_as_missing():
    enc = FeatureEncoder(("plan",), {"plan": ("Select", "gold", "unknown")})
    x = np.array([0.0, 1.0, 2.0, np.nan])
    assert missing_mask(x, "plan", enc, AuditConfig().missing_tokens).tolist() == [True, False, False, True]
    assert missing_mask(x, "plan", enc, AuditConfig.for_crm().missing_tokens).tolist() == [
        True,
        False,
        True,
        True,
    ]


def test_a_kept_column_stays_flagged_and_is_recorded():
    result = audited(lead_world(seed=11, strength=0.7), keep=["lead_quality"])
    finding = next(f for f in result.findings if f.feature == "lead_quality")
    assert finding.flagged and finding.kept and not finding.excluded
    assert result.kept == ["lead_quality"] and "lead_quality" not in result.excluded
    summary = result.summary()
    assert summary["kept"] == ["lead_quality"] and summary["suspect_auc"] >= 0.0
    as_json = result.to_json()
    assert as_json["summary"]["kept"] == ["lead_quality"] and as_json["findings"][0]["evidence"]


def test_a_crm_field_edited_after_the_snapshot_is_flagged():
    rng = np.random.default_rng(3)
    n = 4000
    y = (rng.random(n) < 0.2).astype(int)
    honest = rng.normal(size=n) + 0.5 * y
    industry = rng.integers(0, 4, n).astype(float)
    edited = (y == 1) & (rng.random(n) < 0.4) | (rng.random(n) < 0.03)  # sales update converted leads
    rarely = rng.random(n) < 0.01
    enc = FeatureEncoder(
        ("engagement", "industry", "title"), {"industry": ("a", "b", "c", "d"), "title": ("x", "y")}
    )
    X = np.column_stack([honest, industry, rng.integers(0, 2, n).astype(float)])
    result = audit(
        X, y, enc, config=AuditConfig(model_checks=False), edited_after={"industry": edited, "title": rarely}
    )
    by_name = {f.feature: f for f in result.findings}
    assert by_name["industry"].flagged and "after the snapshot" in by_name["industry"].rule
    assert not by_name["title"].flagged and not by_name["engagement"].flagged


def test_the_audit_is_deterministic():
    table = lead_world(n=3000, seed=5, strength=0.6)
    first, second = audited(table), audited(table)
    assert [f.to_json() for f in first.findings] == [f.to_json() for f in second.findings]


def test_point_in_time_columns_are_flagged_by_strong_checks_only():
    """CRM engagement features are built from events before the snapshot: an often-empty
    "days since the last meeting" is honest, so missingness alone cannot flag it."""
    table = lead_world(seed=11, strength=0.5)
    result = audited(table, point_in_time=["specialization"])
    spec = next(f for f in result.findings if f.feature == "specialization")
    assert not spec.flagged and spec.point_in_time
    assert any(e.check == "missingness" and e.fired for e in spec.evidence)  # measured, reported
    assert "specialization" not in result.summary()["suspect"]
    assert set(result.flagged) == set(PLANTED) - {"specialization"}
