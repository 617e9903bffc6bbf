"""`wearcast inspect` agrees with independently computed statistics of the real recordings."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from wearcast.cli import app

pytestmark = pytest.mark.real_data


def test_inspect_json_matches_reference_rms_and_kurtosis(ims_dir: Path, real_test1_dir: Path):
    ref = pd.read_csv(ims_dir / "reference" / "test1_first25_time_features.csv")
    spectral = pd.read_csv(ims_dir / "reference" / "test1_first25_spectral_features.csv")
    assert len(ref) == 25 and list(spectral.file_index) == list(ref.file_index)
    runner = CliRunner()
    for row, other in zip(ref.itertuples(), spectral.itertuples(), strict=True):
        result = runner.invoke(app, ["inspect", str(real_test1_dir / row.filename), "--json"])
        assert result.exit_code == 0, result.output
        channels = json.loads(result.stdout)["channels"]
        # Numbered from 1, as validation's messages ("channel 1 is dead") number them.
        assert [c["channel"] for c in channels] == list(range(1, 9))
        for c in channels:
            prefix = f"Bearing{(c['channel'] - 1) // 2 + 1}_ch{(c['channel'] - 1) % 2 + 1}_"
            assert c["rms"] == pytest.approx(getattr(row, prefix + "rms"), rel=1e-4)
            # The reference holds excess kurtosis; wearcast reports Pearson's.
            assert c["kurtosis"] == pytest.approx(getattr(row, prefix + "kurt") + 3, rel=1e-4)
            assert c["skewness"] == pytest.approx(getattr(row, prefix + "skew"), rel=1e-4)
            assert c["peak"] == pytest.approx(getattr(row, prefix + "max"), rel=1e-4)
            # Computed elsewhere (rounded to 6 significant digits), not from our own peak and rms.
            assert c["crest"] == pytest.approx(getattr(other, prefix + "crest_factor"), rel=1e-4)


def test_inspect_reports_a_bad_file_clearly(tmp_path: Path):
    # A path longer than any terminal: the message must still come out whole.
    folder = tmp_path / ("a-long-folder-name-" * 6) / ("and-another-one-" * 6)
    folder.mkdir(parents=True)
    bad = folder / "2004.01.01.00.00.00"
    bad.write_text("0.1\t0.2\nabc\t0.3\n")
    result = CliRunner().invoke(app, ["inspect", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}: line 2, column 1: 'abc' is not a number" in result.output


def test_inspect_says_what_is_wrong_with_the_path(tmp_path: Path):
    """It said "matches no known recording format", with the path twice, for a path that
    does not exist."""
    runner = CliRunner()
    missing = runner.invoke(app, ["inspect", str(tmp_path / "nothing")])
    assert missing.exit_code == 2
    assert missing.output.strip() == f"error: {tmp_path / 'nothing'}: No such file or directory"
    folder = runner.invoke(app, ["inspect", str(tmp_path)])
    assert folder.output.strip() == f"error: {tmp_path}: Is a directory"
    odd = tmp_path / "notes.bin"
    odd.write_bytes(b"x")
    named = runner.invoke(app, ["inspect", str(odd)]).output
    assert named.startswith(f"error: {odd}: matches no known") and named.count(str(odd)) == 1
