"""MLflow registry: the promotion gate, rollback, loading the champion, batch scoring."""

from __future__ import annotations

import json
import re
import struct
import subprocess
import sys
from pathlib import Path

import joblib
import mlflow
import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from wearcast import cli, registry
from wearcast.cli import app, next_step
from wearcast.config import Settings
from wearcast.dataset import featurize, load_training_table, read_table
from wearcast.evaluate import BearingOutcome, Evaluation
from wearcast.model import FAMILIES
from wearcast.prognostics_eval import evaluate_prognostics
from wearcast.retrain import gate_challenger, train_challenger
from wearcast.simulate import plan_simulation, simulate
from wearcast.train import prepare

pytestmark = pytest.mark.slow

GOOD = {
    "family": "random_forest",
    "params": {"n_estimators": 60},
    "pca_components": 0,
    "features": "both",
}
BAD = {"family": "ridge", "params": {"alpha": 1e6}, "pca_components": 0, "features": "absolute"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("reg")
    settings = Settings(home=root / "home", workers=2)
    simulate(plan_simulation(settings, runs=2, recordings=80, seed=4), root / "data", workers=2)
    featurize(root / "data", root / "table", settings)
    data = prepare(read_table(root / "table"), settings)
    return settings, data, root


def _evaluation(wear_mae_per_bearing: list[float]) -> Evaluation:
    """A held-out evaluation of four healthy bearings with these wear errors, nothing else."""
    bearings = [
        BearingOutcome("r", b, False, 10.0, None, None, False, 0, 10.0, mae)
        for b, mae in enumerate(wear_mae_per_bearing, start=1)
    ]
    mean = float(np.mean(wear_mae_per_bearing))
    return Evaluation(mean, mean, float("nan"), {}, 0.0, 0, 0, None, None, bearings)


def _register(settings, config, root):
    version = train_challenger(settings, root / "table", config=config)["version"]
    return version, gate_challenger(settings, root / "table", version)


def test_gate_promotes_only_better_models_and_rollback_restores(world):
    settings, data, root = world
    client = registry.connect(settings)
    v1, d1 = _register(settings, BAD, root)
    assert d1.promoted and "first model" in d1.reason
    # The version's metrics (what /v1/models shows) carry the held-out figures of the alarm
    # the API raises, the health indicator's, beside the wear rule's: only the latter were.
    logged = json.loads(client.get_model_version(settings.model_name, str(v1)).tags["metrics"])
    served = evaluate_prognostics(load_training_table(root / "table", settings), settings)
    expected = served.metrics()
    assert {"health_false_alarms_per_1000h", "rms_rule_missed_failures"} <= set(expected)
    assert {k: logged[k] for k in expected} == pytest.approx(expected)
    health = served.detector_summary().set_index("detector").loc["wearcast health"]
    assert expected["health_missed_failures"] == health["missed"]
    v2, d2 = _register(settings, GOOD, root)
    assert d2.promoted and registry.champion_version(client, settings) == v2
    v3, d3 = _register(settings, BAD, root)
    assert not d3.promoted and "does not beat" in d3.reason
    assert (
        client.get_model_version(settings.model_name, str(v3)).tags["gate_decision"] == "challenger"
    )
    assert registry.champion_version(client, settings) == v2
    # A lower mean error made of per-bearing differences that go both ways is noise: kept.
    other = {**GOOD, "params": {"n_estimators": 61}}
    v4 = train_challenger(settings, root / "table", config=other)["version"]
    per_bearing = {
        json.dumps(GOOD): [0.10, 0.20, 0.10, 0.20],  # the champion (v2): mean 0.150
        json.dumps(other): [0.05, 0.25, 0.04, 0.24],  # the challenger: mean 0.145
    }
    d4 = registry.gate(
        client, settings, v4, lambda config: _evaluation(per_bearing[json.dumps(config)])
    )
    assert settings.promotion_margin == 0 and not d4.promoted
    assert "-0.005 per held-out bearing" in d4.reason and "twice the standard error" in d4.reason
    # The gate's own figures (not the nested ones train printed before it), said as such.
    assert "on the same held-out folds, both configurations refitted: " in d4.reason
    assert "wear MAE 0.1450 against the champion's 0.1500" in d4.reason
    assert registry.champion_version(client, settings) == v2
    # models:/<name>@champion is the promoted model.
    loaded = mlflow.sklearn.load_model(f"models:/{settings.model_name}@champion")
    good = mlflow.sklearn.load_model(f"models:/{settings.model_name}/{v2}")
    assert np.allclose(loaded.predict(data.X.head(50)), good.predict(data.X.head(50)))
    assert registry.rollback(client, settings) == v1
    assert registry.champion_version(client, settings) == v1
    with pytest.raises(ValueError, match="no previous champion"):
        registry.rollback(client, settings)


def test_the_champions_configuration_retrained_on_more_data_is_promoted(world, tmp_path):
    """Retrained weekly with the configuration that already wins, a model tied with the
    champion by construction (the gate evaluates both configurations on the same table) and was
    never promoted: the champion stayed the model of the first week's data forever (found by
    an operations trial). The same configuration on the same or a smaller table is kept."""
    settings, _, root = world
    settings = Settings(home=tmp_path / "home", workers=2)
    frame = read_table(root / "table")
    (tmp_path / "first-week").mkdir()
    frame.drop(frame.index[::10]).to_parquet(tmp_path / "first-week" / "table.parquet")
    client = registry.connect(settings)
    v1 = train_challenger(settings, tmp_path / "first-week", config=GOOD)["version"]
    assert gate_challenger(settings, tmp_path / "first-week", v1).promoted
    v2 = train_challenger(settings, root / "table", config=GOOD)["version"]
    decision = gate_challenger(settings, root / "table", v2)
    assert decision.promoted and "newer table" in decision.reason, decision.reason
    assert f"({len(frame)} rows, the champion's {len(frame) - len(frame.index[::10])})" in (
        decision.reason
    )
    assert registry.champion_version(client, settings) == v2
    for table, why in ((tmp_path / "first-week", "smaller table"), (root / "table", "same table")):
        again = train_challenger(settings, table, config=GOOD)["version"]
        decision = gate_challenger(settings, table, again)
        assert not decision.promoted and why in decision.reason, decision.reason
    assert registry.champion_version(client, settings) == v2
    # Another configuration on newer data need only be as good: a tie within the comparison's
    # noise serves the newer data; worse beyond it is kept out.
    late = frame[frame.run == frame.run.iloc[0]]
    for week, extra in (("third-week", 1), ("fourth-week", 2)):
        (tmp_path / week).mkdir()
        grown = pd.concat([frame] + [late.assign(run=f"late_{i}") for i in range(extra)])
        grown.to_parquet(tmp_path / week / "table.parquet")
    other = {**GOOD, "params": {"n_estimators": 61}}
    worse = {**GOOD, "params": {"n_estimators": 62}}
    per_bearing = {
        json.dumps(GOOD): [0.10, 0.20, 0.10, 0.20],
        json.dumps(other): [0.11, 0.19, 0.12, 0.19],  # +0.0025: a tie
        json.dumps(worse): [0.20, 0.30, 0.20, 0.30],  # +0.1 over other's: worse
    }
    fake = lambda config: _evaluation(per_bearing[json.dumps(config)])  # noqa: E731
    v3 = train_challenger(settings, tmp_path / "third-week", config=other)["version"]
    decision = registry.gate(client, settings, v3, fake)
    assert decision.promoted and "ties go to the newer data" in decision.reason, decision.reason
    # The figures said show the verdict (at four decimals a gate said "-0.0003 ...: does not
    # beat it by 0.0003"): +0.0025 within the margin it states.
    said = re.search(r"per held-out bearing ([-+][\d.e-]+), within ([\d.e-]+)", decision.reason)
    assert said and float(said[1]) == pytest.approx(0.0025), decision.reason
    assert abs(float(said[1])) <= float(said[2])
    v4 = train_challenger(settings, tmp_path / "fourth-week", config=worse)["version"]
    decision = registry.gate(client, settings, v4, fake)
    assert not decision.promoted and "worse by more than" in decision.reason, decision.reason
    assert registry.champion_version(client, settings) == v3


def test_the_gate_keeps_a_champion_of_another_rig_and_says_why(world, tmp_path):
    """A model trained on recordings of another sampling rate (other bands) is not compared
    with a champion it cannot replace: kept, with the way to serve it (the gate had compared
    configurations, kept the old champion and said only "does not beat")."""
    settings, _, root = world
    home = Settings(home=tmp_path / "home", workers=2)
    first, _ = _register(home, BAD, root)
    other = home.model_copy(update={"sampling_rate_hz": 25_600.0})
    simulate(plan_simulation(other, runs=2, recordings=40, seed=5), tmp_path / "data", workers=2)
    featurize(tmp_path / "data", tmp_path / "table", other)
    version = train_challenger(other, tmp_path / "table", config=BAD)["version"]
    decision = gate_challenger(other, tmp_path / "table", version)
    assert not decision.promoted and decision.champion_before == first
    assert "another rig" in decision.reason and f"wearcast promote {version}" in decision.reason
    assert registry.champion_version(registry.connect(home), home) == first


def test_the_gate_says_how_a_challengers_inputs_differ():
    """A challenger trained on 8 of the champion's columns was said to take "other inputs (0 of
    its 8 not among the champion's)" (a user trial): the message now says which way they
    differ."""
    champion = {f"f{i}" for i in range(264)}
    assert registry._input_difference({"f1", "f2"}, champion) == (
        "2 inputs against 264, 262 of the champion's it lacks"
    )
    assert registry._input_difference({"f1", "g"}, {"f1", "f2", "f3"}) == (
        "2 inputs against 3, 1 of its own the champion lacks, 2 of the champion's it lacks"
    )


def test_promote_and_predict_commands(world, monkeypatch):
    settings, data, root = world
    monkeypatch.setenv("WEARCAST_HOME", str(settings.home))
    runner = CliRunner()
    result = runner.invoke(app, ["promote", "999"])
    assert result.exit_code == 2 and "cannot promote version 999" in result.output
    for command in (["predict", str(root / "data")], ["evaluate", str(root / "table")]):
        result = runner.invoke(app, [*command, "--model-version", "999"])  # was a traceback
        assert result.exit_code == 2, result.output
        assert f"model '{settings.model_name}' has no version 999 (registered: " in result.stderr
    target = sorted((root / "data" / "sim_run_01").glob("2004.*"))
    result = runner.invoke(app, ["predict", str(root / "data" / "sim_run_01"), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == len(target) * 4
    assert {"file", "bearing", "wear", "model_version", "alarm", "rul_h"} <= set(rows[0])
    # One file that cannot be scored: an error and its reason, not an empty success.
    bad = root / "bad" / target[0].name
    bad.parent.mkdir()
    lines = target[0].read_text().splitlines(keepends=True)
    lines[4] = "hello" + lines[4][lines[4].index("\t") :]
    bad.write_text("".join(lines))
    result = runner.invoke(app, ["predict", str(bad), "--json"])
    assert result.exit_code == 2 and result.stdout == ""
    assert "quarantined" in result.stderr and "1 recording(s) quarantined" in result.stderr
    # Errors are text, not rich markup: "[low, high]" was swallowed as a style tag.
    (bad.parent / "run.json").write_text('{"envelope_band_hz": [5000, 3000]}')
    result = runner.invoke(app, ["predict", str(bad.parent)])
    assert "envelope_band_hz must be [low, high] with low < high" in result.stderr


def test_the_predict_table_shows_every_value_whole_in_80_columns(world, monkeypatch, tmp_path):
    """Piped output is 80 columns wide: every file name and remaining-life interval whole,
    one table per run (paths with the run's folder had pushed the interval out)."""
    _, _, root = world
    home = Settings(home=tmp_path / "home", workers=2)
    _register(home, BAD, root)  # the first version: champion
    monkeypatch.setenv("WEARCAST_HOME", str(home.home))
    runner = CliRunner()
    folder = str(root / "data")
    listed = runner.invoke(app, ["predict", folder, "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    command = ["predict", folder, "--recordings"]
    shown = runner.invoke(app, command, env={"COLUMNS": "80"}).stdout
    assert len({r["run"] for r in rows}) > 1
    for r in rows:
        assert Path(r["file"]).name in shown
        assert f"{r['rul_h']:.1f} ({r['rul_low_h']:.1f}-{r['rul_high_h']:.1f})" in shown
    assert max(len(line) for line in shown.splitlines()) <= 80
    # What each bearing's last remaining life rests on, which only --json said (a user trial).
    said = " ".join(shown.split())
    last = {(r["run"], r["bearing"]): r["rul_method"] for r in rows}
    for (run, bearing), method in last.items():
        line = next(s for s in said.split("remaining life of ")[1:] if f"{run}:{bearing}" in s)
        assert line.split(" at the last recording: ")[1].startswith(" ".join(method.split()))
    # Into a file or a pipe with no COLUMNS, rich's 80 columns wrapped these lines and the
    # tables' cells: 160 there.
    monkeypatch.delenv("COLUMNS", raising=False)
    piped = runner.invoke(app, ["predict", folder]).stdout.splitlines()
    whole = [line for line in piped if line.startswith("remaining life of ")]
    assert whole and all(len(line) > 80 for line in whole)


def test_predict_shows_each_bearings_latest_answer_and_plots_each_run(world, monkeypatch, tmp_path):
    """A run of hundreds of recordings printed a row per recording and bearing, its latest
    state scrolled far above: by default each bearing's latest answer, the history a plot."""
    _, _, root = world
    home = Settings(home=tmp_path / "home", workers=2)
    _register(home, BAD, root)
    monkeypatch.setenv("WEARCAST_HOME", str(home.home))
    runner = CliRunner()
    folder = str(root / "data")
    rows = json.loads(runner.invoke(app, ["predict", folder, "--json"]).stdout)
    plots = tmp_path / "plots"
    result = runner.invoke(app, ["predict", folder, "--plots", str(plots)])
    assert result.exit_code == 0, result.output
    table = [line for line in result.stdout.splitlines() if line.startswith("│")]
    latest = {(r["run"], r["bearing"]): r for r in rows}  # in time order per bearing
    assert len(table) == len(latest) < len(rows)
    for r in latest.values():
        cells = (
            Path(r["file"]).name,
            f" {r['bearing']} ",
            f" {r['health']:.2f} ",
            f" {r['rul_h']:.1f} (",
        )
        assert any(all(cell in line for cell in cells) for line in table), r
    assert Path(rows[0]["file"]).name not in result.stdout  # a run's first recording: history
    # An alarm episode says when it was raised, not only when its watch began.
    raised = [e for r in rows for e in r.get("episodes", []) if e["raised"]]
    assert raised
    said = " ".join(result.stdout.split())
    assert all(f"from {e['start']} (alarm raised {e['raised']})" in said for e in raised)
    for run in {r["run"] for r in rows}:
        count = len({r["file"] for r in rows if r["run"] == run})
        assert f"{run} ({count} recordings; each bearing's latest)" in result.stdout
        png = (plots / f"{run}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        # A panel per bearing: the figure is 2.6 inches a bearing at 100 dpi.
        width, height = struct.unpack(">II", png[16:24])
        assert (width, height) == (1000, 260 * len({r["bearing"] for r in rows}))


def test_predict_says_when_the_wear_it_shows_was_no_better_than_always_0(
    world, monkeypatch, tmp_path
):
    """On PRONOSTIA the wear model's held-out error was above always 0's, yet predict showed
    its wear beside the state with no word (a user trial): it says so, from the version's
    own held-out figures, and says nothing where the model beat always 0."""
    _, _, root = world
    home = Settings(home=tmp_path / "home", workers=2)
    _register(home, BAD, root)
    monkeypatch.setenv("WEARCAST_HOME", str(home.home))
    store = registry.client(home)
    folder = str(root / "data" / "sim_run_01")
    for model, said in ((0.2678, True), (0.1, False)):
        metrics = {"wear_mae_piecewise_model": model, "wear_mae_piecewise_always0": 0.2322}
        store.set_model_version_tag(home.model_name, "1", "metrics", json.dumps(metrics))
        result = CliRunner().invoke(app, ["predict", folder, "--json"])
        assert result.exit_code == 0, result.output
        json.loads(result.stdout)  # the note goes to stderr: stdout stays JSON
        note = (
            "version 1: against the piecewise labels the wear model's held-out error (0.2678) "
            "is no better than always 0 (0.2322); the alarm state and remaining life come from "
            "the health indicator, not wear"
        )
        assert (note in " ".join(result.stderr.split())) is said, result.stderr


def test_external_feature_table_with_run_metadata(tmp_path, world):
    settings, data, _ = world
    frame = read_table(world[2] / "table")[
        ["run", "bearing", "timestamp", "std", "kurtosis", "env_bpfo_snr"]
    ]
    csv = tmp_path / "mine.csv"
    frame.to_csv(csv, index=False)
    meta = tmp_path / "runs.json"
    ends = frame.groupby("run").timestamp.max()
    meta.write_text(
        json.dumps(
            {
                r: {"failures": {"1" if r.endswith("1") else "2": "outer"}, "end": str(t)}
                for r, t in ends.items()
            }
        )
    )
    result = CliRunner().invoke(
        app,
        [
            "train",
            str(csv),
            "--runs-meta",
            str(meta),
            "--max-trials",
            str(len(FAMILIES)),  # each family once (defaults, cheapest first)
            "--no-register",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    # Beside the trivial predictors on the same held-out rows and labels (piecewise).
    assert metrics["wear_mae"] == pytest.approx(metrics["wear_mae_piecewise_model"])
    # 0.70x here (boosting chosen); 0.27x when a random forest's lucky draw came second
    assert metrics["wear_mae"] < 0.8 * metrics["wear_mae_piecewise_always0"], metrics
    assert metrics["wear_mae"] < metrics["wear_mae_piecewise_age"], metrics
    missing = tmp_path / ("a-folder-name-longer-than-a-terminal-" * 4) / "nope.csv"
    bad = CliRunner().invoke(app, ["train", str(missing)])
    assert bad.exit_code == 2 and f"{missing}: no such file" in bad.output


def test_the_training_report_sets_the_model_beside_the_rms_rule(world, monkeypatch):
    settings, _, root = world
    summary = train_challenger(settings, root / "table", config=GOOD, register=False)
    report = Path(summary["report"]).read_text()
    section = report[report.index("## Early warning beside the RMS rule") :]
    frame = load_training_table(root / "table", settings)
    expected = evaluate_prognostics(frame, settings).detector_summary().set_index("detector")
    row = re.search(r"\| RMS rule +\|(.*)\|", section)[1].split("|")
    assert int(row[1]) == expected.loc["RMS rule", "missed"]
    assert float(row[2]) == pytest.approx(expected.loc["RMS rule", "median_lead_h"], abs=0.01)
    # The summary (train --json, the DAG) and the terminal carry the served detector's figures
    # too: the wear model's own table used to be all a user saw after training.
    served = {r["detector"]: r for r in summary["early_warning"]}
    health = expected.loc["wearcast health"]
    assert served["wearcast health"]["false_alarms"] == health["false_alarms"]
    json.dumps([summary["early_warning"], summary["remaining_life"]], allow_nan=False)
    monkeypatch.setattr(cli, "console", Console(width=200))  # no name folded, whatever the tty
    with cli.console.capture() as captured:
        cli._print_training(summary, settings)
    printed = " ".join(captured.get().split())
    assert "the API alarms on the health indicator" in printed
    assert "early warning" in printed and "wearcast health" in printed


def test_artifacts_do_not_depend_on_what_the_training_process_imported(tmp_path):
    """dill (imported by Airflow's task runner before anything else) replaces reducers in the
    pure-Python pickler's dispatch table, which joblib copies when imported, so joblib files
    written in a DAG task named dill, which the API lacks. Here a process patches that table
    first, then writes an artifact holding a pandas Series with an Arrow string index (its
    buffers pickle the ``bytearray`` type), as the baseline medians are."""
    path = tmp_path / registry.PROGNOSTICS_FILE
    writer = f"""
import pickle

def as_dill_would(pickler, obj):
    raise AssertionError(f"pickled {{obj!r}} through pickle._Pickler's dispatch table")

pickle._Pickler.dispatch[type] = as_dill_would

import pandas as pd
from wearcast import registry

medians = pd.Series([0.1, 0.2], index=pd.Index(["rms", "kurtosis"], dtype="str"))
registry.dump_artifact({{"medians": medians}}, {str(path)!r})
"""
    subprocess.run([sys.executable, "-c", writer], check=True, capture_output=True)
    expected = pd.Series([0.1, 0.2], index=pd.Index(["rms", "kurtosis"], dtype="str"))
    assert joblib.load(path)["medians"].equals(expected)


def test_the_main_jobs_next_step_after_a_challenger_is_a_command_that_works(world, monkeypatch):
    """After a version kept as challenger the main job said `wearcast predict DATA` scores
    with the champion, which can be another rig's model that refuses these recordings (found
    by a fresh-clone trial): it now names the version."""
    settings, _, root = world
    monkeypatch.setenv("WEARCAST_HOME", str(settings.home))
    _register(settings, GOOD, root)
    version, decision = _register(settings, BAD, root)
    assert not decision.promoted
    hint = next_step({"promoted": False, "version": version}, root / "data")
    command = re.search(r"\[bold\](wearcast predict [^\[]+)\[/bold\]", hint)[1].split()[1:]
    assert command[-2:] == ["--model-version", str(version)]
    result = CliRunner().invoke(app, [*command, "--json"])
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert answers and {a["model_version"] for a in answers} == {version}
