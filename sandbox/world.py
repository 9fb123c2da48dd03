"""The simulated CRM world: a realistic B2B lead population, its engagement and conversions.

Everything is drawn from one seed with vectorised NumPy/Arrow code, so the same spec gives
byte-identical tables. The world has a hidden ground truth, kept in ``World.truth`` and never
in CRM-visible data, from which :func:`oracle_probability` gives each open lead's true chance
of converting within a horizon. Its AUC against realised conversions is the ceiling any model
trained on the CRM data can reach (see "The hidden model" below).

The hidden model
----------------
* **Inflow.** Leads arrive with a linear trend, weekly seasonality (few at weekends) and a
  yearly cycle (summer and year-end dips). The lead-source mix drifts slowly (paid social and
  partners grow, events and outbound shrink); so does the regional mix.
* **Fit** ``f`` (standardised) is a fixed linear function of visible firmographics and
  demographics: industry, company size (mid-market best), seniority and department parsed
  from the title, region, free vs corporate email and lead source.
* **Intent** ``z ~ N(0, 1)`` is latent, correlated 0.3 with fit. It drives both engagement
  and conversion, so engagement reveals it: a lead's event rate is ``exp(0.9 z + 0.25 f +
  source effect)`` and the share of high-intent events (pricing and demo pages, demo
  requests, meetings, calls, replies) rises with ``z``.
* **Engagement timing.** Sessions (bursts of 1 + Geometric events minutes apart) arrive
  with a density that decays from the lead's creation (a 14-day and a 200-day component);
  weekend sessions are mostly moved to Monday. An unsubscribe ends a lead's email events.
* **Conversion** has a cumulative hazard ``H * G(age)`` with ``H = exp(c0 + 1.0 f + 1.1 z +
  0.35 f z)`` and ``G`` the CDF of a delay mixing Gamma(2, 25 days) (80%) with an Exponential(250 days)
  tail, so most conversions come one to three months after creation and some much later. Some low-fit leads are disqualified by sales between 120 and
  240 days of age (if they have not converted by then), which ends their chance.
* **Oracle.** For an open lead of age ``a`` at ``T``:
  ``P(convert in (T, T+h]) = 1 - exp(-H (G(min(a + h, d)) - G(a)))`` with ``d`` its
  disqualification age (infinite if none). It knows the latent intent, which no CRM field
  shows, so it bounds what a model can reach; engagement makes the bound approachable.
* **Status** evolves as sales would set it: ``open`` at creation, ``working`` a few days
  later for most leads, ``nurturing`` after 60 quiet days, ``qualified`` 1-5 days before a
  conversion (a real, small outcome signal: a lead qualified at T converts soon),
  ``converted``, or ``unqualified`` at disqualification.

Dirt (at ``dirt_rate``): missing fields, inconsistent casing and spelling of industries and
countries, malformed emails, impossible employees and revenue, and duplicate leads (a second
CRM record of the same person, with no events). ``truth`` marks what was planted.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.contract import ACTIVITIES, LEAD_STATUS_HISTORY, RAW_LEADS, conform
from plugins.world import (  # noqa: F401  (re-exported: the sandbox's public names)
    CONVERSION_DELAY_SCALE_DAYS,
    CONVERSION_TAIL_DAYS,
    CONVERSION_TAIL_SHARE,
    WORLD_FILES,
    delay_cdf,
    oracle_probability,
    world_exists,
)

DAY_US = 86_400 * 1_000_000
ROW_GROUP = 1_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

# ---- vocabularies -----------------------------------------------------------------------
INDUSTRIES = (
    ("Software", 0.16, 0.60, 220_000),
    ("Financial Services", 0.10, 0.30, 400_000),
    ("Healthcare", 0.10, 0.10, 180_000),
    ("Manufacturing", 0.12, 0.00, 250_000),
    ("Retail", 0.09, -0.20, 300_000),
    ("Education", 0.06, -0.50, 90_000),
    ("Government", 0.04, -0.40, 120_000),
    ("Media", 0.05, 0.00, 200_000),
    ("Telecommunications", 0.05, 0.20, 350_000),
    ("Professional Services", 0.12, 0.20, 160_000),
    ("Energy", 0.04, 0.00, 600_000),
    ("Nonprofit", 0.03, -0.70, 70_000),
    ("Transportation", 0.04, -0.10, 210_000),
)  # name, share, fit effect, revenue per employee (USD)

COUNTRIES = (
    ("US", "North America", 0.37, "com", "+1"),
    ("CA", "North America", 0.05, "ca", "+1"),
    ("MX", "Latin America", 0.02, "com.mx", "+52"),
    ("BR", "Latin America", 0.03, "com.br", "+55"),
    ("GB", "Europe", 0.09, "co.uk", "+44"),
    ("DE", "Europe", 0.08, "de", "+49"),
    ("FR", "Europe", 0.06, "fr", "+33"),
    ("NL", "Europe", 0.03, "nl", "+31"),
    ("ES", "Europe", 0.03, "es", "+34"),
    ("IT", "Europe", 0.03, "it", "+39"),
    ("SE", "Europe", 0.02, "se", "+46"),
    ("IE", "Europe", 0.01, "ie", "+353"),
    ("AU", "Asia Pacific", 0.04, "com.au", "+61"),
    ("IN", "Asia Pacific", 0.05, "in", "+91"),
    ("JP", "Asia Pacific", 0.03, "jp", "+81"),
    ("SG", "Asia Pacific", 0.02, "sg", "+65"),
    ("ZA", "Africa", 0.01, "co.za", "+27"),
    ("AE", "Middle East", 0.01, "ae", "+971"),
)  # ISO code, region, share, TLD, phone prefix
REGION_FIT = {
    "North America": 0.10,
    "Europe": 0.0,
    "Asia Pacific": -0.10,
    "Latin America": -0.30,
    "Africa": -0.30,
    "Middle East": -0.10,
}
#: Countries under GDPR-style consent: fewer leads give processing consent there.
CONSENT_REGIONS = ("Europe",)

LEAD_SOURCES = (
    # name, start share, end share, fit effect, engagement effect, free-email shift
    ("Web", 0.14, 0.13, 0.30, 0.10, 0.0),
    ("Organic Search", 0.14, 0.13, 0.00, 0.00, 0.3),
    ("Paid Search", 0.12, 0.12, -0.10, -0.10, 0.3),
    ("Paid Social", 0.06, 0.13, -0.40, -0.30, 0.8),
    ("Content Download", 0.10, 0.10, -0.30, 0.10, 0.6),
    ("Email Campaign", 0.09, 0.08, -0.20, 0.20, 0.0),
    ("Webinar", 0.08, 0.08, 0.20, 0.30, 0.0),
    ("Event", 0.10, 0.05, 0.20, -0.20, -0.3),
    ("Partner Referral", 0.05, 0.08, 0.50, 0.00, -0.5),
    ("Customer Referral", 0.04, 0.05, 0.70, 0.10, -0.5),
    ("Outbound", 0.08, 0.05, -0.30, -0.50, -1.0),
)

SENIORITIES = (  # name, share, fit effect
    ("C-Level", 0.05, 0.50),
    ("VP", 0.08, 0.60),
    ("Director", 0.14, 0.50),
    ("Manager", 0.25, 0.20),
    ("Senior", 0.20, -0.10),
    ("Individual Contributor", 0.23, -0.30),
    ("Student", 0.05, -1.50),
)
DEPARTMENTS = (  # name, share, fit effect
    ("Marketing", 0.20, 0.40),
    ("Sales", 0.16, 0.30),
    ("IT", 0.15, 0.20),
    ("Engineering", 0.14, 0.10),
    ("Operations", 0.11, 0.00),
    ("Finance", 0.09, -0.10),
    ("Human Resources", 0.06, -0.30),
    ("Executive", 0.05, 0.30),
    ("Other", 0.04, -0.40),
)
_C_TITLES = {
    "Marketing": ("CMO", "Chief Marketing Officer"),
    "Sales": ("CRO", "Chief Revenue Officer"),
    "IT": ("CIO", "Chief Information Officer"),
    "Engineering": ("CTO", "Chief Technology Officer"),
    "Operations": ("COO", "Chief Operating Officer"),
    "Finance": ("CFO", "Chief Financial Officer"),
    "Human Resources": ("CHRO", "Chief People Officer"),
    "Executive": ("CEO", "Founder & CEO"),
    "Other": ("Chief of Staff", "Chief Strategy Officer"),
}
_IC_ROLES = {
    "Marketing": "Marketing Specialist",
    "Sales": "Account Executive",
    "IT": "Systems Administrator",
    "Engineering": "Software Engineer",
    "Operations": "Operations Analyst",
    "Finance": "Financial Analyst",
    "Human Resources": "HR Generalist",
    "Executive": "Executive Assistant",
    "Other": "Consultant",
}


def _title_variants(seniority: str, dept: str) -> tuple[str, str, str]:
    short = {"Human Resources": "HR", "Executive": "Strategy", "Other": "Business Development"}.get(
        dept, dept
    )
    if seniority == "C-Level":
        a, b = _C_TITLES[dept]
        return a, b, b
    if seniority == "VP":
        return f"VP of {short}", f"Vice President, {short}", f"SVP {short}"
    if seniority == "Director":
        return f"Director of {short}", f"{short} Director", f"Head of {short}"
    if seniority == "Manager":
        return f"{short} Manager", f"Senior {short} Manager", f"{short} Team Lead"
    role = _IC_ROLES[dept]
    if seniority == "Senior":
        return f"Senior {role}", f"Sr. {role}", f"Lead {role}"
    if seniority == "Individual Contributor":
        return role, f"{role} II", f"Associate {role}"
    return "Student", f"{short} Intern", "Graduate Student"


FIRST_NAMES = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan "
    "Joseph Jessica Thomas Sarah Charles Karen Daniel Lisa Matthew Nancy Anthony Sandra Mark Ashley Paul "
    "Emily Steven Donna Andrew Michelle Kenneth Carol Joshua Amanda Kevin Melissa Brian Deborah Lukas Anna "
    "Leon Sophie Felix Marie Hugo Camille Louis Chloe Mateo Lucia Pablo Elena Marco Giulia Luca Sofia Sven "
    "Astrid Liam Aoife Arjun Priya Rahul Ananya Hiroshi Yuki Kenji Sakura Wei Mei Chen Li Olivia Noah "
    "Carlos Ana Diego Isabela Pedro Mariana Oliver Amelia Jack Isla Ethan Grace Lucas Zoe Omar Fatima"
).split()
LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams "
    "Muller Schmidt Schneider Fischer Weber Meyer Wagner Becker Dubois Moreau Laurent Bernard Rossi Russo "
    "Ferrari Esposito Fernandez Ruiz Jansen deVries Bakker Andersson Johansson Murphy Kelly Sharma Patel "
    "Gupta Singh Tanaka Suzuki Sato Watanabe Wang Zhang Liu Silva Santos Oliveira Costa Tan Lim Khan Ali"
).split()
_NAME_PARTS_A = (
    "Acme Apex Blue Bright Cedar Clear Core Crest Delta Echo Ever Fair First Fusion Global Granite Green "
    "Harbor High Iron Key Lake Lumen Maple Mega Meridian Nexa North Nova Oak Omni Open Optima Orbit Peak "
    "Pine Pixel Prime Quantum Rapid Red River Rock Sage Silver Sky Solar Stone Summit Swift Terra True "
    "Union United Urban Vector Vista Wave West Wild Zen Zenith Alpine Atlas Beacon Bold Cobalt Coral"
).split()
_NAME_PARTS_B = (
    "soft works labs logic systems data tech cloud net ware bridge point line path gate field stream "
    "forge scale sphere wise flow hub base stack mind grid link dyn metrics nomics ify ly io"
).split()
_NAME_KINDS = ("Inc", "LLC", "Ltd", "GmbH", "Group", "Corp", "Solutions", "Partners", "Holdings", "Co")
FREE_DOMAINS = (
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "aol.com",
    "gmx.de",
    "proton.me",
)

# Engagement event types: channel, action, high intent?, base weight (low) or weight (high), details
EVENT_TYPES = (
    (
        "email",
        "open",
        False,
        30.0,
        (
            "Monthly Newsletter",
            "Product Update",
            "Customer Story",
            "Event Invite",
            "Nurture Sequence 1",
            "Nurture Sequence 2",
            "Nurture Sequence 3",
        ),
    ),
    (
        "email",
        "click",
        False,
        9.0,
        ("Monthly Newsletter", "Product Update", "Customer Story", "Event Invite"),
    ),
    ("email", "bounce", False, 0.4, ("Monthly Newsletter",)),
    ("email", "unsubscribe", False, 0.25, ("Monthly Newsletter", "Nurture Sequence 2")),
    (
        "web",
        "visit",
        False,
        28.0,
        (
            "/",
            "/blog/lead-scoring-101",
            "/blog/crm-hygiene",
            "/blog/ai-in-sales",
            "/blog/pipeline-forecasting",
            "/product",
            "/product/integrations",
            "/product/security",
            "/about",
            "/careers",
        ),
    ),
    ("ad", "click", False, 4.0, ("LinkedIn Retargeting", "Google Search Brand", "Display Prospecting")),
    ("form", "submit", False, 2.5, ("ebook-download", "newsletter-signup", "whitepaper-download")),
    ("webinar", "register", False, 1.5, ("Webinar: Scoring Leads with AI", "Webinar: RevOps Playbook")),
    ("webinar", "attend", False, 1.0, ("Webinar: Scoring Leads with AI", "Webinar: RevOps Playbook")),
    ("chat", "reply", False, 1.0, ("website-chat",)),
    # high intent
    (
        "web",
        "visit",
        True,
        10.0,
        ("/pricing", "/demo", "/case-studies/fintech", "/case-studies/saas", "/product/enterprise"),
    ),
    ("form", "submit", True, 2.0, ("demo-request", "contact-sales", "pricing-quote")),
    ("email", "reply", True, 2.0, ("Sales Follow-up",)),
    ("call", "completed", True, 2.5, ("Discovery Call", "Follow-up Call")),
    ("meeting", "booked", True, 1.5, ("Product Demo", "Discovery Meeting")),
    ("meeting", "attend", True, 1.2, ("Product Demo", "Discovery Meeting")),
)
#: Channels that a Salesforce org records as Tasks/Events; other channels arrive as web-tracking files.
SALESFORCE_CHANNELS = ("email", "call", "meeting")



@dataclass(frozen=True)
class WorldSpec:
    """What to simulate. ``end`` is the moment the world is observed (the CRM state)."""

    n_leads: int
    days: int
    seed: int = 7
    end: dt.date = dt.date(2026, 11, 1)
    crm_split: Mapping[str, float] = field(default_factory=lambda: {"salesforce": 0.5, "hubspot": 0.5})
    dirt_rate: float = 0.02
    events_per_lead: float = 50.0  # mean engagement events of a lead over its whole observed life
    base_conversion: float = -3.1  # c0 of the hazard; about 10% of leads convert eventually

    def __post_init__(self) -> None:
        if self.n_leads <= 0:
            raise ValueError(f"n_leads must be positive, got {self.n_leads}")
        if self.days <= 0:
            raise ValueError(f"days must be positive, got {self.days}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if not 0 <= self.dirt_rate <= 0.5:
            raise ValueError(f"dirt_rate must be within [0, 0.5], got {self.dirt_rate}")
        if self.events_per_lead < 0:
            raise ValueError(f"events_per_lead must be >= 0, got {self.events_per_lead}")
        unknown = set(self.crm_split) - {"salesforce", "hubspot"}
        if unknown or abs(sum(self.crm_split.values()) - 1.0) > 1e-6:
            raise ValueError(
                f"crm_split must give salesforce and hubspot shares summing to 1, got {self.crm_split}"
            )

    @property
    def end_us(self) -> int:
        return _to_us(dt.datetime.combine(self.end, dt.time(), tzinfo=dt.UTC))

    @property
    def start_us(self) -> int:
        return self.end_us - self.days * DAY_US

    def to_json(self) -> dict:
        d = asdict(self)
        d["end"] = self.end.isoformat()
        d["crm_split"] = dict(self.crm_split)
        return d

    @classmethod
    def from_json(cls, d: Mapping) -> WorldSpec:
        return cls(**{**d, "end": dt.date.fromisoformat(d["end"])})


@dataclass
class World:
    """A simulated world: CRM-visible tables plus the hidden ground truth."""

    spec: WorldSpec
    raw_leads: pa.Table  # RAW_LEADS, state at spec.end, dirt included
    activities: pa.Table  # ACTIVITIES before spec.end
    status_history: pa.Table  # LEAD_STATUS_HISTORY before spec.end
    truth: pa.Table  # hidden: never give this to a CRM, a feature or a model

    def summary(self) -> dict:
        """Headline figures of the world (counts, rates), for the CLI and the demo."""
        return _summary(self.spec, self.raw_leads, self.activities.num_rows, self.truth)


def _summary(spec: WorldSpec, leads: pa.Table, n_events: int, truth: pa.Table) -> dict:
    converted = pc.sum(pc.cast(leads["converted"], pa.int64())).as_py() or 0
    return {
        "leads": leads.num_rows,
        "events": n_events,
        "converted": converted,
        "conversion_rate": round(converted / max(leads.num_rows, 1), 4),
        "by_crm": dict(sorted(_value_counts(leads["source"]).items())),
        "duplicates_planted": int(pc.sum(pc.cast(truth["is_duplicate"], pa.int64())).as_py() or 0),
        "start": _from_us(spec.start_us).isoformat(),
        "end": _from_us(spec.end_us).isoformat(),
    }


# ---- the generator ------------------------------------------------------------------------
def simulate_world(spec: WorldSpec) -> World:
    """Draw a world from ``spec``. Deterministic: the same spec gives identical tables."""
    draft = _draw(spec)
    activities = pa.Table.from_batches(list(_activity_batches(draft)), schema=ACTIVITIES)
    return World(spec, draft.raw_leads, activities, draft.status_history, draft.truth)


def write_world(spec: WorldSpec, out_dir: Path | str) -> dict:
    """Simulate straight to disk, streaming the events: the way to make large worlds.

    Gives the same files as ``save_world(simulate_world(spec), out_dir)`` with a fraction of
    the memory, since the events never exist as one Arrow table.
    """
    draft = _draw(spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for attr in ("raw_leads", "status_history", "truth"):
        _write_parquet(getattr(draft, attr), out / WORLD_FILES[attr])
    tmp = out / f".{WORLD_FILES['activities']}.tmp"
    n_events = 0
    with pq.ParquetWriter(tmp, ACTIVITIES, compression="zstd") as writer:
        for batch in _activity_batches(draft):
            writer.write_batch(batch, row_group_size=ROW_GROUP)
            n_events += batch.num_rows
    tmp.replace(out / WORLD_FILES["activities"])
    summary = _summary(spec, draft.raw_leads, n_events, draft.truth)
    _write_spec(out, spec, summary)
    return summary


@dataclass
class _Draft:
    raw_leads: pa.Table
    status_history: pa.Table
    truth: pa.Table
    events: dict[str, np.ndarray]
    lead_ids: pa.Array
    is_sf: np.ndarray


def _draw(spec: WorldSpec) -> _Draft:
    """Everything but the Arrow form of the events (kept as compact NumPy columns)."""
    streams = np.random.SeedSequence(spec.seed).spawn(8)
    rng = [np.random.default_rng(s) for s in streams]
    n = spec.n_leads
    start_us, end_us = spec.start_us, spec.end_us

    # -- inflow: trend x weekly x yearly, exactly n leads --------------------------------
    day_idx = np.arange(spec.days)
    day_start_us = start_us + day_idx * DAY_US
    dates = (day_start_us // DAY_US).astype("datetime64[D]")
    dow = (dates.astype(np.int64) + 3) % 7  # 0 = Monday
    doy = (dates - dates.astype("datetime64[Y]")).astype(np.int64)
    weekly = np.array([1.15, 1.2, 1.15, 1.1, 0.9, 0.3, 0.25])[dow]
    yearly = 1 + 0.22 * np.cos(2 * np.pi * (doy - 80) / 365.25) - 0.25 * np.exp(-(((doy - 358) / 6.0) ** 2))
    trend = 1 + 0.35 * day_idx / 365.25
    intensity = weekly * yearly * trend
    per_day = rng[0].multinomial(n, intensity / intensity.sum())
    lead_day = np.repeat(day_idx, per_day)
    hour = np.clip(rng[0].normal(14.0, 3.5, n), 0.0, 23.99)
    created_us = start_us + lead_day * DAY_US + (hour * 3_600_000_000).astype(np.int64)
    t_frac = (created_us - start_us) / (end_us - start_us)  # 0..1 position in the world's window

    # -- segments drifting over time --------------------------------------------------------
    src_start = np.array([s[1] for s in LEAD_SOURCES])
    src_end = np.array([s[2] for s in LEAD_SOURCES])
    lead_source = _sample_drifting(rng[1], src_start, src_end, t_frac)
    region_shift = np.array([0.0 if c[1] != "Asia Pacific" else 0.6 for c in COUNTRIES])
    c_share = np.array([c[2] for c in COUNTRIES])
    country_idx_by_time = _sample_drifting(rng[1], c_share, c_share * np.exp(region_shift), t_frac)

    # -- companies: shared domains, size and revenue by industry --------------------------
    n_companies = max(1, n // 3)
    ind_share = np.array([i[1] for i in INDUSTRIES])
    comp_industry = rng[2].choice(len(INDUSTRIES), n_companies, p=ind_share / ind_share.sum())
    comp_employees = np.clip(np.round(np.exp(rng[2].normal(np.log(180), 1.7, n_companies))), 1, 400_000)
    rev_per_emp = np.array([i[3] for i in INDUSTRIES])[comp_industry]
    comp_revenue = np.round(comp_employees * rev_per_emp * np.exp(rng[2].normal(0, 0.45, n_companies)), -3)
    comp_country = rng[2].choice(len(COUNTRIES), n_companies, p=c_share / c_share.sum())
    weights = comp_employees**0.45 * np.exp(rng[2].normal(0, 0.8, n_companies))
    company = _searchsorted_sample(rng[2], weights, n)
    # a lead's country is its company's, except that the drifting regional mix re-homes some
    rehome = rng[2].random(n) < 0.25
    country = np.where(rehome, country_idx_by_time, comp_country[company])
    names, domains = _company_names(rng[2], n_companies, comp_country)

    # -- people ------------------------------------------------------------------------------
    sen_share = np.array([s[1] for s in SENIORITIES])
    dep_share = np.array([d[1] for d in DEPARTMENTS])
    seniority = rng[3].choice(len(SENIORITIES), n, p=sen_share / sen_share.sum())
    department = rng[3].choice(len(DEPARTMENTS), n, p=dep_share / dep_share.sum())
    variant = rng[3].integers(0, 3, n)
    titles_vocab = [
        _title_variants(s[0], d[0])[v] for s in SENIORITIES for d in DEPARTMENTS for v in range(3)
    ]
    title_idx = (seniority * len(DEPARTMENTS) + department) * 3 + variant
    log_emp = np.log10(comp_employees[company])
    src_free = np.array([s[5] for s in LEAD_SOURCES])[lead_source]
    p_free = _sigmoid(-1.3 - 0.45 * (log_emp - 2.0) + src_free + np.where(seniority == 6, 1.5, 0.0))
    free_email = rng[3].random(n) < p_free

    # -- hidden fit and intent ---------------------------------------------------------------
    fit_raw = (
        np.array([i[2] for i in INDUSTRIES])[comp_industry[company]]
        + (0.30 - 0.25 * (log_emp - 3.0) ** 2)
        + np.array([s[2] for s in SENIORITIES])[seniority]
        + np.array([d[2] for d in DEPARTMENTS])[department]
        + np.array([REGION_FIT[c[1]] for c in COUNTRIES])[country]
        - 0.6 * free_email
        + np.array([s[3] for s in LEAD_SOURCES])[lead_source]
    )
    fit = (fit_raw - fit_raw.mean()) / (fit_raw.std() or 1.0)
    intent = 0.3 * fit + np.sqrt(1 - 0.09) * rng[4].normal(0, 1, n)

    # -- conversion and disqualification ------------------------------------------------------
    hazard = np.exp(spec.base_conversion + 1.0 * fit + 1.1 * intent + 0.35 * fit * intent)
    e = rng[4].exponential(1.0, n)
    conv_age = np.full(n, np.inf)
    will = e < hazard
    conv_age[will] = _delay_ppf(e[will] / hazard[will])
    disq_age = np.where((fit < -0.3) & (rng[4].random(n) < 0.7), rng[4].uniform(120, 240, n), np.inf)
    conv_age = np.where(conv_age < disq_age, conv_age, np.inf)
    conv_us = _age_to_us(created_us, conv_age)
    disq_us = np.where(np.isinf(conv_age), _age_to_us(created_us, disq_age), np.iinfo(np.int64).max)

    # -- engagement ---------------------------------------------------------------------------
    events, unsub_us = _simulate_events(rng[5], spec, created_us, fit, intent, lead_source)

    # -- CRM ownership and identifiers -----------------------------------------------------
    sf_share = float(spec.crm_split.get("salesforce", 0.0))
    is_sf = rng[6].random(n) < sf_share
    lead_ids, crm_ids, source = _lead_identifiers(is_sf)

    # -- consent ------------------------------------------------------------------------------
    region_of = np.array([c[1] for c in COUNTRIES])[country]
    consent = rng[6].random(n) < np.where(np.isin(region_of, CONSENT_REGIONS), 0.85, 0.97)
    opted_out = (unsub_us < end_us) | (rng[6].random(n) < 0.01)

    # -- status history ------------------------------------------------------------------------
    status_history, status_now, updated_us = _status_history(
        rng[6], created_us, conv_us, disq_us, fit, end_us, lead_ids, source
    )
    converted = conv_us < end_us

    # -- contact data (raw PII) ------------------------------------------------------------
    first = rng[7].integers(0, len(FIRST_NAMES), n)
    last = rng[7].integers(0, len(LAST_NAMES), n)
    emails = _emails(rng[7], first, last, domains, company, free_email)
    phones = _phones(rng[7], country)

    raw = {
        "lead_id": lead_ids,
        "source": source,
        "crm_id": crm_ids,
        "created_at": _ts(created_us),
        "updated_at": _ts(np.maximum(updated_us, np.where(opted_out & (unsub_us < end_us), unsub_us, 0))),
        "first_name": pa.array(FIRST_NAMES).take(pa.array(first)),
        "last_name": pa.array(LAST_NAMES).take(pa.array(last)),
        "email": emails,
        "phone": phones,
        "company": pa.array(names).take(pa.array(company)),
        "company_domain": pa.array(domains).take(pa.array(company)),
        "industry": pa.array([i[0] for i in INDUSTRIES]).take(pa.array(comp_industry[company])),
        "employees": pa.array(comp_employees[company].astype(np.int64)),
        "annual_revenue": pa.array(comp_revenue[company]),
        "country": pa.array([c[0] for c in COUNTRIES]).take(pa.array(country)),
        "title": pa.array(titles_vocab).take(pa.array(title_idx)),
        "lead_source": pa.array([s[0] for s in LEAD_SOURCES]).take(pa.array(lead_source)),
        "status": status_now,
        "converted": pa.array(converted),
        "converted_at": _ts(np.where(converted, conv_us, 0), mask=~converted),
        "consent_processing": pa.array(consent),
        "opted_out": pa.array(opted_out),
    }
    raw_table = pa.table(raw)
    raw_table = _natural_missingness(rng[7], raw_table, is_sf)
    truth = pa.table(
        {
            "lead_id": lead_ids,
            "created_at": _ts(created_us),
            "fit": fit,
            "intent": intent,
            "hazard": hazard,
            "conversion_at": _ts(np.where(np.isfinite(conv_age), conv_us, 0), mask=~np.isfinite(conv_age)),
            "disqualified_at": _ts(
                np.where(np.isfinite(disq_age), _age_to_us(created_us, disq_age), 0),
                mask=~np.isfinite(disq_age),
            ),
            "disqualify_age_days": disq_age,
            "seniority": pa.array([s[0] for s in SENIORITIES]).take(pa.array(seniority)),
            "department": pa.array([d[0] for d in DEPARTMENTS]).take(pa.array(department)),
            "free_email": free_email,
            "is_duplicate": np.zeros(n, dtype=bool),
            "duplicate_of": pa.nulls(n, pa.string()),
            "dirt": pa.nulls(n, pa.string()),
        }
    )
    raw_table, truth = _add_dirt(np.random.default_rng(streams[7].spawn(1)[0]), spec, raw_table, truth)

    return _Draft(
        raw_leads=conform(raw_table, RAW_LEADS),
        status_history=conform(status_history, LEAD_STATUS_HISTORY),
        truth=truth,
        events=events,
        lead_ids=lead_ids,
        is_sf=is_sf,
    )


# ---- oracle -------------------------------------------------------------------------------
# ---- persistence ---------------------------------------------------------------------------
def save_world(world: World, out_dir: Path | str) -> Path:
    """Write the world as Parquet files plus ``spec.json``; the spec file is written last."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for attr, name in WORLD_FILES.items():
        _write_parquet(getattr(world, attr), out / name)
    _write_spec(out, world.spec, world.summary())
    return out


def _write_parquet(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd", row_group_size=ROW_GROUP)
    tmp.replace(path)


def _write_spec(out: Path, spec: WorldSpec, summary: dict) -> None:
    """``spec.json`` marks a complete world, so it is written (atomically) after the tables."""
    tmp = out / ".spec.json.tmp"
    tmp.write_text(json.dumps({"spec": spec.to_json(), "summary": summary}, indent=2, sort_keys=True))
    tmp.replace(out / "spec.json")


def load_world(out_dir: Path | str) -> World:
    out = Path(out_dir)
    meta = json.loads((out / "spec.json").read_text())
    tables = {attr: pq.read_table(out / name) for attr, name in WORLD_FILES.items()}
    return World(spec=WorldSpec.from_json(meta["spec"]), **tables)


# ---- pieces ---------------------------------------------------------------------------------
def _simulate_events(
    rng: np.random.Generator,
    spec: WorldSpec,
    created_us: np.ndarray,
    fit: np.ndarray,
    intent: np.ndarray,
    lead_source: np.ndarray,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Engagement sessions and their events; returns event columns and each lead's unsubscribe time."""
    n = created_us.size
    end_us = spec.end_us
    age = (end_us - created_us) / DAY_US
    src_eng = np.array([s[4] for s in LEAD_SOURCES])[lead_source]
    rate = np.exp(0.9 * intent + 0.25 * fit + src_eng)
    # session-time density: 60% within weeks of creation, 40% over months
    mus = np.array([14.0, 200.0])
    ws = np.array([0.6, 0.4])
    mass = ws[None, :] * (1 - np.exp(-age[:, None] / mus[None, :]))  # kernel mass observed by end
    expected = rate * mass.sum(axis=1)
    mean_session = 1 / 0.45
    scale = spec.events_per_lead / max(expected.mean(), 1e-12) if n else 0.0
    n_sessions = rng.poisson(expected * scale / mean_session)
    lead = np.repeat(np.arange(n, dtype=np.int32), n_sessions)
    m = lead.size
    # component per session, then a truncated-exponential offset within the lead's age
    p_second = (mass[:, 1] / np.maximum(mass.sum(axis=1), 1e-12))[lead]
    comp = (rng.random(m) < p_second).astype(np.int8)
    mu = mus[comp]
    trunc = 1 - np.exp(-age[lead] / mu)
    offset_days = -mu * np.log1p(-rng.random(m) * trunc)
    session_us = created_us[lead] + (offset_days * DAY_US).astype(np.int64)
    # weekly seasonality: most weekend sessions move to Monday (if that is still observed)
    dow = ((session_us // DAY_US) + 3) % 7
    shift = np.where(dow == 5, 2, np.where(dow == 6, 1, 0)) * (rng.random(m) < 0.7)
    moved = session_us + shift * DAY_US
    session_us = np.where(moved < end_us, moved, session_us)
    del moved, dow, shift, offset_days, trunc, mu, comp, p_second

    # bursts: 1 + Geometric events per session, minutes apart
    size = rng.geometric(0.45, m).astype(np.int32)
    ev_session = np.repeat(np.arange(m, dtype=np.int64), size)
    k = ev_session.size
    gaps = (rng.exponential(180.0, k) * 1_000_000).astype(np.int64)  # about 3 minutes
    first_of = np.cumsum(size) - size
    gaps[first_of] = 0
    cum = np.cumsum(gaps)
    occurred = session_us[ev_session] + (cum - np.repeat(cum[first_of], size))
    del gaps, cum
    ev_lead = lead[ev_session]
    del ev_session

    # event type: high intent with a probability rising with intent, then the type within
    p_hi = _sigmoid(-2.0 + 0.9 * intent + 0.2 * fit)
    hi = rng.random(k) < p_hi[ev_lead]
    lo_types = [i for i, t in enumerate(EVENT_TYPES) if not t[2]]
    hi_types = [i for i, t in enumerate(EVENT_TYPES) if t[2]]
    etype = np.empty(k, dtype=np.int16)
    for mask, types in ((~hi, lo_types), (hi, hi_types)):
        w = np.array([EVENT_TYPES[i][3] for i in types])
        etype[mask] = np.array(types, dtype=np.int16)[
            np.searchsorted(np.cumsum(w) / w.sum(), rng.random(int(mask.sum())), side="right").clip(
                0, len(types) - 1
            )
        ]
    # an unsubscribe ends the lead's email stream
    unsub_type = next(i for i, t in enumerate(EVENT_TYPES) if t[:2] == ("email", "unsubscribe"))
    unsub_us = np.full(n, np.iinfo(np.int64).max, dtype=np.int64)
    is_unsub = etype == unsub_type
    np.minimum.at(unsub_us, ev_lead[is_unsub], occurred[is_unsub])
    email_types = np.array([t[0] == "email" for t in EVENT_TYPES])
    keep = (occurred < end_us) & ~(email_types[etype] & (occurred > unsub_us[ev_lead]))
    ev_lead, occurred, etype = ev_lead[keep], occurred[keep], etype[keep]
    # detail and value
    n_details = np.array([len(t[4]) for t in EVENT_TYPES])
    detail_pick = (rng.random(ev_lead.size) * n_details[etype]).astype(np.int16)
    value = np.full(ev_lead.size, np.nan)
    for i, (channel, action, *_rest) in enumerate(EVENT_TYPES):
        sel = etype == i
        if channel == "web":
            value[sel] = np.round(rng.lognormal(3.6, 1.0, int(sel.sum())), 1)  # seconds on page
        elif (channel, action) in (("webinar", "attend"), ("call", "completed"), ("meeting", "attend")):
            value[sel] = np.round(rng.uniform(5, 60, int(sel.sum())))  # minutes
    return {
        "lead": ev_lead,
        "occurred_us": occurred,
        "etype": etype,
        "detail": detail_pick,
        "value": value,
    }, unsub_us


def _activity_batches(draft: _Draft, chunk: int = 4 * ROW_GROUP) -> Iterator[pa.RecordBatch]:
    """The events as Arrow batches (strings stay within 32-bit offsets; memory stays bounded)."""
    events, lead_ids, is_sf = draft.events, draft.lead_ids, draft.is_sf
    lead = events["lead"]
    etype = events["etype"]
    sf_channel = np.array([t[0] in SALESFORCE_CHANNELS for t in EVENT_TYPES])
    # 0 salesforce, 1 file (web tracking for Salesforce orgs), 2 hubspot
    src_code = np.where(is_sf[lead], np.where(sf_channel[etype], 0, 1), 2).astype(np.int8)
    # ids in each source's own style, numbered in generation order within the source
    seq = np.empty(lead.size, dtype=np.int64)
    for code in range(3):
        sel = src_code == code
        seq[sel] = np.arange(int(sel.sum()), dtype=np.int64)
    detail_vocab: list[str] = []
    offsets = []
    for t in EVENT_TYPES:
        offsets.append(len(detail_vocab))
        detail_vocab.extend(t[4])
    detail_idx = np.array(offsets, dtype=np.int32)[etype] + events["detail"]
    vocab = {
        "source": pa.array(["salesforce", "file", "hubspot"]),
        "prefix": pa.array(["00T", "wt-", "1"]),
        "channel": pa.array([t[0] for t in EVENT_TYPES]),
        "action": pa.array([t[1] for t in EVENT_TYPES]),
        "detail": pa.array(detail_vocab),
    }
    for lo in range(0, lead.size, chunk):
        sl = slice(lo, lo + chunk)
        code = pa.array(src_code[sl])
        seq_str = pc.cast(pa.array(seq[sl]), pa.string())
        padded = pc.if_else(
            pc.equal(code, 0),
            pc.utf8_lpad(seq_str, 15, "0"),
            pc.if_else(pc.equal(code, 2), pc.utf8_lpad(seq_str, 11, "0"), seq_str),
        )
        yield pa.record_batch(
            {
                "event_id": pc.binary_join_element_wise(vocab["prefix"].take(code), padded, ""),
                "lead_id": lead_ids.take(pa.array(lead[sl])),
                "source": vocab["source"].take(code),
                "occurred_at": _ts(events["occurred_us"][sl]),
                "channel": vocab["channel"].take(pa.array(etype[sl])),
                "action": vocab["action"].take(pa.array(etype[sl])),
                "detail": vocab["detail"].take(pa.array(detail_idx[sl])),
                "value": pa.array(events["value"][sl], from_pandas=True),
            },
            schema=ACTIVITIES,
        )


def _status_history(
    rng: np.random.Generator,
    created_us: np.ndarray,
    conv_us: np.ndarray,
    disq_us: np.ndarray,
    fit: np.ndarray,
    end_us: int,
    lead_ids: pa.Array,
    source: pa.Array,
) -> tuple[pa.Table, pa.Array, np.ndarray]:
    """Status changes as sales would make them; returns history, status at end, last change."""
    n = created_us.size
    never = np.iinfo(np.int64).max
    working = np.where(
        rng.random(n) < _sigmoid(0.8 + 0.8 * fit),
        created_us + (rng.exponential(3.0, n) * DAY_US).astype(np.int64),
        never,
    )
    quiet = created_us + 60 * DAY_US
    nurturing = np.where((conv_us > quiet) & (disq_us > quiet), quiet, never)
    qualified = np.where(
        conv_us < never,
        np.maximum(conv_us - (rng.uniform(1, 5, n) * DAY_US).astype(np.int64), created_us + 1),
        never,
    )
    # sales start working a lead before they nurture or qualify it, never after
    working = np.where(working < never, np.minimum(working, np.minimum(nurturing, qualified) - 1), never)
    working = np.where(working < never, np.maximum(working, created_us + 1), never)
    names = ("open", "working", "nurturing", "qualified", "converted", "unqualified")
    times = np.stack([created_us, working, nurturing, qualified, conv_us, disq_us], axis=1)
    times = np.where(times < end_us, times, never)
    # a later stage pre-empts an earlier one that would come after it
    seen = times < never
    codes = np.tile(np.arange(len(names), dtype=np.int8), (n, 1))
    lead_rep = np.tile(np.arange(n)[:, None], (1, len(names)))
    sel = seen.ravel()
    h_lead = lead_rep.ravel()[sel]
    h_time = times.ravel()[sel]
    h_code = codes.ravel()[sel]
    order = np.lexsort((h_time, h_lead))
    h_lead, h_time, h_code = h_lead[order], h_time[order], h_code[order]
    last_idx = np.r_[np.nonzero(np.diff(h_lead))[0], h_lead.size - 1] if h_lead.size else np.array([], int)
    status_now_code = np.zeros(n, dtype=np.int8)
    last_change = created_us.copy()
    status_now_code[h_lead[last_idx]] = h_code[last_idx]
    last_change[h_lead[last_idx]] = h_time[last_idx]
    vocab = pa.array(list(names))
    history = pa.table(
        {
            "lead_id": lead_ids.take(pa.array(h_lead)),
            "source": source.take(pa.array(h_lead)),
            "changed_at": _ts(h_time),
            "status": vocab.take(pa.array(h_code)),
        }
    )
    return history, vocab.take(pa.array(status_now_code)), last_change


def _lead_identifiers(is_sf: np.ndarray) -> tuple[pa.Array, pa.Array, pa.Array]:
    n = is_sf.size
    seq = np.empty(n, dtype=np.int64)
    seq[is_sf] = np.arange(int(is_sf.sum()))
    seq[~is_sf] = np.arange(int((~is_sf).sum()))
    seq_str = pc.cast(pa.array(seq), pa.string())
    sf_ids = pc.binary_join_element_wise(
        pa.scalar("00Q"), pc.utf8_lpad(seq_str, 12, "0"), pa.scalar("AAA"), ""
    )
    hs_ids = pc.cast(pa.array(seq * 7 + 100_001), pa.string())
    mask = pa.array(is_sf)
    crm_ids = pc.if_else(mask, sf_ids, hs_ids)
    source = pc.if_else(mask, pa.scalar("salesforce"), pa.scalar("hubspot"))
    lead_ids = pc.binary_join_element_wise(source, crm_ids, ":")
    return lead_ids, crm_ids, source


def _company_names(rng: np.random.Generator, n: int, country: np.ndarray) -> tuple[list[str], list[str]]:
    a = rng.integers(0, len(_NAME_PARTS_A), n)
    b = rng.integers(0, len(_NAME_PARTS_B), n)
    kind = rng.integers(0, len(_NAME_KINDS), n)
    tlds = [c[3] for c in COUNTRIES]
    names, domains = [], []
    seen: dict[str, int] = {}
    for i in range(n):
        stem = _NAME_PARTS_A[a[i]] + _NAME_PARTS_B[b[i]]
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        label = stem if count == 0 else f"{stem}{count + 1}"
        names.append(f"{stem.capitalize() if count == 0 else label.capitalize()} {_NAME_KINDS[kind[i]]}")
        domains.append(f"{label.lower()}.{tlds[country[i]]}")
    return names, domains


def _emails(
    rng: np.random.Generator,
    first: np.ndarray,
    last: np.ndarray,
    domains: list[str],
    company: np.ndarray,
    free: np.ndarray,
) -> pa.Array:
    n = first.size
    f = pc.utf8_lower(pa.array(FIRST_NAMES).take(pa.array(first)))
    la = pc.utf8_lower(pa.array(LAST_NAMES).take(pa.array(last)))
    pattern = rng.integers(0, 3, n)
    initial = pc.utf8_slice_codeunits(f, 0, 1)
    local_corp = pc.if_else(
        pa.array(pattern == 0),
        pc.binary_join_element_wise(f, la, "."),
        pc.if_else(pa.array(pattern == 1), pc.binary_join_element_wise(initial, la, ""), f),
    )
    number = pc.cast(pa.array(rng.integers(1, 999, n)), pa.string())
    local_free = pc.binary_join_element_wise(f, la, number, "")
    free_domain = pa.array(FREE_DOMAINS).take(pa.array(rng.integers(0, len(FREE_DOMAINS), n)))
    corp_domain = pa.array(domains).take(pa.array(company))
    mask = pa.array(free)
    return pc.binary_join_element_wise(
        pc.if_else(mask, local_free, local_corp), pc.if_else(mask, free_domain, corp_domain), "@"
    )


def _phones(rng: np.random.Generator, country: np.ndarray) -> pa.Array:
    prefix = pa.array([c[4] for c in COUNTRIES]).take(pa.array(country))
    digits = pc.cast(pa.array(rng.integers(200_000_000, 999_999_999, country.size)), pa.string())
    return pc.binary_join_element_wise(prefix, digits, " ")


def _natural_missingness(rng: np.random.Generator, table: pa.Table, is_sf: np.ndarray) -> pa.Table:
    """Fields real CRMs often lack: revenue (HubSpot forms rarely ask), phone, employees."""
    n = table.num_rows
    rules = {
        "annual_revenue": np.where(is_sf, 0.15, 0.35),
        "employees": np.where(is_sf, 0.05, 0.20),
        "phone": np.full(n, 0.30),
        "industry": np.full(n, 0.05),
    }
    for col, p in rules.items():
        table = _null_where(table, col, rng.random(n) < p)
    return table


def _add_dirt(
    rng: np.random.Generator, spec: WorldSpec, raw: pa.Table, truth: pa.Table
) -> tuple[pa.Table, pa.Table]:
    """Plant realistic dirt; ``truth.dirt`` names what was planted in each row."""
    r = spec.dirt_rate
    n = raw.num_rows
    if r == 0 or n == 0:
        return raw, truth
    dirt = np.full(n, None, dtype=object)

    def mark(mask: np.ndarray, label: str) -> None:
        idx = np.nonzero(mask)[0]
        dirt[idx] = [label if d is None else f"{d},{label}" for d in dirt[idx]]

    # missing fields
    for col in ("industry", "country", "title", "company"):
        mask = rng.random(n) < r / 2
        raw = _null_where(raw, col, mask)
        mark(mask, f"missing:{col}")
    # inconsistent casing and spelling
    variants = {
        "industry": {
            "Software": ["software", "SOFTWARE", "Software & SaaS", "Computer Software"],
            "Financial Services": ["financial services", "Finance", "FinServ"],
            "Healthcare": ["Health Care", "healthcare"],
            "Retail": ["retail", "Retail & eCommerce"],
        },
        "country": {
            "US": ["USA", "United States", "U.S.", "us"],
            "GB": ["UK", "United Kingdom", "gb"],
            "DE": ["Germany", "de"],
            "FR": ["France"],
            "IN": ["India"],
        },
    }
    for col, mapping in variants.items():
        values = raw[col].to_numpy(zero_copy_only=False).astype(object)
        mask = rng.random(n) < r
        for canonical, spellings in mapping.items():
            sel = mask & (values == canonical)
            values[sel] = np.array(spellings, dtype=object)[rng.integers(0, len(spellings), int(sel.sum()))]
            mark(sel, f"spelling:{col}")
        raw = raw.set_column(raw.schema.get_field_index(col), col, pa.array(values, type=pa.string()))
    # malformed emails
    emails = raw["email"].to_numpy(zero_copy_only=False).astype(object)
    mask = rng.random(n) < r / 2
    kinds = rng.integers(0, 4, n)
    for k, fn in enumerate(
        (
            lambda e: e.replace("@", "@@"),
            lambda e: e.replace("@", " at "),
            lambda e: e.split("@")[0],
            lambda e: " " + e.upper().replace(".", ",", 1),
        )
    ):
        sel = mask & (kinds == k)
        emails[sel] = [fn(e) for e in emails[sel]]
    mark(mask, "malformed:email")
    raw = raw.set_column(raw.schema.get_field_index("email"), "email", pa.array(emails, type=pa.string()))
    # impossible values
    emp = raw["employees"].to_numpy(zero_copy_only=False)
    emp = np.where(np.isnan(emp.astype(float)), np.nan, emp.astype(float))
    bad_emp = rng.random(n) < r / 4
    emp[bad_emp] = np.where(rng.random(int(bad_emp.sum())) < 0.5, -emp[bad_emp], 5_000_000_000)
    mark(bad_emp & ~np.isnan(emp), "impossible:employees")
    raw = raw.set_column(
        raw.schema.get_field_index("employees"),
        "employees",
        pa.array(emp, type=pa.float64(), from_pandas=True).cast(pa.int64()),
    )
    rev = raw["annual_revenue"].to_numpy(zero_copy_only=False).astype(float)
    bad_rev = (rng.random(n) < r / 4) & ~np.isnan(rev)
    rev[bad_rev] = -rev[bad_rev]
    mark(bad_rev, "impossible:annual_revenue")
    raw = raw.set_column(
        raw.schema.get_field_index("annual_revenue"),
        "annual_revenue",
        pa.array(rev, type=pa.float64(), from_pandas=True),
    )
    truth = truth.set_column(truth.schema.get_field_index("dirt"), "dirt", pa.array(dirt, type=pa.string()))
    # duplicate leads: the same person entered again a few days later, in the same CRM
    dup_src = np.nonzero(rng.random(n) < r)[0]
    if dup_src.size:
        dups = raw.take(pa.array(dup_src))
        created = dups["created_at"].cast(pa.int64()).to_numpy() + (
            rng.uniform(1, 20, dup_src.size) * DAY_US
        ).astype(np.int64)
        created = np.minimum(created, spec.end_us - 1)
        is_sf = pc.equal(dups["source"], "salesforce").to_numpy(zero_copy_only=False)
        base = n + np.arange(dup_src.size)
        seq_str = pc.cast(pa.array(base), pa.string())
        crm = pc.if_else(
            pa.array(is_sf),
            pc.binary_join_element_wise(
                pa.scalar("00Q"), pc.utf8_lpad(seq_str, 12, "0"), pa.scalar("DUP"), ""
            ),
            pc.cast(pa.array(base * 7 + 100_003), pa.string()),
        )
        lead_id = pc.binary_join_element_wise(dups["source"], crm, ":")
        email = pc.utf8_upper(dups["email"])  # the same address, typed differently
        dup_table = (
            dups.set_column(dups.schema.get_field_index("lead_id"), "lead_id", lead_id)
            .set_column(dups.schema.get_field_index("crm_id"), "crm_id", crm)
            .set_column(dups.schema.get_field_index("created_at"), "created_at", _ts(created))
            .set_column(dups.schema.get_field_index("updated_at"), "updated_at", _ts(created))
            .set_column(dups.schema.get_field_index("email"), "email", email)
            .set_column(dups.schema.get_field_index("status"), "status", pa.array(["open"] * dup_src.size))
            .set_column(
                dups.schema.get_field_index("converted"), "converted", pa.array(np.zeros(dup_src.size, bool))
            )
            .set_column(
                dups.schema.get_field_index("converted_at"),
                "converted_at",
                pa.nulls(dup_src.size, raw.schema.field("converted_at").type),
            )
        )
        raw = pa.concat_tables([raw, dup_table.cast(raw.schema)])
        dup_truth = truth.take(pa.array(dup_src))
        dup_truth = (
            dup_truth.set_column(0, "lead_id", lead_id)
            .set_column(dup_truth.schema.get_field_index("created_at"), "created_at", _ts(created))
            .set_column(
                dup_truth.schema.get_field_index("hazard"), "hazard", pa.array(np.zeros(dup_src.size))
            )
            .set_column(
                dup_truth.schema.get_field_index("conversion_at"),
                "conversion_at",
                pa.nulls(dup_src.size, truth.schema.field("conversion_at").type),
            )
            .set_column(
                dup_truth.schema.get_field_index("is_duplicate"),
                "is_duplicate",
                pa.array(np.ones(dup_src.size, bool)),
            )
            .set_column(
                dup_truth.schema.get_field_index("duplicate_of"),
                "duplicate_of",
                truth["lead_id"].take(pa.array(dup_src)),
            )
            .set_column(
                dup_truth.schema.get_field_index("dirt"), "dirt", pa.array(["duplicate"] * dup_src.size)
            )
        )
        truth = pa.concat_tables([truth, dup_truth.cast(truth.schema)])
    return raw, truth


# ---- small helpers ----------------------------------------------------------------------------
def _sample_drifting(rng: np.random.Generator, p0: np.ndarray, p1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Sample a category per row from shares drifting linearly (in log space) from p0 to p1."""
    logp = np.log(p0 / p0.sum())[None, :] * (1 - t[:, None]) + np.log(p1 / p1.sum())[None, :] * t[:, None]
    p = np.exp(logp)
    cdf = np.cumsum(p, axis=1)
    u = rng.random(t.size) * cdf[:, -1]
    return (u[:, None] > cdf).sum(axis=1).astype(np.int64)


def _searchsorted_sample(rng: np.random.Generator, weights: np.ndarray, size: int) -> np.ndarray:
    cdf = np.cumsum(weights)
    return np.searchsorted(cdf, rng.random(size) * cdf[-1], side="right").clip(0, weights.size - 1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _delay_ppf(q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_delay_cdf` by bisection (monotone, vectorised, exact to 1e-6 days)."""
    q = np.asarray(q, dtype=float)
    lo = np.zeros_like(q)
    hi = np.full_like(q, 50_000.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = delay_cdf(mid) < q
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _age_to_us(created_us: np.ndarray, age_days: np.ndarray) -> np.ndarray:
    finite = np.isfinite(age_days)
    out = np.full(created_us.size, np.iinfo(np.int64).max, dtype=np.int64)
    out[finite] = created_us[finite] + (age_days[finite] * DAY_US).astype(np.int64)
    return out


def _ts(us: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=pa.int64(), mask=mask).cast(
        pa.timestamp("us", tz="UTC")
    )


def _to_us(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int((moment - _EPOCH) / dt.timedelta(microseconds=1))


def _from_us(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=int(us))


def _null_where(table: pa.Table, column: str, mask: np.ndarray) -> pa.Table:
    idx = table.schema.get_field_index(column)
    col = table.column(column)
    nulls = pa.nulls(table.num_rows, col.type)
    return table.set_column(idx, column, pc.if_else(pa.array(mask), nulls, col))


def _value_counts(arr: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    vc = pc.value_counts(arr)
    return {str(v["values"]): int(v["counts"]) for v in vc.to_pylist()}
