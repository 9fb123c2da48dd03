"""Benchmark: model quality against the ceiling (the oracle) and against a reference learner.

1. **Simulated world** (100,000 leads over 540 days by default, cached under
   ``$PROX_BENCH_DIR``): the retraining steps (training set, train with the bounded search,
   evaluate) as the DAG runs them, in a fresh data dir. Reports the champion's test ROC AUC
   next to the oracle's on the same rows (:func:`sandbox.world.oracle_probability`, which
   knows the latent intent; target: gap <= 0.01) and its ECE (target < 0.02). The GX
   validation step is skipped here (it is timed by the validation benchmark, and quality
   does not depend on it).
2. **bank-full.csv without ``duration``** through the flat-file path (stratified split) vs a
   default ``LGBMClassifier`` with 5-fold stratified CV on the same rows, in the same run
   (target: ours >= 0.80).

Run alone: ``flock /tmp/prox-heavy.lock .venv/bin/python benchmarks/bench_model_quality.py``.
The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

BANK = Path(
    os.environ.get("PROX_BANK_CSV")
    or Path(__file__).resolve().parents[2] / "shared" / "data" / "bank-marketing" / "bank-full.csv"
)


def world_dir(n_leads: int, days: int, seed: int) -> Path:
    root = Path(os.environ.get("PROX_BENCH_DIR", "/tmp/prox-bench"))
    return root / f"model-world-{n_leads}-{days}-{seed}"


def simulated(
    n_leads: int, days: int, seed: int, trials: int, budget: float, threads: int, every: int
) -> dict:
    from models.train import TrainConfig
    from pipelines import retrain
    from prox.settings import Settings
    from sandbox.world import WorldSpec, world_exists, write_world

    world = world_dir(n_leads, days, seed)
    if not world_exists(world):
        started = time.perf_counter()
        summary = write_world(WorldSpec(n_leads=n_leads, days=days, seed=seed), world)
        print(
            f"generated world: {summary['leads']:,} leads, {summary['events']:,} events in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
    data = Path(tempfile.mkdtemp(prefix="prox-bench-model-"))
    settings = Settings.from_env({"PROX_DATA_DIR": str(data)}).ensure_dirs()
    os.environ["PROX_DATA_DIR"] = str(data)
    options = retrain.RunOptions(every_days=every, lookback_days=365)
    config = TrainConfig(max_trials=trials, time_budget_s=budget, num_threads=threads)
    t0 = time.perf_counter()
    info = retrain.build_training_set(settings, dt.date(2100, 1, 1), source=f"world:{world}", options=options)
    t_build = time.perf_counter() - t0
    print(
        f"training set: {info['rows']:,} rows, {len(info['snapshots'])} snapshots in {t_build:.0f} s",
        flush=True,
    )
    validation = {"dataset": "features", "decision": "skipped (benchmark)"}
    t0 = time.perf_counter()
    trained = retrain.train(settings, info, validation, config=config, options=options)
    t_train = time.perf_counter() - t0
    evaluated = retrain.evaluate(settings, info, trained, config=config, options=options)
    registered = retrain.register(settings, info, trained, evaluated)
    gated = retrain.gate(settings, info, registered, evaluated, config=config, options=options)
    from models.registry import client

    run = client(settings.tracking_uri).get_run(trained["run_id"])
    m = run.data.metrics
    return {
        "world_leads": n_leads,
        "training_rows": info["rows"],
        "snapshots": len(info["snapshots"]),
        "winner": trained["winner"],
        "gate": gated["decision"],
        "test_auc": m["test.roc_auc"],
        "test_auc_on_oracle_rows": m["test.model_auc_on_oracle_rows"],
        "oracle_auc": m["test.oracle_auc"],
        "oracle_gap": m["test.oracle_gap"],
        "test_ece": m["test.ece"],
        "oracle_ece": m["test.oracle_ece"],
        "test_pr_auc": m["test.pr_auc"],
        "test_rows": m["test.rows"],
        "logistic_test_auc": m.get("test.logistic.roc_auc"),
        "valid_auc_lightgbm": m.get("valid.lightgbm.roc_auc"),
        "trials": m.get("search.trials"),
        "build_s": round(t_build, 1),
        "train_s": round(t_train, 1),
    }


def bank(trials: int, budget: float, threads: int) -> dict:
    import lightgbm as lgb
    import numpy as np
    import pandas as pd
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from models.train import TrainConfig
    from pipelines import retrain
    from prox.settings import Settings

    data = Path(tempfile.mkdtemp(prefix="prox-bench-bank-"))
    settings = Settings.from_env({"PROX_DATA_DIR": str(data)}).ensure_dirs()
    config = TrainConfig(max_trials=trials, time_budget_s=budget, num_threads=threads)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = retrain.flat_training_set(settings, BANK, "y", ["duration"])
        validation = retrain.validate_training_set(settings, info, run_id="bench")
        trained = retrain.train(settings, info, validation, config=config)
        evaluated = retrain.evaluate(settings, info, trained, config=config)
    ours = evaluated["metrics"]["roc_auc"]
    t_ours = time.perf_counter() - t0

    df = pd.read_csv(BANK, sep=";").drop(columns=["duration"])
    y = (df.pop("y") == "yes").astype(int).to_numpy()
    for col in df.columns:
        if not pd.api.types.is_numeric_dtype(df[col]):
            df[col] = df[col].astype("category")
    t0 = time.perf_counter()
    cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
    ref = cross_val_score(lgb.LGBMClassifier(verbose=-1, n_jobs=threads), df, y, cv=cv, scoring="roc_auc")
    t_ref = time.perf_counter() - t0
    return {
        "bank_auc": ours,
        "bank_ece": evaluated["metrics"]["ece"],
        "bank_winner": trained["winner"],
        "bank_reference_cv_auc": float(np.mean(ref)),
        "bank_reference_cv_std": float(np.std(ref)),
        "bank_ratio": ours / float(np.mean(ref)),
        "bank_s": round(t_ours, 1),
        "bank_reference_s": round(t_ref, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=540)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--every-days", type=int, default=21)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--time-budget", type=float, default=1200.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-world", action="store_true")
    parser.add_argument("--skip-bank", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks._measure import emit

    figures: dict = {}
    if not args.skip_world:
        figures.update(
            simulated(
                args.leads, args.days, args.seed, args.trials, args.time_budget, args.threads, args.every_days
            )
        )
        print(
            f"simulated world ({figures['world_leads']:,} leads, {figures['test_rows']:.0f} test rows): "
            f"model test AUC {figures['test_auc_on_oracle_rows']:.4f} vs oracle {figures['oracle_auc']:.4f} "
            f"(gap {figures['oracle_gap']:+.4f}, target <= 0.01; ratio model/oracle "
            f"{figures['test_auc_on_oracle_rows'] / figures['oracle_auc']:.4f}); ECE {figures['test_ece']:.4f} "
            f"(target < 0.02; oracle's own ECE {figures['oracle_ece']:.4f})",
            flush=True,
        )
    if not args.skip_bank and BANK.is_file():
        figures.update(bank(args.trials, args.time_budget, args.threads))
        print(
            f"bank-full without duration: flat-file path test AUC {figures['bank_auc']:.4f} vs default LightGBM "
            f"5-fold CV {figures['bank_reference_cv_auc']:.4f} (ratio {figures['bank_ratio']:.4f}; target >= 0.80)",
            flush=True,
        )
    figures["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    emit(figures)


if __name__ == "__main__":
    main()
