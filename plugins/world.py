"""The simulated world as a data source: its file layout and its ground truth.

The sandbox (:mod:`sandbox.world`) draws worlds and writes them in this layout; jobs read them
(training on a world, comparing a model with the true probabilities) through this module, so
nothing outside the sandbox imports the sandbox.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

DAY_US = 86_400 * 1_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

CONVERSION_DELAY_SCALE_DAYS = 25.0  # Gamma(2) part: most conversions come 1-3 months in
CONVERSION_TAIL_SHARE = 0.2  # the rest follow an Exponential tail: nurtured leads converting late
CONVERSION_TAIL_DAYS = 250.0

WORLD_FILES = {
    "raw_leads": "raw_leads.parquet",
    "activities": "activities.parquet",
    "status_history": "lead_status_history.parquet",
    "truth": "truth.parquet",
}


def world_exists(out_dir: Path | str) -> bool:
    return (Path(out_dir) / "spec.json").is_file()


def world_span(out_dir: Path | str) -> tuple[dt.date, int]:
    """The last day a world observed and how many days it covers (from its ``spec.json``)."""
    spec = json.loads((Path(out_dir) / "spec.json").read_text())["spec"]
    return dt.date.fromisoformat(spec["end"]), int(spec["days"])


def delay_cdf(age_days: np.ndarray) -> np.ndarray:
    """CDF of the conversion delay: mostly Gamma(2, 25 d), with a long Exponential(250 d) tail."""
    x = np.asarray(age_days, dtype=float)
    with np.errstate(invalid="ignore", over="ignore"):
        g = x / CONVERSION_DELAY_SCALE_DAYS
        fast = np.where(np.isinf(x), 1.0, 1.0 - np.exp(-g) * (1.0 + g))  # Gamma(shape=2) closed form
        slow = np.where(np.isinf(x), 1.0, -np.expm1(-x / CONVERSION_TAIL_DAYS))
    return (1 - CONVERSION_TAIL_SHARE) * fast + CONVERSION_TAIL_SHARE * slow


def oracle_probability(world: Any, as_of: dt.datetime, horizon_days: float = 90.0) -> pa.Table:
    """True probability that each lead open at ``as_of`` converts within ``horizon_days``.

    Leads not yet created, already converted, disqualified or duplicates are left out.
    """
    t = world.truth
    as_of_us = _to_us(as_of)
    created = t["created_at"].cast(pa.int64()).to_numpy()
    conv = t["conversion_at"].cast(pa.int64()).fill_null(np.iinfo(np.int64).max).to_numpy()
    disq_age = t["disqualify_age_days"].to_numpy()
    age = (as_of_us - created) / DAY_US
    open_ = (created < as_of_us) & (conv >= as_of_us) & (age < disq_age) & ~t["is_duplicate"].to_numpy()
    a = age[open_]
    upper = np.minimum(a + horizon_days, disq_age[open_])
    hazard = t["hazard"].to_numpy()[open_]
    prob = 1.0 - np.exp(-hazard * (delay_cdf(upper) - delay_cdf(a)))
    return pa.table({"lead_id": t["lead_id"].filter(pa.array(open_)), "probability": prob})


def _to_us(moment: dt.datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int((moment - _EPOCH) / dt.timedelta(microseconds=1))
