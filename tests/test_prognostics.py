"""Early warning and remaining life, leave one run out, on a labelled synthetic table."""

import numpy as np
import pandas as pd
import pytest

from wearcast.config import Settings
from wearcast.prognostics_eval import DETECTORS, ESTIMATORS, evaluate_prognostics


def _table(runs: int = 4, recordings: int = 200, seed: int = 0) -> pd.DataFrame:
    """Bearing 1 of each run fails: its levels grow exponentially over the last 25 % of life;
    bearing 2 stays healthy. Lives differ from run to run."""
    rng = np.random.default_rng(seed)
    frames = []
    for r in range(runs):
        life_h = 40.0 * (1 + 0.3 * r)
        hours = np.linspace(0, life_h, recordings, endpoint=False)
        onset = 0.75 * life_h
        for bearing in (1, 2):
            grow = np.exp(np.clip(hours - onset, 0, None) * 3 / (life_h - onset))
            levels = np.exp(rng.normal(0, 0.05, (recordings, 3)))
            if bearing == 1:
                levels *= grow[:, None]
            failed = bearing == 1
            frames.append(
                pd.DataFrame(
                    {
                        "run": f"run{r}",
                        "bearing": bearing,
                        "timestamp": pd.Timestamp("2024-01-01") + pd.to_timedelta(hours, "h"),
                        "rms": levels[:, 0],
                        "peak": 4 * levels[:, 1],
                        "band_a": 0.1 * levels[:, 2],
                        "elapsed_h": hours,
                        "failed": failed,
                        "onset": pd.Timestamp("2024-01-01") + pd.Timedelta(hours=onset)
                        if failed
                        else pd.NaT,
                        "rul_h": life_h - hours if failed else np.nan,
                        "wear_piecewise": np.clip((hours - onset) / (life_h - onset), 0, 1)
                        if failed
                        else 0.0,
                        "health_indicator": levels[:, 0],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def test_every_failure_is_caught_late_in_life_and_remaining_life_is_scored(tmp_path):
    settings = Settings(home=tmp_path, baseline_recordings=10)
    result = evaluate_prognostics(_table(), settings)
    health = result.alarms[result.alarms["detector"] == DETECTORS[0]]
    failed = health[health["failed"]]
    assert len(failed) == 4 and failed["lead_h"].notna().all()
    assert (failed["lead_h"] > 0).all() and not failed["alarm_in_first_half"].any()
    assert (failed["lead_h"] < 0.25 * failed["life_h"] + 1).all()  # not before the rise began
    assert health[~health["failed"]]["false_alarms"].sum() == 0
    detectors = result.detector_summary().set_index("detector")
    assert list(detectors.index) == list(DETECTORS)
    never = detectors.loc[DETECTORS[3]]  # always 0: the bar every detector must clear
    assert never["missed"] == never["failures"] == 4 and never["false_alarms"] == 0
    assert detectors.loc[DETECTORS[0], "missed"] == 0
    summary = result.rul_summary().set_index("estimator")
    assert list(summary.index) == list(ESTIMATORS)
    assert len(result.rul) == 4 * 4 * len(ESTIMATORS)  # bearings x cuts x estimators
    # After the alarm the bearing's own trend beats the fleet's mean life at the 90 % cut, and
    # every interval given there holds the true remaining life.
    late = result.rul[result.rul["cut"] == 0.9].set_index("estimator")
    assert late.loc[ESTIMATORS[0], "covered"].all()
    ours = (late.loc[ESTIMATORS[0], "estimate_h"] - late.loc[ESTIMATORS[0], "true_h"]).abs()
    fleet = (late.loc[ESTIMATORS[2], "estimate_h"] - late.loc[ESTIMATORS[2], "true_h"]).abs()
    assert ours.mean() < fleet.mean()


def test_a_wandering_sensor_offset_is_not_taken_for_damage(tmp_path):
    """In the second half of one run, the healthy bearing's sensor offset wanders off by 1 g (a
    failing cable or bias supply): rms and peak, measured from zero, rise by half; std and the
    band, about the mean, do not. No alarm on it, and the failing bearings are still caught."""
    table = _table()
    table["std"] = table["rms"]
    drifting = (table["run"] == "run0") & (table["bearing"] == 2) & (table["elapsed_h"] > 20)
    table["mean"] = np.where(drifting, -1.1, -0.1)
    table["rms"] = np.hypot(table["std"], table["mean"])
    table["peak"] += table["mean"].abs()
    result = evaluate_prognostics(table, Settings(home=tmp_path, baseline_recordings=10))
    health = result.alarms[result.alarms["detector"] == DETECTORS[0]].set_index(["run", "bearing"])
    assert health.loc[("run0", 2), "false_alarms"] == 0
    assert health[health["failed"]]["lead_h"].notna().all()


def test_a_table_without_rms_is_refused_with_the_reason(tmp_path):
    # `wearcast evaluate --life` on such a table stopped with a KeyError.
    table = _table().drop(columns="rms")
    with pytest.raises(ValueError, match="no rms column"):
        evaluate_prognostics(table, Settings(home=tmp_path, baseline_recordings=10))


def test_the_fleets_alarm_to_failure_times_start_at_the_alarm_that_caught_the_failure(tmp_path):
    """They began at a failed bearing's first alarm, even one that ended long before the
    failure (PRONOSTIA's Bearing2_1: 1.84 h counted where its lasting alarm came 1.04 h
    before), which widened every estimate after an alarm. The evaluation catches a failure by
    the alarm still open at it; so does the fleet's clock now."""
    from wearcast.baseline import add_baselines
    from wearcast.dataset import model_columns
    from wearcast.prognostics import fit_prognostics

    # A rate at which four spiking recordings among the healthy do not set the threshold.
    settings = Settings(
        home=tmp_path, baseline_recordings=10, health_false_alarm_rate=0.01, health_clear_rate=0.05
    )
    table = _table()
    spike = (table["run"] == "run0") & (table["bearing"] == 1) & table.index.isin(range(60, 64))
    table.loc[spike, ["rms", "peak", "band_a"]] *= 10  # an early alarm that clears
    columns = model_columns(table)
    prognostics = fit_prognostics(add_baselines(table, columns, 10), columns, settings)
    lasting = []
    for _, rows in table[table["failed"]].groupby("run"):
        hours = rows["elapsed_h"].to_numpy()
        health = prognostics.health.score_samples(add_baselines(rows, columns, 10))
        episodes = prognostics.track(health).alarms
        assert episodes[-1].end is None  # every failure caught by a lasting alarm
        life = hours[-1] + rows["rul_h"].iloc[-1]
        lasting.append(life - hours[episodes[-1].raised])
        if rows["run"].iloc[0] == "run0":
            assert len(episodes) == 2  # the spike's alarm came first and cleared
    assert prognostics.life.after_alarm_[0] == pytest.approx(np.mean(np.log(lasting)))
