"""The held-out figures of wearcast.evaluate on small tables whose answers are worked by hand.

Each case is also scored for a model that always says 0, which must get a different (worse)
answer: a test that an always-0 model passes tests nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wearcast.config import Settings
from wearcast.evaluate import (
    evaluate_predictions,
    held_out_predictions,
    judge_alarms,
    k_of_n_episodes,
)

T0 = pd.Timestamp("2024-01-01")


def _bearing(run, bearing, wear_pred, *, life_h, failed, onset_h=None, hours=None):
    """Held-out predictions of one bearing recorded hourly from hour 0; the run ends (the
    failure, if ``failed``) at ``life_h``."""
    wear_pred = np.asarray(wear_pred, dtype=float)
    hours = np.arange(len(wear_pred), dtype=float) if hours is None else np.asarray(hours)
    linear = hours / life_h if failed else np.zeros_like(hours)
    piecewise = (
        np.clip((hours - onset_h) / (life_h - onset_h), 0, 1) if failed else np.zeros_like(hours)
    )
    return pd.DataFrame(
        {
            "run": run,
            "bearing": bearing,
            "timestamp": T0 + pd.to_timedelta(hours, "h"),
            "elapsed_h": hours,
            "life_fraction": hours / life_h,
            "failed": failed,
            "onset": T0 + pd.Timedelta(hours=onset_h) if failed else pd.NaT,
            "rul_h": life_h - hours if failed else np.nan,
            "wear_linear": linear,
            "wear_piecewise": piecewise,
            "wear_true": piecewise,
            "wear_pred": wear_pred,
        }
    )


# threshold 0.5, alarm when 2 of the last 2 are above, remaining life from the last 3 predictions
RULE = {"alarm_threshold": 0.5, "alarm_k": 2, "alarm_n": 2, "rul_trend_recordings": 3}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(home=tmp_path, **RULE)


def _alarm_case() -> pd.DataFrame:
    """Run r, recordings at hours 0..9, ends at hour 10. Above 0.5 marked *.

    b1 fails:  0 0 .6* .6* 0 0 .4 .6* .8* 1*    alarm raised at 3 (closed at 4) and at 8 (open)
    b2 healthy: 0 .6* .6* .6* 0 0 0 0 0 0      alarm raised at 2, closed at 4
    b3 fails:  0 0 0 0 0 0 .6* .6* 0 0         alarm raised at 7, closed at 8: the failure is missed
    """
    return pd.concat(
        [
            _bearing(
                "r", 1, [0, 0, 0.6, 0.6, 0, 0, 0.4, 0.6, 0.8, 1], life_h=10, failed=True, onset_h=5
            ),
            _bearing("r", 2, [0, 0.6, 0.6, 0.6, 0, 0, 0, 0, 0, 0], life_h=10, failed=False),
            _bearing("r", 3, [0, 0, 0, 0, 0, 0, 0.6, 0.6, 0, 0], life_h=10, failed=True, onset_h=5),
        ],
        ignore_index=True,
    )


def test_lead_time_false_alarms_missed_failures_and_remaining_life(settings):
    e = evaluate_predictions(_alarm_case(), settings)
    b1, b2, b3 = e.bearings
    # b1: the persistent alarm is the one raised at hour 8 and still open: lead 10 - 8 = 2 h.
    # The one raised at hour 3 closed: a false alarm, in the first half of life (3 < 10 / 2).
    # Exposure: watched from hour 0 until the persistent alarm, 8 h.
    assert (b1.lead_time_h, b1.false_alarms, b1.exposure_h) == (2.0, 1, 8.0)
    assert b1.alarm_in_first_half and b1.alarm_at == str(T0 + pd.Timedelta(hours=8))
    # b2 did not fail: its alarm is false; exposure its 9 watched hours.
    assert (b2.lead_time_h, b2.false_alarms, b2.exposure_h) == (None, 1, 9.0)
    # b3: its alarm closed before the failure: missed, and a false alarm (hour 7: second half).
    assert (b3.lead_time_h, b3.false_alarms, b3.exposure_h) == (None, 1, 9.0)
    assert not b3.alarm_in_first_half
    # 3 false alarms over 8 + 9 + 9 = 26 bearing-hours: 3000 / 26 = 115.38 per 1000 h.
    assert e.false_alarms_per_1000h == pytest.approx(3000 / 26)
    assert (e.failures, e.missed_failures, e.median_lead_time_h) == (2, 1, 2.0)
    # Remaining life on b1 from its persistent alarm (hour 8) on, by the trend of 3 predictions:
    #   hour 8: .4 .6 .8, slope .2/h, 0.2 to go: 1 h; true 10 - 8 = 2 h: error 1
    #   hour 9: .6 .8 1, slope .2/h, nothing to go: 0 h; true 1 h: error 1
    assert b1.rul_mae_h == pytest.approx(1.0) and e.rul_mae_h == pytest.approx(1.0)
    assert b2.rul_mae_h is None and b3.rul_mae_h is None


def test_an_always_zero_model_misses_every_failure(settings):
    zero = _alarm_case().assign(wear_pred=0.0)
    e = evaluate_predictions(zero, settings)
    # No alarm at all: both failures missed, no lead time, no false alarm over 9 + 9 + 9 h.
    assert (e.failures, e.missed_failures, e.median_lead_time_h, e.rul_mae_h) == (2, 2, None, None)
    assert e.false_alarms_per_1000h == 0.0 and [b.exposure_h for b in e.bearings] == [9.0] * 3


def test_an_alarm_that_never_clears_on_a_healthy_bearing_is_false():
    hours = np.arange(6.0)
    episodes = k_of_n_episodes(np.array([0, 0, 1, 1, 1, 1]), 0.5, 2, 2)  # raised at 3, open
    judged = judge_alarms(hours, episodes, failed=False, life_h=None)
    assert (judged.lead_h, judged.false_alarms, judged.exposure_h) == (None, 1, 5.0)
    # The same series on a bearing that failed at hour 6: caught 6 - 3 = 3 h ahead, no false alarm.
    judged = judge_alarms(hours, episodes, failed=True, life_h=6.0)
    assert (judged.lead_h, judged.false_alarms, judged.exposure_h) == (3.0, 0, 3.0)


def _wear_case(pred_b1, pred_b2) -> pd.DataFrame:
    """Run r, hours 0..3, ends at hour 4; b1 fails (onset hour 2), b2 does not.

    life fraction   0  .25 .5 .75   (age only predicts this, on both bearings)
    b1 linear       0  .25 .5 .75
    b1 piecewise    0  0   0  .5    (trained on these: wear_true)
    b2 both         0  0   0  0
    """
    return pd.concat(
        [
            _bearing("r", 1, pred_b1, life_h=4, failed=True, onset_h=2),
            _bearing("r", 2, pred_b2, life_h=4, failed=False),
        ],
        ignore_index=True,
    )


def test_wear_error_against_each_label_set_beside_trivial_predictors(settings):
    e = evaluate_predictions(_wear_case([0, 0, 0, 0.5], [0, 0, 0, 0.25]), settings)
    by = e.wear_mae_by_labels
    # model vs piecewise: b1 exact, b2 off by .25 once: .25 / 8 = 0.03125
    # model vs linear: b1 0 + .25 + .5 + .25 = 1, b2 .25: 1.25 / 8 = 0.15625
    assert by["piecewise"]["model"] == pytest.approx(0.03125)
    assert by["linear"]["model"] == pytest.approx(0.15625)
    # always 0 vs piecewise: .5 / 8 = 0.0625; vs linear: (.25 + .5 + .75) / 8 = 0.1875
    assert by["piecewise"]["always0"] == pytest.approx(0.0625)
    assert by["linear"]["always0"] == pytest.approx(0.1875)
    # age only vs piecewise: b1 .25 + .5 + .25 = 1, b2 .25 + .5 + .75 = 1.5: 2.5 / 8 = 0.3125
    # age only vs linear: b1 exact, b2 1.5: 1.5 / 8 = 0.1875
    assert by["piecewise"]["age"] == pytest.approx(0.3125)
    assert by["linear"]["age"] == pytest.approx(0.1875)
    # Against its own (piecewise) labels: MAE .03125, RMSE sqrt(.25^2 / 8), failing bearing exact.
    assert e.wear_mae == pytest.approx(0.03125)
    assert e.wear_rmse == pytest.approx(np.sqrt(0.0625 / 8))
    assert e.wear_mae_failed == 0.0
    metrics = e.metrics()
    assert metrics["wear_mae_linear_always0"] == pytest.approx(0.1875)
    assert metrics["wear_mae_piecewise_model"] == pytest.approx(0.03125)


def test_an_always_zero_model_scores_as_the_always_zero_baseline(settings):
    e = evaluate_predictions(_wear_case([0] * 4, [0] * 4), settings)
    for labels in ("linear", "piecewise"):
        by = e.wear_mae_by_labels[labels]
        assert by["model"] == by["always0"]
    assert e.wear_mae == pytest.approx(0.0625) and e.wear_mae_failed == pytest.approx(0.125)


class _Recorder:
    """A model that predicts the mean of its training targets, and remembers them."""

    fitted_on: list[set] = []

    def fit(self, X, y):
        self.mean_ = float(np.mean(y))
        _Recorder.fitted_on.append(set(X["unit"]))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


def test_held_out_predictions_never_fit_on_the_held_out_unit():
    frame = pd.concat(
        [_bearing(run, 1, [0, 0], life_h=2, failed=True, onset_h=0) for run in ("a", "b", "c")],
        ignore_index=True,
    )
    y = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])  # runs a, b, c: 2 rows each
    X = pd.DataFrame({"unit": frame["run"]})
    _Recorder.fitted_on = []
    preds = held_out_predictions(
        frame, X, y, lambda _unit, train: _Recorder().fit(X[train], y[train])
    )
    assert _Recorder.fitted_on == [{"b", "c"}, {"a", "c"}, {"a", "b"}]
    # Held out a: mean of 2..5 = 3.5; b: mean of 0, 1, 4, 5 = 2.5; c: mean of 0..3 = 1.5.
    assert preds["wear_pred"].tolist() == [3.5, 3.5, 2.5, 2.5, 1.5, 1.5]
    with pytest.raises(ValueError, match="at least two runs, found 1"):
        held_out_predictions(frame[frame.run == "a"], X[:2], y[:2], None)


def test_beyond_max_folds_each_run_is_held_out_once_in_a_fold():
    runs = ["a", "b", "c", "d", "e"]
    frame = pd.concat(
        [_bearing(run, 1, [0, 0], life_h=2, failed=True, onset_h=0) for run in runs],
        ignore_index=True,
    )
    y = np.arange(10, dtype=float)
    X = pd.DataFrame({"unit": frame["run"]})
    _Recorder.fitted_on = []
    preds = held_out_predictions(
        frame, X, y, lambda _fold, train: _Recorder().fit(X[train], y[train]), max_folds=2
    )
    assert len(_Recorder.fitted_on) == 2
    held_out = [set(runs) - seen for seen in _Recorder.fitted_on]
    assert held_out[0] | held_out[1] == set(runs) and not held_out[0] & held_out[1]
    # Each row is predicted by the model fitted on the other fold: the mean of that fold's y.
    for fold, other in ((held_out[0], held_out[1]), (held_out[1], held_out[0])):
        rows = frame["run"].isin(fold).to_numpy()
        assert (preds["wear_pred"][rows] == y[frame["run"].isin(other).to_numpy()].mean()).all()
    # Up to max_folds runs, each is its own fold.
    _Recorder.fitted_on = []
    held_out_predictions(frame, X, y, lambda _f, t: _Recorder().fit(X[t], y[t]), max_folds=5)
    assert len(_Recorder.fitted_on) == 5


@pytest.mark.parametrize(
    ("layout", "said"),
    [
        # One run of three bearings: holding out bearings leaves the search two.
        ({"only": (1, 2, 3)}, ["at least two runs, found 1", "--holdout bearing, 3 bearings"]),
        # Two runs of one bearing: each fold's search would have one bearing to cross-validate
        # on (it failed after the first fold's work, saying only "the search needs ...").
        ({"a": (1,), "b": (1,)}, ["which then hold 1 bearing", "add recordings of other"]),
    ],
)
def test_a_table_the_nested_search_cannot_use_is_refused_before_it(
    tmp_path, monkeypatch, layout, said
):
    import json

    from typer.testing import CliRunner

    import wearcast.train
    from wearcast.cli import app

    def no_search(*args, **kwargs):
        raise AssertionError("the search ran on a table that cannot be evaluated")

    monkeypatch.setattr(wearcast.train, "search", no_search)
    rng = np.random.default_rng(0)
    rows = [
        {"run": run, "bearing": b, "timestamp": T0 + pd.Timedelta(hours=h), "std": s, "rms": s}
        for run, bearings in layout.items()
        for b in bearings
        for h, s in enumerate(rng.uniform(0.05, 0.1, 30))
    ]
    table = tmp_path / "table.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    meta = tmp_path / "runs.json"
    end = str(T0 + pd.Timedelta(hours=29))
    run_info = {"failures": {"1": "outer"}, "start": str(T0), "end": end}
    meta.write_text(json.dumps(dict.fromkeys(layout, run_info)))
    args = ["train", str(table), "--runs-meta", str(meta), "--no-register"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    output = " ".join(result.output.split())  # the console wraps long lines
    assert all(words in output for words in said), output
