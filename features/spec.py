"""The feature spec: every feature ProX computes, described once.

Each feature has a name, a dtype, a family, a description for auditors and a plain-language
reason template, used later to explain a score ("visited the pricing page 3 times in the
last 7 days"). The builder (:mod:`features.build`), the hot path (:mod:`features.online`),
the model code and the auditors' document all read this one list, so a feature cannot exist
in one place and be missing from another.

The vocabulary of events (channels, actions, the pairs counted as event kinds, the pages
that signal buying intent) lives here too, because feature names are derived from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Final

from features.contract import CHANNELS, STATUSES

#: Look-back windows (days) of the engagement counts.
WINDOWS: Final = (7, 30, 90)
#: Half-life (days) of the exponentially decayed engagement score.
DECAY_HALF_LIFE_DAYS: Final = 14.0

#: (channel, action) pairs counted as separate event kinds, with their weight in the decayed
#: engagement score (how strongly each kind signals interest; bounces and unsubscribes none).
EVENT_KINDS: Final[tuple[tuple[str, str, float], ...]] = (
    ("email", "open", 0.5),
    ("email", "click", 1.0),
    ("email", "reply", 3.0),
    ("email", "bounce", 0.0),
    ("email", "unsubscribe", 0.0),
    ("web", "visit", 1.0),
    ("form", "submit", 4.0),
    ("webinar", "register", 2.0),
    ("webinar", "attend", 3.0),
    ("call", "completed", 3.0),
    ("meeting", "booked", 5.0),
    ("meeting", "attend", 5.0),
    ("chat", "reply", 2.0),
    ("ad", "click", 0.5),
)
#: Weight of an event of a known channel whose action is not one of the kinds above.
OTHER_ACTION_WEIGHT: Final = 0.5
#: Events whose detail signals buying intent: (feature stem, channel, detail prefixes, extra
#: weight in the decayed score, counts as high intent). Web details are page paths (any host,
#: any casing); form details are form names.
INTENT_DETAILS: Final[tuple[tuple[str, str, tuple[str, ...], float, bool], ...]] = (
    ("pricing_visits", "web", ("/pricing",), 2.0, True),
    ("demo_visits", "web", ("/demo",), 3.0, True),
    ("case_study_visits", "web", ("/case-studies", "/customers"), 1.0, False),
    (
        "sales_form_submits",
        "form",
        ("demo-request", "contact-sales", "pricing-quote", "contact-us"),
        2.0,
        True,
    ),
)
#: Event kinds counted as high-intent actions besides the intent details above.
HIGH_INTENT_KINDS: Final = (
    ("meeting", "booked"),
    ("meeting", "attend"),
    ("call", "completed"),
    ("email", "reply"),
)

CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "industry": (
        "software",
        "financial services",
        "healthcare",
        "manufacturing",
        "retail",
        "education",
        "government",
        "media",
        "telecommunications",
        "professional services",
        "energy",
        "transportation",
        "real estate",
        "hospitality",
        "nonprofit",
        "other",
        "unknown",
    ),
    "size_band": ("1-10", "11-50", "51-200", "201-1000", "1001-5000", "5000+", "unknown"),
    "revenue_band": ("<1M", "1M-10M", "10M-100M", "100M-1B", "1B+", "unknown"),
    "region": (
        "north america",
        "latin america",
        "europe",
        "middle east & africa",
        "apac",
        "other",
        "unknown",
    ),
    "seniority": (
        "c-level",
        "vp",
        "director",
        "manager",
        "senior",
        "individual contributor",
        "student",
        "other",
        "unknown",
    ),
    "department": (
        "executive",
        "engineering",
        "it",
        "data",
        "product",
        "sales",
        "marketing",
        "finance",
        "operations",
        "hr",
        "legal",
        "customer success",
        "business development",
        "other",
        "unknown",
    ),
    "lead_source": (
        "web",
        "organic search",
        "paid search",
        "social",
        "customer referral",
        "partner",
        "event",
        "webinar",
        "content",
        "email",
        "outbound",
        "list import",
        "other",
        "unknown",
    ),
    "email_type": ("corporate", "free", "unknown"),
    "status": STATUSES,
}

FAMILIES: Final = ("fit", "engagement", "velocity", "account")


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: what it is, how it is typed, and how it is said to a salesperson."""

    name: str
    dtype: str  # "float64", "int32" or "category"
    family: str
    description: str
    reason: str  # str.format template with {value}
    categories: tuple[str, ...] | None = None

    def phrase(self, value: Any) -> str:
        """The plain-language reason for this feature at ``value``."""
        return self.reason.format(value=value)


def _kind_name(channel: str, action: str) -> str:
    return f"{channel}_{action}"


_KIND_PHRASES = {
    ("email", "open"): "opened {n} emails",
    ("email", "click"): "clicked {n} email links",
    ("email", "reply"): "replied to {n} emails",
    ("email", "bounce"): "had {n} emails bounce",
    ("email", "unsubscribe"): "unsubscribed from emails {n} times",
    ("web", "visit"): "visited the website {n} times",
    ("form", "submit"): "submitted {n} forms",
    ("webinar", "register"): "registered for {n} webinars",
    ("webinar", "attend"): "attended {n} webinars",
    ("call", "completed"): "had {n} calls with sales",
    ("meeting", "booked"): "booked {n} meetings",
    ("meeting", "attend"): "attended {n} meetings",
    ("chat", "reply"): "chatted {n} times",
    ("ad", "click"): "clicked {n} ads",
}


_INTENT_PHRASES = {
    "pricing_visits": "visited the pricing page {value:.0f} times",
    "demo_visits": "visited the demo page {value:.0f} times",
    "case_study_visits": "read {value:.0f} customer case studies",
    "sales_form_submits": "asked for a demo, a quote or sales contact {value:.0f} times",
}


def _window_text(days: int) -> str:
    return f"in the last {days} days"


def _build_specs() -> tuple[FeatureSpec, ...]:
    specs: list[FeatureSpec] = []
    add = specs.append
    cat = CATEGORIES
    # ---- fit --------------------------------------------------------------------------
    add(
        FeatureSpec(
            "industry",
            "category",
            "fit",
            "Industry, normalised to a fixed list (spelling and casing variants folded).",
            "works in {value}",
            cat["industry"],
        )
    )
    add(
        FeatureSpec(
            "size_band",
            "category",
            "fit",
            "Company size band from the employee count.",
            "works at a company of {value} employees",
            cat["size_band"],
        )
    )
    add(
        FeatureSpec(
            "revenue_band",
            "category",
            "fit",
            "Annual revenue band (USD).",
            "works at a company with {value} revenue",
            cat["revenue_band"],
        )
    )
    add(
        FeatureSpec(
            "region",
            "category",
            "fit",
            "Sales region derived from the country.",
            "is based in {value}",
            cat["region"],
        )
    )
    add(
        FeatureSpec(
            "seniority",
            "category",
            "fit",
            "Seniority parsed from the job title.",
            "holds a {value} role",
            cat["seniority"],
        )
    )
    add(
        FeatureSpec(
            "department",
            "category",
            "fit",
            "Department parsed from the job title.",
            "works in {value}",
            cat["department"],
        )
    )
    add(
        FeatureSpec(
            "lead_source",
            "category",
            "fit",
            "How the lead first came in, normalised.",
            "came in through {value}",
            cat["lead_source"],
        )
    )
    add(
        FeatureSpec(
            "email_type",
            "category",
            "fit",
            "Free-mail (gmail.com, ...) or corporate email domain.",
            "uses a {value} email address",
            cat["email_type"],
        )
    )
    add(
        FeatureSpec(
            "email_matches_company",
            "float64",
            "fit",
            "1 when the email domain equals the company's web domain, 0 when not, empty when either is missing.",
            "uses an email address at their company's domain",
        )
    )
    add(
        FeatureSpec(
            "data_completeness",
            "float64",
            "fit",
            "Share of the profile fields (company, domain, industry, employees, revenue, country, title, lead source, email domain) that are filled.",
            "has a {value:.0%} complete profile",
        )
    )
    # ---- engagement ---------------------------------------------------------------------
    for w in WINDOWS:
        add(
            FeatureSpec(
                f"n_events_{w}d",
                "int32",
                "engagement",
                f"All engagement events in the {w} days before the as-of time.",
                f"engaged {{value:.0f}} times {_window_text(w)}",
            )
        )
    for channel in CHANNELS:
        for w in WINDOWS:
            add(
                FeatureSpec(
                    f"n_{channel}_{w}d",
                    "int32",
                    "engagement",
                    f"Events of channel '{channel}' in the {w} days before the as-of time.",
                    f"had {{value:.0f}} {channel} interactions {_window_text(w)}",
                )
            )
    for channel, action, _ in EVENT_KINDS:
        for w in WINDOWS:
            phrase = _KIND_PHRASES[(channel, action)].replace("{n}", "{value:.0f}")
            add(
                FeatureSpec(
                    f"n_{_kind_name(channel, action)}_{w}d",
                    "int32",
                    "engagement",
                    f"Events '{channel}/{action}' in the {w} days before the as-of time.",
                    f"{phrase} {_window_text(w)}",
                )
            )
    for stem, channel, prefixes, _, _ in INTENT_DETAILS:
        for w in (7, 30):
            what = (
                "pages under " + " or ".join(prefixes) if channel == "web" else "forms " + ", ".join(prefixes)
            )
            add(
                FeatureSpec(
                    f"n_{stem}_{w}d",
                    "int32",
                    "engagement",
                    f"'{channel}' events on {what} in the {w} days before the as-of time (buying intent).",
                    _INTENT_PHRASES[stem] + f" {_window_text(w)}",
                )
            )
    high = (
        ", ".join(s for s, *_, h in INTENT_DETAILS if h)
        + ", "
        + ", ".join(f"{c}/{a}" for c, a in HIGH_INTENT_KINDS)
    )
    for w in (7, 30):
        add(
            FeatureSpec(
                f"n_high_intent_{w}d",
                "int32",
                "engagement",
                f"High-intent actions in the {w} days before the as-of time: {high}.",
                f"took {{value:.0f}} high-intent actions {_window_text(w)}",
            )
        )
    for channel in CHANNELS:
        add(
            FeatureSpec(
                f"days_since_last_{channel}",
                "float64",
                "engagement",
                f"Days from the last '{channel}' event to the as-of time; empty when there was none.",
                f"last {channel} interaction {{value:.0f}} days ago",
            )
        )
    add(
        FeatureSpec(
            "days_since_last_event",
            "float64",
            "engagement",
            "Days from the last event of any channel to the as-of time; empty when there was none.",
            "last engaged {value:.0f} days ago",
        )
    )
    add(
        FeatureSpec(
            "engagement_decayed",
            "float64",
            "engagement",
            f"Sum of event weights (by kind; intent pages and forms weigh more) over the last 365 days, each "
            f"halved every {DECAY_HALF_LIFE_DAYS:g} days of age (age in whole minutes); kept on a 2^-24 grid.",
            "has a recent engagement score of {value:.1f}",
        )
    )
    add(
        FeatureSpec(
            "trend_7d_vs_prior_21d",
            "float64",
            "engagement",
            "Events in the last 7 days minus the weekly average of the 21 days before them.",
            "engagement changed by {value:+.1f} events a week compared with the previous three weeks",
        )
    )
    for w in WINDOWS:
        add(
            FeatureSpec(
                f"active_days_{w}d",
                "int32",
                "engagement",
                f"Distinct days with at least one event in the last {w} days.",
                f"was active on {{value:.0f}} different days {_window_text(w)}",
            )
        )
    # ---- velocity ---------------------------------------------------------------------
    add(
        FeatureSpec(
            "lead_age_days",
            "float64",
            "velocity",
            "Days from the lead's creation to the as-of time.",
            "became a lead {value:.0f} days ago",
        )
    )
    add(
        FeatureSpec(
            "days_to_first_engagement",
            "float64",
            "velocity",
            "Days from creation to the first event (negative when tracked before becoming a lead); empty when none.",
            "first engaged {value:.0f} days after becoming a lead",
        )
    )
    add(
        FeatureSpec(
            "status",
            "category",
            "velocity",
            "CRM status as it stood at the as-of time (from the status history).",
            "was in status '{value}'",
            cat["status"],
        )
    )
    add(
        FeatureSpec(
            "days_in_status",
            "float64",
            "velocity",
            "Days since the status held at the as-of time was set (since creation when no change is recorded).",
            "has been in the current status for {value:.0f} days",
        )
    )
    # ---- account ----------------------------------------------------------------------
    add(
        FeatureSpec(
            "account_other_leads",
            "int32",
            "account",
            "Other leads of the same company domain known at the as-of time.",
            "{value:.0f} colleagues are also leads",
        )
    )
    add(
        FeatureSpec(
            "account_other_engaged_leads_30d",
            "int32",
            "account",
            "Other leads of the same company domain with any event in the last 30 days.",
            "{value:.0f} colleagues engaged in the last 30 days",
        )
    )
    add(
        FeatureSpec(
            "account_other_events_30d",
            "int32",
            "account",
            "Events of the other leads of the same company domain in the last 30 days (no outcomes used).",
            "colleagues engaged {value:.0f} times in the last 30 days",
        )
    )
    add(
        FeatureSpec(
            "account_other_high_intent_30d",
            "int32",
            "account",
            "High-intent actions of the other leads of the same company domain in the last 30 days.",
            "colleagues took {value:.0f} high-intent actions in the last 30 days",
        )
    )
    add(
        FeatureSpec(
            "account_other_engagement_decayed",
            "float64",
            "account",
            "Decayed engagement summed over the other leads of the same company domain.",
            "colleagues have a recent engagement score of {value:.1f}",
        )
    )
    return tuple(specs)


FEATURES: Final[tuple[FeatureSpec, ...]] = _build_specs()
BY_NAME: Final[dict[str, FeatureSpec]] = {f.name: f for f in FEATURES}
FEATURE_NAMES: Final[tuple[str, ...]] = tuple(f.name for f in FEATURES)
CATEGORICAL: Final[tuple[str, ...]] = tuple(f.name for f in FEATURES if f.dtype == "category")
#: Columns of a feature table that are not features: the key and the snapshot time.
KEY_COLUMNS: Final = ("lead_id", "as_of")


def reason(name: str, value: Any) -> str:
    """The plain-language phrase for feature ``name`` at ``value`` (KeyError names it)."""
    try:
        spec = BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown feature {name!r}") from None
    return spec.phrase(value)


def to_json(indent: int | None = 2) -> str:
    """The spec as JSON (a list of features), for auditors and for lineage in MLflow."""
    rows = [dict(asdict(f), categories=list(f.categories) if f.categories else None) for f in FEATURES]
    return json.dumps(
        {"features": rows, "windows_days": list(WINDOWS), "decay_half_life_days": DECAY_HALF_LIFE_DAYS},
        indent=indent,
    )


def to_markdown() -> str:
    """The spec as a Markdown document grouped by family, for auditors."""
    lines = [
        "# ProX feature specification",
        "",
        "Every feature is computed as of a time T from what was known at T: events that occurred",
        "before T, leads created before T, the status held at T. Outcomes (converted flag, later",
        "statuses) never enter a feature. Batch and hot scoring share the same code.",
        "",
    ]
    for family in FAMILIES:
        members = [f for f in FEATURES if f.family == family]
        lines += [
            f"## {family} ({len(members)})",
            "",
            "| name | type | description | reason phrase |",
            "|---|---|---|---|",
        ]
        for f in members:
            desc = f.description + (f" Values: {', '.join(f.categories)}." if f.categories else "")
            lines.append(
                f"| `{f.name}` | {f.dtype} | {desc.replace('|', '/')} | {f.reason.replace('|', '/')} |"
            )
        lines.append("")
    return "\n".join(lines)
