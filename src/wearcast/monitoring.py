"""Drift: does what the served model sees now look like what it was trained on?

    training table's rows from healthy machines --(MLflow artifact of the version)--> reference
    prediction log: each bearing's latest ``drift_window`` recordings after its baseline
      both seen through the model's own baseline step
      --> two-sample KS per feature and bearing --> Benjamini-Hochberg over the machine's tests
      --> drifted features (q < drift_fdr, KS distance >= drift_min_distance, and at least
          drift_min_features such features on the bearing)
      --> per feature group (time, bands, lines, envelope), per machine

**What is compared.** Each feature as the model sees it: relative to the bearing's own healthy
baseline (the model's :class:`wearcast.model.BaselineRelative` step in ``relative`` mode:
log-ratio for level features, difference for the others). Raw levels have no common scale: the
training fleet's sensors, mountings and resonances differ, so one healthy bearing's raw levels
are a narrow slice of the fleet's wide mixture and a KS test would flag every bearing. Relative
to its own baseline a healthy bearing looks like any other healthy bearing (noise around 0).
What this view catches and misses:

* a sensor gain change (x2) or a speed change after a bearing's baseline was taken: every level
  feature moves by log 2, or the spectrum's energy moves between bands, relative to the
  baseline, which is exactly what makes the model's answers wrong (it reads that as wear);
* a sensor that was x2 from a bearing's first recording: not flagged, and the model's answers do
  not change either (the baseline carries the gain);
* a machine that always ran at another speed: its baseline carries the change, but the
  defect-frequency features are computed at the configured speed. Not detected here (see
  docs/monitoring.md).

A bearing wearing out also drifts: a degrading bearing's relative features leave the healthy
reference, which is what the model measures. The report says which groups moved, and the
answers say which bearings are in alarm; a drift flag alone does not tell a sensor fault from
wear.

**The test.** Two-sample Kolmogorov-Smirnov per feature and bearing
(:func:`scipy.stats.ks_2samp`): it needs no binning (PSI's bins are arbitrary, and a window of
~30 recordings leaves most bins with a handful of values) and gives a p-value with a known null
distribution, which Wasserstein's distance does not (its scale differs per feature, so one
threshold cannot serve 130 features); it reacts to shifts of location and of scale, the two
things a gain or a speed change does. A machine's ~500 tests (4 bearings x ~130 features) are
corrected together with Benjamini-Hochberg (:func:`scipy.stats.false_discovery_control`).

Significance alone is not enough, because the window's rows are not independent draws: every
row of a bearing is relative to the same baseline, a median of only ``baseline_recordings``
recordings, so each bearing carries its own small offset (about a quarter of the noise's
standard deviation) that 30 rows resolve and a pooled reference does not have. KS then flags
healthy bearings (it did on held-out simulated machines). A feature therefore drifts only if
its KS distance is also at least ``drift_min_distance`` (0.6: the two distributions' CDFs
differ by 60 points somewhere; a baseline offset gives ~0.2-0.45, a gain x2 gives 1). The
false-positive rate measured on held-out healthy machines (docs/monitoring.md) vouches for
the thresholds, not the nominal level. Each bearing is tested on its own window: pooling a
machine's bearings would add their offsets into one mixture.

Finally a bearing drifts only if at least ``drift_min_features`` (3) of its features pass both
tests: the offsets are independent from feature to feature, so chance crossings come one at a
time (every false flag on held-out healthy machines was a single feature), whereas a gain or a
speed change is a change of the channel and moves dozens of features at once.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import numpy as np
import pandas as pd
from scipy import stats

from wearcast.alarms import ALARM, WATCH
from wearcast.baseline import BASELINE_PREFIX, sample_medians
from wearcast.config import Settings
from wearcast.features import TIME_FEATURES
from wearcast.prediction_log import PredictionLog

__all__ = [
    "GROUPS",
    "DriftReport",
    "FeatureDrift",
    "GroupDrift",
    "MachineDrift",
    "compare",
    "evaluate_drift",
    "feature_group",
    "reference_sample",
    "render_html",
    "trigger_retraining",
]

log = logging.getLogger("wearcast.api")

GROUPS = ("time", "bands", "lines", "envelope")
RETRAIN_LEASE = "retrain-on-drift"
_TOP = 10  # most significant features listed per machine


def feature_group(name: str) -> str:
    """The group of a bearing-level feature (see :mod:`wearcast.features` for the names)."""
    if name.startswith("band_"):
        return "bands"
    if name.startswith("spec_"):
        return "lines"  # spectrum lines at the defect frequencies
    if name.startswith("env_"):
        return "envelope"
    if name in TIME_FEATURES:
        return "time"
    raise ValueError(f"{name!r} is no bearing-level feature of wearcast.features")


def reference_sample(frame: pd.DataFrame, columns: list[str], settings: Settings) -> pd.DataFrame:
    """The drift reference kept with a model version: training rows of healthy machines, their
    features and baselines, at most ``drift_reference_rows`` of them.

    A row is kept if its run had no bearing past its degradation onset yet (piecewise wear
    label 0 for all: a failing neighbour shakes the healthy bearings of its machine too) and if
    it is not one of its bearing's first ``baseline_recordings`` (those define the baseline, so
    their relative values are pulled towards 0; the window leaves them out as well)."""
    keys = ["run", "bearing"]
    ordered = frame.sort_values("timestamp", kind="stable")
    after_baseline = ordered.groupby(keys).cumcount() >= settings.baseline_recordings
    keep = after_baseline.reindex(frame.index)
    if "wear_piecewise" in frame:
        worn = frame["wear_piecewise"] > 0
        onset = frame["timestamp"].where(worn).groupby(frame["run"]).transform("min")
        keep &= onset.isna() | (frame["timestamp"] < onset)
    healthy = frame[keep]
    if healthy.empty:
        raise ValueError("the training table has no healthy rows to serve as drift reference")
    rows = healthy.sample(
        min(len(healthy), settings.drift_reference_rows), random_state=settings.random_state
    )
    return rows[columns + [BASELINE_PREFIX + c for c in columns]].reset_index(drop=True)


def model_view(pipeline, frame: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    """Each feature relative to its bearing's baseline, by the model's own fitted step."""
    relative = copy.copy(pipeline.named_steps["relative"])  # fitted attributes shared, not mode
    relative.set_params(mode="relative")
    return list(relative.features_), relative.transform(frame)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    group: str
    bearing: int
    statistic: float  # KS distance between the two empirical distributions, 0..1
    p_value: float
    q_value: float  # Benjamini-Hochberg adjusted over the machine's bearings and features
    drifted: bool


@dataclass(frozen=True)
class GroupDrift:
    group: str
    features: int
    drifted_features: int
    min_q_value: float
    drifted: bool


@dataclass(frozen=True)
class MachineDrift:
    machine: str
    recordings: int  # distinct recording times in the window
    rows: int  # bearing rows tested
    first: datetime | None
    last: datetime | None
    judged: bool  # False: fewer than drift_min_recordings recordings after the baseline
    drifted: bool
    bearings: int = 0  # tested
    drifted_bearings: list[int] = field(default_factory=list)
    # Of those, the ones in watch or alarm at their latest recording: a failing bearing's
    # vibration drifts too, and retraining does not answer it (an operations trial saw every
    # failure start the retraining DAG and use up its cooldown).
    alarmed_bearings: list[int] = field(default_factory=list)
    groups: list[GroupDrift] = field(default_factory=list)
    top_features: list[FeatureDrift] = field(default_factory=list)


@dataclass(frozen=True)
class DriftReport:
    model_name: str
    model_version: int
    reference_rows: int
    window: int
    fdr: float
    computed_at: datetime
    machines: list[MachineDrift]

    @property
    def drifted_machines(self) -> list[str]:
        return [m.machine for m in self.machines if m.drifted]

    @property
    def machines_to_retrain_for(self) -> list[str]:
        """Drifted machines with a drifted bearing not in watch or alarm, or with every bearing
        drifted (a change of the machine, its speed or its sensors, not one bearing's wear)."""
        return [
            m.machine
            for m in self.machines
            if m.drifted
            and (
                set(m.drifted_bearings) - set(m.alarmed_bearings)
                or len(m.drifted_bearings) == m.bearings
            )
        ]


def compare(
    names: list[str],
    reference: np.ndarray,
    windows: dict[int, np.ndarray],
    fdr: float,
    min_distance: float,
    min_features: int,
) -> list[FeatureDrift]:
    """KS test of every feature (columns) of every bearing's window against the reference,
    BH-corrected together. A feature drifts if significant, its KS distance is at least
    ``min_distance``, and at least ``min_features`` features of its bearing pass both. A
    feature missing in all of a window's or the reference's rows is not tested."""
    tested, statistics, p_values = [], [], []
    for bearing, window in windows.items():
        for j, name in enumerate(names):
            ref, win = reference[:, j], window[:, j]
            ref, win = ref[np.isfinite(ref)], win[np.isfinite(win)]
            if len(ref) == 0 or len(win) == 0:
                continue
            result = stats.ks_2samp(ref, win)
            tested.append((bearing, name))
            statistics.append(float(result.statistic))
            p_values.append(float(result.pvalue))
    if not tested:
        return []
    q_values = stats.false_discovery_control(p_values, method="bh")
    passed = [
        bool(q < fdr and s >= min_distance) for s, q in zip(statistics, q_values, strict=True)
    ]
    per_bearing = Counter(b for (b, _), ok in zip(tested, passed, strict=True) if ok)
    return [
        FeatureDrift(
            name,
            feature_group(name),
            bearing,
            s,
            p,
            float(q),
            ok and per_bearing[bearing] >= min_features,
        )
        for (bearing, name), s, p, q, ok in zip(
            tested, statistics, p_values, q_values, passed, strict=True
        )
    ]


def _groups(features: list[FeatureDrift]) -> list[GroupDrift]:
    out = []
    for group in GROUPS:
        members = [f for f in features if f.group == group]
        if members:
            drifted = sum(f.drifted for f in members)
            out.append(
                GroupDrift(
                    group, len(members), drifted, min(f.q_value for f in members), drifted > 0
                )
            )
    return out


def evaluate_drift(
    log_: PredictionLog,
    pipeline,
    reference: pd.DataFrame,
    settings: Settings,
    *,
    model_name: str,
    model_version: int,
) -> DriftReport:
    """Compare each machine's latest recordings (all its bearings) with the reference."""
    names, ref_view = model_view(pipeline, reference)
    k = settings.baseline_recordings
    recent = log_.recent_features(settings.drift_window)
    alarmed = {(p.machine, p.bearing) for p in log_.latest() if p.state in (WATCH, ALARM)}
    keys = sorted({(m, b) for m, rows in recent.items() for b, _, _ in rows})
    samples = log_.baseline_samples(keys, k)
    medians = {key: sample_medians([s for _, s in found]) for key, found in samples.items()}
    # A bearing's baseline recordings are left out, as from the reference; so are all its
    # recordings until its baseline is complete.
    ends = {key: found[-1][0] if len(found) == k else None for key, found in samples.items()}
    machines = []
    for machine, found in recent.items():
        rows = [
            (b, t, f)
            for b, t, f in found
            if ends[(machine, b)] is not None and t > ends[(machine, b)]
        ]
        times = sorted({t for _, t, _ in rows})
        base = dict(
            machine=machine,
            recordings=len(times),
            rows=len(rows),
            first=times[0] if times else None,
            last=times[-1] if times else None,
        )
        if len(times) < settings.drift_min_recordings:
            machines.append(MachineDrift(**base, judged=False, drifted=False))
            continue
        windows = {}
        for bearing in sorted({b for b, _, _ in rows}):
            frame = pd.DataFrame(
                [
                    [_value(f.get(n)) for n in names]
                    + [_value(medians[(machine, b)].get(n)) for n in names]
                    for b, _, f in rows
                    if b == bearing
                ],
                columns=names + [BASELINE_PREFIX + n for n in names],
            )
            windows[bearing] = model_view(pipeline, frame)[1]
        features = compare(
            names,
            ref_view,
            windows,
            settings.drift_fdr,
            settings.drift_min_distance,
            settings.drift_min_features,
        )
        groups = _groups(features)
        top = sorted(features, key=lambda f: (f.q_value, -f.statistic))[:_TOP]
        drifted = sorted({f.bearing for f in features if f.drifted})
        machines.append(
            MachineDrift(
                **base,
                judged=True,
                drifted=any(g.drifted for g in groups),
                bearings=len(windows),
                drifted_bearings=drifted,
                alarmed_bearings=[b for b in drifted if (machine, b) in alarmed],
                groups=groups,
                top_features=top,
            )
        )
    return DriftReport(
        model_name=model_name,
        model_version=model_version,
        reference_rows=len(reference),
        window=settings.drift_window,
        fdr=settings.drift_fdr,
        computed_at=datetime.now(UTC),
        machines=machines,
    )


def _value(v: float | None) -> float:
    return np.nan if v is None else float(v)


def trigger_retraining(
    settings: Settings, log_: PredictionLog, report: DriftReport, *, transport=None
) -> str | None:
    """Start the retraining DAG through Airflow 3's REST API if a machine drifted on a bearing
    not in watch or alarm, or on all its bearings (:attr:`DriftReport.machines_to_retrain_for`),
    at most once per ``retrain_cooldown_s`` across all API workers (a
    lease in the prediction log: of workers deciding at once, one wins the conditional update).
    Returns the DAG run id, or None when nothing was triggered. A failed call gives the lease
    back, so the next check retries.
    """
    drifted = report.machines_to_retrain_for
    if not (settings.retrain_on_drift and settings.airflow_url and drifted):
        return None
    if not log_.claim_lease(RETRAIN_LEASE, settings.retrain_cooldown_s):
        return None  # cooling down, or another worker triggered it
    run_id = f"wearcast_drift_{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    try:
        with httpx.Client(base_url=settings.airflow_url, timeout=30, transport=transport) as client:
            headers = {}
            if settings.airflow_username:
                token = client.post(
                    "/auth/token",
                    json={
                        "username": settings.airflow_username,
                        "password": settings.airflow_password.get_secret_value()
                        if settings.airflow_password
                        else "",
                    },
                )
                token.raise_for_status()
                headers["Authorization"] = f"Bearer {token.json()['access_token']}"
            response = client.post(
                f"/api/v2/dags/{settings.retrain_dag_id}/dagRuns",
                headers=headers,
                json={
                    "dag_run_id": run_id,
                    "logical_date": None,  # Airflow 3: required, null for "now"
                    "conf": {"reason": "drift", "machines": drifted[:50]},
                    "note": f"drift on {len(drifted)} machine(s) against model version "
                    f"{report.model_version}",
                },
            )
            response.raise_for_status()
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        log_.release_lease(RETRAIN_LEASE)
        log.warning("drift: could not trigger %s: %s", settings.retrain_dag_id, exc)
        return None
    log.info("drift on %s: triggered %s run %s", drifted, settings.retrain_dag_id, run_id)
    return run_id


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>wearcast drift report</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:70em}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.2em .5em}
th{background:#f4f4f4}.drift{background:#fdd}.ok{background:#dfd}.na{color:#777}
td.n{text-align:right;font-variant-numeric:tabular-nums}
</style></head><body>
<h1>Drift report</h1>
<p>Model {{ r.model_name }} version {{ r.model_version }}; reference: {{ r.reference_rows }}
healthy training rows; window: the last {{ r.window }} recordings of each machine; two-sample KS
per feature (relative to each bearing's baseline), Benjamini-Hochberg false discovery rate
{{ r.fdr }}; computed {{ r.computed_at.strftime("%Y-%m-%d %H:%M:%S UTC") }}.</p>
<p><strong>{{ r.drifted_machines|length }}</strong> of {{ r.machines|length }} machines drifted.</p>
<table><tr><th>machine</th><th>recordings</th><th>last</th><th>verdict</th>
{% for g in groups %}<th>{{ g }}: drifted / tested (min q)</th>{% endfor %}</tr>
{% for m in r.machines %}
<tr class="{{ 'drift' if m.drifted else ('ok' if m.judged else 'na') }}">
<td>{{ m.machine }}</td><td class="n">{{ m.recordings }}</td>
<td>{{ m.last.strftime("%Y-%m-%d %H:%M") if m.last else "" }}</td>
<td>{{ "drift" if m.drifted else ("no drift" if m.judged else "too few recordings") }}
{%- if m.alarmed_bearings %}: bearing(s) {{ m.alarmed_bearings|join(", ") }} in watch or alarm
(their wear, no retraining for it){% endif %}</td>
{% set by = {} %}{% for g in m.groups %}{% set _ = by.update({g.group: g}) %}{% endfor %}
{% for g in groups %}<td class="n">{% if g in by %}{% set x = by[g] %}
{{ x.drifted_features }} / {{ x.features }} ({{ "%.2g"|format(x.min_q_value) }}){% endif %}</td>
{% endfor %}
</tr>{% endfor %}</table>
{% for m in r.machines if m.drifted %}
<h2>{{ m.machine }}: most significant features</h2>
<table><tr><th>bearing</th><th>feature</th><th>group</th><th>KS distance</th><th>p</th>
<th>q (BH)</th></tr>
{% for f in m.top_features %}<tr class="{{ 'drift' if f.drifted else '' }}">
<td>{{ f.bearing }}</td><td>{{ f.feature }}</td>
<td>{{ f.group }}</td><td class="n">{{ "%.3f"|format(f.statistic) }}</td>
<td class="n">{{ "%.2g"|format(f.p_value) }}</td><td class="n">{{ "%.2g"|format(f.q_value) }}</td>
</tr>{% endfor %}</table>
{% endfor %}
</body></html>
"""


def render_html(report: DriftReport) -> str:
    """The report as a self-contained HTML page (no scripts, no external resources)."""
    import jinja2  # only this page needs it

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_HTML).render(r=report, groups=GROUPS)
