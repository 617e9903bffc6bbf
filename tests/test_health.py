import numpy as np
import pandas as pd
import pytest

from wearcast.baseline import add_baselines
from wearcast.health import HealthIndicator, calibrate_threshold

FEATURES = ["rms", "peak", "band_a", "band_b", "kurtosis"]
MIX = np.random.default_rng(0).normal(size=(5, 5)) * 0.3 + np.eye(5)


def _healthy_fleet(bearings: int, recordings: int, seed: int) -> pd.DataFrame:
    """Correlated, log-normal healthy features; every bearing its own level (sensor, mount)."""
    rng = np.random.default_rng(seed)
    mix = MIX  # the same physics on every bearing
    frames = []
    for b in range(bearings):
        level = rng.normal(0, 0.5, len(FEATURES))
        logs = level + 0.05 * rng.standard_t(8, size=(recordings, len(FEATURES))) @ mix
        frame = pd.DataFrame(np.exp(logs), columns=FEATURES)
        frame["kurtosis"] = 3 + np.log(frame["kurtosis"])
        frame.insert(0, "timestamp", pd.date_range("2024-01-01", periods=recordings, freq="10min"))
        frame.insert(0, "bearing", b + 1)
        frame.insert(0, "run", f"run{seed}")
        frames.append(frame)
    return add_baselines(pd.concat(frames, ignore_index=True), FEATURES, 20)


@pytest.mark.parametrize("rate", [0.01, 0.002])
def test_threshold_gives_the_stated_false_alarm_rate_on_new_healthy_bearings(rate):
    train = _healthy_fleet(8, 400, seed=1)
    detector = HealthIndicator(false_alarm_rate=rate).fit(train, groups=train["bearing"])
    fresh = _healthy_fleet(20, 2000, seed=2)
    measured = detector.predict(fresh).mean()
    assert rate * 0.6 <= measured <= rate * 1.6, measured


def test_the_clearing_level_is_exceeded_by_its_stated_share_of_new_healthy_recordings():
    train = _healthy_fleet(8, 400, seed=1)
    detector = HealthIndicator(false_alarm_rate=0.002, clear_rate=0.05).fit(
        train, groups=train["bearing"]
    )
    assert detector.clear_level_ < detector.threshold_
    fresh = detector.score_samples(_healthy_fleet(20, 2000, seed=2))
    assert 0.05 * 0.6 <= (fresh > detector.clear_level_).mean() <= 0.05 * 1.6
    # A clearing rate below the alarm's would put the level above the threshold: it is capped.
    capped = HealthIndicator(false_alarm_rate=0.01, clear_rate=0.001).fit(
        train, groups=train["bearing"]
    )
    assert capped.clear_level_ == capped.threshold_


def test_a_degrading_bearing_crosses_the_threshold_and_healthy_ones_sit_near_one():
    train = _healthy_fleet(8, 400, seed=3)
    detector = HealthIndicator().fit(train, groups=train["bearing"])
    fresh = _healthy_fleet(1, 300, seed=4)
    assert np.median(detector.score_samples(fresh)) == pytest.approx(1, abs=0.5)
    worn = fresh.copy()
    worn.loc[200:, ["rms", "peak"]] *= 1.5  # vibration up by half: plainly damaged
    scores = detector.score_samples(worn)
    assert (scores[200:] > detector.threshold_).all()
    assert (scores[:200] > detector.threshold_).mean() < 0.05


def test_a_quieter_bearing_is_not_a_damaged_one_but_two_sided_sees_it():
    train = _healthy_fleet(8, 400, seed=5)
    quiet = _healthy_fleet(1, 300, seed=6)
    quiet.loc[100:, ["rms", "peak", "band_a"]] *= 0.6
    one = HealthIndicator().fit(train, groups=train["bearing"])
    two = HealthIndicator(one_sided=False).fit(train, groups=train["bearing"])
    assert one.predict(quiet)[100:].mean() < 0.05
    assert two.predict(quiet)[100:].mean() > 0.9


def test_calibration_fits_the_tail_when_the_quantile_is_beyond_the_data():
    scores = np.random.default_rng(0).exponential(size=2000)
    true = np.log(1 / 1e-3)  # exceeded with probability 1e-3
    assert calibrate_threshold(scores, 1e-3) == pytest.approx(true, rel=0.15)
    assert calibrate_threshold(scores, 0.05) == pytest.approx(np.log(20), rel=0.05)
    with pytest.raises(ValueError, match="too few"):
        calibrate_threshold(scores[:10], 0.01)
