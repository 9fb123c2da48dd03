"""Who may be scored and pushed: the one consent/eligibility rule of ProX.

Training rows, feature building, nightly and micro-batch scoring, the hot path and the CRM
pushes all ask this module, so the rule cannot drift between them.

Policies: ``opt_in`` (GDPR reading: processing consent required, no opt-out) and ``opt_out``
(CCPA reading: only opt-outs are excluded). A missing flag counts as "no consent" and
"not opted out".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

POLICIES: Final = ("opt_in", "opt_out")


def _check(policy: str) -> None:
    if policy not in POLICIES:
        raise ValueError(f"consent policy must be 'opt_in' or 'opt_out', got {policy!r}")


def eligible_mask(consent_processing: Any, opted_out: Any, policy: str) -> pa.BooleanArray | pa.ChunkedArray:
    """Per lead: may it be scored and pushed under ``policy``? (Arrow boolean arrays in, never null out.)"""
    _check(policy)
    not_opted_out = pc.invert(pc.fill_null(opted_out, False))
    if policy == "opt_out":
        return not_opted_out
    return pc.and_(pc.fill_null(consent_processing, False), not_opted_out)


def eligible_lead_ids(leads: pa.Table, policy: str) -> pa.Array:
    """The ``lead_id`` of every eligible lead of a LEADS-shaped table."""
    ok = eligible_mask(leads.column("consent_processing"), leads.column("opted_out"), policy)
    return leads.column("lead_id").filter(ok).combine_chunks()


def is_eligible(lead: Mapping[str, Any], policy: str) -> bool:
    """The same rule for one lead record (the hot path)."""
    _check(policy)
    if lead.get("opted_out"):
        return False
    return bool(lead.get("consent_processing")) if policy == "opt_in" else True


def ineligible_field(lead: Mapping[str, Any]) -> str:
    """The field that makes a lead ineligible, for error messages."""
    return "opted_out" if lead.get("opted_out") else "consent_processing"
