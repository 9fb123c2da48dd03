"""Open the configured online store, and prune it in the background."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from serve.store import OnlineStore

log = logging.getLogger(__name__)


def open_state(
    kind: str = "sqlite",
    *,
    path: Path | str | None = None,
    redis_url: str | None = None,
    synchronous: str = "FULL",
    redis_prefix: str = "prox:",
) -> OnlineStore:
    """The configured store: ``sqlite`` (file at ``path``) or ``redis`` (at ``redis_url``)."""
    if kind == "sqlite":
        if path is None:
            raise ValueError("the SQLite online state needs a path (PROX_SERVE_STATE)")
        from serve.sqlite_store import OnlineState

        return OnlineState(path, synchronous=synchronous)
    if kind == "redis":
        from serve.redis_store import RedisState

        if not redis_url:
            raise ValueError("PROX_ONLINE_STATE=redis needs PROX_REDIS_URL")
        return RedisState(redis_url, prefix=redis_prefix)
    raise ValueError(f"PROX_ONLINE_STATE must be sqlite or redis, got {kind!r}")


def prune_forever(open_store: Any, every_seconds: float, stop: threading.Event) -> None:
    """Prune at start and then every ``every_seconds`` until ``stop`` (its own connection)."""
    store = open_store()
    try:
        while True:
            try:
                gone = store.prune()
                log.info("pruned %d events past every feature window", gone)
            except Exception as exc:  # a failed prune only postpones the next one
                log.warning("pruning failed: %s", type(exc).__name__)
            if stop.wait(every_seconds):
                return
    finally:
        store.close()
