"""Plots (ROC, PR, calibration, lift, importance) and the Markdown model card.

Matplotlib runs with the Agg backend (no display); each plot is written as a PNG file that
the registry logs under ``plots/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def write_plots(
    y: np.ndarray,
    p: np.ndarray,
    importance: Mapping[str, float],
    out_dir: Path,
    *,
    oracle_p: np.ndarray | None = None,
    top_features: int = 20,
) -> dict[str, Path]:
    """ROC, PR, calibration (reliability), lift by decile and importance PNGs in ``out_dir``."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    from models.evaluate import deciles

    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    fig, ax = plt.subplots(figsize=(5, 5))
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label="model")
    if oracle_p is not None:
        keep = ~np.isnan(oracle_p)
        f2, t2, _ = roc_curve(y[keep], oracle_p[keep])
        ax.plot(f2, t2, "--", label="oracle")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test holdout)")
    ax.legend()
    files["roc"] = _save(fig, out_dir / "roc.png", plt)

    fig, ax = plt.subplots(figsize=(5, 5))
    prec, rec, _ = precision_recall_curve(y, p)
    ax.plot(rec, prec)
    ax.axhline(float(np.mean(y)), linestyle=":", color="grey", label="base rate")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test holdout)")
    ax.legend()
    files["pr"] = _save(fig, out_dir / "pr.png", plt)

    fig, ax = plt.subplots(figsize=(5, 5))
    order = np.argsort(p)
    bins = [b for b in np.array_split(order, 10) if b.size]
    ax.plot([float(p[b].mean()) for b in bins], [float(y[b].mean()) for b in bins], "o-", label="model")
    top = max(float(p.max()), float(y.mean())) if len(p) else 1.0
    ax.plot([0, top], [0, top], ":", color="grey", label="perfect")
    ax.set(
        xlabel="mean predicted probability", ylabel="observed conversion rate", title="Calibration (deciles)"
    )
    ax.legend()
    files["calibration"] = _save(fig, out_dir / "calibration.png", plt)

    fig, ax = plt.subplots(figsize=(6, 4))
    dec = deciles(y, p)
    ax.bar([d["decile"] for d in dec], [d["lift"] for d in dec])
    ax.axhline(1.0, linestyle=":", color="grey")
    ax.set(xlabel="decile (1 = highest scores)", ylabel="lift", title="Lift by decile")
    files["lift"] = _save(fig, out_dir / "lift.png", plt)

    fig, ax = plt.subplots(figsize=(7, 6))
    items = sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:top_features][::-1]
    ax.barh([k for k, _ in items], [v for _, v in items])
    ax.set(xlabel="mean |SHAP| (log-odds)", title=f"Top {len(items)} features")
    fig.tight_layout()
    files["importance"] = _save(fig, out_dir / "importance.png", plt)
    return files


def _save(fig: Any, path: Path, plt: Any) -> Path:
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if np.isnan(value) else f"{value:.4f}"
    return str(value)


def leakage_section(
    findings: Sequence[Mapping[str, Any]], summary: Mapping[str, Any] | None = None
) -> list[str]:
    """The card's leakage lines: each flagged column with the evidence that fired and what was
    done with it (excluded, or kept with --keep), then columns showing a signature that did
    not amount to a flag."""
    lines = []
    flagged = [f for f in findings if f.get("flagged")]
    for f in flagged:
        action = (
            "**kept (--keep): the gate will not promote this model**"
            if f.get("kept") or not f.get("excluded", True)
            else "excluded"
        )
        lines.append(f"- `{f['feature']}` -> {action}")
        fired = [e for e in f.get("evidence") or [] if e.get("fired")]
        if fired:
            for e in fired:
                lines.append(f"  - {e['check']}: {e['detail']}")
        else:
            lines.append(f"  - {f.get('rule')}")
    suspect = [
        f
        for f in findings
        if not f.get("flagged")
        and not f.get("point_in_time")
        and any(e.get("fired") and e.get("kind") == "signature" for e in f.get("evidence") or [])
    ]
    for f in suspect:
        fired = "; ".join(e["detail"] for e in f["evidence"] if e.get("fired"))
        lines.append(f"- `{f['feature']}` (watched, not flagged): {fired}")
    if not flagged:
        lines.insert(
            0,
            "No feature flagged (checks: single-feature AUC, filled mostly for converters, missingness, "
            "values converting far from the base rate, gain share, AUC drop without it).",
        )
    if summary and summary.get("suspect_auc"):
        lines.append(f"- AUC the model may owe to watched or kept columns: {summary['suspect_auc']:.4f}")
    return lines


def model_card(
    *,
    model_name: str,
    kind: str,
    run_id: str,
    split: Mapping[str, Any],
    metrics: Mapping[str, float],
    baseline_metrics: Mapping[str, float] | None,
    segment_gaps: Mapping[str, float],
    largest_gap: Mapping[str, Any],
    leakage: list[Mapping[str, Any]],
    tiers: Mapping[str, Any],
    oracle: Mapping[str, float],
    horizon_days: int | None,
    source: str,
    code_version: str,
    importance: Mapping[str, float],
    flat_file: bool,
    time_column: str | None = None,
    segment_columns: Sequence[str] | None = None,
    leakage_summary: Mapping[str, Any] | None = None,
) -> str:
    """The model card: what it is for, on what data, how good, where it is weaker, its limits.

    ``split['kind']`` says whether the holdout is the newest data (``time``) or a random
    part (``stratified``); the card never calls a random holdout "newest"."""
    timed = split.get("kind") == "time"
    lines = [
        f"# Model card: {model_name} ({kind})",
        "",
        f"MLflow run `{run_id}`, code version `{code_version}`, data source `{source}`.",
        "",
        "## Intended use",
        "",
    ]
    if flat_file and timed:
        lines += [
            "A model of the label column of a flat file, for exploration. Rows are ordered by the time",
            f"column `{time_column}`: the oldest train, the newest are the test holdout.",
            "",
        ]
    elif flat_file:
        lines += [
            "A model of the label column of a flat file, for exploration. The file has no time column,",
            "so the split is random (not by time) and the figures are optimistic if the data drifts",
            "over time. Name a date column with `--time-column` for a time-based split.",
            "",
        ]
    else:
        lines += [
            f"Ranks open leads by their chance of converting within {horizon_days} days, for sales",
            "prioritisation (score 1-99, tier A-D, reasons pushed to the CRM). Not for decisions about",
            "individuals beyond who to call first; never for credit, employment or pricing.",
            "",
        ]
    lines += [
        "## Data window",
        "",
        f"Split: {split.get('kind')}.",
        "",
        "| part | rows | conversions | window |",
        "|---|---:|---:|---|",
    ]
    for part in ("train", "valid", "calib", "test"):
        d = split.get(part) or {}
        window = d.get("window")
        if isinstance(window, list):
            window = f"{window[0]} .. {window[-1]} ({len(window)} snapshots)" if window else ""
        lines.append(f"| {part} | {d.get('rows')} | {d.get('positives')} | {window} |")
    lines += [
        "",
        "## Metrics on the test holdout (newest data)"
        if timed
        else "## Metrics on the test holdout (random part)",
        "",
        "| metric | model | logistic baseline |",
        "|---|---:|---:|",
    ]
    for key in (
        "roc_auc",
        "pr_auc",
        "log_loss",
        "brier",
        "ece",
        "precision_top_5pct",
        "precision_top_10pct",
        "precision_top_20pct",
        "lift_top_decile",
        "base_rate",
    ):
        base = baseline_metrics.get(key, float("nan")) if baseline_metrics else float("nan")
        lines.append(f"| {key} | {_fmt(metrics.get(key, float('nan')))} | {_fmt(base)} |")
    if oracle:
        lines += [
            "",
            f"Oracle (simulated ground truth) ROC AUC on the same rows: {oracle['oracle_auc']:.4f}; "
            f"model {oracle['model_auc_on_oracle_rows']:.4f}; gap {oracle['oracle_gap']:.4f}.",
        ]
    lines += ["", "## Segments", ""]
    named = list(segment_columns or [])
    if segment_gaps:
        lines += [
            "Gap = overall ROC AUC minus the worst segment's (segments with enough rows).",
            "",
            "| dimension | gap |",
            "|---|---:|",
        ]
        for dim, gap in segment_gaps.items():
            lines.append(f"| {dim} | {gap:.4f} |")
        for dim in named:
            if dim not in segment_gaps:
                lines.append(f"| {dim} | not measured |")
    elif named:
        lines.append(
            f"Segment gap not measured: no segment of {', '.join(named)} had enough rows and conversions."
        )
    else:
        lines.append("Segment gap not measured: no segment column (name one with `--segment COL`).")
    if largest_gap.get("flagged"):
        lines += [
            "",
            f"**Largest gap**: {largest_gap['dimension']} = {largest_gap['segment']}: segment AUC "
            f"{largest_gap['segment_auc']:.4f} vs overall {largest_gap['overall_auc']:.4f} "
            f"(gap {largest_gap['gap']:.4f}).",
        ]
    lines += ["", "## Tiers", ""]
    for tier, info in tiers.items():
        lines.append(
            f"- {tier}: probability >= {info['min_probability']:.4f} ({info['target_lift']:g}x the base "
            f"rate): {info['holdout_share']:.1%} of the holdout, of whom {info['expected_precision']:.1%} "
            f"converted ({info['realised_lift']:.1f}x)"
        )
    if not tiers:
        lines.append("- no lead reached even the average chance on the holdout; every lead is D")
    lines += ["", "## Most important features (mean |SHAP|)", ""]
    for name, value in sorted(importance.items(), key=lambda kv: kv[1], reverse=True)[:10]:
        lines.append(f"- `{name}`: {value:.4f}")
    lines += ["", "## Leakage audit", ""]
    lines += leakage_section(leakage, leakage_summary)
    lines += [
        "",
        "## Limitations",
        "",
        "- Trained on the leads the CRM recorded; leads never entered, or whose engagement is not tracked,",
        "  are invisible to it. Profile fields are taken as extracted (the CRMs keep no history of them).",
        *(
            [
                "- Probabilities are calibrated on a slice older than the holdout; a shift in lead mix after",
                "  that slice degrades calibration first (the gate checks ECE on the newest data).",
            ]
            if timed
            else [
                "- Parts are random rows, not time slices: calibration and every figure assume tomorrow's",
                "  leads look like the file's; nothing here measured how the model ages.",
            ]
        ),
        "- Segments with few conversions are not evaluated separately and may be served worse.",
        "- Reasons are the model's contributions phrased in words: they explain the score, not causation.",
    ]
    return "\n".join(lines) + "\n"
