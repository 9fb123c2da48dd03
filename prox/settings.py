"""One typed settings object, read from ``PROX_*`` environment variables.

This is the only module (with :mod:`prox.airflow_env`, which prepares Airflow's own
environment) that touches ``os.environ``: everything else gets its configuration from a
:class:`Settings` or from the small helpers below (:func:`crm_environ`,
:func:`airflow_connection_uri`, :func:`child_environ`, :func:`quiet_library_defaults`).
:func:`environment_variables` lists every variable read; the README's configuration table
must name exactly those (a unit test checks it).

Everything local lives under one data directory (``PROX_DATA_DIR``): the lake, the MLflow
store, the Airflow home and the sandbox state. Reading settings has no side effects; call
:meth:`Settings.ensure_dirs` when a command is about to write.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as _SourceError

KNOWN_CRMS = ("salesforce", "hubspot")
ENV_PREFIX = "PROX_"

#: Connector credentials for the CLI (DAG tasks use Airflow Connections); read through
#: :func:`crm_environ`, documented in :mod:`plugins.crm.credentials`.
CRM_CREDENTIAL_VARIABLES: tuple[str, ...] = (
    "PROX_SALESFORCE_URL",
    "PROX_SALESFORCE_CLIENT_ID",
    "PROX_SALESFORCE_CLIENT_SECRET",
    "PROX_SALESFORCE_USERNAME",
    "PROX_SALESFORCE_PASSWORD",
    "PROX_SALESFORCE_CA_BUNDLE",
    "PROX_SALESFORCE_API_VERSION",
    "PROX_HUBSPOT_URL",
    "PROX_HUBSPOT_ACCESS_TOKEN",
    "PROX_HUBSPOT_CLIENT_ID",
    "PROX_HUBSPOT_CLIENT_SECRET",
    "PROX_HUBSPOT_REFRESH_TOKEN",
    "PROX_HUBSPOT_CA_BUNDLE",
)
#: Airflow Connections given as environment variables, read by :func:`airflow_connection_uri`
#: outside a task (any ``AIRFLOW_CONN_<ID>``; these are the ids ProX's DAGs use).
AIRFLOW_CONNECTION_VARIABLES: tuple[str, ...] = ("AIRFLOW_CONN_PROX_SALESFORCE", "AIRFLOW_CONN_PROX_HUBSPOT")
#: Library switches :func:`quiet_library_defaults` sets when they are unset.
LIBRARY_DEFAULTS: Mapping[str, str] = {
    "GX_ANALYTICS_ENABLED": "False",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
SQLITE_SYNC_MODES = ("FULL", "NORMAL", "EXTRA")


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


def variable(field_name: str) -> str:
    """The environment variable of a :class:`Settings` field: ``data_dir`` -> ``PROX_DATA_DIR``."""
    return f"{ENV_PREFIX}{field_name.upper()}"


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, over a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # read by _load_env_vars, which the base __init__ calls
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Exact upper-case names only (PROX_DATA_DIR, not prox_data_dir); keys lower-cased for
        # the base class, which matches case-insensitively.
        names = {variable(name) for name in self.settings_cls.model_fields}
        return {
            key.lower(): value
            for key, value in self._environ.items()
            if key in names and not (self.env_ignore_empty and value == "")
        }


class Settings(BaseSettings):
    """ProX configuration; defaults suit a laptop.

    :meth:`from_env` reads ``PROX_<FIELD>`` variables (upper case) over the defaults; keyword
    construction (``Settings(data_dir=...)``) uses only the keywords and the defaults, never
    the environment. Either way every value is validated, and an unusable one raises
    :class:`SettingsError` naming its variable.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="ignore", env_ignore_empty=True, validate_default=True
    )

    data_dir: Path = Field(default_factory=_default_data_dir)
    mlflow_tracking_uri: str = ""  # default: SQLite store under data_dir/mlflow
    crm_split: Annotated[Mapping[str, float], NoDecode] = Field(
        default_factory=lambda: {"salesforce": 0.5, "hubspot": 0.5}
    )
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
    web_tracking_dir: Path | None = None  # web-tracking exports (CSV) read as an extra activity source
    pii_hash_key: SecretStr | None = None  # default: a key file made once under secrets_dir
    features_keep_memory: bool = True  # keep freed memory for reuse while building features (glibc)
    code_version: str = "unknown"  # recorded with a model when the code is not a git checkout
    # ---- the hot path (prox serve) ----------------------------------------------------
    serve_token_file: Path | None = None  # default: secrets_dir/serve_tokens
    serve_tokens: str = ""  # more token entries ('<sha256-hex> <roles>'), separated by ';'
    serve_state: Path | None = None  # default: data_dir/serve/online.sqlite
    serve_alias: str = "champion"
    serve_poll_seconds: float = 0.0  # poll the registry alias this often (0: only on admin reload)
    serve_max_body_bytes: int = 2 * 1024 * 1024
    serve_sync: str = "FULL"  # SQLite synchronous mode of the online state: FULL, NORMAL or EXTRA
    serve_push: bool = True  # push tier-A leads to their CRM from the service
    serve_prune_hours: float = 24.0  # prune events no feature can see this often (0: never)
    serve_max_batch: int = 64  # leads scored in one pass at most

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise _settings_error(exc) from None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Keywords only: the environment is read by from_env, from the mapping it is given.
        return (init_settings,)

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

    @property
    def serve_token_path(self) -> Path:
        """The hot path's token file (hashes only): ``PROX_SERVE_TOKEN_FILE`` or under secrets."""
        return self.serve_token_file or self.secrets_dir / "serve_tokens"

    @property
    def serve_state_path(self) -> Path:
        """The hot path's embedded online state: ``PROX_SERVE_STATE`` or under the data dir."""
        return self.serve_state or self.data_dir / "serve" / "online.sqlite"

    # ---- construction -----------------------------------------------------------------
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``PROX_<FIELD>`` variables from ``environ`` (default: this process's
        environment) over the defaults, validating each; empty values count as unset."""
        env = os.environ if environ is None else environ
        try:
            values = _MappingEnvSource(cls, env)()
        except _SourceError as exc:  # a value the source itself could not decode
            raise SettingsError(str(exc)) from None
        return cls(**values)

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some fields changed, validated like a new object."""
        return type(self)(**{**dict(self), **changes})

    @field_validator("data_dir", mode="before")
    @classmethod
    def _resolve_data_dir(cls, value: Any) -> Any:
        return Path(value).expanduser().resolve() if isinstance(value, str) else value

    @field_validator("crm_split", mode="before")
    @classmethod
    def _parse_crm_split(cls, value: Any) -> Any:
        return parse_crm_split(value, option=variable("crm_split")) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        self.validate()
        return self

    def validate(self) -> None:  # type: ignore[override]  # (BaseModel.validate is a deprecated classmethod)
        """Raise :class:`SettingsError` naming the first unusable setting."""
        for name in ("demo_leads", "demo_days", "label_horizon_days", "score_buckets", "serve_max_batch"):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{variable(name)}: must be positive, got {getattr(self, name)}")
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
        for name in ("serve_poll_seconds", "serve_prune_hours"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{variable(name)}: must be >= 0, got {getattr(self, name)}")
        if self.serve_max_body_bytes <= 0:
            raise SettingsError(
                f"PROX_SERVE_MAX_BODY_BYTES: must be positive, got {self.serve_max_body_bytes}"
            )
        if self.serve_sync.upper() not in SQLITE_SYNC_MODES:
            raise SettingsError(
                f"PROX_SERVE_SYNC: expected {', '.join(SQLITE_SYNC_MODES)}, got {self.serve_sync!r}"
            )

    def ensure_dirs(self) -> Settings:
        """Create the data directory tree; fail clearly when it cannot be written."""
        ensure_writable_dir(self.data_dir, option="PROX_DATA_DIR")
        for path in (self.lake_dir, self.world_dir, self.sandbox_dir, self.airflow_home, self.mlflow_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return self


_PYDANTIC_WORDS = {
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_parsing": "expected a number",
    "bool_parsing": "expected 1/0 (or true/false)",
}


def _settings_error(exc: ValidationError) -> SettingsError:
    """The first error of a pydantic ValidationError, as one line naming the variable."""
    error = exc.errors()[0]
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SettingsError):  # raised by our own checks: already names the variable
        return cause
    loc = error.get("loc") or ()
    name = variable(str(loc[0])) if loc else "settings"
    words = _PYDANTIC_WORDS.get(error["type"], error["msg"].removeprefix("Value error, "))
    given = error.get("input")
    shown = "***" if loc and loc[0] == "pii_hash_key" else repr(given)  # never echo a secret
    return SettingsError(f"{name}: {words}, got {shown}")


def ensure_writable_dir(path: Path, *, option: str) -> Path:
    """Create ``path`` if needed and check that it can be written, naming ``option`` on failure."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"{option}: cannot create directory {path}: {exc.strerror}") from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise SettingsError(f"{option}: directory {path} is not writable")
    return path


# ---- the environment beyond Settings' fields ----------------------------------------------
def environment_variables() -> tuple[str, ...]:
    """Every environment variable ProX reads (the README's configuration table lists them)."""
    return (
        *(variable(name) for name in Settings.model_fields),
        *CRM_CREDENTIAL_VARIABLES,
        *AIRFLOW_CONNECTION_VARIABLES,
        *LIBRARY_DEFAULTS,
    )


def crm_environ(crm: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The set (non-empty) ``PROX_<CRM>_*`` credential variables of ``crm``, by full name."""
    env = os.environ if environ is None else environ
    prefix = f"{ENV_PREFIX}{crm.upper()}_"
    return {name: env[name] for name in CRM_CREDENTIAL_VARIABLES if name.startswith(prefix) and env.get(name)}


def airflow_connection_uri(conn_id: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The Airflow Connection ``conn_id`` from ``AIRFLOW_CONN_<CONN_ID>`` (URI or JSON), if set."""
    env = os.environ if environ is None else environ
    return env.get(f"AIRFLOW_CONN_{conn_id.upper()}") or None


def export_environ(values: Mapping[str, str]) -> None:
    """Set variables for this process and the child processes and DAG runs it starts."""
    os.environ.update(values)


def child_environ(extra: Mapping[str, str] = {}) -> dict[str, str]:  # never mutated
    """A copy of this process's environment plus ``extra``, for a child process."""
    return {**os.environ, **extra}


def quiet_library_defaults() -> None:
    """Turn off library telemetry and progress bars (GX analytics, MLflow upload bars) unless set."""
    for name, value in LIBRARY_DEFAULTS.items():
        os.environ.setdefault(name, value)
