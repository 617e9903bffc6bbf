"""The wear model's experiments behind docs/model.md: `make experiments` reruns them and
rewrites the tables between the `<!-- experiments:NAME -->` markers there (the prose around
them is written by hand from what this prints).

Every figure is held out, and the model search is nested inside each fold (the held-out unit
never informs a choice). Each table has trivial baselines as rows, measured on the same split:
always 0, age only (the fraction of the run elapsed: it knows the failure time, so it is a bar
to clear, not a rival), the RMS rule (the bearing's RMS over its own first recordings, k of n
above a threshold set on the training folds' healthy recordings) and wearcast's health
indicator, both from :func:`wearcast.prognostics_eval.evaluate_prognostics` on the same folds.
Alarm figures are onset-free (:func:`wearcast.evaluate.judge_alarms`) and come first; wear MAE
follows, against each label set apart.

1. sim: simulated runs to failure, leave one run out; wearcast trained on the piecewise labels
   (the simulator's true onsets) and on the linear labels.
2. spectra: real 20-band spectra of three failing IMS bearings (computed elsewhere), leave one
   bearing out; the original pipeline's approach (log bands, scaling, ridge or gradient
   boosting, linear labels) beside wearcast's. The piecewise labels of this table come from the
   model's own inputs (its onset is found on the bands' root-sum-square), so nothing is scored
   against them: only onset-free figures and wear MAE against the linear labels.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from wearcast.config import Settings
from wearcast.dataset import featurize, load_training_table, read_table
from wearcast.evaluate import Evaluation, evaluate_predictions, held_out_predictions
from wearcast.model import ClippedRegressor
from wearcast.prognostics_eval import evaluate_prognostics
from wearcast.rig import IMS_RUNS
from wearcast.simulate import plan_simulation, simulate
from wearcast.train import TrainingData, fit_and_evaluate, prepare

REPO = Path(__file__).resolve().parents[1]
DASH = "-"


def _alarm_columns(failures, missed, leads, first_half, false_alarms, per_1000h) -> dict:
    return {
        "failures": failures,
        "missed": missed,
        "median lead h": f"{np.median(leads):.1f}" if leads else DASH,
        "shortest lead h": f"{min(leads):.1f}" if leads else DASH,
        "alarmed in first half of life": first_half,
        "false alarms": false_alarms,
        "false alarms / 1000 bearing-h": f"{per_1000h:.1f}",
    }


def model_row(name: str, e: Evaluation, labels: tuple[str, ...]) -> dict:
    failing = [b for b in e.bearings if b.failed]
    leads = [b.lead_time_h for b in failing if b.lead_time_h is not None]
    row = {"predictor": name}
    row |= _alarm_columns(
        e.failures,
        e.missed_failures,
        leads,
        sum(b.alarm_in_first_half for b in failing),
        sum(b.false_alarms for b in e.bearings),
        e.false_alarms_per_1000h,
    )
    for label in labels:
        row[f"wear MAE vs {label}"] = f"{e.wear_mae_by_labels[label]['model']:.3f}"
    return row


def trivial_rows(e: Evaluation, labels: tuple[str, ...]) -> list[dict]:
    """Always 0 and age only, on the rows of ``e`` (every held-out model has the same rows)."""
    always0 = {"predictor": "always 0"}
    always0 |= _alarm_columns(e.failures, e.failures, [], 0, 0, 0.0)  # it never alarms
    age = {"predictor": "age only (knows the failure time)"}
    age |= dict.fromkeys(always0.keys() - {"predictor"}, DASH)
    for label in labels:
        always0[f"wear MAE vs {label}"] = f"{e.wear_mae_by_labels[label]['always0']:.3f}"
        age[f"wear MAE vs {label}"] = f"{e.wear_mae_by_labels[label]['age']:.3f}"
    return [always0, age]


def detector_rows(frame: pd.DataFrame, settings: Settings, labels: tuple[str, ...]) -> list[dict]:
    """The RMS rule and the health indicator, leave one run out on the same table."""
    summary = evaluate_prognostics(frame, settings).detector_summary().set_index("detector")
    rows = []
    for name, shown in (("RMS rule", "RMS rule"), ("wearcast health", "wearcast health indicator")):
        s = summary.loc[name]
        leads = [s["median_lead_h"]] if np.isfinite(s["median_lead_h"]) else []
        row = {"predictor": shown}
        row |= _alarm_columns(
            int(s["failures"]),
            int(s["missed"]),
            leads,
            int(s["alarmed_in_first_half"]),
            int(s["false_alarms"]),
            s["false_alarms_per_1000h"],
        )
        row["shortest lead h"] = f"{s['min_lead_h']:.1f}" if leads else DASH
        rows.append(row | {f"wear MAE vs {label}": DASH for label in labels})
    return rows


def wearcast(
    data: TrainingData, settings: Settings, name: str, **options
) -> tuple[str, Evaluation]:
    """wearcast's nested held-out evaluation, named with the families the folds chose."""
    outcome = fit_and_evaluate(data, settings, **options)
    families = sorted({c["family"] for c in outcome.fold_configs.values()})
    print(f"{name}: chosen per fold {outcome.fold_configs}")
    return f"{name} ({', '.join(families)})", outcome.evaluation


def simulated(settings: Settings, work: Path, runs: int, recordings: int) -> pd.DataFrame:
    data, table = work / "sim", work / "sim-table"
    plan = plan_simulation(settings, runs=runs, recordings=recordings, seed=21)
    simulate(plan, data, workers=settings.workers)
    featurize(data, table, settings)
    frame = read_table(table)
    labels = ("linear", "piecewise")
    rows = []
    for strategy in ("piecewise", "linear"):
        name, e = wearcast(
            prepare(frame, settings, strategy), settings, f"wearcast, {strategy} labels"
        )
        rows.append(model_row(name, e, labels))
    rows += trivial_rows(e, labels) + detector_rows(frame, settings, labels)
    return pd.DataFrame(rows)


def _original(estimator, X: np.ndarray, y: np.ndarray):
    def fit(_unit: str, train: np.ndarray):
        return make_pipeline(
            FunctionTransformer(lambda x: np.log(np.clip(x, 1e-9, None))),
            StandardScaler(),
            ClippedRegressor(estimator),
        ).fit(X[train], y[train])

    return fit


def spectra_table(ims: Path, work: Path) -> tuple[Path, Path]:
    """The 20-band spectra with each bearing as a run of its own (so leaving one run out leaves
    one bearing out), and its run facts (start, failure) from the IMS runs."""
    frame = pd.read_csv(ims / "reference" / "failing_bearings_20band_spectra.csv")
    meta = {}
    for (run, bearing), rows in frame.groupby(["run", "bearing"]):
        info = IMS_RUNS[run]
        name = f"{run}_bearing{bearing}"
        frame.loc[rows.index, "run"] = name
        meta[name] = {
            "n_bearings": 1,
            "start": info.start.isoformat(),
            "end": info.end.isoformat(),
            "failures": {"1": info.failures[int(bearing)].value},
        }
    frame["bearing"] = 1
    bands = [c for c in frame.columns if c.startswith("band_")]
    frame["rms"] = np.sqrt((frame[bands] ** 2).sum(axis=1))  # the bands' root-sum-square
    out = work / "spectra.csv"
    frame.to_csv(out, index=False)
    (work / "spectra.runs.json").write_text(json.dumps(meta))
    return out, work / "spectra.runs.json"


def real_spectra(ims: Path, settings: Settings, work: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    table, meta = spectra_table(ims, work)
    frame = load_training_table(table, settings, runs_meta=meta)
    labels = ("linear",)
    linear = prepare(frame, settings, "linear")
    bands = [c for c in linear.frame.columns if c.startswith("band_")]
    X = linear.frame[bands].to_numpy()
    rows, per_bearing = [], {}

    def add(name: str, e: Evaluation) -> None:
        rows.append(model_row(name, e, labels))
        per_bearing[name] = {
            b.run.replace("_bearing", " bearing "): b.lead_time_h for b in e.bearings
        }

    for name, estimator in (
        ("original: log bands, ridge, linear labels", Ridge(alpha=1.0)),
        ("original: log bands, HGB, linear labels", HistGradientBoostingRegressor(random_state=0)),
    ):
        preds = held_out_predictions(
            linear.frame,
            pd.DataFrame(X),
            linear.y,
            _original(estimator, X, linear.y),
            max_folds=settings.holdout_folds,
        )
        add(name, evaluate_predictions(preds, settings))
    for strategy, mode in (("linear", None), ("piecewise", None), ("piecewise", "absolute")):
        suffix = ", no bearing baseline" if mode else ""
        data = prepare(frame, settings, strategy)
        add(*wearcast(data, settings, f"wearcast, {strategy} labels{suffix}", features_mode=mode))
    # Every model above is scored on the same held-out rows: the trivial predictors too.
    rows += trivial_rows(evaluate_predictions(preds, settings), labels)
    rows += detector_rows(frame, settings, labels)
    leads = pd.DataFrame(per_bearing).T.map(lambda v: DASH if pd.isna(v) else f"{v:.1f}")
    leads.columns = [f"lead h, {c}" for c in leads.columns]
    return pd.DataFrame(rows), leads.rename_axis("predictor").reset_index()


def replace_block(text: str, name: str, table: str) -> str:
    pattern = re.compile(rf"(<!-- experiments:{name} -->\n).*?(<!-- /experiments:{name} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"docs/model.md has no <!-- experiments:{name} --> block")
    return pattern.sub(lambda m: m[1] + table + "\n" + m[2], text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("WEARCAST_IMS_DATA", str(REPO.parent / "shared" / "data" / "ims"))
    parser.add_argument("--ims", type=Path, default=Path(default))
    parser.add_argument("--budget", type=float, default=60.0, help="search budget per model, s")
    parser.add_argument("--runs", type=int, default=4, help="simulated runs")
    parser.add_argument("--recordings", type=int, default=300, help="per simulated run")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "model.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home", search_budget_s=args.budget)
        sim = simulated(settings, Path(tmp), args.runs, args.recordings)
        spectra, leads = real_spectra(args.ims, settings, Path(tmp))
    text = args.out.read_text()
    for name, table in (("sim", sim), ("spectra", spectra), ("spectra-leads", leads)):
        markdown = table.to_markdown(index=False)
        print(f"\n{name}\n{markdown}")
        text = replace_block(text, name, markdown)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
