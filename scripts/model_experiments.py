"""The experiments behind docs/model.md; rerun with `make experiments` (a few minutes).

1. Simulated data, three runs to failure, leave one run out: wearcast's model under the
   piecewise and the linear labels.
2. Real data, the alarm rule on raw health indicators: IMS test 2 RMS and kurtosis per
   recording (reference table), lead time for bearing 1, false alarms on bearings 2-4.
3. Real data, whole-run spectra of three failing bearings (20 bands, computed elsewhere),
   leave one bearing out: the original pipeline's approach (log band amplitudes, standard
   scaling, ridge or histogram gradient boosting, linear labels) against wearcast's (bearing
   baseline, automatic search, piecewise labels), and what each ingredient contributes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from wearcast.alarms import first_alarm
from wearcast.config import Settings
from wearcast.dataset import featurize, load_training_table, read_table
from wearcast.evaluate import evaluate_predictions, held_out_predictions
from wearcast.simulate import plan_simulation, simulate
from wearcast.train import ClippedRegressor, fit_and_evaluate, prepare

REPO = Path(__file__).resolve().parents[1]


def simulated(settings: Settings, work: Path) -> pd.DataFrame:
    data, table = work / "sim", work / "sim-table"
    simulate(
        plan_simulation(settings, runs=3, recordings=300, seed=21), data, workers=settings.workers
    )
    featurize(data, table, settings)
    frame = read_table(table)
    rows = []
    for strategy in ("piecewise", "linear"):
        outcome = fit_and_evaluate(prepare(frame, settings, strategy), settings)
        e = outcome.evaluation
        preds = outcome.predictions
        failed = preds[preds.failed]
        before_onset = failed[failed.timestamp < failed.onset]
        rows.append(
            {
                "labels": strategy,
                "model": outcome.config["family"],
                "wear MAE": e.wear_mae,
                "wear MAE, failing bearings": e.wear_mae_failed,
                "MAE before onset (failing)": (before_onset.wear_pred - before_onset.wear_true)
                .abs()
                .mean(),
                "missed failures": f"{e.missed_failures} of {e.failures}",
                "false alarms / 1000 h": e.false_alarms_per_1000h,
                "median lead time h": e.median_lead_time_h,
                "RUL MAE h": e.rul_mae_h,
            }
        )
    return pd.DataFrame(rows)


def indicator_alarms(ims: Path, settings: Settings) -> pd.DataFrame:
    time = pd.read_csv(ims / "reference" / "test2_time_features.csv", parse_dates=["timestamp"])
    time = time.iloc[:-2]  # the last two recordings are flat: the rig had stopped
    end = pd.Timestamp("2004-02-19 06:22:39")
    base_n = 100  # about 17 h of healthy running at 10 min
    rows = []
    for bearing in (1, 2, 3, 4):
        for name, column, z in (
            ("RMS", f"Bearing{bearing}_ch1_rms", 6.0),
            ("kurtosis", f"Bearing{bearing}_ch1_kurt", 6.0),
        ):
            x = time[column].to_numpy()
            base = x[:base_n]
            median = np.median(base)
            sigma = 1.4826 * np.median(np.abs(base - median))
            threshold = median + z * sigma
            i = first_alarm(x > threshold, settings.alarm_k, settings.alarm_n)
            rows.append(
                {
                    "bearing": bearing,
                    "indicator": name,
                    "threshold": f"{threshold:.4g}",
                    "first persistent alarm": "-" if i is None else str(time.timestamp.iloc[i]),
                    "hours before the end": "-"
                    if i is None
                    else f"{(end - time.timestamp.iloc[i]).total_seconds() / 3600:.1f}",
                }
            )
    return pd.DataFrame(rows)


def _original(estimator) -> dict:
    return {
        "make": lambda: make_pipeline(
            FunctionTransformer(lambda x: np.log(np.clip(x, 1e-9, None))),
            StandardScaler(),
            ClippedRegressor(estimator),
        )
    }


def real_spectra(ims: Path, settings: Settings) -> pd.DataFrame:
    table = ims / "reference" / "failing_bearings_20band_spectra.csv"
    frame = load_training_table(table, settings)
    rows = []
    bands = [c for c in frame.columns if c.startswith("band_")]

    def report(approach: str, labels: str, preds: pd.DataFrame, data) -> None:
        e = evaluate_predictions(preds, settings)
        for o in e.bearings:
            p = preds[(preds.run == o.run) & (preds.bearing == o.bearing)]
            rows.append(
                {
                    "approach": approach,
                    "labels": labels,
                    "held-out bearing": f"test {o.run[0]} bearing {o.bearing}",
                    "wear MAE (own labels)": o.wear_mae,
                    "wear MAE vs linear": (p.wear_pred - data.frame.loc[p.index, "wear_linear"])
                    .abs()
                    .mean(),
                    "wear MAE vs piecewise": (
                        p.wear_pred - data.frame.loc[p.index, "wear_piecewise"]
                    )
                    .abs()
                    .mean(),
                    "lead time h": o.lead_time_h,
                    "alarmed in the first half": "yes" if o.alarm_in_first_half else "no",
                }
            )

    for strategy in ("linear", "piecewise"):
        data = prepare(frame, settings, strategy)
        X = data.frame[bands].to_numpy()
        for name, est in (
            ("original: ridge", Ridge(alpha=1.0)),
            ("original: HGB", HistGradientBoostingRegressor(random_state=0)),
        ):
            preds = held_out_predictions(
                data.frame,
                pd.DataFrame(X),
                data.y,
                lambda _unit, train, est=est, X=X, y=data.y: _original(est)["make"]().fit(
                    X[train], y[train]
                ),
                holdout="bearing",
            )
            report(name, strategy, preds, data)
        outcome = fit_and_evaluate(data, settings, holdout="bearing")
        report(f"wearcast ({outcome.config['family']})", strategy, outcome.predictions, data)
        for mode in ("absolute",):
            outcome = fit_and_evaluate(data, settings, holdout="bearing", features_mode=mode)
            report(
                f"wearcast search, no baseline ({outcome.config['family']})",
                strategy,
                outcome.predictions,
                data,
            )
    return pd.DataFrame(rows)


def summarise(spectra: pd.DataFrame) -> pd.DataFrame:
    groups = spectra.groupby(["approach", "labels"], sort=False)
    return pd.DataFrame(
        {
            "wear MAE (own labels)": groups["wear MAE (own labels)"].mean(),
            "alarms in the first half": groups["alarmed in the first half"].apply(
                lambda s: f"{(s == 'yes').sum()} of {len(s)}"
            ),
            "missed failures": groups["lead time h"].apply(
                lambda s: f"{s.isna().sum()} of {len(s)}"
            ),
            "median lead time h": groups["lead time h"].median(),
        }
    ).reset_index()


TEMPLATE = """# The wear model: what it is, how well it does, and why

Written by `scripts/model_experiments.py` (`make experiments`); rerun it after changing the
model. Figures are held-out: the run or bearing scored was never seen in fitting.

## The model

One scikit-learn Pipeline, logged and served whole (`src/wearcast/train.py`):

1. **the bearing's own baseline**: every feature is compared with the median of the bearing's
   first {baseline} recordings (log-ratio for positive features, difference otherwise), and the
   scale-free features (kurtosis, crest factor, envelope line-to-background ratios) are kept as
   they are. Machines differ in sensor sensitivity, mounting and resonances: an absolute level
   that means "worn" on one bearing is normal on another;
2. median imputation, standard scaling, optional PCA;
3. an estimator chosen by the search among ridge, random forest, extra trees, histogram
   gradient boosting and k-nearest neighbours, clipped to 0..1.

**Search**: Optuna, because it stops at a wall-clock budget (`WEARCAST_SEARCH_BUDGET_S`),
handles each family's own hyperparameters as a conditional space, and is seeded
(reproducible). scikit-learn's successive halving has no time budget and searches one
estimator's grid at a time; FLAML would pull in xgboost and about 800 MB of CUDA libraries.
Every family is tried once with defaults first, so each is on the leaderboard. Cross-validation
is grouped by run and bearing.

**Channels**: a bearing with two channels (x and y, IMS test 1) is described by the mean of the
two channels' features; the per-channel features stay in the table. So a model trained on one
channel per bearing scores two-channel recordings and the reverse (tested).

**Labels**: `piecewise` (default) is 0 until the degradation onset found on the bearing's RMS
against its own baseline, then linear to 1 at the failure; `linear` is the original hypothesis,
linear from the start of the run. Bearings that did not fail are labelled 0 (healthy so far):
they did not fail while watched, and labelling them with an invented failure time would teach
the model to see wear where there is none; their remaining life is stored as censored.

## 1. Simulated runs to failure (3 runs x 300 recordings x 4 bearings, leave one run out)

{sim}

Under the linear hypothesis the model is asked to see wear in the first part of life, where
nothing in the vibration has changed yet: its error there is the "MAE before onset" column, and
it has to trade early false confidence against late under-estimation. The piecewise labels ask
only for what the signal can show.

## 2. Real IMS test 2: the alarm rule on raw indicators

The same persistent-alarm rule ({k} of the last {n} recordings above the threshold) on RMS and
kurtosis per recording, threshold = median + 6 robust standard deviations of the first 100
recordings (about 17 h). Published detectors (RMS threshold, Isolation Forest, autoencoder) raise
a persistent alarm on bearing 1 about 73-75 h before the end.

{indicators}

Bearings 2 to 4 did not fail, so any alarm on them counts as false: their RMS rises only in the
last one or two days, when bearing 1's failure shakes the whole rig (on the same shaft), so an
engineer sees them alarm after bearing 1 and at the same time as each other.

## 3. Real whole-run spectra of three failing bearings (leave one bearing out)

`failing_bearings_20band_spectra.csv`: test 1 bearing 3 (inner race), test 1 bearing 4 (roller),
test 2 bearing 1 (outer race), 20 band amplitudes per recording, computed elsewhere and trained
on as an external table (`wearcast train FILE --holdout bearing`). "Original" is the original
pipeline's approach: log band amplitudes, standard scaling, ridge or histogram gradient
boosting. "No baseline" is wearcast's search on the absolute features. An alarm "before the
onset" is raised while the bearing's own RMS had not yet left its healthy band: a false alarm,
not an early warning.

{spectra}

Per approach (mean over the three held-out bearings):

{summary}

### What made the difference

- **The label strategy, above all.** Trained on linear labels, every approach (the original's
  and wearcast's alike) predicts wear rising from the first recording, because that is what
  the labels reward, and alarms almost from the start: on test 1, 813-827 h before the end of
  an 828 h run, i.e. a false alarm, exactly as the original analysis found. With the piecewise
  labels the predictions stay at zero until the bearing's signal departs from its baseline,
  and the alarms come tens of hours before the failure instead.
- **The per-bearing baseline.** With piecewise labels, comparing each bearing with its own
  first recordings gives the lowest mean wear error and catches all three failures; the same
  search without the baseline, and the original's log-band models, have larger errors and
  miss or alarm early on some bearings (see the tables). Band levels differ between bearings
  and runs by as much as they change with wear, so a model on absolute levels has to guess
  which bearing it is looking at.
- **The features.** On wearcast's own recordings the envelope lines at the defect frequencies
  and the scale-free statistics carry the early signal (see the importances in each training
  report); these 20 external bands have no envelope information, which bounds what any model
  can do with them.
- An alarm "before the onset" by a few minutes (test 1 bearing 3) means the model reacted at
  the same recordings as the onset detector, whose own threshold decides the onset.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("WEARCAST_IMS_DATA", str(REPO.parent / "shared" / "data" / "ims"))
    parser.add_argument("--ims", type=Path, default=Path(default))
    parser.add_argument("--budget", type=float, default=30.0, help="search budget per model, s")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "model.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(home=Path(tmp) / "home", search_budget_s=args.budget)
        sim = simulated(settings, Path(tmp))
        indicators = indicator_alarms(args.ims, settings)
        spectra = real_spectra(args.ims, settings)
    text = TEMPLATE.format(
        baseline=settings.baseline_recordings,
        k=settings.alarm_k,
        n=settings.alarm_n,
        sim=sim.to_markdown(index=False, floatfmt=".3f"),
        indicators=indicators.to_markdown(index=False),
        spectra=spectra.to_markdown(index=False, floatfmt=".3f"),
        summary=summarise(spectra).to_markdown(index=False, floatfmt=".3f"),
    )
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
