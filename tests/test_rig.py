from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from wearcast.rig import (
    IMS_RUNS,
    ZA_2115,
    Defect,
    bearing_channels,
    load_run_info,
    parse_timestamp,
)


def test_defect_frequencies_match_the_documented_ims_values():
    f = ZA_2115.defect_frequencies(2000 / 60)
    assert f.bpfo == pytest.approx(236.4, abs=0.1)
    assert f.bpfi == pytest.approx(296.9, abs=0.1)
    assert f.bsf == pytest.approx(139.9, abs=0.1)
    assert f.ftf == pytest.approx(14.8, abs=0.1)


def test_defect_frequencies_scale_with_shaft_speed():
    slow, fast = ZA_2115.defect_frequencies(10.0), ZA_2115.defect_frequencies(20.0)
    assert fast.bpfo == pytest.approx(2 * slow.bpfo)
    assert fast.bpfo + fast.bpfi == pytest.approx(ZA_2115.rollers * 20.0)


def test_channel_maps_of_the_ims_tests():
    assert bearing_channels(8, 4) == {1: [0, 1], 2: [2, 3], 3: [4, 5], 4: [6, 7]}
    assert bearing_channels(4, 4) == {1: [0], 2: [1], 3: [2], 4: [3]}
    with pytest.raises(ValueError, match="cannot be split"):
        bearing_channels(6, 4)


def test_run_info_from_folder_name_and_from_run_json(tmp_path: Path):
    assert load_run_info(tmp_path / "2nd_test").failures == {1: Defect.OUTER_RACE}
    assert load_run_info(tmp_path / "4th_test" / "txt").name == "3rd_test"
    assert IMS_RUNS["1st_test"].failures == {3: Defect.INNER_RACE, 4: Defect.ROLLING_ELEMENT}
    run = tmp_path / "mine"
    run.mkdir()
    (run / "run.json").write_text('{"name": "m1", "failures": {"2": "inner"}}')
    assert load_run_info(run).failures == {2: Defect.INNER_RACE}
    (run / "run.json").write_text('{"name": "m1", "failures": {"2": "cracked"}}')
    with pytest.raises(ValueError, match="run.json"):
        load_run_info(run)
    (run / "run.json").write_text('{"failures": {"2": "inner"}}')  # named after its folder
    assert load_run_info(run).name == "mine"
    (run / "run.json").write_text('{"shaft_rmp": 1500, "notes": "spare rig"}')  # a typo
    with pytest.raises(ValueError, match="unknown field 'shaft_rmp': did you mean 'shaft_rpm'"):
        load_run_info(run)
    (run / "run.json").write_text('{"shaft_rpm": 1500, "notes": "spare rig"}')
    assert load_run_info(run).shaft_rpm == 1500  # other fields are notes
    (run / "run.json").write_text('[{"name": "m1"}]')
    with pytest.raises(ValueError, match="run.json: expected a JSON object of the run's fields"):
        load_run_info(run)
    unknown = load_run_info(tmp_path / "elsewhere")
    assert unknown.failures == {} and unknown.end is None


@pytest.mark.real_data
def test_ims_run_facts_match_the_recordings(ims_dir: Path, real_test1_dir: Path):
    test1 = sorted(p.name for p in real_test1_dir.iterdir())
    assert IMS_RUNS["1st_test"].start == parse_timestamp(test1[0])
    test2 = pd.read_csv(ims_dir / "reference" / "test2_time_features.csv")
    assert IMS_RUNS["2nd_test"].start == parse_timestamp(test2.filename.iloc[0])
    assert IMS_RUNS["2nd_test"].end == parse_timestamp(test2.filename.iloc[-1])
    spectra = pd.read_csv(ims_dir / "reference" / "failing_bearings_20band_spectra.csv")
    # Its last two recordings of each run are missing: 20 minutes before the failure.
    last = pd.to_datetime(spectra.groupby("run").timestamp.max())
    for run, end in last.items():
        assert IMS_RUNS[run].end - end.to_pydatetime() == timedelta(minutes=20), run
    # Test 3's recordings run to 18 April, past the 4 April the NASA documentation gives.
    assert IMS_RUNS["3rd_test"].end == parse_timestamp("2004.04.18.02.42.55")
    assert IMS_RUNS["4th_test"] is IMS_RUNS["3rd_test"]
