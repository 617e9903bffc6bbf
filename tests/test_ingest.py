"""Validation of raw recordings: the 25 real files pass, each kind of damage is caught."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from wearcast.cli import app
from wearcast.config import Settings
from wearcast.dataset import featurize, run_tasks
from wearcast.ingest import IngestReport, RecordingError, check_run, discover_runs, parse_recording

pytestmark = pytest.mark.real_data

CORRUPTIONS = {
    # file name -> (how to damage a real recording, words the reason must contain)
    "2003.10.23.00.00.01": (lambda t: t[: len(t) // 2], "values, expected 8"),
    "2003.10.23.00.00.02": (lambda t: _cell(t, 7, 3, "abc"), "'abc' is not a number"),
    "2003.10.23.00.00.03": (lambda t: _cell(t, 100, 2, "NaN"), "NaN is not a finite number"),
    "2003.10.23.00.00.04": (
        lambda t: _drop_column(t),
        "7 channels, but this run's recordings have 8",
    ),
    "2003.10.23.00.00.05": (lambda t: "", "empty file"),
    "2003.10.23.00.00.06": (lambda t: None, "binary content"),
    "2003.10.23.00.00.07": (lambda t: _dead(t, 5), "channel 5 is dead"),
    "2003.10.23.00.00.08": (
        lambda t: "\n".join(t.splitlines()[:20000]) + "\n",
        "20000 rows, expected 20480",
    ),
    "2003.10.23.00.00.09": (lambda t: _clip(t, 2), "channel 2 is clipped"),
    # Finite, but no accelerometer reads them: their features overflowed the float32 table and
    # the whole `wearcast predict` stopped (1e10), or were scored as wear (1e6).
    "2003.10.23.00.00.10": (lambda t: _cell(t, 50, 2, "1e10"), "outside any physical range"),
    "2003.10.23.00.00.11": (lambda t: _cell(t, 9, 4, "-1e6"), "outside any physical range"),
}


def _cell(text: str, line: int, col: int, value: str) -> str:
    lines = text.splitlines()
    cells = lines[line - 1].split("\t")
    cells[col - 1] = value
    lines[line - 1] = "\t".join(cells)
    return "\n".join(lines) + "\n"


def _drop_column(text: str) -> str:
    return "\n".join("\t".join(line.split("\t")[:7]) for line in text.splitlines()) + "\n"


def _dead(text: str, channel: int) -> str:
    rows = [line.split("\t") for line in text.splitlines()]
    for row in rows:
        row[channel - 1] = "-0.093"
    return "\n".join("\t".join(r) for r in rows) + "\n"


def _clip(text: str, channel: int) -> str:
    data = np.loadtxt(text.splitlines())
    limit = 0.3 * np.abs(data[:, channel - 1]).max()
    data[:, channel - 1] = np.clip(data[:, channel - 1], -limit, limit)
    return "\n".join("\t".join(f"{v:.3f}" for v in row) for row in data) + "\n"


@pytest.fixture(scope="module")
def damaged_run(real_test1_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("data") / "1st_test"
    shutil.copytree(real_test1_dir, run)
    text = (real_test1_dir / "2003.10.22.12.06.24").read_text()
    for name, (damage, _) in CORRUPTIONS.items():
        damaged = damage(text)
        if damaged is None:
            (run / name).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
        else:
            (run / name).write_text(damaged)
    (run / "notes.txt").write_text("operator notes\n")
    return run


@pytest.fixture(scope="module")
def report(damaged_run: Path) -> IngestReport:
    from wearcast.config import Settings

    (run,) = discover_runs(damaged_run.parent)
    assert run.n_channels == 8
    report = IngestReport()
    list(check_run(run, Settings(), report, relative_to=damaged_run.parent))
    return report


def test_the_25_real_recordings_are_ingested(report: IngestReport, real_test1_dir: Path):
    real = {f"1st_test/{p.name}" for p in real_test1_dir.iterdir()}
    assert len(real) == 25
    assert set(report.ingested) == real


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_each_damaged_copy_is_quarantined_with_its_reason(report: IngestReport, name: str):
    reasons = {q.file: q.reason for q in report.quarantined}
    assert f"1st_test/{name}" in reasons, f"{name} was not quarantined"
    assert CORRUPTIONS[name][1] in reasons[f"1st_test/{name}"]


def test_location_of_a_bad_cell_is_reported(report: IngestReport):
    quarantined = {q.file: q for q in report.quarantined}
    bad = quarantined["1st_test/2003.10.23.00.00.02"]
    assert (bad.line, bad.column) == (7, 3)
    huge = quarantined["1st_test/2003.10.23.00.00.10"]
    assert (huge.line, huge.column) == (50, 2)


def test_a_file_that_is_not_a_recording_is_quarantined_too(report: IngestReport):
    reasons = {q.file: q.reason for q in report.quarantined}
    assert "not a recording timestamp" in reasons["1st_test/notes.txt"]


def test_nothing_is_lost(report: IngestReport):
    assert report.seen == 25 + len(CORRUPTIONS) + 1
    assert report.reconciled
    assert len(report.quarantined) == len(CORRUPTIONS) + 1


def test_ingest_command_json(damaged_run: Path):
    result = CliRunner().invoke(app, ["ingest", str(damaged_run), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert len(out["ingested"]) == 25
    assert {q["file"] for q in out["quarantined"]} >= {f"{n}" for n in CORRUPTIONS}
    assert all(q["reason"] for q in out["quarantined"])


def test_a_run_folder_of_unknown_files_beside_a_run_is_reported_not_dropped(
    real_test1_dir: Path, tmp_path: Path
):
    """A held-back run whose files are named otherwise must not vanish beside a good run;
    a linked run folder is read, a link back up the tree once."""
    data = tmp_path / "data"
    shutil.copytree(real_test1_dir, data / "1st_test")
    odd = data / "3rd_test"
    odd.mkdir()
    for name in ("2004-03-04 09-27-46.dat", "2004-03-04 09-37-46.dat"):
        shutil.copy(real_test1_dir / "2003.10.22.12.06.24", odd / name)
    linked = tmp_path / "elsewhere" / "linked_run"  # not an IMS test's name: undated
    shutil.copytree(real_test1_dir, linked)
    (data / "links").mkdir()
    (data / "links" / "linked_run").symlink_to(linked)
    (data / "links" / "up").symlink_to(data)
    skipped = []
    runs = discover_runs(data, unreadable=skipped)
    assert sorted(r.info.name for r in runs) == ["1st_test", "linked_run"]
    assert {q.file for q in skipped} == {f"3rd_test/{n.name}" for n in odd.iterdir()}
    assert all("3rd_test/ is not read as a run" in q.reason for q in skipped)
    with pytest.raises(ValueError, match="3rd_test.*matches no known recording format"):
        discover_runs(data)
    result = CliRunner().invoke(app, ["ingest", str(data), "--json"])
    out = json.loads(result.stdout)
    assert {q["file"] for q in out["quarantined"]} == {q.file for q in skipped}
    assert len(out["ingested"]) == 50 and out["reconciled"]
    featurize(data, tmp_path / "table", Settings(home=tmp_path / "home", workers=1))
    quarantine = json.loads((tmp_path / "table" / "quarantine.json").read_text())
    assert {q.file for q in skipped} <= {q["file"] for q in quarantine}  # files, no slash


def test_parse_error_messages_name_line_and_column():
    with pytest.raises(RecordingError) as info:
        parse_recording(b"0.1\t0.2\n0.3\tx\n")
    assert (info.value.line, info.value.column) == (2, 2)
    with pytest.raises(RecordingError, match="3 values, expected 2"):
        parse_recording(b"0.1\t0.2\n0.3\t0.4\t0.5\n")
    with pytest.raises(RecordingError, match="inf is not a finite number"):
        parse_recording(b"0.1\t0.2\n0.3\tinf\n")


def test_a_reason_shared_by_many_files_is_said_once_with_a_few_of_them():
    """A PRONOSTIA folder without its start date quarantines every snapshot for one reason:
    said for three files and counted for the rest (it was printed 100 times)."""
    import io

    from rich.console import Console

    from wearcast.cli import say_quarantined
    from wearcast.ingest import Quarantined

    undated = [Quarantined(f"acc_{i:05d}.csv", 'run.json needs "start"') for i in range(1, 101)]
    short = Quarantined("acc_00200.csv", "1000 rows, expected 2560")
    out = io.StringIO()
    say_quarantined(Console(file=out, width=200), [*undated, short])
    lines = out.getvalue().splitlines()
    assert lines[:3] == [f'quarantined acc_0000{i}.csv: run.json needs "start"' for i in (1, 2, 3)]
    assert lines[3] == "quarantined 97 more for the same reason"
    assert lines[4] == "quarantined acc_00200.csv: 1000 rows, expected 2560" and len(lines) == 5


def test_recordings_outside_the_runs_start_and_end_are_left_out_of_the_table(
    real_test1_dir: Path, tmp_path: Path
):
    """Their age or remaining life would be negative labels; a minute's slack for times
    written by hand (12:29:13 is kept for a start of 12:30). They are still recordings: ingest
    passes them, predict scores them."""
    run = tmp_path / "data" / "run"
    shutil.copytree(real_test1_dir, run)
    meta = {"start": "2003-10-22T12:30:00", "end": "2003-10-22T13:30:00"}
    meta["failures"] = {"3": "inner"}
    (run / "run.json").write_text(json.dumps(meta))
    table = featurize(run.parent, tmp_path / "table", Settings(home=tmp_path / "home", workers=1))
    quarantine = json.loads((tmp_path / "table" / "quarantine.json").read_text())
    reasons = {q["file"]: q["reason"] for q in quarantine}
    early = ["2003.10.22.12.06.24"] + [f"2003.10.22.12.{m}.13" for m in ("09", 14, 19, 24)]
    late = [f"2003.10.22.13.{m}.13" for m in (34, 39, 44, 49, 54, 59)] + ["2003.10.22.14.04.13"]
    assert reasons == {
        **{
            f"run/{n}": "dated before the run's start 2003-10-22T12:30:00 in run.json"
            for n in early
        },
        **{f"run/{n}": "dated after the run's end 2003-10-22T13:30:00 in run.json" for n in late},
    }
    labelled = pd.read_parquet(table.table)
    assert labelled["timestamp"].nunique() == 13
    assert (labelled["elapsed_h"] >= -1 / 60).all() and (labelled["rul_h"].dropna() >= 0).all()
    ingested = json.loads(CliRunner().invoke(app, ["ingest", str(run), "--json"]).stdout)
    assert len(ingested["ingested"]) == 25
    (found,) = discover_runs(run)
    assert [t.problem for t in run_tasks(found, run)] == [None] * 25  # what predict reads
