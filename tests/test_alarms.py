import numpy as np
import pytest

from wearcast.alarms import (
    alarm_states,
    bearing_status,
    first_alarm,
    persistent_alarm,
    rul_by_trend,
)


def test_k_of_n_rule_ignores_isolated_spikes():
    above = np.array([0, 1, 0, 0, 1, 0, 0, 0, 1, 1, 0, 1, 1], dtype=bool)
    states = alarm_states(above, k=3, n=5)
    assert first_alarm(above, 3, 5) == 11
    assert not states[:11].any() and states[11:].all()
    assert persistent_alarm(above, 3, 5) == 8  # the rise began at the first recording above


def test_no_alarm_without_persistence():
    assert first_alarm(np.array([1, 0, 0, 1, 0, 0, 1], dtype=bool), 2, 3) is None


def test_rul_by_trend_extrapolates_a_line_to_one():
    hours = np.arange(10.0)
    rul, slope = rul_by_trend(hours, 0.5 + 0.05 * hours)
    assert slope == pytest.approx(0.05)
    assert rul == pytest.approx((1 - 0.95) / 0.05)
    assert rul_by_trend(hours, np.full(10, 0.4)) == (None, pytest.approx(0.0))


def test_bearing_status_needs_history_for_a_trend():
    status = bearing_status(np.array([0.0]), np.array([0.9]), threshold=0.3, k=1, n=1, recent=5)
    assert status.alarm and status.rul_h is None and "history" in status.rul_method


def test_no_remaining_life_is_invented_for_a_healthy_bearing():
    hours = np.arange(12.0)
    noisy = 0.02 + 0.001 * hours  # rising, but inside the healthy band
    status = bearing_status(hours, noisy, threshold=0.3, k=3, n=5, recent=12)
    assert status.rul_h is None and "below half the alarm threshold" in status.rul_method
    worn = 0.4 + 0.05 * hours
    status = bearing_status(hours, worn, threshold=0.3, k=3, n=5, recent=12)
    assert status.alarm and status.rul_h == pytest.approx((1 - worn[-1]) / 0.05)


def _track(bits, **rule):
    from wearcast.alarms import AlarmRule, track_alarms

    values = np.asarray(bits, dtype=float)
    return track_alarms(values, 0.5, AlarmRule(**rule))


def test_alarm_needs_sustained_evidence_and_watch_comes_first():
    track = _track([0, 1, 0, 1, 1, 0, 0], k=3, n=5, clear=3)
    assert track.states == ["ok", "watch", "watch", "watch", "alarm", "alarm", "alarm"]
    (episode,) = track.episodes
    assert (episode.start, episode.raised, episode.end, episode.level) == (1, 4, None, "alarm")


def test_alarm_is_left_only_after_sustained_recovery():
    # Below the threshold for two recordings, above again: still the same episode.
    bits = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1]
    track = _track(bits, k=3, n=3, clear=3)
    assert track.states[:6] == ["watch", "watch", "alarm", "alarm", "alarm", "alarm"]
    assert track.states[6:9] == ["alarm", "alarm", "ok"]
    assert track.states[9:] == ["ok", "watch"]
    first, second = track.episodes
    assert (first.start, first.raised, first.end) == (0, 2, 8)
    assert (second.start, second.level, second.raised, second.end) == (10, "watch", None, None)
    assert len(track.alarms) == 1


def test_the_k_of_n_rule_alone_flickers_where_hysteresis_does_not():
    bits = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1], dtype=bool)
    flips = np.flatnonzero(np.diff(alarm_states(bits, 3, 4).astype(int)))
    assert len(flips) == 5  # raised and cleared again and again
    track = _track(bits, k=3, n=4, clear=4)
    assert len(track.alarms) == 1 and track.alarms[0].end is None


def test_episode_peak_and_isolated_spikes_stay_in_watch():
    from wearcast.alarms import AlarmRule, track_alarms

    values = np.array([0.1, 0.9, 0.2, 0.1, 0.1, 0.1, 0.6, 2.0, 0.7, 0.1])
    track = track_alarms(values, 0.5, AlarmRule(k=3, n=3, clear=2))
    spike, rise = track.episodes
    assert (spike.level, spike.start, spike.end, spike.peak) == ("watch", 1, 3, 1)
    assert (rise.level, rise.raised, rise.peak, rise.peak_value) == ("alarm", 8, 7, 2.0)
    assert rise.end is None


def test_a_series_continues_from_its_logged_state():
    track = _track([0, 0, 0], k=2, n=2, clear=2)
    assert track.states == ["ok"] * 3
    from wearcast.alarms import AlarmRule, track_alarms

    resumed = track_alarms(np.zeros(3), 0.5, AlarmRule(k=2, n=2, clear=2), initial="alarm")
    assert resumed.states == ["alarm", "ok", "ok"]
    assert resumed.episodes[0].end == 1 and resumed.episodes[0].level == "alarm"


def test_an_episode_ends_only_back_below_the_clearing_level():
    """A value hovering about the threshold (0.5) raised, cleared and raised an alarm again and
    again; with a clearing level of 0.3 under it the episode holds until the values are back
    below 0.3 for ``clear`` recordings, and a spike from there starts a new one."""
    from wearcast.alarms import AlarmRule, track_alarms

    hover = [0.6, 0.6, 0.6, 0.4, 0.4, 0.4, 0.6, 0.6, 0.6, 0.4, 0.4, 0.4]
    values = np.array([*hover, 0.2, 0.2, 0.2, 0.9])
    rule = AlarmRule(k=3, n=3, clear=3)
    plain = track_alarms(values, 0.5, rule)
    assert len(plain.alarms) == 2  # cleared at the first three 0.4s, raised again
    held = track_alarms(values, 0.5, rule, clear_level=0.3)
    assert held.states[:14] == ["watch", "watch"] + ["alarm"] * 12
    assert held.states[14:] == ["ok", "watch"]
    first, second = held.episodes
    assert (first.start, first.raised, first.end) == (0, 2, 14)
    assert (second.start, second.level, second.end) == (15, "watch", None)
