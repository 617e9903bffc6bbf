"""PRONOSTIA recordings, on the real files of Bearing3_1 (IEEE PHM 2012 learning set).

Known answers come from the files themselves: 515 snapshots of 2560 samples, 10 s apart from
09:10:39 to 10:36:19, 89 temperature logs; RMS recomputed here with numpy.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wearcast.cli import app
from wearcast.config import Settings
from wearcast.dataset import featurize, read_table
from wearcast.features import FeatureSpec, channel_features
from wearcast.formats import FORMATS, resolve_rig
from wearcast.ingest import IngestReport, check_run, discover_runs
from wearcast.rig import RunInfo

pytestmark = pytest.mark.real_data

START = datetime(2011, 4, 7, 9, 10, 39)
RUN_JSON = {
    "name": "Bearing3_1",
    "format": "pronostia",
    "n_bearings": 1,
    "shaft_rpm": 1500,
    "load_n": 5000,
    "start": START.isoformat(),
    "end": "2011-04-07T10:36:19",
    "failures": {"1": "unknown"},
}


def _copy(source: Path, target: Path, names: list[str], *, run_json: dict = RUN_JSON) -> Path:
    target.mkdir(parents=True)
    for name in names:
        shutil.copyfile(source / name, target / name)
    (target / "run.json").write_text(json.dumps(run_json))
    return target


def _acc(run: Path) -> list[str]:
    return sorted(p.name for p in run.glob("acc_*.csv"))


@pytest.fixture(scope="module")
def described(bearing3_1: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole bearing with its run.json, as the README says to describe it."""
    run = tmp_path_factory.mktemp("data") / "Bearing3_1"
    return _copy(bearing3_1, run, sorted(p.name for p in bearing3_1.iterdir()))


def test_every_snapshot_is_read_dated_and_the_temperature_logs_ignored(described: Path):
    (run,) = discover_runs(described.parent)
    assert run.info.format == "pronostia" and run.n_channels == 2
    assert len(run.recordings) == 515 and not run.rejected
    times = [t for t, _ in run.recordings]
    assert times[0] == START and times[-1] == datetime(2011, 4, 7, 10, 36, 19)
    assert set(np.diff(times)) == {timedelta(seconds=10)}
    report = IngestReport()
    list(check_run(run, Settings(), report, relative_to=described.parent))
    assert len(report.ingested) == 515 and not report.quarantined
    assert len(report.ignored) == 89
    assert all(q.file.split("/")[1].startswith("temp_") for q in report.ignored)
    assert all("temperature" in q.reason for q in report.ignored)
    assert report.reconciled and report.seen == 604


def test_samples_and_rms_match_an_independent_numpy_reading(bearing3_1: Path):
    path = bearing3_1 / "acc_00300.csv"
    independent = np.loadtxt(path, delimiter=",")
    assert independent.shape == (2560, 6)
    data = FORMATS["pronostia"].parse(path.read_bytes())
    assert data.shape == (2560, 2)
    rig = resolve_rig(RunInfo.from_dict(RUN_JSON), Settings())
    spec = FeatureSpec.from_settings(Settings(), rig)
    features = channel_features(data, spec)
    rms = np.sqrt((independent[:, 4:] ** 2).mean(axis=0))
    assert features[:, spec.names.index("rms")] == pytest.approx(rms, rel=1e-9)
    assert rms.min() > 0.1  # a real signal, not a constant


def test_the_run_s_rig_sets_the_bands_and_the_defect_frequencies():
    rig = resolve_rig(RunInfo.from_dict(RUN_JSON), Settings())
    assert (rig.sampling_rate_hz, rig.samples, rig.shaft_rpm) == (25_600.0, 2560, 1500.0)
    spec = FeatureSpec.from_settings(Settings(), rig)
    assert spec.band_edges_hz[-1] == 12_800.0
    # 13 balls of 3.5 mm on a 25.6 mm pitch circle, 25 Hz shaft.
    ratio = 3.5 / 25.6
    assert spec.defects.bpfo == pytest.approx(13 / 2 * 25 * (1 - ratio))
    assert spec.defects.bpfi == pytest.approx(13 / 2 * 25 * (1 + ratio))
    faster = resolve_rig(RunInfo.from_dict({**RUN_JSON, "shaft_rpm": 1800}), Settings())
    assert FeatureSpec.from_settings(Settings(), faster).defects.bpfo == pytest.approx(
        spec.defects.bpfo * 1.2
    )


def _rewrite(path: Path, target: Path, *, sep: str = ",", hour_shift: int = 0) -> None:
    rows = [line.split(",") for line in path.read_text().splitlines()]
    for row in rows:
        row[0] = str((int(row[0]) + hour_shift) % 24)
    target.write_text("\n".join(sep.join(row) for row in rows) + "\n")


def test_a_run_across_midnight_is_dated_on_the_next_day(bearing3_1: Path, tmp_path: Path):
    run = tmp_path / "late" / "Bearing3_1"
    run.mkdir(parents=True)
    names = _acc(bearing3_1)[::8]  # 09:10:39 .. 10:35:59, now 23:10:39 .. 00:35:59
    for name in names:
        _rewrite(bearing3_1 / name, run / name, hour_shift=14)
    late_start = START.replace(hour=23)
    late = {**RUN_JSON, "start": late_start.isoformat(), "end": "2011-04-08T00:36:19"}
    (run / "run.json").write_text(json.dumps(late))
    (found,) = discover_runs(run.parent)
    times = [t for t, _ in found.recordings]
    assert len(times) == len(names)
    assert times[0] == late_start
    assert times[-1] == datetime(2011, 4, 8, 0, 35, 59)
    assert set(np.diff(times)) == {timedelta(seconds=80)}


def test_comma_and_semicolon_copies_give_the_same_features(
    bearing3_1: Path, tmp_path: Path, settings: Settings
):
    names = _acc(bearing3_1)[:40]
    comma = _copy(bearing3_1, tmp_path / "comma" / "B", names)
    semicolon = tmp_path / "semicolon" / "B"
    semicolon.mkdir(parents=True)
    for name in names:
        _rewrite(bearing3_1 / name, semicolon / name, sep=";")
    (semicolon / "run.json").write_text(json.dumps(RUN_JSON))
    assert ";" in (semicolon / names[0]).read_text().splitlines()[0]
    tables = []
    for data in (comma.parent, semicolon.parent):
        result = featurize(data, tmp_path / f"table-{data.name}", settings)
        assert result.ingested == 40 and result.quarantined == 0
        tables.append(read_table(tmp_path / f"table-{data.name}"))
    columns = ["timestamp", "rms", "kurtosis", "band_12700_12800", "env_bpfo_snr", "ch2_rms"]
    assert tables[0][columns].equals(tables[1][columns])


CORRUPTIONS = {
    # file name -> (how to damage a real snapshot, words the reason must contain)
    "acc_00601.csv": (
        lambda t: "\n".join(t.splitlines()[:2000]) + "\n",
        "2000 rows, expected 2560",
    ),
    "acc_00602.csv": (lambda t: _cell(t, 100, 6, "0.1,0.2"), "7 values, expected 6 as on line 1"),
    "acc_00603.csv": (lambda t: _cell(t, 10, 5, "abc"), "'abc' is not a number"),
    "acc_00604.csv": (lambda t: _cell(t, 10, 2, "75"), "minute 75 is out of range"),
    "acc_00605.csv": (
        lambda t: "\n".join(r.rsplit(",", 1)[0] for r in t.splitlines()),
        "5 columns",
    ),
    "acc_00606.csv": (lambda t: None, "binary content"),
    "acc_00607.csv": (lambda t: "", "empty file"),
}


def _cell(text: str, line: int, col: int, value: str) -> str:
    lines = text.splitlines()
    cells = lines[line - 1].split(",")
    cells[col - 1] = value
    lines[line - 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def test_corrupted_copies_are_quarantined_with_their_reason_and_the_rest_goes_on(
    bearing3_1: Path, tmp_path: Path, settings: Settings
):
    names = _acc(bearing3_1)[:30]
    run = _copy(bearing3_1, tmp_path / "data" / "Bearing3_1", names + ["temp_00001.csv"])
    last = (bearing3_1 / names[-1]).read_text()
    for name, (damage, _) in CORRUPTIONS.items():
        # Dated after the last good snapshot, as a later recording would be.
        text = _rewrite_clock(last, minutes=int(name[4:9]) - 600)
        damaged = damage(text)
        if damaged is None:
            (run / name).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
        else:
            (run / name).write_text(damaged)
    shutil.copyfile(bearing3_1 / "acc_00002.csv", run / "acc_00700.csv")  # clock goes back
    (run / "notes.txt").write_text("operator notes\n")
    result = featurize(run.parent, tmp_path / "table", settings)
    reasons = {
        q["file"]: q["reason"]
        for q in json.loads((tmp_path / "table" / "quarantine.json").read_text())
    }
    for name, (_, words) in CORRUPTIONS.items():
        assert words in reasons.pop(f"Bearing3_1/{name}"), name
    assert "numbering and the clock disagree" in reasons.pop("Bearing3_1/acc_00700.csv")
    assert "expected acc_NNNNN.csv" in reasons.pop("Bearing3_1/notes.txt")
    assert not reasons  # the temperature log is not quarantined
    assert result.ingested == 30 and len(read_table(tmp_path / "table")) == 30


def _rewrite_clock(text: str, *, minutes: int) -> str:
    rows = [line.split(",") for line in text.splitlines()]
    for row in rows:
        row[1] = str(int(row[1]) + minutes)  # 09:15:29 + a few minutes, same hour
    return "\n".join(",".join(row) for row in rows) + "\n"


def test_featurize_labels_the_run_from_its_run_json(described: Path, tmp_path: Path):
    home = tmp_path / "home"
    result = CliRunner().invoke(
        app,
        ["--home", str(home), "featurize", str(described.parent), "--out", str(tmp_path / "t")],
    )
    assert result.exit_code == 0, result.output
    table = read_table(tmp_path / "t").sort_values("timestamp")
    assert len(table) == 515 and set(table["run"]) == {"Bearing3_1"}
    assert table["failed"].all()
    assert table["life_fraction"].iloc[0] == 0 and table["life_fraction"].iloc[-1] == 1
    assert table["rul_h"].iloc[0] == pytest.approx((5140) / 3600)
    assert table["rul_h"].iloc[-1] == 0
    # The end of life is a vibration above 20 g, far from the first snapshots' peaks.
    peaks = table[["ch1_peak", "ch2_peak"]].max(axis=1)
    assert peaks.max() > 20 and peaks.iloc[:50].max() < 5
    assert table["rms"].iloc[-5:].min() > 2 * table["rms"].iloc[:50].median()


def test_describe_run_writes_the_contract_from_the_documented_date(
    bearing3_1: Path, tmp_path: Path
):
    run = tmp_path / "Bearing3_1"
    shutil.copytree(bearing3_1, run)
    undated = CliRunner().invoke(app, ["describe-run", str(run), "--shaft-rpm", "1500"])
    assert undated.exit_code == 2  # said run.json needed a start: the file being written
    assert "pronostia files hold only the time of day: give --date" in undated.output
    args = ["describe-run", str(run), "--date", "2011-04-07", "--shaft-rpm", "1500"]
    result = CliRunner().invoke(app, [*args, "--load-n", "5000", "--failure", "1:unknown"])
    assert result.exit_code == 0, result.output
    written = json.loads((run / "run.json").read_text())
    assert written == {**RUN_JSON, "shaft_rpm": 1500.0, "load_n": 5000.0}
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "exists" in again.output
