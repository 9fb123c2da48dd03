"""The MLflow registry: versions, @challenger/@champion aliases, the gate, rollback and the audit log.

* A registered version becomes ``@challenger``.
* :func:`gate` promotes it to ``@champion`` only when (in this order) it uses no column the
  leakage audit flagged (one kept with ``--keep`` refuses it), its audit found no more
  leakage than the champion's (the AUC it may owe to suspect columns, see
  :meth:`models.leakage.AuditResult.suspect_auc`, at most ``max_leakage_increase`` above the
  champion's), its ECE on the newest holdout is within ``max_ece``, its largest segment AUC
  gap within ``max_segment_gap``, and it beats the current champion's ROC AUC *on the same
  holdout* by at least ``margin`` (or there is no champion). The first failing rule refuses
  it. A refusal that leaves no champion, or one for leakage, is an error for the caller
  (:attr:`GateDecision.exit_code` 1) and its message says how to proceed.
* Every decision (registered, promoted, refused, rollback, forced, cold start) is written as
  tags on the model version (``prox.decision``, ``prox.decision.rule``, ``.numbers``, ``.by``,
  ``.at``) and appended to an append-only JSON-lines audit log under the data directory
  (``<data_dir>/audit/model_decisions.jsonl``), which keeps the history that tags overwrite.
* :func:`rollback` moves ``@champion`` back to the previous champion (from the audit log),
  or to a named version, with a mandatory reason.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
AUDIT_FILE = "model_decisions.jsonl"


class RegistryError(RuntimeError):
    """A registry operation cannot be done; the message names the model and version."""


@dataclass(frozen=True)
class GateConfig:
    """The promotion rules' limits (logged with every decision)."""

    margin: float = 0.002  # challenger ROC AUC - champion ROC AUC on the same holdout
    max_ece: float = 0.03
    max_segment_gap: float = 0.15
    max_leakage_increase: float = 0.005  # suspect AUC of the challenger - the champion's


#: Rules whose refusal is an error for the caller even when a champion keeps serving.
LEAKAGE_RULES = ("leakage_flagged_column", "leakage_vs_champion")


@dataclass
class GateDecision:
    promoted: bool
    rule: str  # which rule decided
    numbers: dict[str, Any]
    message: str
    first_model: bool = False  # there was no champion before this decision

    @property
    def exit_code(self) -> int:
        """0 when promoted, or refused while a champion keeps serving for an ordinary reason
        (not better, calibration, segment gap); 1 when refused for leakage or when the refusal
        leaves no champion at all."""
        if self.promoted:
            return 0
        return 1 if self.first_model or self.rule in LEAKAGE_RULES else 0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


# ---- plumbing -------------------------------------------------------------------------------------
def client(tracking_uri: str) -> Any:
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def ensure_store(tracking_uri: str) -> None:
    """Create the directory of a local SQLite store (the default) before MLflow opens it."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def artifact_location(tracking_uri: str) -> str | None:
    """Artifacts beside a local SQLite store; a tracking server decides for itself."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def use_experiment(tracking_uri: str, name: str) -> None:
    """Make ``name`` the active experiment, creating it with :func:`artifact_location` (else
    MLflow would write artifacts to ./mlruns of whatever directory the process runs in)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    ensure_store(tracking_uri)
    mlflow_client = client(tracking_uri)
    if mlflow_client.get_experiment_by_name(name) is None:
        with contextlib.suppress(MlflowException):  # created meanwhile by a concurrent task
            mlflow_client.create_experiment(name, artifact_location=artifact_location(tracking_uri))
    mlflow.set_experiment(name)


def code_version(repo: Path | None = None) -> str:
    """The git commit of the code (with ``-dirty`` when modified), or ``unknown``."""
    repo = repo or Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        from prox.settings import Settings

        return Settings.from_env().code_version


def actor(airflow: Mapping[str, Any] | None = None) -> str:
    """Who acts: the DAG run when run from Airflow, else the OS user."""
    if airflow and airflow.get("dag_id"):
        return f"airflow:{airflow['dag_id']}/{airflow.get('run_id')}"
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "user:unknown"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ---- audit log -------------------------------------------------------------------------------------
def audit_path(data_dir: Path) -> Path:
    return Path(data_dir) / "audit" / AUDIT_FILE


def append_audit(data_dir: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Append one decision to the audit log (O_APPEND + fsync: earlier lines are never rewritten)."""
    path = audit_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"at": _now(), **entry}
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


def read_audit(
    data_dir: Path, model_name: str | None = None, version: str | None = None
) -> list[dict[str, Any]]:
    path = audit_path(data_dir)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        if model_name and rec.get("model") != model_name:
            continue
        if version is not None and str(rec.get("version")) != str(version):
            continue
        out.append(rec)
    return out


def record_decision(
    mlflow_client: Any,
    data_dir: Path,
    model_name: str,
    version: str | None,
    action: str,
    *,
    rule: str,
    numbers: Mapping[str, Any],
    by: str,
    message: str,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Write a decision to the version's tags and the audit log (both, always)."""
    record = append_audit(
        data_dir,
        {
            "model": model_name,
            "version": version,
            "action": action,
            "rule": rule,
            "numbers": dict(numbers),
            "by": by,
            "message": message,
            "run_id": run_id,
        },
    )
    if version is not None:
        tags = {
            "prox.decision": action,
            "prox.decision.rule": rule,
            "prox.decision.numbers": json.dumps(dict(numbers), sort_keys=True, default=str)[:4900],
            "prox.decision.by": by,
            "prox.decision.at": record["at"],
            "prox.decision.message": message[:4900],
        }
        for key, value in tags.items():
            mlflow_client.set_model_version_tag(model_name, version, key, value)
    return record


# ---- aliases -----------------------------------------------------------------------------------------
def alias_version(mlflow_client: Any, model_name: str, alias: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow_client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def set_challenger(
    mlflow_client: Any,
    data_dir: Path,
    model_name: str,
    version: str,
    *,
    by: str,
    run_id: str | None,
    numbers: Mapping[str, Any],
) -> None:
    mlflow_client.set_registered_model_alias(model_name, CHALLENGER, version)
    record_decision(
        mlflow_client,
        data_dir,
        model_name,
        version,
        "registered",
        rule="new version",
        numbers=numbers,
        by=by,
        message=f"version {version} registered as @{CHALLENGER}",
        run_id=run_id,
    )


def _first_model_hint(rule: str) -> str:
    fixes = {
        "calibration": "more rows for calibration (more data, or --calibration sigmoid on small data) "
        "or a deliberate --max-ece",
        "segment_gap": "a model that serves the weak segment better, or a deliberate --max-segment-gap",
        "leakage_flagged_column": "retraining without --keep",
        "leakage_vs_champion": "retraining without the suspect columns (--exclude COL)",
    }
    return (
        " There is no champion yet, so no model scores leads until one is promoted: fix it by "
        f"{fixes.get(rule, 'retraining')} and train again, or promote this version by hand with "
        "`prox promote <version> --force --reason TEXT`."
    )


def decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    config: GateConfig,
    *,
    leakage: Mapping[str, Any] | None = None,
    champion_leakage: Mapping[str, Any] | None = None,
) -> GateDecision:
    """The gate's rules on the challenger's and the champion's figures on the same holdout.

    ``leakage`` / ``champion_leakage`` are the audits' summaries
    (:meth:`models.leakage.AuditResult.summary`: ``kept``, ``suspect``, ``suspect_auc``);
    None when not recorded (a version trained before the audit kept one)."""
    first = champion is None
    numbers: dict[str, Any] = {
        "challenger_auc": challenger.get("roc_auc"),
        "challenger_ece": challenger.get("ece"),
        "challenger_segment_gap": challenger.get("largest_segment_gap", 0.0),
        "champion_auc": champion.get("roc_auc") if champion else None,
        "champion_ece": champion.get("ece") if champion else None,
        "margin": config.margin,
        "max_ece": config.max_ece,
        "max_segment_gap": config.max_segment_gap,
        "max_leakage_increase": config.max_leakage_increase,
    }

    def refuse(rule: str, message: str) -> GateDecision:
        text = f"refused: {message}" + ("." + _first_model_hint(rule) if first else "")
        return GateDecision(False, rule, numbers, text, first)

    if leakage is not None:
        kept = list(leakage.get("kept") or [])
        numbers.update(
            {
                "leakage_kept": kept,
                "leakage_suspect": list(leakage.get("suspect") or []),
                "leakage_suspect_auc": leakage.get("suspect_auc"),
            }
        )
        if kept:
            return refuse(
                "leakage_flagged_column",
                f"the model uses {', '.join(kept)}, flagged by the leakage audit (kept with --keep); "
                "a model that sees the outcome cannot be the champion",
            )
        if champion_leakage is not None:
            mine = float(leakage.get("suspect_auc") or 0.0)
            theirs = float(champion_leakage.get("suspect_auc") or 0.0)
            numbers["champion_leakage_suspect_auc"] = theirs
            if mine > theirs + config.max_leakage_increase:
                return refuse(
                    "leakage_vs_champion",
                    f"its audit found more leakage than the champion's: suspect column(s) "
                    f"{', '.join(leakage.get('suspect') or []) or 'none'} worth {mine:.4f} AUC vs "
                    f"{theirs:.4f} (limit +{config.max_leakage_increase})",
                )
    ece = float(challenger.get("ece", 1.0))
    if not ece <= config.max_ece:
        return refuse("calibration", f"ECE {ece:.4f} exceeds the limit {config.max_ece}")
    gap = float(challenger.get("largest_segment_gap", 0.0))
    if not gap <= config.max_segment_gap:
        return refuse(
            "segment_gap", f"largest segment AUC gap {gap:.4f} exceeds the limit {config.max_segment_gap}"
        )
    if champion is None:
        return GateDecision(True, "no_champion", numbers, "promoted: there is no champion yet", True)
    delta = float(challenger["roc_auc"]) - float(champion["roc_auc"])
    numbers["auc_delta"] = delta
    if delta >= config.margin:
        return GateDecision(
            True,
            "margin",
            numbers,
            f"promoted: ROC AUC {challenger['roc_auc']:.4f} beats the champion's "
            f"{champion['roc_auc']:.4f} by {delta:+.4f} >= {config.margin}",
        )
    return refuse(
        "margin",
        f"ROC AUC {challenger['roc_auc']:.4f} vs the champion's {champion['roc_auc']:.4f} "
        f"({delta:+.4f}) does not beat it by the margin {config.margin}",
    )


def apply_decision(
    mlflow_client: Any,
    data_dir: Path,
    model_name: str,
    version: str,
    decision: GateDecision,
    *,
    by: str,
    run_id: str | None,
    champion_version: str | None,
) -> dict[str, Any]:
    """Move the aliases as decided and record the decision."""
    numbers = {**decision.numbers, "champion_version": champion_version}
    if decision.promoted:
        mlflow_client.set_registered_model_alias(model_name, CHAMPION, version)
        if alias_version(mlflow_client, model_name, CHALLENGER) == version:
            mlflow_client.delete_registered_model_alias(model_name, CHALLENGER)
        action = "promoted"
    else:
        action = "refused"
    return record_decision(
        mlflow_client,
        data_dir,
        model_name,
        version,
        action,
        rule=decision.rule,
        numbers=numbers,
        by=by,
        message=decision.message,
        run_id=run_id,
    )


def force_promote(
    mlflow_client: Any, data_dir: Path, model_name: str, version: str, *, reason: str, by: str
) -> dict[str, Any]:
    """Make ``version`` the champion without the gate (an operator's decision, with a reason)."""
    if not reason.strip():
        raise RegistryError(f"{model_name} v{version}: a forced promotion needs a reason")
    previous = alias_version(mlflow_client, model_name, CHAMPION)
    mlflow_client.get_model_version(model_name, version)  # raises when it does not exist
    mlflow_client.set_registered_model_alias(model_name, CHAMPION, version)
    return record_decision(
        mlflow_client,
        data_dir,
        model_name,
        version,
        "promoted",
        rule="forced",
        numbers={"previous_champion": previous},
        by=by,
        message=f"forced: {reason}",
    )


def rollback(
    mlflow_client: Any,
    data_dir: Path,
    model_name: str,
    *,
    reason: str,
    by: str,
    to_version: str | None = None,
) -> dict[str, Any]:
    """Point @champion back at the previous champion (or ``to_version``), recording why."""
    if not reason.strip():
        raise RegistryError(f"{model_name}: a rollback needs a reason")
    current = alias_version(mlflow_client, model_name, CHAMPION)
    if to_version is None:
        history = [
            r for r in read_audit(data_dir, model_name) if r["action"] in ("promoted", "rolled_back_to")
        ]
        earlier = [str(r["version"]) for r in history if str(r["version"]) != current]
        if not earlier:
            raise RegistryError(f"{model_name}: no earlier champion to roll back to (current: {current})")
        to_version = earlier[-1]
    mlflow_client.get_model_version(model_name, to_version)
    mlflow_client.set_registered_model_alias(model_name, CHAMPION, to_version)
    if current is not None:
        record_decision(
            mlflow_client,
            data_dir,
            model_name,
            current,
            "rolled_back",
            rule="rollback",
            numbers={"replaced_by": to_version},
            by=by,
            message=f"rolled back: {reason}",
        )
    return record_decision(
        mlflow_client,
        data_dir,
        model_name,
        to_version,
        "rolled_back_to",
        rule="rollback",
        numbers={"replaced": current},
        by=by,
        message=f"champion again after rollback: {reason}",
    )


# ---- the audit view ------------------------------------------------------------------------------------
def audit_report(mlflow_client: Any, data_dir: Path, model_name: str, version: str) -> dict[str, Any]:
    """A version's lineage: data digests, checks, metrics, code, aliases and every decision."""
    from mlflow.exceptions import MlflowException

    try:
        mv = mlflow_client.get_model_version(model_name, str(version))
    except MlflowException:
        raise RegistryError(f"{model_name}: no version {version!r} in the registry") from None
    run = mlflow_client.get_run(mv.run_id)
    tags = run.data.tags
    inputs = []
    for ds_input in run.inputs.dataset_inputs or []:
        ds = ds_input.dataset
        context = next((t.value for t in ds_input.tags if t.key == "mlflow.data.context"), None)
        inputs.append({"name": ds.name, "digest": ds.digest, "source": ds.source, "context": context})
    registered = mlflow_client.get_registered_model(model_name)
    aliases = [a for a, v in (registered.aliases or {}).items() if str(v) == str(version)]
    return {
        "model": model_name,
        "version": str(version),
        "run_id": mv.run_id,
        "registered_at": dt.datetime.fromtimestamp(mv.creation_timestamp / 1000, dt.UTC).isoformat(
            timespec="seconds"
        ),
        "aliases": aliases,
        "code_version": tags.get("prox.code_version"),
        "data_source": tags.get("prox.source"),
        "airflow": {k.removeprefix("airflow."): v for k, v in tags.items() if k.startswith("airflow.")},
        "datasets": inputs,
        "validation": {
            **{k.removeprefix("validation."): v for k, v in tags.items() if k.startswith("validation.")},
            **{
                k.removeprefix("validation."): int(v)
                for k, v in run.data.metrics.items()
                if k.startswith("validation.")
            },
        },
        "training_set_digest": tags.get("prox.training_set_digest"),
        "training_set_check": check_training_set(
            tags.get("prox.training_set_path"), tags.get("prox.training_set_digest")
        ),
        "leakage": {
            k.removeprefix("prox.leakage_"): v
            for k, v in tags.items()
            if k.startswith("prox.leakage_") and k != "prox.leakage_summary"
        },
        "metrics": {k: v for k, v in sorted(run.data.metrics.items()) if k.startswith("test.")},
        "winner": tags.get("prox.winner"),
        "decisions": read_audit(data_dir, model_name, str(version)),
        "version_tags": {k: v for k, v in (mv.tags or {}).items() if k.startswith("prox.")},
    }


def check_training_set(path: str | None, recorded: str | None) -> dict[str, Any]:
    """Recompute the fingerprint of a version's training set from what is on disk now and
    compare it with the one recorded at training (``matches`` None when it cannot be checked)."""
    from models.dataset import DatasetError, digest_dir

    out: dict[str, Any] = {"path": path, "recorded": recorded, "on_disk": None, "matches": None}
    if not path or not recorded:
        out["status"] = "not recorded"
        return out
    if not Path(path).is_dir():
        out["status"] = "missing: the training set is no longer on disk"
        return out
    try:
        out["on_disk"] = digest_dir(path)
    except DatasetError as exc:
        out["status"] = f"unreadable: {exc}"
        return out
    out["matches"] = out["on_disk"] == recorded
    out["status"] = (
        "matches"
        if out["matches"]
        else "DIFFERS: the files on disk are not the ones this version was trained on"
    )
    return out


def format_audit(report: Mapping[str, Any]) -> str:
    """The audit report as text for the terminal."""
    lines = [
        f"{report['model']} version {report['version']}  (aliases: {', '.join(report['aliases']) or 'none'})",
        f"  run {report['run_id']}  registered {report['registered_at']}",
        f"  code {report['code_version']}  source {report['data_source']}  model kind {report['winner']}",
    ]
    if report["airflow"]:
        lines.append("  airflow " + ", ".join(f"{k}={v}" for k, v in sorted(report["airflow"].items())))
    lines.append(f"data lineage (training set sha256 {report.get('training_set_digest')}):")
    check = report.get("training_set_check") or {}
    if check:
        lines.append(f"  training set on disk: {check.get('status')} ({check.get('path')})")
    for d in report["datasets"]:
        lines.append(f"  [{d['context']}] {d['name']}  digest {d['digest']}")
    lines.append("validation (Great Expectations):")
    for k, v in sorted(report["validation"].items()):
        lines.append(f"  {k}: {v}")
    if report.get("leakage"):
        lines.append("leakage audit:")
        for k, v in sorted(report["leakage"].items()):
            lines.append(f"  {k}: {v}")
    lines.append("test metrics:")
    for k, v in report["metrics"].items():
        lines.append(f"  {k} = {v:.4f}")
    lines.append("decisions:")
    for d in report["decisions"]:
        lines.append(f"  {d['at']}  {d['action']:<15} rule={d['rule']}  by {d['by']}: {d['message']}")
    return "\n".join(lines)
