"""The training table: incremental, crash-safe, labelled."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wearcast.config import Settings, table_folder
from wearcast.dataset import (
    degradation_onset,
    featurize,
    label_table,
    model_columns,
    read_table,
)
from wearcast.rig import Defect, RunInfo
from wearcast.simulate import plan_simulation, simulate


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    plan = plan_simulation(Settings(home=root), runs=2, recordings=60, faults_per_run=2, seed=3)
    simulate(plan, root / "data", workers=2)
    return root / "data"


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["run", "bearing", "timestamp"]).reset_index(drop=True)


def test_table_has_one_row_per_run_bearing_recording(sim_data, tmp_path, settings):
    result = featurize(sim_data, tmp_path / "t", settings)
    table = read_table(tmp_path / "t")
    assert result.ingested == 2 * 58 and result.quarantined == 4
    assert len(table) == 2 * 58 * 4 == result.rows
    assert not table.duplicated(["run", "bearing", "timestamp"]).any()
    assert {
        "run",
        "bearing",
        "timestamp",
        "elapsed_h",
        "wear",
        "rul_h",
        "std",
        "env_bpfo_snr",
    } <= set(table.columns)
    quarantine = json.loads((tmp_path / "t" / "quarantine.json").read_text())
    assert len(quarantine) == 4 and all(q["reason"] for q in quarantine)


def test_rerun_reads_only_new_or_changed_files(sim_data, tmp_path, settings):
    data = tmp_path / "data"
    shutil.copytree(sim_data, data)
    featurize(data, tmp_path / "t", settings)
    assert featurize(data, tmp_path / "t", settings).processed == 0
    # New recordings arrive, and one old file is replaced by different content.
    extra = plan_simulation(settings, runs=1, recordings=5, seed=9, run_prefix="late")
    simulate(extra, data)
    victim = sorted((data / "sim_run_01").glob("2004.*"))[10]
    donor = sorted((data / "sim_run_02").glob("2004.*"))[10]
    victim.write_bytes(donor.read_bytes())
    result = featurize(data, tmp_path / "t", settings)
    assert result.processed == 6
    table = read_table(tmp_path / "t")
    assert len(table) == (2 * 58 + 5) * 4
    assert not table.duplicated(["run", "bearing", "timestamp"]).any()
    replaced = table[table.file == str(victim.relative_to(data))].sort_values("bearing")
    original = table[table.file == str(donor.relative_to(data))].sort_values("bearing")
    assert np.allclose(replaced["std"].to_numpy(), original["std"].to_numpy())
    # A recording deleted (and a quarantined one) leaves the table and the quarantine list:
    # its rows stayed for good (found by an operations trial).
    quarantined = json.loads((tmp_path / "t" / "quarantine.json").read_text())[0]["file"]
    victim.unlink()
    (data / quarantined).unlink()
    result = featurize(data, tmp_path / "t", settings)
    table = read_table(tmp_path / "t")
    assert result.processed == 0 and len(table) == (2 * 58 + 5 - 1) * 4 == result.rows
    assert str(victim.relative_to(data)) not in set(table.file)
    left = [q["file"] for q in json.loads((tmp_path / "t" / "quarantine.json").read_text())]
    assert quarantined not in left and len(left) == result.quarantined == 3


@pytest.mark.slow
def test_killed_midway_then_rerun_gives_the_uninterrupted_table(sim_data, tmp_path):
    env = {**os.environ, "WEARCAST_HOME": str(tmp_path / "home"), "WEARCAST_WORKERS": "2"}
    cmd = [sys.executable, "-m", "wearcast", "featurize", str(sim_data), "--batch-size", "8"]
    subprocess.run(
        [*cmd, "--out", str(tmp_path / "whole")], env=env, check=True, capture_output=True
    )
    proc = subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "killed")], env=env, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "killed" / "parts").glob("part-*.json"))) < 3:
        assert time.monotonic() < deadline and proc.poll() is None, "featurize finished too early"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "table.parquet").exists()
    subprocess.run(
        [*cmd, "--out", str(tmp_path / "killed")], env=env, check=True, capture_output=True
    )
    whole, resumed = (_sorted(read_table(tmp_path / d)) for d in ("whole", "killed"))
    pd.testing.assert_frame_equal(whole, resumed)


def _frame(n: int, rise_at: int) -> pd.DataFrame:
    times = pd.date_range("2004-01-01", periods=n, freq="10min")
    rows = []
    for bearing in (1, 2):
        std = np.full(n, 0.07) + np.random.default_rng(bearing).normal(0, 0.001, n)
        if bearing == 1:
            std[rise_at:] *= np.linspace(1.3, 4.0, n - rise_at)
        rows.append(pd.DataFrame({"run": "r", "bearing": bearing, "timestamp": times, "std": std}))
    return pd.concat(rows, ignore_index=True)


def test_labels_linear_piecewise_and_healthy_so_far(settings):
    frame = _frame(100, rise_at=70)
    start, end = frame.timestamp.min(), frame.timestamp.max()
    info = RunInfo(name="r", failures={1: Defect.OUTER_RACE}, start=start, end=end)
    labelled = label_table(frame, {"r": info}, settings)
    failing = labelled[labelled.bearing == 1].reset_index(drop=True)
    healthy = labelled[labelled.bearing == 2]
    assert failing.wear_linear.iloc[0] == 0 and failing.wear_linear.iloc[-1] == 1
    assert np.all(np.diff(failing.wear_linear) > 0)
    assert failing.onset.iloc[0] == failing.timestamp.iloc[70]
    assert (failing.wear_piecewise.iloc[:71] == 0).all() and failing.wear_piecewise.iloc[-1] == 1
    assert failing.rul_h.iloc[0] == pytest.approx(99 / 6)
    assert (healthy.wear_linear == 0).all() and (healthy.wear_piecewise == 0).all()
    assert healthy.rul_h.isna().all() and healthy.rul_censored_h.iloc[0] == pytest.approx(99 / 6)
    assert (labelled.wear == labelled.wear_piecewise).all()


def test_a_slow_rise_is_dated_from_where_it_left_the_baseline_not_where_it_was_confirmed(settings):
    # The level creeps up 0.4 % per recording from recording 60 (noise 1 %): the onset rule
    # confirms it only once it is 8 % and five noise spreads up, about 25 recordings later.
    n, began = 120, 60
    level = np.ones(n) + np.random.default_rng(3).normal(0, 0.01, n)
    level[began:] *= 1 + 0.004 * np.arange(1, n - began + 1)
    times = pd.Series(pd.date_range("2004-01-01", periods=n, freq="10min"))
    onset = degradation_onset(times, level, settings)
    assert times.iloc[began - 3] <= onset <= times.iloc[began + 3]


def test_piecewise_labels_start_at_the_runs_true_onset_where_it_is_known(settings):
    frame = _frame(100, rise_at=70)  # the level rises at recording 70: the labeller's onset
    start, end = frame.timestamp.min(), frame.timestamp.max()
    true_onset = frame.timestamp.iloc[40] + pd.Timedelta(minutes=5)  # between recordings 40, 41
    info = RunInfo(
        name="r", failures={1: Defect.OUTER_RACE}, start=start, end=end, onsets={1: true_onset}
    )
    failing = label_table(frame, {"r": info}, settings).query("bearing == 1")
    assert (failing.onset == true_onset).all()
    assert (failing.wear_piecewise.iloc[:41] == 0).all() and (
        failing.wear_piecewise.iloc[41:] > 0
    ).all()
    # Recordings every 10 min: the onset at 405 min, the end at 990; recording 41 (410 min)
    # is 5 of those 585 minutes in.
    assert failing.wear_piecewise.iloc[41] == pytest.approx(5 / 585)
    with pytest.raises(ValueError, match="onsets are given only for bearings that failed"):
        RunInfo.from_dict({"name": "r", "failures": {"1": "outer"}, "onsets": {"2": str(start)}})


def test_a_run_without_known_end_is_healthy_so_far(settings):
    labelled = label_table(_frame(30, rise_at=20), {}, settings)
    assert (labelled.wear == 0).all() and labelled.life_fraction.isna().all()


def test_a_run_naming_failures_without_an_end_failed_at_its_last_recording(settings):
    frame = _frame(30, rise_at=20)
    info = RunInfo(name="r", failures={1: Defect.OUTER_RACE})
    labelled = label_table(frame, {"r": info}, settings)
    failing = labelled.query("bearing == 1")
    assert failing.failed.all() and failing.rul_h.iloc[-1] == 0
    assert failing.wear_linear.iloc[-1] == 1 and failing.wear_linear.iloc[0] == 0
    assert (labelled.query("bearing != 1").wear == 0).all()


def test_model_columns_are_the_same_for_one_and_two_channels_per_bearing(tmp_path, settings):
    for per in (1, 2):
        plan = plan_simulation(settings, runs=1, recordings=3, channels_per_bearing=per, seed=per)
        simulate(plan, tmp_path / f"d{per}")
        featurize(tmp_path / f"d{per}", tmp_path / f"t{per}", settings)
    one, two = read_table(tmp_path / "t1"), read_table(tmp_path / "t2")
    assert model_columns(one) == model_columns(two)
    assert "ch2_std" in two.columns and "ch2_std" not in one.columns


def test_a_table_is_built_from_the_folder_it_is_given_and_never_relabels_another(
    tmp_path, settings
):
    """`make run DATA=B` after `make run` once merged B into A's table and relabelled A's runs
    as never failed. Each folder has its own table; a table refuses another folder; every run
    is labelled from its own run.json."""
    folders = {}
    for name, failing in (("a", 1), ("b", 3)):
        plan = plan_simulation(
            settings,
            runs=1,
            recordings=6,
            failures={failing: Defect.OUTER_RACE},
            seed=5,
            run_prefix=f"run_{name}",
        )
        simulate(plan, tmp_path / name)
        folders[name] = tmp_path / name
    tables = tmp_path / "tables"
    ta, tb = (table_folder(tables, folders[n]) for n in ("a", "b"))
    assert ta != tb and ta.parent == tables
    featurize(folders["a"], ta, settings)
    before = read_table(ta)
    with pytest.raises(ValueError, match=f"is the table of {folders['a'].resolve()}"):
        featurize(folders["b"], ta, settings)
    featurize(folders["b"], tb, settings)
    pd.testing.assert_frame_equal(read_table(ta), before)
    for name, table, failing in (("a", ta, 1), ("b", tb, 3)):
        frame = read_table(table)
        assert set(frame.run) == {f"run_{name}_01"}
        assert set(frame[frame.failed].bearing) == {failing}
        assert frame[frame.bearing == failing].wear_linear.iloc[-1] == 1
    # A run.json edit relabels that run only; a run taken out of the folder leaves the table
    # (it is not kept and relabelled as healthy).
    meta = folders["b"] / "run_b_01" / "run.json"
    edited = json.loads(meta.read_text()) | {"failures": {"2": "inner"}, "onsets": {}}
    meta.write_text(json.dumps(edited))
    relabelled = read_table(featurize(folders["b"], tb, settings).table)
    assert set(relabelled[relabelled.failed].bearing) == {2}
    shutil.rmtree(folders["b"] / "run_b_01")
    shutil.copytree(folders["a"] / "run_a_01", folders["b"] / "moved")
    moved = read_table(featurize(folders["b"], tb, settings).table)
    assert set(moved.run) == {"run_a_01"}  # run_b_01 left the table with its folder
    assert set(moved[moved.failed].bearing) == {1}  # labelled by its own run.json, in b
