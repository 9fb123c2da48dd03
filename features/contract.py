"""The canonical data contract: every table ProX reads or writes, defined once.

These pyarrow schemas are the **contract** of ARCHITECTURE.md. Every reader and writer
goes through :func:`conform`, so a table that leaves one part of ProX is exactly what the
next part expects. Names may grow; they must not silently change.

Privacy boundary: ``RAW_LEADS`` carries raw PII (names, email, phone) and lives only in the
raw zone. ``LEADS`` is what everything downstream sees: the email is replaced by a keyed
hash and its domain (see :mod:`features.privacy`).
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa

UTC_TS: Final = pa.timestamp("us", tz="UTC")

SOURCES: Final = ("salesforce", "hubspot", "marketo", "file")
CHANNELS: Final = ("email", "web", "form", "webinar", "call", "meeting", "chat", "ad")
ACTIONS: Final = (
    "send",
    "open",
    "click",
    "visit",
    "submit",
    "register",
    "attend",
    "reply",
    "bounce",
    "unsubscribe",
    "completed",
    "booked",
    "impression",
)
STATUSES: Final = ("open", "working", "nurturing", "qualified", "unqualified", "converted")
#: Statuses after which a lead is no longer scored or labelled (closed either way).
CLOSED_STATUSES: Final = ("unqualified", "converted")
TIERS: Final = ("A", "B", "C", "D")
PII_COLUMNS: Final = ("first_name", "last_name", "email", "phone")

_LEAD_KEY = [
    pa.field("lead_id", pa.string(), nullable=False),  # "<source>:<crm_id>"
    pa.field("source", pa.string(), nullable=False),
    pa.field("crm_id", pa.string(), nullable=False),
    pa.field("created_at", UTC_TS, nullable=False),
    pa.field("updated_at", UTC_TS, nullable=False),
]
_LEAD_BODY = [
    pa.field("company", pa.string()),
    pa.field("company_domain", pa.string()),
    pa.field("industry", pa.string()),
    pa.field("employees", pa.int64()),
    pa.field("annual_revenue", pa.float64()),
    pa.field("country", pa.string()),
    pa.field("title", pa.string()),
    pa.field("lead_source", pa.string()),
    pa.field("status", pa.string()),
    pa.field("converted", pa.bool_()),
    pa.field("converted_at", UTC_TS),
    pa.field("consent_processing", pa.bool_()),
    pa.field("opted_out", pa.bool_()),
]

#: Leads as the CRMs hold them, raw PII included. Raw zone only.
RAW_LEADS: Final = pa.schema(
    _LEAD_KEY
    + [
        pa.field("first_name", pa.string()),
        pa.field("last_name", pa.string()),
        pa.field("email", pa.string()),
        pa.field("phone", pa.string()),
    ]
    + _LEAD_BODY,
    metadata={"prox.table": "raw_leads", "prox.pii": "true"},
)

#: Canonical leads: pseudonymised, safe for features, models and logs.
LEADS: Final = pa.schema(
    _LEAD_KEY + [pa.field("email_hash", pa.string()), pa.field("email_domain", pa.string())] + _LEAD_BODY,
    metadata={"prox.table": "leads"},
)

ACTIVITIES: Final = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("lead_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("occurred_at", UTC_TS, nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("detail", pa.string()),  # page path or campaign name
        pa.field("value", pa.float64()),  # e.g. minutes attended, seconds on page
    ],
    metadata={"prox.table": "activities"},
)

#: Every status a lead has held, with when it was set; what makes "status as of T" possible.
LEAD_STATUS_HISTORY: Final = pa.schema(
    [
        pa.field("lead_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("changed_at", UTC_TS, nullable=False),
        pa.field("status", pa.string(), nullable=False),
    ],
    metadata={"prox.table": "lead_status_history"},
)

SCORES: Final = pa.schema(
    [
        pa.field("lead_id", pa.string(), nullable=False),
        pa.field("scored_at", UTC_TS, nullable=False),
        pa.field("model_name", pa.string(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("probability", pa.float64(), nullable=False),
        pa.field("score", pa.int16(), nullable=False),  # 1-99
        pa.field("tier", pa.string(), nullable=False),  # A-D
        pa.field("reasons_positive", pa.list_(pa.string())),
        pa.field("reasons_negative", pa.list_(pa.string())),
        pa.field("run_id", pa.string(), nullable=False),
    ],
    metadata={"prox.table": "scores"},
)

#: Append-only log of every score ever produced.
SCORE_HISTORY: Final = SCORES.with_metadata({"prox.table": "score_history"})

#: Rows held back by validation, with the check they failed and the offending value.
QUARANTINE: Final = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("record_id", pa.string()),
        pa.field("column", pa.string()),
        pa.field("expectation", pa.string(), nullable=False),
        pa.field("value", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("quarantined_at", UTC_TS, nullable=False),
    ],
    metadata={"prox.table": "quarantine"},
)

TABLES: Final[dict[str, pa.Schema]] = {
    "raw_leads": RAW_LEADS,
    "leads": LEADS,
    "activities": ACTIVITIES,
    "lead_status_history": LEAD_STATUS_HISTORY,
    "scores": SCORES,
    "score_history": SCORE_HISTORY,
    "quarantine": QUARANTINE,
}


class ContractError(ValueError):
    """A table does not fit its contract; the message names the table and the column."""


def schema_for(table: str) -> pa.Schema:
    """Return the schema of a canonical table by name."""
    try:
        return TABLES[table]
    except KeyError:
        raise ContractError(f"unknown table {table!r}; known: {', '.join(sorted(TABLES))}") from None


def conform(data: pa.Table | object, schema: pa.Schema) -> pa.Table:
    """Return ``data`` (an Arrow table or a pandas DataFrame) cast exactly to ``schema``.

    Column order follows the schema. Missing or extra columns, casts that would lose data
    and nulls in non-nullable columns raise :class:`ContractError` naming the column.
    """
    table_name = (schema.metadata or {}).get(b"prox.table", b"?").decode()
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    missing = [n for n in schema.names if n not in table.column_names]
    extra = [n for n in table.column_names if n not in schema.names]
    if missing or extra:
        raise ContractError(
            f"{table_name}: columns do not match the contract"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; unexpected: {', '.join(extra)}" if extra else "")
        )
    columns = []
    for field in schema:
        column = table.column(field.name)
        if not column.type.equals(field.type):
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ContractError(
                    f"{table_name}.{field.name}: cannot read {column.type} as {field.type}: {exc}"
                ) from None
        if not field.nullable and column.null_count:
            raise ContractError(
                f"{table_name}.{field.name}: {column.null_count} null value(s) in a required column"
            )
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)
