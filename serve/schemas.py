"""Request and response bodies (pydantic): unknown fields are refused, so raw PII
(first_name, email, phone ...) sent by mistake is a 422 naming the field, never stored."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from features.contract import ACTIONS, CHANNELS, SOURCES

Source = Literal[SOURCES]  # type: ignore[valid-type]
MAX_EVENTS = 5_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lead(_Strict):
    """A lead's fields (the LEADS contract: pseudonymised, no raw PII)."""

    lead_id: str = Field(
        pattern=r"^(salesforce|hubspot|marketo|file):[A-Za-z0-9_.\-]{1,64}$", examples=["hubspot:51234"]
    )
    source: Source
    crm_id: str = Field(min_length=1, max_length=64)
    created_at: AwareDatetime
    updated_at: AwareDatetime | None = None
    email_hash: str | None = Field(default=None, max_length=128)
    email_domain: str | None = Field(default=None, max_length=255)
    company: str | None = Field(default=None, max_length=255)
    company_domain: str | None = Field(default=None, max_length=255)
    industry: str | None = Field(default=None, max_length=128)
    employees: int | None = None  # dirty values are the feature code's to report
    annual_revenue: float | None = None
    country: str | None = Field(default=None, max_length=64)
    title: str | None = Field(default=None, max_length=255)
    lead_source: str | None = Field(default=None, max_length=128)
    status: str | None = Field(default=None, max_length=64)
    converted: bool | None = None
    converted_at: AwareDatetime | None = None
    consent_processing: bool | None = None
    opted_out: bool | None = None

    def row(self) -> dict:
        out = self.model_dump()
        out["updated_at"] = out["updated_at"] or out["created_at"]
        return out


class Event(_Strict):
    """One engagement event (the ACTIVITIES contract)."""

    event_id: str = Field(min_length=1, max_length=128)
    lead_id: str = Field(pattern=r"^(salesforce|hubspot|marketo|file):[A-Za-z0-9_.\-]{1,64}$")
    source: Source
    occurred_at: AwareDatetime
    channel: Literal[CHANNELS]  # type: ignore[valid-type]
    action: Literal[ACTIONS]  # type: ignore[valid-type]
    detail: str | None = Field(default=None, max_length=512)
    value: float | None = None


class StatusChange(_Strict):
    lead_id: str = Field(pattern=r"^(salesforce|hubspot|marketo|file):[A-Za-z0-9_.\-]{1,64}$")
    source: Source
    changed_at: AwareDatetime
    status: str = Field(min_length=1, max_length=64)  # CRM labels; aliases are normalised like in batch


class ScoreRequest(_Strict):
    """Score ``lead`` as of ``as_of`` (default: now). Without ``events`` the lead's stored
    online state (its events, status changes and account peers) is used."""

    lead: Lead
    events: list[Event] | None = Field(default=None, max_length=MAX_EVENTS)
    status_history: list[StatusChange] | None = Field(default=None, max_length=1_000)
    peers: list[Lead] | None = Field(default=None, max_length=1_000)
    peer_events: list[Event] | None = Field(default=None, max_length=MAX_EVENTS)
    as_of: AwareDatetime | None = None
    include_features: bool = False


class EventsRequest(_Strict):
    """One event (``event``) or a batch (``events``), optionally with lead upserts and status changes."""

    event: Event | None = None
    events: list[Event] = Field(default_factory=list, max_length=MAX_EVENTS)
    leads: list[Lead] = Field(default_factory=list, max_length=1_000)
    status_history: list[StatusChange] = Field(default_factory=list, max_length=MAX_EVENTS)
    as_of: AwareDatetime | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> EventsRequest:
        if self.event is None and not self.events and not self.leads and not self.status_history:
            raise ValueError("give 'event', 'events', 'leads' or 'status_history'")
        return self


class ScoreResponse(BaseModel):
    lead_id: str
    as_of: dt.datetime
    probability: float
    score: int
    tier: str
    reasons_positive: list[str]
    reasons_negative: list[str]
    model_name: str
    model_version: str
    features: dict | None = None


class EventsResponse(BaseModel):
    accepted: int
    duplicates: int
    scored: list[ScoreResponse]
    unknown_leads: list[str]
    queued_pushes: list[str]
    withheld_for_consent: list[str]
