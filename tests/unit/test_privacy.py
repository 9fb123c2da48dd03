from __future__ import annotations

import os
import stat
from pathlib import Path

import pyarrow as pa
import pytest

from features.contract import LEADS
from features.privacy import email_domains, hash_emails, load_hash_key, pseudonymise_leads

pytestmark = pytest.mark.unit


def test_hash_is_keyed_normalised_and_null_safe():
    emails = pa.array(["Ann@Acme.com ", "ann@acme.com", None])
    h1 = hash_emails(emails, b"k1").to_pylist()
    assert h1[0] == h1[1] and h1[2] is None
    assert hash_emails(emails, b"k2").to_pylist()[0] != h1[0]
    assert "ann" not in h1[0]


def test_domains_of_malformed_emails_are_null():
    assert email_domains(pa.array(["a@B.com", "no-at", "x@@y.io", None])).to_pylist() == [
        "b.com",
        None,
        "y.io",
        None,
    ]


def test_local_key_is_private_and_stable(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("PROX_PII_HASH_KEY", raising=False)
    k1 = load_hash_key(tmp_path / "secrets")
    assert k1 == load_hash_key(tmp_path / "secrets")
    mode = stat.S_IMODE(os.stat(tmp_path / "secrets" / "pii_hash.key").st_mode)
    assert mode == 0o600


def test_pseudonymised_leads_hold_no_pii():
    from sandbox.world import WorldSpec, simulate_world

    raw = simulate_world(WorldSpec(n_leads=200, days=30, seed=1)).raw_leads
    leads = pseudonymise_leads(raw, b"key")
    assert leads.schema.equals(LEADS, check_metadata=False)
    text = leads.to_pandas().astype(str).to_csv()
    for email in raw["email"].to_pylist()[:50]:
        if email and "@" in email:
            assert email not in text
    for phone in [p for p in raw["phone"].to_pylist()[:50] if p]:
        assert phone not in text
