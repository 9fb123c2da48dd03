"""Salesforce connector over simple-salesforce: extract Leads, Tasks and Events; push scores.

* **Auth**: the OAuth2 client-credentials flow (or username-password when a username is
  given) against ``<url>/services/oauth2/token``; an expired session (401
  ``INVALID_SESSION_ID``) is refreshed and the call repeated.
* **Extract**: incremental windows use REST ``query``/``queryMore`` (``WHERE SystemModstamp >=
  <watermark> ORDER BY SystemModstamp, Id``, 2,000 rows a page); a full refresh uses a Bulk
  API 2.0 query job read page by page (``Sforce-Locator``), resumable from the last locator.
* **Push**: sObject Collections (200 records a call, ``allOrNone=false``) up to
  ``bulk_threshold`` records, Bulk API 2.0 ``update`` jobs above it. ``UNABLE_TO_LOCK_ROW``
  is transient (retried); other per-record errors are rejections with the CRM's reason.
  ``REQUEST_LIMIT_EXCEEDED`` stops the push (the daily allocation is spent).

The same code talks to a real org: only the credentials' URL and secrets differ.
"""

from __future__ import annotations

import contextlib
import csv
import io
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import pyarrow as pa

from plugins.crm import fields as crm_views
from plugins.crm.base import (
    BatchRejected,
    ConnectorError,
    Page,
    PushReport,
    RateLimitExhausted,
    RecordResult,
    ScoreRecord,
    StreamingSource,
    chunked,
    push_scores,
)
from plugins.crm.credentials import SalesforceCredentials
from plugins.crm.retry import FAIL, REFRESH, RETRY, Classification, RetryPolicy, call_with_retry
from plugins.crm.state import ConnectorState

T = TypeVar("T")
COLLECTION_LIMIT = 200
PROX_FIELDS = (
    "ProX_Score__c",
    "ProX_Tier__c",
    "ProX_Probability__c",
    "ProX_Reasons__c",
    "ProX_Model_Version__c",
    "ProX_Scored_At__c",
)
TRANSIENT_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG"})
CONFIG_CODES = frozenset(
    {"INVALID_FIELD", "INVALID_TYPE", "EXCEEDED_ID_LIMIT", "FEATURENOTENABLED", "NOT_FOUND"}
)


def _error_code(exc: Any) -> tuple[str, str]:
    content = getattr(exc, "content", None)
    if isinstance(content, list) and content and isinstance(content[0], dict):
        return str(content[0].get("errorCode", "")), str(content[0].get("message", ""))
    return "", str(content or exc)


def classify(exc: BaseException) -> Classification:
    """Map a simple-salesforce / requests failure to retry, refresh or fail."""
    import requests
    from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

    if isinstance(exc, SalesforceExpiredSession):
        return REFRESH, None
    if isinstance(exc, SalesforceError):
        status = int(exc.status or 0)
        if status == 429 or status >= 500:
            return RETRY, None
        return FAIL, None
    if isinstance(
        exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)
    ):
        return RETRY, None
    return FAIL, None


class SalesforceConnector(StreamingSource):
    """Extract from and push to one Salesforce org."""

    source = crm = "salesforce"

    def __init__(
        self,
        credentials: SalesforceCredentials,
        state: ConnectorState,
        *,
        policy: RetryPolicy | None = None,
        bulk_threshold: int = 2_000,
        bulk_batch_size: int = 10_000,
        page_size: int = 2_000,
        bulk_query_page: int = 10_000,
        bulk_poll_seconds: float = 1.0,
        commit_rows: int = 5_000,
    ) -> None:
        super().__init__(credentials, state, policy=policy, commit_rows=commit_rows)
        self.bulk_threshold = bulk_threshold
        self.bulk_batch_size = bulk_batch_size
        self.page_size = page_size
        self.bulk_query_page = bulk_query_page
        self.bulk_poll_seconds = bulk_poll_seconds
        self._session: Any = None
        self._sf: Any = None

    # ---- session ---------------------------------------------------------------------------
    def _http(self) -> Any:
        if self._session is None:
            import requests

            session = requests.Session()
            session.trust_env = False  # REQUESTS_CA_BUNDLE / proxies from the environment must not win
            session.verify = self.credentials.ca_bundle or True
            self._session = session
        return self._session

    def login(self) -> None:
        """Get an access token (client credentials, or username-password) and build the client."""
        from simple_salesforce import Salesforce

        c = self.credentials
        data = {"client_id": c.client_id, "client_secret": c.client_secret}
        if c.username:
            data.update(grant_type="password", username=c.username, password=c.password or "")
        else:
            data["grant_type"] = "client_credentials"
        self.stats.calls += 1
        response = self._http().post(f"{c.url}/services/oauth2/token", data=data, timeout=60)
        if response.status_code != 200:
            try:
                body = response.json()
                why = f"{body.get('error')}: {body.get('error_description')}"
            except ValueError:
                why = f"HTTP {response.status_code}"
            raise ConnectorError(f"Salesforce login to {c.url} failed: {why}")
        token = response.json()
        self._sf = Salesforce(
            instance_url=token["instance_url"],
            session_id=token["access_token"],
            session=self._http(),
            version=c.api_version,
        )

    @property
    def sf(self) -> Any:
        if self._sf is None:
            call_with_retry(
                self.login,
                _login_classify,
                self.policy,
                self.stats,
                what="salesforce login",
                count_calls=False,
            )
        return self._sf

    def call(self, fn: Callable[[Any], T], what: str) -> T:
        """One API call with retries; ``fn`` gets the current client (rebuilt after a refresh)."""
        from simple_salesforce.exceptions import SalesforceRefusedRequest

        client = self.sf
        try:
            return call_with_retry(
                lambda: fn(self._sf or client),
                classify,
                self.policy,
                self.stats,
                what=what,
                refresh=self.login,
            )
        except SalesforceRefusedRequest as exc:
            code, message = _error_code(exc)
            if code == "REQUEST_LIMIT_EXCEEDED":
                raise RateLimitExhausted(f"salesforce: {code}: {message} ({what})") from None
            raise ConnectorError(f"salesforce {what}: {code or 'HTTP 403'}: {message}") from None

    # ---- extraction ------------------------------------------------------------------------
    def streams(self, table: str) -> list[Any]:
        if table == "raw_leads":
            return [_SoqlStream(self, "Lead", crm_views.SF_LEAD_FIELDS, table)]
        if table == "activities":
            return [
                _SoqlStream(self, "Task", crm_views.SF_TASK_FIELDS, table),
                _SoqlStream(self, "Event", crm_views.SF_EVENT_FIELDS, table),
            ]
        raise ValueError(f"unknown table {table!r}; expected raw_leads or activities")

    # ---- push ------------------------------------------------------------------------------
    def push(self, scores: pa.Table, *, full: bool = False, run_id: str | None = None) -> PushReport:
        return push_scores(_SalesforceSender(self), self.state, scores, full=full, run_id=run_id)


def _login_classify(exc: BaseException) -> Classification:
    if isinstance(exc, ConnectorError):
        return FAIL, None
    return classify(exc)


class _SoqlStream:
    def __init__(self, conn: SalesforceConnector, obj: str, fields: list[str], table: str) -> None:
        self.conn, self.obj, self.fields, self.table = conn, obj, fields, table
        self.name = f"salesforce.{obj}"

    def _rows(self, records: list[dict[str, Any]]) -> pa.Table:
        if self.obj == "Lead":
            return crm_views.leads_from_salesforce(records)
        return crm_views.activities_from_salesforce(records, self.obj)

    def pages(self, since: str | None, resume: dict[str, Any] | None) -> Iterator[Page]:
        if (resume and resume.get("job")) or (since is None and resume is None):
            # a full read goes through a Bulk API 2.0 query job; its pages are in no particular
            # order, so a resumed read continues the same job at its locator, whatever ``since``
            yield from self._bulk_pages(resume)
            return
        soql = f"SELECT {', '.join(self.fields)} FROM {self.obj}"
        if since is not None:
            soql += f" WHERE SystemModstamp >= {since}"
        soql += " ORDER BY SystemModstamp, Id"
        headers = {"Sforce-Query-Options": f"batchSize={self.conn.page_size}"}
        result = self.conn.call(lambda sf: sf.query(soql, headers=headers), f"query {self.obj}")
        while True:
            records = [dict(r) for r in result["records"]]
            if records:
                yield Page(
                    self._rows(records),
                    [r["Id"] for r in records],
                    [_z(r["SystemModstamp"]) for r in records],
                    {"mode": "rest"},
                )
            if result.get("done", True):
                return
            nxt = result["nextRecordsUrl"]
            result = self.conn.call(
                lambda sf, n=nxt: sf.query_more(n, identifier_is_url=True, headers=headers),
                f"queryMore {self.obj}",
            )

    def _bulk_pages(self, resume: dict[str, Any] | None) -> Iterator[Page]:
        """Full extraction through a Bulk API 2.0 query job, resumable at its locator."""
        from simple_salesforce.bulk2 import Operation

        conn = self.conn
        soql = f"SELECT {', '.join(self.fields)} FROM {self.obj}"
        client = lambda sf: getattr(sf.bulk2, self.obj)._client  # noqa: E731
        if resume and resume.get("job"):
            job_id, locator = resume["job"], resume.get("locator") or ""
            if not locator:
                return
        else:
            job = conn.call(lambda sf: client(sf).create_job(Operation.query, soql), f"bulk query {self.obj}")
            job_id, locator = job["id"], ""
            self._wait(job_id, is_query=True)
        while True:
            res = conn.call(
                lambda sf, loc=locator: client(sf).get_query_results(job_id, loc, conn.bulk_query_page),
                f"bulk query results {self.obj}",
            )
            reader = csv.DictReader(io.StringIO(res["records"]))
            records = [{k: (v if v != "" else None) for k, v in row.items()} for row in reader]
            locator = res["locator"]
            if records:
                yield Page(
                    self._rows(records),
                    [r["Id"] for r in records],
                    [_z(r["SystemModstamp"]) for r in records],
                    {"job": job_id, "locator": locator},
                )
            if not locator:
                return

    def _wait(self, job_id: str, *, is_query: bool) -> dict[str, Any]:
        return _wait_job(self.conn, self.obj, job_id, is_query=is_query)


def _wait_job(conn: SalesforceConnector, obj: str, job_id: str, *, is_query: bool) -> dict[str, Any]:
    """Poll a Bulk API 2.0 job until it ends (the poll interval grows to ``bulk_poll_seconds``)."""
    delay = 0.0
    while True:
        info = conn.call(
            lambda sf: getattr(sf.bulk2, obj)._client.get_job(job_id, is_query), f"bulk job {job_id}"
        )
        if info["state"] in ("JobComplete", "Failed", "Aborted"):
            return info
        delay = min(conn.bulk_poll_seconds, delay * 2 or 0.05)
        conn.policy.sleep(delay)


def _z(stamp: str) -> str:
    """Salesforce datetime text in the fixed-width 'Z' form the watermarks compare."""
    stamp = stamp.replace("+0000", "Z")
    return stamp if "." in stamp else stamp.replace("Z", ".000Z")


def _field_values(rec: ScoreRecord) -> dict[str, Any]:
    return {
        "ProX_Score__c": rec.score,
        "ProX_Tier__c": rec.tier,
        "ProX_Probability__c": rec.probability,
        "ProX_Reasons__c": rec.reasons,
        "ProX_Model_Version__c": rec.model_version,
        "ProX_Scored_At__c": crm_views.sf_datetime(rec.scored_at),
    }


class _SalesforceSender:
    crm = "salesforce"

    def __init__(self, conn: SalesforceConnector) -> None:
        self.conn = conn
        self.stats = conn.stats

    def prepare(self) -> None:
        describe = self.conn.call(lambda sf: sf.Lead.describe(), "describe Lead")
        fields = {f["name"]: f for f in describe["fields"]}
        missing = [f for f in PROX_FIELDS if f not in fields]
        if missing:
            raise ConnectorError(
                f"salesforce: the Lead object lacks the ProX fields {', '.join(missing)}; deploy "
                "them (see ARCHITECTURE.md, 'Fields written to the CRMs') before pushing"
            )
        locked = [f for f in PROX_FIELDS if not fields[f].get("updateable")]
        if locked:
            raise ConnectorError(f"salesforce: ProX fields not writable by this user: {', '.join(locked)}")

    def plan(self, records: Sequence[ScoreRecord]) -> list[list[ScoreRecord]]:
        size = COLLECTION_LIMIT if len(records) <= self.conn.bulk_threshold else self.conn.bulk_batch_size
        return chunked(records, size)

    def send(self, batch: Sequence[ScoreRecord]) -> list[RecordResult]:
        if len(batch) <= COLLECTION_LIMIT:
            return self._collections(batch)
        return self._bulk(batch)

    def _collections(self, batch: Sequence[ScoreRecord]) -> list[RecordResult]:
        from simple_salesforce.exceptions import SalesforceMalformedRequest

        body = {
            "allOrNone": False,
            "records": [{"attributes": {"type": "Lead"}, "id": r.crm_id, **_field_values(r)} for r in batch],
        }
        try:
            answer = self.conn.call(
                lambda sf: sf.restful("composite/sobjects", method="PATCH", json=body),
                f"collections update of {len(batch)} Leads",
            )
        except SalesforceMalformedRequest as exc:
            code, message = _error_code(exc)
            if code in CONFIG_CODES:
                raise ConnectorError(f"salesforce: {code}: {message}") from None
            raise BatchRejected(f"{code}: {message}") from None
        if not isinstance(answer, list):
            raise ConnectorError(f"salesforce collections update: unexpected answer {str(answer)[:300]}")
        results = []
        for rec, res in zip(batch, answer, strict=False):
            if res.get("success"):
                results.append(RecordResult(rec.lead_id, ok=True))
                continue
            err = (res.get("errors") or [{}])[0]
            code = err.get("statusCode", "UNKNOWN")
            results.append(
                RecordResult(
                    rec.lead_id,
                    ok=False,
                    transient=code in TRANSIENT_CODES,
                    reason=f"{code}: {err.get('message', '')}",
                )
            )
        return results

    def _bulk(self, batch: Sequence[ScoreRecord]) -> list[RecordResult]:
        from simple_salesforce.bulk2 import Operation
        from simple_salesforce.exceptions import SalesforceMalformedRequest

        conn = self.conn
        client = lambda sf: sf.bulk2.Lead._client  # noqa: E731
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["Id", *PROX_FIELDS])
        by_crm_id = {}
        for rec in batch:
            values = _field_values(rec)
            writer.writerow([rec.crm_id, *[_csv(values[f]) for f in PROX_FIELDS]])
            by_crm_id[rec.crm_id] = rec.lead_id
        job = conn.call(lambda sf: client(sf).create_job(Operation.update), "bulk ingest create")
        job_id = job["id"]
        conn.call(
            lambda sf: client(sf).upload_job_data(job_id, out.getvalue()), f"bulk ingest upload {job_id}"
        )
        # a retried close after a lost answer finds the job already closed; the poll tells
        with contextlib.suppress(SalesforceMalformedRequest):
            conn.call(lambda sf: client(sf).close_job(job_id), f"bulk ingest close {job_id}")
        info = _wait_job(conn, "Lead", job_id, is_query=False)
        if info["state"] != "JobComplete":
            raise ConnectorError(
                f"salesforce bulk job {job_id} ended {info['state']}: {info.get('errorMessage')}"
            )
        ok_csv = conn.call(
            lambda sf: client(sf).get_ingest_results(job_id, "successfulResults"), "bulk results"
        )
        failed_csv = conn.call(
            lambda sf: client(sf).get_ingest_results(job_id, "failedResults"), "bulk failures"
        )
        results = []
        for row in csv.DictReader(io.StringIO(ok_csv)):
            lead = by_crm_id.get(row.get("Id") or row.get("sf__Id", ""))
            if lead:
                results.append(RecordResult(lead, ok=True))
        for row in csv.DictReader(io.StringIO(failed_csv)):
            lead = by_crm_id.get(row.get("Id") or row.get("sf__Id", ""))
            if not lead:
                continue
            error = row.get("sf__Error", "")
            code = error.split(":", 1)[0]
            results.append(
                RecordResult(lead, ok=False, transient=code in TRANSIENT_CODES, reason=error.rstrip("-"))
            )
        return results  # records in neither file (unprocessed) get re-sent by the engine


def _csv(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)
