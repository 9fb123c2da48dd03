"""The HubSpot subset ProX uses, over HTTPS, answering like the real CRM v3 APIs.

Endpoints:

* Auth: a private-app bearer token, or OAuth (``POST /oauth/v1/token`` with a refresh token;
  access tokens expire). Missing or wrong tokens get 401 as the real API.
* ``GET /crm/v3/objects/{contacts|emails|calls|meetings}`` (``limit`` <= 100, ``after``,
  ``properties``, ``associations=contacts``) and ``GET .../{id}``.
* ``POST .../search``: filters EQ/NEQ/LT/LTE/GT/GTE/IN/HAS_PROPERTY on any property, one sort,
  ``limit`` <= 200 and at most 10,000 results per query, as the real search.
* ``POST .../batch/read|update|upsert``: at most 100 inputs; 207 Multi-Status with per-record
  errors; invalid properties or values reject the whole batch (400 ``VALIDATION_ERROR``).
* ``GET|POST /crm/v3/properties/{objectType}``, ``GET .../{name}``, ``GET|POST .../groups``.
* ``POST /crm/v4/associations/{from}/{to}/batch/read`` (engagement -> contact).
* ``GET /events/v3/events`` (Event Analytics: web, form, ad, webinar and chat events).
* ``POST /crm/v3/exports/export/async`` and ``GET .../tasks/{taskId}/status`` (CRM exports of
  contacts and engagements as CSV, with associated contact ids), and the signed, short-lived
  download URL the status gives when an export is complete (see :func:`build_export`).

The rolling 10-second limit (100 or 190 requests per app) answers 429 with ``Retry-After``
and the ``X-HubSpot-RateLimit-*`` headers. Writes stamp ``lastmodifieddate`` (contacts) or
``hs_lastmodifieddate`` (engagements) with the current time.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import hashlib
import hmac
import io
import json
import secrets
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from plugins.crm import fields as crm_views
from sandbox.faults import Faults, dropped_response
from sandbox.store import Store, iso_ms

SYSTEM = "hubspot"
BATCH_LIMIT = 100
LIST_LIMIT = 100
SEARCH_PAGE = 200
SEARCH_MAX = 10_000
OBJECTS = ("contacts", "emails", "calls", "meetings")
_MODSTAMP = {"contacts": "lastmodifieddate"}  # engagements use hs_lastmodifieddate
_CREATED = {"contacts": "createdate"}
PRIVATE_APP = "private-app"

# CRM exports API limits, from developers.hubspot.com/docs/api/crm/exports ("Limits"): up to 30
# exports in a rolling 24-hour window and one export processed at a time (later ones queue);
# a CSV over 2 MB comes zipped; a download URL expires 5 minutes after the status request that
# gave it (ask again for a new one). Since 2025-04-28 (developers.hubspot.com/changelog/
# crm-export-partitioning-and-association-limits): files over 1,000,000 rows are split into
# several files in a zip, and rows carry at most 1,000 associated records unless the request
# sets overrideAssociatedObjectsPerDefinitionPerRowLimit. The 30 per day is a fault setting
# (hubspot_exports_per_day), so tests can use it up.
EXPORT_OBJECT_TYPES = {
    "contact": "contacts",
    "contacts": "contacts",
    "0-1": "contacts",
    "email": "emails",
    "emails": "emails",
    "0-49": "emails",
    "call": "calls",
    "calls": "calls",
    "0-48": "calls",
    "meeting": "meetings",
    "meetings": "meetings",
    "0-47": "meetings",
}
EXPORT_URL_SECONDS = 300
EXPORT_ZIP_BYTES = 2 * 1024 * 1024
EXPORT_ROWS_PER_FILE = 1_000_000
EXPORT_ASSOC_PER_ROW = 1_000
EXPORT_RECORD_ID = "Record ID"
EXPORT_ASSOC_COLUMN = "Associated Contact IDs"  # ids joined with ";"
_EXPORT_INDEX = "hs-exports"
_EXPORT_JOB = "hs-export:"
_EXPORT_DONE = ("COMPLETE", "CANCELED")


class HsError(Exception):
    """An error answered as HubSpot's ``{"status": "error", "message", "category"}``."""

    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.category, self.message, self.extra = status, category, message, extra

    def response(self) -> JSONResponse:
        body = {
            "status": "error",
            "message": self.message,
            "correlationId": str(uuid.uuid4()),
            "category": self.category,
            **self.extra,
        }
        return JSONResponse(body, status_code=self.status)


def now_ms() -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def modstamp_prop(obj: str) -> str:
    return _MODSTAMP.get(obj, "hs_lastmodifieddate")


def catalog(store: Store, obj: str) -> dict[str, dict[str, Any]]:
    """Built-in plus created properties of an object type: name -> definition."""
    props: dict[str, dict[str, Any]] = {}
    for name, (ptype, field_type, read_only) in crm_views.HS_PROPERTIES.get(obj, {}).items():
        props[name] = {
            "name": name,
            "label": name,
            "type": ptype,
            "fieldType": field_type,
            "groupName": "contactinformation" if obj == "contacts" else "engagement",
            "modificationMetadata": {"readOnlyValue": read_only, "archivable": False},
            "options": [
                {"label": o, "value": o, "hidden": False}
                for o in crm_views.HS_ENUM_OPTIONS.get((obj, name), ())
            ],
        }
    for name in ("hs_object_id", "hs_createdate", "hs_lastmodifieddate"):
        props.setdefault(
            name,
            {
                "name": name,
                "label": name,
                "type": "datetime" if "date" in name else "number",
                "fieldType": "date" if "date" in name else "number",
                "groupName": "system",
                "modificationMetadata": {"readOnlyValue": True},
                "options": [],
            },
        )
    props.update(store.properties(SYSTEM, obj))
    return props


def check_property_value(definition: dict[str, Any], value: Any) -> tuple[str | None, str | None]:
    """(stored text, None) or (None, error code) for a value written to a property."""
    if value is None or value == "":
        return "", None
    ptype = definition["type"]
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = str(value)
    if ptype == "number":
        try:
            number = float(text)
        except ValueError:
            return None, "INVALID_NUMBER"
        if number != number:
            return None, "INVALID_NUMBER"
        return text, None
    if ptype == "enumeration":
        options = {o["value"] for o in definition.get("options") or []}
        if options and text not in options:
            return None, "INVALID_OPTION"
        return text, None
    if ptype == "bool":
        if text.lower() not in ("true", "false"):
            return None, "INVALID_BOOLEAN"
        return text.lower(), None
    if ptype in ("datetime", "date"):
        try:
            if text.isdigit():
                moment = dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC)
            else:
                moment = crm_views.parse_datetime(text)  # type: ignore[assignment]
        except (ValueError, OverflowError):
            return None, "INVALID_DATE"
        return crm_views.hs_datetime(moment), None
    if len(text) > 65_536:
        return None, "INVALID_STRING_LENGTH"
    return text, None


@dataclass
class HsState:
    store: Store
    faults: Faults
    credentials: dict[str, str]
    token_calls: dict[str, int] = field(default_factory=dict)


def create_app(store: Store, faults: Faults, credentials: dict[str, str]) -> FastAPI:
    """The HubSpot emulator (``credentials``: access_token, client_id, client_secret,
    refresh_token)."""
    app = FastAPI(
        title="ProX sandbox: HubSpot", docs_url="/__sandbox/docs", openapi_url="/__sandbox/openapi.json"
    )
    state = HsState(store, faults, credentials)
    app.state.hs = state

    def oauth_tokens() -> dict[str, Any]:
        return store.get_kv("hs_tokens", {})

    async def guard(request: Request, *, is_write: bool) -> dict[str, str]:
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not token:
            raise HsError(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports "
                "OAuth 2.0 authentication and you can find more details at "
                "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            )
        if token == credentials["access_token"]:
            app_id = PRIVATE_APP
        elif token in oauth_tokens():
            app_id = credentials["client_id"]
            ttl = faults.config.token_ttl_requests
            calls = state.token_calls.get(token, 0) + 1
            state.token_calls[token] = calls
            if ttl is not None and calls > ttl:
                raise HsError(
                    401, "EXPIRED_AUTHENTICATION", "The OAuth token used to make this call expired."
                )
        else:
            raise HsError(401, "INVALID_AUTHENTICATION", "Authentication credentials are invalid.")
        admitted, remaining, retry_after = faults.hubspot_admit(
            app_id, search=request.url.path.endswith("/search")
        )
        limit = faults.config.hubspot_rate_limit
        rate_headers = {}
        if limit is not None:
            rate_headers = {
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(
                    int(faults.config.hubspot_window_seconds * 1000)
                ),
                "X-HubSpot-RateLimit-Max": str(limit),
                "X-HubSpot-RateLimit-Remaining": str(remaining),
            }
        if not admitted:
            err = HsError(
                429,
                "RATE_LIMITS",
                "You have reached your ten_secondly_rolling limit.",
                errorType="RATE_LIMIT",
                policyName="TEN_SECONDLY_ROLLING",
            )
            err.extra["_headers"] = {**rate_headers, "Retry-After": str(retry_after)}
            raise err
        store.add_usage(SYSTEM, dt.date.today().isoformat())
        decision = faults.decide(is_write=is_write)
        request.state.decision = decision
        request.state.rate_headers = rate_headers
        if decision.fail_status:
            raise HsError(decision.fail_status, "INTERNAL_ERROR", "Service Unavailable; please retry")
        if decision.delay:
            await asyncio.sleep(decision.delay)
        return rate_headers

    async def finish(request: Request, response: Response) -> Response:
        decision = getattr(request.state, "decision", None)
        if decision is not None and decision.hold:
            await asyncio.sleep(decision.hold)
        if decision is not None and decision.drop_after:
            return dropped_response()
        response.headers.update(getattr(request.state, "rate_headers", {}))
        return response

    @app.exception_handler(HsError)
    async def _hs_error(request: Request, exc: HsError) -> Response:
        headers = exc.extra.pop("_headers", None) or {}
        response = exc.response()
        response.headers.update(headers)
        return response

    # ---- OAuth ----------------------------------------------------------------------------------
    @app.post("/oauth/v1/token")
    async def oauth_token(request: Request) -> Response:
        form = dict((await request.form()).items())
        if form.get("grant_type") != "refresh_token":
            raise HsError(400, "BAD_GRANT_TYPE", "grant_type must be refresh_token in the sandbox")
        if (
            form.get("client_id") != credentials["client_id"]
            or form.get("client_secret") != credentials["client_secret"]
        ):
            raise HsError(400, "BAD_CLIENT_ID", "missing or unknown client id / secret")
        if form.get("refresh_token") != credentials["refresh_token"]:
            raise HsError(400, "BAD_REFRESH_TOKEN", "missing or unknown refresh token")
        token = "CKT" + secrets.token_urlsafe(40)
        saved = oauth_tokens()
        saved[token] = {"issued": iso_ms(now_ms())}
        store.set_kv("hs_tokens", saved)
        return JSONResponse(
            {
                "access_token": token,
                "refresh_token": credentials["refresh_token"],
                "expires_in": 1800,
                "token_type": "bearer",
            }
        )

    # ---- objects ---------------------------------------------------------------------------------
    @app.get("/crm/v3/objects/{obj}")
    async def list_objects(request: Request, obj: str) -> Response:
        await guard(request, is_write=False)
        _check_object(obj)
        q = request.query_params
        limit = _int_param(q.get("limit"), 10, "limit")
        if limit > LIST_LIMIT:
            raise HsError(400, "VALIDATION_ERROR", f"limit must be less than or equal to {LIST_LIMIT}")
        after = _int_param(q.get("after"), 0, "after")
        props = _wanted(q.getlist("properties"), obj)
        rows = list(store.scan(SYSTEM, obj, after_k=after, order="k", limit=limit + 1))
        more = len(rows) > limit
        rows = rows[:limit]
        assoc = _assoc_param(q.getlist("associations"))
        linked = store.assoc_of(SYSTEM, obj, [r["id"] for r in rows], "contacts") if assoc else {}
        body: dict[str, Any] = {"results": [_render(obj, r, props, linked if assoc else None) for r in rows]}
        if more:
            nxt = rows[-1]["id"]
            body["paging"] = {"next": {"after": nxt, "link": f"/crm/v3/objects/{obj}?after={nxt}"}}
        return await finish(request, JSONResponse(body))

    @app.get("/crm/v3/objects/{obj}/{object_id}")
    async def get_object(request: Request, obj: str, object_id: str) -> Response:
        await guard(request, is_write=False)
        _check_object(obj)
        found = store.get_records(SYSTEM, obj, [object_id]).get(object_id)
        if found is None:
            raise HsError(404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric.")
        props = _wanted(request.query_params.getlist("properties"), obj)
        return await finish(request, JSONResponse(_render(obj, found, props, None)))

    @app.post("/crm/v3/objects/{obj}/search")
    async def search(request: Request, obj: str) -> Response:
        await guard(request, is_write=False)
        _check_object(obj)
        body = await _json(request)
        limit = int(body.get("limit", 10))
        if limit > SEARCH_PAGE:
            raise HsError(400, "VALIDATION_ERROR", f"limit must be less than or equal to {SEARCH_PAGE}")
        after = _int_param(body.get("after"), 0, "after")
        if after + limit > SEARCH_MAX:
            raise HsError(
                400,
                "VALIDATION_ERROR",
                f"The search API returns at most {SEARCH_MAX} results per query; "
                "narrow the filters (e.g. by lastmodifieddate) instead of paging further",
            )
        known = catalog(store, obj)
        groups = body.get("filterGroups") or []
        for group in groups:
            for f in group.get("filters") or []:
                if f.get("propertyName") not in known:
                    raise HsError(
                        400,
                        "VALIDATION_ERROR",
                        f"There was a problem with the request: property "
                        f"{f.get('propertyName')!r} does not exist",
                    )
        sorts = body.get("sorts") or []
        stamp = modstamp_prop(obj)
        since = None
        if len(groups) == 1:
            for f in groups[0].get("filters") or []:
                if f.get("propertyName") == stamp and f.get("operator") in ("GT", "GTE"):
                    since = _as_iso(f.get("value"))
        rows = [
            r
            for r in store.scan(SYSTEM, obj, since=since, since_inclusive=True)
            if not groups or any(_group_matches(r, g, known) for g in groups)
        ]
        if sorts:
            s = (
                sorts[0]
                if isinstance(sorts[0], dict)
                else {
                    "propertyName": str(sorts[0]).lstrip("-"),
                    "direction": "DESCENDING" if str(sorts[0]).startswith("-") else "ASCENDING",
                }
            )
            name = s.get("propertyName")
            rows.sort(key=lambda r: _sort_key(r, name, known), reverse=s.get("direction") == "DESCENDING")
        else:
            rows.sort(key=lambda r: int(r["id"]))
        total = len(rows)
        page = rows[after : after + limit]
        props = _wanted(body.get("properties") or [], obj)
        out: dict[str, Any] = {"total": total, "results": [_render(obj, r, props, None) for r in page]}
        if after + limit < total:
            out["paging"] = {"next": {"after": str(after + limit)}}
        return await finish(request, JSONResponse(out))

    @app.post("/crm/v3/objects/{obj}/batch/read")
    async def batch_read(request: Request, obj: str) -> Response:
        await guard(request, is_write=False)
        _check_object(obj)
        body = await _json(request)
        inputs = _inputs(body)
        id_prop = body.get("idProperty")
        props = _wanted(body.get("properties") or [], obj)
        ids = [str(i.get("id")) for i in inputs]
        found = _lookup(store, obj, ids, id_prop)
        missing = [i for i in ids if i not in found]
        started = iso_ms(now_ms())
        result: dict[str, Any] = {
            "status": "COMPLETE",
            "results": [_render(obj, found[i], props, None) for i in ids if i in found],
            "startedAt": started,
            "completedAt": iso_ms(now_ms()),
        }
        if missing:
            result.update(
                numErrors=1,
                errors=[
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": "Could not get some CONTACT objects, they may be deleted or not exist.",
                        "context": {"ids": missing},
                    }
                ],
            )
            return await finish(request, JSONResponse(result, status_code=207))
        return await finish(request, JSONResponse(result))

    @app.post("/crm/v3/objects/{obj}/batch/update")
    async def batch_update(request: Request, obj: str) -> Response:
        await guard(request, is_write=True)
        _check_object(obj)
        body = await _json(request)
        return await finish(
            request, _write(state, obj, _inputs(body), upsert=False, id_prop=body.get("idProperty"))
        )

    @app.post("/crm/v3/objects/{obj}/batch/upsert")
    async def batch_upsert(request: Request, obj: str) -> Response:
        await guard(request, is_write=True)
        _check_object(obj)
        body = await _json(request)
        inputs = _inputs(body)
        id_prop = inputs[0].get("idProperty") if inputs else None
        return await finish(request, _write(state, obj, inputs, upsert=True, id_prop=id_prop))

    # ---- properties --------------------------------------------------------------------------------
    @app.get("/crm/v3/properties/{obj}")
    async def list_properties(request: Request, obj: str) -> Response:
        await guard(request, is_write=False)
        _check_object(obj)
        return await finish(request, JSONResponse({"results": list(catalog(store, obj).values())}))

    @app.get("/crm/v3/properties/{obj}/groups")
    async def list_groups(request: Request, obj: str) -> Response:
        await guard(request, is_write=False)
        _check_object(obj)
        return await finish(request, JSONResponse({"results": list(_groups(store, obj).values())}))

    @app.get("/crm/v3/properties/{obj}/groups/{name}")
    async def get_group(request: Request, obj: str, name: str) -> Response:
        await guard(request, is_write=False)
        _check_object(obj)
        group = _groups(store, obj).get(name)
        if group is None:
            raise HsError(404, "OBJECT_NOT_FOUND", f"Unable to find property group {name}")
        return await finish(request, JSONResponse(group))

    @app.post("/crm/v3/properties/{obj}/groups")
    async def create_group(request: Request, obj: str) -> Response:
        await guard(request, is_write=True)
        _check_object(obj)
        body = await _json(request)
        name = body.get("name")
        if not name or not body.get("label"):
            raise HsError(400, "VALIDATION_ERROR", "name and label are required")
        if name in _groups(store, obj):
            raise HsError(409, "OBJECT_ALREADY_EXISTS", f"A property group named '{name}' already exists.")
        group = {
            "name": name,
            "label": body["label"],
            "displayOrder": body.get("displayOrder", -1),
            "archived": False,
        }
        store.put_property(SYSTEM, obj, name, group, group=True)
        return await finish(request, JSONResponse(group, status_code=201))

    @app.get("/crm/v3/properties/{obj}/{name}")
    async def get_property(request: Request, obj: str, name: str) -> Response:
        await guard(request, is_write=False)
        _check_object(obj)
        prop = catalog(store, obj).get(name)
        if prop is None:
            raise HsError(404, "OBJECT_NOT_FOUND", f"Unable to find property {name}")
        return await finish(request, JSONResponse(prop))

    @app.post("/crm/v3/properties/{obj}")
    async def create_property(request: Request, obj: str) -> Response:
        await guard(request, is_write=True)
        _check_object(obj)
        body = await _json(request)
        for key in ("name", "label", "type", "fieldType", "groupName"):
            if not body.get(key):
                raise HsError(400, "VALIDATION_ERROR", f"Property is missing required field {key!r}")
        if body["name"] in catalog(store, obj):
            raise HsError(409, "OBJECT_ALREADY_EXISTS", f"Property named '{body['name']}' already exists.")
        if body["groupName"] not in _groups(store, obj):
            raise HsError(400, "VALIDATION_ERROR", f"property group {body['groupName']!r} does not exist")
        if body["type"] not in ("string", "number", "date", "datetime", "enumeration", "bool"):
            raise HsError(400, "VALIDATION_ERROR", f"unknown property type {body['type']!r}")
        if body["type"] == "enumeration" and not body.get("options"):
            raise HsError(400, "VALIDATION_ERROR", "enumeration properties need options")
        prop = {
            "name": body["name"],
            "label": body["label"],
            "type": body["type"],
            "fieldType": body["fieldType"],
            "groupName": body["groupName"],
            "description": body.get("description", ""),
            "options": body.get("options") or [],
            "createdAt": iso_ms(now_ms()),
            "archived": False,
            "modificationMetadata": {"readOnlyValue": False, "archivable": True},
        }
        store.put_property(SYSTEM, obj, body["name"], prop)
        return await finish(request, JSONResponse(prop, status_code=201))

    # ---- associations v4 and events ------------------------------------------------------------------
    @app.post("/crm/v4/associations/{from_obj}/{to_obj}/batch/read")
    async def assoc_read(request: Request, from_obj: str, to_obj: str) -> Response:
        await guard(request, is_write=False)
        body = await _json(request)
        inputs = body.get("inputs") or []
        if len(inputs) > 1000:
            raise HsError(400, "VALIDATION_ERROR", "at most 1000 inputs per association batch read")
        ids = [str(i.get("id")) for i in inputs]
        linked = store.assoc_of(SYSTEM, from_obj, ids, to_obj)
        results = [
            {
                "from": {"id": i},
                "to": [
                    {
                        "toObjectId": int(t),
                        "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 0, "label": None}],
                    }
                    for t in linked[i]
                ],
            }
            for i in ids
            if i in linked
        ]
        return await finish(
            request,
            JSONResponse(
                {
                    "status": "COMPLETE",
                    "results": results,
                    "startedAt": iso_ms(now_ms()),
                    "completedAt": iso_ms(now_ms()),
                }
            ),
        )

    @app.get("/events/v3/events")
    @app.get("/events/v3/events/")
    async def events(request: Request) -> Response:
        await guard(request, is_write=False)
        q = request.query_params
        if (q.get("objectType") or "contact").lower() not in ("contact", "contacts", "0-1"):
            raise HsError(400, "VALIDATION_ERROR", "the sandbox holds contact events only")
        limit = _int_param(q.get("limit"), 100, "limit")
        if limit > 100:
            raise HsError(400, "VALIDATION_ERROR", "limit must be less than or equal to 100")
        after = q.get("after")
        cursor = json.loads(base64.urlsafe_b64decode(after.encode()).decode()) if after else None
        since = _as_iso(q.get("occurredAfter")) if q.get("occurredAfter") else None
        until = _as_iso(q.get("occurredBefore")) if q.get("occurredBefore") else None
        wanted_type = q.get("eventType")
        object_id = q.get("objectId")
        # read in bounded chunks from the (modstamp, id) cursor: a page costs O(limit), not O(all events)
        position = (cursor[0], cursor[1]) if cursor else None
        rows: list[dict[str, Any]] = []
        chunk = 4 * (limit + 1)
        while len(rows) <= limit:
            batch = list(
                store.scan(
                    SYSTEM,
                    "events",
                    since=None if position else since,
                    since_inclusive=False,
                    until=until,
                    after_stamp_id=position,
                    limit=chunk,
                )
            )
            for r in batch:
                if wanted_type and r["eventType"] != wanted_type:
                    continue
                if object_id and r["objectId"] != object_id:
                    continue
                rows.append(r)
                if len(rows) > limit:
                    break
            if len(batch) < chunk:
                break
            position = (batch[-1]["_modstamp"], batch[-1]["id"])
        more = len(rows) > limit
        rows = rows[:limit]
        body: dict[str, Any] = {
            "results": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        }
        if more:
            token = base64.urlsafe_b64encode(
                json.dumps([rows[-1]["_modstamp"], rows[-1]["id"]]).encode()
            ).decode()
            body["paging"] = {"next": {"after": token}}
        return await finish(request, JSONResponse(body))

    # ---- CRM exports -------------------------------------------------------------------------------
    export_lock = asyncio.Lock()
    url_key = hashlib.sha256(("exports:" + credentials["client_secret"]).encode()).digest()

    def export_tasks() -> list[dict[str, Any]]:
        found = store.get_job(_EXPORT_INDEX)
        return found[0]["tasks"] if found else []

    @app.post("/crm/v3/exports/export/async")
    async def export_start(request: Request) -> Response:
        await guard(request, is_write=False)
        spec = export_spec(store, await _json(request))
        async with export_lock:
            now = time.time()
            tasks = export_tasks()
            recent = [t["at"] for t in tasks if t["at"] > now - 86_400]
            limit = faults.config.hubspot_exports_per_day
            if len(recent) >= limit:
                retry_after = int(min(recent) + 86_400 - now) + 1 if recent else 86_400
                raise HsError(
                    429,
                    "RATE_LIMITS",
                    f"You have reached your limit of {limit} exports in a rolling 24 hours.",
                    errorType="RATE_LIMIT",
                    policyName="DAILY",
                    _headers={"Retry-After": str(retry_after)},
                )
            payload, filename, rows = await asyncio.to_thread(build_export, store, spec)
            task_id = str(10**11 + secrets.randbelow(9 * 10**11))
            requested = iso_ms(now_ms())
            data = {
                "id": task_id,
                "object": spec["object"],
                "file": filename,
                "rows": rows,
                "status": "PENDING",
                "ticks": 0,
                "need": faults.config.hubspot_export_polls,
                "outcome": faults.config.hubspot_export_outcome,
                "requestedAt": requested,
                "startedAt": None,
                "completedAt": None,
            }
            store.put_job(_EXPORT_JOB + task_id, data, payload)
            store.put_job(_EXPORT_INDEX, {"tasks": [*tasks, {"id": task_id, "at": now}]})
        body = {"id": task_id, "links": {"status": f"/crm/v3/exports/export/async/tasks/{task_id}/status"}}
        return await finish(request, JSONResponse(body, status_code=202))

    @app.get("/crm/v3/exports/export/async/tasks/{task_id}/status")
    async def export_status(request: Request, task_id: str) -> Response:
        await guard(request, is_write=False)
        async with export_lock:
            if store.get_job(_EXPORT_JOB + task_id) is None:
                raise HsError(404, "OBJECT_NOT_FOUND", f"No export task with id {task_id}")
            advance_exports(store, [t["id"] for t in export_tasks()])
            data = store.get_job(_EXPORT_JOB + task_id)[0]  # type: ignore[index]
        stamp = iso_ms(now_ms())
        body: dict[str, Any] = {
            "status": data["status"],
            "requestedAt": data["requestedAt"],
            "startedAt": data["startedAt"] or stamp,
            "completedAt": data["completedAt"] or stamp,
            "links": {},
        }
        if data["status"] == "COMPLETE":
            expires = int(time.time()) + EXPORT_URL_SECONDS
            signature = _export_signature(url_key, task_id, expires)
            body["result"] = (
                f"{str(request.base_url).rstrip('/')}/hubspot-exports/{task_id}/{data['file']}"
                f"?expires={expires}&signature={signature}"
            )
        return await finish(request, JSONResponse(body))

    @app.get("/hubspot-exports/{task_id}/{filename}")
    async def export_file(request: Request, task_id: str, filename: str) -> Response:
        """The signed download URL (a file store, not the API: no token, no rate limit)."""
        q = request.query_params
        expires = _int_param(q.get("expires"), 0, "expires")
        if not hmac.compare_digest(_export_signature(url_key, task_id, expires), q.get("signature", "")):
            return Response("SignatureDoesNotMatch", status_code=403, media_type="text/plain")
        if expires < time.time():
            return Response("Request has expired", status_code=403, media_type="text/plain")
        found = store.get_job(_EXPORT_JOB + task_id)
        if found is None or found[0]["status"] != "COMPLETE" or found[0]["file"] != filename:
            return Response("NoSuchKey", status_code=404, media_type="text/plain")
        kind = "application/zip" if filename.endswith(".zip") else "text/csv"
        return Response(
            found[1] or b"",
            media_type=kind,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    return app


def export_spec(store: Store, body: dict[str, Any]) -> dict[str, Any]:
    """Validate a PublicExportRequest as the sandbox supports it (VIEW exports to CSV)."""
    if body.get("exportType") == "LIST":
        raise HsError(400, "VALIDATION_ERROR", "the sandbox exports views only (exportType VIEW)")
    if body.get("exportType") != "VIEW":
        raise HsError(400, "VALIDATION_ERROR", "exportType must be VIEW or LIST")
    if body.get("format") not in ("CSV", "XLSX", "XLS"):
        raise HsError(400, "VALIDATION_ERROR", "format must be one of CSV, XLSX, XLS")
    if body.get("format") != "CSV":
        raise HsError(400, "VALIDATION_ERROR", "the sandbox writes CSV exports only")
    for key in ("exportName", "language"):
        if not body.get(key):
            raise HsError(400, "VALIDATION_ERROR", f"{key} is required")
    obj = EXPORT_OBJECT_TYPES.get(str(body.get("objectType", "")).lower())
    if obj is None:
        raise HsError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {body.get('objectType')}")
    props = body.get("objectProperties")
    if not isinstance(props, list) or not props:
        raise HsError(400, "VALIDATION_ERROR", "objectProperties: expected a non-empty array")
    known = catalog(store, obj)
    unknown = [p for p in props if p not in known]
    if unknown:
        raise HsError(400, "VALIDATION_ERROR", f"Properties do not exist: {', '.join(map(str, unknown))}")
    if body.get("publicCrmSearchRequest"):
        raise HsError(400, "VALIDATION_ERROR", "the sandbox exports whole views (no publicCrmSearchRequest)")
    assoc = body.get("associatedObjectType")
    if assoc and (EXPORT_OBJECT_TYPES.get(str(assoc).lower()) != "contacts" or obj == "contacts"):
        raise HsError(400, "VALIDATION_ERROR", "the sandbox exports engagements' associated contacts only")
    return {
        "object": obj,
        "properties": [str(p) for p in props],
        "contacts": bool(assoc),
        "assoc_limit": None
        if body.get("overrideAssociatedObjectsPerDefinitionPerRowLimit")
        else EXPORT_ASSOC_PER_ROW,
        "name": "".join(c if c.isalnum() or c in "-_" else "_" for c in str(body["exportName"]))[:100],
    }


def build_export(store: Store, spec: dict[str, Any], chunk: int = 2_000) -> tuple[bytes, str, int]:
    """The export file of ``spec``: (bytes, file name, rows).

    One CSV row per record in the list endpoint's order, with the values the v3 API returns
    (``None`` as an empty cell), ``Record ID`` first and the associated contact ids last;
    zipped above 2 MB, one CSV per million rows.
    """
    obj, props = spec["object"], spec["properties"]
    header = [EXPORT_RECORD_ID, *props] + ([EXPORT_ASSOC_COLUMN] if spec["contacts"] else [])
    parts: list[str] = []
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    rows = in_part = 0
    after = 0
    while True:
        batch = list(store.scan(SYSTEM, obj, after_k=after, order="k", limit=chunk))
        if not batch:
            break
        after = int(batch[-1]["id"])
        linked = store.assoc_of(SYSTEM, obj, [r["id"] for r in batch], "contacts") if spec["contacts"] else {}
        for record in batch:
            if in_part == EXPORT_ROWS_PER_FILE:
                parts.append(buf.getvalue())
                buf = io.StringIO()
                writer = csv.writer(buf, lineterminator="\r\n")
                writer.writerow(header)
                in_part = 0
            p = record["properties"]
            line = [record["id"]] + [
                _cell(record["id"] if name == "hs_object_id" else p.get(name)) for name in props
            ]
            if spec["contacts"]:
                ids = linked.get(record["id"], [])
                line.append(";".join(ids if spec["assoc_limit"] is None else ids[: spec["assoc_limit"]]))
            writer.writerow(line)
            rows += 1
            in_part += 1
    parts.append(buf.getvalue())
    first = parts[0].encode()
    if len(parts) == 1 and len(first) <= EXPORT_ZIP_BYTES:
        return first, f"{spec['name']}.csv", rows
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, text in enumerate(parts, 1):
            zf.writestr(f"{spec['name']}{'' if len(parts) == 1 else f'-{n}'}.csv", text)
    return out.getvalue(), f"{spec['name']}.zip", rows


def advance_exports(store: Store, task_ids: list[str]) -> None:
    """One step of the portal's export queue (driven by status polls, so tests need no clock):
    the oldest unfinished export progresses; it ends after ``need`` steps as configured."""
    for task_id in task_ids:
        found = store.get_job(_EXPORT_JOB + task_id)
        if found is None or found[0]["status"] in _EXPORT_DONE:
            continue
        data = found[0]
        data["ticks"] += 1
        data["status"] = "PROCESSING"
        data["startedAt"] = data["startedAt"] or iso_ms(now_ms())
        if data["ticks"] > data["need"]:
            data["status"] = data["outcome"] if data["outcome"] in _EXPORT_DONE else "COMPLETE"
            data["completedAt"] = iso_ms(now_ms())
        store.put_job(_EXPORT_JOB + task_id, data)
        return


def _export_signature(key: bytes, task_id: str, expires: int) -> str:
    return hmac.new(key, f"{task_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---- helpers ----------------------------------------------------------------------------------------
def _check_object(obj: str) -> None:
    if obj not in OBJECTS:
        raise HsError(400, "VALIDATION_ERROR", f"Unable to infer object type from: {obj}")


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"{}")
    except json.JSONDecodeError as exc:
        raise HsError(
            400, "VALIDATION_ERROR", f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None


def _int_param(value: Any, default: int, name: str) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise HsError(400, "VALIDATION_ERROR", f"{name} must be an integer, got {value!r}") from None


def _inputs(body: dict[str, Any]) -> list[dict[str, Any]]:
    inputs = body.get("inputs")
    if not isinstance(inputs, list):
        raise HsError(400, "VALIDATION_ERROR", "inputs: expected an array")
    if len(inputs) > BATCH_LIMIT:
        raise HsError(
            400,
            "VALIDATION_ERROR",
            f"Batch input limit exceeded: {len(inputs)} inputs were sent; the maximum is {BATCH_LIMIT}",
        )
    return inputs


def _wanted(params: list[str], obj: str) -> list[str]:
    names: list[str] = []
    for p in params:
        names.extend(x.strip() for x in str(p).split(",") if x.strip())
    return names or (
        ["email", "firstname", "lastname", "createdate", "lastmodifieddate", "hs_object_id"]
        if obj == "contacts"
        else ["hs_createdate", "hs_lastmodifieddate", "hs_object_id"]
    )


def _assoc_param(params: list[str]) -> bool:
    names = {x.strip() for p in params for x in p.split(",")}
    return bool(names & {"contacts", "contact", "0-1"})


def _render(
    obj: str, record: dict[str, Any], props: list[str], linked: dict[str, list[str]] | None
) -> dict[str, Any]:
    p = record["properties"]
    out: dict[str, Any] = {
        "id": record["id"],
        "properties": {name: p.get(name) for name in props},  # unknown names come back null, as HubSpot does
        "createdAt": p.get(_CREATED.get(obj, "hs_createdate")),
        "updatedAt": p.get(modstamp_prop(obj)),
        "archived": False,
    }
    out["properties"]["hs_object_id"] = record["id"]
    if linked is not None and record["id"] in linked:
        out["associations"] = {
            "contacts": {
                "results": [{"id": c, "type": f"{obj[:-1]}_to_contact"} for c in linked[record["id"]]]
            }
        }
    return out


def _groups(store: Store, obj: str) -> dict[str, dict[str, Any]]:
    base = {
        "contactinformation": {
            "name": "contactinformation",
            "label": "Contact information",
            "displayOrder": 0,
            "archived": False,
        }
    }
    return {**base, **store.properties(SYSTEM, obj, group=True)}


def _as_iso(value: Any) -> str:
    text = str(value)
    if text.isdigit():
        return iso_ms(dt.datetime.fromtimestamp(int(text) / 1000, dt.UTC))
    parsed = crm_views.parse_datetime(text)
    if parsed is None:
        raise HsError(400, "VALIDATION_ERROR", f"not a datetime: {value!r}")
    return iso_ms(parsed)


def _typed(value: Any, definition: dict[str, Any] | None) -> Any:
    if value is None or value == "":
        return None
    kind = (definition or {}).get("type")
    if kind == "number":
        return float(value)
    if kind in ("datetime", "date"):
        return _as_iso(value)
    return str(value)


def _group_matches(record: dict[str, Any], group: dict[str, Any], known: dict[str, dict[str, Any]]) -> bool:
    props = record["properties"]
    for f in group.get("filters") or []:
        name, op = f.get("propertyName"), f.get("operator", "EQ")
        definition = known.get(name)
        value = _typed(props.get(name) if name != "hs_object_id" else record["id"], definition)
        if op == "HAS_PROPERTY":
            ok = value is not None
        elif op == "NOT_HAS_PROPERTY":
            ok = value is None
        elif op in ("IN", "NOT_IN"):
            options = {_typed(v, definition) for v in f.get("values") or []}
            ok = (value in options) == (op == "IN")
        else:
            target = _typed(f.get("value"), definition)
            if op == "EQ":
                ok = value == target
            elif op == "NEQ":
                ok = value != target
            elif value is None or target is None:
                ok = False
            else:
                ok = {
                    "LT": value < target,
                    "LTE": value <= target,
                    "GT": value > target,
                    "GTE": value >= target,
                }.get(op)
                if ok is None:
                    raise HsError(400, "VALIDATION_ERROR", f"operator {op!r} is not supported by the sandbox")
        if not ok:
            return False
    return True


def _sort_key(record: dict[str, Any], name: str, known: dict[str, dict[str, Any]]) -> tuple:
    value = _typed(record["properties"].get(name), known.get(name))
    return (value is None, value if value is not None else 0, int(record["id"]))


def _lookup(store: Store, obj: str, ids: list[str], id_prop: str | None) -> dict[str, dict[str, Any]]:
    if not id_prop or id_prop == "hs_object_id":
        return store.get_records(SYSTEM, obj, ids)
    wanted = set(ids)
    return {
        r["properties"].get(id_prop): r
        for r in store.scan(SYSTEM, obj, order="k")
        if r["properties"].get(id_prop) in wanted
    }


def _write(
    state: HsState, obj: str, inputs: list[dict[str, Any]], *, upsert: bool, id_prop: str | None
) -> Response:
    """Batch update/upsert: validate everything first (400 for the whole batch), then apply."""
    store = state.store
    known = catalog(store, obj)
    problems = []
    coerced: list[dict[str, str]] = []
    for n, item in enumerate(inputs):
        props = item.get("properties")
        if not isinstance(props, dict):
            raise HsError(400, "VALIDATION_ERROR", f"inputs[{n}].properties: expected an object")
        values = {}
        for name, value in props.items():
            definition = known.get(name)
            if definition is None:
                problems.append(
                    {
                        "isValid": False,
                        "message": f'Property "{name}" does not exist',
                        "error": "PROPERTY_DOESNT_EXIST",
                        "name": name,
                        "localizedErrorMessage": f'Property "{name}" does not exist',
                        "portalId": 1,
                    }
                )
                continue
            if (definition.get("modificationMetadata") or {}).get("readOnlyValue"):
                problems.append(
                    {
                        "isValid": False,
                        "message": f"{name} is a read only property; its value cannot be set.",
                        "error": "READ_ONLY_VALUE",
                        "name": name,
                    }
                )
                continue
            text, error = check_property_value(definition, value)
            if error:
                problems.append(
                    {
                        "isValid": False,
                        "message": f"{value!r} is not a valid value for {name}",
                        "error": error,
                        "name": name,
                    }
                )
                continue
            values[name] = text
        coerced.append(values)
    if problems:
        raise HsError(
            400,
            "VALIDATION_ERROR",
            f"Property values were not valid: {json.dumps(problems)}",
            errors=[
                {"message": p["message"], "code": p["error"], "context": {"propertyName": [p["name"]]}}
                for p in problems
            ],
        )
    ids = [str(i.get("id", "")) for i in inputs]
    existing = _lookup(store, obj, ids, id_prop)
    transient = state.faults.record_fails(len(inputs))
    stamp = now_ms()
    stamp_text, stamp_key = crm_views.hs_datetime(stamp), iso_ms(stamp)
    results, errors, staged = [], [], []
    next_k = store.max_k(SYSTEM, obj)
    for _item, rid, values, fail in zip(inputs, ids, coerced, transient, strict=True):
        record = existing.get(rid)
        if record is None and not upsert:
            errors.append(
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": f"Could not get some {obj[:-1].upper()} objects, they may be deleted or not exist. "
                    "Check that ids are valid.",
                    "context": {"ids": [rid]},
                }
            )
            continue
        if fail:
            errors.append(
                {
                    "status": "error",
                    "category": "INTERNAL_ERROR",
                    "subCategory": "LOCK_TIMEOUT",
                    "message": f"Concurrent modification of {obj[:-1]} {rid}; retry the request",
                    "context": {"ids": [rid]},
                }
            )
            continue
        if record is None:
            next_k += 1
            record = {
                "id": str(next_k),
                "properties": {
                    modstamp_prop(obj): stamp_text,
                    _CREATED.get(obj, "hs_createdate"): stamp_text,
                },
            }
            if id_prop:
                record["properties"][id_prop] = rid
        new_props = dict(record["properties"])
        for name, text in values.items():
            new_props[name] = text if text != "" else None
        new_props[modstamp_prop(obj)] = stamp_text
        new_props["hs_lastmodifieddate"] = stamp_text
        new = {**record, "properties": new_props}
        staged.append((new["id"], int(new["id"]), stamp_key, new))
        results.append(
            {
                "id": new["id"],
                "properties": {k: v for k, v in new_props.items() if k in values or k == "hs_object_id"},
                "createdAt": new_props.get(_CREATED.get(obj, "hs_createdate")),
                "updatedAt": stamp_text,
                "archived": False,
            }
        )
    if staged:
        store.put_records(SYSTEM, obj, staged)
        store.log_writes(SYSTEM, obj, [s[0] for s in staged], stamp_key, secrets.token_hex(8))
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": stamp_text,
        "completedAt": crm_views.hs_datetime(now_ms()),
    }
    if errors:
        body.update(numErrors=len(errors), errors=errors)
        return JSONResponse(body, status_code=207)
    return JSONResponse(body)
