"""The simulator writes IMS-format files whose physics a feature extractor can recover."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import scipy.fft as sfft
from typer.testing import CliRunner

from wearcast.cli import app
from wearcast.config import Settings
from wearcast.ingest import IngestReport, check_run, discover_runs, parse_recording
from wearcast.rig import Defect, load_run_info
from wearcast.simulate import Fault, plan_simulation, render_recording, simulate


def _envelope_spectrum(x: np.ndarray, fs: float, band=(2000.0, 9500.0)):
    spec = sfft.rfft(x - x.mean())
    f = sfft.rfftfreq(len(x), 1 / fs)
    spec[(f < band[0]) | (f > band[1])] = 0
    env = np.abs(sfft.ifft(np.concatenate([2 * spec, np.zeros(len(x) - len(spec))])))
    return f[: len(x) // 2], np.abs(sfft.rfft(env - env.mean()))[: len(x) // 2]


def test_files_are_in_ims_format_and_deterministic(tmp_path: Path):
    settings = Settings(home=tmp_path)
    plan = plan_simulation(settings, runs=2, recordings=4, channels_per_bearing=2, seed=7)
    simulate(plan, tmp_path / "a", workers=2)
    simulate(
        plan_simulation(settings, runs=2, recordings=4, channels_per_bearing=2, seed=7),
        tmp_path / "b",
    )
    files = sorted((tmp_path / "a" / "sim_run_01").glob("2004.*"))
    assert [f.name for f in files][:2] == ["2004.01.05.09.00.00", "2004.01.05.09.10.00"]
    text = files[0].read_text()
    lines = text.splitlines()
    assert len(lines) == 20_480 and all(len(line.split("\t")) == 8 for line in lines[:100])
    assert parse_recording(text.encode()).shape == (20_480, 8)
    for f in files:
        assert f.read_bytes() == (tmp_path / "b" / "sim_run_01" / f.name).read_bytes()
    info = load_run_info(tmp_path / "a" / "sim_run_01")
    assert info.end.strftime("%Y.%m.%d.%H.%M.%S") == files[-1].name


@pytest.mark.parametrize(
    ("defect", "line_hz"),
    [(Defect.OUTER_RACE, "bpfo"), (Defect.INNER_RACE, "bpfi"), (Defect.ROLLING_ELEMENT, "2bsf")],
)
def test_a_defect_rings_the_resonance_at_its_defect_frequency(defect, line_hz, tmp_path):
    settings = Settings(home=tmp_path)
    plan = plan_simulation(settings, runs=1, recordings=50, failures={2: defect}, seed=3)
    run = plan.runs[0]
    late = render_recording(plan, run, 49)
    freqs = plan.geometry.defect_frequencies(plan.shaft_hz)
    target = 2 * freqs.bsf if line_hz == "2bsf" else getattr(freqs, line_hz)
    f, env = _envelope_spectrum(late[:, 1], plan.sampling_rate_hz)
    window = (f > 50) & (f < 400)
    peak = f[window][np.argmax(env[window])]
    assert peak == pytest.approx(target, rel=0.02)
    # Energy sits at the structural resonance (kHz), not at the defect frequency itself.
    spectrum = np.abs(sfft.rfft(late[:, 1] - late[:, 1].mean())) ** 2
    fr = sfft.rfftfreq(len(late), 1 / plan.sampling_rate_hz)
    assert spectrum[(fr > 2000) & (fr < 6000)].sum() > spectrum[(fr > 100) & (fr < 600)].sum()


def test_inner_race_impacts_are_modulated_by_shaft_rotation(tmp_path):
    plan = plan_simulation(
        Settings(home=tmp_path), runs=1, recordings=20, failures={1: Defect.INNER_RACE}
    )
    x = render_recording(plan, plan.runs[0], 19)[:, 0]
    f, env = _envelope_spectrum(x, plan.sampling_rate_hz)
    bpfi = plan.geometry.defect_frequencies(plan.shaft_hz).bpfi
    step = f[1]

    def at(freq):
        return env[int(round(freq / step)) - 3 : int(round(freq / step)) + 4].max()

    background = np.median(env[(f > 50) & (f < 1000)])
    assert at(bpfi - plan.shaft_hz) > 5 * background  # sidebands at BPFI +- shaft speed
    assert at(bpfi + plan.shaft_hz) > 5 * background


def test_wear_grows_and_healthy_bearings_stay_healthy(tmp_path):
    plan = plan_simulation(
        Settings(home=tmp_path), runs=1, recordings=60, failures={3: Defect.OUTER_RACE}, seed=11
    )
    run = plan.runs[0]
    std = np.array([render_recording(plan, run, i).std(axis=0) for i in (0, 5, 10, 55, 59)])
    failing, healthy = std[:, 2], np.delete(std, 2, axis=1)
    assert failing[-1] > 3 * failing[0]
    assert failing[3] > failing[0]
    # Healthy bearings: only the neighbours' attenuated impacts reach them.
    assert np.all(healthy[:3] / healthy[0] == pytest.approx(1.0, abs=0.05))
    # At the very end the whole rig shakes (as in real IMS test 2), far less than the failing one.
    assert np.all(healthy[-1] / healthy[0] < 0.5 * failing[-1] / failing[0])


def test_healthy_recordings_look_like_the_real_ones(tmp_path):
    """Levels from the 25 real healthy IMS recordings (docs/simulator.md)."""
    plan = plan_simulation(Settings(home=tmp_path), runs=1, recordings=10, seed=5)
    x = render_recording(plan, plan.runs[0], 0)
    d = x - x.mean(axis=0)
    std = d.std(axis=0)
    kurt = (d**4).mean(axis=0) / std**4
    assert np.all((std > 0.05) & (std < 0.1))  # real: 0.060-0.095 g
    assert np.all((kurt > 2.7) & (kurt < 4.0))  # real: 3.2-6.1; Gaussian 3


def test_faults_are_written_and_caught_by_validation(tmp_path):
    settings = Settings(home=tmp_path)
    plan = plan_simulation(settings, runs=1, recordings=40, faults_per_run=len(Fault), seed=2)
    simulate(plan, tmp_path / "data")
    (run,) = discover_runs(tmp_path / "data")
    report = IngestReport()
    list(check_run(run, settings, report, relative_to=tmp_path / "data"))
    assert len(report.quarantined) == len(Fault)
    assert len(report.ingested) == 40 - len(Fault)
    reasons = " ".join(q.reason for q in report.quarantined)
    for words in ("dead", "values, expected 4", "is not a number", "NaN", "clipped"):
        assert words in reasons


def test_run_json_holds_the_true_onset_of_each_failing_bearing(tmp_path):
    settings = Settings(home=tmp_path)
    plan = plan_simulation(settings, runs=2, recordings=12, seed=11)
    simulate(plan, tmp_path / "d")
    for run in plan.runs:
        written = json.loads((tmp_path / "d" / run.info.name / "run.json").read_text())
        assert set(written["onsets"]) == {str(b) for b in run.info.failures}
        assert load_run_info(tmp_path / "d" / run.info.name).onsets == run.info.onsets
        stamps = np.array(run.timestamps, dtype="datetime64[us]")
        for bearing, onset in run.info.onsets.items():
            assert datetime.fromisoformat(written["onsets"][str(bearing)]) == onset
            # The simulator's parameter: a fraction of the run drawn in [0.45, 0.8] ...
            fraction = (onset - run.timestamps[0]) / (run.timestamps[-1] - run.timestamps[0])
            assert 0.45 <= fraction <= 0.8
            # ... and the defect's impacts are 0 up to that time, present after it.
            after = stamps > np.datetime64(onset)
            assert after.any() and not after.all()
            assert (run.severity[bearing][~after] == 0).all()
            assert (run.severity[bearing][after] > 0).all()


def test_lives_scatter_as_rolling_bearings_lives_do(tmp_path):
    """Every simulated run failed after exactly --recordings, so the fleet's mean life minus
    the age was an exact remaining life, a trivial estimator no real fleet allows."""
    settings = Settings(home=tmp_path)
    same = plan_simulation(settings, runs=40, recordings=300, seed=5)
    assert {len(run.timestamps) for run in same.runs} == {300}
    plan = plan_simulation(settings, runs=40, recordings=300, seed=5, life_spread=0.85)
    lives = np.array([len(run.timestamps) for run in plan.runs])
    assert 0.65 < np.std(np.log(lives)) < 1.05
    assert 200 < np.median(lives) < 450
    for run in plan.runs:  # each failure's onset and impacts follow its own run's length
        ((bearing, severity),) = run.severity.items()
        assert len(severity) == len(run.timestamps) and severity[-1] > 0
        onset = run.info.onsets[bearing]
        assert run.timestamps[0] < onset < run.timestamps[-1] == run.info.end
    # A run where nothing fails has no life to draw: it keeps its length.
    healthy = plan_simulation(settings, runs=3, recordings=50, failures={}, life_spread=0.85)
    assert {len(run.timestamps) for run in healthy.runs} == {50}
    with pytest.raises(ValueError, match="life_spread"):
        plan_simulation(settings, runs=1, recordings=50, life_spread=-1)


def test_simulate_command_says_each_runs_own_length(tmp_path, monkeypatch):
    monkeypatch.setenv("WEARCAST_HOME", str(tmp_path / "home"))
    out = tmp_path / "sim"
    args = ["simulate", str(out), "--runs", "3", "--recordings", "10", "--life-spread", "0.85"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lengths = {run.name: len(list(run.glob("2004.*"))) for run in out.iterdir()}
    assert len(set(lengths.values())) > 1  # the lives differ ...
    for name, count in lengths.items():  # ... and each run says its own
        assert re.search(rf"{name}: {count} recordings, fails at", " ".join(result.output.split()))
