import math
import re

import numpy as np
import pytest

from wearcast.alarms import AlarmRule
from wearcast.rul import AlarmStart, RemainingLife, Trajectory, phm2012_score


def _fleet(n: int, seed: int) -> list[Trajectory]:
    """Lives log-normal around 100 h; health flat at 1, then exponential from 70 % of life to
    about 30 at failure; alarm when it passes 3."""
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(n):
        life = math.exp(rng.normal(math.log(100), 0.3))
        hours = np.linspace(0, life, 200, endpoint=False)
        onset = 0.7 * life
        rate = math.log(30) / (life - onset)
        health = np.exp(np.clip(hours - onset, 0, None) * rate + rng.normal(0, 0.1, len(hours)))
        above = np.flatnonzero(health > 3)
        runs.append(Trajectory(hours, health, int(above[0]) if len(above) else None, life))
    return runs


def test_before_an_alarm_remaining_life_is_the_fleet_conditioned_on_survival():
    fleet = _fleet(30, 0)
    life = RemainingLife(coverage=0.8).fit(fleet)
    young = life.estimate(np.array([0.0, 1.0]), np.ones(2), None)
    median_life = math.exp(np.mean([math.log(r.life_h) for r in fleet]))
    assert young.rul_h == pytest.approx(median_life - 1, rel=0.02)
    assert young.low_h < young.rul_h < young.high_h
    old = life.estimate(np.array([0.0, 150.0]), np.ones(2), None)
    assert 0 < old.rul_h < 50 and "survival to 150 h" in old.method  # survived past most


@pytest.mark.parametrize("age", [400.0, 2000.0])
def test_a_bearing_that_outlived_the_whole_fleet_keeps_a_remaining_life_and_interval(age):
    """A healthy bearing a week old beside a fleet that lived 33 h was told 0 h left with a
    zero-width interval (the survival probability underflowed)."""
    life = RemainingLife(coverage=0.8).fit(_fleet(30, 0))
    estimate = life.estimate(np.array([0.0, age]), np.ones(2), None)
    assert 0 < estimate.low_h < estimate.rul_h < estimate.high_h
    assert estimate.rul_h < 0.2 * age  # the fleet's lives still say it is late in life
    lives = [r.life_h for r in _fleet(30, 0)]
    shown = f"30 failed training bearing(s), lives {min(lives):.3g} to {max(lives):.3g} h"
    assert shown in estimate.method  # whose lives: a user sees the fleet is far younger


def test_one_failed_training_bearing_leaves_the_spread_of_lives_to_bearing_physics():
    """Trained where one bearing failed (IMS test 2: 164 h), a bearing of another run that has
    already lived twice as long (IMS test 1 lived 828 h) was given the floor's spread (log-life
    0.25) and so a few hours left; the spread of one life is rolling bearings' own (Weibull
    shape 1.5: 0.85), checked against scipy's log-normal given survival."""
    from scipy import stats

    (lone,) = _fleet(1, 0)
    life = RemainingLife(coverage=0.8).fit([lone])
    estimate = life.estimate(np.array([0.0, 2 * lone.life_h]), np.ones(2), None)
    fleet = stats.lognorm(s=math.pi / (1.5 * math.sqrt(6)), scale=lone.life_h)
    survived = fleet.sf(2 * lone.life_h)
    for value, share in zip(
        (estimate.rul_h, estimate.low_h, estimate.high_h), (0.5, 0.9, 0.1), strict=True
    ):  # quantiles of the remaining life: share of survivors still running
        assert value == pytest.approx(fleet.isf(share * survived) - 2 * lone.life_h, rel=1e-6)
    assert estimate.rul_h > 0.5 * lone.life_h
    # Its one time from alarm to failure likewise: at another bearing's alarm, the interval
    # is that spread's central 80 %.
    after = lone.life_h - lone.hours[lone.raised]
    alarm = life.estimate(np.array([0.0, 50.0]), np.ones(2), AlarmStart(50.0, 1))
    spread = stats.lognorm(s=math.pi / (1.5 * math.sqrt(6)), scale=after)
    assert (alarm.rul_h, alarm.low_h, alarm.high_h) == pytest.approx(
        (after, spread.ppf(0.1), spread.ppf(0.9)), rel=1e-6
    )


def test_a_few_equal_lives_do_not_say_the_spread_is_none():
    """Two training bearings that failed at the same age (a simulated fleet: 66.5 h each) gave
    the floor's spread (log-life 0.25), so a bearing of another run, healthy at 125 h, was
    told 7.6 h (1.2 to 24.8) for days, when it had 125 h left. The spread is the sample's
    pooled with rolling bearings' own (0.85) as one more degree of freedom: here
    sqrt(0.85^2 / 2), checked against scipy's log-normal given survival."""
    from scipy import stats

    (one,) = _fleet(1, 0)
    twins = [one, one]
    estimate = (
        RemainingLife(coverage=0.8)
        .fit(twins)
        .estimate(np.array([0.0, 1.9 * one.life_h]), np.ones(2), None)
    )
    pooled = math.sqrt((math.pi / (1.5 * math.sqrt(6))) ** 2 / 2)
    fleet = stats.lognorm(s=pooled, scale=one.life_h)
    survived = fleet.sf(1.9 * one.life_h)
    for value, share in zip(
        (estimate.rul_h, estimate.low_h, estimate.high_h), (0.5, 0.9, 0.1), strict=True
    ):
        assert value == pytest.approx(fleet.isf(share * survived) - 1.9 * one.life_h, rel=1e-6)
    assert estimate.rul_h > 0.4 * one.life_h


def test_after_an_alarm_the_trend_narrows_the_estimate():
    runs = _fleet(30, 1)
    life = RemainingLife(coverage=0.8).fit(runs)
    run = runs[0]
    late = int(0.9 * len(run.hours))
    hours = run.hours[: late + 1]
    estimate = life.estimate(hours, run.health[: late + 1], AlarmStart.at(hours, run.raised))
    truth = run.life_h - run.hours[late]
    assert "exponential trend" in estimate.method
    assert estimate.low_h <= truth <= estimate.high_h
    assert abs(estimate.rul_h - truth) < 0.5 * truth


def test_a_health_trend_weighs_as_clearly_as_it_rises():
    """PRONOSTIA's Bearing1_1, in alarm for 1.8 h with its health indicator barely rising, was
    told 28 h left (2.5 to 178) when it had 2.3: the exponential fitted to a flat, noisy
    stretch reaches the failure level only far away. Cut off below two standard errors instead,
    the answer switched at every recording whose slope crossed the cut (0.45, 1.56, 0.46 h...).
    The trend's weight now grows with its slope in standard errors: a barely rising one weighs
    little, a clear one much, and nothing jumps in between."""
    from scipy import stats

    life = RemainingLife(coverage=0.8).fit(_fleet(30, 1))
    hours = np.linspace(0, 80, 100)
    alarm = AlarmStart(40.0, 50)  # 50 recordings since: the count alone would weigh 50/70
    noise = np.random.default_rng(0).normal(0, 0.3, len(hours))

    def weight(rise_per_h: float) -> float:
        estimate = life.estimate(hours, np.exp(1.5 + rise_per_h * hours + noise), alarm)
        found = re.search(r"blended \((\d+)%\)", estimate.method)
        return int(found[1]) / 100 if found else 0.0

    barely = 1.5 + 0.002 * hours + noise
    fit = stats.linregress(hours[hours >= 40], barely[hours >= 40])
    assert 0 < fit.slope < 2 * fit.stderr  # rising, by less than two standard errors
    weights = [weight(r) for r in (0.002, 0.004, 0.006, 0.008, 0.02, 0.05)]
    assert weights[0] < 0.5 * 50 / 70 and weights[-1] > 0.9 * 50 / 70
    assert weights == sorted(weights)  # the clearer the rise, the more it weighs
    assert max(np.diff(weights)) < 0.3  # no switch
    exact = life.estimate(hours, np.exp(1.5 + 0.05 * hours), alarm)  # no noise: full weight
    assert f"blended ({50 / 70:.0%})" in exact.method and np.isfinite(exact.rul_h)


def test_interval_coverage_on_new_bearings_is_near_nominal():
    life = RemainingLife(coverage=0.8).fit(_fleet(30, 2))
    hits = []
    for run in _fleet(40, 3):
        for share in (0.3, 0.5, 0.7, 0.8, 0.9):
            i = int(share * len(run.hours))
            hours = run.hours[: i + 1]
            est = life.estimate(hours, run.health[: i + 1], AlarmStart.at(hours, run.raised))
            hits.append(est.low_h <= run.life_h - run.hours[i] <= est.high_h)
    assert 0.7 <= np.mean(hits) <= 0.95, np.mean(hits)


def test_phm2012_score_punishes_late_estimates_harder():
    assert phm2012_score(10, 10) == 1
    assert phm2012_score(10, 9.5) == pytest.approx(0.5 ** (5 / 20))  # 5 % early
    assert phm2012_score(10, 10.5) == pytest.approx(0.5)  # 5 % late
    assert phm2012_score(10, 0) == pytest.approx(0.5**5)


def test_alarm_rule_rejects_impossible_settings():
    with pytest.raises(ValueError):
        AlarmRule(k=4, n=3)


def test_the_phm_optimal_point_is_early_and_scores_better_on_its_own_distribution():
    from wearcast.rul import Estimate, phm2012_point

    est = Estimate(rul_h=10.0, low_h=5.0, high_h=20.0, method="")
    point = phm2012_point(est, 0.8)
    assert 5.0 < point < 10.0
    rng = np.random.default_rng(0)
    sigma = math.log(2) / 1.2816  # the interval is the central 80 %
    outcomes = 10 * np.exp(sigma * rng.standard_normal(4000))
    mean = lambda e: np.mean([phm2012_score(t, e) for t in outcomes])  # noqa: E731
    assert mean(point) > mean(10.0)
