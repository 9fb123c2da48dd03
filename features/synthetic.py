"""Fast synthetic canonical tables (LEADS, ACTIVITIES, LEAD_STATUS_HISTORY) for tests and benchmarks.

Not the simulated world (:mod:`sandbox.world` models behaviour and outcomes); this is
vectorised filler with the same schemas and vocabulary, able to produce 50,000,000 events in
seconds, with optional dirt (casing variants, unknown categories, duplicate event ids,
events of unknown leads, missing fields).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from features.contract import ACTIVITIES, LEAD_STATUS_HISTORY, LEADS, conform

_EVENTS = (  # channel, action, detail pool, probability
    ("email", "open", "campaign", 0.30),
    ("email", "click", "campaign", 0.08),
    ("email", "reply", "campaign", 0.01),
    ("email", "bounce", "campaign", 0.01),
    ("email", "unsubscribe", "campaign", 0.005),
    ("web", "visit", "page", 0.40),
    ("form", "submit", "page", 0.03),
    ("webinar", "register", "campaign", 0.02),
    ("webinar", "attend", "campaign", 0.01),
    ("call", "completed", None, 0.02),
    ("meeting", "booked", None, 0.01),
    ("meeting", "completed", None, 0.005),
    ("chat", "reply", None, 0.02),
    ("ad", "click", "campaign", 0.07),
)
_PAGES = (
    "/pricing",
    "/demo",
    "/product/overview",
    "/product/integrations",
    "/blog/ai-scoring",
    "/blog/crm-tips",
    "/docs/start",
    "/careers",
    "/about",
)
_CAMPAIGNS = ("spring-launch", "webinar-q3", "newsletter-weekly", "nurture-1", "nurture-2", "retarget-eu")
_INDUSTRIES = (
    "Software",
    "software ",
    "Financial Services",
    "Healthcare",
    "Manufacturing",
    "Retail",
    "Education",
    "Telecom",
    "Consulting",
    "Media",
    "Softwre",
    "Aerospace",
)
_TITLES = (
    "CEO",
    "VP Sales",
    "Vice-President, Marketing",
    "Director of Engineering",
    "Head of Data",
    "Marketing Manager",
    "Software Engineer",
    "Sales Representative",
    "CFO",
    "IT Manager",
    "Analyst",
    "Founder",
    "Operations Lead",
    "Recruiter",
    "Chief Technology Officer",
    "Grand Poobah",
)
_COUNTRIES = (
    "US",
    "United States",
    "DE",
    "Germany",
    "GB",
    "uk",
    "FR",
    "IN",
    "Brazil",
    "JP",
    "AU",
    "ZA",
    "Atlantis",
)
_SOURCES = (
    "Web",
    "Organic Search",
    "PAID_SEARCH",
    "Referral",
    "Partner Referral",
    "Trade Show",
    "Webinar",
    "Purchased List",
    "Other",
    "Carrier pigeon",
)
_STATUS_PATH = ("open", "working", "nurturing", "qualified", "converted", "unqualified")


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(numbers), pa.string()), "")


def synthetic_inputs(
    n_leads: int,
    n_events: int,
    *,
    seed: int = 7,
    end: dt.datetime | None = None,
    days: int = 365,
    dirt_rate: float = 0.0,
    time_sorted: bool = True,
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(leads, activities, status_history) following the contract; ``dirt_rate`` of rows dirty."""
    rng = np.random.default_rng(seed)
    end = end or dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    end_us = int(end.timestamp()) * 1_000_000
    span = days * 86_400_000_000
    # ---- leads ---------------------------------------------------------------------------
    crm = rng.random(n_leads) < 0.5
    num = np.arange(n_leads, dtype=np.int64) + 1_000_000
    lead_ids = pc.if_else(pa.array(crm), _ids("salesforce:00Q", num), _ids("hubspot:", num))
    created = end_us - rng.integers(0, span, n_leads)
    n_companies = max(1, n_leads // 3)
    company = rng.integers(0, n_companies, n_leads)
    free = rng.random(n_leads) < 0.2
    company_domain = _ids("company", company)
    company_domain = pc.binary_join_element_wise(company_domain, ".com", "")
    email_domain = pc.if_else(pa.array(free), pa.scalar("gmail.com"), company_domain)

    def pick(pool: tuple[str, ...]) -> pa.Array:
        values = np.array(pool, dtype=object)[rng.integers(0, len(pool), n_leads)]
        values[rng.random(n_leads) < dirt_rate] = None
        return pa.array(values, pa.string())

    employees = rng.lognormal(4.5, 1.8, n_leads).astype(np.int64) + 1
    revenue = employees * rng.lognormal(11.5, 0.6, n_leads)
    status_final = np.array(_STATUS_PATH, dtype=object)[rng.integers(0, len(_STATUS_PATH), n_leads)]
    converted = status_final == "converted"
    converted_at = np.where(
        converted, np.minimum(created + rng.integers(1, 120, n_leads) * 86_400_000_000, end_us - 1), 0
    )
    ts = pa.timestamp("us", tz="UTC")
    leads = pa.table(
        {
            "lead_id": lead_ids,
            "source": pc.if_else(pa.array(crm), "salesforce", "hubspot"),
            "crm_id": pc.if_else(pa.array(crm), _ids("00Q", num), _ids("", num)),
            "created_at": pa.array(created).cast(ts),
            "updated_at": pa.array(np.full(n_leads, end_us - 1)).cast(ts),
            "email_hash": _ids("h", num),
            "email_domain": email_domain,
            "company": _ids("Company ", company),
            "company_domain": company_domain,
            "industry": pick(_INDUSTRIES),
            "employees": pa.array(employees),
            "annual_revenue": pa.array(revenue),
            "country": pick(_COUNTRIES),
            "title": pick(_TITLES),
            "lead_source": pick(_SOURCES),
            "status": pa.array(status_final, pa.string()),
            "converted": pa.array(converted),
            "converted_at": pa.array(converted_at, mask=~converted).cast(ts),
            "consent_processing": pa.array(np.ones(n_leads, dtype=bool)),
            "opted_out": pa.array(np.zeros(n_leads, dtype=bool)),
        }
    )
    leads = conform(leads, LEADS)
    # ---- status history: a walk along the path up to the final status --------------------
    steps = np.array([_STATUS_PATH.index(s) for s in status_final])
    n_changes = np.where(steps >= 4, 3, steps + 1)
    hist_lead = np.repeat(np.arange(n_leads), n_changes)
    k = np.arange(hist_lead.size) - np.repeat(np.cumsum(n_changes) - n_changes, n_changes)
    last = k == np.repeat(n_changes - 1, n_changes)
    hist_status = np.where(last, steps[hist_lead], np.minimum(k, 3))
    hist_time = created[hist_lead] + k * rng.integers(1, 20, hist_lead.size) * 86_400_000_000
    hist_time = np.where(last & converted[hist_lead], converted_at[hist_lead], hist_time)
    hist_time = np.minimum(hist_time, end_us - 1)
    history = conform(
        pa.table(
            {
                "lead_id": lead_ids.take(pa.array(hist_lead)),
                "source": leads.column("source").take(pa.array(hist_lead)),
                "changed_at": pa.array(hist_time).cast(ts),
                "status": pa.array(np.array(_STATUS_PATH, dtype=object)[hist_status], pa.string()),
            }
        ),
        LEAD_STATUS_HISTORY,
    )
    # ---- activities ----------------------------------------------------------------------
    probs = np.array([p for *_, p in _EVENTS])
    which = rng.choice(len(_EVENTS), size=n_events, p=probs / probs.sum())
    activity = rng.pareto(1.2, n_leads) + 0.05
    owner = rng.choice(n_leads, size=n_events, p=activity / activity.sum())
    occurred = np.minimum(created[owner] - 86_400_000_000 * 3 + rng.integers(0, span, n_events), end_us - 1)
    if time_sorted:
        order = np.argsort(occurred, kind="stable")
        which, owner, occurred = which[order], owner[order], occurred[order]
    channel = np.array([c for c, *_ in _EVENTS], dtype=object)
    action = np.array([a for _, a, *_ in _EVENTS], dtype=object)
    kinds = np.array([d or "" for _, _, d, _ in _EVENTS], dtype=object)
    detail_page = np.array(_PAGES, dtype=object)[rng.integers(0, len(_PAGES), n_events)]
    detail_campaign = np.array(_CAMPAIGNS, dtype=object)[rng.integers(0, len(_CAMPAIGNS), n_events)]
    kind_of = kinds[which]
    detail = np.where(kind_of == "page", detail_page, np.where(kind_of == "campaign", detail_campaign, None))
    event_num = np.arange(n_events, dtype=np.int64)
    event_ids = _ids("ev-", event_num)
    event_lead = lead_ids.take(pa.array(owner))
    channel_col = pa.array(channel[which], pa.string()).dictionary_encode()
    action_col = pa.array(action[which], pa.string()).dictionary_encode()
    if dirt_rate > 0:
        n_dirty = int(n_events * dirt_rate)
        dup = rng.integers(0, n_events, n_dirty)  # duplicated event ids (exact copies appended)
        unknown = rng.integers(0, n_events, n_dirty // 4)
        event_ids = pa.concat_arrays([event_ids, event_ids.take(pa.array(dup))])
        event_lead = pa.concat_arrays([event_lead, event_lead.take(pa.array(dup))])
        event_lead = pc.if_else(
            pa.array(np.isin(np.arange(len(event_lead)), unknown)), pa.scalar("hubspot:999999999"), event_lead
        )
        occurred = np.concatenate([occurred, occurred[dup]])
        channel_col = pa.concat_arrays(
            [channel_col.cast(pa.string()), channel_col.cast(pa.string()).take(pa.array(dup))]
        )
        action_col = pa.concat_arrays(
            [action_col.cast(pa.string()), action_col.cast(pa.string()).take(pa.array(dup))]
        )
        detail = np.concatenate([detail, detail[dup]])
        shout = rng.random(len(occurred)) < dirt_rate
        channel_col = pc.if_else(pa.array(shout), pc.utf8_upper(channel_col), channel_col)
        strange = rng.random(len(occurred)) < dirt_rate / 4
        channel_col = pc.if_else(pa.array(strange), pa.scalar("carrier-pigeon"), channel_col)
    total = len(occurred)
    activities = pa.table(
        {
            "event_id": event_ids,
            "lead_id": event_lead,
            "source": pa.array(np.full(total, "file", dtype=object), pa.string()).dictionary_encode(),
            "occurred_at": pa.array(occurred).cast(ts),
            "channel": channel_col,
            "action": action_col,
            "detail": pa.array(detail, pa.string()),
            "value": pa.array(rng.random(total)),
        }
    )
    activities = pa.table(
        {f.name: activities.column(f.name).cast(f.type) for f in ACTIVITIES}, schema=ACTIVITIES
    )
    return leads, activities, history
