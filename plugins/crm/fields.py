"""What each CRM holds of the simulated world, and the way back to the canonical tables.

The sandbox is loaded through the forward mappings (canonical RAW_LEADS / ACTIVITIES rows to
Salesforce and HubSpot records); the connectors extract through the inverse mappings. The pair
round-trips exactly, up to what a CRM can store (see :func:`crm_visible`):

* **Timestamps** are held to the millisecond by both CRMs; the world's microseconds are
  truncated when a record enters a CRM.
* **Salesforce ``ConvertedDate``** is a date: a Salesforce lead's ``converted_at`` comes back
  as midnight UTC of its conversion day.

Salesforce (org with the standard Lead, Task and Event objects):

=====================  =============================================================
canonical              Lead field
=====================  =============================================================
crm_id                 Id (18 chars, "00Q...")
first/last_name ...    FirstName, LastName, Email, Phone, Company, Title, Country
company_domain         Website
industry, lead_source  Industry, LeadSource (unrestricted picklists, values kept as is)
employees              NumberOfEmployees
annual_revenue         AnnualRevenue
status                 Status: open "Open - Not Contacted", working "Working - Contacted",
                       nurturing "Nurturing", qualified "Qualified", converted "Closed -
                       Converted", unqualified "Closed - Not Converted"
converted/_at          IsConverted, ConvertedDate
created_at/updated_at  CreatedDate, LastModifiedDate (= SystemModstamp on load)
consent_processing     ``Consent_Processing__c`` (checkbox; the org's GDPR processing consent)
opted_out              HasOptedOutOfEmail
=====================  =============================================================

Salesforce activity: email and call events are **Tasks** (``TaskSubtype`` Email/Call), meetings
are **Events**; ``WhoId`` is the lead, ``Id`` the canonical event_id, ``Subject`` reads
``"[<action>] <detail>"``, the time is ``CompletedDateTime`` (Task) or ``ActivityDateTime``
(Event), a call's minutes are ``CallDurationInSeconds / 60``, a meeting's ``DurationInMinutes``.
Web, form, ad, webinar and chat events of Salesforce leads come from the web-tracking
**file** export (:func:`web_tracking_rows`), keyed by the Salesforce lead id.

HubSpot (contacts; values are strings as the v3 API returns them):

=====================  =============================================================
canonical              contact property
=====================  =============================================================
crm_id                 hs_object_id (numeric string)
names, email, ...      firstname, lastname, email, phone, company, jobtitle, country
company_domain         website
industry               industry
employees              numemployees (the exact count; many portals make it a number)
annual_revenue         annualrevenue
status                 hs_lead_status: open NEW, working ATTEMPTED_TO_CONTACT, nurturing
                       BAD_TIMING, qualified CONNECTED, converted OPEN_DEAL, unqualified
                       UNQUALIFIED
lead_source            hs_analytics_source_data_1 (the original source's detail)
converted/_at          lifecyclestage "opportunity" / hs_lifecyclestage_opportunity_date
                       (else "lead")
created/updated_at     createdate, lastmodifieddate
consent_processing     ``consent_processing`` (a portal checkbox property, "true"/"false")
opted_out              hs_email_optout
=====================  =============================================================

HubSpot activity: emails, calls and meetings are the v3 engagement objects
(``/crm/v3/objects/emails|calls|meetings``, associated with the contact) with ``hs_timestamp``,
the detail in ``hs_email_subject`` / ``hs_call_title`` / ``hs_meeting_title`` and the action in
``hs_email_status`` / ``hs_call_status`` / ``hs_meeting_outcome`` (see the ``_ACTION`` maps);
a call's minutes are ``hs_call_duration`` (ms), a meeting's ``hs_meeting_end_time -
hs_meeting_start_time``. Web, form, ad, webinar and chat events are Event Analytics events
(``/events/v3/events``, ``eventType`` per channel and action, e.g. ``e_visited_page``), with
the page or campaign in ``properties.hs_detail`` and the value in ``properties.hs_value``.
Activity ids are the canonical ``event_id`` in every CRM (the world numbers them in each
source's own style), so extraction gives back the same ids.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from features.contract import ACTIVITIES, RAW_LEADS, UTC_TS, conform

# ---- vocabularies ------------------------------------------------------------------------
SF_STATUS = {
    "open": "Open - Not Contacted",
    "working": "Working - Contacted",
    "nurturing": "Nurturing",
    "qualified": "Qualified",
    "converted": "Closed - Converted",
    "unqualified": "Closed - Not Converted",
}
SF_STATUS_BACK = {v: k for k, v in SF_STATUS.items()}
HS_STATUS = {
    "open": "NEW",
    "working": "ATTEMPTED_TO_CONTACT",
    "nurturing": "BAD_TIMING",
    "qualified": "CONNECTED",
    "converted": "OPEN_DEAL",
    "unqualified": "UNQUALIFIED",
}
HS_STATUS_BACK = {v: k for k, v in HS_STATUS.items()}
SF_CONSENT_FIELD = "Consent_Processing__c"
HS_CONSENT_PROPERTY = "consent_processing"

#: Channels a Salesforce org holds as Tasks/Events; the rest arrive in the web-tracking file.
SF_CHANNELS = ("email", "call", "meeting")
HS_OBJECT_OF_CHANNEL = {"email": "emails", "call": "calls", "meeting": "meetings"}
HS_CHANNEL_OF_OBJECT = {v: k for k, v in HS_OBJECT_OF_CHANNEL.items()}
_HS_DETAIL = {"emails": "hs_email_subject", "calls": "hs_call_title", "meetings": "hs_meeting_title"}
_HS_ACTION_PROP = {"emails": "hs_email_status", "calls": "hs_call_status", "meetings": "hs_meeting_outcome"}
_HS_ACTION = {
    "emails": {
        "send": "SENT",
        "bounce": "BOUNCED",
        "open": "OPENED",
        "click": "CLICKED",
        "reply": "REPLIED",
        "unsubscribe": "UNSUBSCRIBED",
    },
    "calls": {"completed": "COMPLETED"},
    "meetings": {"booked": "SCHEDULED", "attend": "COMPLETED"},
}
_HS_ACTION_BACK = {obj: {v: k for k, v in m.items()} for obj, m in _HS_ACTION.items()}
HS_EVENT_TYPES = {
    ("web", "visit"): "e_visited_page",
    ("form", "submit"): "e_submitted_form",
    ("ad", "click"): "e_clicked_ad",
    ("ad", "impression"): "e_viewed_ad",
    ("webinar", "register"): "e_registered_webinar",
    ("webinar", "attend"): "e_attended_webinar",
    ("chat", "reply"): "e_replied_chat",
}
HS_EVENT_TYPES_BACK = {v: k for k, v in HS_EVENT_TYPES.items()}

#: Field catalogue of the emulated Salesforce objects: name -> (type, updateable, custom).
SF_FIELDS: dict[str, dict[str, tuple[str, bool, bool]]] = {
    "Lead": {
        "Id": ("id", False, False),
        "FirstName": ("string", True, False),
        "LastName": ("string", True, False),
        "Email": ("email", True, False),
        "Phone": ("phone", True, False),
        "Company": ("string", True, False),
        "Website": ("url", True, False),
        "Industry": ("picklist", True, False),
        "NumberOfEmployees": ("int", True, False),
        "AnnualRevenue": ("currency", True, False),
        "Country": ("string", True, False),
        "Title": ("string", True, False),
        "LeadSource": ("picklist", True, False),
        "Status": ("picklist", True, False),
        "IsConverted": ("boolean", False, False),
        "ConvertedDate": ("date", False, False),
        "CreatedDate": ("datetime", False, False),
        "LastModifiedDate": ("datetime", False, False),
        "SystemModstamp": ("datetime", False, False),
        "HasOptedOutOfEmail": ("boolean", True, False),
        "IsDeleted": ("boolean", False, False),
        SF_CONSENT_FIELD: ("boolean", True, True),
        "ProX_Score__c": ("double", True, True),
        "ProX_Tier__c": ("picklist", True, True),
        "ProX_Probability__c": ("double", True, True),
        "ProX_Reasons__c": ("textarea", True, True),
        "ProX_Model_Version__c": ("string", True, True),
        "ProX_Scored_At__c": ("datetime", True, True),
    },
    "Task": {
        "Id": ("id", False, False),
        "WhoId": ("reference", True, False),
        "Subject": ("combobox", True, False),
        "Status": ("picklist", True, False),
        "TaskSubtype": ("picklist", False, False),
        "Type": ("picklist", True, False),
        "ActivityDate": ("date", True, False),
        "CompletedDateTime": ("datetime", False, False),
        "CallDurationInSeconds": ("int", True, False),
        "Description": ("textarea", True, False),
        "CreatedDate": ("datetime", False, False),
        "LastModifiedDate": ("datetime", False, False),
        "SystemModstamp": ("datetime", False, False),
        "IsDeleted": ("boolean", False, False),
    },
    "Event": {
        "Id": ("id", False, False),
        "WhoId": ("reference", True, False),
        "Subject": ("combobox", True, False),
        "Type": ("picklist", True, False),
        "EventSubtype": ("picklist", False, False),
        "ActivityDateTime": ("datetime", True, False),
        "StartDateTime": ("datetime", True, False),
        "EndDateTime": ("datetime", True, False),
        "DurationInMinutes": ("int", True, False),
        "Description": ("textarea", True, False),
        "CreatedDate": ("datetime", False, False),
        "LastModifiedDate": ("datetime", False, False),
        "SystemModstamp": ("datetime", False, False),
        "IsDeleted": ("boolean", False, False),
    },
}
#: Restricted picklists (values outside are rejected like the real org does).
SF_RESTRICTED_PICKLISTS = {("Lead", "ProX_Tier__c"): ("A", "B", "C", "D")}
#: Text lengths the org enforces on writes.
SF_LENGTHS = {("Lead", "ProX_Model_Version__c"): 80, ("Lead", "ProX_Reasons__c"): 32_768}

SF_LEAD_FIELDS = [
    "Id",
    "FirstName",
    "LastName",
    "Email",
    "Phone",
    "Company",
    "Website",
    "Industry",
    "NumberOfEmployees",
    "AnnualRevenue",
    "Country",
    "Title",
    "LeadSource",
    "Status",
    "IsConverted",
    "ConvertedDate",
    "CreatedDate",
    "LastModifiedDate",
    "SystemModstamp",
    "HasOptedOutOfEmail",
    SF_CONSENT_FIELD,
]
SF_TASK_FIELDS = [
    "Id",
    "WhoId",
    "Subject",
    "TaskSubtype",
    "Type",
    "Status",
    "ActivityDate",
    "CompletedDateTime",
    "CallDurationInSeconds",
    "SystemModstamp",
]
SF_EVENT_FIELDS = [
    "Id",
    "WhoId",
    "Subject",
    "Type",
    "ActivityDateTime",
    "StartDateTime",
    "EndDateTime",
    "DurationInMinutes",
    "SystemModstamp",
]

HS_CONTACT_PROPERTIES = [
    "firstname",
    "lastname",
    "email",
    "phone",
    "company",
    "website",
    "industry",
    "numemployees",
    "annualrevenue",
    "country",
    "jobtitle",
    "hs_lead_status",
    "lifecyclestage",
    "createdate",
    "lastmodifieddate",
    "hs_object_id",
    "hs_email_optout",
    HS_CONSENT_PROPERTY,
    "hs_analytics_source_data_1",
    "hs_lifecyclestage_opportunity_date",
]
#: Property catalogue of the emulated HubSpot objects: name -> (type, fieldType, read only).
HS_PROPERTIES: dict[str, dict[str, tuple[str, str, bool]]] = {
    "contacts": {
        **{
            p: ("string", "text", False)
            for p in (
                "firstname",
                "lastname",
                "email",
                "phone",
                "company",
                "website",
                "industry",
                "country",
                "jobtitle",
                "hs_analytics_source_data_1",
            )
        },
        "numemployees": ("number", "number", False),
        "annualrevenue": ("number", "number", False),
        "hs_lead_status": ("enumeration", "radio", False),
        "lifecyclestage": ("enumeration", "radio", False),
        "createdate": ("datetime", "date", True),
        "lastmodifieddate": ("datetime", "date", True),
        "hs_object_id": ("number", "number", True),
        "hs_email_optout": ("bool", "booleancheckbox", False),
        HS_CONSENT_PROPERTY: ("bool", "booleancheckbox", False),
        "hs_lifecyclestage_opportunity_date": ("datetime", "date", True),
    },
    "emails": {
        p: ("string", "text", False) for p in ("hs_email_subject", "hs_email_status", "hs_email_direction")
    }
    | {"hs_timestamp": ("datetime", "date", False)},
    "calls": {p: ("string", "text", False) for p in ("hs_call_title", "hs_call_status")}
    | {"hs_timestamp": ("datetime", "date", False), "hs_call_duration": ("number", "number", False)},
    "meetings": {p: ("string", "text", False) for p in ("hs_meeting_title", "hs_meeting_outcome")}
    | {
        p: ("datetime", "date", False)
        for p in ("hs_timestamp", "hs_meeting_start_time", "hs_meeting_end_time")
    },
}
HS_ENUM_OPTIONS = {
    ("contacts", "hs_lead_status"): tuple(HS_STATUS.values()) + ("OPEN", "IN_PROGRESS"),
    ("contacts", "lifecyclestage"): (
        "subscriber",
        "lead",
        "marketingqualifiedlead",
        "salesqualifiedlead",
        "opportunity",
        "customer",
        "evangelist",
        "other",
    ),
}

_SUBJECT = re.compile(r"^\[(?P<action>[^\]]+)\](?: (?P<detail>.*))?$", re.S)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


# ---- scalar helpers ----------------------------------------------------------------------
def sf_datetime(ts: dt.datetime | None) -> str | None:
    """Salesforce's datetime text: ``2026-03-01T10:15:00.123+0000`` (milliseconds, UTC)."""
    if ts is None:
        return None
    ts = ts.astimezone(dt.UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}+0000"


def hs_datetime(ts: dt.datetime | None) -> str | None:
    """HubSpot's datetime text: ``2026-03-01T10:15:00.123Z``."""
    if ts is None:
        return None
    ts = ts.astimezone(dt.UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def parse_datetime(text: str | None) -> dt.datetime | None:
    """Parse either CRM's datetime text (or a bare date, read as midnight UTC)."""
    if text is None or text == "":
        return None
    value = text.strip()
    if len(value) == 10:
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    elif value[-5] in "+-" and value[-3] != ":":
        value = value[:-2] + ":" + value[-2:]
    parsed = dt.datetime.fromisoformat(value)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def _num_text(value: float | int | None) -> str | None:
    """A number as HubSpot text; floats use repr so they parse back to the same double."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return str(value)


def _float(text: Any) -> float | None:
    if text is None or text == "":
        return None
    return float(text)


def _int(text: Any) -> int | None:
    if text is None or text == "":
        return None
    return int(float(text)) if isinstance(text, str) and not text.lstrip("-").isdigit() else int(text)


def _bool_text(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


def _text_bool(text: Any) -> bool | None:
    if text is None or text == "":
        return None
    if isinstance(text, bool):
        return text
    return str(text).lower() == "true"


def _nan_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _subject(action: str, detail: str | None) -> str:
    return f"[{action}]" if detail is None else f"[{action}] {detail}"


def _parse_subject(subject: str | None, record_id: str) -> tuple[str, str | None]:
    match = _SUBJECT.match(subject or "")
    if not match:
        raise ValueError(f"activity {record_id}: Subject {subject!r} is not '[<action>] <detail>'")
    return match["action"], match["detail"]


# ---- canonical -> CRM ----------------------------------------------------------------------
def sf_lead_records(raw_leads: pa.Table) -> list[dict[str, Any]]:
    """Salesforce Lead records of the Salesforce-owned leads (load form: every field set)."""
    rows = raw_leads.filter(pc.equal(raw_leads["source"], "salesforce")).to_pylist()
    out = []
    for r in rows:
        modstamp = sf_datetime(r["updated_at"])
        out.append(
            {
                "Id": r["crm_id"],
                "FirstName": r["first_name"],
                "LastName": r["last_name"],
                "Email": r["email"],
                "Phone": r["phone"],
                "Company": r["company"],
                "Website": r["company_domain"],
                "Industry": r["industry"],
                "NumberOfEmployees": r["employees"],
                "AnnualRevenue": r["annual_revenue"],
                "Country": r["country"],
                "Title": r["title"],
                "LeadSource": r["lead_source"],
                "Status": SF_STATUS.get(r["status"], r["status"]),
                "IsConverted": bool(r["converted"]),
                "ConvertedDate": r["converted_at"].date().isoformat() if r["converted_at"] else None,
                "CreatedDate": sf_datetime(r["created_at"]),
                "LastModifiedDate": modstamp,
                "SystemModstamp": modstamp,
                "HasOptedOutOfEmail": bool(r["opted_out"]),
                SF_CONSENT_FIELD: bool(r["consent_processing"]),
                "IsDeleted": False,
                "ProX_Score__c": None,
                "ProX_Tier__c": None,
                "ProX_Probability__c": None,
                "ProX_Reasons__c": None,
                "ProX_Model_Version__c": None,
                "ProX_Scored_At__c": None,
            }
        )
    return out


def sf_activity_records(activities: pa.Table) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(Tasks, Events) holding the Salesforce-sourced activities."""
    rows = activities.filter(pc.equal(activities["source"], "salesforce")).to_pylist()
    tasks, events = [], []
    for r in rows:
        at = sf_datetime(r["occurred_at"])
        who = r["lead_id"].split(":", 1)[1]
        value = _nan_none(r["value"])
        if r["channel"] == "meeting":
            end = r["occurred_at"] + dt.timedelta(minutes=value) if value is not None else r["occurred_at"]
            events.append(
                {
                    "Id": r["event_id"],
                    "WhoId": who,
                    "Subject": _subject(r["action"], r["detail"]),
                    "Type": "Meeting",
                    "EventSubtype": "Event",
                    "ActivityDateTime": at,
                    "StartDateTime": at,
                    "EndDateTime": sf_datetime(end),
                    "DurationInMinutes": None if value is None else round(value),
                    "Description": None,
                    "CreatedDate": at,
                    "LastModifiedDate": at,
                    "SystemModstamp": at,
                    "IsDeleted": False,
                }
            )
        elif r["channel"] in ("email", "call"):
            subtype = "Email" if r["channel"] == "email" else "Call"
            tasks.append(
                {
                    "Id": r["event_id"],
                    "WhoId": who,
                    "Subject": _subject(r["action"], r["detail"]),
                    "TaskSubtype": subtype,
                    "Type": subtype,
                    "Status": "Completed",
                    "ActivityDate": r["occurred_at"].date().isoformat(),
                    "CompletedDateTime": at,
                    "CallDurationInSeconds": None if value is None else round(value * 60),
                    "Description": None,
                    "CreatedDate": at,
                    "LastModifiedDate": at,
                    "SystemModstamp": at,
                    "IsDeleted": False,
                }
            )
        else:
            raise ValueError(f"activity {r['event_id']}: channel {r['channel']!r} is not held by Salesforce")
    return tasks, events


def web_tracking_rows(activities: pa.Table) -> pa.Table:
    """The web-tracking export (source 'file'): one row per event, keyed by the CRM lead id."""
    file_rows = activities.filter(pc.equal(activities["source"], "file"))
    parts = pc.split_pattern(file_rows["lead_id"], ":", max_splits=1)
    return pa.table(
        {
            "event_id": file_rows["event_id"],
            "crm": pc.list_element(parts, 0),
            "crm_lead_id": pc.list_element(parts, 1),
            "timestamp": file_rows["occurred_at"],
            "channel": file_rows["channel"],
            "action": file_rows["action"],
            "detail": file_rows["detail"],
            "value": file_rows["value"],
        }
    )


#: Column mapping of the web-tracking export for the flat-file connector.
WEB_TRACKING_MAPPING = {
    "event_id": "event_id",
    "lead_id": "{crm}:{crm_lead_id}",
    "source": "=file",
    "occurred_at": "timestamp",
    "channel": "channel",
    "action": "action",
    "detail": "detail",
    "value": "value",
}


def hs_contact_records(raw_leads: pa.Table) -> list[dict[str, Any]]:
    """HubSpot contacts ({"id", "properties"}) of the HubSpot-owned leads."""
    rows = raw_leads.filter(pc.equal(raw_leads["source"], "hubspot")).to_pylist()
    out = []
    for r in rows:
        converted = r["converted"]
        props = {
            "firstname": r["first_name"],
            "lastname": r["last_name"],
            "email": r["email"],
            "phone": r["phone"],
            "company": r["company"],
            "website": r["company_domain"],
            "industry": r["industry"],
            "numemployees": _num_text(r["employees"]),
            "annualrevenue": _num_text(r["annual_revenue"]),
            "country": r["country"],
            "jobtitle": r["title"],
            "hs_analytics_source_data_1": r["lead_source"],
            "hs_lead_status": HS_STATUS.get(r["status"], r["status"]) if r["status"] is not None else None,
            "lifecyclestage": None if converted is None else ("opportunity" if converted else "lead"),
            "hs_lifecyclestage_opportunity_date": hs_datetime(r["converted_at"]),
            "createdate": hs_datetime(r["created_at"]),
            "lastmodifieddate": hs_datetime(r["updated_at"]),
            "hs_object_id": r["crm_id"],
            "hs_email_optout": _bool_text(r["opted_out"]),
            HS_CONSENT_PROPERTY: _bool_text(r["consent_processing"]),
        }
        out.append({"id": r["crm_id"], "properties": props})
    return out


def hs_activity_records(activities: pa.Table) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """({object type: engagement records with "contact"}, Event Analytics events) of HubSpot activity."""
    rows = activities.filter(pc.equal(activities["source"], "hubspot")).to_pylist()
    objects: dict[str, list[dict[str, Any]]] = {o: [] for o in HS_CHANNEL_OF_OBJECT}
    events: list[dict[str, Any]] = []
    for r in rows:
        contact = r["lead_id"].split(":", 1)[1]
        at = hs_datetime(r["occurred_at"])
        value = _nan_none(r["value"])
        obj = HS_OBJECT_OF_CHANNEL.get(r["channel"])
        if obj is None:
            key = (r["channel"], r["action"])
            props = {"hs_detail": r["detail"], "hs_value": _num_text(value)}
            events.append(
                {
                    "id": r["event_id"],
                    "objectType": "CONTACT",
                    "objectId": contact,
                    "occurredAt": at,
                    "eventType": HS_EVENT_TYPES.get(key, f"e_{r['channel']}__{r['action']}"),
                    "properties": props,
                }
            )
            continue
        props = {
            "hs_timestamp": at,
            _HS_DETAIL[obj]: r["detail"],
            _HS_ACTION_PROP[obj]: _HS_ACTION[obj].get(r["action"], r["action"].upper()),
            "hs_createdate": at,
            "hs_lastmodifieddate": at,
        }
        if obj == "emails":
            props["hs_email_direction"] = "INCOMING_EMAIL" if r["action"] == "reply" else "EMAIL"
        elif obj == "calls":
            props["hs_call_duration"] = None if value is None else str(round(value * 60_000))
        elif obj == "meetings":
            props["hs_meeting_start_time"] = at
            props["hs_meeting_end_time"] = (
                None if value is None else hs_datetime(r["occurred_at"] + dt.timedelta(minutes=value))
            )
        objects[obj].append({"id": r["event_id"], "contact": contact, "properties": props})
    return objects, events


# ---- CRM -> canonical ----------------------------------------------------------------------
def leads_from_salesforce(records: Iterable[Mapping[str, Any]]) -> pa.Table:
    """RAW_LEADS rows from Salesforce Lead records (REST JSON or Bulk CSV values)."""
    rows = []
    for r in records:
        crm_id = r["Id"]
        status = r.get("Status")
        converted = _text_bool(r.get("IsConverted"))
        rows.append(
            {
                "lead_id": f"salesforce:{crm_id}",
                "source": "salesforce",
                "crm_id": crm_id,
                "created_at": _required_ts(r, "CreatedDate", crm_id),
                "updated_at": _required_ts(r, "LastModifiedDate", crm_id),
                "first_name": _text(r.get("FirstName")),
                "last_name": _text(r.get("LastName")),
                "email": _text(r.get("Email")),
                "phone": _text(r.get("Phone")),
                "company": _text(r.get("Company")),
                "company_domain": _text(r.get("Website")),
                "industry": _text(r.get("Industry")),
                "employees": _int(r.get("NumberOfEmployees")),
                "annual_revenue": _float(r.get("AnnualRevenue")),
                "country": _text(r.get("Country")),
                "title": _text(r.get("Title")),
                "lead_source": _text(r.get("LeadSource")),
                "status": None if not status else SF_STATUS_BACK.get(status, status),
                "converted": converted,
                "converted_at": parse_datetime(_text(r.get("ConvertedDate"))),
                "consent_processing": _text_bool(r.get(SF_CONSENT_FIELD)),
                "opted_out": _text_bool(r.get("HasOptedOutOfEmail")),
            }
        )
    return _table(rows, RAW_LEADS)


def activities_from_salesforce(records: Iterable[Mapping[str, Any]], obj: str) -> pa.Table:
    """ACTIVITIES rows from Salesforce Task or Event records."""
    rows = []
    for r in records:
        rid = r["Id"]
        action, detail = _parse_subject(_text(r.get("Subject")), rid)
        if obj == "Task":
            subtype = r.get("TaskSubtype")
            channel = {"Email": "email", "Call": "call"}.get(subtype)
            if channel is None:
                raise ValueError(f"Task {rid}: TaskSubtype {subtype!r} is neither Email nor Call")
            occurred = _required_ts(r, "CompletedDateTime", rid)
            secs = _int(r.get("CallDurationInSeconds"))
            value = None if secs is None else secs / 60
        elif obj == "Event":
            channel = "meeting"
            occurred = _required_ts(r, "ActivityDateTime", rid)
            minutes = _int(r.get("DurationInMinutes"))
            value = None if minutes is None else float(minutes)
        else:
            raise ValueError(f"unknown Salesforce activity object {obj!r}")
        rows.append(
            {
                "event_id": rid,
                "lead_id": f"salesforce:{r['WhoId']}",
                "source": "salesforce",
                "occurred_at": occurred,
                "channel": channel,
                "action": action,
                "detail": detail,
                "value": value,
            }
        )
    return _table(rows, ACTIVITIES)


def leads_from_hubspot(contacts: Iterable[Mapping[str, Any]]) -> pa.Table:
    """RAW_LEADS rows from HubSpot contacts ({"id", "properties"})."""
    rows = []
    for c in contacts:
        p = c["properties"]
        crm_id = str(c["id"])
        status = p.get("hs_lead_status")
        stage = p.get("lifecyclestage")
        rows.append(
            {
                "lead_id": f"hubspot:{crm_id}",
                "source": "hubspot",
                "crm_id": crm_id,
                "created_at": _required_ts(p, "createdate", crm_id),
                "updated_at": _required_ts(p, "lastmodifieddate", crm_id),
                "first_name": _text(p.get("firstname")),
                "last_name": _text(p.get("lastname")),
                "email": _text(p.get("email")),
                "phone": _text(p.get("phone")),
                "company": _text(p.get("company")),
                "company_domain": _text(p.get("website")),
                "industry": _text(p.get("industry")),
                "employees": _int(p.get("numemployees")),
                "annual_revenue": _float(p.get("annualrevenue")),
                "country": _text(p.get("country")),
                "title": _text(p.get("jobtitle")),
                "lead_source": _text(p.get("hs_analytics_source_data_1")),
                "status": None if not status else HS_STATUS_BACK.get(status, status),
                "converted": None if not stage else stage in ("opportunity", "customer"),
                "converted_at": parse_datetime(p.get("hs_lifecyclestage_opportunity_date")),
                "consent_processing": _text_bool(p.get(HS_CONSENT_PROPERTY)),
                "opted_out": _text_bool(p.get("hs_email_optout")),
            }
        )
    return _table(rows, RAW_LEADS)


def activities_from_hubspot_objects(records: Iterable[Mapping[str, Any]], obj: str) -> pa.Table:
    """ACTIVITIES rows from HubSpot email/call/meeting objects with their contact association."""
    channel = HS_CHANNEL_OF_OBJECT[obj]
    back = _HS_ACTION_BACK[obj]
    rows = []
    for r in records:
        p = r["properties"]
        rid = str(r["id"])
        contacts = r.get("contacts") or []
        if not contacts:
            continue  # an engagement with no contact is no lead's activity
        raw_action = p.get(_HS_ACTION_PROP[obj]) or ""
        occurred = _required_ts(p, "hs_timestamp", rid)
        value: float | None = None
        if obj == "calls" and p.get("hs_call_duration") not in (None, ""):
            value = float(p["hs_call_duration"]) / 60_000
        elif obj == "meetings" and p.get("hs_meeting_end_time"):
            end = parse_datetime(p["hs_meeting_end_time"])
            start = parse_datetime(p.get("hs_meeting_start_time")) or occurred
            value = (end - start) / dt.timedelta(minutes=1)
        for contact in contacts:
            rows.append(
                {
                    "event_id": rid,
                    "lead_id": f"hubspot:{contact}",
                    "source": "hubspot",
                    "occurred_at": occurred,
                    "channel": channel,
                    "action": back.get(raw_action, raw_action.lower()),
                    "detail": _text(p.get(_HS_DETAIL[obj])),
                    "value": value,
                }
            )
    return _table(rows, ACTIVITIES)


def activities_from_hubspot_events(events: Iterable[Mapping[str, Any]]) -> pa.Table:
    """ACTIVITIES rows from Event Analytics events of contacts."""
    rows = []
    for e in events:
        etype = e["eventType"]
        if etype in HS_EVENT_TYPES_BACK:
            channel, action = HS_EVENT_TYPES_BACK[etype]
        elif etype.startswith("e_") and "__" in etype:
            channel, action = etype[2:].split("__", 1)
        else:
            continue  # event types ProX does not model
        props = e.get("properties") or {}
        rows.append(
            {
                "event_id": str(e["id"]),
                "lead_id": f"hubspot:{e['objectId']}",
                "source": "hubspot",
                "occurred_at": _required_ts(e, "occurredAt", str(e["id"])),
                "channel": channel,
                "action": action,
                "detail": _text(props.get("hs_detail")),
                "value": _float(props.get("hs_value")),
            }
        )
    return _table(rows, ACTIVITIES)


# ---- what a CRM can hold -----------------------------------------------------------------------
def truncate_ms(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Timestamps floored to the millisecond (what both CRMs store)."""
    return pc.floor_temporal(column, unit="millisecond").cast(UTC_TS)


def crm_visible(table: pa.Table, name: str) -> pa.Table:
    """The canonical table as extraction from the CRMs returns it (CRM precision applied).

    ``name`` is ``raw_leads`` or ``activities``. Timestamps go to milliseconds; Salesforce
    leads' ``converted_at`` to its day (``ConvertedDate``). File-sourced activities (the
    web-tracking export) keep full precision.
    """
    if name == "raw_leads":
        out = table
        for col in ("created_at", "updated_at", "converted_at"):
            out = out.set_column(out.schema.get_field_index(col), col, truncate_ms(out[col]))
        is_sf = pc.equal(out["source"], "salesforce")
        day = pc.floor_temporal(out["converted_at"], unit="day").cast(UTC_TS)
        out = out.set_column(
            out.schema.get_field_index("converted_at"),
            "converted_at",
            pc.if_else(is_sf, day, out["converted_at"]),
        )
        return conform(out, RAW_LEADS)
    if name == "activities":
        is_file = pc.equal(table["source"], "file")
        occurred = pc.if_else(is_file, table["occurred_at"], truncate_ms(table["occurred_at"]))
        out = table.set_column(table.schema.get_field_index("occurred_at"), "occurred_at", occurred)
        return conform(out, ACTIVITIES)
    raise ValueError(f"crm_visible: unknown table {name!r}; expected raw_leads or activities")


# ---- small helpers ----------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _required_ts(record: Mapping[str, Any], field: str, record_id: str) -> dt.datetime:
    value = parse_datetime(_text(record.get(field)))
    if value is None:
        raise ValueError(f"record {record_id}: required field {field} is empty")
    return value


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    if not rows:
        return schema.empty_table()
    return conform(pa.Table.from_pylist(rows, schema=schema), schema)
