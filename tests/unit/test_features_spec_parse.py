"""The feature spec (one place, exported for auditors) and the parsers of dirty lead fields."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from features import parse, spec
from features.quality import DataQualityReport

pytestmark = pytest.mark.unit


def test_spec_is_complete_and_consistent() -> None:
    names = [f.name for f in spec.FEATURES]
    assert len(names) == len(set(names)), "feature names must be unique"
    assert {f.family for f in spec.FEATURES} == set(spec.FAMILIES)
    for f in spec.FEATURES:
        assert f.dtype in ("category", "int32", "float64"), f.name
        assert (f.categories is not None) == (f.dtype == "category"), f.name
        assert f.description and f.reason, f.name
        sample = f.categories[0] if f.categories else 3
        assert "{" not in f.phrase(sample), f.name  # every template formats cleanly


def test_reason_phrases_read_as_plain_language() -> None:
    assert spec.reason("n_pricing_visits_7d", 3) == "visited the pricing page 3 times in the last 7 days"
    assert spec.reason("seniority", "vp") == "holds a vp role"
    assert spec.reason("data_completeness", 0.5) == "has a 50% complete profile"
    with pytest.raises(KeyError, match="unknown feature 'nope'"):
        spec.reason("nope", 1)


def test_exports_for_auditors_list_every_feature() -> None:
    doc = json.loads(spec.to_json())
    assert [f["name"] for f in doc["features"]] == list(spec.FEATURE_NAMES)
    assert doc["windows_days"] == [7, 30, 90]
    md = spec.to_markdown()
    for f in spec.FEATURES:
        assert f"`{f.name}`" in md
    assert md.startswith("# ProX feature specification")


@pytest.mark.parametrize(
    ("title", "seniority", "department"),
    [
        ("VP of Sales", "vp", "sales"),
        ("Vice-President, Marketing", "vp", "marketing"),
        ("Chief Technology Officer", "c-level", "engineering"),
        ("Chief Information Officer", "c-level", "it"),
        ("Founder & CEO", "c-level", "executive"),
        ("Head of HR", "director", "hr"),
        ("Senior Finance Manager", "manager", "finance"),
        ("Operations Team Lead", "manager", "operations"),
        ("Sr. Account Executive", "senior", "sales"),
        ("Software Engineer II", "individual contributor", "engineering"),
        ("Graduate Student", "student", None),
        ("  ", "unknown", "unknown"),
    ],
)
def test_titles_give_seniority_and_department(title: str, seniority: str, department: str | None) -> None:
    assert parse.seniority(title) == seniority
    assert parse.department(title) == department


@pytest.mark.parametrize(
    ("raw", "industry"),
    [
        ("Software", "software"),
        ("SOFTWARE", "software"),
        ("Software & SaaS", "software"),
        ("Computer Software", "software"),
        ("FinServ", "financial services"),
        ("Health Care", "healthcare"),
        ("Retail & eCommerce", "retail"),
        ("helthcare", "healthcare"),
        ("Basket weaving", None),
    ],
)
def test_industry_variants_fold(raw: str, industry: str | None) -> None:
    assert parse.industry(raw) == industry


@pytest.mark.parametrize(
    ("raw", "region"),
    [
        ("US", "north america"),
        ("U.S.", "north america"),
        ("United States", "north america"),
        ("gb", "europe"),
        ("UK", "europe"),
        ("Deutschland", "europe"),
        ("India", "apac"),
        ("ZA", "middle east & africa"),
        ("Brasil", "latin america"),
        ("Atlantis", None),
    ],
)
def test_countries_map_to_regions(raw: str, region: str | None) -> None:
    assert parse.region(raw) == region


def test_vectorised_mapping_counts_missing_unknown_and_repairs() -> None:
    report = DataQualityReport()
    values = pa.array(["Software", "FinServ", None, "", "Basket weaving", "software", "Basket weaving"])
    out = parse.map_category(values, parse.industry, "industry", report)
    assert out.to_pylist() == [
        "software",
        "financial services",
        "unknown",
        "unknown",
        "other",
        "software",
        "other",
    ]
    assert report.missing["industry"] == 2
    assert report.unknown["industry"] == {"Basket weaving": 2}
    assert report.normalised["industry"] == 1  # FinServ; casing alone is not a repair


def test_bands_and_email_types() -> None:
    report = DataQualityReport()
    employees = pa.array([1, 10, 11, 250, 5001, None, -3, 5_000_000_000])
    bands = parse.bands(
        employees, parse.SIZE_EDGES, parse.SIZE_LABELS, "employees", report, parse.MAX_EMPLOYEES
    )
    assert bands.to_pylist() == [
        "1-10",
        "1-10",
        "11-50",
        "201-1000",
        "5000+",
        "unknown",
        "unknown",
        "unknown",
    ]
    assert report.missing["employees"] == 1 and report.invalid["employees"] == 2
    domains = parse.normalise_domain(pa.array(["Acme.com ", "https://www.acme.com/about", None, "GMAIL.com"]))
    assert domains.to_pylist() == ["acme.com", "acme.com", None, "gmail.com"]
    assert parse.email_type(domains).to_pylist() == ["corporate", "corporate", "unknown", "free"]
    assert parse.account_domain(domains).to_pylist() == ["acme.com", "acme.com", None, None]


def test_cli_writes_the_spec_and_builds_from_parquet(tmp_path, capsys) -> None:
    import datetime as dt

    import pyarrow.parquet as pq

    from prox.cli import main
    from tests.fixtures.synthetic_features import synthetic_inputs

    assert main(["features", "spec", "--format", "json", "--out", str(tmp_path / "spec.json")]) == 0
    assert json.loads((tmp_path / "spec.json").read_text())["features"][0]["name"] == "industry"
    leads, acts, hist = synthetic_inputs(50, 2_000, seed=1)
    for name, table in (("l", leads), ("a", acts), ("h", hist)):
        pq.write_table(table, tmp_path / f"{name}.parquet")
    args = [
        "features",
        "build",
        "--leads",
        str(tmp_path / "l.parquet"),
        "--activities",
        str(tmp_path / "a.parquet"),
        "--status-history",
        str(tmp_path / "h.parquet"),
        "--as-of",
        "2026-09-01T00:00:00Z",
        "--out",
        str(tmp_path / "f.parquet"),
        "--report",
        str(tmp_path / "r.json"),
    ]
    assert main(args) == 0
    built = pq.read_table(tmp_path / "f.parquet")
    assert built.num_rows == json.loads((tmp_path / "r.json").read_text())["leads_known"] > 0
    assert built["as_of"][0].as_py() == dt.datetime(2026, 9, 1, tzinfo=dt.UTC)
    args[args.index("--leads") + 1] = str(tmp_path / "missing.parquet")
    assert main(args) == 2
    assert "no such file" in capsys.readouterr().err
