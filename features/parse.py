"""Fit features parsed from lead fields: titles, bands, regions, email types, clean categories.

CRM data is typed by people: "VP, Sales", "vice-president sales", "Software ", "softwrae",
"USA", "United States". Each parser maps a raw value to one of the fixed categories of
:data:`features.spec.CATEGORIES`; values it cannot place become "other" and missing ones
"unknown", and both are counted in the :class:`~features.quality.DataQualityReport`.

Parsers work on the distinct values of a column (dictionary encoding), so 1,000,000 leads
cost what their few thousand distinct titles cost, and one lead on the hot path goes through
exactly the same function.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.privacy import FREE_EMAIL_DOMAINS
from features.quality import DataQualityReport
from features.spec import CATEGORIES

OTHER = "other"
UNKNOWN = "unknown"
_NON_WORD = re.compile(r"[^a-z0-9&]+")


def clean_key(raw: str) -> str:
    """Lower-case, '&' kept, every other run of punctuation/space folded to one space."""
    return _NON_WORD.sub(" ", raw.lower().replace("_", " ")).strip()


def _canonical(
    raw: str, aliases: dict[str, str], canonical: tuple[str, ...], fuzzy: bool = True
) -> str | None:
    key = clean_key(raw)
    if not key:
        return UNKNOWN
    if key in aliases:
        return aliases[key]
    if key in canonical:
        return key
    if fuzzy:  # spelling variants: "softwre", "helthcare"
        pool = list(canonical) + list(aliases)
        match = difflib.get_close_matches(key, pool, n=1, cutoff=0.84)
        if match:
            return aliases.get(match[0], match[0])
    return None


# ---- industry ------------------------------------------------------------------------------
_INDUSTRY_ALIASES = {
    "technology": "software",
    "tech": "software",
    "saas": "software",
    "software & services": "software",
    "computer software": "software",
    "information technology": "software",
    "it services": "software",
    "internet": "software",
    "finance": "financial services",
    "financial": "financial services",
    "banking": "financial services",
    "insurance": "financial services",
    "fintech": "financial services",
    "health care": "healthcare",
    "health": "healthcare",
    "medical": "healthcare",
    "pharma": "healthcare",
    "pharmaceuticals": "healthcare",
    "biotech": "healthcare",
    "life sciences": "healthcare",
    "hospital & health care": "healthcare",
    "industrial": "manufacturing",
    "industrials": "manufacturing",
    "automotive": "manufacturing",
    "retail & ecommerce": "retail",
    "ecommerce": "retail",
    "e commerce": "retail",
    "consumer goods": "retail",
    "wholesale": "retail",
    "higher education": "education",
    "edtech": "education",
    "public sector": "government",
    "government administration": "government",
    "public administration": "government",
    "media & entertainment": "media",
    "entertainment": "media",
    "publishing": "media",
    "marketing & advertising": "media",
    "telecom": "telecommunications",
    "telco": "telecommunications",
    "telecommunication": "telecommunications",
    "consulting": "professional services",
    "legal services": "professional services",
    "accounting": "professional services",
    "business services": "professional services",
    "services": "professional services",
    "utilities": "energy",
    "oil & gas": "energy",
    "renewables": "energy",
    "logistics": "transportation",
    "transport": "transportation",
    "transportation & logistics": "transportation",
    "travel": "hospitality",
    "hotels": "hospitality",
    "restaurants": "hospitality",
    "leisure": "hospitality",
    "property": "real estate",
    "construction": "real estate",
    "software & saas": "software",
    "finserv": "financial services",
    "non profit": "nonprofit",
    "not for profit": "nonprofit",
    "ngo": "nonprofit",
    "charity": "nonprofit",
    "n a": UNKNOWN,
    "na": UNKNOWN,
    "none": UNKNOWN,
    "null": UNKNOWN,
    "unknown": UNKNOWN,
    "other": OTHER,
}


@lru_cache(maxsize=100_000)
def industry(raw: str) -> str | None:
    """Canonical industry of a raw CRM value, or None when it matches nothing."""
    return _canonical(raw, _INDUSTRY_ALIASES, CATEGORIES["industry"])


# ---- lead source ---------------------------------------------------------------------------
_SOURCE_ALIASES = {
    "website": "web",
    "web form": "web",
    "web site": "web",
    "inbound": "web",
    "direct traffic": "web",
    "direct": "web",
    "organic": "organic search",
    "seo": "organic search",
    "google organic": "organic search",
    "ppc": "paid search",
    "sem": "paid search",
    "google ads": "paid search",
    "adwords": "paid search",
    "social media": "social",
    "paid social": "social",
    "linkedin": "social",
    "facebook": "social",
    "twitter": "social",
    "referral": "customer referral",
    "referrals": "customer referral",
    "word of mouth": "customer referral",
    "employee referral": "customer referral",
    "partner referral": "partner",
    "reseller": "partner",
    "channel partner": "partner",
    "partners": "partner",
    "trade show": "event",
    "tradeshow": "event",
    "conference": "event",
    "events": "event",
    "offline": "event",
    "webinars": "webinar",
    "ebook": "content",
    "whitepaper": "content",
    "content download": "content",
    "email marketing": "email",
    "email campaign": "email",
    "newsletter": "email",
    "cold call": "outbound",
    "cold email": "outbound",
    "prospecting": "outbound",
    "sdr": "outbound",
    "phone inquiry": "outbound",
    "purchased list": "list import",
    "list": "list import",
    "import": "list import",
    "other campaigns": OTHER,
    "none": UNKNOWN,
    "unknown": UNKNOWN,
    "n a": UNKNOWN,
}


@lru_cache(maxsize=10_000)
def lead_source(raw: str) -> str | None:
    """Canonical lead source (Salesforce picklists and HubSpot source codes folded in)."""
    return _canonical(raw, _SOURCE_ALIASES, CATEGORIES["lead_source"])


# ---- title: seniority and department -------------------------------------------------------
_SENIORITY_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(pattern))
    for label, pattern in (
        ("vp", r"\b(vp|svp|evp|avp|vice president|vicepresident|vice pres)\b"),
        (
            "c-level",
            r"\b(chief|ceo|cto|cfo|coo|cmo|cio|ciso|cro|cdo|cpo|chro|founder|co founder|cofounder|owner|"
            r"president|partner)\b",
        ),
        ("director", r"\b(director|head|dir)\b"),
        ("manager", r"\b(manager|mgr|team lead|supervisor)\b"),
        ("student", r"\b(student|intern|internship|graduate|trainee|apprentice)\b"),
        ("senior", r"\b(senior|sr|lead|principal|staff)\b"),
        (
            "individual contributor",
            r"\b(engineer|developer|analyst|specialist|consultant|associate|coordinator|"
            r"representative|rep|administrator|admin|architect|scientist|designer|accountant|assistant|generalist|"
            r"executive|officer|advisor|strategist|recruiter|technician|programmer|sdr|bdr|ae)\b",
        ),
    )
)
_DEPARTMENT_RULES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(pattern))
    for label, pattern in (
        ("customer success", r"\b(customer success|customer service|support|customer experience|cx)\b"),
        ("data", r"\b(data|analytics|bi|business intelligence|machine learning|ml|cdo)\b"),
        ("product", r"\b(product|cpo|ux|design|designer)\b"),
        ("hr", r"\b(hr|chro|human resources|people|talent|recruiter|recruiting|recruitment)\b"),
        ("it", r"\b(it|information|cio|ciso|systems|infrastructure|network|security|helpdesk)\b"),
        (
            "engineering",
            r"\b(engineer|engineering|developer|software|devops|cto|technology|r&d|r d|programmer|"
            r"architect|technical)\b",
        ),
        ("business development", r"\b(business development|biz dev|bizdev|bd|bdr|partnerships)\b"),
        ("sales", r"\b(sales|account executive|account manager|sdr|ae|cro|revenue|commercial)\b"),
        ("marketing", r"\b(marketing|cmo|growth|brand|demand|content|seo|communications|pr)\b"),
        ("finance", r"\b(finance|financial|cfo|accounting|accountant|controller|treasury|fp&a|fp a)\b"),
        (
            "operations",
            r"\b(operations|operating|ops|coo|supply chain|logistics|procurement|purchasing|facilities)\b",
        ),
        ("legal", r"\b(legal|counsel|compliance|attorney|lawyer)\b"),
        (
            "executive",
            r"\b(ceo|chief executive|founder|co founder|cofounder|owner|president|managing director|"
            r"general manager|partner|chairman|strategy|executive|chief of staff)\b",
        ),
    )
)
_TITLE_FIXES = {"vice-president": "vice president", "v.p.": "vp", "sr.": "senior", "mgr.": "manager"}


def _title_key(raw: str) -> str:
    text = raw.lower()
    for bad, good in _TITLE_FIXES.items():
        text = text.replace(bad, good)
    return clean_key(text)


@lru_cache(maxsize=200_000)
def seniority(raw: str) -> str | None:
    """Seniority level from a job title ("VP, Sales" -> "vp"); None when nothing matches."""
    key = _title_key(raw)
    if not key:
        return UNKNOWN
    for label, pattern in _SENIORITY_RULES:
        if pattern.search(key):
            return label
    return None


@lru_cache(maxsize=200_000)
def department(raw: str) -> str | None:
    """Department from a job title ("Head of Demand Gen" -> "marketing"); None when nothing matches."""
    key = _title_key(raw)
    if not key:
        return UNKNOWN
    for label, pattern in _DEPARTMENT_RULES:
        if pattern.search(key):
            return label
    return None


# ---- region ----------------------------------------------------------------------------------
_REGIONS: dict[str, tuple[str, ...]] = {
    "north america": (
        "north america",
        "us",
        "usa",
        "united states",
        "united states of america",
        "u s",
        "u s a",
        "america",
        "ca",
        "canada",
    ),
    "latin america": (
        "latin america",
        "latam",
        "mx",
        "mexico",
        "br",
        "brazil",
        "brasil",
        "ar",
        "argentina",
        "cl",
        "chile",
        "co",
        "colombia",
        "pe",
        "peru",
        "uy",
        "uruguay",
        "cr",
        "costa rica",
        "pa",
        "panama",
        "ec",
        "ecuador",
    ),
    "europe": (
        "europe",
        "eu",
        "gb",
        "uk",
        "united kingdom",
        "great britain",
        "england",
        "scotland",
        "wales",
        "ie",
        "ireland",
        "de",
        "germany",
        "deutschland",
        "fr",
        "france",
        "es",
        "spain",
        "espana",
        "it",
        "italy",
        "italia",
        "nl",
        "netherlands",
        "the netherlands",
        "holland",
        "be",
        "belgium",
        "lu",
        "luxembourg",
        "ch",
        "switzerland",
        "at",
        "austria",
        "se",
        "sweden",
        "no",
        "norway",
        "dk",
        "denmark",
        "fi",
        "finland",
        "is",
        "iceland",
        "pl",
        "poland",
        "cz",
        "czechia",
        "czech republic",
        "pt",
        "portugal",
        "gr",
        "greece",
        "hu",
        "hungary",
        "ro",
        "romania",
        "bg",
        "bulgaria",
        "ee",
        "estonia",
        "lv",
        "latvia",
        "lt",
        "lithuania",
        "sk",
        "slovakia",
        "si",
        "slovenia",
        "hr",
        "croatia",
        "rs",
        "serbia",
        "ua",
        "ukraine",
    ),
    "middle east & africa": (
        "middle east",
        "africa",
        "emea",
        "ae",
        "uae",
        "united arab emirates",
        "sa",
        "saudi arabia",
        "il",
        "israel",
        "tr",
        "turkey",
        "turkiye",
        "eg",
        "egypt",
        "za",
        "south africa",
        "ng",
        "nigeria",
        "ke",
        "kenya",
        "ma",
        "morocco",
        "qa",
        "qatar",
    ),
    "apac": (
        "asia pacific",
        "asia",
        "in",
        "india",
        "cn",
        "china",
        "jp",
        "japan",
        "kr",
        "south korea",
        "korea",
        "sg",
        "singapore",
        "au",
        "australia",
        "nz",
        "new zealand",
        "hk",
        "hong kong",
        "tw",
        "taiwan",
        "id",
        "indonesia",
        "my",
        "malaysia",
        "th",
        "thailand",
        "vn",
        "vietnam",
        "ph",
        "philippines",
    ),
}
_COUNTRY_TO_REGION = {name: region for region, names in _REGIONS.items() for name in names}


@lru_cache(maxsize=10_000)
def region(raw: str) -> str | None:
    """Sales region of a country given as ISO code or name, in any casing."""
    key = clean_key(raw)
    if not key:
        return UNKNOWN
    if key in _COUNTRY_TO_REGION:
        return _COUNTRY_TO_REGION[key]
    if len(key) > 3:
        match = difflib.get_close_matches(
            key, [k for k in _COUNTRY_TO_REGION if len(k) > 3], n=1, cutoff=0.85
        )
        if match:
            return _COUNTRY_TO_REGION[match[0]]
    return None


# ---- vectorised application -------------------------------------------------------------
def _as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def map_category(
    values: pa.Array | pa.ChunkedArray,
    parse: Callable[[str], str | None],
    field_name: str,
    report: DataQualityReport,
    *,
    count_repairs: bool = True,
) -> pa.Array:
    """Apply ``parse`` to each distinct value; nulls/blanks -> "unknown", unmatched -> "other".

    Counts missing rows and unknown raw values in ``report``, and (``count_repairs``) rows
    whose value was repaired to a different name than its own, casing aside ("FinServ").
    """
    array = _as_array(values)
    if not pa.types.is_dictionary(array.type):
        array = pc.dictionary_encode(array)
    raw_values = array.dictionary.to_pylist()
    indices = array.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    counts = np.bincount(indices[indices >= 0], minlength=len(raw_values))
    mapped: list[str] = []
    unknown: Counter[str] = Counter()
    for raw, n in zip(raw_values, counts.tolist(), strict=True):
        parsed = parse(raw) if raw is not None else UNKNOWN
        if parsed is None:
            unknown[raw] += n
            parsed = OTHER
        elif parsed == UNKNOWN:
            report.missing[field_name] += n
        elif count_repairs and clean_key(raw) != parsed:
            report.normalised[field_name] += n
        mapped.append(parsed)
    missing_rows = int((indices < 0).sum())
    if missing_rows:
        report.missing[field_name] += missing_rows
    if unknown:
        report.add_unknown(field_name, unknown)
    lookup = np.array([*mapped, UNKNOWN], dtype=object)
    return pa.array(lookup[indices], type=pa.string())


def bands(
    values: pa.Array | pa.ChunkedArray,
    edges: tuple[float, ...],
    labels: tuple[str, ...],
    field_name: str,
    report: DataQualityReport,
    maximum: float = np.inf,
) -> pa.Array:
    """Band numbers by ``edges`` (left-closed); null, non-positive or above ``maximum`` (no
    company is that big: a typing error) -> "unknown", counted as missing or invalid."""
    array = _as_array(values)
    nums = array.to_numpy(zero_copy_only=False).astype(np.float64)  # nulls -> nan
    missing = np.isnan(nums)
    invalid = ~missing & ((nums <= 0) | (nums > maximum))
    if missing.any():
        report.missing[field_name] += int(missing.sum())
    if invalid.any():
        report.invalid[field_name] += int(invalid.sum())
    position = np.searchsorted(np.asarray(edges), np.where(missing | invalid, 1.0, nums), side="right") - 1
    lookup = np.array([*labels, UNKNOWN], dtype=object)
    position = np.where(missing | invalid, len(labels), np.clip(position, 0, len(labels) - 1))
    return pa.array(lookup[position], type=pa.string())


SIZE_EDGES = (1, 11, 51, 201, 1001, 5001)
MAX_EMPLOYEES = 5_000_000  # the largest employers have about 2 million
MAX_REVENUE = 2e12  # the largest companies turn over well under 1e12 USD
SIZE_LABELS = CATEGORIES["size_band"][:-1]
REVENUE_EDGES = (0.0, 1e6, 1e7, 1e8, 1e9)
REVENUE_LABELS = CATEGORIES["revenue_band"][:-1]


def normalise_domain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Lower-case host names without scheme, 'www.' or path; blanks become null."""
    text = pc.utf8_lower(pc.utf8_trim_whitespace(_as_array(values)))
    text = pc.replace_substring_regex(text, r"^(https?://)?(www\.)?", "")
    text = pc.replace_substring_regex(text, r"[/?#].*$", "")
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)


def email_type(email_domain: pa.Array) -> pa.Array:
    """'free' for free-mail domains (features.privacy.FREE_EMAIL_DOMAINS), 'corporate' otherwise."""
    free = pc.is_in(email_domain, value_set=pa.array(sorted(FREE_EMAIL_DOMAINS), pa.string()))
    typed = pc.if_else(free, "free", "corporate")
    return pc.if_else(pc.is_null(email_domain), UNKNOWN, typed)


def account_domain(company_domain: pa.Array) -> pa.Array:
    """The domain leads are grouped by for account context; free-mail domains are no account."""
    free = pc.is_in(company_domain, value_set=pa.array(sorted(FREE_EMAIL_DOMAINS), pa.string()))
    return pc.if_else(pc.fill_null(free, False), pa.scalar(None, pa.string()), company_domain)


PROFILE_FIELDS = (
    "company",
    "company_domain",
    "industry",
    "employees",
    "annual_revenue",
    "country",
    "title",
    "lead_source",
    "email_domain",
)


def _present(column: pa.Array) -> np.ndarray:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        blank = pc.equal(pc.utf8_trim_whitespace(column), "")
        return ~np.asarray(
            pc.fill_null(pc.or_kleene(pc.is_null(column), blank), True).to_numpy(zero_copy_only=False)
        )
    return ~np.asarray(pc.is_null(column, nan_is_null=True).to_numpy(zero_copy_only=False))


def fit_features(leads: pa.Table, report: DataQualityReport) -> dict[str, pa.Array]:
    """The fit family for every row of ``leads`` (LEADS schema), plus the account domain.

    Only profile fields are read; status, converted flags and consent are state at extraction
    time and never enter a feature.
    """
    col = {name: _as_array(leads.column(name)) for name in PROFILE_FIELDS}
    email_domain = normalise_domain(col["email_domain"])
    if email_domain.null_count:
        report.missing["email_domain"] += email_domain.null_count
    company_domain = normalise_domain(col["company_domain"])
    matches = pc.cast(pc.equal(email_domain, company_domain), pa.float64())  # null when either is missing
    present = np.zeros(len(leads), dtype=np.int64)
    for name in PROFILE_FIELDS:
        present += _present(col[name])
    return {
        "industry": map_category(col["industry"], industry, "industry", report),
        "size_band": bands(col["employees"], SIZE_EDGES, SIZE_LABELS, "employees", report, MAX_EMPLOYEES),
        "revenue_band": bands(
            col["annual_revenue"], REVENUE_EDGES, REVENUE_LABELS, "annual_revenue", report, MAX_REVENUE
        ),
        "region": map_category(col["country"], region, "country", report, count_repairs=False),
        "seniority": map_category(col["title"], seniority, "title", report, count_repairs=False),
        "department": map_category(
            col["title"], department, "title_department", _Quiet(report), count_repairs=False
        ),
        "lead_source": map_category(col["lead_source"], lead_source, "lead_source", report),
        "email_type": email_type(email_domain),
        "email_matches_company": matches,
        "data_completeness": pa.array(present / len(PROFILE_FIELDS), pa.float64()),
        "_account_domain": account_domain(company_domain),
    }


class _Quiet(DataQualityReport):
    """Records unknown department titles only (missing titles are already counted once)."""

    def __init__(self, parent: DataQualityReport) -> None:
        super().__init__()
        self._parent = parent

    def add_unknown(self, field_name: str, values: Counter[str]) -> None:
        self._parent.add_unknown(field_name, values)
