"""Recording formats and run descriptions, on small files written here (the real PRONOSTIA
files are in test_pronostia.py)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wearcast.cli import app
from wearcast.config import Settings
from wearcast.dataset import featurize, read_table
from wearcast.features import FeatureSpec, channel_features
from wearcast.formats import FORMATS, RecordingError, resolve_rig
from wearcast.formats.base import RecordingFormat, parse_table
from wearcast.ingest import discover_runs
from wearcast.predict import score_path
from wearcast.rig import ZA_2115, Defect, Rig, RunInfo

CONTRACT = {
    "name": "Bearing1_1",
    "format": "pronostia",
    "n_bearings": 1,
    "shaft_rpm": 1800,
    "load_n": 4000,
    "start": "2010-12-01T09:39:39",
    "end": "2010-12-01T17:26:39",
    "failures": {"1": "unknown"},
}


def test_the_run_json_contract_reads_and_writes_back():
    info = RunInfo.from_dict(CONTRACT)
    assert info.format == "pronostia" and info.n_bearings == 1
    assert (info.shaft_rpm, info.load_n) == (1800, 4000)
    assert info.failures == {1: Defect.UNKNOWN}
    assert info.end - info.start == datetime(1, 1, 1, 7, 47) - datetime(1, 1, 1)
    assert RunInfo.from_dict(info.as_dict()) == info


def test_geometry_and_speed_from_run_json_set_the_defect_frequencies():
    info = RunInfo.from_dict(
        {
            "name": "r",
            "shaft_rpm": 600,
            "n_balls": 9,
            "ball_diameter_mm": 7.94,
            "pitch_diameter_mm": 39.04,
        }
    )
    rig = resolve_rig(info, Settings())
    ratio = 7.94 / 39.04
    assert rig.geometry.defect_frequencies(10).bpfo == pytest.approx(9 * 10 / 2 * (1 - ratio))
    spec = FeatureSpec.from_settings(Settings(), rig)
    assert spec.defects.bpfi == pytest.approx(9 * 10 / 2 * (1 + ratio))
    assert rig.format == "ims" and rig.sampling_rate_hz == Settings().sampling_rate_hz


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"n_balls": 9}, "n_balls, ball_diameter_mm and pitch_diameter_mm together"),
        ({"shaft_rpm": -5}, "shaft_rpm: Input should be greater than 0"),
        ({"failures": {"1": "cracked"}}, "failures.1"),
        ({"end": "2010-12-01T08:00:00"}, "is before start"),
        ({"envelope_band_hz": [5000, 2000]}, "low < high"),
        ({"start": "2010-12-01T09:39:39Z"}, "has a UTC offset"),
        ({"end": "2010-12-01T17:26:39+02:00"}, "has a UTC offset"),
        ({"onsets": {"1": "2010-12-01T12:00:00Z"}}, "onsets.1: Value error, 2010-12-01T12:00"),
        ({"failures": {"2": "outer"}}, "failures name bearing 2, but the run has 1"),
    ],
)
def test_a_bad_run_json_says_which_field(change, words):
    with pytest.raises(ValueError, match="run.json") as info:
        RunInfo.from_dict({**CONTRACT, **change}, where="x/run.json")
    assert words in str(info.value)


def test_defaults_come_from_the_format_and_the_settings():
    settings = Settings()
    ims = resolve_rig(RunInfo(name="r"), settings)
    assert ims == Rig("ims", 20_000.0, 20_480, 2000.0, ZA_2115, (2000.0, 9500.0), ims.load_n)
    femto = resolve_rig(RunInfo(name="r", format="pronostia"), settings)
    assert (femto.sampling_rate_hz, femto.samples, femto.shaft_rpm) == (25_600.0, 2560, 1800.0)
    assert femto.geometry.rollers == 13 and femto.load_n == 4000.0
    # A slower recorder: the envelope band's top stays below its Nyquist frequency.
    slow = resolve_rig(RunInfo(name="r", sampling_rate_hz=12_000.0), settings)
    assert slow.envelope_band_hz == (2000.0, 0.95 * 6000.0)
    spec = FeatureSpec.from_settings(settings, slow)
    assert spec.band_edges_hz[-1] == 6000.0
    with pytest.raises(ValueError, match="Nyquist"):
        resolve_rig(RunInfo(name="r", sampling_rate_hz=3000.0), settings)


def test_envelope_features_follow_the_run_s_speed():
    """Outer-race impacts at 1650 rpm light the BPFO line of a run described at 1650 rpm,
    not of the same recording described at the 1800 rpm default."""
    settings = Settings()
    rig = resolve_rig(RunInfo(name="r", format="pronostia", shaft_rpm=1650), settings)
    spec = FeatureSpec.from_settings(settings, rig)
    fs, n = rig.sampling_rate_hz, rig.samples
    t = np.arange(n) / fs
    train = np.zeros(n)
    train[(np.arange(0, n / fs, 1 / spec.defects.bpfo) * fs).astype(int)] = 1.0
    ring = np.exp(-0.05 * 2 * np.pi * 4000 * t) * np.sin(2 * np.pi * 4000 * t)
    x = np.real(np.fft.ifft(np.fft.fft(train) * np.fft.fft(ring)))
    x = (x + np.random.default_rng(0).normal(0, 0.05, n))[:, None]
    snr = spec.names.index("env_bpfo_snr")
    assert channel_features(x, spec)[0, snr] > 10
    default = FeatureSpec.from_settings(
        settings, resolve_rig(RunInfo(name="r", format="pronostia"), settings)
    )
    assert channel_features(x, default)[0, snr] < 0.3 * channel_features(x, spec)[0, snr]


def _pronostia_text(hour: int, minute: int, second: int, *, sep: str = ",", rows: int = 2560):
    rng = np.random.default_rng(hour * 3600 + minute * 60 + second)
    x = rng.normal(0, 0.4, (rows, 2))
    micro = 65664 + np.arange(rows) * 39
    lines = [
        sep.join([str(hour), str(minute), str(second), f"{m:.4e}", f"{a:.3f}", f"{b:.3f}"])
        for m, (a, b) in zip(micro, x, strict=True)
    ]
    return "\n".join(lines) + "\n"


def test_pronostia_exponent_microseconds_and_both_separators():
    fmt = FORMATS["pronostia"]
    comma = fmt.parse(_pronostia_text(9, 0, 0).encode())
    semi = fmt.parse(_pronostia_text(9, 0, 0, sep=";").encode())
    assert comma.shape == (2560, 2) and np.array_equal(comma, semi)
    assert "e+0" in _pronostia_text(9, 0, 0).splitlines()[0]
    extra = "\n".join(line + ",0" for line in _pronostia_text(9, 0, 0).splitlines())
    with pytest.raises(RecordingError, match="^line 1: 7 columns, expected 6") as refused:
        fmt.parse(extra.encode())
    assert refused.value.line == 1  # the README promises a line: it had none


def test_a_byte_order_mark_is_text_not_binary(tmp_path: Path, settings):
    """Windows editors save text with a UTF-8 byte-order mark first: read as the same
    recording (IMS and PRONOSTIA, dated from the first line), not quarantined as binary."""
    bom = b"\xef\xbb\xbf"
    ims = "".join(
        f"{a:.3f}\t{b:.3f}\t{-a:.3f}\t{-b:.3f}\n"
        for a, b in np.random.default_rng(1).normal(0, 0.1, (20480, 2))
    )
    assert np.array_equal(
        FORMATS["ims"].parse(bom + ims.encode()), FORMATS["ims"].parse(ims.encode())
    )
    snapshot = _pronostia_text(9, 0, 0).encode()
    assert np.array_equal(
        FORMATS["pronostia"].parse(bom + snapshot), FORMATS["pronostia"].parse(snapshot)
    )
    with pytest.raises(RecordingError, match="byte 0xe9 at offset 7"):
        FORMATS["ims"].parse(bom + b"0.1\t\xe9")
    run = tmp_path / "data" / "r"
    run.mkdir(parents=True)
    described = {"name": "r", "format": "pronostia", "start": "2011-01-01T09:00:00"}
    (run / "run.json").write_bytes(bom + json.dumps(described).encode())  # run.json too
    (run / "acc_00001.csv").write_bytes(bom + snapshot)
    (run / "acc_00002.csv").write_bytes(bom + _pronostia_text(9, 0, 10).encode())
    result = featurize(tmp_path / "data", tmp_path / "t", settings)
    assert result.quarantined == 0
    times = read_table(tmp_path / "t").timestamp.sort_values().tolist()
    assert [t.isoformat() for t in times] == ["2011-01-01T09:00:00", "2011-01-01T09:00:10"]


def test_export_quirks_read_as_the_same_recordings(tmp_path: Path, settings):
    """A separator ending every line, upper-case PRONOSTIA names and IMS names with `.txt`
    (found by a user trial: a trailing tab refused a whole run as 9 channels over 4 bearings,
    a trailing comma and `.CSV` names quarantined every file): the same recordings."""
    ims = "".join(
        f"{a:.3f}\t{b:.3f}\t{-a:.3f}\t{-b:.3f}\n"
        for a, b in np.random.default_rng(2).normal(0, 0.1, (20480, 2))
    )
    tabbed = ims.replace("\n", "\t\r\n").encode()
    assert np.array_equal(FORMATS["ims"].parse(tabbed), FORMATS["ims"].parse(ims.encode()))
    assert FORMATS["ims"].channel_count(tabbed.split(b"\n")[0] + b"\n") == 4
    snapshot = _pronostia_text(9, 0, 0)
    trailing = snapshot.replace("\n", ",\n").encode()
    assert np.array_equal(
        FORMATS["pronostia"].parse(trailing), FORMATS["pronostia"].parse(snapshot.encode())
    )
    assert FORMATS["pronostia"].channel_count(trailing.split(b"\n")[0]) == 2
    # Python's float reads 1_0 as 10, the table's parser does not: the fault was unplaced.
    with pytest.raises(RecordingError, match="^line 2, column 1: '1_0' is not a number"):
        parse_table(b"1\t2\n1_0\t2\n", "\t")
    # A fifth column with a value on one line is a column: its empty cells are faults.
    lines = tabbed.split(b"\n")
    lines[9] = lines[9].replace(b"\t\r", b"\t0.5\r")
    with pytest.raises(RecordingError, match="line 1, column 5: '' is not a number"):
        FORMATS["ims"].parse(b"\n".join(lines))
    pronostia = tmp_path / "pronostia" / "Bearing9_9"
    pronostia.mkdir(parents=True)
    described = {"name": "Bearing9_9", "format": "pronostia", "start": "2011-01-01T09:00:00"}
    (pronostia / "run.json").write_text(json.dumps(described))
    (pronostia / "ACC_00001.CSV").write_bytes(trailing)
    (pronostia / "acc_00002.CSV").write_text(_pronostia_text(9, 0, 10))
    (pronostia / "TEMP_00001.CSV").write_text("9,0,0,0,40.1\n")
    (tmp_path / "ims" / "1st_test").mkdir(parents=True)
    (tmp_path / "ims" / "1st_test" / "2003.10.22.12.06.24.txt").write_bytes(tabbed)
    for rig, times in (
        ("pronostia", [datetime(2011, 1, 1, 9, 0, 0), datetime(2011, 1, 1, 9, 0, 10)]),
        ("ims", [datetime(2003, 10, 22, 12, 6, 24)]),
    ):
        result = featurize(tmp_path / rig, tmp_path / f"{rig}-table", settings)
        assert result.quarantined == 0, rig
        assert sorted(read_table(tmp_path / f"{rig}-table").timestamp.unique()) == times


def test_a_temperature_log_alone_has_nothing_to_score(tmp_path: Path, settings):
    """`wearcast predict` on a temp_ file, or a run of them only, says so (it raised an
    IndexError from an empty answer: a user trial)."""
    run = tmp_path / "Bearing9_9"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"name": "b", "format": "pronostia"}))
    (run / "temp_00001.csv").write_text("9,0,0,0,40.1\n")
    for path in (run, run / "temp_00001.csv"):
        with pytest.raises(ValueError, match="no recording to score: 1 file.*temperature log"):
            score_path(path, None, 0, settings)


def test_failures_beyond_the_format_s_bearing_count_are_refused(tmp_path: Path):
    """Without n_bearings an IMS run has 4 bearings: a failure of bearing 5 had been dropped
    silently (every bearing labelled healthy)."""
    run = tmp_path / "data" / "r"
    run.mkdir(parents=True)
    (run / "2004.01.01.00.00.00").write_text("0.1\t0.2\t0.3\t0.4\n")
    (run / "run.json").write_text(json.dumps({"name": "r", "failures": {"5": "outer"}}))
    with pytest.raises(ValueError, match="failures name bearing 5, but the run has 4"):
        discover_runs(tmp_path / "data")


@pytest.mark.parametrize("command", ["ingest", "featurize"])
def test_a_bearing_count_the_channels_do_not_fit_names_the_run(tmp_path: Path, command):
    """ingest had passed such a run that featurize then refused without naming it."""
    run = tmp_path / "data" / "r"
    run.mkdir(parents=True)
    (run / "2004.01.01.00.00.00").write_text("0.1\t0.2\t0.3\t0.4\n")
    (run / "run.json").write_text(json.dumps({"name": "r", "n_bearings": 3}))
    result = CliRunner().invoke(
        app, [command, str(tmp_path / "data")], env={"WEARCAST_HOME": str(tmp_path / "h")}
    )
    assert result.exit_code == 2
    assert f"{run}: 4 channels cannot be split" in " ".join(result.output.split())


def test_a_folder_of_unknown_files_gets_a_clear_error(tmp_path: Path):
    data = tmp_path / "data" / "bench"
    data.mkdir(parents=True)
    (data / "vib_001.dat").write_text("1 2 3\n")
    with pytest.raises(ValueError) as info:
        discover_runs(tmp_path / "data")
    message = str(info.value)
    assert message.startswith(f"{data / 'vib_001.dat'}: matches no known recording format")
    assert "acc_NNNNN.csv" in message and "YYYY.MM.DD.hh.mm.ss" in message
    result = CliRunner().invoke(app, ["featurize", str(tmp_path / "data")])
    assert result.exit_code == 2 and "error:" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("command", ["ingest", "featurize"])
def test_a_folder_without_recordings_is_an_error_not_an_empty_success(tmp_path: Path, command):
    """A mistyped or empty folder answered "0 files" (and an empty table) with exit code 0."""
    empty = tmp_path / "landing"
    (empty / "run_1").mkdir(parents=True)
    (empty / ".hidden").write_text("not a recording\n")
    result = CliRunner().invoke(app, [command, str(empty), "--json"])
    assert result.exit_code == 2, result.output
    assert f"{empty}: no recordings in it or below" in " ".join(result.output.split())
    assert not (tmp_path / "home" / "tables").exists()


def test_an_unknown_format_in_run_json_names_the_file(tmp_path: Path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "acc_00001.csv").write_text(_pronostia_text(9, 0, 0))
    (run / "run.json").write_text(json.dumps({"name": "r", "format": "matlab"}))
    with pytest.raises(ValueError, match=r"r/run.json: unknown recording format 'matlab'"):
        discover_runs(tmp_path)


def test_a_pronostia_run_without_start_is_quarantined_saying_why(tmp_path: Path, settings):
    run = tmp_path / "data" / "r"
    run.mkdir(parents=True)
    (run / "acc_00001.csv").write_text(_pronostia_text(9, 0, 0))
    result = featurize(tmp_path / "data", tmp_path / "t", settings)
    assert result.quarantined == 1
    (bad,) = json.loads((tmp_path / "t" / "quarantine.json").read_text())
    assert 'needs "start"' in bad["reason"]


class _Mono(RecordingFormat):
    """A third format, for the test: one column of g per file, named sample_N.txt."""

    name = "mono"
    expected = "sample_N.txt, one column of g"
    bearings = 1

    def is_recording(self, name: str) -> bool:
        return name.startswith("sample_") and name.endswith(".txt")

    def order(self, name: str) -> object:
        return int(name[7:-4])

    def defaults(self, settings: Settings) -> Rig:
        return Rig(self.name, 10_000.0, 1000, 1200.0, ZA_2115, (1000.0, 4500.0))

    def channel_count(self, first_line: bytes) -> int | None:
        return 1 if first_line.strip() else None

    def times(self, names, first_lines, info):
        return [datetime(2024, 1, 1, 0, self.order(n)) for n in names]

    def parse(self, content: bytes) -> np.ndarray:
        return parse_table(content, ",")


def test_a_third_format_is_one_new_class(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(FORMATS, "mono", _Mono())
    run = tmp_path / "data" / "m"
    run.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(1, 6):
        np.savetxt(run / f"sample_{k}.txt", rng.normal(0, 0.1, 1000), fmt="%.4f")
    (run / "sample_6.txt").write_text("0.1\n" * 10)
    settings = Settings(home=tmp_path / "home", workers=1)  # the format lives in this process
    result = featurize(tmp_path / "data", tmp_path / "t", settings)
    assert (result.ingested, result.quarantined) == (5, 1)
    table = read_table(tmp_path / "t")
    assert len(table) == 5 and "band_04900_05000" in table and "band_05000_05100" not in table
    with pytest.raises(RecordingError, match="10 rows, expected 1000"):
        from wearcast.ingest import read_samples

        read_samples(run / "sample_6.txt", FORMATS["mono"].defaults(settings), settings)


def test_a_run_json_edit_refeaturizes_and_relabels_only_that_run(tmp_path: Path, settings):
    data = tmp_path / "data"
    for name, count in (("a", 3), ("b", 2)):
        (data / name).mkdir(parents=True)
        for k in range(count):
            text = _pronostia_text(9, 0, 10 * k)
            (data / name / f"acc_{k + 1:05d}.csv").write_text(text)
        described = {"name": name, "start": "2024-05-01T09:00:00", "end": "2024-05-01T09:01:00"}
        (data / name / "run.json").write_text(json.dumps({**described, "failures": {"1": "inner"}}))
    assert featurize(data, tmp_path / "t", settings).processed == 5
    before = read_table(tmp_path / "t").set_index(["run", "timestamp"])
    meta = json.loads((data / "a" / "run.json").read_text())
    (data / "a" / "run.json").write_text(json.dumps({**meta, "shaft_rpm": 900}))
    meta = json.loads((data / "b" / "run.json").read_text())
    (data / "b" / "run.json").write_text(json.dumps({**meta, "end": "2024-05-01T09:02:00"}))
    assert featurize(data, tmp_path / "t", settings).processed == 3
    after = read_table(tmp_path / "t").set_index(["run", "timestamp"])
    assert (after.loc["a", "spec_bpfo"] != before.loc["a", "spec_bpfo"]).all()
    assert after.loc["b", "spec_bpfo"].equals(before.loc["b", "spec_bpfo"])
    assert np.allclose(after.loc["b", "rul_h"] - before.loc["b", "rul_h"], 1 / 60)


def test_featurize_says_why_files_were_quarantined_and_fails_when_none_is_usable(tmp_path: Path):
    """A PRONOSTIA run without its start date: every file quarantined, and featurize said only
    "0 rows ... 3 quarantined" with exit code 0 (the reason was in quarantine.json alone)."""
    run = tmp_path / "data" / "r"
    run.mkdir(parents=True)
    for i in range(1, 6):
        (run / f"acc_{i:05d}.csv").write_text(_pronostia_text(9, 0, 10 * i))
    command = ["--home", str(tmp_path / "home"), "featurize", str(run.parent)]
    result = CliRunner().invoke(app, command)
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "r/acc_00001.csv: PRONOSTIA files hold only the time of day" in output
    assert "2 more for the same reason" in output
    assert f"nothing featurized: every recording under {run.parent} is quarantined" in output
    (run / "run.json").write_text(json.dumps({"name": "r", "start": "2010-12-01T09:00:00"}))
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    assert "5 rows" in result.output and "quarantined r/" not in result.output


def test_describe_run_says_what_is_wrong_with_its_arguments(tmp_path):
    """A missing folder was a raw "[Errno 2]"; `--failure outer` was "failures.outer.[key]:
    Input should be a valid integer" (a user trial). Each now says what was expected."""
    missing = CliRunner().invoke(app, ["describe-run", str(tmp_path / "Bearing9_9")])
    assert missing.exit_code == 2
    assert "Bearing9_9: no such folder" in " ".join(missing.stderr.split())
    (tmp_path / "run").mkdir()
    for given in ("outer", "one:outer", ":outer"):
        bad = CliRunner().invoke(app, ["describe-run", str(tmp_path / "run"), "--failure", given])
        said = " ".join(bad.stderr.split())
        assert bad.exit_code == 2 and f"--failure {given}: expected BEARING:DEFECT" in said
        assert "outer, inner, rolling, unknown (e.g. 1:unknown)" in said
    assert not (tmp_path / "run" / "run.json").exists()


def test_describe_run_force_says_what_it_no_longer_holds(tmp_path: Path):
    """`describe-run --force` replaced a run.json's notes and load_n without a word (a user
    trial): what the new one no longer holds is said, with its values."""
    run = tmp_path / "Bearing9_9"
    run.mkdir()
    (run / "acc_00001.csv").write_text(_pronostia_text(9, 0, 0))
    (run / "acc_00002.csv").write_text(_pronostia_text(9, 0, 10))
    written = {"name": "b", "load_n": 4000, "notes": "new sensor", "start": "2011-01-01T09:00:00"}
    (run / "run.json").write_text(json.dumps(written))
    command = ["describe-run", str(run), "--date", "2011-01-01", "--force"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert 'not given again: {"name": "b", "load_n": 4000, "notes": "new sensor"}' in said, said
    # Given again, nothing is said.
    again = CliRunner().invoke(app, [*command, "--load-n", "4000", "--name", "b"])
    assert again.exit_code == 0 and '"load_n"' not in again.stderr, again.stderr
