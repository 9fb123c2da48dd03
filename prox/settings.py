"""One typed settings object, read from ``PROX_*`` environment variables.

Everything local lives under one data directory (``PROX_DATA_DIR``): the lake, the MLflow
store, the Airflow home and the sandbox state. Reading settings has no side effects; call
:meth:`Settings.ensure_dirs` when a command is about to write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

KNOWN_CRMS = ("salesforce", "hubspot")


class SettingsError(ValueError):
    """A setting has a value ProX cannot use; the message names the variable."""


def parse_crm_split(text: str, *, option: str = "PROX_CRM_SPLIT") -> dict[str, float]:
    """Parse ``"salesforce=0.6,hubspot=0.4"`` into shares summing to 1.

    A single float is read as the Salesforce share.
    """
    text = text.strip()
    try:
        share = float(text)
    except ValueError:
        pass
    else:
        if not 0.0 <= share <= 1.0:
            raise SettingsError(f"{option}: Salesforce share must be within [0, 1], got {text!r}")
        return {"salesforce": share, "hubspot": 1.0 - share}
    split: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in KNOWN_CRMS:
            raise SettingsError(
                f"{option}: unknown CRM {name!r} in {text!r}; expected e.g. 'salesforce=0.6,hubspot=0.4'"
            )
        try:
            split[name] = float(value)
        except ValueError:
            raise SettingsError(f"{option}: share of {name} is not a number: {value!r}") from None
        if split[name] < 0:
            raise SettingsError(f"{option}: share of {name} is negative: {value!r}")
    total = sum(split.values())
    if total <= 0:
        raise SettingsError(f"{option}: shares must add up to more than 0, got {text!r}")
    return {crm: split.get(crm, 0.0) / total for crm in KNOWN_CRMS}


def _default_data_dir() -> Path:
    return Path.home() / ".prox"


@dataclass(frozen=True)
class Settings:
    """ProX configuration. Build it with :meth:`from_env`; defaults suit a laptop."""

    data_dir: Path = field(default_factory=_default_data_dir)
    mlflow_tracking_uri: str = ""  # default: SQLite store under data_dir/mlflow
    crm_split: Mapping[str, float] = field(default_factory=lambda: {"salesforce": 0.5, "hubspot": 0.5})
    seed: int = 7
    demo_leads: int = 20_000
    demo_days: int = 540
    dirt_rate: float = 0.02
    model_name: str = "prox-lead-scoring"
    quarantine_threshold: float = 0.05
    label_horizon_days: int = 90
    consent_policy: str = "opt_in"  # opt_in: consent required (GDPR); opt_out: only opt-outs excluded (CCPA)
    drift_warn_psi: float = 0.1
    drift_stop_psi: float = 0.25  # above this PSI on any feature or the score, nothing is pushed
    score_buckets: int = 4  # lead_id hash partitions of the nightly fan-out
    online_state: str = "sqlite"  # the hot path's online state: sqlite (embedded, WAL) or redis
    redis_url: str = ""  # PROX_REDIS_URL when online_state is redis, e.g. redis://127.0.0.1:6379/0

    # ---- derived locations ------------------------------------------------------------
    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def world_dir(self) -> Path:
        """The simulated world (ground truth included), outside the lake on purpose."""
        return self.data_dir / "world"

    @property
    def sandbox_dir(self) -> Path:
        return self.data_dir / "sandbox"

    @property
    def airflow_home(self) -> Path:
        return self.data_dir / "airflow"

    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"

    @property
    def secrets_dir(self) -> Path:
        return self.data_dir / "secrets"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.mlflow_dir / 'mlflow.db'}"

    # ---- construction -----------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``PROX_<FIELD>`` variables (upper case) over the defaults, validating each."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = f"PROX_{f.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(name, f.name, raw)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first unusable setting."""
        for name in ("demo_leads", "demo_days", "label_horizon_days", "score_buckets"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"PROX_{name.upper()}: must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.dirt_rate <= 0.5:
            raise SettingsError(f"PROX_DIRT_RATE: must be within [0, 0.5], got {self.dirt_rate}")
        if not 0.0 < self.quarantine_threshold <= 1.0:
            raise SettingsError(
                f"PROX_QUARANTINE_THRESHOLD: must be within (0, 1], got {self.quarantine_threshold}"
            )
        if self.consent_policy not in ("opt_in", "opt_out"):
            raise SettingsError(
                f"PROX_CONSENT_POLICY: expected opt_in or opt_out, got {self.consent_policy!r}"
            )
        if not 0 < self.drift_warn_psi <= self.drift_stop_psi:
            raise SettingsError(
                f"PROX_DRIFT_WARN_PSI/PROX_DRIFT_STOP_PSI: need 0 < warn <= stop, got {self.drift_warn_psi}, {self.drift_stop_psi}"
            )
        if self.seed < 0:
            raise SettingsError(f"PROX_SEED: must be >= 0, got {self.seed}")
        if self.online_state not in ("sqlite", "redis"):
            raise SettingsError(f"PROX_ONLINE_STATE: expected sqlite or redis, got {self.online_state!r}")
        if self.online_state == "redis" and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise SettingsError(
                "PROX_REDIS_URL: PROX_ONLINE_STATE=redis needs a redis://, rediss:// or unix:// URL"
            )

    def ensure_dirs(self) -> Settings:
        """Create the data directory tree; fail clearly when it cannot be written."""
        ensure_writable_dir(self.data_dir, option="PROX_DATA_DIR")
        for path in (self.lake_dir, self.world_dir, self.sandbox_dir, self.airflow_home, self.mlflow_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self


def ensure_writable_dir(path: Path, *, option: str) -> Path:
    """Create ``path`` if needed and check that it can be written, naming ``option`` on failure."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"{option}: cannot create directory {path}: {exc.strerror}") from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise SettingsError(f"{option}: directory {path} is not writable")
    return path


def _parse(env_name: str, field_name: str, raw: str) -> object:
    if field_name == "data_dir":
        return Path(raw).expanduser().resolve()
    if field_name == "crm_split":
        return parse_crm_split(raw, option=env_name)
    if field_name in ("seed", "demo_leads", "demo_days", "label_horizon_days", "score_buckets"):
        try:
            return int(raw)
        except ValueError:
            raise SettingsError(f"{env_name}: expected an integer, got {raw!r}") from None
    if field_name in ("dirt_rate", "quarantine_threshold", "drift_warn_psi", "drift_stop_psi"):
        try:
            return float(raw)
        except ValueError:
            raise SettingsError(f"{env_name}: expected a number, got {raw!r}") from None
    return raw


def export_environ(values: Mapping[str, str]) -> None:
    """Set variables for this process and the child processes and DAG runs it starts."""
    os.environ.update(values)
