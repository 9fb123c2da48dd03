"""HubSpot connector over hubspot-api-client: extract contacts and engagement; push scores.

* **Auth**: a private-app token, or OAuth with a refresh token (an expired access token, 401
  ``EXPIRED_AUTHENTICATION``, is refreshed and the call repeated).
* **Extract**: a first or full load of contacts and engagements (no watermark yet) goes
  through the CRM exports API (one export per object, associated contact ids included, a few
  calls instead of one per 100 records); if exports are off, used up (30 a day), canceled or
  failing, it lists objects with ``after`` paging instead (associations included for
  engagements). The export's task id is kept in the connector state, so a retried run polls
  the export it started instead of starting another. Incremental windows use search on ``lastmodifieddate`` /
  ``hs_lastmodifieddate`` (200 a page) and, because one search stops at 10,000 results,
  restart the search at the last stamp seen. Engagement associations come from the v4
  associations batch read. Web, form, ad, webinar and chat events come from the Event
  Analytics API (``occurredAfter``).
* **Push**: batches of 100 to ``/crm/v3/objects/contacts/batch/update``; the ``prox`` property
  group and the ProX properties are created if missing. 207 answers carry per-record errors:
  ``OBJECT_NOT_FOUND`` is a rejection, other categories are transient and retried. A whole
  batch refused with ``VALIDATION_ERROR`` is split to isolate the bad records. 429 answers are
  retried after ``Retry-After``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import shutil
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any, TypeVar

import pyarrow as pa

from plugins.crm import fields as crm_views
from plugins.crm.base import (
    BatchRejected,
    ConnectorError,
    Page,
    PushReport,
    RecordResult,
    ScoreRecord,
    StreamingSource,
    chunked,
    push_scores,
)
from plugins.crm.credentials import HubSpotCredentials
from plugins.crm.retry import FAIL, REFRESH, RETRY, Classification, RetryPolicy, call_with_retry
from plugins.crm.state import ConnectorState

T = TypeVar("T")
log = logging.getLogger(__name__)
BATCH_LIMIT = 100
EXPORT_PAGE = 1_000  # records per page read from an export file
EXPORT_REUSE_SECONDS = 24 * 3600  # an export remembered from a crashed run is reused this long
EXPORT_OBJECT_TYPE = {"contacts": "CONTACT", "emails": "EMAIL", "calls": "CALL", "meetings": "MEETING"}
EXPORT_RECORD_ID = "Record ID"
EXPORT_ASSOC_COLUMN = "Associated Contact IDs"
LIST_LIMIT = 100
SEARCH_PAGE = 200
SEARCH_MAX = 10_000
PROX_GROUP = "prox"
PROX_PROPERTIES = {
    "prox_score": {"label": "ProX score", "type": "number", "fieldType": "number"},
    "prox_tier": {
        "label": "ProX tier",
        "type": "enumeration",
        "fieldType": "select",
        "options": [{"label": t, "value": t, "displayOrder": i} for i, t in enumerate("ABCD")],
    },
    "prox_probability": {"label": "ProX conversion probability", "type": "number", "fieldType": "number"},
    "prox_reasons": {"label": "ProX reasons", "type": "string", "fieldType": "textarea"},
    "prox_model_version": {"label": "ProX model version", "type": "string", "fieldType": "text"},
    "prox_scored_at": {"label": "ProX scored at", "type": "datetime", "fieldType": "date"},
}
PERMANENT_CATEGORIES = frozenset({"OBJECT_NOT_FOUND", "VALIDATION_ERROR", "INVALID_EMAIL", "READ_ONLY_VALUE"})
_ENGAGEMENT_PROPS = {
    "emails": [
        "hs_timestamp",
        "hs_email_subject",
        "hs_email_status",
        "hs_email_direction",
        "hs_lastmodifieddate",
    ],
    "calls": ["hs_timestamp", "hs_call_title", "hs_call_status", "hs_call_duration", "hs_lastmodifieddate"],
    "meetings": [
        "hs_timestamp",
        "hs_meeting_title",
        "hs_meeting_outcome",
        "hs_meeting_start_time",
        "hs_meeting_end_time",
        "hs_lastmodifieddate",
    ],
}


def _body(exc: Any) -> dict[str, Any]:
    try:
        return json.loads(getattr(exc, "body", None) or "{}")
    except (TypeError, ValueError):
        return {}


class IncompleteAnswer(ConnectionError):
    """The answer's body was cut short (the client library returns an empty model then)."""


def classify(exc: BaseException) -> Classification:
    """Map hubspot-api-client / urllib3 failures to retry, refresh or fail."""
    import urllib3
    from hubspot.crm.contacts.exceptions import ApiException as ContactsApiException

    status = getattr(exc, "status", None)
    if isinstance(exc, ContactsApiException) or (status is not None and hasattr(exc, "body")):
        status = int(status or 0)
        if status == 429:
            if _body(exc).get("policyName") == "DAILY":
                return FAIL, None  # a daily allocation (or the exports' one) does not clear soon
            headers = getattr(exc, "headers", None) or {}
            retry_after = headers.get("Retry-After") if hasattr(headers, "get") else None
            return RETRY, float(retry_after) if retry_after else None
        if status >= 500 or status == 0:
            return RETRY, None
        if status == 401 and _body(exc).get("category") == "EXPIRED_AUTHENTICATION":
            return REFRESH, None
        return FAIL, None
    if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)):
        return RETRY, None
    return FAIL, None


class HubSpotConnector(StreamingSource):
    """Extract from and push to one HubSpot portal."""

    source = crm = "hubspot"

    def __init__(
        self,
        credentials: HubSpotCredentials,
        state: ConnectorState,
        *,
        policy: RetryPolicy | None = None,
        commit_rows: int = 5_000,
        use_exports: bool = True,
        export_poll_seconds: float = 1.0,
        export_poll_max_seconds: float = 30.0,
        export_deadline_seconds: float = 3_600.0,
    ) -> None:
        super().__init__(credentials, state, policy=policy, commit_rows=commit_rows)
        self.use_exports = use_exports
        self.export_poll_seconds = export_poll_seconds
        self.export_poll_max_seconds = export_poll_max_seconds
        self.export_deadline_seconds = export_deadline_seconds
        self.on_export_poll: Callable[[str, int], None] | None = None  # (stream, poll no.): a test hook
        self._token = credentials.access_token
        self._apis: dict[str, Any] = {}
        self._client: Any = None

    # ---- client ------------------------------------------------------------------------------
    def _hub(self) -> Any:
        if self._client is None:
            from hubspot import HubSpot
            from urllib3.util.retry import Retry

            if self._token is None:
                self.refresh()
            kwargs: dict[str, Any] = {
                "access_token": self._token,
                "host": self.credentials.url,
                "retry": Retry(total=0, redirect=0, raise_on_status=False),
            }
            if self.credentials.ca_bundle:
                kwargs["ssl_ca_cert"] = self.credentials.ca_bundle
            self._client = HubSpot(**kwargs)
            self._apis = {}
        return self._client

    def api(self, name: str) -> Any:
        """A cached API object (each attribute walk of the client builds a new HTTP pool)."""
        if name not in self._apis:
            hub = self._hub()
            target: Any = hub
            for part in name.split("."):
                target = getattr(target, part)
            self._apis[name] = target
        return self._apis[name]

    def refresh(self) -> None:
        """Exchange the refresh token for a new access token (OAuth apps only)."""
        c = self.credentials
        if not (c.refresh_token and c.client_id and c.client_secret):
            raise ConnectorError("hubspot: the access token was refused and no refresh token is configured")
        from hubspot import HubSpot

        kwargs: dict[str, Any] = {"host": c.url}
        if c.ca_bundle:
            kwargs["ssl_ca_cert"] = c.ca_bundle
        self.stats.calls += 1
        tokens = HubSpot(**kwargs).oauth.tokens_api.create(
            grant_type="refresh_token",
            client_id=c.client_id,
            client_secret=c.client_secret,
            refresh_token=c.refresh_token,
        )
        self._token = tokens.access_token
        self._client = None
        self._apis = {}

    def call(
        self,
        name: str,
        method: str,
        what: str,
        *,
        expect: str | None = "results",
        raw: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Call ``<api>.<method>(**kwargs)`` with retries (the API object is re-fetched after a refresh).

        ``raw=True`` returns the answer's JSON as dicts (``_preload_content=False``): the
        client still builds, authenticates and checks the call, but skips its model
        deserialisation, which costs about five times the HTTP exchange on large pages.
        ``expect`` names a key/attribute every complete answer has; an answer without it (a
        body cut off mid-transfer) is treated as the transient failure it is.
        """

        def attempt() -> Any:
            if raw:
                response = getattr(self.api(name), method)(_preload_content=False, **kwargs)
                try:
                    body = response.data
                    answer = json.loads(body) if body else {}
                except (ValueError, OSError) as exc:
                    raise IncompleteAnswer(
                        f"hubspot {what}: incomplete answer ({exc}); connection cut?"
                    ) from None
                finally:
                    response.release_conn()
                if (expect is not None and not isinstance(answer, dict)) or (expect and expect not in answer):
                    raise IncompleteAnswer(
                        f"hubspot {what}: incomplete answer (no {expect!r}); connection cut?"
                    )
                return answer
            answer = getattr(self.api(name), method)(**kwargs)
            if expect is not None and getattr(answer, expect, None) is None:
                raise IncompleteAnswer(f"hubspot {what}: incomplete answer (no {expect!r}); connection cut?")
            return answer

        try:
            return call_with_retry(
                attempt, classify, self.policy, self.stats, what=what, refresh=self.refresh
            )
        except Exception as exc:
            if getattr(exc, "status", None) == 401:
                raise ConnectorError(
                    f"hubspot {what}: 401 {_body(exc).get('message', 'unauthorized')}"
                ) from None
            raise

    def download(self, url: str, what: str) -> IO[bytes]:
        """GET a signed file URL (retried like API calls) into a temporary file: the exports
        API client's connection pool, so the same CA bundle and TLS settings, no token."""
        pool = self.api("crm.exports.public_exports_api").api_client.rest_client.pool_manager

        def attempt() -> IO[bytes]:
            response = pool.request("GET", url, preload_content=False, timeout=300.0, retries=False)
            try:
                if response.status != 200:
                    raise DownloadFailed(response.status, response.read(500), response.headers)
                spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 - returned open
                try:
                    shutil.copyfileobj(response, spool)
                    expected = response.headers.get("Content-Length")
                    if expected is not None and spool.tell() != int(expected):
                        raise IncompleteAnswer(f"hubspot {what}: {spool.tell()} of {expected} bytes")
                except BaseException:
                    spool.close()
                    raise
                spool.seek(0)
                return spool
            finally:
                response.release_conn()

        return call_with_retry(attempt, classify, self.policy, self.stats, what=what)

    # ---- extraction --------------------------------------------------------------------------------
    def streams(self, table: str) -> list[Any]:
        if table == "raw_leads":
            return [_ObjectStream(self, "contacts", table)]
        if table == "activities":
            return [_ObjectStream(self, o, table) for o in ("emails", "calls", "meetings")] + [
                _EventStream(self)
            ]
        raise ValueError(f"unknown table {table!r}; expected raw_leads or activities")

    # ---- push ----------------------------------------------------------------------------------------
    def push(self, scores: pa.Table, *, full: bool = False, run_id: str | None = None) -> PushReport:
        return push_scores(_HubSpotSender(self), self.state, scores, full=full, run_id=run_id)

    def ensure_properties(self) -> None:
        """Create the ``prox`` property group and the ProX contact properties if missing."""
        _HubSpotSender(self).prepare()


def _api_of(obj: str, kind: str) -> str:
    return f"crm.contacts.{kind}" if obj == "contacts" else f"crm.objects.{obj}.{kind}"


class _ObjectStream:
    def __init__(self, conn: HubSpotConnector, obj: str, table: str) -> None:
        self.conn, self.obj, self.table = conn, obj, table
        self.name = f"hubspot.{obj}"
        self.stamp_prop = "lastmodifieddate" if obj == "contacts" else "hs_lastmodifieddate"
        self.props = crm_views.HS_CONTACT_PROPERTIES if obj == "contacts" else _ENGAGEMENT_PROPS[obj]

    def _rows(self, records: list[dict[str, Any]]) -> pa.Table:
        if self.obj == "contacts":
            return crm_views.leads_from_hubspot(records)
        return crm_views.activities_from_hubspot_objects(records, self.obj)

    def _page(self, records: list[dict[str, Any]], resume: dict[str, Any]) -> Page:
        return Page(
            self._rows(records),
            [r["id"] for r in records],
            [_iso(r["properties"].get(self.stamp_prop)) for r in records],
            resume,
        )

    def pages(self, since: str | None, resume: dict[str, Any] | None) -> Iterator[Page]:
        mode = (resume or {}).get("mode")
        if mode == "export" or (since is None and resume is None and self.conn.use_exports):
            yield from self._export(resume)
        elif since is None or mode == "list":
            yield from self._list(resume)
        else:
            yield from self._search(since)

    # ---- first load through the CRM exports API --------------------------------------------------
    def _export(self, resume: dict[str, Any] | None) -> Iterator[Page]:
        """All records from one export file, pages of EXPORT_PAGE; the list API if the export
        cannot be had. Pages resume at a row of the same export (its task id in ``resume``)."""
        if resume is not None and resume.get("done"):
            return
        task_id = (resume or {}).get("task")
        skip = int((resume or {}).get("row", 0))
        try:
            if task_id is None:
                task_id = _pending_export(self.conn.state, self.name) or self._start_export()
            file = self._download(task_id)
        except ExportUnavailable as exc:
            log.warning("hubspot %s: no export (%s); reading with the list API instead", self.obj, exc)
            _forget_export(self.conn.state, self.name)
            yield from self._list(None)  # rows already committed from the export are deduplicated
            return
        with file:
            records = _export_records(file, self.props, self.obj != "contacts")
            row, held = 0, None
            for chunk in _chunks(records, EXPORT_PAGE):
                row += len(chunk)
                if row <= skip:
                    continue
                if row - len(chunk) < skip:
                    chunk = chunk[skip - (row - len(chunk)) :]
                if held is not None:
                    yield self._page(held[0], {"mode": "export", "task": task_id, "row": held[1]})
                held = (chunk, row)
            if held is not None:
                yield self._page(held[0], {"mode": "export", "task": task_id, "row": held[1], "done": True})
        _forget_export(self.conn.state, self.name)
        log.info("hubspot %s: first load read %d records from export %s", self.obj, row, task_id)

    def _start_export(self) -> str:
        from hubspot.crm.exports import PublicExportViewRequest

        request = PublicExportViewRequest(
            export_type="VIEW",
            format="CSV",
            export_name=f"prox-{self.obj}-{uuid.uuid4().hex[:12]}",
            object_type=EXPORT_OBJECT_TYPE[self.obj],
            object_properties=list(self.props),
            language="EN",
            export_internal_values_options=["NAMES", "VALUES"],
            associated_object_type=None if self.obj == "contacts" else "CONTACT",
            override_associated_objects_per_definition_per_row_limit=self.obj != "contacts",
        )
        answer = self._exports_call(
            "start", f"start export of {self.obj}", "id", public_export_request=request
        )
        task_id = str(answer["id"])
        _remember_export(self.conn.state, self.name, task_id)
        log.info("hubspot %s: started export %s", self.obj, task_id)
        return task_id

    def _exports_call(self, method: str, what: str, expect: str, **kwargs: Any) -> dict[str, Any]:
        """One call of the exports API; what the connector cannot retry away (quota, refusal)
        becomes ExportUnavailable, so the caller falls back to pages."""
        try:
            return self.conn.call(
                "crm.exports.public_exports_api", method, what, expect=expect, raw=True, **kwargs
            )
        except ConnectorError:
            raise
        except Exception as exc:
            raise ExportUnavailable(_why(exc, "start" if method == "start" else "status")) from None

    def _await(self, task_id: str) -> str:
        """Poll the export's status with bounded exponential backoff until it is complete
        (its download URL) or canceled, failing or past the deadline (ExportUnavailable)."""
        conn = self.conn
        delay, deadline, polls = conn.export_poll_seconds, time.monotonic() + conn.export_deadline_seconds, 0
        while True:
            answer = self._exports_call(
                "get_status", f"status of the {self.obj} export", "status", task_id=task_id
            )
            polls += 1
            if conn.on_export_poll is not None:
                conn.on_export_poll(self.name, polls)
            status = answer["status"]
            if status == "COMPLETE" and answer.get("result"):
                return str(answer["result"])
            if status not in ("PENDING", "PROCESSING"):
                raise ExportUnavailable(f"export {task_id} ended {status}")
            if time.monotonic() + delay > deadline:
                raise ExportUnavailable(
                    f"export {task_id} still {status} after {conn.export_deadline_seconds:.0f} s"
                )
            time.sleep(delay)
            delay = min(delay * 2, conn.export_poll_max_seconds)

    def _download(self, task_id: str) -> IO[bytes]:
        """The export file in a temporary file, fetched over the client's own TLS pool (the
        URL is signed, so no token is sent); an expired URL is asked for again once."""
        for attempt in (1, 2):
            url = self._await(task_id)
            try:
                return self.conn.download(url, f"download of the {self.obj} export")
            except ConnectorError:
                raise
            except Exception as exc:
                if attempt == 2 or getattr(exc, "status", None) not in (403, 404):
                    raise ExportUnavailable(_why(exc, "download")) from None
        raise AssertionError("unreachable")

    def _list(self, resume: dict[str, Any] | None) -> Iterator[Page]:
        after = (resume or {}).get("after")
        if resume is not None and after is None:
            return
        assoc = None if self.obj == "contacts" else ["contacts"]
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_LIMIT, "properties": self.props}
            if after:
                kwargs["after"] = after
            if assoc:
                kwargs["associations"] = assoc
            page = self.conn.call(
                _api_of(self.obj, "basic_api"), "get_page", f"list {self.obj}", raw=True, **kwargs
            )
            records = [_record(r) for r in page["results"]]
            after = _next(page)
            if records:
                yield self._page(records, {"mode": "list", "after": after})
            if not after:
                return

    def _search(self, since: str) -> Iterator[Page]:
        """Search ``stamp >= since`` ascending; past 10,000 results restart at the last stamp."""
        from hubspot.crm.contacts import PublicObjectSearchRequest

        start, seen_at_start = since, set()
        while True:
            offset, last_stamp, ids_at_last = 0, start, set()
            while True:
                request = PublicObjectSearchRequest(
                    filter_groups=[
                        {
                            "filters": [
                                {
                                    "propertyName": self.stamp_prop,
                                    "operator": "GTE",
                                    "value": str(_epoch_ms(start)),
                                }
                            ]
                        }
                    ],
                    sorts=[{"propertyName": self.stamp_prop, "direction": "ASCENDING"}],
                    properties=self.props,
                    limit=SEARCH_PAGE,
                    after=str(offset) if offset else None,
                )
                result = self.conn.call(
                    _api_of(self.obj, "search_api"),
                    "do_search",
                    f"search {self.obj}",
                    raw=True,
                    public_object_search_request=request,
                )
                records = [_record(r) for r in result["results"]]
                records = [
                    r
                    for r in records
                    if not (_iso(r["properties"].get(self.stamp_prop)) == start and r["id"] in seen_at_start)
                ]
                if self.obj != "contacts" and records:
                    self._associate(records)
                for r in records:
                    stamp = _iso(r["properties"].get(self.stamp_prop))
                    if stamp > last_stamp:
                        last_stamp, ids_at_last = stamp, {r["id"]}
                    elif stamp == last_stamp:
                        ids_at_last.add(r["id"])
                if records:
                    yield self._page(records, {"mode": "search"})
                nxt = _next(result)
                if not nxt:
                    return
                offset = int(nxt)
                if offset + SEARCH_PAGE > SEARCH_MAX:
                    break
            if last_stamp == start and ids_at_last <= seen_at_start:
                raise ConnectorError(
                    f"hubspot search {self.obj}: more than {SEARCH_MAX} records share the stamp "
                    f"{start}; cannot page past them"
                )
            start, seen_at_start = last_stamp, ids_at_last | (seen_at_start if last_stamp == start else set())

    def _associate(self, records: list[dict[str, Any]]) -> None:
        from hubspot.crm.associations.v4.models import BatchInputPublicFetchAssociationsBatchRequest

        request = BatchInputPublicFetchAssociationsBatchRequest(inputs=[{"id": r["id"]} for r in records])
        answer = self.conn.call(
            "crm.associations.v4.batch_api",
            "get_page",
            f"associations of {self.obj}",
            raw=True,
            from_object_type=self.obj,
            to_object_type="contacts",
            batch_input_public_fetch_associations_batch_request=request,
        )
        linked: dict[str, list[str]] = {}
        for res in answer["results"]:
            linked[str(res["from"]["id"])] = [str(t["toObjectId"]) for t in res.get("to") or []]
        for r in records:
            r["contacts"] = linked.get(r["id"], [])


class _EventStream:
    name = "hubspot.events"
    table = "activities"

    def __init__(self, conn: HubSpotConnector) -> None:
        self.conn = conn

    def pages(self, since: str | None, resume: dict[str, Any] | None) -> Iterator[Page]:
        after = (resume or {}).get("after")
        if resume is not None and after is None:
            return
        while True:
            kwargs: dict[str, Any] = {"object_type": "contact", "limit": 100, "sort": ["ASCENDING"]}
            if since is not None and not after:
                kwargs["occurred_after"] = _minus_ms(since)
            if after:
                kwargs["after"] = after
                if since is not None:
                    kwargs["occurred_after"] = _minus_ms(since)
            page = self.conn.call("events.events_api", "get_page", "events", raw=True, **kwargs)
            events = [
                {
                    "id": str(e["id"]),
                    "objectId": str(e["objectId"]),
                    "eventType": e["eventType"],
                    "occurredAt": _iso(e["occurredAt"]),
                    "properties": e.get("properties") or {},
                }
                for e in page["results"]
            ]
            after = _next(page)
            if events:
                yield Page(
                    crm_views.activities_from_hubspot_events(events),
                    [e["id"] for e in events],
                    [e["occurredAt"] for e in events],
                    {"after": after},
                )
            if not after:
                return


class ExportUnavailable(Exception):
    """No export to read (quota used up, canceled, failing, too slow): use the list API."""


class DownloadFailed(Exception):
    """A non-200 answer to a file download (``status``/``body``/``headers`` as ApiException)."""

    def __init__(self, status: int, body: bytes, headers: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.body, self.headers = status, body.decode("utf-8", "replace"), headers


def _why(exc: BaseException, step: str) -> str:
    body = _body(exc)
    status = getattr(exc, "status", None)
    detail = body.get("message") or type(exc).__name__
    return f"{step} failed: {status or ''} {detail}".replace("  ", " ")


_EXPORTS_DDL = (
    "CREATE TABLE IF NOT EXISTS hubspot_exports "
    "(stream TEXT PRIMARY KEY, task_id TEXT NOT NULL, started_at REAL NOT NULL)"
)


def _pending_export(state: ConnectorState, stream: str) -> str | None:
    """The export a crashed run of ``stream`` started (recently), to poll instead of starting one."""
    with state.tx() as db:
        db.execute(_EXPORTS_DDL)
        row = db.execute(
            "SELECT task_id, started_at FROM hubspot_exports WHERE stream=?", (stream,)
        ).fetchone()
    if row is None or row[1] < time.time() - EXPORT_REUSE_SECONDS:
        return None
    return str(row[0])


def _remember_export(state: ConnectorState, stream: str, task_id: str) -> None:
    with state.tx() as db:
        db.execute(_EXPORTS_DDL)
        db.execute(
            "INSERT OR REPLACE INTO hubspot_exports (stream, task_id, started_at) VALUES (?,?,?)",
            (stream, task_id, time.time()),
        )


def _forget_export(state: ConnectorState, stream: str) -> None:
    with state.tx() as db:
        db.execute(_EXPORTS_DDL)
        db.execute("DELETE FROM hubspot_exports WHERE stream=?", (stream,))


def _export_records(file: IO[bytes], props: Sequence[str], engagement: bool) -> Iterator[dict[str, Any]]:
    """Records ({"id", "properties", "contacts"}, as the list path builds them) from an export
    file: a CSV, or a zip of CSVs (large exports). Empty cells are unset properties."""
    head = file.read(4)
    file.seek(0)
    if head == b"PK\x03\x04":
        with zipfile.ZipFile(file) as zf:
            for name in sorted(n for n in zf.namelist() if n.lower().endswith(".csv")):
                with zf.open(name) as member:
                    yield from _csv_records(member, props, engagement)
    else:
        yield from _csv_records(file, props, engagement)


def _csv_records(raw: IO[bytes], props: Sequence[str], engagement: bool) -> Iterator[dict[str, Any]]:
    reader = csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8-sig", newline=""))
    missing = [p for p in (EXPORT_RECORD_ID, *props) if p not in (reader.fieldnames or [])]
    if missing:
        raise ConnectorError(f"hubspot export: columns missing from the file: {', '.join(missing)}")
    for row in reader:
        rid = str(row[EXPORT_RECORD_ID])
        properties = {p: (row[p] if row[p] != "" else None) for p in props}
        properties["hs_object_id"] = rid
        contacts = [c for c in (row.get(EXPORT_ASSOC_COLUMN) or "").split(";") if c] if engagement else []
        yield {"id": rid, "properties": properties, "contacts": contacts}


def _chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _record(obj: dict[str, Any]) -> dict[str, Any]:
    out = {"id": str(obj["id"]), "properties": dict(obj.get("properties") or {})}
    assoc = (obj.get("associations") or {}).get("contacts")
    out["contacts"] = [str(a["id"]) for a in assoc["results"]] if assoc else []
    return out


def _next(page: dict[str, Any]) -> str | None:
    return ((page.get("paging") or {}).get("next") or {}).get("after")


def _iso(value: Any) -> str:
    """A stamp (ISO text or datetime) as fixed-width UTC ISO with milliseconds and 'Z'."""
    if value is None:
        return ""
    moment = value if isinstance(value, dt.datetime) else crm_views.parse_datetime(str(value))
    return crm_views.hs_datetime(moment) or ""


def _epoch_ms(stamp: str) -> int:
    moment = crm_views.parse_datetime(stamp)
    assert moment is not None
    return (moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def _minus_ms(stamp: str) -> dt.datetime:
    moment = crm_views.parse_datetime(stamp)
    assert moment is not None
    return moment - dt.timedelta(milliseconds=1)


def _prop_values(rec: ScoreRecord) -> dict[str, str]:
    return {
        "prox_score": str(rec.score),
        "prox_tier": rec.tier,
        "prox_probability": repr(rec.probability),
        "prox_reasons": rec.reasons,
        "prox_model_version": rec.model_version,
        "prox_scored_at": crm_views.hs_datetime(rec.scored_at) or "",
    }


class _HubSpotSender:
    crm = "hubspot"

    def __init__(self, conn: HubSpotConnector) -> None:
        self.conn = conn
        self.stats = conn.stats

    def prepare(self) -> None:
        """Create the ``prox`` group and any missing ProX property (idempotent)."""
        from hubspot.crm.properties import PropertyCreate, PropertyGroupCreate

        conn = self.conn
        groups = conn.call("crm.properties.groups_api", "get_all", "property groups", object_type="contacts")
        if PROX_GROUP not in {g.name for g in groups.results}:
            try:
                conn.call(
                    "crm.properties.groups_api",
                    "create",
                    "create property group",
                    expect="name",
                    object_type="contacts",
                    property_group_create=PropertyGroupCreate(
                        name=PROX_GROUP, label="ProX", display_order=-1
                    ),
                )
            except Exception as exc:
                if getattr(exc, "status", None) != 409:  # created meanwhile (or by a lost answer)
                    raise
        existing = conn.call("crm.properties.core_api", "get_all", "properties", object_type="contacts")
        have = {p.name for p in existing.results}
        for name, spec in PROX_PROPERTIES.items():
            if name in have:
                continue
            try:
                conn.call(
                    "crm.properties.core_api",
                    "create",
                    f"create property {name}",
                    expect="name",
                    object_type="contacts",
                    property_create=PropertyCreate(
                        name=name,
                        group_name=PROX_GROUP,
                        **{
                            "label": spec["label"],
                            "type": spec["type"],
                            "field_type": spec["fieldType"],
                            "options": spec.get("options"),
                        },
                    ),
                )
            except Exception as exc:
                if getattr(exc, "status", None) != 409:
                    raise

    def plan(self, records: Sequence[ScoreRecord]) -> list[list[ScoreRecord]]:
        return chunked(records, BATCH_LIMIT)

    def send(self, batch: Sequence[ScoreRecord]) -> list[RecordResult]:
        from hubspot.crm.contacts import BatchInputSimplePublicObjectBatchInput, SimplePublicObjectBatchInput

        request = BatchInputSimplePublicObjectBatchInput(
            inputs=[SimplePublicObjectBatchInput(id=r.crm_id, properties=_prop_values(r)) for r in batch]
        )
        try:
            answer = self.conn.call(
                "crm.contacts.batch_api",
                "update",
                f"batch update of {len(batch)} contacts",
                raw=True,
                batch_input_simple_public_object_batch_input=request,
            )
        except Exception as exc:
            status = getattr(exc, "status", None)
            if status == 400:
                body = _body(exc)
                message = body.get("message", "")
                if "PROPERTY_DOESNT_EXIST" in message:
                    raise ConnectorError(f"hubspot: {message}") from None
                raise BatchRejected(f"{body.get('category', 'VALIDATION_ERROR')}: {message}") from None
            raise
        by_crm = {r.crm_id: r.lead_id for r in batch}
        results = [
            RecordResult(by_crm[str(o["id"])], ok=True) for o in answer["results"] if str(o["id"]) in by_crm
        ]
        for err in answer.get("errors") or []:
            category = err.get("category") or "UNKNOWN"
            for crm_id in (err.get("context") or {}).get("ids", []):
                if crm_id in by_crm:
                    results.append(
                        RecordResult(
                            by_crm[crm_id],
                            ok=False,
                            transient=category not in PERMANENT_CATEGORIES,
                            reason=f"{category}: {err.get('message', '')}",
                        )
                    )
        return results
