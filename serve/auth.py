"""Bearer tokens with roles (score, ingest, admin), stored only as SHA-256 hashes.

Token file (``PROX_SERVE_TOKEN_FILE``, default ``<data_dir>/secrets/serve_tokens``) and
``PROX_SERVE_TOKENS`` (entries separated by ``;``) hold lines ``<sha256-hex> <role>[,<role>]
[label]``. ``prox serve --add-token ROLE`` makes a token, stores its hash and prints the token
once. ``admin`` implies every role. Tokens are never logged; a bad one gets 401, a good one
without the role 403.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROLES = ("score", "ingest", "admin")


class TokenError(ValueError):
    """A malformed token entry (the message names the line, never the token)."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class TokenStore:
    """hash -> roles."""

    entries: Mapping[str, frozenset[str]]

    def roles(self, token: str) -> frozenset[str] | None:
        return self.entries.get(hash_token(token))

    @classmethod
    def parse(cls, text: str, *, origin: str) -> TokenStore:
        entries: dict[str, frozenset[str]] = {}
        for n, raw in enumerate(text.replace(";", "\n").splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2 or len(parts[0]) != 64 or any(c not in "0123456789abcdef" for c in parts[0]):
                raise TokenError(f"{origin} entry {n}: expected '<sha256-hex> <role>[,<role>]'")
            roles = frozenset(parts[1].split(","))
            if not roles <= set(ROLES):
                raise TokenError(f"{origin} entry {n}: roles must be among {', '.join(ROLES)}")
            entries[parts[0]] = roles
        return cls(entries)

    @classmethod
    def load(
        cls, token_file: Path | None, environ: Mapping[str, str] | None = None, *, tokens: str | None = None
    ) -> TokenStore:
        """Entries of ``token_file`` (when it exists) and of ``tokens`` (``PROX_SERVE_TOKENS``;
        when not given, read from the settings of ``environ``, default the process's)."""
        if tokens is None:
            from prox.settings import Settings

            tokens = Settings.from_env(environ).serve_tokens
        entries: dict[str, frozenset[str]] = {}
        if token_file is not None and token_file.is_file():
            entries.update(cls.parse(token_file.read_text(), origin=str(token_file)).entries)
        if tokens:
            entries.update(cls.parse(tokens, origin="PROX_SERVE_TOKENS").entries)
        return cls(entries)


def new_token(token_file: Path, roles: str, label: str = "") -> str:
    """Create a token with ``roles`` (comma-separated), append its hash to ``token_file``, return it."""
    wanted = set(roles.split(","))
    if not wanted <= set(ROLES):
        raise TokenError(f"roles must be among {', '.join(ROLES)}, got {roles!r}")
    token = "prox_" + secrets.token_urlsafe(32)
    token_file.parent.mkdir(parents=True, exist_ok=True)
    with open(token_file, "a", encoding="utf-8") as fh:
        fh.write(f"{hash_token(token)} {','.join(sorted(wanted))} {label}".rstrip() + "\n")
    os.chmod(token_file, 0o600)
    return token


def allowed(store: TokenStore, authorization: str | None, role: str) -> int:
    """HTTP status for a request: 200 allowed, 401 no/unknown token, 403 token without ``role``."""
    if not authorization or not authorization.startswith("Bearer "):
        return 401
    roles = store.roles(authorization[7:].strip())
    if roles is None:
        return 401
    return 200 if (role in roles or "admin" in roles) else 403
