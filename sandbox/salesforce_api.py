"""The Salesforce subset ProX uses, over HTTPS, answering like the real REST and Bulk 2.0 APIs.

Endpoints (``v<NN.N>`` is any API version):

* ``POST /services/oauth2/token``: client-credentials and username-password flows.
* ``GET  /services/data/vNN.N/limits`` and ``.../sobjects/<Object>/describe``.
* ``GET  .../query?q=<SOQL>`` and ``GET .../query/<cursor>`` (``nextRecordsUrl``; 2,000 rows a
  page unless ``Sforce-Query-Options: batchSize=N``). SOQL subset: ``SELECT fields FROM
  Lead|Task|Event [WHERE a op v AND ...] [ORDER BY f [ASC|DESC], ...] [LIMIT n]`` with
  ``= != <> < <= > >= IN NOT IN``; unknown fields give ``INVALID_FIELD`` as the real API.
* ``GET|PATCH .../sobjects/<Object>/<Id>``; ``GET|PATCH .../composite/sobjects`` (sObject
  Collections, at most 200 records, ``allOrNone``, per-record results).
* Bulk API 2.0 ingest (``update``): create job, ``PUT`` CSV batches, ``PATCH`` state
  ``UploadComplete``, poll, ``successfulResults`` / ``failedResults`` / ``unprocessedrecords``.
  Bulk API 2.0 query: CSV pages with ``Sforce-Locator`` and ``Sforce-NumberOfRecords``.

Every API answer carries ``Sforce-Limit-Info: api-usage=<used>/<daily allocation>``; past the
allocation the API answers 403 ``REQUEST_LIMIT_EXCEEDED``. Writes stamp ``LastModifiedDate``
and ``SystemModstamp`` with the current time, as the real org does.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import datetime as dt
import io
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from plugins.crm import fields as crm_views
from sandbox.faults import Faults, dropped_response
from sandbox.store import Store, iso_ms, parse_iso

SYSTEM = "salesforce"
COLLECTION_LIMIT = 200
QUERY_PAGE = 2000
BULK_MAX_UPLOAD = 150 * 1024 * 1024
_API = r"/services/data/v{version}"


class SfError(Exception):
    """An error the API answers as ``[{"message", "errorCode"}]`` with an HTTP status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        return JSONResponse([{"message": self.message, "errorCode": self.code}], status_code=self.status)


def now_ms() -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# ---- SOQL -------------------------------------------------------------------------------------
_TOKEN = re.compile(
    r"\s*(?:(?P<dt>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))"
    r"|(?P<date>\d{4}-\d{2}-\d{2})(?![\d:T])"
    r"|(?P<num>-?\d+(?:\.\d+)?)"
    r"|(?P<str>'(?:[^'\\]|\\.)*')"
    r"|(?P<op><=|>=|!=|<>|=|<|>|\(|\)|,)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_.]*))"
)


@dataclass
class Soql:
    """A parsed SOQL query of the supported subset."""

    obj: str
    fields: list[str]
    where: list[tuple[str, str, Any]] = field(default_factory=list)
    order: list[tuple[str, bool]] = field(default_factory=list)
    limit: int | None = None


def parse_soql(text: str) -> Soql:
    """Parse the SOQL subset; unknown objects/fields raise :class:`SfError` like the real API."""
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SfError(400, "MALFORMED_QUERY", f"unexpected token at {text[pos : pos + 20]!r}")
        kind = m.lastgroup or ""
        tokens.append((kind, m.group(kind), m.start(kind)))
        pos = m.end()
    i = 0

    def peek(word: str | None = None) -> bool:
        return i < len(tokens) and (word is None or tokens[i][1].upper() == word)

    def take(word: str | None = None) -> tuple[str, str, int]:
        nonlocal i
        if i >= len(tokens) or (word is not None and tokens[i][1].upper() != word):
            got = tokens[i][1] if i < len(tokens) else "end of query"
            raise SfError(400, "MALFORMED_QUERY", f"expecting {word or 'a token'}, unexpected token: {got!r}")
        i += 1
        return tokens[i - 1]

    take("SELECT")
    raw_fields = [take()]
    while peek(","):
        take(",")
        raw_fields.append(take())
    take("FROM")
    obj_token = take()
    catalog = {o.lower(): o for o in crm_views.SF_FIELDS}
    obj = catalog.get(obj_token[1].lower())
    if obj is None:
        raise SfError(
            400,
            "INVALID_TYPE",
            f"sObject type '{obj_token[1]}' is not supported. If you are attempting "
            "to use a custom object, be sure to append the '__c' after the entity name.",
        )
    names = {f.lower(): f for f in crm_views.SF_FIELDS[obj]}

    def field_name(token: tuple[str, str, int]) -> str:
        name = names.get(token[1].lower())
        if token[0] != "word" or name is None:
            raise SfError(
                400,
                "INVALID_FIELD",
                f"\n{text}\n{' ' * token[2]}^\nERROR at Row:1:Column:{token[2] + 1}\n"
                f"No such column '{token[1]}' on entity '{obj}'. If you are attempting to use a custom "
                "field, be sure to append the '__c' after the custom field name. Please reference your "
                "WSDL or the describe call for the appropriate names.",
            )
        return name

    query = Soql(obj=obj, fields=[field_name(t) for t in raw_fields])
    if peek("WHERE"):
        take("WHERE")
        while True:
            fname = field_name(take())
            if peek("IN") or peek("NOT"):
                negate = peek("NOT")
                if negate:
                    take("NOT")
                take("IN")
                take("(")
                values = [_literal(take())]
                while peek(","):
                    take(",")
                    values.append(_literal(take()))
                take(")")
                query.where.append((fname, "NOT IN" if negate else "IN", values))
            else:
                op = take()
                if op[0] != "op" or op[1] in "(),":
                    raise SfError(400, "MALFORMED_QUERY", f"unexpected token: {op[1]!r}")
                query.where.append((fname, "!=" if op[1] == "<>" else op[1], _literal(take())))
            if peek("AND"):
                take("AND")
                continue
            if peek("OR"):
                raise SfError(400, "MALFORMED_QUERY", "OR is outside the sandbox's SOQL subset")
            break
    if peek("ORDER"):
        take("ORDER")
        take("BY")
        while True:
            fname = field_name(take())
            desc = False
            if peek("ASC") or peek("DESC"):
                desc = take()[1].upper() == "DESC"
            query.order.append((fname, desc))
            if not peek(","):
                break
            take(",")
    if peek("LIMIT"):
        take("LIMIT")
        kind, value, _ = take()
        if kind != "num":
            raise SfError(400, "MALFORMED_QUERY", f"LIMIT must be a number, got {value!r}")
        query.limit = int(value)
    if i != len(tokens):
        raise SfError(400, "MALFORMED_QUERY", f"unexpected token: {tokens[i][1]!r}")
    return query


def _literal(token: tuple[str, str, int]) -> Any:
    kind, value, _ = token
    if kind == "dt":
        return parse_iso(value)
    if kind == "date":
        return dt.date.fromisoformat(value)
    if kind == "num":
        return float(value) if "." in value else int(value)
    if kind == "str":
        return value[1:-1].replace("\\'", "'")
    if kind == "word" and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if kind == "word" and value.lower() == "null":
        return None
    raise SfError(400, "MALFORMED_QUERY", f"unexpected literal: {value!r}")


def _comparable(obj: str, name: str, value: Any) -> Any:
    kind = crm_views.SF_FIELDS[obj][name][0]
    if value is None:
        return None
    if kind == "datetime" and isinstance(value, str):
        return crm_views.parse_datetime(value)
    if kind == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value)
    return value


def _matches(obj: str, record: dict[str, Any], where: list[tuple[str, str, Any]]) -> bool:
    for name, op, literal in where:
        value = _comparable(obj, name, record.get(name))
        if op in ("IN", "NOT IN"):
            hit = value in literal
            if hit != (op == "IN"):
                return False
            continue
        if op == "=":
            ok = value == literal
        elif op == "!=":
            ok = value != literal
        elif value is None or literal is None:
            ok = False
        else:
            ok = {"<": value < literal, "<=": value <= literal, ">": value > literal, ">=": value >= literal}[
                op
            ]
        if not ok:
            return False
    return True


def run_soql(store: Store, query: Soql) -> list[dict[str, Any]]:
    """Evaluate a parsed query; SystemModstamp ranges use the store's index."""
    since = until = None
    since_inc = until_inc = False
    for name, op, literal in query.where:
        if name == "SystemModstamp" and isinstance(literal, dt.datetime):
            if op in (">", ">="):
                since, since_inc = iso_ms(literal), op == ">="
            elif op in ("<", "<="):
                until, until_inc = iso_ms(literal), op == "<="
    rows = [
        r
        for r in store.scan(
            SYSTEM, query.obj, since=since, since_inclusive=since_inc, until=until, until_inclusive=until_inc
        )
        if not r.get("IsDeleted") and _matches(query.obj, r, query.where)
    ]
    for name, desc in reversed(query.order):
        rows.sort(
            key=lambda r, n=name: (r.get(n) is None, _comparable(query.obj, n, r.get(n)) or 0), reverse=desc
        )
    if query.limit is not None:
        rows = rows[: query.limit]
    return rows


# ---- value checks for writes ----------------------------------------------------------------
def check_value(
    obj: str, name: str, value: Any, *, from_csv: bool = False
) -> tuple[Any, tuple[str, str] | None]:
    """Coerce a written value to the field's type: (value, None) or (None, (code, message))."""
    kind, _updateable, _custom = crm_views.SF_FIELDS[obj][name]
    if value is None or (from_csv and value == ""):
        return None, None
    if kind in ("double", "percent", "currency", "int"):
        if isinstance(value, bool):
            return None, ("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{name}: value not of required type: {value}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None, ("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{name}: value not of required type: {value}")
        if number != number or number in (float("inf"), float("-inf")):
            return None, ("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{name}: value not of required type: {value}")
        return (int(number) if kind == "int" else number), None
    if kind == "boolean":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true", None
        return None, ("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{name}: value not of required type: {value}")
    if kind == "datetime":
        try:
            return crm_views.sf_datetime(crm_views.parse_datetime(str(value))), None
        except ValueError:
            return None, ("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{name}: value not of required type: {value}")
    text = str(value)
    allowed = crm_views.SF_RESTRICTED_PICKLISTS.get((obj, name))
    if allowed is not None and text not in allowed:
        return None, (
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"{name}: bad value for restricted picklist field: {text}",
        )
    limit = crm_views.SF_LENGTHS.get(
        (obj, name), 255 if kind in ("string", "picklist", "url", "email") else 131_072
    )
    if len(text) > limit:
        return None, ("STRING_TOO_LONG", f"{name}: data value too large: {text[:40]} (max length={limit})")
    return text, None


# ---- the application -------------------------------------------------------------------------
@dataclass
class SfState:
    store: Store
    faults: Faults
    credentials: dict[str, str]
    base_url: str = ""
    cursors: dict[str, tuple[str, list[str], list[str], int]] = field(default_factory=dict)
    token_calls: dict[str, int] = field(default_factory=dict)


def create_app(store: Store, faults: Faults, credentials: dict[str, str]) -> FastAPI:
    """The Salesforce emulator as an ASGI app (``credentials``: client_id, client_secret,
    username, password)."""
    app = FastAPI(
        title="ProX sandbox: Salesforce", docs_url="/__sandbox/docs", openapi_url="/__sandbox/openapi.json"
    )
    state = SfState(store, faults, credentials)
    app.state.sf = state

    def tokens() -> dict[str, Any]:
        return store.get_kv("sf_tokens", {})

    def issue_token() -> str:
        token = "00D000000000001!" + secrets.token_urlsafe(40)
        saved = tokens()
        saved[token] = {"issued": iso_ms(now_ms())}
        store.set_kv("sf_tokens", saved)
        state.token_calls[token] = 0
        return token

    def limit_header() -> dict[str, str]:
        used = store.usage(SYSTEM, dt.date.today().isoformat())
        return {"Sforce-Limit-Info": f"api-usage={used}/{faults.config.salesforce_daily_limit}"}

    async def guard(request: Request, *, is_write: bool) -> None:
        """Auth, the daily allocation and injected faults, in the real API's order."""
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not token or token not in tokens():
            raise SfError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        ttl = faults.config.token_ttl_requests
        calls = state.token_calls.get(token, 0) + 1
        state.token_calls[token] = calls
        if ttl is not None and calls > ttl:
            saved = tokens()
            saved.pop(token, None)
            store.set_kv("sf_tokens", saved)
            raise SfError(401, "INVALID_SESSION_ID", "Session expired or invalid")
        used = store.add_usage(SYSTEM, dt.date.today().isoformat())
        if used > faults.config.salesforce_daily_limit:
            raise SfError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        decision = faults.decide(is_write=is_write)
        request.state.decision = decision
        if decision.fail_status:
            raise SfError(
                decision.fail_status, "SERVER_UNAVAILABLE", "Service temporarily unavailable; try again"
            )
        if decision.delay:
            await asyncio.sleep(decision.delay)

    async def finish(request: Request, response: Response) -> Response:
        decision = getattr(request.state, "decision", None)
        if decision is not None and decision.hold:
            await asyncio.sleep(decision.hold)
        if decision is not None and decision.drop_after:
            return dropped_response()
        response.headers.update(limit_header())
        return response

    @app.exception_handler(SfError)
    async def _sf_error(request: Request, exc: SfError) -> Response:
        response = exc.response()
        response.headers.update(limit_header())
        return response

    # ---- OAuth ------------------------------------------------------------------------------
    @app.post("/services/oauth2/token")
    async def token(request: Request) -> Response:
        form = dict((await request.form()).items())
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):
            try:
                client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
            except ValueError:
                client_id = client_secret = None
        grant = form.get("grant_type")
        if grant not in ("client_credentials", "password"):
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "grant type not supported"}, 400
            )
        if client_id != credentials["client_id"] or client_secret != credentials["client_secret"]:
            return JSONResponse(
                {"error": "invalid_client", "error_description": "invalid client credentials"}, 400
            )
        if grant == "password" and (
            form.get("username") != credentials["username"] or form.get("password") != credentials["password"]
        ):
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "authentication failure"}, 400
            )
        access = issue_token()
        return JSONResponse(
            {
                "access_token": access,
                "instance_url": state.base_url or str(request.base_url).rstrip("/"),
                "id": f"{state.base_url}/id/00D000000000001/005000000000001",
                "token_type": "Bearer",
                "issued_at": str(int(now_ms().timestamp() * 1000)),
                "signature": secrets.token_urlsafe(24),
            }
        )

    # ---- REST ---------------------------------------------------------------------------------
    @app.get(_API + "/limits")
    async def limits(request: Request, version: str) -> Response:
        await guard(request, is_write=False)
        used = store.usage(SYSTEM, dt.date.today().isoformat())
        cap = faults.config.salesforce_daily_limit
        return await finish(
            request, JSONResponse({"DailyApiRequests": {"Max": cap, "Remaining": max(cap - used, 0)}})
        )

    @app.get(_API + "/sobjects/{obj}/describe")
    async def describe(request: Request, version: str, obj: str) -> Response:
        await guard(request, is_write=False)
        name = _object(obj)
        fields = []
        for fname, (kind, updateable, custom) in crm_views.SF_FIELDS[name].items():
            entry = {
                "name": fname,
                "type": kind,
                "updateable": updateable,
                "createable": updateable,
                "custom": custom,
                "nillable": kind != "boolean",
                "label": fname.replace("__c", "").replace("_", " "),
            }
            allowed = crm_views.SF_RESTRICTED_PICKLISTS.get((name, fname))
            if allowed:
                entry["restrictedPicklist"] = True
                entry["picklistValues"] = [{"value": v, "label": v, "active": True} for v in allowed]
            fields.append(entry)
        return await finish(
            request, JSONResponse({"name": name, "fields": fields, "updateable": True, "queryable": True})
        )

    @app.get(_API + "/query")
    @app.get(_API + "/queryAll")
    async def query(request: Request, version: str) -> Response:
        await guard(request, is_write=False)
        soql = request.query_params.get("q")
        if not soql:
            raise SfError(400, "MALFORMED_QUERY", "query parameter q is required")
        parsed = parse_soql(soql)
        rows = run_soql(store, parsed)
        page = _batch_size(request)
        return await finish(
            request,
            JSONResponse(
                _page(state, version, parsed.obj, parsed.fields, [r["Id"] for r in rows], 0, page, rows=rows)
            ),
        )

    @app.get(_API + "/query/{cursor}")
    async def query_more(request: Request, version: str, cursor: str) -> Response:
        await guard(request, is_write=False)
        key, _, offset = cursor.rpartition("-")
        if key not in state.cursors or not offset.isdigit():
            raise SfError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        obj, fields, ids, page = state.cursors[key]
        return await finish(
            request, JSONResponse(_page(state, version, obj, fields, ids, int(offset), page, key=key))
        )

    @app.get(_API + "/sobjects/{obj}/{record_id}")
    async def get_record(request: Request, version: str, obj: str, record_id: str) -> Response:
        await guard(request, is_write=False)
        name = _object(obj)
        found = store.get_records(SYSTEM, name, [record_id]).get(record_id)
        if found is None:
            raise SfError(404, "NOT_FOUND", "The requested resource does not exist")
        fields = request.query_params.get("fields")
        wanted = (
            [_field(name, f.strip()) for f in fields.split(",")]
            if fields
            else list(crm_views.SF_FIELDS[name])
        )
        return await finish(request, JSONResponse(_render(version, name, found, wanted)))

    @app.patch(_API + "/sobjects/{obj}/{record_id}")
    async def patch_record(request: Request, version: str, obj: str, record_id: str) -> Response:
        await guard(request, is_write=True)
        name = _object(obj)
        body = await _json(request)
        results = _update(state, name, [{**body, "Id": record_id}], all_or_none=True, inject=False)
        if not results[0]["success"]:
            err = results[0]["errors"][0]
            raise SfError(
                404 if err["statusCode"] == "ENTITY_IS_DELETED" else 400, err["statusCode"], err["message"]
            )
        return await finish(request, Response(status_code=204))

    @app.patch(_API + "/composite/sobjects")
    async def collections_update(request: Request, version: str) -> Response:
        await guard(request, is_write=True)
        body = await _json(request)
        records = body.get("records")
        if not isinstance(records, list):
            raise SfError(400, "JSON_PARSER_ERROR", "records: expected an array of sObjects")
        if len(records) > COLLECTION_LIMIT:
            raise SfError(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {COLLECTION_LIMIT} records into this call",
            )
        by_type: dict[str, list[int]] = {}
        prepared = []
        for i, rec in enumerate(records):
            if not isinstance(rec, dict):
                raise SfError(400, "JSON_PARSER_ERROR", f"records[{i}]: expected an object")
            otype = (rec.get("attributes") or {}).get("type")
            if not otype:
                raise SfError(400, "INVALID_TYPE", "No SObject Type defined in JSON")
            name = _object(otype)
            by_type.setdefault(name, []).append(i)
            row = {k: v for k, v in rec.items() if k != "attributes"}
            if "id" in row and "Id" not in row:
                row["Id"] = row.pop("id")
            prepared.append((name, row))
        results: list[dict[str, Any]] = [{}] * len(prepared)
        all_or_none = bool(body.get("allOrNone", False))
        for name, idxs in by_type.items():
            out = _update(state, name, [prepared[i][1] for i in idxs], all_or_none=all_or_none, inject=True)
            for i, res in zip(idxs, out, strict=True):
                results[i] = res
        return await finish(request, JSONResponse(results))

    @app.get(_API + "/composite/sobjects/{obj}")
    async def collections_get(request: Request, version: str, obj: str) -> Response:
        await guard(request, is_write=False)
        name = _object(obj)
        ids = [i for i in request.query_params.get("ids", "").split(",") if i]
        if len(ids) > 2000:
            raise SfError(400, "EXCEEDED_ID_LIMIT", "cannot retrieve more than 2000 records in one call")
        wanted = [_field(name, f.strip()) for f in request.query_params.get("fields", "Id").split(",")]
        found = store.get_records(SYSTEM, name, ids)
        return await finish(
            request,
            JSONResponse([_render(version, name, found[i], wanted) if i in found else None for i in ids]),
        )

    # ---- Bulk API 2.0 ---------------------------------------------------------------------------
    @app.post(_API + "/jobs/ingest")
    async def ingest_create(request: Request, version: str) -> Response:
        await guard(request, is_write=False)
        body = await _json(request)
        operation = body.get("operation")
        if operation != "update":
            raise SfError(
                400,
                "FEATURENOTENABLED",
                f"operation {operation!r}: the sandbox supports 'update' ingest jobs",
            )
        name = _object(str(body.get("object", "")))
        if body.get("contentType", "CSV") != "CSV":
            raise SfError(400, "INVALIDJOB", "contentType must be CSV")
        job_id = "750" + secrets.token_hex(8)[:15].upper()
        info = {
            "id": job_id,
            "operation": operation,
            "object": name,
            "state": "Open",
            "contentType": "CSV",
            "apiVersion": float(version),
            "lineEnding": body.get("lineEnding", "LF"),
            "columnDelimiter": body.get("columnDelimiter", "COMMA"),
            "createdDate": crm_views.sf_datetime(now_ms()),
            "contentUrl": f"services/data/v{version}/jobs/ingest/{job_id}/batches",
            "numberRecordsProcessed": 0,
            "numberRecordsFailed": 0,
            "jobType": "V2Ingest",
        }
        store.put_job(job_id, info)
        return await finish(request, JSONResponse(info))

    @app.put(_API + "/jobs/ingest/{job_id}/batches")
    async def ingest_upload(request: Request, version: str, job_id: str) -> Response:
        await guard(request, is_write=False)
        info, _payload = _job(store, job_id)
        if info["state"] != "Open":
            raise SfError(400, "INVALIDJOBSTATE", f"Job {job_id} is not open for data upload")
        data = await request.body()
        if len(data) > BULK_MAX_UPLOAD:
            raise SfError(400, "INVALIDBATCH", "the upload exceeds 150 MB")
        store.put_job(job_id, info, data)  # one upload per job: a repeated PUT replaces it
        return await finish(request, Response(status_code=201))

    @app.patch(_API + "/jobs/ingest/{job_id}")
    async def ingest_state(request: Request, version: str, job_id: str) -> Response:
        body = await _json(request)
        target = body.get("state")
        await guard(request, is_write=target == "UploadComplete")
        info, payload = _job(store, job_id)
        if target == "Aborted":
            if info["state"] in ("JobComplete", "Failed"):
                raise SfError(400, "INVALIDJOBSTATE", f"Job {job_id} is already {info['state']}")
            info["state"] = "Aborted"
        elif target == "UploadComplete":
            if info["state"] != "Open":
                raise SfError(400, "INVALIDJOBSTATE", f"Job {job_id} is {info['state']}, not Open")
            _run_ingest(state, info, payload or b"")
            reply = {**info, "state": "UploadComplete"}
            store.put_job(job_id, info)
            return await finish(request, JSONResponse(reply))
        else:
            raise SfError(400, "INVALIDJOBSTATE", f"cannot move a job to state {target!r}")
        store.put_job(job_id, info)
        return await finish(request, JSONResponse(info))

    @app.get(_API + "/jobs/ingest/{job_id}")
    async def ingest_get(request: Request, version: str, job_id: str) -> Response:
        await guard(request, is_write=False)
        info, _ = _job(store, job_id)
        public = {k: v for k, v in info.items() if not k.startswith("_")}
        return await finish(request, JSONResponse(public))

    @app.delete(_API + "/jobs/ingest/{job_id}")
    async def ingest_delete(request: Request, version: str, job_id: str) -> Response:
        await guard(request, is_write=False)
        _job(store, job_id)
        store.put_job(job_id, {"id": job_id, "state": "Deleted"}, b"")
        return await finish(request, Response(status_code=204))

    @app.get(_API + "/jobs/ingest/{job_id}/{kind}")
    async def ingest_results(request: Request, version: str, job_id: str, kind: str) -> Response:
        await guard(request, is_write=False)
        info, _ = _job(store, job_id)
        key = {
            "successfulresults": "_ok",
            "failedresults": "_failed",
            "unprocessedrecords": "_unprocessed",
        }.get(kind.lower())
        if key is None:
            raise SfError(404, "NOT_FOUND", f"unknown result kind {kind!r}")
        if info["state"] not in ("JobComplete", "Failed", "Aborted"):
            raise SfError(400, "INVALIDJOBSTATE", f"Job {job_id} is still {info['state']}")
        return await finish(request, Response(info.get(key, ""), media_type="text/csv"))

    @app.post(_API + "/jobs/query")
    async def query_create(request: Request, version: str) -> Response:
        await guard(request, is_write=False)
        body = await _json(request)
        if body.get("operation") not in ("query", "queryAll"):
            raise SfError(400, "INVALIDJOB", "operation must be query or queryAll")
        parsed = parse_soql(str(body.get("query", "")))
        ids = [r["Id"] for r in run_soql(store, parsed)]
        if not parsed.order:
            ids.sort()  # like the real org: no ORDER BY, no time order (here: by record id)
        job_id = "750" + secrets.token_hex(8)[:15].upper()
        info = {
            "id": job_id,
            "operation": body["operation"],
            "object": parsed.obj,
            "state": "JobComplete",
            "contentType": "CSV",
            "apiVersion": float(version),
            "numberRecordsProcessed": len(ids),
            "lineEnding": body.get("lineEnding", "LF"),
            "columnDelimiter": body.get("columnDelimiter", "COMMA"),
            "jobType": "V2Query",
            "_fields": parsed.fields,
        }
        store.put_job(job_id, info, json.dumps(ids).encode())
        public = {k: v for k, v in info.items() if not k.startswith("_")}
        return await finish(request, JSONResponse({**public, "state": "UploadComplete"}))

    @app.get(_API + "/jobs/query/{job_id}")
    async def query_get(request: Request, version: str, job_id: str) -> Response:
        await guard(request, is_write=False)
        info, _ = _job(store, job_id)
        return await finish(request, JSONResponse({k: v for k, v in info.items() if not k.startswith("_")}))

    @app.get(_API + "/jobs/query/{job_id}/results")
    async def query_results(request: Request, version: str, job_id: str) -> Response:
        await guard(request, is_write=False)
        info, payload = _job(store, job_id)
        ids = json.loads(payload or b"[]")
        locator = request.query_params.get("locator")
        start = int(base64.b64decode(locator).decode()) if locator else 0
        size = int(request.query_params.get("maxRecords", 50_000))
        chunk = ids[start : start + size]
        found = store.get_records(SYSTEM, info["object"], chunk)
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(info["_fields"])
        for rid in chunk:
            rec = found.get(rid)
            if rec is not None:
                writer.writerow([_csv_value(info["object"], f, rec.get(f)) for f in info["_fields"]])
        nxt = start + size
        headers = {
            "Sforce-Locator": base64.b64encode(str(nxt).encode()).decode() if nxt < len(ids) else "null",
            "Sforce-NumberOfRecords": str(len(chunk)),
        }
        return await finish(request, Response(out.getvalue(), media_type="text/csv", headers=headers))

    return app


# ---- helpers ------------------------------------------------------------------------------------
def _object(name: str) -> str:
    catalog = {o.lower(): o for o in crm_views.SF_FIELDS}
    found = catalog.get(name.lower())
    if found is None:
        raise SfError(404, "NOT_FOUND", f"The requested resource does not exist: sObject type '{name}'")
    return found


def _field(obj: str, name: str) -> str:
    names = {f.lower(): f for f in crm_views.SF_FIELDS[obj]}
    found = names.get(name.lower())
    if found is None:
        raise SfError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {obj}")
    return found


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body() or b"{}")
    except json.JSONDecodeError as exc:
        raise SfError(
            400,
            "JSON_PARSER_ERROR",
            f"Unexpected character: {exc.msg} at [line:{exc.lineno}, column:{exc.colno}]",
        ) from None


def _job(store: Store, job_id: str) -> tuple[dict[str, Any], bytes | None]:
    found = store.get_job(job_id)
    if found is None or found[0].get("state") == "Deleted":
        raise SfError(404, "NOT_FOUND", f"The requested resource does not exist: job {job_id}")
    return found


def _batch_size(request: Request) -> int:
    options = request.headers.get("sforce-query-options", "")
    match = re.search(r"batchSize=(\d+)", options)
    return max(200, min(QUERY_PAGE, int(match.group(1)))) if match else QUERY_PAGE


def _render(version: str, obj: str, record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attributes": {"type": obj, "url": f"/services/data/v{version}/sobjects/{obj}/{record['Id']}"}
    }
    for f in fields:
        out[f] = record.get(f)
    return out


def _page(
    state: SfState,
    version: str,
    obj: str,
    fields: list[str],
    ids: list[str],
    offset: int,
    page: int,
    *,
    rows: list[dict[str, Any]] | None = None,
    key: str | None = None,
) -> dict[str, Any]:
    chunk_ids = ids[offset : offset + page]
    if rows is not None:
        chunk = rows[offset : offset + page]
    else:
        found = state.store.get_records(SYSTEM, obj, chunk_ids)
        chunk = [found[i] for i in chunk_ids if i in found]
    result: dict[str, Any] = {
        "totalSize": len(ids),
        "done": offset + page >= len(ids),
        "records": [_render(version, obj, r, fields) for r in chunk],
    }
    if not result["done"]:
        if key is None:
            key = "01g" + secrets.token_hex(8)[:15].upper()
            if len(state.cursors) >= 1_000:  # query locators expire; keep the newest ones
                state.cursors.pop(next(iter(state.cursors)))
            state.cursors[key] = (obj, fields, ids, page)
        result["nextRecordsUrl"] = f"/services/data/v{version}/query/{key}-{offset + page}"
    return result


def _csv_value(obj: str, name: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if crm_views.SF_FIELDS[obj][name][0] == "datetime":
        return value.replace("+0000", "Z")
    if isinstance(value, float) and value.is_integer():
        return repr(value)
    return str(value)


def _update(
    state: SfState,
    obj: str,
    rows: list[dict[str, Any]],
    *,
    all_or_none: bool,
    inject: bool,
    from_csv: bool = False,
) -> list[dict[str, Any]]:
    """Apply field updates with per-record results in request order (the Collections shape)."""
    catalog = crm_views.SF_FIELDS[obj]
    for row in rows:  # unknown fields fail the whole request, as the real API does
        for name in row:
            if name not in catalog:
                raise SfError(400, "INVALID_FIELD", f"No such column '{name}' on sobject of type {obj}")
    ids = [str(r.get("Id") or "") for r in rows]
    existing = state.store.get_records(SYSTEM, obj, [i for i in ids if i])
    transient = state.faults.record_fails(len(rows)) if inject else [False] * len(rows)
    stamp = now_ms()
    stamp_sf, stamp_key = crm_views.sf_datetime(stamp), iso_ms(stamp)
    results: list[dict[str, Any]] = []
    staged: list[tuple[str, dict[str, Any]]] = []
    for row, rid, fail in zip(rows, ids, transient, strict=True):
        errors: list[dict[str, Any]] = []
        if not rid:
            errors.append(
                {
                    "statusCode": "MISSING_ARGUMENT",
                    "message": "Id not specified in an update call",
                    "fields": [],
                }
            )
        elif rid not in existing:
            errors.append({"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []})
        elif fail:
            errors.append(
                {
                    "statusCode": "UNABLE_TO_LOCK_ROW",
                    "message": f"unable to obtain exclusive access to this record or 1 records: {rid}",
                    "fields": [],
                }
            )
        else:
            new = dict(existing[rid])
            for name, value in row.items():
                if name == "Id":
                    continue
                if not catalog[name][1]:
                    errors.append(
                        {
                            "statusCode": "INVALID_FIELD_FOR_INSERT_UPDATE",
                            "message": f"Unable to create/update fields: {name}. Please check the security "
                            "settings of this field and verify that it is read/write for your profile or "
                            "permission set.",
                            "fields": [name],
                        }
                    )
                    continue
                if from_csv and value == "":
                    continue  # Bulk API: an empty CSV value leaves the field as it is
                coerced, problem = check_value(obj, name, value, from_csv=from_csv)
                if problem:
                    errors.append({"statusCode": problem[0], "message": problem[1], "fields": [name]})
                else:
                    new[name] = coerced
            if not errors:
                new["LastModifiedDate"] = new["SystemModstamp"] = stamp_sf
                staged.append((rid, new))
        results.append({"id": rid or None, "success": not errors, "errors": errors})
    if all_or_none and any(not r["success"] for r in results):
        staged = []
        for r in results:
            if r["success"]:
                r["success"] = False
                r["errors"] = [
                    {
                        "statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        "message": "Record rolled back "
                        "because not all records were valid and the request was using AllOrNone header",
                        "fields": [],
                    }
                ]
    if staged:
        request_id = secrets.token_hex(8)
        state.store.put_records(SYSTEM, obj, [(rid, None, stamp_key, data) for rid, data in staged])
        state.store.log_writes(SYSTEM, obj, [rid for rid, _ in staged], stamp_key, request_id)
    return results


def _run_ingest(state: SfState, info: dict[str, Any], payload: bytes) -> None:
    """Process an uploaded update job: results CSVs as the real Bulk API 2.0 writes them."""
    obj = info["object"]
    text = payload.decode("utf-8")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        info.update(state="Failed", errorMessage="InvalidBatch : no data uploaded")
        return
    unknown = [h for h in header if h not in crm_views.SF_FIELDS[obj]]
    if unknown:
        info.update(
            state="Failed",
            errorMessage=f"InvalidBatch : Field name not found : {unknown[0]}",
            _unprocessed=_csv_lines([header, *reader]),
        )
        return
    if "Id" not in header:
        info.update(state="Failed", errorMessage="InvalidBatch : Id is required for update")
        return
    rows = [dict(zip(header, values, strict=False)) for values in reader if values]
    results = _update(state, obj, rows, all_or_none=False, inject=True, from_csv=True)
    ok_lines: list[list[str]] = [["sf__Id", "sf__Created", *header]]
    failed_lines: list[list[str]] = [["sf__Id", "sf__Error", *header]]
    for row, res in zip(rows, results, strict=True):
        values = [row.get(h, "") for h in header]
        if res["success"]:
            ok_lines.append([res["id"], "false", *values])
        else:
            err = res["errors"][0]
            fields = ",".join(err.get("fields") or [])
            failed_lines.append(
                [res["id"] or "", f"{err['statusCode']}:{err['message']}:{fields}--", *values]
            )
    info.update(
        state="JobComplete",
        numberRecordsProcessed=len(rows),
        numberRecordsFailed=len(failed_lines) - 1,
        _ok=_csv_lines(ok_lines),
        _failed=_csv_lines(failed_lines),
        _unprocessed=_csv_lines([header]),
    )


def _csv_lines(rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
    writer.writerows(rows)
    return out.getvalue()
