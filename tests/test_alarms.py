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
