"""The wear model: scikit-learn contract, search, held-out quality, behaviour, transfer to
real recordings and across channel layouts."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from typer.testing import CliRunner

from wearcast import registry
from wearcast.cli import app
from wearcast.config import Settings
from wearcast.dataset import featurize, read_table
from wearcast.predict import score_path
from wearcast.simulate import plan_simulation, simulate
from wearcast.train import (
    FAMILIES,
    BaselineRelative,
    ClippedRegressor,
    build_pipeline,
    fit_and_evaluate,
    prepare,
    search,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim_settings(tmp_path_factory) -> Settings:
    # Trials bound the search here, never seconds: a busy machine must not change what is tried.
    return Settings(home=tmp_path_factory.mktemp("home"), workers=2, search_budget_s=100_000)


@pytest.fixture(scope="module")
def sim_table(sim_settings, tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("train")
    plan = plan_simulation(sim_settings, runs=3, recordings=150, seed=5)
    simulate(plan, root / "data", workers=2)
    featurize(root / "data", root / "table", sim_settings)
    return read_table(root / "table")


@pytest.fixture(scope="module")
def outcome(sim_table, sim_settings):
    return fit_and_evaluate(
        prepare(sim_table, sim_settings), sim_settings, max_trials=len(FAMILIES)
    )


def test_baseline_relative_follows_the_sklearn_contract():
    X = pd.DataFrame(
        {
            "a": [1.0, 2.0, 4.0],
            "baseline_a": [1.0, 1.0, 1.0],
            "s": [-1.0, 0.0, 1.0],
            "baseline_s": [0.0] * 3,
        }
    )
    t = BaselineRelative(mode="relative")
    assert clone(t).get_params() == {"mode": "relative"}
    assert t.fit(X) is t
    assert list(t.get_feature_names_out()) == ["rel_a", "rel_s"]
    out = t.transform(X)
    assert np.allclose(out[:, 0], np.log([1, 2, 4]))  # positive: log-ratio
    assert np.allclose(out[:, 1], [-1, 0, 1])  # signed: difference
    missing = X.assign(baseline_a=np.nan)
    assert np.allclose(t.transform(missing)[:, 0], np.log([1, 2, 4]))  # fleet baseline


def test_predictions_are_clipped_to_the_wear_range():
    X, y = np.arange(10.0)[:, None], np.linspace(-1, 2, 10)
    pred = ClippedRegressor().fit(X, y).predict(np.array([[-100.0], [100.0]]))
    assert pred.min() == 0.0 and pred.max() == 1.0


def test_forests_predict_as_scikit_learn_does():
    from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 8)), rng.uniform(size=300)
    for forest in (
        RandomForestRegressor(n_estimators=30, random_state=0),
        ExtraTreesRegressor(n_estimators=30, random_state=0),
    ):
        model = ClippedRegressor(forest).fit(X, y)
        assert np.allclose(model.predict(X[:40]), np.clip(model.estimator_.predict(X[:40]), 0, 1))


def test_search_tries_every_family_within_its_trials(sim_table, sim_settings):
    data = prepare(sim_table, sim_settings)
    result = search(data.X, data.y, data.groups, sim_settings, max_trials=len(FAMILIES))
    assert set(result.leaderboard["family"]) == set(FAMILIES)
    assert result.best_mae == result.leaderboard["cv_wear_mae"].min()


def test_a_trial_that_could_not_end_within_the_budget_is_not_started(
    sim_table, sim_settings, monkeypatch
):
    """A trial once started runs to its end, so the budget stopped only the trials after the
    one that crossed it: on the six PRONOSTIA bearings each search's 8.6 s share started four
    families and took 30 to 49 s. On a clock where every trial takes 4 s, a 10 s budget runs
    two (the second ends at 8 s; a third would end at 12)."""
    import wearcast.train as train

    now = [0.0]

    def scored_in_four_seconds(*_args, **_kwargs):
        now[0] += 4.0
        return np.array([-0.1])

    monkeypatch.setattr(train, "time", SimpleNamespace(monotonic=lambda: now[0]))
    monkeypatch.setattr(train, "cross_val_score", scored_in_four_seconds)
    data = prepare(sim_table, sim_settings)
    budget = sim_settings.model_copy(update={"search_budget_s": 10.0})
    result = search(data.X, data.y, data.groups, budget, max_trials=len(FAMILIES))
    assert result.trials == 2 and set(result.leaderboard["family"]) == set(FAMILIES[:2])
    assert result.seconds == 8.0


def test_a_search_of_set_trials_chooses_the_same_on_any_machine(sim_table, sim_settings):
    """With a wall-clock budget alone, how far the search got depended on the machine's load
    (found by a user trial): with the trials set, two searches agree trial by trial."""
    settings = sim_settings.model_copy(update={"search_max_trials": 7, "search_budget_s": 1e4})
    data = prepare(sim_table, settings)
    first, second = (search(data.X, data.y, data.groups, settings) for _ in range(2))
    assert first.trials == second.trials == 7
    columns = ["trial", "cv_wear_mae", "family"]
    pd.testing.assert_frame_equal(first.leaderboard[columns], second.leaderboard[columns])
    assert first.best == second.best


def test_the_search_inside_each_held_out_fold_never_sees_that_run(
    sim_table, sim_settings, monkeypatch
):
    import wearcast.train as train

    searched = []  # (runs the search saw, its budget)
    real_search = train.search

    def recording_search(X, y, groups, settings, **options):
        searched.append(({g.rsplit("/", 1)[0] for g in groups}, settings.search_budget_s))
        return real_search(X, y, groups, settings, **options)

    monkeypatch.setattr(train, "search", recording_search)
    outcome = fit_and_evaluate(prepare(sim_table, sim_settings), sim_settings, max_trials=1)
    runs = sorted(sim_table["run"].unique())
    assert [seen for seen, _ in searched] == [set(runs) - {r} for r in runs] + [set(runs)]
    # One wall-clock budget for the whole step, shared by the 3 fold searches and the final one.
    assert {budget for _, budget in searched} == {sim_settings.search_budget_s / 4}
    assert sorted(outcome.fold_configs) == runs


def test_beyond_holdout_folds_runs_are_held_out_a_fold_at_a_time(
    sim_table, sim_settings, monkeypatch
):
    """Many runs would leave each fold's search a sliver of the budget (24 simulated runs: one
    trial of the cheapest family each): beyond ``holdout_folds`` they are held out in folds."""
    import wearcast.train as train

    searched = []
    real_search = train.search

    def recording_search(X, y, groups, settings, **options):
        searched.append(({g.rsplit("/", 1)[0] for g in groups}, settings.search_budget_s))
        return real_search(X, y, groups, settings, **options)

    monkeypatch.setattr(train, "search", recording_search)
    settings = sim_settings.model_copy(update={"holdout_folds": 2})
    said = []
    outcome = fit_and_evaluate(
        prepare(sim_table, settings), settings, max_trials=1, progress=said.append
    )
    assert said[0] == "3 runs held out in 2 folds (WEARCAST_HOLDOUT_FOLDS)"
    runs = set(sim_table["run"].unique())
    assert len(runs) == 3
    held_out = [runs - seen for seen, _ in searched[:-1]]
    # Two folds that split the runs between them, each searched without its own runs.
    assert len(held_out) == 2 and all(held_out) and set.union(*held_out) == runs
    assert not set.intersection(*held_out)
    assert searched[-1][0] == runs
    assert {budget for _, budget in searched} == {settings.search_budget_s / 3}
    assert len(outcome.fold_configs) == 2
    assert outcome.predictions["wear_pred"].notna().all()


def test_every_family_builds_and_fits(sim_table, sim_settings):
    data = prepare(sim_table, sim_settings)
    always_zero = np.abs(data.y).mean()
    for family in FAMILIES:
        model = build_pipeline({"family": family, "pca_components": 0.95}).fit(data.X, data.y)
        fitted = np.abs(model.predict(data.X) - data.y).mean()
        assert fitted < 0.5 * always_zero, f"{family}: {fitted:.3f} vs always 0 {always_zero:.3f}"


def test_held_out_quality_on_simulated_runs(outcome):
    e = outcome.evaluation
    always_zero = outcome.predictions["wear_true"].abs().mean()  # same held-out rows and labels
    assert e.wear_mae < 0.6 * always_zero, (e.wear_mae, always_zero)
    assert e.wear_mae_by_labels["piecewise"]["always0"] == pytest.approx(always_zero)
    for labels, by in e.wear_mae_by_labels.items():  # each label set beside its own baselines
        assert by["model"] < min(by["always0"], by["age"]), (labels, by)
    assert e.failures == 3 and e.missed_failures == 0
    healthy = [b for b in e.bearings if not b.failed]
    assert sum(b.false_alarms for b in healthy) == 0
    assert all(b.lead_time_h > 0 and not b.alarm_in_first_half for b in e.bearings if b.failed)


def test_predicted_wear_does_not_fall_as_the_defect_grows(outcome):
    preds = outcome.predictions
    for (_, _), rows in preds[preds.failed].groupby(["run", "bearing"]):
        rows = rows.sort_values("timestamp")
        after = rows[rows.timestamp >= rows.onset]
        smooth = after.wear_pred.rolling(9, min_periods=1, center=True).median().to_numpy()
        # Beyond noise: the smoothed wear never drops by more than 0.15 below its running max.
        assert (np.maximum.accumulate(smooth) - smooth).max() < 0.15
        assert smooth[-1] > 0.7 and rows.wear_pred.iloc[: len(rows) // 3].max() < 0.2


@pytest.mark.real_data
def test_real_healthy_recordings_are_not_called_worn(outcome, sim_settings, real_test1_dir: Path):
    results, bad = score_path(real_test1_dir, outcome.model, 0, sim_settings)
    assert not bad and len(results) == 25 * 4
    worst = max(results, key=lambda r: r["wear"])
    assert worst["wear"] < 0.15, worst


def test_a_run_of_another_rig_beside_the_models_is_set_aside_not_scored(
    outcome, sim_settings, tmp_path
):
    """Two runs in one folder, one described as sampled at 25.6 kHz (other spectrum bands):
    checked on the union of the folder's columns, it was scored with its missing bands imputed
    (10 alarms on a healthy copy). Now its files are set aside with the reason, the model's
    rig's run is scored, and featurize refuses to put the two in one table."""
    simulate(plan_simulation(sim_settings, runs=2, recordings=25, seed=12), tmp_path / "data")
    other = tmp_path / "data" / "sim_run_02" / "run.json"
    other.write_text(json.dumps({**json.loads(other.read_text()), "sampling_rate_hz": 25600}))
    results, bad = score_path(tmp_path / "data", outcome.model, 0, sim_settings)
    assert {r["run"] for r in results} == {"sim_run_01"} and len(results) == 25 * 4
    assert len(bad) == 25 and all(q.file.startswith("sim_run_02/") for q in bad)
    assert all(q.reason.startswith("run sim_run_02: the recording has 28 features") for q in bad)
    with pytest.raises(ValueError, match="runs sim_run_01 .* and sim_run_02 .* different features"):
        featurize(tmp_path / "data", tmp_path / "table", sim_settings)
    with pytest.raises(ValueError, match="run sim_run_02: the recording has"):
        score_path(tmp_path / "data" / "sim_run_02", outcome.model, 0, sim_settings)


def test_one_channel_model_scores_two_channel_recordings_and_back(outcome, sim_settings, tmp_path):
    two = plan_simulation(sim_settings, runs=1, recordings=40, channels_per_bearing=2, seed=8)
    simulate(two, tmp_path / "two")
    results, _ = score_path(tmp_path / "two", outcome.model, 0, sim_settings)
    failing = next(iter(two.runs[0].info.failures))
    last = {
        r["bearing"]: r["wear"]
        for r in results
        if r["timestamp"] == two.runs[0].timestamps[-1].isoformat()
    }
    assert last[failing] > 0.5
    assert max(w for b, w in last.items() if b != failing) < last[failing]
    # The reverse: a model trained on two-channel runs scores one-channel recordings.
    featurize(tmp_path / "two", tmp_path / "t2", sim_settings)
    model = build_pipeline(outcome.config).fit(
        *(lambda d: (d.X, d.y))(prepare(read_table(tmp_path / "t2"), sim_settings))
    )
    one = plan_simulation(sim_settings, runs=1, recordings=40, channels_per_bearing=1, seed=9)
    simulate(one, tmp_path / "one")
    results, _ = score_path(tmp_path / "one", model, 0, sim_settings)
    assert len(results) == 40 * 4
    failing = next(iter(one.runs[0].info.failures))
    last = {
        r["bearing"]: r["wear"]
        for r in results
        if r["timestamp"] == one.runs[0].timestamps[-1].isoformat()
    }
    # Trained on one run of 40 recordings only: above the alarm threshold, not near 1.
    assert last[failing] > sim_settings.alarm_threshold
    assert max(w for b, w in last.items() if b != failing) < last[failing]


def test_train_says_when_its_budget_cut_a_search_of_set_trials(sim_table, sim_settings, tmp_path):
    """--max-trials 3 with a small budget chose knn on one run and ridge on the next without a
    word (found by a user trial): the budget stopping a search short of its trials is said."""
    (tmp_path / "table").mkdir()
    sim_table.to_parquet(tmp_path / "table" / "table.parquet")
    args = ["train", str(tmp_path / "table"), "--no-register", "--json"]
    env = {"WEARCAST_HOME": str(sim_settings.home), "WEARCAST_WORKERS": "2"}
    cut = CliRunner().invoke(app, [*args, "--max-trials", "50", "--budget", "0.001"], env=env)
    assert cut.exit_code == 0, cut.output
    said = " ".join(cut.stderr.split())
    trials = json.loads(cut.stdout)["search_trials"]
    assert trials < 50 and f"stopped the search after {trials} of 50 trials" in said


def test_a_search_the_clock_ended_says_it_may_choose_otherwise(sim_table, sim_settings, tmp_path):
    """Two `make run`s on the same data chose differently (7 trials, then 11) without a word
    (a user trial): a search bounded by seconds alone says so, and how to pin it; a search that
    ran its set trials says nothing."""
    (tmp_path / "table").mkdir()
    sim_table.to_parquet(tmp_path / "table" / "table.parquet")
    args = ["train", str(tmp_path / "table"), "--no-register", "--json"]
    env = {"WEARCAST_HOME": str(sim_settings.home), "WEARCAST_WORKERS": "2"}
    clocked = CliRunner().invoke(app, [*args, "--budget", "0.001"], env=env)
    assert clocked.exit_code == 0, clocked.output
    said = " ".join(clocked.stderr.split())
    trials = json.loads(clocked.stdout)["search_trials"]
    assert f"ended the search after {trials} trials" in said and "--max-trials N" in said
    pinned = CliRunner().invoke(app, [*args, "--max-trials", "1"], env=env)
    assert pinned.exit_code == 0, pinned.output
    assert json.loads(pinned.stdout)["search_trials"] == 1
    assert "note:" not in pinned.stderr


def test_training_reports_progress_in_a_log_as_well_as_on_a_terminal(sim_table, tmp_path):
    """Off a terminal the spinner printed nothing: a PRONOSTIA training sat silent in a log for
    6 minutes (a user trial). Each stage of the search is a timestamped line."""
    (tmp_path / "table").mkdir()
    sim_table.to_parquet(tmp_path / "table" / "table.parquet")
    env = {"WEARCAST_HOME": str(tmp_path / "home"), "WEARCAST_WORKERS": "2"}
    args = ["train", str(tmp_path / "table"), "--no-register", "--max-trials", "2"]
    result = CliRunner().invoke(app, [*args, "--budget", "100000"], env=env)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if " training: " in line]
    runs = sorted(sim_table["run"].unique())
    assert lines[0].endswith("training: started")
    for what in [f"without {run}" for run in runs] + ["all data"]:  # one search per fold
        # Its start, and where it got to, said as the next stage begins.
        said = [line for line in lines if f"search ({what}): " in line]
        assert [s.split(": ")[-1].split(",")[0] for s in said] == ["1 trials", "2 trials"], said
    assert all(re.match(r"\d\d:\d\d:\d\d training: ", line) for line in lines)


@pytest.mark.slow
def test_the_main_job_on_a_single_run_holds_out_its_bearings(sim_settings, tmp_path):
    """`make run DATA=` a folder of one run (IMS 1st_test alone) stopped with "hold out bearings
    instead (--holdout bearing)", an option the main job did not have (a user trial)."""
    simulate(plan_simulation(sim_settings, runs=1, recordings=60, seed=4), tmp_path / "data")
    env = {
        "WEARCAST_HOME": str(tmp_path / "home"),
        "WEARCAST_WORKERS": "2",
        "WEARCAST_SEARCH_MAX_TRIALS": "1",
        "WEARCAST_SEARCH_BUDGET_S": "100000",
    }
    result = CliRunner().invoke(app, ["pipeline", str(tmp_path / "data")], env=env)
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "needs at least two runs, found 1: the main job holds out bearings instead" in said
    assert "version 1: promoted to champion" in " ".join(result.stdout.split())
    client = registry.connect(Settings(home=tmp_path / "home"))
    assert client.get_model_version(sim_settings.model_name, "1").tags["holdout"] == "bearing"
