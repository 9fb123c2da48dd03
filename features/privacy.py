"""Pseudonymisation: the boundary between the raw zone (PII) and everything else.

Emails become a keyed hash (HMAC-SHA256) and their domain; names and phones are dropped.
The key comes from ``PROX_PII_HASH_KEY``; for local use it is generated once into the data
directory's ``secrets/`` (mode 0600), never into code, logs or MLflow.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from features.contract import LEADS, PII_COLUMNS, conform
from prox.settings import Settings

FREE_EMAIL_DOMAINS = frozenset(
    {
        "gmail.com",
        "yahoo.com",
        "hotmail.com",
        "outlook.com",
        "aol.com",
        "icloud.com",
        "gmx.de",
        "web.de",
        "mail.ru",
        "yandex.ru",
        "qq.com",
        "163.com",
        "proton.me",
        "live.com",
        "orange.fr",
        "libero.it",
    }
)


def load_hash_key(secrets_dir: Path, settings: Settings | None = None) -> bytes:
    """The PII hashing key: ``PROX_PII_HASH_KEY`` of ``settings`` (default: read from the
    environment), else a local key file under ``secrets_dir`` made on first use."""
    configured = (settings or Settings.from_env()).pii_hash_key
    if configured is not None:
        return configured.get_secret_value().encode()
    path = secrets_dir / "pii_hash.key"
    if not path.exists():
        secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def hash_emails(emails: pa.Array | pa.ChunkedArray, key: bytes) -> pa.Array:
    """Keyed hashes of normalised (trimmed, lower-case) emails; null stays null."""
    normalised = pc.utf8_lower(pc.utf8_trim_whitespace(emails)).to_pylist()
    return pa.array(
        [
            None if e is None else hmac.new(key, e.encode(), hashlib.sha256).hexdigest()[:32]
            for e in normalised
        ],
        type=pa.string(),
    )


def email_domains(emails: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """The lower-case domain after the last '@' (null when there is none)."""
    lowered = pc.utf8_lower(pc.utf8_trim_whitespace(emails))
    return pc.struct_field(pc.extract_regex(lowered, r"@(?P<domain>[^@\s]+)$"), "domain")


def pseudonymise_leads(raw_leads: pa.Table, key: bytes) -> pa.Table:
    """Turn raw leads (with PII) into canonical leads: hash + domain instead of contact data."""
    emails = raw_leads.column("email")
    table = raw_leads.drop_columns(list(PII_COLUMNS))
    table = table.append_column("email_hash", hash_emails(emails, key))
    table = table.append_column("email_domain", email_domains(emails))
    return conform(table, LEADS)
