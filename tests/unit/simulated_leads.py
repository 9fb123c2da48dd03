"""Simulated flat lead files with honest columns and planted post-outcome fields.

Honest columns carry real but moderate signal (or none), some with honest gaps: a lead source
with one strong value, time on site (the main driver), page views, country (noise), company
size (20% empty, mildly predictive), industry (25% empty cells, no signal) and a job title left
at "Select" at random for 30% of rows.

Planted fields are written *after* the outcome, the way sales fill them in (``strength`` in
(0, 1] scales how strongly the outcome shows; at 0.5 their single-feature AUCs are about
0.65-0.8, below the old 0.9 threshold):

* ``lead_quality``: a rating filled mostly for leads sales talked to (converters far more
  often), empty otherwise, its values leaning to the outcome;
* ``last_notable_activity``: the latest activity, overwritten after contact with
  "Had a Phone Conversation"/"SMS Sent" (converters) or "Unreachable"/"Unsubscribed" (the others);
* ``specialization``: a form field left at "Select" unless sales filled it in (mostly converters);
* ``call_duration``: seconds on the phone, short for the lost leads who hung up.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

PLANTED = ("lead_quality", "last_notable_activity", "specialization", "call_duration")
HONEST = ("lead_source", "time_on_site", "page_views", "country", "company_size", "industry", "job_title")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def lead_world(n: int = 6000, seed: int = 0, strength: float = 0.6, planted: bool = True) -> pa.Table:
    """A flat table of ``n`` leads with a 0/1 ``label`` (about 30% convert); text cells as
    written in a CSV export ("" and "Select" included)."""
    rng = np.random.default_rng(seed)
    sources = np.array(["Google", "Direct", "Olark Chat", "Organic", "Reference"])
    src = rng.choice(5, n, p=[0.35, 0.25, 0.2, 0.15, 0.05])
    log_time = rng.normal(0, 1, n)
    page_views = rng.poisson(np.exp(1 + 0.4 * log_time)).astype(float)
    size_missing = rng.random(n) < 0.2
    industry = rng.choice(["software", "retail", "health", "finance"], n).astype(object)
    industry[rng.random(n) < 0.25] = ""
    title = rng.choice(["Manager", "Engineer", "Student", "Director"], n, p=[0.3, 0.3, 0.1, 0.3]).astype(
        object
    )
    title_effect = np.where(title == "Student", -0.6, np.where(title == "Director", 0.4, 0.0))
    title[rng.random(n) < 0.3] = "Select"  # honest placeholder: left at random
    logit = (
        -1.0
        + np.array([0.0, -0.3, -0.8, 0.3, 1.6])[src]
        + 0.9 * log_time
        + 0.1 * np.log1p(page_views)
        - 0.4 * size_missing
        + title_effect
    )
    y = (rng.random(n) < _sigmoid(logit)).astype(np.int8)
    cols: dict[str, object] = {
        "lead_source": sources[src].astype(object),
        "time_on_site": np.round(np.exp(5 + log_time)),
        "page_views": page_views,
        "country": rng.choice([f"c{i}" for i in range(8)], n).astype(object),
        "company_size": np.where(size_missing, np.nan, np.exp(rng.normal(4, 1.5, n))),
        "industry": industry,
        "job_title": title,
        "noise": rng.normal(size=n),
    }
    if planted:
        s = strength
        quality = np.full(n, "", dtype=object)
        filled = np.where(y == 1, rng.random(n) < 0.35 + 0.5 * s, rng.random(n) < 0.30)
        good = rng.choice(
            ["High in Relevance", "Might be", "Not Sure", "Low in Relevance"],
            n,
            p=[0.1 + 0.4 * s, 0.3, 0.4 - 0.2 * s, 0.2 - 0.2 * s],
        )
        bad = rng.choice(["Not Sure", "Low in Relevance", "Worst", "Might be"], n, p=[0.4, 0.3, 0.2, 0.1])
        quality[filled] = np.where(y == 1, good, bad)[filled]
        cols["lead_quality"] = quality
        activity = np.where(log_time + rng.normal(0, 1, n) > 0, "Email Opened", "Page Visited").astype(object)
        activity[rng.random(n) < 0.2] = "Modified"
        won = (y == 1) & (rng.random(n) < 0.45 * s)
        lost = (y == 0) & (rng.random(n) < 0.25 * s)
        activity[won] = rng.choice(["SMS Sent", "Had a Phone Conversation"], won.sum())
        activity[lost] = rng.choice(["Unreachable", "Email Bounced", "Unsubscribed"], lost.sum())
        cols["last_notable_activity"] = activity
        spec = np.full(n, "Select", dtype=object)
        filled = np.where(y == 1, rng.random(n) < 0.3 + 0.4 * s, rng.random(n) < 0.15)
        spec[filled] = rng.choice(["Finance", "HR", "Marketing", "Operations", "IT", "Other"], filled.sum())
        cols["specialization"] = spec
        hang_up = (y == 0) & (rng.random(n) < 0.35 * s)
        talk = np.where(y == 1, rng.normal(4.6 + 1.2 * s, 0.6, n), rng.normal(4.6, 0.8, n))
        cols["call_duration"] = np.round(np.exp(np.where(hang_up, rng.normal(2.5, 0.5, n), talk)))
    cols["label"] = y
    return pa.table(cols)
