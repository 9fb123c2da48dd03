"""The champion, held in one attribute and swapped atomically.

A request reads :attr:`ModelHolder.current` once and keeps that :class:`models.score.Scorer`
to the end, so a switch never changes the model under a request in flight; the new model is
fully loaded (downloaded, booster built) before the swap, and rebinding an attribute is
atomic in Python. ``reload`` is called by ``POST /v1/admin/reload`` and, when
``poll_seconds`` > 0, by a background poll of the registry alias.
"""

from __future__ import annotations

import logging
import threading

from models.score import Scorer, load_scorer

log = logging.getLogger(__name__)


class ModelHolder:
    """The scorer behind ``models:/<name>@<alias>``; cold-start rules when there is none."""

    def __init__(self, tracking_uri: str, model_name: str, alias: str = "champion") -> None:
        from prox.settings import quiet_library_defaults

        quiet_library_defaults()  # no MLflow progress bars in service logs
        self.tracking_uri, self.model_name, self.alias = tracking_uri, model_name, alias
        self._lock = threading.Lock()  # one load at a time; readers never take it
        self.current: Scorer = load_scorer(tracking_uri, model_name, alias)
        self.switches = 0

    def reload(self) -> tuple[str, str]:
        """Load the alias's version now; swap when it differs. Returns (old, new) versions."""
        with self._lock:
            old = self.current
            new = load_scorer(self.tracking_uri, self.model_name, self.alias)
            if new.model_version != old.model_version:
                self.current = new
                self.switches += 1
                log.info(
                    "model %s: switched from version %s to %s",
                    self.model_name,
                    old.model_version,
                    new.model_version,
                )
            return old.model_version, self.current.model_version

    def poll_forever(self, seconds: float, stop: threading.Event) -> None:
        """Reload every ``seconds`` until ``stop`` is set (errors are logged, the old model stays)."""
        while not stop.wait(seconds):
            try:
                self.reload()
            except Exception as exc:  # a registry hiccup must not take scoring down
                log.warning(
                    "model poll failed (%s); keeping version %s",
                    type(exc).__name__,
                    self.current.model_version,
                )
